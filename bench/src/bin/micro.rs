//! Micro benchmark: the cost of one allocation + free of a 64-byte object
//! at a stack depth of about ten frames. Prints nanoseconds per pair; the
//! runner subtracts the System figure from the Tracking one.
//!
//! Usage: `micro [ITERATIONS] [THREADS] [parts]` (defaults 5000000 and 1).
//! With several threads the iterations are split between them and they
//! run at once, which shows what the tracker's shared state costs under
//! contention; compare CPU time rather than wall time there. With `parts`
//! (a `tracking` build, profiler recording), it then times each part of
//! the heap-event path on its own at the same depth
//! (`lineprof::__bench`), one `part=NAME<TAB>ns=NS<TAB>frames=N` line each.

use std::hint::black_box;
use std::time::Instant;

/// The pairs are allocated and freed one real frame below its caller.
use lineprof_bench::box_pairs as leaf;

// Nine more frames above `leaf`, each a real call (not inlined): `d9`
// calls `d8` ... calls `d1` calls the `leaf` of the module they are in.
macro_rules! levels {
    () => {
        levels!(d1 leaf, d2 d1, d3 d2, d4 d3, d5 d4, d6 d5, d7 d6, d8 d7, d9 d8);
    };
    ($($name:ident $next:ident),*) => {$(
        #[inline(never)]
        fn $name(iters: u64) -> u64 {
            black_box($next(black_box(iters))).wrapping_add(1)
        }
    )*};
}
levels!();

/// The parts, run from where `leaf`'s allocations call the allocator:
/// `lineprof::__bench::run` walks from its own frame, as the recording
/// function does from its own, two calls below `leaf` (the allocator
/// entry points).
#[cfg(feature = "tracking")]
mod parts {
    use super::black_box;

    thread_local! {
        static PART: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        static RESULT: std::cell::Cell<Option<(f64, usize)>> = const { std::cell::Cell::new(None) };
    }

    #[inline(never)]
    fn alloc_entry(iters: u64) -> u64 {
        let r = lineprof::__bench::run(PART.with(|p| p.get()), black_box(iters));
        RESULT.with(|c| c.set(r));
        black_box(0)
    }
    #[inline(never)]
    fn leaf(iters: u64) -> u64 {
        black_box(alloc_entry(black_box(iters))).wrapping_add(1)
    }
    levels!();

    /// One `part=NAME<TAB>ns=NS<TAB>frames=N` line per part, nanoseconds
    /// per event. The encoding's result is its bytes in all; the seal's,
    /// per 256 KiB chunk, is spread over the events such a chunk holds.
    pub fn run_all(iters: u64) {
        let mut bytes_per_event = 0.0;
        for (i, name) in lineprof::__bench::PARTS.iter().enumerate() {
            PART.with(|p| p.set(i));
            let seal = name.starts_with("chunk seal");
            black_box(d9(black_box(if seal { 200 } else { iters })));
            let Some((ns, frames)) = RESULT.with(|c| c.get()) else {
                println!("part={name}\tns=-\tframes=0");
                continue;
            };
            if name.starts_with("event encoding") {
                bytes_per_event = frames as f64 / iters as f64;
                println!("part={name} ({bytes_per_event:.1} bytes)\tns={ns:.3}\tframes=0");
            } else if seal && bytes_per_event > 0.0 {
                let per_event = ns / (256.0 * 1024.0 / bytes_per_event);
                println!("part={name}\tns={per_event:.3}\tframes=0");
            } else {
                println!("part={name}\tns={ns:.3}\tframes={frames}");
            }
        }
    }
}

fn main() {
    let _profiler = lineprof_bench::start_profiler();
    let iters: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ITERATIONS must be a whole number"))
        .unwrap_or(5_000_000);
    let threads: u64 = std::env::args()
        .nth(2)
        .map(|a| a.parse().expect("THREADS must be a whole number"))
        .unwrap_or(1)
        .max(1);
    let with_parts = std::env::args().nth(3).as_deref() == Some("parts");
    black_box(d9(black_box(1000))); // warm up: tracker started, stack interned
    let t = Instant::now();
    let acc = if threads == 1 {
        black_box(d9(black_box(iters)))
    } else {
        let per_thread = iters / threads;
        let handles: Vec<_> = (0..threads)
            .map(|_| std::thread::spawn(move || black_box(d9(black_box(per_thread)))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold(0, u64::wrapping_add)
    };
    let ns = t.elapsed().as_nanos() as f64 / iters as f64;
    println!(
        "{} ns_per_alloc_free={ns:.2} (acc {acc})",
        lineprof_bench::VARIANT
    );
    if with_parts {
        #[cfg(feature = "tracking")]
        parts::run_all(iters.min(2_000_000));
    }
}
