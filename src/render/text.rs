//! Terminal report: a summary header, a table of the top lines by their
//! `self` figures, then memory_profiler-style source listings of the top
//! functions with `total` figures (what each line did, callees included).

use std::collections::HashMap;
use std::fmt::Write;

use super::{format_bytes, format_signed_bytes, format_time, Listing, ListingRow, View};
use crate::analyze::classify::short_path;
use crate::analyze::lines::{Figures, LineFigures, SortKey, SourceFiles};
use crate::analyze::report::Report;

/// Table rows when `--top` is not given.
pub const DEFAULT_TOP: usize = 20;
/// Functions given a source listing.
pub(super) const LISTED_FUNCTIONS: usize = 5;
/// Longest source excerpt in the top-lines table.
const EXCERPT_CHARS: usize = 60;

/// Renders the whole text report. `sources` supplies the lines between
/// those with figures in the listings; a missing file leaves them blank.
pub fn render(report: &Report, view: &View, sources: &mut SourceFiles) -> String {
    let mut out = String::new();
    header(&mut out, report);
    let plan = super::plan(report, view);
    for (key, ranked) in &plan.tables {
        if ranked.is_empty() {
            // No table of nothing: one sentence says where the figure went.
            let _ = write!(out, "\n{}", no_lines_sentence(report, *key, view));
        } else {
            if view.filter.user_only {
                let _ = write!(out, "\n{}", coverage_sentence(report, *key));
            }
            top_lines(&mut out, ranked, *key, view, report.totals.cpu_time_ns);
        }
        if let Some((_, deps)) = plan.dependency_tables.iter().find(|(k, _)| k == key) {
            dependency_lines(&mut out, deps, *key, report.totals.cpu_time_ns);
        }
    }
    for t in super::timed_listings(report, view, sources) {
        timed_listing(&mut out, report, &t);
    }
    for l in &plan.listings {
        listing(&mut out, report, l, sources);
    }
    let _ = write!(out, "\n{INCREMENT_NOTE}\n");
    out
}

/// What Increment and At exit mean, under every report that shows them:
/// a line whose memory another line freed later keeps its increment.
pub const INCREMENT_NOTE: &str = "Increment is what a line allocated minus what it freed itself (what it kept while it ran); \
memory that other code frees later still counts here. At exit is what was still allocated when the program ended: the leaks.";

/// `your code: 0.06% of allocated bytes; dependencies 81%, the standard
/// library and code on no line 19% (--focus all shows every line)`.
pub fn coverage_sentence(report: &Report, key: SortKey) -> String {
    let c = super::coverage(report, key);
    let rest = c.total - c.user - c.dependency;
    format!(
        "your code: {} of {}; dependencies {}, the standard library and code on no line {} (--focus all shows every line)\n",
        super::percent(c.user, c.total),
        sort_title(key),
        super::percent(c.dependency, c.total),
        super::percent(rest.max(0), c.total)
    )
}

/// In place of an empty top-lines table: `No line of your code has self
/// CPU time (dependencies 0%, the standard library and code on no line
/// 100%; --focus all shows every line)`.
fn no_lines_sentence(report: &Report, key: SortKey, view: &View) -> String {
    let f = &view.filter;
    if f.file.is_some() || f.function.is_some() {
        let flags: Vec<String> = [("--file", &f.file), ("--function", &f.function)]
            .iter()
            .filter_map(|(flag, r)| r.as_ref().map(|r| format!("{flag} {}", r.as_str())))
            .collect();
        return format!(
            "{} that {} keeps has self {}\n",
            super::no_line(f.user_only),
            flags.join(" and "),
            sort_title(key)
        );
    }
    if !f.user_only {
        return format!(
            "{} has self {} here (the standard library, C and start-up code have no line of their own)\n",
            super::no_line(false),
            sort_title(key)
        );
    }
    let c = super::coverage(report, key);
    let rest = c.total - c.user - c.dependency;
    format!(
        "{} has self {} (dependencies {}, the standard library and code on no line {}; --focus all shows every line)\n",
        super::no_line(true),
        sort_title(key),
        super::percent(c.dependency, c.total),
        super::percent(rest.max(0), c.total)
    )
}

fn dependency_lines(out: &mut String, lines: &[LineFigures], key: SortKey, cpu_total_ns: u64) {
    let title = top_title(lines.len(), "dependency lines", key);
    let _ = writeln!(out, "\n{title} {DEPENDENCY_NOTE}:");
    lines_table(out, lines, key, cpu_total_ns);
}

/// `12.5`: microseconds, line_profiler's default timer unit.
pub(super) fn micros(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e3)
}

/// The timed listing's head and column titles (memory columns: `total`).
pub(super) fn timed_head(t: &super::TimedListing) -> String {
    format!(
        "Timer unit: 1e-06 s\n\nTotal time: {:.6} s ({} calls)\nFile: {}\nFunction: {} at line {}\n",
        t.time_ns as f64 / 1e9,
        t.calls,
        t.file,
        t.function,
        t.line
    )
}

/// One row's timer cells: hits, time, per hit, % time (blank where the
/// line never ran).
pub(super) fn timer_cells(t: &super::TimedListing, row: &super::TimedRow) -> Vec<String> {
    match row.hits {
        Some(h) => vec![
            h.to_string(),
            micros(row.time_ns),
            micros(row.time_ns / h),
            if t.time_ns > 0 {
                format!("{:.1}", row.time_ns as f64 * 100.0 / t.time_ns as f64)
            } else {
                String::new()
            },
        ],
        None => vec![String::new(); 4],
    }
}

fn timed_listing(out: &mut String, r: &Report, t: &super::TimedListing) {
    let has_cpu = r.totals.cpu_samples > 0;
    let _ = write!(out, "\n{}\n", timed_head(t));
    let mut headers = vec!["Line #", "Hits", "Time", "Per Hit", "% Time"];
    headers.extend(figure_headers(has_cpu));
    headers.push("Line Contents");
    let rows: Vec<Vec<String>> = t
        .rows
        .iter()
        .map(|row| {
            let mut cells = vec![row.line.to_string()];
            cells.extend(timer_cells(t, row));
            match &row.figures {
                Some(f) => cells.extend(figure_cells(f, has_cpu, r.totals.cpu_time_ns)),
                None => cells.extend(figure_headers(has_cpu).iter().map(|_| String::new())),
            }
            cells.push(row.source.clone());
            cells
        })
        .collect();
    table(out, &headers, &rows, true);
}

fn header(out: &mut String, r: &Report) {
    let command = if r.run.command.is_empty() {
        r.run.executable.path.clone()
    } else {
        r.run.command.join(" ")
    };
    let _ = writeln!(
        out,
        "lineprof report: {command}\n  run {}, started {}, ran {}",
        r.run.id,
        r.run.started_at,
        format_time(r.run.duration_ns)
    );
    let git = &r.run.git;
    if let Some(commit) = &git.commit {
        let branch = git
            .branch
            .as_deref()
            .map(|b| format!(" on {b}"))
            .unwrap_or_default();
        let dirty = if git.dirty { " (dirty)" } else { "" };
        let name = r
            .run
            .name
            .as_deref()
            .map(|n| format!("{n}, "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {name}commit {}{branch}{dirty}",
            super::short_commit(Some(commit))
        );
    }
    for (_, remark) in super::remarks(r) {
        let _ = writeln!(out, "{remark}");
    }
    let rows = super::summary_rows(&r.totals, r.run.sampling.cpu_hz);
    out.push('\n');
    for (name, value) in rows {
        let _ = writeln!(out, "  {name:<12} {value}");
    }
}

/// `Top 5 lines by self allocated bytes`: the title of a table of `n`
/// `rows` ranked by `key`.
pub(super) fn top_title(n: usize, rows: &str, key: SortKey) -> String {
    format!("Top {n} {rows} by self {}", sort_title(key))
}

/// After the title of the dependency lines' table.
pub(super) const DEPENDENCY_NOTE: &str = "(your code holds less than half)";

pub(super) fn sort_title(key: SortKey) -> &'static str {
    match key {
        SortKey::Allocated => "allocated bytes",
        SortKey::Freed => "freed bytes",
        SortKey::Increment => "increment",
        SortKey::Peak => "bytes live at peak",
        SortKey::End => "bytes live at exit",
        SortKey::Allocations => "allocations",
        SortKey::Cpu => "CPU time",
        SortKey::Hits => "hits",
        SortKey::Time => "wall time",
    }
}

fn top_lines(
    out: &mut String,
    lines: &[LineFigures],
    key: SortKey,
    view: &View,
    cpu_total_ns: u64,
) {
    let scope = if view.filter.user_only {
        " in your code"
    } else {
        ""
    };
    let _ = writeln!(out, "\n{}{scope}:", top_title(lines.len(), "lines", key));
    lines_table(out, lines, key, cpu_total_ns);
}

fn lines_table(out: &mut String, lines: &[LineFigures], key: SortKey, cpu_total_ns: u64) {
    let has_cpu = cpu_total_ns > 0;
    let timer = key.is_timer();
    let mut headers = if timer {
        vec!["Hits", "Time (µs)"]
    } else {
        vec![]
    };
    headers.extend(figure_headers(has_cpu));
    headers.push("Line");
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let mut row = if timer {
                vec![
                    l.hits.unwrap_or(0).to_string(),
                    micros(l.time_ns.unwrap_or(0)),
                ]
            } else {
                vec![]
            };
            row.extend(figure_cells(&l.self_figures, has_cpu, cpu_total_ns));
            row.push(describe_line(l));
            row
        })
        .collect();
    table(out, &headers, &rows, false);
}

fn describe_line(l: &LineFigures) -> String {
    let place = if l.file.is_empty() {
        "??".to_string()
    } else {
        format!("{}:{}", short_path(&l.file, None), l.line)
    };
    let mut s = format!("{place}  {}", l.function);
    if let Some(src) = l.source.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let excerpt: String = src.chars().take(EXCERPT_CHARS).collect();
        let more = if src.chars().count() > EXCERPT_CHARS {
            "…"
        } else {
            ""
        };
        let _ = write!(s, "  `{excerpt}{more}`");
    }
    s
}

pub(super) fn figure_headers(has_cpu: bool) -> Vec<&'static str> {
    let mut h = vec![
        "Allocated",
        "Freed",
        "Increment",
        "Peak",
        "At exit",
        "Allocs",
    ];
    if has_cpu {
        h.extend(["Time", "% Time"]);
    }
    h
}

/// `% Time` is relative to `cpu_total`, the process's CPU time.
pub(super) fn figure_cells(f: &Figures, has_cpu: bool, cpu_total: u64) -> Vec<String> {
    let mut c = vec![
        format_bytes(f.allocated_bytes),
        format_bytes(f.freed_bytes),
        format_signed_bytes(f.increment_bytes),
        format_bytes(f.peak_bytes),
        format_bytes(f.end_bytes),
        f.allocations.to_string(),
    ];
    if has_cpu {
        c.push(format_time(f.cpu_time_ns));
        c.push(if cpu_total > 0 {
            format!("{:.1}", f.cpu_time_ns as f64 * 100.0 / cpu_total as f64)
        } else {
            String::new()
        });
    }
    c
}

/// The (file, function) pairs with the largest summed `self` figure of `key`.
pub(super) fn top_functions(
    lines: &[LineFigures],
    key: SortKey,
    n: usize,
) -> Vec<(String, String)> {
    let mut sums: HashMap<(&str, &str), i128> = HashMap::new();
    for l in lines.iter().filter(|l| !l.file.is_empty() && l.line > 0) {
        *sums.entry((&l.file, &l.function)).or_default() += key.value(&l.self_figures);
    }
    let mut ranked: Vec<_> = sums.into_iter().filter(|&(_, v)| v > 0).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
        .into_iter()
        .take(n)
        .map(|((file, function), _)| (file.to_string(), function.to_string()))
        .collect()
}

/// One function's listing: source lines with `total` figures, gaps of
/// lines without figures in long functions shown as `...`.
fn listing(out: &mut String, r: &Report, l: &Listing, sources: &mut SourceFiles) {
    let _ = writeln!(
        out,
        "\n{}  ({}, figures include callees)",
        l.function,
        short_path(&l.file, None)
    );
    let has_cpu = r.totals.cpu_samples > 0;
    let mut headers = vec!["Line #"];
    headers.extend(figure_headers(has_cpu));
    headers.push("Line Contents");
    let mut rows = Vec::new();
    for row in &l.rows {
        let mut cells = Vec::new();
        match row {
            ListingRow::Line(n, figures) => {
                let text = l.line_text(r, *n, figures.as_deref(), sources);
                cells.push(n.to_string());
                match figures {
                    Some(f) => cells.extend(figure_cells(&f.total, has_cpu, r.totals.cpu_time_ns)),
                    None => cells.extend(figure_headers(has_cpu).iter().map(|_| String::new())),
                }
                cells.push(text);
            }
            ListingRow::Gap(n) => {
                cells.push("...".into());
                cells.extend(figure_headers(has_cpu).iter().map(|_| String::new()));
                cells.push(format!("({n} lines without figures)"));
            }
        }
        rows.push(cells);
    }
    table(out, &headers, &rows, true);
    if l.left_out > 0 {
        let _ = writeln!(
            out,
            "({} more lines with smaller figures left out; --function '{}' lists them in the table)",
            l.left_out,
            l.function
        );
    }
}

/// Writes an aligned table: every column but the last right-aligned, the
/// last left-aligned and unpadded. `ruler` adds a `=` line under the header.
pub fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>], ruler: bool) {
    let last = headers.len() - 1;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(last) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            if i == last {
                s.push_str("  ");
                s.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                s.push_str(&" ".repeat(pad + if i == 0 { 0 } else { 2 }));
                s.push_str(cell);
            }
        }
        s.truncate(s.trim_end().len());
        s
    };
    let head = line(&mut headers.iter().copied());
    let _ = writeln!(out, "{head}");
    if ruler {
        let _ = writeln!(out, "{}", "=".repeat(head.chars().count()));
    }
    for row in rows {
        let _ = writeln!(out, "{}", line(&mut row.iter().map(String::as_str)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::lines::LineKind;
    use crate::analyze::report::Totals;

    fn figures(allocations: u64, allocated: u64, freed: u64, peak: u64, end: u64) -> Figures {
        Figures {
            allocations,
            allocated_bytes: allocated,
            frees: allocations,
            freed_bytes: freed,
            increment_bytes: allocated as i64 - freed as i64,
            peak_bytes: peak,
            end_bytes: end,
            cpu_samples: 0,
            cpu_time_ns: 0,
        }
    }

    fn line(n: u32, src: &str, s: Figures, t: Figures) -> LineFigures {
        LineFigures {
            file: "src/main.rs".into(),
            line: n,
            function: "app::build".into(),
            kind: LineKind::User,
            source: Some(src.into()),
            self_figures: s,
            total: t,
            hits: None,
            time_ns: None,
        }
    }

    #[test]
    fn renders_header_table_and_listing() {
        let mut report = Report {
            totals: Totals {
                allocations: 3,
                allocated_bytes: 3 << 20,
                frees: 2,
                freed_bytes: 1 << 20,
                peak_bytes: 2 << 20,
                end_bytes: 1 << 20,
                ..Totals::default()
            },
            lines: vec![
                line(
                    3,
                    "    let a = vec![0u8; 1 << 21];",
                    figures(1, 2 << 20, 0, 2 << 20, 0),
                    figures(1, 2 << 20, 0, 2 << 20, 0),
                ),
                line(
                    5,
                    "    let b = vec![0u8; 1 << 20];",
                    figures(1, 1 << 20, 1 << 20, 0, 1 << 20),
                    figures(1, 1 << 20, 1 << 20, 0, 1 << 20),
                ),
            ],
            warnings: vec!["profile has no end record".into()],
            ..crate::render::testing::report()
        };
        report.run.id = "lineprof-42".into();
        report.run.command = vec!["/tmp/app".into(), "--n".into(), "3".into()];
        report.run.started_at = "2023-11-14T22:13:20Z".into();
        report.run.duration_ns = 1_500_000_000;
        report.run.sampling.cpu_hz = 0;
        let text = render(&report, &View::default(), &mut SourceFiles::default());
        let expected = "\
lineprof report: /tmp/app --n 3
  run lineprof-42, started 2023-11-14T22:13:20Z, ran 1.5 s
warning: profile has no end record

  allocations  3
  allocated    3.0 MiB
  freed        1.0 MiB
  peak         2.0 MiB
  at exit      1.0 MiB

Top 2 lines by self allocated bytes:
Allocated    Freed  Increment     Peak  At exit  Allocs  Line
  2.0 MiB      0 B    2.0 MiB  2.0 MiB      0 B       1  src/main.rs:3  app::build  `let a = vec![0u8; 1 << 21];`
  1.0 MiB  1.0 MiB        0 B      0 B  1.0 MiB       1  src/main.rs:5  app::build  `let b = vec![0u8; 1 << 20];`

app::build  (src/main.rs, figures include callees)
Line #  Allocated    Freed  Increment     Peak  At exit  Allocs  Line Contents
==============================================================================
     3    2.0 MiB      0 B    2.0 MiB  2.0 MiB      0 B       1      let a = vec![0u8; 1 << 21];
     4
     5    1.0 MiB  1.0 MiB        0 B      0 B  1.0 MiB       1      let b = vec![0u8; 1 << 20];
";
        let expected = format!("{expected}\n{INCREMENT_NOTE}\n");
        assert_eq!(text, expected, "\n{text}");
    }
}
