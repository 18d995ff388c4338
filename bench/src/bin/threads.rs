//! Many short threads, two at a time, each making a few allocations: what
//! starting and ending a thread costs under lineprof (a test suite runs
//! each test on a thread of its own). `threads N K`: N threads, K
//! formatted strings each.

#[inline(never)]
fn work(seed: usize, n: usize) -> usize {
    let mut v: Vec<String> = Vec::new();
    for i in 0..n {
        v.push(format!("{seed}-{i}"));
    }
    v.iter().map(|s| s.len()).sum()
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().unwrap());
    let threads = args.next().unwrap_or(20_000);
    let per = args.next().unwrap_or(10);
    let mut total = 0;
    for k in 0..threads / 2 {
        let a = std::thread::spawn(move || work(2 * k, per));
        let b = std::thread::spawn(move || work(2 * k + 1, per));
        total += a.join().unwrap() + b.join().unwrap();
    }
    println!("{} {total}", lineprof_bench::VARIANT);
}
