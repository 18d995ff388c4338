//! Function names in the report, on the `naming` fixture built with both
//! debug-info levels users have: `line-tables-only` (the fixtures' own
//! profile, legacy symbol names) and `limited` with v0 symbol names (what
//! `cargo lineprof` builds). Closures are named after the function that
//! defines them, every instance of a generic function is one function,
//! and the figures stay on their lines.

mod common;

use common::{allocs, build_fixtures, fixture, run_profiled, Figures, HeapFigures, TempDir};
use serde_json::Value;

/// (function, self figures) of the fixture's line `line`, one row each.
fn rows(report: &Value, line: u64) -> Vec<(String, Figures)> {
    report["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["file"] == "src/bin/naming.rs" && l["line"] == line)
        .map(|l| {
            (
                l["function"].as_str().unwrap().to_string(),
                Figures::from_json(&l["self"]),
            )
        })
        .collect()
}

fn report(exe: &std::path::Path, extra: &[&str]) -> Value {
    let dir = TempDir::new("naming");
    let profile = dir.path().join("naming.lprof");
    let out = run_profiled(exe, &[], &profile);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let mut args = vec!["report", profile.to_str().unwrap(), "--format", "json"];
    args.extend_from_slice(extra);
    let out = common::lineprof(&args);
    assert!(out.status.success(), "{}", common::stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Checks the figures and names; `prefix` is what a function defined in the
/// fixture is called with (`naming::` when the build has full names).
fn check(r: &Value, prefix: &str) {
    let one = |line: u64| -> (String, Figures) {
        let rows = rows(r, line);
        assert_eq!(rows.len(), 1, "line {line}: {rows:?}");
        rows.into_iter().next().unwrap()
    };
    // Two closures that are both `{closure#0}` in DWARF, each under its own
    // function.
    assert_eq!(
        one(18),
        (
            format!("{prefix}build::{{closure#0}}"),
            allocs(100, 3200).peak(3200)
        )
    );
    assert_eq!(
        one(24),
        (
            format!("{prefix}label::{{closure#0}}"),
            allocs(100, 800).peak(800)
        )
    );
    // A closure with `->` in its signature.
    assert_eq!(
        one(30),
        (
            format!("{prefix}fallible::{{closure#0}}"),
            allocs(1, 128).peak(128)
        )
    );
    assert_eq!(
        one(19),
        (format!("{prefix}build"), allocs(1, 2400).peak(2400))
    );
    // Both instances of the generic `repeat` on one row.
    assert_eq!(
        one(37),
        (format!("{prefix}repeat"), allocs(2, 576).peak(576))
    );
    // main's own closure (only its callee allocates), and main.
    assert_eq!(one(51).0, "naming::main::{closure#0}");
    assert_eq!(
        one(52),
        ("naming::main".to_string(), allocs(1, 192).peak(192))
    );
    // No name is cut inside its generic arguments (`->` read as `>`).
    for l in r["lines"].as_array().unwrap() {
        let f = l["function"].as_str().unwrap();
        let arrows = f.matches("->").count();
        assert_eq!(
            f.matches('<').count() + arrows,
            f.matches('>').count(),
            "unbalanced name {f}"
        );
    }
}

#[test]
fn line_tables_only() {
    let r = report(&fixture("naming"), &[]);
    // Functions inlined everywhere have only DWARF's short name here; the
    // closures still carry the function that defines them.
    check(&r, "");
    // `--function build` finds the closure's allocations too.
    let only = report(&fixture("naming"), &["--function", "build"]);
    let allocations: u64 = only["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["self"]["allocations"].as_u64().unwrap())
        .sum();
    assert_eq!(allocations, 101);
}

#[test]
fn limited_with_v0_names() {
    let dir = build_fixtures(
        "target-limited",
        "-C force-frame-pointers=yes -C symbol-mangling-version=v0",
        &[("CARGO_PROFILE_RELEASE_DEBUG", "limited")],
        &["naming"],
    );
    let r = report(&dir.join("naming"), &[]);
    check(&r, "naming::");
    let (name, clones) = rows(&r, 12).into_iter().next().unwrap();
    assert_eq!(name, "<naming::Record as core::clone::Clone>::clone");
    assert_eq!(clones, allocs(4, 40).peak(40));
}
