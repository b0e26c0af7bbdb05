//! Shared harness for the round-trip benches.
//!
//! Every scenario runs between two processes: the bench binary re-executes
//! itself (`std::env::current_exe()`) with [`ROLE_ENV`] set, and the child turns
//! into the peer named by that variable (see [`run_role_if_child`]). So one
//! binary holds both sides, and a scenario is a pair "parent-side client loop"
//! plus "role run by the child".
//!
//! What is here:
//! - the percentile harness: [`BenchConfig`], [`measure`], [`Stats`],
//!   [`print_header`], [`report`] (Markdown row on stdout, JSON line to the
//!   file named by [`JSON_ENV`]);
//! - role dispatch: [`Role`], [`run_role_if_child`], [`COMMON_ROLES`];
//! - spawning the peer: [`PeerCommand`] and the [`PeerGuard`] that kills and
//!   reaps the child on drop, with bounded [`PeerGuard::wait_ready`] /
//!   [`PeerGuard::finish`]; child-side [`take_inherited_fd`] and
//!   [`signal_ready`];
//! - shared memory helpers: [`create_memfd`], [`SharedMapping`],
//!   [`futex_wait_shared`], [`futex_wake_shared`];
//! - the baselines: [`bench_futex_pingpong`] (raw shared-futex ping-pong) and
//!   [`bench_socketpair_echo`] (Unix socketpair echo), both with a 64-byte
//!   payload each way.

// Several bench targets include this module and each uses only a subset of it.
#![allow(dead_code)]

use std::cell::UnsafeCell;
use std::ffi::c_void;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::ftruncate;

// ---------------------------------------------------------------------------
// Environment variables
// ---------------------------------------------------------------------------

/// Names the role a re-executed child must run. Unset in the parent.
pub const ROLE_ENV: &str = "SHMCALL_BENCH_ROLE";
/// Measured round trips per scenario (default [`DEFAULT_SAMPLES`]).
pub const SAMPLES_ENV: &str = "SHMCALL_BENCH_SAMPLES";
/// Warm-up round trips per scenario, not recorded (default [`DEFAULT_WARMUP`]).
pub const WARMUP_ENV: &str = "SHMCALL_BENCH_WARMUP";
/// If set, one JSON line per scenario is appended to this path.
pub const JSON_ENV: &str = "SHMCALL_BENCH_JSON";
/// Fd number of the child's end of the readiness pipe (set by [`PeerCommand`]).
pub const READY_FD_ENV: &str = "SHMCALL_BENCH_READY_FD";

/// Fd number of the memfd shared page, for the `futex-server` role.
pub const FUTEX_SHM_FD_ENV: &str = "SHMCALL_BENCH_FUTEX_SHM_FD";
/// Spin budget in nanoseconds, for the `futex-server` role.
pub const FUTEX_SPIN_NS_ENV: &str = "SHMCALL_BENCH_FUTEX_SPIN_NS";
/// Fd number of the child's socket, for the `socket-echo-server` role.
pub const SOCKET_FD_ENV: &str = "SHMCALL_BENCH_SOCKET_FD";

pub const DEFAULT_SAMPLES: usize = 20_000;
pub const DEFAULT_WARMUP: usize = 2_000;

/// Bytes carried each way by every baseline round trip.
pub const PAYLOAD_LEN: usize = 64;

/// How long the parent waits for a child to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the parent waits for one reply before giving up (panic).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the parent waits for a told-to-stop child to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// A server child that hears nothing for this long assumes its parent is gone.
pub const SERVER_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads `key` from the environment and parses it; `default` when unset.
/// Panics with the variable's name if it is set but does not parse.
pub fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{key}={s:?} does not parse")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------
// Percentile harness
// ---------------------------------------------------------------------------

/// How many round trips each scenario runs.
#[derive(Debug, Clone, Copy)]
pub struct BenchConfig {
    pub samples: usize,
    pub warmup: usize,
}

impl BenchConfig {
    /// From [`SAMPLES_ENV`] and [`WARMUP_ENV`], defaulting to 20 000 + 2 000.
    pub fn from_env() -> BenchConfig {
        let samples = env_or(SAMPLES_ENV, DEFAULT_SAMPLES);
        assert!(samples > 0, "{SAMPLES_ENV} must be at least 1");
        BenchConfig {
            samples,
            warmup: env_or(WARMUP_ENV, DEFAULT_WARMUP),
        }
    }
}

/// Latency summary of one scenario, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub samples: usize,
    pub warmup: usize,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
}

impl Stats {
    /// Sorts `samples` in place and summarises them (nearest-rank percentiles).
    pub fn from_samples(samples: &mut [u64], warmup: usize) -> Stats {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        let n = samples.len();
        // Nearest rank: the smallest sample with at least `per_mille`/1000 of
        // the samples at or below it.
        let at = |per_mille: usize| samples[(n * per_mille).div_ceil(1000).clamp(1, n) - 1];
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Stats {
            samples: n,
            warmup,
            p50_ns: at(500),
            p99_ns: at(990),
            p999_ns: at(999),
            max_ns: samples[n - 1],
            mean_ns: sum as f64 / n as f64,
        }
    }

    /// p50 of `self` divided by p50 of `baseline`.
    pub fn p50_ratio(&self, baseline: &Stats) -> f64 {
        self.p50_ns as f64 / baseline.p50_ns.max(1) as f64
    }
}

/// Runs `cfg.warmup` unrecorded round trips, then `cfg.samples` timed ones,
/// and summarises them. `round_trip(i)` performs round trip number `i`
/// (counting on from the warm-up, so every call gets a distinct `i`).
///
/// Timing: one `Instant::now()` per round trip; the end of one round trip is
/// the start of the next, so a sample also holds the few nanoseconds of loop
/// and `Vec::push` (into pre-allocated capacity) between two round trips.
pub fn measure(cfg: &BenchConfig, mut round_trip: impl FnMut(u64)) -> Stats {
    let mut samples: Vec<u64> = Vec::with_capacity(cfg.samples);
    let mut i: u64 = 0;
    for _ in 0..cfg.warmup {
        round_trip(i);
        i += 1;
    }
    let mut start = Instant::now();
    for _ in 0..cfg.samples {
        round_trip(i);
        i += 1;
        let end = Instant::now();
        samples.push(u64::try_from((end - start).as_nanos()).unwrap_or(u64::MAX));
        start = end;
    }
    Stats::from_samples(&mut samples, cfg.warmup)
}

/// Number of CPUs this process may run on.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Kernel release, as `uname -r` prints it.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// CPU model name from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// Prints the machine header and the Markdown table header.
pub fn print_header(cfg: &BenchConfig) {
    println!(
        "# shmcall round trips: {} CPUs ({}), Linux {}, {} {}",
        nproc(),
        cpu_model(),
        kernel_release(),
        std::env::consts::ARCH,
        std::env::consts::OS,
    );
    println!(
        "{} samples per scenario after {} warm-up round trips; each round trip is between two processes.",
        cfg.samples, cfg.warmup
    );
    println!();
    println!(
        "| scenario | p50 µs | p99 µs | p99.9 µs | max µs | mean µs | ratio p50 vs baseline |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Prints one Markdown row for `scenario` (ratio column: p50 against
/// `baseline`, or "baseline" when `None`), appends a JSON line to the file
/// named by [`JSON_ENV`] if set, and hands `stats` back for later ratios.
pub fn report(scenario: &str, stats: &Stats, baseline: Option<&Stats>) -> Stats {
    let ratio = baseline.map(|b| stats.p50_ratio(b));
    let ratio_cell = ratio.map_or_else(
        || "baseline".to_owned(),
        |r| {
            // Three significant digits also for ratios well below 1.
            if r >= 1.0 {
                format!("{r:.2}×")
            } else {
                format!("{r:.3}×")
            }
        },
    );
    println!(
        "| {scenario} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {ratio_cell} |",
        us(stats.p50_ns),
        us(stats.p99_ns),
        us(stats.p999_ns),
        us(stats.max_ns),
        stats.mean_ns / 1000.0,
    );
    if let Ok(path) = std::env::var(JSON_ENV)
        && !path.is_empty()
    {
        let line = json_line(scenario, stats, ratio);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {JSON_ENV}={path}: {e}"));
        // One write per line so concurrent appenders do not interleave.
        file.write_all(line.as_bytes())
            .unwrap_or_else(|e| panic!("cannot append to {path}: {e}"));
    }
    *stats
}

/// One JSON object, newline-terminated.
fn json_line(scenario: &str, stats: &Stats, ratio: Option<f64>) -> String {
    let ratio = ratio.map_or_else(|| "null".to_owned(), |r| format!("{r:.4}"));
    format!(
        "{{\"scenario\":{},\"samples\":{},\"warmup\":{},\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{},\"mean_ns\":{:.1},\"ratio_p50_vs_baseline\":{},\"nproc\":{},\"kernel\":{}}}\n",
        json_string(scenario),
        stats.samples,
        stats.warmup,
        stats.p50_ns,
        stats.p99_ns,
        stats.p999_ns,
        stats.max_ns,
        stats.mean_ns,
        ratio,
        nproc(),
        json_string(&kernel_release()),
    )
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// Role dispatch
// ---------------------------------------------------------------------------

/// A peer role: the name put in [`ROLE_ENV`] and the function the child runs.
/// The function reads what it needs from the environment (see
/// [`take_inherited_fd`], [`env_or`]), calls [`signal_ready`] once it can serve,
/// and returns when done; a panic makes the child exit non-zero.
pub type Role = (&'static str, fn());

/// Roles of the baselines in this module.
pub const COMMON_ROLES: &[Role] = &[
    ("futex-server", futex_server_role),
    ("socket-echo-server", socket_echo_server_role),
];

/// Call first in `main`. In the parent ([`ROLE_ENV`] unset) it returns at
/// once. In a child it runs the named role, looked up in `extra_roles` first
/// and then in [`COMMON_ROLES`], and exits the process: status 0 when the role
/// returns, 101 when it panics, 2 for an unknown role. It never returns in a
/// child, so a child can never fall through into the parent's benchmarks.
pub fn run_role_if_child(extra_roles: &[Role]) {
    let Some(name) = std::env::var_os(ROLE_ENV) else {
        return;
    };
    let name = name.to_string_lossy().into_owned();
    let role = extra_roles
        .iter()
        .chain(COMMON_ROLES)
        .find(|(n, _)| *n == name);
    match role {
        Some((_, run)) => {
            run();
            let _ = io::stdout().flush();
            std::process::exit(0);
        }
        None => {
            let known: Vec<&str> = extra_roles
                .iter()
                .chain(COMMON_ROLES)
                .map(|(n, _)| *n)
                .collect();
            eprintln!("{ROLE_ENV}={name:?} is not a known role (known: {known:?})");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------------------
// Spawning the peer
// ---------------------------------------------------------------------------

/// Builds the command that re-executes this binary as a peer role.
#[derive(Debug)]
pub struct PeerCommand<'a> {
    role: String,
    envs: Vec<(String, String)>,
    fds: Vec<(String, BorrowedFd<'a>)>,
}

impl<'a> PeerCommand<'a> {
    pub fn new(role: &str) -> PeerCommand<'a> {
        PeerCommand {
            role: role.to_owned(),
            envs: Vec::new(),
            fds: Vec::new(),
        }
    }

    /// Sets an environment variable in the child.
    pub fn env(mut self, key: &str, value: impl ToString) -> PeerCommand<'a> {
        self.envs.push((key.to_owned(), value.to_string()));
        self
    }

    /// Lets the child inherit `fd` under the same number, which is put in the
    /// child's environment as `env_key`; the child takes it back with
    /// [`take_inherited_fd`]. The parent keeps its own copy: close it after
    /// [`PeerCommand::spawn`] if the child must hold the only one (e.g. so
    /// that the peer's death reads as EOF).
    pub fn pass_fd(mut self, env_key: &str, fd: BorrowedFd<'a>) -> PeerCommand<'a> {
        self.fds.push((env_key.to_owned(), fd));
        self
    }

    /// Starts the child. Its stdin is /dev/null, its stdout goes to the
    /// parent's stderr (so the table on stdout stays clean) and its stderr is
    /// inherited. The child gets SIGKILL if the parent dies (PR_SET_PDEATHSIG;
    /// call `spawn` from the main thread, since the signal follows the thread
    /// that forked).
    pub fn spawn(self) -> PeerGuard {
        let exe = std::env::current_exe().expect("current_exe() failed");
        let (ready_rx, ready_tx) = io::pipe().expect("pipe() for peer readiness failed");

        let mut cmd = Command::new(&exe);
        cmd.env(ROLE_ENV, &self.role)
            .env(READY_FD_ENV, ready_tx.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .stdout(
                io::stderr()
                    .as_fd()
                    .try_clone_to_owned()
                    .expect("dup(stderr) failed"),
            );
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut keep: Vec<RawFd> = vec![ready_tx.as_raw_fd()];
        for (k, fd) in &self.fds {
            cmd.env(k, fd.as_raw_fd().to_string());
            keep.push(fd.as_raw_fd());
        }
        let parent_pid = std::process::id();

        // SAFETY: the closure runs in the forked child before exec, so it must
        // be async-signal-safe: it only calls fcntl, prctl and getppid through
        // libc, iterates a Vec allocated before the fork, and builds io::Error
        // from errno without allocating. The fds it touches are open in the
        // parent (borrowed for 'a or owned by `ready_tx`), hence in the child.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &keep {
                    // Clear FD_CLOEXEC (if set) so this fd survives exec.
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() as u32 != parent_pid {
                    // ESRCH: no such (parent) process. No allocation here.
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot spawn peer role {:?} ({}): {e}",
                self.role,
                exe.display()
            )
        });
        // Our copy of the write end must go, or EOF on the pipe could not
        // tell us that the child died.
        drop(ready_tx);
        PeerGuard {
            role: self.role,
            child: Some(child),
            ready_rx: Some(ready_rx),
        }
    }
}

/// Owns a running peer child. Dropping it (also while unwinding from a
/// panic) kills the child if it still runs and reaps it.
#[derive(Debug)]
pub struct PeerGuard {
    role: String,
    child: Option<Child>,
    ready_rx: Option<io::PipeReader>,
}

impl PeerGuard {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    /// Waits at most `timeout` for the child's [`signal_ready`]. Panics if it
    /// does not come in time or the child exits first.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let rx = self
            .ready_rx
            .take()
            .unwrap_or_else(|| panic!("wait_ready called twice for peer {:?}", self.role));
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let hint = self.exit_status_hint();
                panic!(
                    "peer {:?} (pid {}) not ready within {timeout:?} ({hint})",
                    self.role,
                    self.pid(),
                );
            }
            let mut pfd = libc::pollfd {
                fd: rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: `pfd` is a valid pollfd for the duration of the call and
            // nfds is 1; `rx` keeps the fd open.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                panic!("poll on readiness pipe of peer {:?}: {err}", self.role);
            }
            if n == 0 {
                continue; // timed out; the check at the top panics
            }
            let mut byte = [0u8; 1];
            match (&rx).read(&mut byte) {
                Ok(1) => return,
                Ok(_) => {
                    // EOF: the child closed its end without a byte, i.e. exited.
                    // Give it a moment to be reapable so the message can say how.
                    std::thread::sleep(Duration::from_millis(20));
                    let hint = self.exit_status_hint();
                    panic!(
                        "peer {:?} (pid {}) exited before it was ready ({hint})",
                        self.role,
                        self.pid(),
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read from readiness pipe of peer {:?}: {e}", self.role),
            }
        }
    }

    /// Waits at most `timeout` for the child to exit by itself (after the
    /// parent told it to stop) and panics unless it exited with status 0.
    pub fn finish(mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("peer already reaped");
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    assert!(
                        status.success(),
                        "peer {:?} exited with {status}",
                        self.role
                    );
                    return status;
                }
                Ok(None) if Instant::now() >= deadline => panic!(
                    "peer {:?} (pid {}) still running {timeout:?} after being told to stop",
                    self.role,
                    child.id()
                ),
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("waitpid on peer {:?}: {e}", self.role),
            }
        }
    }

    /// "still running" or how the child exited; for panic messages.
    pub fn exit_status_hint(&mut self) -> String {
        match self.child.as_mut().map(Child::try_wait) {
            None => "already reaped".to_owned(),
            Some(Ok(None)) => "still running".to_owned(),
            Some(Ok(Some(status))) => format!("exited: {status}"),
            Some(Err(e)) => format!("waitpid failed: {e}"),
        }
    }
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        // Never panics: this also runs while unwinding.
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            // Bounded in practice: SIGKILL cannot be caught or ignored.
            let _ = child.wait();
        }
    }
}

/// Child side: takes ownership of the fd whose number the parent put in
/// `env_key` (see [`PeerCommand::pass_fd`]). Call once per key. Panics if the
/// variable is missing or the fd is not open.
pub fn take_inherited_fd(env_key: &str) -> OwnedFd {
    let raw: RawFd = std::env::var(env_key)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{env_key} is not set to an fd number"));
    // SAFETY: fcntl(F_GETFD) only queries the flags of a descriptor number
    // and is harmless on a closed one.
    let open = raw >= 0 && unsafe { libc::fcntl(raw, libc::F_GETFD) } >= 0;
    assert!(open, "{env_key}={raw} is not an open fd");
    // Keep it out of any grandchild.
    // SAFETY: `raw` was just checked to be open; F_SETFD only changes its flags.
    unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the parent handed this descriptor to us through exec and
    // nothing else in this process owns it (each key is taken once).
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// Child side: tells the parent's [`PeerGuard::wait_ready`] that this role
/// can serve. Call once.
pub fn signal_ready() {
    let mut tx = std::fs::File::from(take_inherited_fd(READY_FD_ENV));
    tx.write_all(&[1])
        .expect("cannot write to the readiness pipe");
}

// ---------------------------------------------------------------------------
// Shared memory and the shared futex
// ---------------------------------------------------------------------------

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// A close-on-exec memfd of `len` zero bytes.
pub fn create_memfd(name: &str, len: usize) -> OwnedFd {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC).expect("memfd_create failed");
    ftruncate(&fd, libc::off_t::try_from(len).expect("memfd length"))
        .expect("ftruncate on memfd failed");
    fd
}

/// A read-write MAP_SHARED mapping, unmapped on drop.
#[derive(Debug)]
pub struct SharedMapping {
    ptr: NonNull<c_void>,
    len: usize,
}

impl SharedMapping {
    /// Maps the first `len` bytes of `fd` (which must be at least that long).
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> SharedMapping {
        let size = NonZeroUsize::new(len).expect("mapping length must not be 0");
        // SAFETY: a fresh mapping chosen by the kernel (addr None) aliases no
        // Rust object; the fd is valid for the call, and the mapping stays
        // valid after the fd is closed.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .expect("mmap(MAP_SHARED) failed");
        SharedMapping { ptr, len }
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr().cast()
    }

    pub fn size(&self) -> usize {
        self.len
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made in `new` and unmapped
        // only here; references derived from it borrow `self`, so none outlive it.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// FUTEX_WAIT (shared, i.e. without FUTEX_PRIVATE_FLAG, so it works across
/// processes mapping the same page): sleeps while `*word == expected`, at most
/// `timeout`. Returns on wake-up, value mismatch, signal or timeout alike;
/// callers re-check the word. Panics on unexpected errors.
pub fn futex_wait_shared(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        // Below 10^9, so it fits c_long.
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, 4-byte aligned u32 for the duration of the
    // call; `ts` is a valid relative timeout; uaddr2/val3 are unused by
    // FUTEX_WAIT. The kernel only reads the word.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r < 0 {
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR | libc::ETIMEDOUT) => {}
            _ => panic!("FUTEX_WAIT failed: {err}"),
        }
    }
}

/// FUTEX_WAKE (shared): wakes every waiter on `word`.
pub fn futex_wake_shared(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE only uses its address
    // as a key and ignores the remaining arguments.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            libc::c_int::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r < 0 {
        panic!("FUTEX_WAKE failed: {}", io::Error::last_os_error());
    }
}

// ---------------------------------------------------------------------------
// Baseline A: shared-futex ping-pong
// ---------------------------------------------------------------------------

/// Values of [`PingPongPage::turn`].
const TURN_CLIENT: u32 = 0; // idle, or response ready: the client may act
const TURN_SERVER: u32 = 1; // request ready: the server may act
const TURN_STOP: u32 = 2; // the client is done: the server exits

#[repr(C, align(64))]
struct CacheLine<T>(T);

/// Layout of the shared page. All-zero bytes (a fresh memfd) are a valid
/// initial state: turn = TURN_CLIENT, nobody sleeping.
///
/// `request` and `response` are plain bytes: only the side whose turn it is
/// touches them, and the Release store / Acquire load of `turn` that hands
/// the turn over orders those accesses.
#[repr(C)]
struct PingPongPage {
    turn: CacheLine<AtomicU32>,
    client_sleeping: CacheLine<AtomicU32>,
    server_sleeping: CacheLine<AtomicU32>,
    request: CacheLine<UnsafeCell<[u8; PAYLOAD_LEN]>>,
    response: CacheLine<UnsafeCell<[u8; PAYLOAD_LEN]>>,
}

impl PingPongPage {
    /// Views the start of `map` as the page.
    fn from_mapping(map: &SharedMapping) -> &PingPongPage {
        assert!(map.size() >= size_of::<PingPongPage>());
        // SAFETY: the mapping is page-aligned (so 64-aligned), large enough
        // (checked), lives as long as the returned borrow, and every byte
        // pattern is valid for the fields (atomics and byte arrays). Shared
        // mutation by the other process goes through atomics or UnsafeCell.
        unsafe { &*map.as_ptr().cast::<PingPongPage>() }
    }

    /// Hands the turn over: stores `value`, then wakes the other side only if
    /// it announced it sleeps.
    fn publish(&self, value: u32, other_sleeping: &CacheLine<AtomicU32>) {
        // Release: the payload written before this store becomes visible to
        // the side that Acquire-loads `value`.
        self.turn.0.store(value, Ordering::Release);
        // SeqCst fence: a store-load barrier, so the load of the flag below
        // cannot be satisfied before the store above is visible. Paired with
        // the sleeper's fence between "flag = 1" and its re-check of `turn`,
        // at least one side sees the other's store: either we see the flag and
        // wake, or the sleeper sees the new turn and does not sleep.
        fence(Ordering::SeqCst);
        // Relaxed: the fence above supplies the ordering.
        if other_sleeping.0.load(Ordering::Relaxed) != 0 {
            futex_wake_shared(&self.turn.0);
        }
    }

    /// Waits until `turn` is `want` or TURN_STOP and returns it: first spins
    /// for up to `spin` (checking the clock every 64 polls, and only starting
    /// it after the first 64 so a quick answer costs no clock read), then
    /// sleeps on the shared futex. Returns `None` if `timeout` passes in the
    /// sleeping phase.
    fn wait_turn(
        &self,
        want: u32,
        my_sleeping: &CacheLine<AtomicU32>,
        spin: Duration,
        timeout: Duration,
    ) -> Option<u32> {
        let turn = &self.turn.0;
        let done = |v: u32| v == want || v == TURN_STOP;
        if !spin.is_zero() {
            let mut started: Option<Instant> = None;
            loop {
                for _ in 0..64 {
                    // Acquire: pairs with the Release in `publish`, so the
                    // payload is visible once we see our turn.
                    let v = turn.load(Ordering::Acquire);
                    if done(v) {
                        return Some(v);
                    }
                    std::hint::spin_loop();
                }
                match started {
                    None => started = Some(Instant::now()),
                    Some(t) if t.elapsed() >= spin => break,
                    Some(_) => {}
                }
            }
        }
        let deadline = Instant::now() + timeout;
        let flag = &my_sleeping.0;
        loop {
            // Relaxed: ordered against the re-check below by the fence.
            flag.store(1, Ordering::Relaxed);
            // SeqCst fence: store-load barrier between "I sleep" and the
            // re-check of `turn`; pairs with the fence in `publish` (see there).
            fence(Ordering::SeqCst);
            // Acquire: as in the spin loop.
            let v = turn.load(Ordering::Acquire);
            if done(v) {
                // Relaxed: a late-seen 1 only costs the peer a spare wake.
                flag.store(0, Ordering::Relaxed);
                return Some(v);
            }
            let now = Instant::now();
            if now >= deadline {
                flag.store(0, Ordering::Relaxed);
                return None;
            }
            // Sleeps only if `turn` still holds `v`; a publish in between
            // makes it return at once (EAGAIN).
            futex_wait_shared(turn, v, deadline - now);
            // Relaxed: as above; the loop re-checks `turn` with Acquire.
            flag.store(0, Ordering::Relaxed);
        }
    }
}

/// Baseline A: raw shared-futex ping-pong with a 64-byte payload each way
/// between this process (client) and a `futex-server` child. `spin` is each
/// side's spin budget before it sleeps (zero: sleep every time).
pub fn bench_futex_pingpong(cfg: &BenchConfig, spin: Duration) -> Stats {
    let len = page_size();
    assert!(size_of::<PingPongPage>() <= len);
    let fd = create_memfd("shmcall-bench-futex", len);
    let map = SharedMapping::new(fd.as_fd(), len);
    let page = PingPongPage::from_mapping(&map);

    let mut peer = PeerCommand::new("futex-server")
        .pass_fd(FUTEX_SHM_FD_ENV, fd.as_fd())
        .env(FUTEX_SPIN_NS_ENV, spin.as_nanos())
        .spawn();
    drop(fd); // the mapping keeps the memory; the child has its own fd
    peer.wait_ready(READY_TIMEOUT);

    let mut request = [0u8; PAYLOAD_LEN];
    for (j, b) in request.iter_mut().enumerate() {
        *b = j as u8;
    }
    let stats = measure(cfg, |i| {
        request[..8].copy_from_slice(&i.to_le_bytes());
        // SAFETY: turn == TURN_CLIENT here (initially, and after every wait
        // below), so the server does not touch `request`.
        unsafe { page.request.0.get().write(request) };
        page.publish(TURN_SERVER, &page.server_sleeping);
        match page.wait_turn(TURN_CLIENT, &page.client_sleeping, spin, REPLY_TIMEOUT) {
            Some(TURN_CLIENT) => {}
            other => panic!(
                "futex-server (pid {}) did not answer round trip {i} within {REPLY_TIMEOUT:?} (turn {other:?}, {})",
                peer.pid(),
                peer.exit_status_hint()
            ),
        }
        // SAFETY: turn == TURN_CLIENT (Acquire-loaded), so the server has
        // finished writing `response` and will not touch it until we publish.
        let response = unsafe { page.response.0.get().read() };
        assert!(
            response == request,
            "futex-server echoed a wrong payload in round trip {i}"
        );
    });

    page.publish(TURN_STOP, &page.server_sleeping);
    peer.finish(EXIT_TIMEOUT);
    stats
}

/// Role `futex-server`: echoes the request into the response until TURN_STOP.
fn futex_server_role() {
    let fd = take_inherited_fd(FUTEX_SHM_FD_ENV);
    let spin = Duration::from_nanos(env_or(FUTEX_SPIN_NS_ENV, 0u64));
    let map = SharedMapping::new(fd.as_fd(), page_size());
    drop(fd);
    let page = PingPongPage::from_mapping(&map);
    signal_ready();
    loop {
        match page.wait_turn(
            TURN_SERVER,
            &page.server_sleeping,
            spin,
            SERVER_IDLE_TIMEOUT,
        ) {
            Some(TURN_SERVER) => {}
            Some(_) => return, // TURN_STOP
            None => panic!("futex-server: no request for {SERVER_IDLE_TIMEOUT:?}, giving up"),
        }
        // SAFETY: turn == TURN_SERVER (Acquire-loaded): the client has written
        // `request` and touches neither buffer until we publish.
        let request = unsafe { page.request.0.get().read() };
        // SAFETY: as above.
        unsafe { page.response.0.get().write(request) };
        page.publish(TURN_CLIENT, &page.client_sleeping);
    }
}

// ---------------------------------------------------------------------------
// Baseline B: Unix socketpair echo
// ---------------------------------------------------------------------------

/// Baseline B: a 64-byte write and 64-byte read on a `socketpair(AF_UNIX,
/// SOCK_STREAM)` whose other end a `socket-echo-server` child echoes.
pub fn bench_socketpair_echo(cfg: &BenchConfig) -> Stats {
    let (mine, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .expect("socketpair failed");
    let mut peer = PeerCommand::new("socket-echo-server")
        .pass_fd(SOCKET_FD_ENV, theirs.as_fd())
        .spawn();
    // The child must hold the only copy, so its death reads as EOF here.
    drop(theirs);
    peer.wait_ready(READY_TIMEOUT);

    let mut sock = UnixStream::from(mine);
    sock.set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("SO_RCVTIMEO");
    sock.set_write_timeout(Some(REPLY_TIMEOUT))
        .expect("SO_SNDTIMEO");

    let mut request = [0u8; PAYLOAD_LEN];
    for (j, b) in request.iter_mut().enumerate() {
        *b = j as u8;
    }
    let mut response = [0u8; PAYLOAD_LEN];
    let stats = measure(cfg, |i| {
        request[..8].copy_from_slice(&i.to_le_bytes());
        if let Err(e) = sock.write_all(&request) {
            panic!(
                "socket-echo-server (pid {}): write in round trip {i}: {e} ({})",
                peer.pid(),
                peer.exit_status_hint()
            );
        }
        if let Err(e) = sock.read_exact(&mut response) {
            panic!(
                "socket-echo-server (pid {}): no echo in round trip {i} within {REPLY_TIMEOUT:?}: {e} ({})",
                peer.pid(),
                peer.exit_status_hint()
            );
        }
        assert!(
            response == request,
            "socket-echo-server echoed a wrong payload in round trip {i}"
        );
    });

    drop(sock); // EOF tells the server to exit
    peer.finish(EXIT_TIMEOUT);
    stats
}

/// Role `socket-echo-server`: echoes 64-byte messages until EOF.
fn socket_echo_server_role() {
    let mut sock = UnixStream::from(take_inherited_fd(SOCKET_FD_ENV));
    sock.set_read_timeout(Some(SERVER_IDLE_TIMEOUT))
        .expect("SO_RCVTIMEO");
    signal_ready();
    let mut buf = [0u8; PAYLOAD_LEN];
    loop {
        match sock.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return,
            Err(e) => panic!("socket-echo-server: read: {e}"),
        }
        sock.write_all(&buf)
            .unwrap_or_else(|e| panic!("socket-echo-server: write: {e}"));
    }
}
