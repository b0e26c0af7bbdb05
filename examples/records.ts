/**
 * Sends a list of records both ways without a serialization library: the client builds a
 * list of order lines in the command's input area (shared memory) with `writeList`, a server
 * in another process reads it with `readList` and answers the priced lines in its output
 * area, and the client reads those in place. Each record is fixed-size: metadata
 * `{ id: u32, quantity: u32, price: f64 }` and a 24-byte UTF-8 name as data.
 *
 * `deno run -A examples/records.ts`
 *
 * @module
 */

import { connect } from "shmcall";
import { listSize, readList, writeList } from "../src/layout.ts";
import { Peer, tempSocketDir } from "../tests/peers/spawn.ts";

const PRICE = 1;
const META = 16;
const NAME = 24;

const orders = [
  { id: 1, quantity: 4, price: 2.5, name: "widget" },
  { id: 2, quantity: 1, price: 19.99, name: "gizmo, large" },
  { id: 3, quantity: 12, price: 0.35, name: "ünïcode sprocket" },
];

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.length);
const utf8 = new TextEncoder();
const text = new TextDecoder();

using dir = tempSocketDir();
const server = await Peer.start(Deno.execPath(), [
  "run",
  "-A",
  decodeURIComponent(new URL("./records_server.ts", import.meta.url).pathname),
  "records",
  dir.path,
]);
try {
  using client = await connect("records", { socketDir: dir.path });
  // No `completion`: a synchronous call, allowed because the server is another process.
  client.execute(PRICE, {
    inputLength: listSize(orders.length, META, NAME),
    outputLength: listSize(orders.length, META, NAME),
    inputPrepare(area) {
      const list = writeList(area, orders.length, META, NAME);
      orders.forEach((order, i) => {
        const meta = view(list.meta(i));
        meta.setUint32(0, order.id, true);
        meta.setUint32(4, order.quantity, true);
        meta.setFloat64(8, order.price, true);
        // The area holds what the slot's last command left: clear before writing a name.
        utf8.encodeInto(order.name, list.data(i).fill(0));
      });
    },
    outputPost(area) {
      const lines = readList(area);
      let sum = 0;
      console.log(`server pid ${server.pid} priced ${lines.count} records:`);
      for (const [meta, data] of lines) {
        const line = view(meta);
        const [id, quantity] = [line.getUint32(0, true), line.getUint32(4, true)];
        const name = text.decode(data).replace(/\0+$/, "");
        const total = line.getFloat64(8, true);
        sum += total;
        console.log(`  #${id} ${name.padEnd(NAME)} × ${quantity} = ${total.toFixed(2)}`);
      }
      console.log(`total ${sum.toFixed(2)}`);
    },
  });
} finally {
  await server.kill();
}
