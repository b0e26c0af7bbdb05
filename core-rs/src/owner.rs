//! Who runs a connection's work: the thread that owns it.
//!
//! Every connection belongs to one **owner**: a thread that runs its user code (a server's
//! handlers, a client's completions) and pops its rings itself while it waits for work, so that
//! a command or an answer reaches the code that handles it with no thread hop. A JavaScript
//! thread owns the connections it made (the bindings' hub is its owner); the [`Runner`], one
//! thread per process started on first use, owns those of Rust callers.
//!
//! A connection is a [`Member`] of its owner. The owner polls the members that have work — its
//! **active** set, [`Active`] — and when they stay idle for their spin budget, it **arms** them
//! ([`Member::arm`]: their rings are [`crate::ring::WATCHED`]) and sleeps. The reactor wakes a
//! member ([`Owner::wake`]) when a WAKE frame, a backup frame or the connection's end arrives,
//! which puts it back in the active set. Idle connections are in no list and cost nothing: an
//! owner of 10,000 connections polls only those that had work lately.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::channel::Event;
use crate::ring::Spin;
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
}

/// The thread that runs its members' work.
pub trait Owner: Send + Sync + fmt::Debug + 'static {
    /// `member` has work: the owner polls it soon. Any thread; never blocks.
    fn wake(&self, member: Arc<dyn Member>);
    /// `member` may soon have work: an owner that is awake polls it, one that sleeps need not
    /// wake for it (its rings are armed, so its work wakes the owner when it comes). By
    /// default the same as [`Owner::wake`].
    fn offer(&self, member: Arc<dyn Member>) {
        self.wake(member);
    }
    /// Whether the caller runs on the owner's thread.
    fn is_current(&self) -> bool;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The members an owner polls, and those woken for it. Used on the owner's thread, but for
/// [`Active::wake`], which any thread may call.
#[derive(Default)]
pub struct Active {
    woken: Mutex<Vec<Arc<dyn Member>>>,
    woken_len: AtomicUsize,
    list: Mutex<Vec<Arc<dyn Member>>>,
    /// The active set's size and its longest spin budget (ns), kept beside the list so that an
    /// owner spinning on them takes no lock.
    count: AtomicUsize,
    spin_ns: AtomicU64,
}

impl fmt::Debug for Active {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Active")
            .field("active", &lock(&self.list).len())
            .field("woken", &self.woken_len.load(Ordering::Relaxed))
            .finish()
    }
}

impl Active {
    /// Queues `member` for the owner unless it is active or queued already; returns whether
    /// it was queued now (the owner may need waking).
    pub fn wake(&self, member: Arc<dyn Member>) -> bool {
        // SeqCst: pairs with the store in `arm` (see there).
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

    /// Records the set's size and longest spin budget (called with the list at hand).
    fn note(&self, list: &[Arc<dyn Member>]) {
        self.count.store(list.len(), Ordering::Relaxed);
        let spin = list
            .iter()
            .map(|m| m.spin())
            .max()
            .unwrap_or(Duration::ZERO);
        self.spin_ns.store(
            u64::try_from(spin.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Moves the woken members to the active set.
    pub fn gather(&self) {
        if !self.has_woken() {
            return;
        }
        // Drained rather than taken: both vectors keep their capacity, so a steady stream of
        // wakes allocates nothing.
        let mut woken = lock(&self.woken);
        self.woken_len.fetch_sub(woken.len(), Ordering::SeqCst);
        let mut list = lock(&self.list);
        list.extend(woken.drain(..));
        self.note(&list);
    }

    /// Polls every active member once; returns whether any did something. Members woken while
    /// it runs are polled on the next call.
    pub fn poll(&self) -> bool {
        // Out of the lock while they run: a member's work (user code) may close things, which
        // may poll members itself.
        let mut list = std::mem::take(&mut *lock(&self.list));
        let mut progress = false;
        for m in &list {
            progress |= m.poll();
        }
        self.put_back(&mut list);
        progress
    }

    /// Puts `list` back as the active set, with whatever was added meanwhile.
    fn put_back(&self, list: &mut Vec<Arc<dyn Member>>) {
        let mut l = lock(&self.list);
        let added = !l.is_empty();
        list.append(&mut l);
        std::mem::swap(&mut *l, list);
        if added {
            self.note(&l);
        }
    }

    /// The longest spin budget of the active members.
    pub fn spin(&self) -> Duration {
        Duration::from_nanos(self.spin_ns.load(Ordering::Relaxed))
    }

    /// Arms every active member (see [`Member::arm`]) and drops the armed ones from the set;
    /// returns whether the set is empty and nothing was woken meanwhile, so the owner may sleep.
    pub fn arm(&self) -> bool {
        let mut list = std::mem::take(&mut *lock(&self.list));
        let before = list.len();
        list.retain(|m| {
            // SeqCst, before the member arms its rings: a wake that comes after the arming
            // (a WAKE frame sent because the ring was WATCHED) finds the flag clear and queues
            // the member again; one that came before finds it set and is taken care of below.
            m.queued().store(false, Ordering::SeqCst);
            if m.arm() {
                return false;
            }
            // Work is there: keep it, unless a wake queued it meanwhile (it comes back then).
            !m.queued().swap(true, Ordering::SeqCst)
        });
        if list.len() != before {
            self.note(&list);
        }
        self.put_back(&mut list);
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
        let mut last = Instant::now();
        loop {
            self.active.gather();
            if self.active.poll() {
                last = Instant::now();
                continue;
            }
            if self.active.has_woken() {
                continue;
            }
            if last.elapsed() < self.active.spin() {
                std::hint::spin_loop();
                continue;
            }
            if !self.active.arm() {
                continue;
            }
            self.bell
                .wait_until(Spin(Duration::ZERO), || self.active.has_woken());
            last = Instant::now();
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
}
