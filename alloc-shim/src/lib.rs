//! lineprof's allocator shim: link it into a program, make it the global
//! allocator, and every allocation, reallocation and free is recorded with
//! its call stack into a profile file that `lineprof report` turns into
//! per-source-line tables.
//!
//! ```no_run
//! #[global_allocator]
//! static A: lineprof::Tracking = lineprof::Tracking::new();
//! ```
//!
//! Build with frame pointers and line tables (`cargo lineprof run` does
//! both; by hand: `RUSTFLAGS="-C force-frame-pointers=yes"` and
//! `[profile.release] debug = "line-tables-only"`), run the program, and a
//! `lineprof-<pid>.lprof` file appears in the working directory.
//!
//! # What it costs
//! Per event, a check of the frame-pointer chain against the chains this
//! thread walked before from the same frame (every record read and
//! compared, the loads independent of each other), which gives the stack
//! id; only a chain not seen before is walked (a dependent load per
//! frame), hashed, and looked up in a per-thread cache of recent stacks,
//! else in a lock-free table. Then a number in the global event order
//! (from a per-thread block while one thread records; from the invariant
//! time-stamp counter once several do), and ~6 bytes appended to a
//! per-thread buffer. No lock is taken and nothing is allocated on that
//! path; buffers go to the file in 256 KiB chunks. See BENCHMARKS.md for
//! measured figures.
//!
//! # Environment
//! - `LINEPROF_OUT`: profile path (`%p` becomes the process id);
//! - `LINEPROF=off`: pure pass-through (only [`measure`] still counts);
//! - `LINEPROF_SAMPLE`: mean bytes between sampled allocations (0: all);
//! - `LINEPROF_HZ`: CPU samples per second per thread (0: off);
//! - `LINEPROF_CPU=perf`: sample CPU with perf task-clock events (true
//!   `LINEPROF_HZ` resolution, dearer) instead of POSIX CPU-clock timers
//!   (resolution of the kernel tick, samples weighted);
//! - `LINEPROF_DEPTH`: maximum frames per stack (default 256).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::Ordering;

use coord::{ACTIVE, INITIALIZING, INSTALLED, OFF, STATE, UNINIT};

mod aggregate;
mod bench;
mod config;
mod coord;
mod cpu;
mod crc;
pub mod format;
mod lifecycle;
mod measure;
mod modules;
mod sampled;
mod spin;
mod stack;
mod stacks;
mod sys;
mod thread;
mod timers;
mod writer;

pub use lineprof_macros::profile;
pub use measure::{measure, Usage};

/// The heap-event path's parts, timed one by one by the micro benchmark;
/// not a public API.
#[doc(hidden)]
pub mod __bench {
    pub use crate::bench::{run, PARTS};
}

/// What `#[lineprof::profile]` expands to; not a public API.
#[doc(hidden)]
pub mod __timers {
    pub use crate::timers::{type_name_of, Call, Counted, Function};

    /// Starts a call of a marked function, first starting the profiler if
    /// nothing has yet (a program whose global allocator is not
    /// `Tracking`, or a call before its first allocation).
    #[inline]
    pub fn enter(f: &'static Function) -> Call {
        if !crate::is_active() && !crate::start_for_timers() {
            return Call::off();
        }
        Call::enter(f)
    }
}

/// The tracking global allocator. Wraps [`System`] by default, or any other
/// allocator with [`Tracking::wrap`].
pub struct Tracking<A = System> {
    inner: A,
}

impl Tracking<System> {
    /// A tracker over the system allocator. No init call is needed: tracking
    /// starts at the process's first allocation.
    pub const fn new() -> Self {
        Tracking { inner: System }
    }
}

impl Default for Tracking<System> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A> Tracking<A> {
    /// A tracker over another allocator (jemalloc, mimalloc, ...).
    ///
    /// ```ignore
    /// #[global_allocator]
    /// static A: lineprof::Tracking<tikv_jemallocator::Jemalloc> =
    ///     lineprof::Tracking::wrap(tikv_jemallocator::Jemalloc);
    /// ```
    pub const fn wrap(inner: A) -> Self {
        Tracking { inner }
    }
}

thread_local! {
    static INITIALIZING_HERE: Cell<bool> = const { Cell::new(false) };
    /// Set while the load-time constructor probes the global allocator.
    static PROBING: Cell<bool> = const { Cell::new(false) };
}

/// Runs when the program is loaded, before `main`: one allocation through
/// the global allocator tells whether it is `Tracking` (then the tracker
/// starts now, and the main thread gets its CPU timer even if it computes
/// for a long time before its first allocation) or not (then linking this
/// crate, as the `lineprof` CLI does, changes nothing).
#[used]
#[link_section = ".init_array"]
static START_AT_LOAD: extern "C" fn() = start_at_load;

extern "C" fn start_at_load() {
    // The probe block is kept, not freed: its allocation is not recorded
    // (PROBING), and leaving it alive spares every later free a check.
    static PROBE: std::sync::atomic::AtomicPtr<u8> =
        std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
    // Started already (by an earlier constructor's allocation): nothing to
    // probe, and the probe's allocation would be recorded.
    if STATE.load(Ordering::Acquire) == UNINIT {
        PROBING.with(|p| p.set(true));
        let probe = Box::into_raw(std::hint::black_box(Box::new(0u8)));
        PROBING.with(|p| p.set(false));
        PROBE.store(probe, Ordering::Relaxed);
    }
    if STATE.load(Ordering::Acquire) == ACTIVE {
        let _ = thread::current();
    }
}

/// Whether events should be recorded now; starts the tracker on first use.
#[inline(always)]
fn recording() -> bool {
    match STATE.load(Ordering::Acquire) {
        ACTIVE => true,
        UNINIT | INITIALIZING => start(),
        _ => false,
    }
}

#[cold]
#[inline(never)]
fn start() -> bool {
    INSTALLED.store(true, Ordering::Relaxed);
    sys::preserving_errno(start_now)
}

/// Starts the profiler for the line timers of a program whose global
/// allocator is not `Tracking` (or before its first allocation). True if
/// it is recording.
#[cold]
#[inline(never)]
pub(crate) fn start_for_timers() -> bool {
    match STATE.load(Ordering::Acquire) {
        ACTIVE => true,
        UNINIT | INITIALIZING => sys::preserving_errno(start_now),
        _ => false,
    }
}

/// Whether the profiler is recording (one load; for the line timers).
#[inline(always)]
pub(crate) fn is_active() -> bool {
    STATE.load(Ordering::Relaxed) == ACTIVE
}

fn start_now() -> bool {
    // Keeps the load-time constructor linked in wherever the tracker is.
    std::hint::black_box(&START_AT_LOAD);
    if INITIALIZING_HERE.with(|c| c.get()) {
        return false;
    }
    match STATE.compare_exchange(UNINIT, INITIALIZING, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            INITIALIZING_HERE.with(|c| c.set(true));
            let cfg = config::read();
            let state = if cfg.off {
                OFF
            } else if stacks::init(cfg.cpu_hz > 0 && !cfg.aggregate)
                && thread::init()
                && writer::init(&cfg)
                && aggregate::init(cfg.aggregate)
            {
                thread::init_clock();
                timers::init();
                cpu::init(cfg.cpu_hz, cfg.cpu_perf);
                lifecycle::install();
                sys::pin_this_object();
                ACTIVE
            } else {
                sys::stderr(
                    b"lineprof: could not set up (out of memory?); this run is not profiled\n",
                );
                OFF
            };
            INITIALIZING_HERE.with(|c| c.set(false));
            STATE.store(state, Ordering::Release);
            state == ACTIVE && !PROBING.with(|p| p.get())
        }
        Err(_) => {
            while STATE.load(Ordering::Acquire) == INITIALIZING {
                sys::yield_now();
            }
            STATE.load(Ordering::Acquire) == ACTIVE
        }
    }
}

/// Captures the calling thread's stack and interns it. `kind` (the event's
/// tag) and `size` only pick where the walked chain is kept and which kept
/// chain is checked first.
///
/// # Safety
/// `t` must be the calling thread's own state (or the orphan state with its
/// lock held).
#[inline(always)]
unsafe fn capture(t: *mut thread::ThreadState, kind: u8, size: usize) -> Option<stacks::StackId> {
    let (sp, fp) = stack::registers();
    // SAFETY (whole block): owner-only fields of `t`, per the contract.
    unsafe {
        if sp < (*t).stack_lo || sp >= (*t).stack_hi {
            thread::refresh_bounds(t, sp);
        }
        let hi = (*t).stack_hi;
        // Most events repeat the chain of an earlier event from the same
        // frame: checked record by record, without walking.
        let set = thread::chain_set(fp, kind);
        let order = &mut (*t).chain_order[set];
        let chains = &mut (*t).chains[set];
        let tail = &(*t).chain_tails[set];
        let first = order.predicted(size);
        // SAFETY: sets are only ever filled by `keep_walked` with one
        // `walk_chain`'s records per chain, their tails in this set's own
        // `chain_tails` entry; `sp..hi` is this thread's stack mapping.
        if chains.matches(tail, first, fp, sp, hi) {
            order.came(first, size);
            return Some(chains.ways[first].id);
        }
        for w in 0..thread::CHAIN_WAYS {
            // SAFETY: as above.
            if w != first && chains.matches(tail, w, fp, sp, hi) {
                order.came(w, size);
                return Some(chains.ways[w].id);
            }
        }
        let w = order.replace(size);
        capture_walk(t, set, w, sp, fp, hi)
    }
}

/// `capture` when the chain is none of the kept ones: a walk that keeps it
/// in way `w` of set `set`.
///
/// # Safety
/// As for `capture`; `set` and `w` pick one of `t`'s chains.
#[inline(never)]
unsafe fn capture_walk(
    t: *mut thread::ThreadState,
    set: usize,
    w: usize,
    sp: usize,
    fp: usize,
    hi: usize,
) -> Option<stacks::StackId> {
    // SAFETY (whole block): owner-only fields of `t`, per the contract.
    unsafe {
        let depth = coord::DEPTH.load(Ordering::Relaxed);
        let frames = &mut (&mut (*t).frames)[..depth];
        // The walk writes the chain's first records into way `w` itself
        // (emptied: it is being replaced), the rest aside.
        let chains = &mut (*t).chains[set];
        let wanted = chains.records_wanted();
        chains.forget(w);
        let head = &mut chains.ways[w].records;
        let tail = &mut (&mut (*t).chain_records)[..wanted - stack::CHAIN_FRAMES];
        let (n, full, h, kept) = stack::walk_chain(fp, sp, hi, frames, head, tail);
        if full {
            coord::TRUNCATED_STACKS.fetch_add(1, Ordering::Relaxed);
        }
        // Next, a per-thread cache keyed by the full 64-bit hash skips the
        // shared table (a false match needs two stacks of one program with
        // equal 64-bit hashes).
        let slot = &mut (*t).stack_cache[h as usize % thread::STACK_CACHE];
        let id = if slot.0 == h {
            Some(slot.1)
        } else {
            let id = stacks::intern_hashed(&frames[..n], h);
            match id {
                Some(id) => *slot = (h, id),
                None => {
                    coord::DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            id
        };
        let chains = &mut (*t).chains[set];
        match id {
            Some(id) if kept => {
                let tail = &mut (*t).chain_tails[set];
                let walked = &(&(*t).chain_records)[..n.saturating_sub(stack::CHAIN_FRAMES)];
                chains.keep_walked(tail, w, fp, hi, n, walked, id)
            }
            _ => chains.forget(w),
        }
        if !full {
            chains.walked(n);
        }
        id
    }
}

thread_local! {
    /// Sampling mode: bytes this thread allocates before its next sampled
    /// allocation (0 before its first draw, see `sample_hit_slow`).
    static SAMPLE_LEFT: Cell<i64> = const { Cell::new(0) };
    static SAMPLE_DRAWN: Cell<bool> = const { Cell::new(false) };
}

/// Sampling mode: whether this allocation of `size` bytes is sampled. Each
/// thread counts down an exponentially distributed number of bytes, so an
/// allocation is sampled with probability `1 - exp(-size / mean)`
/// independently of all others (the reader weights it by the inverse).
/// Unsampled, it is one thread-local load, subtraction and store.
#[inline(always)]
fn sample_hit(mean: u64, size: usize) -> bool {
    let left = SAMPLE_LEFT.with(|c| c.get()) - size as i64;
    if left > 0 {
        SAMPLE_LEFT.with(|c| c.set(left));
        return false;
    }
    sample_hit_slow(mean, size)
}

/// The countdown ran out (or was never drawn on this thread): draws the
/// next one from the thread's generator.
#[cold]
#[inline(never)]
fn sample_hit_slow(mean: u64, size: usize) -> bool {
    let t = thread::current();
    if thread::is_dead(t) {
        return false;
    }
    // SAFETY: `t` is this thread's own state (its generator).
    unsafe {
        if !SAMPLE_DRAWN.with(|d| d.replace(true)) {
            // The thread's first countdown, which this allocation starts.
            let left = thread::next_countdown(t, mean) - size as i64;
            if left > 0 {
                SAMPLE_LEFT.with(|c| c.set(left));
                return false;
            }
        }
        SAMPLE_LEFT.with(|c| c.set(thread::next_countdown(t, mean)));
    }
    true
}

/// Records an allocation, in sampling mode only when it is sampled.
#[inline(always)]
fn on_alloc(addr: usize, size: usize) {
    let mean = coord::SAMPLE_BYTES.load(Ordering::Relaxed);
    if mean == 0 {
        record(thread::ALLOC, addr, size);
    } else if sample_hit(mean, size) {
        if sampled::insert(addr as u64) {
            record(thread::ALLOC, addr, size);
        } else {
            coord::DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Records a free, in sampling mode only of a sampled block.
#[inline(always)]
fn on_free(addr: usize, size: usize) {
    let mean = coord::SAMPLE_BYTES.load(Ordering::Relaxed);
    if mean == 0 || sampled::remove(addr as u64) {
        record(thread::FREE, addr, size);
    }
}

/// The `kind` under which reallocations keep their walked chains.
const REALLOC_KIND: u8 = 0xff;

/// Records one allocation or free with the caller's stack.
#[inline(never)]
fn record(kind: u8, addr: usize, size: usize) {
    let t = thread::current();
    if thread::is_dead(t) {
        return record_orphan(kind, addr, size);
    }
    // SAFETY: `t` is this thread's own state; `busy` guards against a
    // signal handler on this thread re-entering while we work.
    unsafe {
        if (*t).busy {
            // A host signal handler allocating while lineprof (maybe its
            // CPU handler) is mid-update on this thread: counted, reported.
            coord::REENTRANT_DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        thread::set_busy(t, true);
        if let Some(id) = capture(t, kind, size) {
            put(t, kind, id, addr, size);
        } else if kind == thread::FREE && aggregate::on() {
            aggregate::free_taken(None, size as u64, aggregate::take(addr as u64));
        }
        if thread::has_parked(t) {
            thread::drain_parked(t);
        }
        thread::set_busy(t, false);
    }
}

/// Threads past their exit destructor share one locked state.
#[cold]
fn record_orphan(kind: u8, addr: usize, size: usize) {
    let _g = thread::orphan_lock();
    let t = thread::orphan();
    // SAFETY: the orphan lock is held.
    unsafe {
        if let Some(id) = capture(t, kind, size) {
            put(t, kind, id, addr, size);
        } else if kind == thread::FREE && aggregate::on() {
            aggregate::free_taken(None, size as u64, aggregate::take(addr as u64));
        }
    }
}

/// One event with its stack: streamed into the thread's buffer, or, in
/// aggregate mode, counted.
///
/// # Safety
/// As for `capture`.
#[inline(always)]
unsafe fn put(
    t: *mut thread::ThreadState,
    kind: u8,
    id: stacks::StackId,
    addr: usize,
    size: usize,
) {
    if aggregate::on() {
        if kind == thread::ALLOC {
            aggregate::alloc(id, size as u64, addr as u64);
        } else {
            aggregate::free(id, size as u64, addr as u64);
        }
        return;
    }
    let seq = thread::next_seq(t, kind == thread::ALLOC);
    thread::append(t, kind, seq, id, size as u64, addr as u64);
}

/// A reallocation: one free of the old block and one allocation of the new
/// one, both with the caller's stack, numbered around the inner call. In
/// sampling mode, most are neither: then nothing but the two checks.
#[inline(always)]
fn record_realloc(
    old: usize,
    old_size: usize,
    new_size: usize,
    f: impl FnOnce() -> *mut u8,
) -> *mut u8 {
    let mean = coord::SAMPLE_BYTES.load(Ordering::Relaxed);
    let (free_old, alloc_new) = if mean == 0 {
        (true, true)
    } else {
        (sampled::remove(old as u64), sample_hit(mean, new_size))
    };
    if !free_old && !alloc_new {
        return f();
    }
    record_realloc_now(old, old_size, new_size, f, mean, free_old, alloc_new)
}

/// `record_realloc` of a reallocation whose free (`free_old`) or
/// allocation (`alloc_new`) is recorded.
#[inline(never)]
fn record_realloc_now(
    old: usize,
    old_size: usize,
    new_size: usize,
    f: impl FnOnce() -> *mut u8,
    mean: u64,
    free_old: bool,
    alloc_new: bool,
) -> *mut u8 {
    let t = thread::current();
    // SAFETY: as in `record`.
    if !thread::is_dead(t) && unsafe { (*t).busy } {
        // Re-entered from a signal handler: not recorded, counted.
        let n = free_old as u64 + alloc_new as u64;
        coord::REENTRANT_DROPPED.fetch_add(n, Ordering::Relaxed);
        let p = f();
        if p.is_null() {
            old_block_lives_on(old, free_old, mean);
        }
        return p;
    }
    if thread::is_dead(t) {
        let p = f();
        if !p.is_null() {
            if free_old {
                record_orphan(thread::FREE, old, old_size);
            }
            if alloc_new && (mean == 0 || sampled::insert(p as u64)) {
                record_orphan(thread::ALLOC, p as usize, new_size);
            }
        } else {
            old_block_lives_on(old, free_old, mean);
        }
        return p;
    }
    if aggregate::on() {
        // SAFETY: `t` is this thread's own state.
        return unsafe { realloc_aggregated(t, old, old_size, new_size, f) };
    }
    // SAFETY: `t` is this thread's own state.
    unsafe {
        thread::set_busy(t, true);
        let id = capture(t, REALLOC_KIND, new_size);
        let free_seq = if free_old {
            thread::next_seq(t, false)
        } else {
            0
        };
        // The inner allocator's work (copying the block, faulting in new
        // pages) is the program's time, as it is without lineprof.
        let p = cpu::program_call(f);
        if p.is_null() {
            old_block_lives_on(old, free_old, mean);
        } else if let Some(id) = id {
            if free_old {
                thread::append(t, thread::FREE, free_seq, id, old_size as u64, old as u64);
            }
            if alloc_new && (mean == 0 || sampled::insert(p as u64)) {
                let alloc_seq = thread::next_seq(t, true);
                thread::append(t, thread::ALLOC, alloc_seq, id, new_size as u64, p as u64);
            }
        }
        if thread::has_parked(t) {
            thread::drain_parked(t);
        }
        thread::set_busy(t, false);
        p
    }
}

/// A failed reallocation leaves its old block allocated: back in the
/// sampled set if it was taken out of it (`free_old` in sampling mode).
fn old_block_lives_on(old: usize, free_old: bool, mean: u64) {
    if free_old && mean != 0 {
        sampled::insert(old as u64);
    }
}

/// `record_realloc` in aggregate mode: the old block leaves the block table
/// before the inner call (another thread may get its address as soon as
/// the call returns) and comes back if the call fails.
///
/// # Safety
/// `t` is the calling thread's own, live state.
unsafe fn realloc_aggregated(
    t: *mut thread::ThreadState,
    old: usize,
    old_size: usize,
    new_size: usize,
    f: impl FnOnce() -> *mut u8,
) -> *mut u8 {
    thread::set_busy(t, true);
    // SAFETY: per the contract.
    let id = unsafe { capture(t, REALLOC_KIND, new_size) };
    let owner = aggregate::take(old as u64);
    let p = cpu::program_call(f);
    if p.is_null() {
        aggregate::untake(old as u64, owner);
    } else {
        aggregate::free_taken(id, old_size as u64, owner);
        if let Some(id) = id {
            aggregate::alloc(id, new_size as u64, p as u64);
        }
    }
    if thread::has_parked(t) {
        thread::drain_parked(t);
    }
    thread::set_busy(t, false);
    p
}

// SAFETY: every method forwards to the inner allocator with the caller's
// arguments unchanged and returns its result unchanged; recording only
// reads the pointers and sizes.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Tracking<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            measure::on_alloc(layout.size());
            if recording() {
                on_alloc(p as usize, layout.size());
            }
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            measure::on_alloc(layout.size());
            if recording() {
                on_alloc(p as usize, layout.size());
            }
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        measure::on_free(layout.size());
        if recording() {
            on_free(ptr as usize, layout.size());
        }
        // SAFETY: forwarded contract.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract (inside the closures too).
        let p = if recording() {
            record_realloc(ptr as usize, layout.size(), new_size, || unsafe {
                self.inner.realloc(ptr, layout, new_size)
            })
        } else {
            unsafe { self.inner.realloc(ptr, layout, new_size) }
        };
        if !p.is_null() {
            measure::on_free(layout.size());
            measure::on_alloc(new_size);
        }
        p
    }
}
