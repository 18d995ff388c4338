//! A spin lock of our own. The allocator may take only locks that the host
//! program can never hold; this one is private to lineprof and is held only
//! around short, bounded work (a `write` call, a copy). After a few spins it
//! yields the CPU so that a holder descheduled mid-write can finish.

use std::sync::atomic::{AtomicBool, Ordering};

pub struct SpinLock {
    locked: AtomicBool,
}

pub struct SpinGuard<'a> {
    lock: &'a SpinLock,
}

impl SpinLock {
    pub const fn new() -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
        }
    }

    pub fn lock(&self) -> SpinGuard<'_> {
        let mut spins = 0u32;
        loop {
            if !self.locked.load(Ordering::Relaxed)
                && self
                    .locked
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return SpinGuard { lock: self };
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                crate::sys::yield_now();
            }
        }
    }

    /// Takes the lock only if it is free now.
    pub fn try_lock(&self) -> Option<SpinGuard<'_>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| SpinGuard { lock: self })
    }

    /// Forces the lock open. Only for the child of a `fork`, where the thread
    /// that held it no longer exists.
    pub fn force_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// Takes the lock and keeps it held without a guard (for `fork`'s prepare
    /// handler; released by `force_unlock` in the parent and the child).
    pub fn lock_forever(&self) {
        std::mem::forget(self.lock());
    }
}

impl Drop for SpinGuard<'_> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}
