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

/// The current stack pointer and frame pointer.
#[inline(always)]
pub fn registers() -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let sp: usize;
        let fp: usize;
        // SAFETY: reads two registers into locals; no memory is touched.
        unsafe {
            std::arch::asm!("mov {}, rsp", "mov {}, rbp", out(reg) sp, out(reg) fp,
                options(nomem, nostack, preserves_flags));
        }
        (sp, fp)
    }
    #[cfg(target_arch = "aarch64")]
    {
        let sp: usize;
        let fp: usize;
        // SAFETY: reads two registers into locals; no memory is touched.
        unsafe {
            std::arch::asm!("mov {}, sp", "mov {}, x29", out(reg) sp, out(reg) fp,
                options(nomem, nostack, preserves_flags));
        }
        (sp, fp)
    }
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
#[inline]
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

#[cfg(test)]
mod tests {
    use super::*;

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
