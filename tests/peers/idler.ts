/**
 * Holds idle connections for the bench suite's idle-connection scenario:
 * `deno run -A tests/peers/idler.ts <shm|socket> <target> <socket-dir> <count>`. It opens
 * `count` connections — shmcall clients of the ic id `target`, or Unix sockets to the path
 * `target` — 64 connects at a time (after it printed `ready`), prints one JSON line
 * (`{"connected": n, "ms": t}`), then holds them, sending nothing, until its stdin closes.
 *
 * @module
 */

import { connect } from "../../mod.ts";
import { connectUnix } from "../../bench/socket_client.ts";

const [kind, target, dir, countArg] = Deno.args;
const count = Number(countArg);
if ((kind !== "shm" && kind !== "socket") || !target || !dir || !Number.isInteger(count)) {
  throw new Error("usage: idler.ts <shm|socket> <target> <socket-dir> <count>");
}

console.log("ready");
const held: { close(): void }[] = [];
const start = performance.now();
let next = 0;
const opener = async () => {
  while (next < count) {
    next++;
    held.push(
      kind === "shm" ? await connect(target, { socketDir: dir }) : await connectUnix(target),
    );
  }
};
await Promise.all(Array.from({ length: Math.min(64, count) }, opener));
console.log(JSON.stringify({ connected: held.length, ms: performance.now() - start }));
for await (const _ of Deno.stdin.readable) { /* hold until stdin closes */ }
for (const c of held) c.close();
Deno.exit(0);
