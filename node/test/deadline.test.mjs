// `timeout` in Node.js: it bounds the whole wait of synchronous and asynchronous calls, against
// a server in Node and one in Deno; a command not yet taken is withdrawn (`CANCELLED`), a
// taken one fails `TIMED_OUT`, and the client carries on.
import assert from "node:assert/strict";
import { test } from "node:test";
import { connect, Status } from "../dist/node/index.js";
import { failure } from "./peers/assertions.mjs";
import { Peer, peerCommand, tempSocketDir } from "./peers/spawn.mjs";

const ECHO = 1;
const HOLD = 3;
const BUSY = 9; // echo after keeping the server's thread busy for 300 ms
const text = (s) => new TextEncoder().encode(s);
const str = (b) => new TextDecoder().decode(b);

/** The IpcError `f` threw (or its Promise rejected with), and how long it took (ms). */
async function timedFailure(f) {
  const start = performance.now();
  const error = await failure(f);
  return { error, ms: performance.now() - start };
}

for (const runtime of ["node", "deno"]) {
  test(`Node client, ${runtime} server: a timeout ends a wait with TIMED_OUT or CANCELLED, and the client carries on`, async () => {
    const dir = tempSocketDir();
    const server = await Peer.start(
      ...peerCommand(runtime, "server.mjs", ["deadline", dir.path]),
    );
    let client;
    let busy;
    try {
      client = await connect("deadline", { socketDir: dir.path });
      for (
        const call of [
          () => client.execute(HOLD, { timeout: 100 }),
          () => client.execute(HOLD, { timeout: 100, completion: () => {} }),
        ]
      ) {
        const { error, ms } = await timedFailure(call);
        assert.equal(error.status, Status.TIMED_OUT);
        assert.match(error.message, /the server took it, so it may have run/);
        assert.ok(ms >= 99 && ms < 5_000, `the wait took ${ms} ms`);
      }
      assert.equal(
        str(
          client.execute(ECHO, { input: text("on"), outputLength: 8 }).output,
        ),
        "on",
      );
      // The server's one thread is busy for 300 ms: the command is not taken, and withdrawn.
      busy = await connect("deadline", { socketDir: dir.path });
      const first = busy.execute(BUSY, {
        input: text("busy"),
        outputLength: 8,
        completion: () => {},
      });
      await server.expect("busy");
      const never = await timedFailure(() =>
        client.execute(ECHO, {
          input: text("never"),
          outputLength: 8,
          timeout: 50,
        })
      );
      assert.equal(never.error.status, Status.CANCELLED);
      assert.equal(str((await first).output), "busy");
      // connect's timeout serves every command that gives none.
      const dflt = await connect("deadline", {
        socketDir: dir.path,
        timeout: 80,
      });
      try {
        assert.equal(
          (await timedFailure(() => dflt.execute(HOLD))).error.status,
          Status.TIMED_OUT,
        );
      } finally {
        dflt.close();
      }
    } finally {
      client?.close();
      busy?.close();
      await server.kill();
      dir.remove();
    }
  });
}
