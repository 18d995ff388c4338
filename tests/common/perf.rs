//! `perf record` as an independent reference for lineprof's self CPU per
//! line: record a program with `perf record -e cpu-clock --call-graph
//! dwarf` (perf copies the stack at each sample and unwinds it with the
//! modules' call-frame information), then charge each sample to a line by
//! lineprof's rule (SPEC.md, "Figures per line"), written here again
//! without lineprof's code: the innermost frame outside the Rust standard
//! library, C code and lineprof.
//!
//! - C code: a frame in any module but the executable (glibc, the vDSO,
//!   the kernel), or an executable address with no line information or a
//!   C source file;
//! - the standard library: sources under `/rustc/`, the crates std vendors
//!   (`/rust/deps/`), or an installed `rust-src`;
//! - lineprof: the shim's sources and the `#[global_allocator]` plumbing
//!   (`__rust_alloc`, `__rg_alloc`, ...).
//!
//! Executable addresses are symbolized with addr2line, inlined frames
//! expanded (innermost first). Used by `tests/cpu_vs_perf.rs` and by
//! `examples/perf_lines.rs` (which `bench/cpu_agree.py` runs on real
//! programs); kept free of the rest of `tests/common` for that reason.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

/// One line: (file, line number). `file` is relative to the project root
/// when it is under it, else the path in the debug info.
pub type LineKey = (String, u32);

/// perf's samples of one run, charged to lines.
#[derive(Debug, Default)]
pub struct PerfLines {
    /// Samples of the program (all its threads).
    pub samples: u64,
    /// Samples with no frame outside std, C code and lineprof.
    pub unattributed: u64,
    /// Samples per line, with the function name of the charged frame.
    pub lines: HashMap<LineKey, (String, u64)>,
}

/// Whether `perf record` works here; else why not.
pub fn usable() -> Result<(), String> {
    let data = std::env::temp_dir().join(format!("lineprof-perf-probe-{}", std::process::id()));
    let out = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-o"])
        .arg(&data)
        .args(["--", "true"])
        .output()
        .map_err(|e| format!("perf is not installed ({e}); install linux-perf"))?;
    let _ = std::fs::remove_file(&data);
    if !out.status.success() {
        return Err(format!(
            "perf record is refused here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Runs `cmd` (its program and arguments set) under `perf record` at `hz`
/// samples per second of CPU (a fixed period of the cpu-clock event),
/// writing `data`. The command's environment is kept.
pub fn record(cmd: &Command, hz: u64, data: &Path) -> Result<(), String> {
    let mut perf = Command::new("perf");
    perf.args(["record", "-q", "-e", "cpu-clock", "-c"])
        .arg((1_000_000_000 / hz).to_string())
        .args(["--call-graph", "dwarf", "-o"])
        .arg(data)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => perf.env(k, v),
            None => perf.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        perf.current_dir(dir);
    }
    let status = perf
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run perf: {e}"))?;
    if !status.success() {
        return Err(format!("perf record of {:?} failed", cmd.get_program()));
    }
    Ok(())
}

/// `perf script` of `data`: one block per sample, one `addr sym+0xoff
/// (dso)` line per frame, innermost first.
pub fn script(data: &Path) -> Result<String, String> {
    let out = Command::new("perf")
        .args([
            "script",
            "-F",
            "comm,tid,ip,sym,symoff,dso",
            "--no-demangle",
            "--no-inline",
            "-i",
        ])
        .arg(data)
        .output()
        .map_err(|e| format!("cannot run perf script: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "perf script failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where a logical frame belongs, by lineprof's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Attributable,
    /// Standard library, C code or lineprof: look further out.
    Skipped,
}

fn kind_of(file: Option<&str>, function: Option<&str>) -> FrameKind {
    let Some(file) = file else {
        return FrameKind::Skipped;
    };
    let std = file.starts_with("/rustc/")
        || file.contains("/rust/deps/")
        || file.contains("/rustlib/src/rust/");
    let ext = file.rsplit_once('.').map_or("", |(_, e)| e);
    let c = matches!(ext, "c" | "h" | "cc" | "cpp" | "S" | "s" | "asm");
    let lineprof = file.contains("alloc-shim/src/")
        || function.is_some_and(|f| f.contains("__rust_") || f.contains("__rg_"));
    if std || c || lineprof {
        FrameKind::Skipped
    } else {
        FrameKind::Attributable
    }
}

/// Charges the samples of `perf script` output (see [`script`]) of a
/// process running `exe` to lines. `root`: files under it are keyed
/// relative to it. `comm`: samples of other commands (perf itself before
/// the exec) are left out.
pub fn attribute(text: &str, exe: &Path, root: &Path) -> Result<PerfLines, String> {
    let symbols = symbol_addresses(exe)?;
    let loader = addr2line::Loader::new(exe)
        .map_err(|e| format!("cannot read the debug info of {}: {e}", exe.display()))?;
    let exe_name = exe.file_name().unwrap().to_string_lossy().into_owned();
    let comm: String = exe_name.chars().take(15).collect();
    let root = format!("{}/", root.display());
    let mut cache: HashMap<u64, Option<(LineKey, String)>> = HashMap::new();
    // `addr` is in the function that starts at `start`.
    let mut charge = |addr: u64, start: u64| -> Option<(LineKey, String)> {
        cache
            .entry(addr)
            .or_insert_with(|| {
                let mut frames = Vec::new();
                let mut iter = loader.find_frames(addr).ok()?;
                while let Ok(Some(f)) = iter.next() {
                    let function = f
                        .function
                        .as_ref()
                        .and_then(|n| n.demangle().ok())
                        .map(|n| n.into_owned());
                    let loc = f.location.as_ref();
                    frames.push((loc.and_then(|l| l.file), loc.and_then(|l| l.line), function));
                }
                let last = frames.len().checked_sub(1)?;
                for (i, (file, line, function)) in frames.into_iter().enumerate() {
                    if kind_of(file, function.as_deref()) == FrameKind::Skipped {
                        continue;
                    }
                    // Line 0 (code the compiler generated): an inlined
                    // frame's code is its caller's, on the call's line; the
                    // function's own is on the function's first line.
                    let line = match line {
                        Some(line) => line,
                        None if i < last => continue,
                        None => loader.find_location(start).ok()??.line?,
                    };
                    let file = file?;
                    let file = file.strip_prefix(&root).unwrap_or(file).to_string();
                    return Some(((file, line), function.unwrap_or_default()));
                }
                None
            })
            .clone()
    };
    let mut out = PerfLines::default();
    for sample in text.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let mut lines = sample.lines();
        // The header: `comm tid`; then the frames.
        let Some(head) = lines.next() else { continue };
        if !head.trim_start().starts_with(&comm) {
            continue;
        }
        out.samples += 1;
        let mut charged = None;
        for (i, frame) in lines.map(str::trim).filter(|l| !l.is_empty()).enumerate() {
            if !frame.ends_with(&format!("/{exe_name})")) {
                continue; // C code: another module, the vDSO, the kernel
            }
            let Some((start, off)) = frame
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.rsplit_once("+0x"))
                .and_then(|(sym, off)| {
                    Some((*symbols.get(sym)?, u64::from_str_radix(off, 16).ok()?))
                })
            else {
                continue;
            };
            // A caller's address is a return address: look up the call.
            let probe = if i == 0 { start + off } else { start + off - 1 };
            if let Some(c) = charge(probe, start) {
                charged = Some(c);
                break;
            }
        }
        match charged {
            Some((key, function)) => {
                let e = out.lines.entry(key).or_insert((function, 0));
                e.1 += 1;
            }
            None => out.unattributed += 1,
        }
    }
    Ok(out)
}

/// Function symbol addresses of `exe` by (mangled) name.
fn symbol_addresses(exe: &Path) -> Result<HashMap<String, u64>, String> {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(exe).map_err(|e| format!("cannot read {}: {e}", exe.display()))?;
    let file = object::File::parse(&*data)
        .map_err(|e| format!("{} is not an ELF file: {e}", exe.display()))?;
    Ok(file
        .symbols()
        .filter_map(|s| Some((s.name().ok()?.to_string(), s.address())))
        .collect())
}
