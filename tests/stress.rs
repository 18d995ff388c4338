//! The shim under load: 32 waves of 8 short-lived threads (thread states
//! are released and reused), blocks freed on another thread, a fork from
//! a multithreaded process, and CPU sampling at 5 kHz, with each CPU
//! backend. The figures must still be exact and complete.

mod common;
use common::*;
use std::process::Command;

fn run(backend: &str) {
    let dir = TempDir::new("stress");
    let pattern = dir.path().join("s-%p.lprof");
    let out = output_retrying_busy(
        Command::new(fixture("stress"))
            .env("LINEPROF_OUT", &pattern)
            .env("LINEPROF_HZ", "5000")
            .env("LINEPROF_CPU", backend),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "allocated 14085120 collected 1391616\n");
    let mut profiles: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    profiles.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    assert_eq!(profiles.len(), 2, "parent and fork child: {profiles:?}");
    let (child, parent) = (
        report(&profiles[0], "stress"),
        report(&profiles[1], "stress"),
    );

    // 32 x 8 x 1000 blocks of 24..=87 bytes, exactly.
    let worker = parent.self_at("1000 per thread, 24..=87 bytes");
    assert_eq!(
        (worker.allocations, worker.allocated_bytes),
        (256_000, 14_085_120)
    );
    // Everything freed, on whichever thread: only std's own block is left.
    let totals = parent.totals();
    assert_eq!(
        totals.frees,
        totals.allocations - baseline().allocations + baseline().frees
    );
    assert_eq!(totals.end_bytes, baseline().end_bytes);
    assert_eq!(parent.json["warnings"], serde_json::json!([]));

    // The child's profile holds what it did after the fork, nothing else.
    assert_eq!(
        child.self_at("child: 3 x 1000 bytes"),
        allocs(3, 3000).peak(3000).end(3000)
    );
    assert_eq!(
        child.self_at("child: the outer Vec"),
        allocs(1, 72).peak(72).end(72)
    );
    assert_eq!(child.totals().allocations, 4);
    assert_eq!(child.json["warnings"], serde_json::json!([]));
}

#[test]
fn exact_under_thread_churn_fork_and_fast_sampling_with_timers() {
    run("timer");
}

#[test]
fn exact_under_thread_churn_fork_and_fast_sampling_with_perf_events() {
    run("perf");
}
