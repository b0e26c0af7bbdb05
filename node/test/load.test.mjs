// Loading the addon in Node, as a user meets its failures: the first line of the error says
// what went wrong and what to do, in one line, with no path that cannot exist.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const ENTRY = fileURLToPath(new URL("../dist/node/index.js", import.meta.url));

/** Imports the package's entry in a fresh Node with `env`; the message of what it threw. */
function importWith(env) {
  const script = `import(${JSON.stringify(ENTRY)}).then(
    () => console.log("loaded"),
    (e) => console.log(JSON.stringify(e.message)),
  );`;
  const ran = spawnSync(process.execPath, ["-e", script], {
    env: { ...process.env, ...env },
    encoding: "utf8",
    timeout: 30_000,
  });
  assert.equal(ran.status, 0, ran.stderr);
  const line = ran.stdout.trim();
  return line === "loaded" ? line : JSON.parse(line);
}

test("SHMCALL_LIB naming no file is said as such, and nothing else is tried", () => {
  const message = importWith({
    SHMCALL_LIB: "/nonexistent/custom/libshmcall.so",
  });
  assert.equal(
    message,
    "SHMCALL_LIB names /nonexistent/custom/libshmcall.so, where there is no library: set it to " +
      "a libshmcall.so, or unset it to use the installed one.",
  );
});

test("a file that is there and will not load gives the loader's reason, then the file", () => {
  const dir = mkdtempSync(join(tmpdir(), "shmcall-load-"));
  try {
    const path = join(dir, "libshmcall.so");
    writeFileSync(path, "not a library");
    const message = importWith({ SHMCALL_LIB: path });
    const lines = message.split("\n");
    assert.match(
      lines[0],
      /^shmcall's library would not load: .*(invalid ELF header|file too short)/,
    );
    assert.equal(lines[1], `  (${path})`);
    assert.equal(lines.length, 2, message);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("in a clone, the package's own build loads", () => {
  assert.equal(importWith({ SHMCALL_LIB: "" }), "loaded");
});
