//! What the recording modules share, at the bottom of the shim's module
//! graph: the run state, the settings read at start, the loss counters,
//! the fork flag, and the hooks through which a thread's start, exit and
//! periodic flush reach the CPU sampler. Everything here is a plain atomic
//! (or a set-once hook table), safe to read from a signal handler.
//!
//! The modules depend on each other in one direction only:
//! `coord` <- `writer` (the file) <- `thread` (per-thread buffers) <-
//! `cpu` (the sampler) <- `lifecycle` (exit and fork) <- the crate root.
//! The per-thread state calls the sampler only through [`hooks`], which
//! the sampler installs when it starts.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::config;

pub const UNINIT: u8 = 0;
pub const INITIALIZING: u8 = 1;
pub const ACTIVE: u8 = 2;
pub const OFF: u8 = 3;
pub const FINISHED: u8 = 4;

/// The tracker's state: `UNINIT` -> `INITIALIZING` -> `ACTIVE` or `OFF`;
/// `ACTIVE` -> `FINISHED` at exit.
pub static STATE: AtomicU8 = AtomicU8::new(UNINIT);
/// Set once `Tracking` is seen to be the global allocator.
pub static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether the tracker is recording.
#[inline]
pub fn active() -> bool {
    STATE.load(Ordering::Acquire) == ACTIVE
}

pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Called by the exit handler: stops recording. False if it was not on.
pub fn begin_finish() -> bool {
    STATE
        .compare_exchange(ACTIVE, FINISHED, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// A value on a cache line of its own.
#[repr(align(128))]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Settings, stored once at start.
pub static SAMPLE_BYTES: AtomicU64 = AtomicU64::new(0);
pub static CPU_HZ: AtomicU32 = AtomicU32::new(0);
pub static DEPTH: AtomicUsize = AtomicUsize::new(config::DEFAULT_DEPTH);

/// Heap events whose stack was cut at `DEPTH` frames.
pub static TRUNCATED_STACKS: AtomicU64 = AtomicU64::new(0);
/// Heap events not recorded (stack table full, sampling table full).
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Heap events of the host's own signal handlers that landed while lineprof
/// was busy on the same thread (not recorded: the thread's state was
/// mid-update).
pub static REENTRANT_DROPPED: AtomicU64 = AtomicU64::new(0);
/// Perf-event descriptors placed below the soft `RLIMIT_NOFILE`, in its
/// top band, because the hard limit left no room above it.
pub static FDS_IN_HOST_RANGE: AtomicU64 = AtomicU64::new(0);
/// CPU samples not recorded.
pub static DROPPED_SAMPLES: AtomicU64 = AtomicU64::new(0);

/// Set around `fork` so a signal handler never waits for the file lock
/// that the forking thread holds.
pub static FORKING: AtomicBool = AtomicBool::new(false);

/// What a thread's life means to the CPU sampler.
pub struct ThreadHooks {
    /// A thread attached (its first event): start sampling it.
    pub started: fn(tid: i32),
    /// A thread is exiting: stop sampling it.
    pub exiting: fn(tid: i32),
    /// A thread flushed at a flush interval: look for threads to sample.
    pub periodic: fn(),
}

static HOOKS: OnceLock<ThreadHooks> = OnceLock::new();

/// Installs the thread hooks (once, by the sampler at start).
pub fn set_hooks(h: ThreadHooks) {
    let _ = HOOKS.set(h);
}

/// The thread hooks, if a sampler installed them.
#[inline]
pub fn hooks() -> Option<&'static ThreadHooks> {
    HOOKS.get()
}
