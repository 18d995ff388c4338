//! `--by function`: pstats's table for lineprof. One row per function, with
//! `self` (pstats's tottime) and `total` (cumtime) memory and CPU figures,
//! and for `#[lineprof::profile]` functions `ncalls` and wall time; then,
//! with `--callers` / `--callees`, the call-graph edges of the functions a
//! pattern matches, with the figures of the stacks through each edge.

use std::fmt::Write;

use regex::Regex;

use super::text::table;
use super::{format_bytes, format_time, selected_functions, View};
use crate::analyze::classify::short_path;
use crate::analyze::functions::{edges, same_function, Edge, FunctionFigures};
use crate::analyze::lines::Figures;
use crate::analyze::report::Report;

/// `filename:lineno(function)`, as pstats prints it, with the file as short
/// as in the line tables (`walkdir-2.5.1/src/lib.rs`, `std/...`).
fn place(f: &FunctionFigures) -> String {
    format!("{}:{}({})", short_path(&f.file, None), f.line, f.function)
}

/// The text of `lineprof report --by function`.
pub fn render(
    report: &Report,
    view: &View,
    callers: Option<&Regex>,
    callees: Option<&Regex>,
) -> String {
    let mut out = String::new();
    let mut functions = selected_functions(report, view);
    if view.filter.user_only {
        functions.retain(|f| is_user(report, f));
    }
    let shown = view.top.unwrap_or(super::text::DEFAULT_TOP);
    let _ = writeln!(
        out,
        "{} functions, sorted by {} (tottime/self: in the function itself; cumtime/total: callees included)\n",
        functions.len(),
        super::text::sort_title(view.sort)
    );
    functions.truncate(shown);
    let headers = [
        "ncalls",
        "walltime",
        "percall",
        "tottime",
        "cumtime",
        "self alloc",
        "total alloc",
        "self peak",
        "total peak",
        "allocs",
        "filename:lineno(function)",
    ];
    let rows: Vec<Vec<String>> = functions
        .iter()
        .map(|f| {
            let (calls, wall, per_call) = match (f.calls, f.time_ns) {
                (Some(c), Some(t)) => (c.to_string(), format_time(t), format_time(t / c.max(1))),
                _ => (String::new(), String::new(), String::new()),
            };
            vec![
                calls,
                wall,
                per_call,
                format_time(f.self_figures.cpu_time_ns),
                format_time(f.total.cpu_time_ns),
                format_bytes(f.self_figures.allocated_bytes),
                format_bytes(f.total.allocated_bytes),
                format_bytes(f.self_figures.peak_bytes),
                format_bytes(f.total.peak_bytes),
                f.self_figures.allocations.to_string(),
                place(f),
            ]
        })
        .collect();
    table(&mut out, &headers, &rows, false);
    let all_edges = report.stacks.as_ref().map(edges).unwrap_or_default();
    if let Some(re) = callers {
        edge_lists(&mut out, report, &all_edges, re, true);
    }
    if let Some(re) = callees {
        edge_lists(&mut out, report, &all_edges, re, false);
    }
    out
}

fn is_user(report: &Report, f: &FunctionFigures) -> bool {
    report
        .lines
        .iter()
        .any(|l| l.function == f.function && l.kind == crate::analyze::lines::LineKind::User)
}

/// pstats's `print_callers` (`callers`) or `print_callees`: for each
/// function the pattern matches, the functions on the other end of its
/// edges, most allocated bytes first.
fn edge_lists(out: &mut String, report: &Report, all: &[Edge], re: &Regex, callers: bool) {
    let mut names: Vec<&str> = report
        .functions
        .iter()
        .map(|f| f.function.as_str())
        .filter(|n| re.is_match(n))
        .collect();
    names.sort();
    let (title, arrow) = if callers {
        ("was called by", "<-")
    } else {
        ("called", "->")
    };
    if names.is_empty() {
        let _ = writeln!(out, "\nNo function matches {:?}.", re.as_str());
        return;
    }
    for name in names {
        let mut list: Vec<(&str, &Figures)> = all
            .iter()
            .filter_map(|e| {
                if callers && same_function(&e.callee, name) {
                    Some((e.caller.as_str(), &e.figures))
                } else if !callers && same_function(&e.caller, name) {
                    Some((e.callee.as_str(), &e.figures))
                } else {
                    None
                }
            })
            .collect();
        list.sort_by(|a, b| {
            b.1.allocated_bytes
                .cmp(&a.1.allocated_bytes)
                .then(b.1.cpu_time_ns.cmp(&a.1.cpu_time_ns))
                .then(a.0.cmp(b.0))
        });
        let _ = writeln!(out, "\n{name} {title}:");
        if list.is_empty() {
            let _ = writeln!(out, "  (no recorded stack has an edge here)");
            continue;
        }
        let headers = [
            "",
            "allocated",
            "allocs",
            "peak",
            "at exit",
            "CPU time",
            "function",
        ];
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|(other, f)| {
                vec![
                    arrow.to_string(),
                    format_bytes(f.allocated_bytes),
                    f.allocations.to_string(),
                    format_bytes(f.peak_bytes),
                    format_bytes(f.end_bytes),
                    format_time(f.cpu_time_ns),
                    other.to_string(),
                ]
            })
            .collect();
        table(out, &headers, &rows, false);
    }
}
