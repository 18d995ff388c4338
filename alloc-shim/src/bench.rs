//! The parts of the heap-event path, one at a time, for the micro
//! benchmark (`bench/src/bin/micro.rs`, through `lineprof::__bench`): each
//! runs the code the allocator runs per event, on the calling thread's
//! state, `iters` times in a loop.

use std::hint::black_box;
use std::time::Instant;

use crate::{sampled, stack, stacks, thread};

/// What each part times, in the order `run` numbers them.
pub const PARTS: &[&str] = &[
    "thread state (TLS, busy flag, parked samples)",
    "chain check (the kept chain matches)",
    "capture on a hit (chain set, order, check)",
    "stack walk + hash (no chain kept)",
    "per-thread stack cache",
    "shared stack table (a stack seen before)",
    "sequence number (one thread)",
    "time-stamp counter (threads overlap)",
    "event encoding",
    "chunk seal: CRC-32C of a 256 KiB chunk, per event",
    "sampled mode: free of an unsampled block",
    "sampled mode: allocation countdown",
];

/// Times part `part` (an index into `PARTS`) over `iters` runs on the
/// calling thread: nanoseconds per run, and the frames the walk parts
/// walked (the caller's depth plus one). `None` if the profiler is not
/// recording on this thread.
#[inline(never)]
pub fn run(part: usize, iters: u64) -> Option<(f64, usize)> {
    if !crate::is_active() {
        return None;
    }
    let t = thread::current();
    if t.is_null() || thread::is_dead(t) {
        return None;
    }
    let (sp, fp) = stack::registers();
    // SAFETY: `t` is this thread's own state; the walks read only this
    // thread's stack, between `sp` and its top, as `capture` does.
    unsafe {
        if sp < (*t).stack_lo || sp >= (*t).stack_hi {
            thread::refresh_bounds(t, sp);
        }
        let hi = (*t).stack_hi;
        let mut frames = [0u64; 64];
        let mut records = [[0u64; 2]; 64];
        let (n, _, h, kept) = stack::walk_chain(fp, sp, hi, &mut frames, &mut records, &mut []);
        let id = stacks::intern_hashed(&frames[..n], h)?;
        let mut chains: stack::ChainSet = std::mem::zeroed();
        let mut tail: stack::Tail = std::mem::zeroed();
        if kept {
            chains.keep(&mut tail, 0, fp, hi, &records[..n], id);
        }
        let start = Instant::now();
        let mut acc = 0u64;
        match part {
            0 => {
                for _ in 0..iters {
                    let t = black_box(thread::current());
                    if !thread::is_dead(t) && !(*t).busy {
                        thread::set_busy(t, true);
                        acc += thread::has_parked(t) as u64;
                        thread::set_busy(t, false);
                    }
                }
            }
            1 => {
                for _ in 0..iters {
                    acc += black_box(&mut chains).matches(&tail, 0, fp, sp, hi) as u64;
                }
            }
            2 => {
                for _ in 0..iters {
                    acc += crate::capture(t, thread::ALLOC, 64).unwrap_or(0) as u64;
                }
            }
            3 => {
                for _ in 0..iters {
                    let (n, _, h, _) = stack::walk_chain(
                        black_box(fp),
                        sp,
                        hi,
                        &mut frames,
                        &mut records,
                        &mut [],
                    );
                    acc = acc.wrapping_add(h ^ n as u64);
                }
            }
            4 => {
                let cache = &mut (*t).stack_cache;
                cache[h as usize % thread::STACK_CACHE] = (h, id);
                for _ in 0..iters {
                    let h = black_box(h);
                    let slot = &cache[h as usize % thread::STACK_CACHE];
                    acc += if slot.0 == h { slot.1 as u64 } else { 0 };
                }
            }
            5 => {
                for _ in 0..iters {
                    acc += stacks::intern_hashed(&frames[..n], black_box(h)).unwrap_or(0) as u64;
                }
            }
            6 => {
                for _ in 0..iters {
                    acc = acc.wrapping_add(thread::next_seq(t, true));
                }
            }
            7 => {
                for _ in 0..iters {
                    acc = acc.wrapping_add(stack::tsc(true));
                }
            }
            8 => {
                let mut buf = [0u8; 4096];
                let mut pos = 0;
                let (mut prev, mut other) = (0u64, 0u64);
                for i in 0..iters {
                    // Two blocks freed and allocated in turn, as in the micro.
                    let addr = black_box(0x5555_0000_1000u64 + (i & 1) * 0x50);
                    if pos + format_max() > buf.len() {
                        acc += pos as u64;
                        pos = 0;
                    }
                    let (delta, use_other, o) = crate::format::addr_delta(addr, prev, other);
                    let kind = (1 + (i & 1)) as u8
                        | if use_other {
                            crate::format::tag::OTHER_BASE
                        } else {
                            0
                        };
                    pos += thread::encode_event(
                        buf.as_mut_ptr().add(pos),
                        kind,
                        1,
                        black_box(id),
                        64,
                        delta,
                    );
                    (prev, other) = (addr, o);
                }
                acc += pos as u64;
                // Bytes per event, for the seal's share.
                return Some((
                    start.elapsed().as_nanos() as f64 / iters as f64,
                    acc as usize,
                ));
            }
            9 => {
                // One whole chunk per call, as the writer seals it.
                let bytes: Vec<u8> = (0..thread::BUF_LEN).map(|i| i as u8).collect();
                for _ in 0..iters {
                    acc += crate::crc::crc32(black_box(&bytes)) as u64;
                }
                // Nanoseconds per 256 KiB chunk; the caller divides.
            }
            10 => {
                static DUMMY: u8 = 0;
                sampled::insert(&DUMMY as *const u8 as u64);
                for i in 0..iters {
                    acc += sampled::remove(black_box(0x5555_0000_1000 + (i & 1) * 0x50)) as u64;
                }
            }
            11 => {
                for _ in 0..iters {
                    acc += crate::sample_hit(524_288, black_box(64)) as u64;
                }
            }
            _ => return None,
        }
        black_box(acc);
        Some((start.elapsed().as_nanos() as f64 / iters as f64, n))
    }
}

fn format_max() -> usize {
    crate::format::MAX_EVENT_LEN
}
