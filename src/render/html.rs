//! A self-contained HTML report (no external resources, no network): the
//! summary, a chart of live heap over the run with the peak marked, an
//! interactive flame graph (icicle) of the stacks, the top-lines and
//! function tables, and per-function source listings with the figures as
//! a heat scale. A toggle switches between your code and all code.
//!
//! The page is built from sections (`summary`, `timeline_section`,
//! `flame_section`, `tables_section`, `listings_section`), each a function
//! writing its own `<section>`, so other views can slot in between.
//!
//! Every string from the profile (paths, function names, source text, the
//! command line) is escaped; the flame graph and the timeline read their
//! data from one `application/json` block in which `<` is written `\u003c`,
//! so source text can never close a script. Sorting reads each cell's
//! `data-v`, the exact figure, not the unit-scaled text.
//!
//! The flame graph is hand-written (report.js) rather than inferno's SVG:
//! inferno makes one standalone SVG per count, with its own script and
//! document-wide ids, so the four figures (allocated, peak, allocations,
//! CPU) would be four embedded documents whose zoom and search do not share
//! state with each other or with the user/all toggle; one tree with all
//! four figures, drawn by ~150 lines of script, does.

use std::collections::HashMap;
use std::fmt::Write;

use serde::Serialize;

use super::text::{
    figure_cells, figure_headers, sort_title, top_title, DEPENDENCY_NOTE, INCREMENT_NOTE,
};
use super::{format_time, Listing, ListingRow, Plan, View};
use crate::analyze::classify::{frame_kind, short_path};
use crate::analyze::functions::FunctionFigures;
use crate::analyze::lines::{Figures, LineFigures, LineFilter, LineKind, SortKey, SourceFiles};
use crate::analyze::report::Report;

const STYLE: &str = include_str!("html/report.css");
const SCRIPT: &str = include_str!("html/report.js");

/// Rows of the function table.
const FUNCTION_ROWS: usize = 50;

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
    let focus = if view.filter.user_only { "user" } else { "all" };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>lineprof: {}</title><style>{STYLE}</style></head>\
         <body data-focus=\"{focus}\">\n",
        escape(&command)
    );
    summary(&mut out, report, &command);
    timeline_section(&mut out, report);
    flame_section(&mut out, report);
    let user = super::plan(report, &with_focus(view, true));
    let all = super::plan(report, &with_focus(view, false));
    let ids = listing_ids(&user, &all);
    tables_section(&mut out, report, &user, &all, &ids, view.sort);
    timed_section(&mut out, report, view, sources);
    listings_section(&mut out, report, &[&user, &all], &ids, sources);
    let _ = writeln!(
        out,
        "<script type=\"application/json\" id=\"lineprof-data\">{}</script>",
        page_data(report)
    );
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body></html>\n");
    out
}

fn with_focus(view: &View, user_only: bool) -> View {
    View {
        filter: LineFilter {
            user_only,
            ..view.filter.clone()
        },
        ..view.clone()
    }
}

/// (file, function) -> listing number, over both views' listings.
type ListingIds = HashMap<(String, String), usize>;

fn listing_ids(user: &Plan, all: &Plan) -> ListingIds {
    let mut ids = ListingIds::new();
    for l in user.listings.iter().chain(&all.listings) {
        let n = ids.len();
        ids.entry((l.file.clone(), l.function.clone())).or_insert(n);
    }
    ids
}

fn summary(out: &mut String, r: &Report, command: &str) {
    let _ = writeln!(
        out,
        "<header><h1>lineprof report: <code>{}</code></h1>",
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
    for (class, remark) in super::remarks(r) {
        let _ = writeln!(out, "<p class=\"{class}\">{}</p>", escape(&remark));
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
    out.push_str(
        "<p class=\"focus-toggle\">Show: \
         <label><input type=\"radio\" name=\"focus\" value=\"user\"> your code</label> \
         <label><input type=\"radio\" name=\"focus\" value=\"all\"> all code</label></p>\n",
    );
    let _ = writeln!(
        out,
        "<p class=\"note\">{}</p></header>",
        escape(INCREMENT_NOTE)
    );
}

fn timeline_section(out: &mut String, r: &Report) {
    out.push_str("<section id=\"timeline-section\"><h2>Live heap over the run</h2>\n");
    match &r.timeline {
        Some(t) if !t.points.is_empty() => out.push_str(
            "<svg id=\"timeline\" viewBox=\"0 0 960 240\" role=\"img\" \
             aria-label=\"live heap bytes over the run\"></svg>\
             <div id=\"timeline-legend\"></div>\n",
        ),
        Some(_) => out.push_str("<p class=\"dim\">(no heap events)</p>\n"),
        None => out.push_str(
            "<p class=\"dim\">(this stored run was kept before lineprof stored the live-heap series)</p>\n",
        ),
    }
    out.push_str("</section>\n");
}

fn flame_section(out: &mut String, r: &Report) {
    out.push_str("<section id=\"flame-section\"><h2>Flame graph</h2>\n");
    if r.stacks.is_none() {
        out.push_str(
            "<p class=\"dim\">(this stored run keeps per-line figures only, no stacks)</p></section>\n",
        );
        return;
    }
    out.push_str(
        "<p class=\"controls\"><label>Figure <select id=\"flame-metric\">\
         <option value=\"0\">allocated bytes</option>\
         <option value=\"1\">bytes live at peak</option>\
         <option value=\"2\">allocations</option>\
         <option value=\"3\">CPU time</option></select></label> \
         <input id=\"flame-search\" type=\"search\" placeholder=\"search functions and files\"> \
         <button id=\"flame-reset\" type=\"button\">reset zoom</button> \
         <span id=\"flame-match\" class=\"dim\"></span></p>\n\
         <p class=\"dim\">Callers on top, callees below; width is the figure. \
         Click a frame to zoom, the top bar to zoom out. The allocator's own frames are left out.</p>\n\
         <div id=\"flame\"></div><div id=\"flame-detail\" class=\"dim\"></div></section>\n",
    );
}

fn tables_section(
    out: &mut String,
    r: &Report,
    user: &Plan,
    all: &Plan,
    ids: &ListingIds,
    sort: SortKey,
) {
    out.push_str("<section id=\"tables\">\n");
    for (plan, class) in [(user, "only-user"), (all, "only-all")] {
        let _ = writeln!(out, "<div class=\"{class}\">");
        for (key, ranked) in &plan.tables {
            let (scope, note) = if class == "only-user" {
                let c = super::coverage(r, *key);
                let rest = (c.total - c.user - c.dependency).max(0);
                let note = format!(
                    "Your code: {} of {}; dependencies {}, the standard library and code on no line {}.",
                    super::percent(c.user, c.total),
                    sort_title(*key),
                    super::percent(c.dependency, c.total),
                    super::percent(rest, c.total)
                );
                (" in your code", note)
            } else {
                ("", String::new())
            };
            if ranked.is_empty() {
                // No "Top 0 lines" over an empty table: say it.
                let what = sort_title(*key);
                let _ = writeln!(out, "<h2>Lines by self {what}{scope}</h2>");
                if !note.is_empty() {
                    let _ = writeln!(out, "<p class=\"coverage\">{}</p>", escape(&note));
                }
                let _ = writeln!(
                    out,
                    "<p class=\"dim\">{} has self {what}.</p>",
                    super::no_line(!scope.is_empty())
                );
            } else {
                let title = top_title(ranked.len(), "lines", *key) + scope;
                lines_table(out, r, &title, &note, ranked, ids);
            }
            if class == "only-user" {
                if let Some((_, deps)) = plan.dependency_tables.iter().find(|(k, _)| k == key) {
                    let title = top_title(deps.len(), "dependency lines", *key);
                    let title = format!("{title} {DEPENDENCY_NOTE}");
                    lines_table(out, r, &title, "", deps, ids);
                }
            }
        }
        let mut functions: Vec<FunctionFigures> = r
            .functions
            .iter()
            .filter(|f| class == "only-all" || frame_kind(&f.file) == LineKind::User)
            .filter(|f| !f.self_figures.is_zero() || !f.total.is_zero())
            .cloned()
            .collect();
        super::sort_functions(&mut functions, sort, false);
        functions.truncate(FUNCTION_ROWS);
        functions_table(out, r, &functions, ids, sort);
        out.push_str("</div>\n");
    }
    out.push_str("</section>\n");
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

/// Number cells of one row: the text report's cells with exact `data-v`,
/// and with `heat` (each column's largest value) a background whose
/// strength is the cell's share of it.
fn number_cells(
    out: &mut String,
    f: &Figures,
    has_cpu: bool,
    cpu_total: u64,
    heat: Option<&[f64]>,
) {
    let cells = figure_cells(f, has_cpu, cpu_total);
    for (i, (text, v)) in cells
        .iter()
        .zip(figure_values(f, has_cpu, cpu_total))
        .enumerate()
    {
        let style = match heat.and_then(|h| h.get(i)) {
            Some(&max) if max > 0.0 && v > 0.0 => {
                format!(
                    " style=\"background:rgba(235,95,20,{:.3})\"",
                    0.06 + 0.6 * v / max
                )
            }
            _ => String::new(),
        };
        let _ = write!(
            out,
            "<td class=\"n\" data-v=\"{v}\"{style}>{}</td>",
            escape(text)
        );
    }
}

/// Header cells; Increment and At exit say what they mean on hover.
fn header_row(out: &mut String, first: &[&str], has_cpu: bool, last: &[&str]) {
    out.push_str("<thead><tr>");
    for h in first.iter().chain(&figure_headers(has_cpu)).chain(last) {
        let title = match *h {
            "Increment" => " title=\"allocated minus freed while the line ran: what it kept; memory other code frees later still counts\"",
            "At exit" => " title=\"still allocated when the program ended: the leaks\"",
            "Peak" => " title=\"allocated here and live at the process's heap peak\"",
            _ => "",
        };
        let _ = write!(out, "<th{title}>{}</th>", escape(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
}

fn filter_box(out: &mut String) {
    out.push_str("<input class=\"filter\" type=\"search\" placeholder=\"filter rows\">\n");
}

fn listing_link(ids: &ListingIds, file: &str, function: &str, line: Option<u32>) -> Option<String> {
    let id = ids.get(&(file.to_string(), function.to_string()))?;
    Some(match line {
        Some(n) => format!("#listing-{id}-L{n}"),
        None => format!("#listing-{id}"),
    })
}

/// A top-lines table under `title`, with `note` (how much of the figure
/// the view holds) between them.
fn lines_table(
    out: &mut String,
    r: &Report,
    title: &str,
    note: &str,
    lines: &[LineFigures],
    ids: &ListingIds,
) {
    let _ = writeln!(out, "<h2>{}</h2>", escape(title));
    if !note.is_empty() {
        let _ = writeln!(out, "<p class=\"coverage\">{}</p>", escape(note));
    }
    if lines.is_empty() {
        out.push_str("<p class=\"dim\">(no lines with figures)</p>\n");
        return;
    }
    let has_cpu = r.totals.cpu_samples > 0;
    filter_box(out);
    out.push_str("<table class=\"sortable lines\">");
    header_row(out, &[], has_cpu, &["Line", "Function", "Source"]);
    for l in lines {
        let _ = write!(out, "<tr data-kind=\"{}\">", kind_name(l.kind));
        number_cells(out, &l.self_figures, has_cpu, r.totals.cpu_time_ns, None);
        let place = if l.file.is_empty() {
            "??".to_string()
        } else {
            format!("{}:{}", short_path(&l.file, None), l.line)
        };
        let place = match listing_link(ids, &l.file, &l.function, Some(l.line)) {
            Some(href) => format!("<a href=\"{href}\">{}</a>", escape(&place)),
            None => escape(&place),
        };
        let function = match listing_link(ids, &l.file, &l.function, None) {
            Some(href) => format!("<a href=\"{href}\">{}</a>", escape(&l.function)),
            None => escape(&l.function),
        };
        let source = l.source.as_deref().map_or("", str::trim);
        let _ = writeln!(
            out,
            "<td>{place}</td><td class=\"fn\">{function}</td><td class=\"src\">{}</td></tr>",
            escape(source)
        );
    }
    out.push_str("</tbody></table>\n");
}

fn functions_table(
    out: &mut String,
    r: &Report,
    functions: &[FunctionFigures],
    ids: &ListingIds,
    key: SortKey,
) {
    let _ = writeln!(
        out,
        "<h2>{} <span class=\"dim\">(self: the function's own lines; total: with callees)</span></h2>",
        escape(&top_title(functions.len(), "functions", key))
    );
    if functions.is_empty() {
        out.push_str("<p class=\"dim\">(no functions with figures)</p>\n");
        return;
    }
    let has_cpu = r.totals.cpu_samples > 0;
    filter_box(out);
    out.push_str("<table class=\"sortable functions\"><thead><tr>");
    let headers = figure_headers(has_cpu);
    for h in &headers {
        let _ = write!(out, "<th>Self {}</th>", escape(h));
    }
    for h in [
        "Total Allocated",
        "Total Peak",
        "Total Allocs",
        "Function",
        "File",
    ] {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for f in functions {
        let _ = write!(out, "<tr data-kind=\"{}\">", kind_name(frame_kind(&f.file)));
        number_cells(out, &f.self_figures, has_cpu, r.totals.cpu_time_ns, None);
        let t = &f.total;
        for (v, text) in [
            (t.allocated_bytes, super::format_bytes(t.allocated_bytes)),
            (t.peak_bytes, super::format_bytes(t.peak_bytes)),
            (t.allocations, t.allocations.to_string()),
        ] {
            let _ = write!(out, "<td class=\"n\" data-v=\"{v}\">{text}</td>");
        }
        let name = match listing_link(ids, &f.file, &f.function, None) {
            Some(href) => format!("<a href=\"{href}\">{}</a>", escape(&f.function)),
            None => escape(&f.function),
        };
        let _ = writeln!(
            out,
            "<td class=\"fn\">{name}</td><td>{}</td></tr>",
            escape(&short_path(&f.file, None))
        );
    }
    out.push_str("</tbody></table>\n");
}

/// line_profiler's listings of the `#[lineprof::profile]` functions.
fn timed_section(out: &mut String, r: &Report, view: &View, sources: &mut SourceFiles) {
    let timed = super::timed_listings(r, view, sources);
    if timed.is_empty() {
        return;
    }
    out.push_str("<section id=\"timed\">\n");
    for t in &timed {
        timed_listing(out, r, t);
    }
    out.push_str("</section>\n");
}

fn listings_section(
    out: &mut String,
    r: &Report,
    plans: &[&Plan],
    ids: &ListingIds,
    sources: &mut SourceFiles,
) {
    out.push_str("<section id=\"listings\">\n");
    let mut done = vec![false; ids.len()];
    for plan in plans {
        for l in &plan.listings {
            let id = ids[&(l.file.clone(), l.function.clone())];
            if !std::mem::replace(&mut done[id], true) {
                listing(out, r, l, id, sources);
            }
        }
    }
    out.push_str("</section>\n");
}

/// One function's listing with `total` figures (callees included), as
/// memory_profiler shows it, each figure column a heat scale.
fn listing(out: &mut String, r: &Report, l: &Listing, id: usize, sources: &mut SourceFiles) {
    let class = if l.kind == LineKind::User {
        ""
    } else {
        " only-all"
    };
    let _ = writeln!(
        out,
        "<div class=\"listing-box{class}\"><h2 id=\"listing-{id}\"><code>{}</code> \
         <span class=\"dim\">({}, figures include callees)</span></h2>",
        escape(&l.function),
        escape(&short_path(&l.file, None))
    );
    let has_cpu = r.totals.cpu_samples > 0;
    let columns = figure_headers(has_cpu).len();
    let mut heat = vec![0.0f64; columns];
    for row in &l.rows {
        if let ListingRow::Line(_, Some(f)) = row {
            for (h, v) in
                heat.iter_mut()
                    .zip(figure_values(&f.total, has_cpu, r.totals.cpu_time_ns))
            {
                *h = h.max(v);
            }
        }
    }
    out.push_str("<table class=\"sortable listing\">");
    header_row(out, &["Line #"], has_cpu, &["Line Contents"]);
    for row in &l.rows {
        match row {
            ListingRow::Line(n, figures) => {
                let text = l.line_text(r, *n, figures.as_deref(), sources);
                let _ = write!(
                    out,
                    "<tr id=\"listing-{id}-L{n}\"><td class=\"n\" data-v=\"{n}\">{n}</td>"
                );
                match figures {
                    Some(f) => {
                        number_cells(out, &f.total, has_cpu, r.totals.cpu_time_ns, Some(&heat))
                    }
                    // Zero for sorting, blank to read: the line did nothing.
                    None => (0..columns)
                        .for_each(|_| out.push_str("<td class=\"n\" data-v=\"0\"></td>")),
                }
                let _ = writeln!(out, "<td class=\"src\">{}</td></tr>", escape(&text));
            }
            ListingRow::Gap(n) => {
                out.push_str("<tr class=\"gap\"><td class=\"n\" data-v=\"0\">…</td>");
                (0..columns).for_each(|_| out.push_str("<td class=\"n\" data-v=\"0\"></td>"));
                let _ = writeln!(
                    out,
                    "<td class=\"dim\">({n} lines without figures)</td></tr>"
                );
            }
        }
    }
    out.push_str("</tbody></table>\n");
    if l.left_out > 0 {
        let _ = writeln!(
            out,
            "<p class=\"dim\">{} more lines with smaller figures left out (<code>--function</code> lists them in the table).</p>",
            l.left_out
        );
    }
    out.push_str("</div>\n");
}

fn kind_name(k: LineKind) -> &'static str {
    match k {
        LineKind::User => "user",
        LineKind::Dependency => "dependency",
        LineKind::Std => "std",
    }
}

/// What report.js draws: the stacks as exported (allocator frames
/// trimmed, short paths), frames outermost first, with the four figures
/// of the flame graph's selector; and the timeline.
#[derive(Serialize)]
struct PageData {
    totals: crate::analyze::report::Totals,
    /// `[function, file, line, kind]`, kind 0 user, 1 dependency, 2 std.
    frames: Vec<(String, String, u32, u8)>,
    /// `[frames outermost first, [allocated, peak, allocations, cpu ns]]`.
    stacks: Vec<(Vec<u32>, [u64; 4])>,
    timeline: Option<TimelineData>,
}

#[derive(Serialize)]
struct TimelineData {
    /// Whether `x` is time in ns (else heap events).
    timed: bool,
    events: u64,
    /// `function (file:line)` of each drawn line.
    lines: Vec<String>,
    /// `[x, live bytes, [bytes of each line]]`.
    points: Vec<(u64, u64, Vec<u64>)>,
}

fn page_data(r: &Report) -> String {
    let (mut frames, mut stacks) = (Vec::new(), Vec::new());
    if let Some(table) = &r.stacks {
        // Kinds come from the paths as stored (short paths look relative).
        let kinds: HashMap<(String, u32, &str), LineKind> = table
            .frames
            .iter()
            .map(|f| {
                let key = (short_path(&f.file, None), f.line, f.function.as_str());
                (key, frame_kind(&f.file))
            })
            .collect();
        let exported = super::export_table(table);
        frames = exported
            .frames
            .iter()
            .map(|f| {
                let key = (f.file.clone(), f.line, f.function.as_str());
                let kind = match kinds.get(&key).copied().unwrap_or(LineKind::Std) {
                    LineKind::User => 0,
                    LineKind::Dependency => 1,
                    LineKind::Std => 2,
                };
                (f.function.clone(), f.file.clone(), f.line, kind)
            })
            .collect();
        stacks = exported
            .stacks
            .iter()
            .map(|s| {
                let f = &s.figures;
                let frames = s.frames.iter().rev().copied().collect();
                (
                    frames,
                    [
                        f.allocated_bytes,
                        f.peak_bytes,
                        f.allocations,
                        f.cpu_time_ns,
                    ],
                )
            })
            .collect();
    }
    let timeline = r.timeline.as_ref().map(|t| {
        let timed = t.points.iter().all(|p| p.time_ns.is_some());
        TimelineData {
            timed,
            events: t.events,
            lines: t
                .lines
                .iter()
                .map(|l| format!("{} ({}:{})", l.function, short_path(&l.file, None), l.line))
                .collect(),
            points: t
                .points
                .iter()
                .map(|p| {
                    let x = if timed {
                        p.time_ns.unwrap_or(0)
                    } else {
                        p.event
                    };
                    (x, p.live_bytes, p.by_line.clone())
                })
                .collect(),
        }
    });
    let data = PageData {
        totals: r.totals,
        frames,
        stacks,
        timeline,
    };
    // Plain data always serializes. `<` as an escape keeps `</script>` (in
    // a function name or path) from ending the block.
    serde_json::to_string(&data)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c")
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
            Some(f) => number_cells(out, f, has_cpu, r.totals.cpu_time_ns, None),
            None => (0..columns).for_each(|_| out.push_str("<td class=\"n\" data-v=\"0\"></td>")),
        }
        let _ = writeln!(out, "<td class=\"src\">{}</td></tr>", escape(&row.source));
    }
    out.push_str("</tbody></table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::stacks::{Frame, StackRow, StackTable};
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
            source: Some("    let v = \"</script><script>alert(1)</script>\" < b;".into()),
            self_figures: figures,
            total: figures,
            hits: None,
            time_ns: None,
        }];
        r.stacks = Some(StackTable {
            frames: vec![Frame {
                file: "src/main.rs".into(),
                line: 7,
                function: "app::</script>".into(),
            }],
            stacks: vec![StackRow {
                frames: vec![0],
                figures,
                ..StackRow::default()
            }],
            ..StackTable::default()
        });
        let html = render(&r, &View::default(), &mut SourceFiles::default());
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(html.contains("./app &lt;script&gt;"), "{html}");
        // Two scripts of our own: the data block and the code.
        assert_eq!(html.matches("<script").count(), 2, "{html}");
        assert_eq!(html.matches("</script>").count(), 2, "{html}");
        assert!(html.contains("&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("app::&lt;impl Foo&lt;&#39;a&gt;&gt;::f"));
        assert!(html.contains("<td class=\"n\" data-v=\"4096\">4.0 KiB</td>"));
        // The listing row of line 7, linked from the top-lines table.
        assert!(html.contains("<tr id=\"listing-0-L7\"><td class=\"n\" data-v=\"7\">7</td>"));
        assert!(html.contains("<a href=\"#listing-0-L7\">src/main.rs:7</a>"));
        assert!(
            !html.contains("src=") && !html.contains("href=\"http") && !html.contains("url("),
            "no external resources"
        );
    }
}
