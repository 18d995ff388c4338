//! Hostile hosts (issue 11): for each condition the program behaves as it
//! does without lineprof (same stdout and exit status, stderr gains only
//! `lineprof:` lines), the profile up to the problem is kept and readable,
//! and the report says what was lost and why. Limits are set with the
//! shell's `ulimit` in front of the fixture.
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{fixture, report, stderr, stdout, TempDir};

/// Runs `exe args` under `bash -c "<limits>; exec ..."` with `env`.
fn run_limited(limits: &str, exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("{limits}\nexec \"$@\""))
        .arg("bash")
        .arg(exe)
        .args(args)
        .env_remove("LINEPROF")
        .env_remove("LINEPROF_OUT")
        .env_remove("LINEPROF_CPU")
        .env_remove("LINEPROF_HZ")
        .env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::output_retrying_busy(&mut cmd)
}

/// `run_limited` with no arguments, the profile to `out` and the perf
/// backend sampling at `hz`.
fn run_perf_sampled(limits: &str, exe: &Path, out: &Path, hz: &str) -> Output {
    let env = [
        ("LINEPROF_OUT", out.to_str().unwrap()),
        ("LINEPROF_CPU", "perf"),
        ("LINEPROF_HZ", hz),
    ];
    run_limited(limits, exe, &[], &env)
}

/// The number that ends the fixture's stdout.
fn last_number(o: &Output) -> u64 {
    let text = stdout(o);
    let last = text.trim().rsplit(' ').next().unwrap_or("");
    last.parse()
        .unwrap_or_else(|_| panic!("no number at the end of stdout: {text:?}"))
}

/// The host's own behaviour: exit 0 and the given stdout; stderr has only
/// lineprof's lines.
fn assert_unchanged(o: &Output, expected_stdout: &str) {
    assert!(
        o.status.success(),
        "exit {:?}; stderr: {}",
        o.status,
        stderr(o)
    );
    assert_eq!(stdout(o), expected_stdout);
    for line in stderr(o).lines() {
        assert!(line.starts_with("lineprof:"), "foreign stderr line: {line}");
    }
}

fn warnings(r: &common::Report) -> Vec<String> {
    r.json["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The number in `text` just before `word`.
fn number_before(text: &str, word: &str) -> u64 {
    let i = text
        .find(word)
        .unwrap_or_else(|| panic!("no `{word}` in {text}"));
    text[..i]
        .split_whitespace()
        .last()
        .unwrap()
        .trim_start_matches('(')
        .parse()
        .unwrap()
}

#[test]
fn file_size_limit_never_kills_the_host() {
    let exe = fixture("hostile_fsize");
    let plain = run_limited("", &exe, &[], &[("LINEPROF", "off")]);
    let dir = TempDir::new("fsize");
    let out = dir.path().join("f.lprof");
    // 1 MiB: room for a few 256 KiB chunks of the 800,000 events.
    let o = run_limited(
        "ulimit -f 1024",
        &exe,
        &[],
        &[("LINEPROF_OUT", out.to_str().unwrap())],
    );
    assert_unchanged(&o, &stdout(&plain));
    assert!(
        stderr(&o).contains("lineprof: stopped writing the profile"),
        "{}",
        stderr(&o)
    );
    let len = std::fs::metadata(&out).unwrap().len();
    assert!(
        len > 256 * 1024 && len <= 1024 * 1024,
        "profile is {len} bytes"
    );
    let r = report(&out, "hostile_fsize");
    let w = warnings(&r).join("\n");
    assert!(w.contains("file size limit reached (ulimit -f)"), "{w}");
    let lost_chunks = number_before(&w, "chunks (");
    assert!(lost_chunks >= 1, "{w}");
    // What was read plus what was lost is every event of the loop.
    let read = r.self_at("hostile_fsize.rs:10");
    let lost = number_before(&w, "heap events were lost");
    assert!(read.allocations > 0, "the profile before the limit is kept");
    // (Each block is freed on the next line: two events per allocation.)
    assert!(2 * read.allocations + lost >= 800_000, "{read:?} + {lost}");
}

#[test]
fn descriptors_stay_out_of_the_hosts_range() {
    let exe = fixture("hostile_fds");
    for limits in ["ulimit -n 64", "ulimit -Sn 64"] {
        for (args, cpu) in [
            (&[][..], "timer"),
            (&["threads"][..], "timer"),
            (&["threads"][..], "perf"),
        ] {
            let plain = run_limited(limits, &exe, args, &[("LINEPROF", "off")]);
            assert!(stdout(&plain).starts_with("opened "), "{}", stdout(&plain));
            let dir = TempDir::new("fds");
            let out = dir.path().join("d.lprof");
            let o = run_limited(
                limits,
                &exe,
                args,
                &[
                    ("LINEPROF_OUT", out.to_str().unwrap()),
                    ("LINEPROF_CPU", cpu),
                ],
            );
            assert_unchanged(&o, &stdout(&plain));
            let r = report(&out, "hostile_fds");
            assert!(
                r.self_at("vec![1u8; 64]").allocations > 0,
                "{limits} {args:?} {cpu}"
            );
        }
    }
}

#[test]
fn address_space_is_reserved_lazily() {
    let exe = fixture("hostile_as");
    let dir = TempDir::new("as");
    let out = dir.path().join("a.lprof");
    let o = run_limited(
        "ulimit -v 2000000",
        &exe,
        &[],
        &[("LINEPROF_OUT", out.to_str().unwrap())],
    );
    assert_unchanged(&o, "allocated 1200000000 bytes\n");
    let r = report(&out, "hostile_as");
    assert_eq!(r.self_at("hostile_as.rs:7").allocated_bytes, 1_200_000_000);
}

fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn an_exec_of_the_same_process_writes_its_own_file() {
    let exe = fixture("hostile_writers");
    let dir = TempDir::new("exec");
    let out = dir.path().join("e.lprof");
    let o = run_limited(
        "",
        &exe,
        &["exec"],
        &[("LINEPROF_OUT", out.to_str().unwrap())],
    );
    assert_unchanged(&o, "solo kept 1000\n");
    assert!(stderr(&o).contains("is in use by another process (or by this one before it exec'd)"));
    let files = files_in(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    let first = report(&files[0], "hostile_writers");
    assert!(first.self_at("hostile_writers.rs:30").allocations > 0);
    assert!(
        !first.has("hostile_writers.rs:14"),
        "the second image's events are not in the first file"
    );
    assert!(warnings(&first).join("\n").contains("exec'd a new program"));
    let second = report(&files[1], "hostile_writers");
    // 1000 blocks and the vector's 9 growths.
    assert_eq!(second.self_at("hostile_writers.rs:14").allocations, 1009);
    assert_eq!(
        second.self_at("hostile_writers.rs:18").allocations,
        10 * 2048
    );
    assert!(!second.has("hostile_writers.rs:30"));
}

#[test]
fn two_processes_with_one_path_never_mix() {
    let exe = fixture("hostile_writers");
    let dir = TempDir::new("two");
    let out = dir.path().join("w.lprof");
    let spawn = || {
        Command::new(&exe)
            .arg("solo")
            .env("LINEPROF_OUT", &out)
            .env_remove("LINEPROF")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_unchanged(&a, "solo kept 1000\n");
    assert_unchanged(&b, "solo kept 1000\n");
    let files = files_in(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    for f in &files {
        let r = report(f, "hostile_writers");
        assert_eq!(
            r.self_at("hostile_writers.rs:14").allocations,
            1009,
            "{f:?}"
        );
        assert_eq!(
            r.self_at("hostile_writers.rs:18").allocations,
            10 * 2048,
            "{f:?}"
        );
        assert!(warnings(&r).is_empty(), "{:?}", warnings(&r));
    }
}

#[test]
fn a_full_disk_stops_writing_cleanly_and_is_reported() {
    let mnt = TempDir::new("diskfull");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(mnt.path())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(mnt.path());
    let exe = fixture("hostile_disk_full");
    let out = mnt.path().join("p.lprof");
    let o = run_limited(
        "",
        &exe,
        &[mnt.path().to_str().unwrap()],
        &[("LINEPROF_OUT", out.to_str().unwrap())],
    );
    assert_unchanged(&o, "done\n");
    let r = report(&out, "hostile_disk_full");
    let w = warnings(&r).join("\n");
    assert!(w.contains("disk full (ENOSPC)"), "{w}");
    assert!(number_before(&w, "chunks (") > 0, "{w}");
    assert!(!w.contains("killed"), "{w}");
    assert!(r.self_at("hostile_disk_full.rs:15").allocations > 0);
}

#[test]
fn host_signal_handler_allocations_are_recorded_or_counted() {
    let exe = fixture("hostile_signal_alloc");
    let dir = TempDir::new("sigalloc");
    let out = dir.path().join("s.lprof");
    let o = run_perf_sampled("", &exe, &out, "20000");
    assert!(o.status.success(), "{}", stderr(&o));
    let n = last_number(&o);
    assert!(n > 0, "the host's timer ticked");
    let r = report(&out, "hostile_signal_alloc");
    let w = warnings(&r).join("\n");
    let dropped = if w.contains("signal handlers landed") {
        number_before(&w, "heap events of the program's own signal handlers")
    } else {
        0
    };
    let at = r.self_at("hostile_signal_alloc.rs:16");
    // Each handler run allocates (and frees) one block: every allocation is
    // recorded or counted as dropped (which counts the frees too).
    assert!(at.allocations <= n, "{at:?}");
    assert!(at.allocations + dropped >= n, "{at:?} of {n}, {w}");
}

#[test]
fn a_dlclosed_library_leaves_the_host_running() {
    let cc = ["cc", "gcc"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(cc) = cc else {
        eprintln!("skipped: no C compiler");
        return;
    };
    let lib_dir = common::repo().join("fixtures/cdylib");
    let build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(lib_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(common::repo().join("fixtures/target-cdylib"))
        .env("RUSTFLAGS", "-C force-frame-pointers=yes")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", stderr(&build));
    let lib = common::repo().join("fixtures/target-cdylib/release/liblineprof_fixture_cdylib.so");
    let dir = TempDir::new("dlclose");
    let host = dir.path().join("dlclose_host");
    let c = Command::new(cc)
        .args(["-g", "-O1", "-o"])
        .arg(&host)
        .arg(common::repo().join("fixtures/c/dlclose_host.c"))
        .args(["-ldl", "-lpthread"])
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", stderr(&c));
    let plain = run_limited("", &host, &[lib.to_str().unwrap()], &[("LINEPROF", "off")]);
    assert_unchanged(&plain, "host done 1\n");
    for hz in ["1000", "5000"] {
        let out = dir.path().join(format!("c{hz}.lprof"));
        let o = run_limited(
            "",
            &host,
            &[lib.to_str().unwrap()],
            &[("LINEPROF_OUT", out.to_str().unwrap()), ("LINEPROF_HZ", hz)],
        );
        assert_unchanged(&o, "host done 1\n");
        assert!(std::fs::metadata(&out).unwrap().len() > 0);
    }
}

#[test]
fn a_thread_that_blocks_signals_is_not_killed_and_is_sampled_again() {
    let exe = fixture("hostile_blocked_signal");
    let dir = TempDir::new("blocked");
    let out = dir.path().join("b.lprof");
    // 10 kHz for 0.4 s with every signal blocked: one signal queued per
    // period would pass a pending limit of 64 within 7 ms, and the kernel
    // would fall back to SIGIO, which kills.
    let o = run_perf_sampled("ulimit -i 64", &exe, &out, "10000");
    assert!(o.status.success(), "exit {:?}: {}", o.status, stderr(&o));
    let held = last_number(&o);
    // At most one of ours (a standard signal is pending or not); a little
    // room for other processes of this user on a shared machine.
    assert!(held <= 4, "{held} signals queued while blocked");
    let r = report(&out, "hostile_blocked_signal");
    // A line with no sample and no allocation is not in the report.
    let samples = |snippet: &str| {
        if r.has(snippet) {
            r.line(snippet)["total"]["cpu_samples"].as_u64().unwrap()
        } else {
            0
        }
    };
    let (blocked, unblocked) = (
        samples("hostile_blocked_signal.rs:51"),
        samples("hostile_blocked_signal.rs:57"),
    );
    // Nothing is delivered while blocked (the one pending sample lands at
    // the unblocking); afterwards sampling goes on: ~4000 samples with perf
    // events, ~100 with the timer fallback at a 250 Hz tick.
    assert!(blocked <= 2, "{blocked} samples while blocked");
    assert!(unblocked >= 50, "{unblocked} samples after unblocking");
}
