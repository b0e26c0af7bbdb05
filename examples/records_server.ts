/**
 * The records example's server peer: `deno run -A examples/records_server.ts <ic-id> <socket-dir>`.
 * Code 1 takes a list of order lines and answers a list of priced lines (see records.ts).
 * Prints `ready`, then serves until its stdin closes.
 *
 * @module
 */

import { serve } from "shmcall";
import { readList, writeList } from "../src/layout.ts";

/** Both lists: metadata { id: u32, quantity: u32, price or total: f64 }, data: a 24-byte name. */
const META = 16;
const NAME = 24;

const [icId, socketDir] = Deno.args;
if (icId === undefined || socketDir === undefined) {
  throw new Error("usage: records_server.ts <ic-id> <socket-dir>");
}

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.length);

await using _server = await serve(icId, {
  exec({ input, output }) {
    const orders = readList(input); // throws on a malformed list: the command fails, not us
    const lines = writeList(output, orders.count, META, NAME);
    for (let i = 0; i < orders.count; i++) {
      const order = view(orders.meta(i));
      const line = view(lines.meta(i));
      const quantity = order.getUint32(4, true);
      line.setUint32(0, order.getUint32(0, true), true);
      line.setUint32(4, quantity, true);
      line.setFloat64(8, quantity * order.getFloat64(8, true), true);
      lines.data(i).set(orders.data(i));
    }
    return { length: lines.byteLength };
  },
}, { socketDir });
console.log("ready");
for await (const _ of Deno.stdin.readable) { /* serve until stdin closes */ }
