//! What a frame is, and which frame of a stack a figure belongs to: the one
//! place that holds these rules (SPEC.md, "Figures per line").
//!
//! A frame is one of
//! - the standard library: sources under `/rustc/` (core, alloc, std) and
//!   the crates std vendors, under `/rust/deps/` (hashbrown inside
//!   `HashMap`), or the same files in an installed `rust-src`;
//! - C code: a compile unit not written in Rust (by its source file's
//!   extension: a statically linked jemalloc or mimalloc) or a frame with no
//!   line information at all (glibc, any shared library without Rust line
//!   tables);
//! - lineprof itself: the shim crate and the allocator plumbing that
//!   `#[global_allocator]` generates (`__rust_alloc`, `__rg_alloc`, ...);
//! - a dependency: the cargo registry or git checkouts under `CARGO_HOME`
//!   (wherever it is), or Rust code outside the profiled workspace (a path
//!   dependency);
//! - user code: under the workspace root.
//!
//! The attribution frame of a stack (where `self` figures go) is its
//! innermost frame that is none of the first three. A stack without one is
//! unattributed: it counts in the totals and on no line's `self`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One logical frame: the identity of a source line. `file` is empty and
/// `line` 0 when the address has no line information.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub file: String,
    pub line: u32,
    pub function: String,
}

impl Location {
    pub fn new(file: &str, line: u32, function: &str) -> Location {
        Location {
            file: file.into(),
            line,
            function: function.into(),
        }
    }

    pub fn is_resolved(&self) -> bool {
        !self.file.is_empty()
    }
}

/// Where a line's source lives (the `kind` of JSON schema 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineKind {
    /// Under the profiled workspace.
    User,
    /// A crate from the cargo registry or a git checkout, a path dependency
    /// outside the workspace, or statically linked C code.
    Dependency,
    /// The standard library, or code with no line information.
    Std,
}

/// Whether `file` belongs to the Rust standard library or the crates it
/// vendors.
pub fn is_std_file(file: &str) -> bool {
    file.starts_with("/rustc/")
        || file.starts_with("/rust/deps/")
        || file.contains("/rustlib/src/rust/library/")
        || file.contains("/rustlib/src/rust/vendor/")
}

/// Whether `file` is a source file of C, C++ or assembly.
pub fn is_c_file(file: &str) -> bool {
    let ext = file.rsplit_once('.').map_or("", |(_, e)| e);
    matches!(
        ext,
        "c" | "h" | "cc" | "cpp" | "cxx" | "hh" | "hpp" | "hxx" | "S" | "s" | "asm" | "inc"
    )
}

/// Whether the frame is C code: a non-Rust compile unit, or no line
/// information at all.
pub fn is_c_frame(loc: &Location) -> bool {
    !loc.is_resolved() || is_c_file(&loc.file)
}

/// Frames of the standard library.
pub fn is_std_frame(loc: &Location) -> bool {
    is_std_file(&loc.file)
}

/// The functions `#[global_allocator]` generates to call the tracker: in a
/// debug build they are real frames whose line is the `static A` item.
fn is_allocator_shim(function: &str) -> bool {
    let name = function.rsplit("::").next().unwrap_or(function);
    matches!(
        name,
        "__rust_alloc" | "__rust_dealloc" | "__rust_realloc" | "__rust_alloc_zeroed"
    )
}

/// Frames of the shim crate itself, and the allocator shims.
pub fn is_lineprof_frame(loc: &Location) -> bool {
    let f = loc.function.as_str();
    f.starts_with("lineprof::")
        || f.starts_with("<lineprof::")
        || loc.file.contains("alloc-shim/src/")
        || is_allocator_shim(f)
}

/// Frames of the global-allocator plumbing and of the lineprof shim.
pub fn is_allocator_frame(loc: &Location) -> bool {
    let f = loc.function.as_str();
    let last = f.rsplit("::").next().unwrap_or(f);
    last.starts_with("__rg_")
        || last.starts_with("__rdl_")
        || last.starts_with("__rust_no_alloc_shim_is_unstable")
        || is_lineprof_frame(loc)
}

/// Whether a figure may be charged to this frame's line.
pub fn is_attributable(loc: &Location) -> bool {
    !is_c_frame(loc) && !is_std_frame(loc) && !is_lineprof_frame(loc)
}

/// std's panic path: the hook, the message, the payload, and the
/// backtrace the default hook captures under `RUST_BACKTRACE`. What it
/// allocates depends on the environment, not on the code that panicked:
/// with `RUST_BACKTRACE=1` the hook loads and parses the binary's debug
/// info (tens of MiB, cached to exit), without it a note of a few bytes.
/// `std::backtrace` alone is no marker: a backtrace the program captures
/// itself (`Backtrace::capture`, anyhow or eyre under
/// `RUST_LIB_BACKTRACE`) is its own line's.
pub fn is_panic_machinery(function: &str) -> bool {
    let f = function.strip_prefix('<').unwrap_or(function);
    const MARKERS: [&str; 4] = [
        "std::panicking::panic_with_hook",
        "std::panicking::rust_panic_with_hook",
        "std::panicking::default_hook",
        "std::panicking::begin_panic",
    ];
    MARKERS.iter().any(|m| f.starts_with(m))
}

/// The innermost frame of `stack` a figure may be charged to (index into
/// `stack`), and whether std's panic path lies between it and the
/// allocation: the one scan `in_panic_machinery` and `attribution` share.
fn attributable_frame(stack: &[u32], locations: &[Location]) -> (Option<usize>, bool) {
    let at = stack
        .iter()
        .position(|&id| is_attributable(&locations[id as usize]));
    let panicking = stack[..at.unwrap_or(stack.len())]
        .iter()
        .any(|&id| is_panic_machinery(&locations[id as usize].function));
    (at, panicking)
}

/// Whether an event of this stack happened inside std's panic machinery
/// (below the code that panicked): such events are on no line's `self`
/// and in no test's figures, whatever `RUST_BACKTRACE` says. A panic hook
/// the program sets is its own code: what it allocates (a backtrace it
/// captures included) stays on its lines.
pub fn in_panic_machinery(stack: &[u32], locations: &[Location]) -> bool {
    attributable_frame(stack, locations).1
}

/// The attribution frame of a stack (innermost first): index into `stack`,
/// `None` when the stack is unattributed (no frame outside std, C and
/// lineprof, or an event inside std's panic machinery).
pub fn attribution(stack: &[u32], locations: &[Location]) -> Option<usize> {
    let (at, panicking) = attributable_frame(stack, locations);
    let at = at.filter(|_| !panicking)?;
    // The `main` rustc generates for a test binary (its line is the crate's
    // first line: `#![allow(`, `#[cfg(test)]`) calls libtest: what libtest
    // allocates for itself is not the user's line.
    let harness = at > 0
        && locations[stack[at - 1] as usize]
            .function
            .starts_with("test::test_main");
    (!harness).then_some(at)
}

/// Removes the allocator machinery from the innermost end and unresolvable
/// frames (the last frame-pointer step often reads garbage) from the
/// outermost end. At the innermost end, unresolvable frames go too: a CPU
/// sample taken inside `malloc` or `memcpy` (no debug info) belongs to the
/// line that called it.
pub fn trim_stack(stack: &mut Vec<u32>, locations: &[Location]) {
    // The allocator's own code inlines std code (`Cell`, thread locals), so
    // std frames can sit between its frames: strip through the outermost
    // allocator frame of the innermost run of allocator, std and
    // unresolvable frames. Unresolvable frames alone (a CPU sample in libc)
    // are stripped only where they lead. A stack of std frames that ends
    // in unresolvable ones (std's start-up, under `main`) keeps them all.
    let loc = |id: &u32| &locations[*id as usize];
    let run = stack
        .iter()
        .take_while(|id| {
            let l = loc(id);
            is_allocator_frame(l) || !l.is_resolved() || is_std_frame(l)
        })
        .count();
    let through_allocator = stack[..run]
        .iter()
        .rposition(|id| is_allocator_frame(loc(id)))
        .map_or(0, |i| i + 1);
    let leading_unresolved = stack.iter().take_while(|id| !loc(id).is_resolved()).count();
    let inner = through_allocator.max(leading_unresolved);
    // Keep at least one frame, so an event never loses its stack entirely.
    let inner = inner.min(stack.len().saturating_sub(1));
    stack.drain(..inner);
    while stack.len() > 1 && !locations[*stack.last().unwrap() as usize].is_resolved() {
        stack.pop();
    }
}

/// Where cargo keeps downloaded crates: `$CARGO_HOME`, else `~/.cargo`.
pub fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// Whether `file` is a crate cargo downloaded: under `registry/src/` or
/// `git/checkouts/` of `CARGO_HOME`, or of any cargo home (an image built
/// elsewhere, such as Docker's `/usr/local/cargo`).
pub fn is_downloaded_crate(file: &str, cargo_home: Option<&Path>) -> bool {
    let p = Path::new(file);
    if let Some(home) = cargo_home {
        if p.starts_with(home.join("registry")) || p.starts_with(home.join("git")) {
            return true;
        }
    }
    file.contains("/registry/src/") || file.contains("/git/checkouts/")
}

/// The kind of a line in `file`, given the workspace root (when known).
pub fn line_kind(file: &str, root: Option<&Path>) -> LineKind {
    line_kind_in(file, root, cargo_home().as_deref())
}

/// As `line_kind`, with the cargo home given (for tests).
pub fn line_kind_in(file: &str, root: Option<&Path>, cargo_home: Option<&Path>) -> LineKind {
    if file.is_empty() || is_std_file(file) {
        LineKind::Std
    } else if is_c_file(file) || is_downloaded_crate(file, cargo_home) {
        LineKind::Dependency
    } else {
        match root {
            Some(r) if Path::new(file).starts_with(r) => LineKind::User,
            // Rust code outside the workspace: a path dependency.
            Some(_) if Path::new(file).is_absolute() => LineKind::Dependency,
            _ => LineKind::User,
        }
    }
}

/// `file` as reports show it: relative to the workspace root for user
/// code, as in the debug info otherwise.
pub fn display_file(file: &str, root: Option<&Path>) -> String {
    match (line_kind(file, root), root) {
        (LineKind::User, Some(r)) => Path::new(file)
            .strip_prefix(r)
            .map_or(file.to_string(), |p| p.to_string_lossy().into_owned()),
        _ => file.to_string(),
    }
}

/// `file` as text, HTML and the stack formats show it (JSON keeps
/// `display_file`'s form): workspace-relative for user code, `std/...`
/// for the standard library (`/rustc/<hash>/library/alloc/src/vec/mod.rs`
/// is `std/alloc/src/vec/mod.rs`), `crate-version/...` for a crate from
/// the registry or one std vendors, `name@rev/...` for a git checkout.
/// Other paths (a path dependency, C code) stay as they are.
pub fn short_path(file: &str, root: Option<&Path>) -> String {
    if let Some(r) = root {
        if let Ok(rel) = Path::new(file).strip_prefix(r) {
            return rel.to_string_lossy().into_owned();
        }
    }
    // /rustc/<hash>/library/<rest>, or an installed rust-src.
    if let Some(rest) = file.strip_prefix("/rustc/") {
        if let Some((_, lib)) = rest.split_once("/library/") {
            return format!("std/{lib}");
        }
    }
    if let Some((_, lib)) = file.split_once("/rustlib/src/rust/library/") {
        return format!("std/{lib}");
    }
    // /rust/deps/<crate-version>/<rest>: crates std vendors.
    if let Some(rest) = file.strip_prefix("/rust/deps/") {
        return rest.to_string();
    }
    if let Some((_, rest)) = file.split_once("/rustlib/src/rust/vendor/") {
        return rest.to_string();
    }
    // .../registry/src/<index>/<crate-version>/<rest>
    if let Some((_, rest)) = file.split_once("/registry/src/") {
        if let Some((_, krate)) = rest.split_once('/') {
            return krate.to_string();
        }
    }
    // .../git/checkouts/<name-hash>/<rev>/<rest>
    if let Some((_, rest)) = file.split_once("/git/checkouts/") {
        let mut parts = rest.splitn(3, '/');
        if let (Some(name), Some(rev), Some(rest)) = (parts.next(), parts.next(), parts.next()) {
            let name = name.rsplit_once('-').map_or(name, |(n, _)| n);
            return format!("{name}@{rev}/{rest}");
        }
    }
    file.to_string()
}

/// The kind of a frame of a `StackTable` (whose user files are already
/// relative to the workspace, so no root is needed): relative paths are
/// user code, other Rust paths outside std a dependency.
pub fn frame_kind(file: &str) -> LineKind {
    match line_kind_in(file, None, cargo_home().as_deref()) {
        LineKind::User if Path::new(file).is_absolute() => LineKind::Dependency,
        kind => kind,
    }
}

/// Whether an exported stack (pprof, folded stacks, DHAT) drops this frame
/// when it leads the stack: the allocator's own machinery, as Go's heap
/// profiles drop the runtime's malloc frames, so that the innermost frame
/// is the code that asked for memory. That is lineprof and the
/// `#[global_allocator]` plumbing, the `alloc` crate (`alloc::alloc`,
/// `RawVec`, `Vec`, `String` and `Box` growth internals), `core::alloc`,
/// and the growth paths of std's hash tables (hashbrown's `RawTable`).
/// `file` is as in a `Frame` (std paths as in the debug info).
pub fn is_export_trimmed(file: &str, function: &str) -> bool {
    let loc = Location {
        file: file.to_string(),
        line: 0,
        function: function.to_string(),
    };
    if is_allocator_frame(&loc) {
        return true;
    }
    if !is_std_file(file) {
        return false;
    }
    let lib = short_path(file, None);
    lib.starts_with("std/alloc/")
        || lib.starts_with("std/core/src/alloc/")
        || (lib.starts_with("hashbrown-") && lib.contains("/src/raw/"))
}

/// How many frames at the innermost end of an exported stack to drop
/// (`trimmed(i)` tells whether frame `i`, innermost first, is machinery).
/// A stack that is all machinery keeps its outermost frame, so no event
/// loses its stack entirely.
pub fn export_trim_len(len: usize, trimmed: impl Fn(usize) -> bool) -> usize {
    let n = (0..len).take_while(|&i| trimmed(i)).count();
    n.min(len.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(file: &str, function: &str) -> Location {
        Location::new(file, 1, function)
    }

    #[test]
    fn allocator_shims_of_debug_builds_are_lineprof_frames() {
        // Debug builds keep `__rust_alloc` as a frame on the `static A` line.
        assert!(is_lineprof_frame(&loc(
            "/w/src/main.rs",
            "__rustc::__rust_alloc"
        )));
        assert!(is_lineprof_frame(&loc("/w/src/main.rs", "__rust_realloc")));
        assert!(!is_lineprof_frame(&loc(
            "/w/src/main.rs",
            "app::rust_alloc"
        )));
    }

    #[test]
    fn kinds_follow_the_spec() {
        let root = Path::new("/w");
        let home = Path::new("/opt/cargo");
        let kind = |f: &str| line_kind_in(f, Some(root), Some(home));
        assert_eq!(kind("/w/src/main.rs"), LineKind::User);
        assert_eq!(
            kind("/rustc/abc/library/alloc/src/vec/mod.rs"),
            LineKind::Std
        );
        // std's vendored crates are std.
        assert_eq!(
            kind("/rust/deps/hashbrown-0.15.2/src/raw/mod.rs"),
            LineKind::Std
        );
        // CARGO_HOME wherever it is, and other cargo homes (Docker's).
        assert_eq!(
            kind("/opt/cargo/registry/src/index.crates.io-1/regex-1.0.0/src/lib.rs"),
            LineKind::Dependency
        );
        assert_eq!(
            kind("/usr/local/cargo/registry/src/index.crates.io-1/memchr-2.7.4/src/lib.rs"),
            LineKind::Dependency
        );
        assert_eq!(
            kind("/opt/cargo/git/checkouts/foo-1/abc/src/lib.rs"),
            LineKind::Dependency
        );
        // A path dependency outside the workspace.
        assert_eq!(kind("/elsewhere/mylib/src/lib.rs"), LineKind::Dependency);
        // A statically linked C library.
        assert_eq!(kind("/w/jemalloc/src/arena.c"), LineKind::Dependency);
        assert_eq!(kind(""), LineKind::Std);
    }

    #[test]
    fn panic_machinery_is_nobody_s_line() {
        assert!(is_panic_machinery("std::panicking::panic_with_hook"));
        assert!(is_panic_machinery(
            "std::panicking::default_hook::{closure#0}"
        ));
        assert!(is_panic_machinery(
            "std::panicking::begin_panic_handler::{closure#0}"
        ));
        // A backtrace is std's panic machinery only under the panic path.
        assert!(!is_panic_machinery(
            "<std::backtrace_rs::symbolize::gimli::Cache>::new"
        ));
        assert!(!is_panic_machinery("std::backtrace::Backtrace::capture"));
        // The entry of every thread and of libtest's tests is not a panic.
        assert!(!is_panic_machinery(
            "std::sys::backtrace::__rust_begin_short_backtrace"
        ));
        assert!(!is_panic_machinery("std::panicking::catch_unwind"));
        let locations = vec![
            loc(
                "/rustc/abc/library/alloc/src/raw_vec.rs",
                "alloc::raw_vec::grow",
            ),
            loc(
                "/rustc/abc/library/std/src/panicking.rs",
                "std::panicking::default_hook",
            ),
            loc("/w/src/main.rs", "app::hook"),
            loc(
                "/rustc/abc/library/std/src/panicking.rs",
                "std::panicking::panic_with_hook",
            ),
            loc("/w/src/main.rs", "app::parse"),
        ];
        // Inside std's hook, below `app::parse`: nobody's line.
        assert!(in_panic_machinery(&[0, 1, 3, 4], &locations));
        assert_eq!(attribution(&[0, 1, 3, 4], &locations), None);
        // A hook the program set is its own code.
        assert!(!in_panic_machinery(&[0, 2, 3, 4], &locations));
        assert_eq!(attribution(&[0, 2, 3, 4], &locations), Some(1));
        // A backtrace the program captures itself is its line's; the same
        // capture under the default hook is std's panic machinery.
        let mut locations = locations;
        locations.push(loc(
            "/rustc/abc/library/std/src/backtrace.rs",
            "std::backtrace::Backtrace::create",
        ));
        locations.push(loc(
            "/rustc/abc/library/std/src/../../backtrace/src/backtrace/mod.rs",
            "std::backtrace_rs::backtrace::trace_unsynchronized",
        ));
        assert!(!in_panic_machinery(&[0, 6, 5, 4], &locations));
        assert_eq!(attribution(&[0, 6, 5, 4], &locations), Some(3));
        assert!(in_panic_machinery(&[0, 6, 5, 1, 3, 4], &locations));
        assert_eq!(attribution(&[0, 6, 5, 1, 3, 4], &locations), None);
    }

    #[test]
    fn attribution_skips_std_c_and_lineprof() {
        let locations = vec![
            loc(
                "/rustc/abc/library/alloc/src/alloc.rs",
                "alloc::alloc::alloc",
            ),
            loc("", "memcpy"),
            loc(
                "/rust/deps/hashbrown-0.15.2/src/raw/mod.rs",
                "hashbrown::raw::RawTable::reserve_rehash",
            ),
            loc("/w/vendor/jemalloc/src/jemalloc.c", "je_malloc"),
            loc("/w/alloc-shim/src/lib.rs", "lineprof::record"),
            loc("/w/src/main.rs", "app::main"),
        ];
        assert_eq!(attribution(&[0, 1, 2, 3, 4, 5], &locations), Some(5));
        // A stack of std and C frames only is unattributed.
        assert_eq!(attribution(&[0, 1, 2, 3], &locations), None);
    }

    #[test]
    fn trims_allocator_frames_and_outer_garbage() {
        let locations = vec![
            loc("/w/alloc-shim/src/stack.rs", "lineprof::stack::capture"),
            loc(
                "/w/alloc-shim/src/lib.rs",
                "<lineprof::Tracking as core::alloc::global::GlobalAlloc>::alloc",
            ),
            loc("", "__rustc::__rust_alloc"),
            loc(
                "/rustc/abc/library/alloc/src/alloc.rs",
                "alloc::alloc::alloc",
            ),
            loc("/w/src/main.rs", "app::main"),
            loc("", "0x1234"),
        ];
        let mut stack = vec![0, 1, 2, 3, 4, 5];
        trim_stack(&mut stack, &locations);
        assert_eq!(stack, vec![3, 4]);
        // std code inlined into the allocator (a CPU sample in `Cell::get`
        // inside the shim) is the allocator's too.
        let mut stack = vec![3, 0, 4];
        trim_stack(&mut stack, &locations);
        assert_eq!(stack, vec![4]);
        // std frames with no allocator frame outside them stay.
        let mut stack = vec![3, 4];
        trim_stack(&mut stack, &locations);
        assert_eq!(stack, vec![3, 4]);
        // ... also when unresolvable frames (libc's start-up) follow them.
        let mut stack = vec![3, 5, 4];
        trim_stack(&mut stack, &locations);
        assert_eq!(stack, vec![3, 5, 4]);
        // Leading unresolvable frames (a CPU sample in libc) go.
        let mut stack = vec![5, 3, 4];
        trim_stack(&mut stack, &locations);
        assert_eq!(stack, vec![3, 4]);
        // Allocator frames are only removed at the innermost end.
        let mut stack = vec![4, 0, 4];
        trim_stack(&mut stack, &locations);
        assert_eq!(stack, vec![4, 0, 4]);
    }

    #[test]
    fn short_paths_read() {
        let root = Path::new("/w");
        assert_eq!(short_path("/w/src/main.rs", Some(root)), "src/main.rs");
        assert_eq!(short_path("src/main.rs", Some(root)), "src/main.rs");
        assert_eq!(
            short_path(
                "/rustc/90b35a6239c3d8bdabc530a6a0816f7ff89a0aaf/library/alloc/src/vec/mod.rs",
                None
            ),
            "std/alloc/src/vec/mod.rs"
        );
        assert_eq!(
            short_path(
                "/home/u/.rustup/toolchains/x/lib/rustlib/src/rust/library/std/src/io.rs",
                None
            ),
            "std/std/src/io.rs"
        );
        assert_eq!(
            short_path("/rust/deps/hashbrown-0.15.2/src/raw/mod.rs", None),
            "hashbrown-0.15.2/src/raw/mod.rs"
        );
        assert_eq!(
            short_path("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/regex-1.11.1/src/lib.rs", None),
            "regex-1.11.1/src/lib.rs"
        );
        assert_eq!(
            short_path(
                "/root/.cargo/git/checkouts/foo-0a1b2c/5e6f7a8/src/lib.rs",
                None
            ),
            "foo@5e6f7a8/src/lib.rs"
        );
        assert_eq!(
            short_path("/elsewhere/lib.rs", Some(root)),
            "/elsewhere/lib.rs"
        );
        assert_eq!(short_path("", Some(root)), "");
    }

    #[test]
    fn exports_trim_leading_allocator_machinery() {
        let h = "/rustc/abc/library";
        assert!(is_export_trimmed(
            &format!("{h}/alloc/src/alloc.rs"),
            "alloc::alloc::alloc"
        ));
        assert!(is_export_trimmed(
            &format!("{h}/alloc/src/raw_vec.rs"),
            "alloc::raw_vec::RawVec<T,A>::grow_one"
        ));
        assert!(is_export_trimmed(
            &format!("{h}/alloc/src/vec/mod.rs"),
            "alloc::vec::Vec<T,A>::push"
        ));
        assert!(is_export_trimmed(
            "/rust/deps/hashbrown-0.15.2/src/raw/mod.rs",
            "hashbrown::raw::RawTable<T,A>::reserve_rehash"
        ));
        assert!(is_export_trimmed("", "__rustc::__rust_alloc"));
        assert!(is_export_trimmed(
            "/w/alloc-shim/src/lib.rs",
            "lineprof::Tracking::alloc"
        ));
        assert!(!is_export_trimmed(
            &format!("{h}/std/src/collections/hash/map.rs"),
            "std::collections::hash::map::HashMap<K,V,S>::insert"
        ));
        assert!(!is_export_trimmed("src/main.rs", "app::main"));
        assert!(!is_export_trimmed("", "memcpy"));
        let machinery = [true, true, false, true];
        assert_eq!(export_trim_len(4, |i| machinery[i]), 2);
        assert_eq!(export_trim_len(2, |_| true), 1);
        assert_eq!(export_trim_len(0, |_| true), 0);
    }
}
