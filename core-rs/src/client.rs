//! The client: connects to an ic id, creates the connection's segment, and issues commands
//! synchronously (the calling thread waits) or asynchronously (a completion runs later).
//!
//! # Who pops the SC ring
//!
//! The SC ring has one consumer at a time: whoever holds the **consumer role** (a flag in this
//! process). A synchronous caller waiting for its slot takes the role if it is free and pops
//! answers itself — so a purely synchronous client answers its caller with no thread hop. It
//! completes whatever else it pops: other callers' slots (they are woken), asynchronous
//! commands (queued for the reaper). A caller that finds the role taken waits on a local
//! [`Event`] until its slot is done or the role is free.
//!
//! The **reaper** thread runs asynchronous completions, and takes the consumer role only while
//! asynchronous commands are in the ring. It never runs a completion while holding the role, so
//! a completion may itself issue synchronous commands.
//!
//! # Slot states
//!
//! `FREE` (on the free list) → `OWNED` (a caller prepares it) → `SUBMITTED` (its offset went on
//! the CS ring) → `COMPLETING` (one thread won the right to record its result) → `DONE` → `FREE`.
//! The answer from the ring and the connection's end race for `SUBMITTED → COMPLETING`; the
//! compare-and-swap makes exactly one of them deliver.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::channel::{self, Event, Sender};
use crate::endpoint::Endpoint;
use crate::hub::thread_token;
use crate::ring::{FutexPark, Ring, Spin};
use crate::segment::{
    CLASSES, Geometry, MAX_AREA, PROTOCOL_MAJOR, PROTOCOL_MINOR, Segment, SlotRef,
};
use crate::server::Poller;
use crate::slot::{Area, Mode, Request};
use crate::stats::Stats;
use crate::status::{Error, Status};
use crate::wire::{self, Message};

const FREE: u32 = 0;
const OWNED: u32 = 1;
const SUBMITTED: u32 = 2;
const COMPLETING: u32 = 3;
const DONE: u32 = 4;

/// How a client connects.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The shape of the connection's segment.
    pub geometry: Geometry,
    /// How long a waiting thread spins before it sleeps.
    pub spin: Duration,
    /// Bound on the handshake.
    pub handshake_timeout: Duration,
    /// Server user ids accepted besides this process's own.
    pub allow_server_uids: Vec<u32>,
    /// The socket directory; `None` means the default (see [`crate::endpoint`]).
    pub socket_dir: Option<std::path::PathBuf>,
    /// The protocol major announced in the hello. Only tests change it, to provoke a mismatch.
    #[doc(hidden)]
    pub protocol_major: u16,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            geometry: Geometry::default(),
            spin: Duration::from_micros(50),
            handshake_timeout: Duration::from_secs(5),
            allow_server_uids: Vec::new(),
            socket_dir: None,
            protocol_major: PROTOCOL_MAJOR,
        }
    }
}

/// A command's answer: the server's status and how many output bytes it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The server's status (always >= 0: library statuses arrive as [`Error`]s).
    pub status: i32,
    /// Output bytes the server wrote.
    pub length: u32,
}

type Completion = Box<dyn FnOnce(Ticket) + Send>;

/// Per-slot bookkeeping of this process (the authoritative copy; the segment's header is the
/// peer's to scribble on).
#[derive(Default)]
struct SlotState {
    state: AtomicU32,
    generation: AtomicU32,
    output_cap: AtomicU32,
    status: AtomicI32,
    output_len: AtomicU32,
    asynchronous: AtomicBool,
    /// When the command went out ([`crate::stats::now_ns`]), for the round-trip histogram.
    sent_at: AtomicU64,
    pending: Mutex<Option<(Ticket, Completion)>>,
}

/// A command on the backup path.
struct Backup {
    token: u64,
    output_cap: u32,
    asynchronous: AtomicBool,
    state: AtomicU32,
    status: AtomicI32,
    output_len: AtomicU32,
    output: Mutex<Option<Vec<u8>>>,
    sent_at: AtomicU64,
    pending: Mutex<Option<(Ticket, Completion)>>,
}

/// Frames waiting for the writer thread.
#[derive(Default)]
struct Outbox {
    frames: VecDeque<Vec<u8>>,
    closed: bool,
}

enum Finished {
    Slot(u32),
    Backup(Arc<Backup>),
}

struct Conn {
    ic_id: String,
    /// The server's files, removed by this side if it finds the server killed.
    endpoint: Endpoint,
    /// The server's process id (from the socket's credentials).
    server_pid: i32,
    /// Whether the server takes commands through the slot header's claim word (protocol
    /// 1.1), so that one it has not taken can be withdrawn.
    withdrawable: bool,
    /// Commands, bytes, failures and round trips of this connection.
    stats: Stats,
    segment: Arc<Segment>,
    cs: Ring,
    sc: Ring,
    spin: Spin,
    slots: Box<[SlotState]>,
    free: [Mutex<Vec<u32>>; CLASSES],
    consumer: AtomicBool,
    /// Wakes synchronous callers waiting for their slot or for the consumer role.
    waiters: Event,
    /// Wakes the reaper: asynchronous work arrived, or the role it needs came free.
    bell: Event,
    /// 0 while the connection is open, else the status it ended with.
    ended: AtomicI32,
    end_error: Mutex<Option<Error>>,
    /// Set once `end` has queued every outstanding asynchronous completion.
    drained: AtomicBool,
    /// Set by the reaper just before its last look at `ready`.
    reaper_gone: AtomicBool,
    sender: Sender,
    backups: Mutex<HashMap<u64, Arc<Backup>>>,
    next_token: AtomicU64,
    async_in_ring: AtomicUsize,
    ready: Mutex<VecDeque<Finished>>,
    ready_len: AtomicUsize,
    /// The thread whose [`Poller`] holds the consumer role (its [`thread_token`]), or 0.
    polled_by: AtomicU64,
    /// Backup-path frames for the writer thread: a caller never blocks on a full socket (the
    /// server's JavaScript thread may be the one that must run to drain it).
    outbox: Mutex<Outbox>,
    outbox_ready: Condvar,
    /// A poller asks the reaper for the consumer role.
    yield_wanted: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    #[inline]
    fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst) != 0
    }

    /// The error a command gets for library status `status`.
    fn error_for(&self, status: i32) -> Error {
        let s = Status::from_code(status).unwrap_or(Status::ProtocolViolation);
        if let Some(e) = lock(&self.end_error).as_ref().filter(|e| e.status() == s) {
            return e.clone();
        }
        let why = match s {
            Status::HandlerFailed => "the server's handler failed for this command".to_string(),
            Status::OutputOverflow => {
                "the server wrote more output than the output capacity".to_string()
            }
            Status::InvalidCommand => "the server refused the command as malformed".to_string(),
            other => format!("the server answered {other}"),
        };
        Error::new(s, format!("'{}': {why}", self.ic_id))
    }

    /// Ends the connection with `err` and fails every outstanding command with its status.
    fn end(&self, err: Error) {
        {
            let mut e = lock(&self.end_error);
            if e.is_some() {
                return;
            }
            *e = Some(err.clone());
        }
        if err.status() == Status::PeerTerminated {
            // A server killed outright leaves its socket and lock files; the first of its
            // clients to notice removes them (only once no live server holds the lock),
            // before any command hears of the death.
            self.endpoint.remove_after_death(self.server_pid);
        }
        let code = err.status().code();
        // SeqCst, paired with the SeqCst state store and `ended` load in `submit`: either the
        // submitter sees the end, or the scan below sees its slot as SUBMITTED.
        self.ended.store(code, Ordering::SeqCst);
        self.sender.shutdown();
        for (i, st) in self.slots.iter().enumerate() {
            self.complete_slot(i as u32, st, code, 0);
        }
        let backups: Vec<_> = lock(&self.backups).drain().map(|(_, b)| b).collect();
        for b in backups {
            self.complete_backup(b, code, Vec::new());
        }
        self.cs.interrupt(&FutexPark::SHARED);
        self.sc.interrupt(&FutexPark::SHARED);
        lock(&self.outbox).closed = true;
        self.outbox_ready.notify_all();
        self.drained.store(true, Ordering::SeqCst);
        self.waiters.notify();
        self.bell.notify();
    }

    /// Records a slot's result if it is still outstanding; returns whether this call did.
    fn complete_slot(&self, index: u32, st: &SlotState, status: i32, len: u32) -> bool {
        // SeqCst, also when it fails: in `end` this CAS is the scan that must see a slot that
        // `submit_slot` marked SUBMITTED before it read `ended` (see `Conn::end`).
        if st
            .state
            .compare_exchange(SUBMITTED, COMPLETING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        // Read before DONE is published: from then on the owner may free the slot and another
        // command may take it, with another `asynchronous`.
        let asynchronous = st.asynchronous.load(Ordering::Relaxed);
        self.stats
            .finish(st.sent_at.load(Ordering::Relaxed), status, len);
        st.status.store(status, Ordering::Relaxed);
        st.output_len.store(len, Ordering::Relaxed);
        // Release: a thread that sees DONE sees the result above.
        st.state.store(DONE, Ordering::Release);
        if asynchronous {
            self.async_in_ring.fetch_sub(1, Ordering::SeqCst);
            self.queue(Finished::Slot(index));
        } else {
            self.waiters.notify();
        }
        true
    }

    fn complete_backup(&self, b: Arc<Backup>, status: i32, output: Vec<u8>) {
        if b.state
            .compare_exchange(SUBMITTED, COMPLETING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let asynchronous = b.asynchronous.load(Ordering::Relaxed);
        self.stats.finish(
            b.sent_at.load(Ordering::Relaxed),
            status,
            output.len() as u32,
        );
        b.status.store(status, Ordering::Relaxed);
        b.output_len.store(output.len() as u32, Ordering::Relaxed);
        *lock(&b.output) = Some(output);
        b.state.store(DONE, Ordering::Release);
        if asynchronous {
            self.queue(Finished::Backup(b));
            // The reaper may be asleep on the SC ring (it holds the consumer role while async
            // slot commands are out); its stop predicate sees the queued completion.
            self.sc.interrupt(&FutexPark::SHARED);
        } else {
            self.waiters.notify();
        }
    }

    /// Hands a finished asynchronous command to the reaper, or runs it here once the reaper
    /// has gone (the connection ended and `close` joined it): nothing queued is ever lost.
    fn queue(&self, f: Finished) {
        lock(&self.ready).push_back(f);
        self.ready_len.fetch_add(1, Ordering::SeqCst);
        // A poller that holds the role runs completions itself, soon: no need to wake the
        // reaper (its `release` rings the bell for whatever is left).
        if self.polled_by.load(Ordering::SeqCst) == 0 {
            self.bell.notify();
        }
        // SeqCst, paired with the reaper's store before its last `run_ready`: either it sees
        // our entry (the mutex orders the push before its pop) or we see it gone.
        if self.reaper_gone.load(Ordering::SeqCst) {
            self.run_ready();
        }
    }

    /// Validates one SC ring entry and completes its slot. `Err` means the server broke the
    /// protocol; the connection has been ended.
    fn dispatch(&self, offset: u32) -> Result<(), ()> {
        let layout = self.segment.layout();
        let Some(slot) = layout.locate(offset) else {
            return self.violation(format!(
                "SC ring entry {offset:#x} is not the offset of a slot"
            ));
        };
        let st = &self.slots[slot.index as usize];
        // Read once; the server can rewrite the header at any time.
        let reply = self.segment.header(slot).read_reply();
        if st.state.load(Ordering::Acquire) != SUBMITTED {
            if self.is_ended() {
                return Ok(());
            }
            return self.violation(format!(
                "slot {} came back while it was not outstanding",
                slot.index
            ));
        }
        if reply.generation != st.generation.load(Ordering::Relaxed) {
            return self.violation(format!(
                "slot {} came back with generation {} instead of {}",
                slot.index,
                reply.generation,
                st.generation.load(Ordering::Relaxed)
            ));
        }
        if reply.output_len > st.output_cap.load(Ordering::Relaxed) {
            return self.violation(format!(
                "slot {} reports {} output bytes, beyond its capacity of {}",
                slot.index,
                reply.output_len,
                st.output_cap.load(Ordering::Relaxed)
            ));
        }
        if reply.status < 0 && Status::from_code(reply.status).is_none() {
            return self.violation(format!(
                "slot {} carries unknown library status {}",
                slot.index, reply.status
            ));
        }
        self.complete_slot(slot.index, st, reply.status, reply.output_len);
        Ok(())
    }

    #[cold]
    fn violation(&self, why: String) -> Result<(), ()> {
        self.end(Error::new(
            Status::ProtocolViolation,
            format!("the server of '{}' broke the protocol: {why}", self.ic_id),
        ));
        Err(())
    }

    fn try_take_role(&self) -> bool {
        // Acquire: the previous holder's pops (and its read position) happen before ours.
        !self.consumer.load(Ordering::Relaxed)
            && self
                .consumer
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    fn give_up_role(&self) {
        // SeqCst (it also releases, pairing with the Acquire in `try_take_role`): with the
        // SeqCst load below, the reaper's SeqCst load of `consumer` and `call_async`'s SeqCst
        // increment, this is the store-buffer pattern: either the reaper saw the role free, or
        // we see its asynchronous work and ring its bell.
        self.consumer.store(false, Ordering::SeqCst);
        self.waiters.notify();
        if self.async_in_ring.load(Ordering::SeqCst) > 0 {
            self.bell.notify();
        }
    }

    /// Pops and dispatches SC entries until `done()`, the connection ends, or a violation.
    /// The caller holds the consumer role.
    fn consume_until(&self, done: impl Fn() -> bool) {
        let park = FutexPark::SHARED;
        while !done() {
            match self
                .sc
                .pop_blocking(self.spin, &park, || self.is_ended() || done())
            {
                Ok(offset) => {
                    if self.dispatch(offset).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// Runs every queued asynchronous completion, on the calling thread.
    fn run_ready(&self) {
        loop {
            let next = lock(&self.ready).pop_front();
            let Some(finished) = next else { return };
            self.ready_len.fetch_sub(1, Ordering::AcqRel);
            let pending = match finished {
                Finished::Slot(i) => lock(&self.slots[i as usize].pending).take(),
                Finished::Backup(b) => lock(&b.pending).take(),
            };
            if let Some((ticket, completion)) = pending {
                // A panicking completion must not take the reaper (and every later
                // completion) with it; the ticket is dropped either way.
                let _ =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| completion(ticket)));
            }
        }
    }

    fn reaper(self: &Arc<Self>) {
        loop {
            self.run_ready();
            if self.drained.load(Ordering::SeqCst) {
                // From here on completers run what they queue themselves (see `queue`).
                self.reaper_gone.store(true, Ordering::SeqCst);
                self.run_ready();
                return;
            }
            if self.async_in_ring.load(Ordering::SeqCst) > 0
                && !self.yield_wanted.load(Ordering::SeqCst)
                && self.try_take_role()
            {
                self.consume_until(|| {
                    self.async_in_ring.load(Ordering::Acquire) == 0
                        || self.ready_len.load(Ordering::Acquire) > 0
                        || self.yield_wanted.load(Ordering::SeqCst)
                });
                self.give_up_role();
                continue;
            }
            self.bell.wait_until(self.spin, || {
                self.ready_len.load(Ordering::Acquire) > 0
                    || self.drained.load(Ordering::SeqCst)
                    || (self.async_in_ring.load(Ordering::SeqCst) > 0
                        && !self.consumer.load(Ordering::SeqCst)
                        && !self.yield_wanted.load(Ordering::SeqCst))
            });
        }
    }

    /// The writer thread: sends backup-path frames in order until the connection ends.
    fn writer(self: &Arc<Self>) {
        loop {
            let frame = {
                let mut out = lock(&self.outbox);
                loop {
                    if out.closed {
                        return;
                    }
                    if let Some(f) = out.frames.pop_front() {
                        break f;
                    }
                    out = self
                        .outbox_ready
                        .wait(out)
                        .unwrap_or_else(|p| p.into_inner());
                }
            };
            if let Err(e) = self.sender.send(&frame) {
                self.end(e);
                return;
            }
        }
    }

    fn control(self: &Arc<Self>, stream: UnixStream) {
        let mut reader = &stream;
        let err = loop {
            match wire::read_message(&mut reader) {
                Ok(Message::Reply(reply)) => {
                    let Some(b) = lock(&self.backups).remove(&reply.token) else {
                        break Error::new(
                            Status::ProtocolViolation,
                            format!(
                                "the server of '{}' answered unknown backup command {}",
                                self.ic_id, reply.token
                            ),
                        );
                    };
                    if reply.output.len() > b.output_cap as usize {
                        break Error::new(
                            Status::ProtocolViolation,
                            format!(
                                "the server of '{}' sent {} output bytes for a capacity of {}",
                                self.ic_id,
                                reply.output.len(),
                                b.output_cap
                            ),
                        );
                    }
                    if reply.status < 0 && Status::from_code(reply.status).is_none() {
                        break Error::new(
                            Status::ProtocolViolation,
                            format!(
                                "the server of '{}' sent unknown library status {}",
                                self.ic_id, reply.status
                            ),
                        );
                    }
                    self.complete_backup(b, reply.status, reply.output);
                }
                Ok(Message::Refuse { status, reason }) => {
                    let s = Status::from_code(status).unwrap_or(Status::ProtocolViolation);
                    break Error::new(s, reason);
                }
                Ok(_) => {
                    break Error::new(
                        Status::ProtocolViolation,
                        format!("the server of '{}' sent an unexpected frame", self.ic_id),
                    );
                }
                Err(e) if e.is_end() => {
                    break Error::new(
                        Status::PeerTerminated,
                        format!("the server of '{}' ended the connection", self.ic_id),
                    );
                }
                Err(e) => {
                    break Error::new(
                        Status::ProtocolViolation,
                        format!("the server of '{}' broke the protocol: {e}", self.ic_id),
                    );
                }
            }
        };
        self.end(err);
    }
}

/// A connection to a server.
pub struct Client {
    conn: Arc<Conn>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("ic_id", &self.conn.ic_id)
            .field("ended", &self.conn.ended.load(Ordering::Relaxed))
            .finish()
    }
}

fn connect_error(ic_id: &str, endpoint: &Endpoint, e: std::io::Error) -> Error {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound | ConnectionRefused => {
            // Refused: a socket with no one listening, left by a killed server.
            if e.kind() == ConnectionRefused {
                endpoint.remove_if_stale();
            }
            Error::new(
                Status::NotFound,
                format!(
                    "Cannot connect to '{ic_id}' as no server is listening at {}",
                    endpoint.socket.display()
                ),
            )
        }
        PermissionDenied => Error::new(
            Status::PermissionDenied,
            format!(
                "Cannot connect to '{ic_id}': permission denied at {}",
                endpoint.socket.display()
            ),
        ),
        _ => Error::io(
            &format!(
                "Cannot connect to '{ic_id}' at {}",
                endpoint.socket.display()
            ),
            e,
        ),
    }
}

impl Client {
    /// Connects to the server of `ic_id`: creates the segment, sends it with the hello, and
    /// returns once the server accepted (its `open` has run).
    pub fn connect(ic_id: &str, options: &ConnectOptions) -> Result<Client, Error> {
        let access = crate::endpoint::Access {
            shared: false,
            owners: &options.allow_server_uids,
        };
        let endpoint = Endpoint::for_ic_id(ic_id, options.socket_dir.as_deref(), access)?;
        let layout = options.geometry.layout()?;
        let stream = UnixStream::connect(&endpoint.socket)
            .map_err(|e| connect_error(ic_id, &endpoint, e))?;
        let server = channel::peer_credentials(&stream)?;
        let me = nix::unistd::geteuid().as_raw();
        if server.uid != me && !options.allow_server_uids.contains(&server.uid) {
            return Err(Error::new(
                Status::PermissionDenied,
                format!(
                    "Cannot connect to '{ic_id}' as its server (pid {}) runs as uid {}, not {me}",
                    server.pid, server.uid
                ),
            ));
        }
        let (segment, memfd) = Segment::create(&options.geometry, ic_id, options.protocol_major)?;
        channel::set_handshake_timeout(&stream, Some(options.handshake_timeout))?;
        let hello = wire::encode(&Message::Hello {
            major: options.protocol_major,
            minor: PROTOCOL_MINOR,
            ic_id: ic_id.to_string(),
            geometry: options.geometry,
        });
        channel::send_with_fd(&stream, &hello, memfd.as_fd())?;
        // The server has its own descriptor now; the mapping is all this side needs.
        drop(memfd);
        let deadline = std::time::Instant::now() + options.handshake_timeout;
        let mut timed = channel::Deadline::new(&stream, deadline);
        let answer = wire::read_message(&mut timed).map_err(|e| match e {
            wire::WireError::TimedOut => Error::new(
                Status::Io,
                format!(
                    "'{ic_id}' did not answer the hello within {:?}",
                    options.handshake_timeout
                ),
            ),
            wire::WireError::Closed => Error::new(
                Status::PeerTerminated,
                format!("the server of '{ic_id}' closed the connection during the handshake"),
            ),
            other => Error::from(other),
        })?;
        let minor = match answer {
            Message::Welcome { major, minor, .. } if major == options.protocol_major => minor,
            Message::Welcome { major, minor, .. } => {
                return Err(Error::new(
                    Status::VersionMismatch,
                    format!(
                        "the server of '{ic_id}' speaks protocol {major}.{minor} and this client speaks {}.{PROTOCOL_MINOR}: majors must match",
                        options.protocol_major
                    ),
                ));
            }
            Message::Refuse { status, reason } => {
                return Err(Error::new(
                    Status::from_code(status).unwrap_or(Status::ProtocolViolation),
                    reason,
                ));
            }
            _ => {
                return Err(Error::new(
                    Status::ProtocolViolation,
                    format!("the server of '{ic_id}' answered the hello with an unexpected frame"),
                ));
            }
        };
        channel::set_handshake_timeout(&stream, None)?;
        let free = std::array::from_fn(|c| {
            let cl = layout.classes[c];
            // Reversed so that `pop` hands out the lowest offsets first.
            Mutex::new(
                (cl.first_index..cl.first_index + cl.class.count)
                    .rev()
                    .collect(),
            )
        });
        let conn = Arc::new(Conn {
            ic_id: ic_id.to_string(),
            endpoint: endpoint.clone(),
            server_pid: server.pid,
            withdrawable: minor >= 1,
            stats: Stats::default(),
            cs: segment.cs_ring(),
            sc: segment.sc_ring(),
            slots: (0..layout.slot_count())
                .map(|_| SlotState::default())
                .collect(),
            segment: Arc::new(segment),
            spin: Spin(options.spin),
            free,
            consumer: AtomicBool::new(false),
            waiters: Event::default(),
            bell: Event::default(),
            ended: AtomicI32::new(0),
            end_error: Mutex::new(None),
            drained: AtomicBool::new(false),
            reaper_gone: AtomicBool::new(false),
            sender: Sender::new(&stream)?,
            backups: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            async_in_ring: AtomicUsize::new(0),
            ready: Mutex::new(VecDeque::new()),
            ready_len: AtomicUsize::new(0),
            polled_by: AtomicU64::new(0),
            yield_wanted: AtomicBool::new(false),
            outbox: Mutex::new(Outbox::default()),
            outbox_ready: Condvar::new(),
        });
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| Error::io(&format!("cannot start thread {name}"), e))
        };
        let control = {
            let conn = conn.clone();
            spawn("shmcall-client", Box::new(move || conn.control(stream)))?
        };
        let reaper = {
            let conn = conn.clone();
            spawn("shmcall-reaper", Box::new(move || conn.reaper()))
        };
        let writer = {
            let conn = conn.clone();
            spawn("shmcall-writer", Box::new(move || conn.writer()))
        };
        let (reaper, writer) = match (reaper, writer) {
            (Ok(r), Ok(w)) => (r, w),
            (r, w) => {
                let e = [r.as_ref().err(), w.as_ref().err()]
                    .into_iter()
                    .flatten()
                    .next()
                    .cloned()
                    .expect("one thread failed to start");
                conn.end(e.clone());
                for t in [Some(control), r.ok(), w.ok()].into_iter().flatten() {
                    let _ = t.join();
                }
                return Err(e);
            }
        };
        Ok(Client {
            conn,
            threads: Mutex::new(vec![control, reaper, writer]),
        })
    }

    /// The ic id this client is connected to.
    pub fn ic_id(&self) -> &str {
        &self.conn.ic_id
    }

    /// The segment's mapping: first byte and length. It stays mapped while this client, any
    /// ticket of it, or a holder of [`Client::segment`] exists.
    pub fn segment_mapping(&self) -> (*mut u8, usize) {
        self.conn.segment.mapping()
    }

    /// A poller that takes this client's answers on the caller's thread (see [`Poller`]): a
    /// thread that waits for completions it will handle anyway (the JavaScript thread) pops
    /// them itself, while the reaper sleeps. Asynchronous completions then run on that thread
    /// while it holds the consumer role, so they must not wait for a synchronous call of
    /// another thread (the C surface's completions only queue an event).
    pub fn poller(&self) -> Arc<dyn Poller> {
        Arc::new(ClientPoller(self.conn.clone()))
    }

    /// The segment, for a caller that must keep it mapped longer than the client (views of it
    /// handed to JavaScript).
    pub fn segment(&self) -> Arc<Segment> {
        self.conn.segment.clone()
    }

    /// This connection's counters (see [`Stats::snapshot`]).
    pub fn stats(&self) -> &Stats {
        &self.conn.stats
    }

    /// Whether the connection ended (closed here, server gone, or protocol broken).
    pub fn is_closed(&self) -> bool {
        self.conn.is_ended()
    }

    /// Takes a slot (or, when none fits or is free, prepares the backup path) for a command of
    /// `input_len` input bytes and `output_cap` output bytes.
    pub fn begin(
        &self,
        code: u32,
        input_len: usize,
        output_cap: usize,
        mode: Mode,
    ) -> Result<Ticket, Error> {
        for (name, v) in [("input length", input_len), ("output length", output_cap)] {
            if v > MAX_AREA as usize {
                return Err(Error::new(
                    Status::InvalidArgument,
                    format!("{name} {v} exceeds the maximum of {MAX_AREA} bytes"),
                ));
            }
        }
        if self.conn.is_ended() {
            return Err(self.conn.error_for(self.conn.ended.load(Ordering::SeqCst)));
        }
        let (input_len, output_cap) = (input_len as u32, output_cap as u32);
        let layout = self.conn.segment.layout();
        let taken = layout.classes.iter().enumerate().find_map(|(c, cl)| {
            let fits =
                input_len <= cl.class.input_capacity && output_cap <= cl.class.output_capacity;
            if fits {
                lock(&self.conn.free[c]).pop()
            } else {
                None
            }
        });
        let kind = match taken {
            Some(index) => {
                let st = &self.conn.slots[index as usize];
                st.state.store(OWNED, Ordering::Relaxed);
                st.generation.fetch_add(1, Ordering::Relaxed);
                st.output_cap.store(output_cap, Ordering::Relaxed);
                Kind::Slot(layout.slot(index))
            }
            None => Kind::Backup {
                input: vec![0; input_len as usize],
                output: vec![0; output_cap as usize],
                record: Arc::new(Backup {
                    token: self.conn.next_token.fetch_add(1, Ordering::Relaxed),
                    output_cap,
                    asynchronous: AtomicBool::new(false),
                    state: AtomicU32::new(OWNED),
                    status: AtomicI32::new(0),
                    output_len: AtomicU32::new(0),
                    output: Mutex::new(None),
                    sent_at: AtomicU64::new(0),
                    pending: Mutex::new(None),
                }),
            },
        };
        Ok(Ticket {
            conn: self.conn.clone(),
            code,
            flags: mode.flags(),
            input_len,
            output_cap,
            kind,
            submitted: false,
        })
    }

    /// Publishes a slot's request and pushes it on the CS ring.
    fn submit_slot(&self, slot: SlotRef, request: Request, asynchronous: bool) {
        let conn = &self.conn;
        let st = &conn.slots[slot.index as usize];
        conn.segment.header(slot).write_request(&request);
        st.asynchronous.store(asynchronous, Ordering::Relaxed);
        // Relaxed: read back by `complete_slot` after the SeqCst state store below.
        st.sent_at.store(
            conn.stats.start(request.input_len, false),
            Ordering::Relaxed,
        );
        if asynchronous {
            // SeqCst: see `give_up_role`.
            conn.async_in_ring.fetch_add(1, Ordering::SeqCst);
        }
        // SeqCst: see `Conn::end`.
        st.state.store(SUBMITTED, Ordering::SeqCst);
        let pushed = !conn.is_ended()
            && conn
                .cs
                .push_blocking(slot.offset, conn.spin, &FutexPark::SHARED, || {
                    conn.is_ended()
                })
                .is_ok();
        if !pushed {
            conn.complete_slot(slot.index, st, conn.ended.load(Ordering::SeqCst), 0);
        }
    }

    /// Registers a backup command and sends its frame.
    fn submit_backup(&self, record: &Arc<Backup>, frame: Vec<u8>, input_len: u32) {
        let conn = &self.conn;
        record
            .sent_at
            .store(conn.stats.start(input_len, true), Ordering::Relaxed);
        record.state.store(SUBMITTED, Ordering::SeqCst);
        lock(&conn.backups).insert(record.token, record.clone());
        // The same ordering argument as for slots: `end` drains the map after setting `ended`.
        // The frame goes to the writer thread; if the connection ended meanwhile, `end`
        // completes the record (it is in the map) and the writer drops the frame.
        let queued = {
            let mut out = lock(&conn.outbox);
            if out.closed || conn.is_ended() {
                false
            } else {
                out.frames.push_back(frame);
                true
            }
        };
        if queued {
            conn.outbox_ready.notify_one();
        } else {
            lock(&conn.backups).remove(&record.token);
            conn.complete_backup(
                record.clone(),
                conn.ended.load(Ordering::SeqCst),
                Vec::new(),
            );
        }
    }

    fn request(ticket: &Ticket, slot: SlotRef, conn: &Conn) -> Request {
        Request {
            code: ticket.code,
            flags: ticket.flags,
            input_len: ticket.input_len,
            output_cap: ticket.output_cap,
            generation: conn.slots[slot.index as usize]
                .generation
                .load(Ordering::Relaxed),
        }
    }

    /// Sends the command and waits on this thread for its answer. The ticket's areas then hold
    /// the input and the output.
    pub fn call(&self, ticket: &mut Ticket) -> Result<Answer, Error> {
        self.check_own(ticket)?;
        ticket.mark_submitted();
        let conn = &self.conn;
        match &ticket.kind {
            Kind::Slot(slot) => {
                let slot = *slot;
                self.submit_slot(slot, Self::request(ticket, slot, conn), false);
                let st = &conn.slots[slot.index as usize];
                let done = || st.state.load(Ordering::Acquire) == DONE;
                while !done() {
                    if conn.polled_by.load(Ordering::Relaxed) == thread_token() {
                        // This thread's poller holds the role: this thread is the consumer.
                        conn.consume_until(done);
                        continue;
                    }
                    if conn.try_take_role() {
                        conn.consume_until(done);
                        conn.give_up_role();
                        continue;
                    }
                    conn.waiters.wait_until(conn.spin, || {
                        done() || !conn.consumer.load(Ordering::Acquire)
                    });
                }
            }
            Kind::Backup { input, record, .. } => {
                let frame = wire::encode_exec(
                    record.token,
                    ticket.code,
                    ticket.flags,
                    ticket.output_cap,
                    input,
                );
                self.submit_backup(record, frame, ticket.input_len);
                conn.waiters
                    .wait_until(conn.spin, || record.state.load(Ordering::Acquire) == DONE);
            }
        }
        ticket.answer()
    }

    /// Sends the command and returns at once; `completion` runs on the client's reaper thread
    /// with the finished ticket (also when the connection ends first).
    pub fn call_async(
        &self,
        mut ticket: Ticket,
        completion: impl FnOnce(Ticket) + Send + 'static,
    ) -> Result<(), Error> {
        self.check_own(&ticket)?;
        ticket.mark_submitted();
        let conn = self.conn.clone();
        let completion: Completion = Box::new(completion);
        // The completion is parked before the command is sent, so the answer always finds it.
        match &ticket.kind {
            Kind::Slot(slot) => {
                let slot = *slot;
                let request = Self::request(&ticket, slot, &conn);
                *lock(&conn.slots[slot.index as usize].pending) = Some((ticket, completion));
                self.submit_slot(slot, request, true);
                // Wakes the reaper so it starts popping answers, unless a poller holds the
                // role and pops them (a woken reaper would spin for nothing, on a core the
                // pollers need).
                if conn.polled_by.load(Ordering::SeqCst) == 0 {
                    conn.bell.notify();
                }
            }
            Kind::Backup { input, record, .. } => {
                let frame = wire::encode_exec(
                    record.token,
                    ticket.code,
                    ticket.flags,
                    ticket.output_cap,
                    input,
                );
                let record = record.clone();
                let input_len = ticket.input_len;
                record.asynchronous.store(true, Ordering::Relaxed);
                *lock(&record.pending) = Some((ticket, completion));
                self.submit_backup(&record, frame, input_len);
            }
        }
        Ok(())
    }

    /// Withdraws the asynchronous command in slot `index` if the server has not taken it yet;
    /// returns whether it did. The command then never runs: the server answers it
    /// `CANCELLED` when it reaches it, and its completion runs then, as for any answer (the
    /// slot stays the server's until that answer comes back). False when it was taken, has
    /// finished, travels the backup path (no slot), or the server speaks protocol 1.0.
    ///
    /// The caller must hold the command's ticket unanswered (the C surface's callers hold its
    /// completion): the slot cannot then be reused meanwhile, so `index` names this command.
    pub fn withdraw(&self, index: u32) -> bool {
        let conn = &self.conn;
        let Some(st) = conn.slots.get(index as usize) else {
            return false;
        };
        if !conn.withdrawable || conn.is_ended() || st.state.load(Ordering::Acquire) != SUBMITTED {
            return false;
        }
        let slot = conn.segment.layout().slot(index);
        conn.segment.header(slot).withdraw()
    }

    fn check_own(&self, ticket: &Ticket) -> Result<(), Error> {
        if !Arc::ptr_eq(&ticket.conn, &self.conn) {
            return Err(Error::new(
                Status::InvalidArgument,
                "the ticket belongs to another client",
            ));
        }
        Ok(())
    }

    /// Issues one command synchronously: the callbacks run on this thread around the call.
    /// Library failures are errors; the server's own statuses are in the [`Output`].
    pub fn execute(&self, call: &Call<'_>, callbacks: &mut dyn Callbacks) -> Result<Output, Error> {
        let input_len = call.input_area_len()?;
        let mut ticket = self.begin(call.code, input_len, call.output_len, call.mode)?;
        callbacks.input_prepare(&mut ticket.input(), call.input);
        callbacks.output_prepare(&mut ticket.output());
        let answer = self.call(&mut ticket)?;
        Ok(ticket.finish(answer, callbacks))
    }

    /// Issues one command asynchronously: the prepare callbacks run now, the post callbacks
    /// and `completion` later on the client's reaper thread.
    pub fn execute_async(
        &self,
        call: &Call<'_>,
        mut callbacks: impl Callbacks + Send + 'static,
        completion: impl FnOnce(Result<Output, Error>) + Send + 'static,
    ) -> Result<(), Error> {
        let input_len = call.input_area_len()?;
        let mut ticket = self.begin(call.code, input_len, call.output_len, call.mode)?;
        callbacks.input_prepare(&mut ticket.input(), call.input);
        callbacks.output_prepare(&mut ticket.output());
        self.call_async(ticket, move |mut t| {
            let result = t.answer().map(|a| t.finish(a, &mut callbacks));
            completion(result);
        })
    }

    /// Ends the connection: commands still outstanding fail with [`Status::Closed`] (async
    /// completions run), the server sees the client go, and the threads are joined. Idempotent.
    pub fn close(&self) {
        self.conn.end(Error::new(
            Status::Closed,
            format!("the client of '{}' was closed", self.conn.ic_id),
        ));
        let me = std::thread::current().id();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            // A completion that closes its own client runs on the reaper: don't join oneself.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

/// One command between `begin` and its end: owns a slot (or a backup buffer pair).
pub struct Ticket {
    conn: Arc<Conn>,
    code: u32,
    flags: u32,
    input_len: u32,
    output_cap: u32,
    kind: Kind,
    submitted: bool,
}

enum Kind {
    Slot(SlotRef),
    Backup {
        input: Vec<u8>,
        output: Vec<u8>,
        record: Arc<Backup>,
    },
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("code", &self.code)
            .field("input_len", &self.input_len)
            .field("output_cap", &self.output_cap)
            .field("backup", &self.is_backup())
            .finish()
    }
}

impl Ticket {
    /// Whether the command travels over the backup path.
    pub fn is_backup(&self) -> bool {
        matches!(self.kind, Kind::Backup { .. })
    }

    /// The index of the command's slot, `None` on the backup path (see [`Client::withdraw`]).
    pub fn slot_index(&self) -> Option<u32> {
        match self.kind {
            Kind::Slot(slot) => Some(slot.index),
            Kind::Backup { .. } => None,
        }
    }

    fn mark_submitted(&mut self) {
        assert!(!self.submitted, "a ticket is submitted once");
        self.submitted = true;
    }

    /// The input area, `input_len` bytes.
    pub fn input(&mut self) -> Area<'_> {
        match &mut self.kind {
            Kind::Slot(slot) => self.conn.segment.input(*slot, self.input_len),
            Kind::Backup { input, .. } => Area::from_slice(input),
        }
    }

    /// The output area: its whole capacity before the answer, the bytes written after it.
    pub fn output(&mut self) -> Area<'_> {
        let len = self.answer().map_or(self.output_cap, |a| a.length);
        match &mut self.kind {
            Kind::Slot(slot) => self.conn.segment.output(*slot, len),
            Kind::Backup { output, record, .. } => {
                // Copy into the buffer handed out at `begin` rather than replace it: its
                // address may be held by a caller (the C surface gives it to JavaScript), so it
                // must not move while the ticket lives. The length was checked against the
                // capacity when the reply arrived.
                if let Some(answer) = lock(&record.output).take() {
                    output[..answer.len()].copy_from_slice(&answer);
                }
                Area::from_slice(&mut output[..len as usize])
            }
        }
    }

    /// The answer, once the command is done: the server's status and output length, or the
    /// library failure.
    pub fn answer(&self) -> Result<Answer, Error> {
        let (state, status, length) = match &self.kind {
            Kind::Slot(slot) => {
                let st = &self.conn.slots[slot.index as usize];
                (st.state.load(Ordering::Acquire), &st.status, &st.output_len)
            }
            Kind::Backup { record, .. } => (
                record.state.load(Ordering::Acquire),
                &record.status,
                &record.output_len,
            ),
        };
        if state != DONE {
            return Err(Error::new(
                Status::InvalidArgument,
                "the command has not finished",
            ));
        }
        // Relaxed: ordered after the result's stores by the Acquire load of DONE above.
        let (status, length) = (
            status.load(Ordering::Relaxed),
            length.load(Ordering::Relaxed),
        );
        if status < 0 {
            return Err(self.conn.error_for(status));
        }
        Ok(Answer { status, length })
    }

    fn finish(&mut self, answer: Answer, callbacks: &mut dyn Callbacks) -> Output {
        callbacks.input_post(&self.input());
        let output = callbacks.output_post(&self.output());
        Output {
            status: answer.status,
            length: answer.length,
            output,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Kind::Slot(slot) = self.kind else { return };
        let st = &self.conn.slots[slot.index as usize];
        // A slot still SUBMITTED is the server's: it is never reused (that only happens to a
        // ticket dropped by a panic mid-call, and the slot is then lost to this connection).
        if matches!(st.state.load(Ordering::Acquire), OWNED | DONE) {
            st.state.store(FREE, Ordering::Relaxed);
            lock(&self.conn.free[slot.class]).push(slot.index);
        }
    }
}

/// One command's parameters for [`Client::execute`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Call<'a> {
    /// Operation code.
    pub code: u32,
    /// The bytes to send.
    pub input: &'a [u8],
    /// The input area's size; `None` means `input.len()`.
    pub input_len: Option<usize>,
    /// The output area's capacity.
    pub output_len: usize,
    /// Where the server runs it.
    pub mode: Mode,
}

impl Call<'_> {
    fn input_area_len(&self) -> Result<usize, Error> {
        match self.input_len {
            None => Ok(self.input.len()),
            Some(n) if n >= self.input.len() => Ok(n),
            Some(n) => Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "input of {} bytes does not fit input_len {n}",
                    self.input.len()
                ),
            )),
        }
    }
}

/// A command's result for the caller: the server's status, the output length it reported, and
/// what `output_post` returned (by default a copy of the output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The server's status.
    pub status: i32,
    /// Output bytes the server wrote.
    pub length: u32,
    /// The value `output_post` made.
    pub output: Vec<u8>,
}

/// The four client callbacks of a command (the fifth, `completion`, is an argument of
/// [`Client::execute_async`]). Each has the default of SPEC.md §2.
pub trait Callbacks {
    /// Before sending: fills the input area. Default: copy `input` into it.
    fn input_prepare(&mut self, area: &mut Area<'_>, input: &[u8]) {
        area.write(input);
    }
    /// Before sending: prepares the output area. Default: nothing.
    fn output_prepare(&mut self, _area: &mut Area<'_>) {}
    /// After the server finished: sees the input area. Default: nothing.
    fn input_post(&mut self, _area: &Area<'_>) {}
    /// After the server finished: reads the output area (cut to the reported length). Default:
    /// a copy of it.
    fn output_post(&mut self, area: &Area<'_>) -> Vec<u8> {
        area.to_vec()
    }
}

/// The default callbacks: copy the input in, copy the output out.
#[derive(Clone, Copy, Debug, Default)]
pub struct Copying;

impl Callbacks for Copying {}

/// See [`Client::poller`]. It holds the consumer role across polls (asking the reaper for it
/// when needed) and gives it back on [`Poller::release`].
struct ClientPoller(Arc<Conn>);

impl Poller for ClientPoller {
    fn poll(&self) -> bool {
        let c = &self.0;
        let me = thread_token();
        let park = FutexPark::SHARED;
        let mut took = false;
        if c.polled_by.load(Ordering::Relaxed) != me
            && c.async_in_ring.load(Ordering::SeqCst) > 0
            && !c.is_ended()
        {
            if c.try_take_role() {
                c.polled_by.store(me, Ordering::Relaxed);
                c.yield_wanted.store(false, Ordering::SeqCst);
            } else if !c.yield_wanted.swap(true, Ordering::SeqCst) {
                // The reaper may sleep on the SC ring holding the role: wake it to yield.
                c.sc.interrupt(&park);
            }
        }
        if c.polled_by.load(Ordering::Relaxed) == me {
            while let Some(offset) = c.sc.try_pop(&park) {
                took = true;
                if c.dispatch(offset).is_err() {
                    break;
                }
            }
        }
        if c.ready_len.load(Ordering::Acquire) > 0 {
            c.run_ready();
            took = true;
        }
        took
    }

    fn release(&self) {
        let c = &self.0;
        if c.polled_by.load(Ordering::Relaxed) == thread_token() {
            // SeqCst, paired with `queue`: a completion queued before this store is seen by
            // the reaper after the bell below; one queued after it rings the bell itself.
            c.polled_by.store(0, Ordering::SeqCst);
            c.give_up_role();
            c.bell.notify();
        } else if c.yield_wanted.swap(false, Ordering::SeqCst) {
            c.bell.notify();
        }
    }
}
