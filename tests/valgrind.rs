//! lineprof's totals against valgrind's memcheck on the same run.
//!
//! memcheck also counts glibc's own mallocs, which never reach Rust's
//! global allocator (the loader, the main thread's start-up). Their number
//! does not depend on what the program does on one thread, so it is
//! measured on the `empty` fixture and must be the same difference for
//! fixtures that allocate. memcheck counts a realloc as one alloc and one
//! free, as lineprof does.
//!
//! Requires valgrind (CI: `apt-get install valgrind`); without it the tests
//! fail rather than pass unchecked.

mod common;

use std::process::Command;

use common::{fixture, report, TempDir};

/// memcheck's "total heap usage" and "in use at exit" figures:
/// (allocs, frees, bytes allocated, bytes in use at exit).
type Memcheck = (u64, u64, u64, u64);

/// Runs fixture `name` under memcheck with tracking in `lineprof_env`
/// (`on` writes a profile, `off` is pass-through) and returns memcheck's
/// figures and, with tracking on, lineprof's totals of the same run.
fn under_memcheck(name: &str, lineprof_env: &str) -> (Memcheck, Option<Memcheck>) {
    let dir = TempDir::new(&format!("valgrind-{name}"));
    let profile = dir.path().join("p.lprof");
    let out = Command::new("valgrind")
        .args(["--tool=memcheck", "--error-exitcode=99"])
        .arg(fixture(name))
        .env("LINEPROF", lineprof_env)
        .env("LINEPROF_OUT", &profile)
        // The CPU sampler copies and scans raw stack words for samples in
        // C code (as perf's DWARF mode does), which memcheck reports as
        // reads of uninitialised values: these runs check heap figures.
        .env("LINEPROF_HZ", "0")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run valgrind ({e}): install it, e.g. `sudo apt-get install valgrind`")
        });
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name} under valgrind failed:\n{log}");
    let numbers = |marker: &str| -> Vec<u64> {
        let line = log
            .lines()
            .find(|l| l.contains(marker))
            .unwrap_or_else(|| panic!("no `{marker}`:\n{log}"));
        let after = &line[line.find(marker).unwrap() + marker.len()..];
        after
            .split(|c: char| !c.is_ascii_digit() && c != ',')
            .filter(|w| w.chars().any(|c| c.is_ascii_digit()))
            .map(|w| w.replace(',', "").parse().unwrap())
            .collect()
    };
    let usage = numbers("total heap usage:"); // N allocs, N frees, N bytes allocated
    let at_exit = numbers("in use at exit:"); // N bytes in N blocks
    let memcheck = (usage[0], usage[1], usage[2], at_exit[0]);
    let lineprof = (lineprof_env == "on").then(|| {
        let t = report(&profile, name).totals();
        (t.allocations, t.frees, t.allocated_bytes, t.end_bytes)
    });
    (memcheck, lineprof)
}

fn minus(a: Memcheck, b: Memcheck) -> Memcheck {
    (a.0 - b.0, a.1 - b.1, a.2 - b.2, a.3 - b.3)
}

#[test]
fn same_totals_as_memcheck_apart_from_glibc() {
    let (vg, lp) = under_memcheck("empty", "on");
    let glibc_own = minus(vg, lp.unwrap());
    // vec_growth: reallocs; leak: blocks live at exit.
    for name in ["vec_growth", "leak"] {
        let (vg, lp) = under_memcheck(name, "on");
        assert_eq!(
            minus(vg, lp.unwrap()),
            glibc_own,
            "{name}: memcheck {vg:?}, lineprof {lp:?}"
        );
    }
}

#[test]
fn tracking_allocates_nothing_through_malloc() {
    // The shim's own memory comes from mmap, so malloc sees the same calls
    // with tracking on as with it off.
    let (on, _) = under_memcheck("plain", "on");
    let (off, _) = under_memcheck("plain", "off");
    assert_eq!(on, off);
}
