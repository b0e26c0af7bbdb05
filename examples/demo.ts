/**
 * The main job: starts a server peer, runs commands through shmcall both ways — synchronous
 * (the JavaScript thread waits inside one FFI call) and asynchronous (submitted, then its
 * completion taken) — and prints the round trips it measured next to a Unix-socket
 * request/response measured in the same run.
 *
 * `deno task demo` builds the core first. Environment: `SHMCALL_DEMO_N` round trips per
 * scenario (default 20000).
 *
 * @module
 */

import { RawClient } from "../src/native.ts";
import { sample, summarize, type Summary, table } from "../bench/percentiles.ts";
import { Peer, PEER_BIN, tempSocketDir } from "../tests/peers/spawn.ts";

const N = Number(Deno.env.get("SHMCALL_DEMO_N") ?? 20_000);
const WARMUP = Math.min(2_000, N);
const SIZE = 64;
const ECHO = 1;
const CHECKSUM = 2;

function fnv1a64(bytes: Uint8Array): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) h = BigInt.asUintN(64, (h ^ BigInt(b)) * 0x100000001b3n);
  return h;
}

async function unixSocketRoundTrips(path: string): Promise<Summary> {
  await using _echo = await Peer.start(PEER_BIN, ["socket-echo", path]);
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    const frame = new Uint8Array(4 + SIZE);
    new DataView(frame.buffer).setUint32(0, SIZE, true);
    const reply = new Uint8Array(4 + SIZE);
    const samples = await sample(N, WARMUP, async (i) => {
      frame[4] = i & 0xff;
      await conn.write(frame);
      let got = 0;
      while (got < reply.length) {
        const n = await conn.read(reply.subarray(got));
        if (n === null) throw new Error("the echo server closed the socket");
        got += n;
      }
      if (reply[4] !== (i & 0xff)) throw new Error(`echo ${i} came back wrong`);
    });
    return summarize(samples);
  } finally {
    conn.close();
  }
}

async function main() {
  using dir = tempSocketDir();
  console.log(`shmcall demo: ${N} round trips of ${SIZE} B per scenario, Deno client\n`);
  await using server = await Peer.start(PEER_BIN, ["serve", "demo", "--dir", dir.path]);
  const client = RawClient.connect("demo", { dir: dir.path });
  try {
    // One command each way first, checked: the server computes a checksum of our bytes.
    const probe = crypto.getRandomValues(new Uint8Array(1000));
    const t = client.begin(CHECKSUM, probe.length, 8);
    t.input.set(probe);
    const answer = client.call(t);
    const sum = new DataView(t.output.buffer, t.output.byteOffset, 8).getBigUint64(0, true);
    client.freeTicket(t.handle);
    if (answer.status !== 7 || sum !== fnv1a64(probe)) {
      throw new Error("the server's checksum of our input does not match");
    }
    console.log(`server pid ${server.pid} answered status ${answer.status}, checksum ok`);

    const input = new Uint8Array(SIZE).map((_, i) => i);
    const sync = summarize(
      await sample(N, WARMUP, (i) => {
        const t = client.begin(ECHO, SIZE, SIZE);
        input[0] = i & 0xff;
        t.input.set(input);
        const a = client.call(t);
        if (a.length !== SIZE || t.output[0] !== (i & 0xff)) {
          throw new Error(`echo ${i} came back wrong`);
        }
        client.freeTicket(t.handle);
      }),
    );
    const asyncRt = summarize(
      await sample(N, WARMUP, (i) => {
        const t = client.begin(ECHO, SIZE, SIZE);
        input[0] = i & 0xff;
        t.input.set(input);
        client.submit(t, BigInt(i));
        const done = client.poll(5_000_000_000n);
        if (done === undefined || done.token !== BigInt(i)) {
          throw new Error(`completion ${i} did not arrive`);
        }
        const a = client.answer(done.handle);
        if (a.output[0] !== (i & 0xff)) throw new Error(`echo ${i} came back wrong`);
        client.freeTicket(done.handle);
      }),
    );
    const socket = await unixSocketRoundTrips(`${dir.path}/echo.sock`);
    console.log();
    console.log(table([
      ["Unix socket request/response (Deno client, Rust server)", socket],
      ["shmcall sync (Deno client, Rust server)", sync],
      ["shmcall async submit + completion (Deno client, Rust server)", asyncRt],
    ], "Unix socket request/response (Deno client, Rust server)"));
  } finally {
    client.free();
  }
}

if (import.meta.main) await main();
