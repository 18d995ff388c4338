//! Exact per-line heap figures for each single-threaded fixture (and the
//! two-thread `cross_thread_free`). The expected numbers come from the
//! comments in fixtures/src/bin/<name>.rs; every line of the fixture that
//! shows up in the report is checked, so a figure attributed to the wrong
//! line fails too. Totals are the `empty` fixture's (the std runtime's own
//! blocks) plus the fixture's own.

mod common;

use common::{
    allocs, baseline, fixture, none, output_retrying_busy, profile, report, stderr, Figures,
    HeapFigures, TempDir,
};
use std::process::Command;

#[test]
fn plain() {
    let r = profile("plain", &[]).report();
    let buffers = allocs(10, 40960).peak(40960);
    assert_eq!(r.self_at("Vec::with_capacity(10)"), allocs(1, 80).peak(80));
    assert_eq!(r.self_at("keep.push(Box::new"), buffers);
    assert_eq!(r.self_at("black_box(make_buffers())"), none());
    assert_eq!(
        r.total_at("black_box(make_buffers())"),
        allocs(11, 41040).peak(41040)
    );
    assert_eq!(r.self_at("vec![7u64; 1000]"), allocs(1, 8000).peak(8000));
    assert_eq!(r.self_at("drop(temp)"), none().frees(1, 8000));
    // stdout's buffer is allocated after the peak and freed by std at exit.
    assert_eq!(r.self_at("println!"), allocs(1, 1024));
    assert_eq!(r.self_at("drop(keep)"), none().frees(11, 41040));
    r.assert_only_lines(&[
        "Vec::with_capacity(10)",
        "keep.push(Box::new",
        "black_box(make_buffers())",
        "vec![7u64; 1000]",
        "drop(temp)",
        "println!",
        "drop(keep)",
    ]);
    let user = allocs(12, 49040).frees(12, 49040).peak(49040);
    let stdout_buffer = allocs(1, 1024).frees(1, 1024);
    assert_eq!(r.totals(), baseline() + user + stdout_buffer);
}

#[test]
fn vec_growth() {
    let r = profile("vec_growth", &[]).report();
    // 1 alloc of 32 B, then reallocs to 64, 128, 256, 512, 1024 B.
    let growth = allocs(6, 2016).frees(5, 992).peak(1024);
    assert_eq!(r.self_at("v.push(black_box(i))"), growth);
    assert_eq!(r.total_at("v.push(black_box(i))"), growth);
    assert_eq!(r.self_at("black_box(grow())"), none());
    assert_eq!(r.total_at("black_box(grow())"), growth);
    assert_eq!(r.self_at("drop(v)"), none().frees(1, 1024));
    r.assert_only_lines(&["v.push(black_box(i))", "black_box(grow())", "drop(v)"]);
    assert_eq!(
        r.totals(),
        baseline() + allocs(6, 2016).frees(6, 2016).peak(1024)
    );
}

#[test]
fn realloc_shrink() {
    let r = profile("realloc_shrink", &[]).report();
    assert_eq!(r.self_at("Vec::with_capacity"), allocs(1, 1000).peak(1000));
    // The 1000 B block is freed and a 10 B one allocated, both here.
    assert_eq!(r.self_at("v.shrink_to_fit()"), allocs(1, 10).frees(1, 1000));
    assert_eq!(
        r.total_at("black_box(shrink())"),
        allocs(2, 1010).frees(1, 1000).peak(1000)
    );
    assert_eq!(r.self_at("drop(v)"), none().frees(1, 10));
    r.assert_only_lines(&[
        "Vec::with_capacity",
        "v.shrink_to_fit()",
        "black_box(shrink())",
        "drop(v)",
    ]);
    assert_eq!(
        r.totals(),
        baseline() + allocs(2, 1010).frees(2, 1010).peak(1000)
    );
}

#[test]
fn frees_belong_to_the_freeing_line_and_thread() {
    let r = profile("cross_thread_free", &[]).report();
    assert_eq!(r.self_at("vec![1u8; n]"), allocs(3, 7000).peak(7000));
    assert_eq!(r.total_at("make(1000)"), allocs(1, 1000).peak(1000));
    assert_eq!(r.total_at("make(2000)"), allocs(1, 2000).peak(2000));
    assert_eq!(r.total_at("make(4000)"), allocs(1, 4000).peak(4000));
    assert_eq!(r.self_at("drop(a)"), none().frees(1, 1000));
    // Freed on the spawned thread, through `release`.
    assert_eq!(r.self_at("drop(black_box(v))"), none().frees(2, 6000));
    assert_eq!(r.self_at("release(b)"), none());
    assert_eq!(r.total_at("release(b)"), none().frees(1, 2000));
    assert_eq!(r.total_at("release(c)"), none().frees(1, 4000));
    r.assert_only_lines(&[
        "vec![1u8; n]",
        "make(1000)",
        "make(2000)",
        "make(4000)",
        "drop(a)",
        "drop(black_box(v))",
        "release(b)",
        "release(c)",
        // std's own blocks for the thread (handle, closure box, result packet)
        "std::thread::spawn",
        "t.join()",
    ]);
}

#[test]
fn leaks_are_end_bytes() {
    let r = profile("leak", &[]).report();
    assert_eq!(
        r.self_at("mem::forget"),
        allocs(1, 5000).peak(5000).end(5000)
    );
    assert_eq!(r.self_at("Box::leak"), allocs(1, 700).peak(700).end(700));
    assert_eq!(r.self_at("vec![0u8; 900]"), allocs(1, 900).peak(900));
    assert_eq!(r.self_at("drop(freed)"), none().frees(1, 900));
    r.assert_only_lines(&["mem::forget", "Box::leak", "vec![0u8; 900]", "drop(freed)"]);
    assert_eq!(
        r.totals(),
        baseline() + allocs(3, 6600).frees(1, 900).peak(6600).end(5700)
    );
}

#[test]
fn peak_belongs_to_the_lines_live_at_the_peak() {
    let r = profile("peak", &[]).report();
    let mib = 1 << 20;
    assert_eq!(r.self_at("vec![0u8; 1 << 20]"), allocs(1, mib).peak(mib));
    assert_eq!(r.self_at("drop(big)"), none().frees(1, mib));
    // Allocated after the peak: no peak bytes, though it is the larger live block later.
    assert_eq!(r.self_at("vec![0u8; 300 << 10]"), allocs(1, 307200));
    assert_eq!(r.total_at("f();"), allocs(1, mib).frees(1, mib).peak(mib));
    assert_eq!(r.total_at("let kept = g();"), allocs(1, 307200));
    assert_eq!(r.self_at("drop(black_box(kept))"), none().frees(1, 307200));
    r.assert_only_lines(&[
        "vec![0u8; 1 << 20]",
        "drop(big)",
        "vec![0u8; 300 << 10]",
        "f();",
        "let kept = g();",
        "drop(black_box(kept))",
    ]);
    let user = allocs(2, mib + 307200).frees(2, mib + 307200).peak(mib);
    assert_eq!(r.totals(), baseline() + user);
}

#[test]
fn recursion_counts_each_event_once_per_line() {
    let r = profile("recursion", &[]).report();
    let all_levels = allocs(6, 600).frees(6, 600).peak(600);
    assert_eq!(r.self_at("vec![0u8; 100]"), allocs(6, 600).peak(600));
    assert_eq!(r.total_at("vec![0u8; 100]"), allocs(6, 600).peak(600));
    // On the stack 1 to 5 times for the deeper levels' events; each counts once.
    assert_eq!(r.self_at("descend(black_box(depth - 1))"), none());
    assert_eq!(
        r.total_at("descend(black_box(depth - 1))"),
        allocs(5, 500).frees(5, 500).peak(500)
    );
    assert_eq!(r.self_at("drop(v)"), none().frees(6, 600));
    assert_eq!(r.total_at("descend(black_box(5))"), all_levels);
    r.assert_only_lines(&[
        "vec![0u8; 100]",
        "descend(black_box(depth - 1))",
        "drop(v)",
        "descend(black_box(5))",
    ]);
    assert_eq!(r.totals(), baseline() + all_levels);
}

/// Stacks of 60+ frames whose chains are kept and checked (session 5): two
/// callers reach the recursion at the same stack addresses, and their
/// stacks differ only in their outermost records (past the 60th for the
/// innermost allocations). A check that stopped short of
/// the last record would give caller b's events caller a's stack.
#[test]
fn deep_stacks_that_differ_only_in_their_outer_frames_keep_apart() {
    let r = profile("deep_recursion", &[]).report();
    let counts = |f: Figures| (f.allocations, f.allocated_bytes, f.frees, f.freed_bytes);
    let each = (12_200, 292_800, 12_200, 292_800);
    assert_eq!(counts(r.total_at("// caller a")), each);
    assert_eq!(counts(r.total_at("// caller b")), each);
    let v = r.self_at("vec![depth as u8; 24]");
    assert_eq!((v.allocations, v.allocated_bytes), (24_400, 585_600));
}

#[test]
fn inlined_helper_has_its_own_line() {
    let r = profile("inlined", &[]).report();
    let helper = r.line("vec![5u8; n]");
    assert!(
        helper["function"].as_str().unwrap().ends_with("helper"),
        "the inlined helper's line is named after it: {helper}"
    );
    assert_eq!(r.self_at("vec![5u8; n]"), allocs(2, 3000).peak(3000));
    assert_eq!(r.self_at("helper(black_box(1000))"), none());
    assert_eq!(
        r.total_at("helper(black_box(1000))"),
        allocs(1, 1000).peak(1000)
    );
    assert_eq!(r.self_at("helper(black_box(2000))"), none());
    assert_eq!(
        r.total_at("helper(black_box(2000))"),
        allocs(1, 2000).peak(2000)
    );
    assert_eq!(
        r.total_at("black_box(caller())"),
        allocs(2, 3000).peak(3000)
    );
    assert_eq!(r.self_at("drop(a)"), none().frees(1, 1000));
    assert_eq!(r.self_at("drop(b)"), none().frees(1, 2000));
    r.assert_only_lines(&[
        "vec![5u8; n]",
        "helper(black_box(1000))",
        "helper(black_box(2000))",
        "black_box(caller())",
        "drop(a)",
        "drop(b)",
    ]);
    assert_eq!(
        r.totals(),
        baseline() + allocs(2, 3000).frees(2, 3000).peak(3000)
    );
}

#[test]
fn call_paths_at_one_depth_stay_apart() {
    let r = profile("same_depth", &[]).report();
    let blocks = |n: u64| allocs(n, 64 * n).peak(64 * n);
    assert_eq!(r.self_at("vec![0u8; 64]"), blocks(1300));
    for (i, n) in [200, 200, 200, 100, 100, 100, 100, 100, 100, 100]
        .into_iter()
        .enumerate()
    {
        let line = format!("// caller {i}:");
        assert_eq!(r.self_at(&line), none(), "{line}");
        assert_eq!(r.total_at(&line), blocks(n), "{line}");
    }
    for i in 1..=6 {
        assert_eq!(r.total_at(&format!("// helper {i}:")), blocks(1300));
    }
    assert_eq!(r.total_at("// ten paths"), blocks(1000));
    assert_eq!(r.total_at("// three paths"), blocks(300));
    assert_eq!(
        r.self_at("Vec::with_capacity(1300)"),
        allocs(1, 31200).peak(31200)
    );
    assert_eq!(r.self_at("drop(keep)"), none().frees(1301, 114400));
    let mut lines: Vec<String> = (0..10).map(|i| format!("// caller {i}:")).collect();
    lines.extend((1..=6).map(|i| format!("// helper {i}:")));
    lines.extend(
        [
            "vec![0u8; 64]",
            "// ten paths",
            "// three paths",
            "ten(black_box(&mut keep))",
            "three(black_box(&mut keep))",
            "Vec::with_capacity(1300)",
            "drop(keep)",
        ]
        .map(String::from),
    );
    r.assert_only_lines(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    let all = allocs(1301, 114400).frees(1301, 114400).peak(114400);
    assert_eq!(r.totals(), baseline() + all);
}

/// A thread that frees the main thread's blocks while it allocates its own
/// (its events alternate between the main heap and its arena): figures
/// exact, and its addresses written as short deltas from two bases (with
/// one, every event of the thread carried a 6-byte delta).
#[test]
fn a_thread_alternating_between_two_heap_regions_is_exact_and_compact() {
    let dir = TempDir::new("two_regions");
    let profile = dir.path().join("two_regions.lprof");
    // Heap events only: CPU samples' stack copies would blur the size.
    let out = output_retrying_busy(
        Command::new(fixture("two_regions"))
            .env("LINEPROF_OUT", &profile)
            .env("LINEPROF_HZ", "0")
            .env_remove("LINEPROF_SAMPLE"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r = report(&profile, "two_regions");
    assert_eq!(
        r.self_at("main's 20000 blocks of 48 B"),
        allocs(20_000, 960_000).frees(0, 0).peak(960_000)
    );
    assert_eq!(
        r.self_at("the thread frees main's blocks"),
        none().frees(20_000, 960_000)
    );
    let own = r.self_at("the thread's own 20000 blocks of 40 B");
    assert_eq!((own.allocations, own.allocated_bytes), (20_000, 800_000));
    let events = r.json["totals"]["allocations"].as_u64().unwrap()
        + r.json["totals"]["frees"].as_u64().unwrap();
    // Measured: 5.8 bytes an event with two bases, 8.6 with one.
    let size = std::fs::metadata(&profile).unwrap().len();
    assert!(
        (size as f64) < 7.2 * events as f64,
        "{size} bytes for {events} heap events"
    );
}
