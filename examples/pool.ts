/**
 * A server with a pool of two workers runs a CPU-heavy `exec`: the client sends one batch of
 * commands inline (one after the other on the server's thread) and the same batch to the pool
 * (two at a time, one per worker), checks that both give the same answers, and prints both
 * times. The server runs in this process for brevity; its workers are threads of their own.
 *
 * `deno run -A examples/pool.ts`
 *
 * @module
 */

import { connect, serve } from "shmcall";
import { type Context, exec } from "./pool_handler.ts";
import { tempSocketDir } from "../tests/peers/spawn.ts";

const BATCH = 16;
const INPUT = new Uint8Array(4096).map((_, i) => i * 7);

using dir = tempSocketDir();
await using _server = await serve<Context>("hasher", {
  open: () => ({ rounds: 4000 }), // each worker gets its own structured clone of this
  exec, // commands that run inline
}, {
  socketDir: dir.path,
  workers: 2,
  module: new URL("./pool_handler.ts", import.meta.url), // commands that run on the pool
});
using client = await connect("hasher", { socketDir: dir.path });

/** Sends the batch at once, all inline or all to the pool; the answers and the time taken. */
async function batch(inline: boolean) {
  const started = performance.now();
  const results = await Promise.all(
    Array.from(
      { length: BATCH },
      () => client.execute(1, { input: INPUT, outputLength: 4, inline, completion: () => {} }),
    ),
  );
  const ms = performance.now() - started;
  return { ms, hashes: results.map((r) => new DataView(r.output.buffer).getUint32(0, true)) };
}

// A first round of each warms up the compilers, so that the comparison is fair.
await batch(true);
await batch(false);
const inline = await batch(true);
const pool = await batch(false);
if (pool.hashes.join() !== inline.hashes.join()) throw new Error("the pool answered differently");
console.log(`inline: ${BATCH} commands in ${inline.ms.toFixed(0)} ms on the server's thread`);
console.log(
  `pool: ${BATCH} commands in ${pool.ms.toFixed(0)} ms on 2 workers, ${
    (inline.ms / pool.ms).toFixed(2)
  }× as fast (${navigator.hardwareConcurrency} CPUs here)`,
);
