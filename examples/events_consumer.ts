/**
 * A consumer of `examples/events.ts`: `events_consumer.ts <queue-id> <socket-dir> <name>
 * <events: "all" or comma-separated numbers> <count>`. Prints `ready` once registered, then,
 * after `<count>` notifications, one line of what it retrieved.
 *
 * @module
 */

import { openConsumer } from "shmcall";

const [queueId, socketDir, name, events, count] = Deno.args;
using consumer = await openConsumer(queueId!, {
  socketDir: socketDir!,
  events: events === "all" ? "all" : events!.split(",").map(Number),
});
console.log("ready");
const got: string[] = [];
for await (const n of consumer) {
  got.push(`#${n.sequence} event ${n.event} ${new TextDecoder().decode(n.data)}`);
  if (got.length === Number(count)) break;
}
console.log(`events: ${name} got ${got.join(", ")}; dropped ${consumer.stats().dropped}`);
