//! Replays the heap events in global order and accumulates figures per stack
//! id: what each stack allocated and freed, what it held at the process's
//! heap peak and at exit, and its CPU samples.
//!
//! Peak attribution follows DHAT's t-gmax: the peak is the first moment the
//! live total reaches its maximum. Rather than replaying twice, one pass
//! tracks the live bytes per allocating stack and remembers where the maximum
//! was; the snapshot at that point is recovered afterwards by undoing the
//! events after it, which costs only the events after the peak.
//!
//! Sampled profiles weight each allocation of size `s` by `1/p` with
//! `p = 1 - exp(-s/N)`, so figures are unbiased estimates. Weighted sums are
//! kept in `f64`, which is exact for integer sums below 2^53 (unsampled).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::profile::{HeapEventKind, Profile};

/// Raw figures of one stack (or of the whole process), before rounding.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StackFigures {
    pub allocations: f64,
    pub allocated_bytes: f64,
    pub frees: f64,
    pub freed_bytes: f64,
    pub peak_bytes: f64,
    pub end_bytes: f64,
    pub cpu_samples: f64,
    pub cpu_time_ns: f64,
}

impl StackFigures {
    pub fn add(&mut self, o: &StackFigures) {
        self.allocations += o.allocations;
        self.allocated_bytes += o.allocated_bytes;
        self.frees += o.frees;
        self.freed_bytes += o.freed_bytes;
        self.peak_bytes += o.peak_bytes;
        self.end_bytes += o.end_bytes;
        self.cpu_samples += o.cpu_samples;
        self.cpu_time_ns += o.cpu_time_ns;
    }

    pub fn is_zero(&self) -> bool {
        *self == StackFigures::default()
    }
}

/// The outcome of a replay.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Indexed by stack id.
    pub per_stack: Vec<StackFigures>,
    /// Whole-process figures: `peak_bytes` is the global maximum of live
    /// bytes, `end_bytes` what was live after the last event.
    pub totals: StackFigures,
    /// Frees of blocks the profile never saw allocated (e.g. allocated
    /// before a `fork`): counted as frees, without changing live bytes.
    pub unknown_frees: u64,
    /// Whether figures are estimates from sampled allocations.
    pub estimated: bool,
}

/// A fast hasher for heap addresses (FxHash's multiply): addresses are
/// already well spread, so SipHash's DoS resistance only costs time here.
#[derive(Default, Clone, Copy)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type AddrMap<V> = HashMap<u64, V, BuildHasherDefault<AddrHasher>>;

/// Per-allocation weight: 1 when every allocation was recorded, otherwise
/// the inverse of the probability that an allocation of `size` was sampled.
#[derive(Debug, Clone, Copy)]
pub struct Weight {
    sample_bytes: f64,
}

impl Weight {
    pub fn new(sample_bytes: u64) -> Weight {
        Weight {
            sample_bytes: sample_bytes as f64,
        }
    }

    #[inline]
    pub fn of(&self, size: u64) -> f64 {
        if self.sample_bytes <= 0.0 {
            return 1.0;
        }
        let p = -(-(size as f64) / self.sample_bytes).exp_m1();
        if p > 0.0 {
            1.0 / p
        } else {
            // A zero-size allocation could not have been sampled by size;
            // count it once rather than infinitely.
            1.0
        }
    }
}

/// Replays all heap events and CPU samples of `profile`.
pub fn replay(profile: &Profile) -> Replay {
    let weight = Weight::new(profile.meta.sample_bytes);
    let nstacks = profile.stacks.len();
    let mut out = Replay {
        per_stack: vec![StackFigures::default(); nstacks],
        estimated: profile.meta.sample_bytes > 0,
        ..Replay::default()
    };
    let events = &profile.heap_events;
    // For each free, the stack that allocated the freed block (or NONE),
    // needed to undo the events after the peak.
    const NONE: u32 = u32::MAX;
    let mut freed_from = vec![NONE; events.len()];
    let mut live_by_stack = vec![0f64; nstacks];
    let mut live: AddrMap<(u64, u32)> = AddrMap::default();
    live.reserve(events.len() / 4);
    let (mut live_total, mut peak_total, mut peak_index) = (0f64, 0f64, None);

    for (i, ev) in events.iter().enumerate() {
        let w = weight.of(ev.size);
        let bytes = w * ev.size as f64;
        let st = stack_slot(&mut out.per_stack, &mut live_by_stack, ev.stack);
        match ev.kind {
            HeapEventKind::Alloc => {
                out.per_stack[st].allocations += w;
                out.per_stack[st].allocated_bytes += bytes;
                live_by_stack[st] += bytes;
                live_total += bytes;
                if let Some((old_size, old_stack)) = live.insert(ev.addr, (ev.size, ev.stack)) {
                    // The free of the old block was lost: forget it.
                    let old = weight.of(old_size) * old_size as f64;
                    live_by_stack[old_stack as usize] -= old;
                    live_total -= old;
                }
                if live_total > peak_total {
                    peak_total = live_total;
                    peak_index = Some(i);
                }
            }
            HeapEventKind::Free => {
                out.per_stack[st].frees += w;
                out.per_stack[st].freed_bytes += bytes;
                match live.remove(&ev.addr) {
                    Some((size, alloc_stack)) => {
                        let b = weight.of(size) * size as f64;
                        live_by_stack[alloc_stack as usize] -= b;
                        live_total -= b;
                        freed_from[i] = alloc_stack;
                    }
                    None => out.unknown_frees += 1,
                }
            }
            HeapEventKind::Hole => {}
        }
    }
    let mut peak_by_stack = live_by_stack.clone();
    if let Some(p) = peak_index {
        undo_after_peak(events, &freed_from, p, &weight, &mut peak_by_stack);
    } else {
        peak_by_stack.iter_mut().for_each(|b| *b = 0.0);
    }
    for (s, fig) in out.per_stack.iter_mut().enumerate() {
        fig.end_bytes = live_by_stack[s].max(0.0);
        fig.peak_bytes = peak_by_stack[s].max(0.0);
    }
    add_cpu(profile, &mut out.per_stack);
    let mut totals = StackFigures::default();
    for fig in &out.per_stack {
        totals.add(fig);
    }
    totals.peak_bytes = peak_total;
    totals.end_bytes = live_total.max(0.0);
    out.totals = totals;
    out
}

/// Makes sure `stack` has a slot (a damaged or truncated profile may refer
/// to a stack whose chunk was never written) and returns its index.
#[inline]
fn stack_slot(per_stack: &mut Vec<StackFigures>, live: &mut Vec<f64>, stack: u32) -> usize {
    let s = stack as usize;
    if s >= per_stack.len() {
        per_stack.resize(s + 1, StackFigures::default());
        live.resize(s + 1, 0.0);
    }
    s
}

/// Turns the live bytes per stack at the end into those at the peak by
/// undoing, newest first, every event after `peak`.
fn undo_after_peak(
    events: &[crate::profile::HeapEvent],
    freed_from: &[u32],
    peak: usize,
    weight: &Weight,
    by_stack: &mut [f64],
) {
    for i in (peak + 1..events.len()).rev() {
        let ev = &events[i];
        match ev.kind {
            HeapEventKind::Alloc => {
                by_stack[ev.stack as usize] -= weight.of(ev.size) * ev.size as f64;
            }
            HeapEventKind::Free if freed_from[i] != u32::MAX => {
                by_stack[freed_from[i] as usize] += weight.of(ev.size) * ev.size as f64;
            }
            _ => {}
        }
    }
}

fn add_cpu(profile: &Profile, per_stack: &mut Vec<StackFigures>) {
    let period_ns = if profile.meta.cpu_hz > 0 {
        1e9 / profile.meta.cpu_hz as f64
    } else {
        0.0
    };
    for s in &profile.cpu_samples {
        let i = s.stack as usize;
        if i >= per_stack.len() {
            per_stack.resize(i + 1, StackFigures::default());
        }
        per_stack[i].cpu_samples += s.count as f64;
        per_stack[i].cpu_time_ns += s.count as f64 * period_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::testing::{Ev, ProfileBytes};
    use crate::profile::{parse_profile, HeapEvent};
    use std::path::Path;

    fn run(p: &ProfileBytes) -> Replay {
        replay(&parse_profile(&p.bytes, Path::new("t.lprof")).unwrap())
    }

    #[test]
    fn exact_figures_with_peak_and_end() {
        let mut p = ProfileBytes::new(0, 1000);
        p.stacks(0, &[&[1], &[2], &[3]]);
        p.events(
            1,
            0,
            &[
                Ev::Alloc(0, 0, 100, 0xa), // stack 0: freed after the peak
                Ev::Alloc(1, 1, 50, 0xb),  // stack 1: live at peak and at exit
                Ev::Free(2, 2, 100, 0xa),  // freed by stack 2 (live 50)
                Ev::Alloc(3, 0, 200, 0xc), // stack 0: the global peak (250)
                Ev::Free(4, 2, 200, 0xc),  // live 50 again
                Ev::Alloc(5, 1, 10, 0xd),  // stack 1: after the peak, leaked
                Ev::Free(6, 2, 7, 0xeee),  // unknown block: counted, no live change
                Ev::Cpu(1, 3),             // 3 samples at 1000 Hz = 3 ms
            ],
        );
        p.end(7);
        let r = run(&p);
        let s0 = r.per_stack[0];
        assert_eq!((s0.allocations, s0.allocated_bytes), (2.0, 300.0));
        assert_eq!((s0.peak_bytes, s0.end_bytes), (200.0, 0.0));
        let s1 = r.per_stack[1];
        assert_eq!((s1.allocations, s1.allocated_bytes), (2.0, 60.0));
        assert_eq!((s1.peak_bytes, s1.end_bytes), (50.0, 60.0));
        assert_eq!((s1.cpu_samples, s1.cpu_time_ns), (3.0, 3_000_000.0));
        let s2 = r.per_stack[2];
        assert_eq!((s2.frees, s2.freed_bytes), (3.0, 307.0));
        assert_eq!(r.totals.peak_bytes, 250.0);
        assert_eq!(r.totals.end_bytes, 60.0);
        assert_eq!(r.totals.allocated_bytes, 360.0);
        assert_eq!(r.unknown_frees, 1);
        assert!(!r.estimated);
    }

    #[test]
    fn sampled_allocations_are_weighted() {
        let mut p = ProfileBytes::new(1000, 0);
        p.stacks(0, &[&[1]]);
        p.events(1, 0, &[Ev::Alloc(0, 0, 1000, 0xa)]);
        let r = run(&p);
        let w = 1.0 / (1.0 - (-1.0f64).exp());
        assert!((r.per_stack[0].allocations - w).abs() < 1e-9);
        assert!((r.per_stack[0].allocated_bytes - 1000.0 * w).abs() < 1e-6);
        assert!((r.totals.end_bytes - 1000.0 * w).abs() < 1e-6);
        assert!(r.estimated);
    }

    #[test]
    fn two_million_pairs_replay_quickly() {
        let n = 2_000_000u64;
        let mut prof = crate::profile::Profile {
            stacks: vec![vec![1]; 64],
            ..Default::default()
        };
        for i in 0..n {
            let (addr, size, stack) = (
                0x1000 + (i % 5000) * 64 + (i / 5000) * 16,
                32,
                (i % 64) as u32,
            );
            prof.heap_events.push(HeapEvent {
                addr,
                size,
                stack,
                kind: HeapEventKind::Alloc,
            });
            prof.heap_events.push(HeapEvent {
                addr,
                size,
                stack,
                kind: HeapEventKind::Free,
            });
        }
        let t = std::time::Instant::now();
        let r = replay(&prof);
        assert_eq!(r.totals.allocations, n as f64);
        assert_eq!(r.totals.end_bytes, 0.0);
        // Generous even for a debug build; release is ~20x faster.
        assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());
    }
}
