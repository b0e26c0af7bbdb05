/**
 * `deno task top` (tools/top.ts, the tool itself in tools/top_run.ts) against servers of this
 * process: it finds them in the socket directory, asks each for its counters, and prints them
 * as a table; it marks stale sockets, and says when it may not read the directory.
 *
 * @module
 */

import "./setup.ts";
import assert from "node:assert/strict";
import * as shmcall from "../mod.ts";
import { connect, IpcError, serve, socketDir, Status } from "../mod.ts";
import { collect, render, STALE } from "../tools/top_run.ts";
import { isIpcError } from "./peers/assertions.ts";
import { Peer, tempSocketDir } from "./peers/spawn.ts";

const TOP = new URL("../tools/top.ts", import.meta.url).pathname;
const SERVER = decodeURIComponent(new URL("./peers/server.ts", import.meta.url).pathname);

/** The permissions of `deno task top`. */
const TASK_PERMISSIONS = ["--allow-ffi", "--allow-env", "--allow-read", "--allow-write"];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs top (bounded: killed after 30 s) with `permissions`, and returns what it printed and
 * its exit code; this thread keeps serving meanwhile. `between`, if given, runs once top
 * printed its first table.
 */
async function run(
  args: string[],
  { between, permissions = TASK_PERMISSIONS }: {
    between?: () => Promise<void>;
    permissions?: string[];
  } = {},
): Promise<Run> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...permissions, TOP, ...args],
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
    return { code, stdout: text, stderr: await errors };
  } finally {
    clearTimeout(timer);
    await errors.catch(() => {});
  }
}

/** Runs top as `deno task top` does, expects it to exit 0, and returns what it printed. */
async function top(args: string[], between?: () => Promise<void>): Promise<string> {
  const { code, stdout, stderr } = await run(args, between === undefined ? {} : { between });
  assert.equal(code, 0, `top failed: ${stderr}\n${stdout}`);
  return stdout;
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

Deno.test("top --help and -h print the usage and what each column means; a wrong option exits 2", async () => {
  for (const flag of ["--help", "-h"]) {
    // No permission at all: help needs neither the core library nor the directory.
    const { code, stdout, stderr } = await run([flag], { permissions: [] });
    assert.equal(code, 0, stderr);
    assert.equal(stderr, "");
    assert.match(
      stdout,
      /^usage: deno task top \[ic-id \.\.\.\] \[--dir D\] \[--interval MS\] \[--count N\]$/m,
    );
    for (const column of ["ic id", "conns", "workers", "state", "commands", "cmd/s", "in flight"]) {
      assert.match(stdout, new RegExp(`^  ${column.replace("/", "\\/")}  `, "m"), column);
    }
    for (const column of ["in MB/s", "out MB/s", "backup", "p50 µs", "p99 µs", "failures"]) {
      assert.match(stdout, new RegExp(`^  ${column.replace("/", "\\/")}  `, "m"), column);
    }
    assert.ok(stdout.includes(STALE), "the help explains the stale mark");
    assert.ok(!stdout.includes("shmcall top —"), "help printed a table");
  }
  for (const args of [["--bogus"], ["--count", "0"], ["--interval"]]) {
    const { code, stdout, stderr } = await run(args, { permissions: [] });
    assert.equal(code, 2, `${args}: ${stderr}`);
    assert.equal(stdout, "");
    assert.match(stderr, /^usage: deno task top \[ic-id/m);
  }
  assert.match((await run(["--bogus"])).stderr, /^deno task top: unknown option --bogus$/m);
});

Deno.test("top marks the socket of a server that was killed as stale, not as an error", async () => {
  using dir = tempSocketDir();
  await using _live = await serve("top-live", { exec: () => ({ status: 0 }) }, {
    socketDir: dir.path,
  });
  const dead = await Peer.start(Deno.execPath(), ["run", "-A", SERVER, "top-dead", dir.path]);
  await dead.kill(); // SIGKILL: its socket file stays, with nobody listening
  assert.ok(
    Deno.lstatSync(`${dir.path}/top-dead.sock`).isSocket,
    "the killed server left no socket",
  );
  const out = await top(["--dir", dir.path, "--count", "1"]);
  assert.equal(row(out, "top-dead")[3], STALE);
  assert.equal(STALE, "stale: no server listening");
  assert.equal(row(out, "top-live")[3], "serving");
  // A named id whose socket is stale is marked so too; one with no socket is NOT_FOUND.
  const ghost = `${dir.path}/top-ghost.sock`;
  Deno.writeFileSync(ghost, new Uint8Array()); // a socket's name with nobody behind it
  const named = await top(["top-ghost", "top-none", "--dir", dir.path, "--count", "1"]);
  assert.equal(row(named, "top-ghost")[3], STALE);
  assert.equal(row(named, "top-none")[3], "NOT_FOUND");
});

Deno.test("top says why it cannot read the socket directory, on one line, and exits 1", async () => {
  using dir = tempSocketDir();
  await using _server = await serve("top-unread", { exec: () => ({ status: 0 }) }, {
    socketDir: dir.path,
  });
  // Without --allow-read (CI runs as root, whom a chmod'ed directory does not stop).
  const denied = await run(["--dir", dir.path, "--count", "1"], {
    permissions: ["--allow-ffi", "--allow-env"],
  });
  assert.equal(denied.code, 1, denied.stderr);
  assert.equal(denied.stdout, "", "a directory it may not read is not one without servers");
  const lines = denied.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, denied.stderr);
  assert.ok(
    lines[0]!.startsWith(`deno task top: cannot read the socket directory ${dir.path}: `),
    lines[0],
  );
  assert.match(lines[0]!, /--allow-read/);
  // A directory others may write in is refused as connect would refuse it.
  const open = `${dir.path}/open`;
  Deno.mkdirSync(open);
  Deno.chmodSync(open, 0o777);
  const unsafe = await run(["--dir", open, "--count", "1"]);
  assert.equal(unsafe.code, 1, unsafe.stderr);
  assert.equal(unsafe.stdout, "");
  assert.equal(unsafe.stderr.trimEnd().split("\n").length, 1, unsafe.stderr);
  assert.match(unsafe.stderr, new RegExp(`^deno task top: .*${open}.*others write`));
});

Deno.test("a server that refuses top for permissions shows PERMISSION_DENIED in its row", async () => {
  // As root nothing refuses a connect for permissions: the refusal is connect's, stood in for.
  using dir = tempSocketDir();
  Deno.writeFileSync(`${dir.path}/top-private.sock`, new Uint8Array());
  const refused = new IpcError(
    Status.PERMISSION_DENIED,
    "Cannot connect to 'top-private': permission denied at …",
  );
  const api = { ...shmcall, connect: () => Promise.reject(refused) };
  const rows = await collect(api, dir.path, ["top-private"], new Map(), true);
  assert.deepEqual(rows, [{ id: "top-private", error: "PERMISSION_DENIED" }]);
  assert.equal(row(render(rows, new Map(), 1), "top-private")[3], "PERMISSION_DENIED");
  // The stale mark is only for NOT_FOUND behind a socket that is there.
  const gone = { ...shmcall, connect: () => Promise.reject(new IpcError(Status.NOT_FOUND, "…")) };
  assert.equal((await collect(gone, dir.path, ["top-private"], new Map()))[0]!.error, STALE);
  assert.equal((await collect(gone, dir.path, ["top-absent"], new Map()))[0]!.error, "NOT_FOUND");
});
