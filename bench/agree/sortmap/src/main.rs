//! A word concordance: which positions each word of a generated text is
//! at, in a BTreeMap of owned strings, then words sorted by frequency and
//! bigrams counted in an IndexMap.
use std::collections::BTreeMap;

use indexmap::IndexMap;

#[cfg(feature = "lineprof")]
#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

const SYLLABLES: [&str; 16] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "an", "el", "or", "us", "qua", "zen", "pri", "do",
];

fn words(n: usize) -> Vec<String> {
    let mut seed = 0x853c_49e6_748f_ea9bu64;
    (0..n)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = 1 + (seed >> 60) as usize % 4;
            let mut w = String::new();
            for k in 0..len {
                w.push_str(SYLLABLES[(seed >> (8 + 4 * k)) as usize & 15]);
            }
            w
        })
        .collect()
}

fn concordance(words: &[String]) -> BTreeMap<String, Vec<u32>> {
    let mut map: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (i, w) in words.iter().enumerate() {
        map.entry(w.clone()).or_default().push(i as u32);
    }
    map
}

fn bigrams(words: &[String]) -> IndexMap<String, u32> {
    let mut counts = IndexMap::new();
    for pair in words.windows(2) {
        *counts.entry(format!("{} {}", pair[0], pair[1])).or_insert(0) += 1;
    }
    counts
}

fn main() {
    let n: usize = std::env::args().nth(1).map_or(1_000_000, |a| a.parse().unwrap());
    let words = words(n);
    let map = concordance(&words);
    let mut by_count: Vec<(&String, usize)> = map.iter().map(|(w, p)| (w, p.len())).collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut sorted = words.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let pairs = bigrams(&words);
    let mut top: Vec<(&String, &u32)> = pairs.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    println!(
        "{} words, {} distinct, {} bigrams, most {} ({}), top bigram {} ({})",
        words.len(),
        sorted.len(),
        pairs.len(),
        by_count[0].0,
        by_count[0].1,
        top[0].0,
        top[0].1
    );
}
