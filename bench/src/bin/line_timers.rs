//! Micro benchmark of `#[lineprof::profile]`: one tight loop, marked and
//! unmarked, side by side in one process, alternated for several rounds.
//! Each iteration of the marked loop is three line events (the loop's
//! test and two body lines), so the cost per line hit is
//! `(marked - unmarked) / 3` per iteration. Run it with `LINEPROF=off` too:
//! then the marked loop pays only the timers' one branch per line.
//!
//! Usage: `line_timers [ITERATIONS] [ROUNDS]` (defaults 20000000 and 9).
//! Prints the medians in ns per iteration, and the bare cost of one
//! `rdtsc` (the clock read each timed line pays).

use std::hint::black_box;
use std::time::Instant;

#[lineprof::profile]
fn marked(n: u64) -> u64 {
    let mut x = black_box(1u64);
    for i in 0..n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        x ^= x >> 29;
    }
    x
}

#[inline(never)]
fn unmarked(n: u64) -> u64 {
    let mut x = black_box(1u64);
    for i in 0..n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        x ^= x >> 29;
    }
    x
}

/// The bare cost of the clock the timers read per line (the time-stamp
/// counter), for comparison: on a virtual machine it can dominate.
#[inline(never)]
fn clock_only(n: u64) -> u64 {
    let mut s = 0u64;
    for _ in 0..n {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: rdtsc has no preconditions.
        let t = unsafe { std::arch::x86_64::_rdtsc() };
        #[cfg(not(target_arch = "x86_64"))]
        let t = 0;
        s = s.wrapping_add(t);
    }
    s
}

fn per_iter(f: fn(u64) -> u64, n: u64) -> f64 {
    let t = Instant::now();
    black_box(f(black_box(n)));
    t.elapsed().as_nanos() as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(9);
    let (mut m, mut u, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        m.push(per_iter(marked, n));
        u.push(per_iter(unmarked, n));
        c.push(per_iter(clock_only, n));
    }
    let (m, u, c) = (median(m), median(u), median(c));
    println!("marked_ns_per_iter {m:.2}");
    println!("unmarked_ns_per_iter {u:.2}");
    println!("ns_per_line_hit {:.2}", (m - u) / 3.0);
    println!("rdtsc_ns {c:.2}");
}
