// Event queues across runtimes: a host, a consumer and a producer in three processes, in every
// pairing of Node and Deno; and the API in this Node process.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  IpcError,
  openConsumer,
  openProducer,
  serveEventQueue,
  Status,
} from "../dist/node/index.js";
import { Peer, peerCommand, tempSocketDir } from "./peers/spawn.mjs";

const RUNTIMES = ["node", "deno"];
const COUNT = 30;

for (const host of RUNTIMES) {
  for (const consumer of RUNTIMES) {
    for (const producer of RUNTIMES) {
      test(`${host} host, ${consumer} consumer, ${producer} producer: registered events in post order`, async () => {
        const dir = tempSocketDir();
        const peers = [];
        try {
          const h = await Peer.start(
            ...peerCommand(host, "queue_host.mjs", ["q", dir.path]),
          );
          peers.push(h);
          const c = await Peer.start(
            ...peerCommand(consumer, "queue_consumer.mjs", [
              "q",
              dir.path,
              "[0,2]",
              String(COUNT * 2 / 3),
            ]),
          );
          peers.push(c);
          const p = await Peer.start(
            ...peerCommand(producer, "queue_producer.mjs", [
              "q",
              dir.path,
              String(COUNT),
            ]),
          );
          peers.push(p);
          await p.expect("done");
          const { got, stats } = JSON.parse(await c.expect("{"));
          const expected = [];
          for (let i = 0; i < COUNT; i++) {
            if (i % 3 !== 1) expected.push([i % 3, i + 1, `n${i}`]);
          }
          assert.deepEqual(got, expected);
          assert.deepEqual(stats, { dropped: 0, retrieved: expected.length, waiting: 0 });
        } finally {
          for (const peer of peers.reverse()) await peer.kill();
          dir.remove();
        }
      });
    }
  }
}

test("in one Node process: a host, a consumer and a producer; the host's close ends the consumer", async () => {
  const dir = tempSocketDir();
  const queue = await serveEventQueue("q", { socketDir: dir.path });
  try {
    const consumer = await openConsumer("q", {
      socketDir: dir.path,
      events: "all",
      capacity: 2,
    });
    const producer = await openProducer("q", { socketDir: dir.path });
    for (let i = 0; i < 3; i++) producer.post(i, new Uint8Array([i]));
    // A post returns once it is on its way; flush waits until the host accepted them.
    assert.equal(producer.flush(), true);
    assert.deepEqual(consumer.retrieve().map((n) => n.sequence), [1, 2]);
    assert.equal(consumer.stats().dropped, 1);
    producer.post(7);
    assert.equal(producer.flush(), true);
    await queue.close();
    assert.equal((await consumer.next()).event, 7);
    await assert.rejects(
      consumer.next(),
      (e) => e instanceof IpcError && e.status === Status.PEER_TERMINATED,
    );
    // The producer hears of the end on its event loop: a post then throws (a bounded wait).
    const until = Date.now() + 10_000;
    let thrown;
    while (thrown === undefined && Date.now() < until) {
      try {
        producer.post(1);
        await new Promise((r) => setTimeout(r, 1));
      } catch (e) {
        thrown = e;
      }
    }
    assert.ok(thrown instanceof IpcError && thrown.status === Status.PEER_TERMINATED, `${thrown}`);
    consumer.close();
    producer.close();
  } finally {
    await queue.close();
    dir.remove();
  }
});
