//! `lineprof report`: loads a stored run, a profile or a profiled
//! executable's newest profile, picks the view (sort, top, filters, focus)
//! and renders it in the asked format.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::analyze::lines::{LineFilter, LineKind, SortKey, SourceFiles};
use crate::analyze::report::{self, Report, ReportSource};
use crate::error::{Error, Result};
use crate::output;
use crate::render::{self, View};
use crate::workflow::store::{self, Store};

/// `--focus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Focus {
    User,
    All,
}

/// `--format` of `lineprof report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
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
    /// Bencher Metric Format JSON: one benchmark per test (test binaries)
    /// or per run.
    Bmf,
}

/// `--by` of `lineprof report`: what a row of the report is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    Line,
    Function,
    /// One row per test of a test binary.
    Test,
}

/// What `lineprof report` was asked for.
#[derive(Debug, Clone)]
pub struct ReportRequest {
    pub target: Option<String>,
    pub sort: SortKey,
    pub top: Option<usize>,
    pub function: Option<String>,
    pub file: Option<String>,
    pub focus: Option<Focus>,
    pub format: ReportFormat,
    pub by: By,
    pub callers: Option<String>,
    pub callees: Option<String>,
    pub output: Option<PathBuf>,
}

/// Compiles a `--flag REGEX`, naming the flag and the problem when it is
/// not a valid regular expression.
pub fn regex(flag: &str, pattern: Option<&str>) -> Result<Option<Regex>> {
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

/// A stored run if `target` names one (or is absent and runs exist), else a
/// profile or executable.
pub fn load_report(store: &Store, cwd: &Path, target: Option<&str>) -> Result<Report> {
    load(store, cwd, target, true)
}

/// As `load_report`; a profile is read without the live-heap timeline
/// unless `timeline` (only the HTML page draws it).
fn load(store: &Store, cwd: &Path, target: Option<&str>, timeline: bool) -> Result<Report> {
    let from_profile = |p: &Path| {
        if timeline {
            report::report_from_profile(p)
        } else {
            report::report_from_profile_without_timeline(p)
        }
    };
    let is_file = |t: &str| Path::new(t).exists() || t.ends_with(".lprof");
    match target {
        Some(t) if !is_file(t) => {
            let runs = store.list()?;
            store.load(store::resolve(&runs, t, None, cwd, store)?)
        }
        Some(t) => {
            let source = ReportSource::from_arg(Some(Path::new(t)))?;
            from_profile(&source.profile_path(cwd)?)
        }
        None => match store.list()?.last() {
            Some(run) => store.load(run),
            None => from_profile(&ReportSource::Latest.profile_path(cwd)?),
        },
    }
}

/// `lineprof report`.
pub fn command(store: &Store, cwd: &Path, req: ReportRequest) -> Result<()> {
    let timeline = req.format == ReportFormat::Html;
    let report = load(store, cwd, req.target.as_deref(), timeline)?;
    let has_user_lines = report.lines.iter().any(|l| l.kind == LineKind::User);
    let user_only = match req.focus {
        Some(f) => f == Focus::User,
        // The tables and listings are for reading; the data formats keep
        // every line (the stack formats always keep every stack).
        None => matches!(req.format, ReportFormat::Text | ReportFormat::Html) && has_user_lines,
    };
    let view = View {
        sort: req.sort,
        top: req.top,
        filter: LineFilter {
            function: regex("function", req.function.as_deref())?,
            file: regex("file", req.file.as_deref())?,
            user_only,
        },
    };
    let out = req.output.as_deref();
    let callers = regex("callers", req.callers.as_deref())?;
    let callees = regex("callees", req.callees.as_deref())?;
    if req.by != By::Function && (callers.is_some() || callees.is_some()) {
        return Err(Error::Usage {
            detail: "--callers and --callees list call-graph edges of the function view; add --by function".into(),
        });
    }
    if req.by == By::Function {
        let text = match req.format {
            ReportFormat::Text => {
                render::functions::render(&report, &view, callers.as_ref(), callees.as_ref())
            }
            ReportFormat::Json => render::json::render(&report, &view),
            other => {
                return Err(Error::Usage {
                    detail: format!(
                        "--by function has a text and a JSON form, not --format {other:?}; use --format text or json",
                    )
                    .to_lowercase(),
                })
            }
        };
        return output::write_output(out, &text);
    }
    let stack_table = |name| render::require_stacks(&report, name);
    let text = match req.format {
        ReportFormat::Bmf => render::bmf::render(&report),
        ReportFormat::Text if req.by == By::Test => render::by_test::render(&report),
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
