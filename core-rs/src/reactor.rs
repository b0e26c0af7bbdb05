//! The one waiter of a process: a thread that watches every socket of every connection,
//! listener and handshake of the process with one `epoll` instance, and runs their deadlines.
//!
//! It never runs user code and never blocks on anything but `epoll_wait`: what it finds, it
//! hands on — a WAKE frame or a backup command to the thread that owns the connection
//! ([`crate::owner`]), a peer's death to every waiter of the connection — and goes back to
//! waiting. So it notices a peer's death while every other thread of the process is busy, and
//! the number of library threads stays the same whatever the number of connections
//! (docs/architecture.md, "Threads").
//!
//! Sources register a descriptor with an interest and get a [`Token`]; events and deadlines
//! reach them through [`Source`] on the reactor's thread. A token names one registration: its
//! table index and a generation, so an event or deadline left over from a removed source never
//! reaches the source that reuses its index.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::status::{Error, Status};

/// Names one registration: `generation << 32 | index`.
pub type Token = u64;

/// Readiness to read, and the peer's end of the stream.
pub const READ: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
/// The peer's end of the stream only (a source that stopped reading for now).
pub const HANGUP: u32 = libc::EPOLLRDHUP as u32;
/// Readiness to write.
pub const WRITE: u32 = libc::EPOLLOUT as u32;
/// The bits of an event that say the stream ended or failed.
pub const ENDED: u32 = (libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32;

/// Something the reactor watches.
pub trait Source: Send + Sync + 'static {
    /// Its descriptor is ready (`events`: epoll's bits). Runs on the reactor's thread: it must
    /// not block.
    fn ready(self: Arc<Self>, events: u32);
    /// A deadline set with [`Reactor::deadline`] passed. Runs on the reactor's thread.
    fn expired(self: Arc<Self>) {}
}

/// The token of the reactor's own eventfd (never a table entry's: generations start at 1).
const BELL: u64 = 0;

struct Entry {
    generation: u32,
    source: Option<Arc<dyn Source>>,
    /// The descriptor watched for it, once [`Reactor::watch`] added one.
    fd: Option<RawFd>,
}

#[derive(Default)]
struct Table {
    entries: Vec<Entry>,
    free: Vec<u32>,
}

impl Table {
    /// `token`'s entry, if it is live.
    fn live(&mut self, token: Token) -> Option<&mut Entry> {
        self.entries
            .get_mut((token & 0xffff_ffff) as usize)
            .filter(|e| u64::from(e.generation) == token >> 32 && e.source.is_some())
    }
}

/// See the module doc.
pub struct Reactor {
    epoll: OwnedFd,
    /// An eventfd that ends the reactor's wait (a deadline earlier than the one it sleeps to).
    bell: OwnedFd,
    table: Mutex<Table>,
    timers: Mutex<BinaryHeap<Reverse<(Instant, Token)>>>,
    /// The deadline the reactor's current wait ends at, in ns since [`Reactor::origin`]
    /// (`u64::MAX`: none), so that an earlier one rings the bell.
    sleeps_until: AtomicU64,
    origin: Instant,
    thread: OnceLock<std::thread::ThreadId>,
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("sources", &self.sources())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn os_error(what: &str) -> Error {
    Error::io(what, std::io::Error::last_os_error())
}

static REACTOR: OnceLock<Result<&'static Reactor, Error>> = OnceLock::new();

impl Reactor {
    /// The reactor of this process, started on first use.
    pub fn get() -> Result<&'static Reactor, Error> {
        REACTOR.get_or_init(Reactor::start).clone()
    }

    fn start() -> Result<&'static Reactor, Error> {
        // SAFETY: plain system calls; a returned descriptor is owned at once below.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(os_error("cannot create the epoll instance"));
        }
        // SAFETY: `epoll` is a descriptor we just created and nobody else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        // SAFETY: as above.
        let bell = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if bell < 0 {
            return Err(os_error("cannot create the reactor's eventfd"));
        }
        // SAFETY: as above.
        let bell = unsafe { OwnedFd::from_raw_fd(bell) };
        let reactor: &'static Reactor = Box::leak(Box::new(Reactor {
            epoll,
            bell,
            table: Mutex::new(Table::default()),
            timers: Mutex::new(BinaryHeap::new()),
            sleeps_until: AtomicU64::new(u64::MAX),
            origin: Instant::now(),
            thread: OnceLock::new(),
        }));
        reactor.ctl(
            libc::EPOLL_CTL_ADD,
            reactor.bell.as_raw_fd(),
            libc::EPOLLIN as u32,
            BELL,
        )?;
        std::thread::Builder::new()
            .name("shmcall-io".into())
            .spawn(move || {
                let _ = reactor.thread.set(std::thread::current().id());
                reactor.run();
            })
            .map_err(|e| Error::io("cannot start the shmcall-io thread", e))?;
        Ok(reactor)
    }

    /// Whether the caller runs on the reactor's thread.
    pub fn is_current(&self) -> bool {
        self.thread.get() == Some(&std::thread::current().id())
    }

    /// Sources registered now.
    pub fn sources(&self) -> usize {
        let t = lock(&self.table);
        t.entries.len() - t.free.len()
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, interest: u32, token: Token) -> Result<(), Error> {
        let mut event = libc::epoll_event {
            events: interest,
            u64: token,
        };
        // SAFETY: `epoll` is our epoll descriptor; `event` is a valid epoll_event for the call.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(os_error("epoll_ctl failed"));
        }
        Ok(())
    }

    /// Watches `fd` for `interest` ([`READ`], [`WRITE`]…); events reach `source` until
    /// [`Reactor::remove`]. Level-triggered: a source that leaves bytes unread hears of them
    /// again.
    pub fn add(&self, fd: RawFd, interest: u32, source: Arc<dyn Source>) -> Result<Token, Error> {
        let token = self.enlist(source)?;
        if let Err(e) = self.watch(token, fd, interest) {
            self.forget(token);
            return Err(e);
        }
        Ok(token)
    }

    /// A token for `source` without a descriptor yet: it receives deadlines, and events once
    /// [`Reactor::watch`] adds one.
    pub fn enlist(&self, source: Arc<dyn Source>) -> Result<Token, Error> {
        let mut t = lock(&self.table);
        let index = match t.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(t.entries.len()).map_err(|_| {
                    Error::new(Status::Io, "the reactor watches 2^32 sources already")
                })?;
                t.entries.push(Entry {
                    generation: 0,
                    source: None,
                    fd: None,
                });
                i
            }
        };
        let e = &mut t.entries[index as usize];
        e.generation = e.generation.checked_add(1).unwrap_or(1);
        e.source = Some(source);
        e.fd = None;
        Ok(u64::from(e.generation) << 32 | u64::from(index))
    }

    /// Watches `fd` for `interest` on behalf of an enlisted `token`.
    pub fn watch(&self, token: Token, fd: RawFd, interest: u32) -> Result<(), Error> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, interest, token)?;
        if let Some(e) = lock(&self.table).live(token) {
            e.fd = Some(fd);
        }
        Ok(())
    }

    /// Stops watching `fd` but keeps `token` for its deadlines (a source that waits for
    /// something else before it acts on the descriptor's state).
    pub fn unwatch(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Changes what `fd` (registered as `token`) is watched for.
    pub fn modify(&self, token: Token, fd: RawFd, interest: u32) {
        // Fails only for a descriptor already removed, whose source no longer cares.
        let _ = self.ctl(libc::EPOLL_CTL_MOD, fd, interest, token);
    }

    /// Stops watching `fd`; no event or deadline reaches its source afterwards (one being
    /// delivered right now may still run). Call it before the descriptor is closed.
    pub fn remove(&self, token: Token, fd: RawFd) {
        if self.forget(token) {
            let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, token);
        }
    }

    /// Frees the entry of `token`, a source enlisted without a descriptor: no deadline reaches
    /// it afterwards (one being delivered right now may still run).
    pub fn dismiss(&self, token: Token) {
        self.forget(token);
    }

    /// Frees `token`'s entry; returns whether it was live.
    fn forget(&self, token: Token) -> bool {
        self.forget_watched(token).is_some()
    }

    /// Frees `token`'s entry; if it was live, returns the descriptor watched for it (if any).
    fn forget_watched(&self, token: Token) -> Option<Option<RawFd>> {
        let (source, fd) = {
            let mut t = lock(&self.table);
            let e = t.live(token)?;
            let source = e.source.take();
            let fd = e.fd.take();
            t.free.push((token & 0xffff_ffff) as u32);
            (source, fd)
        };
        // Dropped outside the lock: the last holder of a connection lets its segment go, which
        // may set a deadline or enlist here (`crate::warm`).
        drop(source);
        Some(fd)
    }

    /// Runs a source's code; a panic there (a bug) costs that source, not the thread every
    /// connection of the process depends on: it is no longer watched, and the process serves on.
    fn contain(&self, token: Token, what: &str, f: impl FnOnce()) {
        if catch_unwind(AssertUnwindSafe(f)).is_ok() {
            return;
        }
        if let Some(Some(fd)) = self.forget_watched(token) {
            let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, token);
        }
        eprintln!(
            "shmcall: a bug: the I/O thread caught a panic in {what}, above, and stopped watching that source; the process serves on"
        );
    }

    fn source(&self, token: Token) -> Option<Arc<dyn Source>> {
        let t = lock(&self.table);
        let e = t.entries.get((token & 0xffff_ffff) as usize)?;
        (u64::from(e.generation) == token >> 32)
            .then(|| e.source.clone())
            .flatten()
    }

    /// Calls `token`'s [`Source::expired`] at `at` (or soon after), unless it was removed.
    pub fn deadline(&self, token: Token, at: Instant) {
        lock(&self.timers).push(Reverse((at, token)));
        let at_ns = self.nanos(at);
        // Acquire: pairs with the Release store of the reactor before it sleeps; a deadline
        // earlier than the one it sleeps to ends the sleep.
        if at_ns < self.sleeps_until.load(Ordering::Acquire) && !self.is_current() {
            self.ring();
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a valid buffer to our eventfd.
        unsafe { libc::write(self.bell.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// The time to the next deadline, in whole milliseconds rounded up (-1: none), and that
    /// deadline.
    fn next_timeout(&self) -> (libc::c_int, u64) {
        let timers = lock(&self.timers);
        match timers.peek() {
            None => (-1, u64::MAX),
            Some(Reverse((at, _))) => {
                let left = at.saturating_duration_since(Instant::now());
                let ms = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int;
                (ms, self.nanos(*at))
            }
        }
    }

    fn fire_deadlines(&self) {
        let now = Instant::now();
        loop {
            let due = {
                let mut timers = lock(&self.timers);
                match timers.peek() {
                    Some(Reverse((at, _))) if *at <= now => timers.pop().map(|Reverse(t)| t.1),
                    _ => None,
                }
            };
            let Some(token) = due else { return };
            if let Some(source) = self.source(token) {
                self.contain(token, "a deadline", || source.expired());
            }
        }
    }

    fn run(&self) {
        const BATCH: usize = 256;
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; BATCH];
        loop {
            let (timeout, until) = self.next_timeout();
            // Release: pairs with the Acquire load in `deadline`.
            self.sleeps_until.store(until, Ordering::Release);
            // A deadline pushed between `next_timeout` and this store was earlier than `until`
            // and rang the bell (it read a later `sleeps_until`, or this one): nothing is lost.
            // SAFETY: `events` is valid for BATCH entries; `epoll` is our descriptor.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    BATCH as libc::c_int,
                    timeout,
                )
            };
            self.sleeps_until.store(u64::MAX, Ordering::Release);
            if n < 0 {
                // EINTR: a signal; anything else cannot happen with valid arguments.
                continue;
            }
            for e in &events[..n as usize] {
                let (token, bits) = (e.u64, e.events);
                if token == BELL {
                    let mut buf = [0u8; 8];
                    // SAFETY: reads 8 bytes into a valid buffer from our non-blocking eventfd.
                    unsafe { libc::read(self.bell.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
                    continue;
                }
                if let Some(source) = self.source(token) {
                    self.contain(token, "a descriptor's readiness", || source.ready(bits));
                }
            }
            self.fire_deadlines();
        }
    }
}

/// A deadline `after` from now, saturating far in the future.
pub fn after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc::{Receiver, Sender, channel};

    struct Probe {
        seen: Mutex<Sender<(u32, bool)>>,
    }

    impl Source for Probe {
        fn ready(self: Arc<Self>, events: u32) {
            let _ = lock(&self.seen).send((events, false));
        }
        fn expired(self: Arc<Self>) {
            let _ = lock(&self.seen).send((0, true));
        }
    }

    struct Panicky;

    impl Source for Panicky {
        fn ready(self: Arc<Self>, _: u32) {
            panic!("a source with a bug");
        }
    }

    #[test]
    fn a_source_that_panics_is_dropped_and_the_reactor_serves_on() {
        let r = Reactor::get().unwrap();
        let (bad, mut bad_peer) = UnixStream::pair().unwrap();
        let bad_token = r.add(bad.as_raw_fd(), READ, Arc::new(Panicky)).unwrap();
        bad_peer.write_all(b"x").unwrap();
        // The panicking source is dropped (and its descriptor no longer watched, so its unread
        // byte does not keep the reactor busy)...
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.source(bad_token).is_some() {
            assert!(
                Instant::now() < deadline,
                "the panicking source was not dropped"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // ...and the reactor's thread still serves others.
        let ((a, _b), token, rx) = probed(r, b"y");
        let (events, _) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("served after a panic");
        assert!(events & libc::EPOLLIN as u32 != 0);
        r.remove(token, a.as_raw_fd());
    }

    /// A socket pair whose first end a [`Probe`] watches, with `bytes` already sent to it: the
    /// pair, the token, and what the probe hears.
    type Probed = ((UnixStream, UnixStream), Token, Receiver<(u32, bool)>);

    fn probed(r: &Reactor, bytes: &[u8]) -> Probed {
        let (a, mut b) = UnixStream::pair().unwrap();
        let (tx, rx) = channel();
        let probe = Arc::new(Probe {
            seen: Mutex::new(tx),
        });
        let token = r.add(a.as_raw_fd(), READ, probe).unwrap();
        b.write_all(bytes).unwrap();
        ((a, b), token, rx)
    }

    #[test]
    fn a_deadline_set_from_another_thread_cuts_the_reactors_sleep_short() {
        // A reactor of its own: no other test's deadline wakes it.
        let r = Reactor::start().unwrap();
        let (tx, rx) = channel();
        let probe = |tx| {
            Arc::new(Probe {
                seen: Mutex::new(tx),
            })
        };
        let far = r.enlist(probe(tx.clone())).unwrap();
        r.deadline(far, Instant::now() + Duration::from_secs(60));
        // Acquire: pairs with the reactor's Release store before it sleeps.
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.sleeps_until.load(Ordering::Acquire) == u64::MAX {
            assert!(
                Instant::now() < deadline,
                "the reactor never slept toward its deadline"
            );
            std::thread::yield_now();
        }
        let near = r.enlist(probe(tx)).unwrap();
        r.deadline(near, Instant::now() + Duration::from_millis(20));
        let (_, timer) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a nearer deadline set from this thread fires, not the far one's 60 s later");
        assert!(timer);
    }

    #[test]
    fn a_source_hears_of_its_descriptor_and_its_deadline_until_removed() {
        let r = Reactor::get().unwrap();
        let ((a, b), token, rx) = probed(r, b"x");
        let (events, timer) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(!timer && events & libc::EPOLLIN as u32 != 0);
        r.modify(token, a.as_raw_fd(), HANGUP);
        r.deadline(token, Instant::now() + Duration::from_millis(20));
        // Readiness reported before the change may still arrive first.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, timer) = rx.recv_timeout(left).expect("the deadline fired");
            if timer {
                break;
            }
        }
        r.remove(token, a.as_raw_fd());
        r.deadline(token, Instant::now());
        drop(b);
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "nothing reaches a removed source"
        );
    }
}
