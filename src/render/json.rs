//! JSON report, schema 1 of SPEC.md. Field names are a public contract:
//! add fields in later schemas, never rename or remove one.

use serde::Serialize;

use super::{selected_functions, selected_lines, View};
use crate::analyze::functions::FunctionFigures;
use crate::analyze::lines::{Figures, LineFigures};
use crate::analyze::per_test::TestFigures;
use crate::analyze::report::{Report, RunInfo, Totals};

pub use crate::analyze::report::SCHEMA;

#[derive(Serialize)]
struct JsonReport<'a> {
    schema: u32,
    lineprof_version: &'static str,
    run: &'a RunInfo,
    totals: &'a Totals,
    functions: &'a [FunctionFigures],
    lines: &'a [LineFigures],
    /// Test binaries: one object per test (`name`, `total`, ...).
    #[serde(skip_serializing_if = "<[TestFigures]>::is_empty")]
    tests: &'a [TestFigures],
    /// Test binaries: the cost of shared initialisation inside tests.
    #[serde(skip_serializing_if = "Option::is_none")]
    shared_init: Option<&'a Figures>,
    /// What std's panic machinery allocated (on no line, in no test).
    #[serde(skip_serializing_if = "Option::is_none")]
    panic_machinery: Option<&'a Figures>,
    /// Test binaries run by `cargo lineprof test`: the tests libtest ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    test_list: Option<&'a [String]>,
    /// What may make the figures wrong or incomplete (added to schema 1;
    /// the same messages the text report shows first).
    warnings: &'a [String],
    /// What the reader should know that makes no figure wrong (how lineprof
    /// shared the host's resources, a few samples it could not unwind).
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    notes: &'a [String],
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
        functions: &selected_functions(report, view),
        lines: &lines,
        tests: &report.tests,
        shared_init: report.shared_init.as_ref(),
        panic_machinery: report.panic_machinery.as_ref(),
        test_list: report.test_list.as_deref(),
        warnings: &report.warnings,
        notes: &report.notes,
    };
    // Serializing plain structs of strings and integers cannot fail.
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::lines::LineKind;

    #[test]
    fn schema_1_field_names() {
        let line = LineFigures {
            file: "src/main.rs".into(),
            line: 42,
            function: "app::build_index".into(),
            kind: LineKind::User,
            source: Some("    let v = vec![0u8; n];".into()),
            self_figures: Figures {
                allocations: 1,
                allocated_bytes: 10,
                increment_bytes: 10,
                ..Figures::default()
            },
            total: Figures::default(),
            hits: None,
            time_ns: None,
        };
        let report = Report {
            lines: vec![line],
            ..crate::render::testing::report()
        };
        let v: serde_json::Value =
            serde_json::from_str(&render(&report, &View::default())).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["run"]["git"]["commit"], serde_json::Value::Null);
        assert!(v["run"]["sampling"].get("estimated").is_none());
        let l = &v["lines"][0];
        assert_eq!(l["kind"], "user");
        assert_eq!(l["self"]["allocated_bytes"], 10);
        assert_eq!(l["total"]["increment_bytes"], 0);
        assert_eq!(v["totals"].as_object().unwrap().len(), 10);
        assert_eq!(v["totals"]["profiler_cpu_time_ns"], 0);
        assert_eq!(v["totals"]["unattributed_cpu_time_ns"], 0);
        assert_eq!(l["self"].as_object().unwrap().len(), 9);
    }
}
