//! The ring's wake-up handshakes under loom, which runs the ring's own code (`src/ring.rs`,
//! included below) over every interleaving and every weak-memory outcome its orderings allow.
//!
//! The park models a futex exactly: `park` sleeps only if the flag still holds `PARKED` and the
//! sleeper's epoch is unchanged, checked under the same lock the wakes take (the kernel's
//! hash-bucket lock), and it sleeps until woken — no timeout, so a lost wake-up leaves a thread
//! asleep forever, which loom reports as a deadlock. A watched consumer is modelled the same
//! way: it sleeps until a producer's signal (the WAKE frame) arrives. Production has no
//! timeout either: the model is the argument that none is needed.
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p shmcall-core --test
//! loom_ring` (in `deno task stress`); without `--cfg loom` this file is empty. It has teeth:
//! without the fence between a push and its look at the sleep flag, the first model deadlocks.
//!
//! Why a preemption bound of 2: at 3, loom reports a deadlock in the two-producer model that the
//! C++20 memory model forbids. There the consumer stores the flag, fences (SeqCst) and finds the
//! cell empty, while the second producer stores the cell, fences (SeqCst) and reads an *older*
//! flag value than the consumer's store. Whichever fence comes first in the single order S of
//! SeqCst fences, one of the two reads must see the other side's store ([atomics.fences]: a
//! store before fence X is seen by a read after fence Y when X precedes Y in S); loom's fences do
//! not enforce that rule in full (tokio-rs/loom#180 shows the same gap for SeqCst accesses).
//!
//! The two-producer model found a real bug at bound 2: a producer whose copy of the write
//! position was stale (the other producer pushed, and the consumer read past it) took the ring
//! for full; since a full ring now means a lying peer, that would have ended an honest
//! connection. `try_push` looks at the position again before it calls the ring full.

#![cfg(loom)]

use std::time::Duration;

use loom::sync::atomic::AtomicBool;
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

/// What `ring.rs` imports as `crate::sync::atomic`: loom's atomics.
mod sync {
    pub mod atomic {
        pub use loom::sync::atomic::{AtomicU32, Ordering, fence};
    }
}

#[path = "../src/ring.rs"]
#[allow(dead_code)]
mod ring;

use ring::{HeapRing, PARKED, Park, Spin, Stopped, Waker};
use sync::atomic::{AtomicU32, Ordering};

/// A futex, a sleeper's epoch, and the WAKE frame of a watched ring: compare-and-sleep atomic
/// with respect to every wake.
#[derive(Default)]
struct Model {
    bucket: Mutex<()>,
    woken: Condvar,
    epoch: AtomicU32,
    signalled: AtomicBool,
}

impl Park for Model {
    fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn park(&self, flag: &AtomicU32, epoch: u32) {
        let guard = self.bucket.lock().unwrap();
        // The kernel reads the words inside its lock; these loads cannot move outside ours.
        if flag.load(Ordering::SeqCst) == PARKED && self.epoch.load(Ordering::SeqCst) == epoch {
            drop(self.woken.wait(guard).unwrap());
        }
    }
}

impl Waker for Model {
    fn unpark(&self, _flag: &AtomicU32) {
        let _guard = self.bucket.lock().unwrap();
        self.woken.notify_all();
    }

    fn signal(&self) {
        let _guard = self.bucket.lock().unwrap();
        self.signalled.store(true, Ordering::SeqCst);
        self.woken.notify_all();
    }
}

impl Model {
    /// A local interrupt: the sleeper's epoch changes.
    fn interrupt(&self) {
        let _guard = self.bucket.lock().unwrap();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.woken.notify_all();
    }

    /// The waiter of a watched ring: sleeps until a signal arrives.
    fn wait_for_signal(&self) {
        let mut guard = self.bucket.lock().unwrap();
        while !self.signalled.load(Ordering::SeqCst) {
            guard = self.woken.wait(guard).unwrap();
        }
    }
}

/// No spinning: every wait goes straight to the sleep handshake, the part under test.
const NO_SPIN: Spin = Spin(Duration::ZERO);

#[test]
fn a_consumer_that_sleeps_on_an_empty_ring_is_always_woken_by_a_push() {
    loom::model(|| {
        let memory = Arc::new(HeapRing::new(2));
        let model = Arc::new(Model::default());
        let producer = {
            let (memory, model) = (memory.clone(), model.clone());
            thread::spawn(move || memory.handle().try_push(7, &*model).unwrap())
        };
        let consumer = memory.handle();
        let got = consumer.pop_blocking(NO_SPIN, &*model, || false);
        assert_eq!(got, Ok(7));
        producer.join().unwrap();
    });
}

#[test]
fn a_watched_ring_is_always_signalled_or_seen_to_hold_the_entry() {
    loom::model(|| {
        let memory = Arc::new(HeapRing::new(2));
        let model = Arc::new(Model::default());
        let producer = {
            let (memory, model) = (memory.clone(), model.clone());
            thread::spawn(move || memory.handle().try_push(7, &*model).unwrap())
        };
        let consumer = memory.handle();
        // The owner goes idle: it hands the ring to its process's waiter, which sleeps until a
        // WAKE arrives; or it sees the entry at once.
        if consumer.watch() {
            model.wait_for_signal();
        }
        assert_eq!(consumer.try_pop(), Some(7));
        producer.join().unwrap();
    });
}

#[test]
fn two_producers_and_a_sleeping_consumer_lose_and_duplicate_nothing() {
    loom::model(|| {
        let memory = Arc::new(HeapRing::new(2));
        let model = Arc::new(Model::default());
        // One handle shared by both producers, as a process's producers share theirs.
        let producers = Arc::new(memory.handle());
        let threads: Vec<_> = [5u32, 9]
            .into_iter()
            .map(|v| {
                let (producers, model) = (producers.clone(), model.clone());
                thread::spawn(move || producers.try_push(v, &*model).expect("room for the push"))
            })
            .collect();
        let consumer = memory.handle();
        let mut got: Vec<u32> = (0..2)
            .map(|_| consumer.pop_blocking(NO_SPIN, &*model, || false).unwrap())
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, [5, 9]);
    });
}

#[test]
fn an_interrupt_always_wakes_a_sleeping_consumer_whatever_its_flag_holds() {
    loom::model(|| {
        let memory = Arc::new(HeapRing::new(2));
        let model = Arc::new(Model::default());
        let stop = Arc::new(AtomicBool::new(false));
        let closer = {
            let (model, stop) = (model.clone(), stop.clone());
            thread::spawn(move || {
                stop.store(true, Ordering::SeqCst);
                model.interrupt();
            })
        };
        let consumer = memory.handle();
        let got = consumer.pop_blocking(NO_SPIN, &*model, || stop.load(Ordering::SeqCst));
        assert_eq!(got, Err(Stopped::Stopped));
        closer.join().unwrap();
    });
}
