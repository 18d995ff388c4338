//! The report model and the pipeline that builds it: profile -> replay ->
//! symbols -> lines. Renderers (and later the run store and `diff`) take a
//! `Report` and need nothing else; a stored run can be loaded straight into
//! one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::analyze::functions::{self, FunctionFigures};
use crate::analyze::lines::{self, Figures, LineFigures, SourceFiles};
use crate::analyze::per_test::{self, TestFigures};
use crate::analyze::profile::{self, Profile};
use crate::analyze::replay::{self, LiveSeries, StackFigures, Timeline, TimelineLine};
use crate::analyze::stacks::{self, StackTable};
use crate::analyze::{symbolize, unwind};
use crate::error::{Error, Result};

/// The JSON schema version of reports and stored runs: it stays 1 while
/// fields are only added (SPEC.md).
pub const SCHEMA: u32 = 1;

/// Everything a renderer shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub run: RunInfo,
    pub totals: Totals,
    /// Every line with a non-zero figure, unsorted.
    pub lines: Vec<LineFigures>,
    /// Every function with a non-zero figure, unsorted (added within
    /// schema 1: runs stored before have none).
    #[serde(default)]
    pub functions: Vec<FunctionFigures>,
    /// Problems to print before the figures.
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// What the reader should know that is no problem with the figures
    /// (how lineprof had to share the host's resources).
    #[serde(skip)]
    pub notes: Vec<String>,
    /// The workspace root user files are relative to.
    #[serde(skip)]
    pub root: Option<PathBuf>,
    /// Figures per call stack, for the formats that draw stacks; absent
    /// for stored runs written before they kept stacks.
    #[serde(skip)]
    pub stacks: Option<StackTable>,
    /// Live heap over the run; absent for stored runs written before it
    /// was kept.
    #[serde(skip)]
    pub timeline: Option<Timeline>,
    /// Per-test figures of a test binary (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestFigures>,
    /// What shared initialisation inside tests cost (`OnceLock` ...): kept
    /// apart from the tests, never gated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_init: Option<Figures>,
    /// What std's panic machinery did (the panic hook and message, the
    /// backtraces `RUST_BACKTRACE` asks for): on no line's `self` and in no
    /// test, since it depends on the environment rather than on the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic_machinery: Option<Figures>,
    /// The tests libtest ran (`<test binary> --list`, as `cargo lineprof
    /// test` asks it), when known: then `tests` has every one of them, with
    /// zero figures for a test without events. Absent for other programs
    /// and for runs stored before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_list: Option<Vec<String>>,
}

/// The `run` object of JSON schema 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: String,
    pub name: Option<String>,
    pub command: Vec<String>,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_ns: u64,
    pub git: GitInfo,
    pub executable: ExecutableInfo,
    pub sampling: Sampling,
    /// The environment variables that change what a run measures
    /// ([`RECORDED_ENV`]), as they were set when it ran (unset ones
    /// absent); `None` for runs stored before it was kept (added within
    /// schema 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<std::collections::BTreeMap<String, String>>,
    /// How the shim recorded: `stream` or `aggregate` (`LINEPROF_MODE` as
    /// the shim read it); `None` for runs stored before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The deepest stack the shim recorded (`LINEPROF_DEPTH` as the shim
    /// read it); `None` for runs stored before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
}

/// The variables kept with a run: `check` and `diff` compare runs only when
/// these agree (or say what differs).
pub const RECORDED_ENV: [&str; 7] = [
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
    "LINEPROF_SAMPLE",
    "LINEPROF_MODE",
    "LINEPROF_DEPTH",
    "LINEPROF_HZ",
    "LINEPROF_CPU",
];

/// [`RECORDED_ENV`] as this process sees it (the program it runs inherits it).
pub fn recorded_environment() -> std::collections::BTreeMap<String, String> {
    RECORDED_ENV
        .iter()
        .filter_map(|&k| {
            let v = std::env::var_os(k)?;
            Some((k.to_string(), v.to_string_lossy().into_owned()))
        })
        .collect()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GitInfo {
    pub commit: Option<String>,
    pub dirty: bool,
    pub branch: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutableInfo {
    pub path: String,
    pub build_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sampling {
    pub alloc_sample_bytes: u64,
    pub cpu_hz: u32,
    /// Present (true) when figures are estimates from sampled allocations.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimated: bool,
}

/// Whole-process figures (the `totals` object).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub frees: u64,
    pub freed_bytes: u64,
    /// The maximum of live heap bytes.
    pub peak_bytes: u64,
    /// Live heap bytes at exit.
    pub end_bytes: u64,
    pub cpu_samples: u64,
    pub cpu_time_ns: u64,
    /// CPU time of samples taken while lineprof recorded an event: on no
    /// line, and not in `cpu_time_ns`.
    #[serde(default)]
    pub profiler_cpu_time_ns: u64,
    /// CPU time (in `cpu_time_ns`) of stacks with no frame outside the
    /// standard library, C code and lineprof: on no line.
    #[serde(default)]
    pub unattributed_cpu_time_ns: u64,
    /// Samples of `unattributed_cpu_time_ns` whose stack could not be
    /// recovered (no call-frame information, a frame outside the stack
    /// copy).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unrecovered_cpu_samples: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Totals {
    /// The totals as one set of line figures (the increment is allocated
    /// minus freed bytes).
    pub fn figures(&self) -> Figures {
        Figures {
            allocations: self.allocations,
            allocated_bytes: self.allocated_bytes,
            frees: self.frees,
            freed_bytes: self.freed_bytes,
            increment_bytes: self.allocated_bytes as i64 - self.freed_bytes as i64,
            peak_bytes: self.peak_bytes,
            end_bytes: self.end_bytes,
            cpu_samples: self.cpu_samples,
            cpu_time_ns: self.cpu_time_ns,
        }
    }

    pub fn from_raw(raw: &StackFigures) -> Totals {
        let f = lines::Figures::from_raw(raw);
        Totals {
            allocations: f.allocations,
            allocated_bytes: f.allocated_bytes,
            frees: f.frees,
            freed_bytes: f.freed_bytes,
            peak_bytes: f.peak_bytes,
            end_bytes: f.end_bytes,
            cpu_samples: f.cpu_samples,
            cpu_time_ns: f.cpu_time_ns,
            profiler_cpu_time_ns: 0,
            unattributed_cpu_time_ns: 0,
            unrecovered_cpu_samples: 0,
        }
    }
}

/// The note of a test binary profiled with `LINEPROF_MODE=aggregate`.
pub const AGGREGATE_TESTS_NOTE: &str = "no per-test figures: LINEPROF_MODE=aggregate keeps figures per stack, not the order of events that tells one test's allocations from another's; profile with LINEPROF_MODE unset (stream) to see and gate each test";

/// Reads, replays, symbolizes and aggregates the profile at `path`.
pub fn report_from_profile(path: &Path) -> Result<Report> {
    report_from_profile_in(path, None)
}

/// As `report_from_profile`, with the workspace root given. `lineprof run`
/// knows it from the program's directory; guessing it from the executable
/// fails when the target directory lives in another workspace
/// (`CARGO_TARGET_DIR`).
pub fn report_from_profile_in(path: &Path, root: Option<PathBuf>) -> Result<Report> {
    build_report(path, root, true)
}

/// As `report_from_profile`, without the live-heap timeline (whose series
/// costs the replay a few ns per heap event): for the views that do not
/// draw it.
pub fn report_from_profile_without_timeline(path: &Path) -> Result<Report> {
    build_report(path, None, false)
}

fn build_report(path: &Path, root: Option<PathBuf>, with_timeline: bool) -> Result<Report> {
    let mut profile = profile::read_profile(path)?;
    let recovery = unwind::recover_cpu_stacks(&mut profile);
    let symbols = symbolize::symbolize(&profile)?;
    let (group_of, groups) = stacks::group_stacks(&symbols.stacks);
    let exe = profile.executable();
    let root = root
        .or_else(|| exe.parent().and_then(lines::workspace_root))
        .or_else(|| {
            std::env::current_dir()
                .ok()
                .and_then(|d| lines::workspace_root(&d))
        });
    // The timeline's series is recorded per source line during the one
    // replay; the lines it draws are chosen from the replay's figures.
    let (replay, series, keys) = if with_timeline {
        let keys = TimelineKeys::new(&symbols, root.as_deref());
        let (replay, series) =
            replay::replay_with_series(&profile, &group_of, &keys.key_of, keys.lines.len())?;
        (replay, series, Some(keys))
    } else {
        (replay::replay_grouped(&profile, &group_of)?, None, None)
    };
    let mut sources = SourceFiles::new(root.clone());
    let mut lines = lines::aggregate(&replay, &symbols, root.as_deref(), &mut sources);
    let mut functions = functions::aggregate(&replay, &symbols, root.as_deref());
    let known_files: Vec<&str> = symbols.locations.iter().map(|l| l.file.as_str()).collect();
    functions::add_timers(
        &profile.timed,
        &known_files,
        &mut lines,
        &mut functions,
        root.as_deref(),
        &mut sources,
    );
    let timeline = match (series, keys) {
        (Some(series), Some(keys)) => Some(live_heap_timeline(&series, &keys, &lines)),
        _ if with_timeline => Some(replay::aggregate_timeline(&profile)),
        _ => None,
    };
    // An aggregate profile keeps figures per stack, not the order of the
    // events that tells one test's allocations from another's: it has no
    // per-test figures (not zeros).
    let split = if profile.aggregate.is_some() {
        per_test::TestSplit::default()
    } else {
        per_test::split(&profile, &replay, &symbols, root.as_deref())?
    };
    let panic_machinery = panic_machinery(&replay, &symbols);
    let mut warnings = symbols.warnings.clone();
    warnings.extend(profile.warnings());
    warnings.extend(recovery.warnings.iter().cloned());
    let mut totals = Totals::from_raw(&replay.totals);
    totals.profiler_cpu_time_ns = replay.profiler_cpu_time_ns.round() as u64;
    totals.unattributed_cpu_time_ns = lines::unattributed_cpu_ns(&replay, &symbols).round() as u64;
    totals.unrecovered_cpu_samples = recovery.unrecovered;
    // A few CPU samples whose first frames could not be recovered shift no
    // line's share visibly: a note; 1% of the samples or more, a warning.
    let mut notes = profile.notes();
    if profile.aggregate.is_some()
        && per_test::ran_libtest(symbols.locations.iter().map(|l| l.function.as_str()))
    {
        notes.push(AGGREGATE_TESTS_NOTE.to_string());
    }
    let all_samples = totals.cpu_samples.max(1);
    let mut tell = |count: u64, text: String| {
        if count >= 10 && count * 100 >= all_samples {
            warnings.push(text);
        } else {
            notes.push(text);
        }
    };
    if recovery.unrecovered > 0 {
        tell(
            recovery.unrecovered,
            format!(
                "{} of {} CPU samples in code without frame pointers could not be unwound; \
                 they keep the frame-pointer stack, which may miss their direct caller",
                recovery.unrecovered,
                recovery.unrecovered + recovery.recovered
            ),
        );
    }
    if recovery.cut_stacks > 0 {
        tell(
            recovery.cut_stacks,
            format!(
                "{} CPU stacks were cut at a frame outside every loaded module's code \
                 (a frame-pointer chain broken by code built without frame pointers)",
                recovery.cut_stacks
            ),
        );
    }
    Ok(Report {
        tests: split.tests,
        shared_init: split.shared_init,
        panic_machinery,
        test_list: None,
        run: run_info(&profile, replay.estimated),
        totals,
        lines,
        functions,
        warnings,
        notes,
        stacks: Some(StackTable {
            pid: profile.meta.pid,
            ..stacks::stack_table(&replay, &symbols, &group_of, &groups, root.as_deref())
        }),
        timeline,
        root,
    })
}

/// The figures of the stacks inside std's panic machinery, if any allocated.
fn panic_machinery(replay: &replay::Replay, symbols: &symbolize::Symbols) -> Option<Figures> {
    let mut sum = StackFigures::default();
    for (sid, fig) in replay.per_stack.iter().enumerate() {
        let inside = symbols.stacks.get(sid).is_some_and(|stack| {
            crate::analyze::classify::in_panic_machinery(stack, &symbols.locations)
        });
        if inside {
            sum.add(fig);
        }
    }
    let f = Figures::from_raw(&sum);
    (f.allocations > 0 || f.allocated_bytes > 0).then_some(f)
}

/// Lines whose share of the live heap the timeline draws.
const TIMELINE_LINES: usize = 5;

/// The source lines the timeline's series is kept for: each location's
/// line as the report names it, and the line each raw stack's bytes are
/// attributed to (`replay::NO_KEY`: none).
struct TimelineKeys {
    lines: Vec<(String, u32, String)>,
    key_of: Vec<u32>,
}

impl TimelineKeys {
    fn new(symbols: &symbolize::Symbols, root: Option<&Path>) -> TimelineKeys {
        let mut index: HashMap<(String, u32, String), u32> = HashMap::new();
        let mut lines = Vec::new();
        let key_of_location: Vec<u32> = symbols
            .locations
            .iter()
            .map(|loc| {
                let file = crate::analyze::classify::display_file(&loc.file, root);
                let key = (file, loc.line, loc.function.clone());
                *index.entry(key).or_insert_with_key(|key| {
                    lines.push(key.clone());
                    lines.len() as u32 - 1
                })
            })
            .collect();
        let key_of = symbols
            .stacks
            .iter()
            .map(|stack| {
                crate::analyze::classify::attribution(stack, &symbols.locations)
                    .and_then(|a| key_of_location.get(stack[a] as usize).copied())
                    .unwrap_or(replay::NO_KEY)
            })
            .collect();
        TimelineKeys { lines, key_of }
    }
}

/// The timeline with the share of the lines that held the most at the
/// peak (by `self` peak bytes: each stack's bytes go to one line).
fn live_heap_timeline(series: &LiveSeries, keys: &TimelineKeys, lines: &[LineFigures]) -> Timeline {
    let mut top: Vec<&LineFigures> = lines
        .iter()
        .filter(|l| l.self_figures.peak_bytes > 0)
        .collect();
    top.sort_by(|a, b| {
        b.self_figures
            .peak_bytes
            .cmp(&a.self_figures.peak_bytes)
            .then_with(|| (&a.file, a.line).cmp(&(&b.file, b.line)))
    });
    top.truncate(TIMELINE_LINES);
    let chosen: Vec<TimelineLine> = top
        .iter()
        .map(|l| TimelineLine {
            file: l.file.clone(),
            line: l.line,
            function: l.function.clone(),
        })
        .collect();
    let key_of_chosen: Vec<Option<u32>> = chosen
        .iter()
        .map(|c| {
            keys.lines
                .iter()
                .position(|(file, line, function)| {
                    *line == c.line && *function == c.function && *file == c.file
                })
                .map(|k| k as u32)
        })
        .collect();
    series.timeline(chosen, &key_of_chosen)
}

fn run_info(p: &Profile, estimated: bool) -> RunInfo {
    let exe = p.executable();
    let build_id = p
        .modules
        .iter()
        .find(|m| Path::new(&*String::from_utf8_lossy(&m.path)) == exe)
        .or(p.modules.first())
        .filter(|m| !m.build_id.is_empty())
        .map(|m| m.build_id.iter().map(|b| format!("{b:02x}")).collect());
    let end_ns = p.end.map(|e| e.end_unix_ns).or_else(|| {
        let modified = std::fs::metadata(&p.path).and_then(|m| m.modified()).ok()?;
        let since = modified.duration_since(SystemTime::UNIX_EPOCH).ok()?;
        Some(since.as_nanos() as u64)
    });
    let id = p
        .path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    RunInfo {
        id,
        name: None,
        command: p
            .meta
            .args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
        started_at: rfc3339(p.meta.start_unix_ns),
        duration_ns: end_ns.map_or(0, |e| e.saturating_sub(p.meta.start_unix_ns)),
        git: GitInfo::default(),
        executable: ExecutableInfo {
            path: exe.to_string_lossy().into_owned(),
            build_id,
        },
        sampling: Sampling {
            alloc_sample_bytes: p.meta.sample_bytes,
            cpu_hz: p.meta.cpu_hz,
            estimated,
        },
        environment: None,
        mode: Some(
            if p.aggregate.is_some() {
                "aggregate"
            } else {
                "stream"
            }
            .into(),
        ),
        max_depth: Some(p.meta.max_depth),
    }
}

/// Formats nanoseconds since the Unix epoch as RFC 3339 in UTC.
pub fn rfc3339(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What `lineprof report` was asked to show. A stored run (by id) will be a
/// further variant once the run store exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportSource {
    Profile(PathBuf),
    /// The newest profile in the working directory written by this program.
    Executable(PathBuf),
    /// The newest profile in the working directory.
    Latest,
}

impl ReportSource {
    /// Classifies a command-line argument by the file's first bytes.
    pub fn from_arg(arg: Option<&Path>) -> Result<ReportSource> {
        let Some(path) = arg else {
            return Ok(ReportSource::Latest);
        };
        let mut head = [0u8; 8];
        let n = read_head(path, &mut head)?;
        if n >= 4 && head[..4] == *b"\x7fELF" {
            Ok(ReportSource::Executable(path.to_path_buf()))
        } else {
            // Anything else is read as a profile; the reader says what is
            // wrong with it if it is none.
            Ok(ReportSource::Profile(path.to_path_buf()))
        }
    }

    /// The profile file this source designates, looked up in `dir`.
    pub fn profile_path(&self, dir: &Path) -> Result<PathBuf> {
        match self {
            ReportSource::Profile(p) => Ok(p.clone()),
            ReportSource::Latest => newest_profile(dir, |_| true).ok_or_else(|| Error::NoProfile {
                detail: format!(
                    "{}: no *.lprof profile here; run a program that uses lineprof::Tracking first, or pass a profile path",
                    dir.display()
                ),
            }),
            ReportSource::Executable(exe) => {
                let canonical =
                    std::fs::canonicalize(exe).map_err(|e| Error::io(exe, "resolve", e))?;
                let want = canonical.to_string_lossy().into_owned();
                newest_profile(dir, |p| {
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                    name.is_some_and(|n| n.starts_with("lineprof-"))
                        && profile_executable(p).is_some_and(|e| e == want)
                })
                .ok_or_else(|| Error::NoProfile {
                    detail: format!(
                        "{}: no lineprof-*.lprof in {} was written by this executable; run it first (it writes the profile on exit)",
                        exe.display(),
                        dir.display()
                    ),
                })
            }
        }
    }
}

fn read_head(path: &Path, buf: &mut [u8]) -> Result<usize> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "open", e))?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(Error::io(path, "read", e)),
        }
    }
    Ok(n)
}

/// The newest `*.lprof` file in `dir` that `keep` accepts.
fn newest_profile(dir: &Path, keep: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lprof") && keep(p))
        .filter_map(|p| {
            let modified = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            Some((modified, p))
        })
        .max()
        .map(|(_, p)| p)
}

/// The executable recorded in a profile's metadata, reading only its start.
fn profile_executable(path: &Path) -> Option<String> {
    let mut head = vec![0u8; 1 << 16];
    let n = read_head(path, &mut head).ok()?;
    let chunks = lineprof::format::split_chunks(&head[..n]).ok()?;
    let meta = chunks
        .chunks
        .iter()
        .find(|c| c.kind == lineprof::format::ChunkKind::Meta)?;
    let meta = lineprof::format::decode_meta(meta.payload).ok()?;
    Some(String::from_utf8_lossy(&meta.executable).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
    }
}
