//! Hostile files for the reader (issue 11): paths that name devices, chunks
//! repeated or of two writers, sizes no file of that length can hold. Every
//! refusal exits 2 with a message naming the file, and never hangs; what
//! can be read is read, with a warning.
mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{allocs, fixture, none, report, run_profiled, stderr, HeapFigures, TempDir};
use lineprof::format::{self, ChunkKind, CHUNK_HEADER_LEN};

/// `lineprof report <path>`, killed (and failed) after 60 s.
fn report_bounded(path: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lineprof"))
        .args(["report", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("lineprof report {} hangs", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn assert_refused(o: &Output, named: &Path) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(named.to_str().unwrap()), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn an_executable_path_naming_a_device_is_refused() {
    for device in ["/dev/zero", "/dev/urandom"] {
        let dir = TempDir::new("devexe");
        let exe = dir.path().join("app");
        std::fs::copy(fixture("plain"), &exe).unwrap();
        let profile = dir.path().join("app.lprof");
        assert!(run_profiled(&exe, &[], &profile).status.success());
        // The recorded executable now reads as the device.
        std::fs::remove_file(&exe).unwrap();
        std::os::unix::fs::symlink(device, &exe).unwrap();
        assert_refused(&report_bounded(&profile), &exe);
    }
}

#[test]
fn a_profile_path_naming_a_device_is_refused() {
    let p = Path::new("/dev/zero");
    assert_refused(&report_bounded(p), p);
}

/// The chunks of a profile: (offset, kind byte, whole chunk bytes).
fn chunks(bytes: &[u8]) -> Vec<(usize, u8, Vec<u8>)> {
    format::split_chunks(bytes)
        .unwrap()
        .chunks
        .iter()
        .map(|c| {
            let at = c.offset as usize;
            let end = at + CHUNK_HEADER_LEN + c.payload.len();
            (at, c.kind as u8, bytes[at..end].to_vec())
        })
        .collect()
}

fn warnings(r: &common::Report) -> String {
    let w = r.json["warnings"].as_array().unwrap();
    let w: Vec<&str> = w.iter().map(|s| s.as_str().unwrap()).collect();
    w.join("\n")
}

/// `threads8` with every Events chunk written twice (as a file appended
/// onto itself would hold them): the figures are those of one copy, and a
/// warning says the chunks were repeated.
#[test]
fn repeated_events_chunks_of_a_multi_thread_profile_count_once() {
    let dir = TempDir::new("dupchunks");
    let path = dir.path().join("t.lprof");
    assert!(run_profiled(&fixture("threads8"), &[], &path)
        .status
        .success());
    let bytes = std::fs::read(&path).unwrap();
    let events: Vec<_> = chunks(&bytes)
        .into_iter()
        .filter(|c| c.1 == ChunkKind::Events as u8)
        .collect();
    assert!(events.len() >= 8, "{} events chunks", events.len());
    let mut doubled = bytes.clone();
    for c in &events {
        doubled.extend_from_slice(&c.2);
    }
    std::fs::write(&path, &doubled).unwrap();
    let r = report(&path, "threads8");
    let mut churn = r.self_at("vec![0u8; size]");
    churn.peak_bytes = 0;
    assert_eq!(churn, allocs(8000, 2_304_000));
    assert_eq!(r.self_at("drop(block)"), none().frees(8000, 2_304_000));
    let w = warnings(&r);
    assert!(
        w.contains(&format!(
            "{} events chunks repeat an earlier one byte for byte (the first at byte {} repeats byte {}",
            events.len(),
            bytes.len(),
            events[0].0
        )),
        "{w}"
    );
}

/// Two runs' chunks in one file (two processes that shared a path with an
/// older lineprof): refused, naming both pids.
#[test]
fn two_writers_chunks_in_one_file_are_refused() {
    let dir = TempDir::new("mixed");
    let (a, b) = (dir.path().join("a.lprof"), dir.path().join("b.lprof"));
    assert!(run_profiled(&fixture("plain"), &[], &a).status.success());
    assert!(run_profiled(&fixture("plain"), &[], &b).status.success());
    let mut mixed = std::fs::read(&a).unwrap();
    let second = std::fs::read(&b).unwrap();
    mixed.extend_from_slice(&second[format::FILE_HEADER_LEN..]);
    let path = dir.path().join("mixed.lprof");
    std::fs::write(&path, &mixed).unwrap();
    let out = report_bounded(&path);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with(&format!(
            "error: {}: two processes wrote into this profile",
            path.display()
        )),
        "{err}"
    );
    let pid = |p: &Path| {
        let bytes = std::fs::read(p).unwrap();
        let meta = &chunks(&bytes)[0].2[CHUNK_HEADER_LEN..];
        format::decode_meta(meta).unwrap().pid
    };
    assert!(err.contains(&format!("is pid {}'s", pid(&a))), "{err}");
    assert!(err.contains(&format!("pid {}'s)", pid(&b))), "{err}");
    assert!(err.contains("own LINEPROF_OUT"), "{err}");
}

/// A CRC-valid chunk placing a stack at id 4e9 (the old reader allocated
/// 100 GB for it), and events naming stack 4e9: refused with exit 2, and
/// read with a warning.
#[test]
fn crafted_huge_stack_ids_neither_abort_nor_allocate() {
    let dir = TempDir::new("hugeids");
    let path = dir.path().join("p.lprof");
    assert!(run_profiled(&fixture("plain"), &[], &path).status.success());
    let bytes = std::fs::read(&path).unwrap();
    let seal = |kind: ChunkKind, payload: &[u8]| {
        let mut c = vec![0u8; CHUNK_HEADER_LEN];
        c.extend_from_slice(payload);
        format::seal_chunk(kind, &mut c);
        c
    };
    let mut stacks = 4_000_000_000u32.to_le_bytes().to_vec();
    stacks.extend_from_slice(&1u32.to_le_bytes());
    stacks.push(0);
    let mut crafted = bytes.clone();
    crafted.extend(seal(ChunkKind::Stacks, &stacks));
    std::fs::write(&path, &crafted).unwrap();
    let out = report_bounded(&path);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("stack ids 4000000000..4000000001 are more than a file of"),
        "{err}"
    );
    // Events chunk: thread 0, base 1 << 40 | 1 << 63 (a clock reading), one
    // alloc of 8 bytes with stack id 4e9.
    let mut events = 0u32.to_le_bytes().to_vec();
    events.extend_from_slice(&((1u64 << 63) | (1 << 40)).to_le_bytes());
    let mut e = [0u8; 64];
    let mut enc = format::Encoder::new(&mut e, 0);
    enc.u8(format::tag::ALLOC);
    enc.varint(0);
    enc.varint(4_000_000_000);
    enc.varint(8);
    enc.varint(format::zigzag(0x1000));
    let n = enc.pos();
    events.extend_from_slice(&e[..n]);
    let mut crafted = bytes.clone();
    crafted.extend(seal(ChunkKind::Events, &events));
    std::fs::write(&path, &crafted).unwrap();
    let r = report(&path, "plain");
    let w = warnings(&r);
    assert!(
        w.contains("1 heap events and CPU samples name a stack the profile does not define"),
        "{w}"
    );
}
