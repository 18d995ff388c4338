//! The CI recipe end to end, on a generated git project set up the
//! test-only way (lineprof a dev-dependency, `#[cfg(test)]
//! #[global_allocator]` in src/lib.rs, the two lines in a tests/*.rs) with
//! a parallel unit-test suite: the recipe passes on an unchanged commit,
//! every time; a regression in one test fails naming the test and its
//! line; a new test binary is new, never compared with another program; a
//! missing baseline is exit 2; `diff NAME` compares two runs; the
//! markdown summary is a valid table with the line's source; std's panic
//! machinery (RUST_BACKTRACE) changes no verdict, and runs measured under
//! settings that change the figures are not compared.

mod projects;

use projects::{stderr, stdout, Project};
use serde_json::Value;

const MANIFEST: &str = r#"[package]
name = "calc"
version = "0.1.0"
edition = "2021"

[dev-dependencies]
lineprof = { path = "SHIM" }
"#;

/// Ten tests run on parallel threads; each test's own figures are exact.
const LIB: &str = r#"#[cfg(test)]
#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

use std::sync::OnceLock;

static TABLE: OnceLock<Vec<u64>> = OnceLock::new();

/// Shared between tests: 1 alloc of 4096 bytes, on whichever test is first.
pub fn table() -> &'static [u64] {
    TABLE.get_or_init(|| vec![3u64; 512])
}

pub fn buffer(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n); // the line that grows
    v.resize(n, 0u8);
    std::hint::black_box(v)
}

/// Scratch buffers kept for reuse, like a regex's cache pool: which tests
/// allocate them depends on scheduling; they stay live to exit, so they
/// count as shared state, never in a test.
static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

pub fn churn(rounds: usize) -> usize {
    let taken = POOL.lock().unwrap().pop();
    let mut scratch = taken.unwrap_or_else(|| Vec::with_capacity(256));
    scratch.push(1);
    let mut kept = 0;
    for i in 0..rounds {
        let v = std::hint::black_box(vec![1u8; 64 * (i % 7 + 1)]);
        kept += v.len();
        std::thread::yield_now(); // let the other tests interleave
    }
    scratch.clear();
    POOL.lock().unwrap().push(scratch);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_once() {
        assert_eq!(buffer(1000).len(), 1000); // 1 alloc of 1000 bytes
    }

    #[test]
    fn table_a() {
        assert_eq!(format!("{}", table()[0]), "3"); // 1 alloc of 8 bytes: a String's smallest capacity
    }

    #[test]
    fn table_b() {
        assert_eq!(format!("{}", table()[1]), "3"); // 1 alloc of 8 bytes: a String's smallest capacity
    }

    macro_rules! churners {
        ($($name:ident),*) => {$(
            #[test]
            fn $name() {
                assert!(churn(200) > 0);
            }
        )*};
    }
    churners!(churn_1, churn_2, churn_3, churn_4, churn_5, churn_6, churn_7);
}
"#;

const API_TEST: &str = r#"#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

#[test]
fn api_buffer() {
    assert_eq!(calc::buffer(10).len(), 10);
}
"#;

/// A test binary without the tracker: skipped with a note.
const UNTRACKED_TEST: &str = r#"#[test]
fn plain() {
    assert_eq!(calc::buffer(3).len(), 3);
}
"#;

const EXTRA_TEST: &str = r#"#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

#[test]
fn extra() {
    assert_eq!(calc::churn(3), 64 + 128 + 192);
}
"#;

fn setup() -> Project {
    setup_as("calc")
}

/// The project as package `name`: tests running at once build into one
/// target directory, so each needs a package of its own.
fn setup_as(name: &str) -> Project {
    let p = Project::new("ci", name);
    let shim = projects::repo().join("alloc-shim");
    let named = |text: &str| text.replace("calc", name);
    p.write(
        "Cargo.toml",
        &named(MANIFEST).replace("SHIM", shim.to_str().unwrap()),
    );
    p.write("src/lib.rs", LIB);
    p.write("tests/api.rs", &named(API_TEST));
    p.write("tests/untracked.rs", &named(UNTRACKED_TEST));
    p.git(&["init", "-q"]);
    p
}

/// `cargo lineprof test ARGS`, which must pass and skip the untracked binary.
fn profile_tests(p: &Project, args: &[&str]) {
    let out = p.cargo_lineprof(&[&["test"], args].concat());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("note: skipped") && err.contains("untracked"),
        "{err}"
    );
    assert!(err.contains("skipped 1 without a tracker"), "{err}");
}

fn check(p: &Project, args: &[&str]) -> (Option<i32>, String) {
    eprintln!("CHECK {args:?}");
    let out = p.lineprof(&[&["check"], args].concat());
    let r = (out.status.code(), stdout(&out) + &stderr(&out));
    eprintln!("{}", r.1);
    r
}

fn test_of<'a>(report: &'a Value, name: &str) -> &'a Value {
    let tests = report["tests"].as_array().expect("a tests array");
    tests
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no test {name}: {tests:#?}"))
}

#[test]
fn ci_recipe_gates_per_test() {
    let p = setup();
    p.commit("base", "v1");
    profile_tests(&p, &[]);

    // Per-test figures, exact while the tests ran on parallel threads.
    let report = p.json(&["report", "calc-lib-test"]);
    let buffer = test_of(&report, "tests::buffer_once");
    assert_eq!(buffer["function"], "calc::tests::buffer_once");
    assert_eq!(buffer["total"]["allocations"], 1);
    assert_eq!(buffer["total"]["allocated_bytes"], 1000);
    assert_eq!(buffer["total"]["peak_bytes"], 1000);
    // 200 rounds of 64..448 bytes, one block live at a time.
    let churn = test_of(&report, "tests::churn_3");
    assert_eq!(churn["total"]["allocations"], 200);
    let per_round: u64 = (0..200).map(|i| 64 * (i % 7 + 1)).sum();
    assert_eq!(churn["total"]["allocated_bytes"], per_round);
    assert_eq!(churn["total"]["peak_bytes"], 448);
    // The OnceLock's 4096 bytes are shared initialisation, in neither test,
    // and so are the pooled scratch buffers (256 bytes each, 1 to 7 of
    // them, as the threads met) and the pool's own vector.
    let shared = report["shared_init"]["allocated_bytes"].as_u64().unwrap();
    assert!(
        (4096 + 256..=4096 + 7 * 256 + 1024).contains(&shared),
        "{shared}"
    );
    for t in ["tests::table_a", "tests::table_b"] {
        assert_eq!(test_of(&report, t)["total"]["allocated_bytes"], 8, "{t}");
    }
    assert_eq!(report["tests"].as_array().unwrap().len(), 10);
    // libtest's harness `main` (line 1 of lib.rs) is nobody's top line.
    for l in report["lines"].as_array().unwrap() {
        if l["function"] == "calc::main" {
            assert_eq!(l["self"]["allocated_bytes"], 0, "{l:#}");
        }
    }
    let text = stdout(&p.lineprof(&["report", "calc-lib-test"]));
    assert!(!text.contains("#[cfg(test)]"), "{text}");
    let by_test = stdout(&p.lineprof(&["report", "calc-lib-test", "--by", "test"]));
    assert!(by_test.contains("tests::buffer_once"), "{by_test}");
    assert!(by_test.contains("(shared initialisation"), "{by_test}");
    let bmf: Value = serde_json::from_str(&stdout(&p.lineprof(&[
        "report",
        "calc-lib-test",
        "--format",
        "bmf",
    ])))
    .unwrap();
    assert_eq!(
        bmf["calc-lib-test::tests::buffer_once"]["allocated-bytes"]["value"],
        1000
    );
    assert_eq!(bmf.as_object().unwrap().len(), 10);

    // The recipe on the unchanged commit passes, every time.
    // Twice, the second time on more threads than cores, with the summary
    // going where GitHub Actions says.
    profile_tests(&p, &[]);
    let (code, text) = check(&p, &["--baseline", "v1"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("process totals not gated"), "{text}");
    profile_tests(&p, &["--", "--test-threads=8"]);
    let job_summary = p.path().join("job-summary.md");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lineprof"))
        .args(["check", "--baseline", "v1"])
        .current_dir(p.path())
        .env("GITHUB_STEP_SUMMARY", &job_summary)
        .env_remove("LINEPROF_STORE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let md = std::fs::read_to_string(&job_summary).unwrap();
    assert!(md.starts_with("### lineprof check: passed"), "{md}");
    assert!(md.contains("33 figures checked, none regressed"), "{md}");

    // One test regresses, a new test binary appears.
    p.write(
        "src/lib.rs",
        &LIB.replace("Vec::with_capacity(n)", "Vec::with_capacity(2 * n)"),
    );
    p.write("tests/extra.rs", EXTRA_TEST);
    p.commit("grow the buffer", "v2");
    profile_tests(&p, &[]);
    let summary = p.path().join("summary.md");
    let out = p.lineprof(&[
        "check",
        "--baseline",
        "v1",
        "--summary",
        summary.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    // calc-lib-test: buffer_once fails, with its line; the others pass.
    let section = text
        .split("lineprof check:")
        .find(|s| s.contains("(calc-lib-test,"))
        .unwrap();
    let failing: Vec<&str> = section.lines().filter(|l| l.contains("FAIL")).collect();
    assert_eq!(
        failing.len(),
        2,
        "allocated_bytes and peak_bytes: {section}"
    );
    let test_block = section
        .split("  test ")
        .find(|b| b.starts_with("tests::buffer_once"))
        .unwrap();
    assert!(
        test_block.contains("FAIL  allocated_bytes 1000 B -> 2000 B"),
        "{test_block}"
    );
    assert!(
        test_block.contains("+1000 B") && test_block.contains("Vec::with_capacity(2 * n)"),
        "{test_block}"
    );
    assert!(test_block.contains("src/lib.rs:15"), "{test_block}");
    // api-test calls buffer(10): 10 -> 20 bytes, its own failure.
    assert!(text.contains("(api-test,"), "{text}");
    // The new binary is new, not compared with another program.
    let extra = text
        .split("lineprof check:")
        .find(|s| s.contains("(extra-test,"))
        .unwrap();
    assert!(
        extra.contains("new since the baseline, not gated"),
        "{extra}"
    );
    assert!(!extra.contains("baseline 2"), "{extra}");

    // The summary: a GFM table with the grown line's source.
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.contains("### lineprof check: 4 figure(s) regressed"),
        "{md}"
    );
    assert!(
        md.contains("`let mut v = Vec::with_capacity(2 * n); // the line that grows`"),
        "{md}"
    );
    assert!(
        md.contains("| calc-lib-test | tests::buffer\\_once | allocated\\_bytes |"),
        "{md}"
    );
    assert!(md.contains("| extra-test |"), "{md}");
    assert_tables_are_well_formed(&md);

    // The other way round (v1's run against v2), buffer_once shrank: it
    // passes on one line saying what moved; the others are one count.
    let v1 = p.git(&["rev-parse", "v1"]);
    let history = p.json(&["history"]);
    let v1_run = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r["name"] == "calc-lib-test" && r["git"]["commit"] == v1.as_str())
        .unwrap_or_else(|| panic!("{history:#}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, text) = check(&p, &[&v1_run, "--baseline", "v2"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("  ok    test tests::buffer_once: peak_bytes 2000 B (2.0 KiB) -> 1000 B (-1000 B, -50.0%), allocated_bytes 2000 B (2.0 KiB) -> 1000 B (-1000 B, -50.0%)\n"),
        "{text}"
    );
    assert!(text.contains("  ok    9 tests unchanged"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains("ok  ")).count(),
        2,
        "{text}"
    );

    // Named on the command line, a run without a baseline is exit 2.
    let (code, text) = check(&p, &["extra-test", "--baseline", "v1"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no baseline run of `extra-test`"), "{text}");
    assert!(text.contains("cargo lineprof"), "how to make it: {text}");

    // diff NAME: its two newest runs, which differ.
    let d = p.json(&["diff", "calc-lib-test"]);
    assert_ne!(d["old"]["id"], d["new"]["id"]);
    assert_eq!(
        d["new"]["git"]["commit"],
        p.git(&["rev-parse", "v2"]).as_str()
    );
    let grown: Vec<&Value> = d["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["delta"]["allocated_bytes"] == 1000)
        .collect();
    assert_eq!(grown.len(), 1, "{d:#}");
    let md = stdout(&p.lineprof(&["diff", "calc-lib-test", "--format", "markdown"]));
    assert!(md.contains("| +1000 B |"), "{md}");
    assert!(md.contains("`let mut v = Vec::with_capacity(2 * n); // the line that grows` (was `let mut v = Vec::with_capacity(n); // the line that grows`)"), "{md}");
    assert_tables_are_well_formed(&md);

    // The history page: a chart per figure, every run's point linked to
    // its row, nothing fetched from the network.
    let page = p.path().join("history.html");
    let out = p.lineprof(&["history", "--format", "html", "-o", page.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "peak, allocated, allocations, CPU"
    );
    for t in ["Peak", "Allocated bytes", "Allocations", "CPU time"] {
        assert!(html.contains(&format!("<h2>{t}</h2>")), "{t}");
    }
    let history = p.json(&["history"]);
    for run in history["runs"].as_array().unwrap() {
        let id = run["id"].as_str().unwrap();
        assert_eq!(
            html.matches(&format!("href=\"#run-{id}\"")).count(),
            4,
            "{id}"
        );
        assert!(html.contains(&format!("<tr id=\"run-{id}\">")), "{id}");
    }
    assert!(
        !html.contains("<script") && !html.contains(" src="),
        "self-contained"
    );
    assert_eq!(
        html.matches("http").count(),
        html.matches("http://www.w3.org/2000/svg").count()
    );

    // A ref with no stored run at all.
    p.write("NOTES.md", "nothing profiled here\n");
    p.commit("notes", "v3");
    let (code, text) = check(&p, &["calc-lib-test", "--baseline", "v3"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no stored run at commit"), "{text}");
    // Nor at HEAD (v3): nothing to check, rather than v2's runs again.
    let (code, text) = check(&p, &["--baseline", "v1"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no stored run at HEAD"), "{text}");
}

/// Every table row has as many cells as its header: `|` inside cells is
/// escaped, so splitting on unescaped pipes counts the cells.
fn assert_tables_are_well_formed(md: &str) {
    let cells = |line: &str| {
        let mut n = 0;
        let mut escaped = false;
        for c in line.chars() {
            match c {
                '\\' if !escaped => escaped = true,
                '|' if !escaped => n += 1,
                _ => escaped = false,
            }
            if c != '\\' {
                escaped = false;
            }
        }
        n
    };
    let mut expected = None;
    for line in md.lines() {
        if !line.starts_with('|') {
            expected = None;
            continue;
        }
        let n = cells(line);
        match expected {
            None => expected = Some(n),
            Some(e) => assert_eq!(n, e, "row with {n} pipes, header {e}: {line}\n{md}"),
        }
    }
}

/// A test that allocates nothing, one that allocates, an ignored one.
const QUIET_LIB: &str = r#"#[cfg(test)]
#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

pub fn buffer(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n); // allocates nothing for 0
    v.resize(n, 0u8);
    std::hint::black_box(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_once() {
        assert_eq!(buffer(1000).len(), 1000);
    }

    #[test]
    fn dedup() {
        let n = 0; // SIZE
        assert_eq!(buffer(n).len(), n);
    }

    #[test]
    #[ignore]
    fn slow() {
        assert_eq!(buffer(77).len(), 77);
    }
}
"#;

/// The run knows which tests libtest ran, not only which allocated: a test
/// that allocated nothing at the baseline has zero figures there, so when
/// it starts allocating, `check` fails naming it instead of calling it new.
#[test]
fn tests_without_allocations_are_gated() {
    let p = setup_as("quiet");
    p.write("src/lib.rs", QUIET_LIB);
    p.commit("base", "q1");
    profile_tests(&p, &[]);
    let report = p.json(&["report", "quiet-lib-test"]);
    assert_eq!(
        report["test_list"],
        serde_json::json!(["tests::buffer_once", "tests::dedup"]),
        "the ignored test did not run: {report:#}"
    );
    let dedup = test_of(&report, "tests::dedup");
    assert_eq!(dedup["function"], "quiet::tests::dedup");
    for figure in ["allocations", "allocated_bytes", "peak_bytes"] {
        assert_eq!(dedup["total"][figure], 0, "{figure}");
    }
    assert_eq!(
        test_of(&report, "tests::buffer_once")["total"]["allocated_bytes"],
        1000
    );
    assert_eq!(report["tests"].as_array().unwrap().len(), 2, "{report:#}");
    let by_test = stdout(&p.lineprof(&["report", "quiet-lib-test", "--by", "test"]));
    assert!(by_test.contains("  2 tests;"), "{by_test}");
    assert!(by_test.contains("tests::dedup"), "{by_test}");

    // An unchanged commit passes, the quiet test gated like the others.
    p.write("NOTES.md", "no code change\n");
    p.commit("notes", "q2");
    profile_tests(&p, &[]);
    let q2_run = p.json(&["report", "quiet-lib-test"])["run"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, text) = check(&p, &["--baseline", "HEAD~1"]);
    assert_eq!(code, Some(0), "{text}");
    // Both tests passed unchanged, the quiet one among them: one line.
    assert!(
        text.contains("  ok    2 tests unchanged (allocations, allocated bytes and peak each)\n"),
        "{text}"
    );
    assert!(!text.contains("new   test"), "{text}");

    // It starts allocating: a regression against zero, naming the test.
    p.write(
        "src/lib.rs",
        &QUIET_LIB.replace("let n = 0;", "let n = 4096;"),
    );
    p.commit("dedup allocates", "q3");
    profile_tests(&p, &[]);
    let (code, text) = check(&p, &["--baseline", "HEAD~1"]);
    assert_eq!(code, Some(1), "{text}");
    let section = text
        .split("lineprof check:")
        .find(|s| s.contains("(quiet-lib-test,"))
        .unwrap();
    let block = section
        .split("  test ")
        .find(|b| b.starts_with("tests::dedup"))
        .unwrap_or_else(|| panic!("{section}"));
    assert!(
        block.contains("FAIL  allocated_bytes 0 B -> 4096 B"),
        "{block}"
    );
    assert!(block.contains("FAIL  allocations 0 -> 1"), "{block}");
    assert!(
        block.contains("+4096 B") && block.contains("src/lib.rs:6"),
        "{block}"
    );
    let failing = section
        .lines()
        .filter(|l| l.trim_start().starts_with("FAIL "));
    assert_eq!(failing.count(), 3, "only dedup: {section}");
    assert!(text.contains("FAILED: 3 figure(s) regressed"), "{text}");

    // A baseline stored before runs kept their test list (no `test_list`,
    // no entry for the quiet test): the test is new there, as it was.
    let stored = p.path().join(format!(".lineprof/runs/{q2_run}.json"));
    let mut old: Value = serde_json::from_str(&std::fs::read_to_string(&stored).unwrap()).unwrap();
    let doc = old.as_object_mut().unwrap();
    assert!(doc.remove("test_list").is_some());
    doc["tests"]
        .as_array_mut()
        .unwrap()
        .retain(|t| t["name"] != "tests::dedup");
    std::fs::write(&stored, serde_json::to_string(&old).unwrap()).unwrap();
    let (code, text) = check(&p, &["quiet-lib-test", "--baseline", &q2_run]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("  new   test tests::dedup: no baseline (the baseline run lists only the tests that allocated"),
        "{text}"
    );

    // `--ignored` runs only the ignored test, and lists only it.
    profile_tests(&p, &["--", "--ignored"]);
    let report = p.json(&["report", "quiet-lib-test"]);
    assert_eq!(report["test_list"], serde_json::json!(["tests::slow"]));
    assert_eq!(
        test_of(&report, "tests::slow")["total"]["allocated_bytes"],
        77
    );
    assert_eq!(report["tests"].as_array().unwrap().len(), 1, "{report:#}");
}

/// A `#[should_panic]` test beside a plain one.
const PANICKY_LIB: &str = r#"#[cfg(test)]
#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

pub fn take(v: &[u8], i: usize) -> u8 {
    *v.get(i).expect("index in range") // panics for i >= len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_range() {
        let v = vec![1u8; 100]; // 1 alloc of 100 bytes
        assert_eq!(take(&v, 3), 1);
    }

    #[test]
    #[should_panic(expected = "index in range")]
    fn out_of_range() {
        let v = vec![1u8; 100]; // 1 alloc of 100 bytes, freed while unwinding
        take(&v, 300);
    }
}
"#;

/// `cargo lineprof test` with RUST_BACKTRACE set (`Some`) or not.
fn profile_with(p: &Project, env: &[(&str, Option<&str>)]) {
    let out = p.cargo_lineprof_env(&["test"], env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// RUST_BACKTRACE=1 makes std capture and symbolize a backtrace at every
/// panic (tens of MiB, cached to exit): that is std's panic machinery, on
/// no line and in no test, so the verdict does not depend on the variable.
/// The run records the settings; `check` notes a harmless difference and
/// refuses one that changes the figures (LINEPROF_SAMPLE). A passing check
/// is one line per program's tests; a HEAD without runs is exit 2.
#[test]
fn panics_and_settings_do_not_change_the_verdict() {
    let p = setup_as("panicky");
    p.write("src/lib.rs", PANICKY_LIB);
    for other in ["tests/api.rs", "tests/untracked.rs"] {
        std::fs::remove_file(p.path().join(other)).unwrap();
    }
    p.commit("base", "p1");
    let backtrace = [("RUST_BACKTRACE", Some("1"))];
    let no_backtrace = [("RUST_BACKTRACE", None)];
    profile_with(&p, &backtrace);

    let report = p.json(&["report", "panicky-lib-test"]);
    assert_eq!(report["run"]["environment"]["RUST_BACKTRACE"], "1");
    let panicking = projects::line(&report, "expect(\"index in range\")");
    for figure in ["allocated_bytes", "end_bytes", "peak_bytes"] {
        assert_eq!(panicking["self"][figure], 0, "{figure}: {panicking:#}");
    }
    let machinery = &report["panic_machinery"];
    assert!(
        machinery["allocated_bytes"].as_u64().unwrap() > 1 << 20,
        "the backtrace's symbolizer: {machinery:#}"
    );
    let out_of_range = test_of(&report, "tests::out_of_range");
    assert_eq!(out_of_range["total"]["allocations"], 1, "{out_of_range:#}");
    assert_eq!(out_of_range["total"]["allocated_bytes"], 100);
    assert_eq!(out_of_range["total"]["peak_bytes"], 100);
    let text = stdout(&p.lineprof(&["report", "panicky-lib-test"]));
    assert!(text.contains("note: std's panic machinery"), "{text}");
    let by_test = stdout(&p.lineprof(&["report", "panicky-lib-test", "--by", "test"]));
    assert!(by_test.contains("(std's panic machinery"), "{by_test}");
    // The stored run keeps the report's header notes: the HTML shows them.
    let html = stdout(&p.lineprof(&["report", "panicky-lib-test", "--format", "html"]));
    for note in report["notes"].as_array().into_iter().flatten() {
        let note = note.as_str().unwrap().replace('\'', "&#39;");
        assert!(html.contains(&format!("note: {note}</p>")), "{note}");
    }
    assert!(html.contains("note: std&#39;s panic machinery"));

    // Without the variable, then with it again: the same verdict, a note.
    profile_with(&p, &no_backtrace);
    let report = p.json(&["report", "panicky-lib-test"]);
    assert_eq!(report["run"]["environment"], serde_json::json!({}));
    assert_eq!(
        test_of(&report, "tests::out_of_range")["total"]["allocated_bytes"],
        100
    );
    let (code, text) = check(&p, &["--baseline", "HEAD"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("note  RUST_BACKTRACE was `1` at the baseline, unset now"),
        "{text}"
    );
    // Proportionate: one line for the passing tests, none per figure.
    assert!(
        text.contains("  ok    2 tests unchanged (allocations, allocated bytes and peak each)"),
        "{text}"
    );
    assert!(!text.contains("ok    peak_bytes"), "{text}");
    assert!(!text.contains("  test tests::"), "{text}");

    // diff: the backtrace's std frames are gone, and no row says 0 B.
    let text = stdout(&p.lineprof(&["diff", "panicky-lib-test"]));
    let allocated = text
        .lines()
        .find(|l| l.trim_start().starts_with("allocated "))
        .unwrap();
    let change: Vec<&str> = allocated.split_whitespace().rev().take(2).collect();
    assert!(
        change[0] == "MiB" && change[1].starts_with('-'),
        "the totals' Change in the units of Old and New: {text}"
    );
    let rows = text
        .lines()
        .skip_while(|l| !l.starts_with("Δ Allocated"))
        .skip(1)
        .take_while(|l| !l.is_empty());
    for row in rows {
        let figures: Vec<&str> = row.split_whitespace().take(7).collect();
        assert_ne!(
            figures,
            ["0", "B", "0", "B", "0", "B", "0"],
            "a row without a change: {text}"
        );
        assert!(!row.contains(" :0 "), "{text}");
    }
    let out = p.lineprof(&["diff", "panicky-lib-test"]);
    assert!(
        stderr(&out).contains(
            "warning: the runs were recorded under different settings: RUST_BACKTRACE was `1` at the baseline, unset now"
        ),
        "{}",
        stderr(&out)
    );
    let d = p.json(&["diff", "panicky-lib-test"]);
    for l in d["lines"].as_array().unwrap() {
        if l["status"] != "unchanged" {
            let delta = &l["delta"];
            let moved = [
                "allocated_bytes",
                "freed_bytes",
                "peak_bytes",
                "allocations",
            ]
            .iter()
            .any(|f| delta[f] != 0);
            assert!(moved, "{l:#}");
        }
    }

    profile_with(&p, &backtrace);
    let (code, text) = check(&p, &["--baseline", "HEAD"]);
    assert_eq!(code, Some(0), "{text}");

    // A new commit nobody profiled: no stale verdict from the old runs.
    p.write("NOTES.md", "not profiled\n");
    let head = p.commit("notes", "p2");
    let (code, text) = check(&p, &["--baseline", "p1"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&format!("no stored run at HEAD (commit {})", &head[..7])),
        "{text}"
    );
    assert!(text.contains("cargo lineprof test"), "{text}");
    profile_with(&p, &no_backtrace);
    let (code, text) = check(&p, &["--baseline", "p1"]);
    assert_eq!(code, Some(0), "{text}");

    // Sampled allocations against exact ones: refused, naming the variable.
    let out = p.cargo_lineprof_env(&["test"], &[("LINEPROF_SAMPLE", Some("4096"))]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (code, text) = check(&p, &["--baseline", "p1"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("recorded under different settings: LINEPROF_SAMPLE"),
        "{text}"
    );
    assert!(text.contains("`4096` now"), "{text}");
    assert!(
        text.contains("profile both with the same LINEPROF_SAMPLE"),
        "{text}"
    );

    // An aggregate profile has no per-test figures: none (not zeros), a
    // note, and no gate across modes.
    let out = p.cargo_lineprof_env(&["test"], &[("LINEPROF_MODE", Some("aggregate"))]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (code, text) = check(&p, &["--baseline", "p1"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(
            "LINEPROF_MODE: the baseline was recorded in stream mode, this run in aggregate mode"
        ),
        "{text}"
    );
    assert!(
        text.contains("tests are gated in stream mode only: leave LINEPROF_MODE unset (or `stream`) on both sides")
            && text.contains("run `cargo lineprof test` again"),
        "{text}"
    );
    let report = p.json(&["report", "panicky-lib-test"]);
    assert_eq!(report["run"]["mode"], "aggregate");
    assert!(report["tests"].is_null(), "{:#}", report["tests"]);
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("no per-test figures: LINEPROF_MODE=aggregate"),
        "{notes}"
    );
    let by_test = stdout(&p.lineprof(&["report", "panicky-lib-test", "--by", "test"]));
    assert!(
        by_test.contains("  no per-test figures: LINEPROF_MODE=aggregate"),
        "{by_test}"
    );
    assert!(!text.contains("-100.0%"), "{text}");
}

/// A program (gated on its process totals) that catches a panic.
const CATCHING_MAIN: &str = r#"#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

fn main() {
    let v = vec![7u8; 64]; // 1 alloc of 64 bytes
    let caught = std::panic::catch_unwind(|| v[100]);
    assert!(caught.is_err());
}
"#;

/// The totals of a program that panicked include std's backtrace under
/// RUST_BACKTRACE=1: `check` refuses to compare runs that differ in it.
#[test]
fn totals_of_a_panicking_program_need_the_same_backtrace_setting() {
    let p = Project::new("ci", "catcher");
    p.write("src/main.rs", CATCHING_MAIN);
    p.git(&["init", "-q"]);
    p.commit("base", "c1");
    for env in [[("RUST_BACKTRACE", None)], [("RUST_BACKTRACE", Some("1"))]] {
        let out = p.cargo_lineprof_env(&["run", "--release"], &env);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let report = p.json(&["report", "catcher"]);
    assert!(
        report["panic_machinery"]["allocated_bytes"]
            .as_u64()
            .unwrap()
            > 1 << 20
    );
    let (code, text) = check(&p, &["--baseline", "HEAD"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("RUST_BACKTRACE was unset at the baseline, `1` now: the program panicked"),
        "{text}"
    );
    assert!(
        text.contains("profile both with the same RUST_BACKTRACE"),
        "{text}"
    );
    // The same setting again: compared, and passing.
    let out = p.cargo_lineprof_env(&["run", "--release"], &[("RUST_BACKTRACE", Some("1"))]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (code, text) = check(&p, &["--baseline", "HEAD"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("  ok    unchanged: peak_bytes"), "{text}");
}

/// A program that captures a backtrace itself and catches a panic.
const CAPTURING_MAIN: &str = r#"#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

fn main() {
    let bt = std::backtrace::Backtrace::force_capture(); // the program's own backtrace
    assert_eq!(bt.status(), std::backtrace::BacktraceStatus::Captured);
    let v = vec![7u8; 64]; // 1 alloc of 64 bytes
    let caught = std::panic::catch_unwind(|| v[100]);
    assert!(caught.is_err());
    drop(bt);
}
"#;

/// Settings are compared by what they do: the default depth spelled out
/// and `RUST_BACKTRACE=0` are the defaults. A backtrace the program
/// captures is on its line, apart from std's panic machinery. A refusal
/// says how this run was made (`lineprof run`); an older baseline run
/// with the same settings is preferred to a newer one without.
#[test]
fn settings_are_compared_by_what_they_do() {
    let p = Project::new("ci", "capturer");
    p.write("src/main.rs", CAPTURING_MAIN);
    p.git(&["init", "-q"]);
    p.commit("base", "c1");
    // Every variable unset but those named (the suite may run under
    // RUST_BACKTRACE).
    let run = |env: &[(&str, Option<&str>)]| {
        let mut all: Vec<(&str, Option<&str>)> = lineprof_cli::analyze::report::RECORDED_ENV
            .iter()
            .map(|&k| (k, None))
            .collect();
        all.extend_from_slice(env);
        let out = p.cargo_lineprof_env(&["run", "--release"], &all);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        p.json(&["report", "capturer"])
    };
    let own = |report: &Value| projects::line(report, "force_capture()")["self"].clone();
    let first = run(&[("RUST_BACKTRACE", None)]);
    let captured = own(&first);
    assert!(
        captured["allocated_bytes"].as_u64().unwrap() > 0,
        "the program's own backtrace is on its line: {first:#}"
    );

    // The defaults spelled out: the same settings.
    run(&[("LINEPROF_DEPTH", Some("256"))]);
    let (code, text) = check(&p, &["--baseline", "HEAD"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("note  "), "{text}");
    // std's panic hook reads RUST_BACKTRACE's value (1 byte for `0`):
    // the same setting, and process totals 1 byte apart.
    let zero = run(&[("RUST_BACKTRACE", Some("0"))]);
    let (code, text) = check(&p, &["--baseline", "HEAD", "--tolerance", "12"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("note  "), "{text}");
    let machinery = |r: &Value, f: &str| r["panic_machinery"][f].as_u64().unwrap();
    assert_eq!(
        machinery(&zero, "allocated_bytes"),
        machinery(&first, "allocated_bytes") + 1
    );
    let allocations = |r: &Value| r["totals"]["allocations"].as_u64().unwrap();
    assert_eq!(allocations(&zero), allocations(&first) + 1);
    assert_eq!(first["run"]["max_depth"], 256);
    assert_eq!(first["run"]["mode"], "stream");

    // A panic under RUST_BACKTRACE=1: std's backtrace is panic machinery,
    // the program's own stays on its line, unchanged.
    let with = run(&[("RUST_BACKTRACE", Some("1"))]);
    assert!(with["panic_machinery"]["allocated_bytes"].as_u64().unwrap() > 1 << 20);
    assert_eq!(own(&with), captured);
    let (code, text) = check(&p, &["--baseline", "HEAD"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("RUST_BACKTRACE was `0` at the baseline, `1` now: the program panicked"),
        "{text}"
    );
    assert!(
        text.contains("and run `lineprof run -- ") && !text.contains("cargo lineprof test"),
        "the fix for a program run with `lineprof run`: {text}"
    );

    // Without it again: the newest baseline run differs, an older one does
    // not; that one is the baseline, and the output says so.
    let again = run(&[("RUST_BACKTRACE", Some("full"))]);
    assert_eq!(own(&again), captured);
    run(&[]);
    let (code, text) = check(&p, &["--baseline", "HEAD"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "the newest baseline run, {}, was recorded with a different RUST_BACKTRACE: compared with",
            again["run"]["id"].as_str().unwrap()
        )),
        "{text}"
    );

    // Aggregate mode against stream, for a program gated on its totals:
    // compared (its totals are exact), with a note.
    let agg = run(&[("LINEPROF_MODE", Some("aggregate"))]);
    assert_eq!(agg["run"]["mode"], "aggregate");
    let (code, text) = check(&p, &["--baseline", "HEAD"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("note  LINEPROF_MODE was unset at the baseline, `aggregate` now: allocations, allocated bytes and the peak total are exact in both modes"),
        "{text}"
    );
}
