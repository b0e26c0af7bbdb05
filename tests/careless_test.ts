/**
 * What a careless or hostile user of the API can do to the library: none of it may crash the
 * process, touch unmapped memory or leave files behind, and each mistake gets an error that
 * names it.
 *
 * @module
 */

import "./setup.ts";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { isIpcError } from "./peers/assertions.ts";
import { connect, serve, Status } from "../mod.ts";
import { runDeno, tempSocketDir } from "./peers/spawn.ts";

// The peer of the Node tests: it runs in Deno as well (node/test/peers/api.mjs picks the API).
const DETACH = decodeURIComponent(
  new URL("../node/test/peers/detach.mjs", import.meta.url).pathname,
);

Deno.test("user code that detaches an area's memory cannot crash the process, and client and server carry on", async () => {
  using dir = tempSocketDir();
  const out = await runDeno(["run", "-A", "--v8-flags=--expose-gc", DETACH, dir.path], {
    timeoutMs: 20_000,
    stderr: "piped",
  });
  const said = out.stdout;
  const why = `${said}\n${out.stderr}`;
  assert.equal(out.signal, null, `killed by a signal:\n${why}`);
  assert.equal(out.code, 0, why);
  assert.match(
    said,
    /^prepare detaches: TypeError: a prepare callback detached the memory of an area .*: the command to 'detach' was not sent/m,
  );
  assert.match(said, /^next: status 0 output 1,2,3$/m);
  assert.match(said, /^exec detaches: status 0 output $/m);
  assert.match(said, /^after: status 0 output 1,2,3$/m);
  assert.match(said, /^wrote through 2 taken buffers$/m);
  assert.match(said, /^survived$/m);
  assert.deepEqual([...Deno.readDirSync(dir.path)], [], "files left behind");
});

Deno.test("a socket directory too long for a socket path fails naming the path and the limit, and is not made", async () => {
  using base = tempSocketDir();
  const dir = `${base.path}/${"d".repeat(120)}`;
  for (
    const attempt of [
      () => serve("kv", { exec: () => {} }, { socketDir: dir }),
      () => connect("kv", { socketDir: dir }),
    ]
  ) {
    const error = await attempt().then(() => undefined, (e) => e);
    assert.ok(isIpcError(Status.INVALID_ARGUMENT)(error), String(error));
    assert.match(error.message, /a Unix socket address holds at most 107/);
    assert.ok(error.message.includes(dir), error.message);
    assert.equal(existsSync(dir), false, "the directory was made");
  }
});

Deno.test("bad arguments get errors that name the argument and show the value as it is", async () => {
  using dir = tempSocketDir();
  await using _server = await serve("args", { exec: () => {} }, { socketDir: dir.path });
  using client = await connect("args", { socketDir: dir.path });
  const bad = (f: () => unknown, type: ErrorConstructor, message: RegExp) =>
    assert.throws(f, (e: unknown) => e instanceof type && message.test((e as Error).message));
  const execute = client.execute.bind(client) as (code: unknown, options?: unknown) => unknown;
  bad(() => execute(1, null), TypeError, /options of execute must be an object .*received null$/);
  bad(() => execute(1, 5), TypeError, /options of execute must be an object .*received 5$/);
  bad(() => execute(1, "x"), TypeError, /options of execute must be an object .*received "x"$/);
  bad(() => execute("1"), RangeError, /^code must be an integer .*received "1"$/);
  bad(
    () => execute(1, { input: [1, 2] }),
    TypeError,
    /^input must be a Uint8Array, received an array of 2$/,
  );
  bad(() => execute(1, { timeout: "5", completion: () => {} }), RangeError, /received "5"$/);
  const gone = new Uint8Array(4);
  gone.buffer.transfer();
  bad(
    () => execute(1, { input: gone }),
    TypeError,
    /^input is detached: its memory was transferred/,
  );
  const connectArgs = connect as (id: unknown, options?: unknown) => Promise<unknown>;
  await assert.rejects(
    connectArgs("args", null),
    /options of connect must be an object .*received null$/,
  );
  await assert.rejects(connectArgs(5), /^TypeError: ic id must be a string, received 5$/);
  const serveArgs = serve as (
    id: unknown,
    handlers: unknown,
    options?: unknown,
  ) => Promise<unknown>;
  await assert.rejects(
    serveArgs("x", { exec: () => {} }, null),
    /options of serve must be an object .*received null$/,
  );
  await assert.rejects(
    serveArgs("x", { exec: "f" }),
    /handlers.exec must be a function, received "f"$/,
  );
  assert.equal(client.stats().commands, 0, "nothing was sent");
});

Deno.test("a client closed by its own command's prepare callback fails that command with CLOSED, saying so", async () => {
  using dir = tempSocketDir();
  await using _server = await serve("self-close", { exec: () => {} }, { socketDir: dir.path });
  const client = await connect("self-close", { socketDir: dir.path });
  const error = await client.execute(1, {
    inputLength: 4,
    inputPrepare: () => client.close(),
    completion: () => {},
  }).then(() => undefined, (e) => e);
  assert.ok(isIpcError(Status.CLOSED)(error), String(error));
  assert.match(
    error.message,
    /was closed by a prepare callback of this command, which was not sent/,
  );
});
