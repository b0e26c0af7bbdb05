// Node.js as a peer of Deno (and of Node): every pairing of runtimes, through real processes.
// The client of "Node client" tests is this test process; the others are peers
// (peers/server.mjs, peers/client.mjs), run by Node or by Deno.
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { after, test } from "node:test";
import { connect, IpcError, serve, Status } from "../dist/node/index.js";
import { pattern } from "./peers/api.mjs";
import { roundTrips } from "./peers/checks.mjs";
import { Peer, PEER_BIN, peerCommand, tempSocketDir } from "./peers/spawn.mjs";

const RUNTIMES = ["node", "deno"];

/** Runs `body(peer, dir)` with a server peer of `runtime`, then kills it and removes the dir. */
async function withServer(runtime, icId, body) {
  const dir = tempSocketDir();
  let server;
  try {
    server = await Peer.start(
      ...peerCommand(runtime, "server.mjs", [icId, dir.path]),
    );
    await body(server, dir);
  } finally {
    await server?.kill();
    dir.remove();
  }
}

const isIpcError = (status) => (e) => {
  assert.ok(e instanceof IpcError, `expected an IpcError, got ${e}`);
  assert.equal(e.status, status, e.message);
  return true;
};

for (const runtime of RUNTIMES) {
  test(`Node client ↔ ${runtime} server: sync, async, callbacks, the backup path, many in flight`, async () => {
    await withServer(runtime, "pair", async (server, dir) => {
      const client = await connect("pair", { socketDir: dir.path });
      try {
        assert.ok(
          (await server.expect("open")).endsWith(` ${process.pid}`),
          "open names our pid",
        );
        assert.ok(await roundTrips(client) > 200);
        // A user status is returned; a throwing handler is a library failure, thrown.
        assert.throws(
          () => client.execute(4),
          isIpcError(Status.HANDLER_FAILED),
        );
      } finally {
        client.close();
      }
      await server.expect("close");
    });
  });

  test(`a ${runtime} server killed: the Node client's waiting calls end with PEER_TERMINATED`, async () => {
    await withServer(runtime, "dies", async (server, dir) => {
      const client = await connect("dies", { socketDir: dir.path });
      try {
        let completed;
        const held = client.execute(3, {
          outputLength: 8,
          completion: (r) => (completed = r.status),
        });
        // Code 8 makes the server kill itself with SIGKILL while this thread waits inline.
        assert.throws(
          () => client.execute(8),
          isIpcError(Status.PEER_TERMINATED),
        );
        await assert.rejects(held, isIpcError(Status.PEER_TERMINATED));
        assert.equal(completed, Status.PEER_TERMINATED);
        assert.throws(
          () => client.execute(1),
          isIpcError(Status.PEER_TERMINATED),
        );
        assert.equal((await server.exited()).signal, "SIGKILL");
        // Nothing of the dead server is left in its socket directory.
        assert.deepEqual(readdirSync(dir.path), []);
      } finally {
        client.close();
      }
    });
  });
}

test("Deno client ↔ Node server: sync, async, callbacks, the backup path, many in flight", async () => {
  await withServer("node", "deno-node", async (server, dir) => {
    const client = new Peer(
      ...peerCommand("deno", "client.mjs", ["deno-node", dir.path, "check"]),
    );
    try {
      const line = await client.expect("checked", 60_000).catch((e) => {
        throw new Error(
          `${e.message} (client printed: ${client.seen.join(" | ")})`,
        );
      });
      assert.ok(Number(line.split(" ")[1]) > 200, line);
      assert.equal((await client.exited()).code, 0);
      await server.expect("open");
      await server.expect("close");
    } finally {
      await client.kill();
    }
  });
});

test("a Node server killed: a Deno client's pending command rejects with PEER_TERMINATED", async () => {
  await withServer("node", "node-dies", async (server, dir) => {
    const client = await Peer.start(
      ...peerCommand("deno", "client.mjs", ["node-dies", dir.path, "hold"]),
    );
    try {
      await client.expect("held");
      await server.kill();
      assert.equal(
        await client.expect("rejected"),
        "rejected PEER_TERMINATED -1",
      );
      assert.equal((await client.exited()).code, 0);
    } finally {
      await client.kill();
    }
  });
});

for (
  const [clientRuntime, serverRuntime] of [["deno", "node"], ["node", "deno"], [
    "node",
    "node",
  ]]
) {
  test(`a ${clientRuntime} client killed: the ${serverRuntime} server closes that connection once and serves others`, async () => {
    await withServer(serverRuntime, "victim", async (server, dir) => {
      const victim = await Peer.start(
        // Code 6 answers after 100 ms: the client dies with it in progress.
        ...peerCommand(clientRuntime, "client.mjs", [
          "victim",
          dir.path,
          "hold",
          "6",
        ]),
      );
      try {
        const opened = (await server.expect("open")).split(" ")[1];
        await victim.expect("held");
        await victim.kill();
        assert.equal(await server.expect("close"), `close ${opened}`);
        // Another client is served as before, and the dead one is closed exactly once.
        const other = await connect("victim", { socketDir: dir.path });
        const otherId = (await server.expect("open")).split(" ")[1];
        try {
          const input = pattern(100, 9);
          assert.deepEqual(
            other.execute(1, { input, outputLength: 100 }).output,
            input,
          );
        } finally {
          other.close();
        }
        await server.expect(`close ${otherId}`);
        // Until the server has closed and exited: no second close of the dead client.
        server.endInput();
        await server.exited();
        assert.deepEqual(server.seen.filter((l) => l.startsWith("close")), []);
      } finally {
        await victim.kill();
      }
    });
  });
}

test("connects wait for a Node server's async open without starving Node's thread pool", async () => {
  // Each open reads a file (libuv's pool, four threads); more connects than that at once
  // must not hold the pool while they wait for their open.
  const dir = tempSocketDir();
  const server = await serve("pool", {
    open: async () => (await readFile(import.meta.filename ?? new URL(import.meta.url))).length,
    exec: (_command, _conn, size) => ({ status: size > 0 ? 1 : 0 }),
  }, { socketDir: dir.path });
  try {
    const clients = await Promise.all(
      Array.from({ length: 8 }, () => connect("pool", { socketDir: dir.path })),
    );
    const results = await Promise.all(
      clients.map((c) => c.execute(1, { completion() {} })),
    );
    assert.deepEqual(results.map((r) => r.status), Array(8).fill(1));
    for (const c of clients) c.close();
  } finally {
    await server.close();
    dir.remove();
  }
});

test("a Node process whose clients and servers are all closed exits by itself", async () => {
  const peer = new Peer(...peerCommand("node", "exits.mjs", []));
  try {
    await peer.expect("done");
    assert.equal((await peer.exited(10_000)).code, 0);
  } finally {
    await peer.kill();
  }
});

test("a Node server refuses a client speaking another protocol major, and says why", async () => {
  const dir = tempSocketDir();
  const server = await serve("versions", { exec: () => {} }, {
    socketDir: dir.path,
  });
  try {
    const peer = new Peer(PEER_BIN, [
      "client",
      "versions",
      "--dir",
      dir.path,
      "--major",
      "3",
    ]);
    try {
      const line = await peer.expect("error");
      assert.match(line, /VERSION_MISMATCH/);
      assert.match(line, /protocol 3\.\d+ and this server speaks 2\.\d+/);
    } finally {
      await peer.kill();
    }
  } finally {
    await server.close();
    dir.remove();
  }
});

test("Node: bad arguments throw TypeError or RangeError naming the value", async () => {
  await assert.rejects(
    connect("bad id"),
    (e) => e instanceof RangeError && /"bad id"/.test(e.message),
  );
  await assert.rejects(
    serve("x", {}),
    /handlers.exec must be a function, received undefined/,
  );
  for (const spinMicros of [Infinity, NaN, -1, 2e6]) {
    await assert.rejects(
      serve("x", { exec() {} }, { spinMicros }),
      (e) => e instanceof RangeError && e.message.includes(`received ${spinMicros}`),
    );
  }
  const dir = tempSocketDir();
  try {
    await assert.rejects(
      connect("nobody", { socketDir: dir.path }),
      isIpcError(Status.NOT_FOUND),
    );
  } finally {
    dir.remove();
  }
});

after(() => {
  assert.ok(
    existsSync(PEER_BIN),
    `the Rust peer ${PEER_BIN} is built by cargo build --release`,
  );
});
