//! Slot headers and areas: the storage of one command in a segment.
//!
//! A slot is a 64-byte header followed by its input area and its output area. The client owns
//! a slot from taking it off its free list until the server's answer comes back; the server
//! owns it between popping its offset from the CS ring and pushing it on the SC ring. The ring
//! pushes are the only synchronization: their `Release`/`Acquire` pairs publish the header
//! fields, which are therefore read and written with `Relaxed` atomics (atomics rather than
//! plain memory so that a peer writing concurrently is a wrong value, never a data race).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering::Relaxed};

/// Run this command on the thread that received it.
pub const FLAG_INLINE: u32 = 1 << 0;
/// Run this command on the server's worker pool.
pub const FLAG_WORKER: u32 = 1 << 1;
/// Not a command but a library request (protocol 1.1): the server answers its counters
/// ([`crate::stats::word`], little-endian `f64`s) itself; no handler sees it.
pub const FLAG_STATS: u32 = 1 << 2;
/// An operation on an event queue (protocol 2.4), named by the command's code
/// ([`crate::queue`]): only a queue's host takes it; any other server answers it
/// `INVALID_COMMAND` without running a handler.
pub const FLAG_QUEUE: u32 = 1 << 3;
/// Every flag this protocol version defines.
pub const FLAGS_KNOWN: u32 = FLAG_INLINE | FLAG_WORKER | FLAG_STATS | FLAG_QUEUE;

/// Where the server runs a command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// The server's default.
    #[default]
    Default,
    /// On the thread that received the command.
    Inline,
    /// On the server's worker pool.
    Worker,
    /// A request for the server's counters ([`FLAG_STATS`]), answered by the library.
    Stats,
    /// An operation on an event queue ([`FLAG_QUEUE`]), for a queue's host only.
    Queue,
}

impl Mode {
    /// The header flags for this mode.
    pub const fn flags(self) -> u32 {
        match self {
            Mode::Default => 0,
            Mode::Inline => FLAG_INLINE,
            Mode::Worker => FLAG_WORKER,
            Mode::Stats => FLAG_STATS,
            Mode::Queue => FLAG_QUEUE,
        }
    }

    /// The mode the flags ask for, or `None` when they ask for both or carry unknown bits.
    pub const fn from_flags(flags: u32) -> Option<Mode> {
        match flags {
            0 => Some(Mode::Default),
            FLAG_INLINE => Some(Mode::Inline),
            FLAG_WORKER => Some(Mode::Worker),
            FLAG_STATS => Some(Mode::Stats),
            FLAG_QUEUE => Some(Mode::Queue),
            _ => None,
        }
    }
}

/// The header of a slot, in shared memory. `#[repr(C)]`, one cache line, atomics only.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct SlotHeader {
    code: AtomicU32,
    flags: AtomicU32,
    input_len: AtomicU32,
    output_cap: AtomicU32,
    generation: AtomicU32,
    status: AtomicI32,
    output_len: AtomicU32,
    reply_generation: AtomicU32,
    /// Who has the command once it is on the CS ring: [`CLAIM_PENDING`] until the server takes
    /// it ([`CLAIM_TAKEN`]) or the client withdraws it ([`CLAIM_CANCELLED`]). One word that
    /// both sides change with a single read-modify-write each, so exactly one of them wins.
    claim: AtomicU32,
}

/// The command waits on the CS ring: the client may still withdraw it (protocol 1.1).
pub const CLAIM_PENDING: u32 = 1;
/// The client withdrew the command before the server took it: the server answers it
/// `CANCELLED` without running it.
pub const CLAIM_CANCELLED: u32 = 2;
/// The server took the command: it runs to its end.
pub const CLAIM_TAKEN: u32 = 3;

/// Byte offsets of a slot header's fields, for a side that reads and writes them through a view
/// of its own (JavaScript's lanes): the same words [`SlotHeader`]'s methods use.
pub mod field {
    use super::SlotHeader;
    use std::mem::offset_of;
    /// The operation code.
    pub const CODE: usize = offset_of!(SlotHeader, code);
    /// The mode flags.
    pub const FLAGS: usize = offset_of!(SlotHeader, flags);
    /// Bytes of input.
    pub const INPUT_LEN: usize = offset_of!(SlotHeader, input_len);
    /// Bytes of output the server may fill.
    pub const OUTPUT_CAP: usize = offset_of!(SlotHeader, output_cap);
    /// The request's generation.
    pub const GENERATION: usize = offset_of!(SlotHeader, generation);
    /// The answer's status.
    pub const STATUS: usize = offset_of!(SlotHeader, status);
    /// Bytes of output the server filled.
    pub const OUTPUT_LEN: usize = offset_of!(SlotHeader, output_len);
    /// The generation the answer echoes.
    pub const REPLY_GENERATION: usize = offset_of!(SlotHeader, reply_generation);
    /// The claim word.
    pub const CLAIM: usize = offset_of!(SlotHeader, claim);
}

/// Size of a slot header in bytes; the input area follows it.
pub const HEADER_SIZE: usize = std::mem::size_of::<SlotHeader>();
const _: () = assert!(HEADER_SIZE == 64);

/// What a client asks of the server, as written into a slot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The operation code, the application's own.
    pub code: u32,
    /// [`FLAG_INLINE`], [`FLAG_WORKER`] or neither.
    pub flags: u32,
    /// Bytes of the input area in use.
    pub input_len: u32,
    /// Bytes of the output area the server may fill.
    pub output_cap: u32,
    /// The slot's use count, echoed back in the reply.
    pub generation: u32,
}

/// What the server answers, as written into a slot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The user status (>= 0) or a library status (< 0).
    pub status: i32,
    /// Bytes of the output area the server filled.
    pub output_len: u32,
    /// The generation of the request this answers.
    pub generation: u32,
}

impl SlotHeader {
    /// Client: fills in the request. Published by the CS push that follows.
    #[inline]
    pub fn write_request(&self, r: &Request) {
        self.code.store(r.code, Relaxed);
        self.flags.store(r.flags, Relaxed);
        self.input_len.store(r.input_len, Relaxed);
        self.output_cap.store(r.output_cap, Relaxed);
        self.generation.store(r.generation, Relaxed);
        self.claim.store(CLAIM_PENDING, Relaxed);
    }

    /// Server: takes the command, unless the client withdrew it first; returns whether it is
    /// the server's to run. A word the client never wrote (a 1.0 client) or scribbled on reads
    /// as taken: only a withdrawal the client won stops a command.
    ///
    /// Relaxed: the client's withdrawal and this swap are read-modify-writes of one word, so
    /// its modification order alone decides which came first; nothing else is published
    /// through it (the request fields were acquired by the CS pop).
    #[inline]
    pub fn take(&self) -> bool {
        self.claim.swap(CLAIM_TAKEN, Relaxed) != CLAIM_CANCELLED
    }

    /// Client: withdraws a command the server has not taken; returns whether it did (the
    /// server then answers it `CANCELLED` without running it). Relaxed, as for [`Self::take`].
    #[inline]
    pub fn withdraw(&self) -> bool {
        self.claim
            .compare_exchange(CLAIM_PENDING, CLAIM_CANCELLED, Relaxed, Relaxed)
            .is_ok()
    }

    /// Server: reads the request once, after the CS pop that acquired it. The values are the
    /// peer's: validate them before use.
    #[inline]
    pub fn read_request(&self) -> Request {
        Request {
            code: self.code.load(Relaxed),
            flags: self.flags.load(Relaxed),
            input_len: self.input_len.load(Relaxed),
            output_cap: self.output_cap.load(Relaxed),
            generation: self.generation.load(Relaxed),
        }
    }

    /// Server: fills in the reply. Published by the SC push that follows.
    #[inline]
    pub fn write_reply(&self, r: &Reply) {
        self.status.store(r.status, Relaxed);
        self.output_len.store(r.output_len, Relaxed);
        self.reply_generation.store(r.generation, Relaxed);
    }

    /// Client: reads the reply once, after the SC pop that acquired it. The values are the
    /// peer's: validate them before use.
    #[inline]
    pub fn read_reply(&self) -> Reply {
        Reply {
            status: self.status.load(Relaxed),
            output_len: self.output_len.load(Relaxed),
            generation: self.reply_generation.load(Relaxed),
        }
    }
}

/// A command's input or output area: bytes in shared memory (or, on the backup path, on the
/// heap) that the peer may also write.
///
/// Because the peer can change the bytes at any time, an `Area` hands out copies and raw
/// pointers rather than Rust slices; [`Area::as_slice`] is there for callers who accept that a
/// concurrent writer can only ever make them see other bytes.
#[derive(Debug)]
pub struct Area<'a> {
    ptr: *mut u8,
    len: usize,
    _borrow: PhantomData<&'a mut [u8]>,
}

impl<'a> Area<'a> {
    /// An area of `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` is valid for reads and writes of `len` bytes for `'a`, and nothing in this process
    /// holds a Rust reference to those bytes during `'a`.
    #[inline]
    pub unsafe fn from_raw(ptr: *mut u8, len: usize) -> Area<'a> {
        Area {
            ptr,
            len,
            _borrow: PhantomData,
        }
    }

    /// An area over a buffer of this process.
    #[inline]
    pub fn from_slice(buf: &'a mut [u8]) -> Area<'a> {
        // SAFETY: the exclusive borrow makes `buf` valid and unaliased for `'a`.
        unsafe { Area::from_raw(buf.as_mut_ptr(), buf.len()) }
    }

    /// The area's size in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the area has no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first byte, for callers that hand the area on (the FFI layer does).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Copies `src` to the start of the area.
    ///
    /// # Panics
    ///
    /// If `src` is longer than the area.
    #[inline]
    pub fn write(&mut self, src: &[u8]) {
        self.write_at(0, src);
    }

    /// Copies `src` into the area at `offset`.
    ///
    /// # Panics
    ///
    /// If `offset + src.len()` exceeds the area.
    #[inline]
    pub fn write_at(&mut self, offset: usize, src: &[u8]) {
        let end = offset.checked_add(src.len()).filter(|&e| e <= self.len);
        assert!(
            end.is_some(),
            "cannot write {} bytes at offset {offset} into an area of {} bytes",
            src.len(),
            self.len
        );
        // SAFETY: the range is inside the area (checked above), which `from_raw`'s contract
        // makes valid for writes; `src` is a Rust slice of this process, so it cannot overlap
        // memory no Rust reference points to.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(offset), src.len()) }
    }

    /// Copies the area's bytes from `offset` into `dst`.
    ///
    /// # Panics
    ///
    /// If `offset + dst.len()` exceeds the area.
    #[inline]
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) {
        let end = offset.checked_add(dst.len()).filter(|&e| e <= self.len);
        assert!(
            end.is_some(),
            "cannot read {} bytes at offset {offset} from an area of {} bytes",
            dst.len(),
            self.len
        );
        // SAFETY: the range is inside the area, valid for reads by `from_raw`'s contract, and
        // `dst` is exclusively borrowed memory of this process, disjoint from the area.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), dst.as_mut_ptr(), dst.len()) }
    }

    /// A copy of the area's bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.read_at(0, &mut v);
        v
    }

    /// The first `len` bytes (or all of them when shorter) as a new, smaller area.
    #[inline]
    pub fn truncate(self, len: usize) -> Area<'a> {
        Area {
            len: len.min(self.len),
            ..self
        }
    }

    /// The area as a slice.
    ///
    /// # Safety
    ///
    /// The peer process may change these bytes while the slice lives, which Rust's aliasing
    /// rules do not allow for. Use it only where the peer is trusted not to (or where reading
    /// inconsistent bytes is acceptable and the compiler cannot exploit the assumption), for
    /// example to hash or checksum the bytes once.
    #[inline]
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: `from_raw` made the range valid; the caller accepts the aliasing caveat.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}
