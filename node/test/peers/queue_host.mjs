// An event queue's host in Node or Deno: `<runtime> queue_host.mjs <queue-id> <socket-dir>
// [nats-url]` (with a NATS URL, hosting through NATS too). Prints `ready`, hosts until its
// standard input ends, then prints its counters as JSON.
import process from "node:process";
import { serveEventQueue, stdinEnds } from "./api.mjs";

const [queueId, socketDir, natsUrl] = process.argv.slice(2);
const queue = await serveEventQueue(
  queueId,
  natsUrl === undefined ? { socketDir } : { socketDir, nats: { servers: natsUrl } },
);
console.log("ready");
await stdinEnds();
console.log(JSON.stringify(queue.stats()));
await queue.close();
