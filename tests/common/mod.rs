//! Shared by the end-to-end tests: builds the fixture crate (once per test
//! binary; across binaries cargo's own up-to-date check makes later builds
//! no-ops, as long as every build uses the same flags and target directory),
//! runs a fixture with its profile going to a fresh temporary directory, and
//! reads `lineprof report --format json` back as per-line figures.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use serde_json::Value;

pub mod perf;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the fixture binaries `bins` (all if empty) into
/// `fixtures/<target_dir>` with exactly the given RUSTFLAGS and extra
/// environment, and returns the directory holding the binaries.
pub fn build_fixtures(
    target_dir: &str,
    rustflags: &str,
    env: &[(&str, &str)],
    bins: &[&str],
) -> PathBuf {
    let target = repo().join("fixtures").join(target_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(repo().join("fixtures/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env("RUSTFLAGS", rustflags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    for bin in bins {
        cmd.args(["--bin", bin]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run cargo to build the fixtures");
    assert!(
        out.status.success(),
        "building the fixtures into {} failed:\n{}",
        target.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("release")
}

/// The fixtures as the tests normally use them: frame pointers and line
/// tables (the fixture crate's release profile has `line-tables-only`).
pub fn fixture(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| build_fixtures("target", "-C force-frame-pointers=yes", &[], &[]))
        .join(name)
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("lineprof-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `exe` with `LINEPROF_OUT=out` and a predictable environment (no
/// backtraces: printing one allocates a lot).
pub fn run_profiled(exe: &Path, args: &[&str], out: &Path) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("LINEPROF_OUT", out)
        .env_remove("LINEPROF")
        .env_remove("LINEPROF_SAMPLE")
        .env_remove("LINEPROF_DEPTH")
        .env_remove("LINEPROF_HZ")
        .env_remove("LINEPROF_CPU")
        .env_remove("LINEPROF_MODE")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    output_retrying_busy(&mut cmd)
}

/// Runs `cmd`, retrying while its executable is "busy": a test that has
/// just copied a binary can lose a race with another test thread's fork,
/// which briefly inherits the copy's write descriptor (ETXTBSY).
pub fn output_retrying_busy(cmd: &mut Command) -> Output {
    const ETXTBSY: i32 = 26;
    for _ in 0..100 {
        match cmd.output() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            r => return r.unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program())),
        }
    }
    panic!("{:?} stayed busy (ETXTBSY)", cmd.get_program())
}

/// A fixture run: its profile, its output, and the directory holding both.
pub struct Profiled {
    pub dir: TempDir,
    pub profile: PathBuf,
    pub output: Output,
    pub name: String,
}

/// Runs fixture `name` and expects it to exit successfully.
pub fn profile(name: &str, args: &[&str]) -> Profiled {
    let p = profile_any_exit(name, args);
    assert!(
        p.output.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&p.output.stderr)
    );
    p
}

pub fn profile_any_exit(name: &str, args: &[&str]) -> Profiled {
    let dir = TempDir::new(name);
    let profile = dir.path().join(format!("{name}.lprof"));
    let output = run_profiled(&fixture(name), args, &profile);
    assert!(
        profile.exists(),
        "{name} wrote no profile at {}",
        profile.display()
    );
    Profiled {
        dir,
        profile,
        output,
        name: name.to_string(),
    }
}

impl Profiled {
    pub fn report(&self) -> Report {
        report(&self.profile, &self.name)
    }
}

/// `lineprof report --format FORMAT -o <dir>/NAME`: the file written.
pub fn report_to_file(p: &Profiled, format: &str, name: &str) -> std::path::PathBuf {
    let file = p.dir.path().join(name);
    let args = [
        "report",
        p.profile.to_str().unwrap(),
        "--format",
        format,
        "-o",
    ];
    let out = lineprof(&[&args[..], &[file.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    file
}

/// Runs the CLI from the workspace root (where fixtures' sources resolve).
pub fn lineprof(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lineprof"))
        .args(args)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .output()
        .expect("run lineprof")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `lineprof report --format json` of a profile written by fixture `name`.
pub fn report(profile: &Path, name: &str) -> Report {
    let out = lineprof(&["report", profile.to_str().unwrap(), "--format", "json"]);
    assert!(
        out.status.success(),
        "lineprof report failed: {}",
        stderr(&out)
    );
    Report {
        json: serde_json::from_slice(&out.stdout).expect("report is JSON"),
        file: format!("src/bin/{name}.rs"),
    }
}

/// The totals of the `empty` fixture: what the std runtime allocates on
/// its own (a 4 B and a 544 B block at start-up).
pub fn baseline() -> Figures {
    static BASE: OnceLock<Figures> = OnceLock::new();
    *BASE.get_or_init(|| profile("empty", &[]).report().totals())
}

/// One set of figures (a line's `self` or `total`, or the totals), as the
/// library has them. The helpers here set the heap figures only: the CPU
/// ones depend on timing and stay 0 (tests that check them read the JSON).
pub use lineprof_cli::analyze::lines::Figures;

/// Figures with no events; build expected values from it or [`allocs`].
pub fn none() -> Figures {
    Figures::default()
}

/// `n` allocations of `bytes` in all.
pub fn allocs(n: u64, bytes: u64) -> Figures {
    Figures {
        allocations: n,
        allocated_bytes: bytes,
        increment_bytes: bytes as i64,
        ..Figures::default()
    }
}

/// Builds expected figures, and reads the heap figures of a report.
pub trait HeapFigures {
    fn frees(self, n: u64, bytes: u64) -> Figures;
    fn peak(self, bytes: u64) -> Figures;
    fn end(self, bytes: u64) -> Figures;
    fn from_json(v: &Value) -> Figures;
}

impl HeapFigures for Figures {
    fn frees(mut self, n: u64, bytes: u64) -> Figures {
        self.frees = n;
        self.freed_bytes = bytes;
        self.increment_bytes = self.allocated_bytes as i64 - bytes as i64;
        self
    }

    fn peak(mut self, bytes: u64) -> Figures {
        self.peak_bytes = bytes;
        self
    }

    fn end(mut self, bytes: u64) -> Figures {
        self.end_bytes = bytes;
        self
    }

    fn from_json(v: &Value) -> Figures {
        let u = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no `{k}` in {v}"));
        let allocated_bytes = u("allocated_bytes");
        let freed_bytes = u("freed_bytes");
        Figures {
            allocations: u("allocations"),
            allocated_bytes,
            frees: u("frees"),
            freed_bytes,
            // `totals` has no increment: it is allocated - freed by definition.
            increment_bytes: v
                .get("increment_bytes")
                .map_or(allocated_bytes as i64 - freed_bytes as i64, |i| {
                    i.as_i64().unwrap()
                }),
            peak_bytes: u("peak_bytes"),
            end_bytes: u("end_bytes"),
            ..Figures::default()
        }
    }
}

/// A parsed JSON report, with look-ups of the fixture's own lines by a
/// snippet of their source text (sturdier than line numbers).
pub struct Report {
    pub json: Value,
    /// The fixture's source file, relative to the workspace root.
    pub file: String,
}

impl Report {
    pub fn totals(&self) -> Figures {
        Figures::from_json(&self.json["totals"])
    }

    /// The `user` lines of the fixture's source file.
    pub fn user_lines(&self) -> Vec<&Value> {
        self.json["lines"]
            .as_array()
            .expect("`lines` array")
            .iter()
            .filter(|l| l["kind"] == "user" && l["file"] == self.file.as_str())
            .collect()
    }

    /// The one line of the fixture whose source contains `snippet`.
    pub fn line(&self, snippet: &str) -> &Value {
        let found: Vec<_> = self
            .user_lines()
            .into_iter()
            .filter(|l| l["source"].as_str().unwrap_or("").contains(snippet))
            .collect();
        match found[..] {
            [l] => l,
            _ => panic!(
                "expected one line of {} containing `{snippet}` in the report, found {}; lines: {:#?}",
                self.file,
                found.len(),
                self.sources()
            ),
        }
    }

    /// Whether the fixture has a line containing `snippet` in the report.
    pub fn has(&self, snippet: &str) -> bool {
        self.user_lines()
            .iter()
            .any(|l| l["source"].as_str().unwrap_or("").contains(snippet))
    }

    pub fn self_at(&self, snippet: &str) -> Figures {
        Figures::from_json(&self.line(snippet)["self"])
    }

    pub fn total_at(&self, snippet: &str) -> Figures {
        Figures::from_json(&self.line(snippet)["total"])
    }

    /// Fails if the fixture has a line with heap figures in the report that
    /// no snippet names: figures attributed to a line they do not belong to.
    /// Lines with only CPU samples are not checked (the default CPU sampling
    /// lands wherever the program spends time, a `waitpid` included).
    pub fn assert_only_lines(&self, snippets: &[&str]) {
        for l in self.user_lines() {
            let s = &l["self"];
            let heap = ["allocations", "frees", "peak_bytes", "end_bytes"]
                .iter()
                .any(|k| s[*k].as_u64().unwrap_or(0) != 0);
            let t = &l["total"];
            let heap = heap
                || ["allocations", "frees"]
                    .iter()
                    .any(|k| t[*k].as_u64().unwrap_or(0) != 0);
            if !heap {
                continue;
            }
            let source = l["source"].as_str().unwrap_or("");
            assert!(
                snippets.iter().any(|s| source.contains(s)),
                "unexpected line in the report: {}:{} `{source}`: {l}",
                self.file,
                l["line"]
            );
        }
    }

    fn sources(&self) -> Vec<String> {
        self.user_lines()
            .iter()
            .map(|l| format!("{}: {}", l["line"], l["source"]))
            .collect()
    }
}

/// Runs fixture `name` with `args` and CPU sampling at `hz` on the
/// default backend (`with_room_above_fd_limit`), `extra` variables set,
/// its profile at `out`, its output dropped; expects it to succeed.
pub fn run_sampling(name: &str, args: &[&str], out: &Path, hz: &str, extra: &[(&str, &str)]) {
    let mut cmd = with_room_above_fd_limit(&fixture(name));
    cmd.args(args)
        .env("LINEPROF_OUT", out)
        .env("LINEPROF_HZ", hz)
        .env_remove("LINEPROF_CPU")
        .env_remove("LINEPROF_SAMPLE")
        .env_remove("LINEPROF_DEPTH")
        .env_remove("LINEPROF_MODE")
        .stdout(std::process::Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "{name} {args:?} failed");
}

/// A command running `program` with the soft descriptor limit lowered to
/// 4096 (when it is higher): lineprof keeps its perf event descriptors
/// above the soft limit, and where the soft limit already equals the hard
/// one (some CI shells) it falls back to timers, which would hide the
/// perf backend's behaviour from the test.
pub fn with_room_above_fd_limit(program: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"[ "$(ulimit -Sn)" = unlimited ] || [ "$(ulimit -Sn)" -gt 4096 ] && ulimit -Sn 4096; exec "$0" "$@""#)
        .arg(program);
    cmd
}
