/**
 * Runs the runnable examples as CI would: each must exit 0 within its time and print what its
 * entry expects. To add an example, add an entry to {@linkcode EXAMPLES}.
 *
 * @module
 */

import assert from "node:assert/strict";

interface Example {
  /** The script, relative to the repository root. */
  file: string;
  /** Its arguments. */
  args?: string[];
  /** Something its stdout must contain. */
  expect: RegExp;
}

const EXAMPLES: Example[] = [
  { file: "examples/records.ts", expect: /^total 34\.19$/m },
  // The speed-up is printed, not checked: the machine may be shared.
  { file: "examples/pool.ts", expect: /^pool: 16 commands in \d+ ms on 2 workers/m },
  { file: "examples/restart.ts", expect: /^restart: (\d+) sent, \1 accepted .*, 0 failed$/m },
  {
    file: "examples/cancel.ts",
    expect: /^cancel: 5 commands sent, 2 withdrawn, 1 of the 3 queued ran$/m,
  },
  { file: "examples/stats.ts", expect: /^stats: client 1103 commands, server 1103 commands$/m },
  { file: "examples/chain.ts", expect: /^chain: B>hello<B$/m },
  {
    file: "examples/two_hosts.ts",
    expect:
      /^two hosts: ACME 101\.5 \(via NATS\), NOPE status 404\ntwo hosts: ticks #1 ACME 101\.75, #3 ACME 102; dropped 0$/m,
  },
  {
    file: "examples/events.ts",
    expect:
      /^events: stock-1 got #1 event 1 101\.5, #4 event 1 101\.75; dropped 0\n.*all got #1 event 1 101\.5, #2 event 2 48\.25, #3 event 3 7\.75, #4 event 1 101\.75, #5 event 2 48\.5, #6 event 3 7\.5; dropped 0\nevents: host posted 6, delivered 8, dropped 0$/m,
  },
];

const TIMEOUT_MS = 60_000;
/** How long the pipes may stay open after the example exits (a child of its may hold them). */
const DRAIN_MS = 5_000;

/** Reads a stream to its end; `cancel` ends the read early. */
function collect(stream: ReadableStream<Uint8Array>) {
  const reader = stream.getReader();
  const done = (async () => {
    const decoder = new TextDecoder();
    let text = "";
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    reader.releaseLock();
    return text + decoder.decode();
  })();
  return { done, cancel: () => reader.cancel().catch(() => {}) };
}

/** Runs an example to its end, killing it after {@linkcode TIMEOUT_MS}. */
async function run({ file, args = [] }: Example) {
  const path = decodeURIComponent(new URL(`../${file}`, import.meta.url).pathname);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", path, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = collect(child.stdout);
  const stderr = collect(child.stderr);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited meanwhile.
    }
  }, TIMEOUT_MS);
  let status: Deno.CommandStatus;
  try {
    status = await child.status;
  } finally {
    clearTimeout(timer);
  }
  const drain = setTimeout(() => {
    stdout.cancel();
    stderr.cancel();
  }, DRAIN_MS);
  try {
    const [out, err] = await Promise.all([stdout.done, stderr.done]);
    return { status, timedOut, stdout: out, stderr: err };
  } finally {
    clearTimeout(drain);
  }
}

for (const example of EXAMPLES) {
  Deno.test(`${example.file} exits 0 within ${TIMEOUT_MS / 1000} s and prints ${example.expect}`, async () => {
    const { status, timedOut, stdout, stderr } = await run(example);
    const seen = `\n--- stdout\n${stdout}\n--- stderr\n${stderr}`;
    assert.ok(!timedOut, `${example.file} did not exit within ${TIMEOUT_MS} ms${seen}`);
    assert.equal(status.code, 0, `${example.file} exited with ${status.code}${seen}`);
    assert.match(stdout, example.expect, `${example.file} did not print ${example.expect}${seen}`);
  });
}
