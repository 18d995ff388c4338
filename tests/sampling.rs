//! Sampling mode (LINEPROF_SAMPLE=N): each allocation of s bytes is sampled
//! with probability p = 1 - exp(-s/N) and weighted by 1/p, so estimates are
//! unbiased. For a line of n blocks of s bytes, the estimate's relative
//! standard error is sqrt((1 - p) / (n p)); with N = 16 KiB that is at most
//! 5.1% (the 32 B line: n p = 390). We allow 4 standard errors (20%) on
//! every line and check that the report says the figures are estimates.

mod common;
use common::*;
use std::process::Command;

const MEAN: u64 = 16 * 1024;

fn sampled_report() -> Report {
    let dir = TempDir::new("sampled");
    let out = dir.path().join("s.lprof");
    let status = Command::new(fixture("sampled"))
        .env("LINEPROF_OUT", &out)
        .env("LINEPROF_SAMPLE", MEAN.to_string())
        .env("LINEPROF_HZ", "0")
        .status()
        .unwrap();
    assert!(status.success());
    report(&out, "sampled")
}

fn within(estimate: u64, exact: u64, tolerance: f64, what: &str) {
    let err = (estimate as f64 - exact as f64).abs() / exact as f64;
    assert!(
        err <= tolerance,
        "{what}: estimate {estimate} vs exact {exact} ({:.1}% off, allowed {:.0}%)",
        err * 100.0,
        tolerance * 100.0
    );
}

#[test]
fn estimates_land_within_four_standard_errors_of_exact_figures() {
    let exact = profile("sampled", &[]).report();
    let est = sampled_report();
    assert_eq!(est.json["run"]["sampling"]["alloc_sample_bytes"], MEAN);
    assert_eq!(est.json["run"]["sampling"]["estimated"], true);
    let lines = [
        ("small: 200,000", 6_400_000),
        ("medium: 20,000", 20_480_000),
        ("large: 200", 13_107_200),
        ("kept: 4000", 8_192_000),
    ];
    for (snippet, bytes) in lines {
        let e = exact.self_at(snippet);
        assert_eq!(e.allocated_bytes, bytes, "exact figure of `{snippet}`");
        let s = est.self_at(snippet);
        within(s.allocated_bytes, bytes, 0.20, snippet);
        within(s.freed_bytes.max(1), e.freed_bytes.max(1), 0.20, snippet);
    }
    // Live at exit: only the kept blocks (and their Vec).
    within(
        est.self_at("kept: 4000").end_bytes,
        8_192_000,
        0.20,
        "kept at exit",
    );
    within(
        est.totals().allocated_bytes,
        exact.totals().allocated_bytes,
        0.10,
        "total",
    );
}

#[test]
fn text_report_says_figures_are_estimated() {
    let dir = TempDir::new("sampled-text");
    let out = dir.path().join("s.lprof");
    let status = Command::new(fixture("sampled"))
        .env("LINEPROF_OUT", &out)
        .env("LINEPROF_SAMPLE", MEAN.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let text = stdout(&lineprof(&["report", out.to_str().unwrap()]));
    assert!(text.contains("estimated"), "{text}");
}
