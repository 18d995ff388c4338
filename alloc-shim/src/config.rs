//! Settings from the environment, read once at start without allocating.
//! A bad value gets one line on stderr and the default: the host program
//! must run exactly as it would without lineprof.

use std::ffi::CStr;

use crate::sys;

pub const DEFAULT_DEPTH: usize = 256;
pub const MAX_DEPTH: usize = crate::format::MAX_DEPTH;
pub const DEFAULT_HZ: u32 = 1000;
pub const PATH_MAX: usize = 4096;

pub struct Config {
    pub off: bool,
    /// perf task-clock events (the default, `LINEPROF_CPU=perf`: the asked
    /// rate) or, with `LINEPROF_CPU=timer` or where perf events are refused,
    /// POSIX CPU-clock timers (which fire at the kernel's tick).
    pub cpu_perf: bool,
    /// `LINEPROF_MODE=aggregate`: per-stack figures kept in the process.
    pub aggregate: bool,
    pub sample_bytes: u64,
    pub cpu_hz: u32,
    pub max_depth: usize,
    /// NUL-terminated output path pattern (`%p` not yet replaced).
    pub out: [u8; PATH_MAX],
    pub out_len: usize,
}

pub fn read() -> Config {
    let mut c = Config {
        off: false,
        cpu_perf: true,
        aggregate: false,
        sample_bytes: 0,
        cpu_hz: DEFAULT_HZ,
        max_depth: DEFAULT_DEPTH,
        out: [0; PATH_MAX],
        out_len: 0,
    };
    if let Some(v) = sys::getenv(c"LINEPROF") {
        match v {
            b"off" | b"0" => c.off = true,
            b"" | b"on" | b"1" => {}
            _ => warn(c"LINEPROF", b"expected `off` or `on`; tracking stays on"),
        }
    }
    match sys::getenv(c"LINEPROF_CPU") {
        None | Some(b"") | Some(b"perf") => {}
        Some(b"timer") => c.cpu_perf = false,
        Some(_) => warn(
            c"LINEPROF_CPU",
            b"expected `perf` or `timer`; using perf events where allowed",
        ),
    }
    match sys::getenv(c"LINEPROF_MODE") {
        None | Some(b"") | Some(b"stream") => {}
        Some(b"aggregate") => c.aggregate = true,
        Some(_) => warn(
            c"LINEPROF_MODE",
            b"expected `stream` or `aggregate`; using stream",
        ),
    }
    c.sample_bytes = number(c"LINEPROF_SAMPLE", 0, 1 << 40);
    if c.aggregate && c.sample_bytes > 0 {
        warn(
            c"LINEPROF_SAMPLE",
            b"is ignored with LINEPROF_MODE=aggregate, which records every allocation",
        );
        c.sample_bytes = 0;
    }
    c.cpu_hz = number(c"LINEPROF_HZ", DEFAULT_HZ as u64, 100_000) as u32;
    c.max_depth = number(c"LINEPROF_DEPTH", DEFAULT_DEPTH as u64, MAX_DEPTH as u64) as usize;
    if c.max_depth == 0 {
        warn(c"LINEPROF_DEPTH", b"must be at least 1; using the default");
        c.max_depth = DEFAULT_DEPTH;
    }
    match sys::getenv(c"LINEPROF_OUT") {
        Some(v) if !v.is_empty() && v.len() < PATH_MAX - 32 => {
            c.out[..v.len()].copy_from_slice(v);
            c.out_len = v.len();
        }
        Some(v) if !v.is_empty() => {
            warn(c"LINEPROF_OUT", b"path too long; using lineprof-%p.lprof")
        }
        _ => {}
    }
    if c.out_len == 0 {
        let d = b"lineprof-%p.lprof";
        c.out[..d.len()].copy_from_slice(d);
        c.out_len = d.len();
    }
    c
}

fn number(name: &CStr, default: u64, max: u64) -> u64 {
    let Some(v) = sys::getenv(name) else {
        return default;
    };
    if v.is_empty() {
        return default;
    }
    let mut n = 0u64;
    for &b in v {
        if !b.is_ascii_digit() {
            warn(name, b"is not a whole number; using the default");
            return default;
        }
        n = n.saturating_mul(10).saturating_add((b - b'0') as u64);
    }
    if n > max {
        warn(name, b"is too large; using the default");
        return default;
    }
    n
}

fn warn(name: &CStr, what: &[u8]) {
    sys::stderr(b"lineprof: ");
    sys::stderr(name.to_bytes());
    sys::stderr(b" ");
    sys::stderr(what);
    sys::stderr(b"\n");
}

/// Expands `%p` in `pattern` to `pid` into `out` (NUL-terminated). A forked
/// child whose pattern has no `%p` gets `.<pid>` appended, so that it never
/// overwrites its parent's profile.
pub fn expand_path(pattern: &[u8], pid: u32, forked: bool, out: &mut [u8; PATH_MAX]) {
    let (digits, nd) = sys::decimal(pid);
    let mut n = 0;
    let mut push = |b: u8, n: &mut usize| {
        if *n < PATH_MAX - 1 {
            out[*n] = b;
            *n += 1;
        }
    };
    let mut i = 0;
    let mut had_pid = false;
    while i < pattern.len() {
        if pattern[i] == b'%' && pattern.get(i + 1) == Some(&b'p') {
            for &d in &digits[..nd] {
                push(d, &mut n);
            }
            had_pid = true;
            i += 2;
        } else {
            push(pattern[i], &mut n);
            i += 1;
        }
    }
    if forked && !had_pid {
        push(b'.', &mut n);
        for &d in &digits[..nd] {
            push(d, &mut n);
        }
    }
    out[n] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_pid() {
        let mut out = [0u8; PATH_MAX];
        expand_path(b"/tmp/x-%p.lprof", 42, false, &mut out);
        assert_eq!(
            CStr::from_bytes_until_nul(&out).unwrap().to_bytes(),
            b"/tmp/x-42.lprof"
        );
        expand_path(b"/tmp/x.lprof", 7, true, &mut out);
        assert_eq!(
            CStr::from_bytes_until_nul(&out).unwrap().to_bytes(),
            b"/tmp/x.lprof.7"
        );
    }
}
