/**
 * The bench suite's connection scenarios: what idle connections cost a server and the
 * connections that work beside them, and how fast a client can connect, issue a command and
 * close — shmcall against a Deno Unix-socket server in the same run.
 *
 * @module
 */

import { connect } from "../mod.ts";
import { clock, sample, summarize, type Summary } from "./percentiles.ts";
import type { CycleRow, IdleRow } from "./report.ts";
import { Peer } from "../tests/peers/spawn.ts";
import { connectUnix, SocketEcho } from "./socket_client.ts";
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
        const summary = kind === "shm"
          ? await activeShm(dir, samples)
          : await activeSocket(socketPath, samples);
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

/** Rounds an active connection's round trips are measured in (see {@linkcode rounds}). */
const ROUNDS = 5;

/**
 * `samples` round trips in {@linkcode ROUNDS} rounds, after as many thrown away (a fresh
 * server compiles and optimizes its paths over the first tens of thousands of commands, and
 * takes the events of the connections just opened): the summary of every round trip, with the
 * median of the rounds' p50 and p99. A machine shared with others stalls now and then for
 * reasons of its own; a median of rounds keeps one stall from deciding a row.
 */
async function rounds(
  samples: number,
  run: (i: number) => void | Promise<void>,
): Promise<Summary> {
  await sample(samples, 0, run);
  const all: Float64Array[] = [];
  for (let r = 0; r < ROUNDS; r++) all.push(await sample(Math.ceil(samples / ROUNDS), 0, run));
  const each = all.map((a) => summarize(a));
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1]!;
  const whole = new Float64Array(all.reduce((n, a) => n + a.length, 0));
  all.reduce((at, a) => (whole.set(a, at), at + a.length), 0);
  return {
    ...summarize(whole),
    p50: median(each.map((x) => x.p50)),
    p99: median(each.map((x) => x.p99)),
  };
}

async function activeShm(dir: string, samples: number): Promise<Summary> {
  using client = await connect("idle", { socketDir: dir });
  const input = new Uint8Array(64);
  const output = new Uint8Array(64);
  return await rounds(samples, (i: number) => {
    input[0] = i & 0xff;
    client.execute(1, { input, output });
    if (output[0] !== (i & 0xff)) throw new Error("idle scenario: a wrong echo");
  });
}

async function activeSocket(path: string, samples: number): Promise<Summary> {
  const conn = await connectUnix(path);
  try {
    const socket = new SocketEcho(conn, 64);
    return await rounds(samples, async (i: number) => {
      socket.body[0] = i & 0xff;
      await socket.roundTrip();
      if (socket.echo[0] !== (i & 0xff)) throw new Error("idle scenario: a wrong echo");
    });
  } finally {
    conn.close();
  }
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
