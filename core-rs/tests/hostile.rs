//! Hostile peers (SPEC.md §9): a peer that speaks the real protocol and then writes anything
//! anywhere in the shared segment (`common/scribble.rs`) while commands run. The attacked side
//! must not crash, hang or answer another connection wrongly; the offending connection ends
//! with a reason; other connections carry on untouched.
//!
//! `SHMCALL_HOSTILE_TRIALS` sets the hostile peers per test (default 20).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::load::{self, Rng, Tally};
use common::{Counting, Peer, Tallied, TempDir, WAIT, seed, within};
use shmcall::{Client, Server, Status};

/// Hostile peers per test: `SHMCALL_HOSTILE_TRIALS`, or 20.
fn trials() -> usize {
    common::trials("SHMCALL_HOSTILE_TRIALS", 20)
}

/// A well-behaved load on `client` in a thread of its own, until `stop`.
struct Bystander {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

impl Bystander {
    fn start(client: &Arc<Client>, seed: u64) -> Bystander {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (client, tally, stop) = (client.clone(), tally.clone(), stop.clone());
            std::thread::spawn(move || load::run(&client, seed, &stop, &tally, WAIT))
        };
        Bystander {
            tally,
            stop,
            thread,
        }
    }

    /// Stops the load and checks that every one of its commands was answered correctly.
    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        within("the bystander's load", move || thread.join())
            .expect("the bystander's load panicked")
            .expect("the bystander's load");
        let failed = self.tally.failed.lock().unwrap();
        let wrong = self.tally.wrong.lock().unwrap();
        assert!(
            failed.is_empty() && wrong.is_empty(),
            "a bystander was touched: failed {failed:?}, wrong {wrong:?}"
        );
        assert!(
            self.tally.ok.load(Ordering::Relaxed) > 0,
            "the bystander ran"
        );
    }
}

#[test]
fn clients_scribbling_on_their_segments_lose_only_their_own_connections() {
    let mut rng = Rng::new(seed("hostile clients"));
    let dir = TempDir::new("hostile-cli");
    let tallied = Arc::new(Tallied::default());
    let mut server = Server::serve(
        "hostile-cli",
        Counting(tallied.clone()),
        dir.serve_options(),
    )
    .unwrap();
    let good = Arc::new(Client::connect("hostile-cli", &dir.connect_options()).unwrap());
    let bystander = Bystander::start(&good, rng.next());
    let mut crashed = 0;
    for _ in 0..trials() {
        let seed = rng.next().to_string();
        let mut peer = Peer::start(
            "hostile",
            dir.path(),
            "hostile-cli",
            &["--seed", &seed, "--millis", "100"],
        );
        // The attacker attacks its own client library too, which may give up on it: only the
        // server's side is judged here (the other test judges a client under attack).
        if peer.expect_or_exit("done").is_none() {
            crashed += 1;
        }
        peer.kill();
    }
    bystander.finish();
    // Every hostile connection ended, its close ran once, and violations were named.
    let deadline = Instant::now() + WAIT;
    let mut counts = tallied.counts.lock().unwrap();
    while counts.closed.len() + 1 < counts.opened.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "hostile connections still open");
        counts = tallied.changed.wait_timeout(counts, left).unwrap().0;
    }
    assert!(counts.closed.values().all(|n| *n == 1), "a close ran twice");
    let mut reasons = BTreeMap::new();
    for r in &counts.refused {
        // "connection N dropped: <why>": group by the why, without the numbers.
        let why = r.split_once(": ").map_or(r.as_str(), |(_, why)| why);
        let key: String = why.chars().filter(|c| !c.is_ascii_digit()).collect();
        *reasons.entry(key).or_insert(0) += 1;
    }
    println!("attacker's own library gave up {crashed} times; server's reasons: {reasons:#?}");
    assert!(
        !counts.refused.is_empty(),
        "{} hostile clients and not one violation noticed",
        trials()
    );
    drop(counts);
    // The server serves on, on every path.
    for size in [16, 200 << 10, 3 << 20] {
        let input = vec![size as u8; size];
        let out = good
            .execute(
                &shmcall::Call {
                    code: load::ECHO,
                    input: &input,
                    output_len: size,
                    ..shmcall::Call::default()
                },
                &mut shmcall::Copying,
            )
            .unwrap();
        assert_eq!(out.output, input);
    }
    good.close();
    server.close();
}

#[test]
fn a_server_scribbling_on_the_segment_cannot_crash_or_hang_its_clients() {
    let mut rng = Rng::new(seed("hostile server"));
    let dir = TempDir::new("hostile-srv");
    let _hostile = Peer::server_mode(
        "hostile-serve",
        &dir,
        "hostile",
        &["--seed", &rng.next().to_string()],
    );
    let _honest = Peer::server(&dir, "honest", &["--workers", "2"]);
    let good = Arc::new(Client::connect("honest", &dir.connect_options()).unwrap());
    let bystander = Bystander::start(&good, rng.next());
    let mut endings = BTreeMap::new();
    for trial in 0..trials() {
        let client = Arc::new(Client::connect("hostile", &dir.connect_options()).unwrap());
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (client, tally, stop, seed) =
                (client.clone(), tally.clone(), stop.clone(), rng.next());
            std::thread::spawn(move || load::run(&client, seed, &stop, &tally, WAIT))
        };
        // The load stops by itself at the first failure; else after a while under attack.
        let deadline = Instant::now() + Duration::from_millis(100);
        while Instant::now() < deadline && tally.failed.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        within("a load under attack", move || load.join())
            .expect("a load under attack panicked")
            .unwrap_or_else(|e| panic!("trial {trial}: {e}"));
        // Wrong answers are the hostile server's right (it owns the output); a library
        // failure must be a library status, and closing must not hang.
        let failed = tally.failed.lock().unwrap().clone();
        for s in &failed {
            assert!(s.code() < 0, "trial {trial}: {s:?} is not a library status");
        }
        let ending = failed.first().map_or("none", |s| s.name());
        *endings.entry(ending).or_insert(0) += 1;
        within("closing a client of the hostile server", move || {
            client.close()
        });
    }
    println!("how loads under attack ended: {endings:?}");
    assert!(
        endings.contains_key(Status::ProtocolViolation.name()),
        "no violation noticed in {} trials: {endings:?}",
        trials()
    );
    bystander.finish();
    good.close();
}
