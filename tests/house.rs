//! The shape of the house, checked: no two source files import each other
//! (directly or around a circle), and the CLI's stages only import from the
//! stages before them (analyze, then render, then workflow).
//!
//! Imports are read from the text: every `crate::a::b` path (and the items
//! of `crate::{a, b}` groups, and `super::x`) outside `#[cfg(test)]` code,
//! mapped to the file that defines the longest prefix of the path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src` (`analyze/lines.rs` ->
/// `["analyze", "lines"]`, `render/mod.rs` -> `["render"]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file without its test modules and comments.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Module paths a file's code names: `crate::a::b::C`, `crate::{a, b::c}`,
/// `super::x`.
fn imported_paths(module: &[String], is_mod_file: bool, code: &str) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut push_path = |base: Vec<String>, rest: &str| {
        let mut p = base;
        for seg in rest.split("::") {
            let seg: String = seg.chars().take_while(|&c| ident(c)).collect();
            if seg.is_empty() {
                break;
            }
            p.push(seg);
        }
        out.push(p);
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                push_path(Vec::new(), item.trim());
            }
        } else {
            push_path(Vec::new(), rest);
        }
    }
    for (i, _) in code.match_indices("super::") {
        if i > 0 && code[..i].ends_with(|c: char| ident(c) || c == ':') {
            continue;
        }
        let rest = &code[i + "super::".len()..];
        // In `a/mod.rs` `super` is a's parent; in `a/b.rs` it is `a`.
        let mut base = module.to_vec();
        base.pop();
        if is_mod_file {
            base.pop();
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                push_path(base.clone(), item.trim());
            }
        } else {
            push_path(base, rest);
        }
    }
    out
}

/// The import graph of one crate: file -> files it imports.
fn graph(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let by_module: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .filter(|f| !f.starts_with(src.join("bin")))
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let mut g = BTreeMap::new();
    for f in &files {
        let module = module_of(src, f);
        let is_mod_file = f.file_name().is_some_and(|n| n == "mod.rs");
        let text = std::fs::read_to_string(f).unwrap();
        let mut deps = BTreeSet::new();
        for path in imported_paths(&module, is_mod_file, &code(&text)) {
            // The longest prefix that is a module of its own file.
            let target = (1..=path.len())
                .rev()
                .find_map(|n| by_module.get(&path[..n]));
            if let Some(t) = target {
                if t != f {
                    deps.insert(t.clone());
                }
            }
        }
        g.insert(f.clone(), deps);
    }
    g
}

/// A cycle of files, if any.
fn find_cycle(g: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Option<Vec<PathBuf>> {
    fn visit(
        n: &PathBuf,
        g: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, u8>,
        path: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        state.insert(n.clone(), 1);
        path.push(n.clone());
        for d in g.get(n).into_iter().flatten() {
            match state.get(d).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == d).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(d, g, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(n.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, g, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn assert_acyclic(src: &Path) {
    let g = graph(src);
    if let Some(cycle) = find_cycle(&g) {
        let names: Vec<_> = cycle
            .iter()
            .map(|p| p.strip_prefix(repo()).unwrap().display().to_string())
            .collect();
        panic!("import cycle: {}", names.join(" -> "));
    }
}

#[test]
fn cli_files_import_each_other_in_one_direction() {
    assert_acyclic(&repo().join("src"));
}

#[test]
fn shim_files_import_each_other_in_one_direction() {
    assert_acyclic(&repo().join("alloc-shim/src"));
}

#[test]
fn stages_only_import_from_earlier_stages() {
    let src = repo().join("src");
    let rank = |f: &Path| {
        let rel = f.strip_prefix(&src).unwrap();
        match rel.iter().next().and_then(|c| c.to_str()) {
            Some("analyze") => 1,
            Some("render") => 2,
            Some("workflow") => 3,
            Some("bin" | "main.rs" | "lib.rs") => 4,
            // error.rs, output.rs: below everything.
            _ => 0,
        }
    };
    let mut wrong = Vec::new();
    for (f, deps) in graph(&src) {
        for d in deps {
            if rank(&d) > rank(&f) {
                wrong.push(format!(
                    "{} imports {}",
                    f.strip_prefix(&src).unwrap().display(),
                    d.strip_prefix(&src).unwrap().display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that run back up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_a_cycle() {
    // The checker itself: a two-file cycle and a `super::` import are found.
    let dir = std::env::temp_dir().join(format!("lineprof-house-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "mod b;\nuse crate::a::b::X;\n").unwrap();
    std::fs::write(src.join("a/b.rs"), "use super::{Y, Z};\n").unwrap();
    let cycle = find_cycle(&graph(&src));
    std::fs::remove_dir_all(&dir).unwrap();
    let cycle = cycle.expect("the a/mod.rs <-> a/b.rs cycle");
    assert_eq!(cycle.len(), 3, "{cycle:?}");
}
