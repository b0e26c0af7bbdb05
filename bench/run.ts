/**
 * The bench suite's percentile harness (`deno task bench`): every scenario of `bench/README.md`
 * against its baselines, measured in one run, then the results written into `bench/README.md`
 * and `bench/chart.svg`.
 *
 * `deno run -A bench/run.ts`. It runs the Rust floor first (`cargo bench --bench roundtrip`,
 * whose lines it reads back through `SHMCALL_BENCH_JSON`). `SHMCALL_BENCH_QUICK=1` takes a
 * tenth of the samples (for a quick look; the README is not rewritten then).
 *
 * @module
 */

import { connect } from "../mod.ts";
import { clock, sample, summarize, type Summary } from "./percentiles.ts";
import { Peer, tempSocketDir } from "../tests/peers/spawn.ts";
import { SocketEcho } from "./socket_client.ts";
import { IN_FLIGHT, poolBench } from "./pool.ts";
import { connectCycles, idleConnections } from "./connections.ts";
import { cpuSeconds } from "../tests/peers/proc.ts";
import { eventsBench, eventsMarkdown, perfSyscalls } from "./events.ts";
import { natsBench, natsMarkdown } from "./nats.ts";
import {
  ASYNC,
  type LatencyRow,
  type LoadRow,
  NODE_ASYNC,
  NODE_IPC,
  NODE_SOCKET,
  NODE_SYNC,
  type NodeThroughputRow,
  type Results,
  type RustRow,
  SOCKET,
  SYNC,
  type SyscallRow,
  type ThroughputRow,
  writeReport,
  ZERO_COPY,
} from "./report.ts";

const ECHO = 1;
const SIZES = [64, 4 << 10, 64 << 10, 1 << 20];
const QUICK = Deno.env.get("SHMCALL_BENCH_QUICK") === "1";
const here = (file: string) => decodeURIComponent(new URL(file, import.meta.url).pathname);

/** Round trips measured per payload size (a tenth with `SHMCALL_BENCH_QUICK=1`). */
function samplesFor(size: number): number {
  const n = size <= 4096 ? 20_000 : size <= 65536 ? 4_000 : 500;
  return QUICK ? Math.max(50, n / 10) : n;
}

const warmupFor = (size: number) => Math.max(20, Math.floor(samplesFor(size) / 4));

function checkMark(area: Uint8Array, v: number, what: string): void {
  if (area[0] !== v || area[area.length >> 1] !== v || area[area.length - 1] !== v) {
    throw new Error(`${what}: the echo came back wrong`);
  }
}

// ---------------------------------------------------------------------------------------------
// The Unix-socket baseline (bench/peers/socket_server.ts)

async function socketRoundTrips(path: string, size: number): Promise<Summary> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    const socket = new SocketEcho(conn, size);
    return summarize(
      await sample(samplesFor(size), warmupFor(size), async (i) => {
        // Built in full, as the copying path builds its input.
        socket.body.fill(i & 0xff);
        await socket.roundTrip();
        checkMark(socket.echo, i & 0xff, `socket ${size} B`);
      }),
    );
  } finally {
    conn.close();
  }
}

/** Requests per second with `inFlight` 64-byte requests outstanding, writes batched. */
async function socketPipelined(path: string, inFlight: number, total: number): Promise<number> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    const size = 64;
    const frameLength = 4 + size;
    const frames = new Uint8Array(frameLength * inFlight);
    const view = new DataView(frames.buffer);
    for (let k = 0; k < inFlight; k++) view.setUint32(k * frameLength, size, true);
    const buf = new Uint8Array(1 << 16);
    const send = async (count: number) => {
      const bytes = frames.subarray(0, count * frameLength);
      for (let sent = 0; sent < bytes.length;) sent += await conn.write(bytes.subarray(sent));
    };
    const start = clock();
    let sent = Math.min(inFlight, total);
    await send(sent);
    let bytesIn = 0;
    let received = 0;
    while (received < total) {
      const n = await conn.read(buf);
      if (n === null) throw new Error("the socket server closed the connection");
      bytesIn += n;
      const now = Math.floor(bytesIn / frameLength);
      const more = Math.min(now - received, total - sent);
      received = now;
      if (more > 0) {
        sent += more;
        await send(more);
      }
    }
    return total / ((clock() - start) / 1000);
  } finally {
    conn.close();
  }
}

// ---------------------------------------------------------------------------------------------
// shmcall (a Deno server peer: examples/echo_server.ts)

type Client = Awaited<ReturnType<typeof connect>>;

function shmSync(client: Client, size: number): Promise<Float64Array> {
  const input = new Uint8Array(size);
  const output = new Uint8Array(size);
  return sample(samplesFor(size), warmupFor(size), (i) => {
    // The copying path: the input is built in an array of ours, the library copies it in,
    // and the output out.
    input.fill(i & 0xff);
    client.execute(ECHO, { input, output });
    checkMark(output, i & 0xff, `sync ${size} B`);
  });
}

function shmZeroCopy(client: Client, size: number): Promise<Float64Array> {
  return sample(samplesFor(size), warmupFor(size), (i) => {
    // Zero copy: the input is built straight in shared memory and the output read there.
    client.execute(ECHO, {
      inputLength: size,
      outputLength: size,
      inputPrepare: (area) => area.fill(i & 0xff),
      outputPost: (area) => checkMark(area, i & 0xff, `zero-copy ${size} B`),
    });
  });
}

function shmAsync(client: Client, size: number): Promise<Float64Array> {
  const input = new Uint8Array(size);
  const output = new Uint8Array(size);
  const completion = () => {};
  return sample(samplesFor(size), warmupFor(size), async (i) => {
    input.fill(i & 0xff);
    await client.execute(ECHO, { input, output, completion });
    checkMark(output, i & 0xff, `async ${size} B`);
  });
}

/**
 * Runs `f` (which answers a rate of `count` operations) and measures the CPU this process
 * and the server `serverPid` spent meanwhile, all threads, from /proc: µs per operation.
 */
async function withCpu(
  serverPid: number,
  count: number,
  f: () => Promise<number>,
): Promise<{ rate: number; cpu: { client: number; server: number } }> {
  const client0 = cpuSeconds(Deno.pid);
  const server0 = cpuSeconds(serverPid);
  const rate = await f();
  const perOp = (s: number) => s / count * 1e6;
  return {
    rate,
    cpu: {
      client: perOp(cpuSeconds(Deno.pid) - client0),
      server: perOp(cpuSeconds(serverPid) - server0),
    },
  };
}

/** Commands per second with `inFlight` asynchronous 64-byte commands outstanding. */
async function shmPipelined(client: Client, inFlight: number, total: number): Promise<number> {
  const input = new Uint8Array(64).fill(3);
  const completion = () => {};
  let issued = 0;
  const worker = async () => {
    const output = new Uint8Array(64);
    while (issued < total) {
      issued++;
      await client.execute(ECHO, { input, output, completion });
    }
  };
  const start = clock();
  await Promise.all(Array.from({ length: inFlight }, worker));
  return total / ((clock() - start) / 1000);
}

/**
 * The most any Promise-per-command API can do here: `inFlight` workers awaiting Promises that
 * resolve at once, with no IPC at all (per second). `execute` with a completion returns a
 * Promise (the API's contract), so pipelined shmcall cannot exceed this.
 */
async function promiseFloor(inFlight: number, total: number): Promise<number> {
  let issued = 0;
  const worker = async () => {
    while (issued < total) {
      issued++;
      await new Promise<void>((resolve) => queueMicrotask(resolve));
    }
  };
  const start = clock();
  await Promise.all(Array.from({ length: inFlight }, worker));
  return total / ((clock() - start) / 1000);
}

/**
 * The least work of a 1 MiB zero-copy round trip, in one process: the input built in place
 * (a fill) and the server's echo (a copy), in µs (p50 of repeated runs). Against the socket's
 * round trip it bounds the speed-up any shared-memory echo can reach.
 */
function memoryFloor(size: number): number {
  const segment = new Uint8Array(4 * size);
  const input = segment.subarray(0, size);
  const output = segment.subarray(2 * size, 3 * size);
  const runs = new Float64Array(QUICK ? 50 : 300);
  for (let i = -20; i < runs.length; i++) {
    const start = clock();
    input.fill(i & 0xff);
    output.set(input);
    if (i >= 0) runs[i] = (clock() - start) * 1000;
  }
  return runs.sort()[runs.length >> 1]!;
}

/**
 * Synchronous 1 MiB round trips without `output`: the library makes the result's array each
 * time (after as many thrown away).
 */
function shmNoOutput(client: Client, size: number): Promise<Float64Array> {
  const input = new Uint8Array(size);
  return sample(samplesFor(size), warmupFor(size), (i) => {
    input.fill(i & 0xff);
    const r = client.execute(ECHO, { input, outputLength: size });
    checkMark(r.output, i & 0xff, `no output ${size} B`);
  });
}

/**
 * What a fresh copy of a `size`-byte array costs in one process beyond a copy into an array
 * kept from call to call (p50 µs each, the difference): the least a call without `output` adds
 * to one with it, which copies the answer into the caller's array instead.
 */
function freshArray(size: number): number {
  const source = new Uint8Array(size).fill(1);
  const into = new Uint8Array(size);
  const p50 = (copy: () => Uint8Array) => {
    const runs = new Float64Array(QUICK ? 50 : 300);
    let kept = 0;
    for (let i = -20; i < runs.length; i++) {
      const start = clock();
      const made = copy();
      if (i >= 0) runs[i] = (clock() - start) * 1000;
      kept += made[size - 1]!;
    }
    if (kept === 0) throw new Error("the copies did not happen");
    return runs.sort()[runs.length >> 1]!;
  };
  const fresh = p50(() => source.slice());
  const kept = p50(() => {
    into.set(source);
    return into;
  });
  return Math.max(0, fresh - kept);
}

// ---------------------------------------------------------------------------------------------
// Several clients at once (bench/peers/load_client.ts), and Node's IPC channel

async function fourClients(kind: "shm" | "socket", target: string, dir: string) {
  const seconds = QUICK ? 0.5 : 2;
  const startAt = Date.now() + 1500;
  const peers: Peer[] = [];
  try {
    for (let k = 0; k < 4; k++) {
      peers.push(
        await Peer.start(Deno.execPath(), [
          "run",
          "-A",
          here("./peers/load_client.ts"),
          kind,
          target,
          dir,
          "64",
          String(startAt),
          String(seconds),
        ]),
      );
    }
    const lines = await Promise.all(peers.map((p) => p.expect("{", 30_000)));
    const each = lines.map((l) => JSON.parse(l) as { count: number; p50: number; p99: number });
    const p50s = each.map((e) => e.p50).sort((a, b) => a - b);
    return {
      perSecond: each.reduce((sum, e) => sum + e.count, 0) / seconds,
      p50: (p50s[1]! + p50s[2]!) / 2,
      p99: Math.max(...each.map((e) => e.p99)),
    };
  } finally {
    await Promise.all(peers.map((p) => p.kill()));
  }
}

/** The Node package, built by `deno task build:node`; the Node ↔ Node shmcall rows need it. */
const NODE_PACKAGE = here("../node/dist/node/index.js");

/**
 * Runs `node bench/peers/<script> <samples> <warmup> <size>` and returns its JSON lines.
 */
async function nodeLines(script: string, size: number) {
  const args = [String(samplesFor(size)), String(warmupFor(size)), String(size)];
  return (await nodeJson(script, args, `for ${size} B`)) as (Summary & {
    size: number;
    mode?: "sync" | "async";
  })[];
}

/**
 * Runs `node bench/peers/<script> <args>` (the peer bounds its own waits; this bounds the whole
 * process too) and returns its JSON lines; `what` names the run in a failure.
 */
async function nodeJson(script: string, args: string[], what: string): Promise<unknown[]> {
  const child = new Deno.Command("node", {
    args: [here(`./peers/${script}`), ...args],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 180_000);
  try {
    const out = await child.output();
    if (!out.success) throw new Error(`${script} failed ${what} (exit code ${out.code})`);
    return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l));
  } finally {
    clearTimeout(timer);
  }
}

/** A Node peer's pipelined rate: `--pipelined <in-flight> <total>` of `script`. */
async function nodeRate(script: string, inFlight: number, total: number): Promise<number> {
  const what = `pipelined, ${inFlight} in flight`;
  const [line] = await nodeJson(script, ["--pipelined", String(inFlight), String(total)], what);
  if (line === undefined) throw new Error(`${script} printed no result ${what}`);
  return (line as { rate: number }).rate;
}

/** Node ↔ Node pipelined, 64 in flight: shmcall against a Node socket whose writes are batched. */
async function nodePipelined(total: number): Promise<NodeThroughputRow[]> {
  try {
    Deno.statSync(NODE_PACKAGE);
  } catch {
    return [];
  }
  const inFlight = 64;
  return [{
    inFlight,
    shm: await nodeRate("node_shmcall.mjs", inFlight, total),
    socket: await nodeRate("node_socket.mjs", inFlight, total),
  }];
}

/**
 * The Node table: Node's IPC channel, a Node Unix socket and shmcall between two Node processes,
 * each size in fresh processes so that each gets its sample count.
 */
async function nodePeers(): Promise<LatencyRow[]> {
  let shmcall = true;
  try {
    Deno.statSync(NODE_PACKAGE);
  } catch {
    shmcall = false;
    console.error(
      `no Node package at ${NODE_PACKAGE} (deno task build:node): Node ↔ Node shmcall not run`,
    );
  }
  const rows: LatencyRow[] = [];
  const row = (scenario: string, line: Summary & { size: number }) => {
    const { n, p50, p99, p999, max, mean } = line;
    rows.push({ scenario, size: line.size, summary: { n, p50, p99, p999, max, mean } });
  };
  for (const size of SIZES) {
    console.error(`Node ↔ Node, ${size} B`);
    for (const line of await nodeLines("node_ipc.mjs", size)) row(NODE_IPC, line);
    for (const line of await nodeLines("node_socket.mjs", size)) row(NODE_SOCKET, line);
    if (!shmcall) continue;
    for (const line of await nodeLines("node_shmcall.mjs", size)) {
      row(line.mode === "async" ? NODE_ASYNC : NODE_SYNC, line);
    }
  }
  return rows;
}

/**
 * System calls per command while both sides are busy, counted two ways while a Deno server and
 * a Deno client run synchronous 64-byte round trips: `strace -c -f` attached for a second (the
 * tool the target names; it slows each system call it sees, which can only raise the count),
 * then `perf stat -e raw_syscalls:sys_enter` for a second (a tracepoint counter, which leaves
 * system calls at full speed). The commands of each window are estimated from the client's
 * rate over its whole run.
 */
async function syscalls(dir: string): Promise<SyscallRow[]> {
  const tools = [];
  if (await runs("strace", ["-V"])) tools.push(straceWindow);
  else console.error("no strace on this machine: not counted with strace");
  if (await runs("perf", ["--version"])) tools.push(perfWindow);
  else console.error("no perf on this machine: not counted with perf");
  if (tools.length === 0) return [];
  const seconds = QUICK ? 3 : 4;
  const startAt = Date.now() + 1500;
  await using server = await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    here("../examples/echo_server.ts"),
    "syscalls",
    dir,
  ]);
  await using client = await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    here("./peers/load_client.ts"),
    "shm",
    "syscalls",
    dir,
    "64",
    String(startAt),
    String(seconds),
  ]);
  await new Promise((r) => setTimeout(r, startAt + 300 - Date.now()));
  const windows: { tool: string; seconds: number; calls: number; top: string }[] = [];
  for (const tool of tools) {
    const w = await tool([server.pid, client.pid]);
    if (w !== undefined) windows.push(w);
  }
  const done = JSON.parse(await client.expect("{", 30_000)) as { count: number };
  return windows.map((w) => ({
    tool: w.tool,
    commands: Math.round(done.count / seconds * w.seconds),
    calls: w.calls,
    top: w.top,
  }));
}

async function runs(command: string, args: string[]): Promise<boolean> {
  try {
    const out = await new Deno.Command(command, { args, stdout: "null", stderr: "null" }).output();
    return out.success;
  } catch {
    return false;
  }
}

/** `strace -c -f` on both processes for a second: the calls and the most frequent. */
async function straceWindow(pids: number[]) {
  const out = Deno.makeTempFileSync({ prefix: "shmcall-strace-" });
  try {
    const strace = new Deno.Command("strace", {
      args: ["-f", "-c", "-o", out, ...pids.flatMap((p) => ["-p", String(p)])],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const attached = clock();
    await new Promise((r) => setTimeout(r, 1000));
    strace.kill("SIGINT");
    const { stderr } = await strace.output();
    const seconds = (clock() - attached) / 1000;
    // An empty count means "no system call" only if strace did attach (it says so).
    const said = new TextDecoder().decode(stderr);
    if (!said.includes("attached")) {
      console.error(`strace did not attach: ${said.trim()}`);
      return undefined;
    }
    const rows = Deno.readTextFileSync(out).split("\n").map((l) => l.trim().split(/\s+/))
      .filter((f) => f.length >= 5 && /^[\d.]+$/.test(f[0]!) && f[f.length - 1] !== "total");
    // Columns: % time, seconds, usecs/call, calls, [errors], name.
    const calls = rows.map((f) => ({ name: f[f.length - 1]!, calls: Number(f[3]) }));
    calls.sort((a, b) => b.calls - a.calls);
    return {
      tool: "strace -c -f",
      seconds,
      calls: calls.reduce((sum, c) => sum + c.calls, 0),
      top: calls.slice(0, 4).map((c) => `${c.name} ${c.calls}`).join(", ") || "none",
    };
  } finally {
    Deno.removeSync(out);
  }
}

/** `perf stat -e raw_syscalls:sys_enter` on every thread of both processes for a second. */
async function perfWindow(pids: number[]) {
  const calls = await perfSyscalls(["-p", pids.join(",")], 1);
  if (calls === undefined) return undefined;
  return { tool: "perf stat", seconds: 1, calls, top: "(perf counts, not names)" };
}

/**
 * Heap allocations per command in the Rust hot path: `core-rs/tests/allocations.rs` counts
 * them with a counting global allocator over 40 000 round trips and fails on any.
 */
async function allocations(): Promise<boolean> {
  const out = await new Deno.Command("cargo", {
    args: ["test", "--release", "--locked", "-p", "shmcall-core", "--test", "allocations"],
    cwd: here(".."),
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) console.error(new TextDecoder().decode(out.stdout));
  return out.success;
}

/** The Rust floor: runs `cargo bench --bench roundtrip` and reads its JSON lines back. */
async function rustFloor(): Promise<RustRow[]> {
  const path = Deno.makeTempFileSync({ prefix: "shmcall-bench-", suffix: ".jsonl" });
  try {
    const samples = QUICK ? "2000" : "20000";
    const status = await new Deno.Command("cargo", {
      args: ["bench", "--locked", "-p", "shmcall-core", "--bench", "roundtrip"],
      cwd: here(".."),
      env: { SHMCALL_BENCH_JSON: path, SHMCALL_BENCH_SAMPLES: samples },
      stdout: "inherit",
      stderr: "inherit",
    }).spawn().status;
    if (!status.success) throw new Error("cargo bench --bench roundtrip failed");
    return Deno.readTextFileSync(path).split("\n").filter((l) => l.trim() !== "").map((l) => {
      const j = JSON.parse(l) as { scenario: string; p50_ns: number; p99_ns: number };
      return { scenario: j.scenario, p50: j.p50_ns / 1000, p99: j.p99_ns / 1000 };
    });
  } finally {
    Deno.removeSync(path);
  }
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const started = Date.now();
  console.error("the Rust floor");
  const rust = await rustFloor();
  using dir = tempSocketDir();
  const socketPath = `${dir.path}/socket.sock`;
  await using shmServer = await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    here("../examples/echo_server.ts"),
    "bench",
    dir.path,
  ]);
  await using socketServer = await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    here("./peers/socket_server.ts"),
    socketPath,
  ]);
  const latency: LatencyRow[] = [];
  let noOutput: Results["noOutput"];
  {
    using client = await connect("bench", { socketDir: dir.path });
    // A first pass at 64 B, thrown away: every function on the way is compiled and optimized
    // before anything counts (the first scenario measured would pay for it otherwise).
    console.error("warming up");
    for (let pass = 0; pass < 2; pass++) {
      await socketRoundTrips(socketPath, 64);
      await shmSync(client, 64);
      await shmZeroCopy(client, 64);
      await shmAsync(client, 64);
    }
    for (const size of SIZES) {
      console.error(`round trips of ${size} B`);
      latency.push({ scenario: SOCKET, size, summary: await socketRoundTrips(socketPath, size) });
      latency.push({ scenario: SYNC, size, summary: summarize(await shmSync(client, size)) });
      latency.push({
        scenario: ZERO_COPY,
        size,
        summary: summarize(await shmZeroCopy(client, size)),
      });
      latency.push({ scenario: ASYNC, size, summary: summarize(await shmAsync(client, size)) });
    }
    console.error("1 MiB without output");
    noOutput = {
      summary: summarize(await shmNoOutput(client, 1 << 20)),
      freshArray: freshArray(1 << 20),
    };
  }
  console.error("Node ↔ Node: Node's IPC channel, a Node Unix socket, shmcall");
  latency.push(...await nodePeers());

  console.error("pipelined throughput");
  const throughput: ThroughputRow[] = [];
  {
    using client = await connect("bench", { socketDir: dir.path });
    const total = QUICK ? 20_000 : 200_000;
    for (const inFlight of [64, 256]) {
      await shmPipelined(client, inFlight, total / 10);
      await socketPipelined(socketPath, inFlight, total / 10);
      await promiseFloor(inFlight, total);
      const shm = await withCpu(shmServer.pid, total, () => shmPipelined(client, inFlight, total));
      const socket = await withCpu(
        socketServer.pid,
        total,
        () => socketPipelined(socketPath, inFlight, total),
      );
      throughput.push({
        inFlight,
        shm: shm.rate,
        socket: socket.rate,
        promiseFloor: await promiseFloor(inFlight, total * 5),
        shmCpu: shm.cpu,
        socketCpu: socket.cpu,
      });
    }
  }
  console.error("Node ↔ Node pipelined throughput");
  const nodeThroughput = await nodePipelined(QUICK ? 20_000 : 200_000);

  console.error("four clients");
  const load: LoadRow[] = [
    { scenario: SYNC, ...await fourClients("shm", "bench", dir.path) },
    { scenario: SOCKET, ...await fourClients("socket", socketPath, dir.path) },
  ];

  console.error("worker pool: CPU-bound and echo handlers, inline and in pools of 1 and 2");
  const pool = await poolBench(dir.path, QUICK);

  console.error("connect → one command → close");
  const cycles = await connectCycles("bench", dir.path, socketPath, QUICK ? 2 : 7);
  console.error("idle connections beside an active one");
  const idle = await idleConnections(
    dir.path,
    QUICK ? [0, 1000] : [0, 1000, 10_000],
    QUICK ? 2_000 : 20_000,
    2,
  );

  console.error("heap allocations per command in the Rust hot path");
  const noAllocations = await allocations();
  console.error("system calls per command");
  const sys = await syscalls(dir.path);
  const events = eventsMarkdown(await eventsBench(QUICK));
  const nats = natsMarkdown(await natsBench(QUICK));

  const results: Results = {
    memoryFloor: memoryFloor(1 << 20),
    noOutput,
    syscalls: sys,
    noAllocations,
    latency,
    throughput,
    nodeThroughput,
    load,
    pool: pool.rows,
    poolSetup: {
      inFlight: IN_FLIGHT,
      workMicros: pool.workMicros,
      rounds: pool.rounds,
      ceiling: pool.ceiling,
      others: pool.others,
    },
    rust,
    idle,
    cycles,
    events,
    nats,
    seconds: (Date.now() - started) / 1000,
    quick: QUICK,
  };
  writeReport(results, here("./README.md"), here("./chart.svg"));
}

if (import.meta.main) await main();
