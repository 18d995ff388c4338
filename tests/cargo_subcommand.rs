//! `cargo lineprof run|test` on fresh cargo projects that configure nothing
//! (no debug info, no frame pointers, no git): the subcommand supplies both
//! through the environment, leaves the user's files alone, and stores exact
//! per-line figures; `test` stores one run per test binary.

mod projects;

use std::collections::BTreeSet;

use projects::{line, stderr, stdout, Project};

const MAIN: &str = r#"use std::hint::black_box;

#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

fn main() {
    let buffer = black_box(vec![0u8; 5000]); // 1 alloc of 5000 bytes
    let small = black_box(Box::new([0u64; 16])); // 1 alloc of 128 bytes
    println!("{} {}", buffer.len(), small.len());
}
"#;

#[test]
fn run_on_a_fresh_project_gives_exact_lines() {
    let p = Project::new("fresh", "fresh");
    p.write("src/main.rs", MAIN);
    let manifest = p.read("Cargo.toml");
    let out = p.cargo_lineprof(&["run", "--", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("Stored run"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not in a git repository"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        p.read("Cargo.toml"),
        manifest,
        "the user's files are not edited"
    );
    assert!(!p.path().join(".cargo").exists());

    let report = p.json(&["report"]);
    let buffer = line(&report, "vec![0u8; 5000]");
    assert_eq!(buffer["kind"], "user");
    assert_eq!(buffer["file"], "src/main.rs");
    assert_eq!(buffer["line"], 7);
    assert_eq!(buffer["self"]["allocations"], 1);
    assert_eq!(buffer["self"]["allocated_bytes"], 5000);
    assert_eq!(
        line(&report, "Box::new([0u64; 16])")["self"]["allocated_bytes"],
        128
    );
    assert_eq!(report["run"]["name"], "fresh");
    assert_eq!(report["run"]["git"]["commit"], serde_json::Value::Null);
    assert_eq!(report["run"]["command"][1], "hello");
    let exe = report["run"]["executable"]["path"].as_str().unwrap();
    assert!(
        exe.ends_with("e2e-projects/lineprof/debug/fresh"),
        "own target dir: {exe}"
    );

    // An unchanged tree is not rebuilt, and the second run is stored too.
    let out = p.cargo_lineprof(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("Compiling"),
        "rebuilt: {}",
        stderr(&out)
    );
    let history = p.json(&["history"]);
    assert_eq!(history["runs"].as_array().unwrap().len(), 2);
}

const LIB: &str = r#"#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

pub fn squares(n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| i * i).collect() // 1 alloc of 8 * n bytes
}

#[cfg(test)]
mod tests {
    #[test]
    fn small() {
        assert_eq!(super::squares(3), vec![0, 1, 4]);
    }
}
"#;

const INTEGRATION: &str = r#"#[test]
fn squares_allocate_once() {
    let (v, usage) = lineprof::measure(|| calc::squares(1000));
    assert_eq!(usage.allocations, 1);
    assert_eq!(usage.allocated_bytes, 8000);
    assert_eq!(v.len(), 1000);
}
"#;

#[test]
fn test_stores_one_run_per_test_binary() {
    let p = Project::new("tests", "calc");
    p.write("src/lib.rs", LIB);
    p.write("tests/grow.rs", INTEGRATION);
    let out = p.cargo_lineprof(&["test"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("profiled 2 binaries"),
        "{}",
        stderr(&out)
    );

    let history = p.json(&["history"]);
    let runs = history["runs"].as_array().unwrap();
    let names: BTreeSet<&str> = runs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["calc-lib-test", "grow-test"]));
    let exes: BTreeSet<&str> = runs
        .iter()
        .map(|r| r["command"][0].as_str().unwrap())
        .collect();
    assert_eq!(exes.len(), 2, "one executable each: {exes:?}");

    // The integration test's run has the exact figures of the line it calls.
    let grow = p.json(&["report", "grow-test"]);
    let collect = line(&grow, ".collect()");
    assert_eq!(collect["self"]["allocated_bytes"], 8000);
    assert_eq!(collect["self"]["allocations"], 1);

    // Without a RUN, check looks at every binary of the newest batch.
    let out = p.lineprof(&["check", "--max-allocated", "1GiB"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("(grow-test,") && text.contains("(calc-lib-test,"),
        "{text}"
    );
}

/// A build script without `rerun-if-changed` makes cargo fingerprint every
/// file of the package that git does not ignore: the store must not be one
/// of them, or every `cargo lineprof run` rebuilds the project.
#[test]
fn build_script_without_rerun_if_changed_does_not_rebuild() {
    let p = Project::new("buildrs", "buildrs");
    p.write(".gitignore", "/target\n"); // nothing says to ignore .lineprof
    p.write(
        "build.rs",
        "fn main() {\n    println!(\"cargo:rustc-env=BUILT=yes\");\n}\n",
    );
    p.write("src/main.rs", MAIN);
    p.git(&["init", "-q"]);
    p.commit("base", "v1");
    let out = p.cargo_lineprof(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Compiling buildrs"),
        "{}",
        stderr(&out)
    );
    assert!(
        p.path().join(".lineprof/.gitignore").is_file(),
        "the store ignores itself"
    );
    let status = p.git(&["status", "--porcelain", "--untracked-files=all"]);
    assert!(
        !status.contains(".lineprof"),
        "git sees the store: {status}"
    );
    let out = p.cargo_lineprof(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("Compiling"),
        "rebuilt after a run was stored: {}",
        stderr(&out)
    );

    // --quiet: cargo's and lineprof's output are gone, the program's stays.
    let out = p.cargo_lineprof(&["run", "--quiet", "--", "arg"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "5000 16\n");
    assert_eq!(stderr(&out), "", "nothing but the program's output");
    let history = p.json(&["history"]);
    assert_eq!(history["runs"].as_array().unwrap().len(), 3);
}
