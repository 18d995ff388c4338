//! `cargo lineprof run|test|bench [cargo args] [-- program args]`: build
//! with frame pointers and line tables, run, store a run per executable.
//!
//! Everything is configured through environment variables, never by
//! editing the user's files:
//! - `RUSTFLAGS` (or `CARGO_ENCODED_RUSTFLAGS`, which cargo prefers when
//!   set) gets `-C force-frame-pointers=yes` and `-C
//!   symbol-mangling-version=v0` appended (v0 names closures
//!   `app::f::{closure#0}` with any debug-info level);
//! - `CARGO_PROFILE_<P>_DEBUG=limited` and `..._STRIP=none` for the dev,
//!   release, test and bench profiles (and `--profile P`): line tables,
//!   and the linkage names that give inlined functions their full paths
//!   (`app::build_index` rather than `build_index`), for a few percent of
//!   binary size;
//! - `CARGO_TARGET_DIR` is `<target dir>/lineprof`: the changed flags would
//!   otherwise invalidate the user's normal build, and with a directory of
//!   its own an unchanged tree is not rebuilt on the next call.
//!
//! Executables are found from cargo's JSON artifact messages; each is run
//! through `lineprof run` (the binary installed next to this one), which
//! resolves the profile and stores the run.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const USAGE: &str = "usage: cargo lineprof run|test|bench [cargo args] [-- program args]

  run    build (like `cargo build`) and profile the one binary (--bin/--example picks it)
  test   build the tests (`cargo test --no-run`) and profile each test binary: one run each
  bench  build the benchmarks (`cargo bench --no-run`) and profile each: one run each

The program must use lineprof's allocator:
  #[global_allocator] static A: lineprof::Tracking = lineprof::Tracking::new();
Runs are stored in .lineprof/ (see `lineprof history`, `lineprof diff`, `lineprof check`).";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Run,
    Test,
    Bench,
}

/// An executable cargo built.
struct Artifact {
    target_name: String,
    kind: String,
    executable: PathBuf,
    package_dir: PathBuf,
    is_test: bool,
}

/// `cargo lineprof ARGS` (cargo runs the binary as `cargo-lineprof
/// lineprof ARGS`; `args` excludes the program name).
pub fn main(mut args: Vec<String>) -> ExitCode {
    if args.first().map(String::as_str) == Some("lineprof") {
        args.remove(0);
    }
    match run(args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<ExitCode, String> {
    let Some(sub) = args.first() else {
        return Err(format!("no subcommand\n\n{USAGE}"));
    };
    let mode = match sub.as_str() {
        "run" => Mode::Run,
        "test" => Mode::Test,
        "bench" => Mode::Bench,
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        other => return Err(format!("unknown subcommand `{other}`\n\n{USAGE}")),
    };
    let rest = &args[1..];
    let split = rest.iter().position(|a| a == "--").unwrap_or(rest.len());
    let cargo_args = &rest[..split];
    let mut program_args: Vec<String> = rest.get(split + 1..).unwrap_or(&[]).to_vec();
    if mode == Mode::Bench {
        // What `cargo bench` passes, so harnesses run in benchmark mode.
        program_args.insert(0, "--bench".into());
    }
    // `--quiet` is cargo's flag too: cargo gets it, and so does lineprof.
    let quiet = cargo_args.iter().any(|a| a == "--quiet" || a == "-q");
    let artifacts = build(mode, cargo_args)?;
    let chosen = choose(mode, artifacts)?;
    let lineprof = lineprof_binary();
    let mut failure = None;
    let mut skipped = 0;
    for a in &chosen {
        let code = profile_one(&lineprof, mode, a, &program_args, quiet)?;
        if mode != Mode::Run && code == i32::from(super::run::SKIPPED) {
            skipped += 1;
        } else if code != 0 && failure.is_none() {
            failure = Some(code);
        }
    }
    if mode != Mode::Run && !quiet {
        let note = if skipped > 0 {
            format!(", skipped {skipped} without a tracker")
        } else {
            String::new()
        };
        eprintln!(
            "cargo lineprof: profiled {} binaries{note}; see `lineprof history`",
            chosen.len() - skipped
        );
    }
    Ok(failure.map_or(ExitCode::SUCCESS, |c| ExitCode::from(c.clamp(1, 255) as u8)))
}

/// The environment of the build: frame pointers, v0 symbol names, line
/// tables, own target dir.
fn build_env(cargo_args: &[String]) -> Result<Vec<(String, String)>, String> {
    // Each flag is added unless the user's flags already set it. v0
    // mangling names closures by index and keeps one spelling per function
    // (`app::build::{closure#0}`, not `{{closure}}`).
    const FLAGS: [(&str, &str); 2] = [
        ("force-frame-pointers", "force-frame-pointers=yes"),
        ("symbol-mangling-version", "symbol-mangling-version=v0"),
    ];
    let mut env = Vec::new();
    // Cargo reads CARGO_ENCODED_RUSTFLAGS (0x1f-separated) over RUSTFLAGS.
    let (var, sep, mut flags) = match std::env::var("CARGO_ENCODED_RUSTFLAGS") {
        Ok(enc) => ("CARGO_ENCODED_RUSTFLAGS", "\x1f", enc),
        Err(_) => (
            "RUSTFLAGS",
            " ",
            std::env::var("RUSTFLAGS")
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
    };
    let before = flags.clone();
    for (key, flag) in FLAGS {
        if !flags.contains(key) {
            if !flags.is_empty() {
                flags.push_str(sep);
            }
            flags.push_str(&format!("-C{sep}{flag}"));
        }
    }
    if flags != before {
        env.push((var.to_string(), flags));
    }
    let mut profiles = vec![
        "DEV".to_string(),
        "RELEASE".into(),
        "TEST".into(),
        "BENCH".into(),
    ];
    if let Some(p) = flag_value(cargo_args, "--profile") {
        profiles.push(p.to_uppercase().replace('-', "_"));
    }
    for p in profiles {
        // The user's own setting, if they made one, wins.
        for (key, value) in [("DEBUG", "limited"), ("STRIP", "none")] {
            let var = format!("CARGO_PROFILE_{p}_{key}");
            if std::env::var_os(&var).is_none() {
                env.push((var, value.into()));
            }
        }
    }
    if flag_value(cargo_args, "--target-dir").is_none() {
        let base = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => target_directory(cargo_args)?,
        };
        env.push((
            "CARGO_TARGET_DIR".into(),
            base.join("lineprof").to_string_lossy().into_owned(),
        ));
    }
    Ok(env)
}

/// `--flag VALUE` or `--flag=VALUE` among the cargo args (before `--`).
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(flag)?.strip_prefix('=').map(str::to_string)
        }
    })
}

/// The workspace's target directory, as cargo computes it (config included).
fn target_directory(cargo_args: &[String]) -> Result<PathBuf, String> {
    let mut cmd = cargo();
    cmd.args(["metadata", "--format-version", "1", "--no-deps"]);
    if let Some(m) = flag_value(cargo_args, "--manifest-path") {
        cmd.args(["--manifest-path", &m]);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run `cargo metadata`: {e}"))?;
    if !out.status.success() {
        return Err(
            "`cargo metadata` failed (see above); run cargo lineprof inside a cargo project".into(),
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cannot read `cargo metadata` output: {e}"))?;
    v["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "`cargo metadata` did not report a target_directory".into())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds and returns every executable artifact cargo reported.
fn build(mode: Mode, cargo_args: &[String]) -> Result<Vec<Artifact>, String> {
    let mut cmd = cargo();
    match mode {
        Mode::Run => cmd.arg("build"),
        Mode::Test => cmd.args(["test", "--no-run"]),
        Mode::Bench => cmd.args(["bench", "--no-run"]),
    };
    cmd.arg("--message-format=json-render-diagnostics")
        .args(cargo_args)
        .envs(build_env(cargo_args)?)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err("the build failed (see cargo's messages above)".into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().filter_map(parse_artifact).collect())
}

fn parse_artifact(line: &str) -> Option<Artifact> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["reason"] != "compiler-artifact" {
        return None;
    }
    let manifest = PathBuf::from(v["manifest_path"].as_str()?);
    Some(Artifact {
        target_name: v["target"]["name"].as_str()?.to_string(),
        kind: v["target"]["kind"][0].as_str()?.to_string(),
        executable: PathBuf::from(v["executable"].as_str()?),
        package_dir: manifest.parent()?.to_path_buf(),
        is_test: v["profile"]["test"].as_bool().unwrap_or(false),
    })
}

/// `run` needs exactly one binary; `test` and `bench` take every harness.
fn choose(mode: Mode, artifacts: Vec<Artifact>) -> Result<Vec<Artifact>, String> {
    if mode != Mode::Run {
        let tests: Vec<Artifact> = artifacts.into_iter().filter(|a| a.is_test).collect();
        if tests.is_empty() {
            return Err("cargo built no test or bench binaries".into());
        }
        return Ok(tests);
    }
    let bins: Vec<Artifact> = artifacts
        .into_iter()
        .filter(|a| !a.is_test && (a.kind == "bin" || a.kind == "example"))
        .collect();
    match bins.len() {
        1 => Ok(bins),
        0 => Err("cargo built no binary; pass --bin NAME or --example NAME".into()),
        _ => {
            let names: Vec<&str> = bins.iter().map(|a| a.target_name.as_str()).collect();
            Err(format!(
                "several binaries were built ({}); pick one with --bin NAME",
                names.join(", ")
            ))
        }
    }
}

/// The run name, distinct per kind of build so that `diff` and `check`
/// never compare a test build with a bench or a program build: a binary
/// keeps its name (as `lineprof run` names it), an example gets
/// `-example`; in `test` mode a test target gets `-test` and a crate's unit
/// tests `-<kind>-test` (`app-lib-test`, `app-bin-test`), in `bench` mode
/// likewise `-bench`.
fn run_name(mode: Mode, a: &Artifact) -> String {
    let suffix = match mode {
        Mode::Run if a.kind == "example" => return format!("{}-example", a.target_name),
        Mode::Run => return a.target_name.clone(),
        Mode::Test => "test",
        Mode::Bench => "bench",
    };
    match a.kind.as_str() {
        "test" | "bench" => format!("{}-{suffix}", a.target_name),
        kind => format!("{}-{kind}-{suffix}", a.target_name),
    }
}

/// `lineprof` next to this executable (both are installed together), else
/// the one on PATH.
fn lineprof_binary() -> PathBuf {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("lineprof")));
    sibling
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "lineprof".into())
}

fn profile_one(
    lineprof: &Path,
    mode: Mode,
    a: &Artifact,
    args: &[String],
    quiet: bool,
) -> Result<i32, String> {
    let name = run_name(mode, a);
    let mut cmd = Command::new(lineprof);
    cmd.args(["run", "--name", &name]);
    if quiet {
        cmd.arg("--quiet");
    }
    if mode != Mode::Run {
        // Like cargo: test binaries run in their package's directory.
        cmd.arg("--dir").arg(&a.package_dir);
        cmd.env("CARGO_MANIFEST_DIR", &a.package_dir);
        cmd.arg("--skip-untracked");
        if mode == Mode::Test {
            // Benchmarks run with `--bench`, where libtest lists tests
            // it does not run: only `test` keeps the list.
            cmd.arg("--list-tests");
        }
        if !quiet {
            eprintln!(
                "cargo lineprof: running {} ({name})",
                a.executable.display()
            );
        }
    }
    cmd.arg("--").arg(&a.executable).args(args);
    let status = cmd.status().map_err(|e| {
        format!(
            "{}: cannot run lineprof: {e}; install it next to cargo-lineprof",
            lineprof.display()
        )
    })?;
    Ok(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(name: &str, kind: &str, is_test: bool) -> Artifact {
        Artifact {
            target_name: name.into(),
            kind: kind.into(),
            executable: PathBuf::from("/t").join(name),
            package_dir: PathBuf::from("/p"),
            is_test,
        }
    }

    #[test]
    fn run_names_differ_per_kind_of_build() {
        let lib = artifact("app", "lib", true);
        let bin_tests = artifact("app", "bin", true);
        let itest = artifact("api", "test", true);
        let bench = artifact("speed", "bench", true);
        let names = [
            run_name(Mode::Run, &artifact("app", "bin", false)),
            run_name(Mode::Run, &artifact("demo", "example", false)),
            run_name(Mode::Test, &lib),
            run_name(Mode::Test, &bin_tests),
            run_name(Mode::Test, &itest),
            run_name(Mode::Bench, &lib),
            run_name(Mode::Bench, &bench),
        ];
        assert_eq!(
            names,
            [
                "app",
                "demo-example",
                "app-lib-test",
                "app-bin-test",
                "api-test",
                "app-lib-bench",
                "speed-bench"
            ]
        );
    }
}
