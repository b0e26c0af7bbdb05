/**
 * The event queues' baseline (bench/README.md, "Event queues"): a notification broker over Unix
 * sockets, written the way a good Deno user would. Producers and consumers connect to it; it
 * numbers each post and forwards it to every connection registered for its event, and what one
 * read brought goes out to each consumer in one write.
 *
 * Frames, both ways: a little-endian u32 length, then `kind u8`, `event u32`, and the rest. Kind
 * 0 registers (the rest: u32 event numbers; none means every event), kind 1 posts (the rest: the
 * data). A forwarded notification is kind 1 with `sequence u64` before the data.
 *
 * `deno run -A bench/peers/broker.ts <socket-path>`; prints `ready`, and serves until killed.
 *
 * @module
 */

import { FORWARD_HEADER, REGISTER } from "./broker_client.ts";

const [path] = Deno.args;
if (path === undefined) throw new Error("usage: broker.ts <socket-path>");
const listener = Deno.listen({ transport: "unix", path });
console.log("ready");

interface Subscriber {
  conn: Deno.UnixConn;
  all: boolean;
  events: Set<number>;
  out: Uint8Array[];
}

const subscribers = new Set<Subscriber>();
let sequence = 0;

/** Writes what a read queued for `s` in one write. */
async function flush(s: Subscriber): Promise<void> {
  if (s.out.length === 0) return;
  const total = s.out.reduce((n, b) => n + b.length, 0);
  const buf = new Uint8Array(total);
  let at = 0;
  for (const b of s.out) {
    buf.set(b, at);
    at += b.length;
  }
  s.out = [];
  try {
    for (let sent = 0; sent < buf.length;) sent += await s.conn.write(buf.subarray(sent));
  } catch {
    subscribers.delete(s);
  }
}

/** The frame forwarded for one post. */
function forward(event: number, data: Uint8Array): Uint8Array {
  const f = new Uint8Array(FORWARD_HEADER + data.length);
  const v = new DataView(f.buffer);
  v.setUint32(0, f.length - 4, true);
  f[4] = 1;
  v.setUint32(5, event, true);
  v.setBigUint64(9, BigInt(sequence), true);
  f.set(data, FORWARD_HEADER);
  return f;
}

async function serve(conn: Deno.UnixConn): Promise<void> {
  const me: Subscriber = { conn, all: false, events: new Set(), out: [] };
  subscribers.add(me);
  let buf = new Uint8Array(1 << 16);
  let have = 0;
  try {
    while (true) {
      if (have === buf.length) {
        const grown = new Uint8Array(buf.length * 2);
        grown.set(buf);
        buf = grown;
      }
      const n = await conn.read(buf.subarray(have));
      if (n === null) break;
      have += n;
      let at = 0;
      const touched = new Set<Subscriber>();
      while (have - at >= 4) {
        const view = new DataView(buf.buffer, at);
        const length = view.getUint32(0, true);
        if (have - at < 4 + length) break;
        const event = view.getUint32(5, true);
        const rest = buf.subarray(at + 9, at + 4 + length);
        if (buf[at + 4] === REGISTER) {
          if (rest.length === 0) me.all = true;
          const words = new DataView(rest.buffer, rest.byteOffset, rest.length);
          for (let i = 0; i + 4 <= rest.length; i += 4) me.events.add(words.getUint32(i, true));
        } else {
          sequence++;
          let frame: Uint8Array | undefined;
          for (const s of subscribers) {
            if (!s.all && !s.events.has(event)) continue;
            s.out.push(frame ??= forward(event, rest));
            touched.add(s);
          }
        }
        at += 4 + length;
      }
      buf.copyWithin(0, at, have);
      have -= at;
      await Promise.all([...touched].map(flush));
    }
  } catch {
    // The peer went away mid-read.
  }
  subscribers.delete(me);
  try {
    conn.close();
  } catch {
    // Closed already.
  }
}

for await (const conn of listener) void serve(conn as Deno.UnixConn);
