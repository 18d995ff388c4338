//! `LINEPROF_MODE=aggregate`: the same program run in stream and aggregate
//! mode gives the same JSON report, line by line (SPEC.md, "The shim"), and
//! a killed aggregate run leaves its last snapshot readable.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Runs fixture `name` with `LINEPROF_MODE=mode` and CPU sampling off (CPU
/// samples differ from run to run); returns the directory and profile.
fn run(name: &str, mode: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(&format!("agg-{name}-{mode}"));
    let profile = dir.path().join(format!("{name}.lprof"));
    let mut cmd = Command::new(fixture(name));
    cmd.env("LINEPROF_OUT", &profile)
        .env("LINEPROF_MODE", mode)
        .env("LINEPROF_HZ", "0")
        .env_remove("LINEPROF")
        .env_remove("LINEPROF_SAMPLE")
        .env_remove("RUST_BACKTRACE");
    let out = output_retrying_busy(&mut cmd);
    assert!(out.status.success(), "{name} ({mode}) failed: {out:?}");
    (dir, profile)
}

/// The heap figures of every line, keyed by (file, line, function).
fn lines(r: &Report) -> Vec<(String, Value, Value)> {
    let heap = |f: &Value| {
        let mut f = f.clone();
        let o = f.as_object_mut().unwrap();
        o.remove("cpu_samples");
        o.remove("cpu_time_ns");
        f
    };
    let mut out: Vec<_> = r.json["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                format!("{}:{} {}", l["file"], l["line"], l["function"]),
                heap(&l["self"]),
                heap(&l["total"]),
            )
        })
        .filter(|(_, s, t)| s.as_object().unwrap().values().any(|v| v != 0) || t != s)
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Asserts that two reports carry the same heap figures on every line and
/// in the totals.
fn assert_same(stream: &Report, aggregate: &Report, what: &str) {
    assert_eq!(stream.totals(), aggregate.totals(), "{what}: totals");
    let (s, a) = (lines(stream), lines(aggregate));
    assert_eq!(
        s.iter().map(|l| &l.0).collect::<Vec<_>>(),
        a.iter().map(|l| &l.0).collect::<Vec<_>>(),
        "{what}: the same lines"
    );
    for (ls, la) in s.iter().zip(&a) {
        assert_eq!(ls, la, "{what}: line {}", ls.0);
    }
}

fn both(name: &str) -> (Report, Report, Vec<TempDir>) {
    let (ds, ps) = run(name, "stream");
    let (da, pa) = run(name, "aggregate");
    let (s, a) = (report(&ps, name), report(&pa, name));
    (s, a, vec![ds, da])
}

#[test]
fn single_threaded_fixtures_match_stream_mode_exactly() {
    for name in [
        "plain",
        "vec_growth",
        "realloc_shrink",
        "peak",
        "leak",
        "recursion",
        "deep_recursion",
    ] {
        let (s, a, _dirs) = both(name);
        assert_same(&s, &a, name);
        assert_eq!(a.json["warnings"], Value::Array(vec![]), "{name}");
    }
}

#[test]
fn threads_joined_between_phases_match_stream_mode_exactly() {
    let (ds, ps) = run("phases", "stream");
    let (da, pa) = run("phases", "aggregate");
    let (s, a) = (report(&ps, "phases"), report(&pa, "phases"));
    assert_same(&s, &a, "phases");
    // 24,000 events streamed; a few stacks aggregated.
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&pa) * 10 < size(&ps), "{} vs {}", size(&pa), size(&ps));
    // The live-heap series: its highest bucket is the peak (one thread runs
    // at the peak), and it never drops below what is live at exit.
    let p = lineprof_cli::analyze::profile::read_profile(&pa).unwrap();
    let summary = p.aggregate.unwrap().summary.unwrap();
    assert!(!summary.series.is_empty() && summary.series.len() <= 1024);
    assert_eq!(summary.series.iter().max(), Some(&summary.peak_bytes));
    assert_eq!(summary.peak_bytes, a.totals().peak_bytes);
    drop((ds, da));
    // The peak is the main thread's 2 MiB block plus what was live then.
    let big = a.self_at("vec![7u8; 2 << 20]");
    assert_eq!(big, allocs(1, 2 << 20).frees(0, 0).peak(2 << 20));
    assert_eq!(a.self_at("vec![i as u8; 100 + i % 50]").allocations, 16_000);
    let w = a.json["warnings"].to_string();
    assert!(
        w.contains("aggregate mode with"),
        "threads are flagged: {w}"
    );
}

#[test]
fn cross_thread_frees_match_stream_mode() {
    let (s, a, _dirs) = both("cross_thread_free");
    assert_same(&s, &a, "cross_thread_free");
}

#[test]
fn concurrent_threads_match_stream_mode_but_the_peak_split() {
    // Eight threads at once: every figure but the peak is deterministic.
    let (s, a, _dirs) = both("threads8");
    let (mut ts, mut ta) = (s.totals(), a.totals());
    assert!(ta.peak_bytes >= ts.end_bytes && ta.peak_bytes > 0);
    (ts.peak_bytes, ta.peak_bytes) = (0, 0);
    assert_eq!(ts, ta);
    let drop_peak = |l: Vec<(String, Value, Value)>| -> Vec<(String, Value, Value)> {
        l.into_iter()
            .map(|(k, mut s, mut t)| {
                s["peak_bytes"] = 0.into();
                t["peak_bytes"] = 0.into();
                (k, s, t)
            })
            .collect()
    };
    assert_eq!(drop_peak(lines(&s)), drop_peak(lines(&a)));
}

#[test]
fn fork_child_and_parent_match_stream_mode() {
    let mut reports = Vec::new();
    let mut dirs = Vec::new();
    for mode in ["stream", "aggregate"] {
        let (dir, parent) = run("fork", mode);
        let child = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p != &parent && p.extension().is_some_and(|e| e != "tmp"))
            .unwrap_or_else(|| panic!("{mode}: no child profile"));
        reports.push((report(&parent, "fork"), report(&child, "fork")));
        dirs.push(dir);
    }
    assert_same(&reports[0].0, &reports[1].0, "fork parent");
    assert_same(&reports[0].1, &reports[1].1, "fork child");
    // The child: only what it did after the fork.
    assert_eq!(
        reports[1].1.self_at("vec![0u8; 500]"),
        allocs(1, 500).end(500) // after the peak (the 2000 B block)
    );
}

/// Waits until `path` holds an aggregate snapshot.
fn wait_for(path: &Path, timeout: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < timeout,
            "no snapshot at {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_aggregate_run_leaves_its_last_snapshot() {
    let dir = TempDir::new("agg-killed");
    let profile = dir.path().join("lr.lprof");
    let mut child = Command::new(fixture("long_running"))
        .env("LINEPROF_OUT", &profile)
        .env("LINEPROF_MODE", "aggregate")
        .env_remove("LINEPROF")
        .env_remove("LINEPROF_SAMPLE")
        .spawn()
        .expect("start long_running");
    wait_for(&profile, Duration::from_secs(20));
    // Past the first snapshot, into the second.
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap(); // SIGKILL: no exit handler runs
    child.wait().unwrap();
    let r = report(&profile, "long_running");
    let line = r.self_at("vec![0u8; 1000]");
    assert!(line.allocations > 100, "{line:?}");
    assert_eq!(line.allocated_bytes, 1000 * line.allocations);
    // The ring keeps the 16 newest blocks (17 for a moment, between a new
    // block and the drop of the one it replaces): the snapshot is
    // consistent.
    assert!([16_000, 17_000].contains(&line.end_bytes), "{line:?}");
    assert_eq!(line.allocated_bytes - line.freed_bytes, line.end_bytes);
    let w = r.json["warnings"].to_string();
    assert!(w.contains("last snapshot"), "{w}");
}
