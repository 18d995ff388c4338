//! `#[lineprof::profile]` end to end: the `timers` fixture writes beside
//! each marked line the hits it must have (`// hits: N`, counted by hand
//! from line_profiler's rules); the report must agree exactly.

mod common;

use std::process::Command;

use common::{fixture, lineprof, profile, repo, stderr, stdout, TempDir};
use serde_json::Value;

fn fixture_source(name: &str) -> String {
    std::fs::read_to_string(repo().join(format!("fixtures/src/bin/{name}.rs"))).unwrap()
}

/// (line number, expected hits) of every line marked `// hits: N`.
fn expected_hits(source: &str) -> Vec<(u64, u64)> {
    source
        .lines()
        .enumerate()
        .filter_map(|(i, text)| {
            let (_, rest) = text.split_once("// hits: ")?;
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some((i as u64 + 1, n.parse().unwrap()))
        })
        .collect()
}

fn timed_line<'a>(report: &'a Value, file: &str, line: u64) -> &'a Value {
    report["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["file"] == file && l["line"] == line && l.get("hits").is_some())
        .unwrap_or_else(|| panic!("no timed line {file}:{line} in the report"))
}

fn function<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == name)
        .unwrap_or_else(|| panic!("no function {name} in the report"))
}

#[test]
fn hits_calls_and_wall_time_of_marked_functions() {
    let p = profile("timers", &[]);
    let report = p.report().json;
    let file = "src/bin/timers.rs";
    // Exact hits: loops (for, nested, while; break and continue), early
    // returns, `?`, a caught panic, recursion, two threads, a method, a
    // generic function, a closure.
    let expected = expected_hits(&fixture_source("timers"));
    assert!(expected.len() > 40, "the fixture lost its hit comments");
    for (line, hits) in expected {
        let l = timed_line(&report, file, line);
        assert_eq!(l["hits"], hits, "hits of {file}:{line} ({})", l["source"]);
    }
    let calls = [
        ("timers::count_loop", 1),
        ("timers::early", 10),
        ("timers::parse_double", 3),
        ("timers::may_panic", 2),
        ("timers::fact", 5),
        ("timers::shared", 100),
        ("timers::Counter::bump", 7),
        ("timers::total", 2),
    ];
    for (name, n) in calls {
        let f = function(&report, name);
        assert_eq!(f["calls"], n, "calls of {name}");
        assert_eq!(f["file"], file);
    }
    assert_eq!(function(&report, "timers::count_loop")["line"], 12);
    // A function's time is its lines' time (outermost calls only, so a
    // recursive function is not counted twice), up to rounding per line.
    for f in report["functions"].as_array().unwrap() {
        let Some(time) = f["time_ns"].as_u64() else {
            continue;
        };
        let lines: Vec<&Value> = report["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["function"] == f["function"] && l.get("time_ns").is_some())
            .collect();
        let sum: u64 = lines.iter().map(|l| l["time_ns"].as_u64().unwrap()).sum();
        assert!(
            sum.abs_diff(time) <= lines.len() as u64 + 1,
            "{}: lines sum to {sum} ns, the function took {time} ns",
            f["function"]
        );
    }
    // Wall time, sleeping included: five sleeps of 20 ms on one line.
    let sleepy = function(&report, "timers::sleepy")["time_ns"]
        .as_u64()
        .unwrap();
    let sleep = timed_line(&report, file, line_of("timers", "thread::sleep"));
    let sleep_ns = sleep["time_ns"].as_u64().unwrap();
    assert!(
        sleep_ns >= 100_000_000,
        "the sleeping line holds {sleep_ns} ns"
    );
    assert!(
        sleep_ns * 10 > sleepy * 9,
        "the sleeping line holds {sleep_ns} of {sleepy} ns"
    );
    // Memory columns beside the timers: the line's five 1000-byte vectors.
    let push = timed_line(&report, file, line_of("timers", "v.push(vec!["));
    assert!(push["total"]["allocated_bytes"].as_u64().unwrap() >= 5000);
}

/// The 1-based line of the fixture's source containing `snippet`.
fn line_of(name: &str, snippet: &str) -> u64 {
    let src = fixture_source(name);
    let found: Vec<usize> = src
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(snippet))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(found.len(), 1, "`{snippet}` in {name}.rs");
    found[0] as u64
}

#[test]
fn text_listing_in_line_profiler_layout() {
    let p = profile("timers", &[]);
    let out = lineprof(&["report", p.profile.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let at = text
        .find("Function: timers::count_loop at line 12\n")
        .unwrap_or_else(|| panic!("no listing of count_loop:\n{text}"));
    let head = &text[..at];
    assert!(head.ends_with("File: src/bin/timers.rs\n"), "{text}");
    assert!(head.contains("Timer unit: 1e-06 s\n"), "{text}");
    let listing: Vec<&str> = text[at..].lines().take(10).collect();
    assert!(
        listing[2].starts_with("Line #  Hits  Time  Per Hit  % Time  Allocated"),
        "{listing:#?}"
    );
    assert!(listing[2].ends_with("Line Contents"), "{listing:#?}");
    // Every line from `fn` to the closing brace, blank where nothing ran.
    let cells = |row: &str| row.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(cells(listing[4]), "12 fn");
    assert_eq!(cells(listing[6]), "14 11");
    assert_eq!(cells(listing[7]), "15 10");
    assert_eq!(cells(listing[8]), "16 }");
    assert_eq!(cells(listing[9]), "17 1");
    // The HTML page has the same listing.
    let out = lineprof(&["report", p.profile.to_str().unwrap(), "--format", "html"]);
    let html = stdout(&out);
    assert!(
        html.contains("Function: timers::count_loop at line 12"),
        "{html}"
    );
    assert!(html.contains("<th>Hits</th><th>Time</th><th>Per Hit</th><th>% Time</th>"));
    assert!(
        html.contains("<td class=\"n\" data-v=\"14\">14</td><td class=\"n\" data-v=\"11\">11</td>")
    );
    // --sort hits: the loop lines of the two threads' function first.
    let out = lineprof(&["report", p.profile.to_str().unwrap(), "--sort", "hits"]);
    let text = stdout(&out);
    let table = text.split("Top ").nth(1).unwrap();
    let first_row = table.lines().nth(2).unwrap();
    assert!(
        first_row.contains("for i in 0..n { // hits: 10100"),
        "{table}"
    );
}

#[test]
fn timers_without_the_tracking_allocator() {
    let p = profile("timers_only", &[]);
    assert_eq!(stdout_of(&p.output), "332833500\n");
    let report = p.report().json;
    let file = "src/bin/timers_only.rs";
    for (line, hits) in expected_hits(&fixture_source("timers_only")) {
        assert_eq!(timed_line(&report, file, line)["hits"], hits, "line {line}");
    }
    assert_eq!(function(&report, "timers_only::squares")["calls"], 1);
}

fn stdout_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn off_means_no_profile_and_the_same_output() {
    let dir = TempDir::new("timers-off");
    let out = dir.path().join("off.lprof");
    let run = Command::new(fixture("timers_only"))
        .env("LINEPROF", "off")
        .env("LINEPROF_OUT", &out)
        .output()
        .unwrap();
    assert!(run.status.success());
    assert_eq!(stdout_of(&run), "332833500\n");
    assert!(!out.exists(), "LINEPROF=off wrote a profile");
}

/// `async fn` is refused at compile time with a message that says so: a
/// crate of one file, built into the fixtures' target directory (whose
/// lineprof and syn builds it reuses).
#[test]
fn async_fn_is_a_compile_error() {
    let dir = TempDir::new("timers-async");
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    let shim = repo().join("alloc-shim");
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!(
            "[package]\nname = \"async-marked\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nlineprof = {{ path = {:?} }}\n\n[workspace]\n",
            shim.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("src/main.rs"),
        "#[lineprof::profile]\nasync fn fetch() -> u32 { 1 }\n\nfn main() { let _ = fetch(); }\n",
    )
    .unwrap();
    // The fixtures' lock file pins the versions they were built with.
    std::fs::copy(
        repo().join("fixtures/Cargo.lock"),
        dir.path().join("Cargo.lock"),
    )
    .ok();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(dir.path().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(repo().join("fixtures/target"))
        .env("RUSTFLAGS", "-C force-frame-pointers=yes")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "an async fn built:\n{err}");
    assert!(
        err.contains("#[lineprof::profile] does not support `async fn` yet"),
        "{err}"
    );
    assert!(err.contains("src/main.rs:2"), "{err}");
}

#[test]
fn function_view_sorted_by_wall_time_with_callers() {
    let p = profile("timers", &[]);
    let path = p.profile.to_str().unwrap();
    let out = lineprof(&[
        "report",
        path,
        "--by",
        "function",
        "--sort",
        "time",
        "--callers",
        "sleepy$",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().collect();
    let head: Vec<&str> = rows[2].split_whitespace().take(5).collect();
    assert_eq!(
        head,
        ["ncalls", "walltime", "percall", "tottime", "cumtime"],
        "{text}"
    );
    assert!(rows[2].ends_with("filename:lineno(function)"), "{text}");
    // The 100 ms function first: one call, its memory beside its time.
    assert_eq!(rows[3].split_whitespace().next(), Some("1"), "{text}");
    assert!(
        rows[3].ends_with("src/bin/timers.rs:140(timers::sleepy)"),
        "{text}"
    );
    let callers = text
        .split("timers::sleepy was called by:\n")
        .nth(1)
        .unwrap();
    let edge = callers.lines().nth(1).unwrap();
    assert!(
        edge.starts_with("<-") && edge.ends_with("timers::main"),
        "{text}"
    );
    // The JSON `functions` array has the memory of the same function.
    let report = p.report().json;
    let sleepy = function(&report, "timers::sleepy");
    assert_eq!(sleepy["calls"], 1);
    assert!(sleepy["self"]["allocated_bytes"].as_u64().unwrap() >= 5000);
    // Files are as short as in the line tables: std's as `std/...`, not
    // `/rustc/<hash>/library/...`.
    let out = lineprof(&[
        "report", path, "--by", "function", "--focus", "all", "--top", "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let all = stdout(&out);
    assert!(!all.contains("/rustc/"), "{all}");
    assert!(all.contains(" std/"), "{all}");
    // --callers belongs to the function view.
    let out = lineprof(&["report", path, "--callers", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("add --by function"),
        "{}",
        stderr(&out)
    );
}
