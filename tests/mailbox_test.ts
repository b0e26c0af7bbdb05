import "./setup.ts";
import assert from "node:assert/strict";
import { DEPTH, LOOP, Mailbox, SPIN, WAIT } from "../src/mailbox.ts";
import type { Job } from "../src/pool.ts";

const job = (n: number): Job => ({
  command: 2 ** 40 + n,
  code: 0xffff_fff0 + (n % 16),
  conn: 1000 + n,
  inSegment: n % 2 === 0,
  inputOffset: 4096 * n,
  outputOffset: 4096 * n + 64,
  inputLength: n % 65,
  outputLength: 2 ** 30 + n,
});

const blank = (): Job => job(0);

Deno.test("a mailbox carries jobs and their ids in order, past many turns of its rings", () => {
  const server = new Mailbox();
  const worker = new Mailbox(server.buffer);
  const done: number[] = [];
  const into = blank();
  for (let n = 1; n <= 10 * DEPTH + 1; n++) {
    // The server never holds more than DEPTH unfinished jobs at a worker.
    server.put(n * 7, job(n));
    assert.ok(worker.hasJob);
    assert.equal(worker.take(into), n * 7);
    assert.deepEqual(into, job(n), `job ${n} as it was put`);
    assert.equal(worker.hasJob, false);
    worker.finish(n * 7);
    server.reap((id) => done.push(id));
  }
  assert.deepEqual(done, Array.from({ length: 10 * DEPTH + 1 }, (_, i) => (i + 1) * 7));
});

Deno.test("a mailbox holds DEPTH jobs at once, and their answers in the order given", () => {
  const server = new Mailbox();
  const worker = new Mailbox(server.buffer);
  for (let n = 0; n < DEPTH; n++) server.put(n, job(n));
  const into = blank();
  const taken = [];
  while (worker.hasJob) taken.push(worker.take(into));
  assert.deepEqual(taken, Array.from({ length: DEPTH }, (_, n) => n));
  for (const id of [...taken].reverse()) worker.finish(id);
  const done: number[] = [];
  server.reap((id) => done.push(id));
  assert.deepEqual(done, [...taken].reverse());
});

Deno.test("a mailbox asks for one reap message at a time", () => {
  const server = new Mailbox();
  const worker = new Mailbox(server.buffer);
  const into = blank();
  server.put(1, job(1));
  server.put(2, job(2));
  worker.take(into);
  worker.take(into);
  assert.equal(worker.finish(1), true, "the first answer asks for a message");
  assert.equal(worker.finish(2), false, "one is on its way already");
  server.reaped();
  const done: number[] = [];
  server.reap((id) => done.push(id));
  assert.deepEqual(done, [1, 2]);
  server.put(3, job(3));
  worker.take(into);
  assert.equal(worker.finish(3), true, "after the message arrived, the next answer asks again");
});

Deno.test("a mailbox tells its server the worker's state, and a put ends its wait", () => {
  const server = new Mailbox();
  const worker = new Mailbox(server.buffer);
  assert.equal(server.put(1, job(1)), LOOP, "a new worker is in its event loop: poke it");
  worker.take(blank());
  worker.state = SPIN;
  assert.equal(server.put(2, job(2)), SPIN);
  worker.take(blank());
  // Nothing there: the sleep times out.
  assert.equal(worker.sleep(1, 0), false);
  // A job there before it sleeps: it does not sleep.
  server.put(3, job(3));
  assert.equal(worker.sleep(10_000, 0), true);
  worker.take(blank());
  // A message counted before it sleeps: neither.
  server.posted();
  assert.equal(worker.sleep(10_000, 0), true);
  assert.equal(worker.postedCount, 1);
  // A stop: neither.
  server.stop();
  assert.equal(worker.stopped, true);
  assert.equal(worker.sleep(10_000, 1), true);
});

Deno.test("a worker asleep on its mailbox wakes for a job put from another thread", async () => {
  const server = new Mailbox();
  // The worker thread sleeps (state WAIT) and reports what woke it.
  const code = `
    const { Mailbox, SPIN } = await import(${
    JSON.stringify(new URL("../src/mailbox.ts", import.meta.url).href)
  });
    self.onmessage = (e) => {
      const box = new Mailbox(e.data);
      box.state = SPIN;
      self.postMessage("sleeping");
      const woke = box.sleep(10_000, 0);
      self.postMessage({ woke, hasJob: box.hasJob });
    };
  `;
  const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
  const w = new Worker(url, { type: "module" });
  try {
    const said: unknown[] = [];
    let heard: () => void = () => {};
    w.onmessage = (e) => {
      said.push(e.data);
      heard();
    };
    const next = (n: number) =>
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`worker said ${JSON.stringify(said)}`)),
          10_000,
        );
        heard = () => {
          if (said.length >= n) {
            clearTimeout(timer);
            resolve();
          }
        };
        heard();
      });
    w.postMessage(server.buffer);
    await next(1);
    // Its state goes to WAIT just before it sleeps (bounded look, not synchronization: the
    // put below wakes it in either state).
    for (let i = 0; i < 10_000 && server.state !== WAIT; i++) {
      await new Promise((r) => setTimeout(r, 1));
    }
    assert.equal(server.put(1, job(1)), WAIT, "the worker slept on its mailbox");
    await next(2);
    assert.deepEqual(said[1], { woke: true, hasJob: true });
  } finally {
    w.terminate();
    URL.revokeObjectURL(url);
  }
});
