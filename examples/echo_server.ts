/**
 * The demo's server peer: `deno run -A examples/echo_server.ts <ic-id> <socket-dir>`.
 * Code 1 echoes the input; code 2 answers the FNV-1a-64 checksum of the input with status 7.
 * Prints `ready`, then serves until its stdin closes.
 *
 * @module
 */

import { serve } from "shmcall";
import { fnv1a64 } from "../tests/peers/fnv.ts";

const [icId, socketDir] = Deno.args;
if (icId === undefined || socketDir === undefined) {
  throw new Error("usage: echo_server.ts <ic-id> <socket-dir>");
}

await using _server = await serve(icId, {
  exec({ code, input, output }) {
    if (code === 2) {
      new DataView(output.buffer, output.byteOffset, 8).setBigUint64(0, fnv1a64(input), true);
      return { status: 7, length: 8 };
    }
    // A subarray only when the output is shorter: every object made per command is garbage
    // the collector must stop for.
    output.set(input.length <= output.length ? input : input.subarray(0, output.length));
    return { length: Math.min(input.length, output.length) };
  },
}, { socketDir });
console.log("ready");
for await (const _ of Deno.stdin.readable) { /* serve until stdin closes */ }
