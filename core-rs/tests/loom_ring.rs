//! The ring's wait/wake handshake under loom, which runs the ring's own code (`src/ring.rs`,
//! included below) over every interleaving and every weak-memory outcome its orderings allow.
//!
//! The park models a futex exactly: `wait` sleeps only if the word still holds the expected
//! value, checked under the same lock `wake` takes (the kernel's hash-bucket lock), and it sleeps
//! until woken — no timeout, so a lost wake-up leaves a thread asleep forever, which loom reports
//! as a deadlock. (Production sleeps carry a 100 ms backstop against hostile peers; the model
//! proves nothing relies on it.)
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p shmcall --test
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

/// `ring.rs` names the futex module for its production park only; the model never calls it.
#[allow(dead_code)]
mod futex {
    use loom::sync::atomic::AtomicU32;
    use std::time::Duration;

    #[derive(Clone, Copy, Debug)]
    pub enum Scope {
        Shared,
        Private,
    }

    pub fn wait(_: &AtomicU32, _: u32, _: Option<Duration>, _: Scope) {
        unreachable!("the model parks through ModelPark")
    }

    pub fn wake(_: &AtomicU32, _: u32, _: Scope) -> usize {
        unreachable!("the model parks through ModelPark")
    }
}

#[path = "../src/ring.rs"]
#[allow(dead_code)]
mod ring;

use ring::{HeapRing, Park, Spin, Stopped};
use sync::atomic::{AtomicU32, Ordering};

/// A futex: compare-and-sleep atomic with respect to wake.
#[derive(Default)]
struct ModelPark {
    bucket: Mutex<()>,
    woken: Condvar,
}

impl Park for ModelPark {
    fn wait(&self, word: &AtomicU32, expected: u32) {
        let guard = self.bucket.lock().unwrap();
        // The kernel reads the word inside its lock; this load cannot be reordered outside ours.
        if word.load(Ordering::SeqCst) == expected {
            drop(self.woken.wait(guard).unwrap());
        }
    }

    fn wake(&self, _word: &AtomicU32) {
        let _guard = self.bucket.lock().unwrap();
        self.woken.notify_all();
    }
}

/// No spinning: every wait goes straight to the sleep handshake, the part under test.
const NO_SPIN: Spin = Spin(Duration::ZERO);

#[test]
fn a_consumer_that_sleeps_on_an_empty_ring_is_always_woken_by_a_push() {
    loom::model(|| {
        let memory = Arc::new(HeapRing::new(2));
        let park = Arc::new(ModelPark::default());
        let producer = {
            let (memory, park) = (memory.clone(), park.clone());
            thread::spawn(move || memory.handle().try_push(7, &*park).unwrap())
        };
        let consumer = memory.handle();
        let got = consumer.pop_blocking(NO_SPIN, &*park, || false);
        assert_eq!(got, Ok(7));
        producer.join().unwrap();
    });
}

#[test]
fn a_producer_that_sleeps_on_a_full_ring_is_always_woken_by_a_pop() {
    loom::model(|| {
        let memory = Arc::new(HeapRing::new(2));
        let park = Arc::new(ModelPark::default());
        let producers = memory.handle();
        producers.try_push(1, &*park).unwrap();
        producers.try_push(2, &*park).unwrap();
        let consumer = {
            let (memory, park) = (memory.clone(), park.clone());
            thread::spawn(move || {
                let ring = memory.handle();
                let first = ring.pop_blocking(NO_SPIN, &*park, || false).unwrap();
                let rest: Vec<u32> = (0..2)
                    .map(|_| ring.pop_blocking(NO_SPIN, &*park, || false).unwrap())
                    .collect();
                (first, rest)
            })
        };
        // The ring is full until the consumer pops: this push may have to sleep.
        producers
            .push_blocking(3, NO_SPIN, &*park, || false)
            .unwrap();
        assert_eq!(
            consumer.join().unwrap(),
            (1, vec![2, 3]),
            "FIFO, nothing lost"
        );
    });
}

#[test]
fn two_producers_and_a_sleeping_consumer_lose_and_duplicate_nothing() {
    loom::model(|| {
        let memory = Arc::new(HeapRing::new(2));
        let park = Arc::new(ModelPark::default());
        // One handle shared by both producers, as a process's producers share theirs.
        let producers = Arc::new(memory.handle());
        let threads: Vec<_> = [5u32, 9]
            .into_iter()
            .map(|v| {
                let (producers, park) = (producers.clone(), park.clone());
                thread::spawn(move || producers.push_blocking(v, NO_SPIN, &*park, || false))
            })
            .collect();
        let consumer = memory.handle();
        let mut got: Vec<u32> = (0..2)
            .map(|_| consumer.pop_blocking(NO_SPIN, &*park, || false).unwrap())
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, [5, 9]);
    });
}

#[test]
fn interrupt_always_wakes_a_sleeping_consumer_that_then_stops() {
    loom::model(|| {
        let memory = Arc::new(HeapRing::new(2));
        let park = Arc::new(ModelPark::default());
        let stop = Arc::new(AtomicBool::new(false));
        let closer = {
            let (memory, park, stop) = (memory.clone(), park.clone(), stop.clone());
            thread::spawn(move || {
                stop.store(true, Ordering::SeqCst);
                memory.handle().interrupt(&*park);
            })
        };
        let consumer = memory.handle();
        let got = consumer.pop_blocking(NO_SPIN, &*park, || stop.load(Ordering::SeqCst));
        assert_eq!(got, Err(Stopped::Stopped));
        closer.join().unwrap();
    });
}
