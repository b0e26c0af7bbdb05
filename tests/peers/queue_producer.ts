/**
 * A producer of an event queue in its own process (tests/queue_test.ts):
 * `queue_producer.ts <queue-id> <socket-dir> <count>` connects, prints `ready`, and on SIGUSR1
 * posts `<count>` notifications of event 5 (data: their index), then exits.
 *
 * @module
 */
import { openProducer } from "../../mod.ts";

const [queueId, socketDir, count] = Deno.args;
using producer = await openProducer(queueId!, { socketDir: socketDir! });
const go = Promise.withResolvers<void>();
Deno.addSignalListener("SIGUSR1", () => go.resolve());
console.log("ready");
await go.promise;
for (let i = 0; i < Number(count); i++) producer.post(5, new Uint8Array([i]));
producer.flush();
Deno.exit(0);
