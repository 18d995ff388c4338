//! Line timers for `#[lineprof::profile]`: what the attribute's expansion
//! calls. Each marked function has a static descriptor ([`Function`]: its
//! path, file, and the source line of each counter slot); each thread has a
//! table of counters, one block per function it called, found through the
//! descriptor's index at the call's start. A line event is then a counter
//! increment and, in the outermost call of the function on the thread, a
//! clock reading (the time-stamp counter where it is invariant): no lock,
//! no allocation, no shared cache line.
//!
//! Tables live in their own mappings, are reused by later threads and are
//! never emptied, so their counters only grow: a `Timers` chunk is a
//! cumulative snapshot of one table, and the reader keeps the last one of
//! each. Snapshots are written when a thread exits, at process exit, and
//! every half second or so from a thread that keeps calling marked
//! functions.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::format::{self, ChunkKind, Encoder, TimedFunctionHead, TimedLine, TimersHeader};
use crate::spin::SpinLock;
use crate::{sys, writer};

/// A marked function, as the attribute writes it into a static.
pub struct Function {
    /// Returns `std::any::type_name` of an item nested two levels inside
    /// the function (`app::Type::method::__lineprof_path::here`).
    path: fn() -> &'static str,
    file: &'static str,
    line: u32,
    /// Source line of each counter slot; slot 0 (the call's start, before
    /// its first line) has line 0 and is not reported.
    lines: &'static [u32],
    /// 1 + the function's index in `FUNCTIONS`; 0 until its first call.
    id: AtomicU32,
}

impl Function {
    pub const fn new(
        path: fn() -> &'static str,
        file: &'static str,
        line: u32,
        lines: &'static [u32],
    ) -> Function {
        Function {
            path,
            file,
            line,
            lines,
            id: AtomicU32::new(0),
        }
    }

    /// `app::Type::method` from the nested item's type name.
    fn path(&self) -> &'static str {
        let full = (self.path)();
        let cut = full
            .rfind("::")
            .and_then(|i| full[..i].rfind("::"))
            .unwrap_or(full.len());
        &full[..cut]
    }
}

/// `std::any::type_name` of a value's type: of a function item, its path.
pub fn type_name_of<T>(_: T) -> &'static str {
    std::any::type_name::<T>()
}

const MAX_FUNCTIONS: usize = 4096;
const MAX_TABLES: usize = 4096;
const ARENA_CHUNK: usize = 64 * 1024;
const WRITE_INTERVAL_NS: u64 = 500_000_000;
/// Outermost calls between two looks at the clock for a periodic write.
const CALLS_PER_CHECK: u32 = 1024;
/// Longest function path written (a longer one is cut).
const MAX_PATH: usize = 1024;

static FUNCTIONS: [AtomicPtr<Function>; MAX_FUNCTIONS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_FUNCTIONS];
static FUNCTION_COUNT: AtomicU32 = AtomicU32::new(0);
static FUNCTIONS_LOCK: SpinLock = SpinLock::new();

static TABLES: [AtomicPtr<Table>; MAX_TABLES] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_TABLES];
static TABLE_COUNT: AtomicU32 = AtomicU32::new(0);
static TABLES_LOCK: SpinLock = SpinLock::new();

static UNTIMED_CALLS: AtomicU64 = AtomicU64::new(0);
/// Read the time-stamp counter (else CLOCK_MONOTONIC, in ns).
static USE_TSC: AtomicBool = AtomicBool::new(false);
/// Clock readings at the timers' start, for the calibration.
static START_TICKS: AtomicU64 = AtomicU64::new(0);
static START_NS: AtomicU64 = AtomicU64::new(0);

/// Called once at the profiler's start, after `thread::init_clock`.
pub fn init() {
    USE_TSC.store(crate::thread::tsc_ok(), Ordering::Relaxed);
    START_NS.store(sys::monotonic_ns(), Ordering::Relaxed);
    START_TICKS.store(now(), Ordering::Relaxed);
}

#[inline(always)]
fn now() -> u64 {
    if USE_TSC.load(Ordering::Relaxed) {
        crate::stack::tsc(false)
    } else {
        sys::monotonic_ns()
    }
}

/// Hits and time of one slot. Written by the owner thread only (plain
/// load and store, no read-modify-write), read by the exit writer.
struct LineCounter {
    hits: AtomicU64,
    ticks: AtomicU64,
}

/// One function's counters in one thread table; its slots follow it in
/// memory.
#[repr(C)]
struct Counters {
    calls: AtomicU64,
    ticks: AtomicU64,
    /// Calls of the function open on the owner thread (owner only).
    depth: Cell<u32>,
    slots: usize,
}

impl Counters {
    fn lines(&self) -> *const LineCounter {
        // SAFETY: the slots are allocated right after the header (`alloc`).
        unsafe { (self as *const Counters).add(1) as *const LineCounter }
    }
}

#[inline(always)]
fn bump(c: &AtomicU64, by: u64) {
    c.store(
        c.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// One thread's counters.
struct Table {
    in_use: AtomicBool,
    index: u32,
    functions: [AtomicPtr<Counters>; MAX_FUNCTIONS],
    // Owner-only below.
    arena: Cell<*mut u8>,
    arena_left: Cell<usize>,
    calls_until_check: Cell<u32>,
    last_write_ns: Cell<u64>,
}

/// The thread's table, released (and written) when the thread exits.
struct Handle(Cell<*mut Table>);

impl Drop for Handle {
    fn drop(&mut self) {
        let t = self.0.replace(std::ptr::null_mut());
        if !t.is_null() {
            write_table(t, false, true);
            // SAFETY: tables stay mapped; a later thread may reuse it.
            unsafe { &*t }.in_use.store(false, Ordering::Release);
        }
    }
}

thread_local! {
    static TABLE: Handle = const { Handle(Cell::new(std::ptr::null_mut())) };
}

/// One call of a marked function, from its start to its end (the guard
/// closes the open line when the call returns, or unwinds).
pub struct Call {
    counters: *const Counters,
    lines: *const LineCounter,
    /// Slots that may be hit: 0 while the timers are off, so that a line
    /// event is one predictable branch.
    slots: usize,
    /// The outermost call of the function on this thread: the only one
    /// that reads the clock.
    timed: bool,
    open: Cell<usize>,
    start: Cell<u64>,
    entered: u64,
}

impl Call {
    /// Starts a call of `f` on this thread; the profiler is running
    /// (`crate::__timers::enter` sees to it).
    #[inline]
    pub fn enter(f: &'static Function) -> Call {
        let Some(c) = counters(f) else {
            UNTIMED_CALLS.fetch_add(1, Ordering::Relaxed);
            return Call::off();
        };
        // SAFETY: `c` is this thread's counters for `f`, live forever.
        let c = unsafe { &*c };
        bump(&c.calls, 1);
        let depth = c.depth.get();
        c.depth.set(depth + 1);
        let timed = depth == 0;
        if timed {
            maybe_write();
        }
        let start = if timed { now() } else { 0 };
        Call {
            counters: c,
            lines: c.lines(),
            slots: c.slots,
            timed,
            open: Cell::new(0),
            start: Cell::new(start),
            entered: start,
        }
    }

    pub fn off() -> Call {
        Call {
            counters: std::ptr::null(),
            lines: std::ptr::null(),
            slots: 0,
            timed: false,
            open: Cell::new(0),
            start: Cell::new(0),
            entered: 0,
        }
    }

    /// The line of `slot` starts: counts a hit and closes the open line.
    #[inline(always)]
    pub fn line(&self, slot: usize) {
        if slot >= self.slots {
            return;
        }
        // SAFETY: `slot` and `open` are below `slots`, the length of the
        // counter block, which lives forever and is this thread's.
        unsafe {
            let l = &*self.lines.add(slot);
            bump(&l.hits, 1);
            if self.timed {
                let now = now();
                let o = &*self.lines.add(self.open.get());
                bump(&o.ticks, now.saturating_sub(self.start.get()));
                self.open.set(slot);
                self.start.set(now);
            }
        }
    }
}

impl Drop for Call {
    #[inline]
    fn drop(&mut self) {
        if self.slots == 0 {
            return;
        }
        // SAFETY: as in `line`; `counters` is non-null when `slots` > 0.
        unsafe {
            let c = &*self.counters;
            if self.timed {
                let now = now();
                let o = &*self.lines.add(self.open.get());
                bump(&o.ticks, now.saturating_sub(self.start.get()));
                bump(&c.ticks, now.saturating_sub(self.entered));
            }
            c.depth.set(c.depth.get().saturating_sub(1));
        }
    }
}

/// A `for` loop's iterator, counting each test of the loop (each call of
/// `next`) as a hit of the loop's line. The first test is counted by the
/// mark before the loop, so that evaluating the iterated expression is
/// timed on the loop's line too.
pub struct Counted<'a, I> {
    call: &'a Call,
    slot: usize,
    first: bool,
    inner: I,
}

impl<'a, I: Iterator> Counted<'a, I> {
    #[inline(always)]
    pub fn new(call: &'a Call, slot: usize, inner: I) -> Self {
        Counted {
            call,
            slot,
            first: true,
            inner,
        }
    }
}

impl<I: Iterator> Iterator for Counted<'_, I> {
    type Item = I::Item;

    #[inline(always)]
    fn next(&mut self) -> Option<I::Item> {
        if self.first {
            self.first = false;
        } else {
            self.call.line(self.slot);
        }
        self.inner.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

/// This thread's counters for `f`, set up on the first call.
#[inline]
fn counters(f: &'static Function) -> Option<*const Counters> {
    let id = match f.id.load(Ordering::Acquire) {
        0 => register(f)?,
        id => id as usize - 1,
    };
    let t = TABLE
        .try_with(|h| {
            let t = h.0.get();
            if t.is_null() {
                let t = attach();
                h.0.set(t);
                t
            } else {
                t
            }
        })
        .ok()?;
    if t.is_null() {
        return None;
    }
    // SAFETY: `t` is this thread's table.
    let c = unsafe { &*t }.functions[id].load(Ordering::Relaxed);
    if !c.is_null() {
        return Some(c);
    }
    alloc_counters(t, id, f.lines.len())
}

#[cold]
fn register(f: &'static Function) -> Option<usize> {
    let _g = FUNCTIONS_LOCK.lock();
    let id = f.id.load(Ordering::Acquire);
    if id != 0 {
        return Some(id as usize - 1);
    }
    let n = FUNCTION_COUNT.load(Ordering::Acquire) as usize;
    if n == MAX_FUNCTIONS {
        return None;
    }
    FUNCTIONS[n].store(f as *const Function as *mut Function, Ordering::Release);
    FUNCTION_COUNT.store(n as u32 + 1, Ordering::Release);
    f.id.store(n as u32 + 1, Ordering::Release);
    Some(n)
}

/// A table for the calling thread: a released one, else a new mapping.
#[cold]
fn attach() -> *mut Table {
    let _g = TABLES_LOCK.lock();
    let n = TABLE_COUNT.load(Ordering::Acquire) as usize;
    for p in &TABLES[..n] {
        let t = p.load(Ordering::Acquire);
        // SAFETY: registered tables stay mapped forever.
        let table = unsafe { &*t };
        if table
            .in_use
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            table.last_write_ns.set(sys::coarse_ns());
            return t;
        }
    }
    if n == MAX_TABLES {
        return std::ptr::null_mut();
    }
    let t = sys::map_zeroed(std::mem::size_of::<Table>()) as *mut Table;
    if t.is_null() {
        return t;
    }
    // SAFETY: a fresh zeroed mapping of the right size: all-zero is a valid
    // `Table` (null pointers, false, 0) but for the fields set here.
    unsafe {
        (*t).index = n as u32;
        (*t).in_use = AtomicBool::new(true);
        (*t).calls_until_check = Cell::new(CALLS_PER_CHECK);
        (*t).last_write_ns = Cell::new(sys::coarse_ns());
    }
    TABLES[n].store(t, Ordering::Release);
    TABLE_COUNT.store(n as u32 + 1, Ordering::Release);
    t
}

#[cold]
fn alloc_counters(t: *mut Table, id: usize, slots: usize) -> Option<*const Counters> {
    // SAFETY: `t` is the calling thread's table; the arena fields are the
    // owner's.
    let t = unsafe { &*t };
    let size = std::mem::size_of::<Counters>() + slots * std::mem::size_of::<LineCounter>();
    let size = size.next_multiple_of(16);
    if t.arena_left.get() < size {
        let len = size.max(ARENA_CHUNK);
        let p = sys::map_zeroed(len);
        if p.is_null() {
            return None;
        }
        t.arena.set(p);
        t.arena_left.set(len);
    }
    let c = t.arena.get() as *mut Counters;
    // SAFETY: `size` zeroed bytes of the arena, 16-aligned (chunks are
    // page-aligned, sizes multiples of 16); all-zero counters are valid.
    unsafe {
        (*c).slots = slots;
        t.arena.set(t.arena.get().add(size));
    }
    t.arena_left.set(t.arena_left.get() - size);
    t.functions[id].store(c, Ordering::Release);
    Some(c)
}

/// Every so many outermost calls, a look at the clock; a snapshot of the
/// thread's table when the write interval has passed.
#[inline]
fn maybe_write() {
    let _ = TABLE.try_with(|h| {
        let t = h.0.get();
        // SAFETY: the thread's own table (non-null: `counters` attached it).
        let table = unsafe { &*t };
        let n = table.calls_until_check.get() - 1;
        if n > 0 {
            table.calls_until_check.set(n);
            return;
        }
        table.calls_until_check.set(CALLS_PER_CHECK);
        let now = sys::coarse_ns();
        if now.wrapping_sub(table.last_write_ns.get()) > WRITE_INTERVAL_NS {
            table.last_write_ns.set(now);
            write_table(t, false, false);
        }
    });
}

/// Writes a snapshot of table `t` (`wait`: for the file lock).
fn write_table(t: *mut Table, final_flush: bool, wait: bool) {
    // SAFETY: tables stay mapped; counters of another thread are read with
    // relaxed loads (a racy but defined snapshot at exit).
    let table = unsafe { &*t };
    let header = TimersHeader {
        table: table.index,
        clock_ticks: now().wrapping_sub(START_TICKS.load(Ordering::Relaxed)),
        clock_ns: sys::monotonic_ns().wrapping_sub(START_NS.load(Ordering::Relaxed)),
        untimed_calls: UNTIMED_CALLS.load(Ordering::Relaxed),
    };
    let functions = FUNCTION_COUNT.load(Ordering::Acquire) as usize;
    let mut next = 0;
    writer::write_chunks(ChunkKind::Timers, final_flush, wait, |e| {
        format::encode_timers_header(e, &header);
        while next < functions {
            if !encode_function(e, table, next) {
                if e.pos() == crate::format::CHUNK_HEADER_LEN + format::TIMERS_HEADER_LEN {
                    next += 1; // larger than a whole chunk: left out
                }
                return true;
            }
            next += 1;
        }
        false
    });
}

/// Encodes function `id` of `table` if it was called there. False when it
/// does not fit.
fn encode_function(e: &mut Encoder<'_>, table: &Table, id: usize) -> bool {
    let c = table.functions[id].load(Ordering::Acquire);
    let f = FUNCTIONS[id].load(Ordering::Acquire);
    if c.is_null() || f.is_null() {
        return true;
    }
    // SAFETY: counters and descriptors live forever.
    let (c, f) = unsafe { (&*c, &*f) };
    let calls = c.calls.load(Ordering::Relaxed);
    if calls == 0 {
        return true;
    }
    let path = f.path().as_bytes();
    let path = &path[..path.len().min(MAX_PATH)];
    let file = f.file.as_bytes();
    let file = &file[..file.len().min(MAX_PATH)];
    let slots = c.slots.min(f.lines.len());
    if e.remaining() < format::max_timed_function_len(path.len(), file.len(), slots) {
        return false;
    }
    let reported = (1..slots).filter(|&i| f.lines[i] != 0).count();
    // Slot 0, from the call's start to its first line, is the guard's own
    // set-up: not the function's time (which is then its lines' time).
    // SAFETY: every block has slot 0 (the attribute's table starts with it).
    let setup = if slots > 0 {
        unsafe { &*c.lines() }.ticks.load(Ordering::Relaxed)
    } else {
        0
    };
    let head = TimedFunctionHead {
        path,
        file,
        line: f.line,
        calls,
        ticks: c.ticks.load(Ordering::Relaxed).saturating_sub(setup),
        lines: reported,
    };
    format::encode_timed_function(e, &head);
    for i in 1..slots {
        if f.lines[i] == 0 {
            continue;
        }
        // SAFETY: `i < slots`, the length of the counter block.
        let l = unsafe { &*c.lines().add(i) };
        format::encode_timed_line(
            e,
            &TimedLine {
                line: f.lines[i],
                hits: l.hits.load(Ordering::Relaxed),
                ticks: l.ticks.load(Ordering::Relaxed),
            },
        );
    }
    true
}

/// The exit handler: a final snapshot of every table.
pub fn write_all_at_exit() {
    let n = TABLE_COUNT.load(Ordering::Acquire) as usize;
    for p in &TABLES[..n] {
        let t = p.load(Ordering::Acquire);
        if !t.is_null() {
            write_table(t, true, true);
        }
    }
}

/// In a `fork` child: its profile holds what it does after the fork, so
/// every count starts again from zero; the calls open on the forking thread
/// stay open. Other threads are gone: their tables are released.
pub fn after_fork_child() {
    let mine = TABLE
        .try_with(|h| h.0.get())
        .unwrap_or(std::ptr::null_mut());
    TABLES_LOCK.force_unlock();
    FUNCTIONS_LOCK.force_unlock();
    UNTIMED_CALLS.store(0, Ordering::Relaxed);
    let functions = FUNCTION_COUNT.load(Ordering::Acquire) as usize;
    let n = TABLE_COUNT.load(Ordering::Acquire) as usize;
    for p in &TABLES[..n] {
        let t = p.load(Ordering::Acquire);
        // SAFETY: the child is single-threaded here; tables stay mapped.
        let table = unsafe { &*t };
        for f in &table.functions[..functions] {
            let c = f.load(Ordering::Relaxed);
            if c.is_null() {
                continue;
            }
            // SAFETY: counters live forever; nobody else runs.
            let c = unsafe { &*c };
            c.calls.store(0, Ordering::Relaxed);
            c.ticks.store(0, Ordering::Relaxed);
            for i in 0..c.slots {
                // SAFETY: `i < slots`.
                let l = unsafe { &*c.lines().add(i) };
                l.hits.store(0, Ordering::Relaxed);
                l.ticks.store(0, Ordering::Relaxed);
            }
            if t != mine {
                c.depth.set(0);
            }
        }
        if t != mine {
            table.in_use.store(false, Ordering::Release);
        }
    }
}
