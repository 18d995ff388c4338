//! Thin, allocation-free wrappers over the system calls the shim needs. All
//! `unsafe` FFI of the shim except the stack walk and `dl_iterate_phdr` lives
//! here, behind safe functions whose arguments cannot violate the callee's
//! contract.

use std::ffi::CStr;

/// Anonymous private read-write memory of `len` bytes (zeroed), or null.
/// Reserved lazily: untouched pages cost no memory.
pub fn map_zeroed(len: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no
    // preconditions; failure is reported as MAP_FAILED and handled. errno
    // is restored: this runs inside the host's allocation calls.
    let p = preserving_errno(|| unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    });
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

/// Writes all of `data` to `fd`, retrying on partial writes and EINTR.
/// Returns false on any other error (the profile is then incomplete, which
/// the reader reports; the host program is not disturbed).
pub fn write_all(fd: i32, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        // SAFETY: `data` is a valid readable slice for its length.
        let n = unsafe { libc::write(fd, data.as_ptr() as *const libc::c_void, data.len()) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        data = &data[n as usize..];
    }
    true
}

fn errno() -> i32 {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// Runs `f` and restores `errno` afterwards, so that the allocator never
/// changes the errno a host program sees around an allocation.
pub fn preserving_errno<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: as in `errno`.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: the slot is valid for this thread's lifetime.
    let saved = unsafe { *slot };
    let r = f();
    // SAFETY: as above.
    unsafe { *slot = saved };
    r
}

/// Creates (truncating) the profile file at the NUL-terminated `path`.
/// Opens the profile file at the NUL-terminated `path` for appending,
/// emptying it first with `truncate`. The descriptor is moved to a high
/// number, away from the low ones a host program expects to be its own.
pub fn create_file(path: &[u8], truncate: bool) -> Option<i32> {
    let c = CStr::from_bytes_until_nul(path).ok()?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_APPEND;
    let flags = if truncate {
        flags | libc::O_TRUNC
    } else {
        flags
    };
    // SAFETY: `c` is a valid NUL-terminated string.
    let fd = unsafe { libc::open(c.as_ptr(), flags, 0o644) };
    if fd < 0 {
        return None;
    }
    // SAFETY: duplicating and closing a descriptor we just opened.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 512) };
    if high >= 0 {
        close(fd);
        return Some(high);
    }
    Some(fd)
}

/// The (device, inode, size) of the file open on `fd`.
pub fn file_identity(fd: i32) -> Option<(u64, u64, u64)> {
    // SAFETY: `st` is a valid out-pointer; a zeroed stat is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev, st.st_ino, st.st_size as u64))
}

/// The working directory into `buf`; returns its length (0 on failure).
pub fn current_dir(buf: &mut [u8]) -> usize {
    // SAFETY: getcwd writes at most `buf.len()` bytes, NUL included.
    let p = unsafe { libc::getcwd(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if p.is_null() {
        return 0;
    }
    buf.iter().position(|&b| b == 0).unwrap_or(0)
}

/// Renames `from` to `to` (both NUL-terminated), replacing `to`
/// atomically. False on failure.
pub fn rename(from: &[u8], to: &[u8]) -> bool {
    let (Ok(f), Ok(t)) = (
        CStr::from_bytes_until_nul(from),
        CStr::from_bytes_until_nul(to),
    ) else {
        return false;
    };
    // SAFETY: two valid NUL-terminated paths.
    unsafe { libc::rename(f.as_ptr(), t.as_ptr()) == 0 }
}

/// Removes the NUL-terminated `path` (errors ignored).
pub fn unlink(path: &[u8]) {
    if let Ok(p) = CStr::from_bytes_until_nul(path) {
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::unlink(p.as_ptr()) };
    }
}

pub fn close(fd: i32) {
    // SAFETY: closing a descriptor we own.
    unsafe { libc::close(fd) };
}

/// Reads the whole of a small file (under /proc) into `buf`; returns the
/// number of bytes read.
pub fn read_file(path: &CStr, buf: &mut [u8]) -> usize {
    // SAFETY: valid NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return 0;
    }
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: writes at most `buf.len() - len` bytes into `buf[len..]`.
        let n = unsafe {
            libc::read(
                fd,
                buf[len..].as_mut_ptr() as *mut libc::c_void,
                buf.len() - len,
            )
        };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    close(fd);
    len
}

/// The executable's path, into `buf`; returns its length.
pub fn executable_path(buf: &mut [u8]) -> usize {
    // SAFETY: readlink writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::readlink(
            c"/proc/self/exe".as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
        )
    };
    if n < 0 {
        0
    } else {
        n as usize
    }
}

/// The value of an environment variable, without allocating.
pub fn getenv(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns a pointer into the
    // environment block, which lives for the process. (The host could
    // change the variable later; we read it once, at start.)
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: getenv returned a valid NUL-terminated string.
    Some(unsafe { CStr::from_ptr(p) }.to_bytes())
}

pub fn stderr(msg: &[u8]) {
    write_all(2, msg);
}

fn clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn unix_ns() -> u64 {
    clock(libc::CLOCK_REALTIME)
}

/// A cheap monotonic clock (vDSO, coarse resolution), for flush intervals.
pub fn coarse_ns() -> u64 {
    clock(libc::CLOCK_MONOTONIC_COARSE)
}

pub fn getpid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() as u32 }
}

pub fn gettid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

pub fn yield_now() {
    // SAFETY: no preconditions.
    unsafe { libc::sched_yield() };
}

/// The bounds `[start, end)` of the mapping that contains `addr`, read from
/// /proc/self/maps with a fixed buffer. Used once per thread to learn where
/// its stack ends, so the frame-pointer walk never leaves it.
pub fn mapping_containing(addr: usize) -> Option<(usize, usize)> {
    // SAFETY: valid NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    let mut have = 0usize;
    let mut found = None;
    'read: loop {
        // SAFETY: reads into the unused tail of `buf`.
        let n = unsafe {
            libc::read(
                fd,
                buf[have..].as_mut_ptr() as *mut libc::c_void,
                buf.len() - have,
            )
        };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        have += n as usize;
        let mut start = 0;
        while let Some(nl) = buf[start..have].iter().position(|&b| b == b'\n') {
            if let Some((lo, hi)) = parse_range(&buf[start..start + nl]) {
                if lo <= addr && addr < hi {
                    found = Some((lo, hi));
                    break 'read;
                }
            }
            start += nl + 1;
        }
        buf.copy_within(start..have, 0);
        have -= start;
        if have == buf.len() {
            have = 0; // an absurdly long line: skip it
        }
    }
    close(fd);
    found
}

fn parse_range(line: &[u8]) -> Option<(usize, usize)> {
    let dash = line.iter().position(|&b| b == b'-')?;
    let space = line.iter().position(|&b| b == b' ')?;
    Some((
        parse_hex(&line[..dash])?,
        parse_hex(&line[dash + 1..space])?,
    ))
}

fn parse_hex(s: &[u8]) -> Option<usize> {
    let mut v = 0usize;
    for &c in s {
        let d = (c as char).to_digit(16)? as usize;
        v = v.checked_mul(16)? + d;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mapping_of_a_stack_variable() {
        let x = 5u64;
        let a = &x as *const u64 as usize;
        let (lo, hi) = mapping_containing(a).unwrap();
        assert!(lo <= a && a < hi);
    }

    #[test]
    fn parses_maps_lines() {
        assert_eq!(
            parse_range(b"7ffd1000-7ffd3000 rw-p 00000000 00:00 0  [stack]"),
            Some((0x7ffd1000, 0x7ffd3000))
        );
        assert_eq!(parse_range(b"garbage"), None);
    }
}
