//! A program that closes every descriptor and opens its own files on the
//! numbers it frees (as daemons do) never gets profile bytes in its files,
//! and its profile is still complete.

mod common;
use common::*;

#[test]
fn closing_all_descriptors_neither_corrupts_host_files_nor_loses_the_profile() {
    let dir = TempDir::new("close-fds");
    let own = dir.path().join("own.txt");
    let p = profile("close_fds", &[own.to_str().unwrap()]);
    assert_eq!(std::fs::read(&own).unwrap(), b"the program's own data\n");
    assert_eq!(stdout(&p.output), "the program's own data\n");
    let r = p.report();
    assert_eq!(
        r.self_at("1000 x 100 bytes before"),
        allocs(1000, 100_000).frees(0, 0).peak(100_000)
    );
    assert_eq!(
        r.self_at("300,000 x 64 bytes after").allocated_bytes,
        300_000 * 64
    );
    assert_eq!(r.json["warnings"], serde_json::json!([]));
}

/// A program that replaces a thread's perf event descriptors with perf
/// events of its own keeps them when the thread exits: lineprof closes a
/// descriptor only if it still holds lineprof's own event (by the kernel's
/// event id), not merely some perf event.
#[test]
fn a_perf_event_of_the_host_on_our_old_number_is_not_closed() {
    let p = profile("host_perf_fd", &[]);
    let out = stdout(&p.output);
    if out.contains("perf events refused") {
        // perf_event_paranoid or seccomp: lineprof samples with timers,
        // which hold no descriptor.
        println!("skipped: perf events refused here");
        return;
    }
    // Every thread's sampler is visible to the program: the main thread's
    // and the spawned one's (whose exit releases it).
    let took: usize = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("took ")?
                .strip_suffix(" perf event descriptors")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        took >= 2,
        "both threads should have had lineprof's sampler: {out}"
    );
    assert!(!out.contains("closed"), "{out}");
    assert_eq!(out.matches("still open").count(), took, "{out}");
}
