//! The run store: `.lineprof/runs/<id>.json` at the project root.
//!
//! A stored run is one self-contained file: the schema-1 JSON report with
//! every line and its source text, so it renders after the source changed or
//! the binary was rebuilt or deleted. Invariants:
//! - files are written to a temporary name in the same directory, synced and
//!   renamed, so a kill or a full disk never leaves half a run, and two runs
//!   stored at once both survive (ids are unique);
//! - run ids start with the UTC time the run was stored, so sorting ids sorts
//!   runs oldest first;
//! - a file with a newer `schema` is an error, never read half-understood.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::analyze::lines::{Figures, LineFigures};
use crate::analyze::per_test::TestFigures;
use crate::analyze::replay::Timeline;
use crate::analyze::report::{rfc3339, Report, RunInfo, Totals};
use crate::analyze::stacks::StackTable;
use crate::error::{Error, Result};
use crate::render::{self, json::SCHEMA};
use crate::workflow::git;

/// The `.lineprof` directory of a project (or the one `--store` names).
#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
}

/// What `history`, `diff` and `check` need to pick runs, without the lines.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub path: PathBuf,
    pub run: RunInfo,
    pub totals: Totals,
}

#[derive(Deserialize)]
struct SchemaOnly {
    schema: u64,
}

#[derive(Deserialize)]
struct Header {
    run: RunInfo,
    totals: Totals,
}

#[derive(Deserialize)]
struct Stored {
    run: RunInfo,
    totals: Totals,
    lines: Vec<LineFigures>,
    #[serde(default)]
    functions: Vec<crate::analyze::functions::FunctionFigures>,
    /// Added within schema 1: runs stored before it have none.
    #[serde(default)]
    stacks: Option<StackTable>,
    /// Added within schema 1, as `stacks`.
    #[serde(default)]
    timeline: Option<Timeline>,
    /// Added within schema 1 (test binaries).
    #[serde(default)]
    tests: Vec<TestFigures>,
    #[serde(default)]
    shared_init: Option<Figures>,
    /// Added within schema 1: runs stored before it have none.
    #[serde(default)]
    panic_machinery: Option<Figures>,
    /// The report's header remarks, kept so that a stored run's text and
    /// HTML reports say what the report printed when it was made.
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    notes: Vec<String>,
    /// Added within schema 1: runs stored before it have none.
    #[serde(default)]
    test_list: Option<Vec<String>>,
}

/// Stacks larger than this (compact JSON) are not stored: the run stays a
/// quick read for `history` and `diff`, and only the stack formats
/// (collapsed, pprof, dhat) of it are lost.
const MAX_STORED_STACKS: usize = 16 << 20;

/// The project root for `cwd`: the nearest directory with `.git` (a
/// directory, or a file in worktrees and submodules), else the outermost one
/// with a Cargo.toml, else `cwd` itself.
pub fn project_root(cwd: &Path) -> PathBuf {
    if let Some(d) = cwd.ancestors().find(|d| d.join(".git").exists()) {
        return d.to_path_buf();
    }
    cwd.ancestors()
        .filter(|d| d.join("Cargo.toml").is_file())
        .last()
        .unwrap_or(cwd)
        .to_path_buf()
}

/// A fresh run id: `20260501T120000.123-3fa2c1` (UTC time, then random
/// digits so that runs stored in the same millisecond differ).
pub fn new_run_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let stamp: String = rfc3339(now.as_nanos() as u64)
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(now.as_nanos());
    format!(
        "{stamp}.{:03}-{:06x}",
        now.subsec_millis(),
        h.finish() & 0xff_ffff
    )
}

impl Store {
    /// `explicit` (from `--store` or `LINEPROF_STORE`) is the store
    /// directory itself; otherwise `.lineprof` at the project root of `cwd`.
    pub fn locate(explicit: Option<PathBuf>, cwd: &Path) -> Store {
        let dir = match explicit {
            Some(d) if d.is_absolute() => d,
            Some(d) => cwd.join(d),
            None => project_root(cwd).join(".lineprof"),
        };
        Store { dir }
    }

    fn runs_dir(&self) -> PathBuf {
        self.dir.join("runs")
    }

    /// Writes `report` as run `report.run.id`; returns the file's path.
    pub fn save(&self, report: &Report) -> Result<PathBuf> {
        let dir = self.runs_dir();
        let fresh = !self.dir.exists();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "create the run store", e))?;
        if fresh {
            self.ignore_in_git();
        }
        let path = dir.join(format!("{}.json", report.run.id));
        let tmp = dir.join(format!(".{}.json.tmp", report.run.id));
        let text = stored_text(report);
        if let Err(e) = write_synced(&tmp, text.as_bytes()) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&path, "store the run", e));
        }
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&path, "store the run", e));
        }
        // Make the rename itself durable; failing to is not worth an error.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(path)
    }

    /// A new store ignores itself in git: runs are per machine, and a
    /// package with a build script that prints no `rerun-if-changed` is
    /// fingerprinted by every file git does not ignore, so new runs would
    /// make cargo rebuild it on every `cargo lineprof`. Failing to write
    /// the file costs only that, so it is not an error.
    fn ignore_in_git(&self) {
        let text = "# lineprof's run store: local runs, ignored by git (and so by cargo's\n# fingerprints). Delete this file to commit runs.\n*\n";
        let _ = std::fs::write(self.dir.join(".gitignore"), text);
    }

    /// Every stored run, oldest first. No store yet means no runs.
    pub fn list(&self) -> Result<Vec<RunSummary>> {
        let dir = self.runs_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, "read the run store", e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|path| {
                let text = read_checked(&path)?;
                let h: Header = serde_json::from_str(&text).map_err(|e| bad(&path, e))?;
                Ok(RunSummary {
                    path,
                    run: h.run,
                    totals: h.totals,
                })
            })
            .collect()
    }

    /// The whole run, lines included.
    pub fn load(&self, summary: &RunSummary) -> Result<Report> {
        let path = &summary.path;
        let text = read_checked(path)?;
        let s: Stored = serde_json::from_str(&text).map_err(|e| bad(path, e))?;
        Ok(Report {
            run: s.run,
            totals: s.totals,
            lines: s.lines,
            functions: s.functions,
            warnings: s.warnings,
            notes: s.notes,
            // No root: a stored run shows only the source it kept, never
            // today's text of a file that may have changed since.
            root: None,
            stacks: s.stacks,
            timeline: s.timeline,
            tests: s.tests,
            shared_init: s.shared_init,
            panic_machinery: s.panic_machinery,
            test_list: s.test_list,
        })
    }
}

/// The schema-1 JSON report plus `stacks` and `timeline` fields, each
/// written compactly on one line (thousands of short arrays would
/// otherwise take a line per number). Readers of schema 1 ignore fields
/// they do not know.
fn stored_text(report: &Report) -> String {
    let mut text = render::json::render(report, &render::View::default());
    let stacks = report
        .stacks
        .as_ref()
        .and_then(|s| serde_json::to_string(s).ok())
        .filter(|s| s.len() <= MAX_STORED_STACKS);
    let timeline = report
        .timeline
        .as_ref()
        .and_then(|t| serde_json::to_string(t).ok());
    let extra: Vec<(&str, String)> = [("stacks", stacks), ("timeline", timeline)]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    let body_end = text.trim_end().len();
    if !extra.is_empty() && text.as_bytes().get(body_end.wrapping_sub(1)) == Some(&b'}') {
        let close = text[..body_end - 1].trim_end().len();
        text.truncate(close);
        for (key, value) in extra {
            text.push_str(&format!(",\n  \"{key}\": {value}"));
        }
        text.push_str("\n}\n");
    }
    text
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The file's text, after checking that its schema is one we read.
fn read_checked(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(path, "read the stored run", e))?;
    let head: SchemaOnly = serde_json::from_str(&text).map_err(|e| bad(path, e))?;
    if head.schema > u64::from(SCHEMA) {
        return Err(Error::NewerStore {
            path: path.to_path_buf(),
            schema: head.schema,
            supported: SCHEMA,
        });
    }
    Ok(text)
}

fn bad(path: &Path, e: serde_json::Error) -> Error {
    Error::BadStoredRun {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Finds the run `arg` designates among `runs` (oldest first): a run id, a
/// run name (its newest run), a unique id prefix, or a git ref (the newest
/// run at that commit). Names and refs prefer runs named `prefer_name`, so
/// that `diff main` compares a program with itself when several programs
/// were profiled at one commit.
pub fn resolve<'a>(
    runs: &'a [RunSummary],
    arg: &str,
    prefer_name: Option<&str>,
    git_dir: &Path,
    store: &Store,
) -> Result<&'a RunSummary> {
    if let Some(r) = runs.iter().find(|r| r.run.id == arg) {
        return Ok(r);
    }
    if let Some(r) = runs
        .iter()
        .rev()
        .find(|r| r.run.name.as_deref() == Some(arg))
    {
        return Ok(r);
    }
    let by_prefix: Vec<&RunSummary> = runs.iter().filter(|r| r.run.id.starts_with(arg)).collect();
    if arg.len() >= 4 && by_prefix.len() == 1 {
        return Ok(by_prefix[0]);
    }
    if let Some(commit) = git::resolve_ref(git_dir, arg) {
        let at: Vec<&RunSummary> = runs
            .iter()
            .filter(|r| r.run.git.commit.as_deref() == Some(commit.as_str()))
            .collect();
        let preferred = at
            .iter()
            .rev()
            .find(|r| prefer_name.is_some() && r.run.name.as_deref() == prefer_name);
        return preferred.or(at.last()).copied().ok_or_else(|| Error::UnknownRun {
            detail: format!(
                "{}: no stored run at commit {} ({arg}); check out that commit and profile it (`lineprof run` or `cargo lineprof run`), or pick a run from `lineprof history`",
                store.dir.display(),
                git::short(Some(&commit))
            ),
        });
    }
    Err(Error::UnknownRun {
        detail: format!(
            "{}: `{arg}` is not a stored run id, run name or git ref{}; `lineprof history` lists the stored runs",
            store.dir.display(),
            if by_prefix.len() > 1 { " (several run ids start with it)" } else { "" }
        ),
    })
}

/// The newest run, or an error saying there is none.
pub fn latest<'a>(runs: &'a [RunSummary], store: &Store) -> Result<&'a RunSummary> {
    runs.last().ok_or_else(|| Error::UnknownRun {
        detail: format!(
            "{}: no stored runs; profile a program first with `lineprof run -- PROGRAM` or `cargo lineprof run`",
            store.dir.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_differ() {
        let a = new_run_id();
        let b = new_run_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), "20260501T120000.123-3fa2c1".len(), "{a}");
        assert!(a.starts_with("20"), "{a}");
    }

    #[test]
    fn stacks_are_stored_and_optional() {
        use crate::analyze::stacks::{Frame, StackRow};
        let mut report = crate::render::testing::report();
        report.stacks = Some(StackTable {
            frames: vec![Frame {
                file: "src/main.rs".into(),
                line: 3,
                function: "app::main".into(),
            }],
            stacks: vec![StackRow {
                frames: vec![0],
                max_bytes: 7,
                ..StackRow::default()
            }],
            events: 2,
            peak_event: Some(1),
            pid: 9,
        });
        report.timeline = Some(Timeline {
            events: 2,
            lines: vec![],
            points: vec![crate::analyze::replay::TimelinePoint {
                event: 1,
                time_ns: Some(5),
                live_bytes: 7,
                by_line: vec![],
            }],
        });
        let text = stored_text(&report);
        // The document keeps its pretty lines; the stacks are one line.
        assert_eq!(text.lines().filter(|l| l.contains("\"stacks\"")).count(), 1);
        let stored: Stored = serde_json::from_str(&text).unwrap();
        assert_eq!(stored.stacks, report.stacks);
        assert_eq!(stored.timeline, report.timeline);
        report.timeline = None;
        // A run stored before stacks were kept has none, and still loads.
        report.stacks = None;
        let old: Stored = serde_json::from_str(&stored_text(&report)).unwrap();
        assert_eq!(old.stacks, None);
        assert_eq!(old.run.id, "r");
    }

    #[test]
    fn project_root_prefers_git_then_outermost_manifest() {
        let base = std::env::temp_dir().join(format!("lineprof-store-{}", new_run_id()));
        let inner = base.join("ws/member/src");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::write(base.join("ws/Cargo.toml"), "").unwrap();
        std::fs::write(base.join("ws/member/Cargo.toml"), "").unwrap();
        assert_eq!(project_root(&inner), base.join("ws"));
        std::fs::create_dir_all(base.join("ws/member/.git")).unwrap();
        assert_eq!(project_root(&inner), base.join("ws/member"));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
