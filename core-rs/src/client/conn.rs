//! A client's connection: its slots and their states, who pops its SC ring, and how a command
//! ends — answered, or failed by the connection's end.
//!
//! # Who pops the SC ring
//!
//! The SC ring has one consumer at a time: whoever holds the **consumer role** (a flag in this
//! process). A synchronous caller waiting for its slot takes the role if it is free and pops
//! answers itself — so a synchronous client answers its caller with no thread hop — sleeping
//! on the ring ([`crate::ring::PARKED`]) when nothing comes. It completes whatever else it
//! pops: other callers' slots (they are woken), asynchronous commands (queued for the owner). A
//! caller that finds the role taken waits on a local [`Event`] until its slot is done or the
//! role is free.
//!
//! While asynchronous commands are out and no caller holds the role, the connection's
//! **owner** ([`crate::owner`]) pops it: it polls the ring while it has work, and arms it
//! ([`crate::ring::WATCHED`]) before it sleeps, so that the server's next answer sends a WAKE
//! frame, which the reactor turns into a wake of the owner. Completions always run on the
//! owner's thread, never while a thread holds the role, so a completion may itself issue
//! synchronous commands.
//!
//! # A connection lent to another consumer
//!
//! A client in JavaScript pushes and pops its rings itself, through its view of the segment
//! ([`Conn::lend`]): its slots, their states and both ring positions are then JavaScript's, and
//! this side keeps what is not per command — the control socket and the backup path, the
//! connection's end, and waking. The owner's poll then only looks at the SC ring's next cell (at
//! the read position JavaScript publishes) and tells JavaScript there is something to pop; its
//! arming announces [`crate::ring::WATCHED`] the same way, so that an answer that comes while
//! JavaScript is idle wakes it through the reactor. It tells JavaScript of the connection's
//! end once.
//!
//! # Slot states
//!
//! `FREE` (on the free list) → `OWNED` (a caller prepares it) → `SUBMITTED` (its offset went on
//! the CS ring) → `COMPLETING` (one thread won the right to record its result) → `DONE` → `FREE`.
//! The answer from the ring and the connection's end race for `SUBMITTED → COMPLETING`; the
//! compare-and-swap makes exactly one of them deliver. A caller whose deadline passes lets its
//! ticket go with the slot `SUBMITTED → ABANDONED`, racing the answer the same way; the answer
//! of an abandoned slot frees it (`ABANDONED → FREE`), so a late answer never reaches a later
//! command: the slot is not reused before it came back.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::ticket::{Backup, Completion, Ticket};
use super::warm::Parking;
use crate::channel::Event;
use crate::endpoint::Endpoint;
use crate::futex::{self, Scope};
use crate::link::Link;
use crate::owner::{LaneNotify, Lent, Member, Owner};
use crate::reactor::{self, Reactor, Source};
use crate::ring::{self, Park, Ring, Spin, Waker};
use crate::segment::{CLASSES, Segment};
use crate::stats::Stats;
use crate::status::{Error, Status};
use crate::wire::{self, Message};

/// On the free list.
pub(crate) const FREE: u32 = 0;
/// Taken by a caller, which prepares it.
pub(crate) const OWNED: u32 = 1;
/// Its offset went on the CS ring: the server's until its answer comes back.
pub(crate) const SUBMITTED: u32 = 2;
/// One thread won the right to record its result.
pub(crate) const COMPLETING: u32 = 3;
/// Its result is recorded.
pub(crate) const DONE: u32 = 4;
/// Its caller let its ticket go while the server still held it (the caller's deadline passed):
/// its answer, when it comes, is discarded and frees it ([`Conn::dispatch`]).
pub(crate) const ABANDONED: u32 = 5;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Per-slot bookkeeping of this process (the authoritative copy; the segment's header is the
/// peer's to scribble on).
#[derive(Default)]
pub(crate) struct SlotState {
    pub(crate) state: AtomicU32,
    pub(crate) generation: AtomicU32,
    pub(crate) output_cap: AtomicU32,
    pub(crate) status: AtomicI32,
    pub(crate) output_len: AtomicU32,
    pub(crate) asynchronous: AtomicBool,
    /// When the command went out ([`crate::stats::now_ns`]), for the round-trip histogram.
    pub(crate) sent_at: AtomicU64,
    pub(crate) pending: Mutex<Option<(Ticket, Completion)>>,
}

/// A finished asynchronous command, waiting for the owner to run its completion.
pub(crate) enum Finished {
    Slot(u32),
    Backup(Arc<Backup>),
}

/// See the module doc.
pub(crate) struct Conn {
    pub(crate) ic_id: String,
    /// The server's files, removed by this side if it finds the server killed.
    pub(crate) endpoint: Endpoint,
    /// The server's process id (from the socket's credentials).
    pub(crate) server_pid: i32,
    /// The protocol minor both sides speak (the lower of the two).
    pub(crate) minor: u16,
    /// Whether the server is in this process (its handlers may run on this process's threads).
    pub(crate) in_this_process: bool,
    /// Commands, bytes, failures and round trips of this connection.
    pub(crate) stats: Stats,
    pub(crate) segment: Arc<Segment>,
    pub(crate) cs: Ring,
    pub(crate) sc: Ring,
    pub(crate) spin: Spin,
    pub(crate) slots: Box<[SlotState]>,
    pub(crate) free: [Mutex<Vec<u32>>; CLASSES],
    /// The SC ring's consumer role (see the module doc).
    consumer: AtomicBool,
    /// Wakes synchronous callers waiting for their slot or for the consumer role.
    pub(crate) waiters: Event,
    /// The word of this process a parked consumer sleeps on besides the ring's flag: `end`
    /// changes it, which no peer can prevent.
    epoch: AtomicU32,
    /// How the last answers came: up by one per answer within [`QUICK`] of its command (to
    /// [`QUICK_MAX`]), down by two per slower one; see [`Conn::consume_until`].
    quick: AtomicU32,
    /// 0 while the connection is open, else the status it ended with.
    pub(crate) ended: AtomicI32,
    end_error: Mutex<Option<Error>>,
    pub(crate) link: Link,
    pub(crate) backups: Mutex<HashMap<u64, Arc<Backup>>>,
    pub(crate) next_token: AtomicU64,
    /// Asynchronous commands whose answer has not been dispatched yet.
    pub(crate) async_out: AtomicUsize,
    ready: Mutex<VecDeque<Finished>>,
    ready_len: AtomicUsize,
    /// Completions running now (on the owner), for `close` to wait for.
    running: AtomicUsize,
    pub(crate) owner: Arc<dyn Owner>,
    queued: AtomicBool,
    /// See [`Member::paired`].
    paired: AtomicBool,
    reader: Mutex<wire::Reader>,
    /// Set once the server's end closed while its lock was still held: until when to wait
    /// for it (see [`Conn::died`]).
    death: Mutex<Option<Instant>>,
    /// Where [`Conn::park`] leaves the control socket, when the server speaks BYE and the
    /// segment is kept warm.
    parking: Option<Parking>,
    /// Set once the connection is lent ([`Conn::lend`]): how to tell the consumer that the SC
    /// ring has entries (`Ok`) or that the connection ended (its error).
    lane: OnceLock<LaneNotify>,
    /// A lent connection whose consumer takes its answers itself, unprompted: arming it leaves
    /// its SC ring unwatched, so that answers wake nobody ([`super::Client::lane_quiet`]).
    pub(crate) quiet: AtomicBool,
    /// Whether the lane's consumer was told of the end.
    lane_told_end: AtomicBool,
    me: Weak<Conn>,
}

/// Wakes the server after a CS push, as its sleep flag asks.
pub(crate) struct PushWaker<'a>(pub(crate) &'a Link);

impl Waker for PushWaker<'_> {
    fn unpark(&self, flag: &AtomicU32) {
        futex::wake(flag, u32::MAX, Scope::Shared);
    }
    fn signal(&self) {
        self.0.signal();
    }
}

/// A synchronous caller's sleep on the SC ring: the ring's flag, and the connection's epoch;
/// and whether its spin before sleeping is polite.
struct ConnPark<'a>(&'a AtomicU32, bool, Option<Instant>);

impl Park for ConnPark<'_> {
    fn epoch(&self) -> u32 {
        // Acquire: pairs with the Release increment in `interrupt`.
        self.0.load(Ordering::Acquire)
    }
    fn park(&self, flag: &AtomicU32, epoch: u32) {
        let left = self.2.map(|d| d.saturating_duration_since(Instant::now()));
        futex::wait_either(flag, ring::PARKED, self.0, epoch, left);
    }
    fn polite(&self) -> bool {
        self.1
    }
}

/// An answer that comes within this (ns) of its command's sending: the pair answers back and
/// forth at full speed, and a caller's spin keeps its CPU (see [`crate::ring::Polite`]).
const QUICK: u64 = 10_000;
/// Where the count of quick answers stops: a long run of them outweighs a few slow ones (a
/// collection in the server, a scheduling hiccup), so that a busy pair does not start yielding
/// at the first, and a connection whose answers come slowly turns polite within a few.
const QUICK_MAX: u32 = 8;
/// Below this count of quick answers, a caller's spin is polite.
const QUICK_ENOUGH: u32 = 2;

/// What [`Conn::new`] needs.
pub(crate) struct Parts {
    pub(crate) ic_id: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) server_pid: i32,
    /// The protocol minor both sides speak (the lower of the two).
    pub(crate) minor: u16,
    pub(crate) segment: Segment,
    pub(crate) spin: Spin,
    pub(crate) link: Link,
    pub(crate) owner: Arc<dyn Owner>,
    /// Where to park the control socket at a close; `None` when it is not to be parked.
    pub(crate) parking: Option<Parking>,
}

impl Conn {
    pub(crate) fn new(p: Parts) -> Arc<Conn> {
        let layout = *p.segment.layout();
        let free = std::array::from_fn(|c| {
            let cl = layout.classes[c];
            // Reversed so that `pop` hands out the lowest offsets first.
            Mutex::new(
                (cl.first_index..cl.first_index + cl.class.count)
                    .rev()
                    .collect(),
            )
        });
        Arc::new_cyclic(|me| Conn {
            ic_id: p.ic_id,
            endpoint: p.endpoint,
            server_pid: p.server_pid,
            minor: p.minor,
            in_this_process: p.server_pid == std::process::id() as i32,
            stats: Stats::default(),
            cs: p.segment.cs_ring(),
            sc: p.segment.sc_ring(),
            slots: (0..layout.slot_count())
                .map(|_| SlotState::default())
                .collect(),
            segment: Arc::new(p.segment),
            spin: p.spin,
            free,
            consumer: AtomicBool::new(false),
            waiters: Event::new(),
            epoch: AtomicU32::new(0),
            quick: AtomicU32::new(0),
            ended: AtomicI32::new(0),
            end_error: Mutex::new(None),
            link: p.link,
            backups: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            async_out: AtomicUsize::new(0),
            ready: Mutex::new(VecDeque::new()),
            ready_len: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            owner: p.owner,
            queued: AtomicBool::new(false),
            paired: AtomicBool::new(false),
            reader: Mutex::new(wire::Reader::default()),
            death: Mutex::new(None),
            parking: p.parking,
            lane: OnceLock::new(),
            quiet: AtomicBool::new(false),
            lane_told_end: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    pub(crate) fn me(&self) -> Option<Arc<Conn>> {
        self.me.upgrade()
    }

    /// Asks the owner to poll this connection.
    pub(crate) fn wake_owner(&self) {
        if let Some(me) = self.me() {
            self.owner.wake(me);
        }
    }

    #[inline]
    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst) != 0
    }

    /// The error a command gets for library status `status`.
    pub(crate) fn error_for(&self, status: i32) -> Error {
        let s = Status::from_code(status).unwrap_or(Status::ProtocolViolation);
        if let Some(e) = lock(&self.end_error).as_ref().filter(|e| e.status() == s) {
            return e.clone();
        }
        let why = match s {
            Status::HandlerFailed => "the server's handler failed for this command".to_string(),
            Status::InvalidCommand => "the server refused the command as malformed".to_string(),
            other => format!("the server answered {other}"),
        };
        Error::new(s, format!("'{}': {why}", self.ic_id))
    }

    /// Says BYE and parks the control socket for this process's next connection to the same
    /// server (see `warm`), instead of closing it: only while the connection is open, and when
    /// the BYE goes whole at once. The caller ends the connection next; returns whether the
    /// socket was parked.
    pub(crate) fn park(&self) -> bool {
        let Some(parking) = &self.parking else {
            return false;
        };
        if self.is_ended() {
            return false;
        }
        let Some(stream) = self.link.hand_off(&wire::BYE) else {
            return false;
        };
        *lock(parking) = Some(stream);
        true
    }

    /// Ends the connection with `err` and fails every outstanding command with its status.
    pub(crate) fn end(&self, err: Error) {
        {
            let mut e = lock(&self.end_error);
            if e.is_some() {
                return;
            }
            *e = Some(err.clone());
        }
        let code = err.status().code();
        // SeqCst, paired with the SeqCst state store and `ended` load in `submit_slot`: either
        // the submitter sees the end, or the scan below sees its slot as SUBMITTED.
        self.ended.store(code, Ordering::SeqCst);
        self.link.shutdown();
        for (i, st) in self.slots.iter().enumerate() {
            self.complete_slot(i as u32, st, code, 0);
        }
        let backups: Vec<_> = lock(&self.backups).drain().map(|(_, b)| b).collect();
        for b in backups {
            self.complete_backup(b, code, Vec::new(), 0);
        }
        self.interrupt();
        self.waiters.notify();
        self.wake_owner();
    }

    /// The server's end of the socket closed: it exited or was killed. A server killed outright
    /// leaves its socket and lock files; the first of its clients to notice removes them (only
    /// once no live server holds the lock), before any command hears of the death. While the
    /// dying server still holds its lock (it closes its files one by one as it exits), the
    /// reactor looks again every 100 µs, up to 2 s, instead of waiting.
    fn died(&self) {
        if self.is_ended() {
            // This side ended it (a close, a violation): the socket's end is its own doing.
            return;
        }
        let gone = || {
            Error::new(
                Status::PeerTerminated,
                format!("the server of '{}' ended the connection", self.ic_id),
            )
        };
        if self
            .endpoint
            .remove_after_death_step(self.server_pid)
            .is_some()
        {
            return self.end(gone());
        }
        let patience = *lock(&self.death).get_or_insert_with(|| Instant::now() + DEATH_PATIENCE);
        let (token, reactor) = (self.link.token(), Reactor::get());
        match (token, reactor) {
            (Some(token), Ok(r)) if Instant::now() < patience => {
                // The socket's end is level-triggered: stop watching it meanwhile.
                r.unwatch(self.link.fd());
                r.deadline(token, Instant::now() + Duration::from_micros(100));
            }
            _ => self.end(gone()),
        }
    }

    /// Ends a parked consumer's sleep, whatever the ring's flag says.
    fn interrupt(&self) {
        // Release: pairs with the Acquire load in `ConnPark::epoch`.
        self.epoch.fetch_add(1, Ordering::Release);
        futex::wake(&self.epoch, u32::MAX, Scope::Private);
    }

    /// Records a slot's result if it is still outstanding; returns whether this call did.
    pub(crate) fn complete_slot(&self, index: u32, st: &SlotState, status: i32, len: u32) -> bool {
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
        let took = self
            .stats
            .finish(st.sent_at.load(Ordering::Relaxed), status, len);
        // Relaxed: a hint for the next caller's spin, ordered by nothing (racing updates lose a
        // step, which a hint can afford).
        let q = self.quick.load(Ordering::Relaxed);
        let q = if took < QUICK {
            (q + 1).min(QUICK_MAX)
        } else {
            q.saturating_sub(2)
        };
        self.quick.store(q, Ordering::Relaxed);
        st.status.store(status, Ordering::Relaxed);
        st.output_len.store(len, Ordering::Relaxed);
        // Release: a thread that sees DONE sees the result above.
        st.state.store(DONE, Ordering::Release);
        if asynchronous {
            self.queue(Finished::Slot(index));
        } else {
            self.waiters.notify();
        }
        true
    }

    /// Completes a backup-path command: `len` is `output`'s length, or for an overflow the
    /// bytes its handler wanted.
    pub(crate) fn complete_backup(&self, b: Arc<Backup>, status: i32, output: Vec<u8>, len: u32) {
        if b.state
            .compare_exchange(SUBMITTED, COMPLETING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let asynchronous = b.asynchronous.load(Ordering::Relaxed);
        self.stats
            .finish(b.sent_at.load(Ordering::Relaxed), status, len);
        b.status.store(status, Ordering::Relaxed);
        b.output_len.store(len, Ordering::Relaxed);
        *lock(&b.output) = Some(output);
        b.state.store(DONE, Ordering::Release);
        if asynchronous {
            self.queue(Finished::Backup(b));
        } else {
            self.waiters.notify();
        }
    }

    /// Hands a finished asynchronous command to the owner, which runs its completion.
    fn queue(&self, f: Finished) {
        lock(&self.ready).push_back(f);
        // SeqCst: before the decrement of `async_out`, so that an owner that sees no command
        // out sees this one ready (`arm` looks at `ready_len` first).
        self.ready_len.fetch_add(1, Ordering::SeqCst);
        self.async_out.fetch_sub(1, Ordering::SeqCst);
        self.wake_owner();
    }

    /// Validates one SC ring entry and completes its slot. `Err` means the server broke the
    /// protocol; the connection has been ended.
    pub(crate) fn dispatch(&self, offset: u32) -> Result<(), ()> {
        let layout = self.segment.layout();
        let Some(slot) = layout.locate(offset) else {
            return self.violation(format!(
                "SC ring entry {offset:#x} is not the offset of a slot"
            ));
        };
        let st = &self.slots[slot.index as usize];
        // Read once; the server can rewrite the header at any time.
        let reply = self.segment.header(slot).read_reply();
        if !matches!(st.state.load(Ordering::Acquire), SUBMITTED | ABANDONED) {
            if self.is_ended() {
                return Ok(());
            }
            return self.violation(format!(
                "slot {} came back while it was not outstanding",
                slot.index
            ));
        }
        let generation = st.generation.load(Ordering::Relaxed);
        if reply.generation != generation {
            return self.violation(format!(
                "slot {} came back with generation {} instead of {generation}",
                slot.index, reply.generation,
            ));
        }
        let cap = st.output_cap.load(Ordering::Relaxed);
        // An overflow's length is the bytes its handler wanted (2.1), beyond the capacity.
        if reply.output_len > cap && reply.status != Status::OutputOverflow.code() {
            return self.violation(format!(
                "slot {} reports {} output bytes, beyond its capacity of {cap}",
                slot.index, reply.output_len,
            ));
        }
        if reply.status < 0 && Status::from_code(reply.status).is_none() {
            return self.violation(format!(
                "slot {} carries unknown library status {}",
                slot.index, reply.status
            ));
        }
        if !self.complete_slot(slot.index, st, reply.status, reply.output_len) {
            // Its caller let it go (a deadline): the answer is discarded and frees the slot.
            // AcqRel: after the server's writes to the slot (the ring's acquire above) and
            // before the next owner's (the free list's lock).
            if st
                .state
                .compare_exchange(ABANDONED, FREE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // Counted now, as it was in flight until now.
                self.stats.finish(
                    st.sent_at.load(Ordering::Relaxed),
                    reply.status,
                    reply.output_len,
                );
                lock(&self.free[slot.class]).push(slot.index);
            }
        }
        Ok(())
    }

    #[cold]
    pub(crate) fn violation(&self, why: String) -> Result<(), ()> {
        self.end(self.broken(format!("broke the protocol: {why}")));
        Err(())
    }

    pub(crate) fn try_take_role(&self) -> bool {
        // Acquire: the previous holder's pops (and its read position) happen before ours.
        !self.consumer.load(Ordering::Relaxed)
            && self
                .consumer
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    pub(crate) fn role_is_free(&self) -> bool {
        !self.consumer.load(Ordering::Acquire)
    }

    /// A synchronous caller gives the role back; the owner takes over while asynchronous
    /// commands are out.
    pub(crate) fn give_up_role(&self) {
        self.release_role();
        // SeqCst, paired with the owner's SeqCst `queued` store before it arms: either it tries
        // the role after our release, or our wake below queues it again.
        if self.async_out.load(Ordering::SeqCst) > 0 {
            self.wake_owner();
        }
    }

    fn release_role(&self) {
        // SeqCst: also a release for the next holder (pairs with the Acquire in
        // `try_take_role`).
        self.consumer.store(false, Ordering::SeqCst);
        self.waiters.notify();
    }

    /// A lent connection's wait for its SC ring's next entry (see [`super::Client::lane_wait`]):
    /// returns whether one is there, false once `stop()` held first.
    ///
    /// The wait uses the ring's sleep flag, which the owner may have left announcing
    /// [`ring::WATCHED`] (the connection armed, out of the owner's active set). The announcement
    /// is made again before returning, so that an answer pushed after the wait still wakes the
    /// owner; the consumer pops everything there after this returns, which covers the answers
    /// pushed before (the store-buffer argument of [`crate::ring`], with this fence and the
    /// consumer's pops after it).
    pub(crate) fn wait_lane_entry(
        &self,
        deadline: Option<Instant>,
        stop: impl Fn() -> bool,
    ) -> bool {
        let polite = self.quick.load(Ordering::Relaxed) < QUICK_ENOUGH;
        let park = ConnPark(&self.epoch, polite, deadline);
        let started = Instant::now();
        let flag = self.sc.flag();
        // Relaxed: written by this thread (the owner's arm runs on it) or swapped by the server,
        // whose swap comes with a wake of its own.
        let watched = flag.load(Ordering::Relaxed) == ring::WATCHED;
        if watched {
            // This thread looks at the ring now: the answer need not come as a WAKE frame.
            flag.store(ring::AWAKE, Ordering::Relaxed);
        }
        let mut found = self.sc.wait_entry(self.spin, &park, stop).is_ok();
        if watched {
            flag.store(ring::WATCHED, Ordering::Relaxed);
            // SYNC POINT C of the ring (pairs with the producer's fence after its push): an
            // entry pushed before the announcement is seen by this look, and the consumer pops
            // it; one pushed after it is signalled.
            std::sync::atomic::fence(Ordering::SeqCst);
            found = found || !self.sc.is_empty();
        }
        if found {
            // The same hint `complete_slot` keeps for slots of its own: whether answers come at
            // once (measured here from the wait's start, the consumer having just pushed).
            let quick = started.elapsed() < Duration::from_nanos(QUICK);
            let q = self.quick.load(Ordering::Relaxed);
            let q = if quick {
                (q + 1).min(QUICK_MAX)
            } else {
                q.saturating_sub(2)
            };
            self.quick.store(q, Ordering::Relaxed);
        }
        found
    }

    /// Pops and dispatches SC entries until `done()`, the connection ends, or a violation.
    /// The caller holds the consumer role.
    pub(crate) fn consume_until(&self, done: impl Fn() -> bool, deadline: Option<Instant>) {
        // Polite unless the answers have been coming at once: a busy pair keeps its CPUs, and a
        // caller that waits on a server that may need this very CPU gives it away now and then.
        let polite = self.quick.load(Ordering::Relaxed) < QUICK_ENOUGH;
        let park = ConnPark(&self.epoch, polite, deadline);
        let passed = || deadline.is_some_and(|d| Instant::now() >= d);
        while !done() {
            match self
                .sc
                .pop_blocking(self.spin, &park, || self.is_ended() || done() || passed())
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

    /// Lends the rings and the slots to a consumer that pushes and pops them itself (see the
    /// module doc); `notify` runs on the owner's thread. Only once, and only while no slot is in
    /// use: the consumer starts with every slot free.
    pub(crate) fn lend(&self, notify: LaneNotify) -> Result<Lent, Error> {
        if self.is_ended() {
            return Err(self.error_for(self.ended.load(Ordering::SeqCst)));
        }
        let busy = self
            .slots
            .iter()
            .any(|st| st.state.load(Ordering::Acquire) != FREE);
        if busy {
            return Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "the connection to '{}' has commands out: it cannot be lent",
                    self.ic_id
                ),
            ));
        }
        self.lane.set(notify).map_err(|_| {
            Error::new(
                Status::InvalidArgument,
                format!("the connection to '{}' is lent already", self.ic_id),
            )
        })?;
        // The owner polls it from now on, until it is armed: the consumer's first answers are
        // noticed whether or not it sleeps.
        self.wake_owner();
        Ok(Lent {
            cs_position: self.cs.position(),
            sc_position: self.sc.position(),
        })
    }

    /// Whether the connection is lent ([`Conn::lend`]).
    #[inline]
    pub(crate) fn is_lent(&self) -> bool {
        self.lane.get().is_some()
    }

    /// The owner's poll of a lent connection: tells the consumer of entries to pop, or of the
    /// end; runs the backup path's completions. Returns whether there was anything.
    fn poll_lane(&self, notify: &LaneNotify) -> bool {
        if self.is_ended() {
            // SeqCst: `done` and `arm` read it.
            if !self.lane_told_end.swap(true, Ordering::SeqCst) {
                notify(Err(self.error_for(self.ended.load(Ordering::SeqCst))));
                return true;
            }
            return false;
        }
        // The owner looks at the ring now: the server need not signal.
        self.sc.unwatch();
        self.sc.follow();
        if self.sc.is_empty() {
            return false;
        }
        notify(Ok(()));
        true
    }

    /// Runs every queued completion, on the calling thread (the owner's).
    pub(crate) fn run_ready(&self) {
        loop {
            let next = lock(&self.ready).pop_front();
            let Some(finished) = next else { break };
            self.running.fetch_add(1, Ordering::SeqCst);
            self.ready_len.fetch_sub(1, Ordering::SeqCst);
            let pending = match finished {
                Finished::Slot(i) => lock(&self.slots[i as usize].pending).take(),
                Finished::Backup(b) => lock(&b.pending).take(),
            };
            if let Some((ticket, completion)) = pending {
                // A panicking completion must not take the owner (and every later completion)
                // with it; the ticket is dropped either way.
                let _ =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| completion(ticket)));
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
        }
        self.waiters.notify();
    }

    /// Whether every completion due has run (after the end, none is due any more).
    pub(crate) fn settled(&self) -> bool {
        self.ready_len.load(Ordering::SeqCst) == 0
            && self.running.load(Ordering::SeqCst) == 0
            && self.async_out.load(Ordering::SeqCst) == 0
    }

    /// The error of a server that broke the protocol: "the server of '<id>' <what>".
    #[cold]
    fn broken(&self, what: String) -> Error {
        Error::new(
            Status::ProtocolViolation,
            format!("the server of '{}' {what}", self.ic_id),
        )
    }

    fn on_frame(&self, message: Message) -> Result<(), Error> {
        match message {
            Message::Wake => {
                self.wake_owner();
                Ok(())
            }
            Message::Reply(reply) => {
                // The record stays in the table until the reply is found sound: a violation
                // ends the connection, which fails it (and every other) with the reason.
                let mut backups = lock(&self.backups);
                let Some(cap) = backups.get(&reply.token).map(|b| b.output_cap) else {
                    return Err(
                        self.broken(format!("answered unknown backup command {}", reply.token))
                    );
                };
                let len = if reply.status == Status::OutputOverflow.code() {
                    // No output; the body says how many bytes the handler wanted (2.1), if
                    // anything.
                    match reply.output[..] {
                        [] => 0,
                        [a, b, c, d] => u32::from_le_bytes([a, b, c, d]),
                        _ => {
                            return Err(self.broken(format!(
                                "sent an OUTPUT_OVERFLOW answer of {} bytes (4 at most)",
                                reply.output.len()
                            )));
                        }
                    }
                } else if reply.output.len() > cap as usize {
                    return Err(self.broken(format!(
                        "sent {} output bytes for a capacity of {cap}",
                        reply.output.len()
                    )));
                } else if reply.status < 0 && Status::from_code(reply.status).is_none() {
                    return Err(
                        self.broken(format!("sent unknown library status {}", reply.status))
                    );
                } else {
                    reply.output.len() as u32
                };
                let b = backups
                    .remove(&reply.token)
                    .expect("found above, under the same lock");
                drop(backups);
                let output = if reply.status == Status::OutputOverflow.code() {
                    Vec::new()
                } else {
                    reply.output
                };
                self.complete_backup(b, reply.status, output, len);
                // The server sends no WAKE frame while a frame of its own waits to be read
                // (`Link::signal`): this reply may stand for the wake of an answer it pushed
                // on the SC ring meanwhile. An asynchronous reply woke the owner already; a
                // synchronous one wakes only its caller, so the owner looks at the ring here.
                self.wake_owner();
                Ok(())
            }
            Message::Refuse { status, reason } => Err(Error::new(
                Status::from_code(status).unwrap_or(Status::ProtocolViolation),
                reason,
            )),
            _ => Err(self.broken("sent an unexpected frame".to_string())),
        }
    }
}

/// Bytes the reactor reads from one connection before it looks at the others.
const READ_BUDGET: usize = 256 << 10;

/// How long a client waits for a dead server's lock before it calls the server gone.
const DEATH_PATIENCE: Duration = Duration::from_secs(2);

impl Source for Conn {
    fn ready(self: Arc<Self>, events: u32) {
        if events & reactor::WRITE != 0 && self.link.flush().is_err() {
            // The write failed: the server's end is gone.
            return self.died();
        }
        if events & (reactor::READ | reactor::ENDED) == 0 {
            return;
        }
        let mut budget = READ_BUDGET;
        let mut reader = lock(&self.reader);
        loop {
            let failed = match reader.read(&mut self.link.stream(), &mut budget) {
                Ok(Some(message)) => match self.on_frame(message) {
                    Ok(()) => continue,
                    Err(e) => e,
                },
                Ok(None) => return,
                Err(e) if e.is_end() => {
                    drop(reader);
                    return self.died();
                }
                Err(e) => self.broken(format!("broke the protocol: {e}")),
            };
            drop(reader);
            return self.end(failed);
        }
    }

    fn expired(self: Arc<Self>) {
        if lock(&self.death).is_some() && !self.is_ended() {
            self.died();
        }
    }
}

impl Member for Conn {
    fn poll(&self) -> bool {
        let mut did = false;
        if let Some(notify) = self.lane.get() {
            did = self.poll_lane(notify);
        } else if self.async_out.load(Ordering::SeqCst) > 0
            && !self.is_ended()
            && self.try_take_role()
        {
            self.sc.unwatch();
            while let Some(offset) = self.sc.try_pop() {
                did = true;
                if self.dispatch(offset).is_err() {
                    break;
                }
            }
            self.release_role();
        }
        if self.ready_len.load(Ordering::SeqCst) > 0 {
            self.run_ready();
            did = true;
        }
        did
    }

    fn arm(&self) -> bool {
        if self.ready_len.load(Ordering::SeqCst) > 0 {
            return false;
        }
        if self.lane.get().is_some() {
            if self.is_ended() {
                return self.lane_told_end.load(Ordering::SeqCst);
            }
            if self.quiet.load(Ordering::Relaxed) {
                // Its consumer takes the answers when it next sends or waits: none wakes it.
                self.sc.unwatch();
                return true;
            }
            // Whatever JavaScript has out: an answer to a command it sent just now must wake it.
            self.sc.follow();
            return self.sc.watch();
        }
        if self.async_out.load(Ordering::SeqCst) == 0 || self.is_ended() {
            return true;
        }
        if !self.try_take_role() {
            // A synchronous caller pops; it wakes the owner when it gives the role back.
            return true;
        }
        let watched = self.sc.watch();
        self.release_role();
        watched
    }

    fn spin(&self) -> std::time::Duration {
        self.spin.0
    }

    fn queued(&self) -> &AtomicBool {
        &self.queued
    }

    fn paired(&self) -> &AtomicBool {
        &self.paired
    }

    fn done(&self) -> bool {
        self.is_ended()
            && self.ready_len.load(Ordering::SeqCst) == 0
            && (self.lane.get().is_none() || self.lane_told_end.load(Ordering::SeqCst))
    }
}
