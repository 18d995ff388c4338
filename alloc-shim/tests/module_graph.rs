//! The shim's modules depend on each other in one direction only: this reads
//! the source files, collects each file's `crate::...` references (outside
//! its unit tests and comments), and fails on any cycle between files. A
//! reference to an item of the crate root counts as a dependency on lib.rs.

use std::collections::BTreeMap;
use std::path::Path;

fn references(src: &str, modules: &[String]) -> Vec<String> {
    let code = match src.find("#[cfg(test)]\nmod tests") {
        Some(i) => &src[..i],
        None => src,
    };
    let mut deps = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end]
                    .split(',')
                    .map(|s| s.trim().split("::").next().unwrap_or(""))
                    .collect()
            } else {
                vec![rest
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("")]
            };
            for name in names.into_iter().filter(|n| !n.is_empty()) {
                let target = if modules.iter().any(|m| m == name) {
                    name.to_string()
                } else {
                    "lib".to_string()
                };
                deps.push(target);
            }
        }
    }
    deps
}

/// Whether the crate root's `src` uses module `m` (`m::` not preceded by
/// another path segment or identifier character).
fn uses_plainly(src: &str, m: &str) -> bool {
    let pat = format!("{m}::");
    src.match_indices(&pat).any(|(i, _)| {
        let before = src[..i].chars().next_back();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
    })
}

type Graph = BTreeMap<String, Vec<String>>;

fn graph_of(sources: &BTreeMap<String, String>) -> Graph {
    let modules: Vec<String> = sources.keys().cloned().collect();
    let mut graph = Graph::new();
    for (name, src) in sources {
        let mut deps = references(src, &modules);
        if name == "lib" {
            // The root names its modules without `crate::`.
            deps.extend(modules.iter().filter(|m| uses_plainly(src, m)).cloned());
        }
        deps.retain(|d| d != name);
        deps.sort();
        deps.dedup();
        graph.insert(name.clone(), deps);
    }
    graph
}

/// A cycle as the list of files around it, if there is one (depth-first
/// search; a back edge closes a cycle).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &Graph,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| p == n).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut state, &mut Vec::new()))
}

#[test]
fn no_import_cycle_between_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            sources.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    let graph = graph_of(&sources);
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between shim files: {}\n(graph: {graph:?})",
            cycle.join(" -> ")
        );
    }
    // The checker sees the edges it is meant to police.
    assert!(graph["thread"].contains(&"writer".to_string()), "{graph:?}");
    assert!(graph["lifecycle"].contains(&"cpu".to_string()), "{graph:?}");
}

#[test]
fn the_checker_finds_the_old_circle() {
    let sources: BTreeMap<String, String> = [
        ("lib", "mod cpu;\nmod thread;\nmod writer;\n"),
        (
            "writer",
            "use crate::{sys, thread};\nfn f() { crate::cpu::FORKING.load(); }",
        ),
        (
            "thread",
            "use crate::sys;\n// crate::cpu::nothing in a comment\n",
        ),
        (
            "cpu",
            "use crate::{stack, thread};\nfn g() { crate::active(); }",
        ),
        (
            "sys",
            "fn h() {}\n#[cfg(test)]\nmod tests {\n use crate::writer;\n}",
        ),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let graph = graph_of(&sources);
    assert_eq!(graph["writer"], ["cpu", "sys", "thread"]);
    assert_eq!(graph["thread"], ["sys"]);
    assert_eq!(graph["sys"], Vec::<String>::new());
    // cpu -> lib (crate::active), but lib names no module with a path.
    assert_eq!(find_cycle(&graph), None);
    let mut rooted = sources.clone();
    rooted.insert("lib".into(), "mod cpu;\nfn start() { cpu::init(); }".into());
    let cycle = find_cycle(&graph_of(&rooted)).expect("cycle lib -> cpu -> lib");
    assert!(cycle.contains(&"lib".to_string()), "{cycle:?}");
    let mut with_cycle = sources.clone();
    with_cycle.insert(
        "thread".into(),
        "fn s() { crate::cpu::start_thread(1); }".into(),
    );
    let cycle = find_cycle(&graph_of(&with_cycle)).expect("cycle thread -> cpu -> thread");
    assert!(cycle.contains(&"cpu".to_string()) && cycle.contains(&"thread".to_string()));
}
