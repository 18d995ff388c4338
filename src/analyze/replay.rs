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

use crate::analyze::profile::{HeapEvent, HeapEventKind, Profile};

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
    /// Blocks (allocations) of this stack live at the heap peak and at exit.
    pub peak_blocks: f64,
    pub end_blocks: f64,
    /// Sum over the stack's blocks of their lifetimes, in heap events (the
    /// positions in the global event order between allocation and free, or
    /// the last event for blocks never freed): DHAT's `tl`.
    pub lifetime_events: f64,
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
        self.peak_blocks += o.peak_blocks;
        self.end_blocks += o.end_blocks;
        self.lifetime_events += o.lifetime_events;
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
    /// Per group of stacks (see `replay_grouped`): the largest live bytes.
    pub max_live: Vec<MaxLive>,
    /// Heap events replayed (the clock of `lifetime_events`).
    pub events: u64,
    /// Index of the event at which the heap peaked, if it ever held bytes.
    pub peak_event: Option<u64>,
}

/// The largest live bytes of a group of stacks over the run, and its live
/// blocks at that moment (DHAT's `mb`, `mbk`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MaxLive {
    pub bytes: f64,
    pub blocks: f64,
}

/// A hasher for heap addresses that keeps neighbours together, so that the
/// replay's table lookups hit the cache: the allocator hands out blocks
/// close together and reuses a freed block soon. The table's 7-bit tags
/// come from the address's low bits, so neighbours still differ there.
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
        let g = n >> 4;
        // The 64 KiB window an address lies in is scattered by a strong
        // multiplicative hash (so large, aligned blocks far apart spread
        // over the table); within a window the address bits are kept, only
        // XORed with the window's hash, so neighbours stay together.
        let window = (g >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = (g ^ (window >> 32)) ^ (g << 57);
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

/// Replays all heap events and CPU samples of `profile`, with each stack
/// its own group for `max_live`.
#[cfg(test)]
pub fn replay(profile: &Profile) -> Replay {
    replay_grouped(profile, &[])
}

/// As `replay`, with `max_live` per group of stacks: `group_of[stack]` is
/// the group of each stack id (empty: every stack its own group). Several
/// raw stacks symbolize to one logical stack, and a maximum over time
/// cannot be summed afterwards, so it is tracked per group while replaying.
pub fn replay_grouped(profile: &Profile, group_of: &[u32]) -> Replay {
    let weight = Weight::new(profile.meta.sample_bytes);
    let nstacks = profile.stacks.len();
    let ngroups = if group_of.is_empty() {
        nstacks
    } else {
        group_of.iter().max().map_or(0, |&g| g as usize + 1)
    };
    let mut out = Replay {
        per_stack: vec![StackFigures::default(); nstacks],
        estimated: profile.meta.sample_bytes > 0,
        events: profile.heap_events.len() as u64,
        ..Replay::default()
    };
    let events = &profile.heap_events;
    let mut st = State {
        weight,
        group_of,
        live: AddrMap::default(),
        events: &profile.heap_events,
        live_by_stack: vec![Live::default(); nstacks],
        live_by_group: vec![Live::default(); ngroups],
        max_live: vec![Live::default(); ngroups],
        freed_from: vec![NONE; events.len()],
        live_total: 0.0,
        peak_total: 0.0,
        peak_index: None,
    };
    st.live.reserve(events.len() / 4);
    for (i, ev) in events.iter().enumerate() {
        match ev.kind {
            HeapEventKind::Alloc => st.alloc(i, ev, &mut out.per_stack),
            HeapEventKind::Free => {
                if !st.free(i, ev, &mut out.per_stack) {
                    out.unknown_frees += 1;
                }
            }
        }
    }
    // Blocks never freed lived until the last event.
    for &at in st.live.values() {
        let b = &events[at as usize];
        let w = st.weight.of(b.size);
        out.per_stack[b.stack as usize].lifetime_events += w * (out.events - at) as f64;
    }
    let mut at_peak = st.live_by_stack.clone();
    if let Some(p) = st.peak_index {
        undo_after_peak(events, &st.freed_from, p, &weight, &mut at_peak);
    } else {
        at_peak.iter_mut().for_each(|l| *l = Live::default());
    }
    for (s, fig) in out.per_stack.iter_mut().enumerate() {
        fig.end_bytes = st.live_by_stack[s].bytes.max(0.0);
        fig.end_blocks = st.live_by_stack[s].blocks.max(0.0);
        fig.peak_bytes = at_peak[s].bytes.max(0.0);
        fig.peak_blocks = at_peak[s].blocks.max(0.0);
    }
    add_cpu(profile, &mut out.per_stack);
    let mut totals = StackFigures::default();
    for fig in &out.per_stack {
        totals.add(fig);
    }
    totals.peak_bytes = st.peak_total;
    totals.end_bytes = st.live_total.max(0.0);
    out.totals = totals;
    out.peak_event = st.peak_index.map(|p| p as u64);
    out.max_live = st
        .max_live
        .iter()
        .map(|m| MaxLive {
            bytes: m.bytes,
            blocks: m.blocks,
        })
        .collect();
    out
}

/// "No stack": a free whose block the profile never saw allocated.
const NONE: u32 = u32::MAX;

/// Live bytes and blocks (of a stack, a group, or at a maximum).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Live {
    bytes: f64,
    blocks: f64,
}

/// What the replay keeps between events.
struct State<'a> {
    weight: Weight,
    group_of: &'a [u32],
    /// Live blocks: address -> index of the event that allocated it (its
    /// size and stack are in that event), 16 bytes an entry.
    live: AddrMap<u64>,
    events: &'a [HeapEvent],
    live_by_stack: Vec<Live>,
    live_by_group: Vec<Live>,
    max_live: Vec<Live>,
    /// For each free, the stack that allocated the freed block (or NONE),
    /// needed to undo the events after the peak.
    freed_from: Vec<u32>,
    live_total: f64,
    peak_total: f64,
    peak_index: Option<usize>,
}

impl State<'_> {
    fn group(&self, stack: u32) -> Option<usize> {
        let g = if self.group_of.is_empty() {
            stack as usize
        } else {
            *self.group_of.get(stack as usize)? as usize
        };
        (g < self.live_by_group.len()).then_some(g)
    }

    /// Adds (or, with a negative `sign`, removes) a block of `size` to the
    /// live figures of `stack`, its group and the process.
    #[inline]
    fn change_live(&mut self, stack: u32, size: u64, sign: f64) {
        let w = self.weight.of(size) * sign;
        let bytes = w * size as f64;
        let l = &mut self.live_by_stack[stack as usize];
        l.bytes += bytes;
        l.blocks += w;
        self.live_total += bytes;
        if let Some(g) = self.group(stack) {
            let l = &mut self.live_by_group[g];
            l.bytes += bytes;
            l.blocks += w;
            // DHAT's mb/mbk: the group's largest live bytes, and its live
            // blocks at that moment.
            if l.bytes > self.max_live[g].bytes {
                self.max_live[g] = *l;
            }
        }
    }

    #[inline]
    fn alloc(&mut self, i: usize, ev: &HeapEvent, per_stack: &mut Vec<StackFigures>) {
        let s = stack_slot(per_stack, &mut self.live_by_stack, ev.stack);
        let w = self.weight.of(ev.size);
        per_stack[s].allocations += w;
        per_stack[s].allocated_bytes += w * ev.size as f64;
        if let Some(old) = self.live.insert(ev.addr, i as u64) {
            // The free of the old block was lost: forget it.
            let old = self.events[old as usize];
            self.change_live(old.stack, old.size, -1.0);
        }
        self.change_live(ev.stack, ev.size, 1.0);
        if self.live_total > self.peak_total {
            self.peak_total = self.live_total;
            self.peak_index = Some(i);
        }
    }

    /// Returns false for a free of a block never seen allocated.
    #[inline]
    fn free(&mut self, i: usize, ev: &HeapEvent, per_stack: &mut Vec<StackFigures>) -> bool {
        let s = stack_slot(per_stack, &mut self.live_by_stack, ev.stack);
        let w = self.weight.of(ev.size);
        per_stack[s].frees += w;
        per_stack[s].freed_bytes += w * ev.size as f64;
        let Some(at) = self.live.remove(&ev.addr) else {
            return false;
        };
        let block = self.events[at as usize];
        self.change_live(block.stack, block.size, -1.0);
        self.freed_from[i] = block.stack;
        let lifetime = (i as u64 - at) as f64;
        per_stack[block.stack as usize].lifetime_events += self.weight.of(block.size) * lifetime;
        true
    }
}

/// Makes sure `stack` has a slot (a damaged or truncated profile may refer
/// to a stack whose chunk was never written) and returns its index.
#[inline]
fn stack_slot(per_stack: &mut Vec<StackFigures>, live: &mut Vec<Live>, stack: u32) -> usize {
    let s = stack as usize;
    if s >= per_stack.len() {
        per_stack.resize(s + 1, StackFigures::default());
    }
    if s >= live.len() {
        live.resize(s + 1, Live::default());
    }
    s
}

/// Turns the live bytes per stack at the end into those at the peak by
/// undoing, newest first, every event after `peak`.
fn undo_after_peak(
    events: &[crate::analyze::profile::HeapEvent],
    freed_from: &[u32],
    peak: usize,
    weight: &Weight,
    by_stack: &mut [Live],
) {
    for i in (peak + 1..events.len()).rev() {
        let ev = &events[i];
        let w = weight.of(ev.size);
        let (stack, sign) = match ev.kind {
            HeapEventKind::Alloc => (ev.stack, -1.0),
            HeapEventKind::Free if freed_from[i] != NONE => (freed_from[i], 1.0),
            _ => continue,
        };
        let l = &mut by_stack[stack as usize];
        l.bytes += sign * w * ev.size as f64;
        l.blocks += sign * w;
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
    use crate::analyze::profile::testing::{Ev, ProfileBytes};
    use crate::analyze::profile::{parse_profile, HeapEvent};
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
        // Blocks and lifetimes, for DHAT: block a lived events 0..2, c 3..4;
        // b (1..) and d (5..) live to the end, event 7.
        assert_eq!(
            (s0.peak_blocks, s0.end_blocks, s0.lifetime_events),
            (1.0, 0.0, 3.0)
        );
        assert_eq!(
            (s1.peak_blocks, s1.end_blocks, s1.lifetime_events),
            (1.0, 2.0, 8.0)
        );
        assert_eq!((r.events, r.peak_event), (7, Some(3)));
        assert_eq!(
            r.max_live[..2],
            [
                MaxLive {
                    bytes: 200.0,
                    blocks: 1.0
                },
                MaxLive {
                    bytes: 60.0,
                    blocks: 2.0
                }
            ]
        );
        // Stacks 0 and 1 as one group: its maximum is the global peak, not
        // the sum of the two stacks' maxima (260).
        let grouped = replay_grouped(
            &parse_profile(&p.bytes, Path::new("t.lprof")).unwrap(),
            &[0, 0, 1],
        );
        assert_eq!(
            grouped.max_live,
            [
                MaxLive {
                    bytes: 250.0,
                    blocks: 2.0
                },
                MaxLive::default()
            ]
        );
        assert_eq!(grouped.per_stack, r.per_stack);
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
        let mut prof = crate::analyze::profile::Profile {
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
