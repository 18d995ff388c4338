//! `lineprof`: the analysis CLI. This file parses flags and dispatches to
//! the library (`lineprof_cli`); the work happens there.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use lineprof_cli::analyze::lines::SortKey;
use lineprof_cli::error::{Error, Result};
use lineprof_cli::workflow::show::{By, Focus, ReportFormat};
use lineprof_cli::workflow::store::Store;
use lineprof_cli::workflow::{check, diff, history, run, show};

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
    /// Print nothing but errors and notes (the report never goes to
    /// stdout, which is the program's).
    #[arg(long, short)]
    quiet: bool,
    /// A program that succeeds without writing a profile is skipped (exit
    /// code 3), not an error: what `cargo lineprof test` uses.
    #[arg(long, hide = true)]
    skip_untracked: bool,
    /// The program is a libtest binary: keep the tests it ran (`--list`)
    /// with the run: what `cargo lineprof test` uses.
    #[arg(long, hide = true)]
    list_tests: bool,
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
    format: history::HistoryFormat,
    /// Write to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DiffArgs {
    /// Run id, run name or git ref (default: the run before NEW with NEW's name).
    old: Option<String>,
    /// Run id, run name or git ref (default: the newest run).
    new: Option<String>,
    /// Show at most N changed lines (text and markdown).
    #[arg(long, value_name = "N", default_value = "20")]
    top: usize,
    #[arg(long, value_enum, default_value = "text")]
    format: diff::DiffFormat,
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
    /// Fail if peak, allocated bytes or allocations grew over the run of
    /// the same name in RUN|GITREF (a run id, a run name, or a git ref: the
    /// runs at that commit); per test for test binaries.
    #[arg(long, value_name = "RUN|GITREF")]
    baseline: Option<String>,
    /// Growth over the baseline allowed, in percent.
    #[arg(long, value_name = "PCT", default_value = "0")]
    tolerance: f64,
    /// Also append a markdown summary to FILE (default: the file
    /// `GITHUB_STEP_SUMMARY` names, when set).
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
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
    /// `line`: per-line tables and listings; `function`: pstats's table,
    /// one row per function (text; JSON always has a `functions` array);
    /// `test`: one row per test of a test binary (JSON: the `tests` array).
    #[arg(long, value_enum, default_value = "line")]
    by: By,
    /// With --by function: who called the functions matching REGEX.
    #[arg(long, value_name = "REGEX")]
    callers: Option<String>,
    /// With --by function: whom the functions matching REGEX called.
    #[arg(long, value_name = "REGEX")]
    callees: Option<String>,
    /// Write to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
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
                quiet: a.quiet,
                skip_untracked: a.skip_untracked,
                list_tests: a.list_tests,
            },
        ),
        Command::Report(a) => done(show::command(
            &store,
            &cwd,
            show::ReportRequest {
                target: a.target,
                sort: a.sort,
                top: a.top,
                function: a.function,
                file: a.file,
                focus: a.focus,
                format: a.format,
                by: a.by,
                callers: a.callers,
                callees: a.callees,
                output: a.output,
            },
        )),
        Command::History(a) => done(history::command(
            &store,
            a.name.as_deref(),
            a.format,
            a.output.as_deref(),
        )),
        Command::Diff(a) => done(diff::command(
            &store,
            &cwd,
            diff::DiffRequest {
                old: a.old,
                new: a.new,
                top: a.top,
                format: a.format,
            },
        )),
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
                summary: a.summary,
            },
        ),
    }
}
