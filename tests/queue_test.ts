import "./setup.ts";
import assert from "node:assert/strict";
import {
  IpcError,
  MAX_CONSUMER_CAPACITY,
  MAX_NOTIFICATION_DATA,
  type Notification,
  openConsumer,
  openProducer,
  serveEventQueue,
  Status,
} from "../mod.ts";
import { eventually, isIpcError, throwsStatus, within } from "./peers/assertions.ts";
import { Peer, PEER_BIN, tempSocketDir } from "./peers/spawn.ts";

const text = (n: Notification) => new TextDecoder().decode(n.data);
const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test("consumers get the events they registered for, in post order, numbered by the queue", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  await using queue = await serveEventQueue("events", { socketDir });
  using some = await openConsumer("events", { events: [1, 3], socketDir });
  using all = await openConsumer("events", { events: "all", socketDir, capacity: 16 });
  using producer = await openProducer("events", { socketDir });
  producer.post(1, bytes("one"));
  producer.post(2, bytes("two"));
  producer.post(3);
  producer.post(4, new Uint8Array(MAX_NOTIFICATION_DATA).fill(7));
  // A post returns once it is on its way; flush waits until the host accepted them.
  assert.equal(producer.flush(), true);
  assert.deepEqual(
    some.retrieve().map((n) => [n.event, n.sequence, text(n)]),
    [[1, 1, "one"], [3, 3, ""]],
  );
  const got = all.retrieve();
  assert.deepEqual(got.map((n) => n.sequence), [1, 2, 3, 4]);
  assert.deepEqual(got[3]!.data, new Uint8Array(MAX_NOTIFICATION_DATA).fill(7));
  assert.deepEqual(all.retrieve(), [], "each notification is retrieved once");
  assert.deepEqual(all.stats(), { dropped: 0, retrieved: 4, waiting: 0 });
  assert.deepEqual(queue.stats(), {
    posted: 4,
    delivered: 6,
    dropped: 0,
    connections: 3,
    consumers: 2,
    lost: 0,
  });
});

Deno.test("a full list drops that consumer's notifications and counts them; the gap shows", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  await using queue = await serveEventQueue("events", { socketDir });
  using slow = await openConsumer("events", { events: "all", socketDir, capacity: 4 });
  using fast = await openConsumer("events", { events: "all", socketDir });
  using producer = await openProducer("events", { socketDir });
  for (let i = 0; i < 10; i++) producer.post(9, new Uint8Array([i]));
  assert.equal(producer.flush(), true);
  assert.deepEqual(slow.retrieve().map((n) => n.sequence), [1, 2, 3, 4]);
  assert.equal(slow.stats().dropped, 6);
  assert.equal(fast.retrieve().length, 10, "the fast one lost nothing");
  assert.equal(queue.stats().dropped, 6);
  producer.post(9, bytes("after"));
  producer.flush();
  assert.deepEqual(slow.retrieve().map((n) => [n.sequence, text(n)]), [[11, "after"]]);
});

Deno.test("a list longer than a default slot holds takes a slot of its own: 65,536 of a burst, then drops", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  await using queue = await serveEventQueue("events", { socketDir });
  using long = await openConsumer("events", {
    events: "all",
    socketDir,
    capacity: MAX_CONSUMER_CAPACITY,
  });
  using short = await openConsumer("events", { events: "all", socketDir, capacity: 2048 });
  using producer = await openProducer("events", { socketDir });
  const posts = MAX_CONSUMER_CAPACITY + 1000;
  const data = new Uint8Array(MAX_NOTIFICATION_DATA);
  const view = new DataView(data.buffer);
  for (let i = 0; i < posts; i++) {
    view.setUint32(0, i, true);
    view.setUint32(MAX_NOTIFICATION_DATA - 4, ~i, true);
    producer.post(7, data);
  }
  assert.equal(producer.flush(), true);
  assert.equal(queue.stats().posted, posts);
  const got = long.retrieve();
  assert.equal(
    got.length,
    MAX_CONSUMER_CAPACITY,
    "the whole list, the last entry of its 16 MiB too",
  );
  got.forEach((n, i) => {
    assert.equal(n.sequence, i + 1);
    const words = new DataView(n.data.buffer, n.data.byteOffset, n.data.byteLength);
    assert.equal(words.getUint32(0, true), i);
    assert.equal(words.getUint32(MAX_NOTIFICATION_DATA - 4, true), ~i >>> 0);
  });
  assert.equal(long.stats().dropped, 1000);
  assert.equal(short.retrieve().length, 2048);
  assert.equal(short.stats().dropped, posts - 2048);
});

Deno.test("posts go one way: many more than the connection's slots arrive in order, and flush waits for them", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  await using queue = await serveEventQueue("events", { socketDir });
  using consumer = await openConsumer("events", { events: "all", socketDir, capacity: 2048 });
  using producer = await openProducer("events", { socketDir });
  const posts = 20_000;
  const data = new Uint8Array(8);
  const view = new DataView(data.buffer);
  for (let i = 0; i < posts; i++) {
    view.setUint32(0, i, true);
    producer.post(i % 7, data);
  }
  assert.equal(producer.flush(), true);
  assert.equal(queue.stats().posted, posts);
  const got = consumer.retrieve();
  assert.equal(got.length, 2048);
  got.forEach((n, i) => {
    assert.equal(n.sequence, i + 1);
    assert.equal(n.event, i % 7);
    assert.equal(new DataView(n.data.buffer, n.data.byteOffset, 4).getUint32(0, true), i);
  });
  assert.equal(consumer.stats().dropped, posts - 2048);
  assert.equal(producer.flush(0), true, "nothing is left to wait for");
});

Deno.test("the posts of one run of code travel together: sizes 0 to 240, across slots and runs, in order", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  await using queue = await serveEventQueue("events", { socketDir });
  using consumer = await openConsumer("events", { events: "all", socketDir, capacity: 2048 });
  using producer = await openProducer("events", { socketDir });
  const sizeOf = (i: number) => (i * 37) % (MAX_NOTIFICATION_DATA + 1);
  const dataOf = (i: number) => new Uint8Array(sizeOf(i)).fill(i & 0xff);
  let i = 0;
  // A run whose posts fill many slots' worth (a slot holds 4 KiB of records), then runs of
  // one post each between awaits, then a run again: each post keeps its place.
  for (; i < 600; i++) producer.post(0xffff_fff0 + (i % 16), dataOf(i));
  for (; i < 620; i++) {
    producer.post(i, dataOf(i));
    await Promise.resolve();
  }
  for (; i < 1000; i++) producer.post(i, dataOf(i));
  assert.equal(producer.flush(), true);
  assert.equal(queue.stats().posted, 1000);
  const got = consumer.retrieve();
  assert.equal(got.length, 1000);
  got.forEach((n, k) => {
    assert.equal(n.sequence, k + 1);
    assert.equal(n.event, k < 600 ? 0xffff_fff0 + (k % 16) : k);
    assert.deepEqual(n.data, dataOf(k), `notification ${k}'s data`);
  });
});

Deno.test("a host that speaks 2.4 gets one POST a post, in order, and none is lost", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  // A Rust host that serves as a 2.4 one does: it answers POSTS INVALID_COMMAND.
  await using _host = await Peer.start(PEER_BIN, [
    "queue",
    "old",
    "--dir",
    socketDir,
    "--minor",
    "4",
  ]);
  using consumer = await openConsumer("old", { events: "all", socketDir });
  using producer = await openProducer("old", { socketDir });
  for (let i = 0; i < 300; i++) producer.post(i, new Uint8Array([i & 0xff]));
  await Promise.resolve();
  for (let i = 300; i < 400; i++) producer.post(i);
  assert.equal(producer.flush(), true, "the host accepted them all");
  const got = consumer.retrieve();
  assert.deepEqual(got.map((n) => n.event), Array.from({ length: 400 }, (_, i) => i));
  assert.deepEqual(got.map((n) => n.sequence), Array.from({ length: 400 }, (_, i) => i + 1));
  assert.deepEqual(got[299]!.data, new Uint8Array([299 & 0xff]));
  producer.post(400);
  assert.equal(producer.flush(), true, "no failure an earlier answer carried");
});

Deno.test("next() and retrieve() share one order, and each notification's data is its own", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  await using _queue = await serveEventQueue("events", { socketDir });
  using consumer = await openConsumer("events", { events: "all", socketDir });
  using producer = await openProducer("events", { socketDir });
  for (let i = 1; i <= 10; i++) producer.post(i, new Uint8Array(i).fill(i));
  assert.equal(producer.flush(), true);
  const got = [await consumer.next(), ...consumer.retrieve(3), await consumer.next()];
  got.push(...consumer.retrieve());
  assert.deepEqual(got.map((n) => n.sequence), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  for (const n of got) assert.deepEqual(n.data, new Uint8Array(n.event).fill(n.event));
  // Each notification's data is a copy of its own: writing one changes no other.
  got[1]!.data.fill(0);
  got[2]!.data.fill(0);
  assert.deepEqual(got[0]!.data, new Uint8Array([1]));
  assert.deepEqual(got[3]!.data, new Uint8Array(4).fill(4));
  assert.deepEqual(consumer.retrieve(), []);
  assert.deepEqual(consumer.stats(), { dropped: 0, retrieved: 10, waiting: 0 });
  assert.throws(
    () => consumer.retrieve(1.5),
    /max must be a non-negative integer or Infinity, received 1\.5/,
  );
  assert.throws(() => consumer.retrieve(-1), RangeError);
});

Deno.test("registration changes apply to the posts accepted after them", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  await using _queue = await serveEventQueue("events", { socketDir });
  using consumer = await openConsumer("events", { events: [], socketDir });
  using producer = await openProducer("events", { socketDir });
  // Each flush makes the posts before it accepted before the registration change after it.
  producer.post(1, bytes("before"));
  producer.flush();
  consumer.register(1, 2);
  producer.post(1, bytes("a"));
  producer.post(2, bytes("b"));
  producer.flush();
  consumer.unregister(1);
  producer.post(1, bytes("c"));
  producer.post(2, bytes("d"));
  producer.flush();
  consumer.unregister("all");
  producer.post(2, bytes("e"));
  producer.flush();
  consumer.register("all");
  producer.post(7, bytes("f"));
  producer.flush();
  assert.deepEqual(consumer.retrieve().map((n) => [n.event, text(n)]), [
    [1, "a"],
    [2, "b"],
    [2, "d"],
    [7, "f"],
  ]);
});

Deno.test("next() waits for a post from another process, and for await reads them", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  await using _queue = await serveEventQueue("events", { socketDir });
  using consumer = await openConsumer("events", { events: [5], socketDir });
  // A producer in another process, which posts 50 notifications of event 5 once told to.
  await using producer = await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    new URL("./peers/queue_producer.ts", import.meta.url).pathname,
    "events",
    socketDir,
    "50",
  ]);
  const first = consumer.next(); // nothing is listed yet: this waits for the bell
  producer.signal("SIGUSR1");
  assert.equal((await within("the first notification", first)).sequence, 1);
  const seen: number[] = [];
  for await (const n of consumer) {
    seen.push(n.sequence);
    if (seen.length === 49) break;
  }
  assert.deepEqual(seen, Array.from({ length: 49 }, (_, i) => i + 2));
});

Deno.test("a closed host: posts fail, and next() ends after the notifications listed", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  const queue = await serveEventQueue("events", { socketDir });
  using consumer = await openConsumer("events", { events: "all", socketDir });
  using producer = await openProducer("events", { socketDir });
  producer.post(1, bytes("x"));
  producer.post(2, bytes("y"));
  // Listed before the host goes (posts leave at the end of this run of code, together).
  assert.ok(producer.flush(), "the host accepted the posts");
  await queue.close();
  assert.equal(text(await within("next()", consumer.next())), "x");
  assert.equal(text(await within("next()", consumer.next())), "y");
  await assert.rejects(
    within("next()", consumer.next()),
    isIpcError(Status.PEER_TERMINATED),
  );
  assert.throws(
    () => producer.post(3),
    isIpcError(Status.PEER_TERMINATED),
  );
});

Deno.test("a closed consumer is forgotten by the host, and its loop ends", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  await using queue = await serveEventQueue("events", { socketDir });
  const consumer = await openConsumer("events", { events: "all", socketDir });
  const first = Promise.withResolvers<void>();
  const loop = (async () => {
    let n = 0;
    for await (const _ of consumer) {
      n++;
      first.resolve();
    }
    return n;
  })();
  using producer = await openProducer("events", { socketDir });
  producer.post(1);
  await within("the first notification", first.promise);
  consumer.close();
  assert.equal(await within("the loop", loop), 1, "the loop ended with the close");
  await eventually("the host forgets the consumer", () => queue.stats().consumers === 0);
  producer.post(1);
  assert.equal(queue.stats().delivered, 1, "nothing went to the closed consumer");
});

Deno.test("bad arguments are refused, naming the value", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  await using _queue = await serveEventQueue("events", { socketDir });
  using producer = await openProducer("events", { socketDir });
  assert.throws(() => producer.post(-1), /event must be from 0 to 2\^32 - 1, received -1/);
  assert.throws(() => producer.post(1.5), /event must be an integer .* received 1\.5/);
  assert.throws(
    () => producer.post(1, new Uint8Array(MAX_NOTIFICATION_DATA + 1)),
    /at most 240 bytes of data, received 241/,
  );
  assert.throws(() => producer.post(1, "x" as unknown as Uint8Array), /data must be a Uint8Array/);
  await assert.rejects(
    openConsumer("events", { events: "some" as unknown as "all", socketDir }),
    /events must be a list of event numbers or "all", received "some"/,
  );
  await assert.rejects(
    openConsumer("events", { events: [1], capacity: 0, socketDir }),
    /capacity must be from 1 to 65536, received 0/,
  );
  await assert.rejects(
    openConsumer("events", { events: [1], capacity: 65537, socketDir }),
    /capacity must be from 1 to 65536, received 65537/,
  );
  await assert.rejects(
    openConsumer("events", { events: [1, 2 ** 32], socketDir }),
    /events: event 1 must be from 0 to 2\^32 - 1/,
  );
  await assert.rejects(serveEventQueue("events", { socketDir }), (e) => e instanceof IpcError);
});

/** A peer of node/test/peers/ (they run under Deno too): `script args`, started and ready. */
function nodePeer(script: string, ...args: string[]) {
  const path = new URL(`../node/test/peers/${script}`, import.meta.url).pathname;
  return Peer.start(Deno.execPath(), ["run", "-A", path, ...args]);
}

Deno.test("a host killed with SIGKILL: the listed notifications are retrieved, then PEER_TERMINATED", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  await using host = await nodePeer("queue_host.mjs", "events", socketDir);
  using consumer = await openConsumer("events", { events: "all", socketDir });
  using producer = await openProducer("events", { socketDir });
  for (let i = 0; i < 3; i++) producer.post(i);
  assert.equal(producer.flush(), true);
  await host.kill();
  for (let i = 0; i < 3; i++) assert.equal((await within("next()", consumer.next())).event, i);
  await assert.rejects(
    within("next()", consumer.next()),
    isIpcError(Status.PEER_TERMINATED),
  );
  await eventually(
    "the producer hears of it",
    throwsStatus(Status.PEER_TERMINATED, () => producer.post(9)),
  );
});

Deno.test("a consumer killed with SIGKILL is forgotten; producers and other consumers go on", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  await using queue = await serveEventQueue("events", { socketDir });
  using other = await openConsumer("events", { events: "all", socketDir });
  const doomed = await nodePeer("queue_consumer.mjs", "events", socketDir, "all", "1000");
  try {
    using producer = await openProducer("events", { socketDir });
    producer.post(1);
    producer.flush();
    assert.equal(queue.stats().consumers, 2);
    await doomed.kill();
    await eventually("the host forgets the killed consumer", () => queue.stats().consumers === 1);
    producer.post(2);
    producer.flush();
    assert.deepEqual(other.retrieve().map((n) => n.event), [1, 2]);
  } finally {
    await doomed.kill();
  }
});
