//! `lineprof::measure`: exact heap usage of a closure on the calling thread,
//! whether or not tracking is on (`same_figures_with_tracking_off` re-runs
//! this file's tests under `LINEPROF=off`), and untouched by other threads.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lineprof::{measure, Usage};

#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

/// Before std's runtime starts (and so before the first allocation starts
/// the tracker and reads its settings), send the profile this test binary
/// writes at exit to /dev/null, unless the caller chose a path: a test run
/// should not leave lineprof-<pid>.lprof files in the package directory.
#[used]
#[link_section = ".init_array"]
static DISCARD_PROFILE: extern "C" fn() = discard_profile;

extern "C" fn discard_profile() {
    extern "C" {
        fn setenv(
            name: *const std::ffi::c_char,
            value: *const std::ffi::c_char,
            overwrite: i32,
        ) -> i32;
    }
    // SAFETY: NUL-terminated literals; no other thread exists yet.
    unsafe { setenv(c"LINEPROF_OUT".as_ptr(), c"/dev/null".as_ptr(), 0) };
}

fn usage(
    allocations: u64,
    allocated_bytes: u64,
    frees: u64,
    freed_bytes: u64,
    peak_bytes: u64,
) -> Usage {
    Usage {
        allocations,
        allocated_bytes,
        frees,
        freed_bytes,
        net_bytes: allocated_bytes as i64 - freed_bytes as i64,
        peak_bytes,
    }
}

#[test]
fn one_allocation_kept() {
    let (v, u) = measure(|| vec![0u8; 1000]); // 1 alloc of 1000 B, returned
    assert_eq!(u, usage(1, 1000, 0, 0, 1000));
    drop(v);
}

#[test]
fn freeing_what_was_allocated_before() {
    let v = black_box(vec![0u8; 4096]); // allocated before the measure
    let ((), u) = measure(|| drop(v)); // 1 free of 4096 B: net -4096, no peak above the start
    assert_eq!(u, usage(0, 0, 1, 4096, 0));
}

#[test]
fn vec_growth_reallocs_are_free_plus_alloc() {
    let ((), u) = measure(|| {
        let mut v = Vec::new();
        for i in 1..=100u64 {
            v.push(black_box(i)); // 32 B, then reallocs to 64, 128, 256, 512, 1024 B
        }
        drop(v); // 1 free of 1024 B
    });
    assert_eq!(u, usage(6, 2016, 6, 2016, 1024));
}

#[test]
fn nested_measures() {
    let (c, outer) = measure(|| {
        let a = black_box(vec![0u8; 100]); // outer only: 100 B, freed below
        let (c, inner) = measure(|| {
            let b = black_box(vec![0u8; 1000]); // inner peak: 1000 B, freed on the next line
            drop(b);
            black_box(vec![0u8; 10]) // inner: 10 B, returned out of both
        });
        assert_eq!(inner, usage(2, 1010, 1, 1000, 1000));
        drop(a); // outer: 1 free of 100 B
        c
    });
    // The outer peak is the inner one on top of the outer's 100 B.
    assert_eq!(outer, usage(3, 1110, 2, 1100, 1100));
    drop(c);
}

#[test]
fn other_threads_do_not_count() {
    static STOP: AtomicBool = AtomicBool::new(false);
    static CHURNED: AtomicU64 = AtomicU64::new(0);
    let churner = std::thread::spawn(|| {
        while !STOP.load(Ordering::Relaxed) {
            drop(black_box(vec![0u8; 777])); // the other thread's heavy traffic
            CHURNED.fetch_add(1, Ordering::Relaxed);
        }
    });
    let ((), u) = measure(|| {
        let start = CHURNED.load(Ordering::Relaxed);
        // Allocate until the other thread has done 10000 allocations while
        // we were inside the measure; stop after a full round of 64 boxes.
        let mut kept = Vec::with_capacity(64); // 1 alloc of 64 * 8 = 512 B
        while CHURNED.load(Ordering::Relaxed) < start + 10_000 || kept.len() < 64 {
            if kept.len() == 64 {
                kept.clear(); // 64 frees of 16 B
            }
            kept.push(black_box(Box::new([0u64; 2]))); // 16 B each
        }
        drop(kept); // 64 frees of 16 B and 1 free of 512 B
    });
    STOP.store(true, Ordering::Relaxed);
    churner.join().unwrap();
    // n boxes of 16 B in all; every one freed, plus the 512 B vector.
    let boxes = u.allocations - 1;
    assert_eq!(boxes % 64, 0);
    assert_eq!(
        u,
        usage(
            boxes + 1,
            boxes * 16 + 512,
            boxes + 1,
            boxes * 16 + 512,
            512 + 64 * 16
        )
    );
}

#[test]
fn a_panic_inside_does_not_break_later_measures() {
    let caught = std::panic::catch_unwind(|| measure(|| panic!("inside measure")));
    assert!(caught.is_err());
    let (v, u) = measure(|| vec![1u8; 8]); // 1 alloc of 8 B
    assert_eq!(u, usage(1, 8, 0, 0, 8));
    drop(v);
}

#[test]
fn same_figures_with_tracking_off() {
    if std::env::var_os("LINEPROF").is_some() {
        return; // already the re-run
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--skip",
            "same_figures_with_tracking_off",
            "--test-threads",
            "4",
        ])
        .env("LINEPROF", "off")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "under LINEPROF=off:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("6 passed"), "{text}");
}
