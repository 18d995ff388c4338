//! The benchmark workload: a serde_json round trip and grouping of
//! generated customer records, the kind of allocation-heavy code that a
//! service or a batch job runs. Deterministic (a fixed-seed generator), so
//! every variant does exactly the same allocations; prints a checksum so
//! that the runner can check that all variants computed the same thing.
//!
//! Usage: `workload [RECORDS]` (default 50000: about 2.6M allocations, 0.3 s untracked).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Address {
    street: String,
    city: String,
    zip: String,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Record {
    id: u64,
    name: String,
    email: String,
    address: Address,
    tags: Vec<String>,
    scores: Vec<f64>,
    active: bool,
}

/// xorshift64*: deterministic and allocation-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const FIRST: &[&str] = &["Ada", "Grace", "Linus", "Barbara", "Ken", "Dennis", "Margaret", "Alan"];
const LAST: &[&str] = &["Lovelace", "Hopper", "Torvalds", "Liskov", "Thompson", "Ritchie", "Hamilton"];
const CITIES: &[&str] = &[
    "Berlin", "Lisbon", "Osaka", "Lagos", "Lima", "Oslo", "Quito", "Perth", "Austin", "Dakar",
    "Hanoi", "Turin",
];
const TAGS: &[&str] = &["new", "vip", "churned", "trial", "beta", "partner", "eu", "us", "apac"];

fn generate(n: usize, rng: &mut Rng) -> Vec<Record> {
    (0..n as u64)
        .map(|id| {
            let first = FIRST[rng.below(FIRST.len() as u64) as usize];
            let last = LAST[rng.below(LAST.len() as u64) as usize];
            let ntags = 1 + rng.below(3) as usize;
            Record {
                id,
                name: format!("{first} {last}"),
                email: format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), id),
                address: Address {
                    street: format!("{} Main Street", 1 + rng.below(999)),
                    city: CITIES[rng.below(CITIES.len() as u64) as usize].to_string(),
                    zip: format!("{:05}", rng.below(100_000)),
                },
                tags: (0..ntags)
                    .map(|_| TAGS[rng.below(TAGS.len() as u64) as usize].to_string())
                    .collect(),
                scores: (0..1 + rng.below(4)).map(|_| rng.below(10_000) as f64 / 100.0).collect(),
                active: rng.below(4) != 0,
            }
        })
        .collect()
}

/// Sums of a few fields of the untyped tree, to use every parsed value.
fn walk_value(v: &serde_json::Value) -> (u64, usize) {
    let arr = v.as_array().expect("top level is an array");
    let mut ids = 0u64;
    let mut chars = 0usize;
    for r in arr {
        ids = ids.wrapping_add(r["id"].as_u64().unwrap_or(0));
        chars += r["name"].as_str().map_or(0, str::len);
        chars += r["address"]["city"].as_str().map_or(0, str::len);
    }
    (ids, chars)
}

struct CityStats {
    city: String,
    customers: usize,
    active: usize,
    mean_score: f64,
    top: Vec<String>,
}

fn group(records: &[Record]) -> (Vec<CityStats>, BTreeMap<String, usize>) {
    let mut by_city: HashMap<String, Vec<&Record>> = HashMap::new();
    let mut tag_counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        by_city.entry(r.address.city.clone()).or_default().push(r);
        for t in &r.tags {
            *tag_counts.entry(t.clone()).or_default() += 1;
        }
    }
    let mut stats: Vec<CityStats> = by_city
        .into_iter()
        .map(|(city, mut rs)| {
            let mean = |r: &Record| r.scores.iter().sum::<f64>() / r.scores.len() as f64;
            rs.sort_by(|a, b| mean(b).total_cmp(&mean(a)).then(a.id.cmp(&b.id)));
            let scores: f64 = rs.iter().map(|r| mean(r)).sum();
            CityStats {
                customers: rs.len(),
                active: rs.iter().filter(|r| r.active).count(),
                mean_score: scores / rs.len() as f64,
                top: rs.iter().take(5).map(|r| format!("{} <{}>", r.name, r.email)).collect(),
                city,
            }
        })
        .collect();
    stats.sort_by(|a, b| a.city.cmp(&b.city));
    (stats, tag_counts)
}

/// A text report with one line per record, as an export job would write.
fn render(records: &[Record]) -> Vec<String> {
    let mut lines: Vec<String> = records
        .iter()
        .filter(|r| r.active)
        .map(|r| {
            let mut s = String::new();
            let _ = write!(s, "{:>8} {:<20} {:<10} {}", r.id, r.name, r.address.city, r.tags.join(","));
            s
        })
        .collect();
    lines.sort_unstable();
    lines
}

fn main() {
    let _profiler = lineprof_bench::start_profiler();
    // BENCH_SAMPLER: the bare sampler of src/sampler.rs (bench/run.py).
    let _sampler = lineprof_bench::sampler::start();
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("RECORDS must be a whole number"))
        .unwrap_or(50_000);
    let mut rng = Rng(0x5EED_0F1E_BEEF);

    let records = generate(n, &mut rng);
    let json = serde_json::to_string(&records).expect("serialise");
    let tree: serde_json::Value = serde_json::from_str(&json).expect("parse as Value");
    let (ids, chars) = walk_value(&tree);
    drop(tree);
    let typed: Vec<Record> = serde_json::from_str(&json).expect("parse as records");
    drop(json);
    let (stats, tags) = group(&typed);
    let lines = render(&typed);

    let mut checksum = ids ^ chars as u64 ^ lines.len() as u64;
    for s in &stats {
        checksum = checksum
            .wrapping_mul(31)
            .wrapping_add(s.customers as u64 + s.active as u64 + s.mean_score as u64);
        checksum = checksum.wrapping_add(s.top.iter().map(|t| t.len() as u64).sum::<u64>());
    }
    for (t, c) in &tags {
        checksum = checksum.wrapping_mul(31).wrapping_add(t.len() as u64 + *c as u64);
    }
    checksum = checksum.wrapping_add(lines.iter().map(|l| l.len() as u64).sum::<u64>());
    println!("{} records={} cities={} checksum={checksum:016x}", lineprof_bench::VARIANT, typed.len(), stats.len());
}
