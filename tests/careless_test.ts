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
import { tempSocketDir } from "./peers/spawn.ts";

const DETACH = decodeURIComponent(new URL("./peers/detach.ts", import.meta.url).pathname);

Deno.test("user code that detaches an area's memory cannot crash the process, and client and server carry on", async () => {
  using dir = tempSocketDir();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--expose-gc", DETACH, dir.path],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  let out;
  try {
    out = await child.output();
  } finally {
    clearTimeout(timer);
  }
  const said = new TextDecoder().decode(out.stdout);
  const why = `${said}\n${new TextDecoder().decode(out.stderr)}`;
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
