/**
 * FNV-1a, 64 bits (Fowler, Noll, Vo): the checksum both sides of the tests compute.
 *
 * @module
 */

/** The FNV-1a-64 hash of `bytes`. */
export function fnv1a64(bytes: Uint8Array): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) h = BigInt.asUintN(64, (h ^ BigInt(b)) * 0x100000001b3n);
  return h;
}
