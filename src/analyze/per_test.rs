//! Per-test figures for libtest binaries: the events under each `#[test]`
//! function's frame.
//!
//! libtest calls every test as `test::__rust_begin_short_backtrace(f)`,
//! where `f` is the closure rustc generates at the `#[test]` attribute
//! (`app::tests::parse::{{closure}}`), which calls the test function. The
//! test frame of a stack is its outermost frame below that libtest frame
//! that is not the standard library, C or lineprof: the generated closure
//! (its function with `::{{closure}}` removed is the test function). The
//! test's name is the function's path without the crate, as libtest prints
//! it (`tests::parse`). This holds with any number of test threads, and
//! when the test function itself is inlined (the inlined frame keeps its
//! name).
//!
//! Initialisation shared between tests (`Once`, `OnceLock`, `LazyLock`,
//! `lazy_static`, `once_cell::sync`) costs whichever test gets there first,
//! which depends on scheduling: events under such a frame inside a test go
//! to `shared_init` instead of the test.
//!
//! Blocks a test allocates that escape it (still live at exit, or freed by
//! code outside the test: another test, libtest) are state it left to the
//! process (a regex's cache pool, a lazily built table, a leak): they too
//! go to `shared_init`, since the first test to need the state pays for it.
//!
//! Events inside std's panic machinery (the panic hook, its message, the
//! backtrace `RUST_BACKTRACE=1` makes it capture and symbolize) are no
//! test's either: they depend on the environment, not on the test.
//!
//! A test's `peak_bytes` is the most bytes of its own blocks live at any
//! one moment (DHAT's per-group max), not its share of the process's peak:
//! a test's own events come from its own thread in program order, so the
//! figure does not depend on how the threads of other tests interleave.
//! Its `end_bytes` is 0 by construction.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::analyze::classify::{
    attribution, display_file, in_panic_machinery, is_attributable, Location,
};
use crate::analyze::lines::Figures;
use crate::analyze::live_blocks::{Block, LiveBlocks};
use crate::analyze::profile::{HeapEventKind, Profile};
use crate::analyze::replay::{Replay, StackFigures, Weight};
use crate::analyze::symbolize::Symbols;
use crate::error::Result;

/// One test of a test binary (an element of the JSON `tests` array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestFigures {
    /// As libtest prints it: `tests::parse_allocates_once`.
    pub name: String,
    /// The test function: `app::tests::parse_allocates_once`.
    pub function: String,
    /// Over the events under the test's frame, shared initialisation
    /// excluded; `peak_bytes` is the test's own peak (module doc).
    pub total: Figures,
    /// The `self` figures of the lines this test's events are attributed
    /// to (`peak_bytes` is 0 on them: a line's share of a test's peak is not
    /// kept), so that `check` can say which line of a test grew.
    #[serde(default)]
    pub lines: Vec<TestLine>,
}

/// A line's `self` figures within one test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestLine {
    pub file: String,
    pub line: u32,
    pub function: String,
    #[serde(rename = "self")]
    pub self_figures: Figures,
}

/// The tests of a run, and the shared initialisation kept apart from them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestSplit {
    pub tests: Vec<TestFigures>,
    /// Events under a test frame and a shared-initialisation frame.
    pub shared_init: Option<Figures>,
}

const NONE: u32 = u32::MAX;

fn is_libtest_entry(loc: &Location) -> bool {
    loc.function
        .starts_with("test::__rust_begin_short_backtrace")
}

/// Frames of one-time initialisation that other threads may share.
pub fn is_shared_init(function: &str) -> bool {
    const MARKERS: [&str; 7] = [
        "std::sync::once::Once::call",
        "std::sync::poison::once::Once::call",
        "std::sync::once_lock::OnceLock",
        "std::sync::lazy_lock::LazyLock",
        "std::sync::LazyLock",
        "once_cell::sync::",
        "lazy_static::",
    ];
    MARKERS.iter().any(|m| function.contains(m))
}

/// `app::tests::parse::{{closure}}` -> `app::tests::parse`.
fn strip_closures(function: &str) -> &str {
    let mut f = function;
    loop {
        let Some((head, last)) = f.rsplit_once("::") else {
            return f;
        };
        if last == "{{closure}}" || (last.starts_with("{closure#") && last.ends_with('}')) {
            f = head;
        } else {
            return f;
        }
    }
}

/// libtest's name for a test function: its path without the crate.
pub fn test_name(function: &str) -> String {
    match function.split_once("::") {
        Some((_, rest)) if !rest.is_empty() => rest.to_string(),
        _ => function.to_string(),
    }
}

/// Whether a run with these frames ran libtest's harness (only then does
/// `<binary> --list` list what it ran; a `harness = false` binary may
/// ignore the flag and run everything).
pub fn ran_libtest<'a>(mut functions: impl Iterator<Item = &'a str>) -> bool {
    functions.any(|f| {
        f.starts_with("test::test_main")
            || f.starts_with("test::console::run_tests_console")
            || f.starts_with("test::__rust_begin_short_backtrace")
    })
}

/// Gives every test libtest ran (`listed`) an entry: one without events
/// (it allocated nothing) gets zero figures, so that `check` gates it when
/// it starts to allocate. `frames` (the run's functions) find the crate of
/// its function when no other test does: the harness's `<crate>::main`.
pub fn add_listed<'a>(
    tests: &mut Vec<TestFigures>,
    listed: &[String],
    frames: impl Iterator<Item = &'a str>,
) {
    let from_tests = tests.iter().find_map(|t| {
        let prefix = t.function.strip_suffix(&t.name)?.strip_suffix("::")?;
        Some(prefix.to_string())
    });
    let crate_name = from_tests.or_else(|| {
        let mut frames = frames;
        frames
            .find_map(|f| {
                let c = f.strip_suffix("::main")?;
                let ours = !c.is_empty()
                    && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                    && !["std", "core", "alloc", "test", "lineprof"].contains(&c);
                ours.then_some(c)
            })
            .map(str::to_string)
    });
    for name in listed {
        if tests.iter().any(|t| &t.name == name) {
            continue;
        }
        tests.push(TestFigures {
            name: name.clone(),
            function: crate_name
                .as_ref()
                .map_or_else(|| name.clone(), |c| format!("{c}::{name}")),
            total: Figures::default(),
            lines: Vec::new(),
        });
    }
    tests.sort_by(|a, b| a.name.cmp(&b.name));
}

/// Where a stack stands: in test `t`, in shared initialisation inside a
/// test, or outside every test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Outside,
    Test(u32),
    SharedInit,
}

/// The test frame of a stack (innermost first): its index, if any.
fn test_frame(stack: &[u32], locations: &[Location]) -> Option<usize> {
    let entry = stack
        .iter()
        .rposition(|&id| is_libtest_entry(&locations[id as usize]))?;
    (0..entry)
        .rev()
        .find(|&i| is_attributable(&locations[stack[i] as usize]))
}

/// Splits the figures of a test binary's run by test. Empty when no stack
/// runs under libtest (not a test binary, or a harness without libtest).
pub fn split(
    profile: &Profile,
    replay: &Replay,
    symbols: &Symbols,
    root: Option<&Path>,
) -> Result<TestSplit> {
    let mut names: Vec<String> = Vec::new();
    let mut index: HashMap<String, u32> = HashMap::new();
    let places: Vec<Place> = symbols
        .stacks
        .iter()
        .map(|stack| {
            let Some(k) = test_frame(stack, &symbols.locations) else {
                return Place::Outside;
            };
            // A test is listed even when all it did was shared work.
            let function = strip_closures(&symbols.locations[stack[k] as usize].function);
            let next = names.len() as u32;
            let t = *index.entry(function.to_string()).or_insert_with(|| {
                names.push(function.to_string());
                next
            });
            // std's panic machinery (a `#[should_panic]` test's backtrace
            // under RUST_BACKTRACE=1) is no test's: report.rs keeps it apart.
            if in_panic_machinery(stack, &symbols.locations) {
                return Place::Outside;
            }
            let inner = &stack[..k];
            if inner
                .iter()
                .any(|&id| is_shared_init(&symbols.locations[id as usize].function))
            {
                return Place::SharedInit;
            }
            Place::Test(t)
        })
        .collect();
    if names.is_empty() {
        return Ok(TestSplit::default());
    }
    let pass = test_events(profile, &places, names.len())?;
    let mut raw = vec![StackFigures::default(); names.len()];
    let mut init = pass.kept;
    let mut lines: Vec<HashMap<u32, StackFigures>> = vec![HashMap::new(); names.len()];
    for (sid, fig) in replay.per_stack.iter().enumerate() {
        match places.get(sid).copied().unwrap_or(Place::Outside) {
            Place::Outside => {}
            Place::SharedInit => init.add(fig),
            Place::Test(t) => {
                // Allocations from the event pass (without the blocks the
                // test left behind); frees and CPU from the replay.
                let own = pass.transient.get(sid).copied().unwrap_or_default();
                let f = StackFigures {
                    allocations: own.allocations,
                    allocated_bytes: own.allocated_bytes,
                    frees: fig.frees,
                    freed_bytes: fig.freed_bytes,
                    cpu_samples: fig.cpu_samples,
                    cpu_time_ns: fig.cpu_time_ns,
                    ..StackFigures::default()
                };
                raw[t as usize].add(&f);
                let stack = &symbols.stacks[sid];
                if let Some(a) = attribution(stack, &symbols.locations) {
                    lines[t as usize].entry(stack[a]).or_default().add(&f);
                }
            }
        }
    }
    let any_init = !init.is_zero();
    let peaks = pass.peaks;
    let mut tests: Vec<TestFigures> = names
        .iter()
        .enumerate()
        .map(|(t, function)| {
            let mut r = raw[t];
            r.peak_bytes = peaks[t];
            let mut test_lines: Vec<TestLine> = lines[t]
                .iter()
                .map(|(&loc, f)| {
                    let l = &symbols.locations[loc as usize];
                    TestLine {
                        file: display_file(&l.file, root),
                        line: l.line,
                        function: l.function.clone(),
                        self_figures: Figures::from_raw(f),
                    }
                })
                .filter(|l| !l.self_figures.is_zero())
                .collect();
            test_lines.sort_by(|a, b| {
                (&a.file, a.line, &a.function).cmp(&(&b.file, b.line, &b.function))
            });
            TestFigures {
                name: test_name(function),
                function: function.clone(),
                total: Figures::from_raw(&r),
                lines: test_lines,
            }
        })
        .collect();
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    // Shown, never gated; its peak is its share of the process's peak.
    let shared_init = any_init.then(|| Figures::from_raw(&init));
    Ok(TestSplit { tests, shared_init })
}

/// One bit per heap event, by index.
#[derive(Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn set(&mut self, i: u64) {
        let w = (i / 64) as usize;
        if w >= self.0.len() {
            self.0.resize((w + 1).next_power_of_two(), 0);
        }
        self.0[w] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: u64) {
        if let Some(w) = self.0.get_mut((i / 64) as usize) {
            *w &= !(1 << (i % 64));
        }
    }
    fn get(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    fn or(&mut self, o: &Bits) {
        if self.0.len() < o.0.len() {
            self.0.resize(o.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a |= b;
        }
    }
}

/// What the event pass finds: per stack, the allocations of tests that
/// were freed before exit; the blocks tests left behind; per test, its peak.
struct TestEvents {
    transient: Vec<StackFigures>,
    kept: StackFigures,
    peaks: Vec<f64>,
}

/// A block a test allocates that escapes it (nobody frees it before exit,
/// or code outside the test does: another test, libtest) is state the test
/// left to the process (a cache, a pool and its growing vector, a lazily
/// built table): the first test to need it pays, whichever that is. Such
/// blocks count as shared initialisation, not as the test's. A test's peak
/// is the most bytes of its other blocks live at once.
fn test_events(profile: &Profile, places: &[Place], ntests: usize) -> Result<TestEvents> {
    let weight = Weight::new(profile.meta.sample_bytes);
    let place = |stack: u32| match places.get(stack as usize) {
        Some(Place::Test(t)) => *t,
        _ => NONE,
    };
    // Pass 1: which allocations of tests escape them (by event index):
    // still live at exit, or freed by code outside the test (another test,
    // libtest). Memory follows the live blocks (the replay's table, holding
    // the test as the block's stack and the event index as its size) and
    // one bit per event.
    let mut open = LiveBlocks::default();
    let mut live_at_exit = Bits::default();
    let mut escaped = Bits::default();
    let mut i = 0u64;
    profile.for_each_heap_event(|ev| {
        match ev.kind {
            HeapEventKind::Alloc => {
                let t = place(ev.stack);
                if let Some(b) = open.insert(ev.addr, Block { stack: t, size: i }) {
                    // Its free was never seen.
                    live_at_exit.clear(b.size);
                    escaped.set(b.size);
                }
                if t == NONE {
                    open.remove(ev.addr);
                } else {
                    live_at_exit.set(i);
                }
            }
            HeapEventKind::Free => {
                if let Some(b) = open.remove(ev.addr) {
                    live_at_exit.clear(b.size);
                    if place(ev.stack) != b.stack {
                        escaped.set(b.size);
                    }
                }
            }
        }
        i += 1;
    })?;
    escaped.or(&live_at_exit);
    // Pass 2: figures and peaks of the rest.
    let mut out = TestEvents {
        transient: vec![StackFigures::default(); profile.stacks.len().max(places.len())],
        kept: StackFigures::default(),
        peaks: vec![0.0; ntests],
    };
    let mut live = vec![0.0f64; ntests];
    // The test as the block's stack.
    let mut blocks = LiveBlocks::default();
    let mut i = 0u64;
    profile.for_each_heap_event(|ev| {
        let index = i;
        i += 1;
        match ev.kind {
            HeapEventKind::Alloc => {
                let t = place(ev.stack);
                if let Some(old) = blocks.remove(ev.addr) {
                    // A block freed without a free event we saw: forget it.
                    live[old.stack as usize] -= weight.of(old.size) * old.size as f64;
                }
                if t == NONE {
                    return;
                }
                let w = weight.of(ev.size);
                let bytes = w * ev.size as f64;
                if escaped.get(index) {
                    out.kept.allocations += w;
                    out.kept.allocated_bytes += bytes;
                    if live_at_exit.get(index) {
                        out.kept.end_bytes += bytes;
                    }
                    return;
                }
                if let Some(f) = out.transient.get_mut(ev.stack as usize) {
                    f.allocations += w;
                    f.allocated_bytes += bytes;
                }
                blocks.insert(
                    ev.addr,
                    Block {
                        stack: t,
                        size: ev.size,
                    },
                );
                let l = &mut live[t as usize];
                *l += bytes;
                if *l > out.peaks[t as usize] {
                    out.peaks[t as usize] = *l;
                }
            }
            HeapEventKind::Free => {
                if let Some(b) = blocks.remove(ev.addr) {
                    live[b.stack as usize] -= weight.of(b.size) * b.size as f64;
                }
            }
        }
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_libtest() {
        assert_eq!(
            strip_closures("app::tests::parse::{{closure}}"),
            "app::tests::parse"
        );
        assert_eq!(
            strip_closures("app::tests::parse::{closure#0}"),
            "app::tests::parse"
        );
        assert_eq!(strip_closures("app::tests::parse"), "app::tests::parse");
        assert_eq!(test_name("app::tests::parse"), "tests::parse");
        assert_eq!(
            test_name("grow::squares_allocate_once"),
            "squares_allocate_once"
        );
    }

    #[test]
    fn shared_init_frames() {
        assert!(is_shared_init(
            "std::sync::once_lock::OnceLock<T>::initialize"
        ));
        assert!(is_shared_init("std::sync::once::Once::call_once_force"));
        assert!(is_shared_init("<lazy_static::lazy::Lazy<T>>::get"));
        assert!(is_shared_init("once_cell::sync::OnceCell<T>::initialize"));
        assert!(!is_shared_init("std::thread::local::LocalKey<T>::with"));
        assert!(!is_shared_init("app::tests::once"));
    }

    fn loc(file: &str, function: &str) -> Location {
        Location::new(file, 1, function)
    }

    #[test]
    fn blocks_that_escape_a_test_are_shared() {
        use crate::analyze::profile::parse_profile;
        use crate::analyze::profile::testing::{Ev, ProfileBytes};
        let mut p = ProfileBytes::new(0, 1000);
        p.stacks(0, &[&[1], &[2], &[3]]);
        p.events(
            1,
            0,
            &[
                Ev::Alloc(0, 0, 100, 0xa), // test 0, freed by itself
                Ev::Alloc(1, 1, 30, 0xb),  // test 1, freed by itself
                Ev::Alloc(2, 0, 50, 0xc),  // test 0, freed by test 1: escapes
                Ev::Free(3, 0, 100, 0xa),
                Ev::Free(4, 1, 50, 0xc),
                Ev::Free(5, 1, 30, 0xb),
                Ev::Alloc(6, 0, 20, 0xd),  // test 0, live at exit: escapes
                Ev::Alloc(7, 2, 999, 0xe), // outside the tests
            ],
        );
        p.end(8);
        let profile = parse_profile(&p.bytes, Path::new("t.lprof")).unwrap();
        let places = [Place::Test(0), Place::Test(1), Place::Outside];
        let out = test_events(&profile, &places, 2).unwrap();
        let t0 = out.transient[0];
        assert_eq!((t0.allocations, t0.allocated_bytes), (1.0, 100.0));
        let t1 = out.transient[1];
        assert_eq!((t1.allocations, t1.allocated_bytes), (1.0, 30.0));
        assert_eq!(out.transient[2], StackFigures::default());
        let kept = out.kept;
        assert_eq!((kept.allocations, kept.allocated_bytes), (2.0, 70.0));
        assert_eq!(kept.end_bytes, 20.0, "only 0xd is live at exit");
        // Own peaks: test 0 never counts the 50 bytes test 1 freed.
        assert_eq!(out.peaks, vec![100.0, 30.0]);
    }

    #[test]
    fn test_frame_is_the_outermost_user_frame_below_libtest() {
        let locations = vec![
            loc("/rustc/x/library/alloc/src/raw_vec.rs", "alloc::raw_vec::x"),
            loc("src/lib.rs", "app::squares"),
            loc("src/lib.rs", "app::tests::big"),
            loc("src/lib.rs", "app::tests::big::{{closure}}"),
            loc(
                "/rustc/x/library/core/src/ops/function.rs",
                "core::ops::function::FnOnce::call_once",
            ),
            loc(
                "/rustc/x/library/test/src/lib.rs",
                "test::__rust_begin_short_backtrace",
            ),
            loc("/rustc/x/library/test/src/lib.rs", "test::run_test"),
        ];
        let stack: Vec<u32> = (0..locations.len() as u32).collect();
        assert_eq!(test_frame(&stack, &locations), Some(3));
        // The harness's own work, before any test runs.
        assert_eq!(test_frame(&[0, 6], &locations), None);
    }
}
