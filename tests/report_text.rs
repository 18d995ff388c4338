//! The text report of the `peak` fixture: summary header, top-lines table
//! and per-function source listings carry the right, unit-scaled figures.
//! Tables are read by column name, so adding a column does not break this.

mod common;

use std::collections::HashMap;

use common::{baseline, lineprof, profile, stdout};

/// Splits on runs of two or more spaces (cells like `1.0 MiB` hold one).
fn cells(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// The rows under the table header that starts with `first_column`, as
/// column name -> cell (rows without every column are skipped).
fn table<'a>(text: &'a str, first_column: &str) -> Vec<HashMap<&'a str, &'a str>> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with(first_column));
    let header = cells(
        lines
            .next()
            .unwrap_or_else(|| panic!("no `{first_column}` table:\n{text}")),
    );
    lines
        .skip_while(|l| l.starts_with("==="))
        .take_while(|l| !l.trim().is_empty())
        .map(cells)
        .filter(|row| row.len() >= header.len())
        .map(|row| header.iter().copied().zip(row).collect())
        .collect()
}

fn text_report(extra: &[&str]) -> String {
    let p = profile("peak", &[]);
    let mut args = vec!["report", p.profile.to_str().unwrap()];
    args.extend(extra);
    let out = lineprof(&args);
    assert!(out.status.success(), "{out:?}");
    stdout(&out)
}

#[test]
fn summary_header() {
    let text = text_report(&[]);
    let summary: HashMap<_, _> = text
        .lines()
        .take_while(|l| !l.starts_with("Top"))
        .map(cells)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0], c[1]))
        .collect();
    let allocations = (baseline().allocations + 2).to_string();
    assert_eq!(
        summary.get("allocations"),
        Some(&allocations.as_str()),
        "{text}"
    );
    assert_eq!(summary.get("peak"), Some(&"1.0 MiB"), "{text}"); // 1 MiB + 548 B
    assert_eq!(summary.get("at exit"), Some(&"544 B"), "{text}");
}

#[test]
fn top_lines_table() {
    let text = text_report(&[]);
    let rows = table(&text, "Allocated");
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[0]["Line"].starts_with("src/bin/peak.rs:12"), "{text}");
    assert_eq!(
        (
            rows[0]["Allocated"],
            rows[0]["Peak"],
            rows[0]["At exit"],
            rows[0]["Allocs"]
        ),
        ("1.0 MiB", "1.0 MiB", "0 B", "1")
    );
    assert!(rows[1]["Line"].starts_with("src/bin/peak.rs:18"), "{text}");
    assert_eq!(
        (rows[1]["Allocated"], rows[1]["Peak"]),
        ("300.0 KiB", "0 B")
    );

    let text = text_report(&["--top", "1"]);
    let top1 = table(&text, "Allocated");
    assert_eq!(top1.len(), 1);
    assert!(top1[0]["Line"].starts_with("src/bin/peak.rs:12"));
}

#[test]
fn source_listing() {
    let text = text_report(&[]);
    let f = text
        .find("peak::f  (src/bin/peak.rs")
        .unwrap_or_else(|| panic!("no listing of f:\n{text}"));
    let rows = table(&text[f..], "Line #");
    let line = |n: &str| {
        rows.iter()
            .find(|r| r["Line #"] == n)
            .unwrap_or_else(|| panic!("no line {n} in the listing:\n{text}"))
    };
    assert_eq!(line("12")["Allocated"], "1.0 MiB");
    assert!(line("12")["Line Contents"].starts_with("let big = black_box(vec![0u8; 1 << 20]);"));
    assert_eq!(
        (line("13")["Freed"], line("13")["Increment"]),
        ("1.0 MiB", "-1.0 MiB")
    );
    assert_eq!(line("13")["Line Contents"], "drop(big);");
}

/// A view with no line (a `--file` that matches none) says so in one
/// sentence instead of titling an empty table `Top 0 lines`.
#[test]
fn empty_views_are_a_sentence() {
    let text = text_report(&["--file", "no-such-file"]);
    assert!(!text.contains("Top 0"), "{text}");
    assert!(!text.contains("no lines with figures"), "{text}");
    assert!(
        text.contains(
            "No line of your code that --file no-such-file keeps has self allocated bytes\n"
        ),
        "{text}"
    );
    let html = text_report(&["--file", "no-such-file", "--format", "html"]);
    assert!(!html.contains("Top 0"), "{html}");
    assert!(
        html.contains("No line of your code has self allocated bytes.")
            && html.contains("No line has self allocated bytes."),
        "both views of the page: {html}"
    );
}
