/**
 * `deno task top` (tools/top.ts) against servers of this process: it finds them in the socket
 * directory, asks each for its counters, and prints them as a table.
 *
 * @module
 */

import "./setup.ts";
import assert from "node:assert/strict";
import { connect, serve, socketDir, Status } from "../mod.ts";
import { isIpcError } from "./peers/assertions.ts";
import { tempSocketDir } from "./peers/spawn.ts";

const TOP = new URL("../tools/top.ts", import.meta.url).pathname;

/**
 * Runs top (bounded) and returns what it printed; this thread keeps serving meanwhile.
 * `between`, if given, runs once top printed its first table.
 */
async function top(args: string[], between?: () => Promise<void>): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-ffi", "--allow-env", "--allow-read", "--allow-write", TOP, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const errors = new Response(child.stderr).text();
  let text = "";
  try {
    const decoder = new TextDecoder();
    for await (const chunk of child.stdout) {
      const before = text;
      text += decoder.decode(chunk, { stream: true });
      // A table ends with a blank line.
      if (between !== undefined && !before.includes("\n\n") && text.includes("\n\n")) {
        await between();
      }
    }
    const { code } = await child.status;
    assert.equal(code, 0, `top failed: ${await errors}\n${text}`);
    return text;
  } finally {
    clearTimeout(timer);
    await errors.catch(() => {});
  }
}

/** The cells of the last table row naming `icId`. */
function row(output: string, icId: string): string[] {
  const rows = output.split("\n").filter((l) => l.startsWith(`${icId} `));
  assert.ok(rows.length > 0, `no row for ${icId} in:\n${output}`);
  return rows.at(-1)!.trim().split(/\s{2,}/);
}

Deno.test("top finds every server in the directory and prints its counters", async () => {
  using dir = tempSocketDir();
  await using a = await serve("top-a", { exec: ({ input }) => ({ length: input.length }) }, {
    socketDir: dir.path,
  });
  await using _b = await serve("top-b", { exec: () => ({ status: 0 }) }, {
    socketDir: dir.path,
  });
  using client = await connect("top-a", { socketDir: dir.path });
  for (let i = 0; i < 25; i++) {
    await client.execute(1, {
      input: new Uint8Array(16),
      outputLength: 16,
      completion: () => {},
    });
  }
  const out = await top(["--dir", dir.path, "--count", "2", "--interval", "50"]);
  assert.match(out, /^ic id\s+conns\s+workers\s+state\s+commands/m);
  // Columns: ic id, conns, workers, state, commands, cmd/s, in flight, in MB/s, out MB/s,
  // backup, p50, p99, failures. top's own connection is counted; its requests are not.
  const [id, conns, workers, state, commands, , inFlight, , , backup, p50, p99, failures] = row(
    out,
    "top-a",
  );
  assert.deepEqual([id, conns, workers, state, commands, inFlight, backup, failures], [
    "top-a",
    "2",
    "0",
    "serving",
    "25",
    "0",
    "0",
    "-",
  ]);
  assert.ok(Number(p50) > 0 && Number(p50) <= Number(p99), `p50 ${p50}, p99 ${p99}`);
  assert.equal(row(out, "top-b")[4], "0");
  assert.equal(a.stats().commands, 25, "top's requests reached no handler's count");
});

Deno.test("top shows a quiescing server and the failures it answered", async () => {
  using dir = tempSocketDir();
  await using server = await serve("top-q", { exec: () => ({ status: 0 }) }, {
    socketDir: dir.path,
  });
  using client = await connect("top-q", { socketDir: dir.path });
  // top connects before the server quiesces (a quiescing server refuses new clients, top too),
  // and sees it quiescing on its next look.
  const out = await top(
    ["top-q", "--dir", dir.path, "--count", "2", "--interval", "200"],
    async () => {
      await server.quiesce();
      await assert.rejects(client.execute(1, { completion: () => {} }));
    },
  );
  const [, , , state, , , , , , , , , failures] = row(out, "top-q");
  assert.equal(state, "quiescing");
  assert.equal(failures, "SERVER_QUIESCING 1");
  // A top started now is refused, and says why.
  assert.equal(
    row(await top(["top-q", "--dir", dir.path, "--count", "1"]), "top-q")[3],
    "SERVER_QUIESCING",
  );
});

Deno.test("top says so when the directory has no server, and names one that is gone", async () => {
  using dir = tempSocketDir();
  assert.match(await top(["--dir", dir.path, "--count", "1"]), /no servers in /);
  const gone = row(await top(["nobody", "--dir", dir.path, "--count", "1"]), "nobody");
  assert.equal(gone[3], "NOT_FOUND");
});

Deno.test("socketDir() resolves a directory as serve and connect do: given, $SHMCALL_DIR, checked", () => {
  using dir = tempSocketDir();
  assert.equal(socketDir(dir.path), dir.path);
  const before = Deno.env.get("SHMCALL_DIR");
  Deno.env.set("SHMCALL_DIR", dir.path);
  try {
    assert.equal(socketDir(), dir.path);
  } finally {
    if (before === undefined) Deno.env.delete("SHMCALL_DIR");
    else Deno.env.set("SHMCALL_DIR", before);
  }
  // A directory others may write is not the owner's only: refused, as serve would refuse it.
  const open = `${dir.path}/open`;
  Deno.mkdirSync(open);
  Deno.chmodSync(open, 0o777);
  assert.throws(() => socketDir(open), isIpcError(Status.PERMISSION_DENIED));
  assert.throws(() => socketDir(""), TypeError);
});
