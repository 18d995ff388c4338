//! `lineprof report --format collapsed|pprof|dhat|html` of the `peak`
//! fixture: each format carries the exact figures of the JSON report.
//! `peak` allocates 1 MiB on line 12 (`f`, live at the heap peak, freed at
//! once) and then 300 KiB on line 18 (`g`, after the peak, freed in main);
//! the std runtime adds its own 4 B and 544 B blocks (the latter live at exit).

mod common;

use std::io::Read;

use common::{lineprof, profile, report_to_file, stderr, stdout, Profiled, TempDir};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const KIB_300: u64 = 300 << 10;

fn report(p: &Profiled, format: &str, extra: &[&str]) -> String {
    let mut args = vec!["report", p.profile.to_str().unwrap(), "--format", format];
    args.extend(extra);
    let out = lineprof(&args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// `(stack, count)` of every folded line.
fn folded(text: &str) -> Vec<(&str, u64)> {
    text.lines()
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').expect("`STACK COUNT`");
            (stack, n.parse().expect("count"))
        })
        .collect()
}

#[test]
fn collapsed_stacks_carry_exact_figures() {
    let p = profile("peak", &[]);
    let totals = p.report().json["totals"].clone();
    let by_bytes = report(&p, "collapsed", &[]);
    let lines = folded(&by_bytes);
    let f = lines
        .iter()
        .find(|(s, _)| s.contains(";peak::f (src/bin/peak.rs:12)"))
        .unwrap_or_else(|| panic!("no stack through peak.rs:12:\n{by_bytes}"));
    assert_eq!(f.1, MIB, "{by_bytes}");
    // Outermost first: main's call of f comes before f's line.
    assert!(
        f.0.contains("peak::main (src/bin/peak.rs:22);peak::f"),
        "{by_bytes}"
    );
    let g = lines
        .iter()
        .find(|(s, _)| s.contains(";peak::g (src/bin/peak.rs:18)"))
        .unwrap();
    assert_eq!(g.1, KIB_300);
    let sum = |text: &str| folded(text).iter().map(|(_, n)| n).sum::<u64>();
    assert_eq!(Some(sum(&by_bytes)), totals["allocated_bytes"].as_u64());
    // --sort picks the count; zero counts are left out (g held nothing at the peak).
    let by_peak = report(&p, "collapsed", &["--sort", "peak"]);
    assert_eq!(Some(sum(&by_peak)), totals["peak_bytes"].as_u64());
    assert!(!by_peak.contains("peak::g"), "{by_peak}");
    let by_count = report(&p, "collapsed", &["--sort", "allocations"]);
    assert_eq!(Some(sum(&by_count)), totals["allocations"].as_u64());
}

/// The library's protobuf reader reads pprof's output back.
use lineprof_cli::render::pprof::decode as pb;

#[test]
fn pprof_decodes_with_exact_sums() {
    let p = profile("peak", &[]);
    let totals = p.report().json["totals"].clone();
    let file = report_to_file(&p, "pprof", "peak.pb.gz");
    let gz = std::fs::read(&file).unwrap();
    assert_eq!(gz[..2], [0x1f, 0x8b], "gzip magic");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    let prof = pb::fields(&raw);
    let strings = pb::strings(&prof, 6);
    assert_eq!(strings[0], "");
    let s = |i: u64| strings[i as usize].as_str();
    let types: Vec<(&str, &str)> = pb::messages(&prof, 1)
        .iter()
        .map(|vt| (s(pb::int(vt, 1)), s(pb::int(vt, 2))))
        .collect();
    assert_eq!(
        types,
        [
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_space", "bytes"),
            ("peak_space", "bytes"),
            ("cpu", "nanoseconds")
        ]
    );
    let samples = pb::messages(&prof, 2);
    let sum = |i: usize| -> u64 { samples.iter().map(|m| pb::ints(m, 2)[i]).sum() };
    assert_eq!(Some(sum(0)), totals["allocations"].as_u64());
    assert_eq!(Some(sum(1)), totals["allocated_bytes"].as_u64());
    assert_eq!(Some(sum(2)), totals["end_bytes"].as_u64());
    assert_eq!(Some(sum(3)), totals["peak_bytes"].as_u64());
    // The sample whose innermost user frame is peak.rs:12 allocated 1 MiB.
    let functions = pb::messages(&prof, 5);
    let locations = pb::messages(&prof, 4);
    let describe = |loc_id: u64| {
        let (f, line) = function_at(&functions, &locations, loc_id);
        format!("{} {}:{line}", s(pb::int(f, 2)), s(pb::int(f, 4)))
    };
    let f_sample = samples
        .iter()
        .find(|m| {
            pb::ints(m, 1)
                .iter()
                .any(|&l| describe(l) == "peak::f src/bin/peak.rs:12")
        })
        .expect("a sample through peak.rs:12");
    assert_eq!(pb::ints(f_sample, 2)[..4], [1, MIB, 0, MIB]);
    // Innermost first: the last location is the outermost frame.
    let ids = pb::ints(f_sample, 1);
    let main_at = ids
        .iter()
        .position(|&l| describe(l) == "peak::main src/bin/peak.rs:22");
    let f_at = ids
        .iter()
        .position(|&l| describe(l) == "peak::f src/bin/peak.rs:12");
    assert!(f_at < main_at, "{f_at:?} {main_at:?}");
}

/// The function (its message) and line of pprof location `loc_id`'s first
/// line entry.
fn function_at<'a>(
    functions: &'a [Vec<(u32, pb::Value)>],
    locations: &[Vec<(u32, pb::Value)>],
    loc_id: u64,
) -> (&'a [(u32, pb::Value)], u64) {
    let loc = locations.iter().find(|l| pb::int(l, 1) == loc_id).unwrap();
    let line = &pb::messages(loc, 4)[0];
    let f = functions
        .iter()
        .find(|f| pb::int(f, 1) == pb::int(line, 1))
        .unwrap();
    (f, pb::int(line, 2))
}

/// `go tool pprof -top`'s flat column: bytes by the innermost frame's
/// function, largest first, with the functions' file names.
fn pprof_top(p: &Profiled) -> Vec<(String, String, u64)> {
    let file = report_to_file(p, "pprof", "top.pb.gz");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&std::fs::read(&file).unwrap()[..])
        .read_to_end(&mut raw)
        .unwrap();
    let prof = pb::fields(&raw);
    let strings = pb::strings(&prof, 6);
    let functions = pb::messages(&prof, 5);
    let locations = pb::messages(&prof, 4);
    let mut flat: std::collections::HashMap<(String, String), u64> = Default::default();
    for sample in pb::messages(&prof, 2) {
        let (f, _) = function_at(&functions, &locations, pb::ints(&sample, 1)[0]);
        let key = (
            strings[pb::int(f, 2) as usize].clone(),
            strings[pb::int(f, 4) as usize].clone(),
        );
        *flat.entry(key).or_default() += pb::ints(&sample, 2)[1];
    }
    let mut top: Vec<(String, String, u64)> = flat
        .into_iter()
        .map(|((f, file), v)| (f, file, v))
        .collect();
    top.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    top
}

#[test]
fn pprof_top_starts_at_user_code() {
    // vec_growth's bytes come through Vec::push and RawVec's growth;
    // peak's through vec! (alloc::alloc): both are trimmed, as Go's
    // heap profiles trim the runtime's malloc.
    for (name, user) in [("vec_growth", "vec_growth::grow"), ("peak", "peak::f")] {
        let p = profile(name, &[]);
        let top = pprof_top(&p);
        let top5 = &top[..top.len().min(5)];
        assert_eq!(top5[0].0, user, "{top5:?}");
        assert!(top5[0].1.starts_with("src/bin/"), "short path: {top5:?}");
        for (function, file, _) in top5 {
            for machinery in [
                "alloc::alloc",
                "RawVec",
                "raw_vec",
                "__rust_alloc",
                "lineprof::",
                "Vec<T",
            ] {
                assert!(!function.contains(machinery), "{function} in {top5:?}");
            }
            assert!(!file.starts_with("/rustc/"), "long std path in {top5:?}");
        }
    }
}

#[test]
fn dhat_program_points_sum_to_the_totals() {
    let p = profile("peak", &[]);
    let totals = p.report().json["totals"].clone();
    let v: Value = serde_json::from_str(&report(&p, "dhat", &[])).unwrap();
    assert_eq!(v["dhatFileVersion"], 2);
    assert_eq!(v["mode"], "rust-heap");
    assert_eq!(v["ftbl"][0], "[root]");
    let pps = v["pps"].as_array().unwrap();
    // What dh_view.html checks before it draws: the fields it requires
    // with block lifetimes (`bklt`), and no frame list twice.
    for k in [
        "dhatFileVersion",
        "mode",
        "verb",
        "bklt",
        "bkacc",
        "tu",
        "Mtu",
        "cmd",
        "pid",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
    assert!(v["tg"].is_u64() && v["te"].is_u64() && v["tuth"].is_u64());
    for pp in pps {
        for k in ["tb", "tbk", "tl", "mb", "mbk", "gb", "gbk", "eb", "ebk"] {
            assert!(pp[k].is_u64(), "{k} in {pp}");
        }
    }
    let mut frame_lists: Vec<String> = pps.iter().map(|pp| pp["fs"].to_string()).collect();
    frame_lists.sort();
    frame_lists.dedup();
    assert_eq!(frame_lists.len(), pps.len());
    let sum = |k: &str| pps.iter().map(|pp| pp[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(Some(sum("tb")), totals["allocated_bytes"].as_u64());
    assert_eq!(Some(sum("tbk")), totals["allocations"].as_u64());
    assert_eq!(Some(sum("gb")), totals["peak_bytes"].as_u64());
    assert_eq!(Some(sum("eb")), totals["end_bytes"].as_u64());
    let through = |line: &str| {
        let found: Vec<&Value> = pps
            .iter()
            .filter(|pp| {
                pp["fs"].as_array().unwrap().iter().any(|i| {
                    v["ftbl"][i.as_u64().unwrap() as usize]
                        .as_str()
                        .unwrap()
                        .contains(line)
                })
            })
            .collect();
        assert_eq!(found.len(), 1, "{line}: {found:?}");
        found[0].clone()
    };
    let f = through("peak::f (src/bin/peak.rs:12:");
    let fig = |pp: &Value, k: &str| pp[k].as_u64().unwrap();
    // Allocated, live at the peak, freed right away.
    let keys = ["tb", "tbk", "gb", "gbk", "eb", "ebk", "mb", "mbk"];
    let got: Vec<u64> = keys.iter().map(|k| fig(&f, k)).collect();
    assert_eq!(got, [MIB, 1, MIB, 1, 0, 0, MIB, 1]);
    // Allocated after the peak: nothing at t-gmax, but its own maximum.
    let g = through("peak::g (src/bin/peak.rs:18:");
    let got: Vec<u64> = keys.iter().map(|k| fig(&g, k)).collect();
    assert_eq!(got, [KIB_300, 1, 0, 0, 0, 0, KIB_300, 1]);
    // The peak comes after the allocation of f's block, before the end.
    let (tg, te) = (v["tg"].as_u64().unwrap(), v["te"].as_u64().unwrap());
    assert!(0 < tg && tg < te, "{tg} {te}");
}

#[test]
fn html_is_one_escaped_page_with_the_figures() {
    let p = profile("peak", &[]);
    let file = report_to_file(&p, "html", "report.html");
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    // Linked to its row in f's listing.
    assert!(
        html.contains(">src/bin/peak.rs:12</a></td>")
            && html.contains("-L12\"><td class=\"n\" data-v=\"12\">12</td>"),
        "{html}"
    );
    assert!(html.contains("id=\"timeline\"") && html.contains("id=\"flame\""));
    // The source line, escaped; its exact figure for sorting, scaled for reading.
    assert!(
        html.contains("let big = black_box(vec![0u8; 1 &lt;&lt; 20]);"),
        "{html}"
    );
    assert!(
        html.contains(&format!("data-v=\"{MIB}\">1.0 MiB</td>")),
        "{html}"
    );
    // The listing of f shows the line after the allocation too.
    assert!(html.contains("drop(big);"), "{html}");
    for external in ["src=\"http", "href=\"http", "<link", "@import"] {
        assert!(!html.contains(external), "{external}");
    }
}

/// The stack formats of a stored run: kept in the store; a run stored
/// without stacks (by an older lineprof) gets a clear error.
#[test]
fn stored_runs_keep_their_stacks() {
    let store = TempDir::new("formats-store");
    let store_arg = store.path().to_str().unwrap();
    let peak = common::fixture("peak");
    let out = lineprof(&["run", "--store", store_arg, "--", peak.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let collapsed = lineprof(&["report", "--store", store_arg, "--format", "collapsed"]);
    assert!(collapsed.status.success(), "{}", stderr(&collapsed));
    let text = stdout(&collapsed);
    // Paths are relative to the workspace `lineprof run` ran in.
    let f = folded(&text)
        .into_iter()
        .find(|(s, _)| s.ends_with("src/bin/peak.rs:12)"))
        .unwrap_or_else(|| panic!("no stack through peak.rs:12:\n{text}"));
    assert_eq!(f.1, MIB);
    // Drop the stacks, as a run stored before they were kept.
    let runs = store.path().join("runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&run).unwrap()).unwrap();
    assert!(doc["stacks"]["stacks"].is_array());
    doc.as_object_mut().unwrap().remove("stacks");
    std::fs::write(&run, serde_json::to_string(&doc).unwrap()).unwrap();
    let old = lineprof(&["report", "--store", store_arg, "--format", "dhat"]);
    assert_eq!(old.status.code(), Some(2));
    assert!(
        stderr(&old).contains("this stored run keeps per-line figures only"),
        "{}",
        stderr(&old)
    );
    // Its per-line formats still work.
    let html = lineprof(&["report", "--store", store_arg, "--format", "html"]);
    assert!(html.status.success(), "{}", stderr(&html));
}
