//! A mixed load for the fault trials, shared by the tests and `shmcall-peer load`: synchronous
//! commands from two threads and up to eight asynchronous ones in flight, of every size the
//! default geometry routes differently (a small slot, a large slot, the backup path), echoed or
//! checksummed, inline or on the server's workers. Every answer is checked; a library failure
//! is recorded with its status and ends the load, since it means the connection ended.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shmcall_core::{Call, Client, Command, Copying, Error, Mode, Output, Status};

/// Operation code of the peers' echo.
pub const ECHO: u32 = 1;
/// Operation code of the peers' checksum: FNV-1a-64 of the input, status 7.
pub const CHECKSUM: u32 = 2;
/// Asynchronous commands in flight at most.
const MAX_IN_FLIGHT: usize = 8;

/// FNV-1a, 64 bits (Fowler, Noll, Vo): the checksum both sides compare.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Answers `command` as the test servers do: [`ECHO`] copies the input into the output (as much
/// as fits, status 0), [`CHECKSUM`] answers the input's FNV-1a-64 (8 bytes LE, status 7), any
/// other code fails with `INVALID_COMMAND`.
pub fn answer(mut command: Command) {
    match command.code() {
        ECHO => {
            let (input, mut output) = command.areas();
            let mut buf = vec![0; input.len().min(output.len())];
            input.read_at(0, &mut buf);
            output.write(&buf);
            command.finish(0, buf.len());
        }
        CHECKSUM => {
            let sum = fnv1a64(&command.input().to_vec());
            command.output().write(&sum.to_le_bytes());
            command.finish(7, 8);
        }
        _ => command.fail(Status::InvalidCommand),
    }
}

/// xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift generators"):
/// reproducible choices from a seed the test prints.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a load saw.
#[derive(Default)]
pub struct Tally {
    /// Commands answered correctly.
    pub ok: AtomicU64,
    /// The library statuses of the commands that failed.
    pub failed: Mutex<Vec<Status>>,
    /// Answers that came back wrong: must stay empty.
    pub wrong: Mutex<Vec<String>>,
    in_flight: Mutex<usize>,
    settled: Condvar,
}

impl Tally {
    fn record(&self, what: &Job, result: Result<Output, Error>) {
        match result {
            Ok(out) => match what.check(&out) {
                Ok(()) => {
                    self.ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(why) => self.wrong.lock().unwrap().push(why),
            },
            Err(e) => self.failed.lock().unwrap().push(e.status()),
        }
    }

    fn ended(&self) -> bool {
        !self.failed.lock().unwrap().is_empty()
    }
}

/// One command and what it must answer.
struct Job {
    code: u32,
    mode: Mode,
    input: Vec<u8>,
}

impl Job {
    fn new(rng: &mut Rng) -> Job {
        // The backup path's 3 MiB least often: it is the slowest to fill and check.
        let size = match rng.below(16) {
            0..=6 => 16,
            7..=11 => 3000,
            12..=14 => 200 << 10,
            _ => 3 << 20,
        };
        let salt = rng.next() as u8;
        Job {
            code: if rng.below(2) == 0 { ECHO } else { CHECKSUM },
            mode: [Mode::Default, Mode::Inline, Mode::Worker][rng.below(3) as usize],
            input: (0..size)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
                .collect(),
        }
    }

    fn call(&self) -> Call<'_> {
        Call {
            code: self.code,
            input: &self.input,
            output_len: if self.code == ECHO {
                self.input.len()
            } else {
                8
            },
            mode: self.mode,
            ..Call::default()
        }
    }

    fn check(&self, out: &Output) -> Result<(), String> {
        let size = self.input.len();
        if self.code == ECHO {
            if out.status != 0 || out.output != self.input {
                return Err(format!(
                    "echo of {size} B came back with status {} and {} bytes that differ",
                    out.status,
                    out.output.len()
                ));
            }
        } else if out.status != 7 || out.output != fnv1a64(&self.input).to_le_bytes() {
            return Err(format!(
                "checksum of {size} B came back as status {} and {:02x?}",
                out.status, out.output
            ));
        }
        Ok(())
    }
}

/// A wait for asynchronous commands this long is reported on stderr (once per wait), before the
/// test that runs the load gives up on it: a lost wake-up then explains itself in the log.
const STALL: Duration = Duration::from_secs(3);

/// Waits while `busy(commands out)`, for at most `wait`: the count's lock, or `Err` with the
/// count still out. A wait past [`STALL`] is reported once, with both rings ([`rings`]).
fn settle<'a>(
    tally: &'a Tally,
    client: &Client,
    wait: Duration,
    busy: impl Fn(usize) -> bool,
) -> Result<MutexGuard<'a, usize>, usize> {
    let deadline = Instant::now() + wait;
    let mut told = false;
    let mut n = tally.in_flight.lock().unwrap();
    while busy(*n) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(*n);
        }
        let (next, waited) = tally.settled.wait_timeout(n, left.min(STALL)).unwrap();
        n = next;
        if waited.timed_out() && busy(*n) && !std::mem::replace(&mut told, true) {
            eprintln!(
                "load (pid {}): {} asynchronous commands out for {STALL:?} with no answer; {}",
                std::process::id(),
                *n,
                rings(client)
            );
        }
    }
    Ok(n)
}

/// Both rings of `client`'s connection: each consumer's published read position, its sleep flag
/// (0 AWAKE, 1 PARKED, 2 WATCHED) and whether the cell it reads next holds an entry. An entry
/// waiting on the SC ring with its flag AWAKE and no answer coming is a lost wake-up of the
/// client; one waiting on the CS ring, of the server.
fn rings(client: &Client) -> String {
    let segment = client.segment();
    let look = |name: &str, ring: shmcall_core::ring::Ring| {
        ring.follow();
        format!(
            "{name} ring: read {} flag {} next cell {}",
            ring.position(),
            ring.flag().load(Ordering::Relaxed),
            if ring.is_empty() { "empty" } else { "full" }
        )
    };
    format!(
        "{}, {}",
        look("CS", segment.cs_ring()),
        look("SC", segment.sc_ring())
    )
}

/// Runs the load on `client` until `stop` is set or a command fails (the connection ended),
/// then waits for its asynchronous commands to settle. Errs if they do not within `wait`.
pub fn run(
    client: &Arc<Client>,
    seed: u64,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
    wait: Duration,
) -> Result<(), String> {
    let sync: Vec<_> = (1..=2)
        .map(|k| {
            let (client, stop, tally) = (client.clone(), stop.clone(), tally.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ k);
                while !stop.load(Ordering::Relaxed) && !tally.ended() {
                    let job = Job::new(&mut rng);
                    tally.record(&job, client.execute(&job.call(), &mut Copying));
                }
            })
        })
        .collect();
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::Relaxed) && !tally.ended() {
        {
            let mut n = settle(tally, client, wait, |n| n >= MAX_IN_FLIGHT).map_err(|_| {
                format!(
                    "no asynchronous command completed within {wait:?}; {}",
                    rings(client)
                )
            })?;
            *n += 1;
        }
        let job = Arc::new(Job::new(&mut rng));
        let (t, j) = (tally.clone(), job.clone());
        let issued = client.execute_async(&job.call(), Copying, move |r| {
            t.record(&j, r);
            *t.in_flight.lock().unwrap() -= 1;
            t.settled.notify_all();
        });
        if let Err(e) = issued {
            tally.failed.lock().unwrap().push(e.status());
            *tally.in_flight.lock().unwrap() -= 1;
        }
    }
    let out = settle(tally, client, wait, |n| n > 0).map_err(|n| {
        format!(
            "{n} asynchronous commands never completed; {}",
            rings(client)
        )
    })?;
    drop(out);
    for t in sync {
        t.join().map_err(|_| "a synchronous load thread panicked")?;
    }
    Ok(())
}
