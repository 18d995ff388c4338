//! Stack capture by frame-pointer walk.
//!
//! Each frame of code built with frame pointers starts with `push rbp;
//! mov rbp, rsp`, so `[rbp]` holds the caller's frame pointer and `[rbp + 8]`
//! the return address into the caller. The walk follows that chain and stops
//! as soon as a frame pointer leaves the thread's real stack `[sp, stack_top)`,
//! fails to grow towards the stack's top, or is misaligned, so that a chain
//! broken by code built without frame pointers ends the walk instead of
//! reading wild memory. Every read is inside the current thread's stack
//! mapping, which is readable.

/// The instructions that copy the stack pointer and the frame pointer into
/// two registers (`registers`' outputs).
#[cfg(target_arch = "x86_64")]
macro_rules! read_sp_fp {
    () => {
        "mov {}, rsp\nmov {}, rbp"
    };
}
#[cfg(target_arch = "aarch64")]
macro_rules! read_sp_fp {
    () => {
        "mov {}, sp\nmov {}, x29"
    };
}

/// The current stack pointer and frame pointer.
#[inline(always)]
pub fn registers() -> (usize, usize) {
    let sp: usize;
    let fp: usize;
    // SAFETY: reads two registers into locals; no memory is touched.
    unsafe {
        std::arch::asm!(read_sp_fp!(), out(reg) sp, out(reg) fp,
            options(nomem, nostack, preserves_flags));
    }
    (sp, fp)
}

/// The time-stamp counter. After an allocation (`ordered`), `rdtscp`: it
/// waits for every earlier load, so the reading comes after whatever the
/// allocator synchronised with. Before a free, `rdtsc`: the free's stores
/// cannot become visible before the reading retires.
#[inline(always)]
pub fn tsc(ordered: bool) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__rdtscp, _rdtsc};
        if ordered {
            let mut aux = 0u32;
            // SAFETY: used only where CPUID reports rdtscp (see
            // `tsc_is_invariant`); it writes `aux`, a valid local.
            unsafe { __rdtscp(&mut aux) }
        } else {
            // SAFETY: rdtsc has no preconditions.
            unsafe { _rdtsc() }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ordered;
        0
    }
}

/// Whether the CPU says its TSC is invariant (CPUID 0x8000_0007, EDX bit
/// 8) and has `rdtscp` (CPUID 0x8000_0001, EDX bit 27).
pub fn tsc_is_invariant() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        let max = __cpuid(0x8000_0000).eax;
        max >= 0x8000_0007
            && __cpuid(0x8000_0001).edx & (1 << 27) != 0
            && __cpuid(0x8000_0007).edx & (1 << 8) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Walks the frame-pointer chain from `fp`, writing return addresses into
/// `out` innermost first. `lo..hi` must be a readable range holding the
/// current thread's stack (frames live between the stack pointer and the
/// stack's top). Returns the number of frames written, whether the walk
/// stopped because `out` was full, and the stack's hash (`stacks::hash`),
/// computed on the way.
#[cfg(test)]
pub fn walk(fp: usize, lo: usize, hi: usize, out: &mut [u64]) -> (usize, bool, u64) {
    walk_from(fp, lo, hi, out, 0, crate::stacks::HASH_SEED)
}

/// `walk` appending after `out[..n]`, whose hash so far is `h`.
#[inline]
pub fn walk_from(
    mut fp: usize,
    lo: usize,
    hi: usize,
    out: &mut [u64],
    mut n: usize,
    mut h: u64,
) -> (usize, bool, u64) {
    use crate::stacks::{hash_finish, hash_step};
    while n < out.len() {
        if fp < lo || fp > hi.saturating_sub(16) || fp & 7 != 0 {
            return (n, false, hash_finish(h, n));
        }
        // SAFETY: `lo <= fp` and `fp + 16 <= hi`, and the caller guarantees
        // `lo..hi` is readable stack memory of this thread; both reads are
        // aligned (checked above).
        let (next, ret) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
        if ret == 0 {
            return (n, false, hash_finish(h, n));
        }
        out[n] = ret as u64;
        h = hash_step(h, ret as u64);
        n += 1;
        if next <= fp {
            return (n, false, hash_finish(h, n));
        }
        fp = next;
    }
    (n, true, hash_finish(h, n))
}

/// Frame records a [`Chain`] holds in itself, next to its header: most
/// chains are this short, and their check reads one chain's bytes only.
pub const CHAIN_FRAMES: usize = 32;
/// Records beyond a chain's first `CHAIN_FRAMES` that one [`ChainSet`]
/// holds, shared by its ways: a set can keep a chain as deep as the default
/// `LINEPROF_DEPTH`.
pub const SET_TAIL_RECORDS: usize = 256 - CHAIN_FRAMES;
/// The deepest chain a set keeps.
pub const MAX_CHAIN: usize = CHAIN_FRAMES + SET_TAIL_RECORDS;

/// A frame-pointer chain walked before, kept so that the next walk from the
/// same frame can check it instead of following it: the check's loads
/// depend on the chain kept here, not on each other, so they run in
/// parallel, where a walk waits for each saved frame pointer before it can
/// read the next record. Nothing is trusted without being read: every
/// record of the chain is loaded and compared.
#[repr(C)]
pub struct Chain {
    /// The first frame record's address (0: empty).
    pub fp0: usize,
    /// The stack top the chain was walked under.
    pub hi: usize,
    pub len: u32,
    /// What the caller interned the stack as.
    pub id: u32,
    /// Records past the first `CHAIN_FRAMES`: where they lie in the set's
    /// [`Tail`], and how many from there this way owns (no two ways'
    /// regions overlap).
    pub tail_off: u32,
    pub tail_cap: u32,
    /// `(saved frame pointer, return address)` of the first records,
    /// innermost first. Record 0 lies at `fp0`, record `k` at the saved
    /// frame pointer of record `k - 1`.
    pub records: [[u64; 2]; CHAIN_FRAMES],
}

/// The chains kept for one set of first frames, and the deep chains' tails.
#[repr(C)]
pub struct ChainSet {
    pub ways: [Chain; crate::thread::CHAIN_WAYS],
    /// Where the next region is cut from the set's [`Tail`].
    next: u32,
    /// Deep chains kept, and checks that matched one, both halved when
    /// either reaches `DEEP_WINDOW`: whether keeping them pays here lately.
    deep_kept: u16,
    deep_hits: u16,
    /// Deep walks (kept or not), for the probes.
    deep_walks: u16,
}

/// The records of a set's deep chains past their first `CHAIN_FRAMES`,
/// kept apart from the sets so that the sets' headers and first records
/// stay as close together as before deep chains were kept.
pub type Tail = [[u64; 2]; SET_TAIL_RECORDS];

/// A deep chain costs its tail's stores and copy, and a check per miss,
/// to keep; it pays when there is at least one match for every four kept.
/// (A recursive-descent parser reaches one depth by ever new paths: next
/// to none; a recursion that repeats its path: many per chain.)
const DEEP_PAYS_ONE_IN: u32 = 4;
/// Kept deep chains before the rate counts.
const DEEP_WARM_UP: u16 = 16;
/// While keeping does not pay, one deep walk in this many is kept anyway,
/// so that a change of the program's phase is seen.
const DEEP_PROBE_EVERY: u16 = 64;
/// The counters' window: both are halved when either reaches it.
const DEEP_WINDOW: u16 = 1024;

impl ChainSet {
    /// How many of a walk's records to keep (`CHAIN_FRAMES`, or `MAX_CHAIN`
    /// while deep chains pay in this set): the walk stores no more.
    #[inline(always)]
    pub fn records_wanted(&self) -> usize {
        let pays = self.deep_kept < DEEP_WARM_UP
            || self.deep_hits as u32 * DEEP_PAYS_ONE_IN >= self.deep_kept as u32;
        if pays || self.deep_walks % DEEP_PROBE_EVERY == DEEP_PROBE_EVERY - 1 {
            MAX_CHAIN
        } else {
            CHAIN_FRAMES
        }
    }

    /// A walk of `n` frames ended (kept or not, not cut at the depth
    /// limit): counts the deep ones for the probes.
    #[inline]
    pub fn walked(&mut self, n: usize) {
        if n > CHAIN_FRAMES {
            self.deep_walks = self.deep_walks.wrapping_add(1);
        }
    }

    /// Halves both counters when either reaches the window.
    #[inline]
    fn age(&mut self) {
        if self.deep_kept >= DEEP_WINDOW || self.deep_hits >= DEEP_WINDOW {
            self.deep_kept /= 2;
            self.deep_hits /= 2;
        }
    }

    /// Way `w`'s chain is now the one whose records are `records` (at most
    /// `MAX_CHAIN`), walked from `fp0` under stack top `hi`, interned as
    /// `id`. A tail longer than the way's region takes a new region from
    /// `next` (wrapping to the start), and the ways whose regions it
    /// overlaps lose them (and their chains, if deeper than the first
    /// records). So every way keeps `len <= CHAIN_FRAMES + tail_cap`, its
    /// region inside the set's `Tail` (`tail_records`, the same one at
    /// every call for this set), and no two ways' regions overlap.
    pub fn keep(
        &mut self,
        tail_records: &mut Tail,
        w: usize,
        fp0: usize,
        hi: usize,
        records: &[[u64; 2]],
        id: u32,
    ) {
        let (head, tail) = records.split_at(records.len().min(CHAIN_FRAMES));
        if let Some(c) = self.ways.get_mut(w) {
            c.records[..head.len()].copy_from_slice(head);
            self.keep_walked(tail_records, w, fp0, hi, records.len(), tail, id);
        }
    }

    /// `keep` of a chain of `n_records` records whose first ones (up to
    /// `CHAIN_FRAMES`) the same walk wrote into way `w`'s own records, the
    /// rest into `tail`: what `matches` later compares is exactly that
    /// walk's records.
    #[allow(clippy::too_many_arguments)]
    pub fn keep_walked(
        &mut self,
        tail_records: &mut Tail,
        w: usize,
        fp0: usize,
        hi: usize,
        n_records: usize,
        tail: &[[u64; 2]],
        id: u32,
    ) {
        if w >= self.ways.len() {
            return;
        }
        if n_records > MAX_CHAIN || tail.len() != n_records.saturating_sub(CHAIN_FRAMES) {
            return self.forget(w);
        }
        let n = tail.len() as u32;
        if n > 0 {
            self.deep_kept += 1;
            self.age();
        }
        if n > self.ways[w].tail_cap {
            if self.next + n > SET_TAIL_RECORDS as u32 {
                self.next = 0;
            }
            let (lo, end) = (self.next, self.next + n);
            for (i, c) in self.ways.iter_mut().enumerate() {
                if i != w && c.tail_cap != 0 && c.tail_off < end && lo < c.tail_off + c.tail_cap {
                    // Its region is cut away: a chain that used it is gone,
                    // a short one stays.
                    if c.len as usize > CHAIN_FRAMES {
                        c.fp0 = 0;
                        c.len = 0;
                    }
                    c.tail_cap = 0;
                }
            }
            self.ways[w].tail_off = lo;
            self.ways[w].tail_cap = n;
            self.next = end;
        }
        let c = &mut self.ways[w];
        let off = c.tail_off as usize;
        tail_records[off..off + tail.len()].copy_from_slice(tail);
        c.fp0 = fp0;
        c.hi = hi;
        c.len = n_records as u32;
        c.id = id;
    }

    /// Empties way `w` (its tail region stays its own).
    pub fn forget(&mut self, w: usize) {
        if let Some(c) = self.ways.get_mut(w) {
            c.fp0 = 0;
        }
    }

    /// Whether the frame-pointer chain from `fp0` is exactly way `w`'s, so
    /// that a walk from `fp0` would write its return addresses and stop
    /// where it stops: every record is read and compared with the kept one.
    ///
    /// The walk the chain came from ended because a saved frame pointer did
    /// not grow (`walk_chain` keeps no chain that ended otherwise), which
    /// depends only on the compared values; it checked each record against
    /// the bounds `[fp0, hi - 16]`, aligned, which depend only on `fp0` and
    /// the kept `hi`.
    ///
    /// # Safety
    /// The set was filled only by `keep` or `keep_walked` with one
    /// `walk_chain`'s records per chain (or is all zero), `tail_records` is
    /// the `Tail` all of them were given for this set, `w < CHAIN_WAYS`,
    /// `fp0 >= lo`, and `lo..hi` is readable stack memory of this thread.
    #[inline(always)]
    pub unsafe fn matches(
        &mut self,
        tail_records: &Tail,
        w: usize,
        fp0: usize,
        lo: usize,
        hi: usize,
    ) -> bool {
        // SAFETY: `w < CHAIN_WAYS` (the contract).
        let c = unsafe { self.ways.get_unchecked(w) };
        if c.fp0 != fp0 || c.hi != hi || fp0 < lo {
            return false;
        }
        let n = c.len as usize;
        if n <= CHAIN_FRAMES {
            // SAFETY: `n <= CHAIN_FRAMES`; per the contract, the records
            // were read by `walk_chain` from `fp0` under the same `hi`.
            return unsafe { records_match(c.records.get_unchecked(..n), fp0).0 };
        }
        // A deep chain's check stops at its first differing block of
        // records: the ways of one set often hold deep chains that share
        // only their first records (the allocator's own frames), and the
        // check of each would otherwise read them all.
        // SAFETY: as above, for the first records and then the tail, which
        // `keep` cut where it fits (`tail_off + n - CHAIN_FRAMES <=
        // SET_TAIL_RECORDS`) and which continues from the first records'
        // last saved frame pointer.
        let same = unsafe {
            let off = c.tail_off as usize;
            let tail = tail_records.get_unchecked(off..off + n - CHAIN_FRAMES);
            let mut blocks = c.records.chunks(8).chain(tail.chunks(16));
            let (mut same, mut at) = (true, fp0);
            while same {
                let Some(block) = blocks.next() else { break };
                (same, at) = records_match(block, at);
            }
            same
        };
        if same {
            self.deep_hits += 1;
            self.age();
        }
        same
    }
}

/// Whether the records from `fp0` on the stack are `records`, and the
/// saved frame pointer of the last one (where a chain's next records lie).
///
/// # Safety
/// `records` were read by `walk_chain` from `fp0` under the current stack
/// top: each saved frame pointer in them was found aligned, above the
/// previous record and at most `hi - 16`, so the 16 bytes at each record's
/// address lie in this thread's readable stack.
#[inline(always)]
unsafe fn records_match(records: &[[u64; 2]], fp0: usize) -> (bool, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_setzero_si128, _mm_xor_si128,
        };
        let mut at = fp0;
        // SAFETY: SSE2 is part of x86-64. `at` is `fp0` or a saved frame
        // pointer of the kept records: the 16 bytes at `at` lie in the
        // stack (the contract). `r` is 16 bytes of the kept records.
        unsafe {
            let mut diff = _mm_setzero_si128();
            for r in records {
                let stack = _mm_loadu_si128(at as *const __m128i);
                let kept = _mm_loadu_si128(r.as_ptr() as *const __m128i);
                diff = _mm_or_si128(diff, _mm_xor_si128(stack, kept));
                at = r[0] as usize;
            }
            let same = _mm_movemask_epi8(_mm_cmpeq_epi8(diff, _mm_setzero_si128())) == 0xffff;
            (same, at)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut at = fp0;
        let mut diff = 0u64;
        for r in records {
            // SAFETY: as above.
            let (next, ret) = unsafe { (*(at as *const u64), *((at + 8) as *const u64)) };
            diff |= (next ^ r[0]) | (ret ^ r[1]);
            at = r[0] as usize;
        }
        (diff == 0, at)
    }
}

/// `walk` that also writes each record it reads, the first ones into
/// `head[k]` and the next ones into `tail[k - head.len()]` (while there is
/// room), for `ChainSet::keep_walked`. Returns what `walk` returns and
/// whether the chain can be kept: it ended with a saved frame pointer that
/// does not grow, and all its records fit.
#[inline]
pub fn walk_chain(
    fp0: usize,
    lo: usize,
    hi: usize,
    out: &mut [u64],
    head: &mut [[u64; 2]],
    tail: &mut [[u64; 2]],
) -> (usize, bool, u64, bool) {
    use crate::stacks::{hash_finish, hash_step, HASH_SEED};
    let mut fp = fp0;
    let mut h = HASH_SEED;
    let mut n = 0;
    while n < out.len() {
        if fp < lo || fp > hi.saturating_sub(16) || fp & 7 != 0 {
            return (n, false, hash_finish(h, n), false);
        }
        // SAFETY: as in `walk_from`.
        let (next, ret) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
        if ret == 0 {
            return (n, false, hash_finish(h, n), false);
        }
        out[n] = ret as u64;
        if let Some(r) = head.get_mut(n) {
            *r = [next as u64, ret as u64];
        } else if let Some(r) = tail.get_mut(n - head.len()) {
            *r = [next as u64, ret as u64];
        }
        h = hash_step(h, ret as u64);
        n += 1;
        if next <= fp {
            return (n, false, hash_finish(h, n), n <= head.len() + tail.len());
        }
        fp = next;
    }
    (n, true, hash_finish(h, n), false)
}

/// `walk_from` that also writes each frame's address (where its saved
/// frame pointer lies) into `addrs[k]` for the frame written at `out[k]`.
/// For the CPU sampler's samples that keep a stack copy: the reader splices
/// its unwind of the first frames onto this walk by frame address.
pub fn walk_with_addrs(
    mut fp: usize,
    lo: usize,
    hi: usize,
    out: &mut [u64],
    addrs: &mut [u64],
    mut n: usize,
    mut h: u64,
) -> (usize, u64) {
    use crate::stacks::{hash_finish, hash_step};
    let end = out.len().min(addrs.len());
    while n < end {
        if fp < lo || fp > hi.saturating_sub(16) || fp & 7 != 0 {
            break;
        }
        // SAFETY: as in `walk_from`.
        let (next, ret) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
        if ret == 0 {
            break;
        }
        out[n] = ret as u64;
        addrs[n] = fp as u64;
        h = hash_step(h, ret as u64);
        n += 1;
        if next <= fp {
            break;
        }
        fp = next;
    }
    (n, hash_finish(h, n))
}

/// Whether a frame record at `fp` looks real: inside `lo..hi`, aligned, its
/// return address in the executable (`in_exe`), and its saved frame
/// pointer leading to another record up the stack whose return address is
/// in the executable too. (A Rust program's outermost records, `main` and a
/// thread's start, are std's code in the executable, called from C.)
///
/// # Safety
/// `lo..hi` is readable stack memory of this thread.
pub unsafe fn plausible_frame(
    fp: usize,
    lo: usize,
    hi: usize,
    in_exe: impl Fn(usize) -> bool,
) -> bool {
    let ok = |a: usize| a >= lo && a <= hi.saturating_sub(16) && a & 7 == 0;
    if !ok(fp) {
        return false;
    }
    // SAFETY: `fp..fp + 16` is inside `lo..hi` (checked by `ok`).
    let (next, ret) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
    if !in_exe(ret) {
        return false;
    }
    if !ok(next) || next <= fp {
        return false;
    }
    // SAFETY: as above, for `next`.
    let ret2 = unsafe { *((next + 8) as *const usize) };
    in_exe(ret2)
}

/// The lowest plausible frame record in `[sp, sp + window)`: where a
/// frame-pointer walk can start when the interrupted frame pointer is not
/// one (C code that uses it as a general register).
///
/// # Safety
/// `sp..hi` is readable stack memory of this thread.
pub unsafe fn find_frame(
    sp: usize,
    hi: usize,
    window: usize,
    in_exe: impl Fn(usize) -> bool + Copy,
) -> Option<usize> {
    let end = hi.min(sp.saturating_add(window));
    let mut a = (sp + 7) & !7;
    while a + 16 <= end {
        // SAFETY: per the contract.
        if unsafe { plausible_frame(a, sp, hi, in_exe) } {
            return Some(a);
        }
        a += 8;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_real_frame_above_a_frameless_function() {
        // A C function's frame (a saved register, a return address into C
        // code), then two frame records whose return addresses lie in the
        // "executable" (0x1000..0x2000).
        let mut mem = [0usize; 16];
        let base = mem.as_ptr() as usize;
        let at = |i: usize| base + i * 8;
        let in_exe = |pc: usize| (0x1000..0x2000).contains(&pc);
        mem[0] = 0xdead; // a register the C function saved
        mem[1] = 0x9999; // return address into the C library
        mem[2] = 0; // a stale record: the chain ends at once
        mem[3] = 0x1333;
        mem[4] = at(8); // the Rust caller's frame record
        mem[5] = 0x1111;
        mem[8] = at(12); // the outermost Rust record
        mem[9] = 0x1222;
        mem[12] = 0; // C start code: the chain ends
        mem[13] = 0x9000;
        let hi = base + mem.len() * 8;
        // SAFETY: `mem` is readable for its whole length.
        unsafe {
            assert_eq!(find_frame(base, hi, 4096, in_exe), Some(at(4)));
            assert!(!plausible_frame(at(0), base, hi, in_exe));
            assert_eq!(find_frame(base, at(4), 4096, in_exe), None);
        }
        let (mut out, mut addrs) = ([0u64; 8], [0u64; 8]);
        let (n, _) = walk_with_addrs(at(4), base, hi, &mut out, &mut addrs, 1, 0);
        assert_eq!(n, 4);
        assert_eq!(&out[1..4], &[0x1111, 0x1222, 0x9000]);
        assert_eq!(&addrs[1..3], &[at(4) as u64, at(8) as u64]);
    }

    /// A zeroed set (all ways empty) and its tail records.
    fn empty_set() -> (Box<ChainSet>, Box<Tail>) {
        // SAFETY: all-zero is a valid `ChainSet` and `Tail` (integers
        // only); boxed zeroed, they never sit on the test thread's stack.
        unsafe {
            (
                Box::new_zeroed().assume_init(),
                Box::new_zeroed().assume_init(),
            )
        }
    }

    #[test]
    fn a_kept_chain_matches_only_the_same_records_under_the_same_top() {
        let mut mem = [0usize; 16];
        let base = mem.as_ptr() as usize;
        let at = |i: usize| base + i * 8;
        mem[2] = at(6);
        mem[3] = 0x1111;
        mem[6] = at(10);
        mem[7] = 0x2222;
        mem[10] = 0; // the chain ends: the saved frame pointer does not grow
        mem[11] = 0x3333;
        let hi = base + mem.len() * 8;
        let mut out = [0u64; 8];
        let mut records = [[0u64; 2]; 8];
        let (mut set, mut tail) = empty_set();
        let (n, full, h, kept) = walk_chain(at(2), base, hi, &mut out, &mut records, &mut []);
        assert_eq!((n, full, kept), (3, false, true));
        assert_eq!(h, crate::stacks::hash(&out[..3]));
        set.keep(&mut tail, 0, at(2), hi, &records[..n], 7);
        let matches = |set: &mut ChainSet, mem: &[usize; 16], fp: usize, hi: usize| {
            std::hint::black_box(mem);
            // SAFETY: `mem` is readable for its whole length.
            unsafe { set.matches(&tail, 0, fp, base, hi) }
        };
        assert!(matches(&mut set, &mem, at(2), hi));
        assert_eq!(set.ways[0].id, 7);
        assert!(!matches(&mut set, &mem, at(6), hi), "another first frame");
        assert!(!matches(&mut set, &mem, at(2), hi - 8), "another stack top");
        for i in [2, 3, 6, 7, 10, 11] {
            let was = mem[i];
            mem[i] ^= 0x10;
            assert!(!matches(&mut set, &mem, at(2), hi), "word {i} changed");
            mem[i] = was;
        }
        assert!(matches(&mut set, &mem, at(2), hi));
        // A chain that ends out of bounds is not kept.
        mem[10] = hi + 64;
        let (n, _, _, kept) = walk_chain(at(2), base, hi, &mut out, &mut records, &mut []);
        assert_eq!((n, kept), (3, false));
        set.forget(0);
        assert!(!matches(&mut set, &mem, at(2), hi));
    }

    /// A hand-made stack of `depth` frame records, 16 bytes apart, with
    /// return addresses `tag + k`; returns the first record's address.
    fn deep_stack(mem: &mut [usize], depth: usize, tag: usize) -> usize {
        let base = mem.as_ptr() as usize;
        for k in 0..depth {
            mem[2 * k] = if k + 1 < depth {
                base + 16 * (k + 1)
            } else {
                0
            };
            mem[2 * k + 1] = tag + k;
        }
        base
    }

    #[test]
    fn deep_chains_are_kept_whole_and_checked_to_their_last_record() {
        let (mut set, mut tail) = empty_set();
        let mut out = vec![0u64; 300];
        let mut records = vec![[0u64; 2]; MAX_CHAIN];
        let mut stacks: Vec<Vec<usize>> = (0..4).map(|_| vec![0usize; 2 * 256 + 2]).collect();
        let depths = [100, 40, 200, 10];
        let mut fps = Vec::new();
        let check = |set: &mut ChainSet,
                     tail: &Tail,
                     stacks: &[Vec<usize>],
                     fps: &[(usize, usize)],
                     w: usize| {
            std::hint::black_box(stacks);
            let (fp, hi) = fps[w];
            // SAFETY: each stack is readable for its whole length.
            unsafe { set.matches(tail, w, fp, fp, hi) }
        };
        for (w, depth) in depths.into_iter().enumerate() {
            let fp = deep_stack(&mut stacks[w], depth, 0x10_0000 * (w + 1));
            let hi = fp + stacks[w].len() * 8;
            let (n, full, _, kept) = walk_chain(fp, fp, hi, &mut out, &mut records, &mut []);
            assert_eq!((n, full, kept), (depth, false, true), "depth {depth}");
            set.keep(&mut tail, w, fp, hi, &records[..n], w as u32);
            fps.push((fp, hi));
            if w == 1 {
                // Both tails fit side by side (way 1's from record 68).
                assert_eq!((set.ways[0].tail_off, set.ways[1].tail_off), (0, 68));
                assert!(
                    check(&mut set, &tail, &stacks, &fps, 0)
                        && check(&mut set, &tail, &stacks, &fps, 1)
                );
            }
        }
        // The 200-frame tail wrapped to the start of the tails and emptied
        // both ways whose regions it took; the 10-frame chain needs none.
        assert_eq!(set.ways[2].tail_off, 0);
        assert_eq!((set.ways[0].fp0, set.ways[1].fp0), (0, 0));
        assert_eq!(
            (0..4)
                .map(|w| check(&mut set, &tail, &stacks, &fps, w))
                .collect::<Vec<_>>(),
            [false, false, true, true]
        );
        // The deepest record counts: a change there is no match.
        stacks[2][2 * 199 + 1] ^= 1;
        assert!(!check(&mut set, &tail, &stacks, &fps, 2));
        stacks[2][2 * 199 + 1] ^= 1;
        assert!(check(&mut set, &tail, &stacks, &fps, 2));
        // A way that keeps a chain no longer than its region keeps it in
        // place, and its neighbours keep theirs.
        let (fp, hi) = fps[2];
        stacks[2][2 * 150 + 1] = 0xdead;
        let (n, _, _, _) = walk_chain(fp, fp, hi, &mut out, &mut records, &mut []);
        let next = set.next;
        set.keep(&mut tail, 2, fp, hi, &records[..n], 9);
        assert_eq!((set.ways[2].tail_off, set.next), (0, next));
        assert!(
            check(&mut set, &tail, &stacks, &fps, 2) && check(&mut set, &tail, &stacks, &fps, 3)
        );
        assert_eq!(set.ways[2].id, 9);
        // At the edges: 32 records need no tail, 33 and 256 do, 257 are
        // walked, not kept.
        for (depth, kept_expected) in [(32, true), (33, true), (256, true), (257, false)] {
            let mut mem = vec![0usize; 2 * depth];
            let fp = deep_stack(&mut mem, depth, 0x50_0000);
            let hi = fp + mem.len() * 8;
            let (n, full, _, kept) = walk_chain(fp, fp, hi, &mut out, &mut records, &mut []);
            assert_eq!(
                (n, full, kept),
                (depth, false, kept_expected),
                "depth {depth}"
            );
            if kept {
                let (mut set, mut tail) = empty_set();
                set.keep(&mut tail, 5, fp, hi, &records[..n], 1);
                std::hint::black_box(&mem);
                // SAFETY: `mem` is readable for its whole length.
                assert!(
                    unsafe { set.matches(&tail, 5, fp, fp, hi) },
                    "depth {depth}"
                );
                assert_eq!(
                    set.ways[5].tail_cap as usize,
                    depth.saturating_sub(CHAIN_FRAMES)
                );
            }
        }
    }

    #[test]
    fn deep_chains_stop_being_kept_where_they_are_never_matched_again() {
        let (mut set, mut tail) = empty_set();
        let mut out = vec![0u64; 300];
        let mut records = vec![[0u64; 2]; MAX_CHAIN];
        let mut mem = vec![0usize; 2 * 100];
        let fp = deep_stack(&mut mem, 100, 0x70_0000);
        let hi = fp + mem.len() * 8;
        let (n, _, _, kept) = walk_chain(fp, fp, hi, &mut out, &mut records, &mut []);
        assert!(kept);
        assert_eq!(set.records_wanted(), MAX_CHAIN);
        for _ in 0..DEEP_WARM_UP {
            set.keep(&mut tail, 0, fp, hi, &records[..n], 1);
        }
        // Kept 16 times, never matched: keeping stops paying...
        assert_eq!(set.records_wanted(), CHAIN_FRAMES);
        // ... but one deep walk in `DEEP_PROBE_EVERY` is kept anyway. As
        // `capture_walk` does: the walk writes the way's first records in
        // place and the rest aside, and every deep walk counts.
        let mut scratch = vec![[0u64; 2]; SET_TAIL_RECORDS];
        let mut probes = 0;
        for _ in 0..2 * DEEP_PROBE_EVERY {
            let wanted = set.records_wanted();
            set.forget(0);
            let head = &mut set.ways[0].records;
            let aside = &mut scratch[..wanted - CHAIN_FRAMES];
            let (n, full, _, kept) = walk_chain(fp, fp, hi, &mut out, head, aside);
            assert_eq!((n, full, kept), (100, false, wanted == MAX_CHAIN));
            if kept {
                set.keep_walked(&mut tail, 0, fp, hi, n, &scratch[..n - CHAIN_FRAMES], 1);
                std::hint::black_box(&mem);
                // SAFETY: `mem` is readable for its whole length.
                assert!(unsafe { set.matches(&tail, 0, fp, fp, hi) });
                probes += 1;
            }
            set.walked(n);
        }
        assert_eq!(probes, 2);
        // Matches make it pay again (one for every four kept).
        set.keep(&mut tail, 0, fp, hi, &records[..n], 1);
        assert_eq!(set.records_wanted(), CHAIN_FRAMES);
        while set.records_wanted() == CHAIN_FRAMES {
            assert!(set.deep_hits * 4 < set.deep_kept, "paid before one in four");
            std::hint::black_box(&mem);
            // SAFETY: `mem` is readable for its whole length.
            assert!(unsafe { set.matches(&tail, 0, fp, fp, hi) });
        }
        // 19 kept (16, the two probes, one more); 5 matches (2 in the
        // probes, 3 to reach 19 / 4).
        assert_eq!((set.deep_kept, set.deep_hits), (DEEP_WARM_UP + 3, 5));
    }

    #[test]
    fn walks_a_hand_made_chain_and_stops_at_bounds() {
        // Three frames laid out in an array standing in for a stack.
        let mut mem = [0usize; 16];
        let base = mem.as_ptr() as usize;
        let at = |i: usize| base + i * 8;
        mem[2] = at(6); // frame 0 -> frame 1
        mem[3] = 0x1111;
        mem[6] = at(10); // frame 1 -> frame 2
        mem[7] = 0x2222;
        mem[10] = at(1); // frame 2 points back down: the chain ends here
        mem[11] = 0x3333;
        let mut out = [0u64; 8];
        let (n, full, h) = walk(at(2), base, base + mem.len() * 8, &mut out);
        assert_eq!((n, full), (3, false));
        assert_eq!(&out[..3], &[0x1111, 0x2222, 0x3333]);
        assert_eq!(h, crate::stacks::hash(&out[..3]));
        // A top bound that cuts frame 2 off.
        let (n, _, _) = walk(at(2), base, at(11), &mut out);
        assert_eq!(n, 2);
        // A full output buffer.
        let (n, full, _) = walk(at(2), base, base + mem.len() * 8, &mut out[..1]);
        assert_eq!((n, full), (1, true));
    }
}
