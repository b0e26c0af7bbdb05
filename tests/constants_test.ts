import "./setup.ts";
import "../mod.ts";
import assert from "node:assert/strict";
import {
  CLAIM,
  EVENT,
  EVENT_WORD,
  FLAG,
  IDLE,
  LANE,
  LANE_COUNT,
  native,
  NOWHERE,
  POOL_NOTE,
  QUEUE,
  RING,
  SERVE,
  SLOT,
  STATS,
} from "../src/native.ts";
import { MAX_AREA } from "../src/client.ts";
import { MAX_SPIN_MICROS } from "../src/validate.ts";
import { NATS_PACKAGE, NATS_VERSION } from "../src/nats.ts";
import { SCRATCH } from "../node/addon.ts";

/** The library's value of `name` (`CONSTANTS` in bindings/src/surface.rs); fails if it has none. */
function library(name: string): number {
  const value = native.constant(name);
  assert.notEqual(value, undefined, `the library has no constant ${name}`);
  return value!;
}

/** Every entry of `table` equals the library's constant of the same name, after `prefix`. */
function agrees(
  prefix: string,
  table: Record<string, number>,
  rename: Record<string, string> = {},
) {
  for (const [key, value] of Object.entries(table)) {
    const name = rename[key] ?? `${prefix}${key}`;
    assert.equal(
      value,
      library(name),
      `${prefix}${key} is ${value} here and ${library(name)} in the library`,
    );
  }
}

Deno.test("the tables TypeScript keeps of the library's values are the library's", () => {
  agrees("EVENT_", EVENT);
  agrees("EVENT_WORD_", EVENT_WORD, { WORDS: "EVENT_WORDS" });
  agrees("IDLE_", IDLE);
  agrees("FLAG_", FLAG);
  agrees("STATS_", STATS);
  agrees("SCRATCH_", SCRATCH);
  agrees("LANE_", LANE);
  agrees("LANE_COUNT_", LANE_COUNT);
  agrees("SLOT_", SLOT);
  agrees("CLAIM_", CLAIM);
  agrees("RING_", RING);
  agrees("SERVE_", SERVE);
  agrees("POOL_", POOL_NOTE);
  agrees("QUEUE_", QUEUE);
  assert.equal(NOWHERE, library("NOWHERE"));
  assert.equal(MAX_AREA, library("MAX_AREA"));
  assert.equal(MAX_SPIN_MICROS * 1000, library("MAX_SPIN_NS"));
  // The scratch holds a hub event, then the words Node's calls answer in.
  assert.ok(SCRATCH.BEGUN >= EVENT_WORD.WORDS && SCRATCH.ANSWER + 2 <= library("SCRATCH_WORDS"));
});

Deno.test("the library answers undefined for a constant it does not have", () => {
  assert.equal(native.constant("NO_SUCH_CONSTANT"), undefined);
  assert.equal(native.constant(""), undefined);
});

Deno.test("one version of the NATS client everywhere: the loader's, the import map's, the Node package's", () => {
  const root = new URL("../", import.meta.url);
  const deno = JSON.parse(Deno.readTextFileSync(new URL("deno.json", root)));
  const node = JSON.parse(Deno.readTextFileSync(new URL("node/package.json", root)));
  assert.equal(deno.imports[NATS_PACKAGE], `npm:${NATS_PACKAGE}@${NATS_VERSION}`);
  assert.equal(node.devDependencies[NATS_PACKAGE], NATS_VERSION);
});
