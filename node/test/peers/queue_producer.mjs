// A producer in Node or Deno: `<runtime> queue_producer.mjs <queue-id> <socket-dir> <count>
// [nats-url]` (with a NATS URL, through NATS only).
// Prints `ready`, posts `<count>` notifications, the i-th of event i % 3 with data `n<i>`, prints
// `done`, and exits.
import process from "node:process";
import { openProducer } from "./api.mjs";

const [queueId, socketDir, count, natsUrl] = process.argv.slice(2);
const producer = await openProducer(
  queueId,
  natsUrl === undefined ? { socketDir } : { nats: { servers: natsUrl } },
);
console.log("ready");
for (let i = 0; i < Number(count); i++) {
  producer.post(i % 3, new TextEncoder().encode(`n${i}`));
}
// A producer through NATS closes once its posts left.
if (natsUrl === undefined) producer.close();
else await producer[Symbol.asyncDispose]();
console.log("done");
