/**
 * The pool example's handler module (see pool.ts): each pool worker imports it and runs its
 * `exec` for the commands handed to it. The server's own thread runs the same function for
 * commands that run inline, so both give the same answers.
 *
 * @module
 */

import type { ConnInfo, ExecResult, ServerCommand } from "shmcall";

/** What the server's `open` returns; a worker gets a structured clone of it. */
export interface Context {
  /** How many times to hash the input: the command's cost. */
  rounds: number;
}

/** Hashes the input `rounds` times over (FNV-1a, 32-bit) and answers the hash in 4 bytes. */
export function exec(
  { input, output }: ServerCommand,
  _conn: ConnInfo,
  context: Context,
): ExecResult {
  let hash = 0x811c9dc5;
  for (let round = 0; round < context.rounds; round++) {
    for (let i = 0; i < input.length; i++) hash = Math.imul(hash ^ input[i]!, 0x01000193);
  }
  new DataView(output.buffer, output.byteOffset, 4).setUint32(0, hash >>> 0, true);
  return { length: 4 };
}
