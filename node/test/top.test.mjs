// `shmcall-top`, the package's bin (dist/node/top.js, built from node/top.ts and
// tools/top_run.ts), run as a child process the way npm's bin link runs it: its help, a table
// of a Node server in another process, a stale socket, and a directory it must not use.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { Peer, peerCommand, tempSocketDir } from "./peers/spawn.mjs";

const TOP = fileURLToPath(new URL("../dist/node/top.js", import.meta.url));
const STALE = "stale: no server listening";

/**
 * Runs `node dist/node/top.js args` (with `spawn`'s `options`) to its end: `{ code, signal,
 * stdout, stderr }`. Killed with SIGKILL after `timeoutMs` (then this rejects), or in the
 * `finally` whatever happened.
 */
async function top(args, timeoutMs = 20_000, options = {}) {
  const child = spawn(process.execPath, [TOP, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    ...options,
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk) => stdout += chunk);
  child.stderr.setEncoding("utf8").on("data", (chunk) => stderr += chunk);
  // "close" comes once the process ended and its pipes are drained.
  const closed = new Promise((resolve) => {
    child.on(
      "close",
      (code, signal) => resolve({ code, signal, stdout, stderr }),
    );
    child.on(
      "error",
      (error) => resolve({ code: null, signal: null, stdout, stderr, error }),
    );
  });
  let timer;
  try {
    return await Promise.race([
      closed,
      new Promise((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new Error(
                `top still running after ${timeoutMs} ms: ${stdout} | ${stderr}`,
              ),
            ),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
    }
    await closed;
  }
}

/** The cells of the last table row naming `icId`. */
function row(output, icId) {
  const rows = output.split("\n").filter((l) => l.startsWith(`${icId} `));
  assert.ok(rows.length > 0, `no row for ${icId} in:\n${output}`);
  return rows.at(-1).trim().split(/\s{2,}/);
}

test("shmcall-top: the built bin keeps its shebang", () => {
  assert.match(readFileSync(TOP, "utf8"), /^#!\/usr\/bin\/env node\n/);
});

test("shmcall-top: --help and -h print the usage and the columns; a wrong option exits 2", async () => {
  for (const flag of ["--help", "-h"]) {
    const { code, stdout, stderr } = await top([flag]);
    assert.equal(code, 0, stderr);
    assert.equal(stderr, "");
    assert.match(
      stdout,
      /^usage: shmcall-top \[ic-id \.\.\.\] \[--dir D\] \[--interval MS\] \[--count N\]$/m,
    );
    for (
      const column of [
        "ic id",
        "conns",
        "workers",
        "state",
        "commands",
        "cmd/s",
        "in flight",
        "in MB/s",
        "out MB/s",
        "backup",
        "p50 µs",
        "p99 µs",
        "failures",
      ]
    ) {
      assert.ok(
        stdout.includes(`\n  ${column}  `),
        `the help explains ${column}`,
      );
    }
    assert.ok(stdout.includes(STALE), "the help explains the stale mark");
    assert.ok(
      !stdout.includes("deno task top"),
      "the usage names Deno's command",
    );
  }
  const wrong = await top(["--bogus"]);
  assert.equal(wrong.code, 2, wrong.stderr);
  assert.equal(wrong.stdout, "");
  assert.match(wrong.stderr, /^shmcall-top: unknown option --bogus$/m);
  assert.match(wrong.stderr, /^usage: shmcall-top \[ic-id/m);
});

test("shmcall-top: --count 1 prints one table with a Node server of another process", async () => {
  const dir = tempSocketDir();
  let server;
  try {
    server = await Peer.start(
      ...peerCommand("node", "server.mjs", ["top-node", dir.path]),
    );
    const { code, stdout, stderr } = await top([
      "--dir",
      dir.path,
      "--count",
      "1",
    ]);
    assert.equal(code, 0, stderr);
    assert.equal(
      stdout.split("shmcall top — ").length,
      2,
      `not one table:\n${stdout}`,
    );
    assert.match(stdout, /^ic id\s+conns\s+workers\s+state\s+commands/m);
    // Columns: ic id, conns, workers, state, commands, cmd/s, in flight, …: top's own
    // connection is the one; its request is no command of the server's.
    const [id, conns, workers, state, commands, rate, inFlight] = row(
      stdout,
      "top-node",
    );
    assert.deepEqual([id, conns, workers, state, commands, rate, inFlight], [
      "top-node",
      "1",
      "0",
      "serving",
      "0",
      "-",
      "0",
    ]);
    // The server's open and close ran for top's connection.
    await server.expect("open", 10_000);
    await server.expect("close", 10_000);
  } finally {
    await server?.kill();
    dir.remove();
  }
});

test("shmcall-top: a socket with no server listening is marked stale", async () => {
  const dir = tempSocketDir();
  let dead;
  let live;
  try {
    dead = await Peer.start(
      ...peerCommand("node", "server.mjs", ["top-dead", dir.path]),
    );
    await dead.kill(); // SIGKILL: its socket file stays, with nobody listening
    assert.ok(
      lstatSync(join(dir.path, "top-dead.sock")).isSocket(),
      "no socket was left",
    );
    live = await Peer.start(
      ...peerCommand("node", "server.mjs", ["top-live", dir.path]),
    );
    const { code, stdout, stderr } = await top([
      "--dir",
      dir.path,
      "--count",
      "1",
    ]);
    assert.equal(code, 0, stderr);
    assert.equal(row(stdout, "top-dead")[3], STALE);
    assert.equal(row(stdout, "top-live")[3], "serving");
  } finally {
    await dead?.kill();
    await live?.kill();
    dir.remove();
  }
});

test("shmcall-top: a socket directory it must not use is an error naming it, exit 1", async () => {
  const dir = tempSocketDir();
  try {
    // Others may write in it: refused as connect refuses it (not "no servers").
    const open = join(dir.path, "open");
    mkdirSync(open);
    chmodSync(open, 0o777);
    const { code, stdout, stderr } = await top(["--dir", open, "--count", "1"]);
    assert.equal(code, 1, stderr);
    assert.equal(stdout, "");
    const lines = stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, stderr);
    assert.ok(lines[0].startsWith("shmcall-top: "), lines[0]);
    assert.ok(lines[0].includes(open), lines[0]);
    assert.match(lines[0], /others write/);
  } finally {
    dir.remove();
  }
});

/** As root: whether user nobody (65534) can run Node and read the bin, else why not. */
function nobodyCannotRunTop() {
  const r = spawnSync(process.execPath, [
    "-e",
    "require('fs').accessSync(process.argv[1], 4)",
    TOP,
  ], {
    uid: 65534,
    gid: 65534,
    timeout: 10_000,
    killSignal: "SIGKILL",
    encoding: "utf8",
  });
  return r.status === 0 ? false : `user nobody cannot run ${TOP}: ${r.error ?? r.stderr}`;
}

test("shmcall-top: a socket directory it may not read is an error naming it and EACCES, exit 1", async (t) => {
  // Searchable and writable, not readable: the socket directory's checks pass, the listing
  // fails. Root reads any directory, so as root top runs as nobody, in nobody's directory.
  const root = process.getuid() === 0;
  const cannot = root && nobodyCannotRunTop();
  if (cannot) return t.skip(cannot);
  const dir = tempSocketDir();
  try {
    const unread = join(dir.path, "unread");
    mkdirSync(unread);
    if (root) chownSync(unread, 65534, 65534);
    chmodSync(unread, 0o300);
    chmodSync(dir.path, 0o711); // nobody passes through to it
    const { code, stdout, stderr } = await top(
      ["--dir", unread, "--count", "1"],
      20_000,
      root ? { uid: 65534, gid: 65534 } : {},
    );
    assert.equal(code, 1, stderr);
    assert.equal(
      stdout,
      "",
      "a directory it may not read is not one without servers",
    );
    assert.equal(
      stderr,
      `shmcall-top: cannot read the socket directory ${unread}: permission denied (EACCES)\n`,
    );
  } finally {
    dir.remove();
  }
});
