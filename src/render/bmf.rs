//! Bencher Metric Format (<https://bencher.dev/docs/reference/bencher-metric-format/>):
//! `{"benchmark": {"measure": {"value": n}}}`, for `bencher run --adapter json`
//! or any tool that reads it. One benchmark per test of a test binary
//! (`<run name>::<test>`), else one for the run; the measures are
//! lineprof's figures (`allocations`, `allocated-bytes`, `peak-bytes`,
//! `end-bytes`, `cpu-time-ns`), exact except CPU time.

use serde_json::{json, Map, Value};

use crate::analyze::lines::Figures;
use crate::analyze::report::Report;

fn measures(f: &Figures) -> Value {
    let v = |n: u64| json!({ "value": n });
    json!({
        "allocations": v(f.allocations),
        "allocated-bytes": v(f.allocated_bytes),
        "peak-bytes": v(f.peak_bytes),
        "end-bytes": v(f.end_bytes),
        "cpu-time-ns": v(f.cpu_time_ns),
    })
}

pub fn render(report: &Report) -> String {
    let name = report
        .run
        .name
        .clone()
        .unwrap_or_else(|| report.run.executable.path.clone());
    let mut doc = Map::new();
    if report.tests.is_empty() {
        doc.insert(name, measures(&report.totals.figures()));
    } else {
        for test in &report.tests {
            doc.insert(format!("{name}::{}", test.name), measures(&test.total));
        }
    }
    let mut out = serde_json::to_string_pretty(&Value::Object(doc)).unwrap_or_default();
    out.push('\n');
    out
}
