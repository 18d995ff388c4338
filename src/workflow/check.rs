//! `lineprof check`: a CI gate. Compares a run's totals with absolute limits
//! (`--max-peak` ...) and with a baseline run (`--baseline RUN|GITREF`,
//! within `--tolerance` percent), prints every figure it checked and, for
//! each regression, the lines that grew most. Exit 1 on a regression, 0
//! otherwise; errors (bad sizes, unknown runs) are exit 2 like everywhere.
//! Memory figures of a deterministic program are exact, so the default
//! tolerance is 0%.

use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::analyze::lines::{Figures, LineFigures};
use crate::analyze::report::{Report, Totals};
use crate::error::{Error, Result};
use crate::render::format_bytes;
use crate::workflow::diff::{self, describe_change, signed_bytes, Delta, LineChange};
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
        None => default_targets(&runs, store)?,
    };
    let mut out = String::new();
    let mut regressions = 0;
    for target in targets {
        let report = store.load(target)?;
        let _ = writeln!(out, "lineprof check: {}", diff::describe_run(&report.run));
        regressions += check_limits(&mut out, &report, &req);
        if let Some(base_arg) = &req.baseline {
            let name = report.run.name.as_deref();
            let base = store::resolve(&runs, base_arg, name, cwd, store)?;
            if base.run.name.as_deref() != name && req.run.is_none() {
                let _ = writeln!(
                    out,
                    "  note: no baseline run of `{}` at `{base_arg}`; baseline skipped",
                    name.unwrap_or("-")
                );
                continue;
            }
            let base = store.load(base)?;
            regressions += check_baseline(&mut out, &base, &report, req.tolerance);
        }
    }
    let _ = if regressions == 0 {
        writeln!(out, "\nok: no figure regressed")
    } else {
        writeln!(out, "\nFAILED: {regressions} figure(s) regressed")
    };
    crate::output::write_output(None, &out)?;
    Ok(if regressions == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Without a RUN: the newest run of each name at the newest run's commit
/// (every test binary of one `cargo lineprof test`); outside git, the
/// newest run of each name.
fn default_targets<'a>(runs: &'a [RunSummary], store: &Store) -> Result<Vec<&'a RunSummary>> {
    let newest = store::latest(runs, store)?;
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

fn check_limits(out: &mut String, report: &Report, req: &CheckRequest) -> usize {
    let limits = [
        (Figure::Peak, req.max_peak, "--max-peak"),
        (Figure::Allocated, req.max_allocated, "--max-allocated"),
        (
            Figure::Allocations,
            req.max_allocations,
            "--max-allocations",
        ),
    ];
    let mut failed = 0;
    for (figure, limit, flag) in limits {
        let Some(limit) = limit else { continue };
        let value = figure.total(&report.totals);
        if value <= limit {
            let _ = writeln!(
                out,
                "  ok    {} {} <= {flag} {}",
                figure.name(),
                figure.show(value),
                figure.show(limit)
            );
            continue;
        }
        failed += 1;
        let _ = writeln!(
            out,
            "  FAIL  {} {} > {flag} {}",
            figure.name(),
            figure.show(value),
            figure.show(limit)
        );
        let mut lines: Vec<&LineFigures> = report
            .lines
            .iter()
            .filter(|l| figure.of_line(&l.self_figures) > 0)
            .collect();
        lines.sort_by_key(|l| std::cmp::Reverse(figure.of_line(&l.self_figures)));
        for l in lines.iter().take(GROWN_LINES) {
            let src = match l.source.as_deref().map(str::trim) {
                Some(s) if !s.is_empty() => format!("  `{s}`"),
                _ => String::new(),
            };
            let v = figure.of_line(&l.self_figures);
            let _ = writeln!(
                out,
                "          {:>12}  {}:{}  {}{src}",
                figure.show(v),
                l.file,
                l.line,
                l.function
            );
        }
    }
    failed
}

fn check_baseline(out: &mut String, base: &Report, report: &Report, tolerance: f64) -> usize {
    let _ = writeln!(
        out,
        "  baseline {} (tolerance {tolerance}%)",
        diff::describe_run(&base.run)
    );
    let changes = diff::diff(base, report).lines;
    let mut failed = 0;
    for figure in Figure::ALL {
        let (old, new) = (figure.total(&base.totals), figure.total(&report.totals));
        let allowed = old as f64 * (1.0 + tolerance / 100.0);
        let pct = if old == 0 {
            String::new()
        } else {
            format!(", {:+.1}%", (new as f64 - old as f64) * 100.0 / old as f64)
        };
        let change = new as i64 - old as i64;
        let shown = match figure {
            Figure::Allocations => format!("{change:+}"),
            _ => signed_bytes(change),
        };
        if new as f64 <= allowed {
            let _ = writeln!(
                out,
                "  ok    {} {} -> {} ({shown}{pct})",
                figure.name(),
                figure.show(old),
                figure.show(new)
            );
            continue;
        }
        failed += 1;
        let _ = writeln!(
            out,
            "  FAIL  {} {} -> {} ({shown}{pct})",
            figure.name(),
            figure.show(old),
            figure.show(new)
        );
        let _ = writeln!(out, "        lines that grew most:");
        let mut grown: Vec<&LineChange> = changes
            .iter()
            .filter(|c| figure.of_delta(&c.delta) > 0)
            .collect();
        grown.sort_by_key(|c| std::cmp::Reverse(figure.of_delta(&c.delta)));
        for c in grown.iter().take(GROWN_LINES) {
            let d = figure.of_delta(&c.delta);
            let shown = match figure {
                Figure::Allocations => format!("{d:+}"),
                _ => signed_bytes(d),
            };
            let _ = writeln!(out, "          {shown:>12}  {}", describe_change(c));
        }
    }
    failed
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
