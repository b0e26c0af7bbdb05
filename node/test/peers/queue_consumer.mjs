// A consumer in Node or Deno:
// `<runtime> queue_consumer.mjs <queue-id> <socket-dir> <events: JSON list or "all"> <count>
// [nats-url]` (with a NATS URL, through NATS only).
// Prints `ready` once registered, then, after `<count>` notifications, one JSON line of
// `[event, sequence, data as text]` triples and its counters, and exits.
import process from "node:process";
import { openConsumer } from "./api.mjs";

const [queueId, socketDir, events, count, natsUrl] = process.argv.slice(2);
const consumer = await openConsumer(queueId, {
  ...(natsUrl === undefined ? { socketDir } : { nats: { servers: natsUrl } }),
  events: events === "all" ? "all" : JSON.parse(events),
});
console.log("ready");
const got = [];
for await (const n of consumer) {
  got.push([n.event, n.sequence, new TextDecoder().decode(n.data)]);
  if (got.length === Number(count)) break;
}
console.log(JSON.stringify({ got, stats: consumer.stats() }));
consumer.close();
