//! The CS and SC rings: bounded FIFOs of non-zero 4-byte entries between two processes.
//!
//! # Algorithm
//!
//! A bounded multi-producer, single-consumer array queue in which the value `0` marks an empty
//! cell, so the consumer needs no view of the write position (the same "zero means not yet
//! published" idea as the Linux kernel's `ptr_ring`, where NULL marks an empty entry):
//!
//! - Producers live in one process. They reserve a position with a compare-and-swap on a write
//!   counter **kept in that process's own memory**, check the ring is not full against the
//!   consumer's published read position, and store the value into the cell with `Release`.
//! - The single consumer (one thread at a time, in the other process) loads the cell at its own
//!   read counter with `Acquire`; a zero means empty. It clears the cell and then publishes its
//!   read position with `Release`, which is what gives the cell back to producers.
//!
//! Only the cells, the published read position and the two sleep flags live in shared memory.
//! Both counters that decide *where* the owner reads or writes are private to the owner, so a
//! peer scribbling over the segment can make this side see garbage values (which callers
//! validate) but can never steer an index outside the ring: every index is `position & mask`
//! with the mask taken from the locally validated geometry.
//!
//! # Blocking
//!
//! Waiting is injected through [`Park`] (as iceoryx2's lock strategies take `wait` and `wake`
//! from outside), so the same code runs across threads on the heap, across processes in a
//! segment, and under a model checker. A waiter spins for a bounded time, then announces itself
//! in a sleep flag, issues a full fence, re-checks, and only then sleeps; the other side
//! publishes, issues a full fence, and makes a wake system call only when it sees the flag. This
//! is the `IORING_SQ_NEED_WAKEUP` handshake of io_uring: the two fences make it impossible for
//! both the sleeper to miss the value and the publisher to miss the flag (a store-buffer litmus
//! test that sequentially consistent fences forbid). A busy pair therefore makes no system call.
//!
//! Every blocking call takes a `stop` predicate; [`Ring::interrupt`] clears the flags and wakes
//! every sleeper so it re-reads `stop`. Sleeps use a bounded backstop timeout so a hostile peer
//! that keeps rewriting a sleep flag can delay, but never prevent, a local close.

use std::fmt;

// Through `crate::sync`, so that the loom model (`tests/loom_ring.rs`), which includes this
// file, runs this very code on loom's atomics.
use crate::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

/// Shared-memory header of one ring. `#[repr(C)]`, no pointers, no `Drop`: it is laid out by one
/// process and used by two. The fields each side writes sit on separate cache lines.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct RingHeader {
    /// The consumer's read position, published after each pop (consumer writes, producers read).
    read: AtomicU32,
    /// `1` while the consumer sleeps or is about to sleep; the futex word it sleeps on.
    reader_sleeping: AtomicU32,
    _pad0: [u8; 56],
    /// `1` while a producer sleeps on a full ring; the futex word producers sleep on.
    writers_sleeping: AtomicU32,
    _pad1: [u8; 60],
}

impl RingHeader {
    /// Size of the header in bytes; the cells follow it in a segment.
    pub const SIZE: usize = std::mem::size_of::<RingHeader>();

    /// A header for a fresh, empty ring (not `const`: loom's atomics are not).
    pub fn new() -> RingHeader {
        RingHeader {
            read: AtomicU32::new(0),
            reader_sleeping: AtomicU32::new(0),
            _pad0: [0; 56],
            writers_sleeping: AtomicU32::new(0),
            _pad1: [0; 60],
        }
    }
}

impl Default for RingHeader {
    fn default() -> Self {
        RingHeader::new()
    }
}

/// How a blocked side sleeps and wakes the other: futexes in production, anything in tests.
pub trait Park {
    /// Sleeps while `*word == expected`; may return early for any reason.
    fn wait(&self, word: &AtomicU32, expected: u32);
    /// Wakes every thread sleeping on `word`.
    fn wake(&self, word: &AtomicU32);
}

/// Why a blocking ring operation returned without a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The `stop` predicate became true.
    Stopped,
}

/// Outcome of a non-blocking push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryPushError {
    /// Every cell holds an entry the consumer has not taken.
    Full,
}

/// How long a waiter spins before it sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spin(pub Duration);

impl Spin {
    /// Spin `budget`, checking `ready` on every iteration; `Some` as soon as it yields a value.
    #[inline]
    pub fn run<T>(self, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
        if let Some(v) = ready() {
            return Some(v);
        }
        if self.0.is_zero() {
            return None;
        }
        let start = Instant::now();
        loop {
            // Reading the clock costs tens of nanoseconds; check it once per 64 polls.
            for _ in 0..64 {
                std::hint::spin_loop();
                if let Some(v) = ready() {
                    return Some(v);
                }
            }
            if start.elapsed() >= self.0 {
                return None;
            }
        }
    }
}

/// One side's handle on a ring whose header and cells live elsewhere (heap or segment).
///
/// A `Ring` is either used to produce (any number of threads of one process) or to consume (one
/// thread at a time), never both: the caller decides, and keeps the counter of its role.
pub struct Ring {
    header: *const RingHeader,
    cells: *const AtomicU32,
    mask: u32,
    /// Producer side: the next position to reserve. Consumer side: the next position to read.
    /// Private to this process, so the peer cannot move it.
    position: AtomicU32,
}

// SAFETY: `Ring` only holds pointers to atomics, which may be accessed from any thread; the
// creator of the ring promised (in `Ring::from_raw`) that they stay valid while the ring lives.
unsafe impl Send for Ring {}
// SAFETY: as above; every access through the pointers is an atomic operation.
unsafe impl Sync for Ring {}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity())
            .field("position", &self.position.load(Ordering::Relaxed))
            .finish()
    }
}

impl Ring {
    /// A handle on the ring at `header` with `capacity` cells at `cells`.
    ///
    /// # Safety
    ///
    /// - `header` points to a valid, 64-byte-aligned [`RingHeader`] and `cells` to `capacity`
    ///   valid, aligned `u32`s, both readable and writable for as long as the `Ring` lives;
    /// - `capacity` is a power of two, at least 2 and at most 2^31;
    /// - other writers of that memory only use atomic operations (a peer process may write
    ///   anything, but through atomics or plain stores of whole words, never through Rust
    ///   references to non-atomic data).
    pub unsafe fn from_raw(
        header: *const RingHeader,
        cells: *const AtomicU32,
        capacity: u32,
    ) -> Ring {
        debug_assert!(capacity.is_power_of_two() && (2..=1 << 31).contains(&capacity));
        Ring {
            header,
            cells,
            mask: capacity - 1,
            position: AtomicU32::new(0),
        }
    }

    /// The number of cells.
    #[inline]
    pub fn capacity(&self) -> u32 {
        self.mask + 1
    }

    #[inline]
    fn header(&self) -> &RingHeader {
        // SAFETY: `from_raw`'s contract keeps the header valid while `self` lives.
        unsafe { &*self.header }
    }

    #[inline]
    fn cell(&self, position: u32) -> &AtomicU32 {
        // SAFETY: `position & mask` is below the capacity, and `from_raw`'s contract keeps that
        // many cells valid while `self` lives.
        unsafe { &*self.cells.add((position & self.mask) as usize) }
    }

    /// Producer: pushes `value` (non-zero) unless the ring is full.
    #[inline]
    pub fn try_push(&self, value: u32, park: &impl Park) -> Result<(), TryPushError> {
        assert!(
            value != 0,
            "ring entries must be non-zero: zero marks an empty cell"
        );
        let header = self.header();
        let mut w = self.position.load(Ordering::Relaxed);
        loop {
            // SYNC POINT B (pairs with the consumer's Release store of `read`): a read position
            // past `w - capacity` means the consumer already cleared that cell, so our store
            // below cannot be overwritten by its clearing store.
            let r = header.read.load(Ordering::Acquire);
            if w.wrapping_sub(r) >= self.capacity() {
                // Full, or the peer published a read position ahead of us: both mean "no cell".
                return Err(TryPushError::Full);
            }
            // Relaxed: the counter only hands out positions among this process's producers;
            // what the consumer sees is ordered by the cell store below.
            match self.position.compare_exchange_weak(
                w,
                w.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(current) => w = current,
            }
        }
        // SYNC POINT A (pairs with the Acquire load in `try_pop`): everything written before the
        // push (a slot header, an input area) is visible to the consumer that takes the value.
        self.cell(w).store(value, Ordering::Release);
        // Full fence between publishing and reading the sleep flag: the store-buffer handshake
        // described in the module doc, paired with the fence in `pop_blocking`.
        fence(Ordering::SeqCst);
        if header.reader_sleeping.load(Ordering::Relaxed) != 0
            && header.reader_sleeping.swap(0, Ordering::Relaxed) != 0
        {
            park.wake(&header.reader_sleeping);
        }
        Ok(())
    }

    /// Consumer: takes the oldest entry, or `None` when the next cell is still empty.
    ///
    /// The value comes from the peer: callers validate it before use.
    #[inline]
    pub fn try_pop(&self, park: &impl Park) -> Option<u32> {
        let header = self.header();
        let r = self.position.load(Ordering::Relaxed);
        let cell = self.cell(r);
        // SYNC POINT A: see `try_push`.
        let value = cell.load(Ordering::Acquire);
        if value == 0 {
            return None;
        }
        // Relaxed: the Release store of `read` below orders this clearing store before any
        // producer reuses the cell.
        cell.store(0, Ordering::Relaxed);
        let next = r.wrapping_add(1);
        self.position.store(next, Ordering::Relaxed);
        // SYNC POINT B: see `try_push`.
        header.read.store(next, Ordering::Release);
        // Full fence between freeing a cell and reading the producers' sleep flag, paired with
        // the fence in `push_blocking`.
        fence(Ordering::SeqCst);
        if header.writers_sleeping.load(Ordering::Relaxed) != 0
            && header.writers_sleeping.swap(0, Ordering::Relaxed) != 0
        {
            park.wake(&header.writers_sleeping);
        }
        Some(value)
    }

    /// Consumer: takes the oldest entry, spinning for `spin` and then sleeping while the ring is
    /// empty, until an entry arrives or `stop()` is true.
    pub fn pop_blocking(
        &self,
        spin: Spin,
        park: &impl Park,
        stop: impl Fn() -> bool,
    ) -> Result<u32, Stopped> {
        let flag = &self.header().reader_sleeping;
        loop {
            if let Some(v) = spin.run(|| self.try_pop(park)) {
                return Ok(v);
            }
            if stop() {
                return Err(Stopped::Stopped);
            }
            flag.store(1, Ordering::Relaxed);
            // Full fence between announcing the sleep and re-checking the cell; see the
            // module doc. Also orders the re-check of `stop` after the announcement, which is
            // what makes `interrupt` reliable.
            fence(Ordering::SeqCst);
            if let Some(v) = self.try_pop(park) {
                flag.store(0, Ordering::Relaxed);
                return Ok(v);
            }
            if stop() {
                flag.store(0, Ordering::Relaxed);
                return Err(Stopped::Stopped);
            }
            park.wait(flag, 1);
        }
    }

    /// Producer: pushes `value`, spinning and then sleeping while the ring is full, until it
    /// fits or `stop()` is true.
    pub fn push_blocking(
        &self,
        value: u32,
        spin: Spin,
        park: &impl Park,
        stop: impl Fn() -> bool,
    ) -> Result<(), Stopped> {
        let flag = &self.header().writers_sleeping;
        loop {
            if spin.run(|| self.try_push(value, park).ok()).is_some() {
                return Ok(());
            }
            if stop() {
                return Err(Stopped::Stopped);
            }
            flag.store(1, Ordering::Relaxed);
            // Full fence: the mirror image of the one in `pop_blocking`.
            fence(Ordering::SeqCst);
            if self.try_push(value, park).is_ok() {
                return Ok(());
            }
            if stop() {
                return Err(Stopped::Stopped);
            }
            park.wait(flag, 1);
        }
    }

    /// Wakes every thread blocked on this ring, on either side, so it re-reads its `stop`
    /// predicate. Call it after making `stop` true.
    pub fn interrupt(&self, park: &impl Park) {
        let header = self.header();
        // The fence orders the caller's `stop` store before clearing the flags: a sleeper that
        // announced itself before this point is woken, one that announces itself later sees
        // `stop` after its own fence.
        fence(Ordering::SeqCst);
        header.reader_sleeping.store(0, Ordering::Relaxed);
        header.writers_sleeping.store(0, Ordering::Relaxed);
        park.wake(&header.reader_sleeping);
        park.wake(&header.writers_sleeping);
    }
}

/// [`Park`] through futexes: shared ones for rings in a segment, private ones on the heap.
#[derive(Clone, Copy, Debug)]
pub struct FutexPark {
    /// Which futex operations to use.
    pub scope: crate::futex::Scope,
    /// Upper bound of one sleep: the backstop against a peer that rewrites sleep flags.
    pub backstop: Duration,
}

impl FutexPark {
    /// Parking for rings in a segment shared with another process.
    pub const SHARED: FutexPark = FutexPark {
        scope: crate::futex::Scope::Shared,
        backstop: Duration::from_millis(100),
    };
}

impl Park for FutexPark {
    #[inline]
    fn wait(&self, word: &AtomicU32, expected: u32) {
        crate::futex::wait(word, expected, Some(self.backstop), self.scope);
    }

    #[inline]
    fn wake(&self, word: &AtomicU32) {
        crate::futex::wake(word, u32::MAX, self.scope);
    }
}

/// A ring's memory on the heap, for tests and for in-process use.
#[derive(Debug)]
pub struct HeapRing {
    header: Box<RingHeader>,
    cells: Box<[AtomicU32]>,
}

impl HeapRing {
    /// Memory for a ring of `capacity` cells (a power of two, at least 2).
    pub fn new(capacity: u32) -> HeapRing {
        assert!(capacity.is_power_of_two() && capacity >= 2);
        HeapRing {
            header: Box::new(RingHeader::new()),
            cells: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// A handle for one side. Make one for the producers and one for the consumer.
    pub fn handle(&self) -> Ring {
        // SAFETY: the header is a boxed, aligned `RingHeader`, the cells a boxed slice of
        // `capacity` atomics; callers keep `self` alive while they use the handle (tests scope
        // both together), and only atomics touch that memory.
        unsafe { Ring::from_raw(&*self.header, self.cells.as_ptr(), self.cells.len() as u32) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::futex::Scope;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::thread;

    const PARK: FutexPark = FutexPark {
        scope: Scope::Private,
        backstop: Duration::from_secs(5),
    };
    const NO_SPIN: Spin = Spin(Duration::ZERO);

    struct Pair {
        _mem: HeapRing,
        producer: Ring,
        consumer: Ring,
    }

    fn pair(capacity: u32) -> Arc<Pair> {
        let mem = HeapRing::new(capacity);
        let producer = mem.handle();
        let consumer = mem.handle();
        Arc::new(Pair {
            _mem: mem,
            producer,
            consumer,
        })
    }

    #[test]
    fn pop_on_empty_ring_returns_none() {
        let p = pair(4);
        assert_eq!(p.consumer.try_pop(&PARK), None);
    }

    #[test]
    fn entries_come_out_in_push_order_across_wraparounds() {
        let p = pair(4);
        for round in 0..10u32 {
            for i in 1..=4 {
                p.producer.try_push(round * 10 + i, &PARK).unwrap();
            }
            assert_eq!(p.producer.try_push(99, &PARK), Err(TryPushError::Full));
            for i in 1..=4 {
                assert_eq!(p.consumer.try_pop(&PARK), Some(round * 10 + i));
            }
            assert_eq!(p.consumer.try_pop(&PARK), None);
        }
    }

    #[test]
    #[should_panic(expected = "non-zero")]
    fn pushing_zero_is_refused() {
        let p = pair(4);
        let _ = p.producer.try_push(0, &PARK);
    }

    #[test]
    fn several_writer_threads_lose_nothing_and_keep_each_writers_order() {
        const WRITERS: u32 = 4;
        const PER_WRITER: u32 = 50_000;
        let p = pair(64);
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let p = p.clone();
                thread::spawn(move || {
                    for i in 0..PER_WRITER {
                        // Writer id in the top bits, sequence below; +1 keeps it non-zero.
                        let v = (w << 24) | (i + 1);
                        p.producer
                            .push_blocking(v, Spin(Duration::from_micros(5)), &PARK, || false)
                            .unwrap();
                    }
                })
            })
            .collect();
        let mut next = [1u32; WRITERS as usize];
        for _ in 0..WRITERS * PER_WRITER {
            let v = p
                .consumer
                .pop_blocking(Spin(Duration::from_micros(5)), &PARK, || false)
                .unwrap();
            let (w, seq) = ((v >> 24) as usize, v & 0xff_ffff);
            assert_eq!(seq, next[w], "writer {w} out of order");
            next[w] += 1;
        }
        for t in writers {
            t.join().unwrap();
        }
        assert!(next.iter().all(|&n| n == PER_WRITER + 1));
        assert_eq!(p.consumer.try_pop(&PARK), None, "nothing extra came out");
    }

    #[test]
    fn pop_on_empty_ring_blocks_until_push() {
        let p = pair(4);
        let popped = Arc::new(AtomicBool::new(false));
        let reader = {
            let (p, popped) = (p.clone(), popped.clone());
            thread::spawn(move || {
                let v = p.consumer.pop_blocking(NO_SPIN, &PARK, || false).unwrap();
                popped.store(true, Ordering::SeqCst);
                v
            })
        };
        // The reader is blocked, not merely slow: wait until it announced its sleep.
        while p._mem.header.reader_sleeping.load(Ordering::SeqCst) == 0 {
            thread::yield_now();
        }
        assert!(!popped.load(Ordering::SeqCst));
        p.producer.try_push(7, &PARK).unwrap();
        assert_eq!(reader.join().unwrap(), 7);
    }

    #[test]
    fn push_on_full_ring_blocks_until_pop() {
        let p = pair(2);
        p.producer.try_push(1, &PARK).unwrap();
        p.producer.try_push(2, &PARK).unwrap();
        let writer = {
            let p = p.clone();
            thread::spawn(move || p.producer.push_blocking(3, NO_SPIN, &PARK, || false))
        };
        while p._mem.header.writers_sleeping.load(Ordering::SeqCst) == 0 {
            thread::yield_now();
        }
        assert_eq!(p.consumer.try_pop(&PARK), Some(1));
        writer.join().unwrap().unwrap();
        assert_eq!(p.consumer.try_pop(&PARK), Some(2));
        assert_eq!(p.consumer.try_pop(&PARK), Some(3));
    }

    #[test]
    fn a_sleeping_reader_is_always_woken() {
        // Ping-pong over two rings with no spinning, so both sides go to sleep on every entry:
        // a single lost wake-up would stall one side until the 5 s backstop, which the time
        // bound below turns into a failure.
        let ping = pair(2);
        let pong = pair(2);
        const ROUNDS: u32 = 20_000;
        let echo = {
            let (ping, pong) = (ping.clone(), pong.clone());
            thread::spawn(move || {
                for _ in 0..ROUNDS {
                    let v = ping
                        .consumer
                        .pop_blocking(NO_SPIN, &PARK, || false)
                        .unwrap();
                    pong.producer
                        .push_blocking(v, NO_SPIN, &PARK, || false)
                        .unwrap();
                }
            })
        };
        let start = Instant::now();
        for i in 1..=ROUNDS {
            ping.producer
                .push_blocking(i, NO_SPIN, &PARK, || false)
                .unwrap();
            assert_eq!(
                pong.consumer
                    .pop_blocking(NO_SPIN, &PARK, || false)
                    .unwrap(),
                i
            );
        }
        echo.join().unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "a wake-up was lost: {ROUNDS} round trips took {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn interrupt_wakes_a_blocked_reader_and_writer() {
        let p = pair(2);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (p, stop) = (p.clone(), stop.clone());
            thread::spawn(move || {
                p.consumer
                    .pop_blocking(NO_SPIN, &PARK, || stop.load(Ordering::SeqCst))
            })
        };
        let q = pair(2);
        q.producer.try_push(1, &PARK).unwrap();
        q.producer.try_push(2, &PARK).unwrap();
        let writer = {
            let (q, stop) = (q.clone(), stop.clone());
            thread::spawn(move || {
                q.producer
                    .push_blocking(3, NO_SPIN, &PARK, || stop.load(Ordering::SeqCst))
            })
        };
        while p._mem.header.reader_sleeping.load(Ordering::SeqCst) == 0
            || q._mem.header.writers_sleeping.load(Ordering::SeqCst) == 0
        {
            thread::yield_now();
        }
        stop.store(true, Ordering::SeqCst);
        p.consumer.interrupt(&PARK);
        q.producer.interrupt(&PARK);
        assert_eq!(reader.join().unwrap(), Err(Stopped::Stopped));
        assert_eq!(writer.join().unwrap(), Err(Stopped::Stopped));
    }

    #[test]
    fn a_read_position_published_ahead_by_the_peer_reads_as_full() {
        let p = pair(4);
        // A hostile consumer claims to have read entries that were never written.
        p._mem.header.read.store(1000, Ordering::SeqCst);
        assert_eq!(p.producer.try_push(1, &PARK), Err(TryPushError::Full));
    }
}
