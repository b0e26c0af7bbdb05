//! Warm segments (docs/protocol.md, "Ending"): a client that connects to the same server
//! process again uses its last segment once the server released it — never before, and never
//! for another server process.

mod common;

use std::sync::Mutex;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use common::load::fnv1a64;
use common::{Peer, TempDir, WAIT};
use shmcall_core::segment::mappings_reused;
use shmcall_core::stats::word;
use shmcall_core::{
    Call, Client, Copying, Server, release_warm_segments, warm_segments_kept, warm_segments_reused,
};

const ECHO: u32 = 1;
const CHECKSUM: u32 = 2;
/// Echoes after 200 ms.
const SLOW_ECHO: u32 = 6;

/// The warm segments are the process's: one test at a time uses them, starting with none.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    let one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    release_warm_segments();
    assert_eq!(warm_segments_kept(), 0);
    one
}

fn connect(dir: &TempDir, ic_id: &str) -> Client {
    Client::connect(ic_id, &dir.connect_options()).expect("connect")
}

/// Checks that `client` is served right: echoes and checksums of a few sizes.
fn served(client: &Client, round: usize) {
    for len in [0, 1, 64, 3000, 200 << 10] {
        let input: Vec<u8> = (0..len).map(|i| (i * 31 + round) as u8).collect();
        let out = client
            .execute(
                &Call {
                    code: ECHO,
                    input: &input,
                    output_len: len,
                    timeout: Some(WAIT),
                    ..Call::default()
                },
                &mut Copying,
            )
            .expect("echo");
        assert_eq!(out.output, input, "echo of {len} bytes in round {round}");
        let sum = client
            .execute(
                &Call {
                    code: CHECKSUM,
                    input: &input,
                    output_len: 8,
                    timeout: Some(WAIT),
                    ..Call::default()
                },
                &mut Copying,
            )
            .expect("checksum");
        assert_eq!(sum.status, 7);
        assert_eq!(sum.output, fnv1a64(&input).to_le_bytes());
    }
    // Every one of them fits a slot: a ring that refused them (a stale read position) would
    // send them over the control socket instead.
    let mut words = [0.0; word::LEN];
    client.stats().snapshot(1, &mut words);
    assert_eq!(words[word::BACKUP], 0.0, "commands took the backup path");
}

/// Connects, is served and closes until a connection used a warm segment (bounded); returns
/// how many cycles it took.
fn until_reused(dir: &TempDir, ic_id: &str) -> usize {
    let before = warm_segments_reused();
    let deadline = Instant::now() + WAIT;
    let mut cycles = 0;
    while warm_segments_reused() == before {
        assert!(
            Instant::now() < deadline,
            "no connection to '{ic_id}' used a warm segment in {cycles} cycles"
        );
        let client = connect(dir, ic_id);
        served(&client, cycles);
        client.close();
        cycles += 1;
    }
    cycles
}

#[test]
fn a_client_that_connects_again_uses_its_released_segment_and_is_served_right() {
    let _one = alone();
    let dir = TempDir::new("warm");
    let _server = Peer::server(&dir, "warm", &[]);
    until_reused(&dir, "warm");
    // Each connection now finds the last one's segment (or a fresh one): every command of
    // every round is answered right, whatever the segment held before.
    let before = warm_segments_reused();
    for round in 0..30 {
        let client = connect(&dir, "warm");
        served(&client, round);
        client.close();
    }
    assert!(
        warm_segments_reused() > before,
        "30 connections used no warm segment"
    );
}

#[test]
fn a_segment_the_server_still_holds_is_not_used_again_until_it_released_it() {
    let _one = alone();
    let dir = TempDir::new("held");
    let _server = Peer::server(&dir, "held", &[]);
    let before = warm_segments_reused();
    // The server runs this command for 200 ms after its client closed: it holds the segment
    // until it has answered into it.
    let first = connect(&dir, "held");
    let (tx, rx) = channel();
    first
        .execute_async(
            &Call {
                code: SLOW_ECHO,
                input: b"late",
                output_len: 4,
                ..Call::default()
            },
            Copying,
            move |r| tx.send(r.map(|o| o.output)).unwrap(),
        )
        .unwrap();
    drop(first);
    assert!(
        rx.recv_timeout(WAIT).expect("the completion runs").is_err(),
        "a closed client's command fails"
    );
    // Its segment is kept (its last holder let go of it), not yet released.
    let deadline = Instant::now() + WAIT;
    while warm_segments_kept() == 0 {
        assert!(
            Instant::now() < deadline,
            "the closed client's segment was not kept"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let second = connect(&dir, "held");
    assert_eq!(
        warm_segments_reused(),
        before,
        "the segment was used again while its server held it"
    );
    // Served right through the moment the late answer lands in the first segment.
    let until = Instant::now() + Duration::from_millis(400);
    let mut round = 0;
    while Instant::now() < until {
        served(&second, round);
        round += 1;
    }
    second.close();
    until_reused(&dir, "held");
}

#[test]
fn a_server_in_the_same_process_finds_a_returning_segment_still_mapped() {
    let _one = alone();
    let dir = TempDir::new("inproc");
    let handler = shmcall_core::handlers(
        |_| Ok(()),
        |c, _, _: &()| common::load::answer(c),
        |_, _| {},
    );
    let mut server = Server::serve("inproc", handler, dir.serve_options()).unwrap();
    let mapped = mappings_reused();
    until_reused(&dir, "inproc");
    assert!(
        mappings_reused() > mapped,
        "the server mapped a returning segment again"
    );
    server.close();
}

#[test]
fn a_warm_segment_never_goes_to_another_server_process() {
    let _one = alone();
    let dir = TempDir::new("others");
    let mut first = Peer::server(&dir, "first", &[]);
    let _other = Peer::server(&dir, "other", &[]);
    until_reused(&dir, "first");
    // A segment of "first" is warm now: neither another server nor a new process on the same
    // ic id gets it.
    let before = warm_segments_reused();
    let client = connect(&dir, "other");
    served(&client, 0);
    client.close();
    first.kill();
    let _again = Peer::server(&dir, "first", &[]);
    let client = connect(&dir, "first");
    served(&client, 1);
    client.close();
    assert_eq!(
        warm_segments_reused(),
        before,
        "a segment went to a process that never had it"
    );
}
