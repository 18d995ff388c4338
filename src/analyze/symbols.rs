//! A module's symbol table, sized: a program counter is named by the
//! symbol whose range holds it, never by the nearest symbol before it. In
//! glibc, whose exported `.dynsym` lacks the static malloc internals
//! (`_int_malloc`, `_int_free`), the nearest preceding symbol would name
//! them all `__default_morecore`. Symbols come from `.symtab` and
//! `.dynsym`, and from the separate debug file of the module's build-id
//! (`/usr/lib/debug/.build-id/xx/yyyy.debug`) when one is installed; a PC
//! that none of them covers is shown as `module+0xoffset`.

use std::path::{Path, PathBuf};

use object::{Object, ObjectSymbol, SymbolKind};

/// Function symbols sorted by start address.
#[derive(Debug, Default)]
pub struct SymbolTable {
    /// (start, end, raw name)
    entries: Vec<(u64, u64, String)>,
}

impl SymbolTable {
    /// The function symbols of `obj`, and of its build-id debug file if
    /// installed.
    pub fn of(obj: &object::File<'_>) -> SymbolTable {
        let mut t = SymbolTable::default();
        t.add(obj);
        if !obj.has_debug_symbols() || obj.symbols().next().is_none() {
            if let Some(debug) = obj
                .build_id()
                .ok()
                .flatten()
                .and_then(|id| debug_file_path(Path::new("/usr/lib/debug"), id))
            {
                if let Ok(data) = super::profile::read_regular(&debug) {
                    if let Ok(dobj) = object::File::parse(&*data) {
                        t.add(&dobj);
                    }
                }
            }
        }
        t.entries.sort_unstable();
        t.entries.dedup();
        t
    }

    fn add(&mut self, obj: &object::File<'_>) {
        for s in obj.symbols().chain(obj.dynamic_symbols()) {
            if s.kind() != SymbolKind::Text || s.address() == 0 || s.size() == 0 {
                continue;
            }
            if let Ok(name) = s.name() {
                if !name.is_empty() {
                    self.entries.push((
                        s.address(),
                        s.address().saturating_add(s.size()),
                        name.to_string(),
                    ));
                }
            }
        }
    }

    /// The raw name of the function whose range holds `probe` (an address
    /// in the file's own address space).
    pub fn lookup(&self, probe: u64) -> Option<&str> {
        let i = self.entries.partition_point(|e| e.0 <= probe);
        // Symbols may overlap (aliases, nested ranges): look back over the
        // ones that start at or before `probe` for one that holds it.
        self.entries[..i]
            .iter()
            .rev()
            .take(16)
            .find(|e| probe < e.1)
            .map(|e| e.2.as_str())
    }

    /// The Rust function symbols (legacy `_ZN` and v0 `_R` mangling): start
    /// address and raw name.
    pub fn rust_functions(&self) -> impl Iterator<Item = (u64, &str)> {
        self.entries
            .iter()
            .filter(|e| e.2.starts_with("_ZN") || e.2.starts_with("_R"))
            .map(|e| (e.0, e.2.as_str()))
    }
}

/// `<dir>/.build-id/xx/yyyy.debug` for build-id `xxyyyy`, if it exists.
fn debug_file_path(dir: &Path, build_id: &[u8]) -> Option<PathBuf> {
    let (first, rest) = build_id.split_first()?;
    let rest: String = rest.iter().map(|b| format!("{b:02x}")).collect();
    let p = dir
        .join(".build-id")
        .join(format!("{first:02x}"))
        .join(format!("{rest}.debug"));
    p.is_file().then_some(p)
}

/// How a PC outside every symbol is shown: `libc.so.6+0x9a0f0`.
pub fn module_offset(module_path: &str, probe: u64) -> String {
    let name = Path::new(module_path).file_name().map_or_else(
        || module_path.to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    format!("{name}+{probe:#x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pc_between_symbols_has_no_name() {
        let t = SymbolTable {
            entries: vec![
                (0x100, 0x140, "malloc".into()),
                (0x200, 0x210, "__default_morecore".into()),
                (0x300, 0x400, "outer".into()),
                (0x310, 0x320, "inner".into()),
            ],
        };
        assert_eq!(t.lookup(0x120), Some("malloc"));
        // Past `__default_morecore`'s end: a static function glibc does
        // not export (`_int_malloc`), not `__default_morecore`.
        assert_eq!(t.lookup(0x250), None);
        assert_eq!(t.lookup(0x315), Some("inner"));
        assert_eq!(t.lookup(0x330), Some("outer"));
        assert_eq!(t.lookup(0x50), None);
        assert_eq!(
            module_offset("/lib/x86_64-linux-gnu/libc.so.6", 0x9a0f0),
            "libc.so.6+0x9a0f0"
        );
    }

    #[test]
    fn glibc_static_functions_are_not_named_after_their_neighbour() {
        // The machine's own libc: its `.dynsym` leaves gaps (static
        // functions such as `_int_malloc`) that must stay unnamed.
        let path = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        let Ok(data) = std::fs::read(path) else {
            eprintln!("skipped: no {}", path.display());
            return;
        };
        let obj = object::File::parse(&*data).unwrap();
        let t = SymbolTable::of(&obj);
        let malloc = t.entries.iter().find(|e| e.2 == "malloc").expect("malloc");
        assert_eq!(t.lookup(malloc.0 + 1), Some("malloc"));
        // A gap after some symbol: the old nearest-symbol lookup named it.
        let gap = t
            .entries
            .windows(2)
            .find(|w| w[0].1 < w[1].0 && t.entries.iter().all(|e| !(e.0..e.1).contains(&w[0].1)))
            .map(|w| w[0].1)
            .expect("a gap between libc's exported functions");
        assert_eq!(t.lookup(gap), None, "{gap:#x}");
    }
}
