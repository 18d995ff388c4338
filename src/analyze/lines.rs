//! Per-line figures: distributes the per-stack figures of the replay over the
//! source lines of each symbolized stack.
//!
//! `self` goes to one line per stack, the attribution frame: the innermost
//! frame outside the standard library and lineprof (or the innermost frame
//! when all are std). `total` goes to every distinct line of the stack, once
//! even under recursion. Work is O(stacks x depth), independent of the
//! number of events.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};

pub use crate::analyze::classify::LineKind;
use crate::analyze::classify::{attribution, display_file, line_kind};
use crate::analyze::replay::{Replay, StackFigures};
use crate::analyze::symbolize::Symbols;

/// The figures of one line (or one stack), rounded to whole units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub frees: u64,
    pub freed_bytes: u64,
    /// `allocated_bytes - freed_bytes`: the net change while the line ran.
    pub increment_bytes: i64,
    pub peak_bytes: u64,
    pub end_bytes: u64,
    pub cpu_samples: u64,
    pub cpu_time_ns: u64,
}

impl Figures {
    pub fn from_raw(raw: &StackFigures) -> Figures {
        let r = |v: f64| v.max(0.0).round() as u64;
        let allocated_bytes = r(raw.allocated_bytes);
        let freed_bytes = r(raw.freed_bytes);
        Figures {
            allocations: r(raw.allocations),
            allocated_bytes,
            frees: r(raw.frees),
            freed_bytes,
            // Saturating: a crafted profile may claim sizes near 2^64.
            increment_bytes: (allocated_bytes as i128 - freed_bytes as i128)
                .clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            peak_bytes: r(raw.peak_bytes),
            end_bytes: r(raw.end_bytes),
            cpu_samples: r(raw.cpu_samples),
            cpu_time_ns: r(raw.cpu_time_ns),
        }
    }

    /// Adds `b`'s figures to these (sums of lines or of stacks).
    pub fn add(&mut self, b: &Figures) {
        self.allocations += b.allocations;
        self.allocated_bytes += b.allocated_bytes;
        self.frees += b.frees;
        self.freed_bytes += b.freed_bytes;
        self.increment_bytes += b.increment_bytes;
        self.peak_bytes += b.peak_bytes;
        self.end_bytes += b.end_bytes;
        self.cpu_samples += b.cpu_samples;
        self.cpu_time_ns += b.cpu_time_ns;
    }

    pub fn is_zero(&self) -> bool {
        *self == Figures::default()
    }
}

/// Field by field, as [`Figures::add`].
impl std::ops::Add for Figures {
    type Output = Figures;
    fn add(mut self, b: Figures) -> Figures {
        Figures::add(&mut self, &b);
        self
    }
}

/// The aggregated figures of one source line: the unit every report, the
/// run store and `diff` work with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineFigures {
    /// Relative to the workspace root for `User` lines; as in the debug info
    /// otherwise (empty when unknown).
    pub file: String,
    pub line: u32,
    pub function: String,
    pub kind: LineKind,
    /// The text of the line, when the source file could be read.
    pub source: Option<String>,
    #[serde(rename = "self")]
    pub self_figures: Figures,
    pub total: Figures,
    /// Lines of `#[lineprof::profile]` functions only: how often the line
    /// started, and the wall time until the next line event (callees
    /// included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ns: Option<u64>,
}

/// CPU time of the stacks that have no attribution frame (unattributed:
/// in the totals, on no line).
pub fn unattributed_cpu_ns(replay: &Replay, symbols: &Symbols) -> f64 {
    replay
        .per_stack
        .iter()
        .enumerate()
        .filter(|(sid, fig)| {
            fig.cpu_time_ns > 0.0
                && symbols
                    .stacks
                    .get(*sid)
                    .is_none_or(|st| attribution(st, &symbols.locations).is_none())
        })
        .map(|(_, fig)| fig.cpu_time_ns)
        .sum()
}

/// Figures per line for every line with a non-zero figure, in no particular
/// order. `root` is the workspace root (for `kind` and relative paths).
pub fn aggregate(
    replay: &Replay,
    symbols: &Symbols,
    root: Option<&Path>,
    sources: &mut SourceFiles,
) -> Vec<LineFigures> {
    let n = symbols.locations.len();
    let mut self_raw = vec![StackFigures::default(); n];
    let mut total_raw = vec![StackFigures::default(); n];
    // `seen[loc] == stack + 1` marks a line already counted for this stack.
    let mut seen = vec![0usize; n];
    for (sid, fig) in replay.per_stack.iter().enumerate() {
        if fig.is_zero() {
            continue;
        }
        let Some(stack) = symbols.stacks.get(sid) else {
            continue;
        };
        if let Some(a) = attribution(stack, &symbols.locations) {
            self_raw[stack[a] as usize].add(fig);
        }
        for &id in stack {
            if seen[id as usize] != sid + 1 {
                seen[id as usize] = sid + 1;
                total_raw[id as usize].add(fig);
            }
        }
    }
    let mut out = Vec::new();
    for (id, loc) in symbols.locations.iter().enumerate() {
        let self_figures = Figures::from_raw(&self_raw[id]);
        let total = Figures::from_raw(&total_raw[id]);
        if self_figures.is_zero() && total.is_zero() {
            continue;
        }
        let kind = line_kind(&loc.file, root);
        let file = display_file(&loc.file, root);
        out.push(LineFigures {
            source: sources
                .line(Path::new(&loc.file), loc.line)
                .map(str::to_string),
            file,
            line: loc.line,
            function: loc.function.clone(),
            kind,
            self_figures,
            total,
            hits: None,
            time_ns: None,
        });
    }
    out
}

/// The keys `--sort` accepts; lines sort by their `self` figure, descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    Allocated,
    Freed,
    Increment,
    Peak,
    End,
    Allocations,
    Cpu,
    /// Hits of `#[lineprof::profile]` lines (calls, for functions).
    Hits,
    /// Wall time of `#[lineprof::profile]` lines and functions.
    Time,
}

impl SortKey {
    pub fn value(self, f: &Figures) -> i128 {
        match self {
            SortKey::Allocated => f.allocated_bytes as i128,
            SortKey::Freed => f.freed_bytes as i128,
            SortKey::Increment => f.increment_bytes as i128,
            SortKey::Peak => f.peak_bytes as i128,
            SortKey::End => f.end_bytes as i128,
            SortKey::Allocations => f.allocations as i128,
            SortKey::Cpu => f.cpu_time_ns.max(f.cpu_samples) as i128,
            // Not memory or CPU figures: see `line_value`.
            SortKey::Hits | SortKey::Time => 0,
        }
    }

    /// The value a line sorts by: its timer for `hits` and `time`, else
    /// its `self` figure.
    pub fn line_value(self, l: &LineFigures) -> i128 {
        match self {
            SortKey::Hits => l.hits.unwrap_or(0) as i128,
            SortKey::Time => l.time_ns.unwrap_or(0) as i128,
            _ => self.value(&l.self_figures),
        }
    }

    /// Whether the key is a line timer's figure.
    pub fn is_timer(self) -> bool {
        matches!(self, SortKey::Hits | SortKey::Time)
    }
}

/// Sorts by the key's `self` figure, then `total`, descending; ties in file
/// and line order so output is stable.
pub fn sort_lines(lines: &mut [LineFigures], key: SortKey) {
    lines.sort_by(|a, b| {
        key.line_value(b)
            .cmp(&key.line_value(a))
            .then(key.value(&b.total).cmp(&key.value(&a.total)))
            .then_with(|| (&a.file, a.line, &a.function).cmp(&(&b.file, b.line, &b.function)))
    });
}

/// What `--function`, `--file` and `--focus` keep.
#[derive(Debug, Clone, Default)]
pub struct LineFilter {
    pub function: Option<Regex>,
    pub file: Option<Regex>,
    pub user_only: bool,
}

impl LineFilter {
    pub fn keeps(&self, l: &LineFigures) -> bool {
        self.keeps_function(&l.function, &l.file) && (!self.user_only || l.kind == LineKind::User)
    }

    /// Whether `--function` and `--file` keep a function of that name and
    /// file.
    pub fn keeps_function(&self, function: &str, file: &str) -> bool {
        self.function.as_ref().is_none_or(|r| r.is_match(function))
            && self.file.as_ref().is_none_or(|r| r.is_match(file))
    }
}

/// The workspace root of a program: the nearest ancestor of `start` whose
/// Cargo.toml has a `[workspace]` table, else the outermost with a Cargo.toml.
pub fn workspace_root(start: &Path) -> Option<PathBuf> {
    let mut outermost = None;
    for dir in start.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest) {
            if text.lines().any(|l| l.trim() == "[workspace]") {
                return Some(dir.to_path_buf());
            }
            outermost = Some(dir.to_path_buf());
        }
    }
    outermost
}

/// Source files read once each. A missing file is not an error: its lines
/// render without text. Standard-library paths (`/rustc/<hash>/library/...`)
/// are looked up in the installed sysroot's `rust-src`.
#[derive(Debug, Default)]
pub struct SourceFiles {
    files: HashMap<PathBuf, Option<Vec<String>>>,
    sysroot: Option<Option<PathBuf>>,
    /// Base for relative paths (the workspace root).
    pub base: Option<PathBuf>,
}

impl SourceFiles {
    pub fn new(base: Option<PathBuf>) -> SourceFiles {
        SourceFiles {
            base,
            ..SourceFiles::default()
        }
    }

    /// The text of line `line` (1-based) of `path`, without its newline.
    pub fn line(&mut self, path: &Path, line: u32) -> Option<&str> {
        if line == 0 || path.as_os_str().is_empty() {
            return None;
        }
        if !self.files.contains_key(path) {
            let text = self.load(path);
            self.files.insert(path.to_path_buf(), text);
        }
        let lines = self.files.get(path)?.as_ref()?;
        lines.get(line as usize - 1).map(String::as_str)
    }

    fn load(&mut self, path: &Path) -> Option<Vec<String>> {
        let real = if let Ok(rest) = path.strip_prefix("/rustc") {
            // Skip the commit hash: /rustc/<hash>/library/...
            let rest: PathBuf = rest.components().skip(1).collect();
            self.sysroot()?.join("lib/rustlib/src/rust").join(rest)
        } else if path.is_relative() {
            self.base.as_ref()?.join(path)
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(real).ok()?;
        Some(text.lines().map(str::to_string).collect())
    }

    fn sysroot(&mut self) -> Option<&PathBuf> {
        self.sysroot
            .get_or_insert_with(|| {
                let out = std::process::Command::new("rustc")
                    .args(["--print", "sysroot"])
                    .output()
                    .ok()?;
                let s = String::from_utf8(out.stdout).ok()?;
                Some(PathBuf::from(s.trim()))
            })
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::classify::Location;
    use crate::analyze::replay::StackFigures;

    fn raw(allocations: f64, bytes: f64) -> StackFigures {
        StackFigures {
            allocations,
            allocated_bytes: bytes,
            peak_bytes: bytes,
            ..StackFigures::default()
        }
    }

    #[test]
    fn self_and_total_with_recursion_and_std() {
        let symbols = Symbols {
            locations: vec![
                Location::new(
                    "/rustc/h/library/alloc/src/vec/mod.rs",
                    10,
                    "alloc::vec::Vec<T>::push",
                ),
                Location::new("/w/src/main.rs", 5, "app::recurse"),
                Location::new("/w/src/main.rs", 9, "app::main"),
                Location::new(
                    "/home/u/.cargo/registry/src/x/dep-1.0/src/lib.rs",
                    3,
                    "dep::f",
                ),
            ],
            // Stack 0: push <- recurse <- recurse <- main (recursion).
            // Stack 1: push <- dep::f <- main.
            // Stack 2: only std frames: unattributed, on no line's self.
            stacks: vec![vec![0, 1, 1, 2], vec![0, 3, 2], vec![0]],
            warnings: vec![],
        };
        let replay = Replay {
            per_stack: vec![raw(2.0, 100.0), raw(1.0, 30.0), raw(1.0, 7.0)],
            ..Replay::default()
        };
        let mut lines = aggregate(
            &replay,
            &symbols,
            Some(Path::new("/w")),
            &mut SourceFiles::default(),
        );
        sort_lines(&mut lines, SortKey::Allocated);
        let got: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l.file.as_str(),
                    l.line,
                    l.kind,
                    l.self_figures.allocated_bytes,
                    l.total.allocated_bytes,
                    l.total.allocations,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("src/main.rs", 5, LineKind::User, 100, 100, 2),
                (
                    "/home/u/.cargo/registry/src/x/dep-1.0/src/lib.rs",
                    3,
                    LineKind::Dependency,
                    30,
                    30,
                    1
                ),
                (
                    "/rustc/h/library/alloc/src/vec/mod.rs",
                    10,
                    LineKind::Std,
                    0,
                    137,
                    4
                ),
                ("src/main.rs", 9, LineKind::User, 0, 130, 3),
            ]
        );
        assert_eq!(lines[0].self_figures.increment_bytes, 100);
        assert_eq!(lines[0].self_figures.peak_bytes, 100);
    }

    #[test]
    fn filter_by_function_file_and_focus() {
        let line = LineFigures {
            file: "src/main.rs".into(),
            line: 1,
            function: "app::main".into(),
            kind: LineKind::User,
            source: None,
            self_figures: Figures::default(),
            total: Figures::default(),
            hits: None,
            time_ns: None,
        };
        let f = LineFilter {
            function: Some(Regex::new("^app::").unwrap()),
            file: Some(Regex::new("main").unwrap()),
            user_only: true,
        };
        assert!(f.keeps(&line));
        let std_line = LineFigures {
            kind: LineKind::Std,
            ..line.clone()
        };
        assert!(!f.keeps(&std_line));
    }
}
