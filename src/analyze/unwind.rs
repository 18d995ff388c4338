//! Correct stacks for CPU samples taken in code without frame pointers.
//!
//! The signal handler walks frame pointers. In C code (glibc's memcpy,
//! malloc's internals) that walk is wrong: a leaf keeps no frame, so the
//! walk skips its caller, and code that uses the frame-pointer register for
//! data has no chain to walk at all. For such samples (`CPU_STACK_COPY`) the
//! handler also kept the registers, a copy of the stack from the stack
//! pointer up, and the frame address of each frame of its own walk, which
//! it started at the first real-looking frame record. Here, as perf's DWARF
//! mode does, the first frames are unwound with the module's `.eh_frame`
//! (through its `.eh_frame_hdr` search table) until a frame of the
//! executable (built with frame pointers) is reached; its frame pointer is
//! then followed through the copy until it meets a frame of the handler's
//! walk, whose outer frames complete the stack.
//!
//! Every return address must lie in a loaded module's code, every frame
//! inside the copy: what cannot be recovered keeps the handler's stack and
//! is counted (`Recovery`), never guessed. The kernel's vDSO (clock_gettime
//! behind `Instant::now`) has no file: its image is taken from the
//! reporting process, whose kernel maps the same one when the build-ids
//! match. Every CPU stack is also cut at
//! its first return address outside all modules' code, so that words read
//! off the stack by a walk gone astray never reach a report.

use std::collections::HashMap;
use std::path::Path;

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, LittleEndian, ParsedEhFrameHdr, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};
use lineprof::format::{Module, StackCopy};
use object::{Object, ObjectSection};

use crate::analyze::profile::Profile;

/// What happened to the CPU samples that needed unwinding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Samples whose first frames were unwound and spliced on.
    pub recovered: u64,
    /// Samples whose first frames could not be unwound (no call-frame
    /// information, a frame outside the copy): they keep the handler's walk.
    pub unrecovered: u64,
    /// CPU stacks cut at a return address outside every module's code.
    pub cut_stacks: u64,
    /// One line per module whose `.eh_frame` could not be used.
    pub warnings: Vec<String>,
}

/// How to find the caller's registers at one address: the CFA is `rsp` or
/// `rbp` plus an offset; the return address and the saved `rbp` are at
/// offsets from the CFA (or `rbp` keeps its value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    cfa_from_rbp: bool,
    cfa_offset: i64,
    /// `None` where the return address is undefined: the outermost frame
    /// (a thread's start in the C library).
    ra_offset: Option<i64>,
    rbp_offset: Option<i64>,
}

/// One module's call-frame information, parsed once.
struct ModuleCfi {
    data: Vec<u8>,
    eh_frame: (u64, std::ops::Range<usize>),
    hdr: (u64, std::ops::Range<usize>),
    text: u64,
}

impl ModuleCfi {
    fn load(path: &Path) -> Result<ModuleCfi, String> {
        let data = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
        ModuleCfi::parse(data)
    }

    /// The kernel's vDSO has no file: its image is the one mapped into this
    /// process (the kernel maps the same one into every process), used when
    /// its build-id is the profiled module's.
    fn load_vdso(module: &Module) -> Result<ModuleCfi, String> {
        let data = own_vdso()?;
        let file = object::File::parse(&*data).map_err(|e| format!("not an ELF image: {e}"))?;
        let ours = file.build_id().ok().flatten().unwrap_or_default().to_vec();
        if module.build_id.is_empty() || ours != module.build_id {
            return Err(
                "the profile has no build-id for it, or it is another kernel's than this one's                  (report on the machine that ran the program)"
                    .to_string(),
            );
        }
        ModuleCfi::parse(data)
    }

    fn parse(data: Vec<u8>) -> Result<ModuleCfi, String> {
        let file = object::File::parse(&*data).map_err(|e| format!("not an ELF file: {e}"))?;
        let range = |name: &str| -> Result<(u64, std::ops::Range<usize>), String> {
            let s = file
                .section_by_name(name)
                .ok_or_else(|| format!("it has no {name} section"))?;
            let (off, len) = s
                .file_range()
                .ok_or_else(|| format!("its {name} section has no data"))?;
            Ok((s.address(), off as usize..(off + len) as usize))
        };
        let eh_frame = range(".eh_frame")?;
        let hdr = range(".eh_frame_hdr")?;
        let text = file.section_by_name(".text").map_or(0, |s| s.address());
        let cfi = ModuleCfi {
            data,
            eh_frame,
            hdr,
            text,
        };
        cfi.parsed_hdr()
            .map_err(|e| format!("its .eh_frame_hdr is corrupt: {e}"))?;
        Ok(cfi)
    }

    fn bases(&self) -> BaseAddresses {
        BaseAddresses::default()
            .set_eh_frame_hdr(self.hdr.0)
            .set_eh_frame(self.eh_frame.0)
            .set_text(self.text)
    }

    fn parsed_hdr(&self) -> gimli::Result<ParsedEhFrameHdr<gimli::EndianSlice<'_, LittleEndian>>> {
        EhFrameHdr::new(&self.data[self.hdr.1.clone()], LittleEndian).parse(&self.bases(), 8)
    }

    /// The unwind rule at file address `addr`, if it is one we follow.
    fn rule(&self, addr: u64) -> Option<Rule> {
        let hdr = self.parsed_hdr().ok()?;
        let table = hdr.table()?;
        let eh_frame = EhFrame::new(&self.data[self.eh_frame.1.clone()], LittleEndian);
        let mut ctx = UnwindContext::new();
        let row = table
            .unwind_info_for_address(
                &eh_frame,
                &self.bases(),
                &mut ctx,
                addr,
                EhFrame::cie_from_offset,
            )
            .ok()?;
        let (cfa_from_rbp, cfa_offset) = match *row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RSP => {
                (false, offset)
            }
            CfaRule::RegisterAndOffset { register, offset } if register == X86_64::RBP => {
                (true, offset)
            }
            _ => return None,
        };
        let ra_offset = match row.register(X86_64::RA) {
            RegisterRule::Offset(o) => Some(o),
            RegisterRule::Undefined => None,
            _ => return None,
        };
        let rbp_offset = match row.register(X86_64::RBP) {
            RegisterRule::Offset(o) => Some(o),
            RegisterRule::SameValue | RegisterRule::Undefined => None,
            _ => return None,
        };
        Some(Rule {
            cfa_from_rbp,
            cfa_offset,
            ra_offset,
            rbp_offset,
        })
    }
}

/// This process's `[vdso]` mapping, read through `/proc/self/mem`.
fn own_vdso() -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("cannot read /proc/self/maps: {e}"))?;
    let range = maps
        .lines()
        .find(|l| l.ends_with("[vdso]"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .filter(|&(a, b)| a < b && b - a <= 1 << 20)
        .ok_or("this process has no [vdso] mapping to compare with")?;
    let mut mem = std::fs::File::open("/proc/self/mem")
        .map_err(|e| format!("cannot open /proc/self/mem: {e}"))?;
    let mut data = vec![0; (range.1 - range.0) as usize];
    mem.seek(SeekFrom::Start(range.0))
        .and_then(|_| mem.read_exact(&mut data))
        .map_err(|e| format!("cannot read this process's vDSO: {e}"))?;
    Ok(data)
}

/// Looks up modules by address and unwinds with their `.eh_frame`.
pub struct Unwinder<'m> {
    modules: &'m [Module],
    /// Executable ranges, sorted: (start, end, module index).
    ranges: Vec<(u64, u64, usize)>,
    cfi: Vec<Option<Option<ModuleCfi>>>,
    rules: HashMap<u64, Option<Rule>>,
    warnings: Vec<String>,
}

impl<'m> Unwinder<'m> {
    pub fn new(modules: &'m [Module]) -> Self {
        let mut ranges: Vec<_> = modules
            .iter()
            .enumerate()
            .flat_map(|(i, m)| m.ranges.iter().map(move |&(s, e)| (s, e, i)))
            .collect();
        ranges.sort_unstable();
        Unwinder {
            modules,
            ranges,
            cfi: (0..modules.len()).map(|_| None).collect(),
            rules: HashMap::new(),
            warnings: Vec::new(),
        }
    }

    /// The module whose code holds `pc`.
    fn module_of(&self, pc: u64) -> Option<usize> {
        let i = self.ranges.partition_point(|&(s, _, _)| s <= pc);
        let &(_, e, m) = self.ranges.get(i.checked_sub(1)?)?;
        (pc < e).then_some(m)
    }

    fn rule(&mut self, pc: u64) -> Option<Rule> {
        if let Some(&r) = self.rules.get(&pc) {
            return r;
        }
        let m = self.module_of(pc)?;
        if self.cfi[m].is_none() {
            let path = String::from_utf8_lossy(&self.modules[m].path).into_owned();
            let loaded = if path.starts_with("linux-vdso") {
                ModuleCfi::load_vdso(&self.modules[m])
            } else if path.is_empty() {
                Err("it has no file".to_string())
            } else {
                ModuleCfi::load(Path::new(&path))
            };
            self.cfi[m] = Some(match loaded {
                Ok(c) => Some(c),
                Err(why) => {
                    self.warnings.push(format!(
                        "cannot unwind CPU samples in {}: {why}; its samples keep the frame-pointer stack",
                        if path.is_empty() { "an unnamed module" } else { &path }
                    ));
                    None
                }
            });
        }
        let bias = self.modules[m].bias;
        let rule = self.cfi[m]
            .as_ref()
            .and_then(|c| c.as_ref())
            .and_then(|c| c.rule(pc.wrapping_sub(bias)));
        self.rules.insert(pc, rule);
        rule
    }

    /// The stack of one sample with a copy: `stack` is the handler's
    /// (`stack[0]` the interrupted pc + 1, then the walk's return
    /// addresses). `None` if it cannot be recovered.
    pub fn unwind(&mut self, stack: &[u64], copy: &StackCopy) -> Option<Vec<u64>> {
        let read = |addr: u64| -> Option<u64> {
            let off = addr.checked_sub(copy.sp)? as usize;
            let b = copy.bytes.get(off..off.checked_add(8)?)?;
            Some(u64::from_le_bytes(b.try_into().unwrap()))
        };
        let exe = 0; // the loader lists the executable first
        let mut out = vec![*stack.first()?];
        let (mut pc, mut sp, mut bp) = (stack[0] - 1, copy.sp, copy.bp);
        // Unwind with call-frame information up to the executable, and in
        // it through frames whose rule does not use the frame pointer (a
        // leaf built without one, a prologue), which the walk skips.
        loop {
            if out.len() > 32 {
                return None;
            }
            let rule = if self.module_of(pc) == Some(exe) {
                match self.rule(pc) {
                    Some(r) if !r.cfa_from_rbp && r.ra_offset.is_some() => r,
                    _ => break,
                }
            } else {
                self.rule(pc)?
            };
            let cfa = if rule.cfa_from_rbp { bp } else { sp }.wrapping_add(rule.cfa_offset as u64);
            let Some(ra_offset) = rule.ra_offset else {
                return Some(out); // the outermost frame: the stack is whole
            };
            let ra = read(cfa.wrapping_add(ra_offset as u64))?;
            if let Some(o) = rule.rbp_offset {
                // A slot below the stack pointer was popped already: the
                // register holds the caller's value again.
                let at = cfa.wrapping_add(o as u64);
                if at >= copy.sp {
                    bp = read(at)?;
                }
            }
            if cfa <= sp || ra == 0 {
                return None;
            }
            self.module_of(ra - 1)?;
            out.push(ra);
            (pc, sp) = (ra - 1, cfa);
        }
        // Follow the frame pointer through the copy to the handler's walk.
        let mut fp = bp;
        loop {
            if let Some(j) = copy.frame_addrs.iter().position(|&a| a == fp) {
                out.extend_from_slice(stack.get(j + 1..)?);
                return Some(out);
            }
            let (Some(next), Some(ret)) = (read(fp), read(fp.wrapping_add(8))) else {
                break;
            };
            if fp < sp || fp & 7 != 0 || ret == 0 || (next <= fp && next != 0) {
                break;
            }
            let m = self.module_of(ret - 1)?;
            out.push(ret);
            if next == 0 || m != exe {
                // Into the C library's start code: the chain ends here.
                return Some(out);
            }
            (sp, fp) = (fp + 16, next);
        }
        // The frame pointer left the copy without meeting the walk (it was
        // restored from a slot the handler could not know, or is data): the
        // executable's frame at `sp` keeps its record at or above it, and
        // the handler's walk started at the lowest real-looking record.
        let j = copy.frame_addrs.iter().position(|&a| a >= sp)?;
        out.extend_from_slice(stack.get(j + 1..)?);
        Some(out)
    }

    /// How many leading frames of `stack` are real: the first frame that is
    /// not in a module's code, and all after it, are not.
    pub fn valid_prefix(&self, stack: &[u64]) -> usize {
        stack
            .iter()
            .enumerate()
            .position(|(i, &a)| {
                let pc = if i == 0 { a } else { a.wrapping_sub(1) };
                self.module_of(pc).is_none()
            })
            .unwrap_or(stack.len())
    }
}

/// Replaces the stacks of the CPU samples that came with a stack copy by
/// their unwound stacks (new stack ids), and cuts every CPU stack at its
/// first frame outside the modules' code.
pub fn recover_cpu_stacks(profile: &mut Profile) -> Recovery {
    let mut rec = Recovery::default();
    let modules = std::mem::take(&mut profile.modules);
    let mut unwinder = Unwinder::new(&modules);
    let mut new_ids: HashMap<Vec<u64>, u32> = HashMap::new();
    let mut cut: HashMap<u32, u32> = HashMap::new();
    let copies = std::mem::take(&mut profile.stack_copies);
    for s in &mut profile.cpu_samples {
        let Some(stack) = profile.stacks.get(s.stack as usize) else {
            continue;
        };
        let mut frames = None;
        if let Some(copy) = s.copy.and_then(|c| copies.get(c as usize)) {
            let r = unwinder.unwind(stack, copy);
            match r {
                Some(f) => {
                    rec.recovered += 1;
                    frames = Some(f);
                }
                None => rec.unrecovered += 1,
            }
        }
        let frames = match frames {
            Some(f) => f,
            None => {
                if let Some(&id) = cut.get(&s.stack) {
                    s.stack = id;
                    continue;
                }
                let n = unwinder.valid_prefix(stack);
                if n == stack.len() {
                    cut.insert(s.stack, s.stack);
                    continue;
                }
                rec.cut_stacks += 1;
                stack[..n].to_vec()
            }
        };
        let old = s.stack;
        let id = *new_ids.entry(frames).or_insert_with_key(|f| {
            profile.stacks.push(f.clone());
            (profile.stacks.len() - 1) as u32
        });
        if s.copy.is_none() {
            cut.insert(old, id);
        }
        s.stack = id;
    }
    profile.stack_copies = copies;
    rec.warnings = unwinder.warnings;
    profile.modules = modules;
    rec
}
