//! Ways a program ends or splits: `std::process::exit` from a nested
//! function and a panic out of main still write a complete profile; a
//! `fork` child writes its own profile of what it did after the fork, and
//! the parent's is unaffected.

mod common;

use common::{
    allocs, baseline, fixture, lineprof, none, report, run_profiled, stdout, HeapFigures, Profiled,
    TempDir,
};

/// The text report of a profile has no warnings (a missing end record
/// would be one).
fn assert_complete(p: &Profiled) {
    let text = stdout(&lineprof(&["report", p.profile.to_str().unwrap()]));
    assert!(
        !text.contains("warning:"),
        "profile of {} incomplete:\n{text}",
        p.name
    );
}

#[test]
fn exit_from_a_nested_function_writes_the_profile() {
    let p = common::profile_any_exit("exit_paths", &["exit"]);
    assert_eq!(p.output.status.code(), Some(3));
    assert_complete(&p);
    let r = p.report();
    // Both blocks are live when exit runs (it runs no destructors).
    assert_eq!(
        r.self_at("vec![0u8; 2222]"),
        allocs(1, 2222).peak(2222).end(2222)
    );
    assert_eq!(
        r.self_at("vec![0u8; 1111]"),
        allocs(1, 1111).peak(1111).end(1111)
    );
    assert_eq!(r.self_at("leave(black_box(depth - 1))"), none());
    assert!(!r.has("drop(held)")); // never reached
}

#[test]
fn panic_out_of_main_writes_the_profile() {
    let p = common::profile_any_exit("exit_paths", &["panic"]);
    assert_eq!(p.output.status.code(), Some(101));
    assert_complete(&p);
    let r = p.report();
    // Freed by the unwinding, at main's closing brace, not by `drop(held)`.
    assert_eq!(r.self_at("vec![0u8; 1111]"), allocs(1, 1111).peak(1111));
    assert!(!r.has("drop(held)"));
    // Everything the program allocated was freed; only std's block is left.
    assert_eq!(r.totals().end_bytes, baseline().end_bytes);
}

#[test]
fn fork_child_writes_its_own_profile() {
    let dir = TempDir::new("fork");
    let parent_file = dir.path().join("f.lprof");
    let out = run_profiled(&fixture("fork"), &[], &parent_file);
    assert!(out.status.success(), "fork fixture failed: {out:?}");
    let mut children: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &parent_file)
        .collect();
    // Without `%p` the child's file is the parent's path + `.<child pid>`.
    assert_eq!(
        children.len(),
        1,
        "one child profile expected: {children:?}"
    );
    let child_file = children.pop().unwrap();
    let suffix = child_file.extension().unwrap().to_str().unwrap();
    assert!(
        suffix.parse::<u32>().is_ok(),
        "not a pid: {}",
        child_file.display()
    );

    let parent = report(&parent_file, "fork");
    assert_eq!(
        parent.self_at("vec![0u8; 1000]"),
        allocs(1, 1000).peak(1000)
    );
    assert_eq!(
        parent.self_at("vec![0u8; 3000]"),
        allocs(1, 3000).peak(3000)
    );
    assert_eq!(parent.self_at("drop(after)"), none().frees(1, 3000));
    assert_eq!(parent.self_at("drop(before)"), none().frees(1, 1000));
    parent.assert_only_lines(&[
        "vec![0u8; 1000]",
        "vec![0u8; 3000]",
        "drop(after)",
        "drop(before)",
    ]);
    let user = allocs(2, 4000).frees(2, 4000).peak(4000);
    assert_eq!(parent.totals(), baseline() + user);

    let child = report(&child_file, "fork");
    assert_eq!(child.self_at("vec![0u8; 2000]"), allocs(1, 2000).peak(2000));
    assert_eq!(child.self_at("drop(mine)"), none().frees(1, 2000));
    assert_eq!(child.self_at("vec![0u8; 500]"), allocs(1, 500).end(500));
    assert_eq!(
        child.total_at("child();"),
        allocs(2, 2500).frees(2, 2004).peak(2000).end(500)
    );
    // std frees its 4 B start-up block on exit: a block from before the fork.
    assert_eq!(child.self_at("process::exit(0)"), none().frees(1, 4));
    child.assert_only_lines(&[
        "vec![0u8; 2000]",
        "drop(mine)",
        "vec![0u8; 500]",
        "child();",
        "process::exit(0)",
    ]);
    let t = child.totals();
    assert_eq!(
        (t.allocations, t.allocated_bytes, t.peak_bytes, t.end_bytes),
        (2, 2500, 2000, 500)
    );
}
