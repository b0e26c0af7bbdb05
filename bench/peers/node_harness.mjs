// What the Node.js peers of the bench suite share (node_ipc.mjs, node_socket.mjs,
// node_shmcall.mjs): their command line, their timing loop and summaries (the same nearest-rank
// percentiles as bench/percentiles.ts), and a bounded wait for a child's "ready" line.
import process from "node:process";
import { Worker } from "node:worker_threads";

/**
 * Reads `<samples> <warmup> <size>...` from the command line; prints the usage and exits with
 * status 2 if it is not that.
 *
 * @param {string} script The script's name, for the usage line.
 * @returns {{ samples: number, warmup: number, sizes: number[] }}
 */
export function parseArgs(script) {
  const [samples, warmup, ...sizes] = process.argv.slice(2).map(Number);
  const count = (x) => Number.isInteger(x) && x >= 0;
  if (!(samples > 0) || !count(samples) || !count(warmup) || sizes.length === 0) {
    console.error(`usage: ${script} <samples> <warmup> <size>...`);
    process.exit(2);
  }
  if (!sizes.every(count)) {
    console.error(`${script}: sizes must be byte counts, received ${process.argv.slice(4)}`);
    process.exit(2);
  }
  return { samples, warmup, sizes };
}

/**
 * Reads `--pipelined <in-flight> <total>` from the command line, if that is what it holds: the
 * pipelined mode of a peer, which prints one line `{"mode":"pipelined","inFlight","rate"}`
 * (commands a second over `total` commands, `in-flight` at a time) instead of latencies.
 *
 * @returns {{ inFlight: number, total: number } | undefined}
 */
export function pipelinedArgs() {
  if (process.argv[2] !== "--pipelined") return undefined;
  const [inFlight, total] = process.argv.slice(3).map(Number);
  if (!(Number.isInteger(inFlight) && inFlight > 0 && Number.isInteger(total) && total > 0)) {
    console.error("usage: --pipelined <in-flight> <total>");
    process.exit(2);
  }
  return { inFlight, total };
}

/**
 * Times `samples` sequential runs of `roundTrip` after `warmup` untimed ones. A run that
 * returns a Promise is awaited; one that does not is not (an `await` would add a microtask
 * turn to a synchronous call).
 *
 * @param {number} samples
 * @param {number} warmup
 * @param {(i: number) => void | Promise<void>} roundTrip Called with the run's index.
 * @returns {Promise<Float64Array>} Each timed run, in microseconds.
 */
export async function sample(samples, warmup, roundTrip) {
  for (let i = 0; i < warmup; i++) {
    const r = roundTrip(i);
    if (r instanceof Promise) await r;
  }
  const out = new Float64Array(samples);
  let start = performance.now();
  for (let i = 0; i < samples; i++) {
    const r = roundTrip(warmup + i);
    if (r instanceof Promise) await r;
    const end = performance.now();
    out[i] = (end - start) * 1000;
    start = end;
  }
  return out;
}

/**
 * The summary line of one scenario: {...fields, "n", "p50", "p99", "p999", "max", "mean"}, in
 * microseconds, nearest rank.
 *
 * @param {Record<string, unknown>} fields Put first (the size, the mode).
 * @param {Float64Array} us The samples, in microseconds (sorted in place).
 */
export function summaryLine(fields, us) {
  let sum = 0;
  for (const x of us) sum += x;
  us.sort();
  const rank = (q) => us[Math.min(us.length - 1, Math.max(0, Math.ceil(q * us.length) - 1))];
  return JSON.stringify({
    ...fields,
    n: us.length,
    p50: rank(0.5),
    p99: rank(0.99),
    p999: rank(0.999),
    max: us[us.length - 1],
    mean: sum / us.length,
  });
}

/**
 * Resolves at the first whole line of `stream` equal to `line`; rejects after `ms`, or when the
 * stream ends first, with what it said.
 *
 * @param {import("node:stream").Readable} stream A child's stdout.
 * @param {string} line
 * @param {number} ms
 * @returns {Promise<void>}
 */
export function waitForLine(stream, line, ms) {
  return new Promise((resolve, reject) => {
    let seen = "";
    const done = (error) => {
      clearTimeout(timer);
      stream.off("data", onData);
      stream.off("end", onEnd);
      if (error === undefined) resolve();
      else reject(error);
    };
    const onData = (chunk) => {
      seen += chunk;
      if (seen.split("\n").slice(0, -1).includes(line)) done();
    };
    const onEnd = () => done(new Error(`the child ended before '${line}'; it said ${seen}`));
    const timer = setTimeout(
      () => done(new Error(`no '${line}' from the child within ${ms} ms`)),
      ms,
    );
    stream.setEncoding("utf8");
    stream.on("data", onData);
    stream.on("end", onEnd);
  });
}

/**
 * A bound that holds even while this thread blocks (in a synchronous call, say): a worker
 * thread that, after `ms`, kills `child` and this process with SIGKILL and removes `dir`.
 * Timers on this thread cannot do it, as they wait for this thread. It never keeps the process
 * alive by itself.
 *
 * @param {number} ms
 * @param {import("node:child_process").ChildProcess} child
 * @param {string} dir
 * @param {string} what Said on stderr when it fires.
 */
export function watchdog(ms, child, dir, what) {
  const worker = new Worker(
    // fs.writeSync: a worker's process.stderr goes through the blocked thread.
    `const { workerData: w } = require("node:worker_threads");
    const fs = require("node:fs");
    setTimeout(() => {
      fs.writeSync(2, w.what + "\\n");
      try { process.kill(w.child, "SIGKILL"); } catch {}
      fs.rmSync(w.dir, { recursive: true, force: true });
      process.kill(w.self, "SIGKILL");
    }, w.ms);`,
    { eval: true, workerData: { ms, child: child.pid, dir, what, self: process.pid } },
  );
  worker.unref();
}
