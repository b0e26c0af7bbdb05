/**
 * A client peer that floods a server with synchronous commands:
 * `deno run -A tests/peers/flood.ts <ic-id> <socket-dir> <seconds>`. Prints `ready` once
 * connected, then executes code 1 back to back, never yielding to its event loop, for
 * `seconds` (or until killed), and prints `done <count>`.
 *
 * @module
 */

import { connect } from "../../mod.ts";

const [icId, socketDir, seconds] = Deno.args;
if (icId === undefined || socketDir === undefined || seconds === undefined) {
  throw new Error("usage: flood.ts <ic-id> <socket-dir> <seconds>");
}
using client = await connect(icId, { socketDir });
console.log("ready");
const end = Date.now() + Number(seconds) * 1000;
const input = new Uint8Array(8);
let count = 0;
while (Date.now() < end) {
  for (let i = 0; i < 1000; i++) client.execute(1, { input, outputLength: 8 });
  count += 1000;
}
console.log(`done ${count}`);
