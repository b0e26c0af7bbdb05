/**
 * The pool bench's handler module (`bench/peers/pool_server.ts` serves it inline, or in a pool
 * of workers that load it): the same `exec` either way.
 *
 * Operation codes: {@linkcode ECHO} echoes the input; {@linkcode WORK} is CPU-bound pure
 * JavaScript — its input is two little-endian u32 (a seed and a number of rounds), its output
 * the u32 {@linkcode work} computes from them, which the client checks.
 *
 * @module
 */

import type { ConnInfo, ExecResult, ServerCommand } from "../../mod.ts";

/** Echoes the input. */
export const ECHO = 1;
/** Runs {@linkcode work} over the input's seed and rounds. */
export const WORK = 3;

/** Unsigned LEB128, as the WebAssembly binary format writes sizes. */
function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    const low = n & 0x7f;
    n >>>= 7;
    out.push(n === 0 ? low : low | 0x80);
  } while (n !== 0);
  return out;
}

/** Signed LEB128, as the WebAssembly binary format writes `i32.const`. */
function sleb(n: number): number[] {
  const out: number[] = [];
  while (true) {
    const low = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (low & 0x40) === 0) || (n === -1 && (low & 0x40) !== 0)) {
      out.push(low);
      return out;
    }
    out.push(low | 0x80);
  }
}

/**
 * The module exporting `work(seed: i32, rounds: i32) -> i32`, in the binary format of the
 * WebAssembly core specification (sections 5.4 "Instructions" and 5.5 "Modules"):
 *
 * ```text
 * x = seed | 1; h = 0x811c9dc5
 * for (i = 0; i < rounds; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; h = (h ^ x) * 0x01000193 }
 * return h
 * ```
 */
const WORK_WASM: Uint8Array<ArrayBuffer> = (() => {
  const [i32, get, set, konst, xor] = [0x7f, 0x20, 0x21, 0x41, 0x73];
  const [seed, rounds, x, h, i] = [0, 1, 2, 3, 4];
  const shiftIn = (by: number, shift: number) => [get, x, get, x, konst, by, shift, xor, set, x];
  const body = [
    ...[1, 3, i32], // locals: x, h, i
    ...[get, seed, konst, 1, 0x72, set, x], // x = seed | 1
    ...[konst, ...sleb(0x811c9dc5 | 0), set, h],
    ...[0x02, 0x40, 0x03, 0x40], // block, loop
    ...[get, i, get, rounds, 0x4e, 0x0d, 1], // i >= rounds (signed): leave the block
    ...shiftIn(13, 0x74), // shl
    ...shiftIn(17, 0x76), // shr_u
    ...shiftIn(5, 0x74),
    ...[get, h, get, x, xor, konst, ...sleb(0x01000193), 0x6c, set, h], // mul
    ...[get, i, konst, 1, 0x6a, set, i], // add
    ...[0x0c, 0, 0x0b, 0x0b], // br loop; end loop; end block
    ...[get, h, 0x0b],
  ];
  const section = (id: number, content: number[]) => [id, ...uleb(content.length), ...content];
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0], // "\0asm", version 1
    ...section(1, [1, 0x60, 2, i32, i32, 1, i32]), // type 0: (i32, i32) -> i32
    ...section(3, [1, 0]), // function 0 has type 0
    ...section(7, [1, 4, 0x77, 0x6f, 0x72, 0x6b, 0, 0]), // export "work": function 0
    ...section(10, [1, ...uleb(body.length), ...body]),
  ]);
})();

/**
 * Deterministic CPU work: `rounds` steps of xorshift32 folded into a multiplicative hash. No
 * allocation, no memory traffic, nothing the compiler can skip (every step feeds the next).
 *
 * It runs as WebAssembly, not JavaScript, so that its cost is the same in every process and
 * every worker whatever V8 makes of the handler around it. As JavaScript, the loop took 0.72 ms
 * a call in one process until, after about 750 calls, Maglev compiled `exec` with the loop
 * inlined, and 1.35 ms from then on (2026-12-03, `--trace-opt`): the bench measured when each
 * thread's tier changed rather than what the pool costs. Compiled WebAssembly is not inlined
 * into JavaScript and never deoptimizes; it took 0.64–0.71 ms a call at 250,000 rounds over 2,000 calls.
 */
export const work: (seed: number, rounds: number) => number = (() => {
  const exports = new WebAssembly.Instance(new WebAssembly.Module(WORK_WASM)).exports;
  const run = exports.work as (seed: number, rounds: number) => number;
  return (seed, rounds) => run(seed | 0, rounds | 0) >>> 0;
})();

export function exec(
  { code, input, output }: ServerCommand,
  _conn: ConnInfo,
  _context: unknown,
): ExecResult {
  if (code === WORK) {
    const at = new DataView(input.buffer, input.byteOffset, 8);
    const result = work(at.getUint32(0, true), at.getUint32(4, true));
    new DataView(output.buffer, output.byteOffset, 4).setUint32(0, result, true);
    return { length: 4 };
  }
  output.set(input.length <= output.length ? input : input.subarray(0, output.length));
  return { length: Math.min(input.length, output.length) };
}
