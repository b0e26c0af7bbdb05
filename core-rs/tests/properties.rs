//! Property tests over what a peer can send: control-channel frames, geometries and segments.
//! They run the same checks as the fuzz targets (`common_fuzz`) on generated inputs, so CI
//! exercises the properties without a fuzzer. Case counts are kept small enough for the whole
//! file to run in seconds.

mod common_fuzz;

use proptest::collection::vec;
use proptest::prelude::*;
use shmcall_core::segment::{CLASSES, MAX_AREA, MAX_RING, PROTOCOL_MAJOR};
use shmcall_core::wire::{self, Exec, MAX_REASON, Message, Reply, WireError};
use shmcall_core::{Geometry, SlotClass};

use common_fuzz::{Peer, check_attach, check_geometry, frames, template};

fn string_of(chars: Vec<char>) -> String {
    chars.into_iter().collect()
}

fn area() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        0..5000u32,
        MAX_AREA - 100..=MAX_AREA,
        MAX_AREA + 1..MAX_AREA + 100,
        any::<u32>(),
    ]
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), 0..300u32, 0..70_000u32, any::<u32>()]
}

fn class() -> impl Strategy<Value = SlotClass> {
    (count(), area(), area()).prop_map(|(count, i, o)| SlotClass {
        count,
        input_capacity: i,
        output_capacity: o,
    })
}

/// Geometries of every shape, most of them invalid in one way or another.
fn any_geometry() -> impl Strategy<Value = Geometry> {
    let ring = prop_oneof![(0..20u32).prop_map(|s| 1 << s), any::<u32>()];
    (ring, [class(), class()]).prop_map(|(ring_capacity, classes)| Geometry {
        classes,
        ring_capacity,
    })
}

/// Geometries that pass every check but perhaps the 4 GiB one.
fn valid_geometry(max_area: u32) -> impl Strategy<Value = Geometry> {
    (1..=MAX_RING.trailing_zeros()).prop_flat_map(move |shift| {
        let ring_capacity = 1u32 << shift;
        (1..=ring_capacity)
            .prop_flat_map(move |total| (0..=total, Just(total)))
            .prop_flat_map(move |(first, total)| {
                // Mostly small areas, so that most layouts fit in 4 GiB and are checked in full.
                let area = move || prop_oneof![3 => 0..=4096u32, 1 => 0..=max_area];
                let areas = [(area(), area()), (area(), area())];
                (Just([first, total - first]), areas)
            })
            .prop_map(move |(counts, areas)| Geometry {
                classes: [0, 1].map(|c| SlotClass {
                    count: counts[c],
                    input_capacity: areas[c].0,
                    output_capacity: areas[c].1,
                }),
                ring_capacity,
            })
    })
}

/// Messages of every kind with arbitrary fields inside what the encoder accepts. Reasons stay
/// well under `MAX_REASON` bytes, so that one changed byte, decoded lossily, cannot push a reason
/// past it (the open bug of `fuzz_corpus.rs`'s ignored test).
fn any_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            vec(any::<char>(), 0..=25),
            any_geometry()
        )
            .prop_map(|(major, minor, id, geometry)| Message::Hello {
                major,
                minor,
                ic_id: string_of(id),
                geometry,
            }),
        (any::<u16>(), any::<u16>(), any::<u64>()).prop_map(|(major, minor, connection)| {
            Message::Welcome {
                major,
                minor,
                connection,
            }
        }),
        (any::<i32>(), vec(any::<char>(), 0..=200)).prop_map(|(status, reason)| {
            Message::Refuse {
                status,
                reason: string_of(reason),
            }
        }),
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            prop_oneof![0..=MAX_AREA, Just(MAX_AREA)],
            vec(any::<u8>(), 0..600)
        )
            .prop_map(|(token, code, flags, output_cap, input)| {
                Message::Exec(Exec {
                    token,
                    code,
                    flags,
                    output_cap,
                    input,
                })
            }),
        (any::<u64>(), any::<i32>(), vec(any::<u8>(), 0..600)).prop_map(
            |(token, status, output)| Message::Reply(Reply {
                token,
                status,
                output,
            })
        ),
        Just(Message::Wake),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn every_message_survives_encode_then_parse(m in any_message()) {
        let bytes = wire::encode(&m);
        let mut reader = bytes.as_slice();
        prop_assert_eq!(wire::read_message(&mut reader).unwrap(), m);
        prop_assert!(reader.is_empty());
        frames(&bytes);
    }

    #[test]
    fn messages_read_back_in_order_then_the_channel_is_closed(ms in vec(any_message(), 1..5)) {
        let bytes: Vec<u8> = ms.iter().flat_map(wire::encode).collect();
        let mut reader = bytes.as_slice();
        for m in &ms {
            prop_assert_eq!(&wire::read_message(&mut reader).unwrap(), m);
        }
        prop_assert!(matches!(wire::read_message(&mut reader), Err(WireError::Closed)));
        frames(&bytes);
    }

    #[test]
    fn every_prefix_of_a_frame_is_truncated_not_a_message(m in any_message()) {
        let bytes = wire::encode(&m);
        for cut in 1..bytes.len() {
            let answer = wire::read_message(&mut &bytes[..cut]);
            prop_assert!(matches!(answer, Err(WireError::Truncated)), "cut {}: {:?}", cut, answer);
        }
        prop_assert!(matches!(wire::read_message(&mut &bytes[..0]), Err(WireError::Closed)));
    }

    #[test]
    fn a_frame_with_one_byte_changed_parses_to_a_valid_message_or_is_refused(
        m in any_message(),
        at in any::<prop::sample::Index>(),
        flip in 1..=255u8,
    ) {
        let mut bytes = wire::encode(&m);
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        frames(&bytes);
    }

    #[test]
    fn a_refusal_reason_past_the_maximum_is_cut_at_a_character_boundary(
        status in any::<i32>(),
        reason in vec(any::<char>(), 200..600),
    ) {
        let reason = string_of(reason);
        let frame = wire::encode(&Message::Refuse { status, reason: reason.clone() });
        let Message::Refuse { reason: got, .. } = wire::read_message(&mut frame.as_slice()).unwrap()
        else {
            panic!("not a refusal");
        };
        prop_assert!(got.len() <= MAX_REASON && reason.starts_with(&got));
        // Cut no shorter than needed: the next character would not have fitted.
        if got.len() < reason.len() {
            let next = reason[got.len()..].chars().next().unwrap();
            prop_assert!(got.len() + next.len_utf8() > MAX_REASON);
        }
    }

    #[test]
    fn any_geometry_is_laid_out_exactly_when_valid(
        g in any_geometry(),
        probes in vec(any::<u32>(), 0..8),
    ) {
        check_geometry(&g, &probes);
    }

    #[test]
    fn a_valid_geometry_lays_its_slots_apart_inside_the_segment(
        g in valid_geometry(MAX_AREA),
        probes in vec(any::<u32>(), 0..8),
    ) {
        check_geometry(&g, &probes);
    }
}

/// A segment as an honest client makes it, for `g`.
fn honest(g: Geometry) -> Peer {
    let layout = g.layout().unwrap();
    Peer {
        geometry: g,
        header: template(&layout).unwrap(),
        size: layout.size,
        allow_sealing: true,
        seals: nix::fcntl::SealFlag::F_SEAL_SHRINK
            | nix::fcntl::SealFlag::F_SEAL_GROW
            | nix::fcntl::SealFlag::F_SEAL_SEAL,
        pipe: false,
    }
}

proptest! {
    // Each case makes memfds and mappings: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn an_honest_segment_attaches(g in valid_geometry(1 << 16)) {
        prop_assume!(g.layout().is_ok());
        check_attach(&honest(g));
    }

    #[test]
    fn a_segment_header_with_one_defined_byte_changed_is_refused_unless_it_is_the_minor(
        g in valid_geometry(1 << 16),
        at in 0..72usize,
        flip in 1..=255u8,
    ) {
        prop_assume!(g.layout().is_ok());
        let mut peer = honest(g);
        peer.header[at] ^= flip;
        check_attach(&peer);
    }

    #[test]
    fn a_segment_of_another_size_or_without_seals_is_refused(
        g in valid_geometry(1 << 16),
        delta in -8192i64..8192,
        seal_bits in 0..8u8,
    ) {
        prop_assume!(g.layout().is_ok());
        let mut peer = honest(g);
        peer.size = peer.size.saturating_add_signed(delta);
        peer.seals = [
            nix::fcntl::SealFlag::F_SEAL_SHRINK,
            nix::fcntl::SealFlag::F_SEAL_GROW,
            nix::fcntl::SealFlag::F_SEAL_SEAL,
        ]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| seal_bits & 1 << i != 0)
        .fold(nix::fcntl::SealFlag::empty(), |all, (_, s)| all | s);
        check_attach(&peer);
    }
}

#[test]
fn the_geometry_of_a_hello_round_trips_for_every_class() {
    let g = Geometry {
        classes: [SlotClass {
            count: 1,
            input_capacity: MAX_AREA,
            output_capacity: 0,
        }; CLASSES],
        ring_capacity: MAX_RING,
    };
    let m = Message::Hello {
        major: PROTOCOL_MAJOR,
        minor: 0,
        ic_id: "x".repeat(wire::MAX_IC_ID),
        geometry: g,
    };
    frames(&wire::encode(&m));
}
