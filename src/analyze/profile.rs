//! Reads a `.lprof` file into plain data: metadata, modules, interned stacks,
//! CPU samples, and the heap events of all threads merged into one global
//! order.
//!
//! The heap events are not held decoded: a big profile has hundreds of
//! millions. `Profile::for_each_heap_event` streams them, decoding each
//! thread's chunks one at a time and merging the threads by sequence
//! number (a k-way merge: each thread's events are in increasing order), so
//! memory is bounded by one chunk per thread. The order is the sequence
//! order with the holes (numbers handed out but never written, as when a
//! crashed process lost its buffers) skipped; `missing_events` counts
//! those holes. A file cut short is not an error: its complete chunks are
//! used and a warning says so.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lineprof::format::{self, ChunkKind, Event, FormatError};

use crate::error::{Error, Result};

pub use lineprof::format::{End, HeapStack, HeapSummary, Meta, Module};

/// A heap event in global order. `kind` tells alloc from free; the sequence
/// number is implied by the position in `Profile::heap_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapEvent {
    pub addr: u64,
    pub size: u64,
    pub stack: u32,
    pub kind: HeapEventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapEventKind {
    Alloc,
    Free,
    /// A sequence number no event was read for (only while ordering).
    Hole,
}

/// One CPU sample: its stack and how many timer periods it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    pub stack: u32,
    pub count: u32,
    /// Taken while lineprof was recording: lineprof's cost, not the program's.
    pub in_lineprof: bool,
    /// Index into `Profile::stack_copies` for a sample taken in code without
    /// frame pointers.
    pub copy: Option<u32>,
}

/// Everything a profile file holds, decoded.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub path: PathBuf,
    pub meta: Meta,
    /// Union of all `Modules` chunks; a module seen twice has its ranges merged.
    pub modules: Vec<Module>,
    /// Return addresses, innermost first, indexed by stack id.
    pub stacks: Vec<Vec<u64>>,
    /// Heap events given decoded (tests, hand-made profiles); a profile read
    /// from a file streams them from `events` instead.
    pub heap_events: Vec<HeapEvent>,
    /// Where a read profile's heap events are, per thread.
    pub events: EventChunks,
    /// Heap events in the profile (decoded or streamed).
    pub heap_event_count: u64,
    pub cpu_samples: Vec<CpuSample>,
    /// Stack copies of the samples that have one (`CpuSample::copy`).
    pub stack_copies: Vec<format::StackCopy>,
    /// The `End` chunk, present when the program exited cleanly.
    pub end: Option<End>,
    /// Byte offset where an incomplete final chunk starts, if any.
    pub truncated_at: Option<u64>,
    /// Sequence numbers with no event (lost when the process died).
    pub missing_events: u64,
    /// An aggregate profile (`LINEPROF_MODE=aggregate`): per-stack heap
    /// figures instead of `heap_events`.
    pub aggregate: Option<Aggregate>,
    /// `#[lineprof::profile]` functions, summed over threads.
    pub timed: Vec<TimedFunction>,
    /// Calls of marked functions the program could not count.
    pub untimed_calls: u64,
}

/// The heap figures of an aggregate profile's snapshot.
#[derive(Debug, Clone, Default)]
pub struct Aggregate {
    pub stacks: Vec<HeapStack>,
    /// Absent when the file ends before its summary (not written by
    /// lineprof: a snapshot is renamed into place only when complete).
    pub summary: Option<HeapSummary>,
}

/// A `#[lineprof::profile]` function's figures over all threads, in ns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimedFunction {
    /// `crate::module::Type::function`.
    pub path: String,
    /// `file!()`: relative to the workspace root for a workspace member.
    pub file: String,
    pub line: u32,
    pub calls: u64,
    pub time_ns: u64,
    /// Line, hits, time in ns; in line order.
    pub lines: Vec<(u32, u64, u64)>,
}

impl Profile {
    /// Problems the reader should know about before trusting the figures.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(at) = self.truncated_at {
            out.push(format!(
                "profile ends mid-chunk at byte {at} (the program was killed?); showing what was written"
            ));
        } else if self.end.is_none() && self.aggregate.is_some() {
            out.push(
                "aggregate profile without an end record (the program crashed or was killed?); showing its last snapshot, written at most half a second before"
                    .to_string(),
            );
        } else if self.end.is_none() {
            out.push(
                "profile has no end record (the program crashed, was killed, or exec'd a new program, whose profile is this path with .<pid> appended: up to one flush interval, 0.5 s, of events before that point is missing); showing what was written"
                    .to_string(),
            );
        }
        if self.missing_events > 0 {
            out.push(format!(
                "{} heap events were lost before they were written; figures are lower bounds",
                self.missing_events
            ));
        }
        if let Some(agg) = &self.aggregate {
            match &agg.summary {
                None => out.push(
                    "aggregate profile without its summary chunk; peak and live figures are missing"
                        .to_string(),
                ),
                Some(s) if s.threads > 1 => out.push(format!(
                    "aggregate mode with {} threads: the peak total is exact, its split over lines may differ from a stream run by the allocations in flight on other threads at that instant",
                    s.threads
                )),
                Some(_) => {}
            }
        }
        if self.untimed_calls > 0 {
            out.push(format!(
                "{} calls of #[lineprof::profile] functions could not be timed (more than 4096 threads or marked functions, or out of memory); hits and times are lower bounds",
                self.untimed_calls
            ));
        }
        if let Some(end) = &self.end {
            if end.dropped > 0 {
                out.push(format!(
                    "the program could not record {} events (out of buffer space); figures are lower bounds",
                    end.dropped
                ));
            }
            if end.truncated_stacks > 0 {
                let d = self.meta.max_depth;
                let fix = if d as usize >= lineprof::format::MAX_DEPTH {
                    "LINEPROF_DEPTH is at its maximum, so `total` figures of the deepest calls are low".to_string()
                } else {
                    format!(
                        "raise LINEPROF_DEPTH (up to {}) for complete `total` figures",
                        lineprof::format::MAX_DEPTH
                    )
                };
                out.push(format!(
                    "{} heap events had their stack cut at the maximum depth of {d} frames; {fix}",
                    end.truncated_stacks
                ));
            }
            if end.write_error != 0 {
                out.push(format!(
                    "writing the profile stopped early: {}; {} chunks ({} bytes) of events were not written, figures cover the run up to then",
                    write_error_text(end.write_error),
                    end.lost_chunks,
                    end.lost_bytes
                ));
            }
            if end.reentrant_dropped > 0 {
                out.push(format!(
                    "{} heap events of the program's own signal handlers landed while lineprof was busy on the same thread and were not recorded; figures are lower bounds",
                    end.reentrant_dropped
                ));
            }
        }
        out
    }

    /// What the reader should know that does not make figures short.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(end) = &self.end {
            if end.fds_in_host_range > 0 {
                out.push(format!(
                    "lineprof held {} perf-event descriptors in the top 256 numbers below the soft RLIMIT_NOFILE (the hard limit leaves no room above it); a program that opens nearly that many files gets that many fewer: raise the hard limit (ulimit -Hn), or set LINEPROF_CPU=timer (coarser: the kernel's tick)",
                    end.fds_in_host_range
                ));
            }
        }
        out
    }

    /// The path of the profiled executable as recorded.
    pub fn executable(&self) -> PathBuf {
        PathBuf::from(String::from_utf8_lossy(&self.meta.executable).into_owned())
    }
}

/// The file's bytes and, per thread, the payload ranges of its `Events`
/// chunks in file order (which is the thread's own order).
#[derive(Clone, Default)]
pub struct EventChunks {
    data: Arc<Vec<u8>>,
    threads: Vec<Vec<Range<usize>>>,
}

impl std::fmt::Debug for EventChunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let chunks: usize = self.threads.iter().map(Vec::len).sum();
        write!(
            f,
            "EventChunks({} threads, {chunks} chunks)",
            self.threads.len()
        )
    }
}

impl Profile {
    /// Calls `f` with every heap event in the global order.
    pub fn for_each_heap_event(&self, mut f: impl FnMut(&HeapEvent)) {
        if !self.heap_events.is_empty() {
            self.heap_events.iter().for_each(f);
            return;
        }
        merge_threads(&self.events, &mut f);
    }

    /// Every heap event in order, decoded (tests and small profiles).
    pub fn collect_heap_events(&self) -> Vec<HeapEvent> {
        let mut out = Vec::new();
        self.for_each_heap_event(|e| out.push(*e));
        out
    }
}

/// One thread's events, decoded a chunk at a time.
struct Cursor<'a> {
    chunks: std::slice::Iter<'a, Range<usize>>,
    data: &'a [u8],
    /// The current chunk's heap events, (sequence number, event).
    buf: Vec<(u64, HeapEvent)>,
    at: usize,
}

impl Cursor<'_> {
    /// The next event's sequence number, decoding the next chunk if needed.
    fn peek(&mut self) -> Option<u64> {
        while self.at >= self.buf.len() {
            let range = self.chunks.next()?;
            self.buf.clear();
            self.at = 0;
            let buf = &mut self.buf;
            // Checked when the profile was read: cannot fail here.
            let _ = format::decode_events(&self.data[range.clone()], |ev| match ev {
                Event::Alloc {
                    seq,
                    stack,
                    size,
                    addr,
                } => buf.push((seq, heap_event(addr, size, stack, HeapEventKind::Alloc))),
                Event::Free {
                    seq,
                    stack,
                    size,
                    addr,
                } => buf.push((seq, heap_event(addr, size, stack, HeapEventKind::Free))),
                _ => {}
            });
        }
        Some(self.buf[self.at].0)
    }
}

fn heap_event(addr: u64, size: u64, stack: u32, kind: HeapEventKind) -> HeapEvent {
    HeapEvent {
        addr,
        size,
        stack,
        kind,
    }
}

/// The k-way merge: the thread whose next event has the smallest (sequence
/// number, thread) goes next, and keeps going while it stays below the
/// runner-up. Ties between threads (equal clock readings) go to the lower
/// thread index.
fn merge_threads(events: &EventChunks, f: &mut impl FnMut(&HeapEvent)) {
    let mut cursors: Vec<Cursor<'_>> = events
        .threads
        .iter()
        .map(|chunks| Cursor {
            chunks: chunks.iter(),
            data: &events.data,
            buf: Vec::new(),
            at: 0,
        })
        .collect();
    let mut heap = BinaryHeap::new();
    for (i, c) in cursors.iter_mut().enumerate() {
        if let Some(seq) = c.peek() {
            heap.push(Reverse((seq, i)));
        }
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        let next = heap.peek().map(|r| r.0);
        let c = &mut cursors[i];
        while let Some(seq) = c.peek() {
            if next.is_some_and(|n| (seq, i) > n) {
                heap.push(Reverse((seq, i)));
                break;
            }
            f(&c.buf[c.at].1);
            c.at += 1;
        }
    }
}

/// Why the writer stopped, from the errno it recorded.
fn write_error_text(errno: u32) -> String {
    match errno as i32 {
        28 => "disk full (ENOSPC)".to_string(),
        122 => "disk quota exceeded (EDQUOT)".to_string(),
        27 => "file size limit reached (ulimit -f)".to_string(),
        24 | 23 => "no file descriptor free (ulimit -n)".to_string(),
        5 => "I/O error (EIO)".to_string(),
        e => format!("write error (errno {e})"),
    }
}

/// Reads a whole file that must be a regular one: a path recorded in a
/// profile may name a device (`/dev/zero`, `/dev/urandom`) or a pipe, whose
/// reading never ends.
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a device, pipe or directory); give the path of the program's executable file",
        ));
    }
    std::fs::read(path)
}

/// Reads and decodes the profile at `path`.
pub fn read_profile(path: &Path) -> Result<Profile> {
    let data = read_regular(path).map_err(|e| Error::io(path, "read the profile", e))?;
    parse_profile_owned(data, path)
}

/// Decodes a profile held in memory; `path` is only used in messages.
pub fn parse_profile(data: &[u8], path: &Path) -> Result<Profile> {
    parse_profile_owned(data.to_vec(), path)
}

/// As `parse_profile`, keeping `data` for streaming the events.
pub fn parse_profile_owned(data: Vec<u8>, path: &Path) -> Result<Profile> {
    let data = Arc::new(data);
    let chunks = format::split_chunks(&data).map_err(|e| format_error(e, path))?;
    let mut profile = Profile {
        path: path.to_path_buf(),
        ..Profile::default()
    };
    if chunks.truncated_tail > 0 {
        profile.truncated_at = Some(data.len() as u64 - chunks.truncated_tail);
    }
    // Sequence numbers index `ordered` directly, so its size must stay sane
    // even if a damaged chunk claims a huge number.
    let seq_limit = (data.len() as u64).saturating_mul(4) + (1 << 20);
    let mut count = EventCount::default();
    let mut threads: BTreeMap<u32, Vec<Range<usize>>> = BTreeMap::new();
    let base = data.as_ptr() as usize;
    let mut saw_meta = false;
    let mut timers = TimerSnapshots::default();
    for chunk in &chunks.chunks {
        let corrupt = |what: &str| Error::Corrupt {
            path: path.to_path_buf(),
            detail: format!("corrupt chunk at byte {}: {what}", chunk.offset),
        };
        match chunk.kind {
            ChunkKind::Meta => {
                profile.meta = format::decode_meta(chunk.payload).map_err(|m| corrupt(m.0))?;
                saw_meta = true;
            }
            ChunkKind::Modules => {
                let modules = format::decode_modules(chunk.payload).map_err(|m| corrupt(m.0))?;
                merge_modules(&mut profile.modules, modules);
            }
            ChunkKind::Stacks => {
                let (first, stacks) =
                    format::decode_stacks(chunk.payload).map_err(|m| corrupt(m.0))?;
                place_stacks(&mut profile.stacks, first, stacks);
            }
            ChunkKind::Events => {
                let mut bad_seq = false;
                let thread = chunk
                    .payload
                    .get(..4)
                    .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
                format::decode_events(chunk.payload, |ev| match ev {
                    Event::Alloc { seq, .. } | Event::Free { seq, .. }
                        if seq & CLOCK_MARK == 0 && seq >= seq_limit =>
                    {
                        bad_seq = true
                    }
                    Event::Alloc { seq, .. } | Event::Free { seq, .. } => count.put(seq),
                    Event::Cpu { stack, count, .. } => profile.cpu_samples.push(CpuSample {
                        stack,
                        count,
                        in_lineprof: false,
                        copy: None,
                    }),
                    Event::CpuLineprof { stack, count, .. } => {
                        profile.cpu_samples.push(CpuSample {
                            stack,
                            count,
                            in_lineprof: true,
                            copy: None,
                        })
                    }
                    Event::CpuStackCopy {
                        stack, count, copy, ..
                    } => {
                        profile.cpu_samples.push(CpuSample {
                            stack,
                            count,
                            in_lineprof: false,
                            copy: Some(profile.stack_copies.len() as u32),
                        });
                        profile.stack_copies.push(copy);
                    }
                    Event::Time { .. } => {}
                })
                .map_err(|m| corrupt(m.0))?;
                if bad_seq {
                    return Err(corrupt("event sequence number out of range"));
                }
                let start = chunk.payload.as_ptr() as usize - base;
                threads
                    .entry(thread)
                    .or_default()
                    .push(start..start + chunk.payload.len());
            }
            ChunkKind::End => {
                profile.end = Some(format::decode_end(chunk.payload).map_err(|m| corrupt(m.0))?);
            }
            ChunkKind::HeapStacks => {
                let stacks = format::decode_heap_stacks(chunk.payload).map_err(|m| corrupt(m.0))?;
                let agg = profile.aggregate.get_or_insert_with(Aggregate::default);
                agg.stacks.extend(stacks);
            }
            ChunkKind::HeapSummary => {
                let summary =
                    format::decode_heap_summary(chunk.payload).map_err(|m| corrupt(m.0))?;
                profile
                    .aggregate
                    .get_or_insert_with(Aggregate::default)
                    .summary = Some(summary);
            }
            ChunkKind::Timers => {
                let (header, functions) =
                    format::decode_timers(chunk.payload).map_err(|m| corrupt(m.0))?;
                timers.add(header, functions);
            }
        }
    }
    profile.untimed_calls = timers.untimed_calls;
    profile.timed = timers.finish();
    if !saw_meta {
        return Err(Error::NotAProfile {
            path: path.to_path_buf(),
            detail: "the profile holds no metadata chunk (the program died before writing it?)"
                .to_string(),
        });
    }
    if let Some(agg) = &profile.aggregate {
        if let Some(s) = agg
            .stacks
            .iter()
            .find(|s| s.stack as usize >= profile.stacks.len())
        {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                detail: format!(
                    "aggregate figures for stack {} which the profile does not hold",
                    s.stack
                ),
            });
        }
        return Ok(profile);
    }
    let expected = profile.end.map(|e| e.events);
    profile.missing_events = count.missing(expected);
    profile.heap_event_count = count.events;
    profile.events = EventChunks {
        data: data.clone(),
        threads: threads.into_values().collect(),
    };
    Ok(profile)
}

fn format_error(e: FormatError, path: &Path) -> Error {
    let path = path.to_path_buf();
    match e {
        FormatError::Empty | FormatError::NotAProfile => Error::NotAProfile {
            path,
            detail: e.to_string(),
        },
        FormatError::NewerVersion(version) => Error::NewerVersion { path, version },
        FormatError::Corrupt { .. } => Error::Corrupt {
            path,
            detail: e.to_string(),
        },
    }
}

/// The timer snapshots of a profile: each is cumulative for its thread
/// table, so the last one of each (table, function) counts.
#[derive(Default)]
struct TimerSnapshots {
    latest: std::collections::BTreeMap<(u32, Vec<u8>, Vec<u8>, u32), format::TimedFunction>,
    /// The calibration read over the longest interval (the most precise).
    clock: (u64, u64),
    untimed_calls: u64,
}

impl TimerSnapshots {
    fn add(&mut self, h: format::TimersHeader, functions: Vec<format::TimedFunction>) {
        if h.clock_ticks > self.clock.0 {
            self.clock = (h.clock_ticks, h.clock_ns);
        }
        self.untimed_calls = self.untimed_calls.max(h.untimed_calls);
        for f in functions {
            let key = (h.table, f.path.clone(), f.file.clone(), f.line);
            self.latest.insert(key, f);
        }
    }

    /// Sums over tables, converting ticks to nanoseconds.
    fn finish(self) -> Vec<TimedFunction> {
        let (ticks, ns) = self.clock;
        let per_tick = if ticks == 0 {
            1.0
        } else {
            ns as f64 / ticks as f64
        };
        let to_ns = |t: u64| (t as f64 * per_tick).round() as u64;
        let mut out: Vec<TimedFunction> = Vec::new();
        for ((_, path, file, line), f) in self.latest {
            let path = String::from_utf8_lossy(&path).into_owned();
            let file = String::from_utf8_lossy(&file).into_owned();
            let i = match out
                .iter()
                .position(|o| o.path == path && o.file == file && o.line == line)
            {
                Some(i) => i,
                None => {
                    out.push(TimedFunction {
                        path,
                        file,
                        line,
                        ..TimedFunction::default()
                    });
                    out.len() - 1
                }
            };
            let o = &mut out[i];
            o.calls += f.calls;
            o.time_ns += to_ns(f.ticks);
            for l in f.lines {
                match o.lines.iter_mut().find(|x| x.0 == l.line) {
                    Some(x) => {
                        x.1 += l.hits;
                        x.2 += to_ns(l.ticks);
                    }
                    None => o.lines.push((l.line, l.hits, to_ns(l.ticks))),
                }
            }
        }
        for o in &mut out {
            o.lines.sort();
        }
        out
    }
}

/// Adds `new` modules to `modules`; the same file at the same bias is one
/// module (a later chunk may list it again with more segments).
fn merge_modules(modules: &mut Vec<Module>, new: Vec<Module>) {
    for m in new {
        match modules
            .iter_mut()
            .find(|k| k.path == m.path && k.bias == m.bias && k.build_id == m.build_id)
        {
            Some(known) => {
                for r in m.ranges {
                    if !known.ranges.contains(&r) {
                        known.ranges.push(r);
                    }
                }
            }
            None => modules.push(m),
        }
    }
}

fn place_stacks(all: &mut Vec<Vec<u64>>, first: u32, stacks: Vec<Vec<u64>>) {
    let first = first as usize;
    let needed = first + stacks.len();
    if all.len() < needed {
        all.resize(needed, Vec::new());
    }
    for (i, frames) in stacks.into_iter().enumerate() {
        all[first + i] = frames;
    }
}

/// Counts the heap events of a profile as they are read, to tell how many
/// were lost. Order numbers come in two kinds (see `lineprof::format`):
/// small dense block numbers, used while a single thread records, and
/// time-stamp counter readings marked with `CLOCK_MARK`, used once several
/// threads record, which sort after all of those.
#[derive(Default)]
struct EventCount {
    events: u64,
    dense: u64,
    /// One past the highest dense number seen.
    dense_end: u64,
}

/// Marks an order number read from the time-stamp counter.
const CLOCK_MARK: u64 = 1 << 63;

impl EventCount {
    fn put(&mut self, seq: u64) {
        self.events += 1;
        if seq & CLOCK_MARK == 0 {
            self.dense += 1;
            self.dense_end = self.dense_end.max(seq + 1);
        }
    }

    /// How many events are missing: fewer than `expected` (the writer's
    /// count of recorded events), or, without it (a crash), the holes below
    /// the highest block number seen (threads take numbers in blocks, so
    /// with the writer's count gaps are not losses).
    fn missing(&self, expected: Option<u64>) -> u64 {
        match expected {
            Some(expected) => expected.saturating_sub(self.events),
            None => self.dense_end.saturating_sub(self.dense),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builds profile bytes with the shim's own encoder, for tests of the
    //! reader and of the stages after it.
    use lineprof::format::{self, ChunkKind, Encoder};

    pub enum Ev {
        Alloc(u64, u32, u64, u64),
        Free(u64, u32, u64, u64),
        Cpu(u32, u32),
        /// A sample taken while lineprof was recording.
        CpuLineprof(u32, u32),
    }

    pub struct ProfileBytes {
        pub bytes: Vec<u8>,
    }

    impl ProfileBytes {
        pub fn new(sample_bytes: u64, cpu_hz: u32) -> Self {
            let mut bytes = vec![0u8; format::FILE_HEADER_LEN];
            format::write_file_header(&mut bytes);
            let mut p = ProfileBytes { bytes };
            p.chunk(ChunkKind::Meta, |e| {
                let meta = format::MetaRef {
                    pid: 42,
                    start_unix_ns: 1_700_000_000_000_000_000,
                    sample_bytes,
                    cpu_hz,
                    max_depth: 128,
                    forked_from: 0,
                    executable: b"/tmp/app",
                };
                format::encode_meta(e, &meta, &mut [&b"/tmp/app"[..]].into_iter());
            });
            p
        }

        pub fn chunk(&mut self, kind: ChunkKind, f: impl FnOnce(&mut Encoder<'_>)) {
            let mut buf = vec![0u8; 1 << 16];
            let mut e = Encoder::new(&mut buf, format::CHUNK_HEADER_LEN);
            f(&mut e);
            let n = e.pos();
            format::seal_chunk(kind, &mut buf[..n]);
            self.bytes.extend_from_slice(&buf[..n]);
        }

        pub fn stacks(&mut self, first: u32, stacks: &[&[u64]]) {
            self.chunk(ChunkKind::Stacks, |e| {
                e.u32(first);
                e.u32(stacks.len() as u32);
                for s in stacks {
                    format::encode_stack(e, s);
                }
            });
        }

        /// One thread's events; `Alloc(seq, stack, size, addr)`.
        pub fn events(&mut self, thread: u32, base_seq: u64, events: &[Ev]) {
            self.chunk(ChunkKind::Events, |e| {
                e.u32(thread);
                e.u64(base_seq);
                let (mut seq, mut addr) = (base_seq, 0u64);
                for ev in events {
                    match *ev {
                        Ev::Alloc(s, st, size, a) | Ev::Free(s, st, size, a) => {
                            let tag = if matches!(ev, Ev::Alloc(..)) {
                                format::tag::ALLOC
                            } else {
                                format::tag::FREE
                            };
                            e.u8(tag);
                            e.varint(s.wrapping_sub(seq));
                            e.varint(st as u64);
                            e.varint(size);
                            e.varint(format::zigzag(a.wrapping_sub(addr) as i64));
                            seq = s;
                            addr = a;
                        }
                        Ev::Cpu(st, count) | Ev::CpuLineprof(st, count) => {
                            e.u8(if matches!(ev, Ev::Cpu(..)) {
                                format::tag::CPU
                            } else {
                                format::tag::CPU_LINEPROF
                            });
                            e.varint(st as u64);
                            e.varint(count as u64);
                            e.varint(1000);
                        }
                    }
                }
            });
        }

        pub fn end(&mut self, events: u64) {
            self.chunk(ChunkKind::End, |e| {
                let end = format::End {
                    events,
                    stacks: 0,
                    dropped: 0,
                    truncated_stacks: 0,
                    end_unix_ns: 1_700_000_001_000_000_000,
                    ..Default::default()
                };
                format::encode_end(e, &end);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Ev, ProfileBytes};
    use super::*;

    #[test]
    fn merges_threads_by_sequence_number() {
        let mut p = ProfileBytes::new(0, 0);
        p.stacks(0, &[&[0x10, 0x20], &[0x30]]);
        p.events(1, 0, &[Ev::Alloc(0, 0, 8, 0x100), Ev::Free(3, 1, 8, 0x100)]);
        p.events(
            2,
            1,
            &[Ev::Alloc(1, 1, 16, 0x200), Ev::Alloc(2, 0, 4, 0x300)],
        );
        p.end(4);
        let prof = parse_profile(&p.bytes, Path::new("t.lprof")).unwrap();
        let kinds: Vec<_> = prof
            .collect_heap_events()
            .iter()
            .map(|e| (e.kind, e.size))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (HeapEventKind::Alloc, 8),
                (HeapEventKind::Alloc, 16),
                (HeapEventKind::Alloc, 4),
                (HeapEventKind::Free, 8)
            ]
        );
        assert_eq!(prof.stacks, vec![vec![0x10, 0x20], vec![0x30]]);
        assert_eq!(prof.missing_events, 0);
        assert!(prof.warnings().is_empty());
    }

    #[test]
    fn streamed_merge_takes_chunk_after_chunk_per_thread() {
        // Two threads, two chunks each, the threads' chunks interleaved in
        // the file out of global order (each thread's own in its order):
        // thread 1 holds 0-1 and 4-5, thread 2 holds 2-3 and 6.
        let mut p = ProfileBytes::new(0, 0);
        p.stacks(0, &[&[0x10]]);
        let a = |seq| Ev::Alloc(seq, 0, seq + 1, 0x100 * (seq + 1));
        p.events(2, 2, &[a(2), a(3)]);
        p.events(2, 6, &[a(6)]);
        p.events(1, 0, &[a(0), a(1)]);
        p.events(1, 4, &[a(4), a(5)]);
        p.end(7);
        let prof = parse_profile(&p.bytes, Path::new("t.lprof")).unwrap();
        assert!(prof.heap_events.is_empty(), "events stay in their chunks");
        assert_eq!(prof.heap_event_count, 7);
        let sizes: Vec<u64> = prof.collect_heap_events().iter().map(|e| e.size).collect();
        assert_eq!(sizes, [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn holes_and_truncation_are_warnings() {
        let mut p = ProfileBytes::new(0, 0);
        p.stacks(0, &[&[0x10]]);
        // Sequence numbers 1 and 2 were handed out but never written.
        p.events(
            1,
            0,
            &[Ev::Alloc(0, 0, 8, 0x100), Ev::Alloc(3, 0, 8, 0x200)],
        );
        let whole = p.bytes.len();
        p.events(1, 4, &[Ev::Alloc(4, 0, 8, 0x300)]);
        let cut = &p.bytes[..p.bytes.len() - 3];
        let prof = parse_profile(cut, Path::new("t.lprof")).unwrap();
        assert_eq!(prof.collect_heap_events().len(), 2);
        assert_eq!(prof.missing_events, 2);
        assert_eq!(prof.truncated_at, Some(whole as u64));
        let w = prof.warnings();
        assert!(
            w[0].contains(&format!("mid-chunk at byte {whole}")),
            "{w:?}"
        );
    }

    #[test]
    fn clock_stamped_events_follow_block_numbers_in_clock_order() {
        const MARK: u64 = 1 << 63;
        let mut p = ProfileBytes::new(0, 0);
        p.stacks(0, &[&[0x10]]);
        // Thread 0 alone: block numbers 0 and 1. Then two threads, stamped
        // with the time-stamp counter: thread 1 frees 0x100 at t=50, thread
        // 0 reuses it at t=60, in chunks written in the other order.
        p.events(
            0,
            0,
            &[
                Ev::Alloc(0, 0, 8, 0x100),
                Ev::Alloc(1, 0, 16, 0x200),
                Ev::Alloc(MARK | 60, 0, 32, 0x100),
            ],
        );
        p.events(
            1,
            MARK | 40,
            &[
                Ev::Free(MARK | 40, 0, 16, 0x200),
                Ev::Free(MARK | 50, 0, 8, 0x100),
            ],
        );
        let prof = parse_profile(&p.bytes, Path::new("t.lprof")).unwrap();
        let order: Vec<(u64, u64)> = prof
            .collect_heap_events()
            .iter()
            .map(|e| (e.addr, e.size))
            .collect();
        assert_eq!(
            order,
            vec![
                (0x100, 8),
                (0x200, 16),
                (0x200, 16),
                (0x100, 8),
                (0x100, 32)
            ]
        );
        assert_eq!(prof.missing_events, 0);
    }

    #[test]
    fn foreign_and_empty_files_are_errors() {
        let err = parse_profile(b"", Path::new("e")).unwrap_err();
        assert!(matches!(err, Error::NotAProfile { .. }));
        let err = parse_profile(b"\x7fELF and then some bytes", Path::new("e")).unwrap_err();
        assert!(err.to_string().contains("not a lineprof profile"), "{err}");
    }
}
