//! Fault trials (docs/architecture.md, peer death): peers killed with SIGKILL at random points, a
//! hundred times each way, while they run a mixed load of every size and both modes
//! (`common/load.rs`). The survivor must never hang, end every outstanding command with a
//! library status, run `close` once per connection, serve on, leave no file behind, and leak
//! no descriptor, thread or mapping.
//!
//! `SHMCALL_FAULT_TRIALS` sets the trials each way (default 100); `SHMCALL_FAULT_SEED` replays
//! a run (each test prints its seed).

mod common;

/// Trials each way: `SHMCALL_FAULT_TRIALS`, or 100.
fn trials() -> usize {
    common::trials("SHMCALL_FAULT_TRIALS", 100)
}

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::load::{self, ECHO, Rng, Tally};
use common::{Counting, Peer, Tallied, TempDir, WAIT, seed, within};
use shmcall_core::{Call, Client, Copying, Error, Server, Status};

/// Both tests count this process's descriptors, threads and mappings: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// What this process holds: open descriptors, the library's threads (named `shmcall-*`: the
/// test harness starts and ends threads of its own), and mappings of segments (memfds named
/// `shmcall:<ic id>`). Other mappings are not counted: glibc keeps the arenas and stacks of
/// exited threads mapped for reuse, which is not ours to free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    fds: usize,
    threads: usize,
    segments: usize,
}

fn held() -> Held {
    // The library's own threads and descriptors (the reactor's thread, its epoll instance and
    // eventfd; the runner's thread) start with the first connection of the process and stay,
    // whatever the number of connections: started first, they are part of the baseline.
    shmcall_core::reactor::Reactor::get().unwrap();
    shmcall_core::Runner::get().unwrap();
    // A new thread takes its name a moment after it starts.
    let deadline = Instant::now() + WAIT;
    while library_threads().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the library's threads did not start"
        );
        std::thread::yield_now();
    }
    let count = |dir| std::fs::read_dir(dir).unwrap().count();
    Held {
        fds: count("/proc/self/fd"),
        threads: library_threads().len(),
        segments: std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| l.contains("/memfd:shmcall:"))
            .count(),
    }
}

/// The names of the library's threads in this process.
fn library_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .filter(|n| n.starts_with("shmcall-"))
        .collect()
}

/// Waits (bounded) until this process holds no more than it did at `before`: threads of
/// ended connections exit a moment after their work is done.
fn nothing_leaked(before: Held) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = held();
        if now.fds <= before.fds && now.threads <= before.threads && now.segments <= before.segments
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "leaked: held {now:?} against {before:?} before the trials; threads {:?}, descriptors {:?}, segments {:?}",
            library_threads(),
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .collect::<Vec<_>>(),
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .filter(|l| l.contains("/memfd:shmcall:"))
                .map(str::to_string)
                .collect::<Vec<_>>(),
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Random points: a pause of up to `max_ms`, drawn from the test's seeded generator.
fn pause(rng: &mut Rng, max_ms: u64) {
    std::thread::sleep(Duration::from_micros(rng.below(max_ms * 1000)));
}

fn echo(client: &Client, size: usize) -> Result<Vec<u8>, Error> {
    let input: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let out = client.execute(
        &Call {
            code: ECHO,
            input: &input,
            output_len: size,
            // A lost wake-up or an unflushed frame fails the trial rather than hanging it.
            timeout: Some(WAIT),
            ..Call::default()
        },
        &mut Copying,
    )?;
    assert_eq!(out.output, input, "echo of {size} B");
    Ok(out.output)
}

/// What "noticed at once" must mean for a peer killed outright (docs/architecture.md: no timeouts, no
/// heartbeats): well under a second.
const DETECTION: Duration = Duration::from_millis(500);

/// Waits (bounded) until every connection `counting` saw open is closed and the server holds
/// none; returns how long that took.
fn all_closed(counting: &Tallied, server: &Server) -> Duration {
    let start = Instant::now();
    let deadline = start + WAIT;
    let mut counts = counting.counts.lock().unwrap();
    while counts.closed.len() < counts.opened.len() || server.connections() > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{} of {} connections closed, {} still open",
            counts.closed.len(),
            counts.opened.len(),
            server.connections()
        );
        // Short waits: `connections()` changes without a notification.
        let step = left.min(Duration::from_millis(1));
        counts = counting.changed.wait_timeout(counts, step).unwrap().0;
    }
    start.elapsed()
}

/// Sizes that take a small slot, a large slot and the backup path.
const SIZES: [usize; 3] = [16, 200 << 10, 3 << 20];

#[test]
fn clients_killed_at_random_points_are_each_closed_once_and_the_server_serves_on() {
    let _serial = serial();
    let mut rng = Rng::new(seed("clients killed"));
    let dir = TempDir::new("faults-cli");
    let before = held();
    let counting = Arc::new(Tallied::default());
    let mut server = Server::serve(
        "faults-cli",
        Counting(counting.clone()),
        dir.serve_options(),
    )
    .unwrap();
    let n = trials();
    let mut connected = 0;
    let mut slowest = Duration::ZERO;
    // Four at once, so that deaths overlap each other's commands on the server.
    for round in 0..n.div_ceil(4) {
        let mut peers: Vec<Peer> = (0..4.min(n - round * 4))
            .map(|_| {
                let seed = rng.next().to_string();
                Peer::start("load", dir.path(), "faults-cli", &["--seed", &seed])
            })
            .collect();
        for peer in &mut peers {
            // One in five dies whenever it is, often before or during its handshake; the
            // others once connected and loading.
            if rng.below(5) != 0 {
                peer.expect("ready");
                connected += 1;
            }
            pause(&mut rng, 20);
            peer.kill();
        }
        // Detection: from the round's last death until every connection is closed.
        let noticed = all_closed(&counting, &server);
        slowest = slowest.max(noticed);
    }
    println!("slowest detection of a killed client: {slowest:?}");
    assert!(slowest < DETECTION, "a death took {slowest:?} to notice");
    // Every connection that opened is closed, exactly once, and nothing is left open.
    let counts = counting.counts.lock().unwrap();
    assert!(
        counts.opened.len() >= connected,
        "{} opened, {connected} were seen connected",
        counts.opened.len()
    );
    for (id, opened) in &counts.opened {
        assert_eq!(*opened, 1, "connection {id} opened {opened} times");
        assert_eq!(
            counts.closed.get(id),
            Some(&1),
            "connection {id} closed {:?} times",
            counts.closed.get(id)
        );
    }
    assert_eq!(
        counts.closed.len(),
        counts.opened.len(),
        "close without open"
    );
    drop(counts);
    // The server serves on, on every path.
    let client = Client::connect("faults-cli", &dir.connect_options()).unwrap();
    for size in SIZES {
        echo(&client, size).unwrap();
    }
    client.close();
    drop(client);
    server.close();
    drop(server);
    assert_eq!(dir.entries(), Vec::<String>::new(), "files left behind");
    nothing_leaked(before);
}

#[test]
fn servers_killed_at_random_points_fail_every_outstanding_command_and_leave_nothing() {
    let _serial = serial();
    let mut rng = Rng::new(seed("servers killed"));
    let dir = TempDir::new("faults-srv");
    let before = held();
    // The client of the server killed in the previous trial: it must stay ended after a new
    // server serves the same ic id.
    let mut previous: Option<Arc<Client>> = None;
    let mut slowest = Duration::ZERO;
    for trial in 0..trials() {
        let mut server = Peer::server(&dir, "faults-srv", &["--workers", "2"]);
        if let Some(old) = previous.take() {
            let e = echo(&old, 16).unwrap_err();
            assert_eq!(e.status(), Status::PeerTerminated, "trial {trial}: {e}");
        }
        let client = Arc::new(Client::connect("faults-srv", &dir.connect_options()).unwrap());
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (client, tally, stop, seed) = (client.clone(), tally.clone(), stop, rng.next());
            std::thread::spawn(move || load::run(&client, seed, &stop, &tally, WAIT))
        };
        // Three in four die with commands answered and more in flight; the rest whenever.
        if rng.below(4) != 0 {
            let deadline = Instant::now() + WAIT;
            while tally.ok.load(Ordering::Relaxed) == 0 {
                assert!(
                    Instant::now() < deadline,
                    "trial {trial}: no command answered"
                );
                std::thread::yield_now();
            }
        }
        pause(&mut rng, 10);
        let killed = Instant::now();
        server.kill();
        let ran = within("the load after its server died", move || load.join());
        slowest = slowest.max(killed.elapsed());
        ran.expect("the load panicked")
            .unwrap_or_else(|e| panic!("trial {trial}: {e}"));
        let wrong = tally.wrong.lock().unwrap();
        assert!(wrong.is_empty(), "trial {trial}: wrong answers {wrong:?}");
        let failed = tally.failed.lock().unwrap();
        assert!(
            !failed.is_empty() && failed.iter().all(|s| *s == Status::PeerTerminated),
            "trial {trial}: the load ended with {failed:?}"
        );
        // Later commands fail at once, and the dead server's files are gone: the client
        // removed them when it noticed the death, before failing any command.
        let e = echo(&client, 3 << 20).unwrap_err();
        assert_eq!(e.status(), Status::PeerTerminated, "trial {trial}: {e}");
        assert_eq!(
            dir.entries(),
            Vec::<String>::new(),
            "trial {trial}: files left behind"
        );
        previous = Some(client);
    }
    drop(previous);
    // From the kill until every command of the load ended (and the files were removed).
    println!("slowest detection of a killed server: {slowest:?}");
    assert!(slowest < DETECTION, "a death took {slowest:?} to notice");
    nothing_leaked(before);
}
