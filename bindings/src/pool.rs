//! The owner of a JavaScript server's connections when it has a worker pool: the workers
//! themselves, with the server's thread as their stand-in.
//!
//! A pool worker that has nothing to run calls [`PoolOwner::take`] — a synchronous wait of its
//! own thread (a worker may block: its event loop is not the server's). One waiting worker at a
//! time, the **poller**, polls the server's connections (the owner's [`Active`] set), so a
//! command goes from the client's push to a worker with no other thread in between; what the
//! poll finds that is not flagged `INLINE` is queued here, for the poller and the other
//! workers. When no connection had work for its spin, the poller arms them (their next command
//! wakes the reactor, which wakes a worker through [`Owner::wake`]) and sleeps with the others.
//!
//! **When no worker waits** — all run commands, or went back to their event loop — the
//! connections still need someone:
//! - A wake (a WAKE frame, a new client, a connection's end) goes to the server's thread: the
//!   hub's next drain polls the connections once ([`PoolOwner::hub_poll`]) and arms them.
//! - The last worker to leave does not arm the connections (its command may take microseconds,
//!   and an armed connection costs its client's next command a wake-up). Should no worker come
//!   back within [`UNATTENDED`], a deadline of the reactor hands the connections to the
//!   server's thread the same way: a command flagged `INLINE`, or one for the server's own
//!   thread (quiescing, statistics), waits at most that long behind a long-running worker.
//! - A command queued while no worker waits, but some are in their event loop (an async `exec`
//!   under way, or idle after a whole wait with nothing), is told to JavaScript
//!   ([`PoolNote::Poke`]), which posts those workers a message.
//!
//! The pool also counts what its workers hold, by command handle: a worker that dies has its
//! commands answered ([`PoolOwner::bury`]), and a quiescing server learns when the last command
//! taken by the pool is answered ([`PoolNote::Drained`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use shmcall_core::Status;
use shmcall_core::channel::Event as Arrival;
use shmcall_core::owner::{Active, Member, Owner};
use shmcall_core::reactor::{Reactor, Source, Token};
use shmcall_core::ring::Spin;

use crate::hub::{Event, HUB};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long the connections may go with no worker waiting and no one armed to hear of their
/// commands before the server's thread polls them (see the module doc). The reactor's timers
/// count whole milliseconds, so the wait is 1 to 2 ms.
pub const UNATTENDED: Duration = Duration::from_millis(1);

/// What the pool tells the server's JavaScript (a hub event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolNote {
    /// Commands wait and no worker waits for them, but some are in their event loop: poke them.
    Poke = 1,
    /// The server quiesces and the pool holds no command any more.
    Drained = 2,
}

/// See the module doc.
pub struct PoolOwner {
    /// JavaScript's id of the server, for its hub events.
    server: u64,
    me: Weak<PoolOwner>,
    active: Active,
    /// Wakes waiting workers: a job queued, a member woken, the poller's role free, the end.
    arrived: Arrival,
    jobs: Mutex<VecDeque<Event>>,
    jobs_len: AtomicUsize,
    /// Whether a thread holds the poller's role (it alone polls, arms and gathers `active`).
    polling: AtomicBool,
    /// Workers inside [`PoolOwner::take`].
    in_take: AtomicUsize,
    /// Workers back in their event loop with room for a command: they need a poke.
    looping: Mutex<HashSet<u32>>,
    looping_len: AtomicUsize,
    /// When the last worker left [`PoolOwner::take`] (ns since `origin`, plus one), or 0.
    out_since: AtomicU64,
    origin: Instant,
    /// The reactor and this pool's token there, for the [`UNATTENDED`] deadline.
    timer: OnceLock<Option<(&'static Reactor, Token)>>,
    deadline_set: AtomicBool,
    /// A hub poll, or a poke, is on its way to the server's thread.
    hub_asked: AtomicBool,
    poke_asked: AtomicBool,
    closed: AtomicBool,
    /// The thread that closes the server: it alone polls the connections from then on.
    closer: Mutex<Option<ThreadId>>,
    /// Commands queued here or held by a worker.
    busy: AtomicUsize,
    /// The server's quiescing flag: its JavaScript hears when `busy` reaches 0.
    quiescing: Arc<AtomicBool>,
    /// The commands the workers hold: handle → worker.
    held: Mutex<HashMap<u32, u32>>,
    /// Workers buried: what one of them takes after its burial is refused (`hold`).
    buried: Mutex<HashSet<u32>>,
}

impl fmt::Debug for PoolOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolOwner")
            .field("server", &self.server)
            .field("jobs", &self.jobs_len.load(Ordering::Relaxed))
            .field("busy", &self.busy.load(Ordering::Relaxed))
            .finish()
    }
}

impl Owner for PoolOwner {
    fn wake(&self, member: Arc<dyn Member>) {
        // A closed pool takes no member: the closing thread polls the connections itself, and
        // one kept here would keep its connection (and the server) alive, through the server's
        // reference to this pool.
        if self.closed.load(Ordering::SeqCst) || !self.active.wake(member) {
            return;
        }
        // SeqCst: after `active.wake`'s SeqCst count of the woken member, against a leaving
        // worker's SeqCst `in_take` decrement and then its look at the woken ones (`leave`):
        // one of the two sees the other, so the member is polled by a worker or by the hub.
        if self.in_take.load(Ordering::SeqCst) > 0 {
            self.arrived.notify();
        } else {
            self.ask_hub();
        }
    }

    fn is_current(&self) -> bool {
        *lock(&self.closer) == Some(std::thread::current().id())
    }

    fn forget(&self, member: &Arc<dyn Member>) {
        self.active.forget(member);
    }
}

/// What [`PoolOwner::take`] found.
#[derive(Debug)]
pub enum Taken {
    /// A command to run.
    Job(Event),
    /// None within the wait.
    Nothing,
    /// The server closed.
    Closed,
}

/// The pool's deadline at the reactor (see [`UNATTENDED`]).
struct Timer(Weak<PoolOwner>);

impl Source for Timer {
    fn ready(self: Arc<Self>, _: u32) {}

    fn expired(self: Arc<Self>) {
        if let Some(pool) = self.0.upgrade() {
            pool.expired();
        }
    }
}

impl PoolOwner {
    /// The pool of server `server` (JavaScript's id), whose quiescing flag is `quiescing`.
    pub fn new(server: u64, quiescing: Arc<AtomicBool>) -> Arc<PoolOwner> {
        Arc::new_cyclic(|me| PoolOwner {
            server,
            me: me.clone(),
            active: Active::default(),
            arrived: Arrival::new(),
            jobs: Mutex::new(VecDeque::new()),
            jobs_len: AtomicUsize::new(0),
            polling: AtomicBool::new(false),
            in_take: AtomicUsize::new(0),
            looping: Mutex::new(HashSet::new()),
            looping_len: AtomicUsize::new(0),
            out_since: AtomicU64::new(0),
            origin: Instant::now(),
            timer: OnceLock::new(),
            deadline_set: AtomicBool::new(false),
            hub_asked: AtomicBool::new(false),
            poke_asked: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            closer: Mutex::new(None),
            busy: AtomicUsize::new(0),
            quiescing,
            held: Mutex::new(HashMap::new()),
            buried: Mutex::new(HashSet::new()),
        })
    }

    /// Counts a command a poll found for the workers, unless the server quiesces (then the
    /// server's thread answers it): whether it is the pool's, to [`PoolOwner::push`] now.
    pub fn admit(&self) -> bool {
        // SeqCst, the count before the look at the flag: against `quiesce`'s store of the flag
        // and then its look at the count (`in_progress`), so that either it waits for this
        // command or this command sees the flag.
        self.busy.fetch_add(1, Ordering::SeqCst);
        if self.quiescing.load(Ordering::SeqCst) {
            self.settle();
            return false;
        }
        true
    }

    /// Queues a command [`PoolOwner::admit`] counted, for a worker.
    pub fn push(&self, event: Event) {
        if self.closed.load(Ordering::SeqCst) {
            // Found by the close's last poll: it never runs.
            fail_event(event, Status::Closed);
            self.settle();
            return;
        }
        lock(&self.jobs).push_back(event);
        // SeqCst: the waiters' condition reads it after their `sleepers` increment; and against
        // a worker that leaves for its event loop (`leave`: `looping`, then `in_take`, then
        // `jobs_len`), so that one of the two asks for the poke.
        self.jobs_len.fetch_add(1, Ordering::SeqCst);
        self.arrived.notify();
        if self.in_take.load(Ordering::SeqCst) == 0 && self.looping_len.load(Ordering::SeqCst) > 0 {
            self.ask_poke();
        }
    }

    fn pop(&self) -> Option<Event> {
        if self.jobs_len.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let e = lock(&self.jobs).pop_front();
        if e.is_some() {
            self.jobs_len.fetch_sub(1, Ordering::SeqCst);
        }
        e
    }

    /// Worker `worker` holds command `handle` (just taken); false, and the command is not the
    /// pool's to count any more once the caller answers it, when the worker was buried.
    pub fn hold(&self, handle: u32, worker: u32) -> bool {
        let buried = lock(&self.buried);
        if buried.contains(&worker) {
            return false;
        }
        // Under the burial's lock: `bury` sees it, or this sees the burial.
        lock(&self.held).insert(handle, worker);
        true
    }

    /// A command queued here was dropped before a worker held it (its handle could not be
    /// made).
    pub fn dropped(&self) {
        self.settle();
    }

    /// Command `handle` was answered, or withdrawn when taken; returns whether it was one the
    /// pool's workers held.
    pub fn release(&self, handle: u32) -> bool {
        if lock(&self.held).remove(&handle).is_none() {
            return false;
        }
        self.settle();
        true
    }

    fn settle(&self) {
        // SeqCst: against `quiesce`'s SeqCst store of the flag and then its look at `busy`
        // (`in_progress`): one of the two sees the other.
        if self.busy.fetch_sub(1, Ordering::SeqCst) == 1 && self.quiescing.load(Ordering::SeqCst) {
            HUB.push(Event::Pool {
                server: self.server,
                note: PoolNote::Drained,
            });
        }
    }

    /// Commands queued here or held by a worker.
    pub fn in_progress(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }

    /// The commands worker `worker` held (it is gone): their handles, no longer the pool's.
    pub fn bury(&self, worker: u32) -> Vec<u32> {
        let _buried = {
            let mut buried = lock(&self.buried);
            buried.insert(worker);
            buried
        };
        let mut held = lock(&self.held);
        let handles: Vec<u32> = held
            .iter()
            .filter(|(_, w)| **w == worker)
            .map(|(h, _)| *h)
            .collect();
        for h in &handles {
            held.remove(h);
        }
        drop(held);
        for _ in &handles {
            self.settle();
        }
        self.unloop(worker);
        handles
    }

    /// JavaScript takes a [`PoolNote::Poke`], before it posts the workers a message each:
    /// commands queued from now on may ask for another (one queued before found the flag set
    /// and asked for none; the workers about to be poked take it, as they take every command
    /// queued when they run).
    pub fn poked(&self) {
        self.poke_asked.store(false, Ordering::SeqCst);
    }

    fn ask_poke(&self) {
        if !self.poke_asked.swap(true, Ordering::SeqCst) {
            HUB.push(Event::Pool {
                server: self.server,
                note: PoolNote::Poke,
            });
        }
    }

    /// Asks the server's thread to poll the connections (see [`PoolOwner::hub_poll`]).
    fn ask_hub(&self) {
        if !self.hub_asked.swap(true, Ordering::SeqCst)
            && let Some(me) = self.me.upgrade()
        {
            HUB.push(Event::PoolPoll(me));
        }
    }

    /// The server's thread stands in for the workers (none waits): polls the connections once
    /// and, while still no worker waits, arms them; asks again if they had work meanwhile.
    pub fn hub_poll(&self) {
        self.hub_asked.store(false, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let Some(role) = self.poller() else {
            // A worker polls: it sees the woken members. One that was leaving may not: then
            // this comes back.
            if self.in_take.load(Ordering::SeqCst) == 0 {
                self.ask_hub();
            }
            return;
        };
        self.active.gather();
        self.active.poll(Instant::now());
        let again = self.in_take.load(Ordering::SeqCst) == 0 && !self.active.arm();
        drop(role);
        if again {
            self.ask_hub();
        } else {
            // A worker that came meanwhile waits for the role.
            self.arrived.notify();
        }
    }

    /// The poller's role, if no one holds it: held until the guard drops (a panic in a poll
    /// lets it go too).
    fn poller(&self) -> Option<Role<'_>> {
        // SeqCst: one poller at a time; the others wait on `arrived`, whose condition reads it.
        (!self.polling.swap(true, Ordering::SeqCst)).then_some(Role(self))
    }

    /// The reactor's deadline (see [`UNATTENDED`]).
    fn expired(&self) {
        self.deadline_set.store(false, Ordering::SeqCst);
        let since = self.out_since.load(Ordering::SeqCst);
        if since == 0 || self.in_take.load(Ordering::SeqCst) > 0 {
            return;
        }
        let out = self.nanos().saturating_sub(since - 1);
        if out >= UNATTENDED.as_nanos() as u64 {
            self.ask_hub();
        } else {
            self.set_deadline(Duration::from_nanos(UNATTENDED.as_nanos() as u64 - out));
        }
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn set_deadline(&self, after: Duration) {
        if self.deadline_set.swap(true, Ordering::SeqCst) {
            return;
        }
        let timer = self.timer.get_or_init(|| {
            let reactor = Reactor::get().ok()?;
            let token = reactor.enlist(Arc::new(Timer(self.me.clone()))).ok()?;
            Some((reactor, token))
        });
        match timer {
            Some((reactor, token)) => reactor.deadline(*token, Instant::now() + after),
            // No reactor: the hub polls at once instead.
            None => {
                self.deadline_set.store(false, Ordering::SeqCst);
                self.ask_hub();
            }
        }
    }

    /// Begins the server's close on the calling thread: no worker polls from now on (those
    /// waiting return [`Taken::Closed`]), and the connections are this thread's to poll.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.arrived.notify();
        // The poller's role, for good: a worker that holds it ends its poll first.
        while self.polling.swap(true, Ordering::SeqCst) {
            std::thread::yield_now();
        }
        *lock(&self.closer) = Some(std::thread::current().id());
    }

    /// Ends the close: commands still queued are answered `CLOSED`, the deadline is dropped,
    /// and the pool lets go of the connections.
    pub fn closed(&self) {
        self.active.clear();
        let jobs: Vec<Event> = lock(&self.jobs).drain(..).collect();
        self.jobs_len.store(0, Ordering::SeqCst);
        for e in jobs {
            fail_event(e, Status::Closed);
            self.settle();
        }
        if let Some(Some((reactor, token))) = self.timer.get() {
            reactor.dismiss(*token);
        }
    }

    /// The next command for worker `worker`: polls the connections while no other worker
    /// does, keeps polling for `spin` after the last work, then sleeps; gives up after `wait`.
    pub fn take(&self, worker: u32, spin: Duration, wait: Duration) -> Taken {
        // SeqCst: see `wake` and `leave`.
        self.in_take.fetch_add(1, Ordering::SeqCst);
        self.out_since.store(0, Ordering::SeqCst);
        if self.looping_len.load(Ordering::SeqCst) > 0 {
            self.unloop(worker);
        }
        let inside = Inside(self);
        let taken = self.wait_for_job(spin, wait);
        std::mem::forget(inside);
        self.leave(worker, matches!(taken, Taken::Nothing));
        taken
    }

    /// Worker `worker` is no longer in its event loop with room (it takes, or it is gone).
    fn unloop(&self, worker: u32) {
        if lock(&self.looping).remove(&worker) {
            self.looping_len.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A worker leaves [`PoolOwner::take`] (`empty`: with nothing, for its event loop).
    fn leave(&self, worker: u32, empty: bool) {
        if empty && lock(&self.looping).insert(worker) {
            self.looping_len.fetch_add(1, Ordering::SeqCst);
        }
        // SeqCst: see `wake` and `push`.
        if self.in_take.fetch_sub(1, Ordering::SeqCst) != 1 {
            // Others wait: one of them polls what this one left (it may have left a poll's
            // findings, or connections it did not arm, at the end of its wait).
            if !self.active.is_empty() || self.active.has_woken() {
                self.arrived.notify();
            }
            return;
        }
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        // The last one out: the connections are unattended from now on.
        self.out_since.store(self.nanos() + 1, Ordering::SeqCst);
        if self.active.has_woken() {
            self.ask_hub();
        } else if !self.active.is_empty() {
            self.set_deadline(UNATTENDED);
        }
        if self.jobs_len.load(Ordering::SeqCst) > 0 && self.looping_len.load(Ordering::SeqCst) > 0 {
            self.ask_poke();
        }
    }

    fn wait_for_job(&self, spin: Duration, wait: Duration) -> Taken {
        let start = Instant::now();
        let until = start + wait;
        let mut last_work = start;
        loop {
            if let Some(e) = self.pop() {
                return Taken::Job(e);
            }
            if self.closed.load(Ordering::SeqCst) {
                return Taken::Closed;
            }
            let now = Instant::now();
            // One poller at a time; the others wait on `arrived`. A take with no wait still
            // polls once.
            if let Some(role) = self.poller() {
                self.active.gather();
                let found = self.active.poll(now);
                let sleep = !found
                    && self.jobs_len.load(Ordering::SeqCst) == 0
                    && (self.active.is_empty() || now.duration_since(last_work) >= spin)
                    && !self.active.has_woken();
                let armed = sleep && self.active.arm();
                drop(role);
                if found {
                    last_work = now;
                    continue;
                }
                if now >= until {
                    return self.pop().map_or(Taken::Nothing, Taken::Job);
                }
                if !armed {
                    std::hint::spin_loop();
                    continue;
                }
                // Another worker may take the poller's role now.
                self.arrived.notify();
            }
            if now >= until {
                return self.pop().map_or(Taken::Nothing, Taken::Job);
            }
            self.arrived.wait_until_for(
                Spin(Duration::ZERO),
                Some(until.saturating_duration_since(Instant::now())),
                || {
                    self.jobs_len.load(Ordering::SeqCst) > 0
                        || self.active.has_woken()
                        || self.closed.load(Ordering::SeqCst)
                        || (!self.active.is_empty() && !self.polling.load(Ordering::SeqCst))
                },
            );
        }
    }
}

/// The poller's role (see [`PoolOwner::poller`]), let go when dropped.
struct Role<'a>(&'a PoolOwner);

impl Drop for Role<'_> {
    fn drop(&mut self) {
        // SeqCst: see `poller`; waiters whose condition saw it held look again.
        self.0.polling.store(false, Ordering::SeqCst);
    }
}

/// A worker inside [`PoolOwner::take`]; dropped only by a panic there, which it counts out
/// (`take` forgets it otherwise, and counts the worker out itself).
struct Inside<'a>(&'a PoolOwner);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.in_take.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers an exec event's command with `status`, unrun.
fn fail_event(event: Event, status: Status) {
    if let Event::Exec { command, .. } = event {
        (*command).fail(status);
    }
}
