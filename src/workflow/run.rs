//! `lineprof run -- CMD ARGS`: run a program built with `lineprof::Tracking`,
//! resolve the profile it writes, store it as a run with its git metadata,
//! and print the summary and top lines.
//!
//! The profile goes to a private temporary path (`LINEPROF_OUT`), so runs
//! never pick up a stale `lineprof-*.lprof` from the working directory and
//! leave nothing behind there.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};

use crate::analyze::lines::{workspace_root, LineFilter, LineKind, SourceFiles};
use crate::analyze::per_test;
use crate::analyze::report::{self, Report};
use crate::error::{Error, Result};
use crate::render::{self, View};
use crate::workflow::git;
use crate::workflow::store::{self, Store};

/// Lines in the table printed after a run.
const TOP_LINES: usize = 10;

pub struct RunRequest {
    pub name: Option<String>,
    /// The program's working directory (default: ours).
    pub dir: Option<PathBuf>,
    pub command: Vec<String>,
    /// Print nothing on success (the report never goes to stdout anyway:
    /// stdout is the program's).
    pub quiet: bool,
    /// For `cargo lineprof test|bench`: a program that succeeds without
    /// writing a profile (a test binary without the tracker) is skipped
    /// with a note and exit code [`SKIPPED`], not an error.
    pub skip_untracked: bool,
    /// For `cargo lineprof test`: when the program ran libtest's harness,
    /// ask it which tests it ran (`--list`, with the same arguments) and
    /// keep the list with the run, so that a test that allocated nothing
    /// has zero figures instead of no figures.
    pub list_tests: bool,
}

/// The exit code of `lineprof run --skip-untracked` for a program that ran
/// fine but had no tracker (read by `cargo lineprof`).
pub const SKIPPED: u8 = 3;

/// Runs, stores and reports. The exit code is the program's when it failed
/// (the run is stored anyway), 0 otherwise.
pub fn command(store: &Store, cwd: &Path, req: RunRequest) -> Result<ExitCode> {
    let Some(program) = req.command.first().cloned() else {
        return Err(Error::Usage {
            detail: "lineprof run: no program given; usage: lineprof run [--name NAME] -- PROGRAM [ARGS...]".into(),
        });
    };
    let id = store::new_run_id();
    let pattern = std::env::temp_dir().join(format!("lineprof-run-{id}-%p.lprof"));
    let dir = req.dir.clone().unwrap_or_else(|| cwd.to_path_buf());
    let mut child = Command::new(&program)
        .args(&req.command[1..])
        .current_dir(&dir)
        .env("LINEPROF_OUT", &pattern)
        .spawn()
        .map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
    let pid = child.id();
    let status = child.wait().map_err(|source| Error::Spawn {
        program: program.clone(),
        source,
    })?;
    let profiles = written_profiles(&id);
    let Some(profile) = pick_profile(&profiles, &id, pid) else {
        if !status.success() {
            eprintln!("note: `{program}` {}", describe_status(status));
        }
        if req.skip_untracked {
            if status.success() {
                eprintln!(
                    "note: skipped {program}: it wrote no profile (it has no lineprof tracker); to profile it, add `#[global_allocator] static A: lineprof::Tracking = lineprof::Tracking::new();` to it (for unit tests, `#[cfg(test)]` on it in src/lib.rs)"
                );
                return Ok(ExitCode::from(SKIPPED));
            }
            // Never let a failure read as a skip.
            let code = failure_code(status);
            return Ok(ExitCode::from(if code == SKIPPED { 1 } else { code }));
        }
        return Err(Error::NoProfileWritten { program });
    };
    let result = report::report_from_profile_in(&profile, workspace_root(&dir));
    let mut report = match result {
        Ok(r) => {
            for p in &profiles {
                let _ = std::fs::remove_file(p);
            }
            r
        }
        Err(e) => {
            eprintln!("note: the profile was kept at {}", profile.display());
            return Err(e);
        }
    };
    fill_run_info(&mut report, &id, &req, &program, &dir);
    if req.list_tests {
        add_test_list(&mut report, &req.command, &dir);
    }
    let path = store.save(&report)?;
    if !req.quiet {
        print_summary(&report, &path);
    }
    if profiles.len() > 1 {
        eprintln!(
            "note: {} processes wrote profiles; stored the one of `{program}` (pid {pid})",
            profiles.len()
        );
    }
    if status.success() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "note: `{program}` {}; the run was stored anyway",
        describe_status(status)
    );
    Ok(ExitCode::from(failure_code(status)))
}

/// Keeps the tests a libtest binary ran with the run (a note, not an
/// error, when it cannot tell: the run then has the tests it saw events of).
fn add_test_list(report: &mut Report, command: &[String], dir: &Path) {
    let Some(stacks) = &report.stacks else { return };
    let functions = || stacks.frames.iter().map(|f| f.function.as_str());
    if !per_test::ran_libtest(functions()) {
        return;
    }
    match libtest_list(command, dir) {
        Ok(list) => {
            // An aggregate run has no per-test figures: no zeros for them.
            if report.run.mode.as_deref() != Some("aggregate") {
                per_test::add_listed(&mut report.tests, &list, functions());
            }
            report.test_list = Some(list);
        }
        Err(why) => eprintln!(
            "note: cannot list the tests of {}: {why}; per-test figures cover only the tests that allocated",
            command[0]
        ),
    }
}

/// The tests `command` (a libtest binary and its arguments) runs: what
/// `--list` prints with the same filters, less the `#[ignore]`d tests,
/// which `--list` prints and a run skips, unless the arguments run them
/// (`--ignored` lists only those, `--include-ignored` all).
pub fn libtest_list(command: &[String], dir: &Path) -> std::result::Result<Vec<String>, String> {
    let args = &command[1..];
    let list = |extra: &[&str]| -> std::result::Result<Vec<String>, String> {
        let mut cmd = Command::new(&command[0]);
        cmd.args(args).arg("--list").args(extra);
        // The user may have chosen a format; `--format` twice is an error.
        let chose = args
            .iter()
            .any(|a| a == "-q" || a == "--quiet" || a.starts_with("--format"));
        if !chose {
            cmd.args(["--format", "terse"]);
        }
        let out = cmd
            .current_dir(dir)
            .env("LINEPROF", "off")
            .env_remove("LINEPROF_OUT")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run it with --list: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "`--list` {}: {}",
                describe_status(out.status),
                err.trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(str::to_string)
            .collect())
    };
    let runs_ignored = args
        .iter()
        .any(|a| a == "--ignored" || a == "--include-ignored");
    let mut tests = list(&[])?;
    if !runs_ignored {
        let ignored: std::collections::HashSet<String> =
            list(&["--ignored"])?.into_iter().collect();
        tests.retain(|t| !ignored.contains(t));
    }
    tests.sort();
    tests.dedup();
    Ok(tests)
}

/// The profiles the program (and any child that kept `LINEPROF_OUT`) wrote.
fn written_profiles(id: &str) -> Vec<PathBuf> {
    let prefix = format!("lineprof-run-{id}-");
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

/// The program's own profile; if it ran through a wrapper that forked (a
/// shell script), the largest one.
fn pick_profile(profiles: &[PathBuf], id: &str, pid: u32) -> Option<PathBuf> {
    let own = std::env::temp_dir().join(format!("lineprof-run-{id}-{pid}.lprof"));
    if profiles.contains(&own) {
        return Some(own);
    }
    profiles
        .iter()
        .max_by_key(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .cloned()
}

fn fill_run_info(report: &mut Report, id: &str, req: &RunRequest, program: &str, dir: &Path) {
    let run = &mut report.run;
    run.id = id.to_string();
    let exe_name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    run.name = req.name.clone().or(exe_name);
    if run.command.is_empty() {
        run.command = req.command.clone();
    }
    run.environment = Some(crate::analyze::report::recorded_environment());
    match git::info(dir) {
        Some(info) => run.git = info,
        None => eprintln!(
            "note: {} is not in a git repository (or has no commit yet); the run is stored without a commit",
            dir.display()
        ),
    }
}

fn print_summary(report: &Report, path: &Path) {
    let has_user_lines = report.lines.iter().any(|l| l.kind == LineKind::User);
    let view = View {
        top: Some(TOP_LINES),
        filter: LineFilter {
            user_only: has_user_lines,
            ..LineFilter::default()
        },
        ..View::default()
    };
    let mut sources = SourceFiles::new(report.root.clone());
    let text = render::text::render(report, &view, &mut sources);
    let git = &report.run.git;
    let commit = match &git.commit {
        Some(c) => format!(
            "commit {}{}",
            git::short(Some(c)),
            if git.dirty { " (dirty)" } else { "" }
        ),
        None => "no commit".to_string(),
    };
    let stored = format!(
        "{text}\nStored run {} ({}, {commit}) in {}\n",
        report.run.id,
        report.run.name.as_deref().unwrap_or("-"),
        path.display()
    );
    // The report goes to stderr: stdout carries the program's own output,
    // which a caller may be piping somewhere.
    eprint!("{stored}");
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "failed".to_string(),
    }
}

/// The shell's convention: the exit code, or 128 + the signal.
fn failure_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or(status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(1)
}
