/**
 * The main job: starts a server peer (a Deno process serving with shmcall), runs commands
 * through shmcall both ways — synchronous (this thread waits inside one FFI call) and
 * asynchronous (a Promise, settled through the doorbell) — checks them, and prints the round
 * trips it measured next to a Deno↔Deno Unix-socket request/response measured in the same run.
 *
 * `deno task demo` builds the core first. `SHMCALL_DEMO_N`: round trips per scenario (50000).
 *
 * @module
 */

import { connect } from "shmcall";
import { sample, summarize, type Summary, table } from "../bench/percentiles.ts";
import { fnv1a64 } from "../tests/peers/fnv.ts";
import { Peer, tempSocketDir } from "../tests/peers/spawn.ts";
import { SocketEcho } from "../bench/socket_client.ts";

const N = Number(Deno.env.get("SHMCALL_DEMO_N") ?? 50_000);
const WARMUP = Math.min(10_000, N);
const SIZE = 64;
const ECHO = 1;
const CHECKSUM = 2;
const here = (file: string) => decodeURIComponent(new URL(file, import.meta.url).pathname);

async function unixSocket(path: string, async: boolean): Promise<Summary> {
  await using _server = await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    here("./socket_echo_server.ts"),
    path,
  ]);
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    const socket = new SocketEcho(conn, SIZE);
    const roundTrip = async (i: number) => {
      socket.body[0] = i & 0xff;
      await socket.roundTrip();
      if (socket.echo[0] !== (i & 0xff)) throw new Error(`echo ${i} came back wrong`);
    };
    return summarize(await sample(async ? N / 4 : N, WARMUP, roundTrip));
  } finally {
    conn.close();
  }
}

async function main() {
  using dir = tempSocketDir();
  console.log(`shmcall demo: ${N} round trips of ${SIZE} B per scenario, Deno ↔ Deno\n`);
  await using server = await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    here("./echo_server.ts"),
    "demo",
    dir.path,
  ]);
  using client = await connect("demo", { socketDir: dir.path });

  // One command each way first, checked: the server answers a checksum of our bytes.
  const probe = crypto.getRandomValues(new Uint8Array(1000));
  const sync = client.execute(CHECKSUM, { input: probe, outputLength: 8 });
  const asyncR = await client.execute(CHECKSUM, {
    input: probe,
    outputLength: 8,
    completion: (r, ctx) => console.log(`completion: status ${r.status} (${ctx})`),
    context: "async",
  });
  for (const r of [sync, asyncR]) {
    const sum = new DataView(r.output.buffer, r.output.byteOffset, 8).getBigUint64(0, true);
    if (r.status !== 7 || sum !== fnv1a64(probe)) throw new Error("checksum mismatch");
  }
  console.log(`server pid ${server.pid} checked 1000 bytes both ways: status 7, checksum ok`);

  const input = new Uint8Array(SIZE).map((_, i) => i);
  const output = new Uint8Array(SIZE);
  const shmSync = summarize(
    await sample(N, WARMUP, (i) => {
      input[0] = i & 0xff;
      const r = client.execute(ECHO, { input, output });
      if (r.length !== SIZE || output[0] !== (i & 0xff)) throw new Error(`echo ${i} wrong`);
    }),
  );
  const shmAsync = summarize(
    await sample(N, WARMUP, async (i) => {
      input[0] = i & 0xff;
      const r = await client.execute(ECHO, { input, output, completion: () => {} });
      if (r.length !== SIZE || output[0] !== (i & 0xff)) throw new Error(`echo ${i} wrong`);
    }),
  );
  const socket = await unixSocket(`${dir.path}/echo.sock`, false);
  const baseline = "Unix socket request/response (Deno ↔ Deno)";
  console.log();
  console.log(table([
    [baseline, socket],
    ["shmcall sync (Deno ↔ Deno)", shmSync],
    ["shmcall async, one in flight (Deno ↔ Deno)", shmAsync],
  ], baseline));
}

if (import.meta.main) await main();
