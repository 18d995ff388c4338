//! The `.lprof` profile format, version 4: the one definition used by the
//! writer (in the profiled program) and by the reader (the `lineprof` CLI).
//!
//! A profile is a 16-byte file header followed by self-delimiting chunks that
//! are only ever appended. Each chunk carries its payload length and a CRC-32
//! of the payload, so a reader stops cleanly at the last complete chunk of a
//! file cut short by a crash or a kill, and skips a damaged stretch in the
//! middle up to the next valid chunk. `docs/format.md` describes the bytes in
//! prose.
//!
//! Encoding is allocation-free (`Encoder` writes into a caller's byte slice),
//! because it runs inside the global allocator. Decoding allocates freely: it
//! only ever runs in the CLI.

/// First eight bytes of every profile.
pub const MAGIC: [u8; 8] = *b"LPROF\0\x01\n";
/// Format version written in the header; the reader refuses newer versions.
/// Version 2 added the `Timers` chunk; version 3 the aggregate mode's
/// `HeapStacks` and `HeapSummary` (only aggregate profiles are written as
/// version 3); version 4 gives CPU samples their own stack ids, defined
/// by `CpuStacks` chunks (in versions 1 and 2 a CPU sample's stack id is
/// one of the `Stacks` ids, shared with heap events). Older files read as
/// before.
pub const VERSION: u32 = 4;
/// The version of a stream profile.
pub const STREAM_VERSION: u32 = 4;
/// The first version whose CPU samples name `CpuStacks` ids.
pub const CPU_STACKS_VERSION: u32 = 4;
/// The version of an aggregate profile (`LINEPROF_MODE=aggregate`).
pub const AGGREGATE_VERSION: u32 = 3;
/// The deepest stack the shim records (`LINEPROF_DEPTH`'s maximum).
pub const MAX_DEPTH: usize = 1024;
/// Size of the file header: magic, version, reserved flags.
pub const FILE_HEADER_LEN: usize = 16;
/// Size of a chunk header: kind, 3 reserved bytes, payload length, CRC-32.
pub const CHUNK_HEADER_LEN: usize = 12;

/// The kinds of chunk.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkKind {
    /// Process metadata, written once when the file is created.
    Meta = 1,
    /// The loaded modules (executable and shared objects) with load bias,
    /// executable segments and GNU build-id. Later chunks add to earlier ones.
    Modules = 2,
    /// Interned call stacks: `first_id`, `count`, then each stack's frames.
    Stacks = 3,
    /// Heap events (and CPU samples) of one thread, in that thread's order.
    Events = 4,
    /// Written last at a clean exit: totals the reader can check against.
    End = 5,
    /// Line timers of `#[lineprof::profile]` functions: a cumulative
    /// snapshot of one thread table's counters (the last one wins).
    Timers = 6,
    /// Aggregate mode: heap figures per stack id (see `encode_heap_stack`).
    HeapStacks = 7,
    /// Aggregate mode: whole-process heap figures and the live-heap series.
    HeapSummary = 8,
    /// The stacks of CPU samples (version 4), in their own id space: laid
    /// out as `Stacks`.
    CpuStacks = 9,
}

impl ChunkKind {
    pub fn from_u8(b: u8) -> Option<ChunkKind> {
        Some(match b {
            1 => ChunkKind::Meta,
            2 => ChunkKind::Modules,
            3 => ChunkKind::Stacks,
            4 => ChunkKind::Events,
            5 => ChunkKind::End,
            6 => ChunkKind::Timers,
            7 => ChunkKind::HeapStacks,
            8 => ChunkKind::HeapSummary,
            9 => ChunkKind::CpuStacks,
            _ => return None,
        })
    }
}

/// Event tags inside an `Events` chunk.
pub mod tag {
    /// `seq_delta, stack, size, addr_delta`: `addr_delta` from the address
    /// of the previous heap event of the chunk (0 before the first).
    pub const ALLOC: u8 = 1;
    /// `seq_delta, stack, size, addr_delta`, as for `ALLOC`.
    pub const FREE: u8 = 2;
    /// Added to `ALLOC` or `FREE`: `addr_delta` is from the *other* base,
    /// the last address in the region the base was in before it last
    /// moved to another region (0 at first; a move is a delta of at least
    /// `REGION_JUMP`, or an event from the other base, after which the two
    /// bases swap). A thread's blocks come from two regions when it frees
    /// blocks allocated by others (glibc's thread cache holds blocks of
    /// every arena): a delta from each region's last address is small
    /// where one from the last event is not (`next_addr`, `addr_delta`).
    pub const OTHER_BASE: u8 = 0x10;
    pub const ALLOC_OTHER: u8 = ALLOC | OTHER_BASE;
    pub const FREE_OTHER: u8 = FREE | OTHER_BASE;
    /// `stack, count, time_delta`: CPU samples taken on this thread.
    pub const CPU: u8 = 3;
    /// `time_delta`: a clock reading after the preceding heap event, written
    /// every so many events, so memory can be drawn over time.
    pub const TIME: u8 = 4;
    /// `stack, count, time_delta`: a CPU sample taken while the thread was
    /// inside lineprof (recording an event, writing the file): lineprof's
    /// own cost, never a line's.
    pub const CPU_LINEPROF: u8 = 5;
    /// `stack, count, time_delta, sp, bp, frame_count, frame addresses,
    /// copy_len, copy bytes`: a CPU sample whose program counter is outside
    /// the executable (C code without frame pointers). Besides the stack,
    /// it keeps the interrupted stack and frame pointers, the frame address
    /// of each frame of `stack` after the first (zig-zag deltas, the first
    /// from `sp`), and a copy of the stack from `sp` up, so the reader can
    /// unwind the first frames with the module's call-frame information.
    pub const CPU_STACK_COPY: u8 = 6;
}

/// Writes the file header into `out` (at least `FILE_HEADER_LEN` bytes).
pub fn write_file_header(out: &mut [u8]) {
    out[..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&STREAM_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&0u32.to_le_bytes());
}

/// Writes a file header with the given format version.
pub fn write_file_header_version(out: &mut [u8], version: u32) {
    write_file_header(out);
    out[8..12].copy_from_slice(&version.to_le_bytes());
}

pub use crate::crc::crc32;

/// Fills in the chunk header in `chunk[..CHUNK_HEADER_LEN]` for the payload
/// that follows it in `chunk[CHUNK_HEADER_LEN..]`.
pub fn seal_chunk(kind: ChunkKind, chunk: &mut [u8]) {
    let (header, payload) = chunk.split_at_mut(CHUNK_HEADER_LEN);
    header[0] = kind as u8;
    header[1..4].copy_from_slice(&[0, 0, 0]);
    header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[8..12].copy_from_slice(&crc32(payload).to_le_bytes());
}

/// Zig-zag maps signed deltas to small unsigned numbers.
#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// An allocation-free LEB128 writer over a fixed buffer. Callers check
/// `remaining()` before writing a record; a record never exceeds
/// `MAX_EVENT_LEN` bytes.
pub struct Encoder<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

/// Upper bound on one encoded event: a tag and four 10-byte varints.
pub const MAX_EVENT_LEN: usize = 1 + 4 * 10;

impl<'a> Encoder<'a> {
    pub fn new(buf: &'a mut [u8], pos: usize) -> Self {
        Encoder { buf, pos }
    }
    #[inline]
    pub fn pos(&self) -> usize {
        self.pos
    }
    #[inline]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    #[inline]
    pub fn u8(&mut self, v: u8) {
        self.buf[self.pos] = v;
        self.pos += 1;
    }
    #[inline]
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf[self.pos] = (v as u8) | 0x80;
            self.pos += 1;
            v >>= 7;
        }
        self.buf[self.pos] = v as u8;
        self.pos += 1;
    }
    pub fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    /// A length-prefixed byte string, cut to what fits (paths, arguments).
    pub fn lp_bytes(&mut self, b: &[u8]) {
        let n = b.len().min(self.remaining().saturating_sub(10));
        self.varint(n as u64);
        self.bytes(&b[..n]);
    }
}

// ---------------------------------------------------------------------------
// Decoding (CLI side).

/// Why a profile could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// Too short to hold the file header.
    Empty,
    /// The magic bytes are not ours.
    NotAProfile,
    /// Written by a newer lineprof.
    NewerVersion(u32),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::Empty => write!(f, "the file is empty or shorter than a profile header"),
            FormatError::NotAProfile => write!(f, "not a lineprof profile (wrong magic bytes)"),
            FormatError::NewerVersion(v) => write!(
                f,
                "profile format version {v} is newer than this lineprof understands (version {VERSION})"
            ),
        }
    }
}

impl std::error::Error for FormatError {}

/// One chunk as found in the file.
#[derive(Debug, Clone, Copy)]
pub struct RawChunk<'a> {
    pub kind: ChunkKind,
    pub offset: u64,
    pub payload: &'a [u8],
}

/// The chunks of a file, and what was skipped between and after them.
#[derive(Debug)]
pub struct Chunks<'a> {
    /// The format version in the file header.
    pub version: u32,
    pub chunks: Vec<RawChunk<'a>>,
    /// Bytes after the last complete chunk that do not form one (a torn
    /// last write, a zero-filled or garbage tail), if any.
    pub truncated_tail: u64,
    /// Damaged stretches followed by complete chunks, in file order.
    pub damaged: Vec<Damage>,
}

/// A stretch of bytes in the middle of a file that holds no valid chunk
/// (a chunk with a bad checksum or an unknown kind, a half-written chunk
/// that the next write followed), skipped up to the next valid chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub len: u64,
    pub what: &'static str,
}

/// How many bytes the search for the next valid chunk after damage may
/// checksum, per byte of file (plus a constant): it bounds the time a
/// crafted file full of plausible chunk headers can cost.
const RESYNC_BUDGET_PER_BYTE: u64 = 8;

/// Splits a profile into its chunks. A chunk is valid when its header fits,
/// its kind is known, its payload fits and its checksum matches. Where one
/// is not, the reader looks for the next valid chunk: if there is one, the
/// bytes in between are `damaged` (skipped, the rest is used); if not, they
/// are the `truncated_tail` (the file was cut short, or ends in zeros or
/// garbage). Only a foreign or newer file is an error.
pub fn split_chunks(data: &[u8]) -> Result<Chunks<'_>, FormatError> {
    if data.len() < FILE_HEADER_LEN {
        if data.len() >= 8 && data[..8] != MAGIC {
            return Err(FormatError::NotAProfile);
        }
        return Err(FormatError::Empty);
    }
    if data[..8] != MAGIC {
        return Err(FormatError::NotAProfile);
    }
    let version = u32::from_le_bytes(data[8..12].try_into().unwrap());
    if version > VERSION {
        return Err(FormatError::NewerVersion(version));
    }
    let mut out = Chunks {
        version,
        chunks: Vec::new(),
        truncated_tail: 0,
        damaged: Vec::new(),
    };
    let mut budget = (data.len() as u64).saturating_mul(RESYNC_BUDGET_PER_BYTE) + (1 << 20);
    let mut pos = FILE_HEADER_LEN;
    while pos < data.len() {
        match chunk_at(data, pos) {
            Ok(chunk) => {
                pos += CHUNK_HEADER_LEN + chunk.payload.len();
                out.chunks.push(chunk);
            }
            Err(what) => match next_valid_chunk(data, pos + 1, &mut budget) {
                Some(next) => {
                    out.damaged.push(Damage {
                        offset: pos as u64,
                        len: (next - pos) as u64,
                        what,
                    });
                    pos = next;
                }
                None => {
                    out.truncated_tail = (data.len() - pos) as u64;
                    break;
                }
            },
        }
    }
    Ok(out)
}

/// The chunk starting at `pos`, or why there is none.
fn chunk_at(data: &[u8], pos: usize) -> Result<RawChunk<'_>, &'static str> {
    let h = data
        .get(pos..pos + CHUNK_HEADER_LEN)
        .ok_or("chunk header cut short")?;
    let len = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(h[8..12].try_into().unwrap());
    let start = pos + CHUNK_HEADER_LEN;
    if data.len() - start < len {
        return Err("chunk cut short");
    }
    let payload = &data[start..start + len];
    if crc32(payload) != crc {
        return Err("checksum mismatch");
    }
    let kind = ChunkKind::from_u8(h[0]).ok_or("unknown chunk kind")?;
    Ok(RawChunk {
        kind,
        offset: pos as u64,
        payload,
    })
}

/// The offset of the first valid chunk at or after `from` whose header
/// looks like the writer's (known kind, reserved bytes zero), within the
/// checksum `budget` (bytes; decreased by what is spent).
fn next_valid_chunk(data: &[u8], from: usize, budget: &mut u64) -> Option<usize> {
    let last = data.len().checked_sub(CHUNK_HEADER_LEN)?;
    for p in from..=last {
        let h = &data[p..p + CHUNK_HEADER_LEN];
        if ChunkKind::from_u8(h[0]).is_none() || h[1..4] != [0, 0, 0] {
            continue;
        }
        let len = u32::from_le_bytes(h[4..8].try_into().unwrap()) as u64;
        if len > (data.len() - p - CHUNK_HEADER_LEN) as u64 {
            continue;
        }
        if *budget < len {
            return None;
        }
        *budget -= len;
        if chunk_at(data, p).is_ok() {
            return Some(p);
        }
    }
    None
}

/// A bounds-checked reader over a chunk payload.
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

/// Decoding ran past the end of a payload or met an impossible value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl<'a> Decoder<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Decoder { data, pos: 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }
    pub fn u8(&mut self) -> Result<u8, Malformed> {
        let b = *self.data.get(self.pos).ok_or(Malformed("unexpected end"))?;
        self.pos += 1;
        Ok(b)
    }
    pub fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift >= 64 {
                return Err(Malformed("varint too long"));
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.data.len() - self.pos < n {
            return Err(Malformed("unexpected end"));
        }
        let b = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    pub fn lp_bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.varint()?;
        if n > self.data.len() as u64 {
            return Err(Malformed("length past end"));
        }
        self.bytes(n as usize)
    }
}

// ---------------------------------------------------------------------------
// Records: the fields of a chunk, listed once for the writer and the reader.

/// Declares a record: a struct whose fields are written in the order they
/// are listed, each `= kind` saying how (see [`wire`]). It gives the struct
/// `encode` (allocation-free, for the writer) and `decode` (for the reader;
/// it needs the owned field types). A struct generic over its variable parts
/// (`Bytes`, `Lines`, ...) serves as the writer's borrowed form and the
/// reader's owned one, as `MetaRef` and `Meta`.
macro_rules! record {
    (
        $(#[$attr:meta])*
        pub struct $name:ident $(<$($param:ident),+>)? {
            $($(#[$field_attr:meta])* pub $field:ident: $ty:ty = $kind:ty,)*
        }
    ) => {
        $(#[$attr])*
        pub struct $name $(<$($param),+>)? {
            $($(#[$field_attr])* pub $field: $ty,)*
        }

        impl $(<$($param),+>)? $name $(<$($param),+>)? {
            /// Writes the fields, in order. The caller checks the room
            /// (see the record's length bound).
            pub fn encode(&self, e: &mut Encoder<'_>)
            where
                $($kind: wire::Put<$ty>,)*
            {
                $(<$kind as wire::Put<$ty>>::put(e, &self.$field);)*
            }

            /// Reads the fields, in order.
            pub fn decode(d: &mut Decoder<'_>) -> Result<Self, Malformed>
            where
                $($kind: wire::Get<$ty>,)*
            {
                Ok($name {
                    $($field: <$kind as wire::Get<$ty>>::get(
                        d,
                        concat!(stringify!($field), " out of range"),
                    )?,)*
                })
            }
        }
    };
}

/// How a record's field is written (`docs/format.md` names them): the kinds
/// of field, each with its writer ([`Put`](wire::Put), allocation-free) and reader
/// ([`Get`](wire::Get)).
pub mod wire {
    use super::{unzigzag, zigzag, Decoder, Encoder, Malformed, TimedLine};
    use std::marker::PhantomData;

    /// Writes a field of type `T`.
    pub trait Put<T: ?Sized> {
        fn put(e: &mut Encoder<'_>, v: &T);
    }

    /// Reads a field of type `T`; `out_of_range` is the error for a number
    /// its type cannot hold.
    pub trait Get<T> {
        fn get(d: &mut Decoder<'_>, out_of_range: &'static str) -> Result<T, Malformed>;
    }

    /// Implements a kind for an integer type from how `Encoder` writes it
    /// (`v` the field) and how `Decoder` reads it back (`out_of_range` the
    /// error for a number too large for the type).
    macro_rules! integer_kind {
        ($kind:ty, $t:ty, |$e:ident, $v:ident| $put:expr, |$d:ident, $what:pat_param| $get:expr) => {
            impl Put<$t> for $kind {
                fn put($e: &mut Encoder<'_>, $v: &$t) {
                    $put
                }
            }

            impl Get<$t> for $kind {
                fn get($d: &mut Decoder<'_>, $what: &'static str) -> Result<$t, Malformed> {
                    $get
                }
            }
        };
    }

    /// A little-endian integer of the field's width (`u32`, `u64`).
    pub enum Le {}
    integer_kind!(Le, u32, |e, v| e.u32(*v), |d, _| d.u32());
    integer_kind!(Le, u64, |e, v| e.u64(*v), |d, _| d.u64());

    /// A `varint`; a signed field as a `zigzag` varint.
    pub enum Var {}
    integer_kind!(Var, u64, |e, v| e.varint(*v), |d, _| d.varint());
    integer_kind!(Var, u32, |e, v| e.varint(*v as u64), |d, out_of_range| {
        u32::try_from(d.varint()?).map_err(|_| Malformed(out_of_range))
    });
    integer_kind!(Var, i64, |e, v| e.varint(zigzag(*v)), |d, _| {
        Ok(unzigzag(d.varint()?))
    });

    /// A length-prefixed byte string (`lp`), cut to what fits.
    pub enum Lp {}

    impl<B: AsRef<[u8]>> Put<B> for Lp {
        fn put(e: &mut Encoder<'_>, v: &B) {
            e.lp_bytes(v.as_ref());
        }
    }

    impl Get<Vec<u8>> for Lp {
        fn get(d: &mut Decoder<'_>, _: &'static str) -> Result<Vec<u8>, Malformed> {
            Ok(d.lp_bytes()?.to_vec())
        }
    }

    /// As `K`, but a field added later: a payload of an older writer ends
    /// before it, and the reader takes the default (0).
    pub struct Tail<K>(PhantomData<K>);

    impl<T, K: Put<T>> Put<T> for Tail<K> {
        fn put(e: &mut Encoder<'_>, v: &T) {
            K::put(e, v);
        }
    }

    impl<T: Default, K: Get<T>> Get<T> for Tail<K> {
        fn get(d: &mut Decoder<'_>, out_of_range: &'static str) -> Result<T, Malformed> {
            if d.is_empty() {
                Ok(T::default())
            } else {
                K::get(d, out_of_range)
            }
        }
    }

    /// Byte strings (`lp`) to the end of the payload: the command-line
    /// arguments of `Meta`. The writer leaves out those that do not fit.
    pub enum Args {}

    /// The arguments as `/proc/self/cmdline` holds them: each ends in a NUL
    /// (a last one without, cut by a short read, is left out).
    #[derive(Clone, Copy, Debug)]
    pub struct CmdLine<'a>(pub &'a [u8]);

    impl Put<CmdLine<'_>> for Args {
        fn put(e: &mut Encoder<'_>, v: &CmdLine<'_>) {
            let count = v.0.iter().filter(|&&b| b == 0).count();
            for a in v.0.split(|&b| b == 0).take(count) {
                if e.remaining() < a.len() + 20 {
                    break;
                }
                e.lp_bytes(a);
            }
        }
    }

    impl Get<Vec<Vec<u8>>> for Args {
        fn get(d: &mut Decoder<'_>, _: &'static str) -> Result<Vec<Vec<u8>>, Malformed> {
            let mut args = Vec::new();
            while !d.is_empty() {
                args.push(d.lp_bytes()?.to_vec());
            }
            Ok(args)
        }
    }

    /// A function's line records in `Timers`: `count varint`, then `count`
    /// `TimedLine` records. The writer, which must not allocate, writes the
    /// count (`usize`) and then each record itself.
    pub enum Lines {}

    impl Put<usize> for Lines {
        fn put(e: &mut Encoder<'_>, v: &usize) {
            e.varint(*v as u64);
        }
    }

    impl Put<Vec<TimedLine>> for Lines {
        fn put(e: &mut Encoder<'_>, v: &Vec<TimedLine>) {
            e.varint(v.len() as u64);
            for l in v {
                l.encode(e);
            }
        }
    }

    impl Get<Vec<TimedLine>> for Lines {
        fn get(d: &mut Decoder<'_>, _: &'static str) -> Result<Vec<TimedLine>, Malformed> {
            let n = d.varint()?;
            if n > d.remaining() as u64 {
                return Err(Malformed("line count past end"));
            }
            (0..n).map(|_| TimedLine::decode(d)).collect()
        }
    }

    /// The live-heap series of `HeapSummary`: `n varint`, then `n` varints.
    /// The writer keeps the room of the fields after it (three varints) and
    /// cuts the series to what fits before them.
    pub enum Series {}

    impl<S: AsRef<[u64]>> Put<S> for Series {
        fn put(e: &mut Encoder<'_>, v: &S) {
            let v = v.as_ref();
            let n = v.len().min(e.remaining().saturating_sub(30) / 10);
            e.varint(n as u64);
            for &x in &v[..n] {
                e.varint(x);
            }
        }
    }

    impl Get<Vec<u64>> for Series {
        fn get(d: &mut Decoder<'_>, _: &'static str) -> Result<Vec<u64>, Malformed> {
            let n = d.varint()?;
            if n > d.remaining() as u64 {
                return Err(Malformed("series longer than its chunk"));
            }
            (0..n).map(|_| d.varint()).collect()
        }
    }
}

pub use wire::CmdLine;

record! {
    /// The `Meta` chunk: `Meta` as read, `MetaRef` as the writer has it.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct MetaOf<Bytes, Arguments> {
        pub pid: u32 = wire::Le,
        /// Wall-clock start, nanoseconds since the Unix epoch.
        pub start_unix_ns: u64 = wire::Le,
        /// Mean bytes between sampled allocations; 0 means every allocation.
        pub sample_bytes: u64 = wire::Le,
        /// CPU samples per second per thread; 0 means no CPU sampling.
        pub cpu_hz: u32 = wire::Le,
        pub max_depth: u32 = wire::Le,
        /// Set in a child created by `fork`: the parent's pid.
        pub forked_from: u32 = wire::Le,
        pub executable: Bytes = wire::Lp,
        pub args: Arguments = wire::Args,
    }
}

/// A decoded `Meta`.
pub type Meta = MetaOf<Vec<u8>, Vec<Vec<u8>>>;
/// Borrowed form of `Meta` for the allocation-free writer.
pub type MetaRef<'a> = MetaOf<&'a [u8], CmdLine<'a>>;

/// Writes a `Meta` payload. Arguments are cut when they do not fit.
pub fn encode_meta(e: &mut Encoder<'_>, m: &MetaRef<'_>) {
    m.encode(e);
}

pub fn decode_meta(payload: &[u8]) -> Result<Meta, Malformed> {
    Meta::decode(&mut Decoder::new(payload))
}

/// One loaded module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Module {
    pub path: Vec<u8>,
    /// Load bias: runtime address minus the ELF virtual address.
    pub bias: u64,
    pub build_id: Vec<u8>,
    /// Executable segments as runtime `[start, end)` address ranges.
    pub ranges: Vec<(u64, u64)>,
}

/// Module payload: `count`, then per module: bias u64, build-id, path,
/// range count, ranges (start, end as varints).
pub fn decode_modules(payload: &[u8]) -> Result<Vec<Module>, Malformed> {
    let mut d = Decoder::new(payload);
    let n = d.varint()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let bias = d.u64()?;
        let build_id = d.lp_bytes()?.to_vec();
        let path = d.lp_bytes()?.to_vec();
        let nr = d.varint()?;
        let mut ranges = Vec::new();
        for _ in 0..nr {
            let s = d.varint()?;
            let e = d.varint()?;
            ranges.push((s, e));
        }
        out.push(Module {
            path,
            bias,
            build_id,
            ranges,
        });
    }
    Ok(out)
}

/// Stacks payload: `first_id u32`, `count u32`, then per stack: frame count,
/// first return address, then zig-zag deltas between consecutive addresses.
/// Frames are innermost first, as captured (return addresses, not call
/// sites: the reader subtracts one before symbolizing).
pub fn decode_stacks(payload: &[u8]) -> Result<(u32, Vec<Vec<u64>>), Malformed> {
    let mut d = Decoder::new(payload);
    let first = d.u32()?;
    let count = d.u32()?;
    // Every stack and frame takes at least a byte of the payload: capacity
    // is bounded by what the payload holds, not by what it claims.
    let mut stacks = Vec::with_capacity((count as usize).min(payload.len()));
    for _ in 0..count {
        let n = d.varint()?;
        if n > 1 << 16 {
            return Err(Malformed("stack deeper than 65536 frames"));
        }
        if n > d.remaining() as u64 {
            return Err(Malformed("stack has more frames than its chunk holds"));
        }
        let mut frames = Vec::with_capacity(n as usize);
        let mut prev = 0u64;
        for _ in 0..n {
            let v = (prev as i64).wrapping_add(unzigzag(d.varint()?)) as u64;
            frames.push(v);
            prev = v;
        }
        stacks.push(frames);
    }
    Ok((first, stacks))
}

/// Encodes one stack's frames (used by the writer).
pub fn encode_stack(e: &mut Encoder<'_>, frames: &[u64]) {
    e.varint(frames.len() as u64);
    let mut prev = 0u64;
    for &f in frames {
        e.varint(zigzag(f.wrapping_sub(prev) as i64));
        prev = f;
    }
}

/// Bytes `encode_stack` may need at most.
pub fn max_stack_len(frames: usize) -> usize {
    10 + frames * 10
}

/// A decoded heap event or CPU sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Alloc {
        seq: u64,
        stack: u32,
        size: u64,
        addr: u64,
    },
    Free {
        seq: u64,
        stack: u32,
        size: u64,
        addr: u64,
    },
    Cpu {
        stack: u32,
        count: u32,
        /// Monotonic clock (ns) at the sample, for time series.
        time_ns: u64,
    },
    /// A CPU sample that came with a copy of the stack (`tag::CPU_STACK_COPY`).
    CpuStackCopy {
        stack: u32,
        count: u32,
        time_ns: u64,
        copy: StackCopy,
    },
    /// A CPU sample taken while lineprof was recording (`tag::CPU_LINEPROF`).
    CpuLineprof {
        stack: u32,
        count: u32,
        time_ns: u64,
    },
    /// Monotonic clock (ns) after the preceding heap event of the chunk.
    Time { time_ns: u64 },
}

/// What a `CPU_STACK_COPY` sample keeps of the interrupted thread.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StackCopy {
    /// Stack pointer and frame pointer at the interrupt.
    pub sp: u64,
    pub bp: u64,
    /// Frame address (where the saved frame pointer lies) of each frame the
    /// signal handler's frame-pointer walk found: `frame_addrs[i]` is the
    /// record that gave `stack[i + 1]`.
    pub frame_addrs: Vec<u64>,
    /// The stack's bytes from `sp` up.
    pub bytes: Vec<u8>,
}

/// Most bytes of stack a `CPU_STACK_COPY` sample copies.
pub const STACK_COPY_LEN: usize = 2048;
/// Upper bound on one encoded `CPU_STACK_COPY` event with `frames` frame
/// addresses.
pub const fn max_stack_copy_len(frames: usize) -> usize {
    MAX_EVENT_LEN + 3 * 10 + frames * 10 + STACK_COPY_LEN
}

/// Header of an `Events` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsHeader {
    pub thread: u32,
    pub base_seq: u64,
}

/// Events payload: `thread u32`, `base_seq u64`, then tagged events. Sequence
/// numbers, addresses and clock readings are deltas from the previous event
/// of the chunk (starting from `base_seq`, 0 and 0), so every chunk decodes
/// on its own.
/// The fields every CPU sample event starts with: stack id, sample count,
/// and the time delta (added to `time`).
fn cpu_head(d: &mut Decoder<'_>, time: &mut u64) -> Result<(u32, u32), Malformed> {
    let stack = d.varint()?;
    let count = d.varint()?;
    *time = time.wrapping_add(d.varint()?);
    Ok((
        u32::try_from(stack).map_err(|_| Malformed("stack id too large"))?,
        u32::try_from(count).map_err(|_| Malformed("sample count too large"))?,
    ))
}

/// A zigzag address delta at least this large (4 GiB either way) moves the
/// base to another region: the old base becomes the other one.
pub const REGION_JUMP: u64 = 1 << 33;
/// A zigzag delta below this (1 MiB either way, at most 3 bytes) is taken
/// from the base whatever the other base would give.
const NEAR: u64 = 1 << 21;

/// A heap event's address from its tag and zigzag delta, and the two
/// address bases after it (`tag::OTHER_BASE`): `(base, other)` in, the
/// event's address and the other base out.
#[inline(always)]
pub fn next_addr(tag: u8, base: u64, other: u64, delta: u64) -> (u64, u64) {
    if tag & tag::OTHER_BASE != 0 {
        ((other as i64).wrapping_add(unzigzag(delta)) as u64, base)
    } else {
        let addr = (base as i64).wrapping_add(unzigzag(delta)) as u64;
        (addr, if delta >= REGION_JUMP { base } else { other })
    }
}

/// What the writer encodes for a heap event at `addr` given the bases
/// `(base, other)`: the zigzag delta, whether it is from the other base
/// (`tag::OTHER_BASE`), and the other base after it (the base after it is
/// `addr`), as `next_addr` decodes it. The delta from the other base is
/// taken when it is shorter and the base is more than 1 MiB away.
#[inline(always)]
pub fn addr_delta(addr: u64, base: u64, other: u64) -> (u64, bool, u64) {
    let near = zigzag(addr.wrapping_sub(base) as i64);
    // Within 1 MiB of the base (at most 3 bytes, the common case): the
    // base, without weighing the other one.
    if near < NEAR {
        return (near, false, other);
    }
    let far = zigzag(addr.wrapping_sub(other) as i64);
    let use_other = far < near;
    let other_after = if use_other || near >= REGION_JUMP {
        base
    } else {
        other
    };
    (if use_other { far } else { near }, use_other, other_after)
}

pub fn decode_events(payload: &[u8], mut f: impl FnMut(Event)) -> Result<EventsHeader, Malformed> {
    let mut d = Decoder::new(payload);
    let header = EventsHeader {
        thread: d.u32()?,
        base_seq: d.u64()?,
    };
    let mut seq = header.base_seq;
    let mut addr = 0u64;
    let mut other = 0u64;
    let mut time = 0u64;
    while !d.is_empty() {
        let t = d.u8()?;
        match t {
            tag::ALLOC | tag::FREE | tag::ALLOC_OTHER | tag::FREE_OTHER => {
                seq = seq.wrapping_add(d.varint()?);
                let stack = d.varint()?;
                let size = d.varint()?;
                (addr, other) = next_addr(t, addr, other, d.varint()?);
                let stack = u32::try_from(stack).map_err(|_| Malformed("stack id too large"))?;
                f(if t & !tag::OTHER_BASE == tag::ALLOC {
                    Event::Alloc {
                        seq,
                        stack,
                        size,
                        addr,
                    }
                } else {
                    Event::Free {
                        seq,
                        stack,
                        size,
                        addr,
                    }
                });
            }
            tag::CPU => {
                let (stack, count) = cpu_head(&mut d, &mut time)?;
                f(Event::Cpu {
                    stack,
                    count,
                    time_ns: time,
                });
            }
            tag::CPU_LINEPROF => {
                let (stack, count) = cpu_head(&mut d, &mut time)?;
                f(Event::CpuLineprof {
                    stack,
                    count,
                    time_ns: time,
                });
            }
            tag::CPU_STACK_COPY => {
                let (stack, count) = cpu_head(&mut d, &mut time)?;
                let sp = d.varint()?;
                let bp = d.varint()?;
                let n = d.varint()?;
                if n > 1 << 16 {
                    return Err(Malformed("more than 65536 frame addresses"));
                }
                let mut frame_addrs = Vec::with_capacity(n as usize);
                let mut prev = sp;
                for _ in 0..n {
                    prev = (prev as i64).wrapping_add(unzigzag(d.varint()?)) as u64;
                    frame_addrs.push(prev);
                }
                let bytes = d.lp_bytes()?.to_vec();
                f(Event::CpuStackCopy {
                    stack,
                    count,
                    time_ns: time,
                    copy: StackCopy {
                        sp,
                        bp,
                        frame_addrs,
                        bytes,
                    },
                });
            }
            tag::TIME => {
                time = time.wrapping_add(d.varint()?);
                f(Event::Time { time_ns: time });
            }
            _ => return Err(Malformed("unknown event tag")),
        }
    }
    Ok(header)
}

record! {
    /// The `End` chunk: what the writer counted, so the reader can tell a
    /// complete profile from one that lost events.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct End {
        /// Heap events recorded: sequence numbers used. (A thread may take
        /// numbers in blocks and leave some unused, so the numbers in a file
        /// can have gaps; fewer events than this means some were lost.)
        pub events: u64 = wire::Le,
        /// Events that could not be recorded (out of buffer space).
        pub dropped: u64 = wire::Le,
        /// Stacks interned.
        pub stacks: u64 = wire::Le,
        /// Stacks cut at `max_depth`.
        pub truncated_stacks: u64 = wire::Le,
        /// Wall-clock end, nanoseconds since the Unix epoch.
        pub end_unix_ns: u64 = wire::Le,
        /// Why the writer stopped writing chunks before the end (an errno:
        /// `ENOSPC` disk full, `EFBIG` the file-size limit, `EMFILE` no
        /// descriptor); 0 if it never did. Files from before this field read 0.
        pub write_error: u32 = wire::Tail<wire::Le>,
        /// Chunks (and their bytes) not written because writing had stopped.
        pub lost_chunks: u64 = wire::Tail<wire::Le>,
        pub lost_bytes: u64 = wire::Tail<wire::Le>,
        /// Heap events of the host's own signal handlers that landed while
        /// lineprof was busy on the same thread, not recorded.
        pub reentrant_dropped: u64 = wire::Tail<wire::Le>,
        /// Perf-event descriptors lineprof had to open below the soft
        /// `RLIMIT_NOFILE` (in its top band) because the hard limit left no
        /// room above it.
        pub fds_in_host_range: u64 = wire::Tail<wire::Le>,
    }
}

pub fn encode_end(e: &mut Encoder<'_>, end: &End) {
    end.encode(e);
}

pub fn decode_end(payload: &[u8]) -> Result<End, Malformed> {
    End::decode(&mut Decoder::new(payload))
}

record! {
    /// Header of a `Timers` payload: which thread table the snapshot is of,
    /// and the clock's calibration (ticks and nanoseconds elapsed between the
    /// timers' start and the snapshot: a tick is `clock_ns / clock_ticks` ns).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct TimersHeader {
        pub table: u32 = wire::Le,
        pub clock_ticks: u64 = wire::Le,
        pub clock_ns: u64 = wire::Le,
        /// Calls of marked functions that could not be counted (no table left
        /// for the thread, no memory for its counters, too many functions).
        pub untimed_calls: u64 = wire::Le,
    }
}

record! {
    /// One marked function's figures in one thread table: `TimedFunction` as
    /// read, `TimedFunctionHead` as the writer has it (it must not allocate:
    /// it writes the line records after the head).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct TimedFunctionOf<Bytes, Lines> {
        /// `module::Type::function`, as `std::any::type_name` spells it.
        pub path: Bytes = wire::Lp,
        /// `file!()` of the function: relative to the package root for a
        /// workspace member.
        pub file: Bytes = wire::Lp,
        /// Line of the function's `fn`.
        pub line: u32 = wire::Var,
        pub calls: u64 = wire::Var,
        /// Time of the outermost calls, in clock ticks.
        pub ticks: u64 = wire::Var,
        /// The line records, or (in the head) how many follow.
        pub lines: Lines = wire::Lines,
    }
}

/// A decoded function record.
pub type TimedFunction = TimedFunctionOf<Vec<u8>, Vec<TimedLine>>;
/// A function record's head: its line records follow.
pub type TimedFunctionHead<'a> = TimedFunctionOf<&'a [u8], usize>;

record! {
    /// One line of a marked function.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct TimedLine {
        pub line: u32 = wire::Var,
        pub hits: u64 = wire::Var,
        pub ticks: u64 = wire::Var,
    }
}

pub const TIMERS_HEADER_LEN: usize = 4 + 8 + 8 + 8;

pub fn encode_timers_header(e: &mut Encoder<'_>, h: &TimersHeader) {
    h.encode(e);
}

/// Bytes a function record may take at most.
pub fn max_timed_function_len(path: usize, file: usize, lines: usize) -> usize {
    path + file + 20 + 5 * 10 + lines * 30
}

pub fn encode_timed_function(e: &mut Encoder<'_>, f: &TimedFunctionHead<'_>) {
    f.encode(e);
}

pub fn encode_timed_line(e: &mut Encoder<'_>, l: &TimedLine) {
    l.encode(e);
}

/// Timers payload: the header, then function records to the end: `path
/// lp, file lp, line, calls, ticks, count` (varints), then `count` line
/// records `line, hits, ticks`.
pub fn decode_timers(payload: &[u8]) -> Result<(TimersHeader, Vec<TimedFunction>), Malformed> {
    let mut d = Decoder::new(payload);
    let h = TimersHeader::decode(&mut d)?;
    let mut functions = Vec::new();
    while !d.is_empty() {
        functions.push(TimedFunction::decode(&mut d)?);
    }
    Ok((h, functions))
}

// ---------------------------------------------------------------------------
// Aggregate mode (`LINEPROF_MODE=aggregate`).

record! {
    /// The heap figures of one stack id as the aggregating shim keeps them.
    /// `allocations`/`allocated_bytes` count the stack's allocations,
    /// `frees`/`freed_bytes` the frees it made (of any block); `live_*` is what
    /// the stack's allocations hold now (at exit in the final snapshot),
    /// `peak_*` what they held when the whole heap reached its maximum, and
    /// `max_live_bytes` the most they ever held at once.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct HeapStack {
        pub stack: u32 = wire::Var,
        pub allocations: u64 = wire::Var,
        pub allocated_bytes: u64 = wire::Var,
        pub frees: u64 = wire::Var,
        pub freed_bytes: u64 = wire::Var,
        pub live_bytes: i64 = wire::Var,
        pub live_blocks: i64 = wire::Var,
        pub peak_bytes: i64 = wire::Var,
        pub peak_blocks: i64 = wire::Var,
        pub max_live_bytes: i64 = wire::Var,
        pub cpu_samples: u64 = wire::Var,
    }
}

/// Upper bound on one encoded `HeapStack`.
pub const MAX_HEAP_STACK_LEN: usize = 11 * 10;

/// `HeapStacks` payload: records to the end of the payload, each `stack
/// varint`, then `allocations, allocated_bytes, frees, freed_bytes` as
/// varints, `live_bytes, live_blocks, peak_bytes, peak_blocks,
/// max_live_bytes` as zigzag varints, `cpu_samples varint`.
pub fn encode_heap_stack(e: &mut Encoder<'_>, s: &HeapStack) {
    s.encode(e);
}

pub fn decode_heap_stacks(payload: &[u8]) -> Result<Vec<HeapStack>, Malformed> {
    let mut d = Decoder::new(payload);
    let mut out = Vec::new();
    while !d.is_empty() {
        out.push(HeapStack::decode(&mut d)?);
    }
    Ok(out)
}

record! {
    /// The `HeapSummary` chunk: one per snapshot, written after its
    /// `HeapStacks` chunks (a snapshot is the whole file, rewritten and renamed
    /// into place, so a file holds exactly one).
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct HeapSummaryOf<Series> {
        /// Wall clock of the snapshot, nanoseconds since the Unix epoch.
        pub snapshot_unix_ns: u64 = wire::Le,
        /// The largest live heap total (bytes).
        pub peak_bytes: u64 = wire::Var,
        /// Live heap bytes at the snapshot (at exit in the final one).
        pub live_bytes: u64 = wire::Var,
        /// Frees of blocks never seen allocated (allocated before a `fork`).
        pub unknown_frees: u64 = wire::Var,
        /// Threads that recorded heap events (above 1, the peak's attribution
        /// to stacks comes from counters updated concurrently).
        pub threads: u32 = wire::Var,
        /// Width of one bucket of `series`, in nanoseconds.
        pub bucket_ns: u64 = wire::Var,
        /// The largest live heap bytes in each bucket since the start.
        pub series: Series = wire::Series,
        /// CPU samples taken while lineprof recorded an event, and the timer
        /// periods they stand for (lineprof's cost; 0 in files before them).
        pub profiler_cpu_samples: u64 = wire::Tail<wire::Var>,
        pub profiler_cpu_periods: u64 = wire::Tail<wire::Var>,
    }
}

/// A decoded `HeapSummary`.
pub type HeapSummary = HeapSummaryOf<Vec<u64>>;
/// Borrowed form of `HeapSummary` for the allocation-free writer.
pub type HeapSummaryRef<'a> = HeapSummaryOf<&'a [u64]>;

/// `HeapSummary` payload: `snapshot_unix_ns u64`, then varints
/// `peak_bytes, live_bytes, unknown_frees, threads, bucket_ns, n`, then `n`
/// varints of the series, then `profiler_cpu_samples, profiler_cpu_periods`.
pub fn encode_heap_summary(e: &mut Encoder<'_>, s: &HeapSummaryRef<'_>) {
    s.encode(e);
}

pub fn decode_heap_summary(payload: &[u8]) -> Result<HeapSummary, Malformed> {
    HeapSummary::decode(&mut Decoder::new(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_two_bases_decode_as_encoded() {
        let regions = [
            0x5555_0000_0000u64,
            0x7f00_1000_0000,
            0x7fff_f000_0000,
            0x10,
        ];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let (mut wb, mut wo, mut rb, mut ro) = (0, 0, 0, 0);
        let (mut other_used, mut bytes, mut one_base, mut prev) = (0, 0u32, 0u32, 0u64);
        let len = |z: u64| (64 - (z | 1).leading_zeros()).div_ceil(7);
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly two regions in turn, sometimes a third or any address.
            let addr = match x % 64 {
                0 => x,
                1..=3 => regions[2] + (x >> 40),
                n => regions[(n & 1) as usize] + ((x >> 20) & 0xffff) * 16,
            };
            let (delta, use_other, o) = addr_delta(addr, wb, wo);
            let t = tag::ALLOC | if use_other { tag::OTHER_BASE } else { 0 };
            (wb, wo) = (addr, o);
            let (got, ro2) = next_addr(t, rb, ro, delta);
            (rb, ro) = (got, ro2);
            assert_eq!((got, ro), (addr, wo));
            other_used += use_other as u32;
            bytes += len(delta);
            one_base += len(zigzag(addr.wrapping_sub(prev) as i64));
            prev = addr;
        }
        // The alternation is what the other base is for.
        assert!(other_used > 30_000, "{other_used}");
        assert!(
            bytes * 4 < one_base * 3,
            "{bytes} bytes, {one_base} with one base"
        );
    }

    #[test]
    fn timers_round_trip() {
        let mut buf = [0u8; 512];
        let mut e = Encoder::new(&mut buf, 0);
        let h = TimersHeader {
            table: 3,
            clock_ticks: 3_000_000,
            clock_ns: 1_000_000,
            untimed_calls: 1,
        };
        encode_timers_header(&mut e, &h);
        let f = TimedFunction {
            path: b"app::work".to_vec(),
            file: b"src/main.rs".to_vec(),
            line: 10,
            calls: 2,
            ticks: 900,
            lines: vec![
                TimedLine {
                    line: 11,
                    hits: 2,
                    ticks: 100,
                },
                TimedLine {
                    line: 12,
                    hits: 22,
                    ticks: 800,
                },
            ],
        };
        let head = TimedFunctionHead {
            path: &f.path,
            file: &f.file,
            line: f.line,
            calls: f.calls,
            ticks: f.ticks,
            lines: f.lines.len(),
        };
        encode_timed_function(&mut e, &head);
        for l in &f.lines {
            encode_timed_line(&mut e, l);
        }
        let n = e.pos();
        assert_eq!(decode_timers(&buf[..n]).unwrap(), (h, vec![f]));
        assert!(decode_timers(&buf[..n - 1]).is_err());
    }

    #[test]
    fn events_round_trip() {
        let mut buf = [0u8; 256];
        let mut e = Encoder::new(&mut buf, 0);
        e.u32(7);
        e.u64(100);
        e.u8(tag::ALLOC);
        e.varint(0);
        e.varint(3);
        e.varint(48);
        e.varint(zigzag(0x5000));
        e.u8(tag::FREE);
        e.varint(2);
        e.varint(4);
        e.varint(48);
        e.varint(zigzag(-16));
        let n = e.pos();
        let mut got = Vec::new();
        let h = decode_events(&buf[..n], |ev| got.push(ev)).unwrap();
        assert_eq!(h.thread, 7);
        assert_eq!(
            got,
            vec![
                Event::Alloc {
                    seq: 100,
                    stack: 3,
                    size: 48,
                    addr: 0x5000
                },
                Event::Free {
                    seq: 102,
                    stack: 4,
                    size: 48,
                    addr: 0x5000 - 16
                }
            ]
        );
    }

    #[test]
    fn truncated_file_keeps_complete_chunks() {
        let mut file = vec![0u8; FILE_HEADER_LEN];
        write_file_header(&mut file);
        for payload in [&b"abc"[..], &b"defgh"[..]] {
            let mut chunk = vec![0u8; CHUNK_HEADER_LEN];
            chunk.extend_from_slice(payload);
            seal_chunk(ChunkKind::Stacks, &mut chunk);
            file.extend_from_slice(&chunk);
        }
        let whole = split_chunks(&file).unwrap();
        assert_eq!(whole.chunks.len(), 2);
        assert_eq!(whole.truncated_tail, 0);
        let cut = split_chunks(&file[..file.len() - 2]).unwrap();
        assert_eq!(cut.chunks.len(), 1);
        assert!(cut.truncated_tail > 0);
        // A damaged first chunk followed by a good one is skipped.
        let mut bad = file.clone();
        bad[FILE_HEADER_LEN + CHUNK_HEADER_LEN] ^= 1;
        let skipped = split_chunks(&bad).unwrap();
        assert_eq!(skipped.chunks.len(), 1);
        assert_eq!(skipped.chunks[0].payload, b"defgh");
        assert_eq!(
            skipped.damaged,
            [Damage {
                offset: FILE_HEADER_LEN as u64,
                len: (CHUNK_HEADER_LEN + 3) as u64,
                what: "checksum mismatch"
            }]
        );
        // A zero-filled tail that starts inside the last chunk, and garbage
        // after it, are a truncated tail.
        let mut zeroed = file.clone();
        let n = zeroed.len();
        zeroed[n - 3..].fill(0);
        zeroed.extend_from_slice(&[0; 4096]);
        let z = split_chunks(&zeroed).unwrap();
        assert_eq!((z.chunks.len(), z.damaged.len()), (1, 0));
        assert_eq!(z.truncated_tail, (CHUNK_HEADER_LEN + 5 + 4096) as u64);
        let mut garbage = file.clone();
        garbage.extend_from_slice(b"\x04\0\0\0garbage after the end");
        let g = split_chunks(&garbage).unwrap();
        assert_eq!((g.chunks.len(), g.truncated_tail), (2, 25));
        assert_eq!(
            split_chunks(b"hello world, not a profile").unwrap_err(),
            FormatError::NotAProfile
        );
    }

    #[test]
    fn heap_stacks_and_summary_round_trip() {
        let mut buf = [0u8; 512];
        let mut e = Encoder::new(&mut buf, 0);
        let a = HeapStack {
            stack: 3,
            allocations: 2,
            allocated_bytes: 300,
            frees: 1,
            freed_bytes: 100,
            live_bytes: 200,
            live_blocks: 1,
            peak_bytes: 300,
            peak_blocks: 2,
            max_live_bytes: 300,
            cpu_samples: 7,
        };
        let b = HeapStack {
            stack: 9,
            live_bytes: -5,
            ..HeapStack::default()
        };
        encode_heap_stack(&mut e, &a);
        encode_heap_stack(&mut e, &b);
        let n = e.pos();
        assert_eq!(decode_heap_stacks(&buf[..n]).unwrap(), vec![a, b]);
        let mut e = Encoder::new(&mut buf, 0);
        let series = [0, 10, 400, 30];
        encode_heap_summary(
            &mut e,
            &HeapSummaryRef {
                snapshot_unix_ns: 5,
                peak_bytes: 400,
                live_bytes: 30,
                unknown_frees: 1,
                threads: 2,
                bucket_ns: 1_000_000,
                series: &series,
                profiler_cpu_samples: 3,
                profiler_cpu_periods: 7,
            },
        );
        let n = e.pos();
        let s = decode_heap_summary(&buf[..n]).unwrap();
        assert_eq!((s.peak_bytes, s.live_bytes, s.threads), (400, 30, 2));
        assert_eq!((s.profiler_cpu_samples, s.profiler_cpu_periods), (3, 7));
        assert_eq!(s.series, series);
        // Without the two profiler varints (one byte each here) it reads as
        // a file from before them; cut inside the series, it is malformed.
        let old = decode_heap_summary(&buf[..n - 2]).unwrap();
        assert_eq!(
            old,
            HeapSummary {
                profiler_cpu_samples: 0,
                profiler_cpu_periods: 0,
                ..s
            }
        );
        assert!(decode_heap_summary(&buf[..n - 3]).is_err());
    }

    #[test]
    fn stacks_round_trip() {
        let mut buf = [0u8; 256];
        let mut e = Encoder::new(&mut buf, 0);
        e.u32(5);
        e.u32(2);
        encode_stack(&mut e, &[0x1000, 0x0fff, 0x7fff_0000_0000]);
        encode_stack(&mut e, &[]);
        let n = e.pos();
        let (first, stacks) = decode_stacks(&buf[..n]).unwrap();
        assert_eq!(first, 5);
        assert_eq!(stacks, vec![vec![0x1000, 0x0fff, 0x7fff_0000_0000], vec![]]);
    }
}
