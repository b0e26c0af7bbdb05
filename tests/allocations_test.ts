import "./setup.ts";
import assert from "node:assert/strict";
import v8 from "node:v8";
import { connect } from "../mod.ts";
import { Peer, tempSocketDir } from "./peers/spawn.ts";

const SERVER = decodeURIComponent(new URL("./peers/server.ts", import.meta.url).pathname);
const ECHO = 1;

/**
 * Bytes per call below which no object is made per call: the smallest object is 12 bytes and a
 * result object some 40, while the process's own background (its test runner, the peer's pipes)
 * spread over 100,000 calls measured 0.2 to 2.5 bytes a call.
 */
const PER_CALL = 8;

/** Bytes the JavaScript heap allocated so far (V8 reports it; Deno's types do not name it). */
function allocated(): number {
  return (v8.getHeapStatistics() as { total_allocated_bytes?: number }).total_allocated_bytes ??
    NaN;
}

/** JavaScript heap bytes allocated by `f` run `n` times, per run. */
function allocatedPer(n: number, f: () => void): number {
  const before = allocated();
  for (let i = 0; i < n; i++) f();
  return (allocated() - before) / n;
}

Deno.test("a synchronous command with its output given allocates nothing in JavaScript", async () => {
  using dir = tempSocketDir();
  await using _server = await Peer.start(Deno.execPath(), ["run", "-A", SERVER, "alloc", dir.path]);
  using client = await connect("alloc", { socketDir: dir.path });
  const input = new Uint8Array(64).fill(7);
  const output = new Uint8Array(64);
  const options = { input, output };
  let length = 0;
  const call = () => {
    length += client.execute(ECHO, options).length;
  };
  // Until the optimizing compiler has seen the loop (which takes a few rounds, each making
  // garbage of its own): the best of several rounds of 100,000 calls counts.
  let best = Infinity;
  for (let round = 0; round < 8 && best >= PER_CALL; round++) {
    best = Math.min(best, allocatedPer(100_000, call));
  }
  assert.ok(length > 0 && output[63] === 7, "the echo came back");
  assert.ok(best < PER_CALL, `${best.toFixed(1)} bytes allocated per call`);
});
