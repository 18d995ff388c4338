//! Whether two runs were measured under the same settings: the allocation
//! sampling rate, the recording mode and depth, and the environment
//! variables a run keeps (`run.environment`,
//! [`RECORDED_ENV`](crate::analyze::report::RECORDED_ENV)). Settings are
//! compared by what they do, not by how they are spelled:
//! `LINEPROF_DEPTH=256` is the default depth, `RUST_BACKTRACE=0` is no
//! backtrace, `full` and `1` both capture one, and a bad value the shim
//! replaced by the default is the default. `check` refuses to gate a run
//! against a baseline measured differently where that changes the gated
//! figures, and notes any other difference; `diff` warns.

use crate::analyze::per_test;
use crate::analyze::report::{Report, RunInfo};

/// The shim's default depth (alloc-shim/src/config.rs), for runs stored
/// before the effective depth was kept with them.
const DEFAULT_DEPTH: u32 = 256;

/// One setting that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The environment variable that sets it.
    pub var: &'static str,
    /// What differs and what it changes, for the reader.
    pub text: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// What differs between a baseline and a run.
#[derive(Debug, Default)]
pub struct Mismatch {
    /// Differences that make the gated figures incomparable.
    pub refuse: Vec<Difference>,
    /// Differences that leave them comparable, said for the reader.
    pub note: Vec<Difference>,
}

fn shown(v: Option<&str>) -> String {
    match v {
        Some(v) => format!("`{v}`"),
        None => "unset".into(),
    }
}

fn var<'a>(run: &'a RunInfo, name: &str) -> Option<&'a str> {
    run.environment
        .as_ref()
        .and_then(|e| e.get(name))
        .map(String::as_str)
}

/// A whole number as the shim reads it: unset, empty, not a number or
/// above `max` is the default.
fn number(v: Option<&str>, default: u32, max: u32) -> u32 {
    match v.and_then(|v| v.parse::<u64>().ok()) {
        Some(n) if n <= max as u64 => n as u32,
        _ => default,
    }
}

/// Whether the run recorded in aggregate mode.
fn aggregate(run: &RunInfo) -> bool {
    match &run.mode {
        Some(m) => m == "aggregate",
        None => var(run, "LINEPROF_MODE") == Some("aggregate"),
    }
}

/// The deepest stack the run recorded.
fn depth(run: &RunInfo) -> u32 {
    run.max_depth.unwrap_or_else(|| {
        let max = lineprof::format::MAX_DEPTH as u32;
        match number(var(run, "LINEPROF_DEPTH"), DEFAULT_DEPTH, max) {
            0 => DEFAULT_DEPTH,
            d => d,
        }
    })
}

/// The CPU backend asked for: `timer`, else perf events.
fn cpu_backend(run: &RunInfo) -> &'static str {
    match var(run, "LINEPROF_CPU") {
        Some("timer") => "timer",
        _ => "perf",
    }
}

/// Whether std captures a backtrace under this value (`0` or unset: no).
fn captures(v: Option<&str>) -> bool {
    !matches!(v, None | Some("0"))
}

/// Whether a panic prints (and so captures) a backtrace.
fn panic_backtrace(run: &RunInfo) -> bool {
    captures(var(run, "RUST_BACKTRACE"))
}

/// Whether `Backtrace::capture` captures: `RUST_LIB_BACKTRACE`, else
/// `RUST_BACKTRACE`.
fn lib_backtrace(run: &RunInfo) -> bool {
    captures(var(run, "RUST_LIB_BACKTRACE").or_else(|| var(run, "RUST_BACKTRACE")))
}

/// Whether the run is a libtest binary (gated per test when it has
/// per-test figures).
pub fn is_test_binary(r: &Report) -> bool {
    !r.tests.is_empty()
        || r.test_list.is_some()
        || r.stacks
            .as_ref()
            .is_some_and(|s| per_test::ran_libtest(s.frames.iter().map(|f| f.function.as_str())))
}

/// Whether the program captured backtraces with `Backtrace::capture`
/// (anyhow and eyre do): what that allocates is on its own lines and
/// depends on `RUST_LIB_BACKTRACE` and `RUST_BACKTRACE`.
fn captured_backtraces(r: &Report) -> bool {
    r.stacks.as_ref().is_some_and(|s| {
        s.frames
            .iter()
            .any(|f| f.function.starts_with("std::backtrace::Backtrace::capture"))
    })
}

/// Compares `base` and `new`. `totals_gated`: the run is gated on its
/// process totals (not a test binary), which include std's panic
/// machinery.
pub fn compare(base: &Report, new: &Report, totals_gated: bool) -> Mismatch {
    let mut m = Mismatch::default();
    let (b, n) = (&base.run, &new.run);
    let (bs, ns) = (b.sampling.alloc_sample_bytes, n.sampling.alloc_sample_bytes);
    if bs != ns {
        let what = |s: u64| match s {
            0 => "every allocation".to_string(),
            s => format!("one allocation per {s} bytes on average"),
        };
        m.refuse.push(Difference {
            var: "LINEPROF_SAMPLE",
            text: format!(
                "LINEPROF_SAMPLE: the baseline recorded {}, this run {} (LINEPROF_SAMPLE {} at the baseline, {} now); sampled figures are estimates, so the two are not comparable",
                what(bs),
                what(ns),
                shown(var(b, "LINEPROF_SAMPLE")),
                shown(var(n, "LINEPROF_SAMPLE")),
            ),
        });
    }
    let change = |name: &str| {
        format!(
            "{name} was {} at the baseline, {} now",
            shown(var(b, name)),
            shown(var(n, name))
        )
    };
    let tests = is_test_binary(base) || is_test_binary(new);
    let (ba, na) = (aggregate(b), aggregate(n));
    if tests && (ba || na) {
        // An aggregate profile keeps figures per stack, not the order of
        // events that tells one test's allocations from another's.
        let mode = |a: bool| if a { "aggregate" } else { "stream" };
        let which = if ba == na {
            "both runs were recorded in aggregate mode".to_string()
        } else {
            format!(
                "the baseline was recorded in {} mode, this run in {} mode",
                mode(ba),
                mode(na)
            )
        };
        m.refuse.push(Difference {
            var: "LINEPROF_MODE",
            text: format!(
                "LINEPROF_MODE: {which} ({}); an aggregate profile has no per-test figures, so tests cannot be gated",
                change("LINEPROF_MODE")
            ),
        });
    } else if ba != na {
        m.note.push(Difference {
            var: "LINEPROF_MODE",
            text: format!(
                "{}: allocations, allocated bytes and the peak total are exact in both modes",
                change("LINEPROF_MODE")
            ),
        });
    }
    if depth(b) != depth(n) {
        m.refuse.push(Difference {
            var: "LINEPROF_DEPTH",
            text: format!(
                "LINEPROF_DEPTH: the baseline recorded stacks of up to {} frames, this run {} ({}); stacks cut at a different depth put figures on different lines and tests",
                depth(b),
                depth(n),
                change("LINEPROF_DEPTH")
            ),
        });
    }
    // Runs stored before the environment was kept: nothing more to compare.
    if b.environment.is_none() || n.environment.is_none() {
        return m;
    }
    let panicked = base.panic_machinery.is_some() || new.panic_machinery.is_some();
    let captured = captured_backtraces(base) || captured_backtraces(new);
    let mut backtrace = |name: &'static str| {
        if captured {
            m.refuse.push(Difference {
                var: name,
                text: format!(
                    "{}: the program captures backtraces (`Backtrace::capture`, as anyhow and eyre do), and whether they are captured depends on it; that is on the program's own lines",
                    change(name)
                ),
            });
        } else if totals_gated && panicked {
            m.refuse.push(Difference {
                var: name,
                text: format!(
                    "{}: the program panicked, and what std's panic machinery allocates (the backtrace) depends on it; the process totals gated here include it",
                    change(name)
                ),
            });
        } else {
            m.note.push(Difference {
                var: name,
                text: format!(
                    "{}: what std's panic machinery allocates depends on it; that is on no line and in no test, so the gated figures are unaffected",
                    change(name)
                ),
            });
        }
    };
    let panic_differs = panic_backtrace(b) != panic_backtrace(n);
    if panic_differs {
        backtrace("RUST_BACKTRACE");
    }
    // RUST_BACKTRACE already said when it is what moved `Backtrace::capture`.
    let lib_set = var(b, "RUST_LIB_BACKTRACE").is_some() || var(n, "RUST_LIB_BACKTRACE").is_some();
    if lib_backtrace(b) != lib_backtrace(n) && (lib_set || !panic_differs) {
        backtrace("RUST_LIB_BACKTRACE");
    }
    // The rate the shim used (a bad value is the default), and the backend.
    for (var, differs) in [
        ("LINEPROF_HZ", b.sampling.cpu_hz != n.sampling.cpu_hz),
        ("LINEPROF_CPU", cpu_backend(b) != cpu_backend(n)),
    ] {
        if differs {
            m.note.push(Difference {
                var,
                text: format!(
                    "{}: it changes CPU figures only, which are not gated",
                    change(var)
                ),
            });
        }
    }
    m
}

/// The fix to print after a refusal, for a run made as `new` was: `cargo
/// lineprof test` for the test binaries it lists, `lineprof run` with the
/// program's command otherwise.
pub fn how_to_fix(m: &Mismatch, new: &Report) -> String {
    let mut vars: Vec<&str> = m.refuse.iter().map(|d| d.var).collect();
    vars.dedup();
    let again = if new.test_list.is_some() {
        "`cargo lineprof test`".to_string()
    } else {
        let command = if new.run.command.is_empty() {
            "PROGRAM".to_string()
        } else {
            new.run.command.join(" ")
        };
        format!("`lineprof run -- {command}`")
    };
    let mode_fix = if vars.contains(&"LINEPROF_MODE") {
        "; tests are gated in stream mode only: leave LINEPROF_MODE unset (or `stream`) on both sides"
    } else {
        ""
    };
    format!(
        "profile both with the same {} (set or unset it the same way where the baseline was made, as in CI, and run {again} again), then check again{mode_fix}",
        vars.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::report::{ExecutableInfo, GitInfo, Sampling, Totals};

    fn run(env: &[(&str, &str)]) -> Report {
        Report {
            run: RunInfo {
                id: "r".into(),
                name: Some("app".into()),
                command: vec!["target/release/app".into(), "--fast".into()],
                started_at: String::new(),
                duration_ns: 0,
                git: GitInfo::default(),
                executable: ExecutableInfo {
                    path: "target/release/app".into(),
                    build_id: None,
                },
                sampling: Sampling {
                    alloc_sample_bytes: 0,
                    cpu_hz: 1000,
                    estimated: false,
                },
                environment: Some(
                    env.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                mode: None,
                max_depth: None,
            },
            totals: Totals::default(),
            lines: vec![],
            functions: vec![],
            warnings: vec![],
            notes: vec![],
            root: None,
            stacks: None,
            timeline: None,
            tests: vec![],
            shared_init: None,
            panic_machinery: None,
            test_list: None,
        }
    }

    fn vars(d: &[Difference]) -> Vec<&str> {
        d.iter().map(|d| d.var).collect()
    }

    #[test]
    fn equivalent_spellings_are_the_same_setting() {
        let same = [
            (vec![], vec![("LINEPROF_DEPTH", "256")]),
            (vec![], vec![("LINEPROF_DEPTH", "0")]),
            (vec![], vec![("LINEPROF_DEPTH", "deep")]),
            (vec![], vec![("RUST_BACKTRACE", "0")]),
            (
                vec![("RUST_BACKTRACE", "1")],
                vec![("RUST_BACKTRACE", "full")],
            ),
            (vec![], vec![("RUST_LIB_BACKTRACE", "0")]),
            (vec![], vec![("LINEPROF_CPU", "perf")]),
            (vec![], vec![("LINEPROF_MODE", "stream")]),
            (vec![], vec![("LINEPROF_MODE", "bogus")]),
        ];
        for (old, new) in same {
            let m = compare(&run(&old), &run(&new), true);
            assert!(
                m.refuse.is_empty() && m.note.is_empty(),
                "{old:?} {new:?}: {m:?}"
            );
        }
    }

    #[test]
    fn recorded_values_win_over_the_environment() {
        let (mut old, mut new) = (run(&[]), run(&[("LINEPROF_DEPTH", "64")]));
        old.run.max_depth = Some(64);
        new.run.max_depth = Some(64);
        assert!(compare(&old, &new, true).refuse.is_empty());
        new.run.max_depth = Some(128);
        let m = compare(&old, &new, true);
        assert_eq!(vars(&m.refuse), ["LINEPROF_DEPTH"]);
        assert!(
            m.refuse[0].text.contains("up to 64 frames, this run 128"),
            "{m:?}"
        );
    }

    #[test]
    fn what_each_difference_does() {
        let m = compare(&run(&[]), &run(&[("LINEPROF_DEPTH", "32")]), false);
        assert_eq!(vars(&m.refuse), ["LINEPROF_DEPTH"]);
        // Backtraces: harmless unless the program panicked and its totals
        // are gated, or it captures backtraces itself.
        let (old, mut new) = (run(&[]), run(&[("RUST_BACKTRACE", "1")]));
        let m = compare(&old, &new, true);
        assert_eq!(vars(&m.note), ["RUST_BACKTRACE"]);
        new.panic_machinery = Some(Default::default());
        assert_eq!(vars(&compare(&old, &new, true).refuse), ["RUST_BACKTRACE"]);
        assert_eq!(vars(&compare(&old, &new, false).note), ["RUST_BACKTRACE"]);
        let m = compare(&run(&[]), &run(&[("RUST_LIB_BACKTRACE", "1")]), true);
        assert_eq!(vars(&m.note), ["RUST_LIB_BACKTRACE"]);
        // RUST_LIB_BACKTRACE=0 keeps `Backtrace::capture` off whatever
        // RUST_BACKTRACE says.
        let m = compare(
            &run(&[("RUST_LIB_BACKTRACE", "0")]),
            &run(&[("RUST_LIB_BACKTRACE", "0"), ("RUST_BACKTRACE", "1")]),
            true,
        );
        assert_eq!(vars(&m.note), ["RUST_BACKTRACE"]);
        // CPU settings: notes; the rate as the shim used it.
        let mut hz = run(&[("LINEPROF_HZ", "1000")]);
        assert!(compare(&run(&[]), &hz, true).note.is_empty());
        hz.run.sampling.cpu_hz = 99;
        hz.run.environment = run(&[("LINEPROF_HZ", "99"), ("LINEPROF_CPU", "timer")])
            .run
            .environment;
        let m = compare(&run(&[]), &hz, true);
        assert_eq!(vars(&m.note), ["LINEPROF_HZ", "LINEPROF_CPU"]);
        assert!(m.refuse.is_empty());
    }

    #[test]
    fn a_program_that_captures_backtraces_needs_the_same_variables() {
        use crate::analyze::stacks::{Frame, StackTable};
        let (old, mut new) = (run(&[]), run(&[("RUST_LIB_BACKTRACE", "1")]));
        new.stacks = Some(StackTable {
            frames: vec![Frame {
                file: "/rustc/abc/library/std/src/backtrace.rs".into(),
                line: 296,
                function: "std::backtrace::Backtrace::capture".into(),
            }],
            stacks: vec![],
            events: 0,
            peak_event: None,
            pid: 1,
        });
        // Even a test binary's gated figures, on the program's own lines.
        let m = compare(&old, &new, false);
        assert_eq!(vars(&m.refuse), ["RUST_LIB_BACKTRACE"]);
        assert!(m.refuse[0].text.contains("captures backtraces"), "{m:?}");
        // RUST_BACKTRACE turns `Backtrace::capture` on too.
        let m = compare(&old, &run(&[("RUST_BACKTRACE", "1")]), false);
        assert!(m.refuse.is_empty(), "{m:?}");
        let mut both = run(&[("RUST_BACKTRACE", "1")]);
        both.stacks = new.stacks.clone();
        assert_eq!(
            vars(&compare(&old, &both, false).refuse),
            ["RUST_BACKTRACE"]
        );
    }

    #[test]
    fn modes_are_refused_for_tests_only() {
        let (old, mut new) = (run(&[]), run(&[("LINEPROF_MODE", "aggregate")]));
        new.run.mode = Some("aggregate".into());
        let m = compare(&old, &new, true);
        assert_eq!(vars(&m.note), ["LINEPROF_MODE"]);
        assert!(m.refuse.is_empty());
        new.test_list = Some(vec!["tests::a".into()]);
        let m = compare(&old, &new, true);
        assert_eq!(vars(&m.refuse), ["LINEPROF_MODE"]);
        // Two aggregate runs of a test binary have no per-test figures.
        let m = compare(&new, &new, true);
        assert_eq!(vars(&m.refuse), ["LINEPROF_MODE"]);
        assert!(
            m.refuse[0]
                .text
                .contains("both runs were recorded in aggregate mode"),
            "{m:?}"
        );
    }

    #[test]
    fn the_fix_names_the_variables_and_the_command() {
        let old = run(&[]);
        let mut new = run(&[("LINEPROF_DEPTH", "8"), ("LINEPROF_SAMPLE", "4096")]);
        new.run.sampling.alloc_sample_bytes = 4096;
        let m = compare(&old, &new, true);
        let fix = how_to_fix(&m, &new);
        assert!(
            fix.contains("the same LINEPROF_SAMPLE, LINEPROF_DEPTH ("),
            "{fix}"
        );
        assert!(
            fix.contains("`lineprof run -- target/release/app --fast` again"),
            "{fix}"
        );
        new.test_list = Some(vec![]);
        assert!(how_to_fix(&m, &new).contains("`cargo lineprof test` again"));
    }
}
