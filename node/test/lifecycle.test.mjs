// Issue 7's capabilities in Node.js: the worker pool (worker_threads), withdrawing commands,
// counters (local and asked of the server), and quiescing.
import assert from "node:assert/strict";
import { test } from "node:test";
import { threadId } from "node:worker_threads";
import { connect, IpcError, serve, socketDir, Status } from "../dist/node/index.js";
import { tempSocketDir } from "./peers/spawn.mjs";

const text = (r) => new TextDecoder().decode(r.output);
const async = (client, code, options = {}) =>
  client.execute(code, { outputLength: 64, completion: () => {}, ...options });

test("Node: a pool of worker_threads runs the commands sent to it, inline ones stay on the server's thread", async () => {
  const dir = tempSocketDir();
  try {
    const server = await serve("node-pool", {
      open: () => ({ tag: "ctx" }),
      exec: ({ output }) => {
        output.set(new TextEncoder().encode(`${threadId}:inline`));
        return { length: `${threadId}:inline`.length };
      },
    }, {
      socketDir: dir.path,
      workers: 2,
      module: new URL("./peers/pool_handler.mjs", import.meta.url),
    });
    const client = await connect("node-pool", { socketDir: dir.path });
    try {
      // Workers take commands themselves: one that is still starting may leave a batch to the
      // other, so batches go on (bounded) until both were seen.
      const threads = new Set();
      const until = Date.now() + 10_000;
      while (threads.size < 2 && Date.now() < until) {
        const pooled = await Promise.all(
          Array.from({ length: 40 }, () => async(client, 1)),
        );
        for (const r of pooled) threads.add(text(r));
      }
      for (const t of threads) {
        assert.match(t, /^\d+:ctx$/);
        assert.notEqual(
          t,
          `${threadId}:ctx`,
          "a pool command ran on the server's thread",
        );
      }
      assert.equal(
        threads.size,
        2,
        `expected both workers, saw ${[...threads]}`,
      );
      const inline = await async(client, 1, { inline: true });
      assert.equal(text(inline), `${threadId}:inline`);
      assert.equal(server.stats().workers, 2);
      // A worker that exits fails the command it held and is replaced.
      await assert.rejects(
        async(client, 6),
        (e) => e instanceof IpcError && e.status === Status.HANDLER_FAILED,
      );
      // The replacement loads meanwhile: batches go to both workers once it is there.
      const deadline = Date.now() + 10_000;
      let seen = new Set();
      while (seen.size < 2 && Date.now() < deadline) {
        const batch = await Promise.all(
          Array.from({ length: 8 }, () => async(client, 1)),
        );
        seen = new Set(batch.map(text));
      }
      assert.equal(
        seen.size,
        2,
        "the pool did not get its second worker back within 10 s",
      );
      assert.ok(
        [...seen].some((t) => !threads.has(t)),
        "no new worker thread serves",
      );
      await server.quiesce();
    } finally {
      client.close();
      await server.close();
    }
  } finally {
    dir.remove();
  }
});

test("Node: an aborted command the server has not taken is withdrawn with CANCELLED and never runs", async () => {
  const dir = tempSocketDir();
  let ran = 0;
  try {
    const server = await serve("node-cancel", { exec: () => void ran++ }, {
      socketDir: dir.path,
    });
    const client = await connect("node-cancel", { socketDir: dir.path });
    try {
      const ac = new AbortController();
      const statuses = [];
      const p = client.execute(1, {
        completion: (r) => statuses.push(r.status),
        signal: ac.signal,
      });
      // Same tick: the command waits in the hub for this thread, untaken.
      ac.abort();
      await assert.rejects(
        p,
        (e) => e instanceof IpcError && e.status === Status.CANCELLED,
      );
      assert.deepEqual(statuses, [Status.CANCELLED]);
      // The server answers it CANCELLED when it reaches it; a later command shows it did.
      await async(client, 2);
      assert.equal(ran, 1, "the withdrawn command ran");
      assert.equal(client.stats().failures.CANCELLED, 1);
    } finally {
      client.close();
      await server.close();
    }
  } finally {
    dir.remove();
  }
});

test("Node: counters, locally and asked of the server; quiesce answers SERVER_QUIESCING", async () => {
  const dir = tempSocketDir();
  try {
    const server = await serve("node-stats", {
      exec: ({ input, output }) => {
        output.set(input);
        return { length: input.length };
      },
    }, { socketDir: dir.path });
    const client = await connect("node-stats", { socketDir: dir.path });
    try {
      for (let i = 0; i < 10; i++) {
        await async(client, 1, { input: new Uint8Array(8) });
      }
      const local = client.stats();
      assert.equal(local.commands, 10);
      assert.equal(local.bytesIn, 80);
      assert.equal(local.bytesOut, 80);
      assert.equal(local.latency.count, 10);
      assert.ok(
        local.latency.p50 > 0 && local.latency.p50 <= local.latency.p99,
      );
      assert.equal(
        socketDir(dir.path),
        dir.path,
        "the core resolves the same directory",
      );
      const remote = await client.serverStats();
      assert.equal(
        remote.commands,
        10,
        "the stats request itself is not counted",
      );
      assert.equal(remote.connections, 1);
      await server.quiesce();
      assert.equal(server.stats().quiescing, true);
      await assert.rejects(
        async(client, 1),
        (e) => e instanceof IpcError && e.status === Status.SERVER_QUIESCING,
      );
      assert.equal(server.stats().failures.SERVER_QUIESCING, 1);
    } finally {
      client.close();
      await server.close();
    }
  } finally {
    dir.remove();
  }
});
