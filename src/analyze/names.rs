//! Function names as a report shows them: one name per function, whatever
//! the spelling the debug info or symbol table used and whatever the
//! debug-info level.
//!
//! - Generic arguments are dropped (`Vec<T,A>::push`, `push<u8>` and
//!   `<Vec<u8>>::push` are all `alloc::vec::Vec::push`), so every instance
//!   of a generic function is one function. `->` inside the arguments
//!   (`call_once<fn(..) -> R>`) is an arrow, not a closing bracket.
//! - Line-tables-only DWARF names functions without their path (`build`,
//!   `{closure#0}`). A short name takes the full name of the function of
//!   that file and base name found in the symbol table or on an
//!   out-of-line copy, unless two functions of the file share it.
//! - A closure is named after the function that defines it
//!   (`app::build::{closure#0}`): with line tables only, the defining
//!   function is found from the closure's callers (see
//!   [`qualify_closures`]). Builds through `cargo lineprof` use v0 symbol
//!   mangling, whose names carry the closure's index at every level.
//! - Code the compiler generated without a line (line 0) belongs to the
//!   line that called it when it was inlined, else to its function's first
//!   line (see [`fold_line_zero`]).

use std::collections::HashMap;

use crate::analyze::classify::Location;

/// The full names of the functions of each file, by base name, with the
/// first line of each where the symbol table tells it: what short names
/// are looked up in.
#[derive(Debug, Default)]
pub struct FullNames {
    by_base: HashMap<(String, String), Vec<Candidate>>,
}

/// A function's first line (when known) and full name.
type Candidate = (Option<u32>, String);

impl FullNames {
    /// Notes that the function `full` of `file` has the short name `short`
    /// and, when known, starts on line `start`.
    pub fn learn(&mut self, file: &str, short: &str, full: &str, start: Option<u32>) {
        let key = (file.to_string(), base_name(short).to_string());
        let known = self.by_base.entry(key).or_default();
        match known.iter_mut().find(|(_, f)| f == full) {
            Some((s, _)) => {
                *s = match (*s, start) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            None => known.push((start, full.to_string())),
        }
    }

    /// The full name of the function of `file` that DWARF calls `short`
    /// on line `line`: the only one of that base name, or of several (`new`
    /// of two types in one file) the one starting last at or before `line`.
    pub fn lookup(&self, file: &str, short: &str, line: u32) -> Option<&str> {
        let known = self
            .by_base
            .get(&(file.to_string(), base_name(short).to_string()))?;
        if let [(_, only)] = &known[..] {
            return Some(only);
        }
        known
            .iter()
            .filter_map(|(start, full)| Some(((*start)?, full)))
            .filter(|(start, _)| *start <= line)
            .max_by_key(|(start, _)| *start)
            .map(|(_, full)| full.as_str())
    }

    /// The first line of function `full` of `file`, when the symbol table
    /// told it.
    pub fn start_of(&self, file: &str, full: &str) -> Option<u32> {
        let key = (file.to_string(), base_name(last_segment(full)).to_string());
        self.by_base
            .get(&key)?
            .iter()
            .find(|(_, f)| f == full)
            .and_then(|(start, _)| *start)
    }
}

/// `{:#}` demangling: the path without the hash suffix, and without
/// generic arguments (`function_name`).
pub fn demangle(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => function_name(&format!("{d:#}")),
        Err(_) => name.to_string(),
    }
}

/// A function as written in the source: generic arguments dropped, so that
/// every instantiation of a generic function (and every spelling of it:
/// `Vec<T,A>::push` from the symbol table, `push<u8>` from DWARF,
/// `<Vec<u8>>::push` from v0 mangling) is one function, and one source line
/// one row. `<Type as Trait>` paths keep their form.
pub fn function_name(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let after_ident = out
            .chars()
            .last()
            .is_some_and(|p| p.is_alphanumeric() || p == '_' || p == '}');
        let turbofish =
            c == ':' && chars.get(i + 1) == Some(&':') && chars.get(i + 2) == Some(&'<');
        if (c == '<' && after_ident) || turbofish {
            // Skip the balanced generic argument list; the `>` of `->` is
            // not a bracket.
            let mut j = if turbofish { i + 2 } else { i };
            let mut depth = 0;
            while j < chars.len() {
                match chars[j] {
                    '<' => depth += 1,
                    '>' if j > 0 && chars[j - 1] == '-' => {}
                    '>' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            i = j + 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
    unwrap_inherent(&out)
}

/// `<a::Type>::method` (v0's spelling of an inherent method) as
/// `a::Type::method`.
fn unwrap_inherent(name: &str) -> String {
    if let Some(rest) = name.strip_prefix('<') {
        if let Some(end) = rest.find(">::") {
            let inner = &rest[..end];
            if !inner.contains(" as ") && !inner.contains('<') {
                return format!("{inner}{}", &rest[end + 1..]);
            }
        }
    }
    name.to_string()
}

/// DWARF's short name without generic arguments: `push<u8>` -> `push`.
pub fn base_name(short: &str) -> &str {
    short.split('<').next().unwrap_or(short)
}

/// The last path segment of a full name, as DWARF's short name would be:
/// `<a::Rec as core::clone::Clone>::clone` -> `clone`.
pub fn last_segment(full: &str) -> &str {
    // Skip `<...>` groups so that `::` inside `<A as B>` is not taken.
    let mut depth = 0i32;
    let mut start = 0;
    let bytes = full.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' => depth += 1,
            b'>' if i > 0 && bytes[i - 1] == b'-' => {}
            b'>' => depth -= 1,
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => {
                start = i + 2;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    &full[start..]
}

/// Whether a name is unqualified: no path, as line-tables-only DWARF gives.
pub fn is_short(name: &str) -> bool {
    !name.is_empty() && !name.contains("::")
}

/// Whether a name (short or full) names a closure.
pub fn is_closure(name: &str) -> bool {
    let last = last_segment(name);
    last.starts_with("{closure") || last.starts_with("{{closure")
}

/// Whether `short` (DWARF's name, maybe with generic arguments) names the
/// function whose full path is `full`.
pub fn names_match(full: &str, short: &str) -> bool {
    if !is_short(short) {
        return false;
    }
    let base = base_name(short);
    !base.is_empty() && (full == base || full.ends_with(&format!("::{base}")))
}

/// Learns the full names that frames already carry: code compiled with
/// more debug info (the prebuilt standard library has linkage names) names
/// a function in full where a copy inlined into line-tables-only code has
/// only its short name.
pub fn learn_from_frames<'a>(
    locations: impl Iterator<Item = &'a Location>,
    full_names: &mut FullNames,
) {
    for loc in locations {
        if loc.is_resolved() && !is_short(&loc.function) && !is_closure(&loc.function) {
            full_names.learn(&loc.file, last_segment(&loc.function), &loc.function, None);
        }
    }
}

/// Gives short names the full name learnt for their (file, base name).
pub fn apply_full_names<'a>(
    locations: impl Iterator<Item = &'a mut Location>,
    full_names: &FullNames,
) {
    for loc in locations {
        if !is_short(&loc.function) || is_closure(&loc.function) {
            continue;
        }
        if let Some(full) = full_names.lookup(&loc.file, &loc.function, loc.line) {
            loc.function = full.to_string();
        }
    }
}

/// How many frames past a closure are searched for its defining function.
const DEFINER_SEARCH: usize = 64;

/// Names each unqualified closure (`{closure#0}`, from line-tables-only
/// DWARF) after the function that defines it.
///
/// A closure runs below the function that defines it: directly, or through
/// the std adapters it was passed to (`Iterator::map`, `fold`, ...). The
/// definer is therefore one of the frames outside the closure in the same
/// source file that are not closures themselves. Of these, the one whose
/// line is the smallest at or after the closure's line is taken: the
/// definer calls the closure on its own line or after it (`.map(|x| ..)`
/// then `.collect()`), while a helper of the same file that only calls a
/// closure it was given (`fn apply(f: impl Fn())`) runs its body elsewhere
/// in the file. Without such a frame, the nearest line before the closure.
///
/// `chains` are the logical frames of each return address (innermost
/// first); `stacks` the return addresses of each stack (innermost first).
/// The frames past a closure are those after it in its own address's chain,
/// then the chains of the addresses after it in the first stack it is met.
pub fn qualify_closures(chains: &mut HashMap<u64, Vec<Location>>, stacks: &[Vec<u64>]) {
    let mut decided: HashMap<(u64, usize), Option<String>> = HashMap::new();
    for stack in stacks {
        for (p, addr) in stack.iter().enumerate() {
            let Some(chain) = chains.get(addr) else {
                continue;
            };
            for (i, loc) in chain.iter().enumerate() {
                if !is_short(&loc.function) || !is_closure(&loc.function) {
                    continue;
                }
                if decided.contains_key(&(*addr, i)) {
                    continue;
                }
                let outer = chain[i + 1..].iter().chain(
                    stack[p + 1..]
                        .iter()
                        .filter_map(|a| chains.get(a))
                        .flatten(),
                );
                let definer = pick_definer(loc, outer.take(DEFINER_SEARCH));
                decided.insert((*addr, i), definer);
            }
        }
    }
    for ((addr, i), definer) in decided {
        if let (Some(definer), Some(loc)) =
            (definer, chains.get_mut(&addr).and_then(|c| c.get_mut(i)))
        {
            loc.function = format!("{definer}::{}", loc.function);
        }
    }
}

fn pick_definer<'a>(
    closure: &Location,
    outer: impl Iterator<Item = &'a Location>,
) -> Option<String> {
    let mut after: Option<&Location> = None;
    let mut before: Option<&Location> = None;
    for f in outer {
        if f.file != closure.file || f.function.is_empty() || is_closure(&f.function) {
            continue;
        }
        if f.line >= closure.line {
            if after.is_none_or(|a| f.line < a.line) {
                after = Some(f);
            }
        } else if before.is_none_or(|b| f.line > b.line) {
            before = Some(f);
        }
    }
    after.or(before).map(|f| f.function.clone())
}

/// Frames on line 0: code the compiler generated, with no line of its own.
/// An inlined frame on line 0 is dropped: the frame that inlined it holds
/// the exact line of the call, which then owns the code (as a caller owns
/// what a frame without line information does). The outermost frame at an
/// address (the function the code is in) moves to its function's first
/// line: from the symbol table, which has every function with code of its
/// own, else the smallest line of the function seen in the profile. A
/// function never seen on a line keeps line 0.
///
/// Only the symbol table and the call lines decide: a line-0 sample of a
/// hot inlined function lands on the same line in every run, and on the
/// line another tool reading the same debug info picks (tests/cpu_vs_perf.rs).
pub fn fold_line_zero(chains: &mut HashMap<u64, Vec<Location>>, full_names: &FullNames) {
    let mut first_seen: HashMap<(String, String), u32> = HashMap::new();
    for loc in chains.values().flatten() {
        if loc.line > 0 && loc.is_resolved() {
            let key = (loc.file.clone(), loc.function.clone());
            let e = first_seen.entry(key).or_insert(loc.line);
            *e = (*e).min(loc.line);
        }
    }
    for chain in chains.values_mut() {
        let outermost = chain.len().saturating_sub(1);
        let mut i = 0;
        chain.retain(|loc| {
            i += 1;
            !(loc.line == 0 && loc.is_resolved() && i - 1 < outermost)
        });
        let Some(loc) = chain.last_mut() else {
            continue;
        };
        if loc.line != 0 || !loc.is_resolved() {
            continue;
        }
        let start = full_names.start_of(&loc.file, &loc.function);
        let key = (loc.file.clone(), loc.function.clone());
        if let Some(line) = start.or_else(|| first_seen.get(&key).copied()) {
            loc.line = line;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_drop_generic_arguments() {
        for (raw, name) in [
            ("std::panicking::catch_unwind::<i32, &dyn core::ops::function::Fn<(), Output = i32>>", "std::panicking::catch_unwind"),
            ("alloc::vec::Vec<T,A>::push", "alloc::vec::Vec::push"),
            ("<alloc::vec::Vec<u8>>::push", "alloc::vec::Vec::push"),
            ("push<u8>", "push"),
            ("<alloc::vec::Vec<T,A> as core::ops::drop::Drop>::drop", "<alloc::vec::Vec as core::ops::drop::Drop>::drop"),
            ("app::main::{closure#0}", "app::main::{closure#0}"),
            ("{closure#0}<u8>", "{closure#0}"),
            ("app::build_index", "app::build_index"),
            // `->` is an arrow, not the end of the argument list.
            (
                "core::ops::function::FnOnce::call_once<fn(usize) -> core::result::Result<alloc::vec::Vec<u8>, ()>, (usize)>",
                "core::ops::function::FnOnce::call_once",
            ),
            (
                "<app::run::{closure#0} as core::ops::function::FnOnce<(&str,)>>::call_once::<fn() -> u8>",
                "<app::run::{closure#0} as core::ops::function::FnOnce>::call_once",
            ),
        ] {
            assert_eq!(function_name(raw), name, "{raw}");
        }
    }

    #[test]
    fn last_segments_and_closures() {
        assert_eq!(
            last_segment("<a::Rec as core::clone::Clone>::clone"),
            "clone"
        );
        assert_eq!(last_segment("a::b::{closure#0}"), "{closure#0}");
        assert_eq!(last_segment("build"), "build");
        assert!(is_closure("{closure#1}"));
        assert!(is_closure("a::b::{{closure}}"));
        assert!(!is_closure("a::closure"));
    }

    #[test]
    fn learns_full_names_by_base_name_and_start_line() {
        let mut names = FullNames::default();
        names.learn("v.rs", "push<u64>", "alloc::vec::Vec::push", None);
        names.learn("v.rs", "push<u8>", "alloc::vec::Vec::push", None);
        // Two `new`s in one file: told apart by where each starts.
        names.learn("m.rs", "new", "app::Foo::new", Some(10));
        names.learn("m.rs", "new", "app::Bar::new", Some(30));
        // Two `drop`s, one of unknown start: no guess.
        names.learn("d.rs", "drop", "<app::A as Drop>::drop", None);
        names.learn("d.rs", "drop", "<app::B as Drop>::drop", None);
        assert_eq!(
            names.lookup("v.rs", "push", 3),
            Some("alloc::vec::Vec::push")
        );
        assert_eq!(names.lookup("m.rs", "new", 12), Some("app::Foo::new"));
        assert_eq!(names.lookup("m.rs", "new", 31), Some("app::Bar::new"));
        assert_eq!(names.lookup("m.rs", "new", 5), None);
        assert_eq!(names.lookup("d.rs", "drop", 5), None);
        assert_eq!(names.start_of("m.rs", "app::Bar::new"), Some(30));
        let mut locs = [
            Location::new("v.rs", 3, "push<u8>"),
            Location::new("m.rs", 31, "new"),
        ];
        apply_full_names(locs.iter_mut(), &names);
        assert_eq!(locs[0].function, "alloc::vec::Vec::push");
        assert_eq!(locs[1].function, "app::Bar::new");
    }

    #[test]
    fn matches_short_dwarf_names() {
        assert!(names_match("app::build_index", "build_index"));
        assert!(names_match("app::Vec::push", "push<u8>"));
        assert!(!names_match("app::build_index", "index"));
        assert!(!names_match("app::f", "app::f"));
    }

    #[test]
    fn closures_take_the_defining_function() {
        let std_fold = Location::new("/rustc/h/library/core/src/iter/mod.rs", 90, "fold");
        let mut chains = HashMap::from([
            // `build`'s closure on line 17, inlined into std's fold, called
            // from `build` on line 17.
            (
                1,
                vec![
                    Location::new("a.rs", 17, "{closure#0}"),
                    std_fold.clone(),
                    Location::new("a.rs", 17, "app::build"),
                ],
            ),
            // A closure of `user` (line 30) run by the helper `apply` of the
            // same file (line 5), called from `user` on line 31.
            (
                2,
                vec![
                    Location::new("a.rs", 30, "{closure#0}"),
                    Location::new("a.rs", 5, "app::apply"),
                ],
            ),
            (3, vec![Location::new("a.rs", 31, "app::user")]),
        ]);
        qualify_closures(&mut chains, &[vec![1], vec![2, 3]]);
        assert_eq!(chains[&1][0].function, "app::build::{closure#0}");
        assert_eq!(chains[&2][0].function, "app::user::{closure#0}");
    }

    #[test]
    fn line_zero_folds_into_the_function() {
        let mut chains = HashMap::from([
            // `f` inlined into `g` on line 0, `g` itself on line 0.
            (
                1,
                vec![
                    Location::new("a.rs", 0, "app::f"),
                    Location::new("a.rs", 0, "app::g"),
                ],
            ),
            // `f` inlined into `h` on line 0, called on line 21.
            (
                2,
                vec![
                    Location::new("a.rs", 0, "app::f"),
                    Location::new("a.rs", 21, "app::h"),
                ],
            ),
            // `f` out of line, on line 0; it is seen on lines 12 and 9.
            (3, vec![Location::new("a.rs", 0, "app::f")]),
            (
                4,
                vec![
                    Location::new("a.rs", 12, "app::f"),
                    Location::new("a.rs", 9, "app::f"),
                ],
            ),
        ]);
        let mut names = FullNames::default();
        names.learn("a.rs", "g", "app::g", Some(40));
        fold_line_zero(&mut chains, &names);
        // The inlined frame goes: the code is the caller's, on its line.
        assert_eq!(chains[&1], vec![Location::new("a.rs", 40, "app::g")]);
        assert_eq!(chains[&2], vec![Location::new("a.rs", 21, "app::h")]);
        // The symbol table does not know `f`: the smallest line seen.
        assert_eq!(chains[&3], vec![Location::new("a.rs", 9, "app::f")]);
    }
}
