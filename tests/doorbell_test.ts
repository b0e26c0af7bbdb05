import "./setup.ts";
import assert from "node:assert/strict";
import { connect, serve } from "../mod.ts";
import { doorbellMode } from "../src/hub.ts";
import { runScript, tempSocketDir } from "./peers/spawn.ts";

Deno.test("the doorbell is the Node-API threadsafe function when the addon loads", async () => {
  using dir = tempSocketDir();
  await using _server = await serve("bell", { exec: () => ({ status: 5 }) }, {
    socketDir: dir.path,
  });
  assert.equal(doorbellMode(), "napi");
  using client = await connect("bell", { socketDir: dir.path });
  const r = await client.execute(1, { completion: () => {} });
  assert.equal(r.status, 5);
});

Deno.test("the fallback wait serves as the doorbell with SHMCALL_DOORBELL=wait", async () => {
  const script = decodeURIComponent(new URL("./peers/exits.ts", import.meta.url).pathname);
  const { code, stdout } = await runScript(script, { SHMCALL_DOORBELL: "wait" });
  assert.equal(stdout.trim(), "wait\ndone");
  assert.equal(code, 0, "served, answered, and exited by itself");
});
