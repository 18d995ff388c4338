//! Per-stack figures for the formats that draw whole call stacks (folded
//! stacks, pprof, DHAT): the replay's figures per raw stack id, summed over
//! the raw stacks that symbolize to the same logical stack (inlined frames
//! expanded, allocator frames trimmed).
//!
//! Invariants: every row has a non-zero figure and a distinct frame list;
//! frame indices point into `StackTable::frames`, which holds only frames
//! some row uses.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::analyze::classify::display_file;
use crate::analyze::lines::Figures;
use crate::analyze::replay::{Replay, StackFigures};
use crate::analyze::symbolize::Symbols;

/// The stacks of a run with their figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackTable {
    /// The frames rows refer to by index.
    pub frames: Vec<Frame>,
    pub stacks: Vec<StackRow>,
    /// Heap events in the run: the clock of `lifetime_events` (DHAT's `te`).
    pub events: u64,
    /// Index of the event at which the heap peaked (DHAT's `tg`).
    pub peak_event: Option<u64>,
    /// The profiled process's id.
    #[serde(default)]
    pub pid: u32,
}

/// One logical frame. `file` is relative to the workspace root for user
/// code (as in `LineFigures`), empty when unknown.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    pub file: String,
    pub line: u32,
    pub function: String,
}

/// One logical stack and what happened with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRow {
    /// Indices into `StackTable::frames`, innermost first.
    pub frames: Vec<u32>,
    pub figures: Figures,
    /// Blocks allocated here that were live at the heap peak, and at exit.
    pub peak_blocks: u64,
    pub end_blocks: u64,
    /// The most bytes allocated here live at any one time, and the blocks
    /// live at that moment.
    pub max_bytes: u64,
    pub max_blocks: u64,
    /// Sum of the lifetimes of the blocks allocated here, in heap events.
    pub lifetime_events: u64,
}

/// Groups raw stack ids by their symbolized frames: returns the group of
/// each stack id and each group's frames (location ids, innermost first).
pub fn group_stacks(stacks: &[Vec<u32>]) -> (Vec<u32>, Vec<Vec<u32>>) {
    let mut index: HashMap<&[u32], u32> = HashMap::new();
    let mut groups = Vec::new();
    let group_of = stacks
        .iter()
        .map(|s| {
            *index.entry(s.as_slice()).or_insert_with(|| {
                groups.push(s.clone());
                (groups.len() - 1) as u32
            })
        })
        .collect();
    (group_of, groups)
}

/// The table of `replay` (run with `group_of` from `group_stacks`).
pub fn stack_table(
    replay: &Replay,
    symbols: &Symbols,
    group_of: &[u32],
    groups: &[Vec<u32>],
    root: Option<&Path>,
) -> StackTable {
    let mut raw = vec![StackFigures::default(); groups.len()];
    for (sid, fig) in replay.per_stack.iter().enumerate() {
        if let Some(&g) = group_of.get(sid) {
            raw[g as usize].add(fig);
        }
    }
    let r = |v: f64| v.max(0.0).round() as u64;
    let mut table = StackTable {
        events: replay.events,
        peak_event: replay.peak_event,
        ..StackTable::default()
    };
    let mut frame_ids: HashMap<u32, u32> = HashMap::new();
    for (g, frames) in groups.iter().enumerate() {
        let figures = Figures::from_raw(&raw[g]);
        if figures.is_zero() {
            continue;
        }
        let max = replay.max_live.get(g).copied().unwrap_or_default();
        let frames = frames
            .iter()
            .map(|&loc| {
                *frame_ids.entry(loc).or_insert_with(|| {
                    let l = &symbols.locations[loc as usize];
                    table.frames.push(Frame {
                        file: display_file(&l.file, root),
                        line: l.line,
                        function: l.function.clone(),
                    });
                    (table.frames.len() - 1) as u32
                })
            })
            .collect();
        table.stacks.push(StackRow {
            frames,
            figures,
            peak_blocks: r(raw[g].peak_blocks),
            end_blocks: r(raw[g].end_blocks),
            max_bytes: r(max.bytes),
            max_blocks: r(max.blocks),
            lifetime_events: r(raw[g].lifetime_events),
        });
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::replay::MaxLive;
    use crate::analyze::symbolize::Location;

    #[test]
    fn merges_raw_stacks_with_the_same_frames() {
        let loc = |file: &str, line, function: &str| Location {
            file: file.into(),
            line,
            function: function.into(),
        };
        let symbols = Symbols {
            locations: vec![
                loc("/w/src/main.rs", 5, "app::f"),
                loc("/w/src/main.rs", 9, "app::main"),
                loc("", 0, "0x1234"),
            ],
            // Stacks 0 and 2 are one logical stack (two call instructions
            // on one line); stack 3 has no figures.
            stacks: vec![vec![0, 1], vec![1], vec![0, 1], vec![2]],
            warnings: vec![],
        };
        let (group_of, groups) = group_stacks(&symbols.stacks);
        assert_eq!(group_of, [0, 1, 0, 2]);
        let alloc = |n: f64, bytes: f64| StackFigures {
            allocations: n,
            allocated_bytes: bytes,
            end_bytes: bytes,
            end_blocks: n,
            lifetime_events: 4.0,
            ..StackFigures::default()
        };
        let replay = Replay {
            per_stack: vec![
                alloc(1.0, 10.0),
                alloc(2.0, 6.0),
                alloc(1.0, 30.0),
                StackFigures::default(),
            ],
            max_live: vec![
                MaxLive {
                    bytes: 40.0,
                    blocks: 2.0,
                },
                MaxLive::default(),
                MaxLive::default(),
            ],
            events: 9,
            peak_event: Some(7),
            ..Replay::default()
        };
        let t = stack_table(&replay, &symbols, &group_of, &groups, Some(Path::new("/w")));
        assert_eq!(t.stacks.len(), 2);
        assert_eq!(t.frames[t.stacks[0].frames[0] as usize].file, "src/main.rs");
        assert_eq!(t.stacks[0].frames, [0, 1]);
        assert_eq!(t.stacks[1].frames, [1]);
        let s = &t.stacks[0];
        assert_eq!((s.figures.allocations, s.figures.allocated_bytes), (2, 40));
        assert_eq!(
            (s.end_blocks, s.max_bytes, s.max_blocks, s.lifetime_events),
            (2, 40, 2, 8)
        );
        assert_eq!((t.events, t.peak_event), (9, Some(7)));
    }
}
