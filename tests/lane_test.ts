/**
 * The lane (src/lane.ts) on a segment of its own, with this test as the server: what the lane
 * writes and how it judges what a server writes back, entry by entry.
 *
 * @module
 */

import "./setup.ts";
import assert from "node:assert/strict";
import { Lane, ServerLane } from "../src/lane.ts";
import { CLAIM, LANE, LANE_COUNT, Mapping, RING, SLOT } from "../src/native.ts";
import { Status } from "../src/status.ts";

const CAPACITY = 8;
const CS = 256;
const SC = 512;
const BASE = 4096;
const AREA = 64;
const STRIDE = SLOT.HEADER_SIZE + 2 * AREA;
const SLOTS = 4;

/** The lane words of the test's segment: both rings at position 0, one class of slots. */
function layout(): Uint32Array {
  const words = new Uint32Array(LANE.WORDS);
  words[LANE.CS_RING] = CS;
  words[LANE.SC_RING] = SC;
  words[LANE.RING_CAPACITY] = CAPACITY;
  words.set([BASE, STRIDE, SLOTS, AREA, AREA, 0], LANE.CLASSES);
  // A second class with no slots.
  words.set(
    [BASE + SLOTS * STRIDE, STRIDE, 0, 1 << 20, 1 << 20, SLOTS],
    LANE.CLASSES + LANE.CLASS_WORDS,
  );
  return words;
}

/** A segment, the lane over it, the violations it reported, and the server's side of it. */
function setUp() {
  const bytes = new Uint8Array(BASE + SLOTS * STRIDE);
  const u32 = new Uint32Array(bytes.buffer);
  const i32 = new Int32Array(bytes.buffer);
  const words = layout();
  const violations: string[] = [];
  let now = 0;
  const lane = new Lane(
    new Mapping(bytes, () => {}),
    words,
    (why) => violations.push(why),
    () => now += 1000,
  );
  const cells = (ring: number) => (ring + RING.HEADER_SIZE) / 4;
  const server = {
    /** Pops the CS ring's entry at `position`. */
    take(position: number): number {
      const at = cells(CS) + (position % CAPACITY);
      const offset = u32[at]!;
      u32[at] = 0;
      u32[(CS + RING.READ) / 4] = position + 1;
      return offset;
    },
    /** Writes a reply into the slot at `offset` and pushes it onto the SC ring at `position`. */
    answer(position: number, offset: number, status: number, length: number, generation?: number) {
      const h = offset / 4;
      i32[h + SLOT.STATUS / 4] = status;
      u32[h + SLOT.OUTPUT_LEN / 4] = length;
      u32[h + SLOT.REPLY_GENERATION / 4] = generation ?? u32[h + SLOT.GENERATION / 4]!;
      u32[cells(SC) + (position % CAPACITY)] = offset;
    },
    header(offset: number, field: number): number {
      return u32[(offset + field) / 4]!;
    },
    /** The server's take of the command at `offset`: its swap of the claim word. */
    claim(offset: number) {
      u32[(offset + SLOT.CLAIM) / 4] = CLAIM.TAKEN;
    },
    flag(value: number) {
      u32[(CS + RING.FLAG) / 4] = value;
    },
    scRead: () => u32[(SC + RING.READ) / 4]!,
  };
  return { lane, violations, server };
}

Deno.test("a lane pushes requests, pops answers in the server's order, and reuses slots with a new generation", () => {
  const { lane, violations, server } = setUp();
  const slots = [lane.take(10, 20), lane.take(0, 64), lane.take(64, 0)];
  assert.deepEqual(slots, [0, 1, 2]);
  for (const [i, slot] of slots.entries()) {
    assert.equal(lane.push(slot, 100 + i, 0, 10, 20, true), true);
  }
  assert.equal(lane.unfenced, true, "pushes wait for a fence");
  assert.equal(lane.fence(), false, "an awake server needs no wake");
  assert.equal(lane.unfenced, false);
  assert.equal(server.scRead(), 0, "the fence stores the read position the lane has");
  const offsets = slots.map((_, i) => server.take(i));
  assert.deepEqual(offsets, slots.map((s) => BASE + s * STRIDE));
  assert.equal(server.header(offsets[1]!, SLOT.CODE), 101);
  assert.equal(server.header(offsets[1]!, SLOT.INPUT_LEN), 10);
  assert.equal(server.header(offsets[1]!, SLOT.OUTPUT_CAP), 20);
  assert.equal(server.header(offsets[1]!, SLOT.GENERATION), 1);
  assert.equal(server.header(offsets[1]!, SLOT.CLAIM), CLAIM.PENDING);
  // Answered out of order: popped in the ring's order.
  server.answer(0, offsets[2]!, 7, 3);
  server.answer(1, offsets[0]!, 0, 20);
  assert.equal(lane.pop(), 2);
  assert.deepEqual([lane.status, lane.length], [7, 3]);
  assert.equal(server.scRead(), 1, "the read position is published after each pop");
  assert.equal(lane.pop(), 0);
  assert.equal(lane.pop(), -1, "nothing more on the ring");
  lane.free(2);
  lane.free(0);
  // The lowest free slot comes first, and its next use has the next generation.
  assert.equal(lane.take(1, 1), 0);
  lane.push(0, 5, 0, 1, 1, true);
  assert.equal(server.take(3), offsets[0]);
  assert.equal(server.header(offsets[0]!, SLOT.GENERATION), 2);
  // A raised sleep flag asks for a wake.
  assert.equal(lane.take(1, 1), 2);
  server.flag(2);
  lane.push(2, 5, 0, 1, 1, true);
  assert.equal(lane.fence(), true, "a sleeping server is woken");
  assert.deepEqual(violations, []);
  const counts = lane.counts.words;
  assert.equal(counts[LANE_COUNT.COMMANDS], 5);
  assert.equal(counts[LANE_COUNT.FINISHED], 2);
  assert.equal(counts[LANE_COUNT.BYTES_IN], 32);
  assert.equal(counts[LANE_COUNT.BYTES_OUT], 23);
});

Deno.test("a lane hands out no slot a command does not fit, nor more slots than there are", () => {
  const { lane } = setUp();
  assert.equal(lane.take(AREA + 1, 0), -1, "no class fits: the backup path");
  for (let i = 0; i < SLOTS; i++) assert.equal(lane.take(1, 1), i);
  assert.equal(lane.take(1, 1), -1, "all taken: the backup path");
});

Deno.test("a withdrawal wins only before the server takes the command", () => {
  const { lane, server } = setUp();
  const a = lane.take(1, 1);
  const b = lane.take(1, 1);
  lane.push(a, 1, 0, 1, 1, true);
  lane.push(b, 1, 0, 1, 1, true);
  assert.equal(lane.withdraw(a), true);
  assert.equal(server.header(BASE + a * STRIDE, SLOT.CLAIM), CLAIM.CANCELLED);
  assert.equal(lane.withdraw(a), false, "withdrawn once");
  server.claim(BASE + b * STRIDE);
  assert.equal(lane.withdraw(b), false, "taken by the server first");
  assert.equal(server.header(BASE + b * STRIDE, SLOT.CLAIM), CLAIM.TAKEN);
  assert.equal(lane.withdraw(lane.take(1, 1)), false, "a slot not out cannot be withdrawn");
});

Deno.test("a command that will not be withdrawn goes with its claim word taken already", () => {
  const { lane, server } = setUp();
  const a = lane.take(1, 1);
  lane.push(a, 1, 0, 1, 1, false);
  assert.equal(server.header(BASE + a * STRIDE, SLOT.CLAIM), CLAIM.TAKEN);
  assert.equal(lane.withdraw(a), false, "nothing to withdraw");
  assert.equal(server.header(BASE + a * STRIDE, SLOT.CLAIM), CLAIM.TAKEN);
});

for (
  const [name, answer, expect] of [
    [
      "an entry that is no slot's offset",
      (s: ReturnType<typeof setUp>["server"]) => s.answer(0, BASE + 4, 0, 0, 1),
      /SC ring entry 0x1004 is not the offset of a slot/,
    ],
    [
      "an entry beyond the slots",
      (s: ReturnType<typeof setUp>["server"]) => s.answer(0, BASE + SLOTS * STRIDE, 0, 0, 1),
      /is not the offset of a slot/,
    ],
    [
      "a slot that is not out",
      (s: ReturnType<typeof setUp>["server"]) => s.answer(0, BASE + 3 * STRIDE, 0, 0, 0),
      /slot 3 came back while it was not outstanding/,
    ],
    [
      "a stale generation",
      (s: ReturnType<typeof setUp>["server"]) => s.answer(0, BASE, 0, 0, 7),
      /slot 0 came back with generation 7 instead of 1/,
    ],
    [
      "more output than the capacity",
      (s: ReturnType<typeof setUp>["server"]) => s.answer(0, BASE, 0, 33),
      /slot 0 reports 33 output bytes, beyond its capacity of 32/,
    ],
    [
      "an unknown library status",
      (s: ReturnType<typeof setUp>["server"]) => s.answer(0, BASE, -99, 0),
      /slot 0 carries unknown library status -99/,
    ],
  ] as const
) {
  Deno.test(`a lane ends the connection on ${name}, naming it, and pops nothing more`, () => {
    const { lane, violations, server } = setUp();
    lane.push(lane.take(8, 32), 1, 0, 8, 32, true);
    answer(server);
    assert.equal(lane.pop(), -1);
    assert.equal(violations.length, 1);
    assert.match(violations[0]!, expect);
    assert.equal(lane.broken, true);
    server.answer(1, BASE, 0, 0);
    assert.equal(lane.pop(), -1, "a broken lane pops nothing");
  });
}

Deno.test("an overflow may report more bytes than the capacity: the bytes its handler wanted", () => {
  const { lane, violations, server } = setUp();
  lane.push(lane.take(8, 32), 1, 0, 8, 32, true);
  server.answer(0, BASE, Status.OUTPUT_OVERFLOW, 1000);
  assert.equal(lane.pop(), 0);
  assert.deepEqual([lane.status, lane.length], [Status.OUTPUT_OVERFLOW, 1000]);
  assert.deepEqual(violations, []);
  assert.equal(lane.counts.words[LANE_COUNT.FAILURES - Status.OUTPUT_OVERFLOW], 1);
});

Deno.test("a server that lies about its CS read position makes the push a violation, not an overwrite", () => {
  const { lane, violations } = setUp();
  // Eight pushes fill the ring only if the server never reads; the first four go out.
  for (let i = 0; i < SLOTS; i++) lane.push(lane.take(1, 1), 1, 0, 1, 1, true);
  lane.free(0);
  lane.free(1);
  lane.free(2);
  lane.free(3);
  for (let i = 0; i < SLOTS; i++) lane.push(lane.take(1, 1), 1, 0, 1, 1, true);
  assert.deepEqual(violations, []);
  lane.free(0);
  lane.push(lane.take(1, 1), 1, 0, 1, 1, true);
  assert.equal(violations.length, 1);
  assert.match(violations[0]!, /the CS ring is full/);
});

/** A server's lane on a segment of its own, with this test as the client. */
function setUpServer() {
  const bytes = new Uint8Array(BASE + SLOTS * STRIDE);
  const u32 = new Uint32Array(bytes.buffer);
  const words = layout();
  const violations: string[] = [];
  let now = 0;
  const lane = new ServerLane(
    new Mapping(bytes, () => {}),
    words,
    (why) => violations.push(why),
    () => now += 1000,
  );
  const cells = (ring: number) => (ring + RING.HEADER_SIZE) / 4;
  const client = {
    /** Writes a request into `slot` and pushes it onto the CS ring at `position`. */
    send(
      position: number,
      slot: number,
      code: number,
      input: number,
      output: number,
      gen = 1,
      claim: number = CLAIM.PENDING,
    ) {
      const at = BASE + slot * STRIDE;
      const h = at / 4;
      u32[h + SLOT.CODE / 4] = code;
      u32[h + SLOT.FLAGS / 4] = 0;
      u32[h + SLOT.INPUT_LEN / 4] = input;
      u32[h + SLOT.OUTPUT_CAP / 4] = output;
      u32[h + SLOT.GENERATION / 4] = gen;
      u32[h + SLOT.CLAIM / 4] = claim;
      u32[cells(CS) + (position % CAPACITY)] = at;
    },
    /** Pushes a bare `offset` onto the CS ring at `position`. */
    push(position: number, offset: number) {
      u32[cells(CS) + (position % CAPACITY)] = offset;
    },
    /** A client's withdrawal: its compare-and-swap of the claim word; whether it won. */
    withdraw(slot: number): boolean {
      const at = (BASE + slot * STRIDE + SLOT.CLAIM) / 4;
      return Atomics.compareExchange(u32, at, CLAIM.PENDING, CLAIM.CANCELLED) === CLAIM.PENDING;
    },
    claimWord: (slot: number) => u32[(BASE + slot * STRIDE + SLOT.CLAIM) / 4],
    /** Pops the SC ring at `position`: the slot's offset, then the reply. */
    receive(position: number) {
      const at = cells(SC) + (position % CAPACITY);
      const offset = u32[at]!;
      u32[at] = 0;
      u32[(SC + RING.READ) / 4] = position + 1;
      const h = offset / 4;
      return {
        offset,
        status: new Int32Array(bytes.buffer)[h + SLOT.STATUS / 4],
        length: u32[h + SLOT.OUTPUT_LEN / 4],
        generation: u32[h + SLOT.REPLY_GENERATION / 4],
      };
    },
    flag(value: number) {
      u32[(SC + RING.FLAG) / 4] = value;
    },
    csRead: () => u32[(CS + RING.READ) / 4]!,
  };
  return { lane, violations, client };
}

Deno.test("a server's lane takes requests in order, holds their slots, and answers echoing the generation", () => {
  const { lane, violations, client } = setUpServer();
  client.send(0, 2, 7, 10, 20, 5);
  client.send(1, 0, 8, 0, 64, 9);
  assert.equal(lane.next(), 2);
  assert.deepEqual([lane.code, lane.inputLength, lane.outputCapacity], [7, 10, 20]);
  assert.equal(client.csRead(), 1, "the read position is published after each take");
  lane.count(2);
  assert.equal(lane.next(), 0);
  lane.count(0);
  assert.equal(lane.next(), -1);
  lane.keep(0);
  assert.deepEqual([lane.kept(0), lane.kept(2)], [true, false], "kept past its turn: slot 0");
  assert.equal(lane.claim(0), true);
  assert.equal(lane.answer(0, 3, 11), true);
  assert.equal(lane.fence(), false, "an awake client needs no wake");
  client.flag(2);
  assert.equal(lane.answer(2, 0, 20), true);
  assert.equal(lane.fence(), true, "a watching client is woken");
  assert.deepEqual(client.receive(0), { offset: BASE, status: 3, length: 11, generation: 9 });
  assert.deepEqual(client.receive(1), {
    offset: BASE + 2 * STRIDE,
    status: 0,
    length: 20,
    generation: 5,
  });
  assert.equal(lane.kept(0), false, "answered: no longer kept");
  assert.deepEqual(violations, []);
  const counts = lane.counts.words;
  assert.deepEqual(
    [counts[LANE_COUNT.COMMANDS], counts[LANE_COUNT.FINISHED], counts[LANE_COUNT.BYTES_OUT]],
    [2, 2, 31],
  );
});

Deno.test("a server's lane sees a withdrawal made before its take, and none after", () => {
  const { lane, client } = setUpServer();
  client.send(0, 1, 1, 1, 1);
  client.send(1, 2, 1, 1, 1);
  assert.equal(lane.next(), 1);
  assert.equal(client.withdraw(1), true);
  assert.equal(lane.claim(1), false, "withdrawn before the take");
  assert.equal(lane.next(), 2);
  assert.equal(lane.claim(2), true);
  assert.equal(client.withdraw(2), false, "taken: too late to withdraw");
  assert.equal(client.claimWord(2), CLAIM.TAKEN);
});

Deno.test("a server's lane takes a command pushed as taken, and not one withdrawn", () => {
  const { lane, client } = setUpServer();
  client.send(0, 1, 1, 1, 1, 1, CLAIM.TAKEN);
  client.send(1, 2, 1, 1, 1, 1, CLAIM.CANCELLED);
  assert.equal(lane.next(), 1);
  assert.equal(lane.claim(1), true);
  assert.equal(client.claimWord(1), CLAIM.TAKEN);
  assert.equal(lane.next(), 2);
  assert.equal(lane.claim(2), false, "withdrawn: not run");
});

for (
  const [name, send, expect] of [
    [
      "an entry that is no slot's offset",
      (c: ReturnType<typeof setUpServer>["client"]) => c.push(0, BASE + 12),
      /CS ring entry 0x100c is not the offset of a slot/,
    ],
    [
      "a slot pushed again while held",
      (c: ReturnType<typeof setUpServer>["client"]) => {
        c.send(0, 1, 1, 1, 1);
        c.send(1, 1, 1, 1, 1);
      },
      /slot 1 was pushed while the server held it/,
    ],
    [
      "lengths beyond the slot's areas",
      (c: ReturnType<typeof setUpServer>["client"]) => c.send(0, 1, 1, AREA + 1, 1),
      /slot 1 asks for 65 input and 1 output bytes but holds 64 and 64/,
    ],
  ] as const
) {
  Deno.test(`a server's lane drops the connection on ${name}, naming it`, () => {
    const { lane, violations, client } = setUpServer();
    send(client);
    while (lane.next() >= 0) { /* takes what is sound */ }
    assert.equal(violations.length, 1);
    assert.match(violations[0]!, expect);
    assert.equal(lane.broken, true);
    client.send(3, 3, 1, 1, 1);
    assert.equal(lane.next(), -1, "a broken lane takes nothing more");
  });
}
