//! Reads a `.lprof` file into plain data: metadata, modules, interned stacks
//! and the heap events of all threads merged into one global order.
//!
//! Invariants of the result: `heap_events` is in sequence-number order with
//! the holes (sequence numbers handed out but never written, as when a
//! crashed process lost its buffers) removed, and `missing_events` counts
//! those holes. A file cut short is not an error: its complete chunks are
//! used and a warning says so.

use std::path::{Path, PathBuf};

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

/// CPU samples taken with one stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    pub stack: u32,
    pub count: u32,
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
    pub heap_events: Vec<HeapEvent>,
    pub cpu_samples: Vec<CpuSample>,
    /// The `End` chunk, present when the program exited cleanly.
    pub end: Option<End>,
    /// Byte offset where an incomplete final chunk starts, if any.
    pub truncated_at: Option<u64>,
    /// Sequence numbers with no event (lost when the process died).
    pub missing_events: u64,
    /// An aggregate profile (`LINEPROF_MODE=aggregate`): per-stack heap
    /// figures instead of `heap_events`.
    pub aggregate: Option<Aggregate>,
}

/// The heap figures of an aggregate profile's snapshot.
#[derive(Debug, Clone, Default)]
pub struct Aggregate {
    pub stacks: Vec<HeapStack>,
    /// Absent when the file ends before its summary (not written by
    /// lineprof: a snapshot is renamed into place only when complete).
    pub summary: Option<HeapSummary>,
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
                "profile has no end record (the program crashed or was killed?); showing what was written"
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
        if let Some(end) = &self.end {
            if end.dropped > 0 {
                out.push(format!(
                    "the program could not record {} events (out of buffer space); figures are lower bounds",
                    end.dropped
                ));
            }
            if end.truncated_stacks > 0 {
                out.push(format!(
                    "{} stacks were cut at the maximum depth of {} frames; raise LINEPROF_DEPTH for complete `total` figures",
                    end.truncated_stacks, self.meta.max_depth
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

/// Reads and decodes the profile at `path`.
pub fn read_profile(path: &Path) -> Result<Profile> {
    let data = std::fs::read(path).map_err(|e| Error::io(path, "read the profile", e))?;
    parse_profile(&data, path)
}

/// Decodes a profile held in memory; `path` is only used in messages.
pub fn parse_profile(data: &[u8], path: &Path) -> Result<Profile> {
    let chunks = format::split_chunks(data).map_err(|e| format_error(e, path))?;
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
    let mut ordered = EventOrder::default();
    let mut saw_meta = false;
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
                    Event::Alloc {
                        seq,
                        stack,
                        size,
                        addr,
                    } => ordered.put(seq, thread, addr, size, stack, HeapEventKind::Alloc),
                    Event::Free {
                        seq,
                        stack,
                        size,
                        addr,
                    } => ordered.put(seq, thread, addr, size, stack, HeapEventKind::Free),
                    Event::Cpu { stack, count, .. } => {
                        profile.cpu_samples.push(CpuSample { stack, count })
                    }
                    Event::Time { .. } => {}
                })
                .map_err(|m| corrupt(m.0))?;
                if bad_seq {
                    return Err(corrupt("event sequence number out of range"));
                }
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
        }
    }
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
    let (events, missing) = ordered.finish(expected);
    profile.heap_events = events;
    profile.missing_events = missing;
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

/// Puts heap events in their global order. Order numbers come in two
/// kinds (see `lineprof::format`): small dense block numbers, used while a
/// single thread records, which index `dense` directly; and time-stamp
/// counter readings marked with `CLOCK_MARK`, used once several threads
/// record, which come after all of those and are sorted (ties between
/// threads broken by thread index; a thread's own readings increase).
#[derive(Default)]
struct EventOrder {
    dense: Vec<HeapEvent>,
    filled: u64,
    clocked: Vec<(u64, u32, HeapEvent)>,
}

const HOLE: HeapEvent = HeapEvent {
    addr: 0,
    size: 0,
    stack: 0,
    kind: HeapEventKind::Hole,
};

/// Marks an order number read from the time-stamp counter.
const CLOCK_MARK: u64 = 1 << 63;

impl EventOrder {
    fn put(
        &mut self,
        seq: u64,
        thread: u32,
        addr: u64,
        size: u64,
        stack: u32,
        kind: HeapEventKind,
    ) {
        let event = HeapEvent {
            addr,
            size,
            stack,
            kind,
        };
        if seq & CLOCK_MARK != 0 {
            self.clocked.push((seq, thread, event));
            return;
        }
        let i = seq as usize;
        if i >= self.dense.len() {
            let grown = (i + 1).max(self.dense.len() * 2).max(1024);
            self.dense.resize(grown, HOLE);
        }
        if self.dense[i].kind == HeapEventKind::Hole {
            self.filled += 1;
        }
        self.dense[i] = event;
    }

    /// The events in order without holes, and how many events are missing:
    /// fewer than `expected` (the writer's count of recorded events), or,
    /// without it, the holes below the highest block number seen.
    fn finish(mut self, expected: Option<u64>) -> (Vec<HeapEvent>, u64) {
        let last = self
            .dense
            .iter()
            .rposition(|e| e.kind != HeapEventKind::Hole)
            .map_or(0, |i| i + 1);
        let recorded = self.filled + self.clocked.len() as u64;
        // With the writer's count of events, gaps in the numbering are not
        // losses (threads take numbers in blocks); without it (a crash),
        // every gap below the last block number may be one.
        let missing = match expected {
            Some(expected) => expected.saturating_sub(recorded),
            None => last as u64 - self.filled,
        };
        self.dense.truncate(last);
        self.dense.retain(|e| e.kind != HeapEventKind::Hole);
        self.clocked
            .sort_unstable_by_key(|&(clock, thread, _)| (clock, thread));
        let mut events = self.dense;
        events.extend(self.clocked.into_iter().map(|(_, _, e)| e));
        (events, missing)
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
                        Ev::Cpu(st, count) => {
                            e.u8(format::tag::CPU);
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
        let kinds: Vec<_> = prof.heap_events.iter().map(|e| (e.kind, e.size)).collect();
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
        assert_eq!(prof.heap_events.len(), 2);
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
        let order: Vec<(u64, u64)> = prof.heap_events.iter().map(|e| (e.addr, e.size)).collect();
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
