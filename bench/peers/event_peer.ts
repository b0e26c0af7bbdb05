/**
 * A peer of the event-queue bench (`bench/events.ts`), on an event queue (`shm`) or on the socket
 * broker (`broker`): `deno run -A bench/peers/event_peer.ts <shm|broker> <role> <where> [arg]`,
 * where `where` is `<socket-dir>/<queue-id>` for a queue and the broker's socket path otherwise.
 * It prints `ready` once registered, and times with the bench's clock (`CLOCK_MONOTONIC`, which
 * every process of the machine shares).
 *
 * Roles:
 * - `host`: hosts the queue (shm only), until killed.
 * - `echo <n>`: takes `n` notifications of event 1, each holding its post's time, and posts each
 *   back as event 2 with the time it was retrieved added.
 * - `count`: counts the notifications of every event until one of {@linkcode END}, then prints
 *   `done` and JSON: how many, how many its list dropped, when it retrieved the first (ms), and
 *   a last time (ms) with how many it had retrieved by then (`timed`: the clock is read once
 *   every 64).
 * - `slow`: takes a notification, then waits a millisecond, until killed.
 * - `drain <ms>`: once its list holds notifications, retrieves whatever is listed in a
 *   synchronous loop for `ms`, announcing it with `draining`; then, announced with `baseline`,
 *   makes as many notifications' objects from memory of its own and waits out another `ms`;
 *   then prints `done` and how many it retrieved.
 *
 * @module
 */

import { openConsumer, openProducer, serveEventQueue } from "../../mod.ts";
import { clock } from "../percentiles.ts";
import { BrokerClient } from "./broker_client.ts";

/** The event that ends a `count` peer's run. */
export const END = 99;

/**
 * The list of a queue's consumer: 16,384 notifications (4 MiB), room for the producer's bursts
 * (a broker's consumer has its socket's buffer and the broker's queue of writes).
 */
export const LIST_CAPACITY = 16_384;

/** The transports compared: an event queue, or the socket broker. */
export type Kind = "shm" | "broker";

/** A queue's `where`, `<socket-dir>/<queue-id>`: its socket directory and id. */
export function queueAt(where: string): { socketDir: string; id: string } {
  const slash = where.lastIndexOf("/");
  return { socketDir: where.slice(0, slash), id: where.slice(slash + 1) };
}

/** A process's producer and consumer operations, whichever the transport. */
export interface Side {
  post(event: number, data: Uint8Array): void | Promise<void>;
  next(): Promise<{ event: number; data: Uint8Array }>;
  /** Notifications the consumer's list dropped (the broker drops none). */
  dropped(): number;
  close(): void;
}

/**
 * Opens a side at `where`: a consumer registered for `events` (none when undefined), and a
 * producer when `produce` (the broker's one connection does both).
 */
export async function openSide(
  kind: Kind,
  where: string,
  events: number[] | "all" | undefined,
  produce: boolean,
): Promise<Side> {
  if (kind === "broker") {
    const c = await BrokerClient.open(where);
    if (events !== undefined) await c.register(events === "all" ? [] : events);
    return {
      post: (e, d) => c.post(e, d),
      next: () => c.next(),
      dropped: () => 0,
      close: () => c.close(),
    };
  }
  const { socketDir, id } = queueAt(where);
  const consumer = events === undefined
    ? undefined
    : await openConsumer(id, { socketDir, events, capacity: LIST_CAPACITY });
  const producer = produce ? await openProducer(id, { socketDir }) : undefined;
  return {
    post: (e, d) => producer!.post(e, d),
    next: () => consumer!.next(),
    dropped: () => consumer?.stats().dropped ?? 0,
    close: () => {
      consumer?.close();
      producer?.close();
    },
  };
}

async function main(): Promise<void> {
  const [kind, role, where, arg] = Deno.args;
  if ((kind !== "shm" && kind !== "broker") || role === undefined || where === undefined) {
    throw new Error("usage: event_peer.ts <shm|broker> <role> <where> [arg]");
  }

  if (role === "host") {
    const { socketDir, id } = queueAt(where);
    await serveEventQueue(id, { socketDir });
    console.log("ready");
  } else if (role === "echo") {
    const side = await openSide(kind, where, [1], true);
    console.log("ready");
    const times = new Float64Array(2);
    const out = new Uint8Array(times.buffer);
    for (let i = 0; i < Number(arg); i++) {
      const n = await side.next();
      times[0] = new DataView(n.data.buffer, n.data.byteOffset, 8).getFloat64(0, true);
      times[1] = clock();
      await side.post(2, out);
    }
  } else if (role === "count") {
    const side = await openSide(kind, where, "all", false);
    console.log("ready");
    let n = 0;
    let timed = 0;
    let first = 0;
    let last = 0;
    while (true) {
      const got = await side.next();
      if (got.event === END) break;
      // The clock once every 64 notifications (read on each, it took a twentieth of a busy
      // consumer's time, profiled): `last` is the latest reading, `timed` how many had come by
      // then.
      if ((n++ & 63) === 0) {
        last = clock();
        timed = n;
        if (n === 1) first = last;
      }
    }
    console.log(`done ${JSON.stringify({ n, timed, dropped: side.dropped(), first, last })}`);
    Deno.exit(0);
  } else if (role === "slow") {
    const side = await openSide(kind, where, "all", false);
    console.log("ready");
    while (true) {
      await side.next();
      await new Promise((r) => setTimeout(r, 1));
    }
  } else if (role === "drain" && kind === "shm") {
    const { socketDir, id } = queueAt(where);
    const consumer = await openConsumer(id, { socketDir, events: "all", capacity: 2048 });
    console.log("ready");
    await consumer.next();
    console.log("draining");
    const ms = Number(arg);
    let until = clock() + ms;
    let n = 0;
    while (clock() < until) n += consumer.retrieve().length;
    // The baseline: as many notifications' objects, made from memory of this process's own,
    // in batches of 64 as `next` takes them; then the same wait on the clock.
    console.log("baseline");
    until = clock() + ms;
    const own = new Uint8Array(256 * 64).fill(7);
    const made: { event: number; sequence: number; data: Uint8Array }[] = [];
    for (let left = n; left > 0; left -= 64) {
      const batch = Math.min(64, left);
      const data = new Uint8Array(64 * batch);
      made.length = 0;
      for (let i = 0; i < batch; i++) {
        data.set(own.subarray(i * 256, i * 256 + 64), i * 64);
        made.push({ event: 1, sequence: left + i, data: data.subarray(i * 64, i * 64 + 64) });
      }
    }
    while (clock() < until);
    console.log(`done ${JSON.stringify({ n })}`);
    Deno.exit(0);
  } else {
    throw new Error(`no role '${role}' for ${kind}`);
  }
}

if (import.meta.main) await main();
