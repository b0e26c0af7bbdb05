//! Who runs a connection's work: the thread that owns it.
//!
//! Every connection belongs to one **owner**: a thread that runs its user code (a server's
//! handlers, a client's completions) and pops its rings itself while it waits for work, so that
//! a command or an answer reaches the code that handles it with no thread hop. A JavaScript
//! thread owns the connections it made (the bindings' hub is its owner); the [`Runner`], one
//! thread per process started on first use, owns those of Rust callers.
//!
//! A connection is a [`Member`] of its owner. The owner polls the members that have work — its
//! **active** set, [`Active`] — and a member that stays idle for its spin budget is **armed**
//! ([`Member::arm`]: its rings are [`crate::ring::WATCHED`]) and leaves the set; with the set
//! empty, the owner sleeps. The reactor wakes a
//! member ([`Owner::wake`]) when a WAKE frame, a backup frame or the connection's end arrives,
//! which puts it back in the active set. Idle connections are in no list and cost nothing: an
//! owner of 10,000 connections polls only those that had work lately.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use crate::channel::Event;
use crate::reactor::{Reactor, Source, Token};
use crate::ring::{Polite, Spin};
use crate::status::Error;

/// A connection (or anything else) that an owner polls.
pub trait Member: Send + Sync + 'static {
    /// Does what is ready, on the owner's thread; returns whether it did anything.
    fn poll(&self) -> bool;
    /// The owner stops polling it: makes sure that new work wakes it ([`Owner::wake`]).
    /// Returns false when work is already there (the owner polls it again instead).
    fn arm(&self) -> bool;
    /// How long the owner keeps polling it after its last work before arming it.
    fn spin(&self) -> Duration;
    /// Whether it is in its owner's active set or queued for it (the owner's bookkeeping).
    fn queued(&self) -> &AtomicBool;
    /// Whether it answered back and forth when it last left the active set (the owner's
    /// bookkeeping: see [`Active::poll`]).
    fn paired(&self) -> &AtomicBool;
    /// Whether it will never have work again (its connection ended and its last work ran): the
    /// owner drops it at once rather than after its spin.
    fn done(&self) -> bool {
        false
    }
}

/// The thread that runs its members' work.
pub trait Owner: Send + Sync + fmt::Debug + 'static {
    /// `member` has work: the owner polls it soon. Any thread; never blocks.
    fn wake(&self, member: Arc<dyn Member>);
    /// `member` may soon have work: an owner that is awake polls it, one that went idle need
    /// not wake for it. Returns whether the owner is sure to poll it (then its rings may stay
    /// [`crate::ring::AWAKE`] until the owner arms it); when not, the caller arms them, so that
    /// its work wakes the owner when it comes. By default the same as [`Owner::wake`] (true).
    fn offer(&self, member: Arc<dyn Member>) -> bool {
        self.wake(member);
        true
    }
    /// Whether the caller runs on the owner's thread.
    fn is_current(&self) -> bool;
    /// `member` is done (closed on the owner's thread): the owner lets go of it now, so that
    /// its connection's resources go with the last handle, even while the owner never idles
    /// (a loop of connects, commands and closes). Called on the owner's thread; by default
    /// nothing (the owner drops it on its next poll).
    fn forget(&self, member: &Arc<dyn Member>) {
        let _ = member;
    }
}

/// How a connection lent to another consumer (JavaScript's lanes: `Client::lend`, and a
/// server's [`crate::server::Handler::lane`]) tells it what to do, on the owner's thread: `Ok`
/// when the ring it pops has entries — possibly again before it popped them — and once the
/// connection's end, as an error.
pub type LaneNotify = Box<dyn Fn(Result<(), Error>) + Send + Sync>;

/// Where a lent connection's rings stood when it was lent: the consumer continues from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lent {
    /// The CS ring's next position: to push (a client), to pop (a server).
    pub cs_position: u32,
    /// The SC ring's next position: to pop (a client), to push (a server).
    pub sc_position: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A clock read once every few turns of a spinning loop: such a loop looks at the time on
/// every turn, and a reading costs 25 to 60 ns in a virtual machine — a quarter of a spinning
/// JavaScript thread's time, profiled with `perf`. Deadlines checked against it are late by a
/// few turns (about a microsecond), which budgets of tens of microseconds do not notice.
#[derive(Debug)]
pub struct Coarse {
    now: Instant,
    turns: u32,
}

/// Turns between two readings of a [`Coarse`] clock.
const TURNS_PER_READING: u32 = 16;

impl Coarse {
    /// A clock read just now.
    pub fn new() -> Coarse {
        Coarse::at(Instant::now())
    }

    /// A clock read at `now`.
    pub fn at(now: Instant) -> Coarse {
        Coarse { now, turns: 0 }
    }

    /// The time, read again once every [`TURNS_PER_READING`] calls.
    #[inline]
    pub fn now(&mut self) -> Instant {
        self.turns += 1;
        if self.turns == TURNS_PER_READING {
            self.turns = 0;
            self.now = Instant::now();
        }
        self.now
    }

    /// The time, read now.
    #[inline]
    pub fn fresh(&mut self) -> Instant {
        self.turns = 0;
        self.now = Instant::now();
        self.now
    }
}

impl Default for Coarse {
    fn default() -> Self {
        Coarse::new()
    }
}

/// How many times its spin a member that answers back and forth waits for its next work (see
/// [`Active::poll`]): with the default spin of 50 µs, 200 µs, beyond the wakes measured here.
pub const PAIRED_SPIN: u32 = 4;

/// An active member, with when it last had work and how long it may idle before it is armed.
struct Entry {
    member: Arc<dyn Member>,
    last_work: Instant,
    spin: Duration,
    /// Polls that found work since it joined the set.
    works: u32,
}

/// The members an owner polls, and those woken for it. Used on the owner's thread, but for
/// [`Active::wake`], which any thread may call.
///
/// Each member keeps its own spin: one that had no work for [`Member::spin`] is armed and
/// leaves the set while the others stay, so an owner whose one connection is busy beside
/// thousands that connected and went quiet polls that one alone.
#[derive(Default)]
pub struct Active {
    woken: Mutex<Vec<Arc<dyn Member>>>,
    woken_len: AtomicUsize,
    list: Mutex<Vec<Entry>>,
    /// The active set's size, kept beside the list so that an owner spinning on it takes no
    /// lock.
    count: AtomicUsize,
    /// Whether a member of the set found work twice or more since it joined (see
    /// [`Active::exchanging`]).
    exchanging: AtomicBool,
}

impl fmt::Debug for Active {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Active")
            .field("active", &self.count.load(Ordering::Relaxed))
            .field("woken", &self.woken_len.load(Ordering::Relaxed))
            .finish()
    }
}

impl Active {
    /// Queues `member` for the owner unless it is active or queued already; returns whether
    /// it was queued now (the owner may need waking).
    pub fn wake(&self, member: Arc<dyn Member>) -> bool {
        // SeqCst: pairs with the store in `arm_one` (see there).
        if member.queued().swap(true, Ordering::SeqCst) {
            return false;
        }
        lock(&self.woken).push(member);
        self.woken_len.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Whether members were woken since the last [`Active::gather`].
    pub fn has_woken(&self) -> bool {
        self.woken_len.load(Ordering::SeqCst) > 0
    }

    /// Whether no member is active (woken ones aside).
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Relaxed) == 0
    }

    /// Moves the woken members to the active set, each with a whole spin ahead: their work is
    /// near.
    pub fn gather(&self) {
        if !self.has_woken() {
            return;
        }
        let now = Instant::now();
        // Drained rather than taken: both vectors keep their capacity, so a steady stream of
        // wakes allocates nothing.
        let mut woken = lock(&self.woken);
        self.woken_len.fetch_sub(woken.len(), Ordering::SeqCst);
        let mut list = lock(&self.list);
        list.extend(woken.drain(..).map(|member| Entry {
            spin: member.spin(),
            // Relaxed: written and read on the owner's thread only.
            works: u32::from(member.paired().load(Ordering::Relaxed)),
            member,
            last_work: now,
        }));
        self.count.store(list.len(), Ordering::Relaxed);
    }

    /// Polls every active member once; arms those that had no work for their spin (they
    /// leave the set). Returns whether any did something. Members woken while it runs are
    /// polled on the next call.
    /// `now` is a recent reading of the clock (see [`Coarse`]).
    ///
    /// A member that answers back and forth (work twice or more since it joined) waits
    /// [`PAIRED_SPIN`] times its spin before it is armed, and one that did when it left the
    /// set counts as such from its next work on. A pair whose spins are shorter than the wake
    /// of a sleeping peer is metastable: once one side slept (preempted, collecting), each
    /// answer comes after the other side's wake, which outlasts the spin, so both sides sleep
    /// and wake for every message from then on — measured on 2 cores with wakes of 60–120 µs
    /// (a futex, or a WAKE frame through the peer's reactor and then a futex), where Deno's
    /// asynchronous round trip one in flight fell into runs of 100–250 µs, its p99 from 5 µs
    /// to 40–130 µs. A spin longer than a wake breaks the chain at its first answer.
    ///
    /// The set stays locked while its members run: their work never polls an owner (it queues
    /// events, completes tickets, wakes members through [`Active::wake`], which takes another
    /// lock), and a user's code that closes a client from a completion reaches
    /// [`Active::forget`], which leaves a set it finds locked to this poll (the member is done,
    /// so the poll drops it). One lock per turn, not two: a spinning owner takes it millions of
    /// times a second.
    pub fn poll(&self, now: Instant) -> bool {
        if self.is_empty() {
            return false;
        }
        let mut list = lock(&self.list);
        let mut progress = false;
        let mut exchanging = false;
        list.retain_mut(|e| {
            if e.member.poll() {
                e.last_work = now;
                e.works = e.works.saturating_add(1);
                exchanging |= e.works >= 2;
                progress = true;
                return true;
            }
            let paired = e.works >= 2;
            let spin = if paired {
                e.spin.saturating_mul(PAIRED_SPIN)
            } else {
                e.spin
            };
            let waits = !e.member.done() && now.saturating_duration_since(e.last_work) < spin;
            exchanging |= waits && paired;
            if waits {
                return true;
            }
            // Relaxed: the owner's own bookkeeping (see `gather`).
            e.member.paired().store(paired, Ordering::Relaxed);
            !Self::arm_one(&*e.member)
        });
        self.count.store(list.len(), Ordering::Relaxed);
        self.exchanging.store(exchanging, Ordering::Relaxed);
        progress
    }

    /// Whether a member of the set found work twice or more since it joined: a pair that
    /// answers back and forth, whose next work is microseconds away. An owner that spins for
    /// such a set keeps its CPU (a yield there costs a pair that shares one CPU a turn of the
    /// scheduler per message: traced at 15 µs a turn); one that spins on a guess — a member
    /// that had one command, whose client may be about to close — gives its CPU away now and
    /// then ([`crate::ring::Polite`]), since the thread that has the next step to take (its
    /// own reactor, the peer) may be waiting for that very CPU.
    pub fn exchanging(&self) -> bool {
        self.exchanging.load(Ordering::Relaxed)
    }

    /// One turn of an owner's spin on its set, at `now`: it gives the CPU away now and then
    /// (`polite`), unless a pair in the set answers back and forth (see
    /// [`Active::exchanging`]).
    #[inline]
    pub fn spin_turn(&self, polite: &mut Polite, now: Instant) {
        std::hint::spin_loop();
        if !self.exchanging() {
            polite.tick(now);
        }
    }

    /// Arms `member`; returns whether it leaves the active set: it armed, or it has work but
    /// a wake queued it meanwhile (it comes back through the woken list).
    fn arm_one(member: &dyn Member) -> bool {
        // SeqCst, before the member arms its rings: a wake that comes after the arming (a WAKE
        // frame sent because the ring was WATCHED) finds the flag clear and queues the member
        // again; one that came before finds it set and is taken care of below.
        member.queued().store(false, Ordering::SeqCst);
        if member.arm() {
            return true;
        }
        // Work is there: keep it, unless a wake queued it meanwhile.
        member.queued().swap(true, Ordering::SeqCst)
    }

    /// Drops every member, active or woken: their owner stops for good (a closed server's
    /// pool), and holds them no longer.
    pub fn clear(&self) {
        let woken: Vec<_> = lock(&self.woken).drain(..).collect();
        self.woken_len.store(0, Ordering::SeqCst);
        let list: Vec<_> = lock(&self.list).drain(..).collect();
        self.count.store(0, Ordering::Relaxed);
        // Dropped outside the locks: a member's last holder may let its connection go.
        drop((woken, list));
    }

    /// Drops `member` from the set and from the woken ones (see [`Owner::forget`]); its
    /// `queued` flag stays set, so that no late wake queues it again.
    pub fn forget(&self, member: &Arc<dyn Member>) {
        let same = |m: &Arc<dyn Member>| std::ptr::addr_eq(Arc::as_ptr(m), Arc::as_ptr(member));
        {
            let mut woken = lock(&self.woken);
            let before = woken.len();
            woken.retain(|m| !same(m));
            self.woken_len
                .fetch_sub(before - woken.len(), Ordering::SeqCst);
        }
        // Locked only by a poll of this very thread, under way (see `poll`): it drops the
        // member, which is done, itself.
        let mut list = match self.list.try_lock() {
            Ok(list) => list,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        list.retain(|e| !same(&e.member));
        self.count.store(list.len(), Ordering::Relaxed);
    }

    /// Arms every active member (see [`Member::arm`]) and drops the armed ones from the set;
    /// returns whether the set is empty and nothing was woken meanwhile, so the owner may sleep.
    pub fn arm(&self) -> bool {
        {
            let mut list = lock(&self.list);
            list.retain(|e| !Self::arm_one(&*e.member));
            self.count.store(list.len(), Ordering::Relaxed);
        }
        self.is_empty() && !self.has_woken()
    }
}

/// The owner of the connections of Rust callers: one thread per process ("shmcall-run"),
/// started with the first of them. It polls its active members, spins for their budget, arms
/// them and sleeps until the reactor (or a caller) wakes one.
pub struct Runner {
    active: Active,
    bell: Event,
    thread: OnceLock<std::thread::ThreadId>,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner")
            .field("active", &self.active)
            .finish()
    }
}

static RUNNER: OnceLock<Result<Arc<Runner>, Error>> = OnceLock::new();

impl Runner {
    /// The runner of this process, started on first use.
    pub fn get() -> Result<Arc<Runner>, Error> {
        RUNNER
            .get_or_init(|| {
                let runner = Arc::new(Runner {
                    active: Active::default(),
                    bell: Event::new(),
                    thread: OnceLock::new(),
                });
                let r = runner.clone();
                std::thread::Builder::new()
                    .name("shmcall-run".into())
                    .spawn(move || {
                        let _ = r.thread.set(std::thread::current().id());
                        r.run();
                    })
                    .map_err(|e| Error::io("cannot start the shmcall-run thread", e))?;
                Ok(runner)
            })
            .clone()
    }

    fn run(&self) {
        let mut clock = Coarse::new();
        let mut polite = Polite::new(clock.now());
        loop {
            self.active.gather();
            let now = clock.now();
            if self.active.poll(now) || self.active.has_woken() {
                polite = Polite::new(now);
                continue;
            }
            // Members leave the set once idle for their spin (`Active::poll`).
            if !self.active.is_empty() {
                self.active.spin_turn(&mut polite, now);
                continue;
            }
            if !self.active.arm() {
                continue;
            }
            self.bell
                .wait_until(Spin(Duration::ZERO), || self.active.has_woken());
            polite = Polite::new(clock.fresh());
        }
    }
}

impl Owner for Runner {
    fn wake(&self, member: Arc<dyn Member>) {
        if self.active.wake(member) {
            self.bell.notify();
        }
    }

    fn is_current(&self) -> bool {
        self.thread.get() == Some(&std::thread::current().id())
    }

    fn forget(&self, member: &Arc<dyn Member>) {
        self.active.forget(member);
    }
}

/// An owner whose members the reactor polls on its own thread, as their wakes reach it: a WAKE
/// frame's member runs right there, with no thread to wake in between. For members whose work
/// is short, never blocks and never waits for the reactor — an event queue's host: a post is
/// numbered and copied into lists — and whose spin is 0 (it never spins: the reactor has other
/// sockets to read). A wake from another thread reaches the reactor as a deadline of now.
pub struct Inline {
    active: Active,
    reactor: &'static Reactor,
    token: OnceLock<Token>,
    /// Whether [`Inline::run`] is under way on the reactor (a wake from within it, by a member's
    /// own work, is taken by that run).
    running: AtomicBool,
}

impl fmt::Debug for Inline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inline")
            .field("active", &self.active)
            .finish()
    }
}

/// Rounds of polls one run takes before it lets the reactor serve its other sources.
const INLINE_ROUNDS: u32 = 64;

impl Inline {
    /// An owner run by the process's reactor.
    pub fn new() -> Result<Arc<Inline>, Error> {
        let reactor = Reactor::get()?;
        let inline = Arc::new(Inline {
            active: Active::default(),
            reactor,
            token: OnceLock::new(),
            running: AtomicBool::new(false),
        });
        // The reactor holds it weakly: the owner goes with its server, and takes its entry along.
        let token = reactor.enlist(Arc::new(InlineDeadlines(Arc::downgrade(&inline))))?;
        let _ = inline.token.set(token);
        Ok(inline)
    }

    /// Polls the woken members until each armed, on the reactor's thread; after
    /// [`INLINE_ROUNDS`] rounds the rest waits for the reactor's next turn.
    fn run(&self) {
        // Relaxed: set and read on the reactor's thread alone.
        if self.running.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut done = false;
        for _ in 0..INLINE_ROUNDS {
            self.active.gather();
            self.active.poll(Instant::now());
            if self.active.arm() {
                done = true;
                break;
            }
        }
        self.running.store(false, Ordering::Relaxed);
        if !done && let Some(&token) = self.token.get() {
            self.reactor.deadline(token, Instant::now());
        }
    }
}

impl Owner for Inline {
    fn wake(&self, member: Arc<dyn Member>) {
        if !self.active.wake(member) {
            return;
        }
        if self.reactor.is_current() {
            self.run();
        } else if let Some(&token) = self.token.get() {
            self.reactor.deadline(token, Instant::now());
        }
    }

    fn is_current(&self) -> bool {
        self.reactor.is_current()
    }

    fn forget(&self, member: &Arc<dyn Member>) {
        self.active.forget(member);
    }
}

impl Drop for Inline {
    fn drop(&mut self) {
        if let Some(&token) = self.token.get() {
            self.reactor.dismiss(token);
        }
    }
}

/// The reactor's entry for an [`Inline`] owner: its deadlines run it, while it lives.
struct InlineDeadlines(std::sync::Weak<Inline>);

impl Source for InlineDeadlines {
    fn ready(self: Arc<Self>, _events: u32) {}

    fn expired(self: Arc<Self>) {
        if let Some(inline) = self.0.upgrade() {
            inline.run();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// A member whose work is a counter the test fills; it arms at once.
    struct Scripted {
        work: AtomicU32,
        spin: Duration,
        queued: AtomicBool,
        paired: AtomicBool,
        /// Whether it says it will never have work again.
        done: AtomicBool,
    }

    impl Scripted {
        fn new(spin: Duration) -> Arc<Scripted> {
            Arc::new(Scripted {
                work: AtomicU32::new(0),
                spin,
                queued: AtomicBool::new(false),
                paired: AtomicBool::new(false),
                done: AtomicBool::new(false),
            })
        }
    }

    impl Member for Scripted {
        fn poll(&self) -> bool {
            self.work
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| w.checked_sub(1))
                .is_ok()
        }
        fn arm(&self) -> bool {
            self.work.load(Ordering::Relaxed) == 0
        }
        fn spin(&self) -> Duration {
            self.spin
        }
        fn queued(&self) -> &AtomicBool {
            &self.queued
        }
        fn paired(&self) -> &AtomicBool {
            &self.paired
        }
        fn done(&self) -> bool {
            self.done.load(Ordering::Relaxed)
        }
    }

    const SPIN: Duration = Duration::from_micros(50);

    /// Wakes `m`, moves it to the set and polls it once per unit of work, all at `at`.
    fn join_and_work(active: &Active, m: &Arc<Scripted>, works: u32) -> Instant {
        m.work.store(works, Ordering::Relaxed);
        assert!(active.wake(m.clone()));
        active.gather();
        // After the gather, which stamps the member's arrival with the real clock.
        let at = Instant::now();
        for _ in 0..works {
            assert!(active.poll(at));
        }
        at
    }

    #[test]
    fn an_inline_owner_goes_with_its_last_holder_and_takes_its_reactor_entry_along() {
        let reactor = Reactor::get().unwrap();
        let before = reactor.sources();
        for _ in 0..200 {
            let inline = Inline::new().unwrap();
            let weak = Arc::downgrade(&inline);
            drop(inline);
            assert!(
                weak.upgrade().is_none(),
                "the reactor does not keep it alive"
            );
        }
        // Other tests of this binary may hold a few entries meanwhile; 200 kept would show.
        assert!(
            reactor.sources() < before + 50,
            "{} entries before, {} after",
            before,
            reactor.sources()
        );
    }

    #[test]
    fn an_inline_owner_woken_from_another_thread_polls_on_the_reactor_until_its_member_arms() {
        let inline = Inline::new().unwrap();
        let member = Scripted::new(Duration::ZERO);
        member.work.store(5, Ordering::Relaxed);
        inline.wake(member.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        // The reactor takes the wake as a deadline of now, and polls until the member arms.
        while member.work.load(Ordering::Relaxed) > 0 || member.queued.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "the reactor did not run the member"
            );
            std::thread::yield_now();
        }
        assert!(!inline.is_current(), "this thread is not the reactor");
        // Woken again, it runs again.
        member.work.store(2, Ordering::Relaxed);
        inline.wake(member.clone());
        while member.work.load(Ordering::Relaxed) > 0 {
            assert!(
                Instant::now() < deadline,
                "the reactor did not run the member again"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_member_with_one_work_leaves_after_its_spin() {
        let active = Active::default();
        let m = Scripted::new(SPIN);
        let at = join_and_work(&active, &m, 1);
        assert!(!active.exchanging());
        assert!(!active.poll(at + SPIN / 2));
        assert!(!active.is_empty(), "still within its spin");
        assert!(!active.poll(at + SPIN));
        assert!(active.is_empty(), "armed once its spin passed");
        assert!(!m.paired.load(Ordering::Relaxed));
    }

    #[test]
    fn a_pair_spins_longer_and_is_known_as_one_when_it_comes_back() {
        let active = Active::default();
        let m = Scripted::new(SPIN);
        let at = join_and_work(&active, &m, 2);
        assert!(active.exchanging());
        // Beyond its own spin, within the longer one of a pair.
        assert!(!active.poll(at + SPIN * 2));
        assert!(!active.is_empty());
        assert!(active.exchanging());
        assert!(!active.poll(at + SPIN * PAIRED_SPIN));
        assert!(active.is_empty());
        assert!(m.paired.load(Ordering::Relaxed), "left the set as a pair");

        // Woken again with one command: a pair from that first work on.
        let at = join_and_work(&active, &m, 1);
        assert!(active.exchanging());
        assert!(!active.poll(at + SPIN * 2));
        assert!(!active.is_empty());
        assert!(!active.poll(at + SPIN * PAIRED_SPIN));
        assert!(active.is_empty());

        // Woken for nothing: it leaves after its own spin, no longer a pair.
        let at = join_and_work(&active, &m, 0);
        assert!(!active.poll(at + SPIN));
        assert!(active.is_empty());
        assert!(!m.paired.load(Ordering::Relaxed));
    }

    #[test]
    fn a_member_that_is_done_leaves_at_once_within_its_spin() {
        let active = Active::default();
        let m = Scripted::new(SPIN);
        let at = join_and_work(&active, &m, 1);
        m.done.store(true, Ordering::Relaxed);
        assert!(!active.poll(at));
        assert!(
            active.is_empty(),
            "a done member is not polled for the rest of its spin"
        );
    }

    #[test]
    fn a_pair_that_asked_not_to_spin_does_not() {
        let active = Active::default();
        let m = Scripted::new(Duration::ZERO);
        let at = join_and_work(&active, &m, 2);
        assert!(!active.poll(at));
        assert!(active.is_empty());
    }

    /// A member that is woken while it arms (as a WAKE frame sent because its ring just became
    /// WATCHED would wake it), with no work of its own.
    struct WokenWhileArming {
        active: Arc<Active>,
        me: std::sync::Weak<WokenWhileArming>,
        queued: AtomicBool,
        paired: AtomicBool,
    }

    impl Member for WokenWhileArming {
        fn poll(&self) -> bool {
            false
        }
        fn arm(&self) -> bool {
            if let Some(me) = self.me.upgrade() {
                self.active.wake(me);
            }
            true
        }
        fn spin(&self) -> Duration {
            Duration::ZERO
        }
        fn queued(&self) -> &AtomicBool {
            &self.queued
        }
        fn paired(&self) -> &AtomicBool {
            &self.paired
        }
    }

    #[test]
    fn a_wake_that_comes_while_a_member_arms_is_not_lost() {
        let active = Arc::new(Active::default());
        let m = Arc::new_cyclic(|me| WokenWhileArming {
            active: active.clone(),
            me: me.clone(),
            queued: AtomicBool::new(false),
            paired: AtomicBool::new(false),
        });
        assert!(active.wake(m.clone()));
        active.gather();
        assert!(
            !active.arm(),
            "the owner may not sleep: the member was woken as it armed"
        );
        assert!(active.has_woken(), "the wake queued the member again");
    }

    #[test]
    fn a_member_forgotten_before_its_owner_gathered_it_leaves_nothing_woken() {
        let active = Active::default();
        let m = Scripted::new(SPIN);
        assert!(active.wake(m.clone()));
        let m: Arc<dyn Member> = m;
        active.forget(&m);
        assert!(
            !active.has_woken(),
            "a forgotten member still counts as woken"
        );
        assert!(active.arm(), "nothing keeps the owner awake");
    }
}
