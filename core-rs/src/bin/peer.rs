//! `shmcall-peer`: a server or client process for the multi-process tests and benches.
//!
//! ```text
//! shmcall-peer serve  <ic-id> [--dir D] [--workers N] [--spin-us N] [--log FILE] [--verbose]
//!                     [--allow-uid U]...             (serves user U too)
//! shmcall-peer client <ic-id> [--dir D] --hold N     (issues N held commands, then waits)
//! shmcall-peer client <ic-id> [--dir D] --allow-uid U (connects to a server of user U)
//! shmcall-peer client <ic-id> [--dir D] --major M    (connects speaking protocol major M;
//!                                                     prints `error <STATUS> <why>` on failure)
//! shmcall-peer load   <ic-id> [--dir D] [--seed S] [--millis T]
//!                                   (runs the mixed load of tests/common/load.rs until killed,
//!                                    or for T ms; then prints `ended <result> ok <n> failed
//!                                    <statuses> wrong <answers>`)
//! shmcall-peer hostile <ic-id> [--dir D] [--seed S] [--millis T]
//!                                   (a client that runs the mixed load while it scribbles on
//!                                    its segment for T ms, then prints `done <writes>`)
//! shmcall-peer hostile-serve <ic-id> [--dir D] [--seed S]
//!                                   (a server that echoes and checksums while it scribbles on
//!                                    each client's segment, and answers bad lengths)
//! shmcall-peer many   <ic-id> [--dir D] --hold N     (opens N connections one after another,
//!                                                     prints `held N threads T`, then holds
//!                                                     them idle until stdin closes)
//! shmcall-peer socket-echo <socket-path>             (echoes u32-LE-length-prefixed frames)
//! shmcall-peer queue  <queue-id> [--dir D] [--minor N] (hosts an event queue, speaking protocol
//!                                    minor N at most: 4 serves as a 2.4 host; until stdin closes)
//! shmcall-peer cycles <ic-id> [--dir D] [--millis T] (connect → one 64 B echo → close, one after
//!                                    another for T ms; prints the rate and each phase's p50 and
//!                                    p90 in µs)
//! ```
//!
//! The server prints one line per event on stdout (`ready`, `open <conn>`, `close <conn>`,
//! `refused <STATUS>`, and with `--verbose` `exec <conn> <code>` and `done <conn> <code>` per
//! command: a parent that does not drain its pipe would otherwise block the server), and with
//! `--log` also appends
//! `open`, `exec`, `close` to FILE with `O_APPEND`, so that a test can interleave them with the
//! client's own events in one causal order.
//!
//! Operation codes of the server:
//! - 1 echo: output = input, status 0;
//! - 2 checksum: output = FNV-1a-64 of the input (8 bytes LE), status 7;
//! - 3 hold: never answers (the handler blocks until the process dies);
//! - 4 panic: the handler panics;
//! - 5 overflow: reports one byte more than the output capacity;
//! - 6 slow echo: sleeps 200 ms, then echoes;
//! - 7 bad status: answers -100, which is no library status.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shmcall_core::{
    Call, Client, Command, ConnInfo, ConnectOptions, Copying, Error, Handler, Mode, ServeOptions,
    Server,
};

#[path = "../../tests/common/load.rs"]
#[allow(dead_code)]
mod load;
#[path = "../../tests/common/scribble.rs"]
mod scribble;

use load::fnv1a64;

struct Args {
    ic_id: String,
    dir: Option<PathBuf>,
    workers: usize,
    spin: Option<Duration>,
    log: Option<PathBuf>,
    hold: usize,
    verbose: bool,
    major: Option<u16>,
    seed: u64,
    millis: Option<u64>,
    allow_uids: Vec<u32>,
    minor: Option<u16>,
}

fn parse(mut it: impl Iterator<Item = String>) -> Args {
    let ic_id = it.next().expect("an ic id");
    let mut a = Args {
        ic_id,
        dir: None,
        workers: 0,
        spin: None,
        log: None,
        hold: 0,
        verbose: false,
        major: None,
        seed: 1,
        millis: None,
        allow_uids: Vec::new(),
        minor: None,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => a.dir = Some(value().into()),
            "--workers" => a.workers = value().parse().expect("--workers N"),
            "--spin-us" => {
                a.spin = Some(Duration::from_micros(value().parse().expect("--spin-us N")))
            }
            "--log" => a.log = Some(value().into()),
            "--hold" => a.hold = value().parse().expect("--hold N"),
            "--verbose" => a.verbose = true,
            "--major" => a.major = Some(value().parse().expect("--major M")),
            "--seed" => a.seed = value().parse().expect("--seed S"),
            "--millis" => a.millis = Some(value().parse().expect("--millis T")),
            "--allow-uid" => a.allow_uids.push(value().parse().expect("--allow-uid U")),
            "--minor" => a.minor = Some(value().parse().expect("--minor N")),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct Log(Option<Mutex<std::fs::File>>);

impl Log {
    fn open(path: &Option<PathBuf>) -> Log {
        Log(path.as_ref().map(|p| {
            Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .expect("log file"),
            )
        }))
    }

    fn event(&self, what: &str) {
        if let Some(f) = &self.0 {
            let mut f = f.lock().unwrap();
            // One write per line: O_APPEND makes each one atomic and ordered.
            let _ = f.write_all(format!("{what}\n").as_bytes());
        }
    }
}

struct Peer {
    log: Log,
    verbose: bool,
}

impl Handler for Peer {
    type Context = u64;

    fn open(&self, conn: &ConnInfo) -> Result<u64, Error> {
        self.log.event("open");
        say(&format!("open {}", conn.id));
        Ok(conn.id)
    }

    fn exec(&self, mut command: Command, conn: &ConnInfo, _context: &u64) {
        let code = command.code();
        self.log.event("exec");
        if self.verbose {
            say(&format!("exec {} {code}", conn.id));
        }
        match code {
            1 | 6 => {
                if code == 6 {
                    std::thread::sleep(Duration::from_millis(200));
                }
                let (input, mut output) = command.areas();
                let n = input.len().min(output.len());
                let mut buf = vec![0; n];
                input.read_at(0, &mut buf);
                output.write(&buf);
                if self.verbose {
                    say(&format!("done {} {code}", conn.id));
                }
                command.finish(0, n);
            }
            2 => {
                let input = command.input().to_vec();
                command.output().write(&fnv1a64(&input).to_le_bytes());
                command.finish(7, 8);
            }
            3 => loop {
                std::thread::park();
            },
            4 => panic!("handler asked to fail"),
            5 => {
                let cap = command.output_capacity();
                command.finish(0, cap + 1);
            }
            7 => command.finish(-100, 0),
            _ => command.finish(0, 0),
        }
    }

    fn close(&self, conn: &ConnInfo, _context: &u64) {
        self.log.event("close");
        say(&format!("close {}", conn.id));
    }

    fn refused(&self, _peer: Option<&ConnInfo>, why: &Error) {
        say(&format!("refused {} {}", why.status(), why.message()));
    }
}

/// A server that breaks the protocol from its side: a scribbler thread writes on the segment
/// of every connection that sent a command, and some commands are answered with a length
/// beyond the output area.
struct Hostile {
    segments: Arc<Mutex<HashMap<u64, Arc<shmcall_core::segment::Segment>>>>,
    rng: Mutex<load::Rng>,
}

impl Handler for Hostile {
    type Context = ();

    fn open(&self, _conn: &ConnInfo) -> Result<(), Error> {
        Ok(())
    }

    fn exec(&self, mut command: Command, conn: &ConnInfo, _context: &()) {
        if let Some(segment) = command.segment() {
            self.segments.lock().unwrap().insert(conn.id, segment);
        }
        let bad = self.rng.lock().unwrap().below(16) == 0;
        let cap = command.output_capacity();
        if command.code() == load::CHECKSUM {
            let sum = fnv1a64(&command.input().to_vec());
            command.output().write(&sum.to_le_bytes());
            command.finish(7, if bad { cap + 1 } else { 8 });
        } else {
            let (input, mut output) = command.areas();
            let mut buf = vec![0; input.len().min(output.len())];
            input.read_at(0, &mut buf);
            output.write(&buf);
            command.finish(0, if bad { cap + 4096 } else { buf.len() });
        }
    }

    fn close(&self, conn: &ConnInfo, _context: &()) {
        self.segments.lock().unwrap().remove(&conn.id);
    }
}

fn hostile_serve(args: &Args, options: ServeOptions) {
    let segments = Arc::new(Mutex::new(HashMap::new()));
    let hostile = Hostile {
        segments: segments.clone(),
        rng: Mutex::new(load::Rng::new(args.seed)),
    };
    let _server = Server::serve(&args.ic_id, hostile, options).expect("serve");
    let mut rng = load::Rng::new(args.seed ^ 0x5eed);
    std::thread::spawn(move || {
        loop {
            let targets: Vec<_> = segments.lock().unwrap().values().cloned().collect();
            for segment in &targets {
                scribble::scribble(segment, scribble::Side::Server, &mut rng);
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    });
    say("ready");
    until_stdin_closes();
}

/// A client that breaks the protocol from its side while its load runs.
fn hostile_client(args: &Args) {
    let options = ConnectOptions {
        socket_dir: args.dir.clone(),
        ..ConnectOptions::default()
    };
    let client = Arc::new(Client::connect(&args.ic_id, &options).expect("connect"));
    say("ready");
    let tally = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, tally, stop, seed) = (client.clone(), tally, stop.clone(), args.seed);
        std::thread::spawn(move || load::run(&client, seed, &stop, &tally, Duration::from_secs(10)))
    };
    let segment = client.segment();
    let mut rng = load::Rng::new(args.seed ^ 0x5eed);
    let end = Instant::now() + Duration::from_millis(args.millis.unwrap_or(200));
    let mut writes = 0u64;
    while Instant::now() < end && !client.is_closed() {
        scribble::scribble(&segment, scribble::Side::Client, &mut rng);
        writes += 1;
        std::thread::sleep(Duration::from_micros(20));
    }
    stop.store(true, Ordering::Relaxed);
    // Its own commands may hang on the answers it broke: it does not wait for them.
    drop(load);
    say(&format!("done {writes}"));
    until_stdin_closes();
}

/// The baseline a user would pick instead: request/response over a Unix socket, each message
/// a little-endian u32 length and that many bytes. Serves one connection, then exits.
fn socket_echo(path: &str) {
    use std::io::Read;
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind the echo socket");
    say("ready");
    let (mut conn, _) = listener.accept().expect("accept");
    let _ = std::fs::remove_file(path);
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        buf.resize(u32::from_le_bytes(len) as usize, 0);
        if conn.read_exact(&mut buf).is_err() {
            return;
        }
        let mut frame = Vec::with_capacity(4 + buf.len());
        frame.extend_from_slice(&len);
        frame.extend_from_slice(&buf);
        if conn.write_all(&frame).is_err() {
            return;
        }
    }
}

/// Blocks until stdin closes: the parent went away (or closed it to stop us).
fn until_stdin_closes() {
    let mut sink = String::new();
    while std::io::stdin()
        .read_line(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        sink.clear();
    }
}

/// Connect → one 64-byte echo → close, one after another: the rate and each phase's times.
fn cycles(args: &Args) {
    let options = ConnectOptions {
        socket_dir: args.dir.clone(),
        ..ConnectOptions::default()
    };
    let input = [7u8; 64];
    let until = Instant::now() + Duration::from_millis(args.millis.unwrap_or(3_000));
    let mut phases: [Vec<Duration>; 3] = Default::default();
    let start = Instant::now();
    while Instant::now() < until {
        let t0 = Instant::now();
        let client = Client::connect(&args.ic_id, &options).unwrap_or_else(|e| {
            say(&format!("error {} {}", e.status(), e.message()));
            std::process::exit(3);
        });
        let t1 = Instant::now();
        let call = Call {
            code: 1,
            input: &input,
            output_len: 64,
            ..Call::default()
        };
        let out = client.execute(&call, &mut Copying).expect("execute");
        assert_eq!(out.status, 0);
        let t2 = Instant::now();
        client.close();
        drop(client);
        let t3 = Instant::now();
        for (p, d) in phases.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2]) {
            p.push(d);
        }
    }
    let n = phases[0].len();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let at = |p: &mut Vec<Duration>, q: f64| {
        p.sort();
        p[((p.len() as f64 * q) as usize).min(p.len() - 1)].as_secs_f64() * 1e6
    };
    let mut line = format!("cycles {n} rate {rate:.0}/s");
    for (name, p) in ["connect", "execute", "close"]
        .iter()
        .zip(phases.iter_mut())
    {
        line += &format!(" {name} {:.1} {:.1}", at(p, 0.5), at(p, 0.9));
    }
    say(&line);
}

fn main() {
    // A handler panic is part of the tests; keep stderr quiet about it.
    std::panic::set_hook(Box::new(|_| {}));
    let mut argv = std::env::args().skip(1);
    let mode = argv.next().expect("serve or client");
    let args = parse(argv);
    match mode.as_str() {
        "serve" => {
            let mut options = ServeOptions {
                workers: args.workers,
                socket_dir: args.dir.clone(),
                allow_uids: args.allow_uids.clone(),
                ..ServeOptions::default()
            };
            if let Some(spin) = args.spin {
                options.spin = spin;
            }
            let peer = Peer {
                log: Log::open(&args.log),
                verbose: args.verbose,
            };
            let _server = match Server::serve(&args.ic_id, peer, options) {
                Ok(s) => s,
                Err(e) => {
                    say(&format!("error {} {}", e.status(), e.message()));
                    std::process::exit(3);
                }
            };
            say("ready");
            until_stdin_closes();
        }
        "queue" => {
            let mut options = ServeOptions {
                socket_dir: args.dir.clone(),
                ..ServeOptions::default()
            };
            if let Some(minor) = args.minor {
                options.protocol_minor = minor;
            }
            let _queue = match shmcall_core::queue::EventQueue::serve(&args.ic_id, options) {
                Ok(q) => q,
                Err(e) => {
                    say(&format!("error {} {}", e.status(), e.message()));
                    std::process::exit(3);
                }
            };
            say("ready");
            until_stdin_closes();
        }
        "client" => {
            let mut options = ConnectOptions {
                socket_dir: args.dir.clone(),
                allow_server_uids: args.allow_uids.clone(),
                ..ConnectOptions::default()
            };
            if let Some(spin) = args.spin {
                options.spin = spin;
            }
            if let Some(major) = args.major {
                options.protocol_major = major;
            }
            let client = match Client::connect(&args.ic_id, &options) {
                Ok(c) => c,
                Err(e) => {
                    say(&format!("error {} {}", e.status(), e.message()));
                    std::process::exit(3);
                }
            };
            for _ in 0..args.hold {
                client
                    .execute_async(
                        &Call {
                            code: 6,
                            input: b"held",
                            output_len: 16,
                            mode: Mode::Worker,
                            ..Call::default()
                        },
                        Copying,
                        |_| {},
                    )
                    .expect("execute_async");
            }
            say("ready");
            until_stdin_closes();
        }
        "load" => {
            let options = ConnectOptions {
                socket_dir: args.dir.clone(),
                ..ConnectOptions::default()
            };
            let client =
                std::sync::Arc::new(Client::connect(&args.ic_id, &options).unwrap_or_else(|e| {
                    say(&format!("error {} {}", e.status(), e.message()));
                    std::process::exit(3);
                }));
            say("ready");
            let tally = Arc::new(load::Tally::default());
            let stop = Arc::new(AtomicBool::new(false));
            if let Some(ms) = args.millis {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    stop.store(true, Ordering::Relaxed);
                });
            }
            // Runs until killed, stopped, or the server ends the connection.
            let r = load::run(&client, args.seed, &stop, &tally, Duration::from_secs(10));
            say(&format!(
                "ended {r:?} ok {} failed {:?} wrong {:?}",
                tally.ok.load(Ordering::Relaxed),
                tally.failed.lock().unwrap(),
                tally.wrong.lock().unwrap()
            ));
            client.close();
        }
        "many" => {
            let options = ConnectOptions {
                socket_dir: args.dir.clone(),
                ..ConnectOptions::default()
            };
            let held: Vec<Client> = (0..args.hold)
                .map(|_| {
                    Client::connect(&args.ic_id, &options).unwrap_or_else(|e| {
                        say(&format!("error {} {}", e.status(), e.message()));
                        std::process::exit(3);
                    })
                })
                .collect();
            let threads = std::fs::read_dir("/proc/self/task")
                .map(|d| d.count())
                .unwrap_or(0);
            say(&format!("held {} threads {threads}", held.len()));
            until_stdin_closes();
            drop(held);
        }
        "cycles" => cycles(&args),
        "hostile" => hostile_client(&args),
        "hostile-serve" => hostile_serve(
            &args,
            ServeOptions {
                workers: 2,
                socket_dir: args.dir.clone(),
                ..ServeOptions::default()
            },
        ),
        "socket-echo" => socket_echo(&args.ic_id),
        other => panic!("unknown mode {other}"),
    }
}
