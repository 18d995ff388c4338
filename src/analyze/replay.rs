//! Replays the heap events in global order and accumulates figures per stack
//! id: what each stack allocated and freed, what it held at the process's
//! heap peak and at exit, and its CPU samples.
//!
//! Peak attribution follows DHAT's t-gmax: the peak is the first moment the
//! live total reaches its maximum. One pass over the streamed events (the
//! memory needed is bounded by the live blocks and the stacks, not by the
//! number of events) tracks the live bytes per allocating stack; each time
//! the live total reaches a new maximum a peak epoch is bumped, and the
//! first change to a stack's live figures after a bump first copies them
//! into the stack's peak snapshot. A stack untouched since the last bump
//! held at the peak what it holds at the end. (The shim's aggregate mode
//! does the same in the process.)
//!
//! Sampled profiles weight each allocation of size `s` by `1/p` with
//! `p = 1 - exp(-s/N)`, so figures are unbiased estimates. Weighted sums are
//! kept in `f64`, which is exact for integer sums below 2^53 (unsampled).

use serde::{Deserialize, Serialize};

use crate::analyze::live_blocks::{Block, LiveBlocks};
use crate::analyze::profile::{Aggregate, HeapEvent, HeapEventKind, Profile};
use crate::error::Result;

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
    /// CPU samples taken while lineprof was recording, and the time they
    /// stand for: lineprof's own cost, on no stack's figures.
    pub profiler_cpu_samples: u64,
    pub profiler_cpu_time_ns: f64,
}

/// The largest live bytes of a group of stacks over the run, and its live
/// blocks at that moment (DHAT's `mb`, `mbk`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MaxLive {
    pub bytes: f64,
    pub blocks: f64,
}

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
    replay_grouped(profile, &[]).unwrap()
}

/// As `replay`, with `max_live` per group of stacks: `group_of[stack]` is
/// the group of each stack id (empty: every stack its own group). Several
/// raw stacks symbolize to one logical stack, and a maximum over time
/// cannot be summed afterwards, so it is tracked per group while replaying.
/// Fails only when the profile's file changed while it was read.
pub fn replay_grouped(profile: &Profile, group_of: &[u32]) -> Result<Replay> {
    if let Some(agg) = &profile.aggregate {
        return Ok(from_aggregate(profile, agg, group_of));
    }
    Ok(replay_with(profile, group_of, NoSeries)?.0)
}

/// As `replay_grouped`, also recording the live heap over the run for the
/// timeline in the same pass: `key_of[stack]` is the key (a source line)
/// whose bytes a raw stack's blocks count under (`u32::MAX` or missing:
/// none), `nkeys` the number of keys. The series is `None` for an
/// aggregate profile (see `aggregate_timeline`).
pub fn replay_with_series(
    profile: &Profile,
    group_of: &[u32],
    key_of: &[u32],
    nkeys: usize,
) -> Result<(Replay, Option<LiveSeries>)> {
    if let Some(agg) = &profile.aggregate {
        return Ok((from_aggregate(profile, agg, group_of), None));
    }
    let total = profile
        .heap_event_count
        .max(profile.heap_events.len() as u64);
    let (replay, recorder) =
        replay_with(profile, group_of, SeriesRecorder::new(key_of, nkeys, total))?;
    Ok((replay, Some(recorder.finish())))
}

fn replay_with<S: Series>(profile: &Profile, group_of: &[u32], series: S) -> Result<(Replay, S)> {
    let nstacks = profile.stacks.len();
    let ngroups = if group_of.is_empty() {
        nstacks
    } else {
        group_of.iter().max().map_or(0, |&g| g as usize + 1)
    };
    // Each stack's group, `NO_GROUP` for none: looked up once per event.
    let group: Vec<u32> = (0..nstacks)
        .map(|s| {
            let g = if group_of.is_empty() {
                s as u32
            } else {
                group_of.get(s).copied().unwrap_or(NO_GROUP)
            };
            if (g as usize) < ngroups {
                g
            } else {
                NO_GROUP
            }
        })
        .collect();
    let mut out = Replay {
        per_stack: vec![StackFigures::default(); nstacks],
        estimated: profile.meta.sample_bytes > 0,
        ..Replay::default()
    };
    let mut st = State {
        weight: Weight::new(profile.meta.sample_bytes),
        exact: profile.meta.sample_bytes == 0,
        group,
        live: LiveBlocks::default(),
        live_by_stack: vec![Live::default(); nstacks],
        at_peak: vec![Snapshot::default(); nstacks],
        lifetime: vec![0; nstacks],
        epoch: 0,
        live_by_group: vec![Live::default(); ngroups],
        max_live: vec![Live::default(); ngroups],
        live_total: 0.0,
        peak_total: 0.0,
        peak_index: None,
        series,
    };
    let total = profile
        .heap_event_count
        .max(profile.heap_events.len() as u64);
    let mut progress = Progress::new(total, profile.read_started);
    let mut i = 0u64;
    profile.for_each_heap_event(|ev| {
        st.stack_slot(&mut out.per_stack, ev.stack);
        match ev.kind {
            HeapEventKind::Alloc => st.alloc(i, ev, &mut out.per_stack),
            HeapEventKind::Free => {
                if !st.free(i, ev, &mut out.per_stack) {
                    out.unknown_frees += 1;
                }
            }
        }
        st.series.after_event(i, st.live_total);
        i += 1;
        if i & 0xF_FFFF == 0 {
            progress.tick(i);
        }
    })?;
    progress.done(i);
    out.events = i;
    for (s, fig) in out.per_stack.iter_mut().enumerate() {
        let live = st.live_by_stack[s];
        // Blocks never freed lived until the last event.
        if st.exact {
            fig.lifetime_events = (st.lifetime[s] + live.blocks as i128 * i as i128) as f64;
        } else {
            fig.lifetime_events += live.blocks * i as f64;
        }
        fig.end_bytes = live.bytes.max(0.0);
        fig.end_blocks = live.blocks.max(0.0);
        if st.peak_index.is_some() {
            let snap = st.at_peak[s];
            let at_peak = if snap.epoch == st.epoch {
                snap.live
            } else {
                live
            };
            fig.peak_bytes = at_peak.bytes.max(0.0);
            fig.peak_blocks = at_peak.blocks.max(0.0);
        }
    }
    (out.profiler_cpu_samples, out.profiler_cpu_time_ns) = add_cpu(profile, &mut out.per_stack);
    let mut totals = StackFigures::default();
    for fig in &out.per_stack {
        totals.add(fig);
    }
    totals.peak_bytes = st.peak_total;
    totals.end_bytes = st.live_total.max(0.0);
    out.totals = totals;
    out.peak_event = st.peak_index;
    out.max_live = st
        .max_live
        .iter()
        .map(|m| MaxLive {
            bytes: m.bytes,
            blocks: m.blocks,
        })
        .collect();
    Ok((out, st.series))
}

/// A stack in no group of `max_live`.
const NO_GROUP: u32 = u32::MAX;

/// Progress on stderr for reports that take more than a second (counted
/// from `started`, when reading the profile began, if known).
struct Progress {
    start: std::time::Instant,
    total: u64,
    shown: bool,
}

impl Progress {
    fn new(total: u64, started: Option<std::time::Instant>) -> Progress {
        Progress {
            start: started.unwrap_or_else(std::time::Instant::now),
            total,
            shown: false,
        }
    }

    fn tick(&mut self, done: u64) {
        let secs = self.start.elapsed().as_secs_f64();
        if secs < 1.0 {
            return;
        }
        self.shown = true;
        eprint!(
            "\rlineprof: replayed {:.1} M of {:.1} M heap events ({:.0}%, {:.1} s)",
            done as f64 / 1e6,
            self.total as f64 / 1e6,
            100.0 * done as f64 / self.total.max(1) as f64,
            secs
        );
    }

    fn done(&mut self, done: u64) {
        if self.shown {
            self.tick(done);
            eprintln!();
        }
    }
}

/// Live bytes and blocks (of a stack, a group, or at a maximum).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Live {
    bytes: f64,
    blocks: f64,
}

/// A stack's live figures at the latest peak, valid when `epoch` is the
/// replay's current one.
#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    live: Live,
    epoch: u64,
}

/// What the replay keeps between events: bounded by the live blocks and
/// the stacks.
///
/// DHAT's lifetimes need no per-block clock: a block's lifetime is its
/// free's position minus its allocation's, so each allocation subtracts its
/// position from its stack's sum and each free adds its own, and a block
/// still live at the end adds the end (`live_by_stack` counts those).
/// Exact profiles sum in integers (`lifetime`), sampled ones in
/// `StackFigures::lifetime_events`, weighted.
struct State<S> {
    weight: Weight,
    exact: bool,
    /// Each stack's group (index in `live_by_group`), or `NO_GROUP`.
    group: Vec<u32>,
    live: LiveBlocks,
    live_by_stack: Vec<Live>,
    at_peak: Vec<Snapshot>,
    lifetime: Vec<i128>,
    /// Bumped at each new maximum of `live_total`.
    epoch: u64,
    live_by_group: Vec<Live>,
    max_live: Vec<Live>,
    live_total: f64,
    peak_total: f64,
    peak_index: Option<u64>,
    /// The timeline's series, if one is recorded.
    series: S,
}

impl<S: Series> State<S> {
    /// Adds (or, with a negative `sign`, removes) a block of `size` to the
    /// live figures of `stack`, its group and the process.
    #[inline]
    fn change_live(&mut self, stack: u32, size: u64, w: f64) {
        let bytes = w * size as f64;
        let s = stack as usize;
        let l = &mut self.live_by_stack[s];
        let snap = &mut self.at_peak[s];
        if snap.epoch != self.epoch {
            snap.live = *l;
            snap.epoch = self.epoch;
        }
        l.bytes += bytes;
        l.blocks += w;
        self.live_total += bytes;
        self.series.change(stack, bytes);
        let g = self.group[s];
        if g != NO_GROUP {
            let g = g as usize;
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

    /// Adds `w` blocks' lifetimes ending (`sign` 1) or starting (-1) at
    /// event `i` to `stack`.
    #[inline]
    fn lifetime(&mut self, per_stack: &mut [StackFigures], stack: u32, w: f64, i: u64, sign: i8) {
        if self.exact {
            self.lifetime[stack as usize] += sign as i128 * i as i128;
        } else {
            per_stack[stack as usize].lifetime_events += sign as f64 * w * i as f64;
        }
    }

    #[inline]
    fn alloc(&mut self, i: u64, ev: &HeapEvent, per_stack: &mut [StackFigures]) {
        let s = ev.stack as usize;
        let w = self.weight.of(ev.size);
        per_stack[s].allocations += w;
        per_stack[s].allocated_bytes += w * ev.size as f64;
        let block = Block {
            stack: ev.stack,
            size: ev.size,
        };
        if let Some(old) = self.live.insert(ev.addr, block) {
            // The free of the old block was lost: forget it (it lived
            // until now).
            let w_old = self.weight.of(old.size);
            self.change_live(old.stack, old.size, -w_old);
            self.lifetime(per_stack, old.stack, w_old, i, 1);
        }
        self.change_live(ev.stack, ev.size, w);
        self.lifetime(per_stack, ev.stack, w, i, -1);
        if self.live_total > self.peak_total {
            self.peak_total = self.live_total;
            self.peak_index = Some(i);
            self.epoch += 1;
        }
    }

    /// Returns false for a free of a block never seen allocated.
    #[inline]
    fn free(&mut self, i: u64, ev: &HeapEvent, per_stack: &mut [StackFigures]) -> bool {
        let s = ev.stack as usize;
        let w = self.weight.of(ev.size);
        per_stack[s].frees += w;
        per_stack[s].freed_bytes += w * ev.size as f64;
        let Some(block) = self.live.remove(ev.addr) else {
            return false;
        };
        let w = self.weight.of(block.size);
        self.change_live(block.stack, block.size, -w);
        self.lifetime(per_stack, block.stack, w, i, 1);
        true
    }

    /// Makes sure `stack` has a slot (a damaged or truncated profile may
    /// refer to a stack whose chunk was never written).
    #[inline]
    fn stack_slot(&mut self, per_stack: &mut Vec<StackFigures>, stack: u32) {
        let s = stack as usize;
        if s >= per_stack.len() {
            per_stack.resize(s + 1, StackFigures::default());
        }
        if s >= self.live_by_stack.len() {
            self.live_by_stack.resize(s + 1, Live::default());
            self.at_peak.resize(s + 1, Snapshot::default());
            self.lifetime.resize(s + 1, 0);
            self.group.resize(s + 1, NO_GROUP);
        }
    }
}

/// An aggregate profile's figures, which the shim kept per stack: the
/// same per-stack figures a replay of the events gives, except DHAT's
/// lifetimes (no event clock is kept) and the maximum live bytes of a
/// group of stacks, which is taken as the largest of its stacks' maxima
/// (a lower bound when a logical stack has several raw ones).
fn from_aggregate(profile: &Profile, agg: &Aggregate, group_of: &[u32]) -> Replay {
    let nstacks = profile.stacks.len();
    let period_ns = if profile.meta.cpu_hz > 0 {
        1e9 / profile.meta.cpu_hz as f64
    } else {
        0.0
    };
    let mut per_stack = vec![StackFigures::default(); nstacks];
    let group = |s: usize| {
        if group_of.is_empty() {
            s
        } else {
            group_of.get(s).map_or(usize::MAX, |&g| g as usize)
        }
    };
    let ngroups = if group_of.is_empty() {
        nstacks
    } else {
        group_of.iter().max().map_or(0, |&g| g as usize + 1)
    };
    let mut max_live = vec![MaxLive::default(); ngroups];
    let mut events = 0u64;
    for s in &agg.stacks {
        let i = s.stack as usize;
        let f = &mut per_stack[i];
        f.allocations += s.allocations as f64;
        f.allocated_bytes += s.allocated_bytes as f64;
        f.frees += s.frees as f64;
        f.freed_bytes += s.freed_bytes as f64;
        f.end_bytes += s.live_bytes.max(0) as f64;
        f.end_blocks += s.live_blocks.max(0) as f64;
        f.peak_bytes += s.peak_bytes.max(0) as f64;
        f.peak_blocks += s.peak_blocks.max(0) as f64;
        f.cpu_samples += s.cpu_samples as f64;
        f.cpu_time_ns += s.cpu_samples as f64 * period_ns;
        events += s.allocations + s.frees;
        if let Some(m) = max_live.get_mut(group(i)) {
            if s.max_live_bytes as f64 > m.bytes {
                m.bytes = s.max_live_bytes as f64;
            }
        }
    }
    let mut totals = StackFigures::default();
    for fig in &per_stack {
        totals.add(fig);
    }
    let summary = agg.summary.clone().unwrap_or_default();
    totals.peak_bytes = summary.peak_bytes as f64;
    totals.end_bytes = summary.live_bytes as f64;
    Replay {
        per_stack,
        totals,
        profiler_cpu_samples: summary.profiler_cpu_samples,
        profiler_cpu_time_ns: summary.profiler_cpu_periods as f64 * period_ns,
        unknown_frees: summary.unknown_frees,
        estimated: false,
        max_live,
        events,
        peak_event: None,
    }
}

/// Adds the program's CPU samples to their stacks: each sample counts once
/// in `cpu_samples` and for the timer periods it stands for (`count`) in
/// `cpu_time_ns`. Returns lineprof's own samples and time, kept apart.
fn add_cpu(profile: &Profile, per_stack: &mut Vec<StackFigures>) -> (u64, f64) {
    let period_ns = if profile.meta.cpu_hz > 0 {
        1e9 / profile.meta.cpu_hz as f64
    } else {
        0.0
    };
    let (mut own_samples, mut own_ns) = (0, 0.0);
    for s in &profile.cpu_samples {
        if s.in_lineprof {
            own_samples += 1;
            own_ns += s.count as f64 * period_ns;
            continue;
        }
        let i = s.stack as usize;
        if i >= per_stack.len() {
            per_stack.resize(i + 1, StackFigures::default());
        }
        per_stack[i].cpu_samples += 1.0;
        per_stack[i].cpu_time_ns += s.count as f64 * period_ns;
    }
    (own_samples, own_ns)
}

/// Live heap over the run, at most `MAX_POINTS` points: the events are cut
/// into equal buckets and each bucket gives its moment of most live bytes
/// (so the global peak is a point, exactly) and its last moment (so a drop
/// shows), with the bytes of each of a few chosen lines live then.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Heap events in the run: the x axis when there are no time marks.
    pub events: u64,
    /// The chosen lines, as `by_line` of every point is ordered; bytes
    /// live but not allocated by them are the rest of `live_bytes`.
    pub lines: Vec<TimelineLine>,
    pub points: Vec<TimelinePoint>,
}

/// A line whose share of the live heap the timeline draws.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineLine {
    pub file: String,
    pub line: u32,
    pub function: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Heap events replayed up to this moment (1 = after the first).
    pub event: u64,
    /// Nanoseconds since the profile's first clock mark, interpolated
    /// between marks; absent when the profile has fewer than two marks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ns: Option<u64>,
    pub live_bytes: u64,
    /// Live bytes allocated by each of `Timeline::lines`.
    pub by_line: Vec<u64>,
}

/// Most points a timeline has.
pub const MAX_POINTS: usize = 1000;

/// The timeline of a profile. `category_of[stack]` is the index in `lines`
/// of the line a raw stack's bytes are drawn under (`u32::MAX` or missing:
/// the rest). A streamed profile is replayed for it (the report takes it
/// from its one replay instead, `replay_with_series`); an aggregate
/// profile has the shim's own series.
#[cfg(test)]
pub fn timeline(
    profile: &Profile,
    lines: Vec<TimelineLine>,
    category_of: &[u32],
) -> Result<Timeline> {
    if profile.aggregate.is_some() {
        return Ok(aggregate_timeline(profile));
    }
    let ncat = lines.len();
    let key_of: Vec<u32> = category_of
        .iter()
        .map(|&c| if (c as usize) < ncat { c } else { NO_KEY })
        .collect();
    let (_, series) = replay_with_series(profile, &[], &key_of, ncat)?;
    let keys: Vec<Option<u32>> = (0..ncat as u32).map(Some).collect();
    Ok(series.map_or_else(Timeline::default, |s| s.timeline(lines, &keys)))
}

/// An aggregate profile's timeline: the shim's series (the largest live
/// bytes per time bucket), without lines.
pub fn aggregate_timeline(profile: &Profile) -> Timeline {
    let Some(summary) = profile.aggregate.as_ref().and_then(|a| a.summary.as_ref()) else {
        return Timeline::default();
    };
    let points = summary
        .series
        .iter()
        .enumerate()
        .map(|(i, &live)| TimelinePoint {
            event: i as u64 + 1,
            time_ns: Some(i as u64 * summary.bucket_ns),
            live_bytes: live,
            by_line: Vec::new(),
        })
        .collect();
    Timeline {
        events: profile.heap_event_count,
        lines: Vec::new(),
        points,
    }
}

/// No key: a stack whose bytes the timeline draws as the rest.
pub const NO_KEY: u32 = u32::MAX;

/// What a replay tells the timeline: each change of live bytes, and the
/// end of each event.
trait Series {
    fn change(&mut self, stack: u32, bytes: f64);
    fn after_event(&mut self, i: u64, live: f64);
}

/// The views without a timeline record nothing.
struct NoSeries;

impl Series for NoSeries {
    #[inline(always)]
    fn change(&mut self, _: u32, _: f64) {}
    #[inline(always)]
    fn after_event(&mut self, _: u64, _: f64) {}
}

/// The live heap at the timeline's points, per key (source line), recorded
/// during the replay: bounded by the points and the keys, not the events.
///
/// The events are cut into `MAX_POINTS / 2` equal buckets; each bucket
/// gives its moment of most live bytes (so the global peak is a point,
/// exactly) and its last moment (so a drop shows). A key's bytes at the
/// bucket's best moment are kept lazily, as the replay keeps each stack's
/// bytes at the peak: a new best moment bumps `epoch`, and a key's first
/// change after a bump first saves its value. At the end of a bucket only
/// the keys changed in it (`dirty`) are looked at, and a point stores only
/// the keys whose (rounded) bytes differ from the previous point's.
struct SeriesRecorder {
    key_of: Vec<u32>,
    /// Each key's live bytes now, at the bucket's best moment (valid when
    /// `snap_epoch` is `epoch`), the bucket it last changed in, and its
    /// bytes at the last point stored.
    cur: Vec<f64>,
    snap: Vec<f64>,
    snap_epoch: Vec<u64>,
    touched: Vec<u64>,
    stored: Vec<u64>,
    dirty: Vec<u32>,
    epoch: u64,
    bucket_no: u64,
    /// The bucket's most live bytes so far, and the event then.
    best: Option<(f64, u64)>,
    total: u64,
    bucket: u64,
    next_end: u64,
    out: LiveSeries,
}

/// The live heap over the run at the timeline's points, per key: turned
/// into a `Timeline` once the lines to draw are chosen.
#[derive(Debug, Clone, Default)]
pub struct LiveSeries {
    /// Heap events replayed.
    pub events: u64,
    points: Vec<RawPoint>,
    /// (key, bytes) of the keys whose bytes changed at each point: those of
    /// point `n` end at `points[n].changes_end`.
    changes: Vec<(u32, u64)>,
    nkeys: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct RawPoint {
    event: u64,
    live_bytes: u64,
    changes_end: usize,
}

fn round_bytes(v: f64) -> u64 {
    v.max(0.0).round() as u64
}

impl SeriesRecorder {
    fn new(key_of: &[u32], nkeys: usize, total: u64) -> SeriesRecorder {
        let bucket = total.div_ceil(MAX_POINTS as u64 / 2).max(1);
        SeriesRecorder {
            key_of: key_of
                .iter()
                .map(|&k| if (k as usize) < nkeys { k } else { NO_KEY })
                .collect(),
            cur: vec![0.0; nkeys],
            snap: vec![0.0; nkeys],
            snap_epoch: vec![0; nkeys],
            touched: vec![0; nkeys],
            stored: vec![0; nkeys],
            dirty: Vec::new(),
            epoch: 1,
            bucket_no: 1,
            best: None,
            total,
            bucket,
            next_end: bucket,
            out: LiveSeries {
                nkeys,
                ..LiveSeries::default()
            },
        }
    }

    /// Stores a point at event index `at` with `live` bytes, each changed
    /// key's bytes given by `value`.
    fn store(&mut self, at: u64, live: f64, value: impl Fn(&SeriesRecorder, usize) -> f64) {
        for n in 0..self.dirty.len() {
            let k = self.dirty[n] as usize;
            let v = round_bytes(value(self, k));
            if v != self.stored[k] {
                self.stored[k] = v;
                self.out.changes.push((k as u32, v));
            }
        }
        self.out.points.push(RawPoint {
            event: at + 1,
            live_bytes: round_bytes(live),
            changes_end: self.out.changes.len(),
        });
    }

    /// Stores the bucket's best moment (its key bytes saved, or unchanged
    /// since) and, when later, the moment after event `i`.
    fn end_bucket(&mut self, i: u64, live: f64) {
        if let Some((bytes, at)) = self.best.take() {
            self.store_best(at, bytes);
            if at != i {
                self.store(i, live, |r, k| r.cur[k]);
            }
        }
        self.dirty.clear();
        self.bucket_no += 1;
    }

    /// Stores a bucket's best moment: each key's bytes saved at that
    /// moment, or its current bytes when unchanged since.
    fn store_best(&mut self, at: u64, bytes: f64) {
        self.store(at, bytes, |r, k| {
            if r.snap_epoch[k] == r.epoch {
                r.snap[k]
            } else {
                r.cur[k]
            }
        });
    }

    fn finish(mut self) -> LiveSeries {
        // A profile whose event count was short of what it held: the last
        // bucket's best moment.
        if let Some((bytes, at)) = self.best.take() {
            self.store_best(at, bytes);
        }
        self.out
    }
}

impl Series for SeriesRecorder {
    #[inline]
    fn change(&mut self, stack: u32, bytes: f64) {
        let Some(&k) = self.key_of.get(stack as usize) else {
            return;
        };
        if k == NO_KEY {
            return;
        }
        let k = k as usize;
        if self.touched[k] != self.bucket_no {
            self.touched[k] = self.bucket_no;
            self.dirty.push(k as u32);
        }
        if self.snap_epoch[k] != self.epoch {
            self.snap_epoch[k] = self.epoch;
            self.snap[k] = self.cur[k];
        }
        self.cur[k] += bytes;
    }

    #[inline]
    fn after_event(&mut self, i: u64, live: f64) {
        if self.best.is_none_or(|b| live > b.0) {
            self.best = Some((live, i));
            self.epoch += 1;
        }
        self.out.events = i + 1;
        if i + 1 == self.next_end {
            self.next_end += self.bucket;
            self.end_bucket(i, live);
        } else if i + 1 == self.total {
            self.end_bucket(i, live);
        }
    }
}

impl LiveSeries {
    /// The timeline drawing `lines`, whose bytes are those of `keys` (one
    /// per line; `None`: a line no stack counts under).
    pub fn timeline(&self, lines: Vec<TimelineLine>, keys: &[Option<u32>]) -> Timeline {
        let mut bytes = vec![0u64; self.nkeys];
        let mut from = 0;
        let points = self
            .points
            .iter()
            .map(|p| {
                for &(k, v) in &self.changes[from..p.changes_end] {
                    bytes[k as usize] = v;
                }
                from = p.changes_end;
                TimelinePoint {
                    event: p.event,
                    time_ns: None,
                    live_bytes: p.live_bytes,
                    by_line: keys
                        .iter()
                        .map(|k| k.and_then(|k| bytes.get(k as usize).copied()).unwrap_or(0))
                        .collect(),
                }
            })
            .collect();
        Timeline {
            events: self.events,
            lines,
            points,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::profile::testing::{Ev, ProfileBytes};
    use crate::analyze::profile::{parse_profile, HeapEvent, Profile};
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
                Ev::Cpu(1, 3),             // 1 sample for 3 periods at 1000 Hz = 3 ms
                Ev::CpuLineprof(2, 2),     // lineprof's own: 2 ms on no stack
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
        assert_eq!((s1.cpu_samples, s1.cpu_time_ns), (1.0, 3_000_000.0));
        assert_eq!(r.per_stack[2].cpu_time_ns, 0.0);
        assert_eq!(r.totals.cpu_time_ns, 3_000_000.0);
        assert_eq!(
            (r.profiler_cpu_samples, r.profiler_cpu_time_ns),
            (1, 2_000_000.0)
        );
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
        )
        .unwrap();
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

    /// A block whose free was lost (its address handed out again) stops
    /// counting as live there, and its lifetime ends there.
    #[test]
    fn a_block_whose_free_was_lost_ends_when_its_address_is_reused() {
        let mut p = ProfileBytes::new(0, 0);
        p.stacks(0, &[&[1], &[2]]);
        p.events(
            1,
            0,
            &[
                Ev::Alloc(0, 0, 100, 0xa), // its free is lost
                Ev::Alloc(1, 1, 10, 0xb),  // lives to the end
                Ev::Alloc(2, 1, 30, 0xa),  // 0xa again: the first block ends
                Ev::Free(3, 1, 30, 0xa),
            ],
        );
        p.end(4);
        let r = run(&p);
        assert_eq!(r.per_stack[0].end_bytes, 0.0);
        assert_eq!(r.per_stack[0].lifetime_events, 2.0);
        // 0xb from event 1 to the end (4), the second 0xa from 2 to 3.
        assert_eq!(r.per_stack[1].lifetime_events, 3.0 + 1.0);
        assert_eq!((r.totals.peak_bytes, r.totals.end_bytes), (110.0, 10.0));
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

    #[test]
    fn timeline_keeps_the_peak_and_the_lines_share() {
        let mut p = ProfileBytes::new(0, 1000);
        p.stacks(0, &[&[1], &[2], &[3]]);
        p.events(
            1,
            0,
            &[
                Ev::Alloc(0, 0, 100, 0xa), // line 0: 100 live
                Ev::Alloc(1, 1, 50, 0xb),  // the rest: 150 live
                Ev::Free(2, 2, 100, 0xa),  // 50 live
                Ev::Alloc(3, 0, 200, 0xc), // the peak: 250, 200 of line 0
                Ev::Free(4, 2, 200, 0xc),  // 50
            ],
        );
        p.end(5);
        let prof = parse_profile(&p.bytes, Path::new("t.lprof")).unwrap();
        let r = replay(&prof);
        let line = TimelineLine {
            file: "src/main.rs".into(),
            line: 3,
            function: "app::f".into(),
        };
        let t = timeline(&prof, vec![line], &[0]).unwrap();
        assert_eq!(t.events, 5);
        let got: Vec<(u64, u64, Vec<u64>)> = t
            .points
            .iter()
            .map(|p| (p.event, p.live_bytes, p.by_line.clone()))
            .collect();
        // One point per event (5 events, far below MAX_POINTS).
        assert_eq!(
            got,
            [
                (1, 100, vec![100]),
                (2, 150, vec![100]),
                (3, 50, vec![0]),
                (4, 250, vec![200]),
                (5, 50, vec![0])
            ]
        );
        assert_eq!(r.peak_event, Some(3));
        // Many events: at most MAX_POINTS points, and the peak survives.
        let mut prof = crate::analyze::profile::Profile {
            stacks: vec![vec![1]],
            ..Default::default()
        };
        for i in 0..5000u64 {
            let kind = if i % 2 == 0 {
                HeapEventKind::Alloc
            } else {
                HeapEventKind::Free
            };
            let size = if i == 3000 { 9999 } else { 8 };
            let size = if i == 3001 { 9999 } else { size };
            prof.heap_events.push(HeapEvent {
                addr: 0x10 + (i / 2) * 16,
                size,
                stack: 0,
                kind,
            });
        }
        let r = replay(&prof);
        let t = timeline(&prof, vec![], &[]).unwrap();
        assert!(t.points.len() <= MAX_POINTS, "{}", t.points.len());
        let top = t.points.iter().map(|p| p.live_bytes).max();
        assert_eq!(top, Some(9999));
        assert_eq!(r.totals.peak_bytes, 9999.0);
    }

    /// A pseudo-random event stream (fixed seed): allocations and frees
    /// over a few hundred addresses, frees of unknown blocks, addresses
    /// reused without a free, many stacks.
    fn random_profile(seed: u64, n: usize, nstacks: u32, sample_bytes: u64) -> Profile {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut prof = Profile {
            stacks: vec![vec![1]; nstacks as usize],
            ..Default::default()
        };
        prof.meta.sample_bytes = sample_bytes;
        let mut live: Vec<(u64, u64, u32)> = Vec::new();
        for _ in 0..n {
            let r = next();
            let free = !live.is_empty() && r % 3 == 0;
            let ev = if free {
                let (addr, size, _) = live.swap_remove((r >> 8) as usize % live.len());
                HeapEvent {
                    addr,
                    size,
                    stack: (r >> 40) as u32 % nstacks,
                    kind: HeapEventKind::Free,
                }
            } else if r % 97 == 1 {
                // A free of a block never seen.
                HeapEvent {
                    addr: 0xdead_0000 + (r >> 20) % 1000,
                    size: 8,
                    stack: 0,
                    kind: HeapEventKind::Free,
                }
            } else {
                // Some addresses come back while live: a lost free.
                let addr = 0x1000 + ((r >> 8) % 400) * 16;
                live.retain(|b| b.0 != addr);
                let size = 1 + (r >> 30) % 5000;
                let stack = (r >> 44) as u32 % (nstacks + 2); // some unknown
                live.push((addr, size, stack));
                HeapEvent {
                    addr,
                    size,
                    stack,
                    kind: HeapEventKind::Alloc,
                }
            };
            prof.heap_events.push(ev);
        }
        prof
    }

    /// The one-pass series gives the two-pass timeline's points exactly,
    /// for any choice of lines, on streams shorter and much longer than
    /// `MAX_POINTS`, exact and sampled, and its peak is the replay's.
    #[test]
    fn one_pass_series_equals_the_two_pass_timeline() {
        for (seed, n, sample) in [(1, 37, 0), (2, 900, 0), (3, 20_000, 0), (4, 20_011, 4096)] {
            let nstacks = 40;
            let prof = random_profile(seed, n, nstacks, sample);
            // Stacks grouped 3 to a line key; lines drawn: a few keys, one
            // that no stack counts under.
            let key_of: Vec<u32> = (0..nstacks).map(|s| s / 3).collect();
            let nkeys = 14;
            let (r, series) = replay_with_series(&prof, &[], &key_of, nkeys).unwrap();
            let series = series.unwrap();
            assert_eq!(r.per_stack, replay(&prof).per_stack);
            for drawn in [vec![], vec![0u32], vec![5, 2, 13, 7, 1], vec![3, 99]] {
                let lines: Vec<TimelineLine> = drawn
                    .iter()
                    .map(|k| TimelineLine {
                        file: format!("src/k{k}.rs"),
                        line: *k,
                        function: "f".into(),
                    })
                    .collect();
                let category_of: Vec<u32> = key_of
                    .iter()
                    .map(|k| {
                        drawn
                            .iter()
                            .position(|d| d == k)
                            .map_or(u32::MAX, |i| i as u32)
                    })
                    .collect();
                let want = two_pass_timeline(&prof, lines.clone(), &category_of).unwrap();
                let keys: Vec<Option<u32>> = drawn
                    .iter()
                    .map(|&k| ((k as usize) < nkeys).then_some(k))
                    .collect();
                let got = series.timeline(lines.clone(), &keys);
                assert_eq!(got, want, "seed {seed}, lines {drawn:?}");
                assert_eq!(timeline(&prof, lines, &category_of).unwrap(), want);
                assert!(got.points.len() <= MAX_POINTS);
                let top = got.points.iter().map(|p| p.live_bytes).max().unwrap();
                assert_eq!(top, r.totals.peak_bytes.round() as u64);
                let at = got.points.iter().find(|p| p.live_bytes == top).unwrap();
                assert_eq!(Some(at.event - 1), r.peak_event);
            }
        }
    }

    /// The timeline as it was made before it came from the report's one
    /// replay: a second replay of the events with its own table of live
    /// blocks holding each block's line. The reference the one-pass series
    /// must equal.
    fn two_pass_timeline(
        profile: &Profile,
        lines: Vec<TimelineLine>,
        category_of: &[u32],
    ) -> Result<Timeline> {
        let weight = Weight::new(profile.meta.sample_bytes);
        let ncat = lines.len();
        let total = profile
            .heap_event_count
            .max(profile.heap_events.len() as u64);
        let bucket = total.div_ceil(MAX_POINTS as u64 / 2).max(1);
        let mut live_blocks = LiveBlocks::default();
        let bytes_of = |b: Block| weight.of(b.size) * b.size as f64;
        let mut live = 0.0f64;
        let mut by_cat = vec![0.0f64; ncat];
        // The bucket's moment of most live bytes so far, and the lines' bytes
        // then (a buffer reused: this runs once per event).
        let mut best: Option<(f64, u64)> = None;
        let mut best_cats = vec![0.0f64; ncat];
        let mut points = Vec::new();
        let r = |v: f64| v.max(0.0).round() as u64;
        let point = |at: u64, bytes: f64, cats: &[f64]| TimelinePoint {
            event: at + 1,
            time_ns: None,
            live_bytes: r(bytes),
            by_line: cats.iter().map(|&c| r(c)).collect(),
        };
        let mut i = 0u64;
        profile.for_each_heap_event(|ev| {
            let cat = category_of
                .get(ev.stack as usize)
                .copied()
                .filter(|&c| (c as usize) < ncat)
                .unwrap_or(u32::MAX);
            let change = match ev.kind {
                HeapEventKind::Alloc => {
                    let block = Block {
                        stack: cat,
                        size: ev.size,
                    };
                    // A block at an address still live lost its free: forget it.
                    let old = live_blocks.insert(ev.addr, block);
                    Some((cat, bytes_of(block), old))
                }
                HeapEventKind::Free => live_blocks
                    .remove(ev.addr)
                    .map(|b| (b.stack, -bytes_of(b), None)),
            };
            if let Some((cat, delta, old)) = change {
                let old = old.map(|b| (b.stack, -bytes_of(b)));
                for (c, d) in old.into_iter().chain([(cat, delta)]) {
                    live += d;
                    if let Some(x) = by_cat.get_mut(c as usize) {
                        *x += d;
                    }
                }
            }
            if best.is_none_or(|b| live > b.0) {
                best = Some((live, i));
                best_cats.copy_from_slice(&by_cat);
            }
            if (i + 1).is_multiple_of(bucket) || i + 1 == total {
                if let Some((bytes, at)) = best.take() {
                    points.push(point(at, bytes, &best_cats));
                    if at != i {
                        points.push(point(i, live, &by_cat));
                    }
                }
            }
            i += 1;
        })?;
        // A profile whose event count was short of what it held.
        if let Some((bytes, at)) = best.take() {
            points.push(point(at, bytes, &best_cats));
        }
        Ok(Timeline {
            events: i,
            lines,
            points,
        })
    }
}
