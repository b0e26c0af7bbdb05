//! shmcall against iceoryx2, two processes on one host, 64 bytes, both sides polling (no
//! sleep; a loop that finds nothing yields the CPU before it looks again, since shmcall's queue
//! host is a third thread that must get a CPU of the two): commands against iceoryx2's request-response, and the event queue against its
//! publish-subscribe. Prints a Markdown table of round trips (p50, p99) and the ratios, for
//! bench/README.md ("Against iceoryx2").
//!
//! Each scenario's peer is this binary again, with `VS_ROLE` set; it prints `ready`, answers
//! until its standard input closes, and exits. Rounds alternate the four scenarios, so that a
//! drift of the machine falls on every side alike. Environment: `VS_SAMPLES` (default 50,000
//! a round), `VS_ROUNDS` (default 3).
//!
//! - **Request-response**: the client sends 64 bytes and polls for the answer; the server
//!   polls for requests and echoes them. shmcall: a Rust `Client::call` against a Rust
//!   `Server` whose handler copies the input to the output, both spinning for a second before
//!   they would sleep. iceoryx2: `Client::send_copy` and `PendingResponse::receive` against
//!   `Server::receive` and `ActiveRequest::send_copy`.
//! - **Publish-subscribe**: this process sends 64 bytes as event 1 (a sample on service
//!   `a2b`), the peer polls for it and sends it back as event 2 (on `b2a`), and this process
//!   polls for that: one sample is half the round trip. shmcall: `Producer::post` and
//!   `Consumer::retrieve`, the queue hosted by this process (iceoryx2's publishers write their
//!   subscribers' queues themselves; shmcall's host copies each post into the lists, on its own
//!   thread). iceoryx2: `Publisher::send_copy` and `Subscriber::receive`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use iceoryx2::prelude::*;
use shmcall_core::queue::{Consumer, EventQueue, Events, Producer};
use shmcall_core::{ConnectOptions, Mode, ServeOptions, Server, handlers};

const ROLE_ENV: &str = "VS_ROLE";
const DIR_ENV: &str = "VS_DIR";
const PAYLOAD: usize = 64;
const WARMUP: usize = 5_000;
/// Long enough that neither side of a run sleeps: the comparison is of the polling paths.
const SPIN: Duration = Duration::from_secs(1);
const COMMAND_ID: &str = "vs-command";
const QUEUE_ID: &str = "vs-queue";
const ECHO: u32 = 1;
const PING: u32 = 1;
const PONG: u32 = 2;

type Payload = [u8; PAYLOAD];
type Failure = Box<dyn std::error::Error>;

fn main() -> Result<(), Failure> {
    // Quiet: iceoryx2 warns on stderr that it runs with its default configuration.
    set_log_level(LogLevel::Error);
    if let Ok(role) = std::env::var(ROLE_ENV) {
        return peer(&role);
    }
    let samples = env_number("VS_SAMPLES", 50_000);
    let rounds = env_number("VS_ROUNDS", 3);
    let dir = std::env::temp_dir().join(format!("shmcall-vs-iceoryx2-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // A socket directory of this user alone, as shmcall requires.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let mut runs: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        runs[0].extend(shmcall_commands(&dir, samples)?);
        runs[1].extend(iceoryx2_request_response(&dir, samples)?);
        runs[2].extend(shmcall_queue(&dir, samples)?);
        runs[3].extend(iceoryx2_publish_subscribe(&dir, samples)?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let [shm_rr, iox_rr, shm_ps, iox_ps] = runs.map(|mut r| {
        r.sort_by(f64::total_cmp);
        (rank(&r, 0.5), rank(&r, 0.99))
    });
    println!(
        "| 64 B, both sides polling (µs) | shmcall p50 | shmcall p99 | iceoryx2 p50 | iceoryx2 p99 | iceoryx2 / shmcall, p50 |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (what, shm, iox) in [
        ("request → response, round trip", shm_rr, iox_rr),
        (
            "post → retrieved (publish → received), one way",
            shm_ps,
            iox_ps,
        ),
    ] {
        println!(
            "| {what} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}× |",
            shm.0,
            shm.1,
            iox.0,
            iox.1,
            iox.0 / shm.0
        );
    }
    println!("\n{rounds} rounds of {samples} samples each, iceoryx2 0.10, in one run.");
    Ok(())
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The value at `q` (0..1) of sorted `xs`.
fn rank(xs: &[f64], q: f64) -> f64 {
    xs[((xs.len() - 1) as f64 * q).round() as usize]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A peer process, killed and reaped when dropped (a failed run leaves nothing behind).
struct PeerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl PeerProcess {
    /// Starts this binary as `role` and waits (at most 20 s) for its `ready`.
    fn start(role: &str, dir: &Path) -> Result<PeerProcess, Failure> {
        let mut child = Process::new(std::env::current_exe()?)
            .env(ROLE_ENV, role)
            .env(DIR_ENV, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut peer = PeerProcess { child, stdin };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.trim() == "ready" => Ok(peer),
            other => {
                peer.stop();
                Err(format!("peer {role} did not get ready: {other:?}").into())
            }
        }
    }

    fn stop(&mut self) {
        // Its standard input closed, the peer ends its loop; killed if it does not at once.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Times `samples` calls of `one` after a warm-up, in µs each, divided by `per`.
fn time(
    samples: usize,
    per: f64,
    mut one: impl FnMut() -> Result<(), Failure>,
) -> Result<Vec<f64>, Failure> {
    for _ in 0..WARMUP {
        one()?;
    }
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        one()?;
        out.push(micros(start.elapsed()) / per);
    }
    Ok(out)
}

fn connect_options(dir: &Path) -> ConnectOptions {
    ConnectOptions {
        socket_dir: Some(dir.to_path_buf()),
        spin: SPIN,
        ..ConnectOptions::default()
    }
}

fn serve_options(dir: &Path) -> ServeOptions {
    ServeOptions {
        socket_dir: Some(dir.to_path_buf()),
        spin: SPIN,
        ..ServeOptions::default()
    }
}

fn shmcall_commands(dir: &Path, samples: usize) -> Result<Vec<f64>, Failure> {
    let _server = PeerProcess::start("shmcall-server", dir)?;
    let client = shmcall_core::Client::connect(COMMAND_ID, &connect_options(dir))?;
    let request: Payload = [7; PAYLOAD];
    let mut answer: Payload = [0; PAYLOAD];
    time(samples, 1.0, || {
        let mut ticket = client.begin(ECHO, PAYLOAD, PAYLOAD, Mode::Default)?;
        ticket.input().write(&request);
        let got = client.call(&mut ticket)?;
        ticket
            .output()
            .read_at(0, &mut answer[..got.length as usize]);
        Ok(())
    })
}

fn iceoryx2_request_response(dir: &Path, samples: usize) -> Result<Vec<f64>, Failure> {
    let _server = PeerProcess::start("iceoryx2-server", dir)?;
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let service = request_response_service(&node)?;
    let client = service.client_builder().create()?;
    let request: Payload = [7; PAYLOAD];
    time(samples, 1.0, || {
        let pending = client.send_copy(request)?;
        loop {
            if let Some(response) = pending.receive()? {
                std::hint::black_box(*response);
                return Ok(());
            }
            std::thread::yield_now();
        }
    })
}

fn shmcall_queue(dir: &Path, samples: usize) -> Result<Vec<f64>, Failure> {
    let _queue = EventQueue::serve(QUEUE_ID, serve_options(dir))?;
    let _echo = PeerProcess::start("shmcall-echo", dir)?;
    let options = connect_options(dir);
    let consumer = Consumer::open(QUEUE_ID, &Events::List(vec![PONG]), 64, &options)?;
    let producer = Producer::open(QUEUE_ID, &options)?;
    let ping: Payload = [7; PAYLOAD];
    time(samples, 2.0, || {
        producer.post(PING, &ping)?;
        loop {
            if let Some(back) = consumer.retrieve(1)?.pop() {
                std::hint::black_box(back);
                return Ok(());
            }
            std::thread::yield_now();
        }
    })
}

fn iceoryx2_publish_subscribe(dir: &Path, samples: usize) -> Result<Vec<f64>, Failure> {
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let (a2b, b2a) = pubsub_services(&node)?;
    let publisher = a2b.publisher_builder().create()?;
    let subscriber = b2a.subscriber_builder().create()?;
    let _echo = PeerProcess::start("iceoryx2-echo", dir)?;
    let ping: Payload = [7; PAYLOAD];
    time(samples, 2.0, || {
        publisher.send_copy(ping)?;
        loop {
            if let Some(back) = subscriber.receive()? {
                std::hint::black_box(*back);
                return Ok(());
            }
            std::thread::yield_now();
        }
    })
}

type PubSub =
    iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, Payload, ()>;

type RequestResponse = iceoryx2::service::port_factory::request_response::PortFactory<
    ipc::Service,
    Payload,
    (),
    Payload,
    (),
>;

/// The request-response service both processes open.
fn request_response_service(node: &Node<ipc::Service>) -> Result<RequestResponse, Failure> {
    Ok(node
        .service_builder(&"shmcall-vs/request-response".try_into()?)
        .request_response::<Payload, Payload>()
        .open_or_create()?)
}

fn pubsub_services(node: &Node<ipc::Service>) -> Result<(PubSub, PubSub), Failure> {
    let open = |name: &str| -> Result<PubSub, Failure> {
        Ok(node
            .service_builder(&name.try_into()?)
            .publish_subscribe::<Payload>()
            .open_or_create()?)
    };
    Ok((open("shmcall-vs/a2b")?, open("shmcall-vs/b2a")?))
}

/// A peer: gets ready, prints `ready`, and serves until its standard input closes.
fn peer(role: &str) -> Result<(), Failure> {
    let dir = PathBuf::from(std::env::var(DIR_ENV)?);
    let stop = Arc::new(AtomicBool::new(false));
    let ready = || {
        println!("ready");
        let _ = std::io::stdout().flush();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop.store(true, Ordering::Relaxed);
        });
    };
    let going = || !stop.load(Ordering::Relaxed);
    match role {
        "shmcall-server" => {
            let _server = Server::serve(
                COMMAND_ID,
                handlers(
                    |_| Ok(()),
                    |mut command, _, _| {
                        let mut bytes: Payload = [0; PAYLOAD];
                        let (input, mut output) = command.areas();
                        let n = input.len().min(PAYLOAD).min(output.len());
                        input.read_at(0, &mut bytes[..n]);
                        output.write(&bytes[..n]);
                        command.finish(0, n);
                    },
                    |_, _| {},
                ),
                serve_options(&dir),
            )?;
            ready();
            while going() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        "shmcall-echo" => {
            let options = connect_options(&dir);
            let consumer = Consumer::open(QUEUE_ID, &Events::List(vec![PING]), 64, &options)?;
            let producer = Producer::open(QUEUE_ID, &options)?;
            ready();
            while going() {
                match consumer.retrieve(1)?.pop() {
                    Some(n) => producer.post(PONG, &n.data)?,
                    None => std::thread::yield_now(),
                }
            }
        }
        "iceoryx2-server" => {
            let node = NodeBuilder::new().create::<ipc::Service>()?;
            let service = request_response_service(&node)?;
            let server = service.server_builder().create()?;
            ready();
            while going() {
                match server.receive()? {
                    Some(request) => {
                        let bytes = *request;
                        request.send_copy(bytes)?;
                    }
                    None => std::thread::yield_now(),
                }
            }
        }
        "iceoryx2-echo" => {
            let node = NodeBuilder::new().create::<ipc::Service>()?;
            let (a2b, b2a) = pubsub_services(&node)?;
            let subscriber = a2b.subscriber_builder().create()?;
            let publisher = b2a.publisher_builder().create()?;
            ready();
            while going() {
                match subscriber.receive()? {
                    Some(sample) => {
                        publisher.send_copy(*sample)?;
                    }
                    None => std::thread::yield_now(),
                }
            }
        }
        other => return Err(format!("no role {other}").into()),
    }
    Ok(())
}
