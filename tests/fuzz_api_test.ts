/**
 * The public API under random arguments and random callback behaviour (tests/peers/fuzz_api.ts),
 * in a child process: no crash, no hang, only the errors the API documents, and fresh clients
 * served afterwards. 3 s here; `SHMCALL_FUZZ_API_MS` sets it (`deno task stress`: 60 s), and
 * `SHMCALL_FUZZ_API_SEED` repeats a run.
 *
 * @module
 */

import "./setup.ts";
import assert from "node:assert/strict";
import { Peer, runDeno, tempSocketDir } from "./peers/spawn.ts";

const FUZZ = decodeURIComponent(new URL("./peers/fuzz_api.ts", import.meta.url).pathname);
const SERVER = decodeURIComponent(new URL("./peers/server.ts", import.meta.url).pathname);

Deno.test("random arguments and callbacks thrown at connect, execute and serve crash nothing, hang nothing and fail only as documented", async () => {
  using dir = tempSocketDir();
  // Its reports of the handler failures the fuzz provokes are kept, not printed.
  await using _remote = await Peer.start(
    Deno.execPath(),
    ["run", "-A", SERVER, "remote", dir.path],
    10_000,
    true,
  );
  const ms = Number(Deno.env.get("SHMCALL_FUZZ_API_MS") ?? 3_000);
  const seed = Number(Deno.env.get("SHMCALL_FUZZ_API_SEED") ?? (Math.random() * 2 ** 32) >>> 0);
  const out = await runDeno(
    ["run", "-A", FUZZ, dir.path, "remote", String(seed), String(ms)],
    { timeoutMs: ms + 30_000, stderr: "piped" },
  );
  const said = out.stdout;
  const why = `seed ${seed} (SHMCALL_FUZZ_API_SEED repeats it):\n${said}\n${out.stderr}`;
  assert.equal(
    out.signal,
    null,
    `killed by ${out.signal}: a crash, or a hang past its time; ${why}`,
  );
  assert.equal(out.code, 0, why);
  assert.match(said, /^survived \d+ operations: /m, why);
});
