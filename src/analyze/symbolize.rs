//! Turns the profile's raw return addresses into logical frames: source file,
//! line and demangled function, with inlined frames expanded innermost first.
//!
//! Every captured frame is a return address (capture starts inside the
//! allocator), so `addr - 1` is looked up to land on the call instruction.
//! Each distinct address is resolved once; each distinct (file, line,
//! function) is interned once, so stacks become short `Vec<u32>`s.
//!
//! The executable must match the profile (GNU build-id) and carry line
//! tables; those problems are errors. Shared libraries that cannot be read
//! only cost their frames a name, with a warning.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use addr2line::Loader;
use object::{Object, ObjectSection};

use crate::analyze::classify::trim_stack;
pub use crate::analyze::classify::Location;
use crate::analyze::profile::{Module, Profile};
use crate::error::{Error, Result};

/// The symbolized stacks of a profile.
#[derive(Debug, Clone, Default)]
pub struct Symbols {
    /// Interned locations; stacks refer to them by index.
    pub locations: Vec<Location>,
    /// Per stack id: location ids, innermost first, with the allocator's own
    /// frames removed from the innermost end and unresolvable garbage removed
    /// from the outermost end.
    pub stacks: Vec<Vec<u32>>,
    pub warnings: Vec<String>,
}

/// Resolves every stack of `profile`.
pub fn symbolize(profile: &Profile) -> Result<Symbols> {
    let exe = profile.executable();
    let mut modules = ModuleTable::open(profile, &exe)?;
    let mut out = Symbols::default();
    out.warnings.append(&mut modules.warnings);
    // Resolve each distinct address once, then settle names, then intern:
    // renaming after interning could make two ids for one line.
    let mut resolved: HashMap<u64, Vec<Location>> = HashMap::new();
    let mut full_names = HashMap::new();
    for &addr in profile.stacks.iter().flatten() {
        resolved
            .entry(addr)
            .or_insert_with(|| modules.resolve(addr, &mut full_names));
    }
    for loc in resolved.values_mut().flatten() {
        if loc.function.contains("::") {
            continue;
        }
        let key = (loc.file.clone(), base_name(&loc.function).to_string());
        if let Some(Some(full)) = full_names.get(&key) {
            loc.function = String::clone(full);
        }
    }
    let mut interned: HashMap<Location, u32> = HashMap::new();
    let mut by_addr: HashMap<u64, Vec<u32>> = HashMap::new();
    for (addr, locs) in resolved {
        let ids = locs
            .into_iter()
            .map(|loc| intern(&mut interned, &mut out.locations, loc))
            .collect();
        by_addr.insert(addr, ids);
    }
    for frames in &profile.stacks {
        let mut stack = Vec::with_capacity(frames.len() * 2);
        for addr in frames {
            stack.extend_from_slice(&by_addr[addr]);
        }
        trim_stack(&mut stack, &out.locations);
        out.stacks.push(stack);
    }
    Ok(out)
}

/// Full function names learnt from the symbol table, keyed by (file, the
/// short name line-tables-only DWARF gives, without generic arguments).
/// Inlined copies of a function only have the short name; this gives them
/// the same name as an out-of-line copy, so one line is not split in two.
/// `None`: two different functions of one file share the short name
/// (`Foo::new`, `Bar::new`), so it says nothing.
type FullNames = HashMap<(String, String), Option<String>>;

/// DWARF's short name without generic arguments: `push<u8>` -> `push`.
fn base_name(short: &str) -> &str {
    short.split('<').next().unwrap_or(short)
}

fn learn(full_names: &mut FullNames, file: &str, short: &str, full: &str) {
    let key = (file.to_string(), base_name(short).to_string());
    match full_names.get(&key) {
        None => {
            full_names.insert(key, Some(full.to_string()));
        }
        Some(Some(known)) if known != full => {
            full_names.insert(key, None);
        }
        _ => {}
    }
}

/// Whether `short` (DWARF's name, maybe with generic arguments) names the
/// function whose full path is `full`.
fn names_match(full: &str, short: &str) -> bool {
    if short.contains("::") {
        return false;
    }
    let base = short.split('<').next().unwrap_or(short);
    !base.is_empty() && (full == base || full.ends_with(&format!("::{base}")))
}

fn intern(map: &mut HashMap<Location, u32>, all: &mut Vec<Location>, loc: Location) -> u32 {
    *map.entry(loc).or_insert_with_key(|loc| {
        all.push(loc.clone());
        (all.len() - 1) as u32
    })
}

/// The loaded modules, address ranges sorted for lookup, and one lazily
/// opened DWARF context per module.
struct ModuleTable {
    ranges: Vec<(u64, u64, usize)>,
    modules: Vec<Module>,
    loaders: Vec<Option<Loader>>,
    warnings: Vec<String>,
}

impl ModuleTable {
    fn open(profile: &Profile, exe: &Path) -> Result<ModuleTable> {
        let mut ranges = Vec::new();
        for (i, m) in profile.modules.iter().enumerate() {
            ranges.extend(m.ranges.iter().map(|&(s, e)| (s, e, i)));
        }
        ranges.sort_unstable();
        let exe_index = profile
            .modules
            .iter()
            .position(|m| Path::new(&*String::from_utf8_lossy(&m.path)) == exe)
            .or(if profile.modules.is_empty() {
                None
            } else {
                Some(0)
            });
        let mut table = ModuleTable {
            ranges,
            modules: profile.modules.clone(),
            loaders: Vec::new(),
            warnings: Vec::new(),
        };
        for (i, m) in profile.modules.iter().enumerate() {
            let loader = if Some(i) == exe_index {
                Some(open_executable(m, &profile.path, &mut table.warnings)?)
            } else {
                open_library(m, &mut table.warnings)
            };
            table.loaders.push(loader);
        }
        Ok(table)
    }

    /// Logical frames for one return address, innermost first.
    fn resolve(&self, addr: u64, full_names: &mut FullNames) -> Vec<Location> {
        let unknown = || {
            vec![Location {
                file: String::new(),
                line: 0,
                function: format!("{addr:#x}"),
            }]
        };
        let pc = addr.wrapping_sub(1);
        let i = self.ranges.partition_point(|&(s, _, _)| s <= pc);
        let Some(&(s, e, m)) = i.checked_sub(1).map(|i| &self.ranges[i]) else {
            return unknown();
        };
        if !(s..e).contains(&pc) {
            return unknown();
        }
        let Some(loader) = &self.loaders[m] else {
            return unknown();
        };
        let probe = pc.wrapping_sub(self.modules[m].bias);
        let mut out = frames_at(loader, probe, full_names);
        if out.is_empty() {
            if let Some(sym) = loader.find_symbol(probe) {
                out.push(Location {
                    file: String::new(),
                    line: 0,
                    function: demangle(sym),
                });
            }
        }
        if out.is_empty() {
            return unknown();
        }
        out
    }
}

fn frames_at(loader: &Loader, probe: u64, full_names: &mut FullNames) -> Vec<Location> {
    let mut out = Vec::new();
    let Ok(mut frames) = loader.find_frames(probe) else {
        return out;
    };
    while let Ok(Some(frame)) = frames.next() {
        let function = frame
            .function
            .as_ref()
            .and_then(|f| f.raw_name().ok())
            .map(|raw| function_name(&demangle(&raw)))
            .unwrap_or_default();
        let (file, line) = match &frame.location {
            Some(l) => (l.file.unwrap_or("").to_string(), l.line.unwrap_or(0)),
            None => (String::new(), 0),
        };
        if file.is_empty() && function.is_empty() {
            continue;
        }
        out.push(Location {
            file,
            line,
            function,
        });
    }
    // DWARF of line-tables-only builds names the outermost function without
    // its path; the symbol table has the full name.
    if let (Some(last), Some(sym)) = (out.last_mut(), loader.find_symbol(probe)) {
        let full = demangle(sym);
        if last.function.is_empty() {
            // Code the compiler generates has no DWARF name: the allocator
            // shims (`__rust_alloc`) that `#[global_allocator]` expands to.
            last.function = full;
        } else if names_match(&full, &last.function) {
            learn(full_names, &last.file, &last.function, &full);
            last.function = full;
        }
    }
    out
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
            // Skip the balanced generic argument list.
            let mut j = if turbofish { i + 2 } else { i };
            let mut depth = 0;
            while j < chars.len() {
                match chars[j] {
                    '<' => depth += 1,
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens the profiled executable: it must exist, match the recorded build-id
/// and carry line tables.
fn open_executable(m: &Module, profile: &Path, warnings: &mut Vec<String>) -> Result<Loader> {
    let path = PathBuf::from(String::from_utf8_lossy(&m.path).into_owned());
    let data = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::BinaryMissing {
            binary: path.clone(),
            profile: profile.to_path_buf(),
        },
        _ => Error::io(&path, "read the executable", e),
    })?;
    let bad = |detail: String| Error::BadBinary {
        binary: path.clone(),
        detail,
    };
    let obj = object::File::parse(&*data).map_err(|e| bad(e.to_string()))?;
    let now = obj.build_id().ok().flatten().unwrap_or_default();
    if !m.build_id.is_empty() && now != m.build_id.as_slice() {
        return Err(Error::BuildIdMismatch {
            binary: path.clone(),
            now: if now.is_empty() {
                "none".to_string()
            } else {
                hex(now)
            },
            recorded: hex(&m.build_id),
        });
    }
    let has_lines = obj
        .section_by_name(".debug_line")
        .is_some_and(|s| s.size() > 0);
    if !has_lines {
        return Err(Error::NoDebugInfo { binary: path });
    }
    let loader = Loader::new(&path).map_err(|e| bad(e.to_string()))?;
    if let Some(w) = crate::analyze::frame_pointers::frame_pointer_warning(&obj, &loader, &path) {
        warnings.push(w);
    }
    Ok(loader)
}

/// Opens a shared library; any problem only costs its frames their names.
fn open_library(m: &Module, warnings: &mut Vec<String>) -> Option<Loader> {
    let path = String::from_utf8_lossy(&m.path).into_owned();
    if path.is_empty() || path.starts_with('[') || path.contains("linux-vdso") {
        return None;
    }
    let data = std::fs::read(&path).ok()?;
    let obj = object::File::parse(&*data).ok()?;
    let now = obj.build_id().ok().flatten().unwrap_or_default();
    if !m.build_id.is_empty() && now != m.build_id.as_slice() {
        warnings.push(format!(
            "{path}: changed since the profile was written (build-id {}, profile has {}); its frames are shown as addresses",
            hex(now),
            hex(&m.build_id)
        ));
        return None;
    }
    Loader::new(&path).ok()
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
        ] {
            assert_eq!(function_name(raw), name, "{raw}");
        }
    }

    #[test]
    fn learns_full_names_by_base_name_unless_ambiguous() {
        let mut names = FullNames::new();
        learn(
            &mut names,
            "v.rs",
            "push<u64>",
            "alloc::vec::Vec<T,A>::push",
        );
        learn(&mut names, "v.rs", "push<u8>", "alloc::vec::Vec<T,A>::push");
        learn(&mut names, "m.rs", "new", "app::Foo::new");
        learn(&mut names, "m.rs", "new", "app::Bar::new");
        let key = |f: &str, n: &str| (f.to_string(), n.to_string());
        assert_eq!(
            names[&key("v.rs", "push")].as_deref(),
            Some("alloc::vec::Vec<T,A>::push")
        );
        assert_eq!(names[&key("m.rs", "new")], None);
    }

    #[test]
    fn matches_short_dwarf_names() {
        assert!(names_match("app::build_index", "build_index"));
        assert!(names_match("app::Vec<T>::push", "push<u8>"));
        assert!(!names_match("app::build_index", "index"));
        assert!(!names_match("app::f", "app::f"));
    }

    #[test]
    fn demangles_without_hash() {
        assert_eq!(
            demangle("_ZN3app11build_index17h0123456789abcdefE"),
            "app::build_index"
        );
        assert_eq!(demangle("malloc"), "malloc");
    }
}
