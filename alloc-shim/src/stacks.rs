//! Interning of call stacks: return-address arrays -> dense `StackId`s.
//!
//! Lock-free and allocation-free, because it runs inside the global
//! allocator on every thread at once:
//! - frames live in an append-only arena of segments (16 MiB each, mapped
//!   when first needed, so the process's address space grows in bounded
//!   steps as stacks are interned: a host under `ulimit -v` keeps its
//!   room), claimed with an atomic bump;
//! - `records[id]` publishes `(arena offset, length)` once the frames are
//!   written (0 = not yet published), so the writer can stream stacks out in
//!   id order without locking;
//! - lookup is open addressing with linear probing over a small chain of
//!   tables of growing size: a table is never resized, a larger one is
//!   mapped when the current one is half full. A slot holds the top 32 bits
//!   of the hash and `id + 1`, claimed with one compare-and-swap after the
//!   stack is published, so readers that see the slot see the frames.
//!
//! Two threads interning the same new stack at once may both publish it;
//! the loser of the slot race uses the winner's id, and its own id stays an
//! unreferenced duplicate, which the reader ignores.
//!
//! There are two tables of this kind (`HEAP` and `CPU`), each with its own
//! dense ids, arena and lookup chain.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::sys;

/// A stack's index in the profile.
pub type StackId = u32;

const SEGMENT_WORDS: usize = 1 << 21; // 16 MiB
const SEGMENTS: usize = 64; // 1 GiB of frames at most
const ARENA_WORDS: usize = SEGMENT_WORDS * SEGMENTS;
const MAX_STACKS: usize = 1 << 24;
/// Id records per mapping (2 MiB).
const RECORDS_PER_SEGMENT: usize = 1 << 18;
const LEVEL_BITS: [u32; 4] = [14, 17, 20, 24];

/// One id space of interned stacks. There are two: `HEAP`, the stacks of
/// heap events, and `CPU`, the stacks of CPU samples (stream mode), so
/// that sampling, which finds a new stack at nearly every sample, never
/// pushes the ids of heap stacks up: those stay dense in the order heap
/// events first use them, and small ids are short varints on the hot path.
pub struct Table {
    arena: [AtomicPtr<u64>; SEGMENTS],
    /// Arena words claimed; offset 0 means "unpublished".
    arena_used: AtomicUsize,
    records: [AtomicPtr<AtomicU64>; MAX_STACKS / RECORDS_PER_SEGMENT],
    next_id: AtomicU32,
    levels: [AtomicPtr<AtomicU64>; 4],
    level_fill: [AtomicUsize; 4],
}

/// The stacks of heap events (and, in aggregate mode, of CPU samples).
pub(crate) static HEAP: Table = Table::new();
/// The stacks of CPU samples in stream mode (`cpu_table`).
pub(crate) static CPU: Table = Table::new();
/// Whether CPU samples intern into `CPU` (stream mode) or into `HEAP`.
static SEPARATE_CPU: AtomicBool = AtomicBool::new(false);

/// Maps `HEAP`'s first arena segment, id records and lookup table, and
/// `CPU`'s first lookup table when `separate_cpu` (CPU sampling on in
/// stream mode; its first stack maps the rest). In aggregate mode CPU
/// samples are counted per `HEAP` stack id (ids are never written per
/// event there). Called once, by the thread that initialises the tracker,
/// before any other thread interns.
pub fn init(separate_cpu: bool) -> bool {
    if !HEAP.init(true) || separate_cpu && !CPU.init(false) {
        return false;
    }
    SEPARATE_CPU.store(separate_cpu, Ordering::Release);
    true
}

/// The table CPU samples intern into.
#[inline]
pub fn cpu_table() -> &'static Table {
    if SEPARATE_CPU.load(Ordering::Relaxed) {
        &CPU
    } else {
        &HEAP
    }
}

/// Whether CPU samples have their own id space (the `CpuStacks` chunks).
pub fn separate_cpu() -> bool {
    SEPARATE_CPU.load(Ordering::Relaxed)
}

/// The frames of published heap stack `id` (`Table::frames` of `HEAP`).
pub fn frames(id: StackId) -> Option<&'static [u64]> {
    HEAP.frames(id)
}

/// How many heap stack ids have been handed out.
pub fn count() -> u32 {
    HEAP.count()
}

/// Interns a heap stack (`Table::intern_hashed` of `HEAP`).
#[inline]
pub fn intern_hashed(frames: &[u64], h: u64) -> Option<StackId> {
    HEAP.intern_hashed(frames, h)
}

/// The mapping in `slot` of `words` 8-byte words, mapped by the first
/// thread that needs it (a loser of the race unmaps its own). Null if the
/// system has no address space left.
fn segment<T>(slot: &AtomicPtr<T>, words: usize) -> *mut T {
    let p = slot.load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    let fresh = sys::map_zeroed(words * 8) as *mut T;
    if fresh.is_null() {
        return fresh;
    }
    match slot.compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => fresh,
        Err(existing) => {
            // SAFETY: `fresh` is our own mapping that nobody else has seen.
            unsafe { libc::munmap(fresh as *mut libc::c_void, words * 8) };
            existing
        }
    }
}

/// Folds one return address into a stack hash. Used by the frame walk as
/// it goes (the multiply chain overlaps the walk's dependent loads) and by
/// `hash` for stacks given whole.
#[inline(always)]
pub fn hash_step(h: u64, frame: u64) -> u64 {
    (h ^ frame)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29)
}

/// Finishes a stack hash: murmur3's finaliser, so every input bit reaches
/// the table index and the tag; never 0 (0 marks an empty cache slot).
#[inline(always)]
pub fn hash_finish(mut h: u64, len: usize) -> u64 {
    h ^= len as u64;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    (h ^ (h >> 33)) | 1
}

pub const HASH_SEED: u64 = 0x243F_6A88_85A3_08D3;

/// The hash of a whole stack, as the frame walk computes it.
#[cfg(test)]
pub fn hash(frames: &[u64]) -> u64 {
    hash_finish(
        frames.iter().fold(HASH_SEED, |h, &f| hash_step(h, f)),
        frames.len(),
    )
}

impl Table {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Table {
        Table {
            arena: [const { AtomicPtr::new(std::ptr::null_mut()) }; SEGMENTS],
            arena_used: AtomicUsize::new(1),
            records: [const { AtomicPtr::new(std::ptr::null_mut()) };
                MAX_STACKS / RECORDS_PER_SEGMENT],
            next_id: AtomicU32::new(0),
            levels: [const { AtomicPtr::new(std::ptr::null_mut()) }; 4],
            level_fill: [const { AtomicUsize::new(0) }; 4],
        }
    }

    /// Maps the first lookup table, and the first arena segment and id
    /// records if `eager` (else the first stack interned maps them, as it
    /// maps later ones: a program that is never sampled pays nothing).
    fn init(&self, eager: bool) -> bool {
        let level0 = sys::map_zeroed((1usize << LEVEL_BITS[0]) * 8) as *mut AtomicU64;
        if level0.is_null() {
            return false;
        }
        self.levels[0].store(level0, Ordering::Release);
        !eager
            || !segment(&self.arena[0], SEGMENT_WORDS).is_null()
                && !segment(&self.records[0], RECORDS_PER_SEGMENT).is_null()
    }

    /// The record cell of `id`, if its segment is mapped.
    fn record_cell(&self, id: usize) -> Option<&'static AtomicU64> {
        let seg = self
            .records
            .get(id / RECORDS_PER_SEGMENT)?
            .load(Ordering::Acquire);
        // SAFETY: a mapped record segment holds RECORDS_PER_SEGMENT cells and
        // stays mapped forever.
        (!seg.is_null()).then(|| unsafe { &*seg.add(id % RECORDS_PER_SEGMENT) })
    }

    /// The frames of a published stack.
    pub fn frames(&self, id: StackId) -> Option<&'static [u64]> {
        let rec = self.record_cell(id as usize)?.load(Ordering::Acquire);
        if rec == 0 {
            return None;
        }
        let (off, len) = ((rec >> 16) as usize, (rec & 0xffff) as usize);
        let seg = self.arena[off / SEGMENT_WORDS].load(Ordering::Acquire);
        // SAFETY: a published record points at `len` words of one mapped
        // arena segment that were fully written before the record was
        // stored (Release/Acquire), and arena words are never written again.
        Some(unsafe { std::slice::from_raw_parts(seg.add(off % SEGMENT_WORDS), len) })
    }

    /// How many ids have been handed out (published or about to be).
    pub fn count(&self) -> u32 {
        self.next_id.load(Ordering::Acquire)
    }

    /// The id of `frames`, interning it if new. `None` only when the tables
    /// or the arena are exhausted (the event is then counted as dropped).
    #[cfg(test)]
    pub fn intern(&self, frames: &[u64]) -> Option<StackId> {
        self.intern_hashed(frames, hash(frames))
    }

    /// `intern` with the stack's `h`ash already computed.
    #[inline]
    pub fn intern_hashed(&self, frames: &[u64], h: u64) -> Option<StackId> {
        let frames = &frames[..frames.len().min(0xffff)];
        let tag = h >> 32;
        let mut newest = 0;
        for (level, table) in self.levels.iter().enumerate() {
            let table = table.load(Ordering::Acquire);
            if table.is_null() {
                break;
            }
            newest = level;
            if let Some(id) = self.probe(table, LEVEL_BITS[level], h, tag, frames).0 {
                return Some(id);
            }
        }
        self.insert(newest, h, tag, frames)
    }

    /// Looks `frames` up in one lookup table: `(Some(id), _)` if found, else
    /// the index of the first empty slot of its probe sequence.
    #[inline]
    fn probe(
        &self,
        table: *mut AtomicU64,
        bits: u32,
        h: u64,
        tag: u64,
        frames: &[u64],
    ) -> (Option<StackId>, usize) {
        let mask = (1usize << bits) - 1;
        let mut i = h as usize & mask;
        for _ in 0..=mask {
            // SAFETY: `i <= mask` and the table maps `mask + 1` slots.
            let slot = unsafe { (*table.add(i)).load(Ordering::Acquire) };
            if slot == 0 {
                return (None, i);
            }
            if slot >> 32 == tag {
                let id = (slot as u32).wrapping_sub(1);
                if self.frames(id) == Some(frames) {
                    return (Some(id), i);
                }
            }
            i = (i + 1) & mask;
        }
        (None, usize::MAX)
    }

    #[cold]
    fn insert(&self, mut level: usize, h: u64, tag: u64, frames: &[u64]) -> Option<StackId> {
        // A table `init` never mapped (the CPU table with sampling off)
        // takes no stacks.
        if self.levels[0].load(Ordering::Acquire).is_null() {
            return None;
        }
        let id = self.publish(frames)?;
        let slot_value = (tag << 32) | (id as u64 + 1);
        loop {
            if self.level_fill[level].load(Ordering::Relaxed) >= (1usize << LEVEL_BITS[level]) / 2 {
                level = self.next_level(level)?;
            }
            let table = self.levels[level].load(Ordering::Acquire);
            let (found, mut i) = self.probe(table, LEVEL_BITS[level], h, tag, frames);
            if let Some(existing) = found {
                return Some(existing);
            }
            if i == usize::MAX {
                level = self.next_level(level)?;
                continue;
            }
            let mask = (1usize << LEVEL_BITS[level]) - 1;
            loop {
                // SAFETY: `i <= mask`, within the table.
                let cell = unsafe { &*table.add(i) };
                match cell.compare_exchange(0, slot_value, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        self.level_fill[level].fetch_add(1, Ordering::Relaxed);
                        return Some(id);
                    }
                    Err(other) => {
                        if other >> 32 == tag {
                            let other_id = (other as u32).wrapping_sub(1);
                            if self.frames(other_id) == Some(frames) {
                                return Some(other_id);
                            }
                        }
                        i = (i + 1) & mask;
                        // SAFETY: as above.
                        if unsafe { (*table.add(i)).load(Ordering::Acquire) } != 0 {
                            break; // re-probe from the start: others are inserting here
                        }
                    }
                }
            }
        }
    }

    /// Maps the lookup table after `level` if no thread has yet.
    fn next_level(&self, level: usize) -> Option<usize> {
        let next = level + 1;
        if next >= self.levels.len() {
            return None;
        }
        if self.levels[next].load(Ordering::Acquire).is_null() {
            let t = sys::map_zeroed((1usize << LEVEL_BITS[next]) * 8) as *mut AtomicU64;
            if t.is_null() {
                return None;
            }
            if self.levels[next]
                .compare_exchange(std::ptr::null_mut(), t, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // SAFETY: `t` is our own fresh mapping that nobody else has seen.
                unsafe { libc::munmap(t as *mut libc::c_void, (1usize << LEVEL_BITS[next]) * 8) };
            }
        }
        Some(next)
    }

    /// Copies `frames` into the arena and publishes a new id for them.
    fn publish(&self, frames: &[u64]) -> Option<StackId> {
        let len = frames.len().max(1);
        // Claim `len` words that do not straddle two segments.
        let mut off = self.arena_used.load(Ordering::Relaxed);
        loop {
            let start = if off % SEGMENT_WORDS + len > SEGMENT_WORDS {
                off.next_multiple_of(SEGMENT_WORDS)
            } else {
                off
            };
            if start + len > ARENA_WORDS {
                return None;
            }
            match self.arena_used.compare_exchange_weak(
                off,
                start + len,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    off = start;
                    break;
                }
                Err(now) => off = now,
            }
        }
        let seg = segment(&self.arena[off / SEGMENT_WORDS], SEGMENT_WORDS);
        if seg.is_null() {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::AcqRel);
        if id as usize >= MAX_STACKS {
            return None;
        }
        if segment(
            &self.records[id as usize / RECORDS_PER_SEGMENT],
            RECORDS_PER_SEGMENT,
        )
        .is_null()
        {
            return None;
        }
        // SAFETY: `off..off + len` was claimed by this thread alone and lies
        // within one mapped segment (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                frames.as_ptr(),
                seg.add(off % SEGMENT_WORDS),
                frames.len(),
            )
        };
        let rec = ((off as u64) << 16) | frames.len() as u64;
        self.record_cell(id as usize)?.store(rec, Ordering::Release);
        Some(id)
    }
}

/// Interns a heap stack (`Table::intern` of `HEAP`).
#[cfg(test)]
pub fn intern(frames: &[u64]) -> Option<StackId> {
    HEAP.intern(frames)
}

#[cfg(test)]
pub(crate) fn init_for_tests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if HEAP.arena[0].load(Ordering::Acquire).is_null() {
            assert!(init(true));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_frames_same_id_under_threads() {
        crate::stacks::init_for_tests();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    for i in 0..2000u64 {
                        let frames = [0x1000 + i % 500, 0x2000, 0x3000];
                        ids.push((i % 500, intern(&frames).unwrap()));
                    }
                    ids
                })
            })
            .collect();
        let mut seen = std::collections::HashMap::new();
        for h in handles {
            for (k, id) in h.join().unwrap() {
                assert_eq!(*seen.entry(k).or_insert(id), id, "stack {k} got two ids");
                assert_eq!(frames(id).unwrap(), &[0x1000 + k, 0x2000, 0x3000]);
            }
        }
        assert_eq!(seen.len(), 500);
    }

    #[test]
    fn grows_past_the_first_table() {
        crate::stacks::init_for_tests();
        let n = (1u64 << LEVEL_BITS[0]) * 2;
        let ids: Vec<_> = (0..n)
            .map(|i| intern(&[0xdead_0000 + i, 7]).unwrap())
            .collect();
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(intern(&[0xdead_0000 + i as u64, 7]), Some(id));
        }
    }

    #[test]
    fn the_cpu_table_has_its_own_ids() {
        crate::stacks::init_for_tests();
        // The same frames get an id of each table's own, and each table
        // finds its own.
        let frames = [0xc0de_0001, 0xc0de_0002, 0xc0de_0003];
        let cpu_ids: Vec<_> = (0..1000u64)
            .map(|i| CPU.intern(&[0xc0de_0000 + i, 1]).unwrap())
            .collect();
        assert!(CPU.count() >= 1000);
        let cpu = CPU.intern(&frames).unwrap();
        let heap = HEAP.intern(&frames).unwrap();
        assert_eq!(HEAP.frames(heap).unwrap(), &frames);
        assert_eq!(CPU.frames(cpu).unwrap(), &frames);
        for (i, &id) in cpu_ids.iter().enumerate() {
            assert_eq!(CPU.frames(id).unwrap(), &[0xc0de_0000 + i as u64, 1]);
            assert_eq!(CPU.intern(&[0xc0de_0000 + i as u64, 1]), Some(id));
        }
    }
}
