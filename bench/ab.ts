/**
 * An A/B comparison of two (to four) builds of shmcall — each a source tree with its own TypeScript and
 * its own core library — on the Deno ↔ Deno 64-byte round trip, synchronous and asynchronous
 * one in flight, in one sitting: runs alternate A, B, B, A, … so that drift of the machine
 * falls on every side alike. Each run also says how much CPU the rest of the machine used
 * meanwhile (`others`, in CPUs), to tell a disturbed run.
 *
 * ```sh
 * SHMCALL_AB_A=/path/to/tree-a SHMCALL_AB_B=/path/to/tree-b [SHMCALL_AB_C=…] deno run -A bench/ab.ts [runs]
 * ```
 *
 * Each tree needs `mod.ts`, `examples/echo_server.ts` and its library at
 * `target/release/libshmcall.so` (or the path in `SHMCALL_AB_A_LIB` / `SHMCALL_AB_B_LIB`).
 * Every run is a fresh pair of processes (a client of that tree's `mod.ts` against that tree's
 * echo server, both loading that tree's library); it prints one JSON line, and the end prints
 * each side's median and range over its runs.
 *
 * @module
 */

import { pathToFileURL } from "node:url";
import { sample, summarize } from "./percentiles.ts";
import { Peer, tempSocketDir } from "../tests/peers/spawn.ts";

const SAMPLES = Number(Deno.env.get("SHMCALL_AB_SAMPLES") ?? 50_000);
const here = decodeURIComponent(new URL(import.meta.url).pathname);

/** One run in this process: a client of `root`'s `mod.ts` against `root`'s echo server. */
async function runOnce(root: string): Promise<void> {
  const { connect } = await import(
    pathToFileURL(`${root}/mod.ts`).href
  ) as typeof import("../mod.ts");
  using dir = tempSocketDir();
  await using _server = await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    `${root}/examples/echo_server.ts`,
    "ab",
    dir.path,
  ], 30_000);
  using client = await connect("ab", { socketDir: dir.path });
  const input = new Uint8Array(64);
  const output = new Uint8Array(64);
  const completion = () => {};
  const check = (i: number) => {
    if (output[0] !== (i & 0xff) || output[63] !== (i & 0xff)) throw new Error("bad echo");
  };
  const sync = (i: number) => {
    input[0] = input[63] = i & 0xff;
    client.execute(1, { input, output });
    check(i);
  };
  const async = async (i: number) => {
    input[0] = input[63] = i & 0xff;
    await client.execute(1, { input, output, completion });
    check(i);
  };
  // Warm-up passes, thrown away, then one measured pass of each.
  for (let pass = 0; pass < 2; pass++) {
    await sample(SAMPLES / 5, 0, sync);
    await sample(SAMPLES / 5, 0, async);
  }
  const s = summarize(await sample(SAMPLES, 0, sync));
  const a = summarize(await sample(SAMPLES, 0, async));
  console.log(JSON.stringify({ sync: [s.p50, s.p99], async: [a.p50, a.p99] }));
}

interface Run {
  sync: [number, number];
  async: [number, number];
  /** CPUs busy with other processes during the run (0 to the number of CPUs). */
  others?: number;
  steal?: number;
}

/** Jiffies the whole machine spent busy (`/proc/stat`), and those of this process and its reaped children. */
function cpuTicks(): { machine: number; steal: number; ours: number } {
  const cpu = Deno.readTextFileSync("/proc/stat").split("\n")[0]!.trim().split(/\s+/).slice(1)
    .map(Number);
  // user nice system idle iowait irq softirq steal
  const machine = cpu[0]! + cpu[1]! + cpu[2]! + cpu[5]! + cpu[6]!;
  // After the command name (which may hold spaces): fields 14–17 are utime stime cutime cstime.
  const self = Deno.readTextFileSync("/proc/self/stat");
  const f = self.slice(self.lastIndexOf(")") + 2).split(" ").map(Number);
  return { machine, steal: cpu[7]!, ours: f[11]! + f[12]! + f[13]! + f[14]! };
}

async function child(root: string, lib: string): Promise<Run> {
  const before = cpuTicks();
  const started = Date.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", here, "--run", root],
    env: { SHMCALL_LIB: lib },
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const line = new TextDecoder().decode(out.stdout).split("\n").find((l) => l.startsWith("{"));
  if (!out.success || line === undefined) throw new Error(`the run of ${root} failed`);
  const after = cpuTicks();
  // What the rest of the machine used meanwhile, in CPUs (of 2 here), and what was stolen.
  const seconds = (Date.now() - started) / 1000;
  const hz = 100;
  const others = (after.machine - before.machine - (after.ours - before.ours)) / hz / seconds;
  const steal = (after.steal - before.steal) / hz / seconds;
  return { ...JSON.parse(line) as Run, others, steal };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

async function main(): Promise<void> {
  if (Deno.args[0] === "--run") return runOnce(Deno.args[1]!);
  const runs = Number(Deno.args[0] ?? 8);
  const sides = ["A", "B", "C", "D"].flatMap((name) => {
    const root = Deno.env.get(`SHMCALL_AB_${name}`);
    if (root === undefined) return [];
    const lib = Deno.env.get(`SHMCALL_AB_${name}_LIB`) ?? `${root}/target/release/libshmcall.so`;
    return [{ name, root, lib, runs: [] as Run[] }];
  });
  if (sides.length < 2) throw new Error("set SHMCALL_AB_A and SHMCALL_AB_B to source trees");
  for (let r = 0; r < runs; r++) {
    // Each round in another order (rotated, and reversed every other round): each side is
    // as often early as late.
    const k = Math.floor(r / 2) % sides.length;
    const order = [...sides.slice(k), ...sides.slice(0, k)];
    for (const s of r % 2 === 0 ? order : order.reverse()) {
      const run = await child(s.root, s.lib);
      s.runs.push(run);
      console.log(JSON.stringify({ side: s.name, run: r, ...run }));
    }
  }
  const f = (x: number) => x.toFixed(2);
  // Quiet runs: the rest of the machine used less than a quarter of a CPU meanwhile.
  const QUIET = 0.25;
  for (const quiet of [false, true]) {
    console.log(quiet ? `runs with others < ${QUIET} CPU:` : "every run:");
    for (const s of sides) {
      const runs = quiet ? s.runs.filter((x) => (x.others ?? 0) < QUIET) : s.runs;
      if (runs.length === 0) continue;
      for (const mode of ["sync", "async"] as const) {
        const p50 = runs.map((x) => x[mode][0]);
        const p99 = runs.map((x) => x[mode][1]);
        console.log(
          `  ${s.name} ${mode}: p50 ${f(median(p50))} µs (${f(Math.min(...p50))}–${
            f(Math.max(...p50))
          }), p99 ${f(median(p99))} µs (${f(Math.min(...p99))}–${
            f(Math.max(...p99))
          }), ${runs.length} runs; ${s.root}`,
        );
      }
    }
  }
}

if (import.meta.main) await main();
