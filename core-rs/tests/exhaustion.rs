//! Exhaustion (docs/protocol.md, the backup path): eight clients at once, each with far more commands in
//! flight than its segment has slots, some larger than any slot. Every command must complete
//! correctly, exactly once, counted on both sides. And an answer on the ring is taken while a
//! backup answer is still on its way, which carries the wake-up the ring's answer needed.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::load::{Rng, fnv1a64};
use common::{TempDir, WAIT, seed};
use shmcall_core::{Call, Client, Copying, Geometry, Mode, Server, SlotClass, handlers};

const CLIENTS: u64 = 8;
const COMMANDS: u64 = 400;
/// Commands one client keeps in flight: four times its slots.
const IN_FLIGHT: usize = 12;

/// Three slots and a ring of four: most commands find no free slot.
fn scarce() -> Geometry {
    Geometry {
        classes: [
            SlotClass {
                count: 2,
                input_capacity: 1024,
                output_capacity: 1024,
            },
            SlotClass {
                count: 1,
                input_capacity: 16 << 10,
                output_capacity: 16 << 10,
            },
        ],
        ring_capacity: 4,
    }
}

/// The server answers each command with its id (the input's first 8 bytes) and the checksum
/// of the whole input, and counts every id it saw and the path each command came by.
#[test]
fn eight_clients_past_their_slots_lose_and_duplicate_nothing() {
    let mut rng = Rng::new(seed("exhaustion"));
    let dir = TempDir::new("exhaust8");
    let seen = Arc::new(Mutex::new(HashMap::<u64, u32>::new()));
    let by_backup = Arc::new(AtomicU64::new(0));
    let by_slot = Arc::new(AtomicU64::new(0));
    let mut server = {
        let (seen, by_backup, by_slot) = (seen.clone(), by_backup.clone(), by_slot.clone());
        Server::serve(
            "exhaust8",
            handlers(
                |_| Ok(()),
                move |mut command: shmcall_core::Command, _, _: &()| {
                    let input = command.input().to_vec();
                    let id = u64::from_le_bytes(input[..8].try_into().unwrap());
                    *seen.lock().unwrap().entry(id).or_default() += 1;
                    let counter = if command.is_backup() {
                        &by_backup
                    } else {
                        &by_slot
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let mut answer = id.to_le_bytes().to_vec();
                    answer.extend_from_slice(&fnv1a64(&input).to_le_bytes());
                    command.output().write(&answer);
                    command.finish(0, 16);
                },
                |_, _| {},
            ),
            dir.serve_options(),
        )
        .unwrap()
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let seed = rng.next();
            let options = dir.connect_options_with(scarce());
            std::thread::spawn(move || {
                let client = Client::connect("exhaust8", &options).unwrap();
                let mut rng = Rng::new(seed);
                let (tx, rx) = channel();
                let mut expected = HashMap::new();
                let mut answered = HashMap::<u64, u32>::new();
                let receive = |answered: &mut HashMap<u64, u32>| {
                    let (id, got): (u64, Vec<u8>) = rx.recv_timeout(WAIT).expect("an answer");
                    *answered.entry(id).or_default() += 1;
                    got
                };
                let mut wrong = Vec::new();
                for seq in 0..COMMANDS {
                    let id = c << 32 | seq;
                    // Sizes from 8 B to 64 KiB: a small slot, the large one, or none fits.
                    let most = [1000, 16_000, 64 << 10][rng.below(3) as usize];
                    let size = 8 + rng.below(most);
                    let mut input: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
                    input[..8].copy_from_slice(&id.to_le_bytes());
                    let mut want = id.to_le_bytes().to_vec();
                    want.extend_from_slice(&fnv1a64(&input).to_le_bytes());
                    expected.insert(id, want);
                    if seq as usize >= IN_FLIGHT {
                        let got = receive(&mut answered);
                        let id = u64::from_le_bytes(got[..8].try_into().unwrap());
                        if expected.get(&id) != Some(&got) {
                            wrong.push(id);
                        }
                    }
                    let tx = tx.clone();
                    client
                        .execute_async(
                            &Call {
                                code: 1,
                                input: &input,
                                output_len: 16,
                                mode: [Mode::Inline, Mode::Worker][seq as usize % 2],
                                ..Call::default()
                            },
                            Copying,
                            move |r| {
                                let out = r.expect("a command failed");
                                let _ = tx.send((id, out.output));
                            },
                        )
                        .unwrap();
                }
                for _ in 0..IN_FLIGHT {
                    let got = receive(&mut answered);
                    let id = u64::from_le_bytes(got[..8].try_into().unwrap());
                    if expected.get(&id) != Some(&got) {
                        wrong.push(id);
                    }
                }
                client.close();
                (answered, wrong)
            })
        })
        .collect();
    for (c, t) in clients.into_iter().enumerate() {
        let (answered, wrong) = t.join().expect("a client thread");
        assert!(wrong.is_empty(), "client {c}: wrong answers for {wrong:?}");
        assert_eq!(answered.len() as u64, COMMANDS, "client {c}: answers lost");
        assert!(
            answered.values().all(|n| *n == 1),
            "client {c}: an answer came twice"
        );
    }
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.len() as u64,
        CLIENTS * COMMANDS,
        "the server lost commands"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "the server ran a command twice"
    );
    let (backup, slot) = (
        by_backup.load(Ordering::Relaxed),
        by_slot.load(Ordering::Relaxed),
    );
    println!("{slot} commands through slots, {backup} over the backup path");
    assert!(
        backup > 0 && slot > 0,
        "both paths were taken: {slot} and {backup}"
    );
    server.close();
}

/// Code of the command answered over the backup path: 3 MiB of output, more than any slot.
const BIG: u32 = 1;
/// Code of the asynchronous command in a slot: answered once BIG's answer is queued.
const SMALL: u32 = 2;
const BIG_OUTPUT: usize = 3 << 20;

/// A server sends no WAKE frame while a frame of its own waits in its outbox: with a backup
/// answer still on its way, it sends none for an answer it pushes on the ring, since the client
/// reads a frame anyway. So the client's reading of any answer must also look at its ring.
/// Here the slot's answer is pushed while the 3 MiB answer of a synchronous backup command,
/// queued just before, is still on its way — to a client whose owner armed the ring (its one
/// command out had not come back for a while). Before the fix, the slot's completion never
/// ran: nothing woke the owner, and a synchronous backup answer wakes only its caller.
#[test]
fn an_answer_pushed_while_a_backup_answer_is_queued_is_not_left_on_the_ring() {
    const ROUNDS: u64 = 20;
    let dir = TempDir::new("queued-wake");
    // How many BIG answers the server has queued, for SMALL's handler to wait on.
    let queued = Arc::new((Mutex::new(0u64), Condvar::new()));
    let mut server = {
        let queued = queued.clone();
        Server::serve(
            "queued-wake",
            handlers(
                |_| Ok(()),
                move |mut command: shmcall_core::Command, _, _: &()| {
                    let (count, changed) = &*queued;
                    if command.code() == BIG {
                        command.output().write(&vec![7; BIG_OUTPUT]);
                        command.finish(0, BIG_OUTPUT);
                        *count.lock().unwrap() += 1;
                        changed.notify_all();
                    } else {
                        let round =
                            u64::from_le_bytes(command.input().to_vec()[..8].try_into().unwrap());
                        let (count, timeout) = changed
                            .wait_timeout_while(count.lock().unwrap(), WAIT, |n| *n <= round)
                            .unwrap();
                        assert!(
                            !timeout.timed_out(),
                            "BIG {round} never answered ({})",
                            *count
                        );
                        drop(count);
                        command.finish(0, 0);
                    }
                },
                |_, _| {},
            ),
            dir.serve_options(),
        )
        .unwrap()
    };
    let client = Client::connect("queued-wake", &dir.connect_options()).unwrap();
    let (tx, rx) = channel();
    for round in 0..ROUNDS {
        let tx = tx.clone();
        client
            .execute_async(
                &Call {
                    code: SMALL,
                    input: &round.to_le_bytes(),
                    mode: Mode::Worker,
                    ..Call::default()
                },
                Copying,
                move |r| {
                    let _ = tx.send(r.map(|out| out.status));
                },
            )
            .unwrap();
        let big = client
            .execute(
                &Call {
                    code: BIG,
                    output_len: BIG_OUTPUT,
                    ..Call::default()
                },
                &mut Copying,
            )
            .expect("the backup command");
        assert_eq!(big.output.len(), BIG_OUTPUT);
        let small = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| {
            panic!(
                "round {round}: the slot's answer, pushed while BIG's answer was queued, \
                 was never taken"
            )
        });
        assert_eq!(small.expect("the slot command"), 0);
    }
    client.close();
    server.close();
}
