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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use addr2line::Loader;
use object::{Object, ObjectSection};

use crate::analyze::classify::trim_stack;
pub use crate::analyze::classify::Location;
use crate::analyze::names::{self, demangle, function_name, names_match, FullNames};
use crate::analyze::profile::{Module, Profile};
use crate::analyze::symbols::{self, SymbolTable};
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
    let mut full_names = FullNames::default();
    for &addr in profile.stacks.iter().flatten() {
        resolved
            .entry(addr)
            .or_insert_with(|| modules.resolve(addr, &mut full_names));
    }
    // Names: full names for the short spellings (from the symbol table
    // too), closures after their defining function, line 0 folded.
    names::learn_from_frames(resolved.values().flatten(), &mut full_names);
    modules.learn_symbols(&resolved, &mut full_names);
    names::apply_full_names(resolved.values_mut().flatten(), &full_names);
    names::qualify_closures(&mut resolved, &profile.stacks);
    names::fold_line_zero(&mut resolved, &full_names);
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
    /// Per module: its index in `loaders` and `symbols` (one per file).
    source_of: Vec<usize>,
    loaders: Vec<Option<Loader>>,
    /// Per opened file: its function symbols.
    symbols: Vec<SymbolTable>,
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
            source_of: Vec::new(),
            loaders: Vec::new(),
            symbols: Vec::new(),
            warnings: Vec::new(),
        };
        // One file mapped at several places (or listed many times by a
        // crafted profile) is opened once.
        let mut opened_at: HashMap<(&[u8], &[u8]), usize> = HashMap::new();
        for (i, m) in profile.modules.iter().enumerate() {
            let key = (m.path.as_slice(), m.build_id.as_slice());
            if Some(i) != exe_index {
                if let Some(&source) = opened_at.get(&key) {
                    table.source_of.push(source);
                    continue;
                }
            }
            let opened = if Some(i) == exe_index {
                Some(open_executable(m, &profile.path, &mut table.warnings)?)
            } else {
                open_library(m, &mut table.warnings)
            };
            let (loader, symbols) =
                opened.map_or((None, SymbolTable::default()), |(l, s)| (Some(l), s));
            opened_at.entry(key).or_insert(table.loaders.len());
            table.source_of.push(table.loaders.len());
            table.loaders.push(loader);
            table.symbols.push(symbols);
        }
        Ok(table)
    }

    /// Learns full names from the symbol table for the short names among
    /// `resolved` (a function inlined everywhere in a line-tables-only build
    /// is only known by its short name at its call sites, while a symbol of
    /// an out-of-line copy, maybe never on a stack, has the full one), and
    /// notes the first line of each (what tells two functions of one base
    /// name apart, and where line 0 folds to).
    fn learn_symbols(&self, resolved: &HashMap<u64, Vec<Location>>, full_names: &mut FullNames) {
        let mut wanted: HashSet<&str> = HashSet::new();
        for loc in resolved.values().flatten() {
            if loc.line == 0 && loc.is_resolved() {
                wanted.insert(names::last_segment(&loc.function));
            }
            if names::is_short(&loc.function) && !names::is_closure(&loc.function) {
                wanted.insert(names::base_name(&loc.function));
            }
        }
        for (m, symbols) in self.symbols.iter().enumerate() {
            let Some(loader) = &self.loaders[m] else {
                continue;
            };
            for (addr, raw) in symbols.rust_functions() {
                let full = demangle(raw);
                let last = names::last_segment(&full);
                if !wanted.contains(last) || names::is_closure(last) {
                    continue;
                }
                let Ok(Some(at)) = loader.find_location(addr) else {
                    continue;
                };
                let (Some(file), Some(line)) = (at.file, at.line) else {
                    continue;
                };
                full_names.learn(file, last, &full, Some(line));
            }
        }
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
        let source = self.source_of[m];
        let Some(loader) = &self.loaders[source] else {
            return unknown();
        };
        let probe = pc.wrapping_sub(self.modules[m].bias);
        let mut out = frames_at(loader, &self.symbols[source], probe, full_names);
        if out.is_empty() {
            let function = match self.symbols[source].lookup(probe) {
                Some(sym) => demangle(sym),
                None => {
                    symbols::module_offset(&String::from_utf8_lossy(&self.modules[m].path), probe)
                }
            };
            out.push(Location {
                file: String::new(),
                line: 0,
                function,
            });
        }
        if out.is_empty() {
            return unknown();
        }
        out
    }
}

fn frames_at(
    loader: &Loader,
    symbols: &SymbolTable,
    probe: u64,
    full_names: &mut FullNames,
) -> Vec<Location> {
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
    if let (Some(last), Some(sym)) = (out.last_mut(), symbols.lookup(probe)) {
        let full = demangle(sym);
        if last.function.is_empty() {
            // Code the compiler generates has no DWARF name: the allocator
            // shims (`__rust_alloc`) that `#[global_allocator]` expands to.
            last.function = full;
        } else if names_match(&full, &last.function) {
            full_names.learn(&last.file, &last.function, &full, None);
            last.function = full;
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens the profiled executable: it must exist, be a regular file, match
/// the recorded build-id and carry line tables.
fn open_executable(
    m: &Module,
    profile: &Path,
    warnings: &mut Vec<String>,
) -> Result<(Loader, SymbolTable)> {
    let path = PathBuf::from(String::from_utf8_lossy(&m.path).into_owned());
    let data = super::profile::read_regular(&path).map_err(|e| match e.kind() {
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
    Ok((loader, SymbolTable::of(&obj)))
}

/// Opens a shared library; any problem only costs its frames their names.
fn open_library(m: &Module, warnings: &mut Vec<String>) -> Option<(Loader, SymbolTable)> {
    let path = String::from_utf8_lossy(&m.path).into_owned();
    if path.is_empty() || path.starts_with('[') || path.contains("linux-vdso") {
        return None;
    }
    let data = super::profile::read_regular(Path::new(&path)).ok()?;
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
    let loader = Loader::new(&path).ok()?;
    Some((loader, SymbolTable::of(&obj)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_without_hash() {
        assert_eq!(
            demangle("_ZN3app11build_index17h0123456789abcdefE"),
            "app::build_index"
        );
        assert_eq!(demangle("malloc"), "malloc");
    }
}
