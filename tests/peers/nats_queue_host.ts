/**
 * A queue host for the NATS tests: `deno run -A tests/peers/nats_queue_host.ts <queue-id>
 * <socket-dir> <nats-url>` hosts the queue, locally and through NATS, and prints `ready`; when
 * its standard input ends it closes the queue and prints `closed`.
 *
 * @module
 */

import { serveEventQueue } from "../../mod.ts";

const [queueId, socketDir, url] = Deno.args;
if (queueId === undefined || socketDir === undefined || url === undefined) {
  throw new Error("usage: nats_queue_host.ts <queue-id> <socket-dir> <nats-url>");
}
const queue = await serveEventQueue(queueId, { socketDir, nats: { servers: url } });
console.log("ready");
for await (const _ of Deno.stdin.readable) { /* nothing to read */ }
await queue.close();
console.log("closed");
