/**
 * Handler failures leave a trace: the server reports each one (to standard error by default,
 * to `onError` when given), and with `exposeErrors` the client's error says why.
 *
 * @module
 */

import "./setup.ts";
import assert from "node:assert/strict";
import { connect, IpcError, serve, Status } from "../mod.ts";
import { failure, within } from "./peers/assertions.ts";
import { Peer, tempSocketDir } from "./peers/spawn.ts";

const FAILING = decodeURIComponent(new URL("./peers/failing.ts", import.meta.url).pathname);
const THROW = 4;
const REJECT = 5;
const STRING = 10;
const NEGATIVE = 11;
const OVERFLOW = 12;

/** The failing server peer, its standard error kept. */
function failing(icId: string, dir: string, ...flags: string[]): Promise<Peer> {
  return Peer.start(Deno.execPath(), ["run", "-A", FAILING, icId, dir, ...flags], 10_000, true);
}

/** Waits (bounded) until `peer` wrote `text` to standard error. */
function reported(peer: Peer, text: string | RegExp): Promise<void> {
  const seen = () => typeof text === "string" ? peer.stderr.includes(text) : text.test(peer.stderr);
  return within(
    `the report ${text}`,
    (async () => {
      while (!seen()) await new Promise((r) => setTimeout(r, 5));
    })(),
  ).catch((e) => {
    throw new Error(`${e.message}; the peer wrote: ${peer.stderr}`);
  });
}

Deno.test("by default a server reports each handler failure to standard error, and its client learns only HANDLER_FAILED", async () => {
  using dir = tempSocketDir();
  await using server = await failing("report", dir.path);
  const client = await connect("report", { socketDir: dir.path });
  const thrown = await failure(() => client.execute(THROW, { outputLength: 256 }));
  assert.equal(thrown.status, Status.HANDLER_FAILED);
  assert.doesNotMatch(thrown.message, /the handler throws/, "a reason leaked without exposeErrors");
  await reported(
    server,
    /the exec handler of 'report' failed on connection \d+ \(pid \d+\), operation code 4:/,
  );
  await reported(server, "Error: the handler throws");
  await reported(server, /at exec \(file:.*failing\.ts/);
  const rejected = await failure(() => client.execute(REJECT, { completion: () => {} }));
  assert.equal(rejected.status, Status.HANDLER_FAILED);
  await reported(server, "RangeError: the handler rejects");
  client.close();
  await reported(
    server,
    /the close handler of 'report' failed on connection \d+ .*:\s*Error: close throws/s,
  );
});

Deno.test("answers that are not a status and a length are reported naming the value; an overflow says how many bytes", async () => {
  using dir = tempSocketDir();
  await using server = await failing("nonsense", dir.path);
  using client = await connect("nonsense", { socketDir: dir.path });
  assert.equal((await failure(() => client.execute(STRING))).status, Status.HANDLER_FAILED);
  await reported(
    server,
    `TypeError: exec returned "str": it must return { status, length } or nothing`,
  );
  assert.equal((await failure(() => client.execute(NEGATIVE))).status, Status.HANDLER_FAILED);
  await reported(server, "RangeError: exec answered status -3: a status is an integer from 0 to");
  const overflow = await failure(() => client.execute(OVERFLOW, { outputLength: 64 }));
  assert.equal(overflow.status, Status.OUTPUT_OVERFLOW);
  assert.match(
    overflow.message,
    /answered 300 bytes of output for an output area of 64 bytes/,
  );
  await reported(server, "RangeError: exec answered 300 output bytes for an output area of 64");
});

Deno.test("with exposeErrors the client's error says why, as much as its output area holds; a refused open too", async () => {
  using dir = tempSocketDir();
  await using _server = await failing("expose", dir.path, "--expose");
  using client = await connect("expose", { socketDir: dir.path });
  const thrown = await failure(() => client.execute(THROW, { outputLength: 256 }));
  assert.equal(thrown.status, Status.HANDLER_FAILED);
  assert.match(
    thrown.message,
    /handler failed for this command: Error: the handler throws \(HANDLER_FAILED\)$/,
  );
  const rejected = await failure(() =>
    client.execute(REJECT, { outputLength: 256, completion: () => {} })
  );
  assert.match(rejected.message, /: RangeError: the handler rejects \(HANDLER_FAILED\)$/);
  // Cut to the output area: 8 bytes of the reason.
  const cut = await failure(() => client.execute(THROW, { outputLength: 8 }));
  assert.match(cut.message, /handler failed for this command: Error: t \(HANDLER_FAILED\)$/);
  // No output area: no reason.
  const none = await failure(() => client.execute(THROW));
  assert.match(none.message, /handler failed for this command \(HANDLER_FAILED\)$/);
  echo(client);

  using refusing = tempSocketDir();
  await using _refuser = await failing("refuse", refusing.path, "--expose", "--refuse");
  const refused = await connect("refuse", { socketDir: refusing.path }).then(
    () => undefined,
    (e) => e,
  );
  assert.ok(refused instanceof IpcError, String(refused));
  assert.equal(refused.status, Status.HANDLER_FAILED);
  assert.match(
    refused.message,
    /open handler refused the connection: TypeError: open refuses everyone/,
  );
});

function echo(
  client: {
    execute(code: number, o: { input: Uint8Array; outputLength: number }): { output: Uint8Array };
  },
) {
  const r = client.execute(1, { input: new TextEncoder().encode("ok"), outputLength: 8 });
  assert.equal(new TextDecoder().decode(r.output), "ok", "the client is still served");
}

Deno.test("onError replaces the default report, for exec, open and close failures", async () => {
  using dir = tempSocketDir();
  await using server = await failing("hook", dir.path, "--on-error");
  const client = await connect("hook", { socketDir: dir.path });
  await failure(() => client.execute(THROW));
  const line = await server.expect("onError ");
  assert.match(line, /^onError \d+ 4 Error: the handler throws$/);
  client.close();
  assert.match(await server.expect("onError "), /^onError \d+ - Error: close throws$/);
  assert.equal(server.stderr, "", "the default report ran too");
});

Deno.test("a pool worker's failures reach the server's onError with their stack; an overflow says how many bytes", async () => {
  using dir = tempSocketDir();
  const seen: { error: unknown; code: number | undefined }[] = [];
  const reportedOne = Promise.withResolvers<void>();
  const reportedTwo = Promise.withResolvers<void>();
  await using _server = await serve("pool-failure", { exec: () => {} }, {
    socketDir: dir.path,
    workers: 1,
    module: new URL("./peers/pool_handler.ts", import.meta.url),
    exposeErrors: true,
    onError: (error, _conn, command) => {
      seen.push({ error, code: command?.code });
      (seen.length === 1 ? reportedOne : reportedTwo).resolve();
    },
  });
  using client = await connect("pool-failure", { socketDir: dir.path });
  const e = await failure(() => client.execute(2, { outputLength: 128, completion: () => {} }));
  assert.equal(e.status, Status.HANDLER_FAILED);
  assert.match(e.message, /Error: the pool handler throws \(HANDLER_FAILED\)$/);
  await within("the report", reportedOne.promise);
  assert.equal(seen.length, 1);
  assert.equal(seen[0]!.code, 2);
  const error = seen[0]!.error as Error;
  assert.equal(error.message, "the pool handler throws");
  assert.match(error.stack ?? "", /pool_handler\.ts/);
  // An overflow in a worker tells the client how many bytes were wanted, as inline.
  const overflow = await failure(() =>
    client.execute(8, { outputLength: 16, completion: () => {} })
  );
  assert.equal(overflow.status, Status.OUTPUT_OVERFLOW);
  assert.match(overflow.message, /answered 17 bytes of output for an output area of 16 bytes/);
  await within("the second report", reportedTwo.promise);
  assert.match((seen[1]!.error as Error).message, /exec answered 17 output bytes/);
});
