// Handler failures leave a trace in Node.js too: the server reports each one (to standard error
// by default, to `onError` when given), and with `exposeErrors` the client's error says why.
import assert from "node:assert/strict";
import { test } from "node:test";
import { connect, IpcError, serve, Status } from "../dist/node/index.js";
import { failure } from "./peers/assertions.mjs";
import { Peer, peerCommand, tempSocketDir } from "./peers/spawn.mjs";

const THROW = 4;

test("Node: a server reports a handler failure to standard error by default, and its client learns only HANDLER_FAILED", async () => {
  const dir = tempSocketDir();
  const server = await Peer.start(
    ...peerCommand("node", "server.mjs", ["node-report", dir.path]),
    15_000,
    { stderr: true },
  );
  let client;
  try {
    client = await connect("node-report", { socketDir: dir.path });
    const e = await failure(() =>
      client.execute(THROW, { outputLength: 256, completion: () => {} })
    );
    assert.equal(e.status, Status.HANDLER_FAILED);
    assert.doesNotMatch(e.message, /the handler throws/);
    const deadline = Date.now() + 10_000;
    while (
      !/Error: the handler throws\n\s+at /.test(server.stderr) &&
      Date.now() < deadline
    ) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.match(
      server.stderr,
      /the exec handler of 'node-report' failed on connection \d+ \(pid \d+\), operation code 4:/,
    );
    assert.match(server.stderr, /Error: the handler throws\n\s+at /);
  } finally {
    client?.close();
    await server.kill();
    dir.remove();
  }
});

test("Node: onError replaces the report, and exposeErrors tells the client why", async () => {
  const dir = tempSocketDir();
  const seen = [];
  const server = await serve("node-expose", {
    exec: ({ code }) => {
      if (code === THROW) throw new TypeError("bad input");
      return { length: 0 };
    },
  }, {
    socketDir: dir.path,
    exposeErrors: true,
    onError: (error, conn, command) => seen.push({ error, conn, command }),
  });
  const client = await connect("node-expose", { socketDir: dir.path });
  try {
    const e = await failure(() =>
      client.execute(THROW, { outputLength: 64, completion: () => {} })
    );
    assert.equal(e.status, Status.HANDLER_FAILED);
    assert.match(
      e.message,
      /handler failed for this command: TypeError: bad input/,
    );
    assert.equal(seen.length, 1);
    assert.equal(seen[0].error.message, "bad input");
    assert.deepEqual(seen[0].command, { code: THROW });
    assert.equal(typeof seen[0].conn.id, "number");
  } finally {
    client.close();
    await server.close();
    dir.remove();
  }
});

test("Node: open and close failures reach onError, and an overflow says how many bytes were wanted", async () => {
  const dir = tempSocketDir();
  const seen = [];
  let opens = 0;
  let closed;
  const closeReported = new Promise((resolve) => closed = resolve);
  const server = await serve("node-hooks", {
    open: () => {
      if (++opens === 2) throw new RangeError("open refuses the second");
      return {};
    },
    exec: ({ output }) => ({ length: output.length + 44 }),
    close: () => {
      throw new Error("close throws");
    },
  }, {
    socketDir: dir.path,
    onError: (error, conn, command) => {
      seen.push({ error, conn, command });
      if (error.message === "close throws") closed();
    },
  });
  let client;
  try {
    client = await connect("node-hooks", { socketDir: dir.path });
    const overflow = await failure(() =>
      client.execute(1, { outputLength: 20, completion: () => {} })
    );
    assert.equal(overflow.status, Status.OUTPUT_OVERFLOW);
    assert.match(
      overflow.message,
      /answered 64 bytes of output for an output area of 20 bytes/,
    );
    assert.match(
      seen[0].error.message,
      /exec answered 64 output bytes for an output area of 20/,
    );
    assert.deepEqual(seen[0].command, { code: 1 });

    const refused = await connect("node-hooks", { socketDir: dir.path }).then(
      () => undefined,
      (e) => e,
    );
    assert.ok(refused instanceof IpcError, String(refused));
    assert.equal(refused.status, Status.HANDLER_FAILED);
    assert.equal(seen[1].error.message, "open refuses the second");
    assert.equal(seen[1].command, undefined);

    client.close();
    client = undefined;
    await Promise.race([
      closeReported,
      new Promise((_, reject) =>
        setTimeout(
          () => reject(new Error("close was not reported within 10 s")),
          10_000,
        ).unref()
      ),
    ]);
    assert.equal(seen[2].error.message, "close throws");
    assert.equal(seen[2].command, undefined);
    assert.equal(typeof seen[2].conn.id, "number");
  } finally {
    client?.close();
    await server.close();
    dir.remove();
  }
});
