/**
 * The NATS scenarios of the bench suite (bench/README.md, "Beyond one host: NATS"), against a
 * real nats-server on 127.0.0.1 started here, each against its baseline in the same run:
 *
 * 1. **A remote command, one in flight**: shmcall's NATS client and server (`execute` of 64 B,
 *    an echo) against a bare NATS request/reply of 64 B between the same two processes' kind (a
 *    Deno requester here, a Deno responder peer).
 * 2. **The same, 64 in flight**: commands answered a second.
 * 3. **Local commands on a server that also serves NATS**: sync and async 64 B round trips to a
 *    server serving through NATS too, against one that does not.
 *
 * Rounds alternate the two sides of each comparison, so that a drift of the machine falls on
 * both. `deno run -A bench/nats.ts` prints the table; `bench/run.ts` takes it into the suite's
 * report. `SHMCALL_BENCH_QUICK=1` takes a tenth of the samples.
 *
 * @module
 */

import { connect as natsConnect } from "@nats-io/transport-node";
import { connect } from "../mod.ts";
import { clock, summarize, type Summary } from "./percentiles.ts";
import { NatsServer } from "../tests/peers/nats_server.ts";
import { Peer, tempSocketDir } from "../tests/peers/spawn.ts";

const QUICK = Deno.env.get("SHMCALL_BENCH_QUICK") === "1";
const here = (file: string) => decodeURIComponent(new URL(file, import.meta.url).pathname);
const PEER = here("./peers/nats_peer.ts");
const ECHO = 1;
const SIZE = 64;
/** Commands kept in flight in the throughput rows. */
export const NATS_IN_FLIGHT = 64;

/** Everything {@linkcode natsBench} measured. */
export interface NatsResults {
  /** One in flight, per path. */
  remote: { shm: Summary; bare: Summary };
  /** Answers a second with {@linkcode NATS_IN_FLIGHT} in flight, per path (median of rounds). */
  pipelined: { shm: number; bare: number };
  /** Local round trips, sync and async, to a server with and without NATS. */
  local: {
    sync: { plain: LocalFigures; nats: LocalFigures };
    async: { plain: LocalFigures; nats: LocalFigures };
  };
}

/** One way of issuing a 64-byte echo through NATS and waiting for its answer. */
type Issue = () => Promise<unknown>;

/** One-in-flight round trips (ms) of `issue`. */
async function roundTrips(issue: Issue, n: number): Promise<number[]> {
  for (let i = 0; i < Math.min(200, n); i++) await issue();
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const start = clock();
    await issue();
    out.push(clock() - start);
  }
  return out;
}

/** Answers a second with `depth` in flight for `ms`. */
async function pipelined(issue: Issue, depth: number, ms: number): Promise<number> {
  let done = 0;
  const until = clock() + ms;
  const start = clock();
  const lane = async () => {
    while (clock() < until) {
      await issue();
      done++;
    }
  };
  await Promise.all(Array.from({ length: depth }, lane));
  return done / ((clock() - start) / 1000);
}

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
}

/** Starts a peer of `role`; it prints `ready` once it serves. */
function peer(role: string, dir: string, url?: string): Promise<Peer> {
  return Peer.start(
    Deno.execPath(),
    ["run", "-A", PEER, role, dir, ...(url === undefined ? [] : [url])],
    30_000,
  );
}

/** Measures every scenario of the module doc. */
export async function natsBench(quick = QUICK): Promise<NatsResults> {
  await using nats = await NatsServer.start();
  const remote = await remoteBench(nats, quick);
  const local = await localBench(nats, quick);
  return { ...remote, local };
}

const ROUNDS = 3;
const DATA = new Uint8Array(SIZE).fill(7);
const s = (xs: number[]) => summarize(Float64Array.from(xs));

/** Scenarios 1 and 2: shmcall's client and server against a bare request/reply, alternating. */
async function remoteBench(
  nats: NatsServer,
  quick: boolean,
): Promise<Pick<NatsResults, "remote" | "pipelined">> {
  const perRound = quick ? 300 : 3000;
  const pipelineMs = quick ? 300 : 2000;
  using serverDir = tempSocketDir();
  console.error("NATS: a remote command against a bare request/reply, 64 B");
  await using _bare = await peer("bare", serverDir.path, nats.url);
  await using _shm = await peer("shm", serverDir.path, nats.url);
  const nc = await natsConnect({ servers: nats.url });
  // This process serves nothing: only NATS can answer its client.
  const client = await connect("bench-nats", { nats: { servers: nats.url } });
  try {
    const bareIssue: Issue = () => nc.request("bench.bare", DATA, { timeout: 10_000 });
    const shmIssue: Issue = () =>
      client.execute(ECHO, { input: DATA, outputLength: SIZE, completion: () => {} });
    const one = { shm: [] as number[], bare: [] as number[] };
    const many = { shm: [] as number[], bare: [] as number[] };
    for (let r = 0; r < ROUNDS; r++) {
      one.bare.push(...await roundTrips(bareIssue, perRound));
      one.shm.push(...await roundTrips(shmIssue, perRound));
    }
    console.error(`NATS: ${NATS_IN_FLIGHT} in flight`);
    for (let r = 0; r < ROUNDS; r++) {
      many.bare.push(await pipelined(bareIssue, NATS_IN_FLIGHT, pipelineMs));
      many.shm.push(await pipelined(shmIssue, NATS_IN_FLIGHT, pipelineMs));
    }
    return {
      remote: { shm: s(one.shm), bare: s(one.bare) },
      pipelined: { shm: median(many.shm), bare: median(many.bare) },
    };
  } finally {
    await client[Symbol.asyncDispose]();
    await nc.close();
  }
}

/** Local round trips of one kind of server: the median of its rounds' p50s, their range, p99. */
export interface LocalFigures {
  /** The median of the rounds' p50s (µs). */
  p50: number;
  /** The lowest and highest round's p50 (µs). */
  low: number;
  high: number;
  /** The p99 of every sample (µs). */
  p99: number;
}

/** Rounds of the local comparison: a round's p50 moves by 2× with where the kernel put the two. */
const LOCAL_ROUNDS = 9;

/**
 * Scenario 3: local round trips to a server serving NATS too, and to one that does not, in
 * rounds that alternate which goes first, each with fresh processes. A round's p50 is bimodal on
 * this machine (the two processes on one CPU or on two: about 2.5 against 5 µs async, measured),
 * so the comparison is of medians over rounds.
 */
async function localBench(nats: NatsServer, quick: boolean): Promise<NatsResults["local"]> {
  console.error("NATS: local commands to a server that serves NATS too, and to one that does not");
  const kinds = ["plain", "nats"] as const;
  const rounds = { sync: { plain: [], nats: [] }, async: { plain: [], nats: [] } } as Record<
    "sync" | "async",
    Record<"plain" | "nats", number[][]>
  >;
  const n = quick ? 2_000 : 10_000;
  const roundCount = quick ? 3 : LOCAL_ROUNDS;
  for (let r = 0; r < roundCount; r++) {
    for (const kind of r % 2 === 0 ? kinds : [...kinds].reverse()) {
      using dir = tempSocketDir();
      await using _server = await peer("local", dir.path, kind === "nats" ? nats.url : undefined);
      using c = await connect("bench-local", { socketDir: dir.path });
      const output = new Uint8Array(SIZE);
      const sync: number[] = [];
      for (let i = 0; i < n + 1000; i++) {
        const start = clock();
        c.execute(ECHO, { input: DATA, output });
        if (i >= 1000) sync.push(clock() - start);
      }
      rounds.sync[kind].push(sync);
      rounds.async[kind].push(
        await roundTrips(() => c.execute(ECHO, { input: DATA, output, completion: () => {} }), n),
      );
    }
  }
  const figures = (per: number[][]): LocalFigures => {
    const p50s = per.map((xs) => s(xs).p50);
    return {
      p50: median(p50s),
      low: Math.min(...p50s),
      high: Math.max(...p50s),
      p99: s(per.flat()).p99,
    };
  };
  return {
    sync: { plain: figures(rounds.sync.plain), nats: figures(rounds.sync.nats) },
    async: { plain: figures(rounds.async.plain), nats: figures(rounds.async.nats) },
  };
}

/** The most a local p50 may grow on a server that also serves NATS and count as no regression. */
const NO_REGRESSION = 1.1;

/** The results as Markdown: the tables and the targets. */
export function natsMarkdown(r: NatsResults): string {
  const f = (x: number) => x.toFixed(1);
  const f2 = (x: number) => x.toFixed(2);
  const k = (x: number) => `${(x / 1000).toFixed(1)} k`;
  const { shm, bare } = r.remote;
  const latency = shm.p50 / bare.p50;
  const rate = r.pipelined.shm / r.pipelined.bare;
  const sync = r.local.sync.nats.p50 / r.local.sync.plain.p50;
  const async = r.local.async.nats.p50 / r.local.async.plain.p50;
  const mark = (ok: boolean) => ok ? "yes" : "**no**";
  return [
    "### Beyond one host: commands through NATS, 64 B (µs)",
    "",
    "| path | p50 | p99 | p99.9 | p50 against bare NATS |",
    "|---|---:|---:|---:|---:|",
    `| shmcall's NATS client → shmcall server (execute, one in flight) | ${f(shm.p50)} | ${
      f(shm.p99)
    } | ${f(shm.p999)} | ${f2(latency)}× |`,
    `| bare NATS request/reply (nats.js, Deno to Deno) | ${f(bare.p50)} | ${f(bare.p99)} | ${
      f(bare.p999)
    } | baseline |`,
    "",
    `| ${NATS_IN_FLIGHT} in flight, answers/s (median of 3 rounds) | shmcall | bare NATS | shmcall / bare |`,
    "|---|---:|---:|---:|",
    `| 64 B echo | ${k(r.pipelined.shm)} | ${k(r.pipelined.bare)} | ${f2(rate)}× |`,
    "",
    `| local command, 64 B (µs) | p50 (median of ${LOCAL_ROUNDS} rounds' p50s) | rounds' p50s | p99 | p50 against a server without NATS |`,
    "|---|---:|---:|---:|---:|",
    ...(["sync", "async"] as const).flatMap((mode) =>
      (["plain", "nats"] as const).map((kind) => {
        const x = r.local[mode][kind];
        const who = kind === "plain" ? "server without NATS" : "server serving NATS too";
        const ratio = kind === "plain" ? "baseline" : `${f2(x.p50 / r.local[mode].plain.p50)}×`;
        return `| ${mode}, ${who} | ${f2(x.p50)} | ${f2(x.low)}–${f2(x.high)} | ${
          f2(x.p99)
        } | ${ratio} |`;
      })
    ),
    "",
    "| NATS target | measured | met |",
    "|---|---:|:---:|",
    `| remote execute, one in flight: p50 ≤ 1.15× bare NATS | ${f2(latency)}× | ${
      mark(latency <= 1.15)
    } |`,
    `| ${NATS_IN_FLIGHT} in flight: ≥ 0.9× bare NATS's answers/s | ${f2(rate)}× | ${
      mark(rate >= 0.9)
    } |`,
    `| local sync and async on a server serving NATS: no regression (p50 ≤ ${NO_REGRESSION}×) | ${
      f2(sync)
    }× and ${f2(async)}× | ${mark(sync <= NO_REGRESSION && async <= NO_REGRESSION)} |`,
  ].join("\n");
}

if (import.meta.main) {
  console.log(natsMarkdown(await natsBench()));
}
