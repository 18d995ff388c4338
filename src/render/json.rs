//! JSON report, schema 1 of SPEC.md. Field names are a public contract:
//! add fields in later schemas, never rename or remove one.

use serde::Serialize;

use super::{selected_lines, View};
use crate::lines::LineFigures;
use crate::report::{Report, RunInfo, Totals};

pub const SCHEMA: u32 = 1;

#[derive(Serialize)]
struct JsonReport<'a> {
    schema: u32,
    lineprof_version: &'static str,
    run: &'a RunInfo,
    totals: &'a Totals,
    lines: &'a [LineFigures],
}

/// The report as pretty-printed JSON, with a trailing newline.
pub fn render(report: &Report, view: &View) -> String {
    let mut lines = selected_lines(report, view);
    if let Some(top) = view.top {
        lines.truncate(top);
    }
    let doc = JsonReport {
        schema: SCHEMA,
        lineprof_version: env!("CARGO_PKG_VERSION"),
        run: &report.run,
        totals: &report.totals,
        lines: &lines,
    };
    // Serializing plain structs of strings and integers cannot fail.
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}
