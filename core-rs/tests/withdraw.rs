//! Protocol 1.1 in the core: a client withdraws a command the server has not taken (the slot
//! header's claim word), and asks the server for its counters (`FLAG_STATS`); both sides count
//! commands, bytes, failures and round trips.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use shmcall_core::stats::word;
use shmcall_core::{Client, ConnectOptions, Mode, ServeOptions, Server, Status, Ticket, handlers};

const WAIT: Duration = Duration::from_secs(10);
const BLOCK: u32 = 1;
const WORK: u32 = 2;

/// A gate the server's handler waits at (bounded), and whether it is waiting.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, bool)>, // (a handler waits, open)
    changed: Condvar,
}

impl Gate {
    fn wait_open(&self) {
        let mut s = self.state.lock().unwrap();
        s.0 = true;
        self.changed.notify_all();
        let (s, timeout) = self.changed.wait_timeout_while(s, WAIT, |s| !s.1).unwrap();
        assert!(!timeout.timed_out() && s.1, "the gate never opened");
    }

    fn wait_for_waiter(&self) {
        let s = self.state.lock().unwrap();
        let (_s, timeout) = self.changed.wait_timeout_while(s, WAIT, |s| !s.0).unwrap();
        assert!(!timeout.timed_out(), "the handler never reached the gate");
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

struct Fixture {
    dir: std::path::PathBuf,
    gate: Arc<Gate>,
    worked: Arc<AtomicUsize>,
    server: Server,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir =
            std::env::temp_dir().join(format!("shmcall-withdraw-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let gate = Arc::new(Gate::default());
        let worked = Arc::new(AtomicUsize::new(0));
        let (g, w) = (gate.clone(), worked.clone());
        let handler = handlers(
            |_conn| Ok(()),
            move |mut command, _conn, _ctx| {
                if command.code() == BLOCK {
                    g.wait_open();
                } else {
                    w.fetch_add(1, Ordering::SeqCst);
                }
                let input = command.input().to_vec();
                command.output().write(&input);
                command.finish(0, input.len());
            },
            |_conn, _ctx| {},
        );
        let options = ServeOptions {
            socket_dir: Some(dir.clone()),
            ..ServeOptions::default()
        };
        let server = Server::serve(name, handler, options).expect("serve");
        Fixture {
            dir,
            gate,
            worked,
            server,
        }
    }

    fn connect(&self, name: &str) -> Client {
        let options = ConnectOptions {
            socket_dir: Some(self.dir.clone()),
            ..ConnectOptions::default()
        };
        Client::connect(name, &options).expect("connect")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.gate.open();
        self.server.close();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `code` asynchronously with `input`; its finished ticket arrives on the returned channel.
fn send(client: &Client, code: u32, input: &[u8]) -> (Option<u32>, mpsc::Receiver<Ticket>) {
    let mut ticket = client
        .begin(code, input.len(), input.len(), Mode::Default)
        .unwrap();
    ticket.input().write(input);
    let slot = ticket.slot_index();
    let (tx, rx) = mpsc::channel();
    client
        .call_async(ticket, move |t| {
            let _ = tx.send(t);
        })
        .unwrap();
    (slot, rx)
}

fn snapshot(stats: &shmcall_core::Stats, connections: usize) -> [f64; word::LEN] {
    let mut out = [0.0; word::LEN];
    stats.snapshot(connections, &mut out);
    out
}

#[test]
fn a_command_the_server_has_not_taken_is_withdrawn_and_never_runs() {
    let fx = Fixture::new("untaken");
    let client = fx.connect("untaken");
    // The server's only ring thread waits inside the first command: the next ones stay in
    // the CS ring, untaken.
    let (_, blocked) = send(&client, BLOCK, b"b");
    fx.gate.wait_for_waiter();
    let (slot, withdrawn) = send(&client, WORK, b"withdrawn");
    let slot = slot.expect("a small command takes a slot");
    let (kept_slot, kept) = send(&client, WORK, b"kept");
    assert!(client.withdraw(slot), "an untaken command is withdrawn");
    assert!(!client.withdraw(slot), "a command is withdrawn once");
    fx.gate.open();

    let t = withdrawn
        .recv_timeout(WAIT)
        .expect("the withdrawn command completes");
    let err = t.answer().unwrap_err();
    assert_eq!(err.status(), Status::Cancelled, "{err}");
    let t = kept.recv_timeout(WAIT).expect("the kept command completes");
    assert_eq!(t.answer().unwrap().length, 4);
    assert!(blocked.recv_timeout(WAIT).unwrap().answer().is_ok());
    assert_eq!(
        fx.worked.load(Ordering::SeqCst),
        1,
        "only the kept command ran"
    );
    // Finished (its ticket still held): nothing to withdraw.
    assert!(!client.withdraw(kept_slot.unwrap()));
    // Out of range: refused, not a panic.
    assert!(!client.withdraw(u32::MAX));

    let c = snapshot(client.stats(), 0);
    assert_eq!(c[word::COMMANDS], 3.0);
    assert_eq!(c[word::FINISHED], 3.0);
    assert_eq!(c[word::FAILURES - Status::Cancelled.code() as usize], 1.0);
    assert_eq!(c[word::TIMED], 2.0);
    assert_eq!(c[word::BYTES_IN], (1 + 9 + 4) as f64);
    assert_eq!(c[word::BYTES_OUT], (1 + 4) as f64);
    let s = snapshot(fx.server.stats(), fx.server.connections());
    assert_eq!(s[word::COMMANDS], 3.0, "the server received all three");
    assert_eq!(s[word::FAILURES - Status::Cancelled.code() as usize], 1.0);
    assert_eq!(s[word::TIMED], 2.0);
    assert_eq!(s[word::CONNECTIONS], 1.0);
}

#[test]
fn a_taken_command_cannot_be_withdrawn_and_runs_to_its_end() {
    let fx = Fixture::new("taken");
    let client = fx.connect("taken");
    let (slot, blocked) = send(&client, BLOCK, b"b");
    fx.gate.wait_for_waiter();
    assert!(
        !client.withdraw(slot.unwrap()),
        "a running command is not withdrawn"
    );
    fx.gate.open();
    let t = blocked.recv_timeout(WAIT).unwrap();
    assert_eq!(t.answer().unwrap().length, 1);
}

#[test]
fn the_server_answers_a_request_for_its_counters_itself() {
    let fx = Fixture::new("counters");
    let client = fx.connect("counters");
    for _ in 0..5 {
        let (_, rx) = send(&client, WORK, b"12345678");
        assert!(rx.recv_timeout(WAIT).unwrap().answer().is_ok());
    }
    let mut ticket = client
        .begin(0, 0, word::LEN * 8, Mode::Stats)
        .expect("begin");
    let answer = client.call(&mut ticket).expect("a stats request");
    assert_eq!(answer.length as usize, word::LEN * 8);
    let bytes = ticket.output().to_vec();
    let words: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(
        words[word::COMMANDS],
        5.0,
        "the request itself is not counted"
    );
    assert_eq!(words[word::BYTES_IN], 40.0);
    assert_eq!(words[word::CONNECTIONS], 1.0);
    assert!(words[word::P50] > 0.0 && words[word::P50] <= words[word::P99]);
    assert_eq!(
        fx.worked.load(Ordering::SeqCst),
        5,
        "no handler saw the request"
    );
    drop(ticket);
    // Too small an area for the counters: OUTPUT_OVERFLOW, and the connection lives on.
    let mut small = client.begin(0, 0, 8, Mode::Stats).unwrap();
    let err = client.call(&mut small).unwrap_err();
    assert_eq!(err.status(), Status::OutputOverflow, "{err}");
    let wanted = format!(
        "{} bytes of output for an output area of 8 bytes",
        word::LEN * 8
    );
    assert!(err.message().ends_with(&wanted), "{err}");
    drop(small);
    let (_, rx) = send(&client, WORK, b"x");
    assert!(rx.recv_timeout(WAIT).unwrap().answer().is_ok());
}
