/**
 * An event queue with a producer process and two consumer processes that registered for
 * different events. This process hosts the queue `prices`; `events_consumer.ts` is started twice
 * (one for the events of stock 1, one for every event), then `events_producer.ts` posts a
 * price per event. Each consumer prints what it retrieved — the event, the queue's sequence
 * number, the data — and its count of dropped notifications; this process prints the host's
 * counters.
 *
 * `deno run -A examples/events.ts`
 *
 * @module
 */

import { serveEventQueue } from "shmcall";
import { Peer, tempSocketDir } from "../tests/peers/spawn.ts";

const peer = (file: string) => decodeURIComponent(new URL(file, import.meta.url).pathname);
const run = (file: string, ...args: string[]) =>
  Peer.start(Deno.execPath(), ["run", "-A", peer(file), ...args]);

using dir = tempSocketDir();
await using queue = await serveEventQueue("prices", { socketDir: dir.path });
const peers: Peer[] = [];
try {
  // Each consumer is registered once it says `ready`: every later post of its events reaches it.
  const one = await run("./events_consumer.ts", "prices", dir.path, "stock-1", "1", "2");
  peers.push(one);
  const all = await run("./events_consumer.ts", "prices", dir.path, "all", "all", "6");
  peers.push(all);
  const producer = await run("./events_producer.ts", "prices", dir.path);
  peers.push(producer);
  await producer.expect("posted");
  for (const consumer of [one, all]) {
    console.log(await consumer.expect("events:"));
  }
  const s = queue.stats();
  console.log(`events: host posted ${s.posted}, delivered ${s.delivered}, dropped ${s.dropped}`);
} finally {
  for (const p of peers) await p.kill();
}
