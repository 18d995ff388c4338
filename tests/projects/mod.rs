//! Shared by the workflow tests: tiny cargo projects in temporary
//! directories that depend on lineprof by absolute path, git in them, and
//! the `lineprof` / `cargo lineprof` binaries run inside them.
//!
//! Every project builds into one target directory, `target/e2e-projects`,
//! with exactly the environment `cargo lineprof` uses, so `lineprof` and
//! `libc` compile once per profile for all of them.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `CARGO_TARGET_DIR` for the projects; `cargo lineprof` builds in its
/// `lineprof` subdirectory.
pub fn shared_target() -> PathBuf {
    repo().join("target/e2e-projects")
}

/// A directory under the system temp dir (outside this repository, so the
/// store lookup never climbs into it), removed on drop.
pub struct Project(pub PathBuf);

impl Project {
    /// An empty cargo package `name` with `main_rs` (or `lib.rs` when
    /// `lib` is set), depending on lineprof; no profile settings at all.
    pub fn new(tag: &str, name: &str) -> Project {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("lineprof-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).unwrap();
        let shim = repo().join("alloc-shim");
        let manifest = format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nlineprof = {{ path = {:?} }}\n",
            shim.display().to_string()
        );
        std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
        // The repository's lock file pins libc, so no registry lookup is
        // needed; cargo drops the entries this project does not use.
        std::fs::copy(repo().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        std::fs::write(dir.join(".gitignore"), "/target\n/.lineprof\nCargo.lock\n").unwrap();
        Project(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, file: &str, text: &str) {
        let path = self.0.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.0.join(file)).unwrap()
    }

    /// Runs git with a fixed identity; panics if it fails.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=lineprof",
                "-c",
                "user.email=lineprof@example.com",
            ])
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(&self.0)
            .output()
            .expect("run git");
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
        stdout(&out).trim().to_string()
    }

    /// Commits every tracked or new file and tags the commit; its hash.
    pub fn commit(&self, message: &str, tag: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["tag", tag]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// `cargo build --release` with `cargo lineprof`'s environment; the path
    /// of binary `bin`.
    pub fn build_release(&self, bin: &str) -> PathBuf {
        let target = shared_target().join("lineprof");
        let mut cmd = cargo_cmd(&self.0);
        cmd.args(["build", "--release", "--quiet"])
            .env("RUSTFLAGS", "-C force-frame-pointers=yes")
            .env("CARGO_TARGET_DIR", &target);
        for p in ["DEV", "RELEASE", "TEST", "BENCH"] {
            cmd.env(format!("CARGO_PROFILE_{p}_DEBUG"), "line-tables-only")
                .env(format!("CARGO_PROFILE_{p}_STRIP"), "none");
        }
        let out = cmd.output().expect("run cargo");
        assert!(out.status.success(), "cargo build: {}", stderr(&out));
        target.join("release").join(bin)
    }

    /// `lineprof ARGS` in the project directory.
    pub fn lineprof(&self, args: &[&str]) -> Output {
        lineprof_in(&self.0, args)
    }

    /// `cargo lineprof ARGS`, found by cargo on PATH as a real user would.
    pub fn cargo_lineprof(&self, args: &[&str]) -> Output {
        self.cargo_lineprof_env(args, &[])
    }

    /// `cargo lineprof ARGS` with environment variables set (`Some`) or
    /// removed (`None`).
    pub fn cargo_lineprof_env(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_cargo-lineprof"))
            .parent()
            .unwrap();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![bin_dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        let mut cmd = cargo_cmd(&self.0);
        cmd.arg("lineprof")
            .args(args)
            .env("PATH", std::env::join_paths(dirs).unwrap())
            .env("CARGO_TARGET_DIR", shared_target());
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.output().expect("run cargo lineprof")
    }

    /// The `--format json` output of `lineprof ARGS`, which must succeed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        let out = self.lineprof(&all);
        assert_eq!(
            out.status.code(),
            Some(0),
            "lineprof {all:?}: {}",
            stderr(&out)
        );
        serde_json::from_str(&stdout(&out)).expect("JSON output")
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A cargo command in `dir` with none of the caller's flags leaking in
/// (`cargo test` itself may run with RUSTFLAGS set).
fn cargo_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CARGO_PROFILE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("LINEPROF_STORE").env_remove("LINEPROF");
    cmd
}

/// `lineprof ARGS` in `dir`, with a predictable environment.
pub fn lineprof_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lineprof"))
        .args(args)
        .current_dir(dir)
        .env_remove("LINEPROF_STORE")
        .env_remove("LINEPROF")
        .env_remove("LINEPROF_SAMPLE")
        .env_remove("RUST_BACKTRACE")
        .env_remove("GITHUB_STEP_SUMMARY")
        .output()
        .expect("run lineprof")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The one line of a JSON report whose source contains `snippet`.
pub fn line<'a>(report: &'a Value, snippet: &str) -> &'a Value {
    let found: Vec<&Value> = report["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["source"].as_str().is_some_and(|s| s.contains(snippet)))
        .collect();
    assert_eq!(found.len(), 1, "lines with `{snippet}`: {found:#?}");
    found[0]
}
