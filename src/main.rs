//! `lineprof`: the analysis CLI. This file parses flags and dispatches;
//! the work happens in the modules below.

mod error;
mod lines;
mod output;
mod profile;
mod render;
mod replay;
mod report;
mod symbolize;
mod unwind_check;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use regex::Regex;

use crate::error::{Error, Result};
use crate::lines::{LineFilter, LineKind, SortKey, SourceFiles};
use crate::render::View;
use crate::report::ReportSource;

#[derive(Parser)]
#[command(
    name = "lineprof",
    version,
    about = "Line-level memory and time profiler for Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show per-line figures of a profile.
    Report(ReportArgs),
}

#[derive(clap::Args)]
struct ReportArgs {
    /// A profile (.lprof) or a profiled executable (its newest profile in the
    /// current directory); default: the newest profile in the current directory.
    target: Option<PathBuf>,
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
    format: Format,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Report(args) => report(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
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

fn report(args: ReportArgs) -> Result<()> {
    let cwd = std::env::current_dir()
        .map_err(|e| Error::io(&PathBuf::from("."), "read the working directory", e))?;
    let source = ReportSource::from_arg(args.target.as_deref())?;
    let report = report::report_from_profile(&source.profile_path(&cwd)?)?;
    let has_user_lines = report.lines.iter().any(|l| l.kind == LineKind::User);
    let user_only = match args.focus {
        Some(f) => f == Focus::User,
        None => args.format == Format::Text && has_user_lines,
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
    let text = match args.format {
        Format::Text => {
            let mut sources = SourceFiles::new(report.root.clone());
            render::text::render(&report, &view, &mut sources)
        }
        Format::Json => render::json::render(&report, &view),
    };
    output::write_output(args.output.as_deref(), &text)
}
