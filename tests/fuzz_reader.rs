//! Structure-aware fuzzing of the profile reader (issue 11), on stable Rust
//! with a fixed seed budget. Each case is a profile with valid chunk framing
//! and valid CRC-32C checksums around hostile contents: huge and
//! negative-looking varints, stack ids past the table, out-of-order and
//! repeated sequence numbers, repeated, missing and mis-kinded chunks,
//! truncation at and around every boundary, zero and garbage tails, a second
//! writer's metadata. The real chunks of a profile of the `plain` fixture
//! are mixed in, so a case can get through the reader and symbolization
//! runs against a real executable.
//!
//! Each case must give `Ok` or an error naming the file, never a panic, and
//! the reader's peak heap (counted by this binary's global allocator) must
//! stay within a small multiple of the file's size.
//!
//! `LINEPROF_FUZZ_CASES=1000000 cargo test --release --test fuzz_reader`
//! runs a longer campaign (`LINEPROF_FUZZ_SEED` picks another sequence).
//! A failing case is written to `target/fuzz_reader-<seed>-<case>.lprof`.
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{fixture, run_profiled, TempDir};
use lineprof::format::{self, ChunkKind, Encoder};
use lineprof_cli::analyze::{profile, replay, report, stacks, symbolize};

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments;
// the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grow(new_size);
        }
        p
    }
}

fn grow(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes `f` needed above what was live when it started.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(start))
}

/// splitmix64: small, deterministic, good enough to pick cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    /// A number a hostile file would claim: small, at a type's edge, with
    /// the top bit set (negative-looking), or anything.
    fn hostile(&mut self) -> u64 {
        match self.below(10) {
            0..=3 => self.below(16),
            4 => self.below(1 << 20),
            5 => [u32::MAX as u64, u32::MAX as u64 + 1, i32::MAX as u64][self.below(3) as usize],
            6 => [u64::MAX, i64::MAX as u64, u64::MAX - 1][self.below(3) as usize],
            7 => (1 << 63) | self.below(1 << 20),
            8 => 1 << self.below(64),
            _ => self.next(),
        }
    }
}

/// The chunks of a real profile of `plain`: (kind, payload).
struct Real {
    chunks: Vec<(ChunkKind, Vec<u8>)>,
    /// Return addresses of its stacks, to make frames that resolve.
    addrs: Vec<u64>,
    /// The executable's path, for modules that name it again.
    exe: Vec<u8>,
}

fn real_profile(dir: &Path) -> (Real, Vec<u8>) {
    let path = dir.join("plain.lprof");
    assert!(run_profiled(&fixture("plain"), &[], &path).status.success());
    let bytes = std::fs::read(&path).unwrap();
    let split = format::split_chunks(&bytes).unwrap();
    let chunks: Vec<_> = split
        .chunks
        .iter()
        .map(|c| (c.kind, c.payload.to_vec()))
        .collect();
    let parsed = profile::parse_profile(&bytes, &path).unwrap();
    let addrs = parsed.stacks.iter().flatten().copied().collect();
    let exe = parsed.meta.executable.clone();
    (Real { chunks, addrs, exe }, bytes)
}

/// A payload built with the shim's encoder.
fn payload(f: impl FnOnce(&mut Encoder<'_>, &mut Rng), rng: &mut Rng) -> Vec<u8> {
    let mut buf = vec![0u8; 1 << 16];
    let mut e = Encoder::new(&mut buf, 0);
    f(&mut e, rng);
    let n = e.pos();
    buf.truncate(n);
    buf
}

/// A chunk with a valid checksum; `kind` may be one the format lacks.
fn chunk(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut c = vec![kind, 0, 0, 0];
    c.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    c.extend_from_slice(&format::crc32(payload).to_le_bytes());
    c.extend_from_slice(payload);
    c
}

fn hostile_stacks(rng: &mut Rng, real: &Real) -> Vec<u8> {
    payload(
        |e, rng| {
            let first = if rng.chance(2) {
                rng.below(64) as u32
            } else {
                rng.hostile() as u32
            };
            let count = rng.below(40) as u32;
            e.u32(first);
            // Sometimes claim more stacks than follow.
            e.u32(if rng.chance(8) {
                rng.hostile() as u32
            } else {
                count
            });
            for _ in 0..count {
                let n = if rng.chance(16) {
                    rng.hostile()
                } else {
                    rng.below(12)
                };
                if n > 64 {
                    e.varint(n);
                    break;
                }
                let frames: Vec<u64> = (0..n)
                    .map(|_| match rng.below(3) {
                        0 if !real.addrs.is_empty() => {
                            real.addrs[rng.below(real.addrs.len() as u64) as usize]
                        }
                        _ => rng.hostile(),
                    })
                    .collect();
                format::encode_stack(e, &frames);
            }
        },
        rng,
    )
}

fn hostile_events(rng: &mut Rng) -> Vec<u8> {
    payload(
        |e, rng| {
            e.u32(if rng.chance(2) {
                rng.below(4) as u32
            } else {
                rng.hostile() as u32
            });
            e.u64(if rng.chance(2) {
                rng.below(64)
            } else {
                rng.hostile()
            });
            for _ in 0..rng.below(300) {
                let mut t = if rng.chance(1000) {
                    rng.below(256) as u8
                } else {
                    1 + rng.below(4) as u8
                };
                if t <= format::tag::FREE && rng.chance(3) {
                    t |= format::tag::OTHER_BASE;
                }
                e.u8(t);
                match t {
                    format::tag::ALLOC
                    | format::tag::FREE
                    | format::tag::ALLOC_OTHER
                    | format::tag::FREE_OTHER => {
                        e.varint(if rng.chance(3) { rng.hostile() } else { 1 });
                        e.varint(if rng.chance(100) {
                            rng.hostile()
                        } else if rng.chance(3) {
                            rng.hostile() as u32 as u64
                        } else {
                            rng.below(40)
                        });
                        e.varint(rng.hostile());
                        e.varint(rng.hostile());
                    }
                    format::tag::CPU => {
                        e.varint(if rng.chance(3) {
                            rng.hostile() as u32 as u64
                        } else {
                            rng.below(40)
                        });
                        e.varint(if rng.chance(50) {
                            rng.hostile()
                        } else {
                            rng.hostile() as u32 as u64
                        });
                        e.varint(rng.hostile());
                    }
                    _ => e.varint(rng.hostile()),
                }
                if rng.chance(200) {
                    break; // a record cut inside its fields
                }
            }
        },
        rng,
    )
}

fn hostile_end(rng: &mut Rng) -> Vec<u8> {
    let end = format::End {
        events: rng.hostile(),
        dropped: rng.hostile(),
        stacks: rng.hostile(),
        truncated_stacks: rng.hostile(),
        end_unix_ns: rng.hostile(),
        write_error: [0, 28, 27, 24, 5, rng.hostile() as u32][rng.below(6) as usize],
        lost_chunks: rng.hostile(),
        lost_bytes: rng.hostile(),
        reentrant_dropped: rng.hostile(),
        fds_in_host_range: rng.hostile(),
    };
    let mut p = payload(|e, _| format::encode_end(e, &end), rng);
    if rng.chance(4) {
        p.truncate(rng.below(p.len() as u64 + 1) as usize);
    }
    p
}

fn hostile_timers(rng: &mut Rng) -> Vec<u8> {
    payload(
        |e, rng| {
            let h = format::TimersHeader {
                table: rng.hostile() as u32,
                clock_ticks: rng.hostile(),
                clock_ns: rng.hostile(),
                untimed_calls: rng.hostile(),
            };
            format::encode_timers_header(e, &h);
            for _ in 0..rng.below(20) {
                let lines = rng.below(30) as usize;
                let head = format::TimedFunctionHead {
                    path: [&b"app::work"[..], b"", b"\xff\xfe"][rng.below(3) as usize],
                    file: [&b"src/bin/plain.rs"[..], b"/etc/passwd", b""][rng.below(3) as usize],
                    line: rng.hostile() as u32,
                    calls: rng.hostile(),
                    ticks: rng.hostile(),
                    lines: if rng.chance(10) {
                        rng.hostile() as usize
                    } else {
                        lines
                    },
                };
                format::encode_timed_function(e, &head);
                for _ in 0..lines {
                    let l = format::TimedLine {
                        line: rng.below(40) as u32,
                        hits: rng.hostile(),
                        ticks: rng.hostile(),
                    };
                    format::encode_timed_line(e, &l);
                }
            }
        },
        rng,
    )
}

fn hostile_meta(rng: &mut Rng, real: &[u8]) -> Vec<u8> {
    let mut p = real.to_vec();
    // Another pid (a second writer), or other fields.
    let at = [0usize, 4, 12, 20, 24, 28][rng.below(6) as usize];
    let v = rng.hostile().to_le_bytes();
    let n = 4.min(p.len().saturating_sub(at));
    p[at..at + n].copy_from_slice(&v[..n]);
    p
}

fn hostile_modules(rng: &mut Rng, real: &Real) -> Vec<u8> {
    let meta = &real.chunks[0].1;
    payload(
        |e, rng| {
            let n = rng.below(6);
            e.varint(if rng.chance(6) { rng.hostile() } else { n });
            for _ in 0..n {
                e.u64(rng.hostile());
                e.lp_bytes(if rng.chance(2) {
                    b""
                } else {
                    &meta[..meta.len().min(20)]
                });
                let path: &[u8] = [&b"/dev/zero"[..], b"/nonexistent/lib.so", b"", &real.exe]
                    [rng.below(4) as usize];
                e.lp_bytes(path);
                let ranges = rng.below(8);
                e.varint(if rng.chance(6) { rng.hostile() } else { ranges });
                for _ in 0..ranges {
                    e.varint(rng.hostile());
                    e.varint(rng.hostile());
                }
            }
        },
        rng,
    )
}

/// One hostile profile.
fn case(rng: &mut Rng, real: &Real) -> Vec<u8> {
    let mut out = vec![0u8; format::FILE_HEADER_LEN];
    format::write_file_header(&mut out);
    if rng.chance(40) {
        out[8] = [1, 3, 0xff][rng.below(3) as usize];
    }
    let meta = &real.chunks[0].1;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for (kind, p) in &real.chunks {
        if !rng.chance(6) || *kind == ChunkKind::Meta && !rng.chance(4) {
            chunks.push(chunk(*kind as u8, p));
        }
    }
    for _ in 0..rng.below(8) {
        let c = match rng.below(10) {
            0 | 1 => chunk(ChunkKind::Stacks as u8, &hostile_stacks(rng, real)),
            9 => chunk(ChunkKind::CpuStacks as u8, &hostile_stacks(rng, real)),
            2..=4 => chunk(ChunkKind::Events as u8, &hostile_events(rng)),
            5 => chunk(ChunkKind::End as u8, &hostile_end(rng)),
            6 => chunk(ChunkKind::Timers as u8, &hostile_timers(rng)),
            7 => chunk(ChunkKind::Meta as u8, &hostile_meta(rng, meta)),
            _ => chunk(ChunkKind::Modules as u8, &hostile_modules(rng, real)),
        };
        let at = rng.below(chunks.len() as u64 + 1) as usize;
        chunks.insert(at, c);
    }
    if rng.chance(8) && !chunks.is_empty() {
        // A chunk of the wrong kind: another kind's payload, or no kind.
        let i = rng.below(chunks.len() as u64) as usize;
        chunks[i][0] = rng.below(10) as u8;
    }
    for _ in 0..rng.below(3) {
        if !chunks.is_empty() {
            let i = rng.below(chunks.len() as u64) as usize;
            let copy = chunks[i].clone();
            chunks.insert(rng.below(chunks.len() as u64 + 1) as usize, copy);
        }
    }
    if rng.chance(4) && chunks.len() > 1 {
        let i = rng.below(chunks.len() as u64) as usize;
        let j = rng.below(chunks.len() as u64) as usize;
        chunks.swap(i, j);
    }
    let mut bounds = Vec::new();
    for c in &chunks {
        bounds.push(out.len());
        out.extend_from_slice(c);
    }
    match rng.below(8) {
        // Cut at a chunk boundary, or a few bytes either side.
        0 | 1 if !bounds.is_empty() => {
            let b = bounds[rng.below(bounds.len() as u64) as usize] as i64;
            let at = (b + rng.below(30) as i64 - 15).clamp(0, out.len() as i64);
            out.truncate(at as usize);
        }
        2 => {
            let at = rng.below(out.len() as u64) as usize;
            out.truncate(at.max(format::FILE_HEADER_LEN));
            out.resize(out.len() + rng.below(5000) as usize, 0);
        }
        3 => {
            let n = rng.below(3000);
            out.extend((0..n).map(|_| rng.next() as u8));
        }
        4 if out.len() > format::FILE_HEADER_LEN => {
            let i = format::FILE_HEADER_LEN
                + rng.below((out.len() - format::FILE_HEADER_LEN) as u64) as usize;
            out[i] ^= 1 << rng.below(8);
        }
        _ => {}
    }
    out
}

/// Bytes above what was live: a multiple of the file's size plus a
/// constant for what does not depend on it (tables, the DWARF of `plain`).
fn assert_bounded(what: &str, used: usize, file_len: usize, constant: usize, at: &str) {
    let bound = 64 * file_len + constant;
    assert!(
        used <= bound,
        "{what} of {at} took {used} bytes for a {file_len}-byte file (bound {bound})"
    );
}

#[test]
fn hostile_profiles_give_ok_or_a_clean_error_in_bounded_memory() {
    let cases: u64 = std::env::var("LINEPROF_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("LINEPROF_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_175_586);
    let dir = TempDir::new("fuzz");
    let (real, real_bytes) = real_profile(dir.path());
    let path = dir.path().join("case.lprof");
    // What a full report of the real profile needs (symbolizing `plain`):
    // the constant part of the bound for cases that get that far.
    std::fs::write(&path, &real_bytes).unwrap();
    let (r, real_peak) = peak_of(|| report::report_from_profile(&path));
    r.unwrap();
    let pipeline_constant = 2 * real_peak + (8 << 20);
    let mut rng = Rng(seed);
    let (mut ok, mut errors, mut reported) = (0u64, 0u64, 0u64);
    for n in 0..cases {
        let bytes = case(&mut rng, &real);
        let at = format!("case {n} (seed {seed})");
        let keep = |why: &str| {
            let dump = common::repo()
                .join("target")
                .join(format!("fuzz_reader-{seed}-{n}.lprof"));
            let _ = std::fs::write(&dump, &bytes);
            format!("{why} in {at}, saved to {}", dump.display())
        };
        let run = std::panic::catch_unwind(|| {
            peak_of(|| profile::parse_profile(&bytes, Path::new("case.lprof")))
        });
        let Ok((parsed, used)) = run else {
            panic!("{}", keep("the reader panicked"));
        };
        assert_bounded("reading", used, bytes.len(), 1 << 20, &at);
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with("case.lprof: "),
                    "{}: {msg}",
                    keep("unnamed error")
                );
                errors += 1;
                continue;
            }
        };
        ok += 1;
        // The stages after the reader, on what it accepted; symbolizing
        // (which loads the DWARF of `plain`) one case in 8.
        let symbolizing = n % 8 == 0;
        let run = std::panic::catch_unwind(|| {
            peak_of(|| {
                let _ = parsed.warnings();
                let groups = if symbolizing {
                    symbolize::symbolize(&parsed)
                        .map(|s| stacks::group_stacks(&s.stacks).0)
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                replay::replay_grouped(&parsed, &groups)
            })
        });
        let Ok((_, used)) = run else {
            panic!("{}", keep("symbolize or replay panicked"));
        };
        assert_bounded("replaying", used, bytes.len(), pipeline_constant, &at);
        // Now and then the whole report, from a file, as the CLI makes it.
        if ok % 16 == 1 {
            std::fs::write(&path, &bytes).unwrap();
            let run = std::panic::catch_unwind(|| peak_of(|| report::report_from_profile(&path)));
            let Ok((r, used)) = run else {
                panic!("{}", keep("the report panicked"));
            };
            assert_bounded("the report", used, bytes.len(), pipeline_constant, &at);
            if let Err(e) = r {
                let msg = e.to_string();
                assert!(!msg.is_empty(), "{}", keep("empty error"));
            }
            reported += 1;
        }
    }
    eprintln!("{cases} cases: {ok} read, {errors} refused, {reported} reported in full");
    // The generator must reach both outcomes, or it tests little.
    assert!(
        ok > cases / 10 && errors > cases / 20,
        "{ok} read, {errors} refused"
    );
}
