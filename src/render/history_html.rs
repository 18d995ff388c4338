//! `lineprof history --format html`: one self-contained page (no script,
//! no network) with a chart per figure (peak, allocated bytes,
//! allocations, CPU time) over the commits, one line per run name, and the
//! table of runs. Each point links to its run's row (`#run-<id>`) and
//! carries the run id in its tooltip, for `lineprof report <id>`.

use std::fmt::Write;

use super::{format_bytes, format_time, short_commit};
use crate::analyze::report::{RunInfo, Totals};

/// What the page needs of a run.
pub struct Point<'a> {
    pub run: &'a RunInfo,
    pub totals: &'a Totals,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
];
const W: f64 = 720.0;
const H: f64 = 180.0;
const PAD: f64 = 40.0;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

type Measure = (&'static str, fn(&Totals) -> u64, fn(u64) -> String);

pub fn render(points: &[Point]) -> String {
    let measures: [Measure; 4] = [
        ("Peak", |t| t.peak_bytes, format_bytes),
        ("Allocated bytes", |t| t.allocated_bytes, format_bytes),
        ("Allocations", |t| t.allocations, |n| n.to_string()),
        ("CPU time", |t| t.cpu_time_ns, format_time),
    ];
    // The x axis: commits in the order they were first profiled.
    let mut commits: Vec<String> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for p in points {
        let c = commit_label(p.run);
        if !commits.contains(&c) {
            commits.push(c);
        }
        let n = p.run.name.clone().unwrap_or_else(|| "-".into());
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>lineprof history</title>\n<style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}svg{background:#fafafa;border:1px solid #ddd;margin:0 0 1.5em}table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}td.l,th.l{text-align:left}tr:target{background:#ffd}.legend span{margin-right:1.5em}</style></head><body>\n<h1>lineprof history</h1>\n",
    );
    let _ = write!(out, "<p class=\"legend\">");
    for (i, n) in names.iter().enumerate() {
        let _ = write!(
            out,
            "<span style=\"color:{}\">&#9632; {}</span>",
            COLORS[i % COLORS.len()],
            escape(n)
        );
    }
    out.push_str("</p>\n");
    for (title, get, show) in measures {
        chart(&mut out, title, get, show, points, &commits, &names);
    }
    table(&mut out, points);
    out.push_str("</body></html>\n");
    out
}

fn commit_label(r: &RunInfo) -> String {
    let c = short_commit(r.git.commit.as_deref());
    if r.git.dirty {
        format!("{c}+dirty")
    } else {
        c
    }
}

fn chart(
    out: &mut String,
    title: &str,
    get: fn(&Totals) -> u64,
    show: fn(u64) -> String,
    points: &[Point],
    commits: &[String],
    names: &[String],
) {
    let max = points
        .iter()
        .map(|p| get(p.totals))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let step = if commits.len() > 1 {
        (W - 2.0 * PAD) / (commits.len() - 1) as f64
    } else {
        0.0
    };
    let x = |c: &str| PAD + step * commits.iter().position(|k| k == c).unwrap_or(0) as f64;
    let y = |v: u64| H - PAD / 2.0 - (H - PAD) * v as f64 / max;
    let _ = writeln!(
        out,
        "<h2>{}</h2>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{} per commit\">",
        escape(title),
        escape(title)
    );
    let _ = writeln!(
        out,
        "<text x=\"4\" y=\"14\" font-size=\"11\">{}</text><line x1=\"{PAD}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#bbb\"/>",
        escape(&show(max as u64)),
        H - PAD / 2.0,
        W - PAD,
        H - PAD / 2.0
    );
    for c in commits {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            x(c),
            H - 4.0,
            escape(c)
        );
    }
    for (i, name) in names.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mine: Vec<&Point> = points
            .iter()
            .filter(|p| p.run.name.as_deref().unwrap_or("-") == name)
            .collect();
        let path: Vec<String> = mine
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(&commit_label(p.run)), y(get(p.totals))))
            .collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
            path.join(" ")
        );
        for p in mine {
            let v = get(p.totals);
            let _ = writeln!(
                out,
                "<a href=\"#run-{id}\"><circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"><title>{} at {}: {} (run {id})</title></circle></a>",
                x(&commit_label(p.run)),
                y(v),
                escape(name),
                escape(&commit_label(p.run)),
                escape(&show(v)),
                id = escape(&p.run.id)
            );
        }
    }
    out.push_str("</svg>\n");
}

fn table(out: &mut String, points: &[Point]) {
    out.push_str("<h2>Runs</h2>\n<table><tr><th class=\"l\">Run</th><th class=\"l\">Name</th><th class=\"l\">Commit</th><th class=\"l\">Date (UTC)</th><th>Peak</th><th>Allocated</th><th>Allocations</th><th>CPU</th></tr>\n");
    for p in points {
        let t = p.totals;
        let _ = writeln!(
            out,
            "<tr id=\"run-{id}\"><td class=\"l\"><code>{id}</code></td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(p.run.name.as_deref().unwrap_or("-")),
            escape(&commit_label(p.run)),
            escape(&p.run.started_at),
            format_bytes(t.peak_bytes),
            format_bytes(t.allocated_bytes),
            t.allocations,
            format_time(t.cpu_time_ns),
            id = escape(&p.run.id)
        );
    }
    out.push_str("</table>\n");
}
