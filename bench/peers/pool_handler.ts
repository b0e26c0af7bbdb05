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

/**
 * Deterministic CPU work: `rounds` steps of xorshift32 folded into a multiplicative hash. No
 * allocation, no memory traffic, nothing the compiler can skip (every step feeds the next).
 */
export function work(seed: number, rounds: number): number {
  let x = seed | 1;
  let h = 0x811c9dc5;
  for (let i = 0; i < rounds; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    h = Math.imul(h ^ x, 0x01000193);
  }
  return h >>> 0;
}

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
