//! Per-function figures (pstats's view) and the line timers of
//! `#[lineprof::profile]` functions.
//!
//! `self` of a function sums the stacks whose attribution frame is in it;
//! `total` the stacks that contain it anywhere (once per stack, also under
//! recursion). Marked functions add `calls` and `time_ns` from their timers,
//! and their lines get `hits` and `time_ns`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::analyze::classify::{attribution, display_file, line_kind};
use crate::analyze::lines::{Figures, LineFigures, SourceFiles};
use crate::analyze::profile::TimedFunction;
use crate::analyze::replay::{Replay, StackFigures};
use crate::analyze::stacks::StackTable;
use crate::analyze::symbolize::Symbols;

/// One function's figures: the `functions` array of the JSON report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionFigures {
    pub function: String,
    /// As for lines: relative to the workspace root for user code.
    pub file: String,
    /// The `fn` line of a marked function; otherwise the first line of the
    /// function with figures (debug line tables do not say where a
    /// function starts).
    pub line: u32,
    /// Calls and wall time of the outermost calls: marked functions only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ns: Option<u64>,
    #[serde(rename = "self")]
    pub self_figures: Figures,
    pub total: Figures,
}

impl FunctionFigures {
    pub fn is_marked(&self) -> bool {
        self.calls.is_some()
    }
}

/// Figures per function name over the symbolized stacks.
pub fn aggregate(replay: &Replay, symbols: &Symbols, root: Option<&Path>) -> Vec<FunctionFigures> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut raw: Vec<(&str, String, u32, StackFigures, StackFigures)> = Vec::new();
    let mut seen: Vec<usize> = Vec::new();
    for (sid, fig) in replay.per_stack.iter().enumerate() {
        if fig.is_zero() {
            continue;
        }
        let Some(stack) = symbols.stacks.get(sid) else {
            continue;
        };
        let attributed = attribution(stack, &symbols.locations).map(|a| stack[a]);
        for &id in stack {
            let loc = &symbols.locations[id as usize];
            if loc.function.is_empty() {
                continue;
            }
            let i = *index.entry(&loc.function).or_insert_with(|| {
                raw.push((
                    &loc.function,
                    display_file(&loc.file, root),
                    u32::MAX,
                    StackFigures::default(),
                    StackFigures::default(),
                ));
                seen.push(usize::MAX);
                raw.len() - 1
            });
            let entry = &mut raw[i];
            if loc.line > 0 {
                entry.2 = entry.2.min(loc.line);
            }
            if Some(id) == attributed {
                entry.3.add(fig);
            }
            if seen[i] != sid {
                seen[i] = sid;
                entry.4.add(fig);
            }
        }
    }
    raw.into_iter()
        .map(|(function, file, line, s, t)| FunctionFigures {
            function: function.to_string(),
            file,
            line: if line == u32::MAX { 0 } else { line },
            calls: None,
            time_ns: None,
            self_figures: Figures::from_raw(&s),
            total: Figures::from_raw(&t),
        })
        .filter(|f| !(f.self_figures.is_zero() && f.total.is_zero()))
        .collect()
}

/// The source file of a timed function, absolute when it can be known:
/// `file!()` is relative to the directory rustc ran in (the root of the
/// workspace the crate was built in, which need not be the one lineprof
/// found), absolute for crates outside it. A relative path is matched
/// with the debug info's files: the one file that ends with it.
fn timer_path(file: &str, root: Option<&Path>, known_files: &[&str]) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let mut found: Option<&str> = None;
    for &k in known_files {
        if Path::new(k).is_absolute() && Path::new(k).ends_with(p) {
            match found {
                Some(f) if f != k => {
                    found = None;
                    break;
                }
                _ => found = Some(k),
            }
        }
    }
    if let Some(only) = found {
        return PathBuf::from(only);
    }
    match root {
        Some(r) => r.join(p),
        None => p.to_path_buf(),
    }
}

/// Whether a symbolized function name and a marked function's path name
/// the same function: equal, or one a `::`-suffix of the other (inlined
/// functions lose their path in line-tables-only debug info).
pub fn same_function(symbolized: &str, path: &str) -> bool {
    let suffix = |long: &str, short: &str| {
        long.len() > short.len()
            && long.ends_with(short)
            && long[..long.len() - short.len()].ends_with("::")
    };
    symbolized == path || suffix(path, symbolized) || suffix(symbolized, path)
}

/// Puts the timers on the lines and functions: each timed line gets
/// `hits` and `time_ns` (a line of its own when it has no other figure),
/// each marked function `calls` and `time_ns`.
pub fn add_timers(
    timed: &[TimedFunction],
    known_files: &[&str],
    lines: &mut Vec<LineFigures>,
    functions: &mut Vec<FunctionFigures>,
    root: Option<&Path>,
    sources: &mut SourceFiles,
) {
    for t in timed {
        let full = timer_path(&t.file, root, known_files);
        let file = display_file(&full.to_string_lossy(), root);
        // Other spellings of the function become the marked path.
        let mut merged: Option<FunctionFigures> = None;
        functions.retain(|f| {
            if f.file != file || !same_function(&f.function, &t.path) {
                return true;
            }
            match &mut merged {
                Some(m) => {
                    m.self_figures.add(&f.self_figures);
                    m.total.add(&f.total);
                }
                None => merged = Some(f.clone()),
            }
            false
        });
        if let Some(mut m) = merged {
            m.function = t.path.clone();
            functions.push(m);
        }
        let function = match functions.iter_mut().find(|f| f.function == t.path) {
            Some(f) => f,
            None => {
                functions.push(FunctionFigures {
                    function: t.path.clone(),
                    file: file.clone(),
                    line: t.line,
                    calls: None,
                    time_ns: None,
                    self_figures: Figures::default(),
                    total: Figures::default(),
                });
                functions.last_mut().unwrap()
            }
        };
        function.file = file.clone();
        function.line = t.line;
        function.calls = Some(t.calls);
        function.time_ns = Some(t.time_ns);
        for l in lines.iter_mut() {
            if l.file == file && l.function != t.path && same_function(&l.function, &t.path) {
                l.function = t.path.clone();
            }
        }
        merge_duplicate_lines(lines, &t.path);
        for &(n, hits, time_ns) in &t.lines {
            let at = lines
                .iter()
                .position(|l| l.file == file && l.line == n && l.function == t.path);
            let l = match at {
                Some(i) => &mut lines[i],
                None => {
                    lines.push(LineFigures {
                        kind: line_kind(&full.to_string_lossy(), root),
                        file: file.clone(),
                        line: n,
                        function: t.path.clone(),
                        source: sources.line(&full, n).map(str::to_string),
                        self_figures: Figures::default(),
                        total: Figures::default(),
                        hits: None,
                        time_ns: None,
                    });
                    lines.last_mut().unwrap()
                }
            };
            l.hits = Some(hits);
            l.time_ns = Some(time_ns);
        }
    }
}

/// Sums lines of `function` that the renaming made equal (same file and
/// line).
fn merge_duplicate_lines(lines: &mut Vec<LineFigures>, function: &str) {
    let mut i = 0;
    while i < lines.len() {
        if lines[i].function == function {
            if let Some(j) = (0..i).find(|&j| {
                lines[j].function == function
                    && lines[j].file == lines[i].file
                    && lines[j].line == lines[i].line
            }) {
                let dup = lines.swap_remove(i);
                lines[j].self_figures.add(&dup.self_figures);
                lines[j].total.add(&dup.total);
                continue;
            }
        }
        i += 1;
    }
}

/// A caller -> callee edge of the call graph, with the figures of the
/// stacks it is on (each stack once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub caller: String,
    pub callee: String,
    pub figures: Figures,
}

/// The edges of every stack: pairs of adjacent distinct functions.
pub fn edges(table: &StackTable) -> Vec<Edge> {
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut out: Vec<Edge> = Vec::new();
    for row in &table.stacks {
        let mut names: Vec<&str> = Vec::new();
        for &f in &row.frames {
            let name = table.frames[f as usize].function.as_str();
            if !name.is_empty() && names.last() != Some(&name) {
                names.push(name);
            }
        }
        let mut on_this_stack: Vec<usize> = Vec::new();
        for pair in names.windows(2) {
            let key = (pair[1].to_string(), pair[0].to_string());
            let i = *index.entry(key).or_insert_with(|| {
                out.push(Edge {
                    caller: pair[1].to_string(),
                    callee: pair[0].to_string(),
                    figures: Figures::default(),
                });
                out.len() - 1
            });
            if !on_this_stack.contains(&i) {
                on_this_stack.push(i);
                out[i].figures.add(&row.figures);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::stacks::{Frame, StackRow};

    #[test]
    fn spellings_of_one_function() {
        assert!(same_function("app::work", "app::work"));
        assert!(same_function("work", "app::work"));
        assert!(same_function("Counter::bump", "app::Counter::bump"));
        assert!(!same_function("ork", "app::work"));
        assert!(!same_function("app::work::{closure#0}", "app::work"));
    }

    #[test]
    fn edges_join_adjacent_distinct_functions_once_per_stack() {
        let frame = |function: &str, line| Frame {
            file: "src/main.rs".into(),
            line,
            function: function.into(),
        };
        let figures = |bytes| Figures {
            allocated_bytes: bytes,
            ..Figures::default()
        };
        let table = StackTable {
            frames: vec![
                frame("app::leaf", 3),
                frame("app::mid", 7),
                frame("app::mid", 8),
                frame("app::main", 12),
            ],
            stacks: vec![
                // leaf <- mid <- mid (two lines of one function) <- main
                StackRow {
                    frames: vec![0, 1, 2, 3],
                    figures: figures(100),
                    ..StackRow::default()
                },
                // mid <- main <- mid <- main (recursion through main)
                StackRow {
                    frames: vec![1, 3, 1, 3],
                    figures: figures(10),
                    ..StackRow::default()
                },
            ],
            ..StackTable::default()
        };
        let got: Vec<_> = edges(&table)
            .into_iter()
            .map(|e| (e.caller, e.callee, e.figures.allocated_bytes))
            .collect();
        assert_eq!(
            got,
            vec![
                ("app::mid".into(), "app::leaf".into(), 100),
                ("app::main".into(), "app::mid".into(), 110),
                ("app::mid".into(), "app::main".into(), 10),
            ]
        );
    }
}
