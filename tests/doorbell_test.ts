import "./setup.ts";
import assert from "node:assert/strict";
import { connect, serve } from "../mod.ts";
import { doorbellMode } from "../src/hub.ts";
import { tempSocketDir } from "./peers/spawn.ts";

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
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script],
    env: { SHMCALL_DOORBELL: "wait" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  try {
    const { code, stdout } = await child.output();
    assert.equal(new TextDecoder().decode(stdout).trim(), "wait\ndone");
    assert.equal(code, 0, "served, answered, and exited by itself");
  } finally {
    clearTimeout(timer);
  }
});
