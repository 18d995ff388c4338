//! `lineprof diff`: per-line changes between two runs.
//!
//! Lines are matched across commits by (file, function, source text), so a
//! line that moved because code was added above it is still the same line;
//! identical texts in one function pair up in line order. Lines left over
//! are matched by (file, function, line number): the line whose text
//! changed (`vec![0; n]` became `vec![0; 2 * n]`) shows its old and new text.
//! Only memory figures decide whether a line changed: they are exact, while
//! CPU samples differ from run to run.

use std::collections::HashMap;
use std::fmt::Write;

use std::path::Path;

use serde::Serialize;

use crate::analyze::lines::{Figures, LineFigures};
use crate::analyze::report::{Report, RunInfo, Totals};
use crate::error::{Error, Result};
use crate::output;
use crate::render::{format_bytes, format_time};
use crate::workflow::git;
use crate::workflow::store::{self, RunSummary, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Changed,
    Unchanged,
    Added,
    Removed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchedBy {
    Text,
    Line,
}

/// One line of either run, paired with its counterpart if it has one.
#[derive(Debug, Clone, Serialize)]
pub struct LineChange {
    pub file: String,
    pub function: String,
    pub status: Status,
    pub matched_by: Option<MatchedBy>,
    pub old_line: Option<u32>,
    pub new_line: Option<u32>,
    pub old_source: Option<String>,
    pub new_source: Option<String>,
    /// `self` figures; zero for the side the line is missing from.
    pub old: Figures,
    pub new: Figures,
    /// `new - old` of each `self` figure.
    pub delta: Delta,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Delta {
    pub allocations: i64,
    pub allocated_bytes: i64,
    pub frees: i64,
    pub freed_bytes: i64,
    pub increment_bytes: i64,
    pub peak_bytes: i64,
    pub end_bytes: i64,
    pub cpu_samples: i64,
    pub cpu_time_ns: i64,
}

fn d(new: u64, old: u64) -> i64 {
    new as i64 - old as i64
}

impl Delta {
    pub fn between(old: &Figures, new: &Figures) -> Delta {
        Delta {
            allocations: d(new.allocations, old.allocations),
            allocated_bytes: d(new.allocated_bytes, old.allocated_bytes),
            frees: d(new.frees, old.frees),
            freed_bytes: d(new.freed_bytes, old.freed_bytes),
            increment_bytes: new.increment_bytes - old.increment_bytes,
            peak_bytes: d(new.peak_bytes, old.peak_bytes),
            end_bytes: d(new.end_bytes, old.end_bytes),
            cpu_samples: d(new.cpu_samples, old.cpu_samples),
            cpu_time_ns: d(new.cpu_time_ns, old.cpu_time_ns),
        }
    }

    fn memory_changed(&self) -> bool {
        Delta {
            cpu_samples: 0,
            cpu_time_ns: 0,
            ..*self
        } != Delta::default()
    }

    /// Largest first: allocated bytes, then peak, allocations, exit, CPU.
    fn rank(&self) -> [u64; 5] {
        [
            self.allocated_bytes.unsigned_abs(),
            self.peak_bytes.unsigned_abs(),
            self.allocations.unsigned_abs(),
            self.end_bytes.unsigned_abs(),
            self.cpu_time_ns.unsigned_abs(),
        ]
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub schema: u32,
    pub old: RunInfo,
    pub new: RunInfo,
    pub old_totals: Totals,
    pub new_totals: Totals,
    /// Changed, added and removed lines first (largest change first), then
    /// unchanged ones.
    pub lines: Vec<LineChange>,
}

fn has_memory(f: &Figures) -> bool {
    Figures {
        cpu_samples: 0,
        cpu_time_ns: 0,
        ..*f
    } != Figures::default()
}

fn text_key(l: &LineFigures) -> Option<(&str, &str, &str)> {
    let text = l.source.as_deref()?.trim();
    (!text.is_empty()).then_some((l.file.as_str(), l.function.as_str(), text))
}

/// Pairs the lines of `old` and `new`: `(old index, new index, how)`.
fn match_lines(old: &[LineFigures], new: &[LineFigures]) -> Vec<(usize, usize, MatchedBy)> {
    let by_line = |lines: &[LineFigures]| {
        let mut order: Vec<usize> = (0..lines.len()).collect();
        order.sort_by_key(|&i| (&lines[i].file, &lines[i].function, lines[i].line));
        order
    };
    let mut old_by_text: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
    for i in by_line(old) {
        if let Some(k) = text_key(&old[i]) {
            old_by_text.entry(k).or_default().push(i);
        }
    }
    // Reverse each list so that `pop` yields the lowest line first.
    old_by_text.values_mut().for_each(|v| v.reverse());
    let mut old_used = vec![false; old.len()];
    let mut pairs = Vec::new();
    let mut unmatched_new = Vec::new();
    for j in by_line(new) {
        match text_key(&new[j]).and_then(|k| old_by_text.get_mut(&k)?.pop()) {
            Some(i) => {
                old_used[i] = true;
                pairs.push((i, j, MatchedBy::Text));
            }
            None => unmatched_new.push(j),
        }
    }
    let mut old_by_line: HashMap<(&str, &str, u32), usize> = HashMap::new();
    for (i, l) in old.iter().enumerate().filter(|(i, _)| !old_used[*i]) {
        old_by_line.insert((&l.file, &l.function, l.line), i);
    }
    for j in unmatched_new {
        let l = &new[j];
        if let Some(i) = old_by_line.remove(&(l.file.as_str(), l.function.as_str(), l.line)) {
            pairs.push((i, j, MatchedBy::Line));
        }
    }
    pairs
}

/// Compares two runs line by line.
pub fn diff(old: &Report, new: &Report) -> Diff {
    Diff {
        schema: crate::analyze::report::SCHEMA,
        old: old.run.clone(),
        new: new.run.clone(),
        old_totals: old.totals,
        new_totals: new.totals,
        lines: diff_lines(&old.lines, &new.lines),
    }
}

/// Pairs and compares two sets of lines: changed, added and removed lines
/// first (largest change first), then unchanged ones.
pub fn diff_lines(old: &[LineFigures], new: &[LineFigures]) -> Vec<LineChange> {
    let pairs = match_lines(old, new);
    let mut old_matched = vec![false; old.len()];
    let mut new_matched = vec![false; new.len()];
    let mut lines = Vec::new();
    for (i, j, how) in pairs {
        old_matched[i] = true;
        new_matched[j] = true;
        let (o, n) = (&old[i], &new[j]);
        let delta = Delta::between(&o.self_figures, &n.self_figures);
        let status = if delta.memory_changed() {
            Status::Changed
        } else {
            Status::Unchanged
        };
        lines.push(change(o, Some(o), Some(n), status, Some(how)));
    }
    // A line seen in one run only counts if its own figures touched memory:
    // lines with CPU samples alone come and go with sampling luck, and a
    // std or C frame that only called the allocating code (its `total`)
    // would be a row of zeros.
    for (i, o) in old.iter().enumerate() {
        if !old_matched[i] && has_memory(&o.self_figures) {
            lines.push(change(o, Some(o), None, Status::Removed, None));
        }
    }
    for (j, n) in new.iter().enumerate() {
        if !new_matched[j] && has_memory(&n.self_figures) {
            lines.push(change(n, None, Some(n), Status::Added, None));
        }
    }
    lines.sort_by(|a, b| {
        (a.status == Status::Unchanged)
            .cmp(&(b.status == Status::Unchanged))
            .then(b.delta.rank().cmp(&a.delta.rank()))
            .then_with(|| (&a.file, a.new_line, a.old_line).cmp(&(&b.file, b.new_line, b.old_line)))
    });
    lines
}

fn change(
    any: &LineFigures,
    old: Option<&LineFigures>,
    new: Option<&LineFigures>,
    status: Status,
    matched_by: Option<MatchedBy>,
) -> LineChange {
    let of = old.map(|l| l.self_figures).unwrap_or_default();
    let nf = new.map(|l| l.self_figures).unwrap_or_default();
    LineChange {
        file: any.file.clone(),
        function: any.function.clone(),
        status,
        matched_by,
        old_line: old.map(|l| l.line),
        new_line: new.map(|l| l.line),
        old_source: old.and_then(|l| l.source.clone()),
        new_source: new.and_then(|l| l.source.clone()),
        old: of,
        new: nf,
        delta: Delta::between(&of, &nf),
    }
}

/// Exact signed bytes (`+4096 B`, `-80 B`): a diff is read for exact changes.
pub fn signed_bytes(n: i64) -> String {
    if n > 0 {
        format!("+{n} B")
    } else {
        format!("{n} B")
    }
}

/// A signed size in the units of the Old and New columns: `+495 B`,
/// `-53.8 KiB`, `0 B`.
fn signed_size(n: i64) -> String {
    if n > 0 {
        format!("+{}", format_bytes(n as u64))
    } else {
        crate::render::format_signed_bytes(n)
    }
}

fn signed(n: i64) -> String {
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

pub fn describe_run(r: &RunInfo) -> String {
    let dirty = if r.git.dirty { "+dirty" } else { "" };
    format!(
        "{} ({}, commit {}{dirty})",
        r.id,
        r.name.as_deref().unwrap_or("-"),
        git::short(r.git.commit.as_deref())
    )
}

/// Where a line is and what it says; both texts when they differ.
pub fn describe_change(c: &LineChange) -> String {
    let place = match (c.old_line, c.new_line) {
        (Some(o), Some(n)) if o != n => format!("{}:{o}->{n}", c.file),
        (_, Some(n)) | (Some(n), None) => format!("{}:{n}", c.file),
        (None, None) => c.file.clone(),
    };
    let mut s = format!("{place}  {}", c.function);
    let (old, new) = (
        c.old_source.as_deref().map(str::trim),
        c.new_source.as_deref().map(str::trim),
    );
    match (old, new) {
        (Some(o), Some(n)) if o != n => {
            let _ = write!(s, "  `{n}` (was `{o}`)");
        }
        (_, Some(t)) | (Some(t), None) => {
            let _ = write!(s, "  `{t}`");
        }
        (None, None) => {}
    }
    s
}

/// The text rendering: totals old/new/change, then the changed lines.
pub fn render_text(diff: &Diff, top: usize) -> String {
    let mut out = format!(
        "lineprof diff\n  old  {}\n  new  {}\n",
        describe_run(&diff.old),
        describe_run(&diff.new)
    );
    let (o, n) = (&diff.old_totals, &diff.new_totals);
    let rows = [
        ("allocations", o.allocations, n.allocations, false),
        ("allocated", o.allocated_bytes, n.allocated_bytes, true),
        ("peak", o.peak_bytes, n.peak_bytes, true),
        ("at exit", o.end_bytes, n.end_bytes, true),
    ];
    let mut table: Vec<Vec<String>> = rows
        .iter()
        .map(|&(name, a, b, bytes)| {
            let (fa, fb, fd) = if bytes {
                (format_bytes(a), format_bytes(b), signed_size(d(b, a)))
            } else {
                (a.to_string(), b.to_string(), signed(d(b, a)))
            };
            vec![name.to_string(), fa, fb, fd]
        })
        .collect();
    table.push(vec![
        "CPU time".into(),
        format_time(o.cpu_time_ns),
        format_time(n.cpu_time_ns),
        String::new(),
    ]);
    out.push('\n');
    crate::render::text::table(&mut out, &["Totals", "Old", "New", "Change"], &table, false);
    let changed: Vec<&LineChange> = diff
        .lines
        .iter()
        .filter(|c| c.status != Status::Unchanged && c.delta.memory_changed())
        .collect();
    let _ = writeln!(out, "\nChanged lines (self figures), largest change first:");
    if changed.is_empty() {
        out.push_str("  (no line changed its memory figures)\n");
    } else {
        let rows: Vec<Vec<String>> = changed
            .iter()
            .take(top)
            .map(|c| {
                vec![
                    signed_bytes(c.delta.allocated_bytes),
                    signed_bytes(c.delta.freed_bytes),
                    signed_bytes(c.delta.peak_bytes),
                    signed(c.delta.allocations),
                    format!("{:?}", c.status).to_lowercase(),
                    describe_change(c),
                ]
            })
            .collect();
        let headers = [
            "Δ Allocated",
            "Δ Freed",
            "Δ Peak",
            "Δ Allocs",
            "Status",
            "Line",
        ];
        crate::render::text::table(&mut out, &headers, &rows, false);
    }
    let count = |s: Status| diff.lines.iter().filter(|c| c.status == s).count();
    let matched = diff.lines.iter().filter(|c| c.matched_by.is_some());
    let moved = matched.clone().filter(|c| c.old_line != c.new_line).count();
    let retexted = matched
        .filter(|c| c.matched_by == Some(MatchedBy::Line) && c.old_source != c.new_source)
        .count();
    let _ = writeln!(
        out,
        "\n{} lines matched ({moved} moved, {retexted} with new text), {} changed, {} added, {} removed",
        count(Status::Changed) + count(Status::Unchanged),
        count(Status::Changed),
        count(Status::Added),
        count(Status::Removed)
    );
    out
}

/// GitHub-flavoured markdown for a pull-request comment or a job summary:
/// the totals, then the changed lines (largest change first) with their
/// source text.
pub fn render_markdown(diff: &Diff, top: usize) -> String {
    use crate::render::markdown::{code, plain, table};
    let name = diff.new.name.as_deref().unwrap_or("-");
    let mut out = format!(
        "### lineprof diff: {} {} → {}\n\n",
        code(name),
        code(&git::short(diff.old.git.commit.as_deref())),
        code(&git::short(diff.new.git.commit.as_deref()))
    );
    let (o, n) = (&diff.old_totals, &diff.new_totals);
    let rows: Vec<Vec<String>> = [
        ("allocations", o.allocations, n.allocations, false),
        ("allocated", o.allocated_bytes, n.allocated_bytes, true),
        ("peak", o.peak_bytes, n.peak_bytes, true),
        ("at exit", o.end_bytes, n.end_bytes, true),
    ]
    .iter()
    .map(|&(what, a, b, bytes)| {
        let (fa, fb, fd) = if bytes {
            (format_bytes(a), format_bytes(b), signed_size(d(b, a)))
        } else {
            (a.to_string(), b.to_string(), signed(d(b, a)))
        };
        vec![plain(what), plain(&fa), plain(&fb), plain(&fd)]
    })
    .collect();
    table(
        &mut out,
        &["Totals", "Old", "New", "Change"],
        &[false, true, true, true],
        &rows,
    );
    // Compact: only lines whose own (`self`) memory figures changed.
    let changed: Vec<&LineChange> = diff
        .lines
        .iter()
        .filter(|c| c.status != Status::Unchanged && c.delta.memory_changed())
        .collect();
    if changed.is_empty() {
        out.push_str("\nNo line changed its memory figures.\n");
        return out;
    }
    let rows: Vec<Vec<String>> = changed
        .iter()
        .take(top)
        .map(|c| {
            let line = match (c.old_line, c.new_line) {
                (Some(a), Some(b)) if a != b => format!("{}:{a}→{b}", c.file),
                (_, Some(l)) | (Some(l), None) => format!("{}:{l}", c.file),
                (None, None) => c.file.clone(),
            };
            let text = |s: &Option<String>| {
                s.as_deref()
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(code)
            };
            let source = match (text(&c.old_source), text(&c.new_source)) {
                (Some(a), Some(b)) if a != b => format!("{b} (was {a})"),
                (_, Some(t)) | (Some(t), None) => t,
                (None, None) => String::new(),
            };
            vec![
                plain(&signed_bytes(c.delta.allocated_bytes)),
                plain(&signed_bytes(c.delta.peak_bytes)),
                plain(&signed(c.delta.allocations)),
                plain(&format!("{:?}", c.status).to_lowercase()),
                code(&line),
                code(&c.function),
                source,
            ]
        })
        .collect();
    out.push('\n');
    table(
        &mut out,
        &[
            "Δ Allocated",
            "Δ Peak",
            "Δ Allocs",
            "Status",
            "Line",
            "Function",
            "Source",
        ],
        &[true, true, true, false, false, false, false],
        &rows,
    );
    if changed.len() > top {
        let _ = writeln!(
            out,
            "\n… and {} more changed lines (`lineprof diff --top N`).",
            changed.len() - top
        );
    }
    out
}

pub fn render_json(diff: &Diff) -> String {
    let mut out = serde_json::to_string_pretty(diff).unwrap_or_default();
    out.push('\n');
    out
}

/// What `lineprof diff` was asked for.
#[derive(Debug, Clone)]
pub struct DiffRequest {
    pub old: Option<String>,
    pub new: Option<String>,
    pub top: usize,
    pub format: DiffFormat,
}

/// `--format` of `lineprof diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    Text,
    Json,
    /// GitHub-flavoured markdown (a pull-request comment, `$GITHUB_STEP_SUMMARY`).
    Markdown,
}

/// `lineprof diff [OLD] [NEW]`. Picks NEW first, then OLD among runs of
/// NEW's name, so that the defaults compare a program with its own previous
/// run.
pub fn command(store: &Store, cwd: &Path, req: DiffRequest) -> Result<()> {
    let runs = store.list()?;
    let newest = store::latest(&runs, store)?;
    let (old, new) = match (&req.old, &req.new) {
        (Some(o), Some(n)) => {
            let new = store::resolve(&runs, n, None, cwd, store)?;
            let old = store::resolve(&runs, o, new.run.name.as_deref(), cwd, store)?;
            (old, new)
        }
        (Some(o), None) => {
            // One argument: NAME means its two newest runs; a run id or a
            // ref, that run against the newest run of its name (or, when
            // it is the newest, against the one before).
            let one = store::resolve(&runs, o, newest.run.name.as_deref(), cwd, store)?;
            let newest_same = runs.iter().rev().find(|r| r.run.name == one.run.name);
            match newest_same {
                Some(n) if n.run.id != one.run.id => (one, n),
                _ => (previous_of(&runs, one, store)?, one),
            }
        }
        (None, _) => {
            let new = match &req.new {
                Some(n) => store::resolve(&runs, n, None, cwd, store)?,
                None => newest,
            };
            (previous_of(&runs, new, store)?, new)
        }
    };
    if old.run.name != new.run.name {
        // Only two explicit arguments get here: say so rather than let a
        // comparison of two programs pass for a change in one.
        eprintln!(
            "note: comparing runs of two programs: `{}` (old) and `{}` (new); a git ref picks the run of NEW's name when that commit has one",
            old.run.name.as_deref().unwrap_or("-"),
            new.run.name.as_deref().unwrap_or("-")
        );
    }
    let (old, new) = (store.load(old)?, store.load(new)?);
    let m = super::settings::compare(&old, &new, false);
    for r in m.refuse.iter().chain(&m.note) {
        eprintln!("warning: the runs were recorded under different settings: {r}");
    }
    let d = diff(&old, &new);
    let text = match req.format {
        DiffFormat::Text => render_text(&d, req.top),
        DiffFormat::Json => render_json(&d),
        DiffFormat::Markdown => render_markdown(&d, req.top),
    };
    output::write_output(None, &text)
}

/// The run of `new`'s name stored before it.
fn previous_of<'a>(
    runs: &'a [RunSummary],
    new: &RunSummary,
    store: &Store,
) -> Result<&'a RunSummary> {
    runs.iter()
        .rev()
        .filter(|r| r.run.id < new.run.id)
        .find(|r| r.run.name == new.run.name)
        .ok_or_else(|| Error::UnknownRun {
            detail: format!(
                "{}: run {} is the only run named `{}`; profile it again, or name two runs: lineprof diff OLD NEW",
                store.dir.display(),
                new.run.id,
                new.run.name.as_deref().unwrap_or("-")
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::lines::LineKind;

    fn line(n: u32, function: &str, src: &str, bytes: u64) -> LineFigures {
        LineFigures {
            file: "src/main.rs".into(),
            line: n,
            function: function.into(),
            kind: LineKind::User,
            source: Some(format!("    {src}")),
            self_figures: Figures {
                allocations: 1,
                allocated_bytes: bytes,
                increment_bytes: bytes as i64,
                ..Figures::default()
            },
            total: Figures::default(),
            hits: None,
            time_ns: None,
        }
    }

    fn pairs(old: &[LineFigures], new: &[LineFigures]) -> Vec<(u32, u32, MatchedBy)> {
        let mut p: Vec<_> = match_lines(old, new)
            .into_iter()
            .map(|(i, j, m)| (old[i].line, new[j].line, m))
            .collect();
        p.sort_by_key(|x| x.0);
        p
    }

    #[test]
    fn moved_lines_match_by_text_and_duplicates_in_order() {
        let old = [
            line(3, "app::f", "v.push(1);", 8),
            line(4, "app::f", "v.push(1);", 16),
            line(5, "app::g", "let b = vec![0u8; 10];", 10),
        ];
        let new = [
            line(7, "app::f", "v.push(1);", 8),
            line(8, "app::f", "v.push(1);", 16),
            line(9, "app::g", "let b = vec![0u8; 10];", 10),
        ];
        assert_eq!(
            pairs(&old, &new),
            vec![
                (3, 7, MatchedBy::Text),
                (4, 8, MatchedBy::Text),
                (5, 9, MatchedBy::Text)
            ]
        );
    }

    #[test]
    fn changed_text_falls_back_to_line_number() {
        let old = [line(5, "app::g", "let b = vec![0u8; 10];", 10)];
        let new = [
            line(5, "app::g", "let b = vec![0u8; 20];", 20),
            line(6, "app::g", "let c = vec![0u8; 1];", 1),
        ];
        assert_eq!(pairs(&old, &new), vec![(5, 5, MatchedBy::Line)]);
        let report = |lines: &[LineFigures]| Report {
            lines: lines.to_vec(),
            ..crate::render::testing::report()
        };
        let diff = diff(&report(&old), &report(&new));
        assert_eq!(diff.lines[0].status, Status::Changed);
        assert_eq!(diff.lines[0].delta.allocated_bytes, 10);
        assert!(describe_change(&diff.lines[0]).contains("(was `let b = vec![0u8; 10];`)"));
        assert_eq!(diff.lines[1].status, Status::Added);
    }
}
