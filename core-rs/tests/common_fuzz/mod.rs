//! The checks the fuzz targets (`fuzz/fuzz_targets/*.rs`, which include this file by `#[path]`)
//! and the CI tests (`fuzz_corpus.rs`, `properties.rs`) run over frame parsing, geometry layout
//! and segment attachment. One entry point per fuzz target takes the raw fuzz input:
//! [`frames`], [`geometry`], [`attach`], [`queue`]. Each panics when a property breaks.
//!
//! Every checked property is stated from the outside (the frame formats and ceilings of
//! `wire.rs`'s docs, the segment layout of `segment.rs`'s docs), not by calling the code under
//! test a second time, so that a wrong computation is not also the oracle.
//!
//! Including this module installs a global allocator that measures, per thread, the peak of
//! bytes live during a closure: the frame check uses it to hold parsing to the per-kind
//! ceilings. A binary that includes this module must not declare another one.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use shmcall_core::ring::RingHeader;
use shmcall_core::segment::{
    AttachError, CLASSES, Layout, MAGIC, MAX_AREA, MAX_RING, PROTOCOL_MAJOR, Segment,
};
use shmcall_core::slot::HEADER_SIZE;
use shmcall_core::wire::{
    self, FRAME_MAGIC, HEADER_LEN, MAX_IC_ID, MAX_PAYLOAD, MAX_REASON, Message, WireError,
};
use shmcall_core::{Geometry, SlotClass};

// ---------------------------------------------------------------------------------------------
// Allocation measurement

/// Forwards to `System` and keeps, per thread, the bytes live since the last reset and their peak.
pub struct Tracking;

thread_local! {
    // Const-initialised and without `Drop`, so touching them from the allocator never allocates
    // and never fails during thread teardown.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to `System` with its arguments unchanged; the bookkeeping only
// touches thread-local cells.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        note(layout.size() as isize);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    // Forwarded rather than left to the default (alloc + memset): a 64 MiB zeroed payload
    // buffer must stay untouched pages, as it is in the library.
    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        note(layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        note(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        // Old and new block may both exist for a moment: count the new one before freeing the old.
        note(new_size as isize);
        note(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static TRACKING: Tracking = Tracking;

/// Runs `f` and returns its result with the most bytes this thread had allocated at once
/// during it (not counting what was live before).
pub fn peak_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    let r = f();
    (r, PEAK.with(Cell::get).max(0) as usize)
}

// ---------------------------------------------------------------------------------------------
// Decoding fuzz input

/// Takes little-endian integers off the front of the fuzz input, zeros once it runs out, so every
/// input decodes to something.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn i16(&mut self) -> i16 {
        self.u16() as i16
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A geometry. Uniform u32s are almost never valid, so unless the first byte asks for raw
    /// values, each field is drawn from the shapes that matter: powers of two around the ring
    /// limits, small and large counts, areas of 0, small, and just below and above `MAX_AREA`.
    pub fn geometry(&mut self) -> Geometry {
        if self.u8() & 1 == 1 {
            let ring_capacity = self.u32();
            let classes = [(); CLASSES].map(|()| SlotClass {
                count: self.u32(),
                input_capacity: self.u32(),
                output_capacity: self.u32(),
            });
            return Geometry {
                classes,
                ring_capacity,
            };
        }
        let ring_capacity = 1u32 << (self.u8() % 20);
        let classes = [(); CLASSES].map(|()| SlotClass {
            count: match self.u8() % 4 {
                0 => 0,
                1 => u32::from(self.u8()),
                2 => u32::from(self.u16()),
                _ => self.u32(),
            },
            input_capacity: self.area(),
            output_capacity: self.area(),
        });
        Geometry {
            classes,
            ring_capacity,
        }
    }

    fn area(&mut self) -> u32 {
        match self.u8() % 5 {
            0 => 0,
            1 => u32::from(self.u16()),
            2 => MAX_AREA - u32::from(self.u16()),
            3 => MAX_AREA + 1 + u32::from(self.u8()),
            _ => self.u32(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Frames

/// The largest payload a frame of `kind` may announce, from the payload formats: hello = segment
/// magic, major, minor, id length, id, ring capacity, three u32 per class; welcome = major, minor,
/// connection; refuse = status, reason length, reason; exec and reply carry an area; wake
/// (protocol 2.0) and bye (2.3) carry nothing.
pub fn payload_ceiling(kind: u8) -> Option<usize> {
    match kind {
        1 => Some(8 + 2 + 2 + 1 + MAX_IC_ID + 4 + 12 * CLASSES),
        2 => Some(2 + 2 + 8),
        3 => Some(4 + 2 + MAX_REASON),
        4 | 5 => Some(MAX_PAYLOAD as usize),
        6 | 7 => Some(0),
        _ => None,
    }
}

/// What parsing may allocate beyond the payload buffer: the ic id's `String`, or a refusal reason
/// decoded lossily, where each invalid byte becomes a 3-byte U+FFFD and the string grows by
/// doubling (old and new buffer live at once): under 8 bytes per payload byte.
fn derived_allowance(kind: u8) -> usize {
    match kind {
        1 => MAX_IC_ID,
        3 => 8 * MAX_REASON,
        _ => 0,
    }
}

/// Room for the parser's own small bookkeeping.
const SLACK: usize = 256;

/// What `read_message` must answer for `buf`, decided from the header alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Closed,
    /// The input ends inside the header.
    ShortHeader,
    BadMagic(u16),
    UnknownKind(u8),
    Oversized(u32),
    /// A valid header whose payload the input does not hold in full.
    ShortPayload {
        kind: u8,
        len: usize,
    },
    /// A whole frame is there: a message or `Malformed`.
    Frame {
        kind: u8,
        len: usize,
    },
}

fn expect(buf: &[u8]) -> Expect {
    if buf.is_empty() {
        return Expect::Closed;
    }
    if buf.len() < HEADER_LEN {
        return Expect::ShortHeader;
    }
    let magic = u16::from_le_bytes([buf[0], buf[1]]);
    if magic != FRAME_MAGIC {
        return Expect::BadMagic(magic);
    }
    let kind = buf[2];
    let Some(ceiling) = payload_ceiling(kind) else {
        return Expect::UnknownKind(kind);
    };
    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len as usize > ceiling {
        return Expect::Oversized(len);
    }
    let len = len as usize;
    if buf.len() - HEADER_LEN < len {
        Expect::ShortPayload { kind, len }
    } else {
        Expect::Frame { kind, len }
    }
}

/// Fuzz target `frames`: reads messages off `data` until an error or its end. Each answer must be
/// the one the header calls for, allocate within its kind's ceiling, and each message must be
/// in range and survive re-encoding.
pub fn frames(data: &[u8]) {
    let mut rest = data;
    loop {
        let before = rest;
        let expected = expect(before);
        let (result, peak) = peak_allocation(|| wire::read_message(&mut rest));
        let consumed = before.len() - rest.len();
        // A valid header may cost one buffer of the length it announces (at most its kind's
        // ceiling, checked above) and what is decoded from it; a refused header nothing.
        let allowed = match expected {
            Expect::ShortPayload { kind, len } | Expect::Frame { kind, len } => {
                len + derived_allowance(kind) + SLACK
            }
            _ => SLACK,
        };
        assert!(
            peak <= allowed,
            "parsing allocated {peak} bytes at once, over the {allowed} allowed for {expected:?}"
        );
        match (expected, result) {
            (Expect::Closed, Err(WireError::Closed))
            | (Expect::ShortHeader | Expect::ShortPayload { .. }, Err(WireError::Truncated))
            | (Expect::Frame { .. }, Err(WireError::Malformed(_))) => return,
            (Expect::BadMagic(m), Err(WireError::BadMagic(n))) if m == n => return,
            (Expect::UnknownKind(k), Err(WireError::UnknownKind(n))) if k == n => return,
            (Expect::Oversized(l), Err(WireError::Oversized(n))) if l == n => return,
            (Expect::Frame { len, .. }, Ok(m)) => {
                assert_eq!(consumed, HEADER_LEN + len, "{m:?} consumed a wrong length");
                message_round_trips(&m, &before[..consumed]);
            }
            (expected, result) => {
                let head = &before[..before.len().min(64)];
                panic!("expected {expected:?} for {head:02x?}…, read_message answered {result:?}")
            }
        }
    }
}

/// `m` was parsed from `frame`: its fields are in range, it encodes to `frame` (but for the
/// reserved header byte and lossily decoded reasons), and that encoding parses back to `m`.
pub fn message_round_trips(m: &Message, frame: &[u8]) {
    match m {
        Message::Hello { ic_id, .. } => assert!(ic_id.len() <= MAX_IC_ID, "{m:?}"),
        Message::Refuse { reason, .. } => {
            assert!(
                reason.len() <= MAX_REASON,
                "a reason of {} bytes",
                reason.len()
            )
        }
        Message::Exec(e) => assert!(
            e.input.len() <= MAX_AREA as usize && e.output_cap <= MAX_AREA,
            "{m:?}"
        ),
        _ => {}
    }
    let bytes = wire::encode(m);
    let mut reader = bytes.as_slice();
    let again = wire::read_message(&mut reader)
        .unwrap_or_else(|e| panic!("re-encoded {m:?} is refused: {e}"));
    assert!(reader.is_empty(), "re-encoded {m:?} leaves bytes behind");
    assert_eq!(&again, m, "{m:?} does not survive encode then parse");
    let lossy_reason = matches!(m, Message::Refuse { .. })
        && std::str::from_utf8(&frame[HEADER_LEN + 6..]).is_err();
    if !lossy_reason {
        let mut canonical = frame.to_vec();
        canonical[3] = 0;
        assert_eq!(bytes, canonical, "{m:?} re-encodes to other bytes");
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry

const PAGE: u64 = 4096;
const LINE: u64 = 64;
const RING_HEADER: u64 = RingHeader::SIZE as u64;
const SEGMENT_HEADER: u64 = 256;

fn align(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Fuzz target `geometry`: a geometry, then offsets to probe `locate` with.
pub fn geometry(data: &[u8]) {
    let mut input = Input(data);
    let g = input.geometry();
    let mut probes = Vec::new();
    while !input.is_empty() && probes.len() < 16 {
        probes.push(input.u32());
    }
    check_geometry(&g, &probes);
}

/// Whether a geometry must be accepted (`Some(true)`), refused (`Some(false)`), or lies so close
/// to the 4 GiB limit that only the exact layout decides (`None`).
fn geometry_verdict(g: &Geometry) -> Option<bool> {
    let total: u64 = g.classes.iter().map(|c| u64::from(c.count)).sum();
    let rc = g.ring_capacity;
    let ring_ok = rc.is_power_of_two() && (2..=MAX_RING).contains(&rc) && u64::from(rc) >= total;
    let areas_ok = g
        .classes
        .iter()
        .all(|c| c.input_capacity <= MAX_AREA && c.output_capacity <= MAX_AREA);
    if total == 0 || !ring_ok || !areas_ok {
        return Some(false);
    }
    // The segment needs at least its header, two rings and every slot's bytes; alignment adds at
    // most a line per ring and per area and a page per slot class (and one after the rings).
    let slots: u64 = g
        .classes
        .iter()
        .map(|c| {
            u64::from(c.count)
                * (HEADER_SIZE as u64 + u64::from(c.input_capacity) + u64::from(c.output_capacity))
        })
        .sum();
    let least = SEGMENT_HEADER + 2 * (RING_HEADER + 4 * u64::from(rc)) + slots;
    let most = least + 2 * (LINE - 1) + (CLASSES as u64 + 1) * (PAGE - 1) + total * 2 * (LINE - 1);
    let limit = u64::from(u32::MAX);
    if most <= limit {
        Some(true)
    } else if least > limit {
        Some(false)
    } else {
        None
    }
}

/// Layout properties: refused exactly when invalid; when accepted, the rings and every slot lie
/// inside the segment, aligned, in order and apart, and `locate` finds exactly the slot starts
/// among `probes` and among offsets derived from the layout.
pub fn check_geometry(g: &Geometry, probes: &[u32]) {
    let verdict = geometry_verdict(g);
    let l = match g.layout() {
        Err(e) => {
            assert_ne!(verdict, Some(true), "{g:?} refused: {}", e.message());
            return;
        }
        Ok(l) => l,
    };
    assert_ne!(verdict, Some(false), "{g:?} accepted: {l:?}");
    assert_eq!(l.geometry, *g);
    assert!(l.size <= u64::from(u32::MAX), "{l:?} beyond 32-bit offsets");
    assert_eq!(l.size % PAGE, 0, "{l:?}: size not whole pages");

    // The fixed regions: header, CS ring, SC ring, in that order, line-aligned.
    let ring_len = RING_HEADER + 4 * u64::from(g.ring_capacity);
    let (cs, sc) = (u64::from(l.cs_ring), u64::from(l.sc_ring));
    assert!(
        cs >= SEGMENT_HEADER && cs % LINE == 0,
        "{l:?}: CS ring misplaced"
    );
    assert!(
        sc >= cs + ring_len && sc % LINE == 0,
        "{l:?}: SC ring misplaced"
    );
    let mut end = sc + ring_len;

    // Slots in global index order lie at increasing offsets: each one's header, input area (from
    // the next line) and output area (from the line after the input) ends before the next starts.
    let total = l.slot_count();
    let mut starts = Vec::with_capacity(total as usize);
    for i in 0..total {
        let s = l.slot(i);
        assert_eq!(s.index, i);
        let c = g.classes[s.class];
        let at = u64::from(s.offset);
        assert!(
            at >= end,
            "slot {i} at {at} overlaps what ends at {end} in {l:?}"
        );
        assert_eq!(at % LINE, 0, "slot {i} at {at} is not line-aligned");
        end = at
            + HEADER_SIZE as u64
            + align(u64::from(c.input_capacity), LINE)
            + u64::from(c.output_capacity);
        assert_eq!(
            l.locate(s.offset),
            Some(s),
            "slot {i} not located at its start"
        );
        starts.push(s.offset);
    }
    assert!(
        end <= l.size,
        "the last slot ends at {end}, past the segment's {}",
        l.size
    );

    let mut offsets = probes.to_vec();
    offsets.extend([0, l.cs_ring, l.sc_ring, u32::MAX]);
    offsets.extend([l.size, l.size - 1].map(|v| v as u32));
    for c in &l.classes {
        for d in [1, 4, 63, 64] {
            offsets.extend([c.base.wrapping_sub(d), c.base.wrapping_add(d)]);
        }
        offsets.push(c.base.wrapping_add(c.stride.wrapping_mul(c.class.count)));
    }
    for &p in probes {
        let near = starts[(p % total) as usize];
        offsets.push(near.wrapping_add(p >> 24));
        offsets.push(near.wrapping_sub(p >> 24));
    }
    for off in offsets {
        let found = l.locate(off);
        match starts.binary_search(&off) {
            Ok(i) => assert_eq!(found, Some(l.slot(i as u32)), "locate({off}) in {l:?}"),
            Err(_) => assert_eq!(found, None, "locate({off}) is no slot start in {l:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attach

/// Bytes of the segment header that the format defines (magic through class bases).
const DEFINED_HEADER: usize = 72;
/// Where the minor version sits in the header: the one defined field peers may disagree on.
const MINOR: std::ops::Range<usize> = 10..12;

/// Fuzz target `attach`: a geometry, a control byte, a size delta, then bytes XORed over the
/// segment header (over a correct header for that geometry when the control byte asks).
///
/// Control bits: 0 start from a correct header; 1 allow sealing; 2 seal shrink; 3 seal grow;
/// 4 seal seals; 5 seal writes; 6 perturb the size by the delta; 7 hand over a pipe instead.
pub fn attach(data: &[u8]) {
    let mut input = Input(data);
    let g = input.geometry();
    let control = input.u8();
    let delta = i64::from(input.i16()) * 8;
    let mut header = [0u8; SEGMENT_HEADER as usize];
    let layout = g.layout().ok();
    if control & 1 != 0
        && let Some(t) = layout.as_ref().and_then(template)
    {
        header = t;
    }
    for b in &mut header {
        *b ^= input.u8();
    }
    let base = layout.as_ref().map_or(PAGE, |l| l.size);
    let size = if control & 1 << 6 != 0 {
        base.saturating_add_signed(delta)
    } else {
        base
    };
    let peer = Peer {
        geometry: g,
        header,
        size,
        allow_sealing: control & 1 << 1 != 0,
        seals: [
            (1 << 2, SealFlag::F_SEAL_SHRINK),
            (1 << 3, SealFlag::F_SEAL_GROW),
            (1 << 4, SealFlag::F_SEAL_SEAL),
            (1 << 5, SealFlag::F_SEAL_WRITE),
        ]
        .into_iter()
        .filter(|&(bit, _)| control & bit != 0)
        .fold(SealFlag::empty(), |all, (_, s)| all | s),
        pipe: control & 1 << 7 != 0,
    };
    check_attach(&peer);
}

/// What a (possibly hostile) client hands the server: a descriptor and the hello's geometry.
#[derive(Clone, Debug)]
pub struct Peer {
    pub geometry: Geometry,
    /// The first bytes of the segment.
    pub header: [u8; SEGMENT_HEADER as usize],
    pub size: u64,
    /// `MFD_ALLOW_SEALING`.
    pub allow_sealing: bool,
    /// Seals added after the header is written.
    pub seals: SealFlag,
    /// Hand over a pipe instead of a memfd.
    pub pipe: bool,
}

/// The header a correct client writes for `layout`, read back from a segment `Segment::create`
/// made.
pub fn template(layout: &Layout) -> Option<[u8; SEGMENT_HEADER as usize]> {
    let (seg, _fd) = Segment::create(&layout.geometry, "fuzz-template", PROTOCOL_MAJOR).ok()?;
    let (base, len) = seg.mapping();
    assert!(len >= SEGMENT_HEADER as usize);
    let mut out = [0u8; SEGMENT_HEADER as usize];
    // SAFETY: the mapping is `len` bytes, at least the header's, and only this thread uses it.
    unsafe { std::ptr::copy_nonoverlapping(base, out.as_mut_ptr(), out.len()) };
    Some(out)
}

fn descriptor(p: &Peer) -> OwnedFd {
    if p.pipe {
        let (r, _w) = std::io::pipe().expect("pipe");
        return r.into();
    }
    let mut flags = MFdFlags::MFD_CLOEXEC;
    if p.allow_sealing {
        flags |= MFdFlags::MFD_ALLOW_SEALING;
    }
    let file = File::from(memfd_create("fuzz-peer", flags).expect("memfd_create"));
    // Header first, then the size: a size below the header's cuts it, as a real short file would.
    file.write_all_at(&p.header, 0).expect("write header");
    file.set_len(p.size).expect("size the memfd");
    if p.allow_sealing && !p.seals.is_empty() {
        fcntl(file.as_fd(), FcntlArg::F_ADD_SEALS(p.seals)).expect("seal");
    }
    file.into()
}

/// `Segment::attach` refuses with a reason that applies, never panics, and attaches exactly when
/// no reason applies; an attached segment has the geometry's layout and its areas inside it.
pub fn check_attach(p: &Peer) {
    let layout = p.geometry.layout();
    let fd = descriptor(p);
    let result = Segment::attach(fd, &p.geometry);

    let expected = layout.as_ref().ok().and_then(template);
    let h = &p.header;
    let sealed = p.allow_sealing
        && p.seals
            .contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW);
    let major = u16::from_le_bytes([h[8], h[9]]);
    let applies = |e: &AttachError| match e {
        AttachError::BadGeometry(_) => layout.is_err(),
        AttachError::NotAFile => p.pipe,
        AttachError::MissingSeals => p.pipe || !sealed,
        AttachError::WrongSize { expected, actual } => {
            layout.as_ref().is_ok_and(|l| *expected == l.size)
                && (p.pipe || *actual == p.size)
                && expected != actual
        }
        AttachError::WrongMagic => h[..8] != MAGIC,
        AttachError::WrongVersion(v) => *v == major && major != PROTOCOL_MAJOR,
        AttachError::GeometryMismatch => expected.is_none_or(|t| {
            differs(h, &t, 0..MINOR.start) || differs(h, &t, MINOR.end..DEFINED_HEADER)
        }),
        // A write-sealed memfd cannot be mapped writable: refusing it is right.
        AttachError::Os(_) => p.seals.contains(SealFlag::F_SEAL_WRITE) && p.allow_sealing,
    };
    match result {
        Err(e) => assert!(
            applies(&e),
            "attach refused with {e:?}, which does not apply to {p:?}"
        ),
        Ok(seg) => {
            let l = layout.expect("attached with an invalid geometry");
            assert!(!p.pipe && sealed && p.size == l.size, "attached {p:?}");
            let t = expected.expect("a valid geometry has a template");
            assert!(
                !differs(h, &t, 0..MINOR.start) && !differs(h, &t, MINOR.end..DEFINED_HEADER),
                "attached a header that is not the geometry's: {p:?}"
            );
            assert_eq!(*seg.layout(), l);
            areas_inside(&seg);
        }
    }
}

fn differs(a: &[u8], b: &[u8], r: std::ops::Range<usize>) -> bool {
    a[r.clone()] != b[r]
}

/// Every slot's header, input and output area of an attached segment lies inside its mapping
/// and before the next slot.
fn areas_inside(seg: &Segment) {
    let (base, len) = seg.mapping();
    let l = seg.layout();
    let total = l.slot_count();
    for i in 0..total {
        let s = l.slot(i);
        let c = l.classes[s.class].class;
        let limit = if i + 1 < total {
            l.slot(i + 1).offset as usize
        } else {
            len
        };
        let input = seg.input(s, u32::MAX);
        let output = seg.output(s, u32::MAX);
        assert_eq!(input.len(), c.input_capacity as usize);
        assert_eq!(output.len(), c.output_capacity as usize);
        let header_end = s.offset as usize + HEADER_SIZE;
        for (name, at, n) in [
            ("input", input.as_ptr(), input.len()),
            ("output", output.as_ptr(), output.len()),
        ] {
            let start = at as usize - base as usize;
            assert!(
                start >= header_end && start + n <= limit,
                "slot {i}'s {name} area [{start}, +{n}) leaves [{header_end}, {limit})"
            );
        }
        let input_end = input.as_ptr() as usize - base as usize + input.len();
        assert!(output.as_ptr() as usize - base as usize >= input_end);
    }
}

// ---------------------------------------------------------------------------------------------
// Event queues: a consumer's list, and the inputs of posts and registrations

/// A little-endian `u32` of `bytes` at `at`, or 0 past its end.
fn le32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    for (i, b) in word.iter_mut().enumerate() {
        *b = bytes.get(at + i).copied().unwrap_or(0);
    }
    u32::from_le_bytes(word)
}

/// Arbitrary bytes as what a host can make a consumer read, and as the inputs a client can
/// send a host. `data[0]` picks the capacity (1 to 16), `data[1..5]` the host's write count,
/// `data[5..9]` the consumer's read count; the rest, repeated, fills the list's area. The list is
/// read as docs/events.md lays it out; the post and registration parsers take the whole input.
pub fn queue(data: &[u8]) {
    use shmcall_core::queue::{
        EVENTS_ALL, EVENTS_LISTED, MAX_DATA, MAX_POSTS_INPUT, POSTS_RECORD_HEADER, list,
        parse_post, parse_posts, parse_registration, read_entries,
    };
    use shmcall_core::{Area, Status};

    let capacity = 1u32 << (data.first().copied().unwrap_or(0) % 5);
    let written = le32(data, 1);
    let read = le32(data, 5);
    let fill = data.get(9..).unwrap_or(&[]);
    let size = list::ENTRIES_AT + capacity as usize * list::ENTRY_SIZE;
    let mut bytes: Vec<u8> = (0..size)
        .map(|i| {
            if fill.is_empty() {
                0
            } else {
                fill[i % fill.len()]
            }
        })
        .collect();
    let expected = bytes.clone();
    let area = Area::from_slice(&mut bytes);
    let waiting = written.wrapping_sub(read);
    let result = read_entries(&area, capacity, read, written, usize::MAX);
    if waiting > capacity {
        let e = result.expect_err("a count beyond the capacity is refused");
        assert_eq!(e.status(), Status::ProtocolViolation);
    } else {
        // Stated from the layout: entry k of the list is at 128 + (k mod capacity) × 256.
        let entry = |i: u32| {
            list::ENTRIES_AT + (read.wrapping_add(i) & (capacity - 1)) as usize * list::ENTRY_SIZE
        };
        let first_too_long =
            (0..waiting).find(|&i| le32(&expected, entry(i) + 12) as usize > MAX_DATA);
        match (result, first_too_long) {
            (Ok(got), None) => {
                assert_eq!(got.len(), waiting as usize);
                for (i, n) in got.iter().enumerate() {
                    let at = entry(i as u32);
                    let sequence =
                        u64::from(le32(&expected, at)) | (u64::from(le32(&expected, at + 4)) << 32);
                    assert_eq!(n.sequence, sequence);
                    assert_eq!(n.event, le32(&expected, at + 8));
                    let len = le32(&expected, at + 12) as usize;
                    assert_eq!(n.data, &expected[at + 16..at + 16 + len]);
                }
            }
            (Err(e), Some(_)) => assert_eq!(e.status(), Status::ProtocolViolation),
            (result, too_long) => panic!(
                "read {:?} though entry {too_long:?} is too long",
                result.map(|v| v.len())
            ),
        }
    }

    match parse_post(data) {
        Ok((event, rest)) => {
            assert!(data.len() >= 4 && data.len() - 4 <= MAX_DATA);
            assert_eq!(event, le32(data, 0));
            assert_eq!(rest, &data[4..]);
        }
        Err(status) => {
            assert_eq!(status, Status::InvalidArgument);
            assert!(data.len() < 4 || data.len() - 4 > MAX_DATA);
        }
    }
    match parse_posts(data) {
        Ok(records) => {
            // Encoded again, the records are the input, byte for byte.
            assert!(!records.is_empty() && data.len() <= MAX_POSTS_INPUT);
            let mut again = Vec::new();
            for (event, bytes) in &records {
                assert!(bytes.len() <= MAX_DATA);
                again.extend_from_slice(&event.to_le_bytes());
                again.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                again.extend_from_slice(bytes);
            }
            assert_eq!(again, data);
        }
        Err(status) => {
            // Walked as docs/events.md states the format, the input is not records back to back.
            assert_eq!(status, Status::InvalidArgument);
            let mut at = 0;
            let mut whole = !data.is_empty() && data.len() <= MAX_POSTS_INPUT;
            while whole && at < data.len() {
                let len = if data.len() - at >= POSTS_RECORD_HEADER {
                    le32(data, at + 4) as usize
                } else {
                    usize::MAX
                };
                whole = len <= MAX_DATA && data.len() - at - POSTS_RECORD_HEADER >= len;
                at += POSTS_RECORD_HEADER + len.min(MAX_DATA);
            }
            assert!(!whole, "well-formed records refused");
        }
    }
    let whole = data.len() >= 4 && data.len().is_multiple_of(4);
    match parse_registration(data) {
        Ok(None) => assert!(whole && le32(data, 0) == EVENTS_ALL),
        Ok(Some(events)) => {
            assert!(whole && le32(data, 0) == EVENTS_LISTED);
            assert_eq!(events.len(), data.len() / 4 - 1);
            for (i, e) in events.iter().enumerate() {
                assert_eq!(*e, le32(data, 4 + 4 * i));
            }
        }
        Err(status) => {
            assert_eq!(status, Status::InvalidArgument);
            assert!(!whole || ![EVENTS_ALL, EVENTS_LISTED].contains(&le32(data, 0)));
        }
    }
}
