//! The segment: one connection's shared memory, its geometry, its layout header, and the
//! checks that make a segment received from a peer safe to map.
//!
//! # What shared memory requires
//!
//! The segment is a `memfd` created by the client, sized once, and sealed against shrinking and
//! growing (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`): once the server has mapped it, no one
//! can make an access fault by truncating the file. Everything in it is `#[repr(C)]`, addressed
//! by 32-bit offsets from the segment's start (never pointers: the two processes map it at
//! different addresses), holds no type with `Drop`, and starts with a magic and the protocol
//! version so that a foreign or older peer is recognised before anything else is read.
//!
//! ```text
//! 0       SegmentHeader (256 B): magic, major.minor, geometry, offsets
//! 256     CS ring header (128 B) + cells          client → server: "do this slot"
//! ...     SC ring header (128 B) + cells          server → client: "this slot is done"
//! page    slot class 0: count × [header 64 B | input area | output area]
//! page    slot class 1: ...
//! ```
//!
//! The layout is a pure function of the geometry: each side computes it, and the server checks
//! that the client's header says the same. After attaching, neither side reads the header again.

use std::fmt;
use std::fs::File;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::stat::{SFlag, fstat};

use crate::ring::{Ring, RingHeader};
use crate::slot::{Area, HEADER_SIZE, SlotHeader};
use crate::status::{Error, Status};
use crate::warm::Shelf;

/// The protocol's major version: peers with different majors refuse each other.
///
/// - 1: rings woken through futexes alone, with a periodic backstop.
/// - 2: a consumer's sleep flag says how to wake it — a futex wake, or a WAKE frame on the
///   control socket for a process that watches its rings through one waiter
///   ([`crate::ring`]); no periodic wake-up. Rings are never full.
pub const PROTOCOL_MAJOR: u16 = 2;
/// The protocol's minor version: peers speak the lower of their two minors.
///
/// - 0: the claim word of the slot header, through which a client withdraws a command the
///   server has not taken (see [`crate::slot::SlotHeader::take`]).
/// - 1: an `OUTPUT_OVERFLOW` answer says how many output bytes the handler wanted: in the slot's
///   `output_len` (beyond `output_cap`), or as a 4-byte body of the backup path's REPLY.
/// - 2: the server marks a segment released ([`RELEASED_AT`]) when it lets go of it, and a
///   client may use it again for its next connection to the same server process.
/// - 3: a client that closes may say BYE on the control socket instead of closing it, and send
///   its next hello on that same socket (a warm connection; docs/protocol.md, "Using a
///   connection again").
/// - 4: event queues: a command flagged [`crate::slot::FLAG_QUEUE`] is an operation on a
///   queue, which only a queue's host runs ([`crate::queue`]; docs/events.md).
/// - 5: a queue's host takes several posts in one command ([`crate::queue::OP_POSTS`]).
pub const PROTOCOL_MINOR: u16 = 5;
/// The first bytes of every segment.
pub const MAGIC: [u8; 8] = *b"SHMCALL\0";

/// Number of slot classes in a geometry.
pub const CLASSES: usize = 2;
/// Largest input or output area a slot may have (the backup path carries larger commands).
pub const MAX_AREA: u32 = 64 << 20;
/// Largest ring capacity.
pub const MAX_RING: u32 = 1 << 16;

const SEGMENT_HEADER_SIZE: usize = 256;
const PAGE: u64 = 4096;
const LINE: u64 = 64;

/// One class of equally sized slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotClass {
    /// How many slots of this class the segment holds (may be 0).
    pub count: u32,
    /// Capacity of each slot's input area, in bytes.
    pub input_capacity: u32,
    /// Capacity of each slot's output area, in bytes.
    pub output_capacity: u32,
}

/// The shape of a segment: its slot classes and ring size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Slot classes, smallest areas first; a command takes the first class it fits.
    pub classes: [SlotClass; CLASSES],
    /// Cells per ring; a power of two, at least the total number of slots.
    pub ring_capacity: u32,
}

impl Default for Geometry {
    /// 256 slots of 4 KiB + 4 KiB for small commands, 8 slots of 1 MiB + 1 MiB for large ones.
    /// About 18 MiB of address space; pages cost memory only once touched.
    fn default() -> Geometry {
        Geometry {
            classes: [
                SlotClass {
                    count: 256,
                    input_capacity: 4096,
                    output_capacity: 4096,
                },
                SlotClass {
                    count: 8,
                    input_capacity: 1 << 20,
                    output_capacity: 1 << 20,
                },
            ],
            ring_capacity: 512,
        }
    }
}

/// Where one slot class sits in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassLayout {
    /// The class's sizes.
    pub class: SlotClass,
    /// Offset of its first slot.
    pub base: u32,
    /// Bytes from one slot to the next.
    pub stride: u32,
    /// Global index of its first slot.
    pub first_index: u32,
}

/// Offsets of everything in a segment, computed from a validated [`Geometry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The geometry this layout was computed from.
    pub geometry: Geometry,
    /// Offset of the CS ring header; its cells follow it.
    pub cs_ring: u32,
    /// Offset of the SC ring header; its cells follow it.
    pub sc_ring: u32,
    /// The slot classes.
    pub classes: [ClassLayout; CLASSES],
    /// Total size of the segment in bytes.
    pub size: u64,
}

/// A slot, as found by validating an offset read from a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRef {
    /// Index over all classes, `0..slot_count`.
    pub index: u32,
    /// The class it belongs to.
    pub class: usize,
    /// Its offset in the segment (what travels on the rings).
    pub offset: u32,
}

fn align_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

impl Geometry {
    /// Total number of slots (saturating: an unvalidated geometry may claim more than u32).
    pub fn slot_count(&self) -> u32 {
        self.classes
            .iter()
            .fold(0u32, |n, c| n.saturating_add(c.count))
    }

    /// Checks the geometry and computes its layout; the message names the offending value.
    pub fn layout(&self) -> Result<Layout, Error> {
        let bad = |what: String| Err(Error::new(Status::InvalidArgument, what));
        let total: u64 = self.classes.iter().map(|c| u64::from(c.count)).sum();
        if total == 0 {
            return bad("geometry has no slots: every slot class count is 0".into());
        }
        let rc = self.ring_capacity;
        if !rc.is_power_of_two() || !(2..=MAX_RING).contains(&rc) || u64::from(rc) < total {
            return bad(format!(
                "ring capacity {rc} must be a power of two between 2 and {MAX_RING} and at least the slot count {total}"
            ));
        }
        for (i, c) in self.classes.iter().enumerate() {
            for (name, v) in [("input", c.input_capacity), ("output", c.output_capacity)] {
                if v > MAX_AREA {
                    return bad(format!(
                        "slot class {i} {name} capacity {v} exceeds the maximum of {MAX_AREA} bytes"
                    ));
                }
            }
        }
        let ring_bytes = align_up(RingHeader::SIZE as u64 + 4 * u64::from(rc), LINE);
        let cs_ring = SEGMENT_HEADER_SIZE as u64;
        let sc_ring = cs_ring + ring_bytes;
        let mut at = align_up(sc_ring + ring_bytes, PAGE);
        let mut first_index = 0;
        let mut classes = [ClassLayout {
            class: self.classes[0],
            base: 0,
            stride: 0,
            first_index: 0,
        }; CLASSES];
        for (layout, class) in classes.iter_mut().zip(self.classes) {
            let stride = HEADER_SIZE as u64
                + align_up(u64::from(class.input_capacity), LINE)
                + align_up(u64::from(class.output_capacity), LINE);
            *layout = ClassLayout {
                class,
                base: at as u32,
                stride: stride as u32,
                first_index,
            };
            first_index += class.count;
            at = align_up(at + stride * u64::from(class.count), PAGE);
            if at > u64::from(u32::MAX) {
                return bad(format!(
                    "geometry needs {at} bytes or more, beyond the 4 GiB that 32-bit slot offsets address"
                ));
            }
        }
        Ok(Layout {
            geometry: *self,
            cs_ring: cs_ring as u32,
            sc_ring: sc_ring as u32,
            classes,
            size: at,
        })
    }
}

impl Layout {
    /// Total number of slots.
    pub fn slot_count(&self) -> u32 {
        self.geometry.slot_count()
    }

    /// The slot with global index `index` (which must be below [`Layout::slot_count`]).
    pub fn slot(&self, index: u32) -> SlotRef {
        let class = self
            .classes
            .iter()
            .rposition(|c| index >= c.first_index && c.class.count > 0)
            .expect("slot index within the geometry");
        let c = &self.classes[class];
        assert!(
            index - c.first_index < c.class.count,
            "slot index {index} out of range"
        );
        SlotRef {
            index,
            class,
            offset: c.base + (index - c.first_index) * c.stride,
        }
    }

    /// The slot at `offset`, if `offset` is exactly the start of a slot. This is the check every
    /// offset read from a ring goes through.
    #[inline]
    pub fn locate(&self, offset: u32) -> Option<SlotRef> {
        self.classes.iter().enumerate().find_map(|(class, c)| {
            let rel = offset.checked_sub(c.base)?;
            let (n, rem) = (rel / c.stride.max(1), rel % c.stride.max(1));
            (rem == 0 && n < c.class.count).then_some(SlotRef {
                index: c.first_index + n,
                class,
                offset,
            })
        })
    }
}

/// The layout header at the start of a segment. Written once by the client, read once by the
/// server when it attaches.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct SegmentHeader {
    magic: [u8; 8],
    major: u16,
    minor: u16,
    header_size: u32,
    size: u64,
    ring_capacity: u32,
    class_count: u32,
    classes: [[u32; 3]; CLASSES],
    cs_ring: u32,
    sc_ring: u32,
    class_bases: [u32; CLASSES],
}
const _: () = assert!(std::mem::size_of::<SegmentHeader>() <= SEGMENT_HEADER_SIZE);

impl SegmentHeader {
    fn describe(layout: &Layout, major: u16) -> SegmentHeader {
        let g = &layout.geometry;
        SegmentHeader {
            magic: MAGIC,
            major,
            minor: PROTOCOL_MINOR,
            header_size: SEGMENT_HEADER_SIZE as u32,
            size: layout.size,
            ring_capacity: g.ring_capacity,
            class_count: CLASSES as u32,
            classes: g
                .classes
                .map(|c| [c.count, c.input_capacity, c.output_capacity]),
            cs_ring: layout.cs_ring,
            sc_ring: layout.sc_ring,
            class_bases: layout.classes.map(|c| c.base),
        }
    }
}

/// Why a segment received from a peer was refused. Each check has its own variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachError {
    /// The geometry announced in the hello is itself invalid.
    BadGeometry(String),
    /// The descriptor is not a regular (memfd) file: a pipe, socket, directory, device...
    NotAFile,
    /// The file's size is not the size the geometry implies.
    WrongSize {
        /// Size the geometry implies.
        expected: u64,
        /// Size of the file.
        actual: u64,
    },
    /// The file is not sealed against shrinking and growing.
    MissingSeals,
    /// The segment does not start with [`MAGIC`].
    WrongMagic,
    /// The segment's major version differs from ours.
    WrongVersion(u16),
    /// The segment's header describes another geometry than the hello.
    GeometryMismatch,
    /// Mapping or inspecting the file failed.
    Os(String),
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::BadGeometry(why) => write!(f, "segment geometry refused: {why}"),
            AttachError::NotAFile => {
                f.write_str("segment descriptor is not a memfd (a pipe, a socket, a named file...)")
            }
            AttachError::WrongSize { expected, actual } => write!(
                f,
                "segment is {actual} bytes but its geometry needs {expected}"
            ),
            AttachError::MissingSeals => {
                f.write_str("segment is not sealed against shrinking and growing")
            }
            AttachError::WrongMagic => f.write_str("segment does not start with the shmcall magic"),
            AttachError::WrongVersion(v) => write!(
                f,
                "segment speaks protocol major {v}, this side speaks {PROTOCOL_MAJOR}"
            ),
            AttachError::GeometryMismatch => {
                f.write_str("segment header disagrees with the geometry of the hello")
            }
            AttachError::Os(why) => write!(f, "segment could not be mapped: {why}"),
        }
    }
}

impl From<AttachError> for Error {
    fn from(e: AttachError) -> Error {
        let status = match e {
            AttachError::WrongVersion(_) => Status::VersionMismatch,
            AttachError::Os(_) => Status::Io,
            _ => Status::ProtocolViolation,
        };
        Error::new(status, e.to_string())
    }
}

/// Offset in the segment header of the **released** word: the server stores 1 there when it
/// lets go of the segment (its last holder dropped it), after which it never touches the
/// segment again — it may keep its mapping a moment, unused, in case the same file comes back
/// with a hello. A client may then use the segment for its next connection to the same server
/// process (protocol 2.2; [`crate::client`]'s warm segments).
pub const RELEASED_AT: usize = 128;
const _: () = assert!(std::mem::size_of::<SegmentHeader>() <= RELEASED_AT);

/// What becomes of a segment's mapping when its last holder lets go of it.
enum Afterlife {
    /// Unmapped.
    Unmap,
    /// The server's side: marked released for its client, then kept a while in case the
    /// segment comes back (its client's next connection), keyed by its file.
    Release(FileId),
    /// Handed on (the client's warm segments) instead of unmapped.
    Keep(Box<dyn FnOnce(MmapRaw, Layout) + Send + Sync>),
}

/// A mapped segment. Both sides hold one; the mapping lives as long as the last holder. The
/// memfd itself is not kept by the segment: once mapped, the mapping is all either side needs
/// (a client that may use the segment again keeps it beside, see [`Segment::keep`]).
pub struct Segment {
    map: ManuallyDrop<MmapRaw>,
    layout: Layout,
    afterlife: Afterlife,
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `drop` runs once and `self.map` is not used after this line.
        let map = unsafe { ManuallyDrop::take(&mut self.map) };
        match std::mem::replace(&mut self.afterlife, Afterlife::Unmap) {
            Afterlife::Unmap => {}
            Afterlife::Release(file) => {
                // Release: the server's last writes to the segment (its last answers) come
                // before the word, for the client that reads it with Acquire
                // (`Segment::reuse`) before it uses the segment again.
                released_word(&map).store(1, Ordering::Release);
                MAPPED.put(file, map, self.layout);
            }
            Afterlife::Keep(keep) => keep(map, self.layout),
        }
    }
}

/// Which file a memfd is: while a mapping of it lives, no other file has the same pair.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

/// The server's mappings of segments whose connections ended, for when a segment comes back
/// with its client's next connection: mapping it again would cost a new mapping, its page
/// faults and another unmap.
static MAPPED: Shelf<FileId> = Shelf::new();

/// How many segments this process, as a server, found mapped already (kept from their last
/// connection) so far.
pub fn mappings_reused() -> u64 {
    MAPPED.reused()
}

/// The released word of a mapping at least [`SEGMENT_HEADER_SIZE`] bytes long.
fn released_word(map: &MmapRaw) -> &AtomicU32 {
    // SAFETY: RELEASED_AT + 4 is inside the header, inside the mapping, and 4-aligned (the
    // mapping is page-aligned); the word is only ever accessed atomically, by both processes.
    unsafe { &*map.as_mut_ptr().add(RELEASED_AT).cast::<AtomicU32>() }
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("size", &self.layout.size)
            .field("slots", &self.layout.slot_count())
            .finish()
    }
}

const REQUIRED_SEALS: SealFlag = SealFlag::F_SEAL_SHRINK.union(SealFlag::F_SEAL_GROW);

impl Segment {
    /// Client: creates, sizes, seals and maps a new segment and writes its layout header.
    /// Returns the segment and its memfd, to send to the server. `name` shows up in
    /// `/proc/<pid>/fd` to help debugging.
    pub fn create(
        geometry: &Geometry,
        name: &str,
        major: u16,
    ) -> Result<(Segment, OwnedFd), Error> {
        let layout = geometry.layout()?;
        let fd = memfd_create(
            format!("shmcall:{name}").as_str(),
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| Error::io("memfd_create for the segment failed", e))?;
        let file = File::from(fd);
        file.set_len(layout.size).map_err(|e| {
            Error::io(
                &format!("sizing the segment to {} bytes failed", layout.size),
                e,
            )
        })?;
        fcntl(
            file.as_fd(),
            FcntlArg::F_ADD_SEALS(REQUIRED_SEALS | SealFlag::F_SEAL_SEAL),
        )
        .map_err(|e| Error::io("sealing the segment failed", e))?;
        let map = MmapOptions::new()
            .len(layout.size as usize)
            .map_raw(&file)
            .map_err(|e| Error::io("mapping the segment failed", e))?;
        let header = SegmentHeader::describe(&layout, major);
        // SAFETY: the mapping is at least SEGMENT_HEADER_SIZE bytes (the layout puts the rings
        // after it) and page-aligned; no one else has the segment yet, so a plain write is fine.
        unsafe { std::ptr::write(map.as_mut_ptr().cast::<SegmentHeader>(), header) };
        // The memfd starts zeroed, which is exactly an empty ring and idle sleep flags.
        Ok((
            Segment::over(map, layout, Afterlife::Unmap),
            OwnedFd::from(file),
        ))
    }

    /// Server: validates a segment a client sent and maps it. `geometry` is the one the hello
    /// announced; every check refuses with its own [`AttachError`].
    pub fn attach(fd: OwnedFd, geometry: &Geometry) -> Result<Segment, AttachError> {
        let layout = geometry
            .layout()
            .map_err(|e| AttachError::BadGeometry(e.message().into()))?;
        // Seals before size: once the file cannot shrink or grow, the size read below is the
        // size for good. The other order lets the client truncate between the two checks, and
        // the first access to the mapping would then kill this process with SIGBUS.
        // A file that cannot carry seals (pipe, socket, a file on most file systems) answers
        // EINVAL. A memfd is a regular file with no name (no links); a named file is not one,
        // even on tmpfs, where it answers F_GET_SEALS with a bare F_SEAL_SEAL.
        let seals = fcntl(fd.as_fd(), FcntlArg::F_GET_SEALS);
        let st = fstat(&fd).map_err(|e| AttachError::Os(e.to_string()))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG
            || st.st_nlink != 0
            || seals == Err(nix::errno::Errno::EINVAL)
        {
            return Err(AttachError::NotAFile);
        }
        match seals {
            Ok(seals) if SealFlag::from_bits_truncate(seals).contains(REQUIRED_SEALS) => {}
            _ => return Err(AttachError::MissingSeals),
        }
        let actual = st.st_size as u64;
        if actual != layout.size {
            return Err(AttachError::WrongSize {
                expected: layout.size,
                actual,
            });
        }
        // The same file as a mapping this side kept (the client's last connection had it):
        // that mapping is as good as a new one, with its pages already mapped.
        let file_id = FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        };
        let kept = MAPPED.take(
            |k, l| *k == file_id && *l == layout,
            |_, map, _| Ok::<_, MmapRaw>(map),
        );
        let map = match kept {
            Some(map) => map,
            None => MmapOptions::new()
                .len(layout.size as usize)
                .map_raw(&File::from(fd))
                .map_err(|e| AttachError::Os(e.to_string()))?,
        };
        // SAFETY: the mapping is `layout.size` bytes, more than the header, and page-aligned.
        // The client may change the header concurrently; `read_volatile` takes one copy of
        // plain integers, every bit pattern of which is a valid `SegmentHeader`.
        let found = unsafe { std::ptr::read_volatile(map.as_ptr().cast::<SegmentHeader>()) };
        if found.magic != MAGIC {
            return Err(AttachError::WrongMagic);
        }
        if found.major != PROTOCOL_MAJOR {
            return Err(AttachError::WrongVersion(found.major));
        }
        let expected = SegmentHeader::describe(&layout, PROTOCOL_MAJOR);
        let same = found.header_size == expected.header_size
            && found.size == expected.size
            && found.ring_capacity == expected.ring_capacity
            && found.class_count == expected.class_count
            && found.classes == expected.classes
            && found.cs_ring == expected.cs_ring
            && found.sc_ring == expected.sc_ring
            && found.class_bases == expected.class_bases;
        if !same {
            return Err(AttachError::GeometryMismatch);
        }
        Ok(Segment::over(map, layout, Afterlife::Release(file_id)))
    }

    fn over(map: MmapRaw, layout: Layout, afterlife: Afterlife) -> Segment {
        Segment {
            map: ManuallyDrop::new(map),
            layout,
            afterlife,
        }
    }

    /// Client: when the last holder lets go of this segment, `keep` gets its mapping instead
    /// of it being unmapped.
    pub fn keep(&mut self, keep: impl FnOnce(MmapRaw, Layout) + Send + Sync + 'static) {
        self.afterlife = Afterlife::Keep(Box::new(keep));
    }

    /// Client: a segment kept by [`Segment::keep`], made fresh for a new connection — both
    /// rings emptied, their sleep flags idle, the released word cleared — as long as its server
    /// released it; else `Err` gives the mapping back. The mapping must be one that a
    /// [`Segment`] of `layout` gave to its `keep` (not public: a mapping of another size would
    /// let the ring reset write past it).
    pub(crate) fn reuse(map: MmapRaw, layout: Layout) -> Result<Segment, MmapRaw> {
        // Acquire: pairs with the server's Release store (`Drop`): its writes are all done.
        if released_word(&map).load(Ordering::Acquire) != 1 {
            return Err(map);
        }
        let segment = Segment::over(map, layout, Afterlife::Unmap);
        let words = RingHeader::SIZE / 4 + layout.geometry.ring_capacity as usize;
        for ring in [layout.cs_ring, layout.sc_ring] {
            for i in 0..words {
                segment
                    .word(ring as usize + 4 * i)
                    .store(0, Ordering::Relaxed);
            }
        }
        // Relaxed above and here: the segment goes to the server with the hello, a sendmsg,
        // which orders these stores before anything the server does with it.
        released_word(&segment.map).store(0, Ordering::Relaxed);
        Ok(segment)
    }

    /// The shared word at byte `at` of the segment, a multiple of 4 below its size.
    fn word(&self, at: usize) -> &AtomicU32 {
        assert!(at.is_multiple_of(4) && at + 4 <= self.layout.size as usize);
        // SAFETY: in bounds and aligned (checked above; the mapping is page-aligned); shared
        // words are only accessed atomically.
        unsafe { &*self.map.as_mut_ptr().add(at).cast::<AtomicU32>() }
    }

    /// The layout, computed locally from the validated geometry.
    #[inline]
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The first byte of the mapping and its length, for callers that make one view over the
    /// whole segment (the Deno layer does) and find areas by offset in it.
    pub fn mapping(&self) -> (*mut u8, usize) {
        (self.map.as_mut_ptr(), self.layout.size as usize)
    }

    fn ring_at(&self, offset: u32) -> Ring {
        let base = self.map.as_mut_ptr();
        // SAFETY: the layout puts a RingHeader (64-aligned, as `offset` is a multiple of 64)
        // followed by `ring_capacity` u32 cells at `offset`, inside the mapping; `Segment`
        // owners keep the mapping alive while the `Ring` is used (every holder of a `Ring` also
        // holds the `Arc<Segment>` it came from), and both processes only use atomics on it.
        unsafe {
            let header = base.add(offset as usize).cast::<RingHeader>();
            let cells = base
                .add(offset as usize + RingHeader::SIZE)
                .cast::<AtomicU32>();
            Ring::from_raw(header, cells, self.layout.geometry.ring_capacity)
        }
    }

    /// A handle on the client → server ring. Keep the segment alive while using it.
    pub fn cs_ring(&self) -> Ring {
        self.ring_at(self.layout.cs_ring)
    }

    /// A handle on the server → client ring. Keep the segment alive while using it.
    pub fn sc_ring(&self) -> Ring {
        self.ring_at(self.layout.sc_ring)
    }

    /// The header of a slot.
    #[inline]
    pub fn header(&self, slot: SlotRef) -> &SlotHeader {
        // SAFETY: `slot` came from `Layout::locate` or `Layout::slot` of this segment's layout,
        // so a 64-aligned SlotHeader lies at its offset inside the mapping, which lives as long
        // as `self`; SlotHeader is all atomics, so shared access from both processes is sound.
        unsafe {
            &*self
                .map
                .as_mut_ptr()
                .add(slot.offset as usize)
                .cast::<SlotHeader>()
        }
    }

    /// The slot's input area, cut to `len` bytes (at most its capacity).
    ///
    /// The caller must not hold two [`Area`]s over the same slot's input at once.
    #[inline]
    pub fn input(&self, slot: SlotRef, len: u32) -> Area<'_> {
        let cap = self.layout.classes[slot.class].class.input_capacity;
        let start = slot.offset as usize + HEADER_SIZE;
        // SAFETY: the input area of a slot is `cap` bytes from `start`, inside the mapping;
        // `len.min(cap)` keeps the area inside it. The bytes are only accessed through `Area`'s
        // raw copies, never through Rust references, so the peer writing them is not UB.
        unsafe { Area::from_raw(self.map.as_mut_ptr().add(start), len.min(cap) as usize) }
    }

    /// The slot's output area, cut to `len` bytes (at most its capacity).
    #[inline]
    pub fn output(&self, slot: SlotRef, len: u32) -> Area<'_> {
        let c = &self.layout.classes[slot.class].class;
        let start = slot.offset as usize
            + HEADER_SIZE
            + align_up(u64::from(c.input_capacity), LINE) as usize;
        // SAFETY: as for `input`: the output area follows the input area inside the slot.
        unsafe {
            Area::from_raw(
                self.map.as_mut_ptr().add(start),
                len.min(c.output_capacity) as usize,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn small() -> Geometry {
        Geometry {
            classes: [
                SlotClass {
                    count: 4,
                    input_capacity: 100,
                    output_capacity: 200,
                },
                SlotClass {
                    count: 2,
                    input_capacity: 5000,
                    output_capacity: 5000,
                },
            ],
            ring_capacity: 8,
        }
    }

    fn dup(fd: &OwnedFd) -> OwnedFd {
        fd.try_clone().unwrap()
    }

    #[test]
    fn a_created_segment_attaches_and_both_sides_see_the_same_slots() {
        let (seg, fd) = Segment::create(&small(), "t", PROTOCOL_MAJOR).unwrap();
        let peer = Segment::attach(dup(&fd), &small()).unwrap();
        let slot = seg.layout().slot(5);
        seg.input(slot, 3).write(b"abc");
        assert_eq!(peer.input(slot, 3).to_vec(), b"abc");
        assert_eq!(peer.layout(), seg.layout());
    }

    #[test]
    fn locate_accepts_exactly_slot_starts() {
        let layout = small().layout().unwrap();
        for i in 0..layout.slot_count() {
            let s = layout.slot(i);
            assert_eq!(layout.locate(s.offset), Some(s));
            assert_eq!(
                layout.locate(s.offset + 4),
                None,
                "misaligned offset accepted"
            );
        }
        assert_eq!(layout.locate(0), None);
        assert_eq!(layout.locate(layout.cs_ring), None);
        let last = layout.slot(layout.slot_count() - 1);
        assert_eq!(layout.locate(last.offset + layout.classes[1].stride), None);
        assert_eq!(layout.locate(u32::MAX), None);
    }

    #[test]
    fn invalid_geometries_are_refused_naming_the_value() {
        let mut g = small();
        g.ring_capacity = 6;
        assert!(
            g.layout()
                .unwrap_err()
                .message()
                .contains("ring capacity 6")
        );
        let mut g = small();
        g.ring_capacity = 4;
        assert!(g.layout().unwrap_err().message().contains("slot count 6"));
        let mut g = small();
        g.classes[1].output_capacity = MAX_AREA + 1;
        assert!(
            g.layout()
                .unwrap_err()
                .message()
                .contains("output capacity")
        );
        let mut g = small();
        g.classes = [SlotClass {
            count: 0,
            input_capacity: 1,
            output_capacity: 1,
        }; CLASSES];
        assert!(g.layout().unwrap_err().message().contains("no slots"));
        let mut g = small();
        // 40 slots of 128 MiB: 5 GiB, past what 32-bit offsets reach.
        g.classes[1] = SlotClass {
            count: 40,
            input_capacity: MAX_AREA,
            output_capacity: MAX_AREA,
        };
        g.ring_capacity = 64;
        assert!(g.layout().unwrap_err().message().contains("4 GiB"));
    }

    #[test]
    fn wrong_magic_is_refused() {
        let (seg, fd) = Segment::create(&small(), "t", PROTOCOL_MAJOR).unwrap();
        // SAFETY: the test owns the only mapping; the first byte is inside it.
        unsafe { *seg.map.as_mut_ptr() = b'X' };
        assert_eq!(
            Segment::attach(dup(&fd), &small()).unwrap_err(),
            AttachError::WrongMagic
        );
    }

    #[test]
    fn wrong_major_is_refused() {
        let (_seg, fd) = Segment::create(&small(), "t", PROTOCOL_MAJOR + 1).unwrap();
        assert_eq!(
            Segment::attach(dup(&fd), &small()).unwrap_err(),
            AttachError::WrongVersion(PROTOCOL_MAJOR + 1)
        );
    }

    #[test]
    fn a_header_that_disagrees_with_the_hello_geometry_is_refused() {
        let (seg, fd) = Segment::create(&small(), "t", PROTOCOL_MAJOR).unwrap();
        // Same size, other geometry: swap the class sizes of class 0.
        let mut other = small();
        other.classes[0].input_capacity = 200;
        other.classes[0].output_capacity = 100;
        assert_eq!(other.layout().unwrap().size, seg.layout().size);
        assert_eq!(
            Segment::attach(dup(&fd), &other).unwrap_err(),
            AttachError::GeometryMismatch
        );
    }

    #[test]
    fn a_short_file_is_refused() {
        let mut g = small();
        let (_seg, fd) = Segment::create(&g, "t", PROTOCOL_MAJOR).unwrap();
        g.classes[1].count = 3;
        g.ring_capacity = 8;
        assert!(matches!(
            Segment::attach(dup(&fd), &g).unwrap_err(),
            AttachError::WrongSize { .. }
        ));
    }

    #[test]
    fn an_unsealed_memfd_is_refused() {
        let size = small().layout().unwrap().size;
        let fd = memfd_create(
            "unsealed",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .unwrap();
        let file = File::from(fd);
        file.set_len(size).unwrap();
        assert_eq!(
            Segment::attach(file.into(), &small()).unwrap_err(),
            AttachError::MissingSeals
        );
    }

    #[test]
    fn a_memfd_that_cannot_be_sealed_is_refused() {
        let size = small().layout().unwrap().size;
        let fd = memfd_create("no-sealing", MFdFlags::MFD_CLOEXEC).unwrap();
        let file = File::from(fd);
        file.set_len(size).unwrap();
        assert_eq!(
            Segment::attach(file.into(), &small()).unwrap_err(),
            AttachError::MissingSeals
        );
    }

    #[test]
    fn a_pipe_is_refused() {
        let (r, mut w) = std::io::pipe().unwrap();
        w.write_all(b"x").unwrap();
        assert_eq!(
            Segment::attach(r.into(), &small()).unwrap_err(),
            AttachError::NotAFile
        );
    }
}
