//! The run store with the prebuilt fixtures (no cargo project needed):
//! a directory that is not a git repository, two runs stored at once, a
//! program that exits non-zero, one that writes no profile, a store from a
//! newer lineprof, and `--store` / `LINEPROF_STORE`.

mod common;
mod projects;

use std::process::Command;

use common::{fixture, TempDir};
use projects::{lineprof_in, stderr, stdout};
use serde_json::Value;

fn json(dir: &std::path::Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let out = lineprof_in(dir, &all);
    assert_eq!(out.status.code(), Some(0), "{all:?}: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn not_a_git_repository_still_stores_with_a_note() {
    let dir = TempDir::new("store-nogit");
    let plain = fixture("plain");
    let out = lineprof_in(dir.path(), &["run", "--", plain.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not in a git repository"),
        "{}",
        stderr(&out)
    );
    let history = json(dir.path(), &["history"]);
    let run = &history["runs"][0];
    assert_eq!(run["git"]["commit"], Value::Null);
    assert_eq!(run["name"], "plain");
    // Exact figures survive the store: 10 boxes of 4096 bytes, 8000, 80, 1024.
    let report = json(dir.path(), &["report"]);
    assert_eq!(report["run"]["id"], run["id"]);
    let line = projects::line(&report, "keep.push(Box::new");
    assert_eq!(line["self"]["allocated_bytes"], 40960);
    assert_eq!(line["self"]["allocations"], 10);
    assert!(dir.path().join(".lineprof/runs").is_dir());
    let text = stdout(&lineprof_in(dir.path(), &["history"]));
    assert!(text.contains("plain") && text.contains(" - "), "{text}");
}

#[test]
fn two_runs_at_once_both_survive() {
    let dir = TempDir::new("store-concurrent");
    let plain = fixture("plain");
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_lineprof"))
            .args(["run", "--name", "same", "--"])
            .arg(&plain)
            .current_dir(dir.path())
            .env_remove("LINEPROF_STORE")
            .output()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(start);
        let b = s.spawn(start);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert!(
        a.status.success() && b.status.success(),
        "{} {}",
        stderr(&a),
        stderr(&b)
    );
    let history = json(dir.path(), &["history", "--name", "same"]);
    let runs = history["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_ne!(runs[0]["id"], runs[1]["id"]);
    assert_eq!(
        runs[0]["totals"], runs[1]["totals"],
        "a deterministic program"
    );
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path().join(".lineprof/runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.ends_with(".json") && !n.starts_with('.')),
        "{names:?}"
    );
    // With two runs of one name, `diff` needs no arguments and finds no change.
    let d = json(dir.path(), &["diff"]);
    let lines = d["lines"].as_array().unwrap();
    assert!(lines.iter().all(|l| l["status"] == "unchanged"), "{d:#}");
}

#[test]
fn failing_program_is_stored_and_its_status_propagated() {
    let dir = TempDir::new("store-exit");
    let exe = fixture("exit_paths");
    let out = lineprof_in(dir.path(), &["run", "--", exe.to_str().unwrap(), "exit"]);
    assert_eq!(out.status.code(), Some(3), "the program's exit status");
    assert!(
        stderr(&out).contains("exited with status 3; the run was stored anyway"),
        "{}",
        stderr(&out)
    );
    let report = json(dir.path(), &["report", "exit_paths"]);
    assert_eq!(
        projects::line(&report, "vec![0u8; 2222]")["self"]["end_bytes"],
        2222
    );
}

#[test]
fn program_without_the_allocator_gets_the_fix() {
    let dir = TempDir::new("store-noprofile");
    let out = lineprof_in(dir.path(), &["run", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("no profile was written: add `#[global_allocator] static A: lineprof::Tracking = lineprof::Tracking::new();`"),
        "{err}"
    );
    let out = lineprof_in(dir.path(), &["run", "--", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/no/such/program: cannot start the program"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.path().join(".lineprof/runs").exists(),
        "nothing stored"
    );
}

#[test]
fn newer_schema_and_unknown_runs_are_clear_errors() {
    let dir = TempDir::new("store-schema");
    let store = dir.path().join("elsewhere");
    let plain = fixture("plain");
    let out = lineprof_in(
        dir.path(),
        &[
            "run",
            "--store",
            store.to_str().unwrap(),
            "--",
            plain.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // LINEPROF_STORE names the same store.
    let out = Command::new(env!("CARGO_BIN_EXE_lineprof"))
        .args(["history", "--format", "json"])
        .current_dir(dir.path())
        .env("LINEPROF_STORE", &store)
        .output()
        .unwrap();
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(history["runs"].as_array().unwrap().len(), 1);

    let s = store.to_str().unwrap();
    for (args, message) in [
        (
            vec!["report", "--store", s, "20990101T000000.000-abcdef"],
            "is not a stored run id, run name or git ref",
        ),
        (vec!["diff", "--store", s], "is the only run named `plain`"),
        (vec!["check", "--store", s], "nothing to check"),
        (
            vec![
                "check",
                "--store",
                s,
                "--tolerance=-5",
                "--baseline",
                "plain",
            ],
            "--tolerance -5",
        ),
    ] {
        let out = lineprof_in(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }

    let future = store.join("runs/20990101T000000.000-abcdef.json");
    std::fs::write(&future, r#"{"schema": 2, "run": {"something": "new"}}"#).unwrap();
    for args in [
        vec!["history"],
        vec!["report"],
        vec!["check", "--max-peak", "1GB"],
    ] {
        let mut all = args.clone();
        all.extend(["--store", s]);
        let out = lineprof_in(dir.path(), &all);
        assert_eq!(out.status.code(), Some(2), "{all:?}");
        let err = stderr(&out);
        assert!(
            err.contains("stored run has schema 2, newer than this lineprof understands"),
            "{err}"
        );
        assert!(
            err.contains("upgrade the lineprof CLI") && !err.contains("panicked"),
            "{err}"
        );
    }
}
