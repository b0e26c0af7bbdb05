/**
 * The worker-pool scenario of the bench suite (`bench/run.ts`): a client in this process keeps
 * {@linkcode IN_FLIGHT} asynchronous commands outstanding against server processes
 * (`bench/peers/pool_server.ts`) that run the same handler module inline (no pool), in a pool
 * of one worker, and in a pool of two — started together and measured in turns, so that each
 * ratio compares measurements a few seconds apart.
 *
 * Two handlers: CPU-bound work ({@linkcode WORK}, a WebAssembly loop, about half a millisecond), where
 * workers run commands in parallel; and a 64-byte echo, where a worker only adds its hop (from
 * the core's queue to the worker, which polls the connections itself while it waits).
 *
 * @module
 */

import { connect } from "../mod.ts";
import { clock, sample, summarize } from "./percentiles.ts";
import { Peer } from "../tests/peers/spawn.ts";
import { ECHO, WORK, work } from "./peers/pool_handler.ts";
import type { PoolRow } from "./report.ts";

/** Commands outstanding at once: at least twice the largest pool, so that no worker idles. */
export const IN_FLIGHT = 8;
/** Rounds of {@linkcode work} per CPU-bound command: about 0.5 ms here (0.49–0.58 ms measured). */
export const WORK_ROUNDS = 185_000;
/** The pools measured; 0 runs every command inline. */
export const POOL_SIZES = [0, 1, 2];

type Client = Awaited<ReturnType<typeof connect>>;

const here = (file: string) => decodeURIComponent(new URL(file, import.meta.url).pathname);

/** Distinct inputs of the CPU-bound command, and the result each must give. */
const SEEDS = 16;
const workInputs = Array.from({ length: SEEDS }, (_, i) => {
  const input = new Uint8Array(8);
  const view = new DataView(input.buffer);
  view.setUint32(0, 0x9e3779b9 * (i + 1) >>> 0, true);
  view.setUint32(4, WORK_ROUNDS, true);
  return input;
});
const workExpected = workInputs.map((input) => {
  const view = new DataView(input.buffer);
  return work(view.getUint32(0, true), view.getUint32(4, true));
});

/** What {@linkcode poolBench} measured. */
export interface PoolResults {
  rows: PoolRow[];
  /** The CPU-bound work alone, in this process (µs per command). */
  workMicros: number;
  rounds: number;
  /** The work split over 2 Web Workers of one process, no IPC, against 1: the pool's ceiling. */
  ceiling: number;
  /** CPUs used by other processes of the machine meanwhile (on average; NaN: not known). */
  others: number;
}

/** One measurement: commands per second over `total`, and each command's time (ms). */
interface Burst {
  perSecond: number;
  times: Float64Array;
}

/**
 * Runs `total` commands with {@linkcode IN_FLIGHT} outstanding; each is timed from its
 * `execute` to its Promise settling, and its answer checked.
 */
async function burst(client: Client, code: number, total: number): Promise<Burst> {
  const times = new Float64Array(total);
  const completion = () => {};
  const echoIn = new Uint8Array(64);
  let issued = 0;
  const loop = async () => {
    const output = new Uint8Array(code === WORK ? 4 : 64);
    const view = new DataView(output.buffer);
    while (issued < total) {
      const i = issued++;
      const start = clock();
      if (code === WORK) {
        await client.execute(WORK, { input: workInputs[i % SEEDS]!, output, completion });
        if (view.getUint32(0, true) !== workExpected[i % SEEDS]) {
          throw new Error(`the pool bench's work came back wrong (command ${i})`);
        }
      } else {
        echoIn[0] = echoIn[63] = i & 0xff;
        await client.execute(ECHO, { input: echoIn, output, completion });
        if (output[0] !== (i & 0xff) || output[63] !== (i & 0xff)) {
          throw new Error(`the pool bench's echo came back wrong (command ${i})`);
        }
      }
      times[i] = clock() - start;
    }
  };
  const start = clock();
  await Promise.all(Array.from({ length: IN_FLIGHT }, loop));
  return { perSecond: total / ((clock() - start) / 1000), times };
}

/** Asynchronous 64-byte echoes, one in flight (ms each). */
function oneInFlight(client: Client, n: number): Promise<Float64Array> {
  const input = new Uint8Array(64);
  const output = new Uint8Array(64);
  const completion = () => {};
  return sample(n, Math.max(20, n >> 2), async (i) => {
    input.fill(i & 0xff);
    await client.execute(ECHO, { input, output, completion });
    if (output[0] !== (i & 0xff) || output[63] !== (i & 0xff)) {
      throw new Error("the pool bench's echo came back wrong");
    }
  });
}

/** The median of `xs`. */
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

function concat(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * The most a pool of `size` can gain here: the CPU-bound work split over `size` Web Workers of
 * one process, with no IPC at all; commands per second.
 */
async function parallelWork(workers: Worker[], size: number, total: number): Promise<number> {
  const each = Math.ceil(total / size);
  const start = clock();
  await Promise.all(
    workers.slice(0, size).map((w, k) =>
      new Promise((resolve, reject) => {
        w.onmessage = resolve;
        w.onerror = reject;
        w.postMessage({ from: k * each, count: each, rounds: WORK_ROUNDS });
      })
    ),
  );
  return (each * size) / ((clock() - start) / 1000);
}

/**
 * CPU time, in jiffies (1/100 s): the whole machine's busy time (`/proc/stat`), and that of
 * this process with its reaped children and of the `pids` still running (the server peers).
 * Read through `cat`: Deno reads `/proc` only with `--allow-all`, which `deno task bench` does
 * not grant. Undefined when it cannot be read.
 */
function cpuTicks(pids: number[]): { machine: number; ours: number } | undefined {
  try {
    const paths = ["/proc/stat", ...[Deno.pid, ...pids].map((p) => `/proc/${p}/stat`)];
    const out = new Deno.Command("cat", { args: paths, stdout: "piped", stderr: "null" })
      .outputSync();
    if (!out.success) return undefined;
    const lines = new TextDecoder().decode(out.stdout).split("\n");
    // After the command name (which may hold spaces): utime stime cutime cstime are 11–14.
    const fields = (line: string) => line.slice(line.lastIndexOf(")") + 2).split(" ").map(Number);
    const cpu = lines[0]!.trim().split(/\s+/).slice(1).map(Number);
    const stats = lines.filter((l) => l.includes(") "));
    const self = fields(stats[0]!);
    let ours = self[11]! + self[12]! + self[13]! + self[14]!;
    for (const peer of stats.slice(1)) {
      const f = fields(peer);
      ours += f[11]! + f[12]!;
    }
    // user nice system idle iowait irq softirq
    const machine = cpu[0]! + cpu[1]! + cpu[2]! + cpu[5]! + cpu[6]!;
    return Number.isFinite(machine + ours) ? { machine, ours } : undefined;
  } catch {
    return undefined;
  }
}

/** The time of one CPU-bound command's work in this process, in µs (median of 50). */
export function workMicros(): number {
  const runs: number[] = [];
  for (let i = -5; i < 50; i++) {
    const start = clock();
    work(i, WORK_ROUNDS);
    if (i >= 0) runs.push((clock() - start) * 1000);
  }
  return median(runs);
}

/**
 * Measures every pool size with both handlers, `rounds` times in turns (the order rotated each
 * round); a row's rate is the median over rounds (with their range), its latencies the
 * percentiles of every command of every round.
 */
export async function poolBench(
  dir: string,
  quick: boolean,
): Promise<PoolResults> {
  const rounds = quick ? 2 : 5;
  const workTotal = quick ? 200 : 1_500;
  const echoTotal = quick ? 5_000 : 40_000;
  const oneN = quick ? 1_000 : 10_000;
  const peers: Peer[] = [];
  const clients: Client[] = [];
  /** One in flight is a latency figure: measured by clients with the default spin. */
  const waiters: Client[] = [];
  const ceilingWorkers = [0, 1].map(() =>
    new Worker(new URL("./peers/work_worker.ts", import.meta.url).href, { type: "module" })
  );
  try {
    for (const workers of POOL_SIZES) {
      const icId = `pool-bench-${workers}`;
      peers.push(
        await Peer.start(
          Deno.execPath(),
          ["run", "-A", here("./peers/pool_server.ts"), icId, dir, String(workers)],
          30_000,
        ),
      );
      // A throughput client of a CPU-bound server sleeps at once when it waits: on 2 cores its
      // default 50 µs spin per answer takes CPU the workers need (1.37× against 1.49× here).
      clients.push(await connect(icId, { socketDir: dir, spinMicros: 0 }));
      waiters.push(await connect(icId, { socketDir: dir }));
    }
    const heavy = POOL_SIZES.map(() => ({ rates: [] as number[], times: [] as Float64Array[] }));
    const echo = POOL_SIZES.map(() => ({ rates: [] as number[], times: [] as Float64Array[] }));
    const single = POOL_SIZES.map(() => [] as Float64Array[]);
    const ceilings: number[] = [];
    let othersTicks = 0;
    let seconds = 0;
    // Warm-up, thrown away: every path compiled, every worker's module hot.
    for (const [m, client] of clients.entries()) {
      await burst(client, WORK, Math.max(40, workTotal / 10));
      await burst(client, ECHO, echoTotal / 10);
      await oneInFlight(waiters[m]!, oneN / 10);
    }
    await parallelWork(ceilingWorkers, 2, 20);
    for (let r = 0; r < rounds; r++) {
      const pids = peers.map((p) => p.pid);
      const before = cpuTicks(pids);
      const started = clock();
      for (let k = 0; k < POOL_SIZES.length; k++) {
        const m = (k + r) % POOL_SIZES.length;
        const client = clients[m]!;
        const h = await burst(client, WORK, workTotal);
        heavy[m]!.rates.push(h.perSecond);
        heavy[m]!.times.push(h.times);
        const e = await burst(client, ECHO, echoTotal);
        echo[m]!.rates.push(e.perSecond);
        echo[m]!.times.push(e.times);
        single[m]!.push(await oneInFlight(waiters[m]!, oneN));
      }
      const one = await parallelWork(ceilingWorkers, 1, workTotal / 4);
      ceilings.push(await parallelWork(ceilingWorkers, 2, workTotal / 2) / one);
      const after = cpuTicks(pids);
      if (before !== undefined && after !== undefined) {
        othersTicks += after.machine - before.machine - (after.ours - before.ours);
        seconds += (clock() - started) / 1000;
      }
    }
    const rows: PoolRow[] = [];
    for (const [handler, runs] of [["cpu", heavy], ["echo", echo]] as const) {
      POOL_SIZES.forEach((workers, m) => {
        const { rates, times } = runs[m]!;
        const s = summarize(concat(times));
        const one = handler === "echo" ? summarize(concat(single[m]!)) : undefined;
        rows.push({
          handler,
          workers,
          perSecond: median(rates),
          low: Math.min(...rates),
          high: Math.max(...rates),
          p50: s.p50,
          p99: s.p99,
          ...(one === undefined ? {} : { one: { p50: one.p50, p99: one.p99 } }),
        });
      });
    }
    return {
      rows,
      workMicros: workMicros(),
      rounds,
      ceiling: median(ceilings),
      others: seconds > 0 ? Math.max(0, othersTicks / 100 / seconds) : NaN,
    };
  } finally {
    for (const w of ceilingWorkers) w.terminate();
    for (const c of [...clients, ...waiters]) c.close();
    await Promise.all(peers.map((p) => p.kill()));
  }
}
