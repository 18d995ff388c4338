//! Profiling as a workflow, end to end: a git repository with a program,
//! four commits (a base, one that doubles an allocation on a line, one that
//! adds lines above that line so it moves, one that reverts the growth),
//! each built and profiled with `lineprof run`; then `history`, `diff`,
//! `check` and `report` on the stored runs, also after the binary is gone.
//!
//! The figures are exact: `build_index(4000)` allocates 4000 bytes on the
//! `index` line at v1, 8000 at v2 and v3, 4000 again at v4.

mod projects;

use projects::{line, stderr, stdout, Project};
use serde_json::Value;

const V1: &str = r#"use std::hint::black_box;

#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

#[inline(never)]
fn build_index(n: usize) -> Vec<u8> {
    let index = black_box(vec![1u8; n]); // 1 alloc of n bytes: the line that grows
    index
}

fn main() {
    let index = build_index(4000);
    let table = black_box(vec![0u64; 100]); // 1 alloc of 800 bytes, never changes
    println!("{} {}", index.len(), table.len());
}
"#;

/// The grown line and the three lines v3 adds above it.
const LINE_V1: &str = "let index = black_box(vec![1u8; n]);";
const LINE_V2: &str = "let index = black_box(vec![1u8; 2 * n]);";
const ADDED_ABOVE: &str = "    // Sizes are checked before any memory is taken.
    let n = black_box(n);
    assert!(n > 0, \"empty index\");
";

fn version(v: u32) -> String {
    let grown = V1.replace(LINE_V1, LINE_V2);
    let moved = grown.replace(
        "    let index = black_box",
        &format!("{ADDED_ABOVE}    let index = black_box"),
    );
    match v {
        1 => V1.to_string(),
        2 => grown,
        3 => moved,
        _ => moved.replace(LINE_V2, LINE_V1),
    }
}

/// Commits version `v`, builds it and profiles it with `lineprof run`.
fn commit_and_profile(p: &Project, v: u32) -> String {
    p.write("src/main.rs", &version(v));
    let commit = p.commit(&format!("version {v}"), &format!("v{v}"));
    let exe = p.build_release("app");
    let out = p.lineprof(&["run", "--", exe.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "lineprof run: {}", stderr(&out));
    assert!(stderr(&out).contains("Stored run"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("index"),
        "top lines: {}",
        stderr(&out)
    );
    // stdout is the program's alone: the report goes to stderr.
    let n = if v == 1 || v == 4 { 4000 } else { 8000 };
    assert_eq!(stdout(&out), format!("{n} 100\n"));
    commit
}

fn changes_with<'a>(diff: &'a Value, status: &str) -> Vec<&'a Value> {
    let lines = diff["lines"].as_array().unwrap();
    lines.iter().filter(|l| l["status"] == status).collect()
}

/// The diff line whose new (or old) source contains `snippet`.
fn change<'a>(diff: &'a Value, snippet: &str) -> &'a Value {
    let lines = diff["lines"].as_array().unwrap();
    let has = |l: &&Value, side: &str| l[side].as_str().is_some_and(|s| s.contains(snippet));
    let found: Vec<&Value> = lines
        .iter()
        .filter(|l| has(l, "new_source") || has(l, "old_source"))
        .collect();
    assert_eq!(found.len(), 1, "changes with `{snippet}`: {found:#?}");
    found[0]
}

#[test]
fn history_diff_check_across_commits() {
    let p = Project::new("workflow", "app");
    p.git(&["init", "-q"]);
    let commits: Vec<String> = (1..=4).map(|v| commit_and_profile(&p, v)).collect();

    // history: one row per run, oldest first, with its commit, clean.
    let history = p.json(&["history"]);
    let runs = history["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "{history:#}");
    for (run, commit) in runs.iter().zip(&commits) {
        assert_eq!(run["git"]["commit"], commit.as_str());
        assert_eq!(run["git"]["dirty"], false);
        assert_eq!(run["git"]["branch"], "main");
        assert_eq!(run["name"], "app");
    }
    let alloc = |i: usize| runs[i]["totals"]["allocated_bytes"].as_u64().unwrap();
    assert_eq!(alloc(1) - alloc(0), 4000, "v2 allocates 4000 bytes more");
    assert_eq!(alloc(2), alloc(1), "moving lines changes nothing");
    assert_eq!(alloc(3), alloc(0), "v4 reverts the growth");
    let text = stdout(&p.lineprof(&["history"]));
    for c in &commits {
        assert!(text.contains(&c[..7]), "history shows {}: {text}", &c[..7]);
    }

    // diff v1 v2: the grown line, by its text, +4000 bytes exactly; its old
    // text shown; nothing else changed.
    let d = p.json(&["diff", "v1", "v2"]);
    let grown = change(&d, "2 * n");
    assert_eq!(grown["status"], "changed");
    assert_eq!(grown["matched_by"], "line");
    assert_eq!(grown["delta"]["allocated_bytes"], 4000);
    assert_eq!(grown["delta"]["allocations"], 0);
    assert!(grown["old_source"].as_str().unwrap().contains(LINE_V1));
    // Other lines may change what they free (the closing brace of `main`
    // drops the bigger index), none what they allocate.
    let allocating: Vec<&Value> = changes_with(&d, "changed")
        .into_iter()
        .filter(|c| c["delta"]["allocated_bytes"] != 0)
        .collect();
    assert_eq!(allocating.len(), 1, "{d:#}");
    assert!(changes_with(&d, "added").is_empty() && changes_with(&d, "removed").is_empty());
    let text = stdout(&p.lineprof(&["diff", "v1", "v2"]));
    assert!(text.contains("+4000 B"), "{text}");
    assert!(text.contains(LINE_V2) && text.contains(LINE_V1), "{text}");

    // diff v2 v3: the line moved 3 lines down and is matched to its old
    // self by text: no spurious add/remove, nothing changed.
    let d = p.json(&["diff", "v2", "v3"]);
    let moved = change(&d, "2 * n");
    assert_eq!(moved["status"], "unchanged");
    assert_eq!(moved["matched_by"], "text");
    let (old, new) = (
        moved["old_line"].as_u64().unwrap(),
        moved["new_line"].as_u64().unwrap(),
    );
    assert_eq!(new, old + 3);
    assert!(changes_with(&d, "added").is_empty(), "{d:#}");
    assert!(changes_with(&d, "removed").is_empty(), "{d:#}");
    assert!(changes_with(&d, "changed").is_empty(), "{d:#}");
    // The default diff compares the two newest runs of the same name (v3, v4).
    let d = p.json(&["diff"]);
    assert_eq!(d["old"]["git"]["commit"], commits[2].as_str());
    assert_eq!(d["new"]["git"]["commit"], commits[3].as_str());
    assert_eq!(change(&d, "vec![1u8;")["delta"]["allocated_bytes"], -4000);

    // check: the regression fails against v1, the revert passes.
    let out = p.lineprof(&["check", "v2", "--baseline", "v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("FAIL  allocated_bytes"), "{text}");
    assert!(text.contains("+4000 B") && text.contains(LINE_V2), "{text}");
    let out = p.lineprof(&["check", "v3", "--baseline", "v1", "--tolerance", "50"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "totals grew by 4000 of ~6400 bytes, over 50%: {}",
        stdout(&out)
    );
    let out = p.lineprof(&["check", "--baseline", "v1"]);
    assert_eq!(out.status.code(), Some(0), "v4 passes: {}", stdout(&out));
    let out = p.lineprof(&["check", "--baseline", "v2", "--max-allocated", "1MiB"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = p.lineprof(&["check", "--max-peak", "100B"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));

    still_renders_without_binary_or_source(&p);
    bad_refs(&p);
}

/// Stored runs keep their lines and source text.
fn still_renders_without_binary_or_source(p: &Project) {
    let exe = projects::shared_target().join("lineprof/release/app");
    std::fs::remove_file(&exe).unwrap();
    p.write("src/main.rs", "fn main() {}\n");
    let out = p.lineprof(&["report", "v2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(LINE_V2), "{}", stdout(&out));
    let report = p.json(&["report", "v2"]);
    assert_eq!(line(&report, "2 * n")["self"]["allocated_bytes"], 8000);
    assert_eq!(
        line(&report, "vec![0u64; 100]")["self"]["allocated_bytes"],
        800
    );
    assert_eq!(report["run"]["git"]["dirty"], false);
    let d = p.json(&["diff", "v1", "v4"]);
    assert!(changes_with(&d, "changed").is_empty(), "{d:#}");
    assert!(changes_with(&d, "added").is_empty() && changes_with(&d, "removed").is_empty());
    p.git(&["checkout", "-q", "src/main.rs"]);
}

/// A git ref with no run, an unknown run: exit 2 and a message, no panic.
fn bad_refs(p: &Project) {
    p.write("README.md", "no run at this commit\n");
    p.commit("docs", "v5");
    for args in [
        vec!["check", "v4", "--baseline", "v5"],
        vec!["diff", "v5", "v4"],
        vec!["report", "v5"],
    ] {
        let out = p.lineprof(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("no stored run at commit"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = p.lineprof(&["report", "no-such-run"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("`no-such-run` is not a stored run id, run name or git ref"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
