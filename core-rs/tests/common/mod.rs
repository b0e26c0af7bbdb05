//! Harness for tests with real peer processes: every wait is bounded, every child is killed
//! and reaped when its guard drops (also when an assertion fails).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shmcall_core::{ConnInfo, ConnectOptions, Error, Geometry, Handler, ServeOptions};

/// Upper bound of any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub mod load;
pub mod scribble;

/// A count from environment variable `var`, or `default`.
pub fn trials(var: &str, default: usize) -> usize {
    std::env::var(var).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{var} must be a count, not {v:?}"))
    })
}

/// The seed of a randomized test: `SHMCALL_FAULT_SEED` (to replay a run), or the clock.
/// Printed, so that a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("SHMCALL_FAULT_SEED").map_or_else(
        |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |v| v.parse().expect("SHMCALL_FAULT_SEED must be a number"),
    );
    println!("{test}: SHMCALL_FAULT_SEED={seed}");
    seed
}

/// A private socket directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "shmcall-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Names of the files in the directory.
    pub fn entries(&self) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            socket_dir: Some(self.0.clone()),
            ..ConnectOptions::default()
        }
    }

    /// A server in this directory with two workers, so commands run inline and on the pool.
    pub fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            workers: 2,
            socket_dir: Some(self.0.clone()),
            ..ServeOptions::default()
        }
    }

    pub fn connect_options_with(&self, geometry: Geometry) -> ConnectOptions {
        ConnectOptions {
            geometry,
            ..self.connect_options()
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `shmcall-peer` binary: cargo names it for the core's own tests; the bindings' tests,
/// which share this harness, find it beside their own executable (`target/<profile>/`), where
/// `cargo test --workspace` builds it.
pub fn peer_exe() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_shmcall-peer") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let peer = dir.join("shmcall-peer");
    assert!(
        peer.exists(),
        "{} is missing: build it with `cargo build -p shmcall-core --bin shmcall-peer`",
        peer.display()
    );
    peer
}

/// A peer process and the lines it printed.
pub struct Peer {
    child: Child,
    _stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Peer {
    fn spawn(mode: &str, dir: &Path, ic_id: &str, extra: &[&str]) -> Peer {
        let mut peer = Peer::start(mode, dir, ic_id, extra);
        peer.expect("ready");
        peer
    }

    /// A peer in `mode`, started but not waited for: it may not have connected yet.
    pub fn start(mode: &str, dir: &Path, ic_id: &str, extra: &[&str]) -> Peer {
        let mut child = Command::new(peer_exe())
            .arg(mode)
            .arg(ic_id)
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn shmcall-peer");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Peer {
            child,
            _stdin: stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// A server peer, ready to accept.
    pub fn server(dir: &TempDir, ic_id: &str, extra: &[&str]) -> Peer {
        Peer::spawn("serve", dir.path(), ic_id, extra)
    }

    /// A server peer of another mode (`hostile-serve`), ready to accept.
    pub fn server_mode(mode: &str, dir: &TempDir, ic_id: &str, extra: &[&str]) -> Peer {
        Peer::spawn(mode, dir.path(), ic_id, extra)
    }

    /// A client peer, connected and past its setup.
    pub fn client(dir: &TempDir, ic_id: &str, extra: &[&str]) -> Peer {
        Peer::spawn("client", dir.path(), ic_id, extra)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line that starts with `prefix` (earlier lines are kept in `seen`).
    pub fn expect(&mut self, prefix: &str) -> String {
        self.expect_or_exit(prefix).unwrap_or_else(|| {
            panic!(
                "peer exited before printing {prefix:?}; saw {:?}",
                self.seen
            )
        })
    }

    /// Like [`Peer::expect`], but `None` if the peer exits first.
    pub fn expect_or_exit(&mut self, prefix: &str) -> Option<String> {
        self.expect_within(prefix, WAIT)
    }

    /// Like [`Peer::expect_or_exit`], waiting up to `wait` (for a peer with a long run).
    pub fn expect_within(&mut self, prefix: &str, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no line starting with {prefix:?} within {wait:?}; saw {:?}",
                        self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Kills the peer with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes the peer's stdin, which ends it cleanly, and waits (bounded) for it to exit.
    pub fn stop(&mut self) {
        self._stdin = None;
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "peer {} did not exit within {WAIT:?} after its stdin closed",
            self.pid()
        );
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `f` on a thread and fails the test if it takes longer than `WAIT`.
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(WAIT) {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {WAIT:?}"),
    }
}

/// A server's view of its connections: `open` and `close` counted per connection.
#[derive(Default)]
pub struct Counts {
    pub opened: HashMap<u64, u32>,
    pub closed: HashMap<u64, u32>,
    pub refused: Vec<String>,
}

#[derive(Default)]
pub struct Tallied {
    pub counts: Mutex<Counts>,
    pub changed: Condvar,
}

impl Tallied {
    /// Waits (up to [`WAIT`]) until `done` holds of the counts, and returns them locked;
    /// panics with `why` of the counts if it does not.
    pub fn until(
        &self,
        done: impl Fn(&Counts) -> bool,
        why: impl Fn(&Counts) -> String,
    ) -> MutexGuard<'_, Counts> {
        let deadline = Instant::now() + WAIT;
        let mut counts = self.counts.lock().unwrap();
        while !done(&counts) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{}", why(&counts));
            counts = self.changed.wait_timeout(counts, left).unwrap().0;
        }
        counts
    }
}

/// The server's handler: the peers' echo and checksum, counting connections in a `Tallied`
/// the test keeps a handle on.
pub struct Counting(pub Arc<Tallied>);

impl std::ops::Deref for Counting {
    type Target = Tallied;

    fn deref(&self) -> &Tallied {
        &self.0
    }
}

impl Handler for Counting {
    type Context = ();

    fn open(&self, conn: &ConnInfo) -> Result<(), Error> {
        *self
            .counts
            .lock()
            .unwrap()
            .opened
            .entry(conn.id)
            .or_default() += 1;
        self.changed.notify_all();
        Ok(())
    }

    fn exec(&self, command: shmcall_core::Command, _conn: &ConnInfo, _context: &()) {
        load::answer(command);
    }

    fn close(&self, conn: &ConnInfo, _context: &()) {
        *self
            .counts
            .lock()
            .unwrap()
            .closed
            .entry(conn.id)
            .or_default() += 1;
        self.changed.notify_all();
    }

    fn refused(&self, _peer: Option<&ConnInfo>, why: &Error) {
        self.counts
            .lock()
            .unwrap()
            .refused
            .push(why.message().to_string());
        self.changed.notify_all();
    }
}

/// A handler that keeps every command, unanswered, for the test to hold or answer in its place:
/// they come out of the receiver.
pub fn keeping() -> (impl Handler<Context = ()>, Receiver<shmcall_core::Command>) {
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let handler = shmcall_core::handlers(
        |_| Ok(()),
        move |c, _, _: &()| tx.lock().unwrap().send(c).unwrap(),
        |_, _| {},
    );
    (handler, rx)
}
