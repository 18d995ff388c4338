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
/// On any other error returns the errno and how many bytes did go out.
pub fn write_all(fd: i32, mut data: &[u8]) -> Result<(), (i32, usize)> {
    let mut done = 0;
    while !data.is_empty() {
        // SAFETY: `data` is a valid readable slice for its length.
        let n = unsafe { libc::write(fd, data.as_ptr() as *const libc::c_void, data.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err((e, done));
        }
        if n == 0 {
            return Err((libc::EIO, done));
        }
        done += n as usize;
        data = &data[n as usize..];
    }
    Ok(())
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

/// Opens (creating) the file at the NUL-terminated `path` for appending
/// (and reading its first bytes, to see whose it is),
/// close-on-exec; the errno on failure.
pub fn open_append(path: &[u8]) -> Result<i32, i32> {
    let c = CStr::from_bytes_until_nul(path).map_err(|_| libc::EINVAL)?;
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC | libc::O_APPEND;
    // SAFETY: `c` is a valid NUL-terminated string.
    let fd = unsafe { libc::open(c.as_ptr(), flags, 0o644) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd)
    }
}

/// Takes an exclusive `flock` on `fd` without waiting: false if another
/// open file (another process's) holds one.
pub fn try_lock_file(fd: i32) -> bool {
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return true;
        }
        if errno() != libc::EINTR {
            return false;
        }
    }
}

/// Whether process `pid` exists (signal 0 checks without sending).
pub fn process_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; only existence and permission are
    // checked.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 || errno() == libc::EPERM }
}

/// Reads up to `buf.len()` bytes at `offset`; the number read.
pub fn pread(fd: i32, buf: &mut [u8], offset: u64) -> usize {
    // SAFETY: pread writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::pread(
            fd,
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            offset as libc::off_t,
        )
    };
    n.max(0) as usize
}

/// Cuts the file open on `fd` to `len` bytes.
pub fn truncate(fd: i32, len: u64) -> bool {
    // SAFETY: ftruncate on a descriptor we own.
    unsafe { libc::ftruncate(fd, len as libc::off_t) == 0 }
}

/// The soft `RLIMIT_FSIZE` (the largest file this process may write
/// without SIGXFSZ), or None when unlimited.
pub fn file_size_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut r) } != 0
        || r.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(r.rlim_cur)
}

/// The highest descriptor number the kernel hands out at all (`nr_open`,
/// 1 Mi by default); used when `RLIMIT_NOFILE` is unlimited.
const NR_OPEN: u64 = 1 << 20;

/// `v` in decimal, without allocating: the digits, most significant
/// first, and how many there are.
pub fn decimal(mut v: u32) -> ([u8; 10], usize) {
    let mut rev = [0u8; 10];
    let mut n = 0;
    loop {
        rev[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut out = [0u8; 10];
    for k in 0..n {
        out[k] = rev[n - 1 - k];
    }
    (out, n)
}

/// Moves `fd` to a number the host can never be given: at or above the soft
/// `RLIMIT_NOFILE`, where `open` fails with EMFILE. `F_DUPFD` only places
/// below the soft limit, so the limit is raised for the one call (within
/// the hard limit) and put back. Closes `fd` and returns the new number, or
/// returns None (with `fd` still open) when the hard limit leaves no room.
pub fn move_above_limit(fd: i32) -> Option<i32> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    let dup_at = |floor: u64| {
        // SAFETY: duplicating a descriptor we own.
        unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor as libc::c_int) }
    };
    let high = if r.rlim_cur == libc::RLIM_INFINITY || r.rlim_cur >= NR_OPEN {
        // No number is out of the host's reach: take one near the top.
        dup_at(NR_OPEN - 4096)
    } else if r.rlim_max == libc::RLIM_INFINITY || r.rlim_max > r.rlim_cur {
        let soft = r.rlim_cur;
        let raised = libc::rlimit {
            rlim_cur: if r.rlim_max == libc::RLIM_INFINITY {
                soft + 64
            } else {
                r.rlim_max.min(soft + 64)
            },
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit with a valid rlimit, within the hard limit; the
        // soft limit is restored right after the one dup.
        unsafe {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return None;
            }
            let h = dup_at(soft);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            h
        }
    } else {
        -1
    };
    if high < 0 {
        return None;
    }
    close(fd);
    Some(high)
}

/// Where the hard `RLIMIT_NOFILE` leaves no room above the soft one: moves
/// `fd` into the top band of the host's range (the lowest free number of
/// the top `TOP_BAND` below the soft limit), when that range is large
/// (`MIN_RANGE_FOR_BAND` or more), so that only a host that uses nearly
/// all its descriptors notices. Closes `fd` and returns the new number, or
/// None (with `fd` still open).
pub fn move_to_top_band(fd: i32) -> Option<i32> {
    const TOP_BAND: u64 = 256;
    const MIN_RANGE_FOR_BAND: u64 = 4096;
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0
        || r.rlim_cur == libc::RLIM_INFINITY
        || r.rlim_cur < MIN_RANGE_FOR_BAND
    {
        return None;
    }
    // SAFETY: duplicating a descriptor we own.
    let high = unsafe {
        libc::fcntl(
            fd,
            libc::F_DUPFD_CLOEXEC,
            (r.rlim_cur - TOP_BAND) as libc::c_int,
        )
    };
    if high < 0 {
        return None;
    }
    close(fd);
    Some(high)
}

/// Marks the object (executable or shared library) holding lineprof as
/// never to be unloaded: a cdylib that a host `dlclose`s keeps its code
/// mapped, so the CPU timers' signal handler, the thread-exit destructor
/// and the exit handler that point into it stay valid. (What many tracers
/// do: `dlopen` of itself with `RTLD_NOLOAD | RTLD_NODELETE`.)
pub fn pin_this_object() {
    // SAFETY: `info` is a valid out-pointer; dladdr fills it for an address
    // inside a loaded object (this function's own).
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let here = pin_this_object as *const () as *const libc::c_void;
    // SAFETY: as above.
    if unsafe { libc::dladdr(here, &mut info) } == 0 || info.dli_fname.is_null() {
        return;
    }
    // The main program is never unloaded; pinning it would only cost a
    // malloc inside the loader.
    // SAFETY: getauxval has no preconditions; `main` is a valid out-pointer
    // and dladdr only reads the address.
    let mut main: libc::Dl_info = unsafe { std::mem::zeroed() };
    let entry = unsafe { libc::getauxval(libc::AT_ENTRY) } as *const libc::c_void;
    if unsafe { libc::dladdr(entry, &mut main) } != 0 && main.dli_fbase == info.dli_fbase {
        return;
    }
    // SAFETY: `dli_fname` is the loader's NUL-terminated path of a loaded
    // object; NOLOAD never loads anything new. The handle is kept (never
    // closed), which is the point.
    unsafe {
        libc::dlopen(
            info.dli_fname,
            libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
        )
    };
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

/// Creates (emptying) the file at the NUL-terminated `path` for writing,
/// its descriptor moved above the host's range when there is room.
pub fn create_truncated(path: &[u8]) -> Option<i32> {
    let c = CStr::from_bytes_until_nul(path).ok()?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC;
    // SAFETY: `c` is a valid NUL-terminated string.
    let fd = unsafe { libc::open(c.as_ptr(), flags, 0o644) };
    if fd < 0 {
        return None;
    }
    Some(move_above_limit(fd).unwrap_or(fd))
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
    let _ = write_all(2, msg);
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

/// The monotonic clock at full resolution (vDSO), for the line timers
/// where the time-stamp counter cannot be used, and to calibrate it.
pub fn monotonic_ns() -> u64 {
    clock(libc::CLOCK_MONOTONIC)
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

/// `struct procmap_query` of Linux's uapi `linux/fs.h` (6.11 and later).
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// `_IOWR('f', 17, struct procmap_query)`.
const PROCMAP_QUERY: u64 =
    (3 << 30) | ((std::mem::size_of::<ProcmapQuery>() as u64) << 16) | (0x66 << 8) | 17;

/// Set once the kernel refused `PROCMAP_QUERY` (before 6.11): the text of
/// /proc/self/maps is read instead.
static NO_PROCMAP_QUERY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The bounds `[start, end)` of the mapping that contains `addr`, from
/// /proc/self/maps: one `PROCMAP_QUERY` ioctl where the kernel has it, else
/// the text read with a fixed buffer. Used once per thread to learn where
/// its stack ends, so the frame-pointer walk never leaves it. (The text
/// costs the kernel a line per mapping: 10-20 us a thread in a process with
/// many mappings, most of what attaching a thread cost.)
pub fn mapping_containing(addr: usize) -> Option<(usize, usize)> {
    use std::sync::atomic::Ordering::Relaxed;
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
    if !NO_PROCMAP_QUERY.load(Relaxed) {
        if let Some(found) = query_mapping(fd, addr) {
            close(fd);
            return found;
        }
    }
    let found = mapping_from_text(fd, addr);
    close(fd);
    found
}

/// `PROCMAP_QUERY` on the open /proc/self/maps `fd`: `Some(answer)`, or
/// `None` when the text must be read instead (old kernels, which then are
/// not asked again).
fn query_mapping(fd: i32, addr: usize) -> Option<Option<(usize, usize)>> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut q = ProcmapQuery {
        size: std::mem::size_of::<ProcmapQuery>() as u64,
        query_addr: addr as u64,
        ..ProcmapQuery::default()
    };
    // SAFETY: `q` is a valid `struct procmap_query` with its size set,
    // no name or build-id buffers (their sizes are 0); the kernel writes
    // only into `q`. Older kernels fail with ENOTTY or EINVAL.
    let r = unsafe { libc::ioctl(fd, PROCMAP_QUERY as _, &mut q as *mut ProcmapQuery) };
    if r == 0 {
        let (lo, hi) = (q.vma_start as usize, q.vma_end as usize);
        return Some((lo <= addr && addr < hi).then_some((lo, hi)));
    }
    match errno() {
        // No mapping holds `addr`.
        libc::ENOENT => Some(None),
        libc::ENOTTY | libc::EINVAL => {
            NO_PROCMAP_QUERY.store(true, Relaxed);
            None
        }
        // Anything else: the text, this time.
        _ => None,
    }
}

/// The mapping holding `addr`, from the text of the open /proc/self/maps
/// `fd`, read with a fixed buffer.
fn mapping_from_text(fd: i32, addr: usize) -> Option<(usize, usize)> {
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
    fn the_query_and_the_text_give_the_same_mapping() {
        let x = 5u64;
        let heap = Box::new(7u64);
        static S: u64 = 9;
        let addrs = [
            &x as *const u64 as usize,
            &*heap as *const u64 as usize,
            &S as *const u64 as usize,
            the_query_and_the_text_give_the_same_mapping as *const () as usize,
            8, // in no mapping
        ];
        let open = || {
            // SAFETY: valid NUL-terminated path.
            unsafe {
                libc::open(
                    c"/proc/self/maps".as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                )
            }
        };
        for a in addrs {
            let fd = open();
            let text = mapping_from_text(fd, a);
            close(fd);
            assert_eq!(mapping_containing(a), text, "address {a:#x}");
            let fd = open();
            // Kernels before 6.11 have no query: then only the text counts.
            if let Some(q) = query_mapping(fd, a) {
                assert_eq!(q, text, "address {a:#x}");
            }
            close(fd);
        }
        assert!(mapping_containing(addrs[0]).is_some());
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
