import "./setup.ts";
import { within } from "./peers/assertions.ts";
import assert from "node:assert/strict";
import { connect, serve } from "../mod.ts";
import {
  LIST_HEADER_SIZE,
  LIST_MAGIC,
  listSize,
  type ListView,
  readList,
  writeList,
} from "../src/layout.ts";
import { tempSocketDir } from "./peers/spawn.ts";

const MIB_64 = 64 << 20;
const U32_MAX = 0xffff_ffff;

/** An area holding a header of our choosing, then `room` bytes. */
function header(magic: number, count: number, metaSize: number, dataSize: number, room = 0) {
  const area = new Uint8Array(LIST_HEADER_SIZE + room);
  const view = new DataView(area.buffer);
  view.setUint32(0, magic, true);
  view.setUint32(4, count, true);
  view.setUint32(8, metaSize, true);
  view.setUint32(12, dataSize, true);
  return area;
}

/** Asserts `f` throws a RangeError whose message matches every pattern. */
function throwsRange(f: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof RangeError, `expected a RangeError, got ${e}`);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

/** Fills entry i with bytes derived from i, so a mix-up of entries shows. */
function fill(list: ListView): void {
  for (let i = 0; i < list.count; i++) {
    list.meta(i).fill(i + 1);
    list.data(i).fill(0x80 + i);
  }
}

function check(list: ListView): void {
  for (let i = 0; i < list.count; i++) {
    assert.ok(list.meta(i).every((b) => b === ((i + 1) & 0xff)), `meta(${i})`);
    assert.ok(list.data(i).every((b) => b === ((0x80 + i) & 0xff)), `data(${i})`);
  }
}

Deno.test("listSize() is the 16-byte header plus count entries of metaSize + dataSize bytes", () => {
  assert.equal(LIST_HEADER_SIZE, 16);
  assert.equal(listSize(0, 0, 0), 16);
  assert.equal(listSize(0, 100, 100), 16);
  assert.equal(listSize(3, 0, 0), 16);
  assert.equal(listSize(3, 5, 7), 16 + 3 * 12);
  assert.equal(listSize(100, 12, 24), 3616);
});

Deno.test("writeList() then readList() round-trips lists of every shape", () => {
  const shapes: [count: number, metaSize: number, dataSize: number][] = [
    [0, 0, 0],
    [0, 8, 8],
    [5, 0, 0],
    [4, 0, 9],
    [4, 9, 0],
    [1, 1, 1],
    [3, 12, 24],
    [2000, 512, 1536],
  ];
  for (const [count, metaSize, dataSize] of shapes) {
    const shape = `${count} × (${metaSize} + ${dataSize})`;
    const area = new Uint8Array(listSize(count, metaSize, dataSize));
    const written = writeList(area, count, metaSize, dataSize);
    assert.deepEqual(
      [written.count, written.metaSize, written.dataSize, written.byteLength],
      [count, metaSize, dataSize, area.length],
      shape,
    );
    fill(written);
    const read = readList(area);
    assert.deepEqual(
      [read.count, read.metaSize, read.dataSize, read.byteLength],
      [count, metaSize, dataSize, area.length],
      shape,
    );
    check(read);
    for (let i = 0; i < count; i++) {
      assert.equal(read.offset(i), 16 + i * (metaSize + dataSize), `${shape}: offset(${i})`);
      assert.equal(read.meta(i).length, metaSize, shape);
      assert.equal(read.data(i).length, dataSize, shape);
    }
  }
});

Deno.test("writeList() writes magic, count, metaSize and dataSize as little-endian u32s at offsets 0, 4, 8 and 12", () => {
  const area = new Uint8Array(listSize(2, 0x0102, 0x0304)).fill(0xee);
  writeList(area, 2, 0x0102, 0x0304);
  assert.deepEqual([...area.subarray(0, 16)], [
    ...[0x53, 0x43, 0x4c, 0x01], // "SCL", version 1
    ...[0x02, 0x00, 0x00, 0x00],
    ...[0x02, 0x01, 0x00, 0x00],
    ...[0x04, 0x03, 0x00, 0x00],
  ]);
  assert.equal(new DataView(area.buffer).getUint32(0, true), LIST_MAGIC);
  assert.ok(area.subarray(16).every((b) => b === 0xee), "the entries are not touched");
});

Deno.test("writeList() and readList() work on an area that is a subarray at an offset", () => {
  const backing = new Uint8Array(7 + listSize(2, 3, 5) + 5).fill(0xee);
  const area = backing.subarray(7, 7 + listSize(2, 3, 5));
  fill(writeList(area, 2, 3, 5));
  assert.equal(backing[6], 0xee);
  assert.equal(backing[7], 0x53);
  assert.equal(backing[7 + 16], 1, "entry 0's metadata right after the header");
  assert.equal(backing[7 + 16 + 3], 0x80, "entry 0's data right after its metadata");
  assert.equal(backing[7 + 16 + 8], 2, "entry 1 right after entry 0");
  assert.ok(backing.subarray(7 + area.length).every((b) => b === 0xee), "nothing written past");
  check(readList(area));
});

Deno.test("meta() and data() are views of the area: writing through them changes the area", () => {
  const area = new Uint8Array(listSize(2, 4, 8));
  const list = writeList(area, 2, 4, 8);
  list.data(1).set([9, 8, 7]);
  list.meta(0)[3] = 42;
  assert.deepEqual([...area.subarray(16 + 12 + 4, 16 + 12 + 7)], [9, 8, 7]);
  assert.equal(area[16 + 3], 42);
  assert.equal(list.data(1).buffer, area.buffer);
  area[16 + 12] = 77;
  assert.equal(readList(area).meta(1)[0], 77, "and reading sees the area as it is now");
});

Deno.test("iterating a list yields each entry's [meta, data] views in order", () => {
  const area = new Uint8Array(listSize(3, 2, 1));
  fill(writeList(area, 3, 2, 1));
  const seen = [...readList(area)].map(([meta, data]) => [[...meta], [...data]]);
  assert.deepEqual(seen, [[[1, 1], [0x80]], [[2, 2], [0x81]], [[3, 3], [0x82]]]);
  assert.deepEqual([...readList(header(LIST_MAGIC, 0, 4, 4))], []);
});

Deno.test("readList() accepts an area longer than the list and ignores the bytes after it", () => {
  const area = new Uint8Array(listSize(2, 1, 1) + 10);
  writeList(area, 2, 1, 1);
  const list = readList(area);
  assert.equal(list.byteLength, 20);
  assert.equal(list.count, 2);
});

Deno.test("readList() reads the header once: later writes to it do not change the view", () => {
  const area = new Uint8Array(listSize(1, 4, 4) + 1000);
  writeList(area, 1, 4, 4);
  const list = readList(area);
  new DataView(area.buffer).setUint32(4, 100, true); // the peer rewrites count
  new DataView(area.buffer).setUint32(12, 900, true); // and dataSize
  assert.deepEqual([list.count, list.dataSize, list.byteLength], [1, 4, 24]);
  assert.equal(list.data(0).length, 4);
  throwsRange(() => list.meta(1), /received 1/);
});

Deno.test("readList() rejects an area shorter than the 16-byte header, naming its length", () => {
  for (const length of [0, 1, 15]) {
    const area = new Uint8Array(length);
    throwsRange(
      () => readList(area),
      /16-byte list header/,
      new RegExp(`received ${length} bytes`),
    );
  }
});

Deno.test("readList() rejects an area that does not start with the magic, naming what it found", () => {
  throwsRange(() => readList(new Uint8Array(64)), /magic must be 0x014c4353, received 0x00000000/);
  throwsRange(() => readList(header(0xdeadbeef, 0, 0, 0)), /received 0xdeadbeef/);
  const swapped = header(LIST_MAGIC, 0, 0, 0);
  new DataView(swapped.buffer).setUint32(0, LIST_MAGIC, false); // big-endian: not ours
  throwsRange(() => readList(swapped), /received 0x53434c01/);
});

Deno.test("readList() rejects a list of another layout version, naming it", () => {
  const v2 = (LIST_MAGIC & 0xff_ffff) | 2 << 24;
  throwsRange(() => readList(header(v2, 0, 0, 0)), /version must be 1, received 2/);
});

Deno.test("readList() rejects a header whose entries run past the end of the area", () => {
  const area = new Uint8Array(listSize(3, 4, 4));
  writeList(area, 3, 4, 4);
  throwsRange(() => readList(area.subarray(0, area.length - 1)), /received 3 entries/, /40 bytes/);
  throwsRange(() => readList(header(LIST_MAGIC, 1, 0, 1)), /received 1 entries of 0 \+ 1 bytes/);
  throwsRange(() => readList(header(LIST_MAGIC, 1, U32_MAX, 0, 100)), /4294967295/);
  assert.equal(readList(header(LIST_MAGIC, 1, 0, 1, 1)).count, 1, "one more byte and it fits");
});

Deno.test("readList() rejects a count whose size wraps around 2^32 to something that fits", () => {
  // Counts under the 64 Mi entry limit, so only the size check can catch them.
  // 0x100001 × 4096 = 0x1_0000_1000: 4096 in 32-bit arithmetic, which this area would hold.
  throwsRange(
    () => readList(header(LIST_MAGIC, 0x10_0001, 4096, 0, 4096)),
    /received 1048577 entries of 4096 \+ 0 bytes \(4294971408 bytes\) in an area of 4112 bytes/,
  );
  // 2^25 × (64 + 64) = 2^32: 0 in 32-bit arithmetic.
  throwsRange(() => readList(header(LIST_MAGIC, 2 ** 25, 64, 64)), /33554432 entries/);
});

Deno.test("readList() rejects sizes beyond 2^53 and names them exactly", () => {
  // (2^32 - 1) × (2 × (2^32 - 1)) ≈ 2^65; the message shows it exactly.
  throwsRange(
    () => readList(header(LIST_MAGIC, U32_MAX, U32_MAX, U32_MAX, 64)),
    /\(36893488130239234066 bytes\)/,
  );
  throwsRange(() => readList(header(LIST_MAGIC, 1 << 21, U32_MAX, 1, 64)), /2097152 entries/);
});

Deno.test("readList() rejects more than 64 Mi entries even when they are empty", () => {
  assert.equal(readList(header(LIST_MAGIC, MIB_64, 0, 0)).count, MIB_64);
  throwsRange(() => readList(header(LIST_MAGIC, MIB_64 + 1, 0, 0)), /at most 67108864 entries/);
  throwsRange(() => readList(header(LIST_MAGIC, U32_MAX, 0, 0)), /received 4294967295 entries/);
});

Deno.test("readList() and writeList() reject an area that is not a Uint8Array", () => {
  const bad = new ArrayBuffer(64) as unknown as Uint8Array;
  assert.throws(() => readList(bad), TypeError);
  assert.throws(() => writeList(bad, 0, 0, 0), TypeError);
  assert.throws(() => readList(undefined as unknown as Uint8Array), /received undefined/);
});

Deno.test("listSize() and writeList() reject an argument that is not a u32, naming it and its value", () => {
  const area = new Uint8Array(1024);
  const cases: [string, [number, number, number]][] = [
    ["count", [-1, 0, 0]],
    ["count", [1.5, 0, 0]],
    ["count", [NaN, 0, 0]],
    ["metaSize", [0, 2 ** 32, 0]],
    ["metaSize", [0, Infinity, 0]],
    ["dataSize", [0, 0, -0.5]],
    ["dataSize", [0, 0, "4" as unknown as number]],
  ];
  for (const [name, args] of cases) {
    const value = new RegExp(`^${name} must be an integer from 0 to 4294967295, received `);
    throwsRange(() => listSize(...args), value);
    throwsRange(() => writeList(area, ...args), value);
  }
  assert.ok(area.every((b) => b === 0), "nothing written");
});

Deno.test("listSize() rejects a list over 64 MiB, the largest area", () => {
  assert.equal(listSize(1, MIB_64 - 16, 0), MIB_64);
  assert.equal(listSize(4, (MIB_64 - 16) / 8, (MIB_64 - 16) / 8), MIB_64);
  throwsRange(() => listSize(1, MIB_64 - 16, 1), /within 67108864 bytes/, /67108865 bytes/);
  throwsRange(() => listSize(0x10_0001, 4096, 0), /received 1048577 entries/);
  throwsRange(() => listSize(2 ** 25, 64, 64), /received 33554432 entries/);
  throwsRange(() => listSize(U32_MAX, U32_MAX, U32_MAX), /36893488130239234066 bytes/);
  throwsRange(() => listSize(MIB_64 + 1, 0, 0), /67108865 entries/);
});

Deno.test("writeList() rejects an area too short for the list, writing nothing", () => {
  const area = new Uint8Array(listSize(2, 4, 4) - 1);
  throwsRange(() => writeList(area, 2, 4, 4), /must hold 32 bytes/, /received 31 bytes/);
  throwsRange(() => writeList(new Uint8Array(15), 0, 0, 0), /received 15 bytes/);
  assert.ok(area.every((b) => b === 0));
});

Deno.test("meta(), data() and offset() reject an index out of range, naming it", () => {
  const list = writeList(new Uint8Array(listSize(2, 1, 1)), 2, 1, 1);
  for (const index of [-1, 2, 1.5, NaN, 2 ** 32, Infinity]) {
    const received = new RegExp(`from 0 to 1, received ${index}`);
    throwsRange(() => list.meta(index), received);
    throwsRange(() => list.data(index), received);
    throwsRange(() => list.offset(index), received);
  }
  const empty = readList(header(LIST_MAGIC, 0, 1, 1));
  throwsRange(() => empty.data(0), /the list has no entries, received 0/);
});

Deno.test("a server reads a list from command.input and answers a list in command.output, both built and read in place", async () => {
  // Records: metadata { id: u32, price: f64 } (12 bytes), data: a 4-byte quantity (u32).
  // The server answers one entry per record: metadata { id: u32 }, data { total: f64 }.
  const IN_META = 12, IN_DATA = 4, OUT_META = 4, OUT_DATA = 8;
  const N = 50;
  const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.length);
  using dir = tempSocketDir();
  await using _server = await serve("layout", {
    exec({ input, output }) {
      const list = readList(input);
      const out = writeList(output, list.count, OUT_META, OUT_DATA);
      for (let i = 0; i < list.count; i++) {
        const meta = dv(list.meta(i));
        const quantity = dv(list.data(i)).getUint32(0, true);
        dv(out.meta(i)).setUint32(0, meta.getUint32(0, true), true);
        dv(out.data(i)).setFloat64(0, meta.getFloat64(4, true) * quantity, true);
      }
      return { status: list.count, length: out.byteLength };
    },
  }, { socketDir: dir.path });
  using client = await connect("layout", { socketDir: dir.path });

  let inputArea: Uint8Array | undefined;
  const totals: [number, number][] = [];
  const r = await within(
    "the command",
    client.execute(1, {
      // Room to spare: the server must read the list, not the whole area.
      inputLength: listSize(N, IN_META, IN_DATA) + 100,
      outputLength: listSize(N, OUT_META, OUT_DATA),
      inputPrepare(area) {
        inputArea = area;
        const list = writeList(area, N, IN_META, IN_DATA);
        for (let i = 0; i < N; i++) {
          const meta = dv(list.meta(i));
          meta.setUint32(0, 1000 + i, true);
          meta.setFloat64(4, i + 0.25, true);
          dv(list.data(i)).setUint32(0, i, true);
        }
      },
      outputPost(area) {
        const list = readList(area);
        assert.equal(list.byteLength, area.length, "the output area is cut to the list");
        for (const [meta, data] of list) {
          totals.push([dv(meta).getUint32(0, true), dv(data).getFloat64(0, true)]);
        }
      },
      completion: () => {},
    }),
  );
  assert.equal(r.status, N);
  assert.equal(r.length, listSize(N, OUT_META, OUT_DATA));
  assert.deepEqual(totals, Array.from({ length: N }, (_, i) => [1000 + i, (i + 0.25) * i]));
  assert.ok(inputArea !== undefined && inputArea.length === listSize(N, IN_META, IN_DATA) + 100);
});
