//! A hostile peer's pen: writes that break the protocol in a shared segment the peer mapped
//! lawfully — stray bytes anywhere, ring cells holding offsets out of range, misaligned or
//! pushed twice, ring positions and sleep flags jumped, slot headers rewritten (lengths beyond
//! the areas, unknown flags, stale generations) while the other side may be reading them.
//! Every write is a whole atomic store, as docs/protocol.md assumes of a peer, so the attacker itself
//! stays within Rust's rules.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use shmcall_core::ring::RingHeader;
use shmcall_core::segment::{Layout, Segment};
use shmcall_core::slot::HEADER_SIZE as SLOT_HEADER_SIZE;

use super::load::Rng;

/// Which ring the attacker produces on: a client scribbles on the client → server ring, a
/// server on the server → client one.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    Client,
    Server,
}

/// Makes one hostile write in `segment`, chosen by `rng`; returns what it did, for the log.
pub fn scribble(segment: &Segment, side: Side, rng: &mut Rng) -> &'static str {
    let (base, size) = segment.mapping();
    let layout: &Layout = segment.layout();
    let ring = match side {
        Side::Client => layout.cs_ring,
        Side::Server => layout.sc_ring,
    } as usize;
    let capacity = layout.geometry.ring_capacity as usize;
    let slots: Vec<u32> = layout
        .classes
        .iter()
        .flat_map(|c| (0..c.class.count).map(move |i| c.base + i * c.stride))
        .collect();
    let slot = slots[rng.below(slots.len() as u64) as usize];
    let word = |offset: usize, value: u32| {
        debug_assert!(offset.is_multiple_of(4) && offset + 4 <= size);
        // SAFETY: `offset` is 4-aligned and inside the mapping, which `segment` keeps alive;
        // both processes only ever access this memory through atomics.
        unsafe { AtomicU32::from_ptr(base.add(offset).cast()) }.store(value, Ordering::Release);
    };
    let cell = ring + RingHeader::SIZE + 4 * rng.below(capacity as u64) as usize;
    match rng.below(8) {
        0 => {
            let at = rng.below(size as u64) as usize;
            // SAFETY: `at` is inside the mapping; a byte store has no alignment to keep.
            unsafe { AtomicU8::from_ptr(base.add(at)) }.store(rng.next() as u8, Ordering::Relaxed);
            "a stray byte"
        }
        1 => {
            word(cell, size as u32 + rng.below(1 << 20) as u32);
            "an offset beyond the segment"
        }
        2 => {
            word(cell, slot + 1 + rng.below(63) as u32);
            "a misaligned offset"
        }
        3 => {
            word(cell, slot);
            "a slot pushed again"
        }
        4 => {
            word(cell, rng.next() as u32);
            "a random ring entry"
        }
        5 => {
            // The read position and the two sleep flags, all in the ring header's first lines.
            let field = [0, 4, 64][rng.below(3) as usize];
            word(ring + field, rng.next() as u32);
            "a ring position or sleep flag jumped"
        }
        _ => {
            // Code, flags, input length, output capacity, generation, status, output length,
            // reply generation: each a u32 of the slot header.
            let field = 4 * rng.below((SLOT_HEADER_SIZE / 4) as u64) as usize;
            let value = match rng.below(3) {
                0 => u32::MAX - rng.below(16) as u32,
                1 => rng.below(8 << 20) as u32,
                _ => rng.next() as u32,
            };
            word(slot as usize + field, value);
            "a slot header rewritten"
        }
    }
}
