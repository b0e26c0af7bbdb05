//! The process-wide hub between the library and the one JavaScript thread that uses it.
//!
//! The hub is that thread's **owner** of connections ([`shmcall_core::owner`]): JavaScript pops
//! the rings of its clients and servers itself, through the hub, while it waits for events
//! ([`Hub::idle`]); a command or an answer then reaches it with no thread hop. What the members
//! find — an asynchronous command finished; a client connected, sent a command, or left — they
//! queue here as [`Event`]s, which JavaScript drains in one loop of synchronous calls.
//!
//! When JavaScript goes idle, the hub arms its members (their rings wake the reactor) and arms
//! the doorbell: whatever the reactor wakes then — a member, or an event it queued — rings it,
//! once per idle → busy transition, so a burst costs one ring and a busy JavaScript thread is
//! never interrupted.
//!
//! The doorbell is whatever the JavaScript side registered: a Node-API threadsafe function
//! (`napi.rs`), which queues a call on the event loop without blocking the ringing thread; or,
//! without one, the condition variable that [`Hub::wait`] (a `nonblocking` FFI call) sleeps on.
//!
//! The idle handshake is the store-buffer pattern: JavaScript stores `idle` then loads the
//! queue's and the woken members' counts; a waker stores its count then swaps `idle`. With all
//! four SeqCst, at least one side sees the other, so nothing is left queued with no ring.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shmcall_core::channel::Event as Arrival;
use shmcall_core::owner::{Active, Coarse, Member, Owner};
use shmcall_core::ring::{Polite, Spin};
use shmcall_core::server::{Command, ConnInfo};
use shmcall_core::{Client, Error, Ticket};

use crate::pool::{PoolNote, PoolOwner};

/// One thing for JavaScript to do.
#[derive(Debug)]
pub enum Event {
    /// An asynchronous command of client `client` finished; `token` is JavaScript's.
    Completion {
        /// JavaScript's id of the client.
        client: u64,
        /// JavaScript's id of the command.
        token: u64,
        /// The finished command.
        ticket: Box<Ticket>,
    },
    /// A connect of client `client` ended: the client, or why not.
    Connected {
        /// JavaScript's id of the client.
        client: u64,
        /// The connection, or the failure.
        result: Result<Box<Client>, Error>,
    },
    /// A client connected to server `server`; answer with `opened`.
    Open {
        /// JavaScript's id of the server.
        server: u64,
        /// The connection.
        conn: ConnInfo,
    },
    /// A command arrived at server `server`.
    Exec {
        /// JavaScript's id of the server.
        server: u64,
        /// The connection it came on.
        conn: u64,
        /// The command, to finish.
        command: Box<Command>,
    },
    /// A lent connection has entries to pop (`Ok`: JavaScript clears `due` as it takes the
    /// event, so that later entries bring another), or it ended (its error): client `owner`'s
    /// answers (`conn` 0), or server `owner`'s commands on connection `conn`.
    Lane {
        /// JavaScript's id of the client or server.
        owner: u64,
        /// The server's connection; 0 for a client.
        conn: u64,
        /// What to do.
        result: Result<Arc<AtomicBool>, Error>,
    },
    /// A connection of server `server` ended after draining.
    Close {
        /// JavaScript's id of the server.
        server: u64,
        /// The connection.
        conn: u64,
    },
    /// The pool of server `server` tells it something (`pool.rs`).
    Pool {
        /// JavaScript's id of the server.
        server: u64,
        /// What.
        note: PoolNote,
    },
    /// No worker of a pool waits: the hub's thread polls its connections for it, in the
    /// drain, and JavaScript never sees this event (`pool.rs`).
    PoolPoll(Arc<PoolOwner>),
}

type Bell = Box<dyn Fn() + Send + Sync>;

/// A number that names the calling thread (never 0), cheaper to compare than a `ThreadId`.
pub fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TOKEN.with(|t| *t)
}

/// See the module doc.
pub struct Hub {
    /// The JavaScript thread that drains this hub ([`thread_token`]), or 0 before one claimed it.
    owner: AtomicU64,
    events: Mutex<VecDeque<Event>>,
    len: AtomicUsize,
    idle: AtomicBool,
    bell: Mutex<Option<Bell>>,
    /// Doorbells installed so far ([`Hub::bells`]).
    bells: std::sync::atomic::AtomicU32,
    /// Fallback doorbell: wakes [`Hub::wait`].
    rung: Condvar,
    /// Wakes JavaScript while it waits briefly in [`Hub::idle`].
    arrived: Arrival,
    /// The connections JavaScript owns that had work lately, and those woken for it.
    active: Active,
    interrupted: AtomicBool,
    /// When JavaScript's current drain must hand the event loop back, in nanoseconds since
    /// [`epoch`] (see [`Hub::drain_begin`]); 0 for no limit.
    drain_deadline: AtomicU64,
}

/// What [`Hub::idle`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// JavaScript may go idle: the doorbell is armed, the members armed.
    Idle,
    /// Events arrived: drain again.
    Events,
    /// The drain used up its budget: continue in a task of its own, so that the event loop's
    /// timers and I/O run first. The doorbell is not armed meanwhile.
    Spent,
}

impl Idle {
    /// Its code for JavaScript (`IDLE` in `src/native.ts`).
    pub fn code(self) -> i32 {
        match self {
            Idle::Events => 0,
            Idle::Idle => 1,
            Idle::Spent => 2,
        }
    }
}

/// The origin of [`Hub::drain_begin`]'s clock.
fn epoch() -> Instant {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    *EPOCH
}

fn nanos_since_epoch(t: Instant) -> u64 {
    u64::try_from(t.duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("len", &self.len.load(Ordering::Relaxed))
            .field("idle", &self.idle.load(Ordering::Relaxed))
            .field("active", &self.active)
            .finish()
    }
}

/// The hub of this process.
pub static HUB: LazyLock<Arc<Hub>> = LazyLock::new(|| Arc::new(Hub::new()));

/// The hub as the owner of the connections JavaScript makes.
pub fn owner() -> Arc<dyn Owner> {
    HUB.clone()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls and arms at most this many times in a row while going idle before it hands back to
/// JavaScript: a member that keeps finding work produces events, so this bound is only met by a
/// peer that keeps a ring busy.
const ARM_ROUNDS: usize = 16;

impl Owner for Hub {
    fn wake(&self, member: Arc<dyn Member>) {
        if self.active.wake(member) {
            self.arrived.notify();
        }
        // Also when it was queued already: it may have been offered to a JavaScript thread
        // that went idle since.
        self.ring_if_idle();
    }

    fn offer(&self, member: Arc<dyn Member>) -> bool {
        if self.active.wake(member) {
            self.arrived.notify();
        }
        // SeqCst, after the member was queued (its SeqCst count): the waker's half of the idle
        // handshake (module doc). JavaScript that is not idle gathers it before it goes idle;
        // JavaScript that went idle before the member was queued does not look until a ring.
        !self.idle.load(Ordering::SeqCst)
    }

    fn is_current(&self) -> bool {
        self.owner.load(Ordering::Acquire) == thread_token()
    }

    fn forget(&self, member: &Arc<dyn Member>) {
        self.active.forget(member);
    }
}

impl Hub {
    fn new() -> Hub {
        Hub {
            owner: AtomicU64::new(0),
            events: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            idle: AtomicBool::new(true),
            bell: Mutex::new(None),
            bells: std::sync::atomic::AtomicU32::new(0),
            rung: Condvar::new(),
            arrived: Arrival::new(),
            active: Active::default(),
            interrupted: AtomicBool::new(false),
            drain_deadline: AtomicU64::new(0),
        }
    }

    /// Makes the calling thread the one that drains the hub, while it has clients or servers:
    /// the doorbell is one, and a second thread draining at the same time (a Web Worker)
    /// would take the first one's events. Threads may take turns (Deno's test runner runs each
    /// test file on a thread of its own): see [`Hub::unclaim`]. Returns the owner on refusal.
    pub fn claim(&self) -> Result<(), u64> {
        let me = thread_token();
        match self
            .owner
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(()),
            Err(owner) if owner == me => Ok(()),
            Err(owner) => Err(owner),
        }
    }

    /// The calling thread has no client or server left: another thread may claim the hub.
    pub fn unclaim(&self) {
        let me = thread_token();
        let _ = self
            .owner
            .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    /// A new id for a client or server, unique in the process (across JavaScript threads, so
    /// that an event left from one thread's objects never names another's).
    pub fn new_id(&self) -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues an event and rings the doorbell if JavaScript is idle.
    pub fn push(&self, event: Event) {
        self.push_quiet(event);
        self.ring_if_idle();
    }

    /// Queues an event that needs no prompt answer: it wakes a JavaScript thread that polls,
    /// but does not ring the doorbell of one that went idle (the next ring brings it).
    pub fn push_quiet(&self, event: Event) {
        lock(&self.events).push_back(event);
        // SeqCst: the waker's half of the idle handshake (module doc).
        self.len.fetch_add(1, Ordering::SeqCst);
        self.arrived.notify();
    }

    fn ring_if_idle(&self) {
        // SeqCst: the waker's half of the idle handshake (module doc).
        if self.idle.load(Ordering::SeqCst) && self.idle.swap(false, Ordering::SeqCst) {
            self.ring();
        }
    }

    fn ring(&self) {
        if let Some(bell) = lock(&self.bell).as_ref() {
            bell();
        }
        // Also wake a fallback wait, if one is pending; taking the lock orders the notify
        // after its check of the queue.
        let _q = lock(&self.events);
        self.rung.notify_all();
    }

    /// Takes the next event, if any. JavaScript calls it in a loop until it returns `None`.
    pub fn next(&self) -> Option<Event> {
        let mut q = lock(&self.events);
        let e = q.pop_front();
        if e.is_some() {
            self.len.fetch_sub(1, Ordering::SeqCst);
        }
        e
    }

    /// JavaScript begins a drain that should last at most `budget`: [`Hub::idle`] then polls
    /// no longer than that and answers [`Idle::Spent`] once it passed. (The clock is read here,
    /// in about 20 ns, because JavaScript's own clocks cost 70 to 150 ns a reading.)
    /// A zero budget (or one too large to represent) means no limit.
    pub fn drain_begin(&self, budget: Duration) {
        let deadline = match Instant::now().checked_add(budget) {
            Some(at) if !budget.is_zero() => nanos_since_epoch(at).max(1),
            _ => 0,
        };
        // Relaxed: only the JavaScript thread that drains reads and writes it.
        self.drain_deadline.store(deadline, Ordering::Relaxed);
    }

    /// Whether the current drain's budget is spent (see [`Hub::drain_begin`]).
    pub fn spent(&self) -> bool {
        // Relaxed: written by this same thread (`drain_begin`).
        let deadline = self.drain_deadline.load(Ordering::Relaxed);
        deadline != 0 && nanos_since_epoch(Instant::now()) >= deadline
    }

    /// Whether anything waits for JavaScript: an event, or a member woken.
    fn pending(&self) -> bool {
        self.len.load(Ordering::SeqCst) > 0 || self.active.has_woken()
    }

    /// JavaScript drained the queue and is about to go idle. For up to `wait` (and no later
    /// than the drain's deadline) it first waits here for more, so that back-to-back work is
    /// taken without a doorbell: it polls its active members — popping their rings itself, so
    /// that a command or an answer reaches JavaScript with no thread hop — each until it had
    /// no work for its spin budget, when it is armed (its next push wakes the reactor, which
    /// wakes this thread through a futex); with none left, it sleeps for the rest of `wait`,
    /// spending no CPU. Then it goes idle: the doorbell is armed.
    ///
    /// When the drain's budget runs out first, it answers [`Idle::Spent`] whether or not
    /// events are waiting: JavaScript hands its event loop a turn and comes back.
    pub fn idle(&self, wait: Duration) -> Idle {
        let now = Instant::now();
        // Relaxed: written by this same thread (`drain_begin`).
        let deadline = self.drain_deadline.load(Ordering::Relaxed);
        let budget_left = (deadline != 0)
            .then(|| Duration::from_nanos(deadline.saturating_sub(nanos_since_epoch(now))));
        let until = now + budget_left.map_or(wait, |b| b.min(wait));
        let mut clock = Coarse::at(now);
        let mut polite = Polite::new(now);
        loop {
            self.active.gather();
            let now = clock.now();
            if self.active.poll(now) {
                polite = Polite::new(now);
            }
            if self.len.load(Ordering::SeqCst) > 0 {
                return if self.spent() {
                    Idle::Spent
                } else {
                    Idle::Events
                };
            }
            if now >= until {
                break;
            }
            if self.active.has_woken() {
                continue;
            }
            // Members leave the set once idle for their spin (`Active::poll`).
            if !self.active.is_empty() {
                self.active.spin_turn(&mut polite, now);
                continue;
            }
            // Every ring is with the reactor: sleep until it (or a push) wakes this thread, or
            // the wait ends.
            if !self.active.arm() {
                continue;
            }
            self.arrived.wait_until_for(
                Spin(Duration::ZERO),
                Some(until.saturating_duration_since(now)),
                || self.pending(),
            );
            clock.fresh();
        }
        if budget_left.is_some_and(|b| b < wait) && self.spent() {
            return Idle::Spent;
        }
        // Going idle: the members hand their rings to the reactor.
        let mut rounds = 0;
        loop {
            self.active.gather();
            if self.active.arm() {
                break;
            }
            self.active.poll(Instant::now());
            rounds += 1;
            if self.len.load(Ordering::SeqCst) > 0 || rounds == ARM_ROUNDS {
                return Idle::Events;
            }
        }
        // SeqCst: JavaScript's half of the idle handshake (module doc).
        self.idle.store(true, Ordering::SeqCst);
        if self.pending() {
            // Take idleness back unless a waker already did (and rang).
            self.idle.swap(false, Ordering::SeqCst);
            return Idle::Events;
        }
        Idle::Idle
    }

    /// Polls the active members once, on the JavaScript thread (outside [`Hub::idle`]: a sync
    /// call's caller that waits for its answer does not come here).
    pub fn poll(&self) -> bool {
        self.active.gather();
        self.active.poll(Instant::now())
    }

    /// Installs (or removes) the doorbell.
    pub fn set_bell(&self, bell: Option<Bell>) {
        let mut b = lock(&self.bell);
        *b = bell;
        // Under the lock, so that the count names the doorbell installed last.
        self.bells.fetch_add(1, Ordering::Relaxed);
    }

    /// How many doorbells were installed so far: a JavaScript thread that claims the hub again
    /// keeps the doorbell it installed when this count has not moved since (no other thread
    /// installed one meanwhile).
    pub fn bells(&self) -> u32 {
        let _b = lock(&self.bell);
        self.bells.load(Ordering::Relaxed)
    }

    /// The fallback doorbell: sleeps until an event is queued, [`Hub::interrupt`] is called,
    /// or `timeout` passes. Returns whether events are queued.
    pub fn wait(&self, timeout: Duration) -> bool {
        let q = lock(&self.events);
        let (q, _) = self
            .rung
            .wait_timeout_while(q, timeout, |q| {
                q.is_empty()
                    && !self.active.has_woken()
                    && !self.interrupted.swap(false, Ordering::SeqCst)
            })
            .unwrap_or_else(|p| p.into_inner());
        !q.is_empty() || self.active.has_woken()
    }

    /// Ends a pending [`Hub::wait`] now.
    pub fn interrupt(&self) {
        let _q = lock(&self.events);
        self.interrupted.store(true, Ordering::SeqCst);
        self.rung.notify_all();
    }

    /// Events queued now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// Whether no event is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose last arming, as JavaScript goes idle, races an event pushed from
    /// another thread: the push comes while JavaScript is not idle yet, so it rings nothing.
    struct PushesWhileArming {
        hub: Arc<Hub>,
        queued: AtomicBool,
        paired: AtomicBool,
    }

    impl Member for PushesWhileArming {
        fn poll(&self) -> bool {
            false
        }
        fn arm(&self) -> bool {
            self.hub.push(Event::Close { server: 1, conn: 1 });
            true
        }
        fn spin(&self) -> Duration {
            // Never armed by a poll: only by the arming that goes idle.
            Duration::from_secs(3600)
        }
        fn queued(&self) -> &AtomicBool {
            &self.queued
        }
        fn paired(&self) -> &AtomicBool {
            &self.paired
        }
    }

    #[test]
    fn an_event_that_comes_as_javascript_goes_idle_is_drained_rather_than_left_unrung() {
        let hub = Arc::new(Hub::new());
        // JavaScript is draining.
        hub.idle.store(false, Ordering::SeqCst);
        let member = Arc::new(PushesWhileArming {
            hub: hub.clone(),
            queued: AtomicBool::new(false),
            paired: AtomicBool::new(false),
        });
        assert!(hub.active.wake(member));
        assert_eq!(
            hub.idle(Duration::ZERO),
            Idle::Events,
            "JavaScript went idle with an event queued and no ring to come"
        );
        assert!(matches!(hub.next(), Some(Event::Close { .. })));
    }
}
