//! Exit and `fork`: the handlers that finish the profile at exit and keep
//! the file, the thread registry and the CPU sampler consistent across a
//! `fork`. The only module that drives the writer, the per-thread state
//! and the sampler together.

use std::sync::atomic::Ordering;

use crate::coord::{self, FORKING};
use crate::{cpu, format, stacks, sys, thread, timers, writer};

/// Registers the exit and fork handlers. Called once at start.
pub fn install() {
    // SAFETY: registering plain `extern "C"` functions with no arguments.
    unsafe {
        libc::atexit(at_exit);
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_parent),
            Some(after_fork_child),
        );
    }
}

/// The `atexit` handler: fresh module list, every thread's buffer, all
/// stacks, and the `End` chunk.
extern "C" fn at_exit() {
    if !coord::begin_finish() {
        return;
    }
    sys::preserving_errno(|| {
        writer::begin_finishing();
        writer::refresh_modules();
        if crate::aggregate::on() {
            // The final snapshot replaces the file; the timers and the
            // `End` chunk are appended to it below.
            crate::aggregate::write_snapshot(true);
        }
        thread::for_each_state(|s| thread::flush(s, true));
        timers::write_all_at_exit();
        writer::finish(&mut format::End {
            events: thread::events_recorded(),
            dropped: coord::DROPPED.load(Ordering::Relaxed),
            stacks: stacks::count() as u64,
            truncated_stacks: coord::TRUNCATED_STACKS.load(Ordering::Relaxed),
            end_unix_ns: sys::unix_ns(),
            reentrant_dropped: coord::REENTRANT_DROPPED.load(Ordering::Relaxed),
            ..Default::default()
        });
    });
}

extern "C" fn before_fork() {
    thread::set_current_busy(true);
    FORKING.store(true, Ordering::Release);
    thread::lock_registry_for_fork();
    writer::lock_for_fork();
}

extern "C" fn after_fork_parent() {
    writer::unlock_after_fork_parent();
    thread::unlock_registry_after_fork();
    FORKING.store(false, Ordering::Release);
    thread::set_current_busy(false);
}

extern "C" fn after_fork_child() {
    coord::DROPPED.store(0, Ordering::Relaxed);
    coord::TRUNCATED_STACKS.store(0, Ordering::Relaxed);
    coord::REENTRANT_DROPPED.store(0, Ordering::Relaxed);
    thread::reset_after_fork();
    cpu::after_fork_child();
    crate::aggregate::after_fork_child();
    timers::after_fork_child();
    writer::after_fork_child();
    FORKING.store(false, Ordering::Release);
    thread::set_current_busy(false);
}
