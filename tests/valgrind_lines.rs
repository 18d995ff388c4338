//! Per-line `total` figures against valgrind's DHAT on the same binary.
//!
//! The `valgrind_lines` fixture (std only: generic layers over a trait,
//! HashMap, BTreeMap, String growth, iterator chains, an inlined helper,
//! recursion) runs once with lineprof and once under DHAT with tracking off.
//! From DHAT's program points (a stack, its bytes and blocks) the test
//! computes, per (file, line), the bytes and blocks of the events whose stack
//! contains the line, once per event, and compares them with lineprof's
//! `total.allocated_bytes` and `total.allocations` on every line where either
//! side has 1 KiB or more.
//!
//! How the two are made comparable:
//! - DHAT also sees glibc's own mallocs (stdio buffers, `pthread_getattr_np`
//!   during std's start-up) and lineprof's load-time probe block, none of
//!   which reach the tracker: only stacks through `__rust_alloc` and friends
//!   count, and not the probe (`lineprof::start_at_load`).
//! - Frames up to the outermost `__rust_*` frame are the allocator (malloc,
//!   the shim, `System`); lineprof drops them too.
//! - DHAT files are absolute; lineprof's user files are relative to the
//!   fixtures crate.
//! - DHAT puts a block grown by libc's `realloc` on the stack of its first
//!   `malloc` (lineprof: the realloc's stack), so the fixture's allocator
//!   makes realloc an alloc + copy + free (see the fixture).
//! - lineprof's line is (file, line, function): a closure on the line of its
//!   caller, or two instances of a generic function in one stack (std's two
//!   `catch_unwind`s), are several lines of lineprof and one (file, line) of
//!   DHAT. There DHAT's figure must lie between the largest and the sum of
//!   lineprof's.
//!
//! Requires valgrind (CI: `apt-get install valgrind`); without it the test
//! fails rather than passes unchecked.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use common::{fixture, profile, repo, TempDir};
use serde_json::Value;

const NAME: &str = "valgrind_lines";
const MIN_BYTES: u64 = 1024;

/// (bytes, blocks or allocations).
type Fig = (u64, u64);

struct Frame {
    function: String,
    /// (file, line) when DHAT has line info.
    place: Option<(String, u64)>,
}

/// One DHAT `ftbl` entry: `0x1234: func (file.rs:12)` or `0x1234: func (in obj)`.
fn parse_frame(s: &str) -> Frame {
    let rest = s.split_once(": ").map_or(s, |(_, r)| r);
    let Some((function, inner)) = rest.strip_suffix(')').and_then(|r| r.rsplit_once(" (")) else {
        return Frame {
            function: rest.to_string(),
            place: None,
        };
    };
    let place = if inner.starts_with("in ") {
        None
    } else {
        inner
            .rsplit_once(':')
            .and_then(|(f, l)| Some((f.to_string(), l.parse().ok()?)))
    };
    Frame {
        function: function.to_string(),
        place,
    }
}

/// The global-allocator entry points, demangled (`__rustc::__rust_alloc`) or
/// not (`_RNv..___rust_alloc`, `_ZN..__rust_alloc17h..E`).
fn is_rust_alloc_entry(function: &str) -> bool {
    [
        "__rust_alloc",
        "__rust_realloc",
        "__rust_alloc_zeroed",
        "__rust_dealloc",
    ]
    .iter()
    .any(|e| {
        function.ends_with(e)
            || function.contains(&format!("{e}17h"))
            || function.contains(&format!("{}E", &e[2..]))
    })
}

fn is_std(file: &str) -> bool {
    file.starts_with("/rustc/")
}

/// DHAT's per-line figures, from the Rust allocator's events only, plus the
/// same without the stacks that have only std frames (see `known_startup`),
/// and DHAT's totals over the Rust allocator's events.
struct Dhat {
    lines: BTreeMap<(String, u64), Fig>,
    lines_without_std_only: BTreeMap<(String, u64), Fig>,
    totals: Fig,
    std_only_stacks: Vec<String>,
}

fn run_dhat(exe: &Path, out: &Path, workspace: &Path) -> Dhat {
    let result = Command::new("valgrind")
        .args([
            "--tool=dhat",
            "--num-callers=500",
            "--read-inline-info=yes",
            "--fullpath-after=",
        ])
        .arg(format!("--dhat-out-file={}", out.display()))
        .arg(exe)
        .env("LINEPROF", "off")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run valgrind ({e}): install it, e.g. `sudo apt-get install valgrind`")
        });
    assert!(
        result.status.success(),
        "{NAME} under valgrind failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let json: Value =
        serde_json::from_slice(&std::fs::read(out).expect("DHAT wrote its file")).expect("JSON");
    let ftbl: Vec<Frame> = json["ftbl"]
        .as_array()
        .expect("ftbl")
        .iter()
        .map(|f| parse_frame(f.as_str().expect("frame string")))
        .collect();
    let prefix = format!("{}/", workspace.display());
    let mut dhat = Dhat {
        lines: BTreeMap::new(),
        lines_without_std_only: BTreeMap::new(),
        totals: (0, 0),
        std_only_stacks: Vec::new(),
    };
    for pp in json["pps"].as_array().expect("pps") {
        let fig = (pp["tb"].as_u64().unwrap(), pp["tbk"].as_u64().unwrap());
        let frames: Vec<&Frame> = pp["fs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| &ftbl[i.as_u64().unwrap() as usize])
            .collect();
        // Not through Rust's allocator (glibc's own), or lineprof's probe.
        let Some(entry) = frames
            .iter()
            .rposition(|f| is_rust_alloc_entry(&f.function))
        else {
            continue;
        };
        if frames.iter().any(|f| f.function.contains("start_at_load")) {
            continue;
        }
        dhat.totals.0 += fig.0;
        dhat.totals.1 += fig.1;
        let places: BTreeSet<(String, u64)> = frames[entry + 1..]
            .iter()
            .filter_map(|f| f.place.clone())
            .map(|(file, line)| match file.strip_prefix(&prefix) {
                Some(rel) => (rel.to_string(), line),
                None => (file, line),
            })
            .collect();
        let std_only = places.iter().all(|(file, _)| is_std(file));
        if std_only {
            let innermost = frames[entry + 1..].iter().find_map(|f| f.place.clone());
            dhat.std_only_stacks.push(format!(
                "{} B in {} blocks, {} std lines, innermost {innermost:?}",
                fig.0,
                fig.1,
                places.len()
            ));
        }
        for place in places {
            let e = dhat.lines.entry(place.clone()).or_default();
            e.0 += fig.0;
            e.1 += fig.1;
            let e = dhat.lines_without_std_only.entry(place).or_default();
            if !std_only {
                e.0 += fig.0;
                e.1 += fig.1;
            }
        }
    }
    dhat
}

#[test]
fn per_line_totals_match_dhat() {
    let exe = fixture(NAME);
    let p = profile(NAME, &[]);
    let report = p.report();
    let dir = TempDir::new("valgrind-lines");
    let dhat = run_dhat(
        &exe,
        &dir.path().join("dhat.json"),
        &repo().join("fixtures"),
    );

    // Totals: every allocation through the Rust allocator, no more, no less.
    let t = report.totals();
    assert_eq!(
        (t.allocated_bytes, t.allocations),
        dhat.totals,
        "lineprof's totals (bytes, allocations) differ from DHAT's over the Rust allocator"
    );

    // lineprof's figures per (file, line), one entry per function.
    let mut lineprof: BTreeMap<(String, u64), Vec<Fig>> = BTreeMap::new();
    for l in report.json["lines"].as_array().expect("lines") {
        let key = (
            l["file"].as_str().unwrap().to_string(),
            l["line"].as_u64().unwrap(),
        );
        let total = &l["total"];
        lineprof.entry(key).or_default().push((
            total["allocated_bytes"].as_u64().unwrap(),
            total["allocations"].as_u64().unwrap(),
        ));
    }

    // lineprof folds frames on line 0 (code the compiler generated) into
    // their function's first line (src/analyze/names.rs); DHAT keeps them
    // on line 0. Fold DHAT's line 0 of a file into the line of that file
    // where that explains lineprof's figure exactly.
    let mut dhat_lines = dhat.lines.clone();
    let zeros: Vec<(String, u64)> = dhat_lines.keys().filter(|k| k.1 == 0).cloned().collect();
    for zero in zeros {
        let z = dhat_lines[&zero];
        let sum_at = |k: &(String, u64)| {
            lineprof
                .get(k)
                .into_iter()
                .flatten()
                .fold((0, 0), |a: Fig, b| (a.0 + b.0, a.1 + b.1))
        };
        let target = lineprof.keys().find(|k| {
            k.0 == zero.0 && k.1 != 0 && {
                let d = dhat_lines.get(*k).copied().unwrap_or_default();
                sum_at(k) == (d.0 + z.0, d.1 + z.1)
            }
        });
        if let Some(t) = target.cloned() {
            let d = dhat_lines.entry(t).or_default();
            *d = (d.0 + z.0, d.1 + z.1);
            dhat_lines.remove(&zero);
        }
    }
    let keys: BTreeSet<&(String, u64)> = dhat_lines.keys().chain(lineprof.keys()).collect();
    let (mut exact, mut several, mut startup, mut wrong) = (0, 0, Vec::new(), Vec::new());
    let mut user_exact = 0;
    for key in keys {
        let vg = dhat_lines.get(key).copied().unwrap_or_default();
        let lp = lineprof.get(key).cloned().unwrap_or_default();
        let sum = lp.iter().fold((0, 0), |a: Fig, b| (a.0 + b.0, a.1 + b.1));
        if vg.0.max(sum.0) < MIN_BYTES {
            continue;
        }
        let max = lp
            .iter()
            .fold((0, 0), |a: Fig, b| (a.0.max(b.0), a.1.max(b.1)));
        // Exact: DHAT's figure is lineprof's (or the sum of lineprof's
        // functions on the line). Several: between the largest and the sum.
        let matches = |vg: Fig| {
            if vg == sum {
                Some(true)
            } else {
                let between = max.0 <= vg.0 && vg.0 <= sum.0 && max.1 <= vg.1 && vg.1 <= sum.1;
                (lp.len() > 1 && between).then_some(false)
            }
        };
        let place = format!("{}:{}", key.0, key.1);
        match matches(vg) {
            Some(true) => {
                exact += 1;
                if key.0 == report.file {
                    user_exact += 1;
                }
            }
            Some(false) => several += 1,
            None => {
                let without = dhat.lines_without_std_only.get(key).copied();
                if without.and_then(matches).is_some() {
                    // Known lineprof bug: see `startup` below.
                    startup.push(format!("{place}: DHAT {vg:?}, lineprof {lp:?}"));
                } else {
                    wrong.push(format!(
                        "{place}: DHAT (bytes, blocks) {vg:?}, lineprof {lp:?} (one per function)"
                    ));
                }
            }
        }
    }
    let compared = exact + several + startup.len() + wrong.len();
    eprintln!(
        "{compared} lines >= {MIN_BYTES} B: {exact} exact ({user_exact} of the fixture), \
         {several} with several functions on the line, {} off by std's start-up, {} wrong",
        startup.len(),
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "lines whose total differs from DHAT's:\n{}",
        wrong.join("\n")
    );
    // Known, not yet fixed: the std runtime's own start-up allocations (4 B
    // and 544 B in `stack_overflow::thread_info::set_current_info`, before
    // `main`) have only std frames and libc below `lang_start_internal`;
    // `trim_stack` (src/symbolize.rs) strips a leading run of std and
    // unresolved frames up to the last unresolved one, so such a stack is
    // cut down to its outermost libc frame and its std lines lose these
    // events. Tolerated here only on lines where that alone explains the
    // difference; once fixed, `startup` is empty.
    if !startup.is_empty() {
        eprintln!(
            "lines off by std-only stacks ({}):\n{}\nstd-only stacks in DHAT:\n{}",
            startup.len(),
            startup.join("\n"),
            dhat.std_only_stacks.join("\n")
        );
    }
    assert!(
        dhat.std_only_stacks.len() <= 2,
        "only std's start-up should have std-only stacks: {:#?}",
        dhat.std_only_stacks
    );
    // The fixture's own lines are all exact, and there are enough of them
    // for the comparison to mean something.
    assert!(
        user_exact >= 15,
        "only {user_exact} lines of {} compared exactly",
        report.file
    );
}
