/**
 * The list layout (README.md, "Structured areas"): a list header, then `count` entries of the same shape, each
 * its metadata bytes then its data bytes — structured input and output areas without a
 * serialization library. Every integer is a little-endian u32:
 *
 * | offset | field      | meaning                                                    |
 * |-------:|------------|------------------------------------------------------------|
 * |      0 | `magic`    | {@linkcode LIST_MAGIC}: the bytes `S C L` and the version 1 |
 * |      4 | `count`    | the number of entries                                      |
 * |      8 | `metaSize` | each entry's metadata size in bytes                        |
 * |     12 | `dataSize` | each entry's data size in bytes                            |
 * |     16 | entries    | entry `i` at `16 + i * (metaSize + dataSize)`              |
 *
 * Entries are packed: an entry's fields are aligned only as far as its size makes them (a
 * `DataView` does not care). Bytes after the last entry belong to nobody and are ignored.
 *
 * A list read from shared memory was written by the other process, which may still be writing
 * it: {@linkcode readList} reads the header once, checks it against the area, and answers
 * views that never look at the header again.
 *
 * @module
 */

/** The list header's size in bytes; the first entry starts here. */
export const LIST_HEADER_SIZE = 16;

/**
 * The header's first word, read as a little-endian u32: the bytes `S`, `C`, `L` (shmcall
 * list), then the layout's version, 1. An area that does not start with it holds no list.
 */
export const LIST_MAGIC = 0x014c_4353;

/** Largest list, header included, in bytes: the largest area a command may have (64 MiB). */
const MAX_LIST_SIZE = 64 << 20;
/**
 * Most entries a list may have. Only lists of empty entries come near it: the bound keeps a
 * peer from making a reader loop over four billion of them.
 */
const MAX_LIST_COUNT = MAX_LIST_SIZE;
const U32_MAX = 0xffff_ffff;

/**
 * A list in an area: its shape, and zero-copy views of its entries. The shape is fixed when
 * the view is made; writes to the area's header afterwards do not change it.
 */
export interface ListView {
  /** The number of entries. */
  readonly count: number;
  /** Each entry's metadata size in bytes. */
  readonly metaSize: number;
  /** Each entry's data size in bytes. */
  readonly dataSize: number;
  /** The list's size in bytes: header and entries (the area may be longer). */
  readonly byteLength: number;
  /**
   * Entry `index`'s metadata: a view of the area, not a copy.
   *
   * @param index From 0 to `count - 1`.
   * @returns `metaSize` bytes of the area.
   * @throws {RangeError} If `index` is not an integer in range.
   */
  meta(index: number): Uint8Array;
  /**
   * Entry `index`'s data: a view of the area, not a copy.
   *
   * @param index From 0 to `count - 1`.
   * @returns `dataSize` bytes of the area.
   * @throws {RangeError} If `index` is not an integer in range.
   */
  data(index: number): Uint8Array;
  /**
   * Where entry `index` starts in the area: its metadata is there, its data `metaSize` bytes
   * further. For reading many entries through one `DataView` of the area, with no view made
   * per entry.
   *
   * @param index From 0 to `count - 1`.
   * @returns A byte offset into the area.
   * @throws {RangeError} If `index` is not an integer in range.
   */
  offset(index: number): number;
  /** Every entry in order, as `[meta, data]` views. */
  [Symbol.iterator](): IterableIterator<[meta: Uint8Array, data: Uint8Array]>;
}

class List implements ListView {
  readonly #area: Uint8Array;
  readonly #stride: number;
  readonly count: number;
  readonly metaSize: number;
  readonly dataSize: number;
  readonly byteLength: number;

  constructor(area: Uint8Array, count: number, metaSize: number, dataSize: number) {
    this.#area = area;
    this.#stride = metaSize + dataSize;
    this.count = count;
    this.metaSize = metaSize;
    this.dataSize = dataSize;
    // Exact: the caller checked that the entries fit the area.
    this.byteLength = LIST_HEADER_SIZE + count * this.#stride;
  }

  offset(index: number): number {
    // `>>> 0` keeps integers from 0 to 2^32 - 1 as they are and changes everything else.
    if (index >>> 0 !== index || index >= this.count) throw this.#badIndex(index);
    return LIST_HEADER_SIZE + index * this.#stride;
  }

  meta(index: number): Uint8Array {
    const at = this.offset(index);
    return this.#area.subarray(at, at + this.metaSize);
  }

  data(index: number): Uint8Array {
    const at = this.offset(index) + this.metaSize;
    return this.#area.subarray(at, at + this.dataSize);
  }

  *[Symbol.iterator](): IterableIterator<[meta: Uint8Array, data: Uint8Array]> {
    for (let i = 0; i < this.count; i++) yield [this.meta(i), this.data(i)];
  }

  #badIndex(index: number): RangeError {
    const range = this.count === 0 ? "the list has no entries" : `from 0 to ${this.count - 1}`;
    return new RangeError(`index must be an integer ${range}, received ${index}`);
  }
}

function checkU32(name: string, value: number): void {
  if (typeof value !== "number" || value >>> 0 !== value) {
    throw new RangeError(`${name} must be an integer from 0 to ${U32_MAX}, received ${value}`);
  }
}

function checkArea(area: Uint8Array): void {
  if (!(area instanceof Uint8Array)) {
    throw new TypeError(`area must be a Uint8Array, received ${typeof area}`);
  }
}

/** The size of a list's entries, or -1 when it is over a limit (no product is ever formed). */
function entriesSize(count: number, metaSize: number, dataSize: number, room: number): number {
  const stride = metaSize + dataSize;
  if (count > MAX_LIST_COUNT) return -1;
  // A division, not `count * stride > room`: the product of two u32s can lose bits (and wraps
  // to something small in 32-bit arithmetic), the quotient cannot.
  if (stride !== 0 && count > Math.floor(room / stride)) return -1;
  return count * stride;
}

/** The bytes a list needs, for messages only (BigInt: it may be far beyond 2^53). */
function needs(count: number, metaSize: number, dataSize: number): string {
  return String(BigInt(LIST_HEADER_SIZE) + BigInt(count) * BigInt(metaSize + dataSize));
}

function readU32(area: Uint8Array, at: number): number {
  return (area[at]! | area[at + 1]! << 8 | area[at + 2]! << 16 | area[at + 3]! << 24) >>> 0;
}

function writeU32(area: Uint8Array, at: number, value: number): void {
  area[at] = value;
  area[at + 1] = value >>> 8;
  area[at + 2] = value >>> 16;
  area[at + 3] = value >>> 24;
}

/**
 * The bytes a list of `count` entries needs, header included: what to give `inputLength` or
 * `outputLength` for it.
 *
 * @param count The number of entries.
 * @param metaSize Each entry's metadata size in bytes.
 * @param dataSize Each entry's data size in bytes.
 * @returns `16 + count * (metaSize + dataSize)`.
 * @throws {RangeError} If an argument is not an integer from 0 to 2^32 - 1, `count` is over
 *   64 Mi, or the list needs more than 64 MiB (the largest area a command may have).
 *
 * @example Sizing an input area for 100 records
 * ```ts
 * import { listSize } from "shmcall";
 *
 * console.log(listSize(100, 12, 24)); // 3616
 * ```
 */
export function listSize(count: number, metaSize: number, dataSize: number): number {
  checkU32("count", count);
  checkU32("metaSize", metaSize);
  checkU32("dataSize", dataSize);
  const size = entriesSize(count, metaSize, dataSize, MAX_LIST_SIZE - LIST_HEADER_SIZE);
  if (size < 0) {
    throw new RangeError(
      `count must leave the list within ${MAX_LIST_SIZE} bytes and ${MAX_LIST_COUNT} entries, ` +
        `received ${count} entries of ${metaSize} + ${dataSize} bytes ` +
        `(${needs(count, metaSize, dataSize)} bytes)`,
    );
  }
  return LIST_HEADER_SIZE + size;
}

/**
 * Writes a list header at the start of `area` and answers a view for filling the entries in
 * place. The entries are not cleared: a slot's area holds whatever its last command left.
 *
 * @param area Where the list goes: an `inputPrepare` area, a server's `command.output`, any
 *   `Uint8Array`.
 * @param count The number of entries.
 * @param metaSize Each entry's metadata size in bytes.
 * @param dataSize Each entry's data size in bytes.
 * @returns A view of the list in `area`.
 * @throws {TypeError} If `area` is not a `Uint8Array`.
 * @throws {RangeError} As {@linkcode listSize} does, or if the list does not fit `area`.
 *
 * @example Two entries of a u32 and a 3-byte name, written then read back
 * ```ts
 * import { listSize, readList, writeList } from "shmcall";
 *
 * const area = new Uint8Array(listSize(2, 4, 3));
 * const list = writeList(area, 2, 4, 3);
 * for (let i = 0; i < list.count; i++) {
 *   const meta = list.meta(i);
 *   new DataView(meta.buffer, meta.byteOffset, 4).setUint32(0, 10 * i, true);
 *   new TextEncoder().encodeInto(`ab${i}`, list.data(i));
 * }
 *
 * const read = readList(area); // in the other process, typically
 * console.log(read.count, read.meta(1)[0], new TextDecoder().decode(read.data(1))); // 2 10 ab1
 * ```
 */
export function writeList(
  area: Uint8Array,
  count: number,
  metaSize: number,
  dataSize: number,
): ListView {
  checkArea(area);
  const size = listSize(count, metaSize, dataSize);
  if (size > area.length) {
    throw new RangeError(
      `area must hold ${size} bytes for ${count} entries of ${metaSize} + ${dataSize} bytes, ` +
        `received ${area.length} bytes`,
    );
  }
  writeU32(area, 0, LIST_MAGIC);
  writeU32(area, 4, count);
  writeU32(area, 8, metaSize);
  writeU32(area, 12, dataSize);
  return new List(area, count, metaSize, dataSize);
}

/**
 * Reads and checks the list header at the start of `area`, and answers a view of the list.
 * The header is untrusted (the peer can write shared memory): each field is read once, and the
 * view is made only if the magic is right and every entry lies inside `area`.
 *
 * @param area An area holding a list: a server's `command.input`, an `outputPost` area.
 * @returns A view of the list in `area`.
 * @throws {TypeError} If `area` is not a `Uint8Array`.
 * @throws {RangeError} If `area` is shorter than the header, does not start with
 *   {@linkcode LIST_MAGIC}, or is too short for the entries the header describes (or these are
 *   more than 64 Mi); the message names the value.
 *
 * @example Rejecting an area that holds no list
 * ```ts
 * import { readList } from "shmcall";
 *
 * try {
 *   readList(new Uint8Array(16));
 * } catch (e) {
 *   console.log((e as Error).message); // list magic must be 0x014c4353, received 0x00000000
 * }
 * ```
 */
export function readList(area: Uint8Array): ListView {
  checkArea(area);
  if (area.length < LIST_HEADER_SIZE) {
    throw new RangeError(
      `area must hold the ${LIST_HEADER_SIZE}-byte list header, received ${area.length} bytes`,
    );
  }
  const magic = readU32(area, 0);
  const count = readU32(area, 4);
  const metaSize = readU32(area, 8);
  const dataSize = readU32(area, 12);
  if (magic !== LIST_MAGIC) throw badMagic(magic);
  const room = area.length - LIST_HEADER_SIZE;
  if (entriesSize(count, metaSize, dataSize, room) < 0) {
    throw new RangeError(
      `list count must fit the area, received ${count} entries of ${metaSize} + ${dataSize} ` +
        `bytes (${needs(count, metaSize, dataSize)} bytes) in an area of ${area.length} bytes` +
        (count > MAX_LIST_COUNT ? ` (at most ${MAX_LIST_COUNT} entries)` : ""),
    );
  }
  return new List(area, count, metaSize, dataSize);
}

function badMagic(magic: number): RangeError {
  const hex = (n: number) => `0x${n.toString(16).padStart(8, "0")}`;
  if ((magic & 0xff_ffff) === (LIST_MAGIC & 0xff_ffff)) {
    return new RangeError(`list version must be ${LIST_MAGIC >>> 24}, received ${magic >>> 24}`);
  }
  return new RangeError(`list magic must be ${hex(LIST_MAGIC)}, received ${hex(magic)}`);
}
