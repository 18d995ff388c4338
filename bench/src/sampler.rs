//! A bare CPU sampler for the benchmark: what a 1 kHz per-thread CPU-clock
//! interrupt costs on this machine by itself, with no profiler behind it,
//! so that the report can put lineprof's sampling cost beside the
//! platform's floor in the same run.
//!
//! `BENCH_SAMPLER=MODE[:HZ]` (HZ defaults to 1000) starts it on the main
//! thread (the workload is single-threaded) before any work:
//!
//! - `count`: a perf `task-clock` event with a sample period and no signal.
//!   The kernel's high-resolution timer still fires every period (that is
//!   what drives a software event's overflows), so this is the cost of the
//!   interrupt alone.
//! - `signal`: the same, and every overflow signals the thread (`O_ASYNC`,
//!   `F_SETSIG`, `F_SETOWN_EX`); the handler only counts. The event stays
//!   enabled: lineprof's scheme.
//! - `refresh`: lineprof's scheme before (issue 8): the event is armed for
//!   one overflow at a time and the handler re-arms it with
//!   `PERF_EVENT_IOC_REFRESH`.
//! - `copy`: `refresh`, and the handler copies 2 KiB above the stack
//!   pointer into a static buffer, as lineprof does for samples in C code.
//! - `cpuclock`: `refresh` on the `cpu-clock` software event instead.
//! - `user`: `refresh` with `exclude_kernel` (user time only).
//! - `timer`: a POSIX timer on the thread's CPU clock (`timer_create`),
//!   which the kernel checks at its tick (250 Hz here, whatever HZ asks).
//! - `wall`: a POSIX timer on `CLOCK_MONOTONIC` (a high-resolution timer
//!   that signals straight from its interrupt): wall time, not CPU time,
//!   but the workload never blocks.
//! - `sigtrap`: a `task-clock` event with `sigtrap` and `remove_on_exec`
//!   (Linux 5.13): the kernel sends SIGTRAP to the thread itself on return
//!   to user space (task work), without the inter-processor interrupt
//!   that `O_ASYNC` delivery takes (an irq_work per overflow).
//!
//! At exit the number of signals handled goes to stderr, so a run shows
//! the rate it really got.

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};

static HITS: AtomicU64 = AtomicU64::new(0);
static FD: AtomicI32 = AtomicI32::new(-1);
static COPY: AtomicI32 = AtomicI32::new(0);
static mut STACK_COPY: [u8; 2048] = [0; 2048];
static SINK: AtomicUsize = AtomicUsize::new(0);

const PERF_EVENT_IOC_ENABLE: u64 = 0x2400;
const PERF_EVENT_IOC_REFRESH: u64 = 0x2402;
const F_SETSIG: i32 = 10;
const F_SETOWN_EX: i32 = 15;

/// `perf_event_attr`, version 5 layout (112 bytes).
#[repr(C)]
struct Attr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    rest: [u64; 8],
    /// `sig_data` (version 8 layout: 128 bytes with it).
    sig_data: u64,
}

extern "C" fn on_signal(_sig: i32, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    HITS.fetch_add(1, Ordering::Relaxed);
    if COPY.load(Ordering::Relaxed) != 0 {
        // SAFETY: `ctx` is the interrupted thread's ucontext; the 2 KiB
        // above its stack pointer lie in the main thread's stack (the
        // workload's `main` frame and the runtime's are above it). Only
        // this handler writes STACK_COPY, and it does not nest (the signal
        // is blocked while it runs).
        unsafe {
            let uc = &*(ctx as *const libc::ucontext_t);
            let sp = uc.uc_mcontext.gregs[libc::REG_RSP as usize] as *const u8;
            let dst = std::ptr::addr_of_mut!(STACK_COPY) as *mut u8;
            std::ptr::copy_nonoverlapping(sp, dst, 2048);
            SINK.fetch_add(*dst.add(100) as usize, Ordering::Relaxed);
        }
    }
    let fd = FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: an ioctl with an integer argument on our perf event.
        unsafe { libc::ioctl(fd, PERF_EVENT_IOC_REFRESH as _, 1) };
    }
}

fn report() {
    eprintln!("bench sampler: {} signals", HITS.load(Ordering::Relaxed));
}

/// Starts the sampler `BENCH_SAMPLER` asks for, if any. The returned guard
/// prints the signal count when dropped (at the end of `main`).
pub fn start() -> impl Drop {
    struct Guard(bool);
    impl Drop for Guard {
        fn drop(&mut self) {
            if self.0 {
                report();
            }
        }
    }
    let Ok(spec) = std::env::var("BENCH_SAMPLER") else {
        return Guard(false);
    };
    let (mode, hz) = match spec.split_once(':') {
        Some((m, h)) => (
            m.to_string(),
            h.parse::<u64>().expect("BENCH_SAMPLER=MODE:HZ"),
        ),
        None => (spec.clone(), 1000),
    };
    let period = 1_000_000_000 / hz;
    // SAFETY: plain sigaction with a zeroed, then filled-in struct.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGURG, &sa, std::ptr::null_mut()), 0);
        assert_eq!(libc::sigaction(libc::SIGTRAP, &sa, std::ptr::null_mut()), 0);
    }
    // SAFETY: gettid takes no arguments.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    if mode == "timer" || mode == "wall" {
        // SAFETY: a zeroed sigevent with the SIGEV_THREAD_ID fields set; the
        // timer id is a valid out-pointer.
        unsafe {
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = libc::SIGURG;
            sev.sigev_notify_thread_id = tid;
            let mut timer: libc::timer_t = std::ptr::null_mut();
            let clock = if mode == "wall" {
                libc::CLOCK_MONOTONIC
            } else {
                libc::CLOCK_THREAD_CPUTIME_ID
            };
            assert_eq!(libc::timer_create(clock, &mut sev, &mut timer), 0);
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: period as i64,
            };
            let spec = libc::itimerspec {
                it_interval: ts,
                it_value: ts,
            };
            assert_eq!(
                libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()),
                0
            );
        }
        return Guard(true);
    }
    let sigtrap = mode == "sigtrap";
    let (config, exclude_kernel, signal, refresh) = match mode.as_str() {
        "count" | "sigtrap" => (1, false, false, false),
        "signal" => (1, false, true, false),
        "refresh" | "copy" => (1, false, true, true),
        "cpuclock" => (0, false, true, true),
        "user" => (1, true, true, true),
        _ => panic!("BENCH_SAMPLER: unknown mode {mode:?}"),
    };
    COPY.store((mode == "copy") as i32, Ordering::Relaxed);
    let disabled = 1u64;
    let exclude_hv = 1u64 << 6;
    let attr = Attr {
        kind: 1, // PERF_TYPE_SOFTWARE
        size: std::mem::size_of::<Attr>() as u32,
        config,
        sample_period: period,
        sample_type: 0,
        read_format: 0,
        flags: disabled
            | exclude_hv
            | if exclude_kernel { 1 << 5 } else { 0 }
            // remove_on_exec and sigtrap: a synchronous SIGTRAP per overflow.
            | if sigtrap { (1 << 36) | (1 << 37) } else { 0 },
        wakeup_events: 1,
        bp_type: 0,
        rest: [0; 8],
        sig_data: 0,
    };
    // SAFETY: a valid perf_event_attr of the size it declares.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const Attr,
            tid,
            -1,
            -1,
            1u64 << 3,
        )
    } as i32;
    assert!(
        fd >= 0,
        "perf_event_open: {}",
        std::io::Error::last_os_error()
    );
    #[repr(C)]
    struct OwnerEx {
        kind: i32,
        pid: i32,
    }
    let owner = OwnerEx { kind: 0, pid: tid };
    // SAFETY: fcntl and ioctl on our own perf event descriptor.
    unsafe {
        if signal {
            assert_eq!(libc::fcntl(fd, libc::F_SETFL, libc::O_ASYNC), 0);
            assert_eq!(libc::fcntl(fd, F_SETSIG, libc::SIGURG), 0);
            assert_eq!(libc::fcntl(fd, F_SETOWN_EX, &owner as *const OwnerEx), 0);
        }
        if refresh {
            FD.store(fd, Ordering::Relaxed);
            assert_eq!(libc::ioctl(fd, PERF_EVENT_IOC_REFRESH as _, 1), 0);
        } else {
            assert_eq!(libc::ioctl(fd, PERF_EVENT_IOC_ENABLE as _, 0), 0);
        }
    }
    Guard(true)
}
