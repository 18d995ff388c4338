//! `lineprof`: the analysis CLI. This file parses flags and dispatches;
//! the work happens in the modules below.

mod check;
mod diff;
mod error;
mod git;
mod history;
mod lines;
mod output;
mod profile;
mod render;
mod replay;
mod report;
mod run;
mod stacks;
mod store;
mod symbolize;
mod unwind;
mod unwind_check;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use regex::Regex;

use crate::error::{Error, Result};
use crate::lines::{LineFilter, LineKind, SortKey, SourceFiles};
use crate::render::View;
use crate::report::{Report, ReportSource};
use crate::store::Store;

#[derive(Parser)]
#[command(
    name = "lineprof",
    version,
    about = "Line-level memory and time profiler for Rust"
)]
struct Cli {
    /// The run store directory (default: `.lineprof` at the project root,
    /// the nearest directory with `.git`, else the outermost with a
    /// Cargo.toml). Also `LINEPROF_STORE`.
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a program built with lineprof::Tracking, store the run, show its top lines.
    Run(RunArgs),
    /// Show per-line figures of a stored run or a profile.
    Report(ReportArgs),
    /// List stored runs, newest last.
    History(HistoryArgs),
    /// Per-line changes between two runs.
    Diff(DiffArgs),
    /// Exit 1 if a run exceeds limits or regressed against a baseline.
    Check(CheckArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The run's name (default: the program's file name).
    #[arg(long)]
    name: Option<String>,
    /// Run the program in DIR (default: the current directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct HistoryArgs {
    /// Only runs with this name.
    #[arg(long)]
    name: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(clap::Args)]
struct DiffArgs {
    /// Run id, run name or git ref (default: the run before NEW with NEW's name).
    old: Option<String>,
    /// Run id, run name or git ref (default: the newest run).
    new: Option<String>,
    /// Show at most N changed lines in text.
    #[arg(long, value_name = "N", default_value = "20")]
    top: usize,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Run id, name or git ref (default: the newest run of each name at the
    /// newest run's commit).
    run: Option<String>,
    /// Fail if the heap peak exceeds SIZE (512, 64KB, 1.5MiB, ...).
    #[arg(long, value_name = "SIZE", value_parser = check::parse_size)]
    max_peak: Option<u64>,
    /// Fail if the bytes allocated in total exceed SIZE.
    #[arg(long, value_name = "SIZE", value_parser = check::parse_size)]
    max_allocated: Option<u64>,
    /// Fail if the number of allocations exceeds N.
    #[arg(long, value_name = "N")]
    max_allocations: Option<u64>,
    /// Fail if peak, allocated bytes or allocations grew over this run (id,
    /// name, or git ref: the newest run at that commit).
    #[arg(long, value_name = "RUN|GITREF")]
    baseline: Option<String>,
    /// Growth over the baseline allowed, in percent.
    #[arg(long, value_name = "PCT", default_value = "0")]
    tolerance: f64,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// A stored run (id, name or git ref), a profile (.lprof) or a profiled
    /// executable (its newest profile in the current directory); default: the
    /// newest stored run, else the newest profile in the current directory.
    target: Option<String>,
    /// Sort lines by this self figure.
    #[arg(long, value_enum, default_value = "allocated")]
    sort: SortKey,
    /// Show at most N lines (text default: 20; JSON default: all).
    #[arg(long, value_name = "N")]
    top: Option<usize>,
    /// Only lines of functions matching REGEX.
    #[arg(long, value_name = "REGEX")]
    function: Option<String>,
    /// Only lines of files matching REGEX.
    #[arg(long, value_name = "REGEX")]
    file: Option<String>,
    /// `user`: only lines of your workspace; `all`: every line (default:
    /// `user` for text when there are user lines, `all` for JSON).
    #[arg(long, value_enum)]
    focus: Option<Focus>,
    #[arg(long, value_enum, default_value = "text")]
    format: ReportFormat,
    /// Write to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Focus {
    User,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// `report` alone also writes these.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
    /// A self-contained HTML page with sortable tables (use -o FILE.html).
    Html,
    /// gzip-compressed pprof protobuf for `go tool pprof` (use -o FILE.pb.gz).
    Pprof,
    /// Folded stacks for flamegraph.pl or inferno; counts follow --sort.
    Collapsed,
    /// DHAT's JSON, for dh_view.html.
    Dhat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = dispatch(cli);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn regex(flag: &str, pattern: Option<&str>) -> Result<Option<Regex>> {
    pattern
        .map(|p| {
            Regex::new(p).map_err(|e| {
                // The regex crate's message spans lines; its last line says what is wrong.
                let msg = e.to_string();
                let why = msg
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                Error::Usage {
                    detail: format!(
                        "--{flag} {p:?} is not a valid regular expression ({why}); fix the pattern"
                    ),
                }
            })
        })
        .transpose()
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let cwd = std::env::current_dir()
        .map_err(|e| Error::io(&PathBuf::from("."), "read the working directory", e))?;
    let explicit = cli.store.or_else(|| {
        std::env::var_os("LINEPROF_STORE")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    });
    let store = Store::locate(explicit, &cwd);
    let done = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Run(a) => run::command(
            &store,
            &cwd,
            run::RunRequest {
                name: a.name,
                dir: a.dir,
                command: a.command,
            },
        ),
        Command::Report(a) => done(report(&store, &cwd, a)),
        Command::History(a) => done(history(&store, a)),
        Command::Diff(a) => done(diff(&store, &cwd, a)),
        Command::Check(a) => check::command(
            &store,
            &cwd,
            check::CheckRequest {
                run: a.run,
                max_peak: a.max_peak,
                max_allocated: a.max_allocated,
                max_allocations: a.max_allocations,
                baseline: a.baseline,
                tolerance: a.tolerance,
            },
        ),
    }
}

fn history(store: &Store, args: HistoryArgs) -> Result<()> {
    let runs = store.list()?;
    let text = match args.format {
        Format::Text => history::render_text(&runs, args.name.as_deref()),
        Format::Json => history::render_json(&runs, args.name.as_deref()),
    };
    output::write_output(None, &text)
}

/// Picks NEW first, then OLD among runs of NEW's name, so that the defaults
/// compare a program with its own previous run.
fn diff(store: &Store, cwd: &Path, args: DiffArgs) -> Result<()> {
    let runs = store.list()?;
    let newest = store::latest(&runs, store)?;
    let (old, new) = match (&args.old, &args.new) {
        (Some(o), Some(n)) => {
            let new = store::resolve(&runs, n, None, cwd, store)?;
            let old = store::resolve(&runs, o, new.run.name.as_deref(), cwd, store)?;
            (old, new)
        }
        (Some(o), None) => {
            let old = store::resolve(&runs, o, newest.run.name.as_deref(), cwd, store)?;
            let same_name = runs.iter().rev().find(|r| r.run.name == old.run.name);
            (old, same_name.unwrap_or(newest))
        }
        (None, _) => {
            let new = match &args.new {
                Some(n) => store::resolve(&runs, n, None, cwd, store)?,
                None => newest,
            };
            let old = runs
                .iter()
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
                })?;
            (old, new)
        }
    };
    let d = diff::diff(&store.load(old)?, &store.load(new)?);
    let text = match args.format {
        Format::Text => diff::render_text(&d, args.top),
        Format::Json => diff::render_json(&d),
    };
    output::write_output(None, &text)
}

/// A stored run if `target` names one (or is absent and runs exist), else a
/// profile or executable.
fn load_report(store: &Store, cwd: &Path, target: Option<&str>) -> Result<Report> {
    let is_file = |t: &str| Path::new(t).exists() || t.ends_with(".lprof");
    match target {
        Some(t) if !is_file(t) => {
            let runs = store.list()?;
            store.load(store::resolve(&runs, t, None, cwd, store)?)
        }
        Some(t) => {
            let source = ReportSource::from_arg(Some(Path::new(t)))?;
            report::report_from_profile(&source.profile_path(cwd)?)
        }
        None => match store.list()?.last() {
            Some(run) => store.load(run),
            None => report::report_from_profile(&ReportSource::Latest.profile_path(cwd)?),
        },
    }
}

fn report(store: &Store, cwd: &Path, args: ReportArgs) -> Result<()> {
    let report = load_report(store, cwd, args.target.as_deref())?;
    let has_user_lines = report.lines.iter().any(|l| l.kind == LineKind::User);
    let user_only = match args.focus {
        Some(f) => f == Focus::User,
        // The tables and listings are for reading; the data formats keep
        // every line (the stack formats always keep every stack).
        None => matches!(args.format, ReportFormat::Text | ReportFormat::Html) && has_user_lines,
    };
    let view = View {
        sort: args.sort,
        top: args.top,
        filter: LineFilter {
            function: regex("function", args.function.as_deref())?,
            file: regex("file", args.file.as_deref())?,
            user_only,
        },
    };
    let out = args.output.as_deref();
    let stack_table = |name| render::require_stacks(&report, name);
    let text = match args.format {
        ReportFormat::Text => {
            let mut sources = SourceFiles::new(report.root.clone());
            render::text::render(&report, &view, &mut sources)
        }
        ReportFormat::Html => {
            let mut sources = SourceFiles::new(report.root.clone());
            render::html::render(&report, &view, &mut sources)
        }
        ReportFormat::Json => {
            // The text report shows warnings first; JSON carries them in a
            // field, and a person watching the terminal sees them here.
            warn(&report);
            render::json::render(&report, &view)
        }
        ReportFormat::Collapsed => {
            warn(&report);
            render::collapsed::render(stack_table("collapsed")?, view.sort)
        }
        ReportFormat::Dhat => {
            warn(&report);
            render::dhat::render(&report, stack_table("dhat")?)
        }
        ReportFormat::Pprof => {
            warn(&report);
            let bytes = render::pprof::render(&report, stack_table("pprof")?);
            if out.is_none() && std::io::stdout().is_terminal() {
                return Err(Error::Usage {
                    detail: "--format pprof writes gzip-compressed protobuf, not text; add -o FILE (e.g. -o profile.pb.gz) or redirect stdout".into(),
                });
            }
            return output::write_bytes(out, &bytes);
        }
    };
    output::write_output(out, &text)
}

/// For formats with no place for them, warnings go to stderr.
fn warn(report: &Report) {
    for w in &report.warnings {
        eprintln!("lineprof: warning: {w}");
    }
}
