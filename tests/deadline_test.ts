/**
 * `timeout` bounds the whole wait of synchronous and asynchronous calls: a command the server
 * has not taken is withdrawn (`CANCELLED`, it never runs), a taken one fails `TIMED_OUT`; the
 * client carries on, and a late answer never reaches a later command.
 *
 * @module
 */

import "./setup.ts";
import assert from "node:assert/strict";
import { type Client, connect, type IpcError, Status } from "../mod.ts";
import { failure, within } from "./peers/assertions.ts";
import { Peer, tempSocketDir } from "./peers/spawn.ts";

const ECHO = 1;
const CHECKSUM = 2;
const HOLD = 3;
const LATE = 6; // echo after 200 ms
const BUSY = 9; // echo after keeping the server's thread busy for 300 ms

const SERVER = decodeURIComponent(new URL("./peers/server.ts", import.meta.url).pathname);
const text = (s: string) => new TextEncoder().encode(s);

/** The test server peer (tests/peers/server.ts) serving `icId` in `dir`. */
function server(icId: string, dir: string, ...flags: string[]): Promise<Peer> {
  return Peer.start(Deno.execPath(), ["run", "-A", SERVER, icId, dir, ...flags]);
}
const str = (b: Uint8Array) => new TextDecoder().decode(b);

/** The IpcError `f` threw (or its Promise rejected with), and how long it took (ms). */
async function timedFailure(f: () => unknown): Promise<{ error: IpcError; ms: number }> {
  const start = performance.now();
  const error = await failure(f);
  return { error, ms: performance.now() - start };
}

/** Echoes `s` synchronously and checks the answer is its own. */
function echoes(client: Client, s: string): void {
  const r = client.execute(ECHO, { input: text(s), outputLength: 64 });
  assert.equal(str(r.output), s, "an answer that is not this command's own");
}

Deno.test("a timeout ends a synchronous or asynchronous wait on a stuck server with TIMED_OUT, and the client carries on", async () => {
  using dir = tempSocketDir();
  await using _server = await server("stuck", dir.path);
  using client = await connect("stuck", { socketDir: dir.path });
  const sync = await timedFailure(() => client.execute(HOLD, { timeout: 100 }));
  assert.equal(sync.error.status, Status.TIMED_OUT);
  assert.match(
    sync.error.message,
    /within its timeout of 100 ms: the server took it, so it may have run/,
  );
  assert.ok(sync.ms >= 99 && sync.ms < 5_000, `the wait took ${sync.ms} ms`);
  const completions: number[] = [];
  const asynchronous = await timedFailure(() =>
    client.execute(HOLD, { timeout: 100, completion: (r) => completions.push(r.status) })
  );
  assert.equal(asynchronous.error.status, Status.TIMED_OUT);
  assert.ok(
    asynchronous.ms >= 99 && asynchronous.ms < 5_000,
    `the wait took ${asynchronous.ms} ms`,
  );
  assert.deepEqual(completions, [Status.TIMED_OUT], "completion hears of the failure");
  echoes(client, "still served");
  assert.equal(
    str(
      (await client.execute(ECHO, { input: text("async"), outputLength: 8, completion: () => {} }))
        .output,
    ),
    "async",
  );
});

Deno.test("connect's timeout applies to every command that gives none", async () => {
  using dir = tempSocketDir();
  await using _server = await server("default", dir.path);
  using client = await connect("default", { socketDir: dir.path, timeout: 80 });
  assert.equal((await timedFailure(() => client.execute(HOLD))).error.status, Status.TIMED_OUT);
  assert.equal(
    (await timedFailure(() => client.execute(HOLD, { completion: () => {} }))).error.status,
    Status.TIMED_OUT,
  );
  // A command's own timeout wins.
  const own = await timedFailure(() => client.execute(HOLD, { timeout: 300 }));
  assert.ok(own.ms >= 299, `the command's own timeout was not used: ${own.ms} ms`);
  await assert.rejects(connect("default", { socketDir: dir.path, timeout: -1 }), RangeError);
});

Deno.test("a late answer never reaches a later command, and its slot serves again once it came", async () => {
  using dir = tempSocketDir();
  await using _server = await server("late", dir.path);
  using client = await connect("late", { socketDir: dir.path });
  // More than the 256 small slots time out, with their answers still to come later:
  // if a timed-out command's slot were lost, the commands below would take the backup path.
  const LOST = 300;
  for (let i = 0; i < LOST + 20; i++) {
    const options = { input: text(`late ${i}`), outputLength: 64, timeout: 1 };
    // Synchronous ones first (their slots come back through the late answer alone), then
    // asynchronous ones (whose late completions must find nothing to settle).
    const late = i < LOST
      ? timedFailure(() => client.execute(LATE, options))
      : timedFailure(() => client.execute(LATE, { ...options, completion: () => {} }));
    // Taken and timed out, or (on a slow draw) not yet taken within 1 ms and withdrawn: the
    // answer is to come either way.
    const status: number = (await late).error.status;
    assert.ok(status === Status.TIMED_OUT || status === Status.CANCELLED, `status ${status}`);
  }
  // Each command below gets its own answer while the late ones arrive among them.
  const before = client.stats().backup;
  let n = 0;
  await within(
    "the late answers",
    (async () => {
      while (client.stats().inFlight > 0) {
        echoes(client, `on time ${n++}`);
        await new Promise((r) => setTimeout(r, 1));
      }
    })(),
    10_000,
  );
  for (let i = 0; i < 400; i++) echoes(client, `after ${i}`);
  assert.equal(client.stats().backup, before, "slots of timed-out commands were not given back");
});

Deno.test("a command the server has not taken when its timeout passes is withdrawn with CANCELLED and never runs", async () => {
  using dir = tempSocketDir();
  await using peer = await server("busy", dir.path, "--verbose");
  using busy = await connect("busy", { socketDir: dir.path });
  using client = await connect("busy", { socketDir: dir.path });
  // The server's one thread is busy with this for 300 ms: it takes nothing else meanwhile.
  const first = busy.execute(BUSY, { input: text("busy"), outputLength: 8, completion: () => {} });
  assert.match(await peer.expect("exec ", 5_000), new RegExp(` ${BUSY}$`));
  const never = { input: text("never"), outputLength: 8, timeout: 50 };
  for (
    const call of [
      () => client.execute(CHECKSUM, never),
      () => client.execute(CHECKSUM, { ...never, completion: () => {} }),
    ]
  ) {
    const f = await timedFailure(call);
    assert.equal(f.error.status, Status.CANCELLED);
    assert.match(
      f.error.message,
      /withdrawn before the server took it: the server did not take it within its timeout of 50 ms/,
    );
  }
  assert.equal(str((await first).output), "busy");
  echoes(client, "served");
  // The withdrawn commands never ran: the next command the server ran after BUSY is the echo.
  assert.match(await peer.expect("exec ", 5_000), new RegExp(` ${ECHO}$`));
  const ran = peer.seen.filter((l) => l.startsWith("exec ")).map((l) => Number(l.split(" ")[2]));
  assert.deepEqual(ran, [BUSY, ECHO]);
});
