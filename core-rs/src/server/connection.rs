//! One client's connection, as the server sees it: the transport state every command shares
//! ([`Connection`]), and the member its owner polls and the reactor feeds ([`Peer`]).
//!
//! # A connection's life
//!
//! The reactor finishes the handshake and makes the peer, in the `Opening` state; the owner
//! asks the handler's `open` ([`super::Handler::begin_open`]), whose answer sends the welcome
//! (`Open`) or the refusal. While open, the owner pops the CS ring and runs the backup
//! commands the reactor read, whenever the peer is active; the reactor wakes it for WAKE
//! frames, backup frames and the connection's end.
//!
//! A connection may be **lent** as it opens ([`super::Handler::lane`]): its consumer (a
//! JavaScript thread) then pops the CS ring and pushes the SC ring itself. The owner's poll only
//! looks at the CS ring's next cell, at the read position the consumer publishes, and tells it
//! there are commands; its arming announces [`crate::ring::WATCHED`] there; backup commands
//! still come to `exec`. A command the consumer answers within the turn that took it needs no
//! hold: that turn runs on the owner's thread, which cannot let go of the connection meanwhile;
//! one it keeps longer (an `exec` that answers later) holds the connection (a holder, below)
//! until answered. Told of the end once, the consumer also holds the connection while it takes
//! what the client sent before it went; otherwise the connection goes at once, so that its
//! segment is released for the client's next connection.
//!
//! When the client goes (end-of-file), breaks the protocol, or the server closes, the
//! connection is marked ended; the owner then lets go of its base hold. Every command already
//! taken still runs to its end (its answer is dropped), and `close` runs exactly once, when the
//! last of {the base hold, commands in progress} lets go: a counter of those holders reaching
//! zero is what "drained" means.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use super::command::{Body, Command};
use super::handler::{ConnInfo, Context, Handler, Opening};
use super::{Shared, dispatch};
use crate::futex::{self, Scope};
use crate::link::Link;
use crate::owner::{LaneNotify, Member};
use crate::reactor::{self, Source};
use crate::ring::{Ring, Spin, Waker};
use crate::segment::{PROTOCOL_MAJOR, PROTOCOL_MINOR, Segment, SlotRef};
use crate::slot::{FLAG_STATS, Mode, Request};
use crate::stats::Stats;
use crate::status::{Error, Status};
use crate::wire::{self, Message};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Backup commands one connection may have in progress at once, and their bytes: past either,
/// the reactor stops reading its socket until one finishes, so a client cannot queue unbounded
/// work and memory on the server.
const MAX_BACKUP_COMMANDS: usize = 64;
const MAX_BACKUP_BYTES: usize = 256 << 20;

/// CS entries one poll takes from one connection before it looks at the others.
const POLL_BATCH: usize = 64;

/// Bytes the reactor reads from one connection before it looks at the others.
const READ_BUDGET: usize = 256 << 10;

/// Backup commands in progress on one connection.
#[derive(Debug, Default)]
struct BackupLoad {
    commands: usize,
    bytes: usize,
}

impl BackupLoad {
    fn over(&self) -> bool {
        self.commands >= MAX_BACKUP_COMMANDS || self.bytes >= MAX_BACKUP_BYTES
    }
}

/// Tells the handler that a connection broke the protocol (its `refused`), with the handler's
/// type erased so that `Connection` and `Command` need not carry it.
type ViolationHook = Box<dyn Fn(&ConnInfo, &Error) + Send + Sync>;

/// The transport state of one connection, shared by its peer and its commands.
pub(crate) struct Connection {
    pub(crate) info: ConnInfo,
    pub(crate) segment: Arc<Segment>,
    pub(crate) cs: Ring,
    pub(crate) sc: Ring,
    /// Which slots the server holds (popped, not yet answered): a slot pushed twice is caught.
    pub(crate) held: Box<[AtomicBool]>,
    pub(crate) link: Link,
    ended: AtomicBool,
    /// Set when the client broke the protocol: nothing more of its ring runs.
    violated: AtomicBool,
    /// Holders that keep the connection from being drained; see the module doc.
    holders: AtomicUsize,
    on_drained: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    on_violation: ViolationHook,
    /// Asks the owner to poll the connection's peer.
    wake: Box<dyn Fn() + Send + Sync>,
    backups: Mutex<BackupLoad>,
    /// The server's counters.
    pub(crate) stats: Arc<Stats>,
}

/// Wakes the client after an SC push, as its sleep flag asks.
struct AnswerWaker<'a>(&'a Link);

impl Waker for AnswerWaker<'_> {
    fn unpark(&self, flag: &std::sync::atomic::AtomicU32) {
        futex::wake(flag, u32::MAX, Scope::Shared);
    }
    fn signal(&self) {
        self.0.signal();
    }
}

impl Connection {
    /// The body of a backup-path `OUTPUT_OVERFLOW` answer: how many bytes were `wanted`, as a
    /// little-endian `u32` (saturated) for a client of minor 1 or later, nothing before.
    pub(crate) fn overflow_body(&self, wanted: usize) -> Vec<u8> {
        if self.info.minor >= 1 {
            u32::try_from(wanted)
                .unwrap_or(u32::MAX)
                .to_le_bytes()
                .to_vec()
        } else {
            Vec::new()
        }
    }

    #[inline]
    pub(crate) fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    fn violated(&self) -> bool {
        self.violated.load(Ordering::Acquire)
    }

    /// Marks the connection ended: the client reads end-of-file, the owner lets go of it.
    pub(crate) fn end(&self) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            self.link.shutdown();
            (self.wake)();
        }
    }

    /// Wakes the client as its SC ring's sleep flag asks (after a push made elsewhere: a lent
    /// connection's consumer).
    pub(crate) fn wake_client(&self) {
        self.sc.wake(&AnswerWaker(&self.link));
    }

    /// Pushes an answered slot back to the client. Never waits: each slot is in at most one
    /// ring at a time and the ring has a cell per slot, so a full SC ring means the client
    /// tampered with its read position — waiting would let it hold this thread (the owner, a
    /// pool worker) forever.
    pub(crate) fn push_answer(&self, offset: u32) {
        if !self.ended() && self.sc.try_push(offset, &AnswerWaker(&self.link)).is_err() {
            self.violation(
                "the SC ring is full, which a client that follows the protocol never causes".into(),
                true,
            );
        }
    }

    /// Drops a connection whose client broke the protocol: tells the client why (when `tell`,
    /// which a client that stopped reading would not hear), ends it, and tells the handler.
    pub(crate) fn violation(&self, why: String, tell: bool) {
        if self.ended() {
            return;
        }
        let err = Error::new(
            Status::ProtocolViolation,
            format!("connection {} dropped: {why}", self.info.id),
        );
        self.violated.store(true, Ordering::Release);
        if tell {
            let _ = self.link.send(wire::encode(&Message::Refuse {
                status: err.status().code(),
                reason: err.message().to_string(),
            }));
        }
        self.end();
        let _ = catch_unwind(AssertUnwindSafe(|| (self.on_violation)(&self.info, &err)));
    }

    /// Counts a backup command the reactor read; past the budget, the reactor stops reading
    /// until one finishes.
    fn backup_admit(&self, bytes: usize) {
        let mut load = lock(&self.backups);
        load.commands += 1;
        load.bytes += bytes;
        if load.over() {
            self.link.set_reading(false);
        }
    }

    pub(crate) fn backup_done(&self, bytes: usize) {
        let mut load = lock(&self.backups);
        let was_over = load.over();
        load.commands -= 1;
        load.bytes -= bytes;
        if was_over && !load.over() {
            self.link.set_reading(true);
        }
    }

    pub(crate) fn hold(&self) {
        self.holders.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn release(&self) {
        // AcqRel: the last holder must see everything the others did before calling `close`.
        if self.holders.fetch_sub(1, Ordering::AcqRel) == 1 {
            let drained = lock(&self.on_drained).take();
            if let Some(close) = drained {
                close();
            }
        }
    }
}

/// The minor both sides speak: the lower of the client's and ours (`ours`: this library's, or
/// less where a test serves as an older server).
fn spoken_minor(client: u16, ours: u16) -> u16 {
    client.min(ours).min(PROTOCOL_MINOR)
}

// Where a peer is in its life (`Peer::phase`).
/// The handshake is done; `open` has not been asked yet.
const OPENING: u8 = 0;
/// `open` was asked and has not answered.
const ASKED: u8 = 1;
/// `open` accepted: the context is set.
const OPEN: u8 = 2;
/// The owner let go of it (ended after `open`, or refused): nothing more to do.
const RELEASED: u8 = 3;

/// One connection as its owner and the reactor see it.
pub(crate) struct Peer<H: Handler> {
    pub(crate) conn: Arc<Connection>,
    shared: Arc<Shared<H>>,
    /// One of [`OPENING`], [`ASKED`], [`OPEN`], [`RELEASED`]. Release stores, Acquire loads:
    /// the context set before [`OPEN`] is seen by whoever sees [`OPEN`].
    phase: AtomicU8,
    /// `open`'s value, once it accepted.
    context: OnceLock<Arc<H::Context>>,
    /// Backup commands the reactor read, for the owner to run.
    inbox: Mutex<VecDeque<Command>>,
    inbox_len: AtomicUsize,
    spin: Spin,
    queued: AtomicBool,
    /// See [`Member::paired`].
    paired: AtomicBool,
    reader: Mutex<wire::Reader>,
    /// Set when the connection is lent (see the module doc): how to tell its consumer.
    lane: OnceLock<LaneNotify>,
    /// Whether the lane's consumer was told of the end.
    lane_told_end: AtomicBool,
    me: Weak<Peer<H>>,
}

impl<H: Handler> Peer<H> {
    /// A peer for a client whose hello was accepted (`minor`: the one it announced).
    pub(crate) fn new(
        shared: &Arc<Shared<H>>,
        info: ConnInfo,
        segment: Segment,
        link: Link,
        minor: u16,
    ) -> Arc<Peer<H>> {
        let slots = segment.layout().slot_count() as usize;
        let segment = Arc::new(segment);
        Arc::new_cyclic(|me: &Weak<Peer<H>>| {
            let waker = me.clone();
            let owner = shared.owner.clone();
            let hook = {
                let shared = shared.clone();
                move |info: &ConnInfo, err: &Error| shared.handler.refused(Some(info), err)
            };
            Peer {
                conn: Arc::new(Connection {
                    info: ConnInfo {
                        minor: spoken_minor(minor, shared.options.protocol_minor),
                        ..info
                    },
                    cs: segment.cs_ring(),
                    sc: segment.sc_ring(),
                    segment,
                    held: (0..slots).map(|_| AtomicBool::new(false)).collect(),
                    link,
                    ended: AtomicBool::new(false),
                    violated: AtomicBool::new(false),
                    // The base hold, let go by the owner once the connection ended.
                    holders: AtomicUsize::new(1),
                    on_drained: Mutex::new(None),
                    on_violation: Box::new(hook),
                    wake: Box::new(move || {
                        if let Some(me) = waker.upgrade() {
                            owner.wake(me);
                        }
                    }),
                    backups: Mutex::new(BackupLoad::default()),
                    stats: shared.stats.clone(),
                }),
                shared: shared.clone(),
                phase: AtomicU8::new(OPENING),
                context: OnceLock::new(),
                inbox: Mutex::new(VecDeque::new()),
                inbox_len: AtomicUsize::new(0),
                spin: Spin(shared.options.spin),
                queued: AtomicBool::new(false),
                paired: AtomicBool::new(false),
                reader: Mutex::new(wire::Reader::default()),
                lane: OnceLock::new(),
                lane_told_end: AtomicBool::new(false),
                me: me.clone(),
            }
        })
    }

    /// Asks `open`, on the owner's thread.
    fn ask_open(&self) {
        let Some(me) = self.me.upgrade() else { return };
        let info = self.conn.info;
        let opening = Opening::new(move |result| me.opened(result));
        let shared = self.shared.clone();
        let asked = catch_unwind(AssertUnwindSafe(|| {
            shared.handler.begin_open(&info, opening);
        }));
        if asked.is_err() {
            // The handler panicked: the `Opening` it held was dropped, which refused the client.
        }
    }

    /// `open` answered: the client is welcome (or refused), from whatever thread answered.
    pub(crate) fn opened(&self, result: Result<H::Context, Error>) {
        let conn = &self.conn;
        let context = match result {
            Ok(c) => Arc::new(c),
            Err(e) => {
                let _ = conn.link.send(wire::encode(&Message::Refuse {
                    status: e.status().code(),
                    reason: e.message().to_string(),
                }));
                conn.end();
                self.phase.store(RELEASED, Ordering::Release);
                self.shared.forget(conn.info.id);
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    self.shared.handler.refused(Some(&conn.info), &e)
                }));
                return;
            }
        };
        {
            let (shared, context, info) = (self.shared.clone(), context.clone(), conn.info);
            *lock(&conn.on_drained) = Some(Box::new(move || {
                let _ = catch_unwind(AssertUnwindSafe(|| shared.handler.close(&info, &context)));
            }));
        }
        let _ = self.context.set(context);
        if let Some(notify) = self.shared.handler.lane(&conn.info) {
            self.shared.lend(conn.info.id, conn.clone());
            let _ = self.lane.set(notify);
        }
        self.phase.store(OPEN, Ordering::Release);
        if self.shared.closing.load(Ordering::SeqCst) {
            // `open` ran, so `close` runs too, once the owner lets go.
            conn.end();
        } else {
            // The connection is offered to the owner: an owner that is awake polls it, so the
            // client's first command needs no wake-up (its ring stays AWAKE, as the segment came,
            // until the owner arms it); for one that went idle the ring goes to the reactor.
            // `watch` looks at the ring after it announces WATCHED: a command the client pushed
            // while the ring was still AWAKE is found there, and wakes the owner.
            let welcome = wire::encode(&Message::Welcome {
                major: PROTOCOL_MAJOR,
                minor: conn.info.minor,
                connection: conn.info.id,
            });
            if conn.link.send(welcome).is_ok() {
                if let Some(me) = self.me.upgrade()
                    && !self.shared.owner.offer(me.clone())
                    && !conn.cs.watch()
                {
                    self.shared.owner.wake(me);
                }
                return;
            }
            conn.end();
        }
        (conn.wake)();
    }

    /// The owner lets go of an ended connection: its base hold (so `close` runs once the
    /// commands in progress are done), and its place among the server's connections.
    fn let_go(&self) {
        // SeqCst: see `received`.
        let was = self.phase.swap(RELEASED, Ordering::SeqCst);
        // The handler hears of the end once, and before `close`: the base hold goes below.
        if let (OPEN, Some(context)) = (was, self.context.get()) {
            let (handler, info) = (&self.shared.handler, &self.conn.info);
            let _ = catch_unwind(AssertUnwindSafe(|| handler.ended(info, context)));
        }
        self.drop_inbox();
        // Released before it is forgotten: `Server::close` waits for the server's connections
        // to be gone, and promises the `close` of those with nothing in progress has run.
        self.conn.release();
        self.shared.forget(self.conn.info.id);
    }

    /// The owner's poll of a lent connection: runs the backup commands the reactor read, tells
    /// the consumer of commands on the ring, or of the end (once; the consumer takes what the
    /// client sent before it went, as the owner does for a connection of its own). Returns
    /// whether there was anything.
    fn poll_lane(&self, notify: &LaneNotify, context: &Context<H>) -> bool {
        let conn = &self.conn;
        // A client that broke the protocol gets nothing more run.
        let did = !conn.violated() && self.take_waiting(context, 0);
        if conn.ended() {
            // SeqCst: read by `done` through `let_go`'s phase, and by nothing else.
            if !self.lane_told_end.swap(true, Ordering::SeqCst) {
                // Commands the client sent before it went still run (not a violator's): the
                // consumer holds the connection while it takes them. Otherwise the connection
                // goes as soon as the commands the consumer kept are answered — often now, so
                // that the client finds its segment released for its next connection.
                conn.cs.follow();
                let drain = !conn.violated() && !conn.cs.is_empty();
                self.shared.lane_ended(conn.info.id, drain);
                notify(Err(Error::new(
                    Status::Closed,
                    format!("connection {} ended", conn.info.id),
                )));
            }
            self.let_go();
            return true;
        }
        // The owner looks at the ring now: the client need not signal.
        conn.cs.unwatch();
        conn.cs.follow();
        if conn.cs.is_empty() {
            return did;
        }
        notify(Ok(()));
        true
    }

    /// Takes up to `batch` commands off the CS ring (fewer once the client broke the
    /// protocol), then every backup command the reactor read, and runs them (or hands them to
    /// the pool); returns whether it took any.
    fn take_waiting(&self, context: &Context<H>, batch: usize) -> bool {
        let mut did = false;
        for _ in 0..batch {
            let Some(offset) = self.conn.cs.try_pop() else {
                break;
            };
            did = true;
            if !self.take_command(context, offset) {
                return true;
            }
        }
        while self.inbox_len.load(Ordering::SeqCst) > 0 {
            let Some(command) = lock(&self.inbox).pop_front() else {
                break;
            };
            self.inbox_len.fetch_sub(1, Ordering::SeqCst);
            did = true;
            dispatch(&self.shared, context, command);
        }
        did
    }

    /// Validates one CS ring entry and runs (or queues) its command. `false` means the client
    /// broke the protocol and the connection has been dropped.
    fn take_command(&self, context: &Context<H>, offset: u32) -> bool {
        let conn = &self.conn;
        let layout = conn.segment.layout();
        let Some(slot) = layout.locate(offset) else {
            conn.violation(
                format!("CS ring entry {offset:#x} is not the offset of a slot"),
                true,
            );
            return false;
        };
        if conn.held[slot.index as usize].swap(true, Ordering::AcqRel) {
            conn.violation(
                format!("slot {} was pushed while the server held it", slot.index),
                true,
            );
            return false;
        }
        // Read once: the client can change the header at any time from here on.
        let request = conn.segment.header(slot).read_request();
        let class = layout.classes[slot.class].class;
        if request.input_len > class.input_capacity || request.output_cap > class.output_capacity {
            conn.violation(
                format!(
                    "slot {} asks for {} input and {} output bytes but holds {} and {}",
                    slot.index,
                    request.input_len,
                    request.output_cap,
                    class.input_capacity,
                    class.output_capacity
                ),
                true,
            );
            return false;
        }
        conn.hold();
        if request.flags == FLAG_STATS {
            self.answer_stats(slot, request);
            return true;
        }
        let mut command = Command {
            conn: conn.clone(),
            code: request.code,
            mode: Mode::Default,
            answered: false,
            counted: true,
            started: conn.stats.start(request.input_len, false),
            body: Body::Slot { slot, request },
        };
        match Mode::from_flags(request.flags) {
            Some(mode) => {
                command.mode = mode;
                dispatch(&self.shared, context, command);
            }
            None => command.fail(Status::InvalidCommand),
        }
        true
    }

    /// Answers a request for the server's counters: the [`crate::stats::word`] figures, as
    /// little-endian `f64`s, in the output area (`OUTPUT_OVERFLOW` if it is too small).
    fn answer_stats(&self, slot: SlotRef, request: Request) {
        let mut command = Command {
            conn: self.conn.clone(),
            code: request.code,
            mode: Mode::Stats,
            answered: false,
            counted: false,
            started: 0,
            body: Body::Slot { slot, request },
        };
        let bytes = self.shared.stats_bytes();
        if command.output_capacity() >= bytes.len() {
            command.output().write(&bytes);
        }
        // Beyond the capacity, `finish` answers OUTPUT_OVERFLOW saying how much was wanted.
        command.finish(0, bytes.len());
    }

    /// A backup frame the reactor read.
    fn received(&self, exec: wire::Exec) {
        let conn = &self.conn;
        if exec.flags == FLAG_STATS {
            // A request for the counters that found no free slot: answered here.
            let bytes = self.shared.stats_bytes();
            let frame = if (exec.output_cap as usize) < bytes.len() {
                let wanted = conn.overflow_body(bytes.len());
                wire::encode_reply(exec.token, Status::OutputOverflow.code(), &wanted)
            } else {
                wire::encode_reply(exec.token, 0, &bytes)
            };
            let _ = conn.link.send(frame);
            return;
        }
        let Some(mode) = Mode::from_flags(exec.flags) else {
            let frame = wire::encode_reply(exec.token, Status::InvalidCommand.code(), &[]);
            let _ = conn.link.send(frame);
            return;
        };
        conn.backup_admit(exec.input.len() + exec.output_cap as usize);
        conn.hold();
        let input_len = exec.input.len() as u32;
        let command = Command {
            conn: conn.clone(),
            code: exec.code,
            mode,
            answered: false,
            started: conn.stats.start(input_len, true),
            counted: true,
            body: Body::Backup {
                token: exec.token,
                output: vec![0; exec.output_cap as usize],
                input: exec.input,
            },
        };
        lock(&self.inbox).push_back(command);
        self.inbox_len.fetch_add(1, Ordering::SeqCst);
        // The owner may have let go of the connection (it ended meanwhile) before this
        // command reached the inbox, and would never look at it again: whoever comes last
        // empties it, so that no command holds the connection (and its `close`) forever.
        // SeqCst, paired with the owner's store of RELEASED before it empties the inbox.
        if self.phase.load(Ordering::SeqCst) == RELEASED {
            self.drop_inbox();
        }
        (conn.wake)();
    }

    /// Drops every backup command still waiting in the inbox: each answers HANDLER_FAILED,
    /// which no one hears on an ended connection, and lets go of the connection.
    fn drop_inbox(&self) {
        let dropped: Vec<Command> = lock(&self.inbox).drain(..).collect();
        self.inbox_len.fetch_sub(dropped.len(), Ordering::SeqCst);
        drop(dropped);
    }

    /// The client closed this connection with a BYE: it ends as if the client had gone (its
    /// commands already sent still run, `close` runs once they are done), and its socket waits
    /// for the client's next hello, as a new client's would (see `accept`, "parked"). A socket
    /// that cannot be handed off cleanly — answers still queued for it — is closed instead.
    fn bye(&self) {
        let conn = &self.conn;
        let stream = conn.link.hand_off(&[]);
        conn.end();
        if let Some(stream) = stream
            && !self.shared.closing.load(Ordering::SeqCst)
        {
            super::accept::Handshake::parked(&self.shared, stream);
        }
    }

    fn on_frame(&self, message: Message) -> Result<(), String> {
        match message {
            Message::Exec(exec) => {
                self.received(exec);
                Ok(())
            }
            Message::Wake => {
                (self.conn.wake)();
                Ok(())
            }
            other => Err(format!(
                "unexpected {} frame after the handshake",
                super::kind_name(&other)
            )),
        }
    }
}

impl<H: Handler> Source for Peer<H> {
    fn ready(self: Arc<Self>, events: u32) {
        let conn = &self.conn;
        if events & reactor::WRITE != 0 && conn.link.flush().is_err() {
            // The client stopped existing while we wrote: its end.
            conn.end();
            return;
        }
        if !conn.link.is_reading() {
            // Over the backup budget: only the client's end counts now.
            if events & reactor::ENDED != 0 {
                conn.end();
            }
            return;
        }
        if events & (reactor::READ | reactor::ENDED) == 0 {
            return;
        }
        let mut budget = READ_BUDGET;
        let mut reader = lock(&self.reader);
        loop {
            match reader.read(&mut conn.link.stream(), &mut budget) {
                Ok(Some(Message::Bye)) => {
                    drop(reader);
                    self.bye();
                    return;
                }
                Ok(Some(message)) => {
                    if let Err(why) = self.on_frame(message) {
                        drop(reader);
                        conn.violation(why, true);
                        return;
                    }
                    if !conn.link.is_reading() {
                        return;
                    }
                }
                Ok(None) => return,
                // A client killed while it wrote a frame is a death, not a violation.
                Err(e) if e.is_end() => {
                    drop(reader);
                    conn.end();
                    return;
                }
                Err(e) => {
                    drop(reader);
                    conn.violation(e.to_string(), true);
                    return;
                }
            }
        }
    }

    fn expired(self: Arc<Self>) {
        if self.conn.link.stalled() {
            self.conn.violation(
                "it read none of its answers within the send timeout".into(),
                false,
            );
        }
    }
}

impl<H: Handler> Member for Peer<H> {
    fn poll(&self) -> bool {
        let conn = &self.conn;
        let context = match self.phase.load(Ordering::Acquire) {
            OPEN => self.context.get().expect("an open peer has its context"),
            OPENING => {
                if conn.ended() {
                    // Gone before `open` was asked: no `open`, so no `close`.
                    self.phase.store(RELEASED, Ordering::Release);
                    self.shared.forget(conn.info.id);
                } else {
                    self.phase.store(ASKED, Ordering::Release);
                    self.ask_open();
                }
                return true;
            }
            _ => return false,
        };
        if let Some(notify) = self.lane.get() {
            return self.poll_lane(notify, context);
        }
        if conn.ended() {
            // Commands the client sent before it went (or before the server closed) still
            // run, as those already taken do; a client that broke the protocol gets nothing
            // more of its ring run.
            // Bounded by the ring's size: a client that goes on writing its ring after the end
            // (a hostile one) cannot keep the owner here.
            if !conn.violated() {
                self.take_waiting(context, conn.cs.capacity() as usize);
            }
            self.let_go();
            return true;
        }
        conn.cs.unwatch();
        self.take_waiting(context, POLL_BATCH)
    }

    fn arm(&self) -> bool {
        if self.inbox_len.load(Ordering::SeqCst) > 0 {
            return false;
        }
        match self.phase.load(Ordering::Acquire) {
            OPENING => false,
            OPEN if self.lane.get().is_some() => {
                !self.conn.ended() && {
                    self.conn.cs.follow();
                    self.conn.cs.watch()
                }
            }
            OPEN => !self.conn.ended() && self.conn.cs.watch(),
            _ => true,
        }
    }

    fn spin(&self) -> Duration {
        self.spin.0
    }

    fn queued(&self) -> &AtomicBool {
        &self.queued
    }

    fn paired(&self) -> &AtomicBool {
        &self.paired
    }

    fn done(&self) -> bool {
        self.phase.load(Ordering::Acquire) == RELEASED && self.inbox_len.load(Ordering::SeqCst) == 0
    }
}
