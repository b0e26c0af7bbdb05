/**
 * One active connection beside idle ones, for the bench suite's idle-connection scenario:
 * `deno run -A bench/peers/active_client.ts <shm|socket> <ic-id|socket-path> <socket-dir>
 * <samples>`. Prints `ready` once connected, runs synchronous 64-byte round trips (each echo
 * checked) — `samples` thrown away, then `samples` in 5 rounds — and prints their summary as one
 * JSON line (microseconds; p50 and p99 are the medians of the rounds').
 *
 * @module
 */

import { connect } from "../../mod.ts";
import { rounds } from "../percentiles.ts";
import { connectUnix, SocketEcho } from "../socket_client.ts";

const [kind, target, socketDir, samplesArg] = Deno.args;
const samples = Number(samplesArg);
if ((kind !== "shm" && kind !== "socket") || !target || !socketDir || !(samples > 0)) {
  throw new Error(
    "usage: active_client.ts <shm|socket> <ic-id|socket-path> <socket-dir> <samples>",
  );
}
const wrong = () => new Error("idle scenario: a wrong echo");
let summary;
if (kind === "shm") {
  using client = await connect(target, { socketDir });
  console.log("ready");
  const input = new Uint8Array(64);
  const output = new Uint8Array(64);
  summary = await rounds(samples, (i: number) => {
    input[0] = i & 0xff;
    client.execute(1, { input, output });
    if (output[0] !== (i & 0xff)) throw wrong();
  });
} else {
  const conn = await connectUnix(target);
  console.log("ready");
  try {
    const socket = new SocketEcho(conn, 64);
    summary = await rounds(samples, async (i: number) => {
      socket.body[0] = i & 0xff;
      await socket.roundTrip();
      if (socket.echo[0] !== (i & 0xff)) throw wrong();
    });
  } finally {
    conn.close();
  }
}
console.log(JSON.stringify(summary));
