//! Counters of one client or server, cheap enough to stay on: a handful of relaxed atomic adds
//! and two clock reads per command, on cache lines of their own.
//!
//! Round-trip times go into a log-linear histogram (the scheme of HdrHistogram, Gil Tene:
//! each power of two split into [`SUB_BUCKETS`] equal buckets), so a percentile is known to
//! within half a bucket, 1/16 of its value, whatever the range, in a fixed 2.4 KiB.
//!
//! Every counter is `Relaxed`: each is a count on its own, read for reporting; no other memory
//! is published through them, and a snapshot taken while commands run may mix counts from
//! either side of one command, which a reader of statistics accepts.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::status::Status;

/// Buckets per power of two (a power of two itself).
const SUB_BUCKETS: u64 = 8;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// Octaves above the first: times up to 2^40 ns (18 minutes) get buckets of their own; longer
/// ones share the last.
const OCTAVES: usize = 37;
/// Buckets of the histogram.
pub const BUCKETS: usize = SUB_BUCKETS as usize * (OCTAVES + 1);
/// Failure counters: index `-status` for library statuses -1 to -15 (index 0 unused).
pub const FAILURE_SLOTS: usize = 16;

/// Where each figure sits in a snapshot ([`Stats::snapshot`]): `f64` words, so that
/// JavaScript reads them from a `Float64Array` (counts stay exact below 2^53).
pub mod word {
    /// Commands sent (client) or taken (server).
    pub const COMMANDS: usize = 0;
    /// Commands answered or failed.
    pub const FINISHED: usize = 1;
    /// Input bytes sent (client) or received (server).
    pub const BYTES_IN: usize = 2;
    /// Output bytes received (client) or answered (server).
    pub const BYTES_OUT: usize = 3;
    /// Commands that took the backup path.
    pub const BACKUP: usize = 4;
    /// Round trips in the histogram: commands answered with a status >= 0.
    pub const TIMED: usize = 5;
    /// Median round trip, ns.
    pub const P50: usize = 6;
    /// 90th percentile, ns.
    pub const P90: usize = 7;
    /// 99th percentile, ns.
    pub const P99: usize = 8;
    /// Longest round trip, ns (to the histogram's precision).
    pub const MAX: usize = 9;
    /// Connections open (servers; 0 for clients).
    pub const CONNECTIONS: usize = 10;
    /// Workers in the server's pool, as its JavaScript said ([`super::Stats::note`]).
    pub const WORKERS: usize = 11;
    /// 1 once the server quiesces, as its JavaScript said.
    pub const QUIESCING: usize = 12;
    /// The first of [`super::FAILURE_SLOTS`] failure counters, by `-status`.
    pub const FAILURES: usize = 16;
    /// Words in a snapshot.
    pub const LEN: usize = FAILURES + super::FAILURE_SLOTS;
}

/// Where each figure sits in what a lent connection's consumer counted ([`Stats::add`]): `f64`
/// words, as JavaScript keeps them in a `Float64Array`.
pub mod lane {
    /// Commands sent.
    pub const COMMANDS: usize = 0;
    /// Commands answered or failed.
    pub const FINISHED: usize = 1;
    /// Input bytes sent.
    pub const BYTES_IN: usize = 2;
    /// Output bytes received with a status >= 0.
    pub const BYTES_OUT: usize = 3;
    /// The first of [`super::FAILURE_SLOTS`] failure counters, by `-status`.
    pub const FAILURES: usize = 4;
    /// How many round-trip samples follow.
    pub const SAMPLES: usize = FAILURES + super::FAILURE_SLOTS;
    /// The first round-trip sample, in ns (answers with a status >= 0).
    pub const FIRST_SAMPLE: usize = SAMPLES + 1;
    /// Most samples one report carries.
    pub const MAX_SAMPLES: usize = 64;
    /// Words in a report.
    pub const LEN: usize = FIRST_SAMPLE + MAX_SAMPLES;
}

/// A monotonic clock in nanoseconds since the first call in this process.
#[inline]
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The bucket of a time in ns.
#[inline]
fn bucket(ns: u64) -> usize {
    if ns < SUB_BUCKETS {
        return ns as usize;
    }
    let octave = 63 - ns.leading_zeros() - SUB_BITS; // >= 0
    let sub = (ns >> octave) & (SUB_BUCKETS - 1);
    let i = SUB_BUCKETS as usize * (octave as usize + 1) + sub as usize;
    i.min(BUCKETS - 1)
}

/// The middle of bucket `i`, in ns: what a percentile falling in it reports.
fn bucket_middle(i: usize) -> f64 {
    let sub_buckets = SUB_BUCKETS as usize;
    if i < sub_buckets {
        return i as f64;
    }
    let octave = (i / sub_buckets - 1) as u32;
    let sub = (i % sub_buckets) as u64;
    let low = (SUB_BUCKETS + sub) << octave;
    low as f64 + (1u64 << octave) as f64 / 2.0
}

/// One client's or server's counters.
#[derive(Debug)]
#[repr(align(64))]
pub struct Stats {
    commands: AtomicU64,
    finished: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    backup: AtomicU64,
    failures: [AtomicU64; FAILURE_SLOTS],
    latency: [AtomicU64; BUCKETS],
    workers: AtomicU64,
    quiescing: AtomicU64,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            commands: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            backup: AtomicU64::new(0),
            failures: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            workers: AtomicU64::new(0),
            quiescing: AtomicU64::new(0),
        }
    }
}

impl Stats {
    /// A command of `input` bytes went out (client) or was taken (server); returns the time to
    /// hand back to [`Stats::finish`].
    #[inline]
    pub fn start(&self, input: u32, backup: bool) -> u64 {
        self.commands.fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(u64::from(input), Relaxed);
        if backup {
            self.backup.fetch_add(1, Relaxed);
        }
        now_ns()
    }

    /// The command started at `started` ended with `status` and `output` bytes; returns how long
    /// it took (ns). Only answers with a status >= 0 are timed: a failure's time says nothing
    /// about round trips.
    #[inline]
    pub fn finish(&self, started: u64, status: i32, output: u32) -> u64 {
        let ns = now_ns().saturating_sub(started);
        self.finish_after(ns, status, output);
        ns
    }

    /// [`Stats::finish`] of a command that took `ns`.
    #[inline]
    fn finish_after(&self, ns: u64, status: i32, output: u32) {
        self.finished.fetch_add(1, Relaxed);
        if status >= 0 {
            self.bytes_out.fetch_add(u64::from(output), Relaxed);
            self.latency[bucket(ns)].fetch_add(1, Relaxed);
        } else {
            let i = (-(status as i64)) as usize;
            debug_assert!(Status::from_code(status).is_some());
            self.failures[i.min(FAILURE_SLOTS - 1)].fetch_add(1, Relaxed);
        }
    }

    /// Adds what a lent connection's consumer counted since its last report, at the [`lane`]
    /// positions. The consumer times a sample of its commands (a clock reading costs it more
    /// than the rest of a command), so the histogram holds those samples. Words that are not
    /// counts (negative, fractional, not finite) count as 0.
    pub fn add(&self, report: &[f64; lane::LEN]) {
        // `as` saturates: NaN and negative values become 0, huge ones u64::MAX.
        let count = |at: usize| report[at].max(0.0) as u64;
        self.commands.fetch_add(count(lane::COMMANDS), Relaxed);
        self.finished.fetch_add(count(lane::FINISHED), Relaxed);
        self.bytes_in.fetch_add(count(lane::BYTES_IN), Relaxed);
        self.bytes_out.fetch_add(count(lane::BYTES_OUT), Relaxed);
        for (i, f) in self.failures.iter().enumerate() {
            f.fetch_add(count(lane::FAILURES + i), Relaxed);
        }
        let samples = (count(lane::SAMPLES) as usize).min(lane::MAX_SAMPLES);
        for &ns in &report[lane::FIRST_SAMPLE..lane::FIRST_SAMPLE + samples] {
            self.latency[bucket(ns.max(0.0) as u64)].fetch_add(1, Relaxed);
        }
    }

    /// Records what the server's owner knows and the core does not: its pool's size and
    /// whether it quiesces (reported in snapshots).
    pub fn note(&self, workers: u32, quiescing: bool) {
        self.workers.store(u64::from(workers), Relaxed);
        self.quiescing.store(u64::from(quiescing), Relaxed);
    }

    /// Writes the figures into `out` at the [`word`] positions (percentiles computed here);
    /// `connections` goes to [`word::CONNECTIONS`].
    pub fn snapshot(&self, connections: usize, out: &mut [f64; word::LEN]) {
        out.fill(0.0);
        out[word::COMMANDS] = self.commands.load(Relaxed) as f64;
        out[word::FINISHED] = self.finished.load(Relaxed) as f64;
        out[word::BYTES_IN] = self.bytes_in.load(Relaxed) as f64;
        out[word::BYTES_OUT] = self.bytes_out.load(Relaxed) as f64;
        out[word::BACKUP] = self.backup.load(Relaxed) as f64;
        out[word::CONNECTIONS] = connections as f64;
        out[word::WORKERS] = self.workers.load(Relaxed) as f64;
        out[word::QUIESCING] = self.quiescing.load(Relaxed) as f64;
        for (i, f) in self.failures.iter().enumerate() {
            out[word::FAILURES + i] = f.load(Relaxed) as f64;
        }
        let counts: Vec<u64> = self.latency.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        out[word::TIMED] = total as f64;
        if total == 0 {
            return;
        }
        for (at, q) in [(word::P50, 0.50), (word::P90, 0.90), (word::P99, 0.99)] {
            // The smallest bucket holding at least the q-th of the counts.
            let rank = ((q * total as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, &c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    out[at] = bucket_middle(i);
                    break;
                }
            }
        }
        if let Some(last) = counts.iter().rposition(|&c| c > 0) {
            out[word::MAX] = bucket_middle(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values_within_one_sixteenth() {
        for ns in (0..20_000u64).chain([1 << 20, 123_456_789, (1 << 40) - 1]) {
            let mid = bucket_middle(bucket(ns));
            let err = (mid - ns as f64).abs();
            assert!(
                err <= (ns as f64 / 16.0).max(0.5),
                "{ns} ns went to a bucket whose middle is {mid}"
            );
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        // Buckets are ordered like the values they hold.
        let mut last = 0;
        for ns in 0..100_000u64 {
            let b = bucket(ns);
            assert!(b >= last, "bucket of {ns} went back from {last} to {b}");
            last = b;
        }
    }

    #[test]
    fn a_lane_report_adds_its_counts_and_samples() {
        let s = Stats::default();
        let mut r = [0.0; lane::LEN];
        r[lane::COMMANDS] = 10.0;
        r[lane::FINISHED] = 9.0;
        r[lane::BYTES_IN] = 640.0;
        r[lane::BYTES_OUT] = 576.0;
        r[lane::FAILURES + 2] = 1.0;
        // Two samples, then a count beyond the report's room and garbage past it.
        r[lane::SAMPLES] = 2.0;
        r[lane::FIRST_SAMPLE] = 1_000.0;
        r[lane::FIRST_SAMPLE + 1] = 3_000.0;
        s.add(&r);
        r[lane::COMMANDS] = f64::NAN;
        r[lane::FINISHED] = -5.0;
        r[lane::SAMPLES] = 1e9;
        s.add(&r);
        let mut out = [0.0; word::LEN];
        s.snapshot(0, &mut out);
        assert_eq!(out[word::COMMANDS], 10.0);
        assert_eq!(out[word::FINISHED], 9.0);
        assert_eq!(out[word::BYTES_IN], 1280.0);
        assert_eq!(out[word::FAILURES + 2], 2.0);
        assert_eq!(out[word::TIMED], 2.0 + lane::MAX_SAMPLES as f64);
    }

    #[test]
    fn percentiles_count_failures_apart() {
        let s = Stats::default();
        // 98 round trips of 1 µs, 2 of 1 ms: the median is 1 µs, p99 1 ms.
        for i in 0..100u32 {
            s.start(10, i == 0);
            let spent = if i < 98 { 1_000 } else { 1_000_000 };
            s.finish_after(spent, 0, 4);
        }
        s.start(3, false);
        s.finish_after(5, Status::PeerTerminated.code(), 0);
        let mut out = [0.0; word::LEN];
        s.snapshot(2, &mut out);
        assert_eq!(out[word::COMMANDS], 101.0);
        assert_eq!(out[word::FINISHED], 101.0);
        assert_eq!(out[word::BYTES_IN], 1003.0);
        assert_eq!(out[word::BYTES_OUT], 400.0);
        assert_eq!(out[word::BACKUP], 1.0);
        assert_eq!(out[word::TIMED], 100.0);
        assert_eq!(out[word::CONNECTIONS], 2.0);
        assert_eq!(out[word::FAILURES + 1], 1.0);
        let near = |got: f64, want: f64| (got - want).abs() <= want / 16.0 + 64.0;
        assert!(near(out[word::P50], 1_000.0), "p50 {}", out[word::P50]);
        assert!(near(out[word::P99], 1_000_000.0), "p99 {}", out[word::P99]);
        assert!(near(out[word::MAX], 1_000_000.0), "max {}", out[word::MAX]);
    }
}
