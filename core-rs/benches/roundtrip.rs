//! Round-trip latency between two processes on one host.
//!
//! `cargo bench --bench roundtrip` prints a Markdown table: the baselines
//! (shared-futex ping-pong, sleeping and spinning; Unix socketpair echo) and
//! shmcall's Rust client and server (sleeping and spinning), each with a
//! 64-byte payload each way. `SHMCALL_BENCH_ONLY=text` runs only the
//! scenarios whose name contains `text` (for `strace -c -f`). Environment: `SHMCALL_BENCH_SAMPLES`
//! (default 20000), `SHMCALL_BENCH_WARMUP` (default 2000), `SHMCALL_BENCH_JSON`
//! (append one JSON line per scenario to that file).
//!
//! Each scenario's peer is this same binary re-executed with
//! `SHMCALL_BENCH_ROLE` set; see `common::run_role_if_child`.
#![deny(clippy::undocumented_unsafe_blocks)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{BenchConfig, Role, Stats};
use shmcall_core::{
    Client, Command, ConnInfo, ConnectOptions, Error, Handler, Mode, ServeOptions, Server,
};

/// Spin budget of the "spinning" futex variant: long enough that both sides
/// stay in their spin window for the whole run.
const SPIN_BUDGET: Duration = Duration::from_micros(50);

/// Peer roles defined in this file, looked up before `common::COMMON_ROLES`.
/// To add one: write `fn my_server() { ...; common::signal_ready(); ... }`,
/// add `("my-server", my_server)` here, and spawn it from the parent with
/// `common::PeerCommand::new("my-server")`.
const ROLES: &[Role] = &[("shmcall-server", shmcall_server)];

const IC_ID: &str = "bench";
const DIR_ENV: &str = "SHMCALL_BENCH_DIR";
const SPIN_NS_ENV: &str = "SHMCALL_BENCH_SPIN_NS";
const ECHO: u32 = 1;

/// Echoes the input into the output, inline, and ends the process when its client leaves.
struct Echo(mpsc::Sender<()>);

impl Handler for Echo {
    type Context = ();
    fn open(&self, _: &ConnInfo) -> Result<(), Error> {
        Ok(())
    }
    fn exec(&self, mut command: Command, _: &ConnInfo, _: &()) {
        let mut buf = [0u8; common::PAYLOAD_LEN];
        let (input, mut output) = command.areas();
        let n = input.len().min(buf.len()).min(output.len());
        input.read_at(0, &mut buf[..n]);
        output.write(&buf[..n]);
        command.finish(0, n);
    }
    fn close(&self, _: &ConnInfo, _: &()) {
        let _ = self.0.send(());
    }
}

fn shmcall_server() {
    let (tx, rx) = mpsc::channel();
    let options = ServeOptions {
        socket_dir: Some(std::env::var(DIR_ENV).expect("socket dir").into()),
        spin: Duration::from_nanos(common::env_or(SPIN_NS_ENV, 0)),
        ..ServeOptions::default()
    };
    let mut server = Server::serve(IC_ID, Echo(tx), options).expect("serve");
    common::signal_ready();
    rx.recv_timeout(common::SERVER_IDLE_TIMEOUT)
        .expect("the client left");
    server.close();
}

/// shmcall's Rust client and server in two processes; both sides spin for `spin` first.
fn bench_shmcall(cfg: &BenchConfig, spin: Duration) -> Stats {
    let dir = std::env::temp_dir().join(format!("shmcall-bench-{}", std::process::id()));
    let mut peer = common::PeerCommand::new("shmcall-server")
        .env(DIR_ENV, dir.display())
        .env(SPIN_NS_ENV, spin.as_nanos())
        .spawn();
    peer.wait_ready(common::READY_TIMEOUT);
    let options = ConnectOptions {
        socket_dir: Some(dir.clone()),
        spin,
        ..ConnectOptions::default()
    };
    let client = Client::connect(IC_ID, &options).expect("connect");
    let mut request = [0u8; common::PAYLOAD_LEN];
    for (j, b) in request.iter_mut().enumerate() {
        *b = j as u8;
    }
    let mut response = [0u8; common::PAYLOAD_LEN];
    let len = common::PAYLOAD_LEN;
    let stats = common::measure(cfg, |i| {
        request[..8].copy_from_slice(&i.to_le_bytes());
        let mut t = client.begin(ECHO, len, len, Mode::Inline).expect("begin");
        t.input().write(&request);
        let answer = client.call(&mut t).expect("call");
        assert_eq!(answer.length as usize, len);
        t.output().read_at(0, &mut response);
        assert_eq!(response[..8], request[..8], "echo of round trip {i}");
    });
    client.close();
    peer.finish(common::EXIT_TIMEOUT);
    let _ = std::fs::remove_dir(&dir);
    stats
}

fn main() {
    common::run_role_if_child(ROLES);

    let cfg = BenchConfig::from_env();
    let only = std::env::var("SHMCALL_BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| name.contains(only.as_str());
    common::print_header(&cfg);

    let mut baseline = None;
    let mut row = |name: &str, bench: &dyn Fn() -> Stats| {
        if run(name) {
            let s = common::report(name, &bench(), baseline.as_ref());
            baseline.get_or_insert(s);
        }
    };
    row("futex ping-pong, sleeping", &|| {
        common::bench_futex_pingpong(&cfg, Duration::ZERO)
    });
    row("futex ping-pong, spinning", &|| {
        common::bench_futex_pingpong(&cfg, SPIN_BUDGET)
    });
    row("unix socketpair echo, 64 B", &|| {
        common::bench_socketpair_echo(&cfg)
    });
    row("shmcall rust, sleeping, 64 B", &|| {
        bench_shmcall(&cfg, Duration::ZERO)
    });
    row("shmcall rust, spinning, 64 B", &|| {
        bench_shmcall(&cfg, SPIN_BUDGET)
    });
}
