/**
 * `connect(id, { reconnect })`: a client whose server restarted on the same ic id carries on;
 * the commands out at the death fail `PEER_TERMINATED` and are never sent again; commands issued
 * while it connects again fail at once; it gives up after its attempts.
 *
 * @module
 */

import "./setup.ts";
import assert from "node:assert/strict";
import { type Client, connect, IpcError, Status } from "../mod.ts";
import { within } from "./peers/assertions.ts";
import { Peer, tempSocketDir } from "./peers/spawn.ts";

const ECHO = 1;
const HOLD = 3;
const SERVER = decodeURIComponent(new URL("./peers/server.ts", import.meta.url).pathname);
const text = (s: string) => new TextEncoder().encode(s);

function server(icId: string, dir: string): Promise<Peer> {
  return Peer.start(Deno.execPath(), ["run", "-A", SERVER, icId, dir]);
}

/** An echo of `s`: its answer, or the IpcError it failed with. */
function echo(client: Client, s: string): string | IpcError {
  try {
    return new TextDecoder().decode(
      client.execute(ECHO, { input: text(s), outputLength: 64, timeout: 5_000 }).output,
    );
  } catch (e) {
    if (e instanceof IpcError) return e;
    throw e;
  }
}

/** Echoes (bounded, a turn of the event loop between tries) until one answers. */
function until(client: Client, what: string): Promise<void> {
  return within(
    what,
    (async () => {
      while (typeof echo(client, what) !== "string") await new Promise((r) => setTimeout(r, 5));
    })(),
  );
}

Deno.test("a client with reconnect carries on once its server restarted on the same ic id", async () => {
  using dir = tempSocketDir();
  const first = await server("again", dir.path);
  const client = await connect("again", {
    socketDir: dir.path,
    reconnect: { minDelay: 10, maxDelay: 50, attempts: 1_000 },
  });
  try {
    assert.equal(echo(client, "before"), "before");
    // Out when the server dies: fails PEER_TERMINATED, never sent again.
    const held = client.execute(HOLD, { completion: () => {} }).then(() => "answered", (e) => e);
    await first.kill();
    const lost = await within("the held command", held);
    assert.ok(lost instanceof IpcError && lost.status === Status.PEER_TERMINATED, String(lost));
    // Meanwhile: at once, PEER_TERMINATED, connecting again.
    const meanwhile = echo(client, "meanwhile");
    assert.ok(meanwhile instanceof IpcError, String(meanwhile));
    assert.equal(meanwhile.status, Status.PEER_TERMINATED);
    assert.match(meanwhile.message, /went away; connecting again \(attempt \d+ of 1000\)/);
    await using _second = await server("again", dir.path);
    await until(client, "after the restart");
    assert.equal(echo(client, "after"), "after");
    const r = await client.execute(ECHO, {
      input: text("async"),
      outputLength: 8,
      completion: () => {},
    });
    assert.equal(new TextDecoder().decode(r.output), "async");
  } finally {
    client.close();
    await first.kill();
  }
});

Deno.test("a client with reconnect gives up after its attempts and closes, saying why", async () => {
  using dir = tempSocketDir();
  const only = await server("gone", dir.path);
  const client = await connect("gone", {
    socketDir: dir.path,
    reconnect: { minDelay: 5, maxDelay: 10, attempts: 3 },
  });
  try {
    await only.kill();
    let last: string | IpcError = "";
    await within(
      "the client to give up",
      (async () => {
        while (!client.closed) {
          last = echo(client, "x");
          await new Promise((r) => setTimeout(r, 5));
        }
      })(),
    );
    last = echo(client, "x");
    assert.ok(last instanceof IpcError && last.status === Status.PEER_TERMINATED, String(last));
    assert.match(
      last.message,
      /went away, and 3 attempts to connect again failed \(the last: .*NOT_FOUND/,
    );
  } finally {
    client.close();
  }
});

Deno.test("reconnect is checked: a bad policy is refused naming it", async () => {
  const bad = (reconnect: unknown) =>
    connect("any", { reconnect: reconnect as never }).then(() => undefined, (e) => e);
  assert.match(String(await bad("yes")), /TypeError: reconnect must be a boolean/);
  assert.match(
    String(await bad({ attempts: 0 })),
    /RangeError: reconnect.attempts must be an integer/,
  );
  assert.match(
    String(await bad({ minDelay: 100, maxDelay: 10 })),
    /maxDelay \(10\) must be at least/,
  );
});
