//! Renderers: turn a `Report` into text, JSON, HTML, or the stack formats
//! of other tools (folded stacks, pprof, DHAT). They choose and order lines
//! (`View`) but compute no figures: everything comes from the report.

pub mod bmf;
pub mod by_test;
pub mod collapsed;
pub mod dhat;
pub mod functions;
pub mod history_html;
pub mod html;
pub mod json;
pub mod markdown;
pub mod pprof;
pub mod text;

use crate::analyze::functions::FunctionFigures;
use crate::analyze::lines::{sort_lines, Figures, LineFigures, LineFilter, SortKey, SourceFiles};
use crate::analyze::report::Report;
use crate::analyze::stacks::{Frame, StackTable};
use crate::error::{Error, Result};

/// What the user asked to see.
#[derive(Debug, Clone)]
pub struct View {
    pub sort: SortKey,
    /// At most this many lines (table rows in text, `lines` in JSON).
    pub top: Option<usize>,
    pub filter: LineFilter,
}

impl Default for View {
    fn default() -> Self {
        View {
            sort: SortKey::Allocated,
            top: None,
            filter: LineFilter::default(),
        }
    }
}

/// The lines of `report` that `view` keeps, sorted, before `--top`.
pub fn selected_lines(report: &Report, view: &View) -> Vec<LineFigures> {
    let mut lines: Vec<LineFigures> = report
        .lines
        .iter()
        .filter(|l| view.filter.keeps(l))
        .cloned()
        .collect();
    sort_lines(&mut lines, view.sort);
    lines
}

/// The functions of `report` that `view`'s function and file filters keep,
/// sorted by the key (`self` figures; calls and wall time for `hits` and
/// `time`), before `--top`.
pub fn selected_functions(report: &Report, view: &View) -> Vec<FunctionFigures> {
    let mut functions: Vec<FunctionFigures> = report
        .functions
        .iter()
        .filter(|f| {
            view.filter
                .function
                .as_ref()
                .is_none_or(|r| r.is_match(&f.function))
                && view
                    .filter
                    .file
                    .as_ref()
                    .is_none_or(|r| r.is_match(&f.file))
        })
        .cloned()
        .collect();
    sort_functions(&mut functions, view.sort, false);
    functions
}

/// Sorts functions by a figure, descending: `self` or, with `cumulative`,
/// `total`; `hits` sorts by calls and `time` by wall time.
pub fn sort_functions(functions: &mut [FunctionFigures], key: SortKey, cumulative: bool) {
    let value = |f: &FunctionFigures| match key {
        SortKey::Hits => f.calls.unwrap_or(0) as i128,
        SortKey::Time => f.time_ns.unwrap_or(0) as i128,
        _ if cumulative => key.value(&f.total),
        _ => key.value(&f.self_figures),
    };
    functions.sort_by(|a, b| {
        value(b)
            .cmp(&value(a))
            .then(key.value(&b.total).cmp(&key.value(&a.total)))
            .then_with(|| (&a.file, a.line, &a.function).cmp(&(&b.file, b.line, &b.function)))
    });
}

/// The per-stack figures the stack formats need, or the error saying why
/// this report has none.
pub fn require_stacks<'a>(report: &'a Report, format: &str) -> Result<&'a StackTable> {
    report.stacks.as_ref().ok_or_else(|| Error::Usage {
        detail: format!(
            "run {}: this stored run keeps per-line figures only (it was stored by an older lineprof), so it has no stacks for --format {format}; report the profile file or re-run the program with `lineprof run`",
            report.run.id
        ),
    })
}

/// `function (file:line)`, or the bare function when the line is unknown.
pub fn frame_label(f: &Frame) -> String {
    if f.file.is_empty() {
        f.function.clone()
    } else {
        format!("{} ({}:{})", f.function, f.file, f.line)
    }
}

/// `512 B`, `1.2 KiB`, `3.0 MiB`, `1.5 GiB`.
/// What a report for people shows, shared by the text and HTML renderers:
/// one top-lines table per sort key (by default, with CPU samples, one by
/// allocated bytes and one by CPU time), each a key and its ranked lines,
/// and the functions that get a source listing, each as its lines.
pub struct Plan {
    pub tables: Vec<(SortKey, Vec<LineFigures>)>,
    pub listings: Vec<Vec<LineFigures>>,
}

pub fn plan(report: &Report, view: &View) -> Plan {
    let lines = selected_lines(report, view);
    let top = view.top.unwrap_or(text::DEFAULT_TOP);
    let keys = if view.sort == SortKey::Allocated && report.totals.cpu_samples > 0 {
        vec![SortKey::Allocated, SortKey::Cpu]
    } else {
        vec![view.sort]
    };
    let mut tables = Vec::new();
    let mut listed: Vec<(String, String)> = Vec::new();
    for key in keys {
        // Lines with only `total` figures show up in the listings instead.
        let mut ranked: Vec<LineFigures> = lines
            .iter()
            .filter(|l| key.line_value(l) != 0)
            .cloned()
            .collect();
        sort_lines(&mut ranked, key);
        ranked.truncate(top);
        tables.push((key, ranked));
        for f in text::top_functions(&lines, key, top.min(text::LISTED_FUNCTIONS)) {
            let marked = report
                .functions
                .iter()
                .any(|m| m.is_marked() && m.function == f.1);
            if !listed.contains(&f) && !marked {
                listed.push(f);
            }
        }
    }
    // Line 0 is code the compiler attributes to no line: it has a row in
    // the tables but no place in a listing.
    let listings = listed
        .into_iter()
        .map(|(file, function)| {
            lines
                .iter()
                .filter(|l| l.file == file && l.function == function && l.line > 0)
                .cloned()
                .collect()
        })
        .collect();
    Plan { tables, listings }
}

/// A `#[lineprof::profile]` function's listing, line_profiler's layout:
/// every line from its `fn` to its closing brace, with hits, time, per hit
/// and % time beside the memory figures (`total`: callees included, as the
/// time is).
pub struct TimedListing {
    pub function: String,
    pub file: String,
    pub line: u32,
    pub calls: u64,
    pub time_ns: u64,
    pub rows: Vec<TimedRow>,
}

pub struct TimedRow {
    pub line: u32,
    /// None where the line never ran.
    pub hits: Option<u64>,
    pub time_ns: u64,
    pub figures: Option<Figures>,
    pub source: String,
}

/// Longest listing of a marked function, in lines.
const MAX_LISTING: u32 = 2000;

/// The listings of the marked functions `view` keeps, most time first.
pub fn timed_listings(
    report: &Report,
    view: &View,
    sources: &mut SourceFiles,
) -> Vec<TimedListing> {
    let mut marked: Vec<&FunctionFigures> = report
        .functions
        .iter()
        .filter(|f| f.is_marked())
        .filter(|f| {
            view.filter
                .function
                .as_ref()
                .is_none_or(|r| r.is_match(&f.function))
                && view
                    .filter
                    .file
                    .as_ref()
                    .is_none_or(|r| r.is_match(&f.file))
        })
        .collect();
    marked.sort_by(|a, b| b.time_ns.cmp(&a.time_ns).then(a.function.cmp(&b.function)));
    marked
        .into_iter()
        .map(|f| timed_listing(report, f, sources))
        .collect()
}

fn timed_listing(report: &Report, f: &FunctionFigures, sources: &mut SourceFiles) -> TimedListing {
    let own: Vec<&LineFigures> = report
        .lines
        .iter()
        .filter(|l| l.file == f.file && l.function == f.function && l.hits.is_some())
        .collect();
    let full = match &report.root {
        Some(root) if std::path::Path::new(&f.file).is_relative() => root.join(&f.file),
        _ => std::path::PathBuf::from(&f.file),
    };
    let text = |n: u32, sources: &mut SourceFiles| {
        let kept = report
            .lines
            .iter()
            .find(|l| l.file == f.file && l.line == n && l.source.is_some())
            .and_then(|l| l.source.clone());
        kept.or_else(|| sources.line(&full, n).map(str::to_string))
    };
    let last_timed = own.iter().map(|l| l.line).max().unwrap_or(f.line);
    // The closing brace: the first line after the last timed one that is
    // `}` at the indentation of the `fn` line.
    let indent = |s: &str| s.len() - s.trim_start().len();
    let fn_indent = text(f.line, sources).map_or(0, |s| indent(&s));
    let mut last = last_timed;
    for n in last_timed + 1..f.line.saturating_add(MAX_LISTING) {
        match text(n, sources) {
            Some(s) if s.trim() == "}" && indent(&s) == fn_indent => {
                last = n;
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    let rows = (f.line..=last)
        .map(|n| {
            let timed = own.iter().find(|l| l.line == n);
            // Memory of the line: on the marked function's own line, or
            // under another name the symbolizer gave the same line.
            let figures = timed.map(|l| l.total).or_else(|| {
                report
                    .lines
                    .iter()
                    .find(|l| l.file == f.file && l.line == n && !l.function.contains("{closure"))
                    .map(|l| l.total)
            });
            TimedRow {
                line: n,
                hits: timed.and_then(|l| l.hits).filter(|&h| h > 0),
                time_ns: timed.and_then(|l| l.time_ns).unwrap_or(0),
                figures: figures.filter(|f| !f.is_zero()),
                source: text(n, sources).unwrap_or_default(),
            }
        })
        .collect();
    TimedListing {
        function: f.function.clone(),
        file: f.file.clone(),
        line: f.line,
        calls: f.calls.unwrap_or(0),
        time_ns: f.time_ns.unwrap_or(0),
        rows,
    }
}

/// The summary's (name, value) rows, shared by the text and HTML reports.
pub fn summary_rows(
    t: &crate::analyze::report::Totals,
    cpu_hz: u32,
) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("allocations", t.allocations.to_string()),
        ("allocated", format_bytes(t.allocated_bytes)),
        ("freed", format_bytes(t.freed_bytes)),
        ("peak", format_bytes(t.peak_bytes)),
        ("at exit", format_bytes(t.end_bytes)),
    ];
    if t.cpu_samples > 0 {
        // Timer samples fire at the kernel's tick: say so when the samples
        // were fewer than the rate asked for.
        let periods = t.cpu_time_ns as f64 * cpu_hz as f64 / 1e9;
        let cpu = if cpu_hz > 0 && periods > 1.2 * t.cpu_samples as f64 {
            format!(
                "{} ({} real samples, {:.0} asked for at {} Hz)",
                format_time(t.cpu_time_ns),
                t.cpu_samples,
                periods,
                cpu_hz
            )
        } else {
            format!("{} ({} samples)", format_time(t.cpu_time_ns), t.cpu_samples)
        };
        rows.push(("CPU time", cpu));
        if t.unattributed_cpu_time_ns > 0 {
            let share = 100.0 * t.unattributed_cpu_time_ns as f64 / t.cpu_time_ns as f64;
            rows.push((
                "  on no line",
                format!(
                    "{} ({share:.1}%: std, C or start-up code only)",
                    format_time(t.unattributed_cpu_time_ns)
                ),
            ));
        }
    }
    if t.profiler_cpu_time_ns > 0 {
        rows.push((
            "lineprof's own CPU",
            format!(
                "{} (recording; in no line, not in CPU time)",
                format_time(t.profiler_cpu_time_ns)
            ),
        ));
    }
    rows
}

pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Bytes with a sign for negative values (`-1.2 MiB`).
pub fn format_signed_bytes(n: i64) -> String {
    if n < 0 {
        format!("-{}", format_bytes(n.unsigned_abs()))
    } else {
        format_bytes(n as u64)
    }
}

/// `850 ns`, `12.3 µs`, `340.2 ms`, `1.5 s`.
pub fn format_time(ns: u64) -> String {
    let v = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", v / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1} ms", v / 1e6)
    } else {
        format!("{:.1} s", v / 1e9)
    }
}

/// A report with an empty run, for renderer tests.
/// The first 7 hex digits of a commit, or `-` when there is none.
pub fn short_commit(commit: Option<&str>) -> String {
    commit.map_or_else(|| "-".to_string(), |c| c.chars().take(7).collect())
}

#[cfg(test)]
pub mod testing {
    use crate::analyze::report::{ExecutableInfo, GitInfo, Report, RunInfo, Sampling, Totals};

    pub fn report() -> Report {
        Report {
            run: RunInfo {
                id: "r".into(),
                name: None,
                command: vec!["./app".into()],
                started_at: "1970-01-01T00:00:00Z".into(),
                duration_ns: 5,
                git: GitInfo::default(),
                executable: ExecutableInfo {
                    path: "/tmp/app".into(),
                    build_id: None,
                },
                sampling: Sampling {
                    alloc_sample_bytes: 0,
                    cpu_hz: 1000,
                    estimated: false,
                },
            },
            totals: Totals::default(),
            lines: vec![],
            warnings: vec![],
            functions: vec![],
            root: None,
            stacks: None,
            tests: Vec::new(),
            shared_init: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_units() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(1_258_291), "1.2 MiB");
        assert_eq!(format_bytes(3 << 30), "3.0 GiB");
        assert_eq!(format_signed_bytes(-2048), "-2.0 KiB");
        assert_eq!(format_time(850), "850 ns");
        assert_eq!(format_time(12_300), "12.3 µs");
        assert_eq!(format_time(340_200_000), "340.2 ms");
        assert_eq!(format_time(1_500_000_000), "1.5 s");
    }
}
