//! The loaded modules (executable and shared objects), so the reader can
//! turn runtime addresses of position-independent code into file addresses
//! and check that the binary it symbolizes is the one that ran (build-id).
//!
//! `dl_iterate_phdr` takes the dynamic loader's lock, so it is only ever
//! called while lineprof holds none of its own locks: a host thread inside
//! its own `dl_iterate_phdr` callback may allocate and reach us.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::format::Encoder;

/// The runtime address range spanning the executable's code segments
/// (built with frame pointers, so the CPU sampler's walk is right there),
/// set by the first `encode`.
static EXE_TEXT: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// Whether `pc` lies in the executable's code.
#[inline]
pub fn in_executable(pc: usize) -> bool {
    EXE_TEXT[0].load(Ordering::Relaxed) <= pc && pc < EXE_TEXT[1].load(Ordering::Relaxed)
}

struct Ctx<'a, 'b> {
    enc: &'a mut Encoder<'b>,
    count: u64,
    exe: &'a [u8],
}

/// Encodes the `Modules` payload (count first) into `out`; returns its
/// length. `exe` names the main program, which the loader lists unnamed.
pub fn encode(out: &mut [u8], exe: &[u8]) -> usize {
    const ENTRIES_AT: usize = 16;
    if out.len() < ENTRIES_AT + 64 {
        return 0;
    }
    let (head, body) = out.split_at_mut(ENTRIES_AT);
    let mut enc = Encoder::new(body, 0);
    let mut ctx = Ctx {
        enc: &mut enc,
        count: 0,
        exe,
    };
    // SAFETY: the callback only reads the loader's `dl_phdr_info` (valid for
    // the duration of each call) and writes through the context pointer we
    // pass, which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(callback), &mut ctx as *mut Ctx as *mut libc::c_void);
    }
    let count = ctx.count;
    let body_len = enc.pos();
    let mut count_buf = [0u8; 10];
    let mut ce = Encoder::new(&mut count_buf, 0);
    ce.varint(count);
    let n = ce.pos();
    head[..n].copy_from_slice(&count_buf[..n]);
    // Close the gap between the count and the entries.
    out.copy_within(ENTRIES_AT..ENTRIES_AT + body_len, n);
    n + body_len
}

unsafe extern "C" fn callback(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: `data` is the `Ctx` passed by `encode`; `info` is valid for
    // this call (dl_iterate_phdr's contract).
    let (ctx, info) = unsafe { (&mut *(data as *mut Ctx), &*info) };
    let bias = info.dlpi_addr;
    // SAFETY: the loader gives `dlpi_phnum` program headers at `dlpi_phdr`.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let name: &[u8] = if info.dlpi_name.is_null() {
        b""
    } else {
        // SAFETY: a non-null `dlpi_name` is a NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes()
    };
    let path = if name.is_empty() && ctx.count == 0 {
        ctx.exe
    } else {
        name
    };
    let mut build_id: &[u8] = &[];
    let mut ranges = 0u64;
    for ph in phdrs {
        if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
            ranges += 1;
        }
        if ph.p_type == libc::PT_NOTE && build_id.is_empty() {
            // SAFETY: a PT_NOTE segment of a loaded module is mapped at
            // `bias + p_vaddr` for `p_memsz` bytes (it lies in a PT_LOAD).
            let notes = unsafe {
                std::slice::from_raw_parts(
                    bias.wrapping_add(ph.p_vaddr) as *const u8,
                    ph.p_memsz as usize,
                )
            };
            build_id = gnu_build_id(notes);
        }
    }
    let need = 8 + 10 + build_id.len() + 10 + path.len() + 10 + ranges as usize * 20;
    if ctx.enc.remaining() < need + 16 {
        return 1; // out of room: stop iterating, keep what we have
    }
    ctx.enc.u64(bias);
    ctx.enc.lp_bytes(build_id);
    ctx.enc.lp_bytes(path);
    ctx.enc.varint(ranges);
    let (mut lo, mut hi) = (u64::MAX, 0);
    for ph in phdrs {
        if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
            let start = bias.wrapping_add(ph.p_vaddr);
            ctx.enc.varint(start);
            ctx.enc.varint(start.wrapping_add(ph.p_memsz));
            lo = lo.min(start);
            hi = hi.max(start.wrapping_add(ph.p_memsz));
        }
    }
    if ctx.count == 0 && lo < hi {
        EXE_TEXT[0].store(lo as usize, Ordering::Relaxed);
        EXE_TEXT[1].store(hi as usize, Ordering::Relaxed);
    }
    ctx.count += 1;
    0
}

/// Finds the `NT_GNU_BUILD_ID` note in a notes segment.
fn gnu_build_id(mut notes: &[u8]) -> &[u8] {
    let align4 = |n: usize| (n + 3) & !3;
    while notes.len() >= 12 {
        let word = |i: usize| u32::from_ne_bytes(notes[i..i + 4].try_into().unwrap()) as usize;
        let (namesz, descsz, ty) = (word(0), word(4), word(8));
        let name_end = 12 + align4(namesz);
        let desc_end = name_end + align4(descsz);
        if desc_end > notes.len() {
            break;
        }
        if ty == 3 && namesz == 4 && &notes[12..16] == b"GNU\0" {
            return &notes[name_end..name_end + descsz];
        }
        notes = &notes[desc_end..];
    }
    &[]
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_this_test_binary_with_a_build_id() {
        let mut buf = vec![0u8; 1 << 16];
        let n = super::encode(&mut buf, b"/self");
        let mods = crate::format::decode_modules(&buf[..n]).unwrap();
        assert!(!mods.is_empty());
        assert_eq!(mods[0].path, b"/self");
        assert!(!mods[0].ranges.is_empty());
        let here = lists_this_test_binary_with_a_build_id as *const () as u64;
        assert!(mods
            .iter()
            .any(|m| m.ranges.iter().any(|&(s, e)| s <= here && here < e)));
    }
}
