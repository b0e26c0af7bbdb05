/**
 * The NATS frame is untrusted input: a fuzz target for its decoders (random frames, and valid
 * ones mutated), which must never throw and must hand out only what the frame holds; round trips
 * of the encoders; and the wire layout docs/protocol.md gives, byte by byte.
 *
 * `SHMCALL_FUZZ_NATS_MS` sets how long the fuzz loop runs (default: 20,000 frames).
 *
 * @module
 */

import assert from "node:assert/strict";
import { NATS_FRAME, Status } from "../mod.ts";
import {
  type CommandFrame,
  decodeAnswer,
  decodeCommand,
  decodeGoodbye,
  encodeAnswer,
  encodeCommand,
  encodeGoodbye,
  type Refusal,
} from "../src/nats_frame.ts";

/** A small seeded generator (xorshift32): a failure names its seed and can be replayed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

const SESSION = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 0xff]);
const LIBRARY = new Set<number>(Object.values(Status).filter((s) => s < 0));

/** What a decoded command must satisfy, whatever the frame was. */
function checkCommand(frame: Uint8Array, max: number, d: CommandFrame | Refusal): void {
  if ("why" in d) {
    assert.ok(
      [Status.INVALID_COMMAND, Status.VERSION_MISMATCH].includes(d.status as never),
      `a command refused with ${d.status}: ${d.why}`,
    );
    return;
  }
  assert.ok(d.outputLength <= max);
  const carried = NATS_FRAME.HEADER + d.input.length + (d.output?.length ?? 0);
  assert.equal(carried, frame.length, "areas and header make the frame");
  if (d.output !== undefined) assert.equal(d.output.length, d.outputLength);
  assert.match(d.session, /^[0-9a-f]{16}$/);
  assert.ok(Number.isInteger(d.code) && d.code >= 0 && d.code <= 0xffff_ffff);
}

/** What a decoded answer must satisfy, whatever the frame was. */
function checkAnswer(frame: Uint8Array, capacity: number, d: ReturnType<typeof decodeAnswer>) {
  if ("why" in d) {
    assert.ok(
      [Status.PROTOCOL_VIOLATION, Status.VERSION_MISMATCH].includes(d.status as never),
      `an answer refused with ${d.status}: ${d.why}`,
    );
    return;
  }
  assert.ok(d.status >= 0 || LIBRARY.has(d.status), `status ${d.status}`);
  assert.ok(d.output.length <= capacity, "no more output than the area holds");
  assert.equal(NATS_FRAME.HEADER + d.output.length, frame.length);
  if (d.status !== Status.OUTPUT_OVERFLOW) assert.equal(d.length, d.output.length);
}

Deno.test("the NATS frame's decoders take any bytes without throwing, and hand out only what a frame holds", () => {
  const ms = Number(Deno.env.get("SHMCALL_FUZZ_NATS_MS") ?? 0);
  const until = ms > 0 ? performance.now() + ms : Infinity;
  const seed = Number(Deno.env.get("SHMCALL_FUZZ_SEED") ?? 0x5eed);
  const next = rng(seed);
  const valid = [
    encodeCommand(7, undefined, SESSION, new Uint8Array([1, 2, 3]), 16, undefined),
    encodeCommand(0, true, SESSION, new Uint8Array(0), 4, new Uint8Array([9, 9, 9, 9])),
    encodeAnswer(0, 3, new Uint8Array([1, 2, 3])),
    encodeAnswer(Status.HANDLER_FAILED, 2, new Uint8Array([65, 66])),
    encodeAnswer(Status.OUTPUT_OVERFLOW, 99, new Uint8Array(0)),
    encodeGoodbye(SESSION),
  ];
  let n = 0;
  for (; ms > 0 ? performance.now() < until : n < 20_000; n++) {
    let frame: Uint8Array;
    if (n % 2 === 0) {
      frame = new Uint8Array(next() % 64);
      for (let i = 0; i < frame.length; i++) frame[i] = next();
      // Often a plausible header, so the checks past it are reached.
      if (frame.length >= 6 && next() % 2 === 0) {
        frame.set([NATS_FRAME.MAGIC_0, NATS_FRAME.MAGIC_1, NATS_FRAME.MAJOR], 0);
        frame[4] = 1 + next() % 3;
        frame[5] = next() % 8;
      }
    } else {
      frame = new Uint8Array(valid[next() % valid.length]!);
      for (let k = next() % 4; k >= 0; k--) {
        if (frame.length > 0) frame[next() % frame.length] = next();
      }
      if (next() % 4 === 0) frame = frame.subarray(0, next() % (frame.length + 1));
    }
    const max = next() % 64;
    try {
      checkCommand(frame, max, decodeCommand(frame, max));
      checkAnswer(frame, max, decodeAnswer(frame, max));
      const session = decodeGoodbye(frame);
      if (session !== undefined) assert.match(session, /^[0-9a-f]{16}$/);
    } catch (e) {
      throw new Error(
        `seed ${seed}, frame ${n} [${[...frame].join(",")}]: ${(e as Error).message}`,
      );
    }
  }
  assert.ok(n > 0);
});

Deno.test("a command and an answer come back from their frames as they went in", () => {
  const input = new Uint8Array([5, 6, 7]);
  const prepared = new Uint8Array([1, 1]);
  for (const inline of [undefined, true, false]) {
    for (const output of [undefined, prepared]) {
      const d = decodeCommand(encodeCommand(0xffff_ffff, inline, SESSION, input, 2, output), 2);
      assert.ok(!("why" in d));
      assert.equal(d.code, 0xffff_ffff);
      assert.equal(d.inline, inline);
      assert.equal(d.session, "01020304050607ff");
      assert.deepEqual([...d.input], [5, 6, 7]);
      assert.equal(d.outputLength, 2);
      assert.deepEqual(d.output === undefined ? undefined : [...d.output], output && [1, 1]);
    }
  }
  const a = decodeAnswer(encodeAnswer(2 ** 31 - 1, 2, new Uint8Array([8, 9])), 2);
  assert.ok(!("why" in a));
  assert.deepEqual([a.status, a.length, [...a.output]], [2 ** 31 - 1, 2, [8, 9]]);
  assert.equal(decodeGoodbye(encodeGoodbye(SESSION)), "01020304050607ff");
});

Deno.test("the NATS frame's header is laid out as docs/protocol.md says, little-endian", () => {
  const f = encodeCommand(0x0102_0304, false, SESSION, new Uint8Array([0xaa]), 0x0506, undefined);
  assert.deepEqual([...f.subarray(0, 8)], [0x53, 0x43, 1, 0, 1, NATS_FRAME.INLINE_CHOSEN, 0, 0]);
  assert.deepEqual([...f.subarray(8, 16)], [4, 3, 2, 1, 0x06, 0x05, 0, 0]);
  assert.deepEqual([...f.subarray(16, 24)], [...SESSION]);
  assert.deepEqual([...f.subarray(24)], [0xaa]);
  const a = encodeAnswer(Status.HANDLER_FAILED, 1, new Uint8Array([0x41]));
  assert.deepEqual([...a.subarray(0, 16)], [
    0x53,
    0x43,
    1,
    0,
    2,
    0,
    0,
    0,
    0xfe,
    0xff,
    0xff,
    0xff,
    1,
    0,
    0,
    0,
  ]);
});

Deno.test("frames no server of this version may send are refused, each with its status", () => {
  const command = encodeCommand(1, undefined, SESSION, new Uint8Array(0), 8, undefined);
  const later = new Uint8Array(command);
  later[2] = 2;
  assert.equal((decodeCommand(later, 8) as Refusal).status, Status.VERSION_MISMATCH);
  assert.equal((decodeCommand(command, 4) as Refusal).status, Status.INVALID_COMMAND);
  const flagged = new Uint8Array(command);
  flagged[5] = 8;
  assert.equal((decodeCommand(flagged, 8) as Refusal).status, Status.INVALID_COMMAND);
  const unknown = encodeAnswer(-99, 0, new Uint8Array(0));
  assert.equal((decodeAnswer(unknown, 8) as Refusal).status, Status.PROTOCOL_VIOLATION);
  const long = encodeAnswer(0, 9, new Uint8Array(9));
  assert.equal((decodeAnswer(long, 8) as Refusal).status, Status.PROTOCOL_VIOLATION);
  const short = encodeAnswer(0, 5, new Uint8Array(4));
  assert.equal((decodeAnswer(short, 8) as Refusal).status, Status.PROTOCOL_VIOLATION);
});
