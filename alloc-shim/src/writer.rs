//! The profile file: created lazily at the first flush (so that a child that
//! forks and immediately execs leaves no file behind), appended to in whole
//! chunks under lineprof's own file lock, finished by the exit handler (`lifecycle`).
//! A `fork` child starts a file of its own, under its own pid, holding only
//! what it does after the fork.
//!
//! Lock order: a thread's buffer lock, then the file lock. The loader lock
//! (`dl_iterate_phdr`) is only taken while holding neither.

use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use crate::config::{self, Config, PATH_MAX};
use crate::coord::{CPU_HZ, DEPTH, SAMPLE_BYTES};
use crate::format::{self, ChunkKind, Encoder, CHUNK_HEADER_LEN};
use crate::spin::SpinLock;
use crate::{modules, stacks, sys};

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
/// Ids below these are in the file: heap stacks, CPU-sample stacks.
static STACKS_WRITTEN: AtomicU32 = AtomicU32::new(0);
static CPU_STACKS_WRITTEN: AtomicU32 = AtomicU32::new(0);
static PID: AtomicU32 = AtomicU32::new(0);
static FORKED_FROM: AtomicU32 = AtomicU32::new(0);
static START_NS: AtomicU64 = AtomicU64::new(0);
/// Bytes of the file that end with a complete chunk: a failed write is cut
/// back to this length, so nothing is ever appended after a torn chunk.
static GOOD_LEN: AtomicU64 = AtomicU64::new(0);
/// Why chunk writing stopped (an errno), 0 while it goes on.
static STOPPED: AtomicI32 = AtomicI32::new(0);
static LOST_CHUNKS: AtomicU64 = AtomicU64::new(0);
static LOST_BYTES: AtomicU64 = AtomicU64::new(0);
/// No descriptor number out of the host's reach was to be had: the file is
/// opened for each write and closed after it.
static PER_WRITE: AtomicBool = AtomicBool::new(false);
/// Room kept under the file-size limit for the `End` chunk, so that a run
/// under `ulimit -f` still ends with its totals.
const END_RESERVE: u64 = 4096;
/// Candidate names tried when the profile path is in use by another writer.
const MAX_CANDIDATES: u32 = 64;

const SCRATCH_LEN: usize = 1 << 20;
const MODULES_LEN: usize = 1 << 16;
/// Chunk-building space, used only under the file lock.
static SCRATCH: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
/// The last `Modules` payload, replayed into a forked child's file.
static MODULES: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static MODULES_USED: AtomicUsize = AtomicUsize::new(0);
/// Executable path and output pattern, written once at init, and the path
/// in use (chosen at the first write).
static PATHS: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static EXE_LEN: AtomicUsize = AtomicUsize::new(0);
static OUT_LEN: AtomicUsize = AtomicUsize::new(0);

fn region(p: &AtomicPtr<u8>, len: usize) -> &'static mut [u8] {
    // SAFETY: each region is mapped once at init with `len` bytes and never
    // unmapped; callers serialise access (file lock, or single-threaded init).
    unsafe { std::slice::from_raw_parts_mut(p.load(Ordering::Acquire), len) }
}

fn exe() -> &'static [u8] {
    &region(&PATHS, PATHS_LEN)[..EXE_LEN.load(Ordering::Acquire)]
}

fn out_pattern() -> &'static [u8] {
    &region(&PATHS, PATHS_LEN)[PATH_MAX..PATH_MAX + OUT_LEN.load(Ordering::Acquire)]
}

/// The NUL-terminated path of the file in use.
fn chosen() -> &'static mut [u8] {
    &mut region(&PATHS, PATHS_LEN)[2 * PATH_MAX..]
}

fn path_str(p: &[u8]) -> &[u8] {
    &p[..p.iter().position(|&b| b == 0).unwrap_or(p.len())]
}

const PATHS_LEN: usize = 3 * PATH_MAX;

/// Called once by the initialising thread, before any event is recorded.
pub fn init(cfg: &Config) -> bool {
    let scratch = sys::map_zeroed(SCRATCH_LEN);
    let mods = sys::map_zeroed(MODULES_LEN);
    let paths = sys::map_zeroed(PATHS_LEN);
    if scratch.is_null() || mods.is_null() || paths.is_null() {
        return false;
    }
    SCRATCH.store(scratch, Ordering::Release);
    MODULES.store(mods, Ordering::Release);
    PATHS.store(paths, Ordering::Release);
    let p = region(&PATHS, PATHS_LEN);
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
    let Some(fd) = ensure_open() else {
        lose(chunk.len());
        return;
    };
    write_new_stacks(fd, false);
    format::seal_chunk(ChunkKind::Events, chunk);
    put(fd, chunk, true);
    done_with(fd);
}

/// Appends one whole chunk (or the file's first bytes), or nothing: a write
/// that fails part-way is cut back, and writing stops for good, with one
/// `lineprof:` line on stderr. Before each write the file-size limit is
/// checked, so the host never gets SIGXFSZ from us; `reserve` keeps room
/// for the `End` chunk under it. File lock held.
fn put(fd: i32, data: &[u8], reserve: bool) -> bool {
    if STOPPED.load(Ordering::Relaxed) != 0 {
        lose(data.len());
        return false;
    }
    let good = GOOD_LEN.load(Ordering::Relaxed);
    if let Some(limit) = sys::file_size_limit() {
        let need = good + data.len() as u64 + if reserve { END_RESERVE } else { 0 };
        if need > limit {
            stop(libc::EFBIG);
            lose(data.len());
            return false;
        }
    }
    match sys::write_all(fd, data) {
        Ok(()) => {
            GOOD_LEN.store(good + data.len() as u64, Ordering::Relaxed);
            true
        }
        Err((errno, written)) => {
            if written > 0 {
                sys::truncate(fd, good);
            }
            stop(errno);
            lose(data.len());
            false
        }
    }
}

fn lose(bytes: usize) {
    LOST_CHUNKS.fetch_add(1, Ordering::Relaxed);
    LOST_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// Stops chunk writing for the rest of the run (the first reason stays).
fn stop(errno: i32) {
    if STOPPED
        .compare_exchange(0, errno.max(1), Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    sys::stderr(b"lineprof: stopped writing the profile ");
    sys::stderr(path_str(chosen()));
    sys::stderr(b": ");
    sys::stderr(write_error_text(errno));
    sys::stderr(b"; the rest of this run is not recorded, and the report says what was lost\n");
}

fn write_error_text(errno: i32) -> &'static [u8] {
    match errno {
        libc::ENOSPC => b"disk full (ENOSPC)",
        libc::EDQUOT => b"disk quota exceeded (EDQUOT)",
        libc::EFBIG => b"file size limit reached (ulimit -f, RLIMIT_FSIZE)",
        libc::EMFILE | libc::ENFILE => b"no file descriptor free (RLIMIT_NOFILE)",
        libc::EIO => b"I/O error (EIO)",
        _ => b"write error",
    }
}

/// Ends one use of the file: with `PER_WRITE`, closes it again.
fn done_with(fd: i32) {
    if PER_WRITE.load(Ordering::Relaxed) {
        sys::close(fd);
        FD.store(-1, Ordering::Release);
    }
}

/// Writes chunks of `kind` whose payloads `fill` encodes into the scratch
/// space, one after another while it returns true (more to come). With
/// `wait` false the file lock is only tried: a caller that may run inside
/// a signal handler of the host must not wait for a lock its own thread
/// may hold. `final_flush`: the exit handler is writing.
pub fn write_chunks(
    kind: ChunkKind,
    final_flush: bool,
    wait: bool,
    mut fill: impl FnMut(&mut Encoder<'_>) -> bool,
) {
    let _g = if wait {
        FILE_LOCK.lock()
    } else {
        match FILE_LOCK.try_lock() {
            Some(g) => g,
            None => return,
        }
    };
    if FINISHING.load(Ordering::Acquire) && !final_flush {
        return;
    }
    let Some(fd) = ensure_open() else {
        lose(0);
        return;
    };
    let scratch = region(&SCRATCH, SCRATCH_LEN);
    loop {
        let mut e = Encoder::new(scratch, CHUNK_HEADER_LEN);
        let more = fill(&mut e);
        let len = e.pos();
        if len > CHUNK_HEADER_LEN {
            format::seal_chunk(kind, &mut scratch[..len]);
            put(fd, &scratch[..len], true);
        }
        if !more {
            break;
        }
    }
    done_with(fd);
}

/// The profile's descriptor, opening the file on first use (and again
/// after a host closed it, and for each write in `PER_WRITE` mode). File
/// lock held; pair with `done_with`.
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
    }
    if OPEN_FAILED.load(Ordering::Acquire) || STOPPED.load(Ordering::Relaxed) != 0 {
        return None;
    }
    if chosen()[0] != 0 {
        return reopen();
    }
    claim()
}

/// The `n`th name tried for the profile: the expanded pattern, then
/// `<it>.<pid>`, then `<it>.<pid>.<n - 1>`.
fn candidate(base: &[u8], n: u32, pid: u32, out: &mut [u8]) {
    let base = path_str(base);
    out.fill(0);
    out[..base.len()].copy_from_slice(base);
    let mut len = base.len();
    let mut push_num = |v: u32, len: &mut usize| {
        let (digits, d) = sys::decimal(v);
        out[*len] = b'.';
        *len += 1;
        for &c in &digits[..d] {
            out[*len] = c;
            *len += 1;
        }
    };
    if n >= 1 {
        push_num(pid, &mut len);
    }
    if n >= 2 {
        push_num(n - 1, &mut len);
    }
}

/// Whether the non-empty profile open on `fd` belongs to a writer that may
/// still write to it: an earlier program image of this process (before an
/// `exec`: same pid), or another live process. Its `Meta` chunk names the
/// writer's pid. (A writer whose descriptor could not be kept open between
/// writes holds no `flock` then, so the pid is what tells.) A file that
/// names a dead process, or is not a profile, is a finished run's.
fn in_use_by_other(fd: i32, pid: u32) -> bool {
    let mut head = [0u8; format::FILE_HEADER_LEN + CHUNK_HEADER_LEN + 4];
    let n = sys::pread(fd, &mut head, 0);
    let at = format::FILE_HEADER_LEN;
    if n != head.len() || head[..8] != format::MAGIC || head[at] != ChunkKind::Meta as u8 {
        return false;
    }
    let mut p = [0u8; 4];
    p.copy_from_slice(&head[at + CHUNK_HEADER_LEN..]);
    let writer = u32::from_le_bytes(p);
    writer == pid || sys::process_alive(writer)
}

/// Chooses the file at the first write: the configured path unless another
/// writer holds it (a live process's `flock`, or an earlier image of this
/// process after `exec`, or a live process that names itself in the file),
/// in which case the next free candidate. A file left by a dead run is
/// replaced. File lock held.
fn claim() -> Option<i32> {
    let pid = PID.load(Ordering::Relaxed);
    let forked_from = FORKED_FROM.load(Ordering::Relaxed);
    let mut base = [0u8; PATH_MAX];
    config::expand_path(out_pattern(), pid, forked_from != 0, &mut base);
    let mut path = [0u8; PATH_MAX + 32];
    for n in 0..MAX_CANDIDATES {
        candidate(&base, n, pid, &mut path);
        let fd = match sys::open_append(&path) {
            Ok(fd) => fd,
            Err(errno) => return open_failed(&path, errno),
        };
        if !sys::try_lock_file(fd) {
            sys::close(fd); // a live writer's file
            continue;
        }
        match sys::file_identity(fd) {
            Some((_, _, size)) if size > 0 => {
                if in_use_by_other(fd, pid) {
                    sys::close(fd);
                    continue;
                }
                sys::truncate(fd, 0); // a finished or dead run's file
            }
            Some(_) => {}
            None => {
                sys::close(fd);
                return open_failed(&path, libc::EIO);
            }
        }
        let c = chosen();
        c.fill(0);
        let len = path_str(&path).len().min(PATH_MAX - 1);
        c[..len].copy_from_slice(&path[..len]);
        if n > 0 {
            sys::stderr(b"lineprof: ");
            sys::stderr(path_str(&base));
            sys::stderr(b" is in use by another process (or by this one before it exec'd); writing this profile to ");
            sys::stderr(path_str(&path));
            sys::stderr(b"\n");
        }
        return start_file(fd);
    }
    sys::stderr(b"lineprof: every candidate name for the profile ");
    sys::stderr(path_str(&base));
    sys::stderr(
        b".<pid>.<n> is in use; set LINEPROF_OUT to a path with %p. This run is not profiled.\n",
    );
    OPEN_FAILED.store(true, Ordering::Release);
    None
}

/// Opens the chosen file again (it was closed behind our back, or
/// `PER_WRITE`). File lock held.
fn reopen() -> Option<i32> {
    let path = chosen();
    match sys::open_append(path) {
        Ok(fd) => {
            sys::try_lock_file(fd);
            start_file(fd)
        }
        Err(errno) => {
            stop(errno);
            None
        }
    }
}

fn open_failed(path: &[u8], errno: i32) -> Option<i32> {
    OPEN_FAILED.store(true, Ordering::Release);
    sys::stderr(b"lineprof: cannot create the profile file ");
    sys::stderr(path_str(path));
    if errno == libc::EMFILE || errno == libc::ENFILE {
        sys::stderr(b": no file descriptor free (the limit on open files, RLIMIT_NOFILE or the system's, is reached; raise `ulimit -n`).");
    } else {
        sys::stderr(b"; set LINEPROF_OUT to a writable path.");
    }
    sys::stderr(b" This run is not profiled.\n");
    None
}

/// Moves a freshly opened profile descriptor out of the host's range,
/// records its identity, and writes the file's first chunks if it is
/// empty. File lock held.
fn start_file(fd: i32) -> Option<i32> {
    let fd = match sys::move_above_limit(fd) {
        Some(high) => high,
        None => {
            PER_WRITE.store(true, Ordering::Relaxed);
            fd
        }
    };
    let Some((dev, ino, size)) = sys::file_identity(fd) else {
        sys::close(fd);
        return None;
    };
    FILE_DEV.store(dev, Ordering::Relaxed);
    FILE_INO.store(ino, Ordering::Relaxed);
    FD.store(fd, Ordering::Release);
    GOOD_LEN.store(size, Ordering::Relaxed);
    if size == 0 {
        let pid = PID.load(Ordering::Relaxed);
        let mut header = [0u8; format::FILE_HEADER_LEN];
        format::write_file_header(&mut header);
        put(fd, &header, true);
        write_meta(fd, pid, FORKED_FROM.load(Ordering::Relaxed));
        let n = MODULES_USED.load(Ordering::Acquire);
        write_chunk(fd, ChunkKind::Modules, &region(&MODULES, MODULES_LEN)[..n]);
    }
    Some(fd)
}

fn write_meta(fd: i32, pid: u32, forked_from: u32) {
    let meta = meta_chunk(pid, forked_from);
    put(fd, meta, true);
}

/// The sealed `Meta` chunk, built in the scratch space. File lock held.
fn meta_chunk(pid: u32, forked_from: u32) -> &'static [u8] {
    let scratch = region(&SCRATCH, SCRATCH_LEN);
    let (out, cmdline) = scratch.split_at_mut(SCRATCH_LEN / 2);
    let n = sys::read_file(c"/proc/self/cmdline", cmdline);
    let meta = format::MetaRef {
        pid,
        start_unix_ns: START_NS.load(Ordering::Relaxed),
        sample_bytes: SAMPLE_BYTES.load(Ordering::Relaxed),
        cpu_hz: CPU_HZ.load(Ordering::Relaxed),
        max_depth: DEPTH.load(Ordering::Relaxed) as u32,
        forked_from,
        executable: exe(),
        args: format::CmdLine(&cmdline[..n]),
    };
    let mut e = Encoder::new(out, CHUNK_HEADER_LEN);
    format::encode_meta(&mut e, &meta);
    let len = e.pos();
    format::seal_chunk(ChunkKind::Meta, &mut out[..len]);
    &out[..len]
}

/// Aggregate mode (`aggregate.rs`): writes the whole profile as one
/// snapshot. The profile's path is claimed as for a stream profile (the
/// first time); the snapshot goes to `<path>.tmp`, which `body` fills
/// after the header (version `version`), metadata and modules, and is
/// renamed over the profile only when every write succeeded, so the file
/// always holds the last complete snapshot. `body` gets the descriptor and
/// the scratch space and returns false on a failed write. A periodic
/// snapshot (`wait` false) gives up when the file lock is taken. After it,
/// the profile's descriptor is dropped, so later appends (the exit
/// handler's) go to the renamed file.
pub(crate) fn write_snapshot(
    wait: bool,
    version: u32,
    body: impl FnOnce(&mut Sink, &'static mut [u8]) -> bool,
) -> bool {
    let _g = if wait {
        FILE_LOCK.lock()
    } else {
        match FILE_LOCK.try_lock() {
            Some(g) => g,
            None => return false,
        }
    };
    if FINISHING.load(Ordering::Acquire) && !wait {
        return false;
    }
    let Some(fd) = ensure_open() else {
        return false;
    };
    // The renamed snapshot replaces this file: the descriptor goes.
    sys::close(fd);
    FD.store(-1, Ordering::Release);
    let path = chosen();
    let end = path_str(path).len();
    let mut tmp = [0u8; PATH_MAX + 8];
    tmp[..end].copy_from_slice(&path[..end]);
    tmp[end..end + 4].copy_from_slice(b".tmp");
    let Some(tfd) = sys::create_truncated(&tmp) else {
        return false;
    };
    let mut sink = Sink {
        fd: tfd,
        len: 0,
        limit: sys::file_size_limit(),
    };
    let mut header = [0u8; format::FILE_HEADER_LEN];
    format::write_file_header_version(&mut header, version);
    let pid = PID.load(Ordering::Relaxed);
    let ok = sink.put(&header)
        && sink.put(meta_chunk(pid, FORKED_FROM.load(Ordering::Relaxed)))
        && {
            let n = MODULES_USED.load(Ordering::Acquire);
            let scratch = region(&SCRATCH, SCRATCH_LEN);
            let len = CHUNK_HEADER_LEN + n.min(SCRATCH_LEN - CHUNK_HEADER_LEN);
            scratch[CHUNK_HEADER_LEN..len]
                .copy_from_slice(&region(&MODULES, MODULES_LEN)[..len - CHUNK_HEADER_LEN]);
            format::seal_chunk(ChunkKind::Modules, &mut scratch[..len]);
            sink.put(&scratch[..len])
        }
        && body(&mut sink, region(&SCRATCH, SCRATCH_LEN));
    sys::close(tfd);
    if ok && sys::rename(&tmp, path) {
        return true;
    }
    sys::unlink(&tmp);
    false
}

/// Where a snapshot is written: whole writes only, within the file-size
/// limit (so the host never gets SIGXFSZ from us).
pub(crate) struct Sink {
    fd: i32,
    len: u64,
    limit: Option<u64>,
}

impl Sink {
    pub(crate) fn put(&mut self, data: &[u8]) -> bool {
        if self.limit.is_some_and(|l| self.len + data.len() as u64 > l) {
            return false;
        }
        self.len += data.len() as u64;
        sys::write_all(self.fd, data).is_ok()
    }
}

/// Copies `payload` behind a chunk header in the scratch space and writes
/// it. File lock held; `payload` must not be the scratch space.
fn write_chunk(fd: i32, kind: ChunkKind, payload: &[u8]) {
    let scratch = region(&SCRATCH, SCRATCH_LEN);
    let len = CHUNK_HEADER_LEN + payload.len().min(SCRATCH_LEN - CHUNK_HEADER_LEN);
    scratch[CHUNK_HEADER_LEN..len].copy_from_slice(&payload[..len - CHUNK_HEADER_LEN]);
    format::seal_chunk(kind, &mut scratch[..len]);
    put(fd, &scratch[..len], true);
}

/// Writes the stacks published since the last call, in id order: heap
/// stacks as `Stacks` chunks, CPU-sample stacks (their own ids) as
/// `CpuStacks` chunks.
fn write_new_stacks(fd: i32, everything: bool) {
    write_table(
        fd,
        &stacks::HEAP,
        ChunkKind::Stacks,
        &STACKS_WRITTEN,
        everything,
    );
    if stacks::separate_cpu() {
        write_table(
            fd,
            &stacks::CPU,
            ChunkKind::CpuStacks,
            &CPU_STACKS_WRITTEN,
            everything,
        );
    }
}

/// The stacks of `table` published since `written`, in id order. An id
/// handed out but not yet published (its thread is mid-insert) stops the
/// run; `everything` (at exit) writes all published ids past such holes.
fn write_table(
    fd: i32,
    table: &stacks::Table,
    kind: ChunkKind,
    written: &AtomicU32,
    everything: bool,
) {
    let scratch = region(&SCRATCH, SCRATCH_LEN);
    let total = table.count();
    let mut id = written.load(Ordering::Relaxed);
    while id < total {
        let first = id;
        let mut e = Encoder::new(scratch, CHUNK_HEADER_LEN + 8);
        while id < total {
            let Some(frames) = table.frames(id) else {
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
            format::seal_chunk(kind, &mut scratch[..len]);
            put(fd, &scratch[..len], true);
            if !everything || first == written.load(Ordering::Relaxed) {
                written.store(id, Ordering::Relaxed);
            }
        } else if everything {
            id += 1; // skip an unpublished hole
        } else {
            break;
        }
    }
}

/// From now on only the exit handler's final flushes are written.
pub fn begin_finishing() {
    let _g = FILE_LOCK.lock();
    FINISHING.store(true, Ordering::Release);
}

/// A fresh module list (libraries opened since start), collected while
/// holding no lock of ours. A forked child keeps the parent's list: the
/// loader's lock may have been held by a thread that the fork left behind.
pub fn refresh_modules() {
    if FORKED_FROM.load(Ordering::Relaxed) != 0 {
        return;
    }
    let tmp = sys::map_zeroed(MODULES_LEN);
    if tmp.is_null() {
        return;
    }
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

/// Ends the file: the module list, all stacks, and the `End` chunk (with
/// what was lost, if writing stopped); then nothing more is written. After
/// a full disk the `End` chunk is still tried (space may have been freed).
pub fn finish(end: &mut format::End) {
    let _g = FILE_LOCK.lock();
    let stopped = STOPPED.load(Ordering::Relaxed);
    let fd = if stopped == 0 {
        ensure_open()
    } else {
        let fd = FD.load(Ordering::Acquire);
        if fd >= 0 {
            Some(fd)
        } else if chosen()[0] != 0 {
            sys::open_append(chosen()).ok()
        } else {
            None
        }
    };
    let Some(fd) = fd else { return };
    if stopped == 0 {
        let n = MODULES_USED.load(Ordering::Acquire);
        write_chunk(fd, ChunkKind::Modules, &region(&MODULES, MODULES_LEN)[..n]);
        write_new_stacks(fd, true);
    }
    end.write_error = STOPPED.load(Ordering::Relaxed) as u32;
    end.lost_chunks = LOST_CHUNKS.load(Ordering::Relaxed);
    end.lost_bytes = LOST_BYTES.load(Ordering::Relaxed);
    let scratch = region(&SCRATCH, SCRATCH_LEN);
    let mut e = Encoder::new(scratch, CHUNK_HEADER_LEN);
    format::encode_end(&mut e, end);
    let len = e.pos();
    format::seal_chunk(ChunkKind::End, &mut scratch[..len]);
    // Past a stop, straight to the file: within the file-size limit (the
    // room kept for it), cut back if it does not fit.
    let good = GOOD_LEN.load(Ordering::Relaxed);
    let fits = match sys::file_size_limit() {
        Some(limit) => good + len as u64 <= limit,
        None => true,
    };
    if fits && sys::write_all(fd, &scratch[..len]).is_err() {
        sys::truncate(fd, good);
    }
    sys::close(fd);
    FD.store(-1, Ordering::Release);
    OPEN_FAILED.store(true, Ordering::Release);
}

/// `fork` prepare: no chunk is half-written while the process is copied.
pub fn lock_for_fork() {
    FILE_LOCK.lock_forever();
}

pub fn unlock_after_fork_parent() {
    FILE_LOCK.force_unlock();
}

/// In a `fork` child: the parent's file stays the parent's; the child's
/// file, under its own pid, is started at its first flush.
pub fn after_fork_child() {
    let parent = PID.load(Ordering::Relaxed);
    let fd = FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        sys::close(fd);
    }
    PID.store(sys::getpid(), Ordering::Relaxed);
    FORKED_FROM.store(parent, Ordering::Relaxed);
    START_NS.store(sys::unix_ns(), Ordering::Relaxed);
    OPEN_FAILED.store(false, Ordering::Release);
    STACKS_WRITTEN.store(0, Ordering::Relaxed);
    CPU_STACKS_WRITTEN.store(0, Ordering::Relaxed);
    STOPPED.store(0, Ordering::Relaxed);
    LOST_CHUNKS.store(0, Ordering::Relaxed);
    LOST_BYTES.store(0, Ordering::Relaxed);
    GOOD_LEN.store(0, Ordering::Relaxed);
    chosen()[0] = 0;
    FILE_LOCK.force_unlock();
}
