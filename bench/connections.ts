/**
 * The bench suite's connection scenarios: what idle connections cost a server and the
 * connections that work beside them, and how fast a client can connect, issue a command and
 * close — shmcall against a Deno Unix-socket server in the same run.
 *
 * @module
 */

import { connect } from "../mod.ts";
import { clock, summarize, type Summary } from "./percentiles.ts";
import type { CycleRow, IdleRow } from "./report.ts";
import { Peer } from "../tests/peers/spawn.ts";
import { SocketEcho } from "./socket_client.ts";
import { idleCpu, threadNames } from "../tests/peers/proc.ts";

const here = (file: string) => decodeURIComponent(new URL(file, import.meta.url).pathname);

/**
 * For each count of idle connections, an idler process (`tests/peers/idler.ts`) holds that
 * many against a fresh server process, and this process measures one active connection's
 * synchronous 64-byte round trips beside them; the server's threads and its CPU while
 * everything is idle are read from /proc. Once for shmcall (`examples/echo_server.ts`), once
 * for the Deno Unix-socket server (`bench/peers/socket_server.ts`).
 */
export async function idleConnections(
  dir: string,
  counts: number[],
  samples: number,
  idleSeconds: number,
): Promise<IdleRow[]> {
  const rows: IdleRow[] = [];
  for (const kind of ["shm", "socket"] as const) {
    const socketPath = `${dir}/idle-socket.sock`;
    await using server = await Peer.start(
      Deno.execPath(),
      kind === "shm"
        ? ["run", "-A", here("../examples/echo_server.ts"), "idle", dir]
        : ["run", "-A", here("./peers/socket_server.ts"), socketPath],
    );
    for (const idle of counts) {
      console.error(`${kind}: one active connection beside ${idle} idle ones`);
      let connectMs = 0;
      const idler = idle === 0 ? undefined : await Peer.start(Deno.execPath(), [
        "run",
        "-A",
        here("../tests/peers/idler.ts"),
        kind,
        kind === "shm" ? "idle" : socketPath,
        dir,
        String(idle),
      ], 120_000);
      try {
        if (idler !== undefined) {
          const opened = JSON.parse(await idler.expect("{", 120_000)) as { ms: number };
          connectMs = opened.ms;
        }
        const summary = await activeClients(
          kind,
          kind === "shm" ? "idle" : socketPath,
          dir,
          samples,
        );
        const cpu = await idleCpu(server.pid, idleSeconds);
        const names = threadNames(server.pid);
        rows.push({
          kind,
          idle,
          summary,
          threads: names.length,
          libraryThreads: names.filter((n) => n.startsWith("shmcall-")).length,
          idleCpu: cpu,
          connectMs,
        });
      } finally {
        await idler?.kill();
      }
    }
  }
  return rows;
}

/** How many fresh active-client processes measure each row of the idle scenario. */
const ACTIVE_PROCESSES = 3;

/**
 * {@linkcode activeClient} in {@linkcode ACTIVE_PROCESSES} processes one after another: each
 * percentile is the median of theirs. A tail of a few microseconds on this shared machine moves
 * by 2–3× from one process to the next with nothing else changed (measured beside 10,000 idle
 * connections and beside none alike), so one process's p99 decided a row by chance.
 */
async function activeClients(
  kind: "shm" | "socket",
  target: string,
  dir: string,
  samples: number,
): Promise<Summary> {
  const runs: Summary[] = [];
  for (let i = 0; i < ACTIVE_PROCESSES; i++) {
    runs.push(await activeClient(kind, target, dir, samples));
  }
  const median = (pick: (s: Summary) => number) =>
    runs.map(pick).sort((a, b) => a - b)[runs.length >> 1]!;
  return {
    n: runs.reduce((n, r) => n + r.n, 0),
    p50: median((r) => r.p50),
    p99: median((r) => r.p99),
    p999: median((r) => r.p999),
    max: Math.max(...runs.map((r) => r.max)),
    mean: median((r) => r.mean),
  };
}

/**
 * One active connection's 64-byte round trips, from a fresh process
 * (`bench/peers/active_client.ts`): the harness's own heap, grown by every scenario before,
 * must not stall the connection it measures.
 */
async function activeClient(kind: "shm" | "socket", target: string, dir: string, samples: number) {
  await using client = await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    here("./peers/active_client.ts"),
    kind,
    target,
    dir,
    String(samples),
  ], 30_000);
  return JSON.parse(await client.expect("{", 120_000)) as Summary;
}

/**
 * Connect → one synchronous 64-byte command → close, one after another, against the shmcall
 * server `icId` in `dir` and the socket server at `socketPath`: after a warm-up of each, rounds
 * of a second that alternate between the two kinds (so that the machine's drift falls on both
 * alike) until `seconds` of each ran. A kind's rate is the median of its rounds' rates.
 */
export async function connectCycles(
  icId: string,
  dir: string,
  socketPath: string,
  seconds: number,
): Promise<CycleRow[]> {
  const input = new Uint8Array(64).fill(5);
  const output = new Uint8Array(64);
  const shm = async () => {
    const client = await connect(icId, { socketDir: dir });
    try {
      client.execute(1, { input, output });
    } finally {
      client.close();
    }
    if (output[63] !== 5) throw new Error("connect cycle: a wrong echo");
  };
  const socket = async () => {
    const conn = await Deno.connect({ transport: "unix", path: socketPath });
    try {
      const s = new SocketEcho(conn, 64);
      s.body.fill(5);
      await s.roundTrip();
      if (s.echo[63] !== 5) throw new Error("connect cycle: a wrong echo");
    } finally {
      conn.close();
    }
  };
  const kinds = [["shm", shm], ["socket", socket]] as const;
  for (const [, cycle] of kinds) await timed(cycle, 0.5);
  const rates: Record<string, number[]> = { shm: [], socket: [] };
  const times: Record<string, number[]> = { shm: [], socket: [] };
  for (let round = 0; round < Math.max(1, Math.round(seconds)); round++) {
    for (const [kind, cycle] of round % 2 === 0 ? kinds : [...kinds].reverse()) {
      const t = await timed(cycle, 1);
      rates[kind]!.push(t.length);
      times[kind]!.push(...t);
    }
  }
  return kinds.map(([kind]) => ({
    kind,
    perSecond: rates[kind]!.sort((a, b) => a - b)[rates[kind]!.length >> 1]!,
    summary: summarize(Float64Array.from(times[kind]!)),
  }));
}

/** Runs `cycle` one after another for `seconds`; each one's time (ms). */
async function timed(cycle: () => Promise<void>, seconds: number): Promise<number[]> {
  const times: number[] = [];
  const end = clock() + seconds * 1000;
  while (clock() < end) {
    const start = clock();
    await cycle();
    times.push(clock() - start);
  }
  return times;
}
