/**
 * When one host is not enough: two "hosts" — two processes, each with a socket directory of its
 * own, so that neither can reach the other locally — and a local nats-server between them.
 * Host A (`examples/two_hosts_server.ts`) serves `prices` and hosts the event queue `ticks`;
 * this process, host B, calls `prices` and joins `ticks` through NATS, with the same API as on
 * one host. Needs `nats-server` (Debian: `apt-get install -y nats-server`).
 *
 * `deno run -A examples/two_hosts.ts`
 *
 * @module
 */

import { connect, IpcError, openConsumer, openProducer } from "shmcall";
import { NatsServer } from "../tests/peers/nats_server.ts";
import { Peer, tempSocketDir } from "../tests/peers/spawn.ts";

const here = (file: string) => decodeURIComponent(new URL(file, import.meta.url).pathname);
await using broker = await NatsServer.start();
const nats = { servers: broker.url };
using hostA = tempSocketDir();
await using _a = await Peer.start(Deno.execPath(), [
  "run",
  "-A",
  here("./two_hosts_server.ts"),
  hostA.path,
  broker.url,
], 30_000);

// Host B: a client of `prices` through NATS (its execute is asynchronous only).
await using prices = await connect("prices", { nats, timeout: 5_000 });
const ask = async (symbol: string) => {
  try {
    const r = await prices.execute(1, {
      input: new TextEncoder().encode(symbol),
      outputLength: 64,
      completion: () => {},
    });
    return r.status === 0 ? new TextDecoder().decode(r.output) : `status ${r.status}`;
  } catch (e) {
    return e instanceof IpcError ? e.statusName : String(e);
  }
};
console.log(`two hosts: ACME ${await ask("ACME")}, NOPE ${await ask("NOPE")}`);

// The event queue across hosts: a consumer of event 1 and a producer, both on host B.
await using ticks = await openConsumer("ticks", { nats, events: [1] });
await using producer = await openProducer("ticks", { nats });
producer.post(1, new TextEncoder().encode("ACME 101.75"));
producer.post(2, new TextEncoder().encode("INIT 48.5")); // not registered: host A skips it
producer.post(1, new TextEncoder().encode("ACME 102"));
await producer.flush();
const got = [await ticks.next(), await ticks.next()]
  .map((n) => `#${n.sequence} ${new TextDecoder().decode(n.data)}`);
console.log(`two hosts: ticks ${got.join(", ")}; dropped ${ticks.stats().dropped}`);
