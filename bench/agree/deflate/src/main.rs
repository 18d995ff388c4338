//! Log archive: generate log text, gzip it, gunzip it, hash it, pull
//! fields out with a regex.
use std::collections::HashMap;
use std::io::{Read, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use regex::Regex;
use sha2::{Digest, Sha256};

#[cfg(feature = "lineprof")]
#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

const PATHS: [&str; 6] = ["/api/v1/users", "/static/app.js", "/login", "/api/v1/orders", "/", "/health"];

fn generate(lines: usize) -> String {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = String::new();
    for i in 0..lines {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let ip = seed >> 32;
        let status = [200, 200, 200, 304, 404, 500][(seed >> 20) as usize % 6];
        out.push_str(&format!(
            "10.{}.{}.{} - - [01/Dec/2026:{:02}:{:02}:{:02}] \"GET {} HTTP/1.1\" {} {}\n",
            ip & 255,
            (ip >> 8) & 255,
            (ip >> 16) & 255,
            i / 3600 % 24,
            i / 60 % 60,
            i % 60,
            PATHS[(seed >> 40) as usize % PATHS.len()],
            status,
            (seed >> 8) % 50_000
        ));
    }
    out
}

fn main() {
    let n: usize = std::env::args().nth(1).map_or(150_000, |a| a.parse().unwrap());
    let text = generate(n);
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    let packed = gz.finish().unwrap();
    let mut unpacked = String::new();
    GzDecoder::new(&packed[..]).read_to_string(&mut unpacked).unwrap();
    let digest = Sha256::digest(unpacked.as_bytes());
    let re = Regex::new(r#"^(\d+\.\d+\.\d+\.\d+) .*"GET (\S+) [^"]*" (\d{3}) (\d+)$"#).unwrap();
    let mut bytes_by_path: HashMap<&str, (u64, u64)> = HashMap::new();
    for line in unpacked.lines() {
        if let Some(c) = re.captures(line) {
            let e = bytes_by_path.entry(c.get(2).unwrap().as_str()).or_default();
            e.0 += 1;
            e.1 += c[4].parse::<u64>().unwrap();
        }
    }
    let mut paths: Vec<_> = bytes_by_path.into_iter().collect();
    paths.sort();
    println!(
        "{} bytes, {} packed, sha256 {:02x}{:02x}{:02x}{:02x}, {:?}",
        text.len(),
        packed.len(),
        digest[0],
        digest[1],
        digest[2],
        digest[3],
        paths.first()
    );
}
