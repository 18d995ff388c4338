//! Inputs `lineprof report` must refuse or read with care: every error
//! exits with code 2 and one message naming the file and the fix; nothing
//! panics.

mod common;

use std::path::Path;
use std::process::Output;

use common::{build_fixtures, fixture, lineprof, run_profiled, stderr, stdout, TempDir};

fn report(path: &Path) -> Output {
    lineprof(&["report", path.to_str().unwrap()])
}

/// Exit code 2 and an `error:` message that names `path` and contains `what`.
fn assert_input_error(out: &Output, path: &Path, what: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains(path.to_str().unwrap()),
        "path not named: {err}"
    );
    assert!(err.contains(what), "expected `{what}` in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A fresh profile of `plain`, in its own temp dir.
fn plain_profile() -> (TempDir, Vec<u8>) {
    let dir = TempDir::new("bad-input");
    let out = run_profiled(&fixture("plain"), &[], &dir.path().join("plain.lprof"));
    assert!(out.status.success());
    let bytes = std::fs::read(dir.path().join("plain.lprof")).unwrap();
    (dir, bytes)
}

#[test]
fn missing_file() {
    let dir = TempDir::new("missing");
    let path = dir.path().join("nothing-here.lprof");
    assert_input_error(&report(&path), &path, "no such file");
}

#[test]
fn empty_file() {
    let dir = TempDir::new("empty");
    let path = dir.path().join("empty.lprof");
    std::fs::write(&path, b"").unwrap();
    assert_input_error(&report(&path), &path, "empty");
}

#[test]
fn text_file() {
    let dir = TempDir::new("text");
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "not a profile, just some text\n".repeat(20)).unwrap();
    assert_input_error(&report(&path), &path, "not a lineprof profile");
}

#[test]
fn truncated_profile_reads_up_to_the_last_complete_chunk() {
    let (dir, bytes) = plain_profile();
    let path = dir.path().join("cut.lprof");
    let n = bytes.len();
    let mut read_ok = 0;
    for cut in (1..8).map(|k| n * k / 8).chain([n - 1]) {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let out = report(&path);
        match out.status.code() {
            // Cut inside the header or before the metadata: nothing to show.
            Some(2) => assert_input_error(&out, &path, "pass a .lprof file"),
            Some(0) => {
                read_ok += 1;
                let text = stdout(&out);
                assert!(
                    text.contains("warning: profile"),
                    "cut at {cut}/{n}, no warning:\n{text}"
                );
            }
            _ => panic!("cut at {cut}/{n}: {out:?}"),
        }
    }
    // The last cut loses only the end record.
    std::fs::write(&path, &bytes[..n - 1]).unwrap();
    let text = stdout(&report(&path));
    assert!(text.contains("src/bin/plain.rs:11"), "{text}");
    assert!(read_ok >= 4, "only {read_ok} of 8 cuts were readable");
}

/// The middle payload byte of the chunk holding the file's middle byte
/// (a payload byte, so the damage is a checksum mismatch and not a length
/// that runs past the end, which would read as truncation).
fn middle_payload_byte(bytes: &[u8]) -> usize {
    use lineprof::format::{CHUNK_HEADER_LEN, FILE_HEADER_LEN};
    let mut at = FILE_HEADER_LEN;
    loop {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let next = at + CHUNK_HEADER_LEN + len;
        if next > bytes.len() / 2 && len > 0 {
            return at + CHUNK_HEADER_LEN + len / 2;
        }
        at = next;
    }
}

/// A damaged chunk in the middle is skipped with a warning naming its
/// offset; the chunks after it are used (here the end record, so the
/// report does not call the run killed).
#[test]
fn damaged_chunk_in_the_middle_is_skipped() {
    let (dir, mut bytes) = plain_profile();
    let path = dir.path().join("corrupt.lprof");
    let i = middle_payload_byte(&bytes);
    let chunk_at = chunk_containing(&bytes, i);
    bytes[i] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let out = report(&path);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "damaged bytes at byte {chunk_at} (checksum mismatch); the chunks after them are used"
        )),
        "{text}"
    );
    assert!(!text.contains("killed"), "{text}");
    assert!(!text.contains("no end record"), "{text}");
}

/// The offset of the chunk whose bytes include `at`.
fn chunk_containing(bytes: &[u8], at: usize) -> usize {
    use lineprof::format::{CHUNK_HEADER_LEN, FILE_HEADER_LEN};
    let mut start = FILE_HEADER_LEN;
    loop {
        let len = u32::from_le_bytes(bytes[start + 4..start + 8].try_into().unwrap()) as usize;
        if at < start + CHUNK_HEADER_LEN + len {
            return start;
        }
        start += CHUNK_HEADER_LEN + len;
    }
}

#[test]
fn binary_rebuilt_after_profiling() {
    let dir = TempDir::new("rebuilt");
    let exe = dir.path().join("app");
    std::fs::copy(fixture("plain"), &exe).unwrap();
    let profile = dir.path().join("app.lprof");
    assert!(run_profiled(&exe, &[], &profile).status.success());
    std::fs::copy(fixture("empty"), &exe).unwrap(); // "rebuilt": another build-id
    assert_input_error(&report(&profile), &exe, "rebuilt");
}

#[test]
fn binary_without_debug_info() {
    let env = [
        ("CARGO_PROFILE_RELEASE_DEBUG", "0"),
        ("CARGO_PROFILE_RELEASE_STRIP", "true"),
    ];
    let bins = build_fixtures(
        "target-nodebug",
        "-C force-frame-pointers=yes",
        &env,
        &["plain"],
    );
    let dir = TempDir::new("nodebug");
    let profile = dir.path().join("plain.lprof");
    assert!(run_profiled(&bins.join("plain"), &[], &profile)
        .status
        .success());
    let out = report(&profile);
    assert_input_error(&out, &bins.join("plain"), r#"debug = "line-tables-only""#);
}

#[test]
fn binary_without_frame_pointers_is_named_up_front() {
    let bins = build_fixtures("target-nofp", "", &[], &["plain"]);
    let dir = TempDir::new("nofp");
    let profile = dir.path().join("plain.lprof");
    assert!(run_profiled(&bins.join("plain"), &[], &profile)
        .status
        .success());
    let text = stdout(&report(&profile));
    let warning = text
        .find("without frame pointers")
        .unwrap_or_else(|| panic!("no warning:\n{text}"));
    assert!(
        text[warning..].contains("-C force-frame-pointers=yes"),
        "{text}"
    );
    let first_figure = text.find("allocations").expect("summary header");
    assert!(
        warning < first_figure,
        "the warning must come before the figures:\n{text}"
    );
    // JSON carries the same warning in `warnings`, and says it on stderr.
    let out = lineprof(&["report", profile.to_str().unwrap(), "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = json["warnings"].as_array().expect("warnings array");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("force-frame-pointers")),
        "{warnings:?}"
    );
    assert!(
        stderr(&out).contains("force-frame-pointers"),
        "{}",
        stderr(&out)
    );
}
