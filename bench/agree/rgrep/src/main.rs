//! A small grep: every line matching a regex under a directory tree.
use std::sync::atomic::{AtomicU64, Ordering};

use grep_regex::RegexMatcher;
use grep_searcher::sinks::UTF8;
use grep_searcher::{BinaryDetection, SearcherBuilder};
use ignore::{WalkBuilder, WalkState};

#[cfg(feature = "lineprof")]
#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

fn main() {
    let mut args = std::env::args().skip(1);
    let root = args.next().expect("usage: rgrep DIR [PATTERN] [THREADS] [ROUNDS]");
    let pattern = args
        .next()
        .unwrap_or_else(|| r"fn\s+\w+(<[^>]*>)?\s*\([^)]*&mut\s+\w+".to_string());
    let threads: usize = args.next().map_or(1, |t| t.parse().unwrap());
    let rounds: usize = args.next().map_or(1, |t| t.parse().unwrap());
    let matcher = RegexMatcher::new(&pattern).unwrap();
    let (lines, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    for _ in 0..rounds {
        let walker = WalkBuilder::new(&root).threads(threads).build_parallel();
        walker.run(|| {
            let matcher = matcher.clone();
            let mut searcher = SearcherBuilder::new()
                .binary_detection(BinaryDetection::quit(0))
                .line_number(true)
                .build();
            let (lines, bytes) = (&lines, &bytes);
            Box::new(move |entry| {
                let Ok(entry) = entry else { return WalkState::Continue };
                if !entry.file_type().is_some_and(|t| t.is_file()) {
                    return WalkState::Continue;
                }
                let _ = searcher.search_path(
                    &matcher,
                    entry.path(),
                    UTF8(|_lnum, line| {
                        lines.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
                        Ok(true)
                    }),
                );
                WalkState::Continue
            })
        });
    }
    println!(
        "{} matching lines, {} bytes",
        lines.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed)
    );
}
