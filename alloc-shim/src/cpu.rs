//! CPU sampling: a per-thread CPU-time clock interrupts each thread after
//! every `1/LINEPROF_HZ` seconds of CPU it uses, and the signal handler
//! records the interrupted stack. A thread is sampled in proportion to the
//! CPU it uses, never for time it spends blocked.
//!
//! - Default (`LINEPROF_CPU=perf`): a `perf_event_open` software
//!   `task-clock` event per thread, driven by a high-resolution timer, so
//!   1000 Hz means 1000 samples a second. It counts user and kernel time
//!   (a sample due inside a system call is delivered on its return), as
//!   the timers do; that needs `perf_event_paranoid` <= 1 or CAP_PERFMON
//!   (root). Each overflow signals the thread (`F_SETSIG`, `F_SETOWN_EX`).
//!   Where perf events are refused, timers are used.
//! - `LINEPROF_CPU=timer`: `timer_create` on each thread's CPU clock with
//!   `SIGEV_THREAD_ID`. The kernel checks those at its tick (often 250 Hz),
//!   so a sample may stand for several periods: it is weighted by
//!   `1 + si_overrun`, which keeps time unbiased at a coarser grain, and the
//!   report says how many samples were real. Cheap: the signal is raised
//!   from the tick itself.
//! - The signal is SIGURG, not SIGPROF, so a program that uses SIGPROF or
//!   SIGALRM itself sees exactly the signals it would without lineprof.
//!   SIGURG because its default action is to ignore it: a sample signal
//!   still pending when a thread calls `execve` (the CPU clock runs in the
//!   kernel too) is delivered to the new program image, which has no
//!   handler of ours; a real-time signal would kill it there. A signal that
//!   is not from our timers or perf events (no `SI_TIMER` code with our
//!   cookie, no `POLL_IN` from one of our descriptors) is passed on to the
//!   handler that was installed before us, and ignored as by default when
//!   there was none. `SA_RESTART` keeps interrupted system calls going.
//! - Threads get a timer when they attach (first allocation) and from a scan
//!   of `/proc/self/task` at each periodic flush, which catches threads that
//!   never allocate. Timers are deleted when their thread exits.
//! - The handler allocates nothing and takes no lock a host could hold: it
//!   walks the interrupted frame-pointer chain into a per-thread buffer and
//!   appends one event. If the signal lands while the same thread is inside
//!   lineprof, the sample is lineprof's own cost: it is parked and appended
//!   as such (`CPU_LINEPROF`) when lineprof returns. The exception is the
//!   inner allocator's own call inside lineprof's reallocation path
//!   (`program_call`): that is the program's time (an untracked run spends
//!   it too), sampled as usual.
//! - A sample whose program counter is outside the executable (C code,
//!   built without frame pointers), or in it with a return address at the
//!   stack pointer (a leaf without frame pointer, a prologue), also keeps
//!   the interrupted registers,
//!   the frame addresses of its walk and a copy of up to 2 KiB of stack
//!   (`CPU_STACK_COPY`): the reader unwinds the first frames with the
//!   module's `.eh_frame`, as perf's DWARF mode does, and splices them onto
//!   the walk.

use std::cell::Cell;
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

use crate::coord::{self, DROPPED_SAMPLES, FORKING};
use crate::spin::SpinLock;
use crate::{format, modules, stack, stacks, sys, thread};

static SIGNO: AtomicI32 = AtomicI32::new(0);
/// Whether threads get perf events (true) or POSIX CPU timers (false).
static USE_PERF: AtomicBool = AtomicBool::new(false);
static PERIOD_NS: AtomicU64 = AtomicU64::new(0);
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The handler that was installed for our signal before us.
static OLD_ACTION: AtomicUsize = AtomicUsize::new(0);
static OLD_FLAGS: AtomicI32 = AtomicI32::new(0);

const MAX_TIMERS: usize = 4096;
/// Sampled threads: tid and the perf event fd or timer id that samples it.
static TIMER_TIDS: [AtomicI32; MAX_TIMERS] = [const { AtomicI32::new(0) }; MAX_TIMERS];
static TIMER_IDS: [AtomicUsize; MAX_TIMERS] = [const { AtomicUsize::new(0) }; MAX_TIMERS];
/// The kernel's id of each slot's perf event (`PERF_EVENT_IOC_ID`), checked
/// before its descriptor is closed.
static PERF_EVENT_IDS: [AtomicU64; MAX_TIMERS] = [const { AtomicU64::new(0) }; MAX_TIMERS];
/// One past the highest slot ever used, so the handler scans few slots.
static SLOTS_USED: AtomicUsize = AtomicUsize::new(0);
static TIMERS_LOCK: SpinLock = SpinLock::new();

/// Distinguishes our timer signals from anything else carrying the signal.
static COOKIE: u8 = 0;

fn cookie() -> usize {
    &COOKIE as *const u8 as usize
}

thread_local! {
    /// Set while lineprof, busy recording, runs the program's inner
    /// allocator (`program_call`). A const thread-local without a
    /// destructor: no lazy registration, readable from the signal handler
    /// (as `thread::CURRENT` is).
    static IN_PROGRAM_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, the inner allocator's call that lineprof makes while it is
/// busy recording a reallocation, with its CPU samples counted as the
/// program's (charged to the caller's line), not as lineprof's cost.
/// Lineprof's state is between updates during `f`, so the handler may
/// append a sample then.
#[inline(always)]
pub fn program_call<R>(f: impl FnOnce() -> R) -> R {
    IN_PROGRAM_CALL.with(|c| c.set(true));
    compiler_fence(Ordering::SeqCst);
    let r = f();
    compiler_fence(Ordering::SeqCst);
    IN_PROGRAM_CALL.with(|c| c.set(false));
    r
}

/// Installs the signal handler. Called once at init.
pub fn init(hz: u32, perf: bool) {
    if hz == 0 {
        return;
    }
    USE_PERF.store(perf, Ordering::Relaxed);
    let signo = libc::SIGURG;
    // SAFETY: a zeroed sigaction is a valid starting value; we fill in the
    // handler, flags and an empty mask, and keep the old action to chain to.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        let mut old: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = on_signal as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut new.sa_mask);
        if libc::sigaction(signo, &new, &mut old) != 0 {
            return;
        }
        OLD_ACTION.store(old.sa_sigaction, Ordering::Relaxed);
        OLD_FLAGS.store(old.sa_flags, Ordering::Relaxed);
    }
    SIGNO.store(signo, Ordering::Relaxed);
    PERIOD_NS.store(1_000_000_000 / hz as u64, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Release);
    coord::set_hooks(coord::ThreadHooks {
        started: start_thread,
        exiting: stop_thread,
        periodic: scan_threads,
    });
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// The CPU clock of thread `tid` (the kernel's MAKE_THREAD_CPUCLOCK).
fn thread_cpu_clock(tid: i32) -> libc::clockid_t {
    ((!tid) << 3) | 4 | 2
}

/// Starts sampling thread `tid` unless it already is.
pub fn start_thread(tid: i32) {
    if !enabled() {
        return;
    }
    let _g = TIMERS_LOCK.lock();
    if TIMER_TIDS.iter().any(|t| t.load(Ordering::Relaxed) == tid) {
        return;
    }
    let Some(slot) = TIMER_TIDS
        .iter()
        .position(|t| t.load(Ordering::Relaxed) == 0)
    else {
        return;
    };
    let handle = if USE_PERF.load(Ordering::Relaxed) {
        match open_perf_event(tid) {
            Some((fd, id)) => {
                PERF_EVENT_IDS[slot].store(id, Ordering::Relaxed);
                Some(fd as usize | PERF_HANDLE)
            }
            None => {
                // Not allowed here (perf_event_paranoid, seccomp): timers.
                USE_PERF.store(false, Ordering::Relaxed);
                create_timer(tid)
            }
        }
    } else {
        create_timer(tid)
    };
    let Some(handle) = handle else { return };
    TIMER_IDS[slot].store(handle, Ordering::Relaxed);
    TIMER_TIDS[slot].store(tid, Ordering::Release);
    SLOTS_USED.fetch_max(slot + 1, Ordering::AcqRel);
}

/// `perf_event_attr` as the kernel reads it (version 5 layout, 112 bytes;
/// fields we do not set stay zero).
#[repr(C)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    rest: [u64; 7],
}

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_TASK_CLOCK: u64 = 1;
const EXCLUDE_HV: u64 = 1 << 6;
const PERF_FLAG_FD_CLOEXEC: u64 = 1 << 3;
const F_SETSIG: i32 = 10;
const F_SETOWN_EX: i32 = 15;
const F_OWNER_TID: i32 = 0;
/// `si_code` of a POSIX timer's signal (libc has it only from 0.2.170; the
/// shim builds with 0.2.158, which users' lock files pin).
const SI_TIMER: i32 = -2;
/// `si_code` of a signal raised for I/O readiness, as perf overflows are.
const POLL_IN: i32 = 1;

/// A task-clock event on thread `tid` that signals it every period.
fn open_perf_event(tid: i32) -> Option<(i32, u64)> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_TASK_CLOCK,
        sample_period: PERIOD_NS.load(Ordering::Relaxed),
        sample_type: 0,
        read_format: 0,
        // Enabled from the start and signalling every period. SIGURG is
        // a standard signal, so a thread that blocks it holds at most one
        // pending (the kernel drops the others) and the queue never
        // overflows into the SIGIO fallback, whose default action kills
        // the process (tests/hostile_shim.rs blocks it). No re-arming per
        // overflow: `PERF_EVENT_IOC_REFRESH` restarts the event's timer,
        // which under virtualisation costs a VM exit (7-17 us a sample
        // here, BENCHMARKS.md). Kernel time included, as the timers count.
        flags: EXCLUDE_HV,
        wakeup_events: 1,
        bp_type: 0,
        rest: [0; 7],
    };
    // SAFETY: `attr` is a valid, fully initialised perf_event_attr of the
    // size it declares; the other arguments are plain integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            tid,
            -1,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    } as i32;
    if fd < 0 {
        return None;
    }
    // Out of the host's descriptor range. Where the hard limit leaves no
    // room above the soft one (soft = hard, as in many containers), timers
    // would give only the kernel tick's rate: in a large range the
    // descriptor goes to its top band instead, and the report says so; in a
    // small one, no perf event (timers hold no descriptor).
    let fd = match sys::move_above_limit(fd) {
        Some(high) => high,
        None => match sys::move_to_top_band(fd) {
            Some(top) => {
                coord::FDS_IN_HOST_RANGE.fetch_add(1, Ordering::Relaxed);
                top
            }
            None => {
                sys::close(fd);
                return None;
            }
        },
    };
    #[repr(C)]
    struct OwnerEx {
        kind: i32,
        pid: i32,
    }
    let owner = OwnerEx {
        kind: F_OWNER_TID,
        pid: tid,
    };
    // SAFETY: fcntl on our own fresh descriptor with valid arguments.
    let ok = unsafe {
        libc::fcntl(fd, libc::F_SETFL, libc::O_ASYNC) == 0
            && libc::fcntl(fd, F_SETSIG, SIGNO.load(Ordering::Relaxed)) == 0
            && libc::fcntl(fd, F_SETOWN_EX, &owner as *const OwnerEx) == 0
    };
    let id = event_id(fd);
    if !ok || id.is_none() {
        sys::close(fd);
        return None;
    }
    id.map(|id| (fd, id))
}

/// `_IOR('$', 7, __u64 *)`: the kernel's unique id of a perf event.
const PERF_EVENT_IOC_ID: u64 = (2 << 30) | (8 << 16) | (0x24 << 8) | 7;

/// The id of the perf event open on `fd`, or `None` if it fails. Only for
/// a descriptor known to be a perf event (our own fresh one) or an
/// anonymous inode (`still_ours`): a file of the host's (a FUSE file, a
/// device) could take any ioctl number as a request of its own.
fn event_id(fd: i32) -> Option<u64> {
    let mut id = 0u64;
    // SAFETY: PERF_EVENT_IOC_ID writes one u64 through the pointer, a
    // valid local. `fd` is a perf event or an anonymous inode (eventfd,
    // epoll, timerfd...), whose drivers refuse numbers they do not know.
    let r = sys::preserving_errno(|| unsafe {
        libc::ioctl(fd, PERF_EVENT_IOC_ID as _, &mut id as *mut u64)
    });
    (r == 0).then_some(id)
}

/// A POSIX timer on thread `tid`'s CPU clock that signals it every period.
fn create_timer(tid: i32) -> Option<usize> {
    // SAFETY: a zeroed sigevent with the fields the kernel reads for
    // SIGEV_THREAD_ID set; `timer` is a valid out-pointer.
    unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = SIGNO.load(Ordering::Relaxed);
        sev.sigev_value = libc::sigval {
            sival_ptr: cookie() as *mut libc::c_void,
        };
        sev.sigev_notify_thread_id = tid;
        let mut timer: libc::timer_t = std::ptr::null_mut();
        if libc::timer_create(thread_cpu_clock(tid), &mut sev, &mut timer) != 0 {
            return None;
        }
        let p = PERIOD_NS.load(Ordering::Relaxed) as i64;
        let ts = libc::timespec {
            tv_sec: p / 1_000_000_000,
            tv_nsec: p % 1_000_000_000,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        if libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) != 0 {
            libc::timer_delete(timer);
            return None;
        }
        Some(timer as usize)
    }
}

/// Whether `fd` is one of our perf events (for the signal handler).
fn is_our_fd(fd: i32) -> bool {
    let n = SLOTS_USED.load(Ordering::Acquire);
    let handle = fd as usize | PERF_HANDLE;
    (0..n).any(|i| {
        TIMER_TIDS[i].load(Ordering::Acquire) != 0 && TIMER_IDS[i].load(Ordering::Relaxed) == handle
    })
}

/// Stops sampling thread `tid` (it is exiting, or gone).
pub fn stop_thread(tid: i32) {
    if !enabled() {
        return;
    }
    let _g = TIMERS_LOCK.lock();
    stop_locked(tid);
}

fn stop_locked(tid: i32) {
    if let Some(slot) = TIMER_TIDS
        .iter()
        .position(|t| t.load(Ordering::Relaxed) == tid)
    {
        TIMER_TIDS[slot].store(0, Ordering::Release);
        release(
            TIMER_IDS[slot].swap(0, Ordering::Relaxed),
            PERF_EVENT_IDS[slot].load(Ordering::Relaxed),
        );
    }
}

/// Closes `fd` if it still is our perf event `id`: a host that closed it
/// behind our back may have reused the number for a file (or a perf event)
/// of its own.
fn close_perf_fd(fd: i32, id: u64) {
    if still_ours(fd, id) {
        sys::close(fd);
    }
}

/// Whether `fd` holds our perf event `id`. Its id is asked only of an
/// anonymous inode (no file type, as every perf event is) or of a
/// descriptor whose link names a perf event.
fn still_ours(fd: i32, id: u64) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `struct stat` into `st`, read only if it
    // succeeded.
    let anon = sys::preserving_errno(|| unsafe {
        libc::fstat(fd, st.as_mut_ptr()) == 0 && st.assume_init().st_mode & libc::S_IFMT == 0
    });
    (anon || links_to_a_perf_event(fd)) && event_id(fd) == Some(id)
}

/// Whether /proc/self/fd/`fd` names a perf event.
fn links_to_a_perf_event(fd: i32) -> bool {
    let mut link = [0u8; 64];
    let mut path = [0u8; 32];
    let mut n = 0;
    for &b in b"/proc/self/fd/" {
        path[n] = b;
        n += 1;
    }
    let (digits, d) = sys::decimal(fd as u32);
    for &c in &digits[..d] {
        path[n] = c;
        n += 1;
    }
    // SAFETY: `path` is NUL-terminated (zero-filled past `n`); readlink
    // writes at most `link.len()` bytes.
    let len = sys::preserving_errno(|| unsafe {
        libc::readlink(
            path.as_ptr() as *const libc::c_char,
            link.as_mut_ptr() as *mut libc::c_char,
            link.len(),
        )
    });
    len > 0 && link[..len as usize].ends_with(b"[perf_event]")
}

/// Marks a slot's handle as a perf event descriptor (else a timer id):
/// the backend can fall back from perf to timers mid-run, so each slot
/// remembers its own kind.
const PERF_HANDLE: usize = 1 << 63;

/// Closes a perf event or deletes a timer; each handle is released once
/// (its slot is cleared under the lock first).
fn release(handle: usize, id: u64) {
    if handle & PERF_HANDLE != 0 {
        close_perf_fd((handle & !PERF_HANDLE) as i32, id);
    } else {
        // SAFETY: `handle` came from timer_create.
        unsafe { libc::timer_delete(handle as libc::timer_t) };
    }
}

/// Gives every live thread a timer and drops the timers of threads that
/// are gone. Reads /proc/self/task with raw `getdents64` into a stack
/// buffer (no allocation).
pub fn scan_threads() {
    if !enabled() {
        return;
    }
    sys::preserving_errno(scan_threads_now);
}

fn scan_threads_now() {
    let mut live = [0i32; 512];
    let n = list_tasks(&mut live);
    if n == 0 {
        return;
    }
    for &tid in &live[..n] {
        start_thread(tid);
    }
    if n < live.len() {
        let _g = TIMERS_LOCK.lock();
        for t in &TIMER_TIDS {
            let tid = t.load(Ordering::Relaxed);
            if tid != 0 && !live[..n].contains(&tid) {
                stop_locked(tid);
            }
        }
    }
}

fn list_tasks(out: &mut [i32]) -> usize {
    // SAFETY: valid NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/task".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return 0;
    }
    let mut n = 0;
    let mut buf = [0u8; 2048];
    loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`.
        let got = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if got <= 0 {
            break;
        }
        let mut pos = 0usize;
        while pos + 19 < got as usize {
            let reclen = u16::from_ne_bytes([buf[pos + 16], buf[pos + 17]]) as usize;
            let name = &buf[pos + 19..pos + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            let tid = name.iter().try_fold(0i32, |acc, &b| {
                b.is_ascii_digit().then(|| acc * 10 + (b - b'0') as i32)
            });
            if let Some(tid) = tid.filter(|&t| t > 0) {
                if n < out.len() {
                    out[n] = tid;
                    n += 1;
                }
            }
            if reclen == 0 {
                break;
            }
            pos += reclen;
        }
    }
    sys::close(fd);
    n
}

/// In a fork child: timers are not inherited, and the inherited perf event
/// descriptors watch the parent's threads, so close them; then sample this
/// thread.
pub fn after_fork_child() {
    if !enabled() {
        return;
    }
    TIMERS_LOCK.force_unlock();
    for ((t, handle), id) in TIMER_TIDS.iter().zip(&TIMER_IDS).zip(&PERF_EVENT_IDS) {
        let handle = handle.swap(0, Ordering::Relaxed);
        if t.swap(0, Ordering::Relaxed) != 0 && handle & PERF_HANDLE != 0 {
            close_perf_fd((handle & !PERF_HANDLE) as i32, id.load(Ordering::Relaxed));
        }
    }
    start_thread(sys::gettid());
}

/// `siginfo_t` on Linux x86_64: the timer fields (SI_TIMER) and the poll
/// fields (POLL_IN) share the union after the header.
#[repr(C)]
struct SigInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    /// Timer: timer id (i32) and overrun (i32). Poll: band (i64).
    word: [i32; 2],
    /// Timer: sigval. Poll: the descriptor (low 32 bits).
    value: usize,
}

extern "C" fn on_signal(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo of at least
    // 128 bytes; the layout above matches Linux's for both codes we accept,
    // and which fields mean what is decided by the code.
    let si = unsafe { &*(info as *const SigInfo) };
    let weight = if si.code == SI_TIMER && si.value == cookie() {
        1 + si.word[1].max(0) as u32
    } else if si.code == POLL_IN && is_our_fd(si.value as i32) {
        1
    } else {
        chain(sig, info, ctx);
        return;
    };
    if !coord::active() {
        return;
    }
    sys::preserving_errno(|| {
        // SAFETY: `ctx` is the interrupted thread's ucontext.
        let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
        sample(uc, weight);
        if si.code == POLL_IN {
            jitter_period(si.value as i32);
        }
    });
}

/// Every `JITTER_EVERY`th sample of a thread moves its perf event's period
/// to a random value within 1/8 of the asked one, so that the mean period
/// stays the asked one. With a fixed period, a loop whose rounds take a
/// steady time is sampled at the same few points of each round (aliasing):
/// `cpu_malloc`'s two hot lines read 41% and 34% at 2 kHz, 37% and 37% at
/// 4 kHz and under perf. The ioctl restarts the event's timer (a few us
/// under virtualisation), hence only every 16th sample.
const JITTER_EVERY: u32 = 16;
/// `_IOW('$', 4, __u64)`.
const PERF_EVENT_IOC_PERIOD: u64 = (1 << 30) | (8 << 16) | (0x24 << 8) | 4;

thread_local! {
    /// Samples since the last period change, and the thread's xorshift
    /// state (0 before the first draw).
    static JITTER: Cell<(u32, u64)> = const { Cell::new((0, 0)) };
}

/// Called from the handler with this thread's perf event `fd`.
fn jitter_period(fd: i32) {
    let (n, mut x) = JITTER.with(|j| j.get());
    if n + 1 < JITTER_EVERY {
        JITTER.with(|j| j.set((n + 1, x)));
        return;
    }
    if x == 0 {
        x = (fd as u64 + 1) ^ sys::coarse_ns() ^ 0x9E37_79B9_7F4A_7C15;
    }
    x = thread::xorshift(x);
    JITTER.with(|j| j.set((0, x)));
    let base = PERIOD_NS.load(Ordering::Relaxed);
    let mut period = base - base / 8 + x % (base / 4).max(1);
    // SAFETY: `fd` is one of our perf events (`is_our_fd`); the ioctl reads
    // one u64 through the pointer, a valid local.
    unsafe { libc::ioctl(fd, PERF_EVENT_IOC_PERIOD as _, &mut period as *mut u64) };
}

fn sample(uc: &libc::ucontext_t, weight: u32) {
    let t = thread::current_in_signal();
    if t.is_null() || thread::is_dead(t) {
        DROPPED_SAMPLES.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let regs = &uc.uc_mcontext.gregs;
    let (pc, sp, fp) = (
        regs[libc::REG_RIP as usize] as usize,
        regs[libc::REG_RSP as usize] as usize,
        regs[libc::REG_RBP as usize] as usize,
    );
    // SAFETY: `t` is this thread's state; the handler runs on the owner
    // thread, and uses the signal-only frame buffers, so it never touches
    // what the interrupted code may be writing.
    unsafe {
        if sp < (*t).stack_lo || sp >= (*t).stack_hi {
            thread::refresh_bounds(t, sp);
        }
        let hi = (*t).stack_hi;
        let depth = coord::DEPTH.load(Ordering::Relaxed);
        let frames = &mut (&mut (*t).cpu_frames)[..depth];
        // The interrupted PC is not a return address: store PC + 1 so the
        // reader's "return address - 1" lands on it.
        frames[0] = pc as u64 + 1;
        let h = stacks::hash_step(stacks::HASH_SEED, frames[0]);
        let busy = (*t).busy;
        if busy && !IN_PROGRAM_CALL.with(|c| c.get()) {
            // Lineprof's own cost: the stack only says where in lineprof.
            let (n, _, h) = stack::walk_from(fp, sp, hi, frames, 1, h);
            match stacks::cpu_table().intern_hashed(&frames[..n], h) {
                Some(id) => thread::park_sample(t, id, weight),
                None => {
                    DROPPED_SAMPLES.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        let on_stack = sp >= (*t).stack_lo && sp < hi && hi - sp >= 8;
        // In the executable, a word at the stack pointer that is a return
        // address into it marks a leaf without frame pointer (compiler
        // builtins such as `__umodti3`) or a prologue: the walk would skip
        // the caller there too. The reader checks with `.eh_frame`.
        // SAFETY: `sp..sp + 8` lies inside this thread's stack mapping.
        let frameless = |pc: usize| {
            modules::in_executable(pc)
                && modules::in_executable((*(sp as *const usize)).wrapping_sub(1))
        };
        let copy_stack = on_stack && (!modules::in_executable(pc) || frameless(pc));
        let (n, h) = if copy_stack {
            // C code without frame pointers: the interrupted frame pointer
            // may be the caller's (a leaf such as memcpy, whose caller the
            // walk would skip) or no frame pointer at all (malloc's
            // internals). Walk from it if it is a real frame record, else
            // from the first one above the stack pointer, and keep the
            // frame addresses and a copy of the stack so that the reader
            // can unwind the first frames and splice them on.
            let in_exe = |a: usize| modules::in_executable(a.wrapping_sub(1));
            let start = if stack::plausible_frame(fp, sp, hi, in_exe) {
                Some(fp)
            } else {
                stack::find_frame(sp, hi, FRAME_SEARCH_LEN, in_exe)
            };
            let addrs = &mut (&mut (*t).cpu_frame_addrs)[..depth];
            match start {
                Some(start) => stack::walk_with_addrs(start, sp, hi, frames, addrs, 1, h),
                None => (1, stacks::hash_finish(h, 1)),
            }
        } else {
            let (n, _, h) = stack::walk_from(fp, sp, hi, frames, 1, h);
            (n, h)
        };
        let Some(id) = stacks::cpu_table().intern_hashed(&frames[..n], h) else {
            DROPPED_SAMPLES.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let copy = copy_stack.then(|| {
            let len = (hi - sp).min(format::STACK_COPY_LEN);
            thread::StackCopyRef {
                sp: sp as u64,
                bp: fp as u64,
                frame_addrs: &(&(*t).cpu_frame_addrs)[1..n],
                // SAFETY: `sp..sp + len` lies inside this thread's stack
                // mapping (`sp < hi`, `len <= hi - sp`), which is readable;
                // the handler's own frames are below `sp`.
                bytes: std::slice::from_raw_parts(sp as *const u8, len),
            }
        });
        thread::set_busy(t, true);
        let can_flush = !FORKING.load(Ordering::Acquire);
        let sample = thread::CpuSample {
            stack: id,
            count: weight,
            now: sys::coarse_ns(),
            copy,
        };
        thread::append_cpu(t, thread::CPU, sample, can_flush);
        // Still busy inside `program_call`: lineprof's caller goes on.
        thread::set_busy(t, busy);
    }
}

/// How far above the stack pointer the handler looks for the first frame
/// record when the interrupted frame pointer is not one: past the C
/// frames and the locals of their Rust caller (a few KiB of arrays).
const FRAME_SEARCH_LEN: usize = 16 * 1024;

/// Passes a signal that is not ours to the handler installed before us.
fn chain(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let old = OLD_ACTION.load(Ordering::Relaxed);
    if old == libc::SIG_DFL || old == libc::SIG_IGN {
        return;
    }
    // SAFETY: `old` is the handler the host installed, called with the
    // arguments its flags ask for.
    unsafe {
        if OLD_FLAGS.load(Ordering::Relaxed) & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(old);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(i32) = std::mem::transmute(old);
            f(sig);
        }
    }
}
