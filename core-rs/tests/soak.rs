//! Soak: eight client processes run the mixed load (sync and async, 16 B to 3 MiB, both
//! paths, both modes) against one server for a while. No command may be lost or duplicated —
//! each client's count of correct answers equals the server's count of its commands — and the
//! server's resident memory and descriptors must stay flat once warm.
//!
//! `SHMCALL_SOAK_SECONDS` sets the length (default 4; `deno task stress` runs 60).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::load::{self, Rng};
use common::{Peer, TempDir, WAIT, seed, trials};
use shmcall_core::{ConnInfo, Error, Handler, Server, Status};

const CLIENTS: usize = 8;

/// Commands run per client process (by pid), and the pids whose connection closed.
#[derive(Default)]
struct Ran {
    by_pid: Mutex<HashMap<i32, u64>>,
    closed: Mutex<Vec<i32>>,
}

struct Soaked(Arc<Ran>);

impl Handler for Soaked {
    type Context = ();

    fn open(&self, _conn: &ConnInfo) -> Result<(), Error> {
        Ok(())
    }

    fn exec(&self, command: shmcall_core::Command, conn: &ConnInfo, _context: &()) {
        *self.0.by_pid.lock().unwrap().entry(conn.pid).or_default() += 1;
        load::answer(command);
    }

    fn close(&self, conn: &ConnInfo, _context: &()) {
        self.0.closed.lock().unwrap().push(conn.pid);
    }

    fn refused(&self, _peer: Option<&ConnInfo>, why: &Error) {
        assert_ne!(why.status(), Status::ProtocolViolation, "{why}");
    }
}

/// Resident private memory (bytes: `RssAnon` of /proc/self/status) and open descriptors of this
/// process. Private only: the clients' segments mapped here are resident as their pages are
/// touched, by commands of every size, and leave with their connections — whose closes may
/// still be under way at the last look — while a leak per command would be the server's own.
fn footprint() -> (u64, usize) {
    // Freed memory the allocator keeps for later (large backup buffers come and go) is not a
    // leak: it is handed back first, so that what is left is what is live.
    // SAFETY: malloc_trim only releases free memory of glibc's heap.
    unsafe { libc::malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/self/status");
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    (kib * 1024, fds)
}

#[test]
fn eight_clients_for_a_while_lose_nothing_and_hold_steady() {
    let seconds = trials("SHMCALL_SOAK_SECONDS", 4) as u64;
    let mut rng = Rng::new(seed("soak"));
    let dir = TempDir::new("soak");
    let ran = Arc::new(Ran::default());
    let mut server = Server::serve("soak", Soaked(ran.clone()), dir.serve_options()).unwrap();
    let started = Instant::now();
    let millis = (seconds * 1000).to_string();
    let mut peers: Vec<Peer> = (0..CLIENTS)
        .map(|_| {
            let seed = rng.next().to_string();
            Peer::start(
                "load",
                dir.path(),
                "soak",
                &["--seed", &seed, "--millis", &millis],
            )
        })
        .collect();
    // Warm after a quarter of the run: every size and path has been taken many times.
    std::thread::sleep(Duration::from_millis(seconds * 250));
    let (warm_rss, warm_fds) = footprint();
    let mut ok = HashMap::new();
    let ends = started + Duration::from_secs(seconds) + WAIT;
    for peer in &mut peers {
        let left = ends.saturating_duration_since(Instant::now());
        let line = peer
            .expect_within("ended", left)
            .expect("the client ended its run");
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(line.starts_with("ended Ok(()) ok "), "{line}");
        assert!(line.ends_with("failed [] wrong []"), "{line}");
        ok.insert(peer.pid(), fields[3].parse::<u64>().unwrap());
    }
    let (end_rss, end_fds) = footprint();
    // Every connection closed, then compare the counts of both sides, client by client.
    let deadline = Instant::now() + WAIT;
    while ran.closed.lock().unwrap().len() < CLIENTS {
        assert!(Instant::now() < deadline, "not every connection closed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let by_pid = ran.by_pid.lock().unwrap();
    for (pid, answered) in &ok {
        assert_eq!(
            by_pid.get(pid),
            Some(answered),
            "client {pid}: answers and commands run differ"
        );
    }
    let total: u64 = ok.values().sum();
    println!(
        "{total} commands in {:.1} s; server private RSS {} → {} MiB, fds {warm_fds} → {end_fds}",
        started.elapsed().as_secs_f64(),
        warm_rss >> 20,
        end_rss >> 20
    );
    // Flat: allocator caches may still grow a little, a leak per command would not be small.
    assert!(
        end_rss <= warm_rss + warm_rss / 10 + (16 << 20),
        "server RSS grew from {warm_rss} to {end_rss}"
    );
    assert!(
        end_fds <= warm_fds,
        "server fds grew from {warm_fds} to {end_fds}"
    );
    drop(by_pid);
    server.close();
}
