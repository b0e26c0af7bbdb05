// Commands through NATS between Node and Deno, against a real nats-server: every pairing of
// runtimes, each side with a socket directory of its own (the local path cannot serve them).
import assert from "node:assert/strict";
import { test } from "node:test";
import { connect, IpcError, Status } from "../dist/node/index.js";
import { pattern } from "./peers/api.mjs";
import { NatsServer } from "./peers/nats_server.mjs";
import { Peer, peerCommand, tempSocketDir } from "./peers/spawn.mjs";

const RUNTIMES = ["node", "deno"];

/** Runs `body(nats)` with a server peer of `runtime` serving `icId` through NATS too. */
async function withNatsServer(runtime, icId, body) {
  const nats = await NatsServer.start();
  const dir = tempSocketDir();
  let server;
  try {
    server = await Peer.start(...peerCommand(runtime, "server.mjs", [icId, dir.path, nats.url]));
    await body(nats, server);
  } finally {
    await server?.kill();
    dir.remove();
    nats.kill();
  }
}

for (const runtime of RUNTIMES) {
  test(`Node client → ${runtime} server through NATS: 0 B to 1 MiB, statuses, failures`, async () => {
    await withNatsServer(runtime, "nats-node", async (nats, server) => {
      const client = await connect("nats-node", { nats: { servers: nats.url }, timeout: 10_000 });
      try {
        for (const n of [0, 1, 64, 65_536, 1 << 20]) {
          const input = pattern(n, n);
          const r = await client.execute(1, { input, outputLength: n, completion: () => {} });
          assert.equal(r.length, n);
          assert.deepEqual(r.output, input, `${n} bytes`);
        }
        assert.equal((await client.execute(7, { completion: () => {} })).status, 42);
        await assert.rejects(
          client.execute(4, { completion: () => {} }),
          (e) => e instanceof IpcError && e.status === Status.HANDLER_FAILED,
        );
        assert.throws(() => client.execute(1), TypeError);
        assert.match(await server.expect("open "), /^open \d+ 0$/);
      } finally {
        client.close();
      }
      await server.expect("close ");
    });
  });

  test(`${runtime} client → Node server through NATS`, async () => {
    await withNatsServer("node", "nats-to-node", async (nats) => {
      const client = await Peer.start(
        ...peerCommand(runtime, "nats_client.mjs", ["nats-to-node", nats.url]),
      );
      try {
        assert.equal(await client.expect("done", 30_000), "done 5");
      } finally {
        await client.kill();
      }
    });
  });
}

for (const host of RUNTIMES) {
  for (const consumer of RUNTIMES) {
    for (const producer of RUNTIMES) {
      test(`across NATS: ${host} host, ${consumer} consumer, ${producer} producer — registered events in post order`, async () => {
        const nats = await NatsServer.start();
        const dir = tempSocketDir();
        // The remote ends' socket directory holds nothing: only NATS reaches the host.
        const far = tempSocketDir();
        const peers = [];
        try {
          peers.push(
            await Peer.start(...peerCommand(host, "queue_host.mjs", ["nq", dir.path, nats.url])),
          );
          const c = await Peer.start(
            ...peerCommand(consumer, "queue_consumer.mjs", [
              "nq",
              far.path,
              "[0,2]",
              "20",
              nats.url,
            ]),
          );
          peers.push(c);
          const p = await Peer.start(
            ...peerCommand(producer, "queue_producer.mjs", [
              "nq",
              far.path,
              "30",
              nats.url,
            ]),
          );
          peers.push(p);
          await p.expect("done", 20_000);
          const { got, stats } = JSON.parse(await c.expect("{", 20_000));
          const expected = [];
          for (let i = 0; i < 30; i++) {
            if (i % 3 !== 1) expected.push([i % 3, i + 1, `n${i}`]);
          }
          assert.deepEqual(got, expected);
          assert.deepEqual(stats, { dropped: 0, retrieved: expected.length, waiting: 0 });
        } finally {
          for (const peer of peers.reverse()) await peer.kill();
          dir.remove();
          far.remove();
          nats.kill();
        }
      });
    }
  }
}

test("Node: NATS's authentication passes through — a wrong password is PERMISSION_DENIED", async () => {
  const nats = await NatsServer.start(10_000, { user: "shmcall", password: "s3cret" });
  try {
    await assert.rejects(
      connect("nats-auth", { nats: { servers: nats.url, user: "shmcall", pass: "wrong" } }),
      (e) => e instanceof IpcError && e.status === Status.PERMISSION_DENIED,
    );
    const client = await connect("nats-auth", {
      nats: { servers: nats.url, user: "shmcall", pass: "s3cret" },
    });
    // Connected: no server of the ic id, so NOT_FOUND, not a refusal.
    await assert.rejects(
      client.execute(1, { completion: () => {} }),
      (e) => e instanceof IpcError && e.status === Status.NOT_FOUND,
    );
    client.close();
  } finally {
    nats.kill();
  }
});
