//! `lineprof check`: a CI gate. Compares a run's totals with absolute limits
//! (`--max-peak` ...) and with a baseline run (`--baseline RUN|GITREF`,
//! within `--tolerance` percent), prints every figure it checked and, for
//! each regression, the lines that grew most. Exit 1 on a regression, 0
//! otherwise; errors (bad sizes, unknown runs) are exit 2 like everywhere.
//! Memory figures of a deterministic program are exact, so the default
//! tolerance is 0%.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::analyze::lines::{Figures, LineFigures};
use crate::analyze::per_test::TestFigures;
use crate::analyze::report::{Report, Totals};
use crate::error::{Error, Result};
use crate::render::format_bytes;
use crate::workflow::diff::{self, describe_change, signed_bytes, Delta, LineChange};
use crate::workflow::git;
use crate::workflow::settings;
use crate::workflow::store::{self, RunSummary, Store};

/// Lines listed under each regressed figure.
const GROWN_LINES: usize = 5;

pub struct CheckRequest {
    pub run: Option<String>,
    pub max_peak: Option<u64>,
    pub max_allocated: Option<u64>,
    pub max_allocations: Option<u64>,
    pub baseline: Option<String>,
    pub tolerance: f64,
    /// Append a markdown summary here (default: `$GITHUB_STEP_SUMMARY`).
    pub summary: Option<PathBuf>,
}

/// The totals a check looks at, with how to read them from figures.
#[derive(Clone, Copy)]
enum Figure {
    Peak,
    Allocated,
    Allocations,
}

impl Figure {
    const ALL: [Figure; 3] = [Figure::Peak, Figure::Allocated, Figure::Allocations];

    fn name(self) -> &'static str {
        match self {
            Figure::Peak => "peak_bytes",
            Figure::Allocated => "allocated_bytes",
            Figure::Allocations => "allocations",
        }
    }
    fn total(self, t: &Totals) -> u64 {
        match self {
            Figure::Peak => t.peak_bytes,
            Figure::Allocated => t.allocated_bytes,
            Figure::Allocations => t.allocations,
        }
    }
    fn of_line(self, f: &Figures) -> u64 {
        match self {
            Figure::Peak => f.peak_bytes,
            Figure::Allocated => f.allocated_bytes,
            Figure::Allocations => f.allocations,
        }
    }
    fn of_delta(self, d: &Delta) -> i64 {
        match self {
            Figure::Peak => d.peak_bytes,
            Figure::Allocated => d.allocated_bytes,
            Figure::Allocations => d.allocations,
        }
    }
    fn show(self, v: u64) -> String {
        match self {
            Figure::Allocations => v.to_string(),
            _ if v < 1024 => format!("{v} B"),
            _ => format!("{v} B ({})", format_bytes(v)),
        }
    }
}

/// Parses `512`, `64KB`, `1.5 MiB`, `2GB`: plain numbers are bytes; KB, MB,
/// GB are powers of 1000 and KiB, MiB, GiB powers of 1024.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim().replace('_', "");
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit; use B, KB, MB, GB (1000-based) or KiB, MiB, GiB (1024-based)"
            ))
        }
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. 512, 64KB or 1.5MiB"))?;
    Ok((n * mult).round() as u64)
}

pub fn command(store: &Store, cwd: &Path, req: CheckRequest) -> Result<ExitCode> {
    let has_limit =
        req.max_peak.is_some() || req.max_allocated.is_some() || req.max_allocations.is_some();
    if !has_limit && req.baseline.is_none() {
        return Err(Error::Usage {
            detail: "lineprof check: nothing to check; pass --max-peak, --max-allocated, --max-allocations or --baseline".into(),
        });
    }
    if !(req.tolerance.is_finite() && req.tolerance >= 0.0) {
        return Err(Error::Usage {
            detail: format!("--tolerance {}: must be a percentage >= 0", req.tolerance),
        });
    }
    let runs = store.list()?;
    let targets: Vec<&RunSummary> = match &req.run {
        Some(arg) => vec![store::resolve(&runs, arg, None, cwd, store)?],
        None => default_targets(&runs, store, cwd)?,
    };
    let baseline = match &req.baseline {
        Some(arg) => Some(baseline_set(&runs, arg, cwd, store)?),
        None => None,
    };
    // Every baseline is found before anything is printed: a missing one for
    // a run named on the command line is a usage error, not a verdict.
    let mut plan = Vec::new();
    for target in targets {
        let candidates: Vec<&RunSummary> = match &baseline {
            Some(set) => set
                .runs
                .iter()
                .rev()
                .filter(|r| r.run.id != target.run.id && r.run.name == target.run.name)
                .copied()
                .collect(),
            None => Vec::new(),
        };
        if let Some(set) = baseline.as_ref().filter(|_| candidates.is_empty()) {
            if req.run.is_some() {
                return Err(missing_baseline(target, set, store));
            }
        }
        let report = store.load(target)?;
        let base = match &baseline {
            None => None,
            Some(_) if candidates.is_empty() => Some(Err(())),
            Some(_) => Some(Ok(matching_baseline(store, &report, &candidates)?)),
        };
        plan.push((report, base));
    }
    let mut c = Checker {
        out: String::new(),
        findings: Vec::new(),
        tolerance: req.tolerance,
        checked: 0,
    };
    for (report, base) in plan {
        let program = report.run.name.clone().unwrap_or_else(|| "-".into());
        let _ = writeln!(c.out, "lineprof check: {}", diff::describe_run(&report.run));
        c.check_limits(&program, &report, &req);
        match base {
            None => {}
            Some(Err(())) => {
                let what = baseline.as_ref().map_or("", |b| b.what.as_str());
                let _ = writeln!(
                    c.out,
                    "  new   no run of `{program}` in the baseline ({what}): new since the baseline, not gated"
                );
                c.findings.push(Finding::new(&program, None, Verdict::New));
            }
            Some(Ok((base, notes))) => {
                c.check_baseline(&program, &base, &report, &notes);
            }
        }
    }
    let failed = c
        .findings
        .iter()
        .filter(|f| f.verdict == Verdict::Fail)
        .count();
    let _ = if failed == 0 {
        writeln!(c.out, "\nok: no figure regressed ({} checked)", c.checked)
    } else {
        writeln!(c.out, "\nFAILED: {failed} figure(s) regressed")
    };
    crate::output::write_output(None, &c.out)?;
    let summary = req.summary.clone().or_else(|| {
        std::env::var_os("GITHUB_STEP_SUMMARY")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = summary {
        append(&path, &c.markdown(failed))?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The newest of `candidates` (newest first) recorded under the same
/// settings as `report`, with the notes to print; when none was, the
/// refusal of the newest.
fn matching_baseline(
    store: &Store,
    report: &Report,
    candidates: &[&RunSummary],
) -> Result<(Report, Vec<String>)> {
    let mut newest: Option<(Error, String)> = None;
    for b in candidates {
        let base = store.load(b)?;
        let totals_gated = report.tests.is_empty() || base.tests.is_empty();
        let m = settings::compare(&base, report, totals_gated);
        if m.refuse.is_empty() {
            let mut notes: Vec<String> = Vec::new();
            if let Some((_, skipped)) = &newest {
                notes.push(format!(
                    "{skipped}: compared with {}, the newest baseline run recorded under the same settings as this one",
                    base.run.id
                ));
            }
            notes.extend(m.note.iter().map(|d| d.text.clone()));
            return Ok((base, notes));
        }
        if newest.is_none() {
            let mut vars: Vec<&str> = m.refuse.iter().map(|d| d.var).collect();
            vars.dedup();
            let skipped = format!(
                "the newest baseline run, {}, was recorded with a different {}",
                base.run.id,
                vars.join(", ")
            );
            newest = Some((refusal(store, report, &base, &m), skipped));
        }
    }
    Err(newest.expect("candidates is not empty").0)
}

/// `check`'s error for a baseline recorded under other settings.
fn refusal(store: &Store, report: &Report, base: &Report, m: &settings::Mismatch) -> Error {
    let refused: Vec<&str> = m.refuse.iter().map(|d| d.text.as_str()).collect();
    Error::Usage {
        detail: format!(
            "{}: cannot compare run {} ({}) with its baseline {}: they were recorded under different settings: {}; {}",
            store.dir.display(),
            report.run.id,
            report.run.name.as_deref().unwrap_or("-"),
            base.run.id,
            refused.join("; "),
            settings::how_to_fix(m, report)
        ),
    }
}

/// Appends to a job summary (GitHub's file collects every step's output).
fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::io(path, "write the check summary", e))
}

/// The runs a `--baseline` argument stands for, and how to say it.
struct BaselineSet<'a> {
    runs: Vec<&'a RunSummary>,
    what: String,
    commit: Option<String>,
    arg: String,
}

/// `--baseline ARG`: a run id (or unique prefix), a run name (its runs), or
/// a git ref (every run at that commit). A ref with no run at all is an
/// error: nothing could be compared.
fn baseline_set<'a>(
    runs: &'a [RunSummary],
    arg: &str,
    cwd: &Path,
    store: &Store,
) -> Result<BaselineSet<'a>> {
    let set = |runs: Vec<&'a RunSummary>, what: String, commit: Option<String>| BaselineSet {
        runs,
        what,
        commit,
        arg: arg.to_string(),
    };
    if let Some(r) = runs.iter().find(|r| r.run.id == arg) {
        return Ok(set(vec![r], format!("run {arg}"), None));
    }
    let named: Vec<&RunSummary> = runs
        .iter()
        .filter(|r| r.run.name.as_deref() == Some(arg))
        .collect();
    if !named.is_empty() {
        return Ok(set(named, format!("runs named `{arg}`"), None));
    }
    let by_prefix: Vec<&RunSummary> = runs.iter().filter(|r| r.run.id.starts_with(arg)).collect();
    if arg.len() >= 4 && by_prefix.len() == 1 {
        let id = by_prefix[0].run.id.clone();
        return Ok(set(by_prefix, format!("run {id}"), None));
    }
    if let Some(commit) = git::resolve_ref(cwd, arg) {
        let at: Vec<&RunSummary> = runs
            .iter()
            .filter(|r| r.run.git.commit.as_deref() == Some(commit.as_str()))
            .collect();
        if at.is_empty() {
            return Err(Error::UnknownRun {
                detail: format!(
                    "{}: no stored run at commit {} ({arg}), so there is no baseline; profile that commit first (`git checkout {arg} && cargo lineprof test`, or `lineprof run`), or restore the store that holds its runs (the CI recipe caches .lineprof)",
                    store.dir.display(),
                    git::short(Some(&commit))
                ),
            });
        }
        let what = format!("`{arg}`, commit {}", git::short(Some(&commit)));
        return Ok(set(at, what, Some(commit)));
    }
    // Not a baseline we can find: the same message as everywhere else.
    store::resolve(runs, arg, None, cwd, store)
        .map(|r| set(vec![r], format!("run {}", r.run.id), None))
}

fn missing_baseline(target: &RunSummary, set: &BaselineSet, store: &Store) -> Error {
    let name = target.run.name.as_deref().unwrap_or("-");
    let others: Vec<&str> = set
        .runs
        .iter()
        .filter_map(|r| r.run.name.as_deref())
        .collect();
    let has = if others.is_empty() {
        String::new()
    } else {
        let mut o = others.clone();
        o.sort();
        o.dedup();
        format!(" (it has runs of: {})", o.join(", "))
    };
    let how = match &set.commit {
        Some(_) => format!(
            "profile `{name}` at that commit (`git checkout {} && cargo lineprof ...` or `lineprof run --name {name} -- PROGRAM`), then check again",
            set.arg
        ),
        None => format!("store a run of `{name}` first (`lineprof run --name {name} -- PROGRAM`)"),
    };
    Error::UnknownRun {
        detail: format!(
            "{}: no baseline run of `{name}` in {}{has}; a run is only compared with runs of its own name; {how}",
            store.dir.display(),
            set.what
        ),
    }
}

/// Without a RUN: the newest run of each name at the commit checked out
/// (every test binary of one `cargo lineprof test` there). A HEAD with no
/// stored run is an error: the newest run would be of an older commit, and
/// gating it would pass or fail on old data. Outside git, the newest run of
/// each name at the newest run's commit.
fn default_targets<'a>(
    runs: &'a [RunSummary],
    store: &Store,
    cwd: &Path,
) -> Result<Vec<&'a RunSummary>> {
    let newest = store::latest(runs, store)?;
    let newest = match git::resolve_ref(cwd, "HEAD") {
        Some(head) => runs
            .iter()
            .rev()
            .find(|r| r.run.git.commit.as_deref() == Some(head.as_str()))
            .ok_or_else(|| Error::UnknownRun {
                detail: format!(
                    "{}: no stored run at HEAD (commit {}); the newest run is {} ({}, commit {}), of another commit, and checking it would gate old figures; profile this commit first (`cargo lineprof test`, or `lineprof run -- PROGRAM`), then check again, or name the run to check (`lineprof check RUN --baseline ...`)",
                    store.dir.display(),
                    git::short(Some(&head)),
                    newest.run.id,
                    newest.run.name.as_deref().unwrap_or("-"),
                    git::short(newest.run.git.commit.as_deref()),
                ),
            })?,
        None => newest,
    };
    let git = &newest.run.git;
    let mut picked: Vec<&RunSummary> = Vec::new();
    for r in runs.iter().rev() {
        let same_commit = r.run.git.commit == git.commit && r.run.git.dirty == git.dirty;
        if same_commit && !picked.iter().any(|p| p.run.name == r.run.name) {
            picked.push(r);
        }
    }
    picked.reverse();
    Ok(picked)
}

/// How a set of figures fared against its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Passed {
    Unchanged,
    /// Passed, some figure moved (down, or within the tolerance).
    Changed,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Fail,
    /// No baseline: listed, not gated.
    New,
}

/// One checked figure (or a program or test without a baseline), for the
/// markdown summary.
struct Finding {
    program: String,
    test: Option<String>,
    verdict: Verdict,
    figure: Option<Figure>,
    old: Option<u64>,
    new: u64,
    limit: Option<&'static str>,
    grown: Vec<(i64, String, Option<String>)>,
}

impl Finding {
    fn new(program: &str, test: Option<&str>, verdict: Verdict) -> Finding {
        Finding {
            program: program.to_string(),
            test: test.map(str::to_string),
            verdict,
            figure: None,
            old: None,
            new: 0,
            limit: None,
            grown: Vec::new(),
        }
    }
}

struct Checker {
    out: String,
    findings: Vec<Finding>,
    tolerance: f64,
    checked: usize,
}

impl Checker {
    fn check_limits(&mut self, program: &str, report: &Report, req: &CheckRequest) {
        let limits = [
            (Figure::Peak, req.max_peak, "--max-peak"),
            (Figure::Allocated, req.max_allocated, "--max-allocated"),
            (
                Figure::Allocations,
                req.max_allocations,
                "--max-allocations",
            ),
        ];
        for (figure, limit, flag) in limits {
            let Some(limit) = limit else { continue };
            self.checked += 1;
            let value = figure.total(&report.totals);
            let ok = value <= limit;
            let _ = writeln!(
                self.out,
                "  {}  {} {} {} {flag} {}",
                if ok { "ok  " } else { "FAIL" },
                figure.name(),
                figure.show(value),
                if ok { "<=" } else { ">" },
                figure.show(limit)
            );
            let mut f = Finding::new(program, None, if ok { Verdict::Ok } else { Verdict::Fail });
            f.figure = Some(figure);
            f.old = Some(limit);
            f.new = value;
            f.limit = Some(flag);
            if !ok {
                let mut lines: Vec<&LineFigures> = report
                    .lines
                    .iter()
                    .filter(|l| figure.of_line(&l.self_figures) > 0)
                    .collect();
                lines.sort_by_key(|l| std::cmp::Reverse(figure.of_line(&l.self_figures)));
                for l in lines.iter().take(GROWN_LINES) {
                    let v = figure.of_line(&l.self_figures);
                    let place = format!("{}:{}  {}", l.file, l.line, l.function);
                    let src = l.source.as_deref().map(str::trim).filter(|s| !s.is_empty());
                    let shown = src.map_or(String::new(), |s| format!("  `{s}`"));
                    let _ = writeln!(self.out, "          {:>12}  {place}{shown}", figure.show(v));
                    f.grown.push((v as i64, place, src.map(str::to_string)));
                }
            }
            self.findings.push(f);
        }
    }

    fn check_baseline(&mut self, program: &str, base: &Report, report: &Report, notes: &[String]) {
        let tolerance = self.tolerance;
        let _ = writeln!(
            self.out,
            "  baseline {} (tolerance {tolerance}%)",
            diff::describe_run(&base.run)
        );
        for n in notes {
            let _ = writeln!(self.out, "  note  {n}");
        }
        if report.tests.is_empty() || base.tests.is_empty() {
            if !report.tests.is_empty() {
                let _ = writeln!(
                    self.out,
                    "  note  the baseline has no per-test figures (stored by an older lineprof): totals compared"
                );
            }
            let changes = diff::diff(base, report).lines;
            let (old, new) = (to_figures(&base.totals), to_figures(&report.totals));
            self.compare(program, None, &old, &new, &changes, "  ");
            return;
        }
        let t = &report.totals;
        let _ = writeln!(
            self.out,
            "  info  process totals not gated (libtest's threads make them depend on scheduling): peak {}, allocated {}, {} allocations",
            format_bytes(t.peak_bytes),
            format_bytes(t.allocated_bytes),
            t.allocations
        );
        let mut unchanged = 0;
        for test in &report.tests {
            // A baseline with a test list has every test it ran, those that
            // allocated nothing with zero figures: only a test it did not
            // run is new. Older runs have only the tests that allocated.
            let Some(old) = base.tests.iter().find(|b| b.name == test.name) else {
                let why = if base.test_list.is_some() {
                    "not run at the baseline"
                } else {
                    "no baseline (the baseline run lists only the tests that allocated: stored by an older lineprof)"
                };
                let _ = writeln!(self.out, "  new   test {}: {why}, not gated", test.name);
                self.findings
                    .push(Finding::new(program, Some(&test.name), Verdict::New));
                continue;
            };
            let changes = diff::diff_lines(
                &test_lines(old, &base.lines),
                &test_lines(test, &report.lines),
            );
            let passed = self.compare(
                program,
                Some(&test.name),
                &old.total,
                &test.total,
                &changes,
                "    ",
            );
            if passed == Passed::Unchanged {
                unchanged += 1;
            }
        }
        if unchanged > 0 {
            let _ = writeln!(
                self.out,
                "  ok    {unchanged} test{} unchanged (allocations, allocated bytes and peak each)",
                if unchanged == 1 { "" } else { "s" }
            );
        }
        for gone in base
            .tests
            .iter()
            .filter(|b| !report.tests.iter().any(|t| t.name == b.name))
        {
            let _ = writeln!(
                self.out,
                "  gone  test {} (in the baseline only)",
                gone.name
            );
        }
        if let Some(init) = &report.shared_init {
            let _ = writeln!(
                self.out,
                "  info  shared initialisation (Once, OnceLock, lazy statics) not gated: {} in {} allocations",
                format_bytes(init.allocated_bytes),
                init.allocations
            );
        }
    }

    /// Gates the three figures of `new` against `old`. When all pass, one
    /// line at most (none for a test whose figures did not change: the
    /// caller counts those); when one fails, every figure with the lines
    /// that grew most under each regressed one.
    fn compare(
        &mut self,
        program: &str,
        test: Option<&str>,
        old_f: &Figures,
        new_f: &Figures,
        changes: &[LineChange],
        indent: &str,
    ) -> Passed {
        let passes = |figure: Figure| {
            let (old, new) = (figure.of_line(old_f), figure.of_line(new_f));
            new as f64 <= old as f64 * (1.0 + self.tolerance / 100.0)
        };
        if Figure::ALL.into_iter().all(passes) {
            let mut changed = Vec::new();
            for figure in Figure::ALL {
                self.checked += 1;
                let (old, new) = (figure.of_line(old_f), figure.of_line(new_f));
                let mut f = Finding::new(program, test, Verdict::Ok);
                f.figure = Some(figure);
                f.old = Some(old);
                f.new = new;
                self.findings.push(f);
                if old != new {
                    changed.push(format!(
                        "{} {} -> {} ({})",
                        figure.name(),
                        figure.show(old),
                        figure.show(new),
                        change_text(figure, old, new)
                    ));
                }
            }
            let what = test.map_or(String::new(), |t| format!("test {t}: "));
            if !changed.is_empty() {
                let _ = writeln!(self.out, "  ok    {what}{}", changed.join(", "));
                return Passed::Changed;
            }
            if test.is_none() {
                let unchanged: Vec<String> = Figure::ALL
                    .iter()
                    .map(|g| format!("{} {}", g.name(), g.show(g.of_line(new_f))))
                    .collect();
                let _ = writeln!(self.out, "  ok    unchanged: {}", unchanged.join(", "));
            }
            return Passed::Unchanged;
        }
        if let Some(t) = test {
            let _ = writeln!(self.out, "  test {t}");
        }
        for figure in Figure::ALL {
            self.checked += 1;
            let (old, new) = (figure.of_line(old_f), figure.of_line(new_f));
            let ok = passes(figure);
            let _ = writeln!(
                self.out,
                "{indent}{}  {} {} -> {} ({})",
                if ok { "ok  " } else { "FAIL" },
                figure.name(),
                figure.show(old),
                figure.show(new),
                change_text(figure, old, new)
            );
            let mut f = Finding::new(program, test, if ok { Verdict::Ok } else { Verdict::Fail });
            f.figure = Some(figure);
            f.old = Some(old);
            f.new = new;
            if !ok {
                let _ = writeln!(self.out, "{indent}      lines that grew most:");
                // Peak is not kept per line of a test: its allocations are.
                let by = match (figure, test) {
                    (Figure::Peak, Some(_)) => Figure::Allocated,
                    _ => figure,
                };
                let mut grown: Vec<&LineChange> = changes
                    .iter()
                    .filter(|c| by.of_delta(&c.delta) > 0)
                    .collect();
                grown.sort_by_key(|c| std::cmp::Reverse(by.of_delta(&c.delta)));
                for c in grown.iter().take(GROWN_LINES) {
                    let d = by.of_delta(&c.delta);
                    let shown = match by {
                        Figure::Allocations => format!("{d:+}"),
                        _ => signed_bytes(d),
                    };
                    let _ = writeln!(
                        self.out,
                        "{indent}        {shown:>12}  {}",
                        describe_change(c)
                    );
                    let line = c.new_line.or(c.old_line).unwrap_or(0);
                    let place = format!("{}:{line}  {}", c.file, c.function);
                    let src = c.new_source.as_deref().or(c.old_source.as_deref());
                    f.grown.push((d, place, src.map(|s| s.trim().to_string())));
                }
            }
            self.findings.push(f);
        }
        Passed::Failed
    }

    /// The job summary: a verdict, a table of what failed or is new, and
    /// the lines that grew with their source.
    fn markdown(&self, failed: usize) -> String {
        use crate::render::markdown::{code, plain, table};
        let mut out = String::new();
        let ok = self
            .findings
            .iter()
            .filter(|f| f.verdict == Verdict::Ok)
            .count();
        let new = self
            .findings
            .iter()
            .filter(|f| f.verdict == Verdict::New)
            .count();
        let _ = if failed == 0 {
            writeln!(
                out,
                "### lineprof check: passed\n\n{ok} figures checked, none regressed."
            )
        } else {
            writeln!(out, "### lineprof check: {failed} figure(s) regressed")
        };
        let shown: Vec<&Finding> = self
            .findings
            .iter()
            .filter(|f| f.verdict != Verdict::Ok)
            .collect();
        if !shown.is_empty() {
            let rows: Vec<Vec<String>> = shown
                .iter()
                .map(|f| {
                    let (verdict, old, new, change) = match (f.verdict, f.figure) {
                        (Verdict::New, _) | (_, None) => (
                            "new, not gated".into(),
                            String::new(),
                            String::new(),
                            String::new(),
                        ),
                        (_, Some(fig)) => (
                            "**regressed**".to_string(),
                            f.old.map_or(String::new(), |o| fig.show(o)),
                            fig.show(f.new),
                            match (f.limit, f.old) {
                                (Some(flag), _) => format!("over {}", plain(flag)),
                                (None, Some(o)) => change_text(fig, o, f.new),
                                _ => String::new(),
                            },
                        ),
                    };
                    vec![
                        plain(&f.program),
                        f.test.as_deref().map_or(String::new(), plain),
                        f.figure.map_or(String::new(), |g| plain(g.name())),
                        old,
                        new,
                        plain(&change),
                        verdict,
                    ]
                })
                .collect();
            out.push('\n');
            table(
                &mut out,
                &[
                    "Run", "Test", "Figure", "Baseline", "Now", "Change", "Verdict",
                ],
                &[false, false, false, true, true, true, false],
                &rows,
            );
        }
        let grown: Vec<&Finding> = shown
            .iter()
            .copied()
            .filter(|f| !f.grown.is_empty())
            .collect();
        if !grown.is_empty() {
            let _ = writeln!(out, "\nLines that grew most:\n");
            let mut rows = Vec::new();
            for f in grown {
                for (d, place, src) in &f.grown {
                    let what = f.figure.map_or("", |g| g.name());
                    let shown = match f.figure {
                        Some(Figure::Allocations) | None => format!("{d:+}"),
                        Some(_) => signed_bytes(*d),
                    };
                    rows.push(vec![
                        plain(&shown),
                        plain(what),
                        plain(&f.test.clone().unwrap_or_else(|| f.program.clone())),
                        code(place),
                        src.as_deref().map_or(String::new(), code),
                    ]);
                }
            }
            table(
                &mut out,
                &["Change", "Figure", "In", "Line", "Source"],
                &[true, false, false, false, false],
                &rows,
            );
        }
        if new > 0 && failed == 0 && shown.len() == new {
            out.push('\n');
        }
        out.push('\n');
        out
    }
}

fn to_figures(t: &Totals) -> Figures {
    Figures {
        allocations: t.allocations,
        allocated_bytes: t.allocated_bytes,
        peak_bytes: t.peak_bytes,
        ..Figures::default()
    }
}

/// A test's lines as report lines, with the source text the run kept.
fn test_lines(test: &TestFigures, lines: &[LineFigures]) -> Vec<LineFigures> {
    test.lines
        .iter()
        .map(|t| {
            let full = lines
                .iter()
                .find(|l| l.file == t.file && l.line == t.line && l.function == t.function);
            LineFigures {
                file: t.file.clone(),
                line: t.line,
                function: t.function.clone(),
                kind: full.map_or(crate::analyze::lines::LineKind::User, |l| l.kind),
                source: full.and_then(|l| l.source.clone()),
                self_figures: t.self_figures,
                total: Figures::default(),
                hits: None,
                time_ns: None,
            }
        })
        .collect()
}

/// `+4000 B, +100.0%`.
fn change_text(figure: Figure, old: u64, new: u64) -> String {
    let change = new as i64 - old as i64;
    let shown = match figure {
        Figure::Allocations => format!("{change:+}"),
        _ => signed_bytes(change),
    };
    if old == 0 {
        shown
    } else {
        format!("{shown}, {:+.1}%", change as f64 * 100.0 / old as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("64 KiB"), Ok(65_536));
        assert_eq!(parse_size("1.5MiB"), Ok(1_572_864));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1_000"), Ok(1000));
        assert!(parse_size("12 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_size("MB").is_err());
    }
}
