/**
 * The producer of `examples/events.ts`: `events_producer.ts <queue-id> <socket-dir>`. Posts six
 * prices, of stocks 1, 2 and 3 in turn (the event is the stock's number), waits until the queue took them, then prints `posted`.
 *
 * @module
 */

import { openProducer } from "shmcall";

const [queueId, socketDir] = Deno.args;
using producer = await openProducer(queueId!, { socketDir: socketDir! });
console.log("ready");
const prices = [101.5, 48.25, 7.75, 101.75, 48.5, 7.5];
prices.forEach((price, i) => producer.post(1 + (i % 3), new TextEncoder().encode(`${price}`)));
// A post returns once it is on its way; flush waits until the host has taken them all.
producer.flush();
console.log("posted");
