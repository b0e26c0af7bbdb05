//! Warm segments (docs/protocol.md, "Ending"): a client that connects to the same server
//! process again uses its last segment once the server released it — never before, and never
//! for another server process. Warm connections ("Using a connection again"): the control
//! socket of a connection closed with a BYE carries the next connect, which the server treats
//! as a new client's.

mod common;

use std::sync::Mutex;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use common::load::fnv1a64;
use common::{Peer, TempDir, WAIT};
use shmcall_core::segment::mappings_reused;
use shmcall_core::stats::word;
use shmcall_core::{
    Call, Client, Command, ConnInfo, Copying, Error, Handler, Server, Status,
    release_warm_segments, warm_connections_reused, warm_segments_kept, warm_segments_reused,
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
    until_counted(dir, ic_id, "a warm segment", warm_segments_reused, 1)
}

/// Connects, is served and closes until `more` connects used a parked socket (bounded); returns
/// how many cycles it took.
fn until_parked_reused(dir: &TempDir, ic_id: &str, more: u64) -> usize {
    until_counted(dir, ic_id, "a parked socket", warm_connections_reused, more)
}

/// Connects, is served and closes until `count` grew by `more` (bounded by [`WAIT`]).
fn until_counted(dir: &TempDir, ic_id: &str, what: &str, count: fn() -> u64, more: u64) -> usize {
    let before = count();
    let deadline = Instant::now() + WAIT;
    let mut cycles = 0;
    while count() < before + more {
        assert!(
            Instant::now() < deadline,
            "{more} connections to '{ic_id}' did not use {what} in {cycles} cycles"
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

/// A server's handler that counts what it is asked: the ids it opened and closed, and every
/// refusal it hears of.
#[derive(Clone, Default)]
struct Counting(std::sync::Arc<Counts>);

#[derive(Default)]
struct Counts {
    /// While set, `open` refuses every client.
    refusing: std::sync::atomic::AtomicBool,
    opened: Mutex<Vec<u64>>,
    closed: Mutex<Vec<u64>>,
    refused: Mutex<Vec<String>>,
}

impl std::ops::Deref for Counting {
    type Target = Counts;
    fn deref(&self) -> &Counts {
        &self.0
    }
}

impl Handler for Counting {
    type Context = ();

    fn open(&self, conn: &ConnInfo) -> Result<(), Error> {
        self.opened.lock().unwrap().push(conn.id);
        if self.refusing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::new(Status::PermissionDenied, "not now"));
        }
        Ok(())
    }

    fn exec(&self, command: Command, _: &ConnInfo, _: &()) {
        common::load::answer(command);
    }

    fn close(&self, conn: &ConnInfo, _: &()) {
        self.closed.lock().unwrap().push(conn.id);
    }

    fn refused(&self, _: Option<&ConnInfo>, why: &Error) {
        self.refused.lock().unwrap().push(why.to_string());
    }
}

/// Waits (bounded) until `done` holds.
fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_closed_connection_s_socket_carries_the_next_connect_as_a_new_client() {
    let _one = alone();
    let dir = TempDir::new("again");
    let counting = Counting::default();
    let mut server = Server::serve("again", counting.clone(), dir.serve_options()).unwrap();
    let rounds = until_parked_reused(&dir, "again", 20);
    // Every connect was a client of its own to the server: one `open` each, one `close` each
    // once it went, each with an id of its own.
    until("a close for every open", || {
        counting.closed.lock().unwrap().len() == rounds
    });
    let mut opened = counting.opened.lock().unwrap().clone();
    assert_eq!(opened.len(), rounds);
    opened.sort_unstable();
    opened.dedup();
    assert_eq!(opened.len(), rounds, "an id was given twice");
    // The parked sockets go as the client lets them go, without a word to the handler.
    release_warm_segments();
    server.close();
    assert_eq!(*counting.refused.lock().unwrap(), Vec::<String>::new());
    assert_eq!(counting.closed.lock().unwrap().len(), rounds);
}

#[test]
fn a_parked_socket_whose_server_was_killed_is_not_used_and_the_connect_fails_as_usual() {
    let _one = alone();
    let dir = TempDir::new("killed");
    let mut server = Peer::server(&dir, "killed", &[]);
    until_parked_reused(&dir, "killed", 1);
    server.kill();
    let reused = warm_connections_reused();
    let started = Instant::now();
    let err = Client::connect("killed", &dir.connect_options()).unwrap_err();
    assert_eq!(err.status(), Status::NotFound, "{err}");
    assert!(
        started.elapsed() < WAIT,
        "the connect took {:?}",
        started.elapsed()
    );
    assert_eq!(
        warm_connections_reused(),
        reused,
        "a dead server's socket was used"
    );
}

#[test]
fn what_a_closed_connection_left_unread_on_its_socket_is_skipped_before_the_welcome() {
    use shmcall_core::wire::{self, Message};
    use std::io::Write;
    let _one = alone();
    let dir = TempDir::new("leftover");
    let listener =
        std::os::unix::net::UnixListener::bind(dir.path().join("leftover.sock")).expect("listen");
    // A server of our own making: it welcomes a client, and on its BYE writes what a real one
    // may have written before it read the BYE — a WAKE, a backup REPLY — then welcomes the next
    // hello on that same socket, and says what came after the first BYE.
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut frames = Vec::new();
        for connection in 1..=2 {
            welcome(&stream, connection);
            let bye = wire::read_message(&mut &stream).unwrap();
            assert_eq!(bye, Message::Bye);
            frames.push(bye);
            if connection == 1 {
                (&stream).write_all(&wire::WAKE).unwrap();
                (&stream)
                    .write_all(&wire::encode_reply(99, 0, b"late"))
                    .unwrap();
            }
        }
        frames
    });
    let before = warm_connections_reused();
    connect(&dir, "leftover").close();
    until("the segment kept warm", || warm_segments_kept() == 1);
    release_by_hand("leftover");
    let client = connect(&dir, "leftover");
    assert_eq!(
        warm_connections_reused(),
        before + 1,
        "the parked socket was not used"
    );
    client.close();
    let frames = server.join().unwrap();
    assert_eq!(frames, [Message::Bye, Message::Bye]);
}

#[test]
fn a_refusal_on_a_parked_socket_is_the_connect_s_answer_told_once() {
    let _one = alone();
    let dir = TempDir::new("refusing");
    let counting = Counting::default();
    let mut server = Server::serve("refusing", counting.clone(), dir.serve_options()).unwrap();
    until_parked_reused(&dir, "refusing", 1);
    for _ in 0..4 {
        connect(&dir, "refusing").close();
    }
    counting
        .refusing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // Handed to the reactor at once (no wait on this thread). The server refuses the hello on a
    // parked socket as it would on a new one: that is the answer, told once, after one `open`.
    // Until a parked socket whose segment the server released was there to use.
    let mut tried = 0;
    loop {
        let reused = warm_connections_reused();
        let opened = counting.opened.lock().unwrap().len();
        let (tx, rx) = channel();
        let now = Client::connect_with(
            "refusing",
            &dir.connect_options(),
            Duration::ZERO,
            move |r| tx.send(r.map(|_| ())).unwrap(),
        );
        let err = match now {
            Ok(None) => rx
                .recv_timeout(WAIT)
                .expect("the connect ended")
                .unwrap_err(),
            Ok(Some(_)) => panic!("a refusing server welcomed a client"),
            Err(e) => e,
        };
        assert_eq!(err.status(), Status::PermissionDenied, "{err}");
        assert!(rx.try_recv().is_err(), "the connect's end was told twice");
        assert_eq!(counting.opened.lock().unwrap().len(), opened + 1);
        if warm_connections_reused() > reused {
            break;
        }
        tried += 1;
        assert!(tried < 4, "no refused connect used a parked socket");
    }
    release_warm_segments();
    server.close();
}

/// Marks the warm segments of `ic_id` released, as a server does when it lets go of one: for the
/// scripted servers, which never map a segment. Through the kept memfds, found in /proc.
fn release_by_hand(ic_id: &str) {
    let mut found = false;
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let target = std::fs::read_link(e.path()).unwrap_or_default();
        if !target
            .to_string_lossy()
            .contains(&format!("memfd:shmcall:{ic_id}"))
        {
            continue;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(e.path())
            .unwrap();
        let map = memmap2::MmapRaw::map_raw(&file).unwrap();
        // SAFETY: the word at RELEASED_AT is inside the header, 4-aligned, and the mapping
        // lives until the end of this block.
        let word = unsafe {
            &*map
                .as_mut_ptr()
                .add(shmcall_core::segment::RELEASED_AT)
                .cast::<std::sync::atomic::AtomicU32>()
        };
        word.store(1, std::sync::atomic::Ordering::Release);
        found = true;
    }
    assert!(found, "no memfd of a warm segment of '{ic_id}' was found");
}

#[test]
fn a_parked_socket_lost_before_its_answer_sends_the_connect_the_usual_way() {
    use shmcall_core::wire::{self, Message};
    let _one = alone();
    let dir = TempDir::new("lost");
    let listener =
        std::os::unix::net::UnixListener::bind(dir.path().join("lost.sock")).expect("listen");
    // A server of our own making: it welcomes a client and reads its BYE; the hello that comes
    // next on that socket it drops unanswered, closing the socket; then it welcomes a client on
    // a new socket.
    let server = std::thread::spawn(move || {
        let (first, _) = listener.accept().unwrap();
        welcome(&first, 1);
        assert_eq!(wire::read_message(&mut &first).unwrap(), Message::Bye);
        let again = wire::read_message(&mut &first).unwrap();
        assert!(matches!(again, Message::Hello { .. }), "{again:?}");
        drop(first);
        let (second, _) = listener.accept().unwrap();
        welcome(&second, 2);
        second
    });
    connect(&dir, "lost").close();
    until("the segment kept warm", || warm_segments_kept() == 1);
    release_by_hand("lost");
    let before = warm_connections_reused();
    let (tx, rx) = channel();
    // Handed to the reactor at once, so that the reactor finds the socket lost.
    let now = Client::connect_with("lost", &dir.connect_options(), Duration::ZERO, move |r| {
        tx.send(r.map(|c| c.server_pid())).unwrap()
    })
    .unwrap();
    let pid = match now {
        Some(client) => client.server_pid(),
        None => rx
            .recv_timeout(WAIT)
            .expect("the connect ended")
            .expect("connected"),
    };
    assert_eq!(pid, std::process::id() as i32);
    assert_eq!(
        warm_connections_reused(),
        before + 1,
        "the parked socket was not tried"
    );
    let _second = server.join().unwrap();
}

/// A scripted server's side of a handshake on `stream`: reads a hello of this protocol (a plain
/// read: the segment's descriptor that came with it is closed unseen) and welcomes it.
fn welcome(stream: &std::os::unix::net::UnixStream, connection: u64) {
    use shmcall_core::wire::{self, Message};
    use std::io::Write;
    let hello = wire::read_message(&mut &*stream).unwrap();
    let Message::Hello { major, minor, .. } = hello else {
        panic!("expected a hello, got {hello:?}")
    };
    assert_eq!(minor, shmcall_core::PROTOCOL_MINOR);
    let welcome = Message::Welcome {
        major,
        minor,
        connection,
    };
    (&*stream).write_all(&wire::encode(&welcome)).unwrap();
}
