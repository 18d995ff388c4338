//! Whether two runs were measured under the same settings: the allocation
//! sampling rate, and the environment variables a run keeps
//! (`run.environment`, [`RECORDED_ENV`](crate::analyze::report::RECORDED_ENV)).
//! `check` refuses to gate a run against a baseline measured differently
//! where that changes the gated figures, and notes any other difference;
//! `diff` warns.

use crate::analyze::report::{Report, RunInfo};

/// What differs between a baseline and a run.
#[derive(Debug, Default)]
pub struct Mismatch {
    /// Differences that make the gated figures incomparable.
    pub refuse: Vec<String>,
    /// Differences that leave them comparable, said for the reader.
    pub note: Vec<String>,
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
        m.refuse.push(format!(
            "LINEPROF_SAMPLE: the baseline recorded {}, this run {} (LINEPROF_SAMPLE {} at the baseline, {} now); sampled figures are estimates, so the two are not comparable",
            what(bs),
            what(ns),
            shown(var(b, "LINEPROF_SAMPLE")),
            shown(var(n, "LINEPROF_SAMPLE")),
        ));
    }
    // Runs stored before the environment was kept: nothing more to compare.
    if b.environment.is_none() || n.environment.is_none() {
        return m;
    }
    let panicked = base.panic_machinery.is_some() || new.panic_machinery.is_some();
    for name in crate::analyze::report::RECORDED_ENV {
        let (old, now) = (var(b, name), var(n, name));
        if old == now || name == "LINEPROF_SAMPLE" {
            continue;
        }
        let change = format!(
            "{name} was {} at the baseline, {} now",
            shown(old),
            shown(now)
        );
        match name {
            "LINEPROF_DEPTH" => m.refuse.push(format!(
                "{change}: stacks cut at a different depth put figures on different lines and tests"
            )),
            "RUST_BACKTRACE" | "RUST_LIB_BACKTRACE" if totals_gated && panicked => {
                m.refuse.push(format!(
                    "{change}: the program panicked, and what std's panic machinery allocates (the backtrace) depends on it; the process totals gated here include it"
                ))
            }
            "RUST_BACKTRACE" | "RUST_LIB_BACKTRACE" => m.note.push(format!(
                "{change}: what std's panic machinery allocates depends on it; that is on no line and in no test, so the gated figures are unaffected"
            )),
            "LINEPROF_MODE" => m.note.push(format!(
                "{change}: both modes give the same memory figures"
            )),
            _ => m.note.push(format!("{change}: it changes CPU figures only, which are not gated")),
        }
    }
    m
}

/// The fix to print after a refusal.
pub fn how_to_fix(m: &Mismatch) -> String {
    let mut vars: Vec<&str> = m
        .refuse
        .iter()
        .filter_map(|r| r.split([':', ' ']).next())
        .collect();
    vars.dedup();
    format!(
        "profile both with the same {} (set or unset it the same way where the baseline was made, as in CI, and run `cargo lineprof test` again), then check again",
        vars.join(", ")
    )
}
