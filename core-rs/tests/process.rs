//! Client and server in separate processes: the API's behaviours, the protocol
//! (docs/protocol.md), peer death and who may connect.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::load::fnv1a64;
use common::{Peer, TempDir, WAIT, within};
use shmcall_core::{
    Area, Call, Callbacks, Client, ConnectOptions, Copying, Geometry, Mode, ServeOptions, Server,
    SlotClass, Status,
};

const ECHO: u32 = 1;
const CHECKSUM: u32 = 2;
const HOLD: u32 = 3;
const PANIC: u32 = 4;
const OVERFLOW: u32 = 5;
const BAD_STATUS: u32 = 7;

/// A call with no more than [`WAIT`] for its answer: a test fails rather than hangs when an
/// answer or a wake-up is lost.
fn bounded() -> Call<'static> {
    Call {
        timeout: Some(WAIT),
        ..Call::default()
    }
}

fn connect(dir: &TempDir, ic_id: &str) -> Client {
    Client::connect(ic_id, &dir.connect_options()).expect("connect")
}

#[test]
fn a_command_makes_a_round_trip_through_shared_memory() {
    let dir = TempDir::new("rt");
    let _server = Peer::server(&dir, "rt", &[]);
    let client = connect(&dir, "rt");
    let input: Vec<u8> = (0..64).collect();
    let out = client
        .execute(
            &Call {
                code: ECHO,
                input: &input,
                output_len: 64,
                ..bounded()
            },
            &mut Copying,
        )
        .unwrap();
    assert_eq!((out.status, out.length), (0, 64));
    assert_eq!(out.output, input);
    // The server's own status comes back as a result, not an error.
    let out = client
        .execute(
            &Call {
                code: CHECKSUM,
                input: &input,
                output_len: 8,
                ..bounded()
            },
            &mut Copying,
        )
        .unwrap();
    assert_eq!(out.status, 7);
    assert_eq!(out.output, fnv1a64(&input).to_le_bytes());
}

/// Appends each client callback to the log the server peer appends to, so both processes'
/// events land in one causal order.
struct Logged {
    log: Arc<Mutex<std::fs::File>>,
}

impl Logged {
    fn event(&self, what: &str) {
        self.log
            .lock()
            .unwrap()
            .write_all(format!("{what}\n").as_bytes())
            .unwrap();
    }
}

impl Callbacks for Logged {
    fn input_prepare(&mut self, area: &mut Area<'_>, input: &[u8]) {
        self.event("inputPrepare");
        area.write(input);
    }
    fn output_prepare(&mut self, _area: &mut Area<'_>) {
        self.event("outputPrepare");
    }
    fn input_post(&mut self, _area: &Area<'_>) {
        self.event("inputPost");
    }
    fn output_post(&mut self, area: &Area<'_>) -> Vec<u8> {
        self.event("outputPost");
        area.to_vec()
    }
}

#[test]
fn callbacks_run_in_the_order_of_spec_section_3_across_both_processes() {
    let dir = TempDir::new("order");
    let log_path: PathBuf = dir.path().join("events.log");
    let log = Arc::new(Mutex::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap(),
    ));
    let mut server = Peer::server(&dir, "order", &["--log", log_path.to_str().unwrap()]);
    let client = connect(&dir, "order");
    let call = Call {
        code: ECHO,
        input: b"order",
        output_len: 8,
        ..bounded()
    };
    let sync = client
        .execute(&call, &mut Logged { log: log.clone() })
        .unwrap();
    assert_eq!(sync.output, b"order");
    let (tx, rx) = channel();
    let done_log = log.clone();
    client
        .execute_async(&call, Logged { log: log.clone() }, move |r| {
            Logged { log: done_log }.event("completion");
            tx.send(r).unwrap();
        })
        .unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap().output, b"order");
    client.close();
    server.expect("close");
    let events = std::fs::read_to_string(&log_path).unwrap();
    let events: Vec<&str> = events.lines().collect();
    assert_eq!(
        events,
        [
            "open",
            "inputPrepare",
            "outputPrepare",
            "exec",
            "inputPost",
            "outputPost",
            "inputPrepare",
            "outputPrepare",
            "exec",
            "inputPost",
            "outputPost",
            "completion",
            "close"
        ]
    );
}

#[test]
fn default_callbacks_copy_the_input_in_and_the_output_out() {
    let dir = TempDir::new("defaults");
    let _server = Peer::server(&dir, "defaults", &[]);
    let client = connect(&dir, "defaults");
    // An input area larger than the input: the input is copied to its start.
    let mut seen = Vec::new();
    struct Peek<'a>(&'a mut Vec<u8>);
    impl Callbacks for Peek<'_> {
        fn input_post(&mut self, area: &Area<'_>) {
            *self.0 = area.to_vec();
        }
    }
    let out = client
        .execute(
            &Call {
                code: ECHO,
                input: b"abc",
                input_len: Some(6),
                output_len: 6,
                ..bounded()
            },
            &mut Peek(&mut seen),
        )
        .unwrap();
    assert_eq!(seen.len(), 6);
    assert_eq!(&seen[..3], b"abc");
    // The default output_post copies exactly the reported length.
    assert_eq!(out.length, 6);
    assert_eq!(out.output.len(), 6);
    assert_eq!(&out.output[..3], b"abc");
    let err = client
        .execute(
            &Call {
                code: ECHO,
                input: b"abcdef",
                input_len: Some(3),
                output_len: 6,
                ..bounded()
            },
            &mut Copying,
        )
        .unwrap_err();
    assert_eq!(err.status(), Status::InvalidArgument);
    assert!(err.message().contains("input_len 3"), "{err}");
}

#[test]
fn ten_thousand_commands_sync_and_async_come_back_with_their_checksums() {
    let dir = TempDir::new("many");
    let _server = Peer::server(&dir, "many", &["--workers", "2"]);
    let client = Arc::new(connect(&dir, "many"));
    const N: usize = 10_000;
    let (tx, rx) = channel();
    let mut expected_async = 0usize;
    let mut seed = 0x1234_5678u32;
    for i in 0..N {
        // xorshift: sizes from empty to past the small slot class, some past every slot.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let len = match i % 100 {
            0 => 1_500_000,
            1..=9 => 50_000,
            _ => (seed % 4096) as usize,
        };
        let input: Vec<u8> = (0..len).map(|j| (j as u32 ^ seed) as u8).collect();
        let sum = fnv1a64(&input);
        let mode = if i % 3 == 0 {
            Mode::Worker
        } else {
            Mode::Inline
        };
        let call = Call {
            code: CHECKSUM,
            input: &input,
            output_len: 8,
            mode,
            ..bounded()
        };
        if i % 2 == 0 {
            let started = std::time::Instant::now();
            let out = client.execute(&call, &mut Copying).unwrap();
            // Answered only when its deadline woke the caller: the wake-up was lost.
            assert!(
                started.elapsed() < WAIT,
                "command {i} took {:?}",
                started.elapsed()
            );
            assert_eq!(
                (out.status, out.output.as_slice()),
                (7, &sum.to_le_bytes()[..]),
                "command {i}"
            );
        } else {
            expected_async += 1;
            let tx = tx.clone();
            client
                .execute_async(&call, Copying, move |r| tx.send((i, sum, r)).unwrap())
                .unwrap();
        }
    }
    let mut seen = vec![false; N];
    for _ in 0..expected_async {
        let (i, sum, r) = rx.recv_timeout(WAIT).expect("an async completion");
        let out = r.unwrap();
        assert_eq!(
            (out.status, out.output.as_slice()),
            (7, &sum.to_le_bytes()[..]),
            "command {i}"
        );
        assert!(!seen[i], "command {i} completed twice");
        seen[i] = true;
    }
    assert!(rx.try_recv().is_err(), "no extra completion");
}

#[test]
fn a_server_killed_with_commands_outstanding_fails_each_with_peer_terminated() {
    let dir = TempDir::new("killsrv");
    let mut server = Peer::server(&dir, "killsrv", &["--workers", "2", "--verbose"]);
    let client = Arc::new(connect(&dir, "killsrv"));
    let (tx, rx) = channel();
    const ASYNC: usize = 20;
    for i in 0..ASYNC {
        // Some on the shared-memory path, one over the backup path (too large for any slot).
        let input = if i == 0 {
            vec![1u8; 3 << 20]
        } else {
            vec![1u8; 16]
        };
        let tx = tx.clone();
        client
            .execute_async(
                &Call {
                    code: HOLD,
                    input: &input,
                    output_len: 16,
                    mode: if i % 2 == 0 {
                        Mode::Worker
                    } else {
                        Mode::Inline
                    },
                    ..bounded()
                },
                Copying,
                move |r| tx.send(r).unwrap(),
            )
            .unwrap();
    }
    let sync = {
        let client = client.clone();
        std::thread::spawn(move || {
            client.execute(
                &Call {
                    code: HOLD,
                    input: b"sync",
                    output_len: 16,
                    ..bounded()
                },
                &mut Copying,
            )
        })
    };
    // The server has taken commands (its handler blocks in them) before it dies.
    server.expect("exec");
    server.kill();
    for _ in 0..ASYNC {
        let r = rx
            .recv_timeout(WAIT)
            .expect("every async command completes");
        assert_eq!(r.unwrap_err().status(), Status::PeerTerminated);
    }
    let r = within("the sync command", move || sync.join().unwrap());
    assert_eq!(r.unwrap_err().status(), Status::PeerTerminated);
    // New commands fail at once rather than hang.
    let err = client
        .execute(
            &Call {
                code: ECHO,
                input: b"x",
                output_len: 1,
                ..bounded()
            },
            &mut Copying,
        )
        .unwrap_err();
    assert_eq!(err.status(), Status::PeerTerminated);
}

#[test]
fn a_client_killed_mid_command_is_drained_closed_once_and_the_server_serves_on() {
    let dir = TempDir::new("killcli");
    let mut server = Peer::server(&dir, "killcli", &["--workers", "2", "--verbose"]);
    let mut client = Peer::client(&dir, "killcli", &["--hold", "3"]);
    let open = server.expect("open ");
    let id = open.trim_start_matches("open ").to_string();
    // Its slow commands are in the server's hands when it dies.
    server.expect(&format!("exec {id} 6"));
    client.kill();
    let close = server.expect(&format!("close {id}"));
    assert_eq!(close, format!("close {id}"));
    let done_before_close = server
        .seen
        .iter()
        .filter(|l| **l == format!("done {id} 6"))
        .count();
    assert_eq!(
        done_before_close, 3,
        "every taken command finished before close: {:?}",
        server.seen
    );
    // Another client is served normally, and its own close is the next close.
    let other = connect(&dir, "killcli");
    let out = other
        .execute(
            &Call {
                code: ECHO,
                input: b"still here",
                output_len: 16,
                ..bounded()
            },
            &mut Copying,
        )
        .unwrap();
    assert_eq!(out.output, b"still here");
    other.close();
    let next = server.expect("close ");
    assert_ne!(next, close, "close ran twice for connection {id}");
}

fn tiny_geometry() -> Geometry {
    Geometry {
        classes: [
            SlotClass {
                count: 1,
                input_capacity: 1024,
                output_capacity: 1024,
            },
            SlotClass {
                count: 1,
                input_capacity: 4096,
                output_capacity: 4096,
            },
        ],
        ring_capacity: 2,
    }
}

#[test]
fn with_every_slot_taken_a_command_completes_over_the_backup_path() {
    let dir = TempDir::new("exhaust");
    let _server = Peer::server(&dir, "exhaust", &[]);
    let client = Client::connect("exhaust", &dir.connect_options_with(tiny_geometry())).unwrap();
    let small = client.begin(ECHO, 10, 10, Mode::Default).unwrap();
    let large = client.begin(ECHO, 2000, 2000, Mode::Default).unwrap();
    assert!(!small.is_backup() && !large.is_backup());
    let mut t = client.begin(ECHO, 10, 10, Mode::Default).unwrap();
    assert!(t.is_backup(), "no slot was free, so the backup path");
    t.input().write(b"0123456789");
    let answer = client.call_within(&mut t, Some(WAIT)).unwrap();
    assert_eq!((answer.status, answer.length), (0, 10));
    assert_eq!(t.output().to_vec(), b"0123456789");
    // Asynchronously as well, with the same results through the callbacks.
    let (tx, rx) = channel();
    client
        .execute_async(
            &Call {
                code: CHECKSUM,
                input: b"backup",
                output_len: 8,
                ..bounded()
            },
            Copying,
            move |r| tx.send(r).unwrap(),
        )
        .unwrap();
    let out = rx.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(
        (out.status, out.output),
        (7, fnv1a64(b"backup").to_le_bytes().to_vec())
    );
    // Once slots are free again, commands take them.
    drop((small, large));
    let t = client.begin(ECHO, 10, 10, Mode::Default).unwrap();
    assert!(!t.is_backup());
}

#[test]
fn a_call_past_its_timeout_fails_timed_out_and_its_late_answer_frees_its_slot_only() {
    const LATE: u32 = 6; // echo after 200 ms
    let dir = TempDir::new("late");
    let _server = Peer::server(&dir, "late", &[]);
    let client = Client::connect("late", &dir.connect_options_with(tiny_geometry())).unwrap();
    let started = std::time::Instant::now();
    let err = client
        .execute(
            &Call {
                code: LATE,
                input: b"late",
                output_len: 10,
                timeout: Some(std::time::Duration::from_millis(50)),
                ..bounded()
            },
            &mut Copying,
        )
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.status(), Status::TimedOut, "{err:?}");
    assert!(err.message().contains("may have run"), "{err:?}");
    assert!(
        waited >= std::time::Duration::from_millis(50) && waited < WAIT,
        "waited {waited:?}"
    );
    // The small slot is still the server's: the next small command takes another way, and
    // gets its own answer, not the late one.
    let out = client
        .execute(
            &Call {
                code: ECHO,
                input: b"next",
                output_len: 10,
                ..bounded()
            },
            &mut Copying,
        )
        .unwrap();
    assert_eq!(out.output, b"next");
    // That call popped the late answer too (the server runs handlers inline, one at a time,
    // so it came first): the slot serves again.
    let t = client.begin(ECHO, 10, 10, Mode::Default).unwrap();
    assert!(
        !t.is_backup(),
        "the timed-out command's slot was not given back"
    );
}

#[test]
fn a_command_larger_than_any_slot_completes_over_the_backup_path() {
    let dir = TempDir::new("oversize");
    let _server = Peer::server(&dir, "oversize", &[]);
    let client = Client::connect("oversize", &dir.connect_options_with(tiny_geometry())).unwrap();
    let input: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let t = client
        .begin(ECHO, input.len(), input.len(), Mode::Default)
        .unwrap();
    assert!(t.is_backup());
    drop(t);
    let out = client
        .execute(
            &Call {
                code: ECHO,
                input: &input,
                output_len: input.len(),
                ..bounded()
            },
            &mut Copying,
        )
        .unwrap();
    assert_eq!(out.length as usize, input.len());
    assert_eq!(out.output, input);
    // An overflow there says how many bytes were wanted too (a REPLY's 4-byte body).
    overflows_saying_how_much(&client, 100_000);
}

/// An OVERFLOW command of `output_len` output bytes (its handler answers one more) fails
/// `OUTPUT_OVERFLOW` saying how many bytes were wanted.
fn overflows_saying_how_much(client: &Client, output_len: usize) {
    let err = client
        .execute(
            &Call {
                code: OVERFLOW,
                output_len,
                ..bounded()
            },
            &mut Copying,
        )
        .unwrap_err();
    assert_eq!(err.status(), Status::OutputOverflow);
    let wanted = format!(
        "answered {} bytes of output for an output area of {output_len} bytes",
        output_len + 1
    );
    assert!(err.message().ends_with(&wanted), "{err}");
}

#[test]
fn a_client_that_dies_while_the_server_stopped_reading_it_is_noticed_at_once() {
    // The handler holds every command: the slots fill, then backup commands pile up until the
    // server stops reading the connection (its backup budget); only the socket's hang-up can
    // then tell the client's end.
    let dir = TempDir::new("hangup");
    let (handler, taken) = common::keeping();
    let mut server = Server::serve("hangup", handler, dir.serve_options()).unwrap();
    let client = Client::connect("hangup", &dir.connect_options_with(tiny_geometry())).unwrap();
    let mut commands = Vec::new();
    // 2 slots, then 64 backup commands, the budget; the ones beyond stay unread.
    for _ in 0..2 + 64 + 4 {
        client
            .execute_async(
                &Call {
                    code: ECHO,
                    input: b"held",
                    output_len: 4,
                    ..Call::default()
                },
                Copying,
                |_| {},
            )
            .unwrap();
    }
    for _ in 0..2 + 64 {
        commands.push(
            taken
                .recv_timeout(WAIT)
                .expect("the server takes the command"),
        );
    }
    assert!(commands.iter().any(|c| c.is_backup()));
    assert!(!commands[0].client_gone());
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !commands[0].client_gone() {
        assert!(
            Instant::now() < deadline,
            "the server did not notice within 2 s that its client is gone"
        );
        std::thread::yield_now();
    }
    drop(commands);
    server.close();
}

#[test]
fn a_failing_handler_fails_only_its_command() {
    let dir = TempDir::new("panic");
    let _server = Peer::server(&dir, "panic", &["--workers", "1"]);
    let client = connect(&dir, "panic");
    for mode in [Mode::Inline, Mode::Worker] {
        let err = client
            .execute(
                &Call {
                    code: PANIC,
                    mode,
                    ..bounded()
                },
                &mut Copying,
            )
            .unwrap_err();
        assert_eq!(err.status(), Status::HandlerFailed);
    }
    overflows_saying_how_much(&client, 4);
    // A status that is no library status is the handler's failure, not a broken protocol.
    let err = client
        .execute(
            &Call {
                code: BAD_STATUS,
                ..bounded()
            },
            &mut Copying,
        )
        .unwrap_err();
    assert_eq!(err.status(), Status::HandlerFailed);
    let out = client
        .execute(
            &Call {
                code: ECHO,
                input: b"ok",
                output_len: 2,
                ..bounded()
            },
            &mut Copying,
        )
        .unwrap();
    assert_eq!(out.output, b"ok");
}

#[test]
fn a_major_version_mismatch_is_refused_clearly_on_both_sides() {
    let dir = TempDir::new("version");
    let mut server = Peer::server(&dir, "version", &[]);
    let options = ConnectOptions {
        protocol_major: shmcall_core::PROTOCOL_MAJOR + 1,
        ..dir.connect_options()
    };
    let err = Client::connect("version", &options).unwrap_err();
    assert_eq!(err.status(), Status::VersionMismatch);
    let (ours, theirs) = (
        format!(
            "{}.{}",
            shmcall_core::PROTOCOL_MAJOR,
            shmcall_core::PROTOCOL_MINOR
        ),
        format!(
            "{}.{}",
            shmcall_core::PROTOCOL_MAJOR + 1,
            shmcall_core::PROTOCOL_MINOR
        ),
    );
    assert!(
        err.message().contains(&theirs) && err.message().contains(&ours),
        "{err}"
    );
    let refused = server.expect("refused");
    assert!(refused.starts_with("refused VERSION_MISMATCH"), "{refused}");
    // The server is unaffected.
    let client = connect(&dir, "version");
    assert!(!client.is_closed());
}

#[test]
fn an_unknown_ic_id_is_reported_with_its_socket_path() {
    let dir = TempDir::new("unknown");
    let err = Client::connect("nobody-home", &dir.connect_options()).unwrap_err();
    assert_eq!(err.status(), Status::NotFound);
    assert!(err.message().contains("'nobody-home'"), "{err}");
    assert!(err.message().contains("nobody-home.sock"), "{err}");
}

#[test]
fn a_second_server_on_a_live_ic_id_fails_and_a_dead_ones_socket_is_replaced() {
    let dir = TempDir::new("twice");
    let mut first = Peer::server(&dir, "twice", &[]);
    let options = ServeOptions {
        socket_dir: Some(dir.path().to_path_buf()),
        ..ServeOptions::default()
    };
    // A server from three closures: `open` counts connections into the context.
    let opened = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let closed = Arc::new(Mutex::new(Vec::new()));
    let quiet = {
        let (opened, closed) = (opened.clone(), closed.clone());
        shmcall_core::handlers(
            move |_: &shmcall_core::ConnInfo| {
                Ok(opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1)
            },
            |command: shmcall_core::Command, _: &shmcall_core::ConnInfo, n: &u32| {
                command.finish(*n as i32, 0)
            },
            move |_: &shmcall_core::ConnInfo, n: &u32| closed.lock().unwrap().push(*n),
        )
    };
    let err = Server::serve(
        "twice",
        shmcall_core::handlers(
            |_| Ok(()),
            |c: shmcall_core::Command, _, _: &()| c.finish(0, 0),
            |_, _| {},
        ),
        options.clone(),
    )
    .unwrap_err();
    assert_eq!(err.status(), Status::AlreadyServed);
    assert!(
        err.message().contains(&format!("pid {}", first.pid())),
        "{err}"
    );
    // The dead server leaves its socket file; the next server replaces it.
    first.kill();
    assert!(dir.entries().contains(&"twice.sock".to_string()));
    let mut server = Server::serve("twice", quiet, options).unwrap();
    let client = connect(&dir, "twice");
    let out = client.execute(&Call::default(), &mut Copying).unwrap();
    assert_eq!(out.status, 1, "the status is the context `open` returned");
    client.close();
    server.close();
    assert_eq!(
        *closed.lock().unwrap(),
        [1],
        "close ran once, with open's context"
    );
    assert_eq!(
        dir.entries(),
        Vec::<String>::new(),
        "a closed server leaves nothing behind"
    );
}

#[test]
fn connecting_to_a_killed_servers_socket_removes_its_files_and_says_not_found() {
    let dir = TempDir::new("stale");
    let mut server = Peer::server(&dir, "stale", &[]);
    server.kill();
    // No client was connected to notice the death: the files stay until someone looks.
    assert_eq!(dir.entries(), ["stale.lock", "stale.sock"]);
    let err = Client::connect("stale", &dir.connect_options()).unwrap_err();
    assert_eq!(err.status(), Status::NotFound, "{err}");
    assert_eq!(
        dir.entries(),
        Vec::<String>::new(),
        "the stale files remain"
    );
    // A live server's files are never touched by a refused connect: only a free lock clears.
    let _live = Peer::server(&dir, "stale", &[]);
    connect(&dir, "stale").close();
    assert_eq!(dir.entries(), ["stale.lock", "stale.sock"]);
}

/// A server of our own making on `name`: it welcomes the client, takes one backup command and
/// writes what `reply` makes of it, then closes its socket. Returns the client's answer to a
/// command larger than any slot (so that it goes over the control channel), 16 output bytes.
fn scripted_reply(
    name: &str,
    reply: impl FnOnce(shmcall_core::wire::Exec) -> Vec<u8> + Send + 'static,
) -> Result<shmcall_core::Output, shmcall_core::Error> {
    use shmcall_core::wire::{self, Message};
    use std::io::Write;
    let dir = TempDir::new(name);
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join(format!("{name}.sock")))
        .expect("listen");
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        // A plain read: the segment's descriptor that came with the hello is closed unseen.
        let hello = wire::read_message(&mut &stream).unwrap();
        let Message::Hello { major, minor, .. } = hello else {
            panic!("expected a hello, got {hello:?}")
        };
        let welcome = Message::Welcome {
            major,
            minor,
            connection: 1,
        };
        (&stream).write_all(&wire::encode(&welcome)).unwrap();
        let exec = match wire::read_message(&mut &stream).unwrap() {
            Message::Exec(exec) => exec,
            other => panic!("expected a backup command, got {other:?}"),
        };
        (&stream).write_all(&reply(exec)).unwrap();
    });
    let client = connect(&dir, name);
    let result = within("the command", move || {
        let input = vec![7u8; 3 << 20];
        let call = Call {
            code: ECHO,
            input: &input,
            output_len: 16,
            ..bounded()
        };
        client.execute(&call, &mut Copying)
    });
    server.join().unwrap();
    result
}

#[test]
fn a_server_that_dies_in_the_middle_of_a_reply_fails_the_command_with_peer_terminated() {
    let err = scripted_reply("halfreply", |exec| {
        let reply = shmcall_core::wire::encode_reply(exec.token, 0, &exec.input[..16]);
        reply[..reply.len() / 2].to_vec()
    })
    .unwrap_err();
    assert_eq!(err.status(), Status::PeerTerminated, "{err}");
}

#[test]
fn a_backup_reply_beyond_its_capacity_or_a_malformed_overflow_is_a_protocol_violation() {
    let overflow = Status::OutputOverflow.code();
    // (server, reply status, reply output bytes, the client's status, what its error says).
    // OUTPUT_OVERFLOW's body is the bytes wanted, 4 bytes (protocol 2.1), or nothing (2.0).
    let cases = [
        (
            "longreply",
            0,
            17,
            Status::ProtocolViolation,
            "sent 17 output bytes for a capacity of 16",
        ),
        (
            "badoverflow",
            overflow,
            5,
            Status::ProtocolViolation,
            "sent an OUTPUT_OVERFLOW answer of 5 bytes (4 at most)",
        ),
        (
            "oldoverflow",
            overflow,
            0,
            Status::OutputOverflow,
            "answered more output for an output area of 16 bytes",
        ),
    ];
    for (name, status, len, expected, says) in cases {
        let err = scripted_reply(name, move |exec| {
            shmcall_core::wire::encode_reply(exec.token, status, &exec.input[..len])
        })
        .unwrap_err();
        assert_eq!(err.status(), expected, "{err}");
        assert!(err.message().ends_with(says), "{err}");
    }
}

#[test]
fn a_panicking_completion_does_not_stop_later_completions() {
    let dir = TempDir::new("panicky");
    let _server = Peer::server(&dir, "panicky", &[]);
    let client = connect(&dir, "panicky");
    let call = Call {
        code: ECHO,
        input: b"x",
        output_len: 1,
        ..bounded()
    };
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    client
        .execute_async(&call, Copying, |_| panic!("a user completion panics"))
        .unwrap();
    let (tx, rx) = channel();
    client
        .execute_async(&call, Copying, move |r| tx.send(r).unwrap())
        .unwrap();
    let r = rx.recv_timeout(WAIT);
    std::panic::set_hook(previous);
    assert_eq!(r.expect("the next completion runs").unwrap().output, b"x");
}

#[test]
fn a_client_that_fills_the_sc_ring_loses_its_connection_and_no_one_else_does() {
    let dir = TempDir::new("tamper");
    let mut server = Peer::server(&dir, "tamper", &[]);
    let honest = connect(&dir, "tamper");
    let client = connect(&dir, "tamper");
    // Tamper with our own segment the way a hostile client could: publish an SC read position
    // far ahead, so that the ring reads as full to the server forever.
    let layout = Geometry::default().layout().unwrap();
    let (base, len) = client.segment_mapping();
    assert!((layout.sc_ring as usize) + 4 <= len);
    // SAFETY: the SC ring header lies inside the mapping, 64-aligned; its first field is the
    // u32 read position. The write is atomic, as the peer's accesses are.
    let read =
        unsafe { &*(base.add(layout.sc_ring as usize) as *const std::sync::atomic::AtomicU32) };
    read.store(0x8000_0000, std::sync::atomic::Ordering::SeqCst);
    let call = Call {
        code: ECHO,
        input: b"x",
        output_len: 1,
        ..bounded()
    };
    let err = within("the tampering client's command", {
        let client = Arc::new(client);
        move || {
            let call = Call {
                code: ECHO,
                input: b"x",
                output_len: 1,
                ..bounded()
            };
            client.execute(&call, &mut Copying).map(|_| ())
        }
    })
    .unwrap_err();
    assert_eq!(err.status(), Status::ProtocolViolation, "{err}");
    assert!(err.message().contains("SC ring is full"), "{err}");
    let refused = server.expect("refused");
    assert!(
        refused.starts_with("refused PROTOCOL_VIOLATION"),
        "{refused}"
    );
    // The server's thread was not held, and the other connection is untouched.
    let out = honest.execute(&call, &mut Copying).unwrap();
    assert_eq!(out.output, b"x");
}
