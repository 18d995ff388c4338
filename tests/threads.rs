//! Eight threads allocating at once, with `%p` in LINEPROF_OUT: the profile
//! lands under the process id and every thread's events are in it, with
//! exact counts and bytes.

mod common;

use common::{allocs, fixture, none, report, run_profiled, HeapFigures, TempDir};

#[test]
fn eight_threads_exact_totals_under_pid_path() {
    let dir = TempDir::new("threads8");
    let out = run_profiled(&fixture("threads8"), &[], &dir.path().join("t-%p.lprof"));
    assert!(out.status.success(), "threads8 failed: {out:?}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "one profile expected: {names:?}");
    let pid: u32 = names[0]
        .strip_prefix("t-")
        .and_then(|n| n.strip_suffix(".lprof"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("`%p` not replaced by a pid: {}", names[0]));
    assert_ne!(pid, std::process::id());

    let r = report(&dir.path().join(&names[0]), "threads8");
    // Thread i: 1000 blocks of 64 * (i + 1) B; 64 * (1 + ... + 8) * 1000 = 2304000.
    let mut churn = r.self_at("vec![0u8; size]");
    // Which blocks are live at the peak depends on the interleaving; at most
    // one per thread: 64 * (1 + ... + 8) = 2304 B.
    assert!(churn.peak_bytes <= 2304, "peak {churn:?}");
    churn.peak_bytes = 0;
    assert_eq!(churn, allocs(8000, 2_304_000));
    assert_eq!(r.self_at("drop(block)"), none().frees(8000, 2_304_000));
    let mut per_thread = r.total_at("churn(64 * (i + 1))");
    per_thread.peak_bytes = 0;
    assert_eq!(per_thread, allocs(8000, 2_304_000).frees(8000, 2_304_000));
}
