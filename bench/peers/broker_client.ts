/**
 * A client of the socket broker (`bench/peers/broker.ts`): `register`, `post`, and `next`,
 * the same roles as an event queue's producer and consumer.
 *
 * @module
 */

/** Frame kind: a registration. */
export const REGISTER = 0;
/** Frame kind: a post (to the broker) or a notification (from it). */
export const POST = 1;
/** Bytes before a forwarded notification's data: length, kind, event, sequence. */
export const FORWARD_HEADER = 17;

/** A notification as the broker forwards it. */
export interface BrokerNotification {
  event: number;
  sequence: number;
  data: Uint8Array;
}

/** One connection to the broker. */
export class BrokerClient {
  #buf = new Uint8Array(1 << 16);
  #have = 0;
  #pending: BrokerNotification[] = [];
  #taken = 0;

  private constructor(readonly conn: Deno.UnixConn) {}

  /** Connects to the broker at `path`. */
  static async open(path: string): Promise<BrokerClient> {
    return new BrokerClient(await Deno.connect({ transport: "unix", path }));
  }

  async #send(kind: number, event: number, rest: Uint8Array): Promise<void> {
    const f = new Uint8Array(9 + rest.length);
    const v = new DataView(f.buffer);
    v.setUint32(0, f.length - 4, true);
    f[4] = kind;
    v.setUint32(5, event, true);
    f.set(rest, 9);
    for (let sent = 0; sent < f.length;) sent += await this.conn.write(f.subarray(sent));
  }

  /** Registers for `events` (none: every event). */
  register(events: number[]): Promise<void> {
    return this.#send(REGISTER, 0, new Uint8Array(new Uint32Array(events).buffer));
  }

  /** Posts a notification of `event`. */
  post(event: number, data: Uint8Array): Promise<void> {
    return this.#send(POST, event, data);
  }

  /** The next notification, read from the socket when none is held. */
  async next(): Promise<BrokerNotification> {
    while (this.#taken === this.#pending.length) {
      this.#pending = [];
      this.#taken = 0;
      const n = await this.conn.read(this.#buf.subarray(this.#have));
      if (n === null) throw new Error("the broker closed the connection");
      this.#have += n;
      let at = 0;
      while (this.#have - at >= 4) {
        const v = new DataView(this.#buf.buffer, at);
        const length = v.getUint32(0, true);
        if (this.#have - at < 4 + length) break;
        this.#pending.push({
          event: v.getUint32(5, true),
          sequence: Number(v.getBigUint64(9, true)),
          data: this.#buf.slice(at + FORWARD_HEADER, at + 4 + length),
        });
        at += 4 + length;
      }
      this.#buf.copyWithin(0, at, this.#have);
      this.#have -= at;
    }
    return this.#pending[this.#taken++]!;
  }

  /** Closes the connection. */
  close(): void {
    try {
      this.conn.close();
    } catch {
      // Closed already.
    }
  }
}
