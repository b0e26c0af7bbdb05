//! Hostile peers: a peer that speaks the real protocol and then writes anything anywhere in the
//! shared segment (`common/scribble.rs`) while commands run. The attacked side must not crash,
//! or answer another connection wrongly; the offending connection ends with a reason; other
//! connections carry on untouched.
//!
//! A peer that rewrites the sleep flags of the rings it produces on may leave the other side
//! asleep — no periodic wake-up rescues it (docs/architecture.md, "Sleep flags") — exactly as a
//! peer that never answers does: that stalls its own connection and nothing else, and closing
//! the connection ends every wait on it at once.
//!
//! `SHMCALL_HOSTILE_TRIALS` sets the hostile peers per test (default 20).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::load::{self, Rng, Tally};
use common::{Counting, Peer, Tallied, TempDir, WAIT, seed, within};
use shmcall_core::{Client, Server, Status};

/// Hostile peers per test: `SHMCALL_HOSTILE_TRIALS`, or 20.
fn trials() -> usize {
    common::trials("SHMCALL_HOSTILE_TRIALS", 20)
}

/// A well-behaved load on `client` in a thread of its own, until `stop`.
struct Bystander {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

impl Bystander {
    fn start(client: &Arc<Client>, seed: u64) -> Bystander {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (client, tally, stop) = (client.clone(), tally.clone(), stop.clone());
            std::thread::spawn(move || load::run(&client, seed, &stop, &tally, WAIT))
        };
        Bystander {
            tally,
            stop,
            thread,
        }
    }

    /// Stops the load and checks that every one of its commands was answered correctly.
    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        within("the bystander's load", move || thread.join())
            .expect("the bystander's load panicked")
            .expect("the bystander's load");
        let failed = self.tally.failed.lock().unwrap();
        let wrong = self.tally.wrong.lock().unwrap();
        assert!(
            failed.is_empty() && wrong.is_empty(),
            "a bystander was touched: failed {failed:?}, wrong {wrong:?}"
        );
        assert!(
            self.tally.ok.load(Ordering::Relaxed) > 0,
            "the bystander ran"
        );
    }
}

#[test]
fn clients_scribbling_on_their_segments_lose_only_their_own_connections() {
    let mut rng = Rng::new(seed("hostile clients"));
    let dir = TempDir::new("hostile-cli");
    let tallied = Arc::new(Tallied::default());
    let mut server = Server::serve(
        "hostile-cli",
        Counting(tallied.clone()),
        dir.serve_options(),
    )
    .unwrap();
    let good = Arc::new(Client::connect("hostile-cli", &dir.connect_options()).unwrap());
    let bystander = Bystander::start(&good, rng.next());
    let mut crashed = 0;
    // An attacker that first scribbles on the server's sleep flag is never looked at again (its
    // connection stalls until it dies): such trials notice no violation. The trials go on, up
    // to five times as many, until one did, so that the server's checks are sure to be met.
    let mut trial = 0;
    while trial < trials()
        || (tallied.counts.lock().unwrap().refused.is_empty() && trial < 5 * trials())
    {
        trial += 1;
        let seed = rng.next().to_string();
        let mut peer = Peer::start(
            "hostile",
            dir.path(),
            "hostile-cli",
            &["--seed", &seed, "--millis", "100"],
        );
        // The attacker attacks its own client library too, which may give up on it: only the
        // server's side is judged here (the other test judges a client under attack).
        if peer.expect_or_exit("done").is_none() {
            crashed += 1;
        }
        peer.kill();
    }
    bystander.finish();
    // Every hostile connection ended, its close ran once, and violations were named.
    let counts = tallied.until(
        |c| c.closed.len() + 1 >= c.opened.len(),
        |_| "hostile connections still open".into(),
    );
    assert!(counts.closed.values().all(|n| *n == 1), "a close ran twice");
    let mut reasons = BTreeMap::new();
    for r in &counts.refused {
        // "connection N dropped: <why>": group by the why, without the numbers.
        let why = r.split_once(": ").map_or(r.as_str(), |(_, why)| why);
        let key: String = why.chars().filter(|c| !c.is_ascii_digit()).collect();
        *reasons.entry(key).or_insert(0) += 1;
    }
    println!("attacker's own library gave up {crashed} times; server's reasons: {reasons:#?}");
    assert!(
        !counts.refused.is_empty(),
        "{trial} hostile clients and not one violation noticed"
    );
    drop(counts);
    // The server serves on, on every path.
    for size in [16, 200 << 10, 3 << 20] {
        let input = vec![size as u8; size];
        let out = good
            .execute(
                &shmcall_core::Call {
                    code: load::ECHO,
                    input: &input,
                    output_len: size,
                    ..shmcall_core::Call::default()
                },
                &mut shmcall_core::Copying,
            )
            .unwrap();
        assert_eq!(out.output, input);
    }
    good.close();
    server.close();
}

#[test]
fn a_server_scribbling_on_the_segment_cannot_crash_or_hang_its_clients() {
    let mut rng = Rng::new(seed("hostile server"));
    let dir = TempDir::new("hostile-srv");
    let _hostile = Peer::server_mode(
        "hostile-serve",
        &dir,
        "hostile",
        &["--seed", &rng.next().to_string()],
    );
    let _honest = Peer::server(&dir, "honest", &["--workers", "2"]);
    let good = Arc::new(Client::connect("honest", &dir.connect_options()).unwrap());
    let bystander = Bystander::start(&good, rng.next());
    let mut endings = BTreeMap::new();
    for trial in 0..trials() {
        let client = Arc::new(Client::connect("hostile", &dir.connect_options()).unwrap());
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (client, tally, stop, seed) =
                (client.clone(), tally.clone(), stop.clone(), rng.next());
            std::thread::spawn(move || load::run(&client, seed, &stop, &tally, WAIT))
        };
        // The load stops by itself at the first failure; else after a while under attack.
        let deadline = Instant::now() + Duration::from_millis(100);
        while Instant::now() < deadline && tally.failed.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        // A server that scribbled on the sleep flags may never wake this client: its commands
        // wait as they would for a server that never answers. Closing must end every wait.
        let closing = client.clone();
        within("closing a client of the hostile server", move || {
            closing.close()
        });
        within("a load under attack", move || load.join())
            .expect("a load under attack panicked")
            .unwrap_or_else(|e| panic!("trial {trial}: {e}"));
        // Wrong answers are the hostile server's right (it owns the output); a library
        // failure must be a library status.
        let failed = tally.failed.lock().unwrap().clone();
        for s in &failed {
            assert!(s.code() < 0, "trial {trial}: {s:?} is not a library status");
        }
        let ending = failed.first().map_or("none", |s| s.name());
        *endings.entry(ending).or_insert(0) += 1;
    }
    println!("how loads under attack ended: {endings:?}");
    assert!(
        endings.contains_key(Status::ProtocolViolation.name()),
        "no violation noticed in {} trials: {endings:?}",
        trials()
    );
    bystander.finish();
    good.close();
}

/// The sleep flag of the ring at `ring` (an offset in `segment`).
fn flag(segment: &shmcall_core::segment::Segment, ring: u32) -> &std::sync::atomic::AtomicU32 {
    word(
        segment,
        ring as usize + shmcall_core::ring::RingHeader::FLAG,
    )
}

/// The 4-byte word at offset `at` of `segment`.
fn word(segment: &shmcall_core::segment::Segment, at: usize) -> &std::sync::atomic::AtomicU32 {
    assert!(at.is_multiple_of(4) && at + 4 <= segment.mapping().1);
    // SAFETY: `at` is 4-aligned and inside the mapping, which `segment` keeps alive; both
    // processes only use atomics on the segment's words.
    unsafe { std::sync::atomic::AtomicU32::from_ptr(segment.mapping().0.add(at).cast()) }
}

/// The `i`th cell of the ring at `ring` (an offset in `segment`).
fn cell(
    segment: &shmcall_core::segment::Segment,
    ring: u32,
    i: usize,
) -> &std::sync::atomic::AtomicU32 {
    word(
        segment,
        ring as usize + shmcall_core::ring::RingHeader::SIZE + 4 * i,
    )
}

/// Waits (bounded) until `flag` reads `value`.
fn until_flag(flag: &std::sync::atomic::AtomicU32, value: u32, what: &str) {
    let deadline = Instant::now() + WAIT;
    while flag.load(Ordering::SeqCst) != value {
        assert!(
            Instant::now() < deadline,
            "{what}: the flag never read {value}"
        );
        std::thread::yield_now();
    }
}

fn echo_call() -> shmcall_core::Call<'static> {
    shmcall_core::Call {
        code: load::ECHO,
        input: b"ping",
        output_len: 4,
        ..shmcall_core::Call::default()
    }
}

/// Waits (bounded) until thread `tid` of this process sleeps in `futex_waitv` (system call
/// 449 on x86-64), as `/proc` shows it: a flag it announced is not yet a sleep.
fn until_asleep(tid: i32) {
    until_in_syscall(tid, "449");
}

/// The id of this process's thread named `name`.
fn thread_named(name: &str) -> i32 {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| t.ok())
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|n| n.trim() == name))
        .and_then(|t| t.file_name().to_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no thread named {name}"))
}

/// Waits (bounded) until thread `tid` of this process sleeps in system call `nr`.
fn until_in_syscall(tid: i32, nr: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let syscall =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap_or_default();
        if syscall.split_whitespace().next() == Some(nr) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "thread {tid} never slept: {syscall}"
        );
        std::thread::yield_now();
    }
}

/// How long a stalled command is watched not to finish.
const STALL: Duration = Duration::from_millis(300);

#[test]
fn a_server_that_leaves_its_client_asleep_stalls_only_that_call_and_a_close_ends_it() {
    use shmcall_core::ring::{AWAKE, PARKED};
    use shmcall_core::{Copying, ServeOptions, handlers};
    let dir = TempDir::new("sleeper");
    let (answered_tx, answered) = std::sync::mpsc::channel();
    let answered_tx = std::sync::Mutex::new(answered_tx);
    // The caller's thread id, so that the handler can tell when it sleeps in the kernel.
    let caller_tid = Arc::new(std::sync::atomic::AtomicI32::new(0));
    let tid = caller_tid.clone();
    // The handler of "sleeper" rewrites its client's sleep flag while the client sleeps on it,
    // then answers: its push finds no one to wake, as a hostile server's would.
    let sleeper = handlers(
        |_| Ok(()),
        move |mut command: shmcall_core::Command, _, _: &()| {
            let segment = command.segment().unwrap();
            let sc = flag(&segment, segment.layout().sc_ring);
            until_flag(sc, PARKED, "the client parks");
            until_asleep(tid.load(Ordering::SeqCst));
            sc.store(AWAKE, Ordering::SeqCst);
            let (input, mut output) = command.areas();
            let mut buf = [0u8; 4];
            input.read_at(0, &mut buf);
            output.write(&buf);
            command.finish(0, 4);
            answered_tx.lock().unwrap().send(()).unwrap();
        },
        |_, _| {},
    );
    let options = ServeOptions {
        socket_dir: Some(dir.path().to_path_buf()),
        ..ServeOptions::default()
    };
    let mut server = Server::serve("sleeper", sleeper, options.clone()).unwrap();
    let mut honest = Server::serve("awake", load_handler(), options).unwrap();
    let mut connect = dir.connect_options();
    connect.spin = Duration::ZERO;
    let client = Arc::new(Client::connect("sleeper", &connect).unwrap());
    let (result_tx, result) = std::sync::mpsc::channel();
    let caller = {
        let client = client.clone();
        std::thread::spawn(move || {
            caller_tid.store(nix::unistd::gettid().as_raw(), Ordering::SeqCst);
            let _ = result_tx.send(client.execute(&echo_call(), &mut Copying));
        })
    };
    answered.recv_timeout(WAIT).expect("the server answered");
    // The answer sits in the ring, and nothing wakes the caller: no periodic wake-up exists.
    assert!(
        result.recv_timeout(STALL).is_err(),
        "the call ended although nothing woke it"
    );
    // Another connection of this process is served meanwhile.
    let other = Client::connect("awake", &connect).unwrap();
    assert_eq!(
        other.execute(&echo_call(), &mut Copying).unwrap().output,
        b"ping"
    );
    // A local close ends the wait at once, whatever the flag says.
    let start = Instant::now();
    client.close();
    let r = result.recv_timeout(WAIT).expect("the close ended the call");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(r.unwrap_err().status(), Status::Closed);
    caller.join().unwrap();
    other.close();
    server.close();
    honest.close();
}

#[test]
fn a_client_that_keeps_the_servers_flag_awake_stalls_only_its_own_commands() {
    use shmcall_core::ring::{AWAKE, WATCHED};
    use shmcall_core::{Copying, ServeOptions};
    let dir = TempDir::new("awake-flag");
    let tallied = Arc::new(Tallied::default());
    let options = ServeOptions {
        socket_dir: Some(dir.path().to_path_buf()),
        spin: Duration::ZERO,
        ..ServeOptions::default()
    };
    let mut server = Server::serve("awake-flag", Counting(tallied.clone()), options).unwrap();
    let hostile = Client::connect("awake-flag", &dir.connect_options()).unwrap();
    let segment = hostile.segment();
    let cs = flag(&segment, segment.layout().cs_ring);
    // The server's owner went idle and watches the ring through the socket; the hostile
    // client tells it "awake", so that its own pushes wake no one. The flag is WATCHED from
    // the welcome on, before the owner polled the new connection once: wait until the owner
    // (the runner) sleeps in `futex` (system call 202), when nothing polls the ring any more.
    until_flag(cs, WATCHED, "the server arms the ring");
    until_in_syscall(thread_named("shmcall-run"), "202");
    until_flag(cs, WATCHED, "the server arms the ring");
    cs.store(AWAKE, Ordering::SeqCst);
    let (done_tx, done) = std::sync::mpsc::channel();
    hostile
        .execute_async(&echo_call(), Copying, move |r| {
            let _ = done_tx.send(r.map(|o| o.output));
        })
        .unwrap();
    assert!(
        done.recv_timeout(STALL).is_err(),
        "the server took a command it was never woken for"
    );
    // Every other connection is served as before.
    let good = Client::connect("awake-flag", &dir.connect_options()).unwrap();
    for _ in 0..100 {
        assert_eq!(
            good.execute(&echo_call(), &mut Copying).unwrap().output,
            b"ping"
        );
    }
    // Its own close fails what it left waiting, and the server closes it once.
    hostile.close();
    let r = done
        .recv_timeout(WAIT)
        .expect("the close completed the command");
    assert_eq!(r.unwrap_err().status(), Status::Closed);
    good.close();
    let counts = tallied.until(
        |c| c.closed.len() >= 2,
        |c| format!("connections still open: {:?}", c.closed),
    );
    assert!(counts.closed.values().all(|n| *n == 1), "a close ran twice");
    drop(counts);
    server.close();
}

/// An echo/checksum server handler (the load's).
fn load_handler() -> impl shmcall_core::Handler<Context = ()> {
    shmcall_core::handlers(|_| Ok(()), |c, _, _: &()| load::answer(c), |_, _| {})
}

/// A server of `name` and a hostile client of it that made one honest command and waited for
/// the server to arm its ring: both sides are at the CS ring's position 1, so an entry the client
/// writes into cell 2 is popped right after its next command.
struct Armed {
    tallied: Arc<Tallied>,
    server: Server,
    hostile: Client,
    segment: Arc<shmcall_core::segment::Segment>,
    // Last: the socket directory outlives the server and client above.
    dir: TempDir,
}

fn armed(name: &str) -> Armed {
    use shmcall_core::Copying;
    let dir = TempDir::new(name);
    let tallied = Arc::new(Tallied::default());
    let server = Server::serve(name, Counting(tallied.clone()), dir.serve_options()).unwrap();
    let hostile = Client::connect(name, &dir.connect_options()).unwrap();
    let segment = hostile.segment();
    assert_eq!(
        hostile.execute(&echo_call(), &mut Copying).unwrap().output,
        b"ping"
    );
    until_flag(
        flag(&segment, segment.layout().cs_ring),
        shmcall_core::ring::WATCHED,
        "the server arms",
    );
    Armed {
        tallied,
        server,
        hostile,
        segment,
        dir,
    }
}

impl Armed {
    /// Writes `entry` into the CS ring's cell 2 and sends one command (pushed into cell 1):
    /// the server pops the entry right after it, drops the connection and names the violation
    /// with `why`; the client's next command fails `PROTOCOL_VIOLATION`. Nothing else is
    /// pushed until the server named it: a second push would land in cell 2 itself, over the
    /// entry, whenever the server answered the first command before it looked at cell 2.
    fn smuggle(&self, entry: u32, why: &str) {
        use shmcall_core::Copying;
        cell(&self.segment, self.segment.layout().cs_ring, 2).store(entry, Ordering::SeqCst);
        // Its answer may come or not (the connection drops right after): either is fine.
        self.hostile
            .execute_async(&echo_call(), Copying, |_| {})
            .unwrap();
        drop(self.tallied.until(
            |c| c.refused.iter().any(|r| r.contains(why)),
            |c| format!("the server names it ({why}): {:?}", c.refused),
        ));
        let err = self
            .hostile
            .execute(&echo_call(), &mut Copying)
            .expect_err("the connection is dropped");
        assert_eq!(err.status(), Status::ProtocolViolation, "{err}");
    }

    fn close(mut self) {
        self.hostile.close();
        self.server.close();
    }
}

#[test]
fn a_client_that_writes_garbage_on_its_ring_is_dropped_with_the_entry_named() {
    use shmcall_core::Copying;
    let a = armed("garbage");
    // No slot starts at this offset.
    a.smuggle(0x000d_ead0, "0xdead0");
    // Everyone else is served.
    let good = Client::connect("garbage", &a.dir.connect_options()).unwrap();
    assert_eq!(
        good.execute(&echo_call(), &mut Copying).unwrap().output,
        b"ping"
    );
    good.close();
    a.close();
}

#[test]
fn a_client_that_asks_for_more_output_than_its_slot_holds_is_dropped_with_the_sizes_named() {
    let a = armed("outcap");
    let layout = a.segment.layout();
    // A slot this client never used, its request written by hand (docs/protocol.md, "Slots"):
    // 4 bytes of input, and one byte more output than its class holds.
    let slot = layout.slot(200);
    let cap = layout.classes[slot.class].class.output_capacity;
    let header = slot.offset as usize;
    for (field, value) in [
        (0, load::ECHO),
        (4, 0),
        (8, 4),
        (12, cap + 1),
        (16, 1),
        (32, 1),
    ] {
        word(&a.segment, header + field).store(value, Ordering::SeqCst);
    }
    let why = format!(
        "slot 200 asks for 4 input and {} output bytes but holds",
        cap + 1
    );
    a.smuggle(slot.offset, &why);
    a.close();
}

/// Runs one echo of 4 output bytes that the test answers in the server's place, writing
/// `status` and `output_len` into the slot header; returns the client's error and the slot's
/// index.
fn answered_by_hand(name: &str, status: i32, output_len: u32) -> (shmcall_core::Error, u32) {
    use shmcall_core::ring::{Ring, RingHeader, Waker};
    use shmcall_core::{Call, Copying};
    use std::sync::atomic::AtomicU32;

    /// Wakes the client as a server's push would: a futex wake of a parked reader.
    struct Futex;
    impl Waker for Futex {
        fn unpark(&self, flag: &AtomicU32) {
            shmcall_core::futex::wake(flag, u32::MAX, shmcall_core::futex::Scope::Shared);
        }
        fn signal(&self) {
            panic!("a synchronous caller parks on its ring; it does not watch the socket");
        }
    }

    let dir = TempDir::new(name);
    // The handler keeps each command, unanswered: the test answers in its place.
    let (handler, held) = common::keeping();
    let mut server = Server::serve(name, handler, dir.serve_options()).unwrap();
    let client = Arc::new(Client::connect(name, &dir.connect_options()).unwrap());
    let segment = client.segment();
    let layout = *segment.layout();
    let call = {
        let client = client.clone();
        std::thread::spawn(move || {
            let call = Call {
                code: load::ECHO,
                input: b"ping",
                output_len: 4,
                timeout: Some(WAIT),
                ..Call::default()
            };
            client.execute(&call, &mut Copying)
        })
    };
    let command = held
        .recv_timeout(WAIT)
        .expect("the server takes the command");
    // The taken slot is the only one whose claim word says TAKEN (3).
    let slot = (0..layout.slot_count())
        .map(|i| layout.slot(i))
        .find(|s| word(&segment, s.offset as usize + 32).load(Ordering::SeqCst) == 3)
        .expect("the taken slot");
    let header = slot.offset as usize;
    let generation = word(&segment, header + 16).load(Ordering::SeqCst);
    for (field, value) in [(20, status as u32), (24, output_len), (28, generation)] {
        word(&segment, header + field).store(value, Ordering::SeqCst);
    }
    let base = segment.mapping().0;
    // SAFETY: the SC ring's header and cells lie inside the mapping, which `segment` keeps
    // alive until after the ring is dropped; every access to them is atomic.
    let sc = unsafe {
        Ring::from_raw(
            base.add(layout.sc_ring as usize).cast::<RingHeader>(),
            base.add(layout.sc_ring as usize + RingHeader::SIZE)
                .cast::<AtomicU32>(),
            layout.geometry.ring_capacity,
        )
    };
    sc.try_push(slot.offset, &Futex).unwrap();
    let err = within("the call", move || call.join().unwrap()).unwrap_err();
    drop(command);
    client.close();
    server.close();
    (err, slot.index)
}

#[test]
fn a_server_that_answers_more_output_than_asked_for_is_dropped_with_the_sizes_named() {
    let (err, slot) = answered_by_hand("outlen", 0, 5);
    assert_eq!(err.status(), Status::ProtocolViolation, "{err}");
    assert!(
        err.message().contains(&format!(
            "slot {slot} reports 5 output bytes, beyond its capacity of 4"
        )),
        "{err}"
    );
}

#[test]
fn an_overflow_answer_names_the_bytes_wanted_beyond_the_capacity() {
    // Protocol 2.1: on OUTPUT_OVERFLOW, `output_len` is what the handler wanted.
    let (err, _) = answered_by_hand("wanted", Status::OutputOverflow.code(), 5);
    assert_eq!(err.status(), Status::OutputOverflow, "{err}");
    assert!(
        err.message()
            .ends_with("answered 5 bytes of output for an output area of 4 bytes"),
        "{err}"
    );
}
