//! Folded stacks (Brendan Gregg's collapsed format), the input of
//! `flamegraph.pl`, inferno and speedscope: one line per stack, frames
//! outermost first joined by `;`, then a space and a count.
//!
//! The count is the figure `--sort` names (allocated bytes by default).
//! Stacks whose count is zero or negative (an increment can be) are left
//! out: flame graphs only draw positive widths.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::frame_label;
use crate::analyze::lines::{Figures, SortKey};
use crate::analyze::stacks::StackTable;

/// The count of one stack for `key`: CPU is in samples, as flame graph
/// tools expect; everything else as in the tables.
fn count(key: SortKey, f: &Figures) -> i128 {
    match key {
        SortKey::Cpu => f.cpu_samples as i128,
        _ => key.value(f),
    }
}

/// A frame as one field of a folded line: `;` separates frames, so one
/// inside a name (`[u8; 4]`) becomes `,`; line breaks cannot occur in a
/// line-oriented format either.
fn folded_frame(label: &str) -> String {
    label.replace(';', ",").replace(['\n', '\r'], " ")
}

/// Lines sorted by stack, so equal profiles give equal files.
pub fn render(table: &StackTable, key: SortKey) -> String {
    let labels: Vec<String> = table
        .frames
        .iter()
        .map(|f| folded_frame(&frame_label(f)))
        .collect();
    let mut folded: BTreeMap<String, i128> = BTreeMap::new();
    for row in &table.stacks {
        let n = count(key, &row.figures);
        if n <= 0 || row.frames.is_empty() {
            continue;
        }
        let stack: Vec<&str> = row
            .frames
            .iter()
            .rev()
            .map(|&f| labels[f as usize].as_str())
            .collect();
        *folded.entry(stack.join(";")).or_default() += n;
    }
    let mut out = String::new();
    for (stack, n) in folded {
        let _ = writeln!(out, "{stack} {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::stacks::{Frame, StackRow};

    pub fn frame(file: &str, line: u32, function: &str) -> Frame {
        Frame {
            file: file.into(),
            line,
            function: function.into(),
        }
    }

    fn row(frames: &[u32], bytes: u64, cpu: u64) -> StackRow {
        StackRow {
            frames: frames.to_vec(),
            figures: Figures {
                allocations: 1,
                allocated_bytes: bytes,
                increment_bytes: bytes as i64,
                cpu_samples: cpu,
                cpu_time_ns: cpu * 1_000_000,
                ..Figures::default()
            },
            ..StackRow::default()
        }
    }

    #[test]
    fn outermost_first_with_counts_by_key() {
        let table = StackTable {
            frames: vec![
                frame(
                    "/rustc/abc/library/alloc/src/vec/mod.rs",
                    10,
                    "alloc::vec::Vec<T>::push",
                ),
                frame("src/main.rs", 5, "app::<impl [u8; 4]>::fill"),
                frame("src/main.rs", 9, "app::main"),
                frame("", 0, "0x1234"),
            ],
            stacks: vec![
                row(&[0, 1, 2], 4096, 0),
                row(&[1, 2], 80, 3),
                row(&[3], 0, 2),
            ],
            ..StackTable::default()
        };
        assert_eq!(
            render(&table, SortKey::Allocated),
            "app::main (src/main.rs:9);app::<impl [u8, 4]>::fill (src/main.rs:5) 80\n\
             app::main (src/main.rs:9);app::<impl [u8, 4]>::fill (src/main.rs:5);\
             alloc::vec::Vec<T>::push (/rustc/abc/library/alloc/src/vec/mod.rs:10) 4096\n"
        );
        assert_eq!(
            render(&table, SortKey::Cpu),
            "0x1234 2\napp::main (src/main.rs:9);app::<impl [u8, 4]>::fill (src/main.rs:5) 3\n"
        );
        assert_eq!(render(&table, SortKey::End), "");
    }
}
