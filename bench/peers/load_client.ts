/**
 * One of several clients loading a server at once, for the bench suite:
 * `deno run -A bench/peers/load_client.ts <shm|socket> <ic-id|socket-path> <socket-dir> <size>
 * <start-at-ms> <seconds>`. Connects and prints `ready`; at the wall-clock time `start-at-ms`
 * it runs synchronous round trips of `size` bytes for `seconds`, then prints one JSON line:
 * `{"count", "p50", "p99"}` (microseconds).
 *
 * @module
 */

import { connect } from "../../mod.ts";
import { clock, summarize } from "../percentiles.ts";
import { SocketEcho } from "../socket_client.ts";

const [kind, target, socketDir, sizeArg, startArg, secondsArg] = Deno.args;
if (
  kind === undefined || target === undefined || socketDir === undefined || secondsArg === undefined
) {
  throw new Error(
    "usage: load_client.ts <shm|socket> <ic-id|socket-path> <socket-dir> <size> <start-at-ms> <seconds>",
  );
}
const size = Number(sizeArg);
const input = new Uint8Array(size).fill(1);
const output = new Uint8Array(size);

let roundTrip: () => void | Promise<void>;
let done: () => void;
if (kind === "shm") {
  const client = await connect(target, { socketDir });
  roundTrip = () => {
    client.execute(1, { input, output });
  };
  done = () => client.close();
} else {
  const conn = await Deno.connect({ transport: "unix", path: target });
  const socket = new SocketEcho(conn, size);
  socket.body.fill(1);
  roundTrip = () => socket.roundTrip();
  done = () => conn.close();
}
console.log("ready");
await new Promise((r) => setTimeout(r, Math.max(0, Number(startArg) - Date.now())));
const samples: number[] = [];
const end = clock() + Number(secondsArg) * 1000;
let start = clock();
while (start < end) {
  const r = roundTrip();
  if (r instanceof Promise) await r;
  const now = clock();
  samples.push(now - start);
  start = now;
}
done();
const s = summarize(Float64Array.from(samples));
console.log(JSON.stringify({ count: samples.length, p50: s.p50, p99: s.p99 }));
