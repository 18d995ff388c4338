//! `LINEPROF_MODE=aggregate`: heap figures kept per stack in the process
//! instead of streaming every event (memray's aggregated capture), so the
//! profile's size depends on the number of distinct stacks, not on how long
//! the program runs.
//!
//! What is kept, all allocation-free (the counters lock-free; the block
//! table behind short per-shard spin locks of lineprof's own):
//! - per stack id, counters: allocations and bytes, frees and bytes (by the
//!   freeing stack), live bytes and blocks of the stack's allocations, the
//!   most it ever held, CPU samples; in pages mapped on first use;
//! - a side table from live block address to allocating stack (`blocks`),
//!   so a free finds whose live bytes it lowers;
//! - the live heap total (one atomic), its maximum, and a peak epoch that
//!   turns "live bytes per stack at the global peak" into O(1) work per
//!   event: when the total reaches a new maximum the epoch is bumped; the
//!   first change to a stack's live counters after a bump first copies
//!   them into the stack's snapshot. A stack untouched since the last bump
//!   held at the peak what it holds now; one touched since holds its
//!   snapshot. That is DHAT's t-gmax (the first moment of the maximum),
//!   exactly, while one thread records at a time;
//! - a live-heap series: the largest live total per time bucket, at most
//!   `SERIES_LEN` buckets (the width doubles when they run out).
//!
//! With several threads allocating at once, the total and its maximum stay
//! exact in the order of the atomic total; the peak's split over stacks
//! may miss the events in flight on other threads at that instant (at most
//! one per thread), and the reader says so.
//!
//! Output: every half second (checked every `TICK` events of a thread) and
//! at exit, the whole profile is written to `<path>.tmp` and renamed over
//! `<path>`, so a kill or a full disk leaves the last complete snapshot.
//! At exit the writer then appends the line timers and the `End` chunk.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::format::{self, ChunkKind, Encoder, CHUNK_HEADER_LEN};
use crate::{stacks, sys, writer};

static ON: AtomicBool = AtomicBool::new(false);

/// Whether aggregate mode is on (set once at start).
#[inline(always)]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The counters of one stack id.
#[derive(Default)]
struct Counters {
    allocations: AtomicU64,
    allocated_bytes: AtomicU64,
    frees: AtomicU64,
    freed_bytes: AtomicU64,
    live_bytes: AtomicI64,
    live_blocks: AtomicI64,
    /// The live figures at the peak of `epoch`, copied before the first
    /// change after that peak.
    snap_bytes: AtomicI64,
    snap_blocks: AtomicI64,
    epoch: AtomicU64,
    max_live_bytes: AtomicI64,
    cpu_samples: AtomicU64,
}

const PAGE_STACKS: usize = 1 << 14;
const PAGES: usize = (1 << 24) / PAGE_STACKS;
static PAGE: [AtomicPtr<Counters>; PAGES] = [const { AtomicPtr::new(std::ptr::null_mut()) }; PAGES];

/// The counters of `stack`, mapping their page on first use.
#[inline]
fn counters(stack: u32) -> Option<&'static Counters> {
    let (page, i) = (stack as usize / PAGE_STACKS, stack as usize % PAGE_STACKS);
    let slot = PAGE.get(page)?;
    let mut p = slot.load(Ordering::Acquire);
    if p.is_null() {
        p = map_page(slot)?;
    }
    // SAFETY: a page holds PAGE_STACKS zero-initialised `Counters` (all
    // atomics, for which all-zero is valid) and is never unmapped.
    Some(unsafe { &*p.add(i) })
}

#[cold]
fn map_page(slot: &AtomicPtr<Counters>) -> Option<*mut Counters> {
    let len = PAGE_STACKS * std::mem::size_of::<Counters>();
    let fresh = sys::map_zeroed(len) as *mut Counters;
    if fresh.is_null() {
        return None;
    }
    match slot.compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => Some(fresh),
        Err(existing) => {
            // SAFETY: our own mapping, never published.
            unsafe { libc::munmap(fresh as *mut libc::c_void, len) };
            Some(existing)
        }
    }
}

/// Live heap bytes of the process (blocks seen allocated, not yet freed).
static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);
/// Bumped each time `LIVE` reaches a new maximum.
static PEAK_EPOCH: AtomicU64 = AtomicU64::new(0);
static UNKNOWN_FREES: AtomicU64 = AtomicU64::new(0);
/// Threads that recorded a heap event in this mode (see `THREAD_SEEN`).
static THREADS: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// Events until this thread next reads the clock (series, snapshots).
    static TICKS: Cell<u32> = const { Cell::new(0) };
    static THREAD_SEEN: Cell<bool> = const { Cell::new(false) };
}
const TICK: u32 = 256;

const SERIES_LEN: usize = 1024;
const FIRST_BUCKET_NS: u64 = 1_000_000;
static SERIES: [AtomicU64; SERIES_LEN] = [const { AtomicU64::new(0) }; SERIES_LEN];
static BUCKET_NS: AtomicU64 = AtomicU64::new(FIRST_BUCKET_NS);
static BUCKET: AtomicU64 = AtomicU64::new(0);
/// The largest live total since the current bucket began.
static BUCKET_MAX: AtomicI64 = AtomicI64::new(0);
static SERIES_LOCK: crate::spin::SpinLock = crate::spin::SpinLock::new();
static START_NS: AtomicU64 = AtomicU64::new(0);
static LAST_SNAPSHOT_NS: AtomicU64 = AtomicU64::new(0);
const SNAPSHOT_EVERY_NS: u64 = 500_000_000;
static WRITE_FAILED: AtomicBool = AtomicBool::new(false);

/// Called once at start, before any event, by the initialising thread.
pub fn init(aggregate: bool) -> bool {
    if !aggregate {
        return true;
    }
    if !blocks::init() {
        return false;
    }
    let now = sys::coarse_ns();
    START_NS.store(now, Ordering::Relaxed);
    LAST_SNAPSHOT_NS.store(now, Ordering::Relaxed);
    ON.store(true, Ordering::Release);
    true
}

/// Changes the live figures of `c` by `bytes` and `blocks`, first saving
/// them as they were at the latest peak if this is the first change since.
#[inline(always)]
fn change_live(c: &Counters, bytes: i64, blocks: i64) {
    let e = PEAK_EPOCH.load(Ordering::Acquire);
    if c.epoch.load(Ordering::Relaxed) != e {
        c.snap_bytes
            .store(c.live_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        c.snap_blocks
            .store(c.live_blocks.load(Ordering::Relaxed), Ordering::Relaxed);
        c.epoch.store(e, Ordering::Release);
    }
    let live = c.live_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
    c.live_blocks.fetch_add(blocks, Ordering::Relaxed);
    if bytes > 0 && live > c.max_live_bytes.load(Ordering::Relaxed) {
        c.max_live_bytes.fetch_max(live, Ordering::Relaxed);
    }
}

/// An allocation of `size` bytes at `addr` by `stack`, after the inner
/// allocator returned and before the program sees the block.
#[inline]
pub fn alloc(stack: u32, size: u64, addr: u64) {
    let Some(c) = counters(stack) else {
        return dropped();
    };
    c.allocations.fetch_add(1, Ordering::Relaxed);
    c.allocated_bytes.fetch_add(size, Ordering::Relaxed);
    if blocks::insert(addr, stack) {
        change_live(c, size as i64, 1);
        let total = LIVE.fetch_add(size as i64, Ordering::AcqRel) + size as i64;
        if total > PEAK.load(Ordering::Relaxed) {
            new_peak(total);
        }
        if total > BUCKET_MAX.load(Ordering::Relaxed) {
            BUCKET_MAX.fetch_max(total, Ordering::Relaxed);
        }
    } else {
        // The block table is full: the allocation counts, its live bytes
        // cannot be followed (its free will be an unknown one).
        crate::coord::DROPPED.fetch_add(1, Ordering::Relaxed);
    }
    tick();
}

#[cold]
fn dropped() {
    crate::coord::DROPPED.fetch_add(1, Ordering::Relaxed);
}

#[inline(never)]
fn new_peak(total: i64) {
    let mut p = PEAK.load(Ordering::Relaxed);
    while total > p {
        match PEAK.compare_exchange_weak(p, total, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => {
                PEAK_EPOCH.fetch_add(1, Ordering::AcqRel);
                return;
            }
            Err(now) => p = now,
        }
    }
}

/// A free of the block at `addr` (`size` bytes) by `stack`, before the
/// inner allocator sees it (so the address cannot be handed out again
/// while it is still in the block table).
#[inline]
pub fn free(stack: u32, size: u64, addr: u64) {
    if let Some(c) = counters(stack) {
        c.frees.fetch_add(1, Ordering::Relaxed);
        c.freed_bytes.fetch_add(size, Ordering::Relaxed);
    } else {
        dropped();
    }
    release(blocks::remove(addr), size);
    tick();
}

/// Takes the block at `addr` out of the table (a reallocation does this
/// before the inner call); its allocating stack, if it was known.
#[inline]
pub fn take(addr: u64) -> Option<u32> {
    blocks::remove(addr)
}

/// Puts back a block `take` removed (the reallocation failed).
pub fn untake(addr: u64, owner: Option<u32>) {
    if let Some(s) = owner {
        blocks::insert(addr, s);
    }
}

/// A free whose block `take` already removed: counts it for the freeing
/// `stack` (None: the stack could not be captured) and lowers the live
/// bytes of the allocating stack `owner`.
pub fn free_taken(stack: Option<u32>, size: u64, owner: Option<u32>) {
    match stack.and_then(counters) {
        Some(c) => {
            c.frees.fetch_add(1, Ordering::Relaxed);
            c.freed_bytes.fetch_add(size, Ordering::Relaxed);
        }
        None => dropped(),
    }
    release(owner, size);
}

#[inline]
fn release(owner: Option<u32>, size: u64) {
    match owner.and_then(counters) {
        Some(o) => {
            change_live(o, -(size as i64), -1);
            LIVE.fetch_sub(size as i64, Ordering::AcqRel);
        }
        None => {
            UNKNOWN_FREES.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// CPU samples taken inside lineprof: samples and the periods they stand
/// for (lineprof's cost, on no line).
static PROFILER_CPU_SAMPLES: AtomicU64 = AtomicU64::new(0);
static PROFILER_CPU_PERIODS: AtomicU64 = AtomicU64::new(0);

/// CPU samples with `stack` (from the signal handler: atomics only);
/// `in_lineprof`: taken while lineprof recorded an event.
pub fn cpu(in_lineprof: bool, stack: u32, count: u32) {
    if in_lineprof {
        PROFILER_CPU_SAMPLES.fetch_add(1, Ordering::Relaxed);
        PROFILER_CPU_PERIODS.fetch_add(count as u64, Ordering::Relaxed);
        return;
    }
    if let Some(c) = counters(stack) {
        c.cpu_samples.fetch_add(count as u64, Ordering::Relaxed);
    }
}

/// Every `TICK` events of a thread: the clock, for the series and the
/// periodic snapshot.
#[inline(always)]
fn tick() {
    let n = TICKS.with(|t| {
        let n = t.get();
        t.set(n.wrapping_sub(1));
        n
    });
    if n == 0 {
        on_tick();
    }
}

#[cold]
#[inline(never)]
fn on_tick() {
    TICKS.with(|t| t.set(TICK));
    if !THREAD_SEEN.with(|s| s.replace(true)) {
        THREADS.fetch_add(1, Ordering::Relaxed);
    }
    let now = sys::coarse_ns();
    roll_series(now);
    let last = LAST_SNAPSHOT_NS.load(Ordering::Relaxed);
    if now.wrapping_sub(last) > SNAPSHOT_EVERY_NS
        && LAST_SNAPSHOT_NS
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    {
        sys::preserving_errno(|| write_snapshot(false));
    }
}

/// Closes the buckets that ended before `now`.
fn roll_series(now: u64) {
    let Some(_g) = SERIES_LOCK.try_lock() else {
        return;
    };
    let since = now.saturating_sub(START_NS.load(Ordering::Relaxed));
    let mut width = BUCKET_NS.load(Ordering::Relaxed);
    let mut cur = BUCKET.load(Ordering::Relaxed);
    let mut at = since / width;
    if at == cur {
        return;
    }
    while at >= SERIES_LEN as u64 {
        // Out of buckets: pairs become one bucket of twice the width.
        for i in 0..SERIES_LEN / 2 {
            let m = SERIES[2 * i]
                .load(Ordering::Relaxed)
                .max(SERIES[2 * i + 1].load(Ordering::Relaxed));
            SERIES[i].store(m, Ordering::Relaxed);
        }
        for s in &SERIES[SERIES_LEN / 2..] {
            s.store(0, Ordering::Relaxed);
        }
        width *= 2;
        cur /= 2;
        at = since / width;
    }
    BUCKET_NS.store(width, Ordering::Relaxed);
    let live = LIVE.load(Ordering::Relaxed).max(0);
    let closed = BUCKET_MAX.swap(live, Ordering::Relaxed).max(0) as u64;
    SERIES[cur as usize].fetch_max(closed, Ordering::Relaxed);
    // Buckets without a clock reading in between held about what is live
    // now (no thread made TICK events there).
    for s in &SERIES[(cur as usize + 1).min(SERIES_LEN)..at as usize] {
        s.fetch_max(live as u64, Ordering::Relaxed);
    }
    BUCKET.store(at, Ordering::Relaxed);
}

/// Writes the whole profile as it stands to `<path>.tmp` and renames it
/// over `<path>` (`writer::write_snapshot`). Periodic snapshots give up
/// when another writer holds the file lock; the final one (at exit, before
/// the exit handler appends the `End` chunk) waits for it.
pub fn write_snapshot(final_snapshot: bool) {
    let ok = writer::write_snapshot(
        final_snapshot,
        format::AGGREGATE_VERSION,
        |sink, scratch| {
            write_stacks(sink, scratch)
                && write_heap_stacks(sink, scratch)
                && write_summary(sink, scratch)
        },
    );
    if !ok && final_snapshot && !WRITE_FAILED.swap(true, Ordering::Relaxed) {
        sys::stderr(b"lineprof: could not write the final aggregate snapshot (disk full?); the profile keeps its last complete one\n");
    }
}

/// Seals the chunk of `kind` built in `buf[..len]` and writes it.
fn emit(sink: &mut writer::Sink, kind: ChunkKind, buf: &mut [u8], len: usize) -> bool {
    format::seal_chunk(kind, &mut buf[..len]);
    sink.put(&buf[..len])
}

/// Every published stack, in id order, in as many chunks as it takes.
fn write_stacks(sink: &mut writer::Sink, scratch: &mut [u8]) -> bool {
    let total = stacks::count();
    let mut id = 0;
    while id < total {
        let first = id;
        let mut e = Encoder::new(scratch, CHUNK_HEADER_LEN + 8);
        let mut n = 0u32;
        while id < total {
            // An id not yet published (its thread is mid-insert) is written
            // empty: no event of this snapshot refers to it yet.
            let frames = stacks::frames(id).unwrap_or(&[]);
            if e.remaining() < format::max_stack_len(frames.len()) {
                break;
            }
            format::encode_stack(&mut e, frames);
            id += 1;
            n += 1;
        }
        let len = e.pos();
        scratch[CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + 4].copy_from_slice(&first.to_le_bytes());
        scratch[CHUNK_HEADER_LEN + 4..CHUNK_HEADER_LEN + 8].copy_from_slice(&n.to_le_bytes());
        if n == 0 || !emit(sink, ChunkKind::Stacks, scratch, len) {
            return false;
        }
    }
    true
}

/// The figures of `stack` as they stand.
fn heap_stack(stack: u32, c: &Counters, epoch: u64) -> format::HeapStack {
    let r = |a: &AtomicI64| a.load(Ordering::Relaxed);
    let live_bytes = r(&c.live_bytes);
    let live_blocks = r(&c.live_blocks);
    // Touched since the latest peak: its snapshot; else what it holds now.
    let (peak_bytes, peak_blocks) = if c.epoch.load(Ordering::Acquire) == epoch {
        (r(&c.snap_bytes), r(&c.snap_blocks))
    } else {
        (live_bytes, live_blocks)
    };
    format::HeapStack {
        stack,
        allocations: c.allocations.load(Ordering::Relaxed),
        allocated_bytes: c.allocated_bytes.load(Ordering::Relaxed),
        frees: c.frees.load(Ordering::Relaxed),
        freed_bytes: c.freed_bytes.load(Ordering::Relaxed),
        live_bytes,
        live_blocks,
        peak_bytes,
        peak_blocks,
        max_live_bytes: r(&c.max_live_bytes),
        cpu_samples: c.cpu_samples.load(Ordering::Relaxed),
    }
}

fn write_heap_stacks(sink: &mut writer::Sink, scratch: &mut [u8]) -> bool {
    let total = stacks::count();
    let epoch = PEAK_EPOCH.load(Ordering::Acquire);
    let mut e = Encoder::new(scratch, CHUNK_HEADER_LEN);
    for id in 0..total {
        let Some(c) = counters_if_mapped(id) else {
            continue;
        };
        let s = heap_stack(id, c, epoch);
        if s == (format::HeapStack {
            stack: id,
            ..Default::default()
        }) {
            continue;
        }
        if e.remaining() < format::MAX_HEAP_STACK_LEN {
            let len = e.pos();
            if !emit(sink, ChunkKind::HeapStacks, scratch, len) {
                return false;
            }
            e = Encoder::new(scratch, CHUNK_HEADER_LEN);
        }
        format::encode_heap_stack(&mut e, &s);
    }
    let len = e.pos();
    len == CHUNK_HEADER_LEN || emit(sink, ChunkKind::HeapStacks, scratch, len)
}

fn counters_if_mapped(stack: u32) -> Option<&'static Counters> {
    let p = PAGE
        .get(stack as usize / PAGE_STACKS)?
        .load(Ordering::Acquire);
    // SAFETY: as in `counters`.
    (!p.is_null()).then(|| unsafe { &*p.add(stack as usize % PAGE_STACKS) })
}

fn write_summary(sink: &mut writer::Sink, scratch: &mut [u8]) -> bool {
    roll_series(sys::coarse_ns());
    let mut series = [0u64; SERIES_LEN];
    let n;
    {
        let _g = SERIES_LOCK.lock();
        let cur = BUCKET.load(Ordering::Relaxed) as usize;
        n = (cur + 1).min(SERIES_LEN);
        for (i, v) in series[..n].iter_mut().enumerate() {
            *v = SERIES[i].load(Ordering::Relaxed);
        }
        // The open bucket, so far.
        series[n - 1] = series[n - 1].max(BUCKET_MAX.load(Ordering::Relaxed).max(0) as u64);
    }
    let mut e = Encoder::new(scratch, CHUNK_HEADER_LEN);
    format::encode_heap_summary(
        &mut e,
        &format::HeapSummaryRef {
            snapshot_unix_ns: sys::unix_ns(),
            peak_bytes: PEAK.load(Ordering::Relaxed).max(0) as u64,
            live_bytes: LIVE.load(Ordering::Relaxed).max(0) as u64,
            unknown_frees: UNKNOWN_FREES.load(Ordering::Relaxed),
            threads: THREADS.load(Ordering::Relaxed).max(1),
            bucket_ns: BUCKET_NS.load(Ordering::Relaxed),
            series: &series[..n],
            profiler_cpu_samples: PROFILER_CPU_SAMPLES.load(Ordering::Relaxed),
            profiler_cpu_periods: PROFILER_CPU_PERIODS.load(Ordering::Relaxed),
        },
    );
    let len = e.pos();
    emit(sink, ChunkKind::HeapSummary, scratch, len)
}

/// In the child of a `fork`: its profile holds what it does after the fork,
/// so every figure starts from zero, and the parent's live blocks are
/// forgotten (their frees in the child are unknown frees, as in a stream
/// profile).
pub fn after_fork_child() {
    if !on() {
        return;
    }
    for id in 0..stacks::count() {
        if let Some(c) = counters_if_mapped(id) {
            for a in [
                &c.allocations,
                &c.allocated_bytes,
                &c.frees,
                &c.freed_bytes,
                &c.epoch,
                &c.cpu_samples,
            ] {
                a.store(0, Ordering::Relaxed);
            }
            for a in [
                &c.live_bytes,
                &c.live_blocks,
                &c.snap_bytes,
                &c.snap_blocks,
                &c.max_live_bytes,
            ] {
                a.store(0, Ordering::Relaxed);
            }
        }
    }
    blocks::forget_all();
    LIVE.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    PEAK_EPOCH.store(0, Ordering::Relaxed);
    UNKNOWN_FREES.store(0, Ordering::Relaxed);
    PROFILER_CPU_SAMPLES.store(0, Ordering::Relaxed);
    PROFILER_CPU_PERIODS.store(0, Ordering::Relaxed);
    THREADS.store(1, Ordering::Relaxed);
    SERIES_LOCK.force_unlock();
    for s in &SERIES {
        s.store(0, Ordering::Relaxed);
    }
    BUCKET_NS.store(FIRST_BUCKET_NS, Ordering::Relaxed);
    BUCKET.store(0, Ordering::Relaxed);
    BUCKET_MAX.store(0, Ordering::Relaxed);
    let now = sys::coarse_ns();
    START_NS.store(now, Ordering::Relaxed);
    LAST_SNAPSHOT_NS.store(now, Ordering::Relaxed);
}

/// Live block address -> allocating stack. Blocks churn (millions of
/// allocations and frees a second), so the table must not fill with
/// tombstones: it is split by address into shards, each a plain
/// open-addressing table with backward-shift deletion (no tombstones)
/// behind a spin lock of lineprof's own, held for a few probes (or, to grow
/// a shard, a copy into a mapping twice the size). A block is inserted
/// before its allocation returns to the program and removed before its
/// free reaches the inner allocator. A host signal handler that allocates
/// while this thread holds a shard lock never reaches it: the thread is
/// `busy` and the event is not recorded.
mod blocks {
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::spin::SpinLock;
    use crate::sys;

    const SHARDS: usize = 256;
    const FIRST_SLOTS: usize = 1024;

    struct Shard {
        lock: SpinLock,
        /// Slots of (address, stack); address 0 is empty.
        table: std::cell::UnsafeCell<Table>,
    }

    #[derive(Clone, Copy)]
    struct Table {
        slots: *mut (u64, u64),
        cap: usize,
        len: usize,
    }

    // SAFETY: `table` is only touched with `lock` held.
    unsafe impl Sync for Shard {}

    static SHARD: [Shard; SHARDS] = [const {
        Shard {
            lock: SpinLock::new(),
            table: std::cell::UnsafeCell::new(Table {
                slots: std::ptr::null_mut(),
                cap: 0,
                len: 0,
            }),
        }
    }; SHARDS];
    static FAILED: AtomicBool = AtomicBool::new(false);

    /// Keeps neighbours together (as the report's address hasher does):
    /// the allocator hands out blocks close to each other and reuses freed
    /// ones soon, so nearby addresses landing in nearby slots keeps the
    /// table's cache misses few. The 64 KiB window an address lies in picks
    /// the shard and is scattered by a multiplicative hash; within it the
    /// address bits are kept.
    #[inline(always)]
    fn hash(addr: u64) -> u64 {
        let g = addr >> 4;
        let window = (g >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (g ^ (window >> 20)) & !(0xff << 56) | (window & (0xff << 56))
    }

    #[inline(always)]
    fn shard_of(h: u64) -> &'static Shard {
        &SHARD[(h >> 56) as usize % SHARDS]
    }

    impl Table {
        #[inline(always)]
        fn home(&self, h: u64) -> usize {
            (h as usize) & (self.cap - 1)
        }

        /// # Safety
        /// `i < cap` and the table is mapped.
        #[inline(always)]
        unsafe fn at(&self, i: usize) -> *mut (u64, u64) {
            // SAFETY: per the contract.
            unsafe { self.slots.add(i) }
        }

        fn put(&mut self, addr: u64, stack: u64) {
            let mut i = self.home(hash(addr));
            loop {
                // SAFETY: `i` is masked below `cap`; the table is mapped.
                let p = unsafe { self.slots.add(i) };
                // SAFETY: as above.
                let k = unsafe { (*p).0 };
                if k == 0 || k == addr {
                    if k == 0 {
                        self.len += 1;
                    }
                    // SAFETY: as above.
                    unsafe { *p = (addr, stack) };
                    return;
                }
                i = (i + 1) & (self.cap - 1);
            }
        }
    }

    pub fn init() -> bool {
        true
    }

    /// Doubles (or first maps) a shard's table. Lock held.
    #[cold]
    fn grow(t: &mut Table) -> bool {
        let cap = if t.cap == 0 { FIRST_SLOTS } else { t.cap * 2 };
        let slots = sys::map_zeroed(cap * 16) as *mut (u64, u64);
        if slots.is_null() {
            return false;
        }
        let old = *t;
        *t = Table { slots, cap, len: 0 };
        for i in 0..old.cap {
            // SAFETY: `i < old.cap`, the old table is still mapped.
            let (a, s) = unsafe { *old.at(i) };
            if a != 0 {
                t.put(a, s);
            }
        }
        if !old.slots.is_null() {
            // SAFETY: the old table is ours and no longer referenced.
            unsafe { libc::munmap(old.slots as *mut libc::c_void, old.cap * 16) };
        }
        true
    }

    /// Remembers that `addr` was allocated by `stack`. False when no memory
    /// is left for the table.
    #[inline]
    pub fn insert(addr: u64, stack: u32) -> bool {
        let addr = addr.max(1);
        let h = hash(addr);
        let shard = shard_of(h);
        let _g = shard.lock.lock();
        // SAFETY: the shard lock is held.
        let t = unsafe { &mut *shard.table.get() };
        if (t.len + 1) * 2 > t.cap && !grow(t) {
            if !FAILED.swap(true, Ordering::Relaxed) {
                sys::stderr(b"lineprof: out of memory for the live-block table; some frees will not find their blocks\n");
            }
            return false;
        }
        t.put(addr, stack as u64);
        true
    }

    /// Forgets `addr`; the stack that allocated it, if it was known.
    #[inline]
    pub fn remove(addr: u64) -> Option<u32> {
        let addr = addr.max(1);
        let h = hash(addr);
        let shard = shard_of(h);
        let _g = shard.lock.lock();
        // SAFETY: the shard lock is held.
        let t = unsafe { &mut *shard.table.get() };
        if t.cap == 0 {
            return None;
        }
        let mask = t.cap - 1;
        let mut i = t.home(h);
        loop {
            // SAFETY: `i` is masked below `cap`.
            let s = unsafe { *t.at(i) };
            if s.0 == 0 {
                return None;
            }
            if s.0 == addr {
                break;
            }
            i = (i + 1) & mask;
        }
        // SAFETY: as above, for every index below (all masked).
        let stack = unsafe { (*t.at(i)).1 } as u32;
        // Backward-shift deletion: pull later entries of the run back into
        // the hole when their home allows, so no tombstone is left.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            // SAFETY: masked index.
            let s = unsafe { *t.at(j) };
            if s.0 == 0 {
                break;
            }
            let home = t.home(hash(s.0));
            // Is `home` cyclically outside (hole, j]? Then it may move.
            let moves = if hole <= j {
                home <= hole || home > j
            } else {
                home <= hole && home > j
            };
            if moves {
                // SAFETY: masked indices.
                unsafe { *t.at(hole) = s };
                hole = j;
            }
            j = (j + 1) & mask;
        }
        // SAFETY: masked index.
        unsafe { *t.at(hole) = (0, 0) };
        t.len -= 1;
        Some(stack)
    }

    /// The child of a `fork`: the parent's blocks are forgotten (their
    /// frees become unknown frees). Another thread of the parent may have
    /// held a shard lock, so every shard starts over with a fresh table;
    /// the parent's mappings are left alone.
    pub fn forget_all() {
        for shard in &SHARD {
            shard.lock.force_unlock();
            let _g = shard.lock.lock();
            // SAFETY: the shard lock is held (the child has one thread).
            unsafe {
                *shard.table.get() = Table {
                    slots: std::ptr::null_mut(),
                    cap: 0,
                    len: 0,
                }
            };
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn insert_remove_and_reuse() {
            crate::sampled::check_address_table(
                0x5000_0000_0000,
                1 << 20,
                100_000,
                |i| i as u32,
                insert,
                remove,
            );
            // SAFETY: no other thread uses the tables in this test binary.
            let t = unsafe { &*SHARD[0].table.get() };
            assert!(t.len == 0 && t.cap <= 4096, "{} {}", t.len, t.cap);
        }
    }
}
