//! The profile file: created lazily at the first flush (so that a child that
//! forks and immediately execs leaves no file behind), appended to in whole
//! chunks under lineprof's own file lock, finished by an `atexit` handler.
//! A `fork` child starts a file of its own, under its own pid, holding only
//! what it does after the fork.
//!
//! Lock order: a thread's buffer lock, then the file lock. The loader lock
//! (`dl_iterate_phdr`) is only taken while holding neither.

use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use crate::config::{self, Config, PATH_MAX};
use crate::format::{self, ChunkKind, Encoder, CHUNK_HEADER_LEN};
use crate::spin::SpinLock;
use crate::{modules, stacks, sys, thread};

/// Global order of heap events: one number per event, taken after an
/// allocation returns and before a free, so a reused address always
/// orders its free before its next allocation. On a cache line of its own:
/// every thread writes it on every event, and must not drag the read-mostly
/// settings next to it from core to core.
pub static SEQ: Padded<AtomicU64> = Padded(AtomicU64::new(0));

#[repr(align(128))]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
pub static SAMPLE_BYTES: AtomicU64 = AtomicU64::new(0);
pub static CPU_HZ: AtomicU32 = AtomicU32::new(0);
pub static DEPTH: AtomicUsize = AtomicUsize::new(config::DEFAULT_DEPTH);
pub static TRUNCATED_STACKS: AtomicU64 = AtomicU64::new(0);

static FILE_LOCK: SpinLock = SpinLock::new();
static FD: AtomicI32 = AtomicI32::new(-1);
/// Device and inode of the file open on `FD`: a host that closes every
/// descriptor and opens its own files could be handed our number, and we
/// must never write into its file.
static FILE_DEV: AtomicU64 = AtomicU64::new(0);
static FILE_INO: AtomicU64 = AtomicU64::new(0);
static OPEN_FAILED: AtomicBool = AtomicBool::new(false);
/// Set by the exit handler: from then on only it writes.
static FINISHING: AtomicBool = AtomicBool::new(false);
static STACKS_WRITTEN: AtomicU32 = AtomicU32::new(0);
static PID: AtomicU32 = AtomicU32::new(0);
static FORKED_FROM: AtomicU32 = AtomicU32::new(0);
static START_NS: AtomicU64 = AtomicU64::new(0);

const SCRATCH_LEN: usize = 1 << 20;
const MODULES_LEN: usize = 1 << 16;
/// Chunk-building space, used only under the file lock.
static SCRATCH: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
/// The last `Modules` payload, replayed into a forked child's file.
static MODULES: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static MODULES_USED: AtomicUsize = AtomicUsize::new(0);
/// Executable path and output pattern, written once at init.
static PATHS: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static EXE_LEN: AtomicUsize = AtomicUsize::new(0);
static OUT_LEN: AtomicUsize = AtomicUsize::new(0);

fn region(p: &AtomicPtr<u8>, len: usize) -> &'static mut [u8] {
    // SAFETY: each region is mapped once at init with `len` bytes and never
    // unmapped; callers serialise access (file lock, or single-threaded init).
    unsafe { std::slice::from_raw_parts_mut(p.load(Ordering::Acquire), len) }
}

fn exe() -> &'static [u8] {
    &region(&PATHS, 2 * PATH_MAX)[..EXE_LEN.load(Ordering::Acquire)]
}

fn out_pattern() -> &'static [u8] {
    &region(&PATHS, 2 * PATH_MAX)[PATH_MAX..PATH_MAX + OUT_LEN.load(Ordering::Acquire)]
}

/// Called once by the initialising thread, before any event is recorded.
pub fn init(cfg: &Config) -> bool {
    let scratch = sys::map_zeroed(SCRATCH_LEN);
    let mods = sys::map_zeroed(MODULES_LEN);
    let paths = sys::map_zeroed(2 * PATH_MAX);
    if scratch.is_null() || mods.is_null() || paths.is_null() {
        return false;
    }
    SCRATCH.store(scratch, Ordering::Release);
    MODULES.store(mods, Ordering::Release);
    PATHS.store(paths, Ordering::Release);
    let p = region(&PATHS, 2 * PATH_MAX);
    let n = sys::executable_path(&mut p[..PATH_MAX]);
    EXE_LEN.store(n, Ordering::Release);
    // A relative path is taken from the working directory at start, as a
    // user expects, even if the program changes directory before the
    // first write.
    let pattern = &mut p[PATH_MAX..2 * PATH_MAX];
    let mut len = 0;
    if cfg.out[0] != b'/' {
        len = sys::current_dir(&mut pattern[..PATH_MAX - cfg.out_len - 2]);
        if len > 0 {
            pattern[len] = b'/';
            len += 1;
        }
    }
    pattern[len..len + cfg.out_len].copy_from_slice(&cfg.out[..cfg.out_len]);
    OUT_LEN.store(len + cfg.out_len, Ordering::Release);
    SAMPLE_BYTES.store(cfg.sample_bytes, Ordering::Relaxed);
    CPU_HZ.store(cfg.cpu_hz, Ordering::Relaxed);
    DEPTH.store(cfg.max_depth, Ordering::Relaxed);
    PID.store(sys::getpid(), Ordering::Relaxed);
    START_NS.store(sys::unix_ns(), Ordering::Relaxed);
    let used = modules::encode(region(&MODULES, MODULES_LEN), exe());
    MODULES_USED.store(used, Ordering::Release);
    // SAFETY: registering plain `extern "C"` functions with no arguments.
    unsafe {
        libc::atexit(at_exit);
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_parent),
            Some(after_fork_child),
        );
    }
    true
}

/// Writes one sealed events chunk (`chunk` starts with room for the chunk
/// header), preceded by any stacks it may reference that are not yet in the
/// file.
pub fn write_events(chunk: &mut [u8], final_flush: bool) {
    let _g = FILE_LOCK.lock();
    if FINISHING.load(Ordering::Acquire) && !final_flush {
        return;
    }
    let Some(fd) = ensure_open() else { return };
    write_new_stacks(fd, false);
    thread::seal(chunk);
    sys::write_all(fd, chunk);
}

/// Opens the file on first use. File lock held.
fn ensure_open() -> Option<i32> {
    let fd = FD.load(Ordering::Acquire);
    if fd >= 0 {
        match sys::file_identity(fd) {
            Some((dev, ino, _))
                if dev == FILE_DEV.load(Ordering::Relaxed)
                    && ino == FILE_INO.load(Ordering::Relaxed) =>
            {
                return Some(fd);
            }
            // Our descriptor was closed behind our back (and its number
            // maybe reused): reopen the profile, never touch `fd` again.
            _ => FD.store(-1, Ordering::Release),
        }
        return open(false);
    }
    if OPEN_FAILED.load(Ordering::Acquire) {
        return None;
    }
    open(true)
}

/// The file lock, for the aggregate snapshot writer (`aggregate.rs`),
/// which writes whole files of its own under it.
pub(crate) fn file_lock() -> &'static SpinLock {
    &FILE_LOCK
}

/// The chunk-building space. File lock held.
pub(crate) fn scratch() -> &'static mut [u8] {
    region(&SCRATCH, SCRATCH_LEN)
}

/// The profile's path for this process (NUL-terminated in `out`).
pub(crate) fn profile_path(out: &mut [u8; PATH_MAX]) {
    let pid = PID.load(Ordering::Relaxed);
    let forked = FORKED_FROM.load(Ordering::Relaxed) != 0;
    config::expand_path(out_pattern(), pid, forked, out);
}

/// Writes a file header with `version`, the metadata and the module list
/// to a fresh file. File lock held; uses the scratch space.
pub(crate) fn write_preamble(fd: i32, version: u32) -> bool {
    let mut header = [0u8; format::FILE_HEADER_LEN];
    format::write_file_header_version(&mut header, version);
    let ok = sys::write_all(fd, &header);
    let ok = ok
        && write_meta(
            fd,
            PID.load(Ordering::Relaxed),
            FORKED_FROM.load(Ordering::Relaxed),
        );
    let n = MODULES_USED.load(Ordering::Acquire);
    ok && write_chunk(fd, ChunkKind::Modules, &region(&MODULES, MODULES_LEN)[..n])
}

/// Opens the profile (emptying it with `fresh`), writing the file header,
/// metadata and modules if the file is empty. File lock held.
fn open(fresh: bool) -> Option<i32> {
    let pid = PID.load(Ordering::Relaxed);
    let forked_from = FORKED_FROM.load(Ordering::Relaxed);
    let mut path = [0u8; PATH_MAX];
    config::expand_path(out_pattern(), pid, forked_from != 0, &mut path);
    let opened =
        sys::create_file(&path, fresh).and_then(|fd| sys::file_identity(fd).map(|id| (fd, id)));
    let Some((fd, (dev, ino, size))) = opened else {
        OPEN_FAILED.store(true, Ordering::Release);
        let end = path.iter().position(|&b| b == 0).unwrap_or(0);
        sys::stderr(b"lineprof: cannot create the profile file ");
        sys::stderr(&path[..end]);
        sys::stderr(b"; set LINEPROF_OUT to a writable path. This run is not profiled.\n");
        return None;
    };
    FILE_DEV.store(dev, Ordering::Relaxed);
    FILE_INO.store(ino, Ordering::Relaxed);
    FD.store(fd, Ordering::Release);
    if size == 0 {
        let mut header = [0u8; format::FILE_HEADER_LEN];
        format::write_file_header(&mut header);
        sys::write_all(fd, &header);
        write_meta(fd, pid, forked_from);
        let n = MODULES_USED.load(Ordering::Acquire);
        write_chunk(fd, ChunkKind::Modules, &region(&MODULES, MODULES_LEN)[..n]);
    }
    Some(fd)
}

fn write_meta(fd: i32, pid: u32, forked_from: u32) -> bool {
    let scratch = region(&SCRATCH, SCRATCH_LEN);
    let (out, cmdline) = scratch.split_at_mut(SCRATCH_LEN / 2);
    let n = sys::read_file(c"/proc/self/cmdline", cmdline);
    // Arguments are NUL-terminated; `split` leaves an empty piece after the
    // last NUL, which `take(count)` drops.
    let mut args = cmdline[..n].split(|&b| b == 0);
    let meta = format::MetaRef {
        pid,
        start_unix_ns: START_NS.load(Ordering::Relaxed),
        sample_bytes: SAMPLE_BYTES.load(Ordering::Relaxed),
        cpu_hz: CPU_HZ.load(Ordering::Relaxed),
        max_depth: DEPTH.load(Ordering::Relaxed) as u32,
        forked_from,
        executable: exe(),
    };
    let mut e = Encoder::new(out, CHUNK_HEADER_LEN);
    let count = cmdline[..n].iter().filter(|&&b| b == 0).count();
    let mut taken = (&mut args).take(count);
    format::encode_meta(&mut e, &meta, &mut taken);
    let len = e.pos();
    format::seal_chunk(ChunkKind::Meta, &mut out[..len]);
    sys::write_all(fd, &out[..len])
}

/// Copies `payload` behind a chunk header in the scratch space and writes
/// it. File lock held; `payload` must not be the scratch space.
fn write_chunk(fd: i32, kind: ChunkKind, payload: &[u8]) -> bool {
    let scratch = region(&SCRATCH, SCRATCH_LEN);
    let len = CHUNK_HEADER_LEN + payload.len().min(SCRATCH_LEN - CHUNK_HEADER_LEN);
    scratch[CHUNK_HEADER_LEN..len].copy_from_slice(&payload[..len - CHUNK_HEADER_LEN]);
    format::seal_chunk(kind, &mut scratch[..len]);
    sys::write_all(fd, &scratch[..len])
}

/// Writes the stacks published since the last call, in id order. An id
/// handed out but not yet published (its thread is mid-insert) stops the
/// run; `everything` (at exit) writes all published ids past such holes.
fn write_new_stacks(fd: i32, everything: bool) {
    let scratch = region(&SCRATCH, SCRATCH_LEN);
    let total = stacks::count();
    let mut id = STACKS_WRITTEN.load(Ordering::Relaxed);
    while id < total {
        let first = id;
        let mut e = Encoder::new(scratch, CHUNK_HEADER_LEN + 8);
        while id < total {
            let Some(frames) = stacks::frames(id) else {
                break;
            };
            if e.remaining() < format::max_stack_len(frames.len()) {
                break;
            }
            format::encode_stack(&mut e, frames);
            id += 1;
        }
        let len = e.pos();
        if id > first {
            scratch[CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + 4].copy_from_slice(&first.to_le_bytes());
            scratch[CHUNK_HEADER_LEN + 4..CHUNK_HEADER_LEN + 8]
                .copy_from_slice(&(id - first).to_le_bytes());
            format::seal_chunk(ChunkKind::Stacks, &mut scratch[..len]);
            sys::write_all(fd, &scratch[..len]);
            if !everything || first == STACKS_WRITTEN.load(Ordering::Relaxed) {
                STACKS_WRITTEN.store(id, Ordering::Relaxed);
            }
        } else if everything {
            id += 1; // skip an unpublished hole
        } else {
            break;
        }
    }
}

/// The `atexit` handler: fresh module list, every thread's buffer, all
/// stacks, and the `End` chunk.
extern "C" fn at_exit() {
    if !crate::begin_finish() {
        return;
    }
    sys::preserving_errno(|| {
        {
            let _g = FILE_LOCK.lock();
            FINISHING.store(true, Ordering::Release);
        }
        // A fresh module list (libraries opened since start), collected
        // while holding no lock of ours. A forked child keeps the parent's
        // list: the loader's lock may have been held by a thread that the
        // fork left behind.
        if FORKED_FROM.load(Ordering::Relaxed) == 0 {
            let tmp = sys::map_zeroed(MODULES_LEN);
            if !tmp.is_null() {
                // SAFETY: `tmp` is our fresh mapping of MODULES_LEN bytes.
                let buf = unsafe { std::slice::from_raw_parts_mut(tmp, MODULES_LEN) };
                let n = modules::encode(buf, exe());
                {
                    let _g = FILE_LOCK.lock();
                    region(&MODULES, MODULES_LEN)[..n].copy_from_slice(&buf[..n]);
                    MODULES_USED.store(n, Ordering::Release);
                }
                // SAFETY: our own mapping, no longer used.
                unsafe { libc::munmap(tmp as *mut libc::c_void, MODULES_LEN) };
            }
        }
        if crate::aggregate::on() {
            crate::aggregate::write_snapshot(true);
            return;
        }
        thread::for_each_state(|s| thread::flush(s, true));
        let _g = FILE_LOCK.lock();
        let Some(fd) = ensure_open() else { return };
        let n = MODULES_USED.load(Ordering::Acquire);
        write_chunk(fd, ChunkKind::Modules, &region(&MODULES, MODULES_LEN)[..n]);
        write_new_stacks(fd, true);
        let end = format::End {
            events: thread::events_recorded(),
            dropped: thread::DROPPED.load(Ordering::Relaxed),
            stacks: stacks::count() as u64,
            truncated_stacks: TRUNCATED_STACKS.load(Ordering::Relaxed),
            end_unix_ns: sys::unix_ns(),
        };
        let scratch = region(&SCRATCH, SCRATCH_LEN);
        let mut e = Encoder::new(scratch, CHUNK_HEADER_LEN);
        format::encode_end(&mut e, &end);
        let len = e.pos();
        format::seal_chunk(ChunkKind::End, &mut scratch[..len]);
        sys::write_all(fd, &scratch[..len]);
        sys::close(fd);
        FD.store(-1, Ordering::Release);
        OPEN_FAILED.store(true, Ordering::Release); // nothing more is written
    });
}

extern "C" fn before_fork() {
    thread::set_current_busy(true);
    crate::cpu::FORKING.store(true, Ordering::Release);
    thread::lock_registry_for_fork();
    FILE_LOCK.lock_forever();
}

extern "C" fn after_fork_parent() {
    FILE_LOCK.force_unlock();
    thread::unlock_registry_after_fork();
    crate::cpu::FORKING.store(false, Ordering::Release);
    thread::set_current_busy(false);
}

extern "C" fn after_fork_child() {
    let parent = PID.load(Ordering::Relaxed);
    let fd = FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        sys::close(fd); // the parent's file stays the parent's
    }
    PID.store(sys::getpid(), Ordering::Relaxed);
    FORKED_FROM.store(parent, Ordering::Relaxed);
    START_NS.store(sys::unix_ns(), Ordering::Relaxed);
    OPEN_FAILED.store(false, Ordering::Release);
    STACKS_WRITTEN.store(0, Ordering::Relaxed);
    SEQ.store(0, Ordering::Relaxed);
    thread::DROPPED.store(0, Ordering::Relaxed);
    TRUNCATED_STACKS.store(0, Ordering::Relaxed);
    thread::reset_after_fork();
    crate::after_fork_child();
    FILE_LOCK.force_unlock();
    crate::cpu::FORKING.store(false, Ordering::Release);
    thread::set_current_busy(false);
}
