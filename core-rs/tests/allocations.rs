//! The Rust hot path allocates nothing: once warm, a round trip — `begin`, the input written,
//! `call`, the output read, the ticket dropped; on the server the command popped, `exec` run,
//! `finish` — makes no heap allocation in any thread of the process. A counting global
//! allocator proves it. (This file is its own test binary, so the allocator counts only it.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::TempDir;
use shmcall_core::{Client, Mode, ServeOptions, Server, handlers};

/// Counts allocations (and reallocations) while `COUNTING` is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to `System` unchanged; counting touches only atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Relaxed: a counter read after the threads it counts are quiet (see the test).
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ECHO: u32 = 1;

/// Far more than any round trip takes, far less than the test may run.
const SLOW: std::time::Duration = std::time::Duration::from_secs(2);

/// `n` echoes of `input`, read back into `output` (both the same length).
fn round_trips(client: &Client, n: usize, input: &[u8], output: &mut [u8]) {
    let size = input.len();
    for i in 0..n {
        let mut ticket = client.begin(ECHO, size, size, Mode::Default).unwrap();
        ticket.input().write(input);
        let started = std::time::Instant::now();
        let answer = client.call_within(&mut ticket, Some(SLOW)).unwrap();
        // An answer found only when the deadline woke the caller was there all along: its
        // wake-up was lost (the test fails in seconds rather than crawl through 10 000 of them).
        assert!(
            started.elapsed() < SLOW,
            "round trip {i} took {:?}: a wake-up was lost",
            started.elapsed()
        );
        assert_eq!(
            (answer.status, answer.length as usize),
            (0, size),
            "round trip {i}"
        );
        ticket.output().read_at(0, output);
        assert_eq!(output, input);
    }
}

/// Waits (bounded) until every other thread of this process sleeps: threads a connection
/// spawned have then run their start-up (whose allocations, std's own, are not the hot path's).
fn wait_until_other_threads_sleep() {
    let me = nix::unistd::gettid().as_raw().to_string();
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let running: Vec<String> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| {
                let tid = t.ok()?.file_name().into_string().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
                // The state follows the parenthesized name, which may itself hold spaces.
                let state = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .next()?
                    .to_string();
                (tid != me && state != "S").then_some(format!("{tid}:{state}"))
            })
            .collect();
        if running.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "threads still running: {running:?}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_warm_round_trip_allocates_nothing_in_any_thread() {
    let dir = TempDir::new("alloc");
    let echo = handlers(
        |_| Ok(()),
        |mut command, _, _| {
            let mut buf = [0u8; 4096];
            let (input, mut output) = command.areas();
            let n = input.len().min(output.len()).min(buf.len());
            input.read_at(0, &mut buf[..n]);
            output.write(&buf[..n]);
            command.finish(0, n);
        },
        |_, _| {},
    );
    let options = ServeOptions {
        socket_dir: Some(dir.path().to_path_buf()),
        ..ServeOptions::default()
    };
    let mut server = Server::serve("alloc", echo, options).unwrap();
    for spin in [Duration::from_micros(50), Duration::ZERO] {
        let mut connect = dir.connect_options();
        // Spinning, every side stays busy; without a spin, every wait sleeps on a futex and
        // every answer wakes a thread: both paths are counted.
        connect.spin = spin;
        let client = Client::connect("alloc", &connect).unwrap();
        for size in [64, 4096] {
            let input = vec![7u8; size];
            let mut output = vec![0u8; size];
            round_trips(&client, 2_000, &input, &mut output);
            wait_until_other_threads_sleep();
            COUNTING.store(true, Ordering::SeqCst);
            round_trips(&client, 10_000, &input, &mut output);
            COUNTING.store(false, Ordering::SeqCst);
            let made = ALLOCATIONS.swap(0, Ordering::SeqCst);
            assert_eq!(
                made, 0,
                "{made} heap allocations in 10 000 round trips of {size} B (spin {spin:?})"
            );
        }
        client.close();
    }
    server.close();
}
