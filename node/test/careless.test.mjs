// What a careless or hostile user of the API can do to the library, in Node.js: none of it may
// crash the process, touch unmapped memory or leave files behind, and each mistake gets an
// error that names it.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import process from "node:process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { connect, IpcError, serve, Status } from "../dist/node/index.js";
import { tempSocketDir } from "./peers/spawn.mjs";

const DETACH = fileURLToPath(new URL("./peers/detach.mjs", import.meta.url));

/** Runs `node --expose-gc <script> <args>`, killed after `ms`; its exit and output. */
function run(script, args, ms) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--expose-gc", script, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => out += d);
    child.stderr.on("data", (d) => err += d);
    const timer = setTimeout(() => child.kill("SIGKILL"), ms);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, err });
    });
  });
}

test("Node: user code that detaches an area's memory cannot crash the process, and client and server carry on", async () => {
  const dir = tempSocketDir();
  try {
    const { code, signal, out, err } = await run(DETACH, [dir.path], 20_000);
    const why = `${out}\n${err}`;
    assert.equal(signal, null, `killed by a signal:\n${why}`);
    assert.equal(code, 0, why);
    // Node 20 has no `transfer()`, and its transfer lists copy the memory of an external
    // buffer rather than detach it: the command then goes out with the area as the callback
    // left it.
    assert.match(
      out,
      /^prepare detaches: (TypeError: a prepare callback detached the memory of an area .*: the command to 'detach' was not sent.*|status 0 output 0,0,0)$/m,
    );
    assert.match(out, /^next: status 0 output 1,2,3$/m);
    assert.match(out, /^exec detaches: status 0 output $/m);
    assert.match(out, /^after: status 0 output 1,2,3$/m);
    assert.match(out, /^wrote through 2 taken buffers$/m);
    assert.match(out, /^survived$/m);
    assert.deepEqual(readdirSync(dir.path), [], "files left behind");
  } finally {
    dir.remove();
  }
});

test("Node: a socket directory too long for a socket path fails naming the path and the limit, and is not made", async () => {
  const base = tempSocketDir();
  try {
    const dir = `${base.path}/${"d".repeat(120)}`;
    for (
      const attempt of [
        () => serve("kv", { exec: () => {} }, { socketDir: dir }),
        () => connect("kv", { socketDir: dir }),
      ]
    ) {
      const error = await attempt().then(() => undefined, (e) => e);
      assert.ok(error instanceof IpcError, String(error));
      assert.equal(error.status, Status.INVALID_ARGUMENT);
      assert.match(error.message, /a Unix socket address holds at most 107/);
      assert.ok(error.message.includes(dir), error.message);
      assert.equal(existsSync(dir), false, "the directory was made");
    }
  } finally {
    base.remove();
  }
});

test("Node: bad arguments get errors that name the argument and show the value as it is", async () => {
  const dir = tempSocketDir();
  const server = await serve("node-args", { exec: () => {} }, {
    socketDir: dir.path,
  });
  const client = await connect("node-args", { socketDir: dir.path });
  try {
    const bad = (f, type, message) =>
      assert.throws(f, (e) => e instanceof type && message.test(e.message));
    bad(
      () => client.execute(1, null),
      TypeError,
      /options of execute must be an object .*received null$/,
    );
    bad(
      () => client.execute(1, "x"),
      TypeError,
      /options of execute must be an object .*received "x"$/,
    );
    bad(
      () => client.execute("1"),
      RangeError,
      /^code must be an integer .*received "1"$/,
    );
    const gone = new Uint8Array(4);
    structuredClone(gone.buffer, { transfer: [gone.buffer] });
    bad(
      () => client.execute(1, { input: gone }),
      TypeError,
      /^input is detached/,
    );
    await assert.rejects(
      connect("node-args", null),
      /options of connect must be an object .*received null$/,
    );
    await assert.rejects(
      serve("x", { exec: () => {} }, null),
      /options of serve must be an object .*received null$/,
    );
    // A client closed by its own command's prepare callback.
    const closing = await connect("node-args", { socketDir: dir.path });
    const error = await closing.execute(1, {
      inputLength: 4,
      inputPrepare: () => closing.close(),
      completion: () => {},
    }).then(() => undefined, (e) => e);
    assert.ok(
      error instanceof IpcError && error.status === Status.CLOSED,
      String(error),
    );
    assert.match(error.message, /closed by a prepare callback of this command/);
  } finally {
    client.close();
    await server.close();
    dir.remove();
  }
});
