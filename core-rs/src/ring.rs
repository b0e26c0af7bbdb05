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
//! Only the cells, the published read position and the consumer's sleep flag live in shared
//! memory. Both counters that decide *where* the owner reads or writes are private to the owner,
//! so a peer scribbling over the segment can make this side see garbage values (which callers
//! validate) but can never steer an index outside the ring: every index is `position & mask`
//! with the mask taken from the locally validated geometry.
//!
//! A ring has a cell for every slot and a slot is in at most one ring at a time, so a producer
//! that follows the protocol never finds it full: producers never wait, and a full ring means
//! the peer lied about its read position ([`Full`]).
//!
//! # Waking the consumer
//!
//! The consumer's **sleep flag** says how a producer must wake it after a push:
//!
//! - [`AWAKE`]: the consumer looks at the ring (or will, before it sleeps): nothing to do — a
//!   busy pair makes no system call;
//! - [`PARKED`]: a thread of the consumer's process sleeps on the flag itself, a futex word in
//!   the segment: the producer wakes it with one futex wake ([`Waker::unpark`]);
//! - [`WATCHED`]: no thread of the consumer's process looks at this ring; its process's one
//!   waiter watches the connection's control socket, so the producer sends a WAKE frame there
//!   ([`Waker::signal`]).
//!
//! The producer swaps the flag back to [`AWAKE`] as it wakes, so a burst of pushes wakes once.
//! Announcing and checking are the `IORING_SQ_NEED_WAKEUP` handshake of io_uring: the consumer
//! stores its flag, issues a full fence and looks at the cell once more; the producer stores the
//! cell, issues a full fence and reads the flag. The two fences make it impossible for both the
//! consumer to miss the entry and the producer to miss the flag (a store-buffer litmus test
//! that sequentially consistent fences forbid).
//!
//! # What a peer that rewrites the flag can do
//!
//! The flag is written by the peer too. A producer that does not wake a sleeping consumer only
//! delays the answers it owes on its own connection — exactly as a peer that never answers
//! does. Nothing local depends on the flag: a [`PARKED`] thread also sleeps on a word of its own
//! process ([`Park`]), which a local close changes, so no peer can keep a close from ending a
//! wait; and a [`WATCHED`] ring is watched through a descriptor that only the connection's own
//! frames reach. So there is no periodic wake-up anywhere: a peer that misbehaves stalls its
//! own connection and nothing else (docs/architecture.md, "Sleep flags").

use std::fmt;

// Through `crate::sync`, so that the loom model (`tests/loom_ring.rs`), which includes this
// file, runs this very code on loom's atomics.
use crate::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

/// The consumer looks at the ring, or will before it sleeps: a producer wakes no one.
pub const AWAKE: u32 = 0;
/// A consumer thread sleeps on the flag: a producer wakes it with a futex wake.
pub const PARKED: u32 = 1;
/// The consumer's process watches the control socket: a producer sends it a WAKE frame.
pub const WATCHED: u32 = 2;

/// Shared-memory header of one ring. `#[repr(C)]`, no pointers, no `Drop`: it is laid out by one
/// process and used by two. The consumer's fields sit on the first cache line; the second is
/// reserved (zero).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct RingHeader {
    /// The consumer's read position, published after each pop (consumer writes, producers read).
    read: AtomicU32,
    /// The consumer's sleep flag: [`AWAKE`], [`PARKED`] or [`WATCHED`]; the futex word a parked
    /// consumer sleeps on.
    reader: AtomicU32,
    _pad0: [u8; 56],
    _reserved: [u8; 64],
}

impl RingHeader {
    /// Size of the header in bytes; the cells follow it in a segment.
    pub const SIZE: usize = std::mem::size_of::<RingHeader>();
    /// Offset of the read position in the header.
    pub const READ: usize = 0;
    /// Offset of the consumer's sleep flag in the header.
    pub const FLAG: usize = 4;

    /// A header for a fresh, empty ring (not `const`: loom's atomics are not).
    pub fn new() -> RingHeader {
        RingHeader {
            read: AtomicU32::new(0),
            reader: AtomicU32::new(AWAKE),
            _pad0: [0; 56],
            _reserved: [0; 64],
        }
    }
}

impl Default for RingHeader {
    fn default() -> Self {
        RingHeader::new()
    }
}

/// How a producer wakes the consumer its push found asleep.
pub trait Waker {
    /// A consumer thread sleeps on `flag` ([`PARKED`]): wake it.
    fn unpark(&self, flag: &AtomicU32);
    /// The consumer's process watches the control socket ([`WATCHED`]): signal it there.
    fn signal(&self);
}

/// How a consumer thread sleeps on its flag ([`PARKED`]): futexes in production, a model in
/// tests.
pub trait Park {
    /// A value of the sleeper's own that [`Park::park`] compares too, read before the caller's
    /// last look at its stop condition: a local interrupt changes it, so it ends a sleep that
    /// began after the look.
    fn epoch(&self) -> u32;
    /// Sleeps while `*flag == PARKED` and the epoch is still `epoch`; may return early for any
    /// reason.
    fn park(&self, flag: &AtomicU32, epoch: u32);
    /// Whether the spin before the sleep gives its CPU away now and then ([`Polite`]).
    fn polite(&self) -> bool {
        false
    }
}

/// Why a blocking ring operation returned without a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The `stop` predicate became true.
    Stopped,
}

/// A push found no free cell: with a cell per slot, only a peer that published a read position
/// it never reached can cause that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// How long a waiter spins before it sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spin(pub Duration);

impl Spin {
    /// Spin `budget`, checking `ready` on every iteration; `Some` as soon as it yields a value.
    #[inline]
    pub fn run<T>(self, ready: impl FnMut() -> Option<T>) -> Option<T> {
        self.run_as(false, ready)
    }

    /// As [`Spin::run`], giving the CPU away now and then (see [`Polite`]) when `polite`.
    #[inline]
    pub fn run_as<T>(self, polite: bool, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
        if let Some(v) = ready() {
            return Some(v);
        }
        if self.0.is_zero() {
            return None;
        }
        let start = Instant::now();
        let mut manners = Polite::new(start);
        loop {
            // Reading the clock costs tens of nanoseconds; check it once per 64 polls.
            for _ in 0..64 {
                std::hint::spin_loop();
                if let Some(v) = ready() {
                    return Some(v);
                }
            }
            let now = Instant::now();
            if now.saturating_duration_since(start) >= self.0 {
                return None;
            }
            if polite {
                manners.tick(now);
            }
        }
    }
}

/// How long a spin runs before it first gives its CPU away: past the answers of a busy pair,
/// which come within a few microseconds.
const YIELD_AFTER: Duration = Duration::from_micros(10);
/// How often a longer spin gives its CPU away.
const YIELD_EVERY: Duration = Duration::from_micros(5);

/// Makes a spin give its CPU away now and then (`sched_yield`). The scheduler tends to wake a
/// thread on its waker's CPU, so the peer a spinner waits for — the other process's thread
/// that is to answer, this process's reactor — is often runnable on the spinner's own CPU
/// while another CPU idles: a spin that never yields then delays the very work it waits for
/// by a scheduling slice (on 2 cores, traced with `perf sched`: two processes' JavaScript
/// threads took turns on one CPU, each waiting up to 100 µs for the other's spin). A yield
/// with no one else runnable returns at once.
#[derive(Debug)]
pub struct Polite {
    next: Instant,
}

impl Polite {
    /// A spin that began at `start`.
    #[inline]
    pub fn new(start: Instant) -> Polite {
        Polite {
            next: start + YIELD_AFTER,
        }
    }

    /// The spin goes on at `now`: yields the CPU when it is time.
    #[inline]
    pub fn tick(&mut self, now: Instant) {
        if now >= self.next {
            std::thread::yield_now();
            self.next = Instant::now() + YIELD_EVERY;
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

    /// The consumer's sleep flag (for tests and the hostile peers that rewrite it).
    pub fn flag(&self) -> &AtomicU32 {
        &self.header().reader
    }

    /// Producer: pushes `value` (non-zero) and wakes the consumer as its flag asks.
    #[inline]
    pub fn try_push(&self, value: u32, waker: &impl Waker) -> Result<(), Full> {
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
                // Full — or `w` is stale: another producer took positions since we read it, and
                // the consumer already read past them. The Acquire load of `read` above makes
                // every position whose entry the consumer read visible to this load, so a
                // second look settles it: an unchanged position means no cell (a full ring, or
                // a peer that published a read position it never reached).
                let now = self.position.load(Ordering::Relaxed);
                if now == w {
                    return Err(Full);
                }
                w = now;
                continue;
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
        // SYNC POINT C: the full fence between publishing the cell and reading the sleep flag,
        // paired with the consumer's fence between storing its flag and its last look at the
        // cell (`pop_blocking`, `watch`): of the two, at least one sees the other's store.
        fence(Ordering::SeqCst);
        self.wake(waker);
        Ok(())
    }

    /// Wakes the consumer if its flag asks for it, once per announcement: the swap lets one
    /// producer of a burst (or of several producer threads) do it. [`Ring::try_push`] calls it;
    /// a producer that pushes elsewhere (JavaScript, through its view of the segment) calls it
    /// after its push and a full fence of its own, which SYNC POINT C needs.
    #[inline]
    pub fn wake(&self, waker: &impl Waker) {
        let flag = &self.header().reader;
        // Relaxed: ordered after the cell store by the fence before the call; the swap is one
        // read-modify-write, so exactly one producer takes each announcement.
        if flag.load(Ordering::Relaxed) != AWAKE {
            match flag.swap(AWAKE, Ordering::Relaxed) {
                PARKED => waker.unpark(flag),
                WATCHED => waker.signal(),
                // AWAKE, or a value the peer scribbled: the peer's own loss (module doc).
                _ => {}
            }
        }
    }

    /// Consumer: takes the oldest entry, or `None` when the next cell is still empty.
    ///
    /// The value comes from the peer: callers validate it before use.
    #[inline]
    pub fn try_pop(&self) -> Option<u32> {
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
        Some(value)
    }

    /// Consumer side, when the consumer pops elsewhere (JavaScript, through its view of the
    /// segment) and publishes its read position as this ring does: takes that position as this
    /// handle's own, so that [`Ring::is_empty`], [`Ring::watch`] and
    /// [`Ring::wait_entry`] look at the cell the consumer reads next. The position is in shared
    /// memory, so a peer can rewrite it: a wrong one makes this side look at another cell
    /// (masked, so inside the ring), which delays or hastens only this connection's wake-ups.
    #[inline]
    pub fn follow(&self) {
        // Acquire: pairs with the consumer's Release store of its read position, so that the
        // cells it cleared before are seen cleared.
        let r = self.header().read.load(Ordering::Acquire);
        self.position.store(r, Ordering::Relaxed);
    }

    /// This handle's private position: the next to reserve (producer) or to read (consumer).
    #[inline]
    pub fn position(&self) -> u32 {
        self.position.load(Ordering::Relaxed)
    }

    /// Consumer: whether the next cell is empty (a peek, without taking it).
    #[inline]
    pub fn is_empty(&self) -> bool {
        // Acquire: SYNC POINT A, as in `try_pop`.
        self.cell(self.position.load(Ordering::Relaxed))
            .load(Ordering::Acquire)
            == 0
    }

    /// Consumer: takes the oldest entry, spinning for `spin` and then sleeping ([`PARKED`])
    /// while the ring is empty, until an entry arrives or `stop()` is true. `park` ends a sleep
    /// when its epoch changes: whoever makes `stop` true changes it after.
    pub fn pop_blocking(
        &self,
        spin: Spin,
        park: &impl Park,
        stop: impl Fn() -> bool,
    ) -> Result<u32, Stopped> {
        loop {
            self.wait_entry(spin, park, &stop)?;
            // The entry stays in its cell until this consumer pops it, so this finds it.
            if let Some(v) = self.try_pop() {
                return Ok(v);
            }
        }
    }

    /// Consumer: waits as [`Ring::pop_blocking`] does, but leaves the entry in its cell (for
    /// `pop_blocking`, or for a consumer that pops elsewhere: [`Ring::follow`]): returns once the
    /// next cell holds an entry, spinning for `spin` and then sleeping ([`PARKED`]), or once
    /// `stop()` is true.
    pub fn wait_entry(
        &self,
        spin: Spin,
        park: &impl Park,
        stop: impl Fn() -> bool,
    ) -> Result<(), Stopped> {
        let flag = &self.header().reader;
        let ready = || (!self.is_empty()).then_some(());
        loop {
            if spin.run_as(park.polite(), ready).is_some() {
                return Ok(());
            }
            // As in `pop_blocking`: the epoch is read before the last look at `stop`.
            let epoch = park.epoch();
            if stop() {
                flag.store(AWAKE, Ordering::Relaxed);
                return Err(Stopped::Stopped);
            }
            flag.store(PARKED, Ordering::Relaxed);
            // SYNC POINT C (pairs with the fence in `try_push`, or the producer's own): see there.
            fence(Ordering::SeqCst);
            if !self.is_empty() {
                flag.store(AWAKE, Ordering::Relaxed);
                return Ok(());
            }
            park.park(flag, epoch);
        }
    }

    /// Consumer: hands the ring to its process's waiter before no thread looks at it any more:
    /// announces [`WATCHED`], so that the next push sends a WAKE frame. Returns false — and
    /// takes the announcement back — when an entry is already there (the caller pops it first).
    pub fn watch(&self) -> bool {
        let flag = &self.header().reader;
        flag.store(WATCHED, Ordering::Relaxed);
        // SYNC POINT C (pairs with the fence in `try_push`): either this look sees the entry, or
        // its producer sees WATCHED and signals.
        fence(Ordering::SeqCst);
        if self.is_empty() {
            return true;
        }
        flag.store(AWAKE, Ordering::Relaxed);
        false
    }

    /// Consumer: a thread looks at the ring again: producers need not wake anyone.
    #[inline]
    pub fn unwatch(&self) {
        let flag = &self.header().reader;
        if flag.load(Ordering::Relaxed) != AWAKE {
            flag.store(AWAKE, Ordering::Relaxed);
        }
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

    /// The consumer's sleep flag.
    pub fn flag(&self) -> &AtomicU32 {
        &self.header.reader
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::futex::{self, Scope};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::thread;

    /// Futexes within this process: the flag and an epoch of the test's own.
    #[derive(Default)]
    struct Local {
        epoch: AtomicU32,
        signals: AtomicU32,
    }

    impl Park for Local {
        fn epoch(&self) -> u32 {
            self.epoch.load(Ordering::Acquire)
        }
        fn park(&self, flag: &AtomicU32, epoch: u32) {
            futex::wait_either(
                flag,
                PARKED,
                &self.epoch,
                epoch,
                // Short, so that a test's deadline (its `stop`) is looked at soon after a
                // wake-up that never comes.
                Some(Duration::from_millis(50)),
            );
        }
    }

    impl Waker for Local {
        fn unpark(&self, flag: &AtomicU32) {
            futex::wake(flag, u32::MAX, Scope::Shared);
        }
        fn signal(&self) {
            self.signals.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Local {
        fn interrupt(&self) {
            self.epoch.fetch_add(1, Ordering::Release);
            futex::wake(&self.epoch, u32::MAX, Scope::Private);
        }
    }

    const NO_SPIN: Spin = Spin(Duration::ZERO);

    struct Pair {
        mem: HeapRing,
        producer: Ring,
        consumer: Ring,
        local: Local,
    }

    /// A wait's `stop` that ends it 10 s from now: a test fails rather than hangs when a
    /// wake-up is lost.
    fn bounded() -> impl Fn() -> bool + Send + 'static {
        let deadline = Instant::now() + Duration::from_secs(10);
        move || Instant::now() > deadline
    }

    fn pair(capacity: u32) -> Arc<Pair> {
        let mem = HeapRing::new(capacity);
        let producer = mem.handle();
        let consumer = mem.handle();
        Arc::new(Pair {
            mem,
            producer,
            consumer,
            local: Local::default(),
        })
    }

    #[test]
    fn pop_on_empty_ring_returns_none() {
        let p = pair(4);
        assert_eq!(p.consumer.try_pop(), None);
        assert!(p.consumer.is_empty());
    }

    #[test]
    fn entries_come_out_in_push_order_across_wraparounds() {
        let p = pair(4);
        for round in 0..10u32 {
            for i in 1..=4 {
                p.producer.try_push(round * 10 + i, &p.local).unwrap();
            }
            assert_eq!(p.producer.try_push(99, &p.local), Err(Full));
            for i in 1..=4 {
                assert_eq!(p.consumer.try_pop(), Some(round * 10 + i));
            }
            assert_eq!(p.consumer.try_pop(), None);
        }
    }

    #[test]
    #[should_panic(expected = "non-zero")]
    fn pushing_zero_is_refused() {
        let p = pair(4);
        let _ = p.producer.try_push(0, &p.local);
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
                        while p.producer.try_push(v, &p.local).is_err() {
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        let mut next = [1u32; WRITERS as usize];
        let stop = bounded();
        for _ in 0..WRITERS * PER_WRITER {
            let v = p
                .consumer
                .pop_blocking(Spin(Duration::from_micros(5)), &p.local, &stop)
                .expect("an entry within 10 s: a wake-up was lost");
            let (w, seq) = ((v >> 24) as usize, v & 0xff_ffff);
            assert_eq!(seq, next[w], "writer {w} out of order");
            next[w] += 1;
        }
        for t in writers {
            t.join().unwrap();
        }
        assert!(next.iter().all(|&n| n == PER_WRITER + 1));
        assert_eq!(p.consumer.try_pop(), None, "nothing extra came out");
    }

    #[test]
    fn pop_on_empty_ring_blocks_until_push() {
        let p = pair(4);
        let popped = Arc::new(AtomicBool::new(false));
        let reader = {
            let (p, popped) = (p.clone(), popped.clone());
            thread::spawn(move || {
                let v = p
                    .consumer
                    .pop_blocking(NO_SPIN, &p.local, bounded())
                    .expect("the entry within 10 s: its wake-up was lost");
                popped.store(true, Ordering::SeqCst);
                v
            })
        };
        // The reader is blocked, not merely slow: wait until it announced its sleep.
        let late = bounded();
        while p.mem.flag().load(Ordering::SeqCst) != PARKED {
            assert!(!late(), "the reader never parked");
            thread::yield_now();
        }
        assert!(!popped.load(Ordering::SeqCst));
        p.producer.try_push(7, &p.local).unwrap();
        assert_eq!(reader.join().unwrap(), 7);
        assert_eq!(p.mem.flag().load(Ordering::SeqCst), AWAKE);
    }

    #[test]
    fn a_sleeping_reader_is_always_woken() {
        // Ping-pong over two rings with no spinning, so both sides go to sleep on every entry:
        // a lost wake-up stalls one side, and the deadline (every wait's `stop`) turns that
        // into a failure within seconds.
        let ping = pair(2);
        let pong = pair(2);
        const ROUNDS: u32 = 20_000;
        let start = Instant::now();
        let deadline = start + Duration::from_secs(4);
        let late = move || Instant::now() > deadline;
        let lost = move |side: &str, i: u32| {
            format!(
                "a wake-up was lost: the {side} still waited at round {i} of {ROUNDS} after {:?}",
                start.elapsed()
            )
        };
        let echo = {
            let (ping, pong) = (ping.clone(), pong.clone());
            thread::spawn(move || {
                for i in 1..=ROUNDS {
                    let Ok(v) = ping.consumer.pop_blocking(NO_SPIN, &ping.local, late) else {
                        return Err(lost("echo", i));
                    };
                    pong.producer.try_push(v, &pong.local).unwrap();
                }
                Ok(())
            })
        };
        for i in 1..=ROUNDS {
            ping.producer.try_push(i, &ping.local).unwrap();
            let got = pong.consumer.pop_blocking(NO_SPIN, &pong.local, late);
            assert_eq!(got, Ok(i), "{}", lost("caller", i));
        }
        echo.join().unwrap().unwrap();
    }

    #[test]
    fn an_interrupt_ends_a_sleep_whatever_the_peer_does_to_the_flag() {
        let p = pair(2);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (p, stop) = (p.clone(), stop.clone());
            thread::spawn(move || {
                p.consumer
                    .pop_blocking(NO_SPIN, &p.local, || stop.load(Ordering::SeqCst))
            })
        };
        while p.mem.flag().load(Ordering::SeqCst) != PARKED {
            thread::yield_now();
        }
        // A hostile producer keeps the flag as it is and never wakes; the local interrupt alone
        // must end the sleep.
        let start = Instant::now();
        stop.store(true, Ordering::SeqCst);
        p.local.interrupt();
        assert_eq!(reader.join().unwrap(), Err(Stopped::Stopped));
        assert!(start.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn a_push_to_a_watched_ring_signals_once_per_watch() {
        let p = pair(8);
        assert!(p.consumer.watch(), "an empty ring is watched");
        p.producer.try_push(1, &p.local).unwrap();
        p.producer.try_push(2, &p.local).unwrap();
        assert_eq!(
            p.local.signals.load(Ordering::SeqCst),
            1,
            "one signal per burst"
        );
        assert!(!p.consumer.watch(), "a ring with entries is not watched");
        assert_eq!(p.mem.flag().load(Ordering::SeqCst), AWAKE);
        assert_eq!(p.consumer.try_pop(), Some(1));
        assert_eq!(p.consumer.try_pop(), Some(2));
        assert!(p.consumer.watch());
        p.consumer.unwatch();
        p.producer.try_push(3, &p.local).unwrap();
        assert_eq!(
            p.local.signals.load(Ordering::SeqCst),
            1,
            "an unwatched ring is looked at"
        );
    }

    #[test]
    fn a_flag_the_peer_scribbled_wakes_no_one_and_breaks_nothing_local() {
        let p = pair(4);
        p.mem.flag().store(0xdead_beef, Ordering::SeqCst);
        p.producer.try_push(1, &p.local).unwrap();
        assert_eq!(p.local.signals.load(Ordering::SeqCst), 0);
        assert_eq!(p.consumer.try_pop(), Some(1));
    }

    #[test]
    fn a_read_position_published_ahead_by_the_peer_reads_as_full() {
        let p = pair(4);
        // A hostile consumer claims to have read entries that were never written.
        p.mem.header.read.store(1000, Ordering::SeqCst);
        assert_eq!(p.producer.try_push(1, &p.local), Err(Full));
    }
}
