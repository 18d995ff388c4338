//! The HTML report in headless Chromium (tests/browser/check.js, driven
//! by puppeteer-core): no console errors, every sortable column of every
//! table sorts, the flame graph and the timeline carry the JSON report's
//! figures, search finds a line, and `<script>` in source text stays text;
//! for a profile file and for a stored run.
//!
//! Needs `chromium` and `node` with tests/browser/node_modules (.ci/run
//! installs them). Without them the test fails, unless
//! LINEPROF_SKIP_BROWSER=1 is set, when it says why and passes.

mod common;
mod projects;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, profile, report_to_file, stderr, stdout, TempDir};
use serde_json::Value;

/// `html_page::table` allocates 8000 B and then 512 KiB.
const TABLE_BYTES: u64 = 8000 + (512 << 10);

/// Chromium, node and puppeteer-core, or why not.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "no Chromium at {} (apt-get install chromium, or set CHROMIUM)",
            chromium.display()
        ));
    }
    let dir = common::repo().join("tests/browser");
    if !dir.join("node_modules/puppeteer-core").exists() {
        return Err(format!(
            "no puppeteer-core in {}/node_modules (run `npm ci` there)",
            dir.display()
        ));
    }
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => Ok((chromium, dir)),
        _ => Err("no `node` on PATH".into()),
    }
}

/// Runs check.js on `html` against `json`; panics with its output on failure.
fn check_page(html: &Path, json: &Path) {
    let (chromium, dir) = match browser() {
        Ok(b) => b,
        Err(why) if std::env::var("LINEPROF_SKIP_BROWSER").as_deref() == Ok("1") => {
            eprintln!("browser test skipped (LINEPROF_SKIP_BROWSER=1): {why}");
            return;
        }
        Err(why) => {
            panic!("{why}; .ci/run installs these (set LINEPROF_SKIP_BROWSER=1 to skip locally)")
        }
    };
    let out = Command::new("node")
        .current_dir(&dir)
        .arg("check.js")
        .arg(html)
        .arg(json)
        .arg("html_page::table")
        .arg(TABLE_BYTES.to_string())
        .env("CHROMIUM", chromium)
        .output()
        .expect("run node");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{}:\n{text}", html.display());
    // Every check ran: a check.js that stopped early would print fewer.
    assert!(
        text.lines().filter(|l| l.starts_with("ok ")).count() >= 13,
        "{text}"
    );
}

fn totals(json: &Path) -> Value {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    v["totals"].clone()
}

#[test]
fn report_of_a_profile_in_chromium() {
    let p = profile("html_page", &[]);
    let html = report_to_file(&p, "html", "report.html");
    let json = report_to_file(&p, "json", "report.json");
    // The figures the page is checked against: 44 + 8000 + 524288 B
    // of the fixture's own, the peak its 512 KiB block.
    let t = totals(&json);
    assert!(
        t["allocated_bytes"].as_u64().unwrap() >= 44 + TABLE_BYTES,
        "{t}"
    );
    assert!(t["peak_bytes"].as_u64().unwrap() >= 512 << 10, "{t}");
    check_page(&html, &json);
}

#[test]
fn report_of_a_stored_run_in_chromium() {
    let dir = TempDir::new("browser-store");
    let exe = fixture("html_page");
    let out = projects::lineprof_in(dir.path(), &["run", "--", exe.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", projects::stderr(&out));
    let html = dir.path().join("stored.html");
    let json = dir.path().join("stored.json");
    for (format, path) in [("html", &html), ("json", &json)] {
        let args = ["report", "--format", format, "-o", path.to_str().unwrap()];
        let out = projects::lineprof_in(dir.path(), &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            projects::stderr(&out)
        );
    }
    let page = std::fs::read_to_string(&html).unwrap();
    // The header's warnings and notes that `lineprof run` printed with
    // its report: the stored run's HTML and text reports show them too.
    let printed = projects::stderr(&out);
    let remarks: Vec<&str> = printed
        .lines()
        .skip_while(|l| !l.starts_with("lineprof report:"))
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("note: ") || l.starts_with("warning: "))
        .collect();
    // Not vacuous: the run printed remarks to look for.
    assert!(!remarks.is_empty(), "no note or warning printed: {printed}");
    let text = projects::stdout(&projects::lineprof_in(dir.path(), &["report"]));
    for remark in &remarks {
        assert!(text.contains(remark), "{remark}\n{text}");
        let escaped = remark.replace('&', "&amp;").replace('\'', "&#39;");
        assert!(page.contains(&escaped), "{remark}");
    }
    assert!(
        page.contains("id=\"timeline\""),
        "the stored run kept its timeline"
    );
    assert!(
        page.contains("id=\"flame\""),
        "the stored run kept its stacks"
    );
    check_page(&html, &json);
}
