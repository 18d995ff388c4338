//! DHAT's JSON format (`dhatFileVersion` 2, as dhat-rs writes it in
//! "rust-heap" mode), viewable with DHAT's `dh_view.html`.
//!
//! One program point per allocating stack, frames innermost first (`fs`
//! indexes `ftbl`, whose entry 0 is `[root]`). Figures map exactly:
//! `tb`/`tbk` allocated bytes/blocks; `gb`/`gbk` live at the heap peak
//! (t-gmax); `eb`/`ebk` live at exit; `mb`/`mbk` the stack's own largest
//! live bytes and its blocks at that moment. DHAT's clock is instructions
//! and dhat-rs's microseconds; ours is the position in the global order of
//! heap events (`tu` "events"), the only clock the profile keeps per event,
//! so `tl`, `tg` and `te` count heap events. Frames are logical (inlined
//! frames expanded) and have no address, shown as `0x0`.

use serde::Serialize;

use crate::analyze::report::Report;
use crate::analyze::stacks::{Frame, StackTable};

/// A block freed within this many heap events of its allocation counts as
/// short-lived in `dh_view`'s "short-lived" sort.
const SHORT_LIVED_EVENTS: u64 = 100;

#[derive(Serialize)]
#[allow(non_snake_case)] // DHAT's field names.
struct DhatFile {
    dhatFileVersion: u32,
    mode: &'static str,
    verb: &'static str,
    bklt: bool,
    bkacc: bool,
    tu: &'static str,
    Mtu: &'static str,
    tuth: u64,
    cmd: String,
    pid: u32,
    tg: u64,
    te: u64,
    pps: Vec<ProgramPoint>,
    ftbl: Vec<String>,
}

#[derive(Serialize)]
struct ProgramPoint {
    tb: u64,
    tbk: u64,
    tl: u64,
    mb: u64,
    mbk: u64,
    gb: u64,
    gbk: u64,
    eb: u64,
    ebk: u64,
    fs: Vec<usize>,
}

/// dhat-rs's frame form, `ADDR: FUNCTION (FILE:LINE:COLUMN)`.
fn frame_string(f: &Frame) -> String {
    let file = if f.file.is_empty() { "???" } else { &f.file };
    format!("0x0: {} ({file}:{}:0)", f.function, f.line)
}

/// The DHAT file, pretty-printed like dhat-rs's.
pub fn render(report: &Report, table: &StackTable) -> String {
    let mut ftbl = vec!["[root]".to_string()];
    ftbl.extend(table.frames.iter().map(frame_string));
    let pps = table
        .stacks
        .iter()
        .filter(|s| s.figures.allocations > 0)
        .map(|s| ProgramPoint {
            tb: s.figures.allocated_bytes,
            tbk: s.figures.allocations,
            tl: s.lifetime_events,
            mb: s.max_bytes,
            mbk: s.max_blocks,
            gb: s.figures.peak_bytes,
            gbk: s.peak_blocks,
            eb: s.figures.end_bytes,
            ebk: s.end_blocks,
            fs: s.frames.iter().map(|&f| f as usize + 1).collect(),
        })
        .collect();
    let run = &report.run;
    let cmd = if run.command.is_empty() {
        run.executable.path.clone()
    } else {
        run.command.join(" ")
    };
    let file = DhatFile {
        dhatFileVersion: 2,
        mode: "rust-heap",
        verb: "Allocated",
        bklt: true,
        bkacc: false,
        tu: "events",
        Mtu: "Mevents",
        tuth: SHORT_LIVED_EVENTS,
        cmd,
        pid: table.pid,
        tg: table.peak_event.unwrap_or(0),
        te: table.events,
        pps,
        ftbl,
    };
    // Plain structs of strings and integers always serialize.
    let mut out = serde_json::to_string_pretty(&file).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::lines::Figures;
    use crate::analyze::stacks::StackRow;
    use crate::render::testing::report;

    #[test]
    fn program_points_and_frame_table() {
        let frame = |file: &str, line, function: &str| Frame {
            file: file.into(),
            line,
            function: function.into(),
        };
        let table = StackTable {
            frames: vec![frame("src/main.rs", 5, "app::f"), frame("", 0, "0x1234")],
            stacks: vec![
                StackRow {
                    frames: vec![0, 1],
                    figures: Figures {
                        allocations: 3,
                        allocated_bytes: 300,
                        peak_bytes: 200,
                        end_bytes: 100,
                        ..Figures::default()
                    },
                    peak_blocks: 2,
                    end_blocks: 1,
                    max_bytes: 250,
                    max_blocks: 2,
                    lifetime_events: 40,
                },
                // CPU only: not an allocation point.
                StackRow {
                    frames: vec![1],
                    figures: Figures {
                        cpu_samples: 1,
                        ..Figures::default()
                    },
                    ..StackRow::default()
                },
            ],
            events: 90,
            peak_event: Some(12),
            pid: 42,
        };
        let v: serde_json::Value = serde_json::from_str(&render(&report(), &table)).unwrap();
        assert_eq!(v["dhatFileVersion"], 2);
        assert_eq!(v["mode"], "rust-heap");
        assert_eq!((v["tg"].as_u64(), v["te"].as_u64()), (Some(12), Some(90)));
        assert_eq!(v["pid"], 42);
        assert_eq!(
            v["ftbl"],
            serde_json::json!([
                "[root]",
                "0x0: app::f (src/main.rs:5:0)",
                "0x0: 0x1234 (???:0:0)"
            ])
        );
        assert_eq!(
            v["pps"],
            serde_json::json!([{
                "tb": 300, "tbk": 3, "tl": 40, "mb": 250, "mbk": 2,
                "gb": 200, "gbk": 2, "eb": 100, "ebk": 1, "fs": [1, 2]
            }])
        );
    }
}
