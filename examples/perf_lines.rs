//! Self CPU per line from a `perf record --call-graph dwarf` profile,
//! charged by lineprof's rule (tests/common/perf.rs): the reference side
//! of `bench/cpu_agree.py`.
//!
//! `cargo run --release --example perf_lines -- EXE ROOT PERF.DATA`
//! prints `{"samples", "unattributed", "lines": [{"file", "line",
//! "function", "samples"}]}`.

#[path = "../tests/common/perf.rs"]
#[allow(dead_code)] // the recording half is for the tests
mod perf;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [exe, root, data] = &args[..] else {
        eprintln!("usage: perf_lines EXE ROOT PERF.DATA");
        return ExitCode::from(2);
    };
    let result = perf::script(Path::new(data))
        .and_then(|text| perf::attribute(&text, Path::new(exe), Path::new(root)));
    let lines = match result {
        Ok(l) => l,
        Err(e) => {
            eprintln!("perf_lines: {e}");
            return ExitCode::from(2);
        }
    };
    let mut rows: Vec<_> = lines.lines.iter().collect();
    rows.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(b.0)));
    let json = serde_json::json!({
        "samples": lines.samples,
        "unattributed": lines.unattributed,
        "lines": rows
            .iter()
            .map(|((file, line), (function, n))| serde_json::json!({
                "file": file, "line": line, "function": function, "samples": n
            }))
            .collect::<Vec<_>>(),
    });
    println!("{json}");
    ExitCode::SUCCESS
}
