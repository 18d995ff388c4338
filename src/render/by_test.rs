//! `lineprof report --by test`: one row per test of a test binary, then
//! the shared initialisation and what ran outside every test (libtest's
//! harness, threads the tests spawned), which are shown and never gated.

use std::fmt::Write;

use super::{format_bytes, format_time, text::table};
use crate::analyze::lines::Figures;
use crate::analyze::per_test::TestFigures;
use crate::analyze::report::Report;

fn row(label: &str, f: &Figures, peak: bool) -> Vec<String> {
    vec![
        f.allocations.to_string(),
        format_bytes(f.allocated_bytes),
        if peak {
            format_bytes(f.peak_bytes)
        } else {
            "-".into()
        },
        format_bytes(f.end_bytes),
        format_time(f.cpu_time_ns),
        label.to_string(),
    ]
}

/// The table, largest allocated bytes first.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "lineprof report --by test: {}\n",
        report
            .run
            .name
            .as_deref()
            .unwrap_or(&report.run.executable.path)
    );
    if report.tests.is_empty() {
        let aggregate_tests = report
            .notes
            .iter()
            .any(|n| n == crate::analyze::report::AGGREGATE_TESTS_NOTE);
        if aggregate_tests {
            let _ = writeln!(out, "  {}", crate::analyze::report::AGGREGATE_TESTS_NOTE);
        } else {
            out.push_str(
                "  no tests: this run is not of a libtest test binary (or it ran no test)\n",
            );
        }
        return out;
    }
    let mut tests: Vec<&TestFigures> = report.tests.iter().collect();
    tests.sort_by(|a, b| {
        b.total
            .allocated_bytes
            .cmp(&a.total.allocated_bytes)
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut rows: Vec<Vec<String>> = tests.iter().map(|t| row(&t.name, &t.total, true)).collect();
    let mut inside = Figures::default();
    for t in &report.tests {
        add(&mut inside, &t.total);
    }
    if let Some(init) = &report.shared_init {
        rows.push(row(
            "(shared initialisation: Once, OnceLock, lazy statics; not gated)",
            init,
            false,
        ));
        add(&mut inside, init);
    }
    if let Some(p) = &report.panic_machinery {
        rows.push(row(
            "(std's panic machinery: panic messages, RUST_BACKTRACE backtraces; not gated)",
            p,
            false,
        ));
        add(&mut inside, p);
    }
    let t = &report.totals;
    let outside = Figures {
        allocations: t.allocations.saturating_sub(inside.allocations),
        allocated_bytes: t.allocated_bytes.saturating_sub(inside.allocated_bytes),
        end_bytes: t.end_bytes.saturating_sub(inside.end_bytes),
        cpu_time_ns: t.cpu_time_ns.saturating_sub(inside.cpu_time_ns),
        ..Figures::default()
    };
    rows.push(row(
        "(outside tests: libtest's harness, threads tests spawn; not gated)",
        &outside,
        false,
    ));
    let _ = writeln!(
        out,
        "  {} tests; Peak is each test's own peak (its blocks live at once), which thread scheduling does not change\n",
        report.tests.len()
    );
    table(
        &mut out,
        &["Allocs", "Allocated", "Peak", "At exit", "CPU", "Test"],
        &rows,
        false,
    );
    out
}

fn add(sum: &mut Figures, f: &Figures) {
    sum.allocations += f.allocations;
    sum.allocated_bytes += f.allocated_bytes;
    sum.end_bytes += f.end_bytes;
    sum.cpu_time_ns += f.cpu_time_ns;
}
