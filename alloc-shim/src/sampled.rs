//! The set of live sampled blocks (sampling mode only), so that a free can
//! tell in a few nanoseconds whether its block was sampled and must be
//! recorded. Lock-free open addressing over a chain of never-resized tables,
//! like the stack table. An address is inserted before the allocation
//! returns to the program, so it is always present by the time any thread
//! frees it; removal leaves a tombstone that later inserts reuse.
//!
//! In front of the tables, a counting filter: per bucket of addresses, how
//! many sampled blocks in it are live. Nearly every free finds its bucket
//! at 0 with one load from a 4 KiB array that stays in the cache, and
//! only the others look in the tables.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::sys;

const TOMBSTONE: u64 = 1;
const LEVEL_BITS: [u32; 4] = [12, 16, 20, 24];

static LEVELS: [AtomicPtr<AtomicU64>; 4] = [const { AtomicPtr::new(std::ptr::null_mut()) }; 4];
static FILL: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

const FILTER_BITS: u32 = 12;
/// Live sampled blocks per bucket (`bucket`); 255 sticks (then every free
/// in that bucket looks in the tables).
static FILTER: [AtomicU8; 1 << FILTER_BITS] = [const { AtomicU8::new(0) }; 1 << FILTER_BITS];

#[inline(always)]
fn bucket(addr: u64) -> &'static AtomicU8 {
    &FILTER[slot_of(addr, FILTER_BITS)]
}

#[inline]
fn slot_of(addr: u64, bits: u32) -> usize {
    (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

#[inline(always)]
fn table(level: usize) -> *mut AtomicU64 {
    LEVELS[level].load(Ordering::Acquire)
}

/// Remembers a sampled block. False if every table is full (the caller then
/// does not sample the block, and counts it as dropped).
///
/// A table stops taking empty slots once half of them have ever been used,
/// which keeps probe sequences short; freed entries leave tombstones, which
/// inserts reuse in every table, full or not, so a long run that samples
/// millions of blocks keeps finding room.
pub fn insert(addr: u64) -> bool {
    if !insert_in_tables(addr) {
        return false;
    }
    // After the tables: the block's free (which comes after this returns)
    // finds it in both.
    let b = bucket(addr);
    let _ = b.fetch_update(Ordering::Release, Ordering::Relaxed, |n| n.checked_add(1));
    true
}

fn insert_in_tables(addr: u64) -> bool {
    debug_assert!(addr > TOMBSTONE);
    for level in 0..LEVELS.len() {
        let bits = LEVEL_BITS[level];
        let size = 1usize << bits;
        let full = FILL[level].load(Ordering::Relaxed) >= size / 2;
        let mut t = table(level);
        if t.is_null() {
            if full {
                continue;
            }
            let fresh = sys::map_zeroed(size * 8) as *mut AtomicU64;
            if fresh.is_null() {
                return false;
            }
            match LEVELS[level].compare_exchange(
                std::ptr::null_mut(),
                fresh,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => t = fresh,
                Err(existing) => {
                    // SAFETY: our own unpublished mapping.
                    unsafe { libc::munmap(fresh as *mut libc::c_void, size * 8) };
                    t = existing;
                }
            }
        }
        let mask = size - 1;
        let mut i = slot_of(addr, bits);
        for _ in 0..size {
            // SAFETY: `i <= mask`, within the table.
            let cell = unsafe { &*t.add(i) };
            let v = cell.load(Ordering::Relaxed);
            if v == 0 && full {
                break; // the end of this probe sequence; no new slots here
            }
            if (v == 0 || v == TOMBSTONE)
                && cell
                    .compare_exchange(v, addr, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                if v == 0 {
                    FILL[level].fetch_add(1, Ordering::Relaxed);
                }
                return true;
            }
            i = (i + 1) & mask;
        }
    }
    false
}

/// Forgets `addr` if it was sampled; true if it was. Every free calls it
/// in sampling mode, so the common answer (nothing sampled yet, or not
/// this block) is inlined and short.
#[inline(always)]
pub fn remove(addr: u64) -> bool {
    // No live sampled block in the bucket: not sampled (the usual case).
    if bucket(addr).load(Ordering::Acquire) == 0 {
        return false;
    }
    remove_slow(addr)
}

#[inline(never)]
fn remove_slow(addr: u64) -> bool {
    if !remove_from_tables(addr) {
        return false;
    }
    let b = bucket(addr);
    let _ = b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        if n == u8::MAX {
            None // stuck: more blocks than it can count went through here
        } else {
            n.checked_sub(1)
        }
    });
    true
}

fn remove_from_tables(addr: u64) -> bool {
    for (level, bits) in LEVEL_BITS.iter().enumerate() {
        let t = table(level);
        if t.is_null() {
            return false;
        }
        let mask = (1usize << bits) - 1;
        let mut i = slot_of(addr, *bits);
        for _ in 0..=mask {
            // SAFETY: `i <= mask`, within the table.
            let cell = unsafe { &*t.add(i) };
            let v = cell.load(Ordering::Acquire);
            if v == 0 {
                break;
            }
            if v == addr {
                // Only the thread freeing `addr` removes it: no race on it.
                cell.store(TOMBSTONE, Ordering::Release);
                return true;
            }
            i = (i + 1) & mask;
        }
    }
    false
}

/// A check of the shim's address tables (this set, and the aggregate
/// mode's block map): `churn` insert-remove pairs, far more than the tables
/// have slots, keep finding room (removed entries' slots are reused); then
/// `live` entries at once, removed every other one first (so that removals
/// meet long probe runs), are each found exactly once, with their value.
#[cfg(test)]
pub(crate) fn check_address_table<V: PartialEq + std::fmt::Debug>(
    base: u64,
    churn: u64,
    live: u64,
    value: impl Fn(u64) -> V,
    insert: impl Fn(u64, V) -> bool,
    remove: impl Fn(u64) -> Option<V>,
) {
    for i in 0..churn {
        let a = base + i * 16;
        assert!(insert(a, value(i)), "insert {i}");
        assert_eq!(remove(a), Some(value(i)), "remove {i}");
    }
    for i in 0..live {
        assert!(insert(base + i * 32, value(i)), "insert {i} of {live}");
    }
    for i in (0..live).step_by(2).chain((1..live).step_by(2)) {
        assert_eq!(remove(base + i * 32), Some(value(i)), "remove {i}");
        assert_eq!(remove(base + i * 32), None, "remove {i} again");
    }
    assert_eq!(remove(base + 8), None, "an address never inserted");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_are_reused_and_each_block_is_found_once() {
        check_address_table(
            0x6000_0000_0000,
            1 << 22,
            5000,
            |_| (),
            |a, ()| insert(a),
            |a| remove(a).then_some(()),
        );
    }

    #[test]
    fn a_bucket_that_fills_up_keeps_finding_its_blocks() {
        // More live blocks in one filter bucket than its counter holds.
        let base = 0x5000_0000_0000u64;
        let same: Vec<u64> = (0..4_000_000u64)
            .map(|i| base + i * 16)
            .filter(|&a| slot_of(a, FILTER_BITS) == slot_of(base, FILTER_BITS))
            .take(300)
            .collect();
        assert_eq!(same.len(), 300);
        for &a in &same {
            assert!(insert(a));
        }
        for &a in &same {
            assert!(remove(a), "{a:#x}");
            assert!(!remove(a));
        }
    }
}
