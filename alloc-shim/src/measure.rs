//! `lineprof::measure`: exact heap usage of a closure on the calling thread.
//!
//! Counters live on the caller's stack; a thread-local pointer to the
//! innermost active measurement is the only thing the allocator touches, so
//! other threads' allocations (other tests running under `cargo test`) never
//! reach it.

use std::cell::Cell;

/// Heap usage of the calling thread while a closure ran.
///
/// A reallocation counts as one free of the old block and one allocation of
/// the new one, as everywhere in lineprof.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocations (including the new block of each reallocation).
    pub allocations: u64,
    /// Frees (including the old block of each reallocation).
    pub frees: u64,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    /// `allocated_bytes - freed_bytes`: what the closure kept (negative if
    /// it freed memory allocated before it started).
    pub net_bytes: i64,
    /// The highest `net_bytes` reached while the closure ran (0 if it never
    /// went above the starting point).
    pub peak_bytes: u64,
}

thread_local! {
    static ACTIVE: Cell<*mut Usage> = const { Cell::new(std::ptr::null_mut()) };
}

#[inline(always)]
pub(crate) fn on_alloc(size: usize) {
    let m = ACTIVE.with(|c| c.get());
    if !m.is_null() {
        // SAFETY: `m` points at the `Usage` on the stack of a `measure` call
        // that is still running on this thread (it resets the pointer before
        // returning or unwinding).
        let u = unsafe { &mut *m };
        u.allocations += 1;
        u.allocated_bytes += size as u64;
        u.net_bytes += size as i64;
        if u.net_bytes > u.peak_bytes as i64 {
            u.peak_bytes = u.net_bytes as u64;
        }
    }
}

#[inline(always)]
pub(crate) fn on_free(size: usize) {
    let m = ACTIVE.with(|c| c.get());
    if !m.is_null() {
        // SAFETY: as in `on_alloc`.
        let u = unsafe { &mut *m };
        u.frees += 1;
        u.freed_bytes += size as u64;
        u.net_bytes -= size as i64;
    }
}

/// Runs `f` and returns its result with the heap usage of the calling thread
/// while it ran. Needs `lineprof::Tracking` as the global allocator (it
/// panics otherwise, rather than report zeros); works with `LINEPROF=off`
/// too, and writes no profile. Allocations made by other threads, even ones
/// `f` starts, are not counted.
///
/// ```no_run
/// #[global_allocator]
/// static A: lineprof::Tracking = lineprof::Tracking::new();
///
/// let (v, usage) = lineprof::measure(|| vec![0u8; 1000]);
/// assert_eq!(usage.allocations, 1);
/// assert_eq!(usage.allocated_bytes, 1000);
/// assert_eq!(usage.net_bytes, 1000);
/// drop(v);
/// ```
///
/// Measurements nest: an inner `measure` sees only its own closure, and its
/// figures count towards the outer one as well.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Usage) {
    struct Restore {
        outer: *mut Usage,
        inner: *mut Usage,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.with(|c| c.set(self.outer));
            if !self.outer.is_null() {
                // SAFETY: both point at live `Usage`s on this thread's stack:
                // the inner one in this frame, the outer one in a caller's.
                let (o, i) = unsafe { (&mut *self.outer, &*self.inner) };
                if o.net_bytes + i.peak_bytes as i64 > o.peak_bytes as i64 {
                    o.peak_bytes = (o.net_bytes + i.peak_bytes as i64) as u64;
                }
                o.allocations += i.allocations;
                o.frees += i.frees;
                o.allocated_bytes += i.allocated_bytes;
                o.freed_bytes += i.freed_bytes;
                o.net_bytes += i.net_bytes;
            }
        }
    }
    let mut usage = Usage::default();
    let inner: *mut Usage = &mut usage;
    let outer = ACTIVE.with(|c| c.replace(inner));
    let guard = Restore { outer, inner };
    let out = f();
    drop(guard);
    if !crate::coord::installed() {
        panic!(
            "lineprof::measure needs lineprof's allocator: add \
             `#[global_allocator] static A: lineprof::Tracking = lineprof::Tracking::new();`"
        );
    }
    (out, usage)
}
