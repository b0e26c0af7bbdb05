// An event queue's host in Node or Deno: `<runtime> queue_host.mjs <queue-id> <socket-dir>`.
// Prints `ready`, hosts until its standard input ends, then prints its counters as JSON.
import process from "node:process";
import { serveEventQueue, stdinEnds } from "./api.mjs";

const [queueId, socketDir] = process.argv.slice(2);
const queue = await serveEventQueue(queueId, { socketDir });
console.log("ready");
await stdinEnds();
console.log(JSON.stringify(queue.stats()));
await queue.close();
