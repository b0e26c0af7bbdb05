import "./setup.ts";
import assert from "node:assert/strict";
import { RawClient } from "../src/native.ts";
import { IpcError, Status } from "../mod.ts";
import { Peer, PEER_BIN, tempSocketDir } from "./peers/spawn.ts";

const ECHO = 1;
const HOLD = 3;

Deno.test("a Deno client makes sync and async round trips to a Rust server", async () => {
  using dir = tempSocketDir();
  await using _server = await Peer.start(PEER_BIN, ["serve", "raw", "--dir", dir.path]);
  const client = RawClient.connect("raw", { dir: dir.path });
  try {
    const t = client.begin(ECHO, 5, 16);
    t.input.set(new TextEncoder().encode("hello"));
    assert.deepEqual(client.call(t), { status: 0, length: 5 });
    assert.equal(new TextDecoder().decode(t.output.subarray(0, 5)), "hello");
    client.freeTicket(t.handle);

    // Larger than any slot of the default geometry: the backup path, same result.
    const big = new Uint8Array(3 << 20).map((_, i) => i * 7);
    const b = client.begin(ECHO, big.length, big.length);
    b.input.set(big);
    client.submit(b, 7n);
    const done = client.poll(10_000_000_000n);
    assert.ok(done !== undefined);
    assert.equal(done.token, 7n);
    const answer = client.answer(done.handle);
    assert.equal(answer.length, big.length);
    assert.deepEqual(answer.output, big);
    client.freeTicket(done.handle);
    assert.equal(client.poll(1_000_000n), undefined, "nothing else completes");
  } finally {
    client.free();
  }
});

Deno.test("a Deno client's call fails with PEER_TERMINATED when the server is killed", async () => {
  using dir = tempSocketDir();
  const server = await Peer.start(PEER_BIN, ["serve", "killed", "--dir", dir.path, "--verbose"]);
  const client = RawClient.connect("killed", { dir: dir.path });
  try {
    const held = client.begin(HOLD, 1, 1);
    client.submit(held, 1n);
    await server.expect("exec");
    await server.kill();
    const done = client.poll(10_000_000_000n);
    assert.ok(done !== undefined, "the held command completes");
    assert.throws(() => client.answer(done.handle), (e: unknown) => {
      assert.ok(e instanceof IpcError);
      assert.equal(e.status, Status.PEER_TERMINATED);
      return true;
    });
    client.freeTicket(done.handle);
    assert.throws(() => client.begin(ECHO, 1, 1), (e: unknown) => {
      return e instanceof IpcError && e.status === Status.PEER_TERMINATED;
    });
  } finally {
    await server.kill();
    client.free();
  }
});

Deno.test("connecting to an unknown ic id throws NOT_FOUND naming it", () => {
  using dir = tempSocketDir();
  assert.throws(() => RawClient.connect("nobody", { dir: dir.path }), (e: unknown) => {
    assert.ok(e instanceof IpcError);
    assert.equal(e.statusName, "NOT_FOUND");
    assert.match(e.message, /'nobody'/);
    return true;
  });
});
