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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lineprof::format::{self, ChunkKind, Event, FormatError, RawChunk};

use crate::analyze::fast_events;
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
    /// Return addresses, innermost first, indexed by stack id: the heap
    /// stacks at the file's ids; then, from format version 4 on, an empty
    /// stack (ids the file does not define) and the CPU samples' own
    /// stacks (`CpuSample::stack` is moved to that index).
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
    /// Damaged stretches skipped in the middle of the file.
    pub damaged: Vec<format::Damage>,
    /// `Events` chunks that repeat an earlier one byte for byte, skipped:
    /// (offset, offset of the earlier one).
    pub duplicate_chunks: Vec<(u64, u64)>,
    /// Heap events whose order number another event already had (or that
    /// go back in their thread's order), skipped.
    pub duplicate_events: u64,
    /// Heap events and CPU samples naming a stack the file does not define.
    pub unknown_stack_refs: u64,
    /// An aggregate profile (`LINEPROF_MODE=aggregate`): per-stack heap
    /// figures instead of `heap_events`.
    pub aggregate: Option<Aggregate>,
    /// `#[lineprof::profile]` functions, summed over threads.
    pub timed: Vec<TimedFunction>,
    /// Calls of marked functions the program could not count.
    pub untimed_calls: u64,
    /// When reading the file began (a profile read from a path): the
    /// replay's progress counts from there.
    pub read_started: Option<std::time::Instant>,
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
        out.extend(self.damage_warnings());
        if self.missing_events > 0 {
            let how = if self.damaged.is_empty() {
                "were lost before they were written"
            } else {
                "are missing (lost before they were written, or in the damaged chunks)"
            };
            out.push(format!(
                "{} heap events {how}; figures are lower bounds",
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
                    "lineprof held {} perf-event descriptor{} in the top 256 numbers below the soft RLIMIT_NOFILE (the hard limit leaves no room above it); a program that opens nearly that many files gets that many fewer: raise the hard limit (ulimit -Hn), or set LINEPROF_CPU=timer (coarser: the kernel's tick)",
                    end.fds_in_host_range,
                    if end.fds_in_host_range == 1 { "" } else { "s" }
                ));
            }
        }
        out
    }

    /// What a cut, damaged or doubled file lost or repeats.
    fn damage_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let stopped = self.end.is_some_and(|e| e.write_error != 0);
        if let Some(at) = self.truncated_at {
            // With the writer's own word on why it stopped (its End
            // chunk), there is no need to guess.
            let why = if stopped {
                ""
            } else if self.end.is_some() {
                " (bytes appended after the end record)"
            } else {
                " (the program was killed, or the disk filled up?)"
            };
            out.push(format!(
                "profile ends in an incomplete or unreadable chunk at byte {at}{why}; showing the complete chunks before it"
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
        const SHOWN: usize = 3;
        for d in self.damaged.iter().take(SHOWN) {
            out.push(format!(
                "skipped {} damaged bytes at byte {} ({}); the chunks after them are used, the events of the damaged chunk are missing",
                d.len, d.offset, d.what
            ));
        }
        if self.damaged.len() > SHOWN {
            let rest = &self.damaged[SHOWN..];
            let bytes: u64 = rest.iter().map(|d| d.len).sum();
            out.push(format!(
                "and {} more damaged stretches ({bytes} bytes) skipped",
                rest.len()
            ));
        }
        if let Some(&(at, earlier)) = self.duplicate_chunks.first() {
            out.push(format!(
                "{} events chunks repeat an earlier one byte for byte (the first at byte {at} repeats byte {earlier}: the file was copied or appended twice?); each is counted once",
                self.duplicate_chunks.len()
            ));
        }
        if self.duplicate_events > 0 {
            out.push(format!(
                "{} heap events repeat the order number of another event (overlapping chunks); each number is counted once",
                self.duplicate_events
            ));
        }
        if self.unknown_stack_refs > 0 {
            out.push(format!(
                "{} heap events and CPU samples name a stack the profile does not define (its chunk was lost or damaged); they count in totals but on no line",
                self.unknown_stack_refs
            ));
        }
        out
    }

    /// The path of the profiled executable as recorded.
    pub fn executable(&self) -> PathBuf {
        PathBuf::from(String::from_utf8_lossy(&self.meta.executable).into_owned())
    }
}

/// Where a profile's `Events` chunks are, per thread, in file order (which
/// is the thread's own order), and where their bytes come from: the file
/// itself (a profile read from a path: its bytes are not held, so memory
/// does not grow with the number of events) or bytes in memory.
#[derive(Clone, Default)]
pub struct EventChunks {
    source: ChunkSource,
    /// The profile's path, for messages.
    path: PathBuf,
    threads: Vec<Vec<ChunkRef>>,
    /// Stack ids at or above this (none the file defines) read as this
    /// one, an empty stack after the table.
    unknown_stack: u32,
}

#[derive(Clone, Default)]
enum ChunkSource {
    #[default]
    None,
    Memory(Arc<Vec<u8>>),
    /// The open file the profile was read from: each chunk is read again
    /// and its checksum checked again.
    File(Arc<std::fs::File>),
}

/// One `Events` chunk's payload: offset, length and checksum.
#[derive(Clone, Copy, Debug)]
struct ChunkRef {
    start: u64,
    len: u32,
    crc: u32,
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

impl EventChunks {
    /// The payload of `chunk`, read into `buf` if it comes from the file.
    /// Fails when the file no longer holds the bytes it held when it was
    /// read (rewritten or cut since; appending is harmless).
    fn payload<'a>(&'a self, chunk: &ChunkRef, buf: &'a mut Vec<u8>) -> Result<&'a [u8]> {
        let (start, len) = (chunk.start as usize, chunk.len as usize);
        match &self.source {
            ChunkSource::None => Ok(&[]),
            ChunkSource::Memory(data) => Ok(&data[start..start + len]),
            ChunkSource::File(file) => {
                use std::os::unix::fs::FileExt;
                buf.resize(len, 0);
                let changed = |detail: String| {
                    Error::Corrupt {
                    path: self.path.clone(),
                    detail: format!(
                        "the profile changed while it was read ({detail}; another program rewrote or cut it): run the report again once nothing writes to it"
                    ),
                }
                };
                file.read_exact_at(buf, chunk.start)
                    .map_err(|e| changed(format!("reading byte {}: {e}", chunk.start)))?;
                if format::crc32(buf) != chunk.crc {
                    return Err(changed(format!(
                        "the chunk at byte {} no longer matches its checksum",
                        chunk.start
                    )));
                }
                Ok(&buf[..])
            }
        }
    }

    /// Decodes one chunk's heap events into `out` as (sequence number,
    /// event), skipping those not above `last` (the thread's last order
    /// number: a repeat, counted in `Profile::duplicate_events`).
    fn decode(
        &self,
        chunk: &ChunkRef,
        buf: &mut Vec<u8>,
        last: &mut Option<u64>,
        out: &mut Vec<(u64, HeapEvent)>,
    ) -> Result<()> {
        let unknown = self.unknown_stack;
        let payload = self.payload(chunk, buf)?;
        let (start_len, start_last) = (out.len(), *last);
        let fast = fast_events::decode(
            payload,
            |alloc, seq, stack, size, addr| {
                if last.is_some_and(|l| seq <= l) {
                    return;
                }
                *last = Some(seq);
                let stack = stack.min(unknown);
                let kind = if alloc {
                    HeapEventKind::Alloc
                } else {
                    HeapEventKind::Free
                };
                out.push((seq, heap_event(addr, size, stack, kind)));
            },
            |_, _, _| {},
        );
        if fast.is_ok() {
            return Ok(());
        }
        out.truncate(start_len);
        *last = start_last;
        let mut push = |seq: u64, addr: u64, size: u64, stack: u32, kind: HeapEventKind| {
            if last.is_some_and(|l| seq <= l) {
                return;
            }
            *last = Some(seq);
            let stack = stack.min(unknown);
            out.push((seq, heap_event(addr, size, stack, kind)));
        };
        let decoded = format::decode_events(payload, |ev| match ev {
            Event::Alloc {
                seq,
                stack,
                size,
                addr,
            } => push(seq, addr, size, stack, HeapEventKind::Alloc),
            Event::Free {
                seq,
                stack,
                size,
                addr,
            } => push(seq, addr, size, stack, HeapEventKind::Free),
            _ => {}
        });
        // Checked when the profile was read, and the bytes are the same.
        decoded.map(|_| ()).map_err(|m| Error::Corrupt {
            path: self.path.clone(),
            detail: format!(
                "events chunk at byte {} no longer decodes: {}",
                chunk.start, m.0
            ),
        })
    }
}

impl Profile {
    /// Calls `f` with every heap event in the global order. Fails only when
    /// the profile's file changed while it was read.
    ///
    /// A big profile is decoded and merged on a second thread, which hands
    /// the events over in batches, while `f` runs on this one.
    pub fn for_each_heap_event(&self, mut f: impl FnMut(&HeapEvent)) -> Result<()> {
        if !self.heap_events.is_empty() {
            self.heap_events.iter().for_each(f);
            return Ok(());
        }
        if self.heap_event_count < 4 * BATCH as u64 {
            return merge_threads(&self.events, &mut f);
        }
        std::thread::scope(|scope| {
            let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<HeapEvent>>(4);
            let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<HeapEvent>>();
            let events = &self.events;
            let decoder = std::thread::Builder::new()
                .name("lineprof-decode".into())
                .spawn_scoped(scope, move || {
                    let mut batch = Vec::with_capacity(BATCH);
                    let merged = merge_threads(events, &mut |e| {
                        batch.push(*e);
                        if batch.len() == BATCH {
                            let next = empty_rx
                                .try_recv()
                                .unwrap_or_else(|_| Vec::with_capacity(BATCH));
                            // The receiver lives until this thread ends.
                            let _ = full_tx.send(std::mem::replace(&mut batch, next));
                        }
                    });
                    if !batch.is_empty() {
                        let _ = full_tx.send(batch);
                    }
                    merged
                });
            let Ok(decoder) = decoder else {
                // No thread to be had: decode here.
                return merge_threads(&self.events, &mut f);
            };
            for mut batch in full_rx {
                batch.iter().for_each(&mut f);
                batch.clear();
                let _ = empty_tx.send(batch);
            }
            decoder
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Every heap event in order, decoded (tests and small profiles).
    pub fn collect_heap_events(&self) -> Vec<HeapEvent> {
        let mut out = Vec::new();
        self.for_each_heap_event(|e| out.push(*e))
            .expect("profile bytes held in memory");
        out
    }
}

/// Heap events handed from the decoding thread to the replay at a time.
const BATCH: usize = 16 * 1024;

/// One thread's events, decoded a chunk at a time.
struct Cursor<'a> {
    chunks: std::slice::Iter<'a, ChunkRef>,
    /// The current chunk's heap events, (sequence number, event).
    buf: Vec<(u64, HeapEvent)>,
    at: usize,
    /// The thread's last order number: an event not above it repeats an
    /// earlier one (counted in `Profile::duplicate_events`) and is skipped.
    last: Option<u64>,
}

impl Cursor<'_> {
    /// The next event's sequence number, decoding the next chunk if needed.
    fn peek(&mut self, events: &EventChunks, bytes: &mut Vec<u8>) -> Result<Option<u64>> {
        while self.at >= self.buf.len() {
            let Some(chunk) = self.chunks.next() else {
                return Ok(None);
            };
            self.buf.clear();
            self.at = 0;
            events.decode(chunk, bytes, &mut self.last, &mut self.buf)?;
        }
        Ok(Some(self.buf[self.at].0))
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
/// thread index. A dense number already emitted (by another thread: a
/// repeat) is skipped. One thread's events are its chunks in order.
fn merge_threads(events: &EventChunks, f: &mut impl FnMut(&HeapEvent)) -> Result<()> {
    let mut bytes = Vec::new();
    if let [chunks] = &events.threads[..] {
        // Order numbers strictly increase along the thread (`decode`
        // skips the others), so none repeats.
        let (mut last, mut buf) = (None, Vec::new());
        for chunk in chunks {
            buf.clear();
            events.decode(chunk, &mut bytes, &mut last, &mut buf)?;
            buf.iter().for_each(|(_, e)| f(e));
        }
        return Ok(());
    }
    let mut cursors: Vec<Cursor<'_>> = events
        .threads
        .iter()
        .map(|chunks| Cursor {
            chunks: chunks.iter(),
            buf: Vec::new(),
            at: 0,
            last: None,
        })
        .collect();
    let mut last_dense: Option<u64> = None;
    let mut heap = BinaryHeap::new();
    for (i, c) in cursors.iter_mut().enumerate() {
        if let Some(seq) = c.peek(events, &mut bytes)? {
            heap.push(Reverse((seq, i)));
        }
    }
    while let Some(Reverse((_, i))) = heap.pop() {
        let next = heap.peek().map(|r| r.0);
        let c = &mut cursors[i];
        while let Some(seq) = c.peek(events, &mut bytes)? {
            if next.is_some_and(|n| (seq, i) > n) {
                heap.push(Reverse((seq, i)));
                break;
            }
            let repeat = seq & CLOCK_MARK == 0 && last_dense == Some(seq);
            if seq & CLOCK_MARK == 0 {
                last_dense = Some(seq);
            }
            if !repeat {
                f(&c.buf[c.at].1);
            }
            c.at += 1;
        }
    }
    Ok(())
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

/// Reads and decodes the profile at `path`. Its heap events are streamed
/// from the file again when replayed: the bytes read here are dropped
/// before the replay, so a big profile's memory is its live blocks and
/// stacks, not its size.
pub fn read_profile(path: &Path) -> Result<Profile> {
    let started = std::time::Instant::now();
    let io = |e| Error::io(path, "read the profile", e);
    let not_regular = || {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a device, pipe or directory); give the path of a .lprof file",
        ))
    };
    // Checked before opening too: opening a pipe waits for a writer.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(not_regular());
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(&mut file, &mut data).map_err(io)?;
    let mut profile = parse_profile_owned(data, path)?;
    if matches!(profile.events.source, ChunkSource::Memory(_)) {
        profile.events.source = ChunkSource::File(Arc::new(file));
    }
    profile.read_started = Some(started);
    Ok(profile)
}

/// Decodes a profile held in memory; `path` is only used in messages.
pub fn parse_profile(data: &[u8], path: &Path) -> Result<Profile> {
    parse_profile_owned(data.to_vec(), path)
}

/// As `parse_profile`, keeping `data` for streaming the events.
///
/// Every size taken from the file is bounded by what the file holds:
/// stack ids by its length, events and samples by their own bytes, so
/// memory stays within a small multiple of the file's size whatever it
/// claims. Damage is skipped (see `format::split_chunks`), exact repeats of
/// an `Events` chunk and repeated order numbers are counted once, and
/// references to stacks the file does not define go to one empty stack;
/// each with a warning. Chunks of two writers in one file are an error.
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
    profile.damaged = chunks.damaged.clone();
    // Dense sequence numbers above this are not from a real writer (they
    // would leave more holes than a file of this size can explain); below
    // it, a bitmap of them tells repeats.
    let seq_limit = (data.len() as u64).saturating_mul(4) + (1 << 20);
    let mut count = EventCount {
        stack_refs: StackRefs::new(data.len()),
        ..EventCount::default()
    };
    let mut first_meta: Option<RawChunk<'_>> = None;
    let mut events_seen = EventsChunkSet::default();
    let mut stacks = StackTable::new(data.len());
    // From version 4 on, CPU samples name stacks of their own id space.
    let separate_cpu = chunks.version >= format::CPU_STACKS_VERSION;
    let mut cpu_stacks = StackTable::new(data.len());
    let mut threads: BTreeMap<u32, Vec<ChunkRef>> = BTreeMap::new();
    let base = data.as_ptr() as usize;
    let mut timers = TimerSnapshots::default();
    // One Events chunk's decoded heap events and CPU samples.
    let (mut heap_buf, mut cpu_buf) = (Vec::new(), Vec::new());
    for chunk in &chunks.chunks {
        let corrupt = |what: &str| Error::Corrupt {
            path: path.to_path_buf(),
            detail: format!("corrupt chunk at byte {}: {what}", chunk.offset),
        };
        match chunk.kind {
            ChunkKind::Meta => {
                if let Some(first) = &first_meta {
                    check_one_writer(first, chunk, path)?;
                    continue;
                }
                profile.meta = format::decode_meta(chunk.payload).map_err(|m| corrupt(m.0))?;
                first_meta = Some(*chunk);
            }
            ChunkKind::Modules => {
                let modules = format::decode_modules(chunk.payload).map_err(|m| corrupt(m.0))?;
                profile.modules.extend(modules);
            }
            ChunkKind::Stacks => {
                let (first, decoded) =
                    format::decode_stacks(chunk.payload).map_err(|m| corrupt(m.0))?;
                let others = cpu_stacks.stacks.len();
                stacks
                    .place(first, decoded, others)
                    .map_err(|m| corrupt(&m))?;
            }
            ChunkKind::CpuStacks => {
                if !separate_cpu {
                    return Err(corrupt(&format!(
                        "CPU sample stacks in a version {} profile, which has none",
                        chunks.version
                    )));
                }
                let (first, decoded) =
                    format::decode_stacks(chunk.payload).map_err(|m| corrupt(m.0))?;
                let others = stacks.stacks.len();
                cpu_stacks
                    .place(first, decoded, others)
                    .map_err(|m| corrupt(&m))?;
            }
            ChunkKind::Events => {
                // Checked against the payload by `split_chunks`.
                let crc =
                    u32::from_le_bytes(data[chunk.offset as usize + 8..][..4].try_into().unwrap());
                if let Some(earlier) = events_seen.repeat_of(chunk, crc) {
                    profile.duplicate_chunks.push((chunk.offset, earlier));
                    continue;
                }
                let mut bad_seq = false;
                let thread = chunk
                    .payload
                    .get(..4)
                    .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
                let mut last = count.last_of(thread);
                heap_buf.clear();
                cpu_buf.clear();
                let fast = fast_events::decode(
                    chunk.payload,
                    |_, seq, stack, _, _| heap_buf.push((seq, stack)),
                    |in_lineprof, stack, count| {
                        cpu_buf.push(CpuSample {
                            stack,
                            count,
                            in_lineprof,
                            copy: None,
                        })
                    },
                );
                if fast.is_ok() {
                    for &(seq, stack) in &heap_buf {
                        if seq & CLOCK_MARK == 0 && seq >= seq_limit {
                            return Err(corrupt("event sequence number out of range"));
                        }
                        count.put(&mut last, seq, stack);
                    }
                    profile.cpu_samples.extend_from_slice(&cpu_buf);
                } else {
                    format::decode_events(chunk.payload, |ev| match ev {
                        Event::Alloc { seq, .. } | Event::Free { seq, .. }
                            if seq & CLOCK_MARK == 0 && seq >= seq_limit =>
                        {
                            bad_seq = true
                        }
                        Event::Alloc { seq, stack, .. } | Event::Free { seq, stack, .. } => {
                            count.put(&mut last, seq, stack)
                        }
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
                }
                if bad_seq {
                    return Err(corrupt("event sequence number out of range"));
                }
                count.end_chunk(thread, last);
                let start = chunk.payload.as_ptr() as usize - base;
                threads.entry(thread).or_default().push(ChunkRef {
                    start: start as u64,
                    len: chunk.payload.len() as u32,
                    crc,
                });
            }
            ChunkKind::End => {
                profile.end = Some(format::decode_end(chunk.payload).map_err(|m| corrupt(m.0))?);
            }
            ChunkKind::HeapStacks => {
                // Only aggregate profiles (one id space) count per stack.
                if separate_cpu {
                    return Err(corrupt(&format!(
                        "aggregate heap figures in a version {} (stream) profile",
                        chunks.version
                    )));
                }
                let stacks = format::decode_heap_stacks(chunk.payload).map_err(|m| corrupt(m.0))?;
                let agg = profile.aggregate.get_or_insert_with(Aggregate::default);
                agg.stacks.extend(stacks);
            }
            ChunkKind::HeapSummary => {
                if separate_cpu {
                    return Err(corrupt(&format!(
                        "an aggregate heap summary in a version {} (stream) profile",
                        chunks.version
                    )));
                }
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
    if first_meta.is_none() {
        return Err(Error::NotAProfile {
            path: path.to_path_buf(),
            detail: "the profile holds no metadata chunk (the program died before writing it?)"
                .to_string(),
        });
    }
    profile.modules = merge_modules(std::mem::take(&mut profile.modules));
    let (table, unknown_stack, unknown_refs) = stacks.finish(
        separate_cpu.then_some(cpu_stacks),
        &mut profile.cpu_samples,
        &count.stack_refs,
    );
    profile.stacks = table;
    profile.unknown_stack_refs = unknown_refs;
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
    profile.duplicate_events = count.duplicates;
    drop(chunks);
    profile.events = EventChunks {
        source: ChunkSource::Memory(data),
        path: path.to_path_buf(),
        threads: threads.into_values().collect(),
        unknown_stack,
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
    }
}

/// A second `Meta` chunk: a repeat of the first is harmless (a copied
/// chunk); any other means two processes (or a program and the one it
/// exec'd) wrote into one file, and no figure would be either's.
fn check_one_writer(first: &RawChunk<'_>, other: &RawChunk<'_>, path: &Path) -> Result<()> {
    if first.payload == other.payload {
        return Ok(());
    }
    let pid = |c: &RawChunk<'_>| {
        format::decode_meta(c.payload).map_or_else(|_| "?".to_string(), |m| m.pid.to_string())
    };
    Err(Error::MixedWriters {
        path: path.to_path_buf(),
        first: (first.offset, pid(first)),
        other: (other.offset, pid(other)),
    })
}

/// The `Events` chunks read so far, to tell an exact repeat of one (a
/// chunk copied twice into the file) from a new one. Two different chunks
/// never have equal bytes: each holds its thread, its first sequence
/// number and absolute clock readings.
#[derive(Default)]
struct EventsChunkSet<'a> {
    by_checksum: std::collections::HashMap<(u32, usize), Vec<RawChunk<'a>>>,
}

impl<'a> EventsChunkSet<'a> {
    /// The offset of an earlier chunk with the same bytes, or records this
    /// one; `crc` is its checksum.
    fn repeat_of(&mut self, chunk: &RawChunk<'a>, crc: u32) -> Option<u64> {
        let key = (crc, chunk.payload.len());
        let same = self.by_checksum.entry(key).or_default();
        if let Some(earlier) = same.iter().find(|c| c.payload == chunk.payload) {
            return Some(earlier.offset);
        }
        same.push(*chunk);
        None
    }
}

/// The interned stacks by id, as `Stacks` (or `CpuStacks`) chunks define
/// them (in any order, maybe more than once). Ids are dense and every stack
/// takes at least a byte, so ids beyond the file's length (the two id
/// spaces together) cannot be real: that bound keeps the tables within a
/// small multiple of the file's size.
struct StackTable {
    stacks: Vec<Vec<u64>>,
    defined: Vec<bool>,
    limit: usize,
}

impl StackTable {
    fn new(file_len: usize) -> StackTable {
        StackTable {
            stacks: Vec::new(),
            defined: Vec::new(),
            limit: file_len,
        }
    }

    /// Defines the stacks `first..` as `stacks`; `others`: the length of
    /// the other id space's table (CPU stacks beside heap stacks), which
    /// takes bytes of the same file.
    fn place(
        &mut self,
        first: u32,
        stacks: Vec<Vec<u64>>,
        others: usize,
    ) -> std::result::Result<(), String> {
        let first = first as usize;
        let end = first + stacks.len();
        if end.max(self.stacks.len()) + others > self.limit {
            return Err(format!(
                "stack ids {first}..{end} are more than a file of {} bytes can define",
                self.limit
            ));
        }
        if self.stacks.len() < end {
            self.stacks.resize(end, Vec::new());
            self.defined.resize(end, false);
        }
        for (i, frames) in stacks.into_iter().enumerate() {
            self.stacks[first + i] = frames;
            self.defined[first + i] = true;
        }
        Ok(())
    }

    /// The stacks by id; the id unknown ones read as (an empty stack after
    /// the heap stacks, added when something names an id past them or CPU
    /// stacks follow); and how many heap events (`refs`: per stack id) and
    /// CPU samples name a stack the file does not define. Slots never
    /// defined stay empty stacks.
    ///
    /// `cpu`: the CPU samples' own stacks (version 4 on), placed after the
    /// unknown one, the samples' ids moved there; else the samples name
    /// heap stack ids, as heap events do.
    fn finish(
        mut self,
        cpu: Option<StackTable>,
        samples: &mut [CpuSample],
        refs: &StackRefs,
    ) -> (Vec<Vec<u64>>, u32, u64) {
        let n = self.stacks.len() as u32;
        let unknown_in =
            |t: &StackTable, id: u32| id as usize >= t.stacks.len() || !t.defined[id as usize];
        let events: u64 = refs
            .iter()
            .filter(|&(id, _)| unknown_in(&self, id))
            .map(|(_, c)| c)
            .sum();
        let heap_past_end = refs.iter().any(|(id, _)| id >= n);
        let Some(cpu) = cpu else {
            let unknown_samples = samples
                .iter()
                .filter(|s| unknown_in(&self, s.stack))
                .count();
            if heap_past_end || samples.iter().any(|s| s.stack >= n) {
                samples.iter_mut().for_each(|s| s.stack = s.stack.min(n));
                self.stacks.push(Vec::new());
            }
            return (self.stacks, n, events + unknown_samples as u64);
        };
        let mut unknown_samples = 0;
        for s in samples.iter_mut() {
            // Within u32: both tables together are bounded by the file.
            if unknown_in(&cpu, s.stack) {
                // Undefined ids inside the CPU table would name its empty
                // slots; all go to the one unknown stack.
                unknown_samples += 1;
                s.stack = n;
            } else {
                s.stack += n + 1;
            }
        }
        if heap_past_end || unknown_samples > 0 || !cpu.stacks.is_empty() {
            drop(self.defined);
            self.stacks.reserve_exact(1 + cpu.stacks.len());
            self.stacks.push(Vec::new());
            self.stacks.extend(cpu.stacks);
        }
        (self.stacks, n, events + unknown_samples)
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

    /// Sums over tables, converting ticks to nanoseconds. Keyed maps keep
    /// this linear-logarithmic in the records a file holds.
    fn finish(self) -> Vec<TimedFunction> {
        use std::collections::BTreeMap;
        let (ticks, ns) = self.clock;
        let per_tick = if ticks == 0 {
            1.0
        } else {
            ns as f64 / ticks as f64
        };
        let to_ns = |t: u64| (t as f64 * per_tick).round() as u64;
        type Lines = BTreeMap<u32, (u64, u64)>;
        type Key = (Vec<u8>, Vec<u8>, u32);
        let mut sums: BTreeMap<Key, (u64, u64, Lines)> = BTreeMap::new();
        for ((_, path, file, line), f) in self.latest {
            let o = sums.entry((path, file, line)).or_default();
            o.0 = o.0.saturating_add(f.calls);
            o.1 = o.1.saturating_add(to_ns(f.ticks));
            for l in f.lines {
                let x = o.2.entry(l.line).or_default();
                x.0 = x.0.saturating_add(l.hits);
                x.1 = x.1.saturating_add(to_ns(l.ticks));
            }
        }
        sums.into_iter()
            .map(
                |((path, file, line), (calls, time_ns, lines))| TimedFunction {
                    path: String::from_utf8_lossy(&path).into_owned(),
                    file: String::from_utf8_lossy(&file).into_owned(),
                    line,
                    calls,
                    time_ns,
                    lines: lines.into_iter().map(|(l, (h, t))| (l, h, t)).collect(),
                },
            )
            .collect()
    }
}

/// The union of the `Modules` chunks: the same file at the same bias with
/// the same build-id is one module (a later chunk may list it again with
/// more segments). Hashing keeps this linear in what the file holds.
fn merge_modules(all: Vec<Module>) -> Vec<Module> {
    let mut out: Vec<Module> = Vec::new();
    let mut index: std::collections::HashMap<(Vec<u8>, u64, Vec<u8>), usize> =
        std::collections::HashMap::new();
    for m in all {
        let key = (m.path.clone(), m.bias, m.build_id.clone());
        match index.get(&key) {
            Some(&i) => out[i].ranges.extend(m.ranges),
            None => {
                index.insert(key, out.len());
                out.push(m);
            }
        }
    }
    for m in &mut out {
        m.ranges.sort_unstable();
        m.ranges.dedup();
    }
    out
}

/// Heap events per stack id, counted as the profile is read: a counter
/// per id below `dense_limit` (2^20, or the file's length if less: real
/// profiles have fewer stacks, and every stack takes bytes to define), a
/// map for the ids above (only a damaged file names those).
#[derive(Default)]
struct StackRefs {
    dense: Vec<u64>,
    dense_limit: usize,
    sparse: std::collections::HashMap<u32, u64>,
}

impl StackRefs {
    fn new(file_len: usize) -> StackRefs {
        StackRefs {
            dense_limit: file_len.min(1 << 20),
            ..StackRefs::default()
        }
    }

    #[inline]
    fn add(&mut self, stack: u32) {
        let s = stack as usize;
        if let Some(c) = self.dense.get_mut(s) {
            *c += 1;
        } else if s < self.dense_limit {
            self.dense.resize(s + 1, 0);
            self.dense[s] += 1;
        } else {
            *self.sparse.entry(stack).or_default() += 1;
        }
    }

    /// (stack id, events) of each id named.
    fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let dense = self.dense.iter().enumerate().filter(|(_, &c)| c > 0);
        dense
            .map(|(s, &c)| (s as u32, c))
            .chain(self.sparse.iter().map(|(&s, &c)| (s, c)))
    }
}

/// Counts the heap events of a profile as they are read, to tell how many
/// were lost or repeated. Order numbers come in two kinds (see
/// `lineprof::format`): small dense block numbers, used while a single
/// thread records, each handed out once; and time-stamp counter readings
/// marked with `CLOCK_MARK`, used once several threads record, which sort
/// after all of those. Both increase strictly within a thread. An event
/// that goes back in its thread's order, or whose dense number was seen
/// already, is a repeat: the streamed merge skips the same ones.
#[derive(Default)]
struct EventCount {
    events: u64,
    dense: u64,
    /// One past the highest dense number seen.
    dense_end: u64,
    duplicates: u64,
    last_of_thread: std::collections::HashMap<u32, u64>,
    /// Dense numbers seen, a bit each (they are below the reader's
    /// `seq_limit`, so this is within half the file's size).
    dense_seen: Vec<u64>,
    /// Heap events per stack id named.
    stack_refs: StackRefs,
}

/// Marks an order number read from the time-stamp counter.
const CLOCK_MARK: u64 = 1 << 63;

impl EventCount {
    /// The last order number of `thread`'s events so far: a chunk's events
    /// are all one thread's, so this is looked up once per chunk.
    fn last_of(&self, thread: u32) -> Option<u64> {
        self.last_of_thread.get(&thread).copied()
    }

    fn end_chunk(&mut self, thread: u32, last: Option<u64>) {
        if let Some(l) = last {
            self.last_of_thread.insert(thread, l);
        }
    }

    #[inline]
    fn put(&mut self, last: &mut Option<u64>, seq: u64, stack: u32) {
        if last.is_some_and(|l| seq <= l) {
            self.duplicates += 1;
            return;
        }
        *last = Some(seq);
        if seq & CLOCK_MARK == 0 {
            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
            if word >= self.dense_seen.len() {
                self.dense_seen.resize(word + 1, 0);
            }
            if self.dense_seen[word] & bit != 0 {
                self.duplicates += 1;
                return;
            }
            self.dense_seen[word] |= bit;
            self.dense += 1;
            self.dense_end = self.dense_end.max(seq + 1);
        }
        self.events += 1;
        self.stack_refs.add(stack);
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
        /// A version 2 profile: CPU samples name heap stack ids.
        pub fn new(sample_bytes: u64, cpu_hz: u32) -> Self {
            Self::with_version(2, sample_bytes, cpu_hz)
        }

        /// A profile of format `version` (4: CPU samples name the ids of
        /// `cpu_stacks`).
        pub fn with_version(version: u32, sample_bytes: u64, cpu_hz: u32) -> Self {
            let mut bytes = vec![0u8; format::FILE_HEADER_LEN];
            format::write_file_header_version(&mut bytes, version);
            let mut p = ProfileBytes { bytes };
            p.meta(42, sample_bytes, cpu_hz);
            p
        }

        /// A `Meta` chunk of process `pid`.
        pub fn meta(&mut self, pid: u32, sample_bytes: u64, cpu_hz: u32) {
            self.chunk(ChunkKind::Meta, |e| {
                let meta = format::MetaRef {
                    pid,
                    start_unix_ns: 1_700_000_000_000_000_000,
                    sample_bytes,
                    cpu_hz,
                    max_depth: 128,
                    forked_from: 0,
                    executable: b"/tmp/app",
                    args: format::CmdLine(b"/tmp/app\0"),
                };
                format::encode_meta(e, &meta);
            });
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
            self.stacks_of(ChunkKind::Stacks, first, stacks)
        }

        /// CPU sample stacks (version 4).
        pub fn cpu_stacks(&mut self, first: u32, stacks: &[&[u64]]) {
            self.stacks_of(ChunkKind::CpuStacks, first, stacks)
        }

        fn stacks_of(&mut self, kind: ChunkKind, first: u32, stacks: &[&[u64]]) {
            self.chunk(kind, |e| {
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
                let (mut seq, mut addr, mut other) = (base_seq, 0u64, 0u64);
                for ev in events {
                    match *ev {
                        Ev::Alloc(s, st, size, a) | Ev::Free(s, st, size, a) => {
                            // As the shim encodes them (two address bases).
                            let (delta, use_other, o) = format::addr_delta(a, addr, other);
                            let tag = if matches!(ev, Ev::Alloc(..)) {
                                format::tag::ALLOC
                            } else {
                                format::tag::FREE
                            };
                            e.u8(tag
                                | if use_other {
                                    format::tag::OTHER_BASE
                                } else {
                                    0
                                });
                            e.varint(s.wrapping_sub(seq));
                            e.varint(st as u64);
                            e.varint(size);
                            e.varint(delta);
                            seq = s;
                            (addr, other) = (a, o);
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
            w[0].contains(&format!("incomplete or unreadable chunk at byte {whole}")),
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

    /// Two threads' events, each chunk written twice (a file copied onto
    /// its own end), and one event whose order number the other thread's
    /// chunk already used.
    #[test]
    fn repeated_chunks_and_order_numbers_are_counted_once() {
        let mut p = ProfileBytes::new(0, 0);
        p.stacks(0, &[&[0x10]]);
        let start = p.bytes.len();
        p.events(1, 0, &[Ev::Alloc(0, 0, 8, 0x100), Ev::Cpu(0, 5)]);
        p.events(2, 1, &[Ev::Alloc(1, 0, 16, 0x200)]);
        let copy = p.bytes[start..].to_vec();
        p.bytes.extend_from_slice(&copy);
        // Thread 3 claims order number 1 again, and adds number 2.
        p.events(
            3,
            1,
            &[Ev::Alloc(1, 0, 99, 0x300), Ev::Alloc(2, 0, 4, 0x400)],
        );
        p.end(3);
        let prof = parse_profile(&p.bytes, Path::new("t.lprof")).unwrap();
        let sizes: Vec<u64> = prof.collect_heap_events().iter().map(|e| e.size).collect();
        assert_eq!(sizes, [8, 16, 4]);
        let samples: u32 = prof.cpu_samples.iter().map(|s| s.count).sum();
        assert_eq!(samples, 5);
        assert_eq!(prof.duplicate_chunks.len(), 2);
        assert_eq!(prof.duplicate_chunks[0].1, start as u64);
        assert_eq!(prof.duplicate_events, 1);
        let w = prof.warnings().join("\n");
        assert!(w.contains("2 events chunks repeat an earlier one"), "{w}");
        assert!(w.contains("1 heap events repeat the order number"), "{w}");
    }

    #[test]
    fn two_writers_in_one_file_are_an_error() {
        let mut p = ProfileBytes::new(0, 0);
        p.stacks(0, &[&[0x10]]);
        p.events(0, 0, &[Ev::Alloc(0, 0, 8, 0x100)]);
        let second = p.bytes.len();
        p.meta(43, 0, 0);
        p.events(0, 0, &[Ev::Alloc(0, 0, 32, 0x100)]);
        let err = parse_profile(&p.bytes, Path::new("t.lprof")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::MixedWriters { .. }), "{msg}");
        assert!(msg.starts_with("t.lprof: two processes"), "{msg}");
        assert!(
            msg.contains(&format!(
                "byte 16 is pid 42's, the one at byte {second} pid 43's"
            )),
            "{msg}"
        );
        assert!(msg.contains("own LINEPROF_OUT"), "{msg}");
        // A repeated, identical metadata chunk is only a copy.
        let mut p = ProfileBytes::new(0, 0);
        p.meta(42, 0, 0);
        assert!(parse_profile(&p.bytes, Path::new("t.lprof")).is_ok());
    }

    #[test]
    fn stack_ids_are_bounded_by_the_file() {
        // A Stacks chunk placing one stack at id 4e9 (the table would take
        // 100 GB): refused.
        let mut p = ProfileBytes::new(0, 0);
        p.stacks(4_000_000_000, &[&[0x10]]);
        let err = parse_profile(&p.bytes, Path::new("t.lprof")).unwrap_err();
        assert!(
            err.to_string()
                .contains("stack ids 4000000000..4000000001 are more than a file of"),
            "{err}"
        );
        // Events naming stacks never defined go to one empty stack.
        let mut p = ProfileBytes::new(0, 0);
        p.stacks(0, &[&[0x10]]);
        p.events(
            0,
            0,
            &[
                Ev::Alloc(0, 0, 8, 0x100),
                Ev::Alloc(1, u32::MAX, 16, 0x200),
                Ev::Cpu(3_000_000_000, 2),
            ],
        );
        p.end(2);
        let prof = parse_profile(&p.bytes, Path::new("t.lprof")).unwrap();
        assert_eq!(prof.stacks, [vec![0x10], vec![]]);
        let stacks: Vec<u32> = prof.collect_heap_events().iter().map(|e| e.stack).collect();
        assert_eq!(stacks, [0, 1]);
        assert_eq!(prof.cpu_samples[0].stack, 1);
        assert_eq!(prof.unknown_stack_refs, 2);
        let w = prof.warnings().join("\n");
        assert!(
            w.contains("2 heap events and CPU samples name a stack"),
            "{w}"
        );
    }

    /// Version 4: CPU samples name stacks of their own id space (`CpuStacks`
    /// chunks); the reader puts them after the heap stacks and the unknown
    /// one, so heap ids stay as the file has them.
    #[test]
    fn aggregate_chunks_in_a_stream_profile_are_corrupt() {
        for kind in [ChunkKind::HeapStacks, ChunkKind::HeapSummary] {
            let mut p = ProfileBytes::with_version(4, 0, 1000);
            p.stacks(0, &[&[0x10]]);
            p.chunk(kind, |e| e.u32(0));
            let err = parse_profile(&p.bytes, Path::new("t.lprof")).unwrap_err();
            assert!(err.to_string().contains("(stream) profile"), "{err}");
            assert!(err.to_string().contains("t.lprof"), "{err}");
        }
    }

    #[test]
    fn cpu_samples_name_their_own_stacks_from_version_4() {
        let mut p = ProfileBytes::with_version(4, 0, 1000);
        p.stacks(0, &[&[0x10], &[0x20]]);
        p.cpu_stacks(1, &[&[0x31, 0x32]]);
        p.cpu_stacks(0, &[&[0x30]]);
        p.events(
            0,
            0,
            &[
                Ev::Alloc(0, 1, 8, 0x100),
                Ev::Cpu(0, 2),
                Ev::CpuLineprof(1, 1),
                Ev::Alloc(1, 0, 16, 0x200),
                Ev::Cpu(1, 3),
                Ev::Cpu(7, 1),
            ],
        );
        p.end(2);
        let prof = parse_profile(&p.bytes, Path::new("t.lprof")).unwrap();
        assert_eq!(
            prof.stacks,
            [vec![0x10], vec![0x20], vec![], vec![0x30], vec![0x31, 0x32]]
        );
        let heap: Vec<u32> = prof.collect_heap_events().iter().map(|e| e.stack).collect();
        assert_eq!(heap, [1, 0]);
        let cpu: Vec<(u32, u32, bool)> = prof
            .cpu_samples
            .iter()
            .map(|s| (s.stack, s.count, s.in_lineprof))
            .collect();
        assert_eq!(
            cpu,
            [(3, 2, false), (4, 1, true), (4, 3, false), (2, 1, false)]
        );
        // CPU id 7 is not defined: the unknown stack, with a warning.
        assert_eq!(prof.unknown_stack_refs, 1);
        // The same bytes as version 2: CPU ids are heap ids (0 and 1 are
        // the heap stacks), and a CpuStacks chunk is no chunk of that
        // version.
        let mut v2 = p.bytes.clone();
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        let err = parse_profile(&v2, Path::new("t.lprof")).unwrap_err();
        assert!(
            err.to_string()
                .contains("CPU sample stacks in a version 2 profile"),
            "{err}"
        );
        let mut p = ProfileBytes::new(0, 1000);
        p.stacks(0, &[&[0x10], &[0x20]]);
        p.events(0, 0, &[Ev::Alloc(0, 1, 8, 0x100), Ev::Cpu(0, 2)]);
        let prof = parse_profile(&p.bytes, Path::new("t.lprof")).unwrap();
        assert_eq!(prof.stacks, [vec![0x10], vec![0x20]]);
        assert_eq!(prof.cpu_samples[0].stack, 0);
        // The two id spaces together are bounded by the file's length.
        let mut p = ProfileBytes::with_version(4, 0, 1000);
        let len = p.bytes.len() as u32 + 200;
        p.stacks(len / 2, &[&[0x10]]);
        p.cpu_stacks(len / 2, &[&[0x10]]);
        let err = parse_profile(&p.bytes, Path::new("t.lprof")).unwrap_err();
        assert!(err.to_string().contains("are more than a file of"), "{err}");
    }

    /// A chunk damaged in the middle (here a half-written one that the next
    /// write followed, as after a full disk) is skipped; the rest is used.
    #[test]
    fn a_damaged_chunk_in_the_middle_is_skipped() {
        let mut p = ProfileBytes::new(0, 0);
        p.stacks(0, &[&[0x10]]);
        p.events(0, 0, &[Ev::Alloc(0, 0, 8, 0x100)]);
        let torn_at = p.bytes.len();
        p.events(
            0,
            1,
            &[Ev::Alloc(1, 0, 16, 0x200), Ev::Alloc(2, 0, 4, 0x300)],
        );
        p.bytes.truncate(p.bytes.len() - 4);
        let torn = (p.bytes.len() - torn_at) as u64;
        p.events(0, 3, &[Ev::Alloc(3, 0, 32, 0x400)]);
        p.end(4);
        let prof = parse_profile(&p.bytes, Path::new("t.lprof")).unwrap();
        let sizes: Vec<u64> = prof.collect_heap_events().iter().map(|e| e.size).collect();
        assert_eq!(sizes, [8, 32]);
        assert_eq!(prof.missing_events, 2);
        assert_eq!(prof.truncated_at, None);
        assert_eq!(prof.damaged.len(), 1);
        assert_eq!(prof.damaged[0].offset, torn_at as u64);
        let w = prof.warnings().join("\n");
        assert!(
            w.contains(&format!(
                "skipped {torn} damaged bytes at byte {torn_at} (checksum mismatch)"
            )),
            "{w}"
        );
    }

    /// What a crash or a full disk leaves at the end: a torn last chunk, a
    /// zero-filled tail starting inside it, or garbage. All read up to the
    /// last complete chunk.
    #[test]
    fn a_cut_zeroed_or_garbage_tail_reads_up_to_the_last_complete_chunk() {
        let mut p = ProfileBytes::new(0, 0);
        p.stacks(0, &[&[0x10]]);
        p.events(0, 0, &[Ev::Alloc(0, 0, 8, 0x100)]);
        let good = p.bytes.len();
        p.events(0, 1, &[Ev::Alloc(1, 0, 16, 0x200)]);
        let whole = p.bytes.clone();
        let mut zeroed = whole.clone();
        zeroed[good + 14..].fill(0);
        zeroed.resize(whole.len() + 8192, 0);
        let mut garbage = whole[..good].to_vec();
        garbage.extend(
            b"\x04\0\0\0\xff\xff not a chunk at all"
                .iter()
                .cycle()
                .take(5000),
        );
        for (name, bytes) in [
            ("torn", &whole[..whole.len() - 1]),
            ("zeroed", &zeroed[..]),
            ("garbage", &garbage[..]),
        ] {
            let prof = parse_profile(bytes, Path::new("t.lprof")).unwrap();
            assert_eq!(prof.collect_heap_events().len(), 1, "{name}");
            assert_eq!(prof.truncated_at, Some(good as u64), "{name}");
            assert!(prof.damaged.is_empty(), "{name}");
            let w = prof.warnings();
            assert!(
                w[0].contains(&format!("chunk at byte {good} (the program was killed")),
                "{name}: {w:?}"
            );
        }
    }

    /// A profile read from a path streams its events from the file again:
    /// the same events as from memory (here enough for the decoding
    /// thread), and a clear error if the file was rewritten or cut since.
    #[test]
    fn events_stream_from_the_file_and_a_changed_file_is_an_error() {
        let mut p = ProfileBytes::new(0, 0);
        p.stacks(0, &[&[0x10], &[0x20]]);
        let n = 5 * BATCH as u64;
        let mut seq = 0;
        while seq < n {
            let evs: Vec<Ev> = (seq..(seq + 3000).min(n))
                .map(|i| match i % 2 {
                    0 => Ev::Alloc(i, (i % 3 == 0) as u32, i % 500, 0x1000 + i / 2 * 32),
                    _ => Ev::Free(i, 1, (i - 1) % 500, 0x1000 + i / 2 * 32),
                })
                .collect();
            p.events(0, seq, &evs);
            seq += evs.len() as u64;
        }
        p.end(n);
        let dir = std::env::temp_dir().join(format!("lineprof-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.lprof");
        std::fs::write(&path, &p.bytes).unwrap();
        let from_file = read_profile(&path).unwrap();
        assert!(matches!(from_file.events.source, ChunkSource::File(_)));
        let in_memory = parse_profile(&p.bytes, &path).unwrap();
        let mut got = Vec::new();
        from_file.for_each_heap_event(|e| got.push(*e)).unwrap();
        assert_eq!(got.len() as u64, n);
        assert_eq!(got, in_memory.collect_heap_events());
        // One byte of an events chunk changed, then the file cut short.
        let mut changed = p.bytes.clone();
        let at = p.bytes.len() / 2;
        changed[at] ^= 0x40;
        std::fs::write(&path, &changed).unwrap();
        let err = from_file
            .for_each_heap_event(|_| {})
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(err.contains("changed while it was read"), "{err}");
        assert!(err.contains("no longer matches its checksum"), "{err}");
        std::fs::write(&path, &p.bytes[..at]).unwrap();
        let err = from_file
            .for_each_heap_event(|_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("changed while it was read (reading byte"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A pipe or a directory given as the profile: refused without waiting
    /// for a writer.
    #[test]
    fn a_profile_path_that_is_not_a_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("lineprof-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("p.lprof");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        for path in [&fifo, &dir] {
            let err = read_profile(path).unwrap_err().to_string();
            assert!(err.contains("not a regular file"), "{err}");
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn foreign_and_empty_files_are_errors() {
        let err = parse_profile(b"", Path::new("e")).unwrap_err();
        assert!(matches!(err, Error::NotAProfile { .. }));
        let err = parse_profile(b"\x7fELF and then some bytes", Path::new("e")).unwrap_err();
        assert!(err.to_string().contains("not a lineprof profile"), "{err}");
    }
}
