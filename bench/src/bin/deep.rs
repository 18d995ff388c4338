//! Deep stacks: the cost of one allocation + free of a 64-byte object at a
//! chosen stack depth (a recursion of real calls), as in an async runtime,
//! a recursive-descent parser or a test harness. Prints nanoseconds per
//! pair; the runner subtracts the System figure from the Tracking one.
//!
//! Usage: `deep ITERATIONS DEPTH` (the recursion's calls; main, std's
//! start and the allocator add about ten frames).

use std::hint::black_box;
use std::time::Instant;

/// The pairs are allocated and freed one real frame below its caller.
use lineprof_bench::box_pairs as leaf;

#[inline(never)]
fn down(depth: u32, iters: u64) -> u64 {
    if depth == 0 {
        return leaf(iters);
    }
    black_box(down(black_box(depth - 1), iters)).wrapping_add(1)
}

fn main() {
    let _profiler = lineprof_bench::start_profiler();
    let mut args = std::env::args().skip(1);
    let iters: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000_000);
    let depth: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let start = Instant::now();
    let acc = down(depth, iters);
    let ns = start.elapsed().as_nanos() as f64 / iters as f64;
    println!("{} depth={depth} ns_per_pair={ns:.1} acc={acc}", lineprof_bench::VARIANT);
}
