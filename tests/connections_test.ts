import "./setup.ts";
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { within } from "./peers/assertions.ts";
import { idleCpu, libraryThreads, openDescriptors } from "./peers/proc.ts";
import { Peer, tempSocketDir } from "./peers/spawn.ts";

const SERVER = decodeURIComponent(new URL("./peers/server.ts", import.meta.url).pathname);
const IDLER = decodeURIComponent(new URL("./peers/idler.ts", import.meta.url).pathname);
/** Connections held (`deno task stress` holds 10,000). */
const COUNT = Number(Deno.env.get("SHMCALL_CONNECTIONS") ?? 1000);

Deno.test(`a Deno server holds ${COUNT} idle connections on the threads it had, at no CPU, and lets each go once`, async () => {
  using dir = tempSocketDir();
  await using server = await Peer.start(Deno.execPath(), ["run", "-A", SERVER, "many", dir.path]);
  using client = await connect("many", { socketDir: dir.path });
  const input = new Uint8Array([1, 2, 3]);
  const echo = () => {
    const output = new Uint8Array(3);
    client.execute(1, { input, output });
    assert.deepEqual(output, input);
  };
  echo();
  await server.expect("open");
  const threads = libraryThreads(server.pid);
  assert.ok(threads.length <= 4, `library threads with one connection: ${threads}`);

  await using idler = await Peer.start(
    Deno.execPath(),
    ["run", "-A", IDLER, "shm", "many", dir.path, String(COUNT)],
    60_000,
  );
  const held = JSON.parse(await idler.expect("{", 120_000)) as { connected: number };
  assert.equal(held.connected, COUNT);
  for (let i = 0; i < COUNT; i++) await server.expect("open", 60_000);
  assert.deepEqual(libraryThreads(server.pid), threads, `${COUNT} connections started threads`);

  const cpu = await idleCpu(server.pid, 2);
  assert.ok(cpu <= 0.01, `the idle server used ${(cpu * 100).toFixed(2)}% of a core`);
  echo();
  // Counted now rather than before the idler: Deno opens a socket pair of its own after a
  // while.
  const descriptors = openDescriptors(server.pid) - COUNT;

  // The idler dies: every one of its connections is closed, once, and leaves nothing open.
  await idler.kill();
  for (let i = 0; i < COUNT; i++) await server.expect("close", 60_000);
  await within(
    "the server's descriptors back to where they were",
    (async () => {
      while (openDescriptors(server.pid) > descriptors) {
        await new Promise((r) => setTimeout(r, 10));
      }
    })(),
  );
  assert.deepEqual(libraryThreads(server.pid), threads);
  echo();
});
