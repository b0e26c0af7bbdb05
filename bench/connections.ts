/**
 * The bench suite's connection scenarios: what idle connections cost a server and the
 * connections that work beside them, and how fast a client can connect, issue a command and
 * close — shmcall against a Deno Unix-socket server in the same run.
 *
 * @module
 */

import { connect } from "../mod.ts";
import { clock, sample, summarize, type Summary } from "./percentiles.ts";
import { Peer } from "../tests/peers/spawn.ts";
import { SocketEcho } from "./socket_client.ts";

const here = (file: string) => decodeURIComponent(new URL(file, import.meta.url).pathname);

/** One active connection's 64-byte round trips beside `idle` idle ones, and the server's cost. */
export interface IdleRow {
  /** `shm`: shmcall (sync); `socket`: the Deno Unix-socket server. */
  kind: "shm" | "socket";
  idle: number;
  /** The active connection's round trips (µs). */
  summary: Summary;
  /** Threads of the server process, and those of them that are shmcall's own (`shmcall-*`). */
  threads: number;
  libraryThreads: number;
  /** CPU the idle server used over the measured seconds, in cores (user + system). */
  idleCpu: number;
  /** How long the idle connections took to open, in ms. */
  connectMs: number;
}

/** Connect → one 64-byte command → close, per second. */
export interface CycleRow {
  kind: "shm" | "socket";
  perSecond: number;
  /** Each cycle's time (µs). */
  summary: Summary;
}

/** Clock ticks per second of `/proc/<pid>/stat`'s times (`getconf CLK_TCK`, 100 on Linux). */
const TICKS = 100;

/** User and system CPU of process `pid` so far, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // The fields after the command name (which may hold spaces) start after its ')'.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
  return (Number(f[11]) + Number(f[12])) / TICKS;
}

/** The names of process `pid`'s threads. */
function threadNames(pid: number): string[] {
  return [...Deno.readDirSync(`/proc/${pid}/task`)].map((t) =>
    Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/comm`).trim()
  );
}

/** The CPU (in cores) process `pid` uses over `seconds` while nothing is asked of it. */
async function idleCpu(pid: number, seconds: number): Promise<number> {
  const before = cpuSeconds(pid);
  const start = clock();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  return (cpuSeconds(pid) - before) / ((clock() - start) / 1000);
}

/**
 * For each count of idle connections, an idler process (`bench/peers/idler.ts`) holds that
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
        here("./peers/idler.ts"),
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

async function activeShm(dir: string, samples: number): Promise<Summary> {
  using client = await connect("idle", { socketDir: dir });
  const input = new Uint8Array(64);
  const output = new Uint8Array(64);
  const run = (i: number) => {
    input[0] = i & 0xff;
    client.execute(1, { input, output });
    if (output[0] !== (i & 0xff)) throw new Error("idle scenario: a wrong echo");
  };
  await sample(samples / 4, 0, run);
  return summarize(await sample(samples, 0, run));
}

async function activeSocket(path: string, samples: number): Promise<Summary> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    const socket = new SocketEcho(conn, 64);
    const run = async (i: number) => {
      socket.body[0] = i & 0xff;
      await socket.roundTrip();
      if (socket.echo[0] !== (i & 0xff)) throw new Error("idle scenario: a wrong echo");
    };
    await sample(samples / 4, 0, run);
    return summarize(await sample(samples, 0, run));
  } finally {
    conn.close();
  }
}

/**
 * Connect → one synchronous 64-byte command → close, as many times as fit in `seconds`,
 * against the shmcall server `icId` in `dir` and the socket server at `socketPath`; each
 * kind after a warm-up of a tenth as long.
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
  const rows: CycleRow[] = [];
  for (const [kind, cycle] of [["shm", shm], ["socket", socket]] as const) {
    await timed(cycle, seconds / 10);
    const times = await timed(cycle, seconds);
    rows.push({
      kind,
      perSecond: times.length / seconds,
      summary: summarize(Float64Array.from(times)),
    });
  }
  return rows;
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
