//! Per-thread recording state: each thread appends its events to a buffer of
//! its own, with no lock and no shared cache line, and writes the buffer out
//! as one `Events` chunk when it fills, when a flush interval has passed, or
//! when the thread exits. States live in their own mappings and are reused
//! by later threads, so a program that starts many short threads does not
//! grow. The exit flush reads other threads' buffers up to their published
//! `committed` length while they may still append beyond it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::config::MAX_DEPTH;
use crate::coord::{self, Padded};
use crate::format::{self, tag, Encoder, CHUNK_HEADER_LEN, MAX_EVENT_LEN};
use crate::spin::SpinLock;
use crate::{sys, writer};

/// Chunk header, thread index (u32), base sequence number (u64).
pub const EVENTS_HEADER: usize = CHUNK_HEADER_LEN + 4 + 8;
pub const BUF_LEN: usize = 256 * 1024;
const MAX_THREADS: usize = 4096;
const FLUSH_INTERVAL_NS: u64 = 500_000_000;
const CLOCK_EVERY: u32 = 1024;
/// A TIME mark: its tag and one varint.
const TIME_MARK_LEN: usize = 1 + 10;

pub struct ThreadState {
    /// Held by whoever seals and writes this buffer (never by the append).
    lock: SpinLock,
    in_use: AtomicBool,
    /// Bytes of `buf` holding complete events, header included.
    committed: AtomicUsize,
    index: u32,
    // Owner-only fields below: touched only by the thread that owns the
    // state (or, for the orphan state, by whoever holds `lock`).
    pub busy: bool,
    prev_seq: u64,
    prev_addr: u64,
    /// The other address base (`format::tag::OTHER_BASE`).
    other_addr: u64,
    pub stack_lo: usize,
    pub stack_hi: usize,
    events_until_clock: u32,
    last_flush_ns: u64,
    /// The block of sequence numbers this thread may use on its own while
    /// it is the only thread recording (`next_seq`).
    pub seq_next: u64,
    pub seq_end: u64,
    /// The last TSC-based order number this state handed out.
    pub last_clock: u64,
    /// Heap events appended through this state, ever (read at exit by
    /// another thread).
    heap_events: AtomicU64,
    pub rng: u64,
    /// Clock reading of the last TIME mark or CPU sample in this chunk.
    prev_time: u64,
    pub frames: [u64; MAX_DEPTH],
    /// Recently seen stacks: (hash, id), direct-mapped by hash.
    pub stack_cache: [(u64, u32); STACK_CACHE],
    /// Recently walked frame-pointer chains, in sets picked by their first
    /// frame's address and the event kind (`chain_set`): several call
    /// paths reach an allocation at one stack depth.
    pub chains: [crate::stack::ChainSet; CHAIN_SETS],
    /// Each set's deep chains' records past their first `CHAIN_FRAMES`.
    pub chain_tails: [crate::stack::Tail; CHAIN_SETS],
    /// The records past the first `CHAIN_FRAMES` of the chain being walked,
    /// before `ChainSet::keep_walked`.
    pub chain_records: [[u64; 2]; crate::stack::SET_TAIL_RECORDS],
    /// Per set, which way to try first (`ChainOrder`).
    pub chain_order: [ChainOrder; CHAIN_SETS],
    /// Frames of the CPU signal handler, apart from `frames`, which the
    /// interrupted code may be filling.
    pub cpu_frames: [u64; MAX_DEPTH],
    /// Frame addresses of `cpu_frames[1..]`, for samples with a stack copy.
    pub cpu_frame_addrs: [u64; MAX_DEPTH],
    /// CPU samples taken while this thread was inside lineprof, appended
    /// when it leaves (`drain_parked`). The handler runs on the owner
    /// thread, so an atomic length is enough to hand them over.
    parked: [(u32, u32); PARKED],
    parked_len: AtomicU32,
    buf: [u8; BUF_LEN],
}

const PARKED: usize = 16;
pub const STACK_CACHE: usize = 1024;
pub const CHAIN_SETS: usize = 32;
pub const CHAIN_WAYS: usize = 8;

/// The order in which one set's chains come: which way came last, which
/// came after each way the last time it came (per bucket of event sizes),
/// and which way a new chain replaces. Programs repeat sequences (the
/// fields of a struct allocated or dropped one after the other, at one
/// depth), so the way that followed the last one before, for an event of
/// about this size, is the one tried first.
#[derive(Clone, Copy)]
pub struct ChainOrder {
    pub last: u8,
    pub victim: u8,
    pub next: [[u8; SIZE_BUCKETS]; CHAIN_WAYS],
}

const SIZE_BUCKETS: usize = 8;

#[inline(always)]
fn size_bucket(size: usize) -> usize {
    ((size >> 3) ^ (size >> 7)) % SIZE_BUCKETS
}

impl ChainOrder {
    /// The way to try first for an event of `size` bytes.
    #[inline(always)]
    pub fn predicted(&self, size: usize) -> usize {
        self.next[self.last as usize % CHAIN_WAYS][size_bucket(size)] as usize % CHAIN_WAYS
    }
    /// Way `w` came now, for an event of `size` bytes.
    #[inline(always)]
    pub fn came(&mut self, w: usize, size: usize) {
        self.next[self.last as usize % CHAIN_WAYS][size_bucket(size)] = w as u8;
        self.last = w as u8;
    }
    /// The way a new chain goes to (it comes now).
    #[inline(always)]
    pub fn replace(&mut self, size: usize) -> usize {
        let w = self.victim as usize % CHAIN_WAYS;
        self.victim = ((w + 1) % CHAIN_WAYS) as u8;
        self.came(w, size);
        w
    }
}

/// The set where chains walked from frame `fp` for events of `kind` are
/// kept.
#[inline(always)]
pub fn chain_set(fp: usize, kind: u8) -> usize {
    // Frames are 16-byte aligned; neighbouring depths get neighbouring
    // sets, an allocation and a free at one depth different ones.
    ((fp >> 4) ^ ((kind as usize) << 3)) % CHAIN_SETS
}

static REGISTRY: [AtomicPtr<ThreadState>; MAX_THREADS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_THREADS];
static REGISTERED: AtomicUsize = AtomicUsize::new(0);
static REGISTRY_LOCK: SpinLock = SpinLock::new();
/// Shared, locked state for threads past their exit destructor or past
/// `MAX_THREADS`.
static ORPHAN: AtomicPtr<ThreadState> = AtomicPtr::new(std::ptr::null_mut());
/// Serialises the threads appending to the orphan state.
static ORPHAN_APPEND: SpinLock = SpinLock::new();
static KEY: AtomicU64 = AtomicU64::new(u64::MAX);
/// Threads that ever attached; from the second on, the event order comes
/// from a clock every thread can read without writing shared memory
/// (`next_seq`).
static ATTACHES: AtomicU64 = AtomicU64::new(0);
/// Set when a second thread attaches. Read on every event, written once:
/// on a cache line of its own.
pub static MULTI: Padded<AtomicBool> = Padded(AtomicBool::new(false));
/// Global order of heap events while one thread records, and without an
/// invariant TSC (`next_seq`). On a cache line of its own: every thread
/// writes it, and must not drag read-mostly values next to it from core to
/// core.
static SEQ: Padded<AtomicU64> = Padded(AtomicU64::new(0));
/// Whether the CPU's time-stamp counter is invariant (same rate on every
/// core, never stopping), so that it can order events across threads.
static TSC_OK: AtomicBool = AtomicBool::new(false);
const SEQ_BLOCK: u64 = 4096;
/// Marks an order number read from the time-stamp counter. Such numbers
/// sort after every block number (block numbers are only used before any
/// second thread records, see `next_seq`).
pub const CLOCK_MARK: u64 = 1 << 63;

/// The number that places an event of thread `t` (its owner, or the orphan
/// state with its lock held) in the global event order. `after_alloc` says
/// the event is an allocation that has just returned.
///
/// - While one thread records, it takes numbers in blocks (one atomic
///   increment per 4096 events).
/// - Once a second thread has attached, every thread reads the invariant
///   time-stamp counter instead: nothing shared is written, so threads do
///   not fight over a cache line. The order that matters, a free before the
///   next allocation of the same address on another thread, holds: the free
///   reads the counter before calling the inner free (whose releasing store
///   cannot become visible before the read retires), the allocation reads
///   it with `rdtscp` after the inner allocation returns (which waits for
///   the allocator's acquiring loads). Each thread's numbers increase.
/// - Without an invariant TSC, one shared atomic counter per event.
///
/// The switch from blocks keeps the order right too: the second thread
/// sets `MULTI` before its first event, so anything of it that happens
/// before an event of the first thread (through the allocator's own
/// synchronisation) is seen with `MULTI` set.
#[inline(always)]
pub fn next_seq(t: *mut ThreadState, after_alloc: bool) -> u64 {
    // SAFETY: owner-only fields of the caller's own state.
    unsafe {
        if !MULTI.load(Ordering::Acquire) {
            if (*t).seq_next < (*t).seq_end {
                let s = (*t).seq_next;
                (*t).seq_next += 1;
                return s;
            }
            let base = SEQ.fetch_add(SEQ_BLOCK, Ordering::Relaxed);
            (*t).seq_next = base + 1;
            (*t).seq_end = base + SEQ_BLOCK;
            return base;
        }
        if TSC_OK.load(Ordering::Relaxed) {
            let c = CLOCK_MARK | crate::stack::tsc(after_alloc);
            let c = c.max((*t).last_clock + 1);
            (*t).last_clock = c;
            return c;
        }
    }
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Decides at start whether the TSC can order events across threads: the
/// CPU must say it is invariant, and the kernel must keep time with it (it
/// checks that the TSCs of all CPUs agree, and switches away when they do
/// not, as on some virtual machines).
pub fn init_clock() {
    let mut buf = [0u8; 64];
    let n = sys::read_file(
        c"/sys/devices/system/clocksource/clocksource0/current_clocksource",
        &mut buf,
    );
    let kernel_uses_tsc = buf[..n].starts_with(b"tsc");
    TSC_OK.store(
        kernel_uses_tsc && crate::stack::tsc_is_invariant(),
        Ordering::Relaxed,
    );
}

/// The next state of a xorshift64 generator (`x` not 0).
#[inline]
pub fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// An exponential draw with the given mean, from the thread's xorshift.
///
/// # Safety
/// `t` is the caller's own state.
pub unsafe fn next_countdown(t: *mut ThreadState, mean: u64) -> i64 {
    // SAFETY: per the contract.
    let x = unsafe {
        let x = xorshift((*t).rng);
        (*t).rng = x;
        x
    };
    let u = ((x >> 11) + 1) as f64 / (1u64 << 53) as f64; // (0, 1]
    (-(mean as f64) * u.ln()).min(i64::MAX as f64 / 2.0) as i64 + 1
}

/// Whether the time-stamp counter is invariant and the kernel keeps time
/// with it (set by `init_clock`).
pub fn tsc_ok() -> bool {
    TSC_OK.load(Ordering::Relaxed)
}

/// Marks the calling thread's state (if it has one) as inside lineprof,
/// around `fork`: a host signal handler that allocates then must not try
/// to flush while the fork handlers hold the file lock.
pub fn set_current_busy(busy: bool) {
    let t = CURRENT.with(|c| c.get());
    if !t.is_null() && t != DEAD {
        set_busy(t, busy);
    }
}

/// Heap events appended by all threads (for the `End` chunk).
pub fn events_recorded() -> u64 {
    let mut n = 0;
    for_each_state(|s| {
        // SAFETY: states stay mapped; a racy read of a counter at exit.
        n += unsafe { &*s }.heap_events.load(Ordering::Relaxed);
    });
    n
}

const DEAD: *mut ThreadState = std::ptr::dangling_mut::<ThreadState>();

thread_local! {
    static CURRENT: Cell<*mut ThreadState> = const { Cell::new(std::ptr::null_mut()) };
    /// Set while this thread attaches, so the CPU signal handler does not
    /// attach a second state underneath it.
    static ATTACHING: Cell<bool> = const { Cell::new(false) };
}

/// Called once by the initialising thread.
pub fn init() -> bool {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; `on_thread_exit` has the
    // destructor signature.
    if unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) } != 0 {
        return false;
    }
    KEY.store(key as u64, Ordering::Release);
    let orphan = new_state(u32::MAX);
    if orphan.is_null() {
        return false;
    }
    ORPHAN.store(orphan, Ordering::Release);
    true
}

fn new_state(index: u32) -> *mut ThreadState {
    let s = sys::map_zeroed(std::mem::size_of::<ThreadState>()) as *mut ThreadState;
    if !s.is_null() {
        // SAFETY: fresh zeroed mapping of the right size; all-zero is a valid
        // `ThreadState` except the fields we set here.
        unsafe {
            (*s).index = index;
            (*s).committed = AtomicUsize::new(EVENTS_HEADER);
            (*s).in_use = AtomicBool::new(true);
            (*s).events_until_clock = CLOCK_EVERY;
            (*s).last_flush_ns = sys::coarse_ns();
        }
    }
    s
}

/// The calling thread's state, attaching one on first use. Null while
/// lineprof cannot record on this thread.
#[inline]
pub fn current() -> *mut ThreadState {
    let t = CURRENT.with(|c| c.get());
    if t.is_null() {
        // A signal handler of the host that allocates while this thread is
        // attaching (holding the registry lock) records through the shared
        // orphan state instead of attaching again.
        if ATTACHING.with(|a| a.get()) {
            return DEAD;
        }
        return attach();
    }
    t
}

#[inline]
pub fn is_dead(t: *mut ThreadState) -> bool {
    t == DEAD
}

pub fn orphan() -> *mut ThreadState {
    ORPHAN.load(Ordering::Acquire)
}

pub fn orphan_lock() -> crate::spin::SpinGuard<'static> {
    // Not the state's own `lock`: appending may flush, which takes that.
    ORPHAN_APPEND.lock()
}
/// The calling thread's state, from the CPU signal handler: attaches only
/// if the registry lock is free right now (it may be held by the code the
/// signal interrupted).
pub fn current_in_signal() -> *mut ThreadState {
    let t = CURRENT.with(|c| c.get());
    if !t.is_null() || ATTACHING.with(|a| a.get()) {
        return t;
    }
    // pthread_setspecific allocates (calloc) for keys past glibc's first
    // block of 32: not from a signal handler. Such a thread is sampled
    // once it allocates.
    if KEY.load(Ordering::Acquire) >= 32 {
        return std::ptr::null_mut();
    }
    match REGISTRY_LOCK.try_lock() {
        Some(g) => {
            drop(g);
            attach()
        }
        None => std::ptr::null_mut(),
    }
}

#[cold]
fn attach() -> *mut ThreadState {
    sys::preserving_errno(attach_now)
}

fn attach_now() -> *mut ThreadState {
    if ATTACHES.fetch_add(1, Ordering::AcqRel) >= 1 {
        MULTI.store(true, Ordering::Release);
    }
    ATTACHING.with(|a| a.set(true));
    let s = attach_state();
    ATTACHING.with(|a| a.set(false));
    if !s.is_null() && s != DEAD {
        // `busy`: a host signal handler that allocates while we hold the
        // timers' lock must not reach it again through a flush.
        if let Some(h) = coord::hooks() {
            set_busy(s, true);
            (h.started)(sys::gettid());
            set_busy(s, false);
        }
    }
    s
}

/// Sets the reentrancy flag that our own signal handler and nested calls
/// check. The compiler fences keep the flag's stores where they are
/// written: the handler runs on this same thread, so no CPU fence is needed.
#[inline(always)]
pub fn set_busy(t: *mut ThreadState, busy: bool) {
    use std::sync::atomic::{compiler_fence, Ordering::SeqCst};
    compiler_fence(SeqCst);
    // SAFETY: owner-only field of the caller's own state.
    unsafe { (*t).busy = busy };
    compiler_fence(SeqCst);
}

fn attach_state() -> *mut ThreadState {
    let s = {
        let _g = REGISTRY_LOCK.lock();
        let n = REGISTERED.load(Ordering::Acquire);
        let reused = REGISTRY[..n]
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .find(|&s| {
                // SAFETY: registered states stay mapped forever.
                unsafe { &*s }
                    .in_use
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            });
        match reused {
            Some(s) => s,
            None if n < MAX_THREADS => {
                let s = new_state(n as u32);
                if s.is_null() {
                    return DEAD;
                }
                REGISTRY[n].store(s, Ordering::Release);
                REGISTERED.store(n + 1, Ordering::Release);
                s
            }
            None => return DEAD,
        }
    };
    let (sp, _) = crate::stack::registers();
    let (lo, hi) = sys::mapping_containing(sp).unwrap_or((0, 0));
    // SAFETY: `s` is ours now (in_use claimed under the registry lock).
    unsafe {
        (*s).stack_lo = lo;
        (*s).stack_hi = hi;
        (*s).busy = false;
        (*s).seq_next = 0;
        (*s).seq_end = 0;
        (*s).parked_len.store(0, Ordering::Relaxed);
        (*s).last_flush_ns = sys::coarse_ns();
        (*s).events_until_clock = CLOCK_EVERY;
        (*s).rng = (s as u64) ^ sys::coarse_ns() ^ 0x9E37_79B9_7F4A_7C15;
        // SAFETY: KEY was created at init; the value is only read back by
        // the destructor.
        libc::pthread_setspecific(
            KEY.load(Ordering::Acquire) as libc::pthread_key_t,
            s as *const libc::c_void,
        );
    }
    CURRENT.with(|c| c.set(s));
    s
}

unsafe extern "C" fn on_thread_exit(p: *mut libc::c_void) {
    let s = p as *mut ThreadState;
    if s.is_null() {
        return;
    }
    // A CPU signal still in flight must not append (and maybe flush) while
    // this thread holds the buffer and file locks below: `busy` parks it.
    set_busy(s, true);
    if let Some(h) = coord::hooks() {
        (h.exiting)(sys::gettid());
    }
    flush(s, false);
    CURRENT.with(|c| c.set(DEAD));
    // SAFETY: the state stays mapped; releasing it lets a new thread reuse it.
    unsafe { &*s }.in_use.store(false, Ordering::Release);
}

/// Re-reads the stack bounds when the stack pointer left them (a signal on
/// an alternate stack, a coroutine switch, the main stack growing).
#[cold]
pub fn refresh_bounds(t: *mut ThreadState, sp: usize) {
    let (lo, hi) = sys::preserving_errno(|| sys::mapping_containing(sp)).unwrap_or((0, 0));
    // SAFETY: owner-only fields of the caller's own state.
    unsafe {
        (*t).stack_lo = lo;
        (*t).stack_hi = hi;
    }
}

/// Appends one heap event. Owner-only (or orphan lock held).
#[inline(always)]
pub fn append(t: *mut ThreadState, kind: u8, seq: u64, stack: u32, size: u64, addr: u64) {
    // SAFETY: `t` is the caller's own state; only the owner writes at and
    // beyond `committed`, and flushers read only below it.
    unsafe {
        let pos = (*t).committed.load(Ordering::Relaxed);
        // Not the first event of a chunk, room for it, no TIME mark due.
        if BUF_LEN - pos < MAX_EVENT_LEN + TIME_MARK_LEN
            || pos == EVENTS_HEADER
            || (*t).events_until_clock <= 1
        {
            return append_slow(t, kind, seq, stack, size, addr);
        }
        // SAFETY: `pos + MAX_EVENT_LEN <= BUF_LEN` (checked above).
        let len = put_event(t, pos, kind, seq, stack, size, addr);
        (*t).events_until_clock -= 1;
        (*t).committed.store(pos + len, Ordering::Release);
    }
}

/// Encodes one heap event at `pos` of `t`'s buffer against the previous
/// one, counts it, and returns its length (not yet committed).
///
/// # Safety
/// `t` is the caller's own state (as for `append`), and
/// `pos + MAX_EVENT_LEN <= BUF_LEN`.
#[inline(always)]
unsafe fn put_event(
    t: *mut ThreadState,
    pos: usize,
    kind: u8,
    seq: u64,
    stack: u32,
    size: u64,
    addr: u64,
) -> usize {
    // SAFETY: per the contract: the bytes at `pos..pos + MAX_EVENT_LEN`
    // lie in the buffer, at or beyond `committed`, where only the owner
    // writes.
    unsafe {
        let base = std::ptr::addr_of_mut!((*t).buf) as *mut u8;
        let (delta, use_other, other) = format::addr_delta(addr, (*t).prev_addr, (*t).other_addr);
        let len = encode_event(
            base.add(pos),
            kind | if use_other { tag::OTHER_BASE } else { 0 },
            seq.wrapping_sub((*t).prev_seq),
            stack,
            size,
            delta,
        );
        (*t).prev_seq = seq;
        (*t).prev_addr = addr;
        (*t).other_addr = other;
        // One writer (the owner, or the orphan lock's holder): a plain
        // load and store, not a locked read-modify-write.
        let events = (*t).heap_events.load(Ordering::Relaxed);
        (*t).heap_events.store(events + 1, Ordering::Relaxed);
        len
    }
}

/// `append` of the first event of a chunk, of an event that does not fit,
/// or of one after which a TIME mark is due.
#[inline(never)]
fn append_slow(t: *mut ThreadState, kind: u8, seq: u64, stack: u32, size: u64, addr: u64) {
    // SAFETY: as in `append`.
    unsafe {
        let mut pos = (*t).committed.load(Ordering::Relaxed);
        // Room for the event and a TIME mark after it.
        if BUF_LEN - pos < MAX_EVENT_LEN + TIME_MARK_LEN {
            flush(t, false);
            pos = EVENTS_HEADER;
        }
        if pos == EVENTS_HEADER {
            start_chunk(t, seq);
        }
        // SAFETY: `pos + MAX_EVENT_LEN <= BUF_LEN` (checked above).
        let end = pos + put_event(t, pos, kind, seq, stack, size, addr);
        (*t).events_until_clock = (*t).events_until_clock.saturating_sub(1);
        if (*t).events_until_clock == 0 {
            (*t).events_until_clock = CLOCK_EVERY;
            let now = sys::coarse_ns();
            let mut e = Encoder::new(tail(t, end), 0);
            e.u8(tag::TIME);
            e.varint(now.saturating_sub((*t).prev_time));
            (*t).prev_time = now;
            (*t).committed.store(end + e.pos(), Ordering::Release);
            if now.wrapping_sub((*t).last_flush_ns) > FLUSH_INTERVAL_NS {
                flush(t, false);
                if let Some(h) = coord::hooks() {
                    (h.periodic)();
                }
            }
        } else {
            (*t).committed.store(end, Ordering::Release);
        }
    }
}

/// Writes one heap event (`format::tag::ALLOC` or `FREE`, maybe with
/// `OTHER_BASE`, then the sequence number's delta from the previous
/// event's, the stack id, the size and the address's zigzag delta
/// `addr_zigzag` (`format::addr_delta`), as varints) at `dst`; returns its
/// length.
///
/// # Safety
/// `dst` has `MAX_EVENT_LEN` writable bytes (the varints may write a few
/// bytes past the event's end, never past that).
#[inline(always)]
pub unsafe fn encode_event(
    dst: *mut u8,
    kind: u8,
    seq_delta: u64,
    stack: u32,
    size: u64,
    addr_zigzag: u64,
) -> usize {
    // SAFETY: at most 1 + 4 * 10 bytes, per the contract (`put_varint`).
    unsafe {
        *dst = kind;
        let mut n = 1;
        n += put_varint(dst.add(n), seq_delta);
        n += put_varint(dst.add(n), stack as u64);
        n += put_varint(dst.add(n), size);
        n += put_varint(dst.add(n), addr_zigzag);
        n
    }
}

/// Writes `v` as a LEB128 varint at `dst` (the bytes `Encoder::varint`
/// writes) and returns its length. Below 2^56, without a branch on the
/// value: the 7-bit groups are spread into the bytes of one word, which
/// is stored whole (8 bytes written, `len` of them the varint's).
///
/// # Safety
/// `dst` has 10 writable bytes.
#[inline(always)]
unsafe fn put_varint(dst: *mut u8, v: u64) -> usize {
    if v < 0x80 {
        // SAFETY: per the contract.
        unsafe { *dst = v as u8 };
        return 1;
    }
    if v >= 1 << 56 {
        return put_varint_long(dst, v);
    }
    let x = (v & 0x0000_0000_0FFF_FFFF) | ((v & 0x00FF_FFFF_F000_0000) << 4);
    let x = (x & 0x0000_3FFF_0000_3FFF) | ((x & 0x0FFF_C000_0FFF_C000) << 2);
    let x = (x & 0x007F_007F_007F_007F) | ((x & 0x3F80_3F80_3F80_3F80) << 1);
    let bits = 64 - (v | 1).leading_zeros() as usize; // 1..=56
    let len = bits.div_ceil(7); // 1..=8
                                // The continuation bit on every byte but the last.
    let more = 0x0080_8080_8080_8080u64 >> (8 * (8 - len));
    // SAFETY: 8 bytes at `dst` are writable (the contract).
    unsafe { std::ptr::write_unaligned(dst as *mut u64, (x | more).to_le()) };
    len
}

/// `put_varint` of 2^56 and above: 9 or 10 bytes.
#[cold]
#[inline(never)]
unsafe fn put_varint_long(dst: *mut u8, mut v: u64) -> usize {
    let mut n = 0;
    // SAFETY: at most 10 bytes, per `put_varint`'s contract.
    unsafe {
        while v >= 0x80 {
            *dst.add(n) = (v as u8) | 0x80;
            n += 1;
            v >>= 7;
        }
        *dst.add(n) = v as u8;
    }
    n + 1
}

/// The unwritten tail of `t`'s buffer from `pos`, as a slice made from a
/// raw pointer: an exit flusher on another thread may hold a slice of the
/// committed prefix at the same time.
///
/// # Safety
/// The caller owns the state (or holds the orphan append lock), and
/// `pos <= BUF_LEN`.
unsafe fn tail(t: *mut ThreadState, pos: usize) -> &'static mut [u8] {
    // SAFETY: per the contract; the buffer is BUF_LEN bytes and stays mapped.
    unsafe {
        let base = std::ptr::addr_of_mut!((*t).buf) as *mut u8;
        std::slice::from_raw_parts_mut(base.add(pos), BUF_LEN - pos)
    }
}

/// Starts a new events chunk in `t`'s empty buffer.
///
/// # Safety
/// As for `tail`; the buffer holds no committed events.
unsafe fn start_chunk(t: *mut ThreadState, base_seq: u64) {
    // SAFETY: per the contract.
    unsafe {
        let header = tail(t, CHUNK_HEADER_LEN);
        header[..4].copy_from_slice(&(*t).index.to_le_bytes());
        header[4..12].copy_from_slice(&base_seq.to_le_bytes());
        (*t).prev_seq = base_seq;
        (*t).prev_addr = 0;
        (*t).other_addr = 0;
        (*t).prev_time = 0;
    }
}

/// Appends one CPU sample (`tag::CPU`, or `tag::CPU_LINEPROF` for one
/// taken inside lineprof). Owner thread only (the signal handler, with the
/// thread outside lineprof, or `drain_parked`). Without `can_flush` a full
/// buffer drops the sample instead of writing.
pub fn append_cpu(t: *mut ThreadState, kind: u8, sample: CpuSample<'_>, can_flush: bool) {
    if crate::aggregate::on() {
        return crate::aggregate::cpu(kind == tag::CPU_LINEPROF, sample.stack, sample.count);
    }
    let need = match &sample.copy {
        Some(c) => format::max_stack_copy_len(c.frame_addrs.len()),
        None => MAX_EVENT_LEN,
    };
    // SAFETY: as in `append`.
    unsafe {
        let mut pos = (*t).committed.load(Ordering::Relaxed);
        if BUF_LEN - pos < need + MAX_EVENT_LEN {
            if !can_flush {
                coord::DROPPED_SAMPLES.fetch_add(1, Ordering::Relaxed);
                return;
            }
            flush(t, false);
            pos = EVENTS_HEADER;
        }
        if pos == EVENTS_HEADER {
            start_chunk(t, 0);
        }
        let mut e = Encoder::new(tail(t, pos), 0);
        e.u8(if sample.copy.is_some() {
            tag::CPU_STACK_COPY
        } else {
            kind
        });
        e.varint(sample.stack as u64);
        e.varint(sample.count as u64);
        e.varint(sample.now.saturating_sub((*t).prev_time));
        if let Some(c) = &sample.copy {
            e.varint(c.sp);
            e.varint(c.bp);
            e.varint(c.frame_addrs.len() as u64);
            let mut prev = c.sp;
            for &a in c.frame_addrs {
                e.varint(format::zigzag(a.wrapping_sub(prev) as i64));
                prev = a;
            }
            e.lp_bytes(c.bytes);
        }
        (*t).prev_time = sample.now.max((*t).prev_time);
        (*t).committed.store(pos + e.pos(), Ordering::Release);
    }
}

/// One CPU sample to append: its stack, weight (periods it stands for),
/// clock reading, and for a sample in code without frame pointers what the
/// reader needs to unwind it (`tag::CPU_STACK_COPY`).
pub struct CpuSample<'a> {
    pub stack: u32,
    pub count: u32,
    pub now: u64,
    pub copy: Option<StackCopyRef<'a>>,
}

/// Borrowed form of `format::StackCopy` for the allocation-free writer.
pub struct StackCopyRef<'a> {
    pub sp: u64,
    pub bp: u64,
    pub frame_addrs: &'a [u64],
    pub bytes: &'a [u8],
}

/// Keeps a CPU sample taken while the thread was inside lineprof; it is
/// appended as lineprof's own cost (`tag::CPU_LINEPROF`).
pub fn park_sample(t: *mut ThreadState, stack: u32, count: u32) {
    // SAFETY: owner thread (signal handler); the slot at `n` is beyond what
    // the owner reads until the length is published.
    unsafe {
        let n = (*t).parked_len.load(Ordering::Relaxed) as usize;
        if n >= PARKED {
            coord::DROPPED_SAMPLES.fetch_add(1, Ordering::Relaxed);
            return;
        }
        (*t).parked[n] = (stack, count);
        (*t).parked_len.store(n as u32 + 1, Ordering::Release);
    }
}

/// Appends the parked CPU samples. Owner thread, `busy` set.
pub fn drain_parked(t: *mut ThreadState) {
    // SAFETY: owner thread; a handler interrupting this loop can only push
    // at the end, which the compare-exchange notices.
    unsafe {
        loop {
            let n = (*t).parked_len.load(Ordering::Acquire);
            if n == 0 {
                return;
            }
            let (stack, count) = (*t).parked[n as usize - 1];
            if (*t)
                .parked_len
                .compare_exchange(n, n - 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                let sample = CpuSample {
                    stack,
                    count,
                    now: sys::coarse_ns(),
                    copy: None,
                };
                append_cpu(t, tag::CPU_LINEPROF, sample, true);
            }
        }
    }
}

/// Whether the thread has parked samples (cheap check for the hot path).
#[inline]
pub fn has_parked(t: *mut ThreadState) -> bool {
    // SAFETY: owner thread reading its own state.
    unsafe { (*t).parked_len.load(Ordering::Relaxed) != 0 }
}

/// Writes the thread's buffered events as one chunk. With `final_flush`
/// (the exit handler, reading another thread's buffer) the buffer is left
/// as it is; otherwise (the owner) it is emptied.
pub fn flush(t: *mut ThreadState, final_flush: bool) {
    sys::preserving_errno(|| flush_now(t, final_flush))
}

fn flush_now(t: *mut ThreadState, final_flush: bool) {
    // SAFETY: states are never unmapped. Sealing writes only the chunk
    // header bytes `[0, CHUNK_HEADER_LEN)`, which appends never touch, and
    // reads `[.., committed)`, which the owner no longer writes.
    unsafe {
        let _g = (*t).lock.lock();
        let len = (*t).committed.load(Ordering::Acquire);
        if len > EVENTS_HEADER {
            // A slice of the committed prefix only, made from a raw pointer:
            // the owner may be writing past it at this moment.
            let base = std::ptr::addr_of_mut!((*t).buf) as *mut u8;
            let chunk = std::slice::from_raw_parts_mut(base, len);
            writer::write_events(chunk, final_flush);
        }
        if !final_flush {
            (*t).committed.store(EVENTS_HEADER, Ordering::Release);
            (*t).last_flush_ns = sys::coarse_ns();
        }
    }
}

/// Every state that may hold unwritten events: registered ones and the
/// orphan.
pub fn for_each_state(mut f: impl FnMut(*mut ThreadState)) {
    let n = REGISTERED.load(Ordering::Acquire);
    for p in &REGISTRY[..n] {
        let s = p.load(Ordering::Acquire);
        if !s.is_null() {
            f(s);
        }
    }
    let o = orphan();
    if !o.is_null() {
        f(o);
    }
}

/// In the child of a `fork`: the parent's buffered events are the parent's
/// to write; every other thread is gone.
pub fn reset_after_fork() {
    let me = CURRENT.with(|c| c.get());
    REGISTRY_LOCK.force_unlock();
    MULTI.store(false, Ordering::Release);
    ATTACHES.store(1, Ordering::Release);
    SEQ.store(0, Ordering::Relaxed);
    for_each_state(|s| {
        // SAFETY: the child is single-threaded here (inside fork).
        unsafe {
            (*s).lock.force_unlock();
            (*s).committed.store(EVENTS_HEADER, Ordering::Release);
            (*s).seq_next = 0;
            (*s).seq_end = 0;
            (*s).heap_events.store(0, Ordering::Relaxed);
            (*s).parked_len.store(0, Ordering::Relaxed);
            if s != me && s != orphan() {
                (*s).in_use.store(false, Ordering::Release);
            }
        }
    });
}

pub fn lock_registry_for_fork() {
    REGISTRY_LOCK.lock_forever();
}

pub fn unlock_registry_after_fork() {
    REGISTRY_LOCK.force_unlock();
}

/// The event tag for allocations, re-exported for the hot path.
pub const ALLOC: u8 = tag::ALLOC;
pub const CPU: u8 = tag::CPU;
pub const FREE: u8 = tag::FREE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_encode_as_the_encoder_writes_them() {
        let mut values = vec![0u64, 1, 127, 128, 255, 16383, 16384, u64::MAX, u64::MAX / 2];
        for b in 0..64 {
            values.extend([1u64 << b, (1u64 << b) - 1, (1u64 << b) + 1]);
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 64));
        }
        for (i, &v) in values.iter().enumerate() {
            let w = values[(i * 7 + 3) % values.len()];
            let (stack, size) = (w as u32, v ^ w);
            let mut want = [0u8; MAX_EVENT_LEN];
            let mut e = Encoder::new(&mut want, 0);
            e.u8(tag::FREE);
            e.varint(v);
            e.varint(stack as u64);
            e.varint(size);
            e.varint(format::zigzag(w as i64));
            let want_len = e.pos();
            let mut got = [0xAAu8; MAX_EVENT_LEN];
            // SAFETY: `got` has MAX_EVENT_LEN bytes.
            let z = format::zigzag(w as i64);
            let len = unsafe { encode_event(got.as_mut_ptr(), tag::FREE, v, stack, size, z) };
            assert_eq!(&got[..len], &want[..want_len], "value {v:#x}, {w:#x}");
        }
    }
}
