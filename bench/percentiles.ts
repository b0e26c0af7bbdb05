/**
 * Percentiles of round-trip samples, because `deno bench` reports means.
 *
 * @module
 */

/** Summary of a set of samples, in microseconds. */
export interface Summary {
  /** Number of samples. */
  n: number;
  /** Median. */
  p50: number;
  /** 99th percentile. */
  p99: number;
  /** 99.9th percentile. */
  p999: number;
  /** Largest sample. */
  max: number;
  /** Arithmetic mean. */
  mean: number;
}

/** Nearest-rank percentile `q` (0 < q <= 1) of sorted samples. */
function rank(sorted: Float64Array, q: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

/**
 * Summarizes samples given in milliseconds (what `performance.now()` differences are).
 *
 * @param samplesMs Round-trip times in milliseconds.
 * @returns The summary in microseconds.
 */
export function summarize(samplesMs: Float64Array): Summary {
  const sorted = Float64Array.from(samplesMs).sort();
  const us = (ms: number) => ms * 1000;
  let sum = 0;
  for (const s of sorted) sum += s;
  return {
    n: sorted.length,
    p50: us(rank(sorted, 0.5)),
    p99: us(rank(sorted, 0.99)),
    p999: us(rank(sorted, 0.999)),
    max: us(sorted[sorted.length - 1] ?? 0),
    mean: us(sum / Math.max(1, sorted.length)),
  };
}

/**
 * A monotonic clock in milliseconds, read through libc's `clock_gettime` (about 45 ns here)
 * when FFI is allowed; `performance.now()` costs 100 to 150 ns a reading, which is a sizeable
 * part of a round trip of a microsecond or two. Falls back to `performance.now()`.
 */
export const clock: () => number = (() => {
  try {
    const libc = Deno.dlopen("libc.so.6", {
      clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
    });
    // struct timespec on 64-bit Linux: two 64-bit fields, read by their low 32-bit words
    // (seconds since boot and nanoseconds both fit).
    const ts = new Int32Array(4);
    const CLOCK_MONOTONIC = 1;
    return () => {
      libc.symbols.clock_gettime(CLOCK_MONOTONIC, ts);
      return ts[0]! * 1e3 + ts[2]! / 1e6;
    };
  } catch {
    return () => performance.now();
  }
})();

/**
 * Times `n` sequential runs of `roundTrip` after `warmup` untimed ones. A run that returns a
 * Promise is awaited; one that does not is not (an `await` would add a microtask turn).
 *
 * @returns Each run's time in milliseconds.
 */
export async function sample(
  n: number,
  warmup: number,
  roundTrip: (i: number) => void | Promise<void>,
): Promise<Float64Array> {
  for (let i = 0; i < warmup; i++) {
    const r = roundTrip(i);
    if (r instanceof Promise) await r;
  }
  const out = new Float64Array(n);
  let start = clock();
  for (let i = 0; i < n; i++) {
    const r = roundTrip(i);
    if (r instanceof Promise) await r;
    const end = clock();
    out[i] = end - start;
    start = end;
  }
  return out;
}

/**
 * `samples` round trips in `rounds` rounds, after as many thrown away (a fresh server compiles
 * and optimizes its paths over the first tens of thousands of commands): the summary of every
 * round trip, with the median of the rounds' p50 and p99. A machine shared with others stalls
 * now and then for reasons of its own; a median of rounds keeps one stall from deciding a
 * figure.
 */
export async function rounds(
  samples: number,
  roundTrip: (i: number) => void | Promise<void>,
  count = 5,
): Promise<Summary> {
  await sample(samples, 0, roundTrip);
  const all: Float64Array[] = [];
  for (let r = 0; r < count; r++) all.push(await sample(Math.ceil(samples / count), 0, roundTrip));
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1]!;
  const each = all.map((a) => summarize(a));
  const whole = new Float64Array(all.reduce((n, a) => n + a.length, 0));
  all.reduce((at, a) => (whole.set(a, at), at + a.length), 0);
  return {
    ...summarize(whole),
    p50: median(each.map((x) => x.p50)),
    p99: median(each.map((x) => x.p99)),
  };
}

/** A Markdown table of summaries, with the median's ratio to `baseline`'s. */
export function table(rows: [string, Summary][], baseline: string): string {
  const base = rows.find(([name]) => name === baseline)?.[1];
  const f = (x: number) => x.toFixed(2);
  const lines = [
    "| scenario | p50 µs | p99 µs | p99.9 µs | max µs | speed-up at p50 vs baseline |",
    "|---|---:|---:|---:|---:|---:|",
  ];
  for (const [name, s] of rows) {
    const ratio = base ? `${(base.p50 / s.p50).toFixed(1)}×` : "";
    lines.push(
      `| ${name} | ${f(s.p50)} | ${f(s.p99)} | ${f(s.p999)} | ${f(s.max)} | ${
        name === baseline ? "baseline" : ratio
      } |`,
    );
  }
  return lines.join("\n");
}
