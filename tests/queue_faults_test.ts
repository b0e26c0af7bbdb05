/**
 * Event queues against kill -9, for each role, `SHMCALL_QUEUE_TRIALS` times (30 by default):
 * the killed peers are Node processes of node/test/peers/ (quick to start), the survivors this
 * process. Every wait is bounded, and every child is killed in a `finally`.
 *
 * @module
 */

import "./setup.ts";
import assert from "node:assert/strict";
import { type Notification, openConsumer, openProducer, serveEventQueue, Status } from "../mod.ts";
import { eventually, isIpcError, throwsStatus, within } from "./peers/assertions.ts";
import { Peer, tempSocketDir } from "./peers/spawn.ts";

const TRIALS = Number(Deno.env.get("SHMCALL_QUEUE_TRIALS") ?? 30);
const peers = new URL("../node/test/peers/", import.meta.url).pathname;

/** A Node peer of node/test/peers/, started and ready. */
const nodePeer = (script: string, ...args: string[]) =>
  Peer.start("node", [`${peers}${script}`, ...args], 20_000);

Deno.test(`the host killed, ${TRIALS} times: what was listed is retrieved, then PEER_TERMINATED, and no file stays`, async () => {
  for (let trial = 0; trial < TRIALS; trial++) {
    using dir = tempSocketDir();
    const socketDir = dir.path;
    const host = await nodePeer("queue_host.mjs", "q", socketDir);
    try {
      using consumer = await openConsumer("q", { events: "all", socketDir });
      using producer = await openProducer("q", { socketDir });
      const posts = 1 + (trial % 7);
      for (let i = 0; i < posts; i++) producer.post(i);
      assert.equal(producer.flush(), true);
      await host.kill();
      const got: number[] = [];
      await assert.rejects(async () => {
        while (true) got.push((await within("next()", consumer.next())).event);
      }, isIpcError(Status.PEER_TERMINATED));
      assert.deepEqual(got, Array.from({ length: posts }, (_, i) => i), `trial ${trial}`);
      await eventually(
        "the producer hears of it",
        throwsStatus(Status.PEER_TERMINATED, () => producer.post(0)),
      );
      await eventually(
        "the killed host's files are removed",
        () => [...Deno.readDirSync(socketDir)].length === 0,
      );
    } finally {
      await host.kill();
    }
  }
});

Deno.test(`a consumer killed, ${TRIALS} times, while posts flow: the host forgets it, the others lose nothing`, async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  await using queue = await serveEventQueue("q", { socketDir });
  using survivor = await openConsumer("q", { events: "all", socketDir, capacity: 2048 });
  using producer = await openProducer("q", { socketDir });
  const got: Notification[] = [];
  for (let trial = 0; trial < TRIALS; trial++) {
    const doomed = await nodePeer("queue_consumer.mjs", "q", socketDir, "all", "1000000");
    try {
      assert.equal(queue.stats().consumers, 2);
      for (let i = 0; i < 20; i++) producer.post(trial);
      await doomed.kill();
      producer.post(trial);
      assert.equal(producer.flush(), true);
      await eventually("the host forgets the killed consumer", () => queue.stats().consumers === 1);
      got.push(...survivor.retrieve());
    } finally {
      await doomed.kill();
    }
  }
  assert.deepEqual(
    got.map((n) => n.sequence),
    Array.from({ length: TRIALS * 21 }, (_, i) => i + 1),
    "the survivor got every post, in order",
  );
  assert.equal(survivor.stats().dropped, 0);
  assert.equal(queue.stats().connections, 2, "only the survivor and the producer are left");
});

Deno.test(`a producer killed, ${TRIALS} times, while it posts: nothing else changes`, async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  await using queue = await serveEventQueue("q", { socketDir });
  using consumer = await openConsumer("q", { events: "all", socketDir, capacity: 2048 });
  using other = await openProducer("q", { socketDir });
  for (let trial = 0; trial < TRIALS; trial++) {
    // It posts events 0, 1, 2, 0, … as fast as it can until it is killed.
    const doomed = await nodePeer("queue_producer.mjs", "q", socketDir, "1000000000");
    try {
      const before = queue.stats().posted;
      await eventually("the producer posts", () => queue.stats().posted > before);
      await doomed.kill();
      await eventually(
        "the host forgets the killed producer",
        () => queue.stats().connections === 2,
      );
      const burst = consumer.retrieve();
      // Its posts came in its order: events 0, 1, 2, 0, … with no gap in the queue's numbers.
      burst.forEach((n, i) => {
        assert.equal(n.event, i % 3, `trial ${trial}, notification ${i}`);
        if (i > 0) assert.equal(n.sequence, burst[i - 1]!.sequence + 1);
      });
      other.post(9);
      assert.equal(other.flush(), true);
      assert.deepEqual(consumer.retrieve().map((n) => n.event), [9], "the queue goes on");
    } finally {
      await doomed.kill();
    }
  }
});
