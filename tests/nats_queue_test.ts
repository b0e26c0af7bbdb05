/**
 * Event queues across hosts, through a real nats-server on 127.0.0.1: producers and consumers
 * that reach the queue's host through NATS only (registration, one order, drop counting, the
 * host's death, and a remote consumer's).
 *
 * @module
 */

import "./setup.ts";
import assert from "node:assert/strict";
import { connect as natsConnect } from "@nats-io/transport-node";
import {
  IpcError,
  type NatsConsumer,
  type Notification,
  openConsumer,
  openProducer,
  serveEventQueue,
  Status,
} from "../mod.ts";
import { eventually, failure, within } from "./peers/assertions.ts";
import { NatsServer } from "./peers/nats_server.ts";
import { Peer, tempSocketDir } from "./peers/spawn.ts";
import { PING_MS, SILENCE_MS } from "../src/nats_queue.ts";

const HOST = decodeURIComponent(new URL("./peers/nats_queue_host.ts", import.meta.url).pathname);
/** A consumer peer that runs in Deno too (node/test/peers). */
const CONSUMER = decodeURIComponent(
  new URL("../node/test/peers/queue_consumer.mjs", import.meta.url).pathname,
);
const text = (n: Notification) => new TextDecoder().decode(n.data);
const bytes = (s: string) => new TextEncoder().encode(s);

/** Takes `n` notifications from `c`, bounded. */
async function take(c: NatsConsumer, n: number): Promise<Notification[]> {
  const out: Notification[] = [];
  while (out.length < n) out.push(await within(`notification ${out.length + 1}`, c.next()));
  return out;
}

Deno.test("across NATS, consumers get their events in the host's one order, with its sequence numbers", async () => {
  await using nats = await NatsServer.start();
  using dir = tempSocketDir();
  await using queue = await serveEventQueue("nq-order", {
    socketDir: dir.path,
    nats: { servers: nats.url },
  });
  const servers = nats.url;
  await using ones = await openConsumer("nq-order", { nats: { servers }, events: [1] });
  await using all = await openConsumer("nq-order", { nats: { servers }, events: "all" });
  await using producer = await openProducer("nq-order", { nats: { servers } });
  // A local consumer beside them sees the same order.
  using local = await openConsumer("nq-order", { socketDir: dir.path, events: "all" });
  producer.post(1, bytes("a"));
  producer.post(2, bytes("b"));
  producer.post(1, bytes("c"));
  assert.equal(await producer.flush(), true);
  const three = await take(all, 3);
  assert.deepEqual(three.map(text), ["a", "b", "c"]);
  const [a, b, c] = three.map((n) => n.sequence) as [number, number, number];
  assert.deepEqual([b, c], [a + 1, a + 2]);
  const got = await take(ones, 2);
  assert.deepEqual(got.map(text), ["a", "c"]);
  assert.deepEqual(got.map((n) => n.sequence), [a, c]);
  const near = [await local.next(), await local.next(), await local.next()];
  assert.deepEqual(near.map((n) => n.sequence), [a, b, c]);
  assert.equal(queue.stats().lost, 0);
  assert.deepEqual(all.stats(), { dropped: 0, retrieved: 3, waiting: 0 });
});

Deno.test("across NATS, registration changes take effect for later posts", async () => {
  await using nats = await NatsServer.start();
  using dir = tempSocketDir();
  await using _queue = await serveEventQueue("nq-register", {
    socketDir: dir.path,
    nats: { servers: nats.url },
  });
  await using c = await openConsumer("nq-register", {
    nats: { servers: nats.url },
    events: [1],
  });
  await using p = await openProducer("nq-register", { nats: { servers: nats.url } });
  c.register(2);
  // Posts of event 2 until one arrives: the registration reached the host by then.
  await within(
    "the registration of event 2",
    (async () => {
      while (true) {
        p.post(2);
        p.post(1);
        await p.flush();
        const n = await c.next();
        if (n.event === 2) return;
      }
    })(),
  );
  // Event 1 stays registered: a run's fence, which names its run. A run is the events that came
  // before its fence (other 1s, from before, are left out).
  let runs = 0;
  const run = async (events: number[]): Promise<number[]> => {
    const fence = `fence ${++runs}`;
    for (const e of events) p.post(e);
    p.post(1, bytes(fence));
    await p.flush();
    const got: number[] = [];
    for (let n = await c.next(); text(n) !== fence; n = await c.next()) {
      if (n.event !== 1) got.push(n.event);
    }
    return got;
  };
  // Until a run shows both changes: from the next run on, every post sees them.
  c.unregister(2);
  c.register(3);
  await within(
    "the registration of 3 and the unregistration of 2",
    (async () => {
      while ((await run([2, 3])).join() !== "3") { /* not yet */ }
    })(),
  );
  assert.deepEqual(await run([2, 3]), [3]);
  // "all" unregisters every event, the fence too. Posts of 1, 2, 3 and 5 go on until a 5
  // comes (the new registration, made after the unregistration, reached the host); from then
  // on, only 5s come.
  c.unregister("all");
  c.register(5);
  let posting = true;
  const posts = (async () => {
    while (posting) {
      for (const e of [1, 2, 3, 5]) p.post(e);
      await p.flush();
    }
  })();
  try {
    let n = await within('the unregistration of "all"', c.next());
    while (n.event !== 5) n = await within('the unregistration of "all"', c.next());
  } finally {
    posting = false;
    await posts;
  }
  p.post(5, bytes("last"));
  await p.flush();
  for (
    let n = await within("the last", c.next());
    text(n) !== "last";
    n = await within("the last", c.next())
  ) {
    assert.equal(n.event, 5);
  }
});

Deno.test("across NATS, a consumer that does not keep up loses notifications to drops, all counted", async () => {
  await using nats = await NatsServer.start();
  using dir = tempSocketDir();
  await using queue = await serveEventQueue("nq-drops", {
    socketDir: dir.path,
    nats: { servers: nats.url },
  });
  await using c = await openConsumer("nq-drops", {
    nats: { servers: nats.url },
    events: "all",
    capacity: 4,
  });
  await using p = await openProducer("nq-drops", { nats: { servers: nats.url } });
  const posts = 500;
  for (let i = 0; i < posts; i++) p.post(i % 3, new Uint8Array(64));
  assert.equal(await p.flush(), true);
  await eventually("the host accepted every post", () => queue.stats().posted === posts);
  // Every post is retrieved or counted as dropped, once the host's bridge sent what it had.
  let retrieved = 0;
  await eventually("every notification accounted for", () => {
    retrieved += c.retrieve().length;
    return retrieved + c.stats().dropped === posts;
  });
  assert.ok(c.stats().dropped > 0, "a list of 4 took 500 posts whole");
  assert.ok(retrieved <= 4 + 4, `${retrieved} retrieved from lists of 4`);
  assert.equal(queue.stats().lost, 0);
});

Deno.test("across NATS: no host is NOT_FOUND; a second host of the queue is ALREADY_SERVED", async () => {
  await using nats = await NatsServer.start();
  const servers = nats.url;
  const none = await failure(() => openConsumer("nq-none", { nats: { servers }, events: [1] }));
  assert.equal(none.status, Status.NOT_FOUND);
  const noProducer = await failure(() => openProducer("nq-none", { nats: { servers } }));
  assert.equal(noProducer.status, Status.NOT_FOUND);
  using a = tempSocketDir();
  using b = tempSocketDir();
  await using _first = await serveEventQueue("nq-twice", { socketDir: a.path, nats: { servers } });
  const second = await failure(() =>
    serveEventQueue("nq-twice", { socketDir: b.path, nats: { servers } })
  );
  assert.equal(second.status, Status.ALREADY_SERVED);
});

Deno.test("across NATS, a closed remote consumer's list is freed at the host", async () => {
  await using nats = await NatsServer.start();
  using dir = tempSocketDir();
  await using queue = await serveEventQueue("nq-bye", {
    socketDir: dir.path,
    nats: { servers: nats.url },
  });
  const c = await openConsumer("nq-bye", { nats: { servers: nats.url }, events: "all" });
  // The bridge's producer, and the consumer it keeps for the remote one.
  await eventually("the remote consumer's list", () => queue.stats().consumers === 1);
  await c[Symbol.asyncDispose]();
  await eventually("its list freed", () => queue.stats().consumers === 0);
  await assert.rejects(c.next(), (e) => e instanceof IpcError && e.status === Status.CLOSED);
});

Deno.test("across NATS, the host's end: what was listed is retrieved, then PEER_TERMINATED", async () => {
  for (const how of ["close", "kill"] as const) {
    await using nats = await NatsServer.start();
    using dir = tempSocketDir();
    const host = await Peer.start(Deno.execPath(), [
      "run",
      "-A",
      HOST,
      "nq-end",
      dir.path,
      nats.url,
    ], 30_000);
    try {
      await using c = await openConsumer("nq-end", { nats: { servers: nats.url }, events: "all" });
      await using p = await openProducer("nq-end", { nats: { servers: nats.url } });
      p.post(7, bytes("first"));
      p.post(7, bytes("last"));
      await p.flush();
      // Both listed here before the host goes; one retrieved.
      await eventually("the notifications listed", () => c.stats().waiting === 2);
      assert.equal(text(await c.next()), "first");
      if (how === "close") {
        await host.endInput();
        await host.expect("closed");
      } else await host.kill();
      const last = await within("the last notification", c.next());
      assert.equal(text(last), "last");
      const ended = await within("the end", failure(() => c.next()));
      assert.equal(ended.status, Status.PEER_TERMINATED, `${how}: ${ended.message}`);
      // The producer learns it too: its posts throw.
      await eventually(`the producer learns of the ${how}`, () => {
        try {
          p.post(7);
          return false;
        } catch (e) {
          return e instanceof IpcError && e.status === Status.PEER_TERMINATED;
        }
      });
    } finally {
      await host.kill();
    }
  }
});

Deno.test("across NATS, a remote consumer killed: the host frees its list once it falls silent", async () => {
  await using nats = await NatsServer.start();
  using dir = tempSocketDir();
  using far = tempSocketDir();
  await using queue = await serveEventQueue("nq-dead", {
    socketDir: dir.path,
    nats: { servers: nats.url },
  });
  await using producer = await openProducer("nq-dead", { socketDir: dir.path });
  const consumer = await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    CONSUMER,
    "nq-dead",
    far.path,
    "all",
    "1000000",
    nats.url,
  ], 30_000);
  try {
    assert.equal(queue.stats().consumers, 1);
    await consumer.kill();
    // Posts go on meanwhile, and nothing else changes.
    producer.post(1);
    await eventually(
      "the dead consumer's list freed",
      () => queue.stats().consumers === 0,
      SILENCE_MS + 5 * PING_MS,
    );
  } finally {
    await consumer.kill();
  }
});

Deno.test("across NATS, noise on the queue's subjects changes nothing at its host", async () => {
  await using nats = await NatsServer.start();
  using dir = tempSocketDir();
  await using queue = await serveEventQueue("nq-noise", {
    socketDir: dir.path,
    nats: { servers: nats.url },
  });
  const nc = await natsConnect({ servers: nats.url });
  try {
    let x = 0x2545f491;
    const next = () => (x ^= x << 13, x ^= x >>> 17, x ^= x << 5, x >>> 0);
    for (let i = 0; i < 300; i++) {
      const noise = new Uint8Array(next() % 80);
      for (let k = 0; k < noise.length; k++) noise[k] = next();
      // Often a header the host reads past.
      if (noise.length >= 24 && i % 2 === 0) noise.set([0x53, 0x43, 1, 0, 4 + next() % 6, 0, 0, 0]);
      for (const what of ["ping", "open", "register", "goodbye", "posts"]) {
        nc.publish(`shmcall.q.nq-noise.${what}`, noise);
      }
    }
    await nc.flush();
    await using c = await openConsumer("nq-noise", { nats: { servers: nats.url }, events: [5] });
    await using p = await openProducer("nq-noise", { nats: { servers: nats.url } });
    p.post(5, bytes("after the noise"));
    await p.flush();
    assert.equal(text(await within("the notification", c.next())), "after the noise");
    assert.equal(queue.stats().consumers, 1);
  } finally {
    await nc.close();
  }
});

Deno.test("across NATS, several next() waiting at once each get a notification, in order", async () => {
  await using nats = await NatsServer.start();
  using dir = tempSocketDir();
  await using _queue = await serveEventQueue("nq-waiters", {
    socketDir: dir.path,
    nats: { servers: nats.url },
  });
  await using c = await openConsumer("nq-waiters", { nats: { servers: nats.url }, events: "all" });
  await using p = await openProducer("nq-waiters", { nats: { servers: nats.url } });
  const waiting = [c.next(), c.next(), c.next()];
  for (const word of ["one", "two", "three"]) p.post(1, bytes(word));
  await p.flush();
  const got = await within("three waiters", Promise.all(waiting));
  assert.deepEqual(got.map(text), ["one", "two", "three"]);
  assert.deepEqual(c.stats(), { dropped: 0, retrieved: 3, waiting: 0 });
});

Deno.test("a queue that NATS's authorization keeps from its subjects fails serveEventQueue with PERMISSION_DENIED", async () => {
  await using nats = await NatsServer.start({
    config: `authorization { users = [ { user: "limited", password: "x", permissions: {
      subscribe: { deny: ["shmcall.q.>"] } } } ] }\n`,
  });
  using dir = tempSocketDir();
  const refused = await failure(() =>
    serveEventQueue("nq-denied", {
      socketDir: dir.path,
      nats: { servers: nats.url, user: "limited", pass: "x" },
    })
  );
  assert.equal(refused.status, Status.PERMISSION_DENIED, refused.message);
  // Nothing of it is left: the id hosts again.
  await using _again = await serveEventQueue("nq-denied", { socketDir: dir.path });
});
