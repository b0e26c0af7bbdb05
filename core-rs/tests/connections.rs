//! Many connections in one server process: a client process opens `SHMCALL_CONNECTIONS` of
//! them (1,000 by default; `deno task stress` runs 10,000) and holds them idle. The server's
//! library threads stay the ones it had with none, an idle server uses no CPU to speak of, a
//! connection beside them is served at once, and every connection that goes runs `close` once.
//! (docs/architecture.md, "Threads".)

mod common;

use std::time::{Duration, Instant};

use common::{Counting, Peer, TempDir, WAIT, trials};
use shmcall_core::{Call, Client, Copying, Server};
use std::sync::Arc;

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`CLK_TCK`, 100 on Linux).
const TICKS: f64 = 100.0;

/// The names of this process's threads that are the library's own (`shmcall-*`).
fn library_threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .filter(|n| n.starts_with("shmcall-"))
        .collect();
    names.sort();
    names
}

/// CPU this process used so far (user + system), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name (which may hold spaces) start after its ')'.
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / TICKS
}

/// Waits (bounded) until `counted` of the server's counts reaches `n`.
fn until_counted(
    tallied: &common::Tallied,
    what: &str,
    n: usize,
    counted: impl Fn(&common::Counts) -> usize,
) {
    drop(tallied.until(
        |c| counted(c) >= n,
        |c| format!("only {} of {n} {what}", counted(c)),
    ));
}

#[test]
fn a_server_holds_many_idle_connections_on_the_threads_it_had_and_at_no_cpu() {
    let count = trials("SHMCALL_CONNECTIONS", 1000);
    let dir = TempDir::new("many");
    let tallied = Arc::new(common::Tallied::default());
    let mut server = Server::serve("many", Counting(tallied.clone()), dir.serve_options()).unwrap();
    // A first connection starts whatever the library starts on demand.
    let first = Client::connect("many", &dir.connect_options()).unwrap();
    let echo = |client: &Client| {
        let call = Call {
            code: 1,
            input: b"beside",
            output_len: 6,
            // A lost wake-up fails the test rather than hanging it.
            timeout: Some(WAIT),
            ..Call::default()
        };
        let answer = client.execute(&call, &mut Copying).unwrap();
        assert_eq!(answer.output, b"beside");
    };
    echo(&first);
    // The pool's worker threads, started by `serve`, name themselves once they first run, which
    // on a loaded machine can come after this point: wait for their names, so that they are not
    // taken later for threads the connections started.
    let deadline = Instant::now() + WAIT;
    while library_threads()
        .iter()
        .filter(|n| n.starts_with("shmcall-worker"))
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the pool's workers never named themselves: {:?}",
            library_threads()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let threads_before = library_threads();
    assert!(
        threads_before.len() <= 4,
        "library threads with one connection: {threads_before:?}"
    );

    let mut peer = Peer::start("many", dir.path(), "many", &["--hold", &count.to_string()]);
    let held = peer
        .expect_within("held", Duration::from_secs(120))
        .expect("the client process held its connections");
    assert!(held.starts_with(&format!("held {count} ")), "{held}");
    // The client's side is as frugal: its threads are its main one and the library's few.
    let client_threads: usize = held.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(client_threads <= 4, "client threads: {held}");
    until_counted(&tallied, "opened", count + 1, |c| c.opened.len());
    assert_eq!(
        library_threads(),
        threads_before,
        "{count} connections started threads"
    );

    // Idle: nothing is asked of the server for 2 s, and it spends (next to) nothing.
    let (cpu, start) = (cpu_seconds(), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let used = (cpu_seconds() - cpu) / start.elapsed().as_secs_f64();
    assert!(
        used <= 0.01,
        "the idle server used {:.2}% of a core",
        used * 100.0
    );

    // A connection beside them, and the first one, are served as usual.
    let beside = Client::connect("many", &dir.connect_options()).unwrap();
    echo(&beside);
    echo(&first);

    // The client process goes: every one of its connections closes, once.
    peer.stop();
    until_counted(&tallied, "closed", count, |c| c.closed.len());
    assert!(
        tallied
            .counts
            .lock()
            .unwrap()
            .closed
            .values()
            .all(|&n| n == 1)
    );
    assert_eq!(library_threads(), threads_before);
    drop(beside);
    drop(first);
    server.close();
}
