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
import { Status } from "../src/status.ts";
import {
  type CommandFrame,
  decodeAnswer,
  decodeCommand,
  decodeGoodbye,
  decodeQueue,
  decodeReply,
  encodeAnswer,
  encodeCommand,
  encodeGoodbye,
  encodeNotes,
  encodeQueue,
  NATS_FRAME,
  parseNotes,
  parsePosts,
  parseRegistration,
  type Refusal,
  writePost,
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

/** Posts' records: [event, data] pairs. */
function posts(records: [number, number[]][]): Uint8Array {
  const out = new Uint8Array(
    records.reduce((n, [, d]) => n + NATS_FRAME.POST_RECORD + d.length, 0),
  );
  let at = 0;
  for (const [event, data] of records) at = writePost(out, at, event, new Uint8Array(data));
  return out;
}

/** What a queue frame's readers must satisfy, whatever the frame was. */
function checkQueue(frame: Uint8Array, maxData: number): void {
  for (let kind = NATS_FRAME.QUEUE_OPEN; kind <= NATS_FRAME.QUEUE_PING; kind++) {
    const f = decodeQueue(frame, kind, 1);
    if ("why" in f) continue;
    assert.equal(f.payload.length + NATS_FRAME.HEADER, frame.length);
    const r = parseRegistration(f.payload);
    if (Array.isArray(r)) assert.equal(4 * (r.length + 1), f.payload.length);
    const p = parsePosts(f.payload, f.a, maxData);
    if (Array.isArray(p)) {
      assert.equal(p.length, f.a);
      const size = p.reduce((n, x) => n + NATS_FRAME.POST_RECORD + x.data.length, 0);
      assert.equal(size, f.payload.length, "the posts fill the payload");
      for (const x of p) assert.ok(x.data.length <= maxData);
    }
    const n = parseNotes(f.payload, f.a, maxData);
    if (!("why" in n)) {
      assert.equal(n.notes.length, f.a);
      const size = n.notes.reduce((k, x) => k + NATS_FRAME.NOTE_RECORD + x.data.length, 0);
      assert.equal(size + NATS_FRAME.NOTES_DROPPED, f.payload.length, "the notes fill it");
      for (const x of n.notes) {
        assert.ok(x.data.length <= maxData && Number.isSafeInteger(x.sequence));
      }
    }
  }
  const reply = decodeReply(frame);
  if (!("why" in reply)) {
    assert.equal(frame.length, NATS_FRAME.HEADER);
    assert.ok(reply.status >= 0 || LIBRARY.has(reply.status));
  }
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
    encodeQueue(NATS_FRAME.QUEUE_OPEN, 0, 16, 0, SESSION, new Uint8Array([0, 0, 0, 0, 5, 0, 0, 0])),
    encodeQueue(NATS_FRAME.QUEUE_POSTS, 0, 2, 7, SESSION, posts([[1, [1, 2]], [2, []]])),
    encodeQueue(
      NATS_FRAME.QUEUE_NOTES,
      NATS_FRAME.END,
      1,
      3,
      SESSION,
      encodeNotes(4, [{ sequence: 2 ** 40 + 1, event: 9, data: new Uint8Array([7]) }]),
    ),
    encodeAnswer(0, 1024, new Uint8Array(0)),
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
        frame[4] = 1 + next() % 9;
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
      checkQueue(frame, max);
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

Deno.test("a queue's frames come back from their bytes as they went in", () => {
  const p = decodeQueue(
    encodeQueue(NATS_FRAME.QUEUE_POSTS, 0, 2, 0xffff_ffff, SESSION, posts([[1, [1]], [2, []]])),
    NATS_FRAME.QUEUE_POSTS,
  );
  assert.ok(!("why" in p));
  assert.deepEqual([p.a, p.b, p.session], [2, 0xffff_ffff, "01020304050607ff"]);
  const records = parsePosts(p.payload, p.a, 240);
  assert.ok(Array.isArray(records));
  assert.deepEqual(records.map((r) => [r.event, [...r.data]]), [[1, [1]], [2, []]]);
  const notes = parseNotes(
    encodeNotes(3, [{ sequence: 2 ** 52 + 5, event: 0xffff_ffff, data: new Uint8Array([9]) }]),
    1,
    240,
  );
  assert.ok(!("why" in notes));
  assert.equal(notes.dropped, 3);
  assert.deepEqual(
    notes.notes.map((n) => [n.sequence, n.event, [...n.data]]),
    [[2 ** 52 + 5, 0xffff_ffff, [9]]],
  );
  assert.deepEqual(parseRegistration(new Uint8Array([1, 0, 0, 0])), "all");
  assert.deepEqual(parseRegistration(new Uint8Array([0, 0, 0, 0, 5, 0, 0, 0])), [5]);
  assert.equal(
    (parseRegistration(new Uint8Array([2, 0, 0, 0])) as Refusal).status,
    Status.INVALID_ARGUMENT,
  );
  // A post longer than a notification holds is refused whole.
  const long = posts([[1, new Array(241).fill(0)]]);
  assert.equal((parsePosts(long, 1, 240) as Refusal).status, Status.PROTOCOL_VIOLATION);
  // Fewer records than the count says, or bytes after them: refused.
  assert.equal((parsePosts(posts([[1, []]]), 2, 240) as Refusal).status, Status.PROTOCOL_VIOLATION);
  assert.equal((parsePosts(posts([[1, []]]), 0, 240) as Refusal).status, Status.PROTOCOL_VIOLATION);
});
