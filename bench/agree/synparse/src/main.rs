//! Parses every Rust source file under a directory with `syn` (what every
//! proc macro and many tools do), several rounds, and counts the items and
//! expressions it finds: a recursive-descent parser, whose stacks run deep
//! in nested expressions, allocating a tree per file.
//!
//! Usage: `synparse DIR [ROUNDS]`.
use std::path::{Path, PathBuf};

use syn::visit::Visit;

#[cfg(feature = "lineprof")]
#[global_allocator]
static A: lineprof::Tracking = lineprof::Tracking::new();

#[derive(Default)]
struct Count {
    items: usize,
    exprs: usize,
}

impl<'ast> Visit<'ast> for Count {
    fn visit_item(&mut self, i: &'ast syn::Item) {
        self.items += 1;
        syn::visit::visit_item(self, i);
    }
    fn visit_expr(&mut self, e: &'ast syn::Expr) {
        self.exprs += 1;
        syn::visit::visit_expr(self, e);
    }
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: synparse DIR [ROUNDS]"));
    let rounds: usize = args.next().map_or(3, |r| r.parse().unwrap());
    let mut files = Vec::new();
    sources(&dir, &mut files);
    let texts: Vec<String> = files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect();
    let (mut count, mut failed) = (Count::default(), 0);
    for _ in 0..rounds {
        for text in &texts {
            match syn::parse_file(text) {
                Ok(file) => count.visit_file(&file),
                Err(_) => failed += 1,
            }
        }
    }
    println!(
        "{} files x {rounds}: {} items, {} expressions, {failed} not parsed",
        texts.len(),
        count.items,
        count.exprs
    );
}
