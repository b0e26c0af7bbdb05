//! The process-wide hub between the library's threads and one JavaScript thread.
//!
//! Library threads (a client's reaper, a server's connection threads) push events — an
//! asynchronous command finished; a client connected, sent a command, or left — into one
//! queue. JavaScript drains the queue in one loop of synchronous calls, then says it is idle.
//! A push rings the doorbell only when it finds JavaScript idle, so a burst costs one ring and
//! a busy JavaScript thread is never interrupted.
//!
//! The doorbell is whatever the JavaScript side registered: a Node-API threadsafe function
//! (`napi.rs`), which queues a call on the event loop without blocking the ringing thread; or,
//! without one, the condition variable that [`Hub::wait`] (a `nonblocking` FFI call) sleeps on.
//!
//! The idle handshake is the store-buffer pattern: JavaScript stores `idle` then loads the
//! queue length; a pusher stores the length then swaps `idle`. With all four SeqCst, at least
//! one side sees the other, so an event is never left in the queue with no ring.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::channel::Event as Arrival;
use crate::client::Ticket;
use crate::ring::Spin;
use crate::server::{Command, ConnInfo, Poller};

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
    /// A connection of server `server` ended after draining.
    Close {
        /// JavaScript's id of the server.
        server: u64,
        /// The connection.
        conn: u64,
    },
}

type Bell = Box<dyn Fn() + Send + Sync>;

/// The registered pollers, by owner id.
type Pollers = Arc<Vec<(u64, Arc<dyn Poller>)>>;

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
    /// Fallback doorbell: wakes [`Hub::wait`].
    rung: Condvar,
    /// Wakes JavaScript while it waits briefly in [`Hub::idle`].
    arrived: Arrival,
    /// Servers and clients whose rings JavaScript pops itself while it waits in
    /// [`Hub::idle`]; replaced (not edited) on change, so a snapshot costs no allocation.
    pollers: Mutex<Pollers>,
    interrupted: AtomicBool,
    /// When JavaScript's current drain must hand the event loop back, in nanoseconds since
    /// [`epoch`] (see [`Hub::drain_begin`]); 0 for no limit.
    drain_deadline: AtomicU64,
}

/// What [`Hub::idle`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// JavaScript may go idle: the doorbell is armed, the rings given back.
    Idle,
    /// Events arrived: drain again.
    Events,
    /// The drain used up its budget: continue in a task of its own, so that the event loop's
    /// timers and I/O run first. The doorbell is not armed and the rings stay held meanwhile.
    Spent,
}

/// The origin of [`Hub::drain_begin`]'s clock.
fn epoch() -> Instant {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    *EPOCH
}

fn nanos_since_epoch(t: Instant) -> u64 {
    u64::try_from(t.duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("len", &self.len.load(Ordering::Relaxed))
            .field("idle", &self.idle.load(Ordering::Relaxed))
            .finish()
    }
}

/// The hub of this process.
pub static HUB: LazyLock<Hub> = LazyLock::new(|| Hub {
    owner: AtomicU64::new(0),
    events: Mutex::new(VecDeque::new()),
    len: AtomicUsize::new(0),
    idle: AtomicBool::new(true),
    bell: Mutex::new(None),
    rung: Condvar::new(),
    arrived: Arrival::new(),
    pollers: Mutex::new(Arc::new(Vec::new())),
    interrupted: AtomicBool::new(false),
    drain_deadline: AtomicU64::new(0),
});

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
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
        let mut q = lock(&self.events);
        q.push_back(event);
        // SeqCst: the pusher's half of the idle handshake (module doc).
        self.len.fetch_add(1, Ordering::SeqCst);
        drop(q);
        self.arrived.notify();
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

    /// JavaScript begins a drain that should last at most `budget`: [`Hub::idle`] then waits
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

    /// JavaScript is about to go idle. It first waits up to `wait` (and no later than the
    /// drain's deadline) for an event — sleeping, not spinning, so that it leaves the cores
    /// to the threads that spin on the rings; a push wakes it in a few microseconds, far
    /// sooner than a doorbell wakes an event loop that went back to `epoll`.
    ///
    /// With pollers registered (see [`Hub::add_poller`]) it spins instead, popping their rings
    /// itself: a command or an answer then reaches JavaScript with no thread hop at all, which
    /// is worth the core; the ring threads sleep meanwhile. Going idle always gives their
    /// rings back, so nothing waits for a JavaScript thread that sleeps.
    ///
    /// When the drain's budget runs out first, it answers [`Idle::Spent`] whether or not
    /// events are waiting: JavaScript hands its event loop a turn and comes back, holding the
    /// rings meanwhile. Going idle there instead would give the rings to their threads in the
    /// middle of a stream of commands, only to ask for them back a moment later, waking
    /// threads each way.
    pub fn idle(&self, wait: Duration) -> Idle {
        if !wait.is_zero() {
            let now = Instant::now();
            // Relaxed: written by this same thread (`drain_begin`).
            let deadline = self.drain_deadline.load(Ordering::Relaxed);
            let budget_left = (deadline != 0)
                .then(|| Duration::from_nanos(deadline.saturating_sub(nanos_since_epoch(now))));
            let left = budget_left.map_or(wait, |b| b.min(wait));
            let arrived = self.wait_for_events(now, left);
            if (arrived || budget_left.is_some_and(|b| b < wait)) && self.spent() {
                return Idle::Spent;
            }
            if arrived {
                return Idle::Events;
            }
        }
        // Going idle: the rings go back to their threads, which run while JavaScript sleeps.
        let pollers = lock(&self.pollers).clone();
        for p in pollers.iter() {
            p.1.release();
        }
        // SeqCst: JavaScript's half of the idle handshake (module doc).
        self.idle.store(true, Ordering::SeqCst);
        if self.len.load(Ordering::SeqCst) > 0 {
            // Take idleness back unless a pusher already did (and rang).
            self.idle.swap(false, Ordering::SeqCst);
            return Idle::Events;
        }
        Idle::Idle
    }

    /// Waits from `now` for up to `wait` for an event, popping the pollers' rings meanwhile
    /// when there are any; returns whether one arrived.
    fn wait_for_events(&self, now: Instant, wait: Duration) -> bool {
        let pollers = lock(&self.pollers).clone();
        if pollers.is_empty() {
            return self
                .arrived
                .wait_until_for(Spin(Duration::from_micros(2)), Some(wait), || {
                    self.len.load(Ordering::SeqCst) > 0
                });
        }
        let deadline = now + wait;
        loop {
            for p in pollers.iter() {
                p.1.poll();
            }
            if self.len.load(Ordering::SeqCst) > 0 {
                // Keep the rings: JavaScript drains and comes straight back here.
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// Lets [`Hub::idle`] pop the CS rings of a server, named by `id`.
    pub fn add_poller(&self, id: u64, poller: Arc<dyn Poller>) {
        let mut pollers = lock(&self.pollers);
        let mut next = pollers.as_ref().clone();
        next.push((id, poller));
        *pollers = Arc::new(next);
    }

    /// Stops popping for server `id`, giving back the rings it held.
    pub fn remove_poller(&self, id: u64) {
        let removed = {
            let mut pollers = lock(&self.pollers);
            let mut next = pollers.as_ref().clone();
            let removed = next
                .iter()
                .position(|(p, _)| *p == id)
                .map(|i| next.swap_remove(i).1);
            *pollers = Arc::new(next);
            removed
        };
        if let Some(p) = removed {
            p.release();
        }
    }

    /// Installs (or removes) the doorbell.
    pub fn set_bell(&self, bell: Option<Bell>) {
        *lock(&self.bell) = bell;
    }

    /// The fallback doorbell: sleeps until an event is queued, [`Hub::interrupt`] is called,
    /// or `timeout` passes. Returns whether events are queued.
    pub fn wait(&self, timeout: Duration) -> bool {
        let q = lock(&self.events);
        let (q, _) = self
            .rung
            .wait_timeout_while(q, timeout, |q| {
                q.is_empty() && !self.interrupted.swap(false, Ordering::SeqCst)
            })
            .unwrap_or_else(|p| p.into_inner());
        !q.is_empty()
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
