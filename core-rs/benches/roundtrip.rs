//! Round-trip latency between two processes on one host.
//!
//! `cargo bench --bench roundtrip` prints a Markdown table: the baselines
//! (shared-futex ping-pong, sleeping and spinning; Unix socketpair echo), each
//! with a 64-byte payload each way. Environment: `SHMCALL_BENCH_SAMPLES`
//! (default 20000), `SHMCALL_BENCH_WARMUP` (default 2000), `SHMCALL_BENCH_JSON`
//! (append one JSON line per scenario to that file).
//!
//! Each scenario's peer is this same binary re-executed with
//! `SHMCALL_BENCH_ROLE` set; see `common::run_role_if_child`.
#![deny(clippy::undocumented_unsafe_blocks)]

mod common;

use std::time::Duration;

use common::{BenchConfig, Role};

/// Spin budget of the "spinning" futex variant: long enough that both sides
/// stay in their spin window for the whole run.
const SPIN_BUDGET: Duration = Duration::from_micros(50);

/// Peer roles defined in this file, looked up before `common::COMMON_ROLES`.
/// To add one: write `fn my_server() { ...; common::signal_ready(); ... }`,
/// add `("my-server", my_server)` here, and spawn it from the parent with
/// `common::PeerCommand::new("my-server")`.
const ROLES: &[Role] = &[];

fn main() {
    common::run_role_if_child(ROLES);

    let cfg = BenchConfig::from_env();
    common::print_header(&cfg);

    let baseline = common::report(
        "futex ping-pong, sleeping",
        &common::bench_futex_pingpong(&cfg, Duration::ZERO),
        None,
    );
    common::report(
        "futex ping-pong, spinning",
        &common::bench_futex_pingpong(&cfg, SPIN_BUDGET),
        Some(&baseline),
    );
    common::report(
        "unix socketpair echo, 64 B",
        &common::bench_socketpair_echo(&cfg),
        Some(&baseline),
    );
}
