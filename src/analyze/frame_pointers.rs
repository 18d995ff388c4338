//! Detects an executable built without frame pointers. The shim captures
//! stacks by walking frame pointers, so through code compiled without them
//! stacks are cut short or wrong; better to say so up front than to show
//! confident but wrong lines.
//!
//! Heuristic: in the unwind tables (`.eh_frame`), a function that keeps a
//! frame pointer sets its CFA register to the frame-pointer register (rbp on
//! x86-64, x29 on AArch64). Over the program's own functions (not the
//! prebuilt standard library, whose sources are under `/rustc/`) longer than
//! 16 bytes, if most never do, frame pointers were off.

use std::path::Path;

use addr2line::Loader;
use gimli::{
    BaseAddresses, CfaRule, CieOrFde, EhFrame, RunTimeEndian, UnwindContext, UnwindSection,
};
use object::{Architecture, Object, ObjectSection};

/// Counts of the program's functions with and without a frame pointer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FramePointerCount {
    pub with: u32,
    pub without: u32,
}

/// The warning to print when `obj` looks built without frame pointers.
pub fn frame_pointer_warning(
    obj: &object::File<'_>,
    loader: &Loader,
    path: &Path,
) -> Option<String> {
    let count = count_frame_pointers(obj, loader)?;
    if count.without > count.with {
        Some(format!(
            "{} was built without frame pointers; stacks may be cut short or wrong. Rebuild with RUSTFLAGS=\"-C force-frame-pointers=yes\" (or use cargo lineprof run)",
            path.display()
        ))
    } else {
        None
    }
}

pub fn count_frame_pointers(obj: &object::File<'_>, loader: &Loader) -> Option<FramePointerCount> {
    let fp_register = match obj.architecture() {
        Architecture::X86_64 => 6,
        Architecture::Aarch64 => 29,
        _ => return None,
    };
    let section = obj.section_by_name(".eh_frame")?;
    let data = section.data().ok()?;
    let endian = if obj.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let mut eh_frame = EhFrame::new(data, endian);
    eh_frame.set_address_size(if obj.is_64() { 8 } else { 4 });
    let mut bases = BaseAddresses::default().set_eh_frame(section.address());
    if let Some(text) = obj.section_by_name(".text") {
        bases = bases.set_text(text.address());
    }
    if let Some(got) = obj.section_by_name(".got") {
        bases = bases.set_got(got.address());
    }
    let mut ctx = Box::new(UnwindContext::new());
    let mut count = FramePointerCount::default();
    let mut entries = eh_frame.entries(&bases);
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(EhFrame::cie_from_offset) else {
            continue;
        };
        if fde.len() <= 16 || !is_program_code(loader, fde.initial_address()) {
            continue;
        }
        let Ok(mut rows) = fde.rows(&eh_frame, &bases, &mut ctx) else {
            continue;
        };
        let mut uses_fp = false;
        while let Ok(Some(row)) = rows.next_row() {
            if let CfaRule::RegisterAndOffset { register, .. } = row.cfa() {
                if register.0 == fp_register {
                    uses_fp = true;
                    break;
                }
            }
        }
        if uses_fp {
            count.with += 1;
        } else {
            count.without += 1;
        }
    }
    Some(count)
}

/// Whether the function at `addr` was compiled with the program's flags:
/// it has line info and is not from the prebuilt standard library.
fn is_program_code(loader: &Loader, addr: u64) -> bool {
    match loader.find_location(addr) {
        Ok(Some(loc)) => loc
            .file
            .is_some_and(|f| !crate::analyze::classify::is_std_file(f)),
        _ => false,
    }
}
