/**
 * The client side of the Unix-socket baseline, shared by the demo and the benches: frames of a
 * little-endian u32 length and that many bytes, one request and its echo at a time.
 *
 * @module
 */

/**
 * A Unix socket to `path`, tried again (every millisecond, for up to 10 s) while the server's
 * listen backlog is full: a non-blocking connect then fails with EAGAIN, where a TCP one would
 * wait, and a server that accepts one connection per turn of its event loop falls behind
 * connects that come 64 at a time.
 */
export async function connectUnix(path: string): Promise<Deno.UnixConn> {
  for (let tries = 0;; tries++) {
    try {
      return await Deno.connect({ transport: "unix", path });
    } catch (e) {
      if (!(e instanceof Deno.errors.WouldBlock) || tries === 10_000) throw e;
      await new Promise((r) => setTimeout(r, 1));
    }
  }
}

/** One connection's request frame and room for its echo, of `size` bytes each. */
export class SocketEcho {
  /** The whole request: the length, then the body. */
  readonly frame: Uint8Array;
  /** The request's bytes, to fill before each round trip. */
  readonly body: Uint8Array;
  /** The echo's bytes, valid after each round trip. */
  readonly echo: Uint8Array;
  readonly #reply: Uint8Array;
  readonly #conn: Deno.Conn;

  constructor(conn: Deno.Conn, size: number) {
    this.#conn = conn;
    this.frame = new Uint8Array(4 + size);
    new DataView(this.frame.buffer).setUint32(0, size, true);
    this.body = this.frame.subarray(4);
    this.#reply = new Uint8Array(4 + size);
    this.echo = this.#reply.subarray(4);
  }

  /** Writes the whole frame, then reads the whole reply. */
  async roundTrip(): Promise<void> {
    const frame = this.frame;
    for (let sent = 0; sent < frame.length;) sent += await this.#conn.write(frame.subarray(sent));
    const reply = this.#reply;
    for (let got = 0; got < reply.length;) {
      const n = await this.#conn.read(reply.subarray(got));
      if (n === null) throw new Error("the socket server closed the connection");
      got += n;
    }
  }
}
