// `connect(id, { reconnect })` in Node.js: a client whose server (Node, then Deno) restarted on the
// same ic id carries on; commands out at the death fail PEER_TERMINATED and are not sent again.
import assert from "node:assert/strict";
import { test } from "node:test";
import { connect, IpcError, Status } from "../dist/node/index.js";
import { Peer, peerCommand, tempSocketDir } from "./peers/spawn.mjs";

const ECHO = 1;
const HOLD = 3;

test("Node: a client with reconnect carries on once its server restarted on the same ic id", async () => {
  const dir = tempSocketDir();
  const first = await Peer.start(
    ...peerCommand("node", "server.mjs", ["node-again", dir.path]),
  );
  let second;
  const client = await connect("node-again", {
    socketDir: dir.path,
    reconnect: { minDelay: 10, maxDelay: 50, attempts: 1000 },
  });
  const echo = (s) => {
    try {
      const r = client.execute(ECHO, {
        input: new TextEncoder().encode(s),
        outputLength: 64,
        timeout: 5000,
      });
      return new TextDecoder().decode(r.output);
    } catch (e) {
      if (e instanceof IpcError) return e;
      throw e;
    }
  };
  try {
    assert.equal(echo("before"), "before");
    const held = client.execute(HOLD, { completion: () => {} }).then(
      () => "answered",
      (e) => e,
    );
    await first.kill();
    const lost = await held;
    assert.ok(
      lost instanceof IpcError && lost.status === Status.PEER_TERMINATED,
      String(lost),
    );
    second = await Peer.start(
      ...peerCommand("deno", "server.mjs", ["node-again", dir.path]),
    );
    const deadline = Date.now() + 10_000;
    while (typeof echo("after") !== "string") {
      assert.ok(Date.now() < deadline, "not connected again within 10 s");
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(echo("again"), "again");
  } finally {
    client.close();
    await first.kill();
    await second?.kill();
    dir.remove();
  }
});
