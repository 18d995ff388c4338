//! `lineprof history`: one row per stored run, newest last (like `git log
//! --reverse`, so the latest run sits next to the prompt).

use std::path::Path;

use serde::Serialize;

use crate::analyze::report::{GitInfo, Totals};
use crate::error::Result;
use crate::output;
use crate::render::history_html::Point;
use crate::render::{format_bytes, format_time, text::table};
use crate::workflow::git;
use crate::workflow::store::{RunSummary, Store};

#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    name: Option<&'a str>,
    started_at: &'a str,
    duration_ns: u64,
    git: &'a GitInfo,
    command: &'a [String],
    totals: &'a Totals,
}

#[derive(Serialize)]
struct History<'a> {
    schema: u32,
    runs: Vec<Row<'a>>,
}

fn keep<'a>(runs: &'a [RunSummary], name: Option<&'a str>) -> impl Iterator<Item = &'a RunSummary> {
    runs.iter()
        .filter(move |r| name.is_none() || r.run.name.as_deref() == name)
}

pub fn render_json(runs: &[RunSummary], name: Option<&str>) -> String {
    let doc = History {
        schema: crate::analyze::report::SCHEMA,
        runs: keep(runs, name)
            .map(|r| Row {
                id: &r.run.id,
                name: r.run.name.as_deref(),
                started_at: &r.run.started_at,
                duration_ns: r.run.duration_ns,
                git: &r.run.git,
                command: &r.run.command,
                totals: &r.totals,
            })
            .collect(),
    };
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_default();
    out.push('\n');
    out
}

pub fn render_text(runs: &[RunSummary], name: Option<&str>) -> String {
    let rows: Vec<Vec<String>> = keep(runs, name)
        .map(|r| {
            let t = &r.totals;
            vec![
                // `2026-05-01T12:00:00Z` -> `2026-05-01 12:00:00`
                r.run
                    .started_at
                    .replacen('T', " ", 1)
                    .trim_end_matches('Z')
                    .to_string(),
                git::short(r.run.git.commit.as_deref()),
                if r.run.git.dirty { "dirty" } else { "" }.to_string(),
                r.run.name.clone().unwrap_or_else(|| "-".into()),
                t.allocations.to_string(),
                format_bytes(t.allocated_bytes),
                format_bytes(t.peak_bytes),
                format_time(t.cpu_time_ns),
                r.run.id.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return match name {
            Some(n) => format!("no stored runs named `{n}`\n"),
            None => "no stored runs; profile a program with `lineprof run -- PROGRAM` or `cargo lineprof run`\n".into(),
        };
    }
    let mut out = String::new();
    let headers = [
        "Date (UTC)",
        "Commit",
        "Dirty",
        "Name",
        "Allocs",
        "Allocated",
        "Peak",
        "CPU",
        "Run",
    ];
    table(&mut out, &headers, &rows, false);
    out
}

/// `--format` of `lineprof history`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HistoryFormat {
    Text,
    Json,
    /// A self-contained page with a chart of the figures per commit.
    Html,
}

pub fn render_html(runs: &[RunSummary], name: Option<&str>) -> String {
    let points: Vec<Point> = keep(runs, name)
        .map(|r| Point {
            run: &r.run,
            totals: &r.totals,
        })
        .collect();
    crate::render::history_html::render(&points)
}

/// `lineprof history [--name NAME] [--format F] [-o FILE]`.
pub fn command(
    store: &Store,
    name: Option<&str>,
    format: HistoryFormat,
    out: Option<&Path>,
) -> Result<()> {
    let runs = store.list()?;
    let text = match format {
        HistoryFormat::Text => render_text(&runs, name),
        HistoryFormat::Json => render_json(&runs, name),
        HistoryFormat::Html => render_html(&runs, name),
    };
    output::write_output(out, &text)
}
