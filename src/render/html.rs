//! A self-contained HTML report (no external resources): the summary, the
//! top-lines tables and per-function source listings of the text report,
//! with columns that sort on click (a few lines of inline script).
//!
//! Every string from the profile (paths, function names, source text,
//! the command line) is escaped; sorting reads each cell's `data-v`, the
//! exact figure, not the unit-scaled text.

use std::fmt::Write;
use std::path::Path;

use super::text::{figure_cells, figure_headers, sort_title};
use super::{format_time, View};
use crate::analyze::lines::{Figures, LineFigures, LineKind, SortKey, SourceFiles};
use crate::analyze::report::Report;

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.5em 0}\
th,td{padding:2px 8px;border-bottom:1px solid #ddd;white-space:nowrap}\
th{background:#f3f3f3;position:sticky;top:0}\
table.sortable th{cursor:pointer}td.n{text-align:right;font-variant-numeric:tabular-nums}\
td.src,code{font-family:ui-monospace,monospace;white-space:pre}\
.warn{color:#a40}.dim{color:#888}";

/// Sorts a table's rows by the clicked column: numbers by `data-v`,
/// descending first; text ascending first.
const SCRIPT: &str = "document.querySelectorAll('table.sortable th').forEach((th,i)=>{\
th.addEventListener('click',()=>{const tb=th.closest('table').tBodies[0];\
const num=tb.rows.length&&tb.rows[0].cells[i].dataset.v!==undefined;\
const dir=th.dataset.dir=th.dataset.dir==='1'?'-1':'1';const s=num?-dir:dir;\
const key=r=>num?parseFloat(r.cells[i].dataset.v):r.cells[i].textContent;\
[...tb.rows].sort((a,b)=>{const x=key(a),y=key(b);return (x<y?-1:x>y?1:0)*s})\
.forEach(r=>tb.appendChild(r));});});";

/// `&`, `<`, `>`, `"` and `'` as entities: safe in text and in quoted
/// attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page. `sources` fills the listings' lines without figures.
pub fn render(report: &Report, view: &View, sources: &mut SourceFiles) -> String {
    let command = if report.run.command.is_empty() {
        report.run.executable.path.clone()
    } else {
        report.run.command.join(" ")
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>lineprof: {}</title><style>{STYLE}</style></head><body>\n",
        escape(&command)
    );
    summary(&mut out, report, &command);
    let plan = super::plan(report, view);
    for (key, ranked) in &plan.tables {
        top_lines(&mut out, report, ranked, *key, view.filter.user_only);
    }
    for t in super::timed_listings(report, view, sources) {
        timed_listing(&mut out, report, &t);
    }
    for own in &plan.listings {
        let own: Vec<&LineFigures> = own.iter().collect();
        listing(&mut out, report, &own, sources);
    }
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body></html>\n");
    out
}

fn summary(out: &mut String, r: &Report, command: &str) {
    let _ = writeln!(
        out,
        "<h1>lineprof report: <code>{}</code></h1>",
        escape(command)
    );
    let mut run = format!(
        "run {}, started {}, ran {}",
        r.run.id,
        r.run.started_at,
        format_time(r.run.duration_ns)
    );
    if let Some(commit) = &r.run.git.commit {
        let dirty = if r.run.git.dirty { " (dirty)" } else { "" };
        let _ = write!(run, ", commit {}{dirty}", super::short_commit(Some(commit)));
    }
    let _ = writeln!(out, "<p class=\"dim\">{}</p>", escape(&run));
    for w in &r.warnings {
        let _ = writeln!(out, "<p class=\"warn\">warning: {}</p>", escape(w));
    }
    if r.run.sampling.estimated {
        let _ = writeln!(
            out,
            "<p class=\"warn\">Estimated from sampled allocations, 1 in ~{} bytes.</p>",
            r.run.sampling.alloc_sample_bytes
        );
    }
    let rows = super::summary_rows(&r.totals, r.run.sampling.cpu_hz);
    out.push_str("<table class=\"summary\">\n");
    for (name, value) in rows {
        let _ = writeln!(
            out,
            "<tr><th>{name}</th><td class=\"n\">{}</td></tr>",
            escape(&value)
        );
    }
    out.push_str("</table>\n");
}

/// The exact figures behind `figure_cells`, in the same order.
fn figure_values(f: &Figures, has_cpu: bool, cpu_total: u64) -> Vec<f64> {
    let mut v = vec![
        f.allocated_bytes as f64,
        f.freed_bytes as f64,
        f.increment_bytes as f64,
        f.peak_bytes as f64,
        f.end_bytes as f64,
        f.allocations as f64,
    ];
    if has_cpu {
        v.push(f.cpu_time_ns as f64);
        v.push(if cpu_total > 0 {
            f.cpu_time_ns as f64 * 100.0 / cpu_total as f64
        } else {
            0.0
        });
    }
    v
}

/// Number cells of one row: the text report's cells with exact `data-v`.
fn number_cells(out: &mut String, f: &Figures, has_cpu: bool, cpu_total: u64) {
    let cells = figure_cells(f, has_cpu, cpu_total);
    for (text, v) in cells.iter().zip(figure_values(f, has_cpu, cpu_total)) {
        let _ = write!(out, "<td class=\"n\" data-v=\"{v}\">{}</td>", escape(text));
    }
}

fn header_row(out: &mut String, first: &[&str], has_cpu: bool, last: &[&str]) {
    out.push_str("<thead><tr>");
    for h in first.iter().chain(&figure_headers(has_cpu)).chain(last) {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
}

fn top_lines(out: &mut String, r: &Report, lines: &[LineFigures], key: SortKey, user_only: bool) {
    let scope = if user_only {
        " in your code (<code>--focus all</code> shows every line)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "<h2>Top {} lines by self {}{scope}</h2>",
        lines.len(),
        sort_title(key)
    );
    if lines.is_empty() {
        out.push_str("<p class=\"dim\">(no lines with figures)</p>\n");
        return;
    }
    let has_cpu = r.totals.cpu_samples > 0;
    out.push_str("<table class=\"sortable\">");
    header_row(out, &[], has_cpu, &["Line", "Function", "Source"]);
    for l in lines {
        out.push_str("<tr>");
        number_cells(out, &l.self_figures, has_cpu, r.totals.cpu_time_ns);
        let place = if l.file.is_empty() {
            "??".to_string()
        } else {
            format!("{}:{}", l.file, l.line)
        };
        let source = l.source.as_deref().map_or("", str::trim);
        let _ = writeln!(
            out,
            "<td>{}</td><td>{}</td><td class=\"src\">{}</td></tr>",
            escape(&place),
            escape(&l.function),
            escape(source)
        );
    }
    out.push_str("</tbody></table>\n");
}

/// One function's source from its first to its last line with figures,
/// with `total` figures (callees included), as memory_profiler shows it.
fn listing(out: &mut String, r: &Report, own: &[&LineFigures], sources: &mut SourceFiles) {
    let (Some(first), Some(last)) = (
        own.iter().map(|l| l.line).min(),
        own.iter().map(|l| l.line).max(),
    ) else {
        return;
    };
    let (file, function, kind) = (&own[0].file, &own[0].function, own[0].kind);
    let _ = writeln!(
        out,
        "<h2><code>{}</code> <span class=\"dim\">({}, figures include callees)</span></h2>",
        escape(function),
        escape(file)
    );
    let has_cpu = r.totals.cpu_samples > 0;
    let full_path = match (&r.root, kind) {
        (Some(root), LineKind::User) => root.join(file),
        _ => Path::new(file).to_path_buf(),
    };
    out.push_str("<table class=\"sortable listing\">");
    header_row(out, &["Line #"], has_cpu, &["Line Contents"]);
    let columns = figure_headers(has_cpu).len();
    for n in first..=last {
        let with_figures = own.iter().find(|l| l.line == n);
        let text = with_figures
            .and_then(|l| l.source.clone())
            .or_else(|| sources.line(&full_path, n).map(str::to_string))
            .unwrap_or_default();
        let _ = write!(out, "<tr><td class=\"n\" data-v=\"{n}\">{n}</td>");
        match with_figures {
            Some(l) => number_cells(out, &l.total, has_cpu, r.totals.cpu_time_ns),
            // Zero for sorting, blank to read: the line did nothing.
            None => (0..columns).for_each(|_| out.push_str("<td class=\"n\" data-v=\"0\"></td>")),
        }
        let _ = writeln!(out, "<td class=\"src\">{}</td></tr>", escape(&text));
    }
    out.push_str("</tbody></table>\n");
}

/// A marked function's line_profiler listing (see the text renderer).
fn timed_listing(out: &mut String, r: &Report, t: &super::TimedListing) {
    let _ = writeln!(
        out,
        "<h2><code>{}</code> <span class=\"dim\">at line {}</span></h2>\n<pre>{}</pre>",
        escape(&t.function),
        t.line,
        escape(&super::text::timed_head(t))
    );
    let has_cpu = r.totals.cpu_samples > 0;
    out.push_str("<table class=\"sortable listing\">");
    header_row(
        out,
        &["Line #", "Hits", "Time", "Per Hit", "% Time"],
        has_cpu,
        &["Line Contents"],
    );
    let columns = figure_headers(has_cpu).len();
    for row in &t.rows {
        let _ = write!(out, "<tr><td class=\"n\" data-v=\"{0}\">{0}</td>", row.line);
        let values = [
            row.hits.unwrap_or(0),
            row.time_ns,
            row.hits.map_or(0, |h| row.time_ns / h.max(1)),
            row.time_ns,
        ];
        for (cell, v) in super::text::timer_cells(t, row).iter().zip(values) {
            let _ = write!(out, "<td class=\"n\" data-v=\"{v}\">{cell}</td>");
        }
        match &row.figures {
            Some(f) => number_cells(out, f, has_cpu, r.totals.cpu_time_ns),
            None => (0..columns).for_each(|_| out.push_str("<td class=\"n\" data-v=\"0\"></td>")),
        }
        let _ = writeln!(out, "<td class=\"src\">{}</td></tr>", escape(&row.source));
    }
    out.push_str("</tbody></table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::testing::report;

    #[test]
    fn escapes_and_keeps_exact_figures() {
        let mut r = report();
        r.run.command = vec!["./app".into(), "<script>".into()];
        r.totals.allocated_bytes = 4096;
        let figures = Figures {
            allocations: 1,
            allocated_bytes: 4096,
            increment_bytes: 4096,
            ..Figures::default()
        };
        r.lines = vec![LineFigures {
            file: "src/main.rs".into(),
            line: 7,
            function: "app::<impl Foo<'a>>::f".into(),
            kind: LineKind::User,
            source: Some("    let v = a < b && c > \"d\";".into()),
            self_figures: figures,
            total: figures,
            hits: None,
            time_ns: None,
        }];
        let html = render(&r, &View::default(), &mut SourceFiles::default());
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(html.contains("./app &lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>\"") && html.matches("<script>").count() == 1);
        assert!(html.contains("let v = a &lt; b &amp;&amp; c &gt; &quot;d&quot;;"));
        assert!(html.contains("app::&lt;impl Foo&lt;&#39;a&gt;&gt;::f"));
        assert!(html.contains("<td class=\"n\" data-v=\"4096\">4.0 KiB</td>"));
        // The listing row of line 7 and the top-lines row.
        assert!(html.contains("<td class=\"n\" data-v=\"7\">7</td>"));
        assert!(
            !html.contains("src=") && !html.contains("href="),
            "no external resources"
        );
    }
}
