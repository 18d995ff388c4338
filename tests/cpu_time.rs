//! CPU time per line, end to end: `cpu_split` spends 75% of its CPU in
//! `heavy`'s loop and 25% in `light`'s, by construction.
//!
//! The bound is statistical, not a retry: each sample falls in `heavy`
//! with probability p = 0.75. With perf task-clock events there is one
//! sample per millisecond of CPU; with the POSIX-timer fallback the kernel
//! fires at its tick (250 Hz on the machines we measured; a sample then
//! stands for ~4 ms and is weighted by the timer's overrun count). Either
//! way ~4 s of CPU gives at least n = 1000 independent samples: the
//! standard error of the share is sqrt(p(1-p)/n) <= 1.4 percentage points,
//! and the 5-point tolerance is 3.6 standard errors (a false failure about
//! 3 times in 10,000 runs).

mod common;
use common::*;

/// Self CPU samples of the user lines of `function`.
fn self_samples(r: &Report, function: &str) -> u64 {
    r.user_lines()
        .iter()
        .filter(|l| l["function"].as_str().unwrap().ends_with(function))
        .map(|l| l["self"]["cpu_samples"].as_u64().unwrap())
        .sum()
}

fn check_split(args: &[&str], backend: &str) {
    let dir = TempDir::new("cpu");
    let out = dir.path().join("cpu.lprof");
    let status = with_room_above_fd_limit(&fixture("cpu_split"))
        .args(args)
        .env("LINEPROF_OUT", &out)
        .env("LINEPROF_CPU", backend)
        .env_remove("LINEPROF_HZ")
        .status()
        .unwrap();
    assert!(status.success());
    let r = report(&out, "cpu_split");
    let heavy = self_samples(&r, "::heavy") as f64;
    let light = self_samples(&r, "::light") as f64;
    let total = r.json["totals"]["cpu_samples"].as_u64().unwrap() as f64;
    let cpu_ns = r.json["totals"]["cpu_time_ns"].as_u64().unwrap();
    assert!(
        cpu_ns >= 3_000_000_000,
        "too little CPU sampled: {cpu_ns} ns"
    );
    // Nearly all the CPU is in the two loops.
    assert!(
        (heavy + light) / total > 0.95,
        "heavy {heavy} + light {light} of {total}"
    );
    let share = heavy / (heavy + light);
    assert!(
        (share - 0.75).abs() < 0.05,
        "heavy's share of self time is {:.1}%, expected 75% ± 5",
        share * 100.0
    );
    // `cpu_samples` counts real samples: with perf events each stands for
    // one 1 ms period, on every line; a timer sample stands for the periods
    // since the last one (at least one). (Which line of `heavy`'s loop
    // holds its samples, the header or the body, is the compiler's choice.)
    for l in r.user_lines() {
        let (samples, ns) = (&l["self"]["cpu_samples"], &l["self"]["cpu_time_ns"]);
        let (samples, ns) = (samples.as_u64().unwrap(), ns.as_u64().unwrap());
        if backend == "perf" {
            assert_eq!(ns, samples * 1_000_000);
        } else {
            assert!(ns >= samples * 1_000_000, "{ns} ns from {samples} samples");
        }
    }
    // The calling line holds heavy's samples in its total. Not quite all:
    // a sample in `heavy`'s first instructions, before it pushes its frame
    // pointer, walks from the caller's frame and misses the calling line
    // (a few in a thousand).
    let call = r.line("acc ^= heavy(n);");
    let on_call = call["total"]["cpu_samples"].as_u64().unwrap() as f64;
    assert!(
        on_call >= 0.98 * heavy,
        "{on_call} of heavy's {heavy} samples on the call"
    );
}

#[test]
fn heavy_function_gets_three_quarters_of_self_time() {
    check_split(&["1", "500"], "perf");
}

#[test]
fn split_holds_across_four_threads() {
    check_split(&["4", "125"], "perf");
}

#[test]
fn split_holds_with_posix_timers() {
    check_split(&["1", "500"], "timer");
}

#[test]
fn split_holds_across_four_threads_with_posix_timers() {
    check_split(&["4", "125"], "timer");
}

#[test]
fn hz_zero_turns_the_sampler_off() {
    let dir = TempDir::new("cpu-off");
    let out = dir.path().join("p.lprof");
    let status = std::process::Command::new(fixture("cpu_split"))
        .args(["1", "20"])
        .env("LINEPROF_OUT", &out)
        .env("LINEPROF_HZ", "0")
        .status()
        .unwrap();
    assert!(status.success());
    let r = report(&out, "cpu_split");
    assert_eq!(r.json["totals"]["cpu_samples"], 0);
    assert_eq!(r.json["run"]["sampling"]["cpu_hz"], 0);
}

/// Runs `cpu_between_allocs` at 4 kHz in `mode`; the profile's path.
fn run_between_allocs(dir: &TempDir, mode: &str) -> std::path::PathBuf {
    let out = dir.path().join(format!("{mode}.lprof"));
    run_sampling(
        "cpu_between_allocs",
        &[],
        &out,
        "4000",
        &[("LINEPROF_MODE", mode)],
    );
    out
}

/// CPU samples find a new stack at nearly every sample; they must not
/// take ids from the heap stacks' space, which would push the ids of heap
/// stacks first used later into longer varints on every heap event. The
/// fixture's heap stacks are first used in 8 phases with CPU-busy phases
/// between them: the heap events' stack ids, read from the file, must be
/// 0, 1, 2, ... in order of first use, and the file's heap stacks exactly
/// the ones heap events use; the report then puts the CPU samples, whose
/// ids are of their own space, on the busy line.
#[test]
fn cpu_samples_leave_heap_stack_ids_dense() {
    use lineprof::format::{self, ChunkKind, Event};
    let dir = TempDir::new("cpu-ids");
    let out = run_between_allocs(&dir, "stream");
    let bytes = std::fs::read(&out).unwrap();
    let chunks = format::split_chunks(&bytes).unwrap();
    assert_eq!(chunks.version, format::STREAM_VERSION);
    let (mut heap_defined, mut cpu_defined) = (0u32, 0u32);
    let mut first_uses = 0u32;
    let mut cpu_samples = 0u64;
    // CPU samples recorded before the last heap stack was first used.
    let mut samples_before_last_new = 0u64;
    let mut samples_so_far = 0u64;
    for c in &chunks.chunks {
        match c.kind {
            ChunkKind::Stacks | ChunkKind::CpuStacks => {
                let (first, stacks) = format::decode_stacks(c.payload).unwrap();
                let end = first + stacks.len() as u32;
                let defined = if c.kind == ChunkKind::Stacks {
                    &mut heap_defined
                } else {
                    &mut cpu_defined
                };
                *defined = (*defined).max(end);
            }
            ChunkKind::Events => {
                format::decode_events(c.payload, |ev| match ev {
                    Event::Alloc { stack, .. } | Event::Free { stack, .. } => {
                        assert!(
                            stack <= first_uses,
                            "heap stack id {stack} first used after only {first_uses} heap stacks"
                        );
                        if stack == first_uses {
                            first_uses += 1;
                            samples_before_last_new = samples_so_far;
                        }
                    }
                    Event::Cpu { .. } | Event::CpuLineprof { .. } | Event::CpuStackCopy { .. } => {
                        cpu_samples += 1;
                        samples_so_far += 1;
                    }
                    Event::Time { .. } => {}
                })
                .unwrap();
            }
            _ => {}
        }
    }
    // 8 phases of 20 stacks of the fixture's own, and the runtime's.
    assert!(first_uses >= 160, "{first_uses} heap stacks");
    assert_eq!(
        heap_defined, first_uses,
        "the file defines heap stack ids the heap events never use"
    );
    assert!(
        samples_before_last_new >= 20,
        "only {samples_before_last_new} CPU samples before the last new heap stack ({cpu_samples} in all): the test shows nothing"
    );
    assert!(cpu_defined > 0 && cpu_defined as u64 <= cpu_samples);
    // The report reads the CPU ids right: the busy loop (its header or
    // body line, the compiler's choice) holds the program's CPU, the heap
    // line its blocks. Aggregate mode, whose CPU samples are counted per
    // stack of the one table, gives the same.
    let agg = run_between_allocs(&dir, "aggregate");
    for (mode, profile) in [("stream", &out), ("aggregate", &agg)] {
        let r = report(profile, "cpu_between_allocs");
        let alloc_line = r.self_at("every heap block of the program's phases");
        assert_eq!(alloc_line.allocations, 8 * 20 * 50, "{mode}");
        let busy = self_samples(&r, "::spin_at");
        let user: u64 = r
            .user_lines()
            .iter()
            .map(|l| l["self"]["cpu_samples"].as_u64().unwrap())
            .sum();
        assert!(
            busy as f64 >= 0.9 * user as f64 && busy >= 20,
            "{mode}: the busy loop has {busy} of {user} samples"
        );
    }
}

/// Samples in the kernel's vDSO (`clock_gettime` behind `Instant::now`)
/// are unwound with the vDSO's own call-frame information: it has no file,
/// so the reader takes the image its own kernel maps (same build-id). No
/// warning, fewer than 1% left unrecovered (before: about 20% of this
/// fixture's samples, with a warning), and the clock line holds most of
/// the time.
#[test]
fn vdso_samples_are_unwound() {
    let dir = TempDir::new("cpu-vdso");
    let out = dir.path().join("clock.lprof");
    run_sampling("cpu_clock", &[], &out, "2000", &[]);
    let r = report(&out, "cpu_clock");
    let totals = &r.json["totals"];
    let samples = totals["cpu_samples"].as_u64().unwrap();
    let unrecovered = totals["unrecovered_cpu_samples"].as_u64().unwrap_or(0);
    assert!(samples > 500, "only {samples} CPU samples");
    assert!(
        unrecovered * 100 < samples,
        "{unrecovered} of {samples} samples not unwound; warnings: {}",
        r.json["warnings"]
    );
    let warnings = r.json["warnings"].to_string();
    assert!(!warnings.contains("vdso"), "{warnings}");
    let clock = r.line("// the clock line")["self"]["cpu_time_ns"]
        .as_u64()
        .unwrap() as f64;
    let all = totals["cpu_time_ns"].as_u64().unwrap() as f64;
    assert!(
        clock > 0.5 * all,
        "the clock line holds {clock} of {all} ns"
    );
}
