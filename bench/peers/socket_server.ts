/**
 * The Unix-socket baseline of the bench suite, written the way a good Deno user would: frames
 * of a little-endian u32 length and that many bytes; every complete frame read is echoed, and
 * the echoes of one read go out in one write (so that pipelined requests are answered in
 * batches). `deno run -A bench/peers/socket_server.ts <socket-path>`; prints `ready`, and
 * serves until its stdin closes (its parent's end).
 *
 * @module
 */

const [path] = Deno.args;
if (path === undefined) throw new Error("usage: socket_server.ts <socket-path>");
const listener = Deno.listen({ transport: "unix", path });
console.log("ready");

/** Bytes of input held: what a read brought, not yet a whole frame. */
class Frames {
  #buf = new Uint8Array(1 << 16);
  #start = 0;
  #end = 0;

  /** Room to read into (grown so that a whole frame of the length seen fits). */
  room(): Uint8Array {
    if (this.#start > 0 && this.#start === this.#end) this.#start = this.#end = 0;
    const need = this.#pendingLength();
    if (this.#buf.length - this.#start < need || this.#end === this.#buf.length) {
      const grown = new Uint8Array(Math.max(this.#buf.length, need, (this.#end - this.#start) * 2));
      grown.set(this.#buf.subarray(this.#start, this.#end));
      this.#end -= this.#start;
      this.#start = 0;
      this.#buf = grown;
    }
    return this.#buf.subarray(this.#end);
  }

  /** `n` bytes were read into {@linkcode room}. */
  filled(n: number): void {
    this.#end += n;
  }

  /** The next complete frame (header included), or undefined. */
  next(): Uint8Array | undefined {
    const len = this.#pendingLength();
    if (len === 0 || this.#end - this.#start < len) return undefined;
    const frame = this.#buf.subarray(this.#start, this.#start + len);
    this.#start += len;
    return frame;
  }

  /** The whole length (header included) of the frame at the start, or 0 if unknown yet. */
  #pendingLength(): number {
    if (this.#end - this.#start < 4) return 0;
    const b = this.#buf;
    const s = this.#start;
    return 4 + (b[s]! | b[s + 1]! << 8 | b[s + 2]! << 16 | b[s + 3]! << 24) >>> 0;
  }
}

async function serve(conn: Deno.UnixConn): Promise<void> {
  const frames = new Frames();
  let out = new Uint8Array(1 << 16);
  try {
    while (true) {
      const n = await conn.read(frames.room());
      if (n === null) break;
      frames.filled(n);
      let used = 0;
      for (let f = frames.next(); f !== undefined; f = frames.next()) {
        if (out.length < used + f.length) {
          const grown = new Uint8Array(Math.max(out.length * 2, used + f.length));
          grown.set(out.subarray(0, used));
          out = grown;
        }
        out.set(f, used);
        used += f.length;
      }
      for (let sent = 0; sent < used;) sent += await conn.write(out.subarray(sent, used));
    }
  } catch {
    // The client went away mid-frame: nothing to answer.
  } finally {
    conn.close();
  }
}

void (async () => {
  for await (const conn of listener) void serve(conn as Deno.UnixConn);
})();
for await (const _ of Deno.stdin.readable) { /* serve until stdin closes */ }
Deno.exit(0);
