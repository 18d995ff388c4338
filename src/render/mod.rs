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
use crate::analyze::lines::{
    sort_lines, Figures, LineFigures, LineFilter, LineKind, SortKey, SourceFiles,
};
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
        .filter(|f| view.filter.keeps_function(&f.function, &f.file))
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

/// What a report for people shows, shared by the text and HTML renderers:
/// one top-lines table per sort key (by default, with CPU samples, one by
/// allocated bytes and one by CPU time), each a key and its ranked lines;
/// when the view shows only your code and it holds less than half of a
/// table's figure, the top dependency lines of that key too; and the
/// functions that get a source listing.
pub struct Plan {
    pub tables: Vec<(SortKey, Vec<LineFigures>)>,
    /// (key, top dependency lines), empty unless the user view hides most.
    pub dependency_tables: Vec<(SortKey, Vec<LineFigures>)>,
    pub listings: Vec<Listing>,
}

/// Dependency lines listed when your code holds little.
pub const DEPENDENCY_TOP: usize = 10;
/// A listing spanning more lines than this shows only the lines with
/// figures and `LISTING_CONTEXT` lines around each, the rest as gaps.
pub const LISTING_SPAN: u32 = 60;
const LISTING_CONTEXT: u32 = 2;
/// Most lines with figures a listing shows (the largest by the key).
pub const LISTING_LINES: usize = 40;

/// One function's source listing: its rows in line order.
pub struct Listing {
    pub file: String,
    pub function: String,
    pub kind: crate::analyze::lines::LineKind,
    pub rows: Vec<ListingRow>,
    /// Lines with figures not shown (the listing's smallest by the key).
    pub left_out: usize,
}

impl Listing {
    /// The text of line `n` of the listing: kept with its figures, or read
    /// from the source file (a file of your code under the report's root).
    pub fn line_text(
        &self,
        r: &Report,
        n: u32,
        figures: Option<&LineFigures>,
        sources: &mut SourceFiles,
    ) -> String {
        if let Some(text) = figures.and_then(|f| f.source.clone()) {
            return text;
        }
        let path = match (&r.root, self.kind) {
            (Some(root), LineKind::User) => root.join(&self.file),
            _ => std::path::PathBuf::from(&self.file),
        };
        sources
            .line(&path, n)
            .map(str::to_string)
            .unwrap_or_default()
    }
}

pub enum ListingRow {
    /// A source line, with its figures if it has any.
    Line(u32, Option<Box<LineFigures>>),
    /// This many source lines without figures (or left out) not shown.
    Gap(u32),
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
    let mut dependency_tables = Vec::new();
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
        if view.filter.user_only {
            let c = coverage(report, key);
            if c.total > 0 && c.user * 2 < c.total {
                let all = View {
                    filter: LineFilter {
                        user_only: false,
                        ..view.filter.clone()
                    },
                    ..view.clone()
                };
                let mut deps: Vec<LineFigures> = selected_lines(report, &all)
                    .into_iter()
                    .filter(|l| l.kind == LineKind::Dependency && key.value(&l.self_figures) > 0)
                    .collect();
                sort_lines(&mut deps, key);
                deps.truncate(DEPENDENCY_TOP);
                if !deps.is_empty() {
                    dependency_tables.push((key, deps));
                }
            }
        }
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
        .filter_map(|(file, function)| {
            let own: Vec<LineFigures> = lines
                .iter()
                .filter(|l| l.file == file && l.function == function && l.line > 0)
                .cloned()
                .collect();
            listing(own, view.sort)
        })
        .collect();
    Plan {
        tables,
        dependency_tables,
        listings,
    }
}

/// The rows of one function's listing: every line from the first to the
/// last with figures when that is short, else the lines with figures (the
/// `LISTING_LINES` largest by `key`'s total) with a little context.
fn listing(mut own: Vec<LineFigures>, key: SortKey) -> Option<Listing> {
    let first = own.first()?.clone();
    let mut left_out = 0;
    if own.len() > LISTING_LINES {
        own.sort_by_key(|l| std::cmp::Reverse(key.value(&l.total)));
        left_out = own.len() - LISTING_LINES;
        own.truncate(LISTING_LINES);
    }
    own.sort_by_key(|l| l.line);
    let (lo, hi) = (own[0].line, own[own.len() - 1].line);
    let shown = |n: u32| {
        hi - lo < LISTING_SPAN || own.iter().any(|l| l.line.abs_diff(n) <= LISTING_CONTEXT)
    };
    let mut rows = Vec::new();
    let mut gap = 0;
    let mut next = own.iter().peekable();
    for n in lo..=hi {
        let figures = match next.peek() {
            Some(l) if l.line == n => next.next().cloned().map(Box::new),
            _ => None,
        };
        if figures.is_none() && !shown(n) {
            gap += 1;
            continue;
        }
        if gap > 0 {
            rows.push(ListingRow::Gap(gap));
            gap = 0;
        }
        rows.push(ListingRow::Line(n, figures));
    }
    Some(Listing {
        file: first.file,
        function: first.function,
        kind: first.kind,
        rows,
        left_out,
    })
}

/// How much of a figure (by `self`) your code and the dependencies hold,
/// against the process total; the rest is in the standard library or on
/// no line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    pub user: i128,
    pub dependency: i128,
    pub total: i128,
}

pub fn coverage(report: &Report, key: SortKey) -> Coverage {
    let total = report.totals.figures();
    let sum = |kind: LineKind| {
        report
            .lines
            .iter()
            .filter(|l| l.kind == kind)
            .map(|l| key.value(&l.self_figures))
            .sum()
    };
    Coverage {
        user: sum(LineKind::User),
        dependency: sum(LineKind::Dependency),
        total: key.value(&total),
    }
}

/// How the sentence that stands for an empty table of lines begins, in
/// text and HTML alike: `No line of your code` (`No line` when every line
/// is shown).
pub fn no_line(user_only: bool) -> &'static str {
    if user_only {
        "No line of your code"
    } else {
        "No line"
    }
}

/// `part` as a percentage of `whole`, with two decimals below 1%.
pub fn percent(part: i128, whole: i128) -> String {
    if whole <= 0 {
        return "0%".into();
    }
    let p = part as f64 * 100.0 / whole as f64;
    if p > 0.0 && p < 0.005 {
        "<0.01%".into()
    } else if p > 0.0 && p < 1.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.0}%")
    }
}

/// The stacks as the export formats (pprof, folded stacks, DHAT) write
/// them, like Go's heap profiles: the allocator's own frames at the
/// innermost end dropped (`classify::is_export_trimmed`), short paths
/// (`classify::short_path`), and stacks that became equal merged.
pub fn export_table(table: &StackTable) -> StackTable {
    use crate::analyze::classify::{export_trim_len, is_export_trimmed, short_path};
    use std::collections::HashMap;
    let trimmed: Vec<bool> = table
        .frames
        .iter()
        .map(|f| is_export_trimmed(&f.file, &f.function))
        .collect();
    let mut out = StackTable {
        events: table.events,
        peak_event: table.peak_event,
        pid: table.pid,
        ..StackTable::default()
    };
    let mut frame_ids: HashMap<u32, u32> = HashMap::new();
    let mut row_of: HashMap<Vec<u32>, usize> = HashMap::new();
    for row in &table.stacks {
        let cut = export_trim_len(row.frames.len(), |i| trimmed[row.frames[i] as usize]);
        let frames: Vec<u32> = row.frames[cut..]
            .iter()
            .map(|&f| {
                *frame_ids.entry(f).or_insert_with(|| {
                    let old = &table.frames[f as usize];
                    out.frames.push(Frame {
                        file: short_path(&old.file, None),
                        ..old.clone()
                    });
                    (out.frames.len() - 1) as u32
                })
            })
            .collect();
        match row_of.get(&frames) {
            Some(&i) => {
                let merged = &mut out.stacks[i];
                merged.figures.add(&row.figures);
                merged.peak_blocks += row.peak_blocks;
                merged.end_blocks += row.end_blocks;
                // Maxima of two stacks at different moments: their sum
                // bounds the merged stack's, as dh_view sums them in its tree.
                merged.max_bytes += row.max_bytes;
                merged.max_blocks += row.max_blocks;
                merged.lifetime_events += row.lifetime_events;
            }
            None => {
                row_of.insert(frames.clone(), out.stacks.len());
                out.stacks.push(crate::analyze::stacks::StackRow {
                    frames,
                    ..row.clone()
                });
            }
        }
    }
    out
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
        .filter(|f| view.filter.keeps_function(&f.function, &f.file))
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
            let plural = if t.cpu_samples == 1 { "" } else { "s" };
            format!(
                "{} ({} sample{plural})",
                format_time(t.cpu_time_ns),
                t.cpu_samples
            )
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
        if t.cpu_samples == 0 {
            rows.push((
                "CPU time",
                "no sample in the program's own code (every one landed while lineprof recorded an event)".into(),
            ));
        }
        rows.push((
            "lineprof's own CPU",
            format!(
                "{} (samples taken while lineprof recorded an event: on no line, not in CPU time)",
                format_time(t.profiler_cpu_time_ns)
            ),
        ));
    }
    rows
}

/// `512 B`, `1.2 KiB`, `3.0 MiB`, `1.5 GiB`.
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
/// What a report says before its figures, in order: warnings (figures may
/// be short), notes, and whether the figures are estimates; each with its
/// weight (`warn` or `dim`, the HTML class) and its text.
pub fn remarks(r: &Report) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = r
        .warnings
        .iter()
        .map(|w| ("warn", format!("warning: {w}")))
        .collect();
    out.extend(r.notes.iter().map(|n| ("dim", format!("note: {n}"))));
    if let Some(p) = &r.panic_machinery {
        out.push(("dim", format!("note: {}", panic_note(p))));
    }
    if r.run.sampling.estimated {
        out.push((
            "warn",
            format!(
                "estimated from sampled allocations, 1 in ~{} bytes",
                r.run.sampling.alloc_sample_bytes
            ),
        ));
    }
    out
}

/// Says where the panic machinery's figures went, and why.
fn panic_note(p: &crate::analyze::lines::Figures) -> String {
    let mut text = format!(
        "std's panic machinery (panic messages, the hook, backtraces) allocated {} in {} allocations",
        format_bytes(p.allocated_bytes),
        p.allocations
    );
    if p.end_bytes > 0 {
        text.push_str(&format!(
            ", {} of it still live at exit (std's backtrace symbolizer cache)",
            format_bytes(p.end_bytes)
        ));
    }
    text.push_str(
        "; it depends on RUST_BACKTRACE, not on your code, so it is on no line's own figures and in no test's (the totals include it)",
    );
    text
}

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
                environment: None,
                mode: None,
                max_depth: None,
            },
            totals: Totals::default(),
            lines: vec![],
            warnings: vec![],
            notes: vec![],
            functions: vec![],
            root: None,
            stacks: None,
            timeline: None,
            tests: Vec::new(),
            shared_init: None,
            panic_machinery: None,
            test_list: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::report::Totals;

    #[test]
    fn no_cpu_row_of_zero_samples() {
        // Every sample landed while lineprof recorded: the program's CPU
        // row says so instead of vanishing beside lineprof's own.
        let t = Totals {
            profiler_cpu_time_ns: 3_000_000,
            ..Totals::default()
        };
        let rows = summary_rows(&t, 1000);
        let cpu = rows.iter().find(|(n, _)| *n == "CPU time").unwrap();
        assert!(
            cpu.1.starts_with("no sample in the program's own code"),
            "{rows:?}"
        );
        assert!(rows
            .iter()
            .any(|(n, v)| *n == "lineprof's own CPU" && v.starts_with("3.0 ms")));
        let one = Totals {
            cpu_samples: 1,
            cpu_time_ns: 1_000_000,
            ..Totals::default()
        };
        let rows = summary_rows(&one, 1000);
        assert_eq!(rows.last().unwrap().1, "1.0 ms (1 sample)");
        assert!(summary_rows(&Totals::default(), 1000)
            .iter()
            .all(|(n, _)| !n.contains("CPU")));
    }

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

    fn line(n: u32, kind: LineKind, bytes: u64) -> LineFigures {
        let f = Figures {
            allocations: 1,
            allocated_bytes: bytes,
            increment_bytes: bytes as i64,
            ..Figures::default()
        };
        LineFigures {
            file: if kind == LineKind::User {
                "src/main.rs".into()
            } else {
                "/r/registry/src/i/dep-1.0/src/lib.rs".into()
            },
            line: n,
            function: if kind == LineKind::User {
                "app::huge".into()
            } else {
                "dep::f".into()
            },
            kind,
            source: None,
            hits: None,
            time_ns: None,
            self_figures: f,
            total: f,
        }
    }

    #[test]
    fn huge_listings_are_cut_with_counts() {
        // Lines 1..=100 with figures every 2nd line up to 90, then 2000.
        let mut own: Vec<LineFigures> = (1..=45)
            .map(|i| line(i * 2, LineKind::User, i as u64))
            .collect();
        own.push(line(2000, LineKind::User, 1000));
        let l = listing(own, SortKey::Allocated).unwrap();
        // 46 lines with figures, the 6 smallest (2, 4, .., 12) left out.
        assert_eq!(l.left_out, 6);
        let shown: Vec<u32> = l
            .rows
            .iter()
            .filter_map(|r| match r {
                ListingRow::Line(n, Some(_)) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(shown.len(), LISTING_LINES);
        assert_eq!((shown[0], shown[shown.len() - 1]), (14, 2000));
        // Between 90 and 2000: two lines of context each side, one gap.
        let gaps: Vec<u32> = l
            .rows
            .iter()
            .filter_map(|r| match r {
                ListingRow::Gap(n) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(gaps, [2000 - 90 - 1 - 4]);
        // A short function is listed whole.
        let l = listing(
            vec![line(3, LineKind::User, 1), line(9, LineKind::User, 1)],
            SortKey::Allocated,
        )
        .unwrap();
        assert_eq!(l.rows.len(), 7);
    }

    #[test]
    fn the_user_view_says_what_it_shows_and_lists_dependencies() {
        let mut r = testing::report();
        r.totals.allocated_bytes = 10_000;
        r.lines = vec![
            line(5, LineKind::User, 6),
            line(7, LineKind::Dependency, 9000),
        ];
        let c = coverage(&r, SortKey::Allocated);
        assert_eq!(
            c,
            Coverage {
                user: 6,
                dependency: 9000,
                total: 10_000
            }
        );
        assert_eq!(percent(c.user, c.total), "0.06%");
        assert_eq!(percent(c.dependency, c.total), "90%");
        let view = View {
            filter: LineFilter {
                user_only: true,
                ..LineFilter::default()
            },
            ..View::default()
        };
        let p = plan(&r, &view);
        assert_eq!(p.tables[0].1.len(), 1);
        assert_eq!(p.dependency_tables.len(), 1);
        assert_eq!(p.dependency_tables[0].1[0].function, "dep::f");
        let text = text::render(
            &r,
            &view,
            &mut crate::analyze::lines::SourceFiles::default(),
        );
        assert!(
            text.contains("your code: 0.06% of allocated bytes; dependencies 90%"),
            "{text}"
        );
        assert!(
            text.contains("Top 1 dependency lines by self allocated bytes"),
            "{text}"
        );
        // With most of it in your code, no dependency table.
        r.lines[0] = line(5, LineKind::User, 9000);
        r.lines[1] = line(7, LineKind::Dependency, 6);
        assert!(plan(&r, &view).dependency_tables.is_empty());
    }
}
