/**
 * Event queues across hosts: a host with the `nats` option (its **bridge**) takes posts and
 * consumers from other hosts through NATS; {@linkcode NatsProducer} and {@linkcode NatsConsumer}
 * are their ends there.
 *
 * The bridge stands in for them on the host's machine: a remote producer's posts are posted by a
 * local producer of the bridge, in the order they came, and each remote consumer has a local
 * consumer of the bridge, with the same registrations, whose notifications the bridge sends on
 * in batches. So the host alone numbers and orders posts and applies registrations, as for local
 * peers; what NATS adds is the way between (docs/events.md, "Across hosts").
 *
 * Liveness goes both ways through one ping: every remote end asks the host's bridge every
 * {@linkcode PING_MS}; no responder means the host is gone, and a remote consumer not heard of
 * for {@linkcode SILENCE_MS} is closed by the bridge.
 *
 * @module
 */

import { IpcError } from "./errors.ts";
import {
  checkSubscribed,
  connectNats,
  maxPayload,
  type NatsConnection,
  type NatsMsg,
  type NatsOptions,
  type NatsSubscription,
  subjects,
} from "./nats.ts";
import {
  decodeQueue,
  decodeReply,
  encodeAnswer,
  encodeNotes,
  encodeQueue,
  NATS_FRAME,
  newSession,
  type NoteRecord,
  parseNotes,
  parsePosts,
  parseRegistration,
  type Refusal,
  sessionName,
  writePost,
} from "./nats_frame.ts";
import {
  checkPost,
  type Consumer,
  type ConsumerStats,
  type Notification,
  notificationsOf,
  type Producer,
  registration,
} from "./queue.ts";
import { Status, statusName } from "./status.ts";

/** How often a remote end pings the host's bridge (ms). */
export const PING_MS = 1_000;
/** A remote consumer the bridge has not heard of for this long is closed (ms). */
export const SILENCE_MS = 10_000;
/** The remote producers whose count of posts the host keeps (the oldest go beyond it). */
const MAX_PRODUCERS_KEPT = 4096;

/**
 * What a count that moved from `before` to `now` (both mod 2^32) skipped; 0 for a count that went
 * back (a peer that lies), which a gap never makes.
 */
function gap(before: number, now: number): number {
  const d = (now - before) >>> 0;
  return d < 2 ** 31 ? d : 0;
}

/** How long opening a remote end waits for the host's answer (ms). */
const OPEN_TIMEOUT = 5_000;
/** The most notifications one notes frame carries. */
const NOTES_MOST = 1024;
/**
 * The most consumers on other hosts one queue takes: each has a list at the host, so anyone who
 * may publish on the queue's subjects could otherwise open them without end.
 */
export const MAX_REMOTE_CONSUMERS = 1024;

/** A {@linkcode NatsConsumer}'s subscription to its notes (internal). */
const notes: unique symbol = Symbol("shmcall nats notes");

/** What the bridge needs of the local queue: its own producer and consumers. */
export interface LocalQueue {
  maxData: number;
  maxCapacity: number;
  openProducer(): Promise<Producer>;
  openConsumer(events: "all" | number[], capacity: number): Promise<Consumer>;
}

/** The subjects of queue `queueId` on NATS. */
function queueSubjects(queueId: string) {
  subjects(queueId);
  const base = `shmcall.q.${queueId}`;
  return {
    ping: `${base}.ping`,
    open: `${base}.open`,
    register: `${base}.register`,
    goodbye: `${base}.goodbye`,
    posts: `${base}.posts`,
    notes: (session: string) => `${base}.c.${session}`,
  };
}

const NOTHING = new Uint8Array(0);
const NO_SESSION = new Uint8Array(NATS_FRAME.SESSION);

/** A reply of `status` to a request, its word carrying a number when needed. */
function answer(msg: NatsMsg, status: number, word = 0): void {
  try {
    msg.respond(encodeAnswer(status, word, NOTHING));
  } catch {
    // The NATS connection closed: the requester times out.
  }
}

/** Whether a failed NATS request found no responder. */
function noResponders(e: unknown): boolean {
  const f = (e as { isNoResponders?: () => boolean })?.isNoResponders;
  return typeof f === "function" && f.call(e);
}

/** Sends `frame` to `subject` and reads the reply's status and word. */
async function ask(
  nc: NatsConnection,
  subject: string,
  frame: Uint8Array,
  timeout: number,
): Promise<{ status: number; word: number }> {
  const reply = await nc.request(subject, frame, { timeout });
  const a = decodeReply(reply.data);
  if ("why" in a) throw new IpcError(a.status, `${a.why} (${statusName(a.status)})`);
  return a;
}

// -------------------------------------------------------------------------------------------
// The host's side

interface RemoteConsumer {
  session: string;
  local: Consumer;
  subject: string;
  /** Notifications sent so far (mod 2^32). */
  sent: number;
  /** When it last pinged (`performance.now()`). */
  heard: number;
}

/** The host's end of its queue on NATS (see the module doc). */
export class QueueBridge {
  readonly #nc: NatsConnection;
  readonly #local: LocalQueue;
  readonly #subs: NatsSubscription[] = [];
  readonly #consumers = new Map<string, RemoteConsumer>();
  /** Sessions whose open is under way. */
  readonly #opening = new Set<string>();
  /** The remote consumers' pumps, each until its local consumer ended and it sent what it had. */
  readonly #pumps = new Set<Promise<void>>();
  /** What each remote producer posted so far (mod 2^32), to count what NATS lost. */
  readonly #posted = new Map<string, number>();
  readonly #subjects: ReturnType<typeof queueSubjects>;
  readonly #sweep: ReturnType<typeof setInterval>;
  #producer: Producer | undefined;
  #closed = false;
  /** Posts of remote producers that NATS lost on the way. */
  lost = 0;

  private constructor(queueId: string, nc: NatsConnection, local: LocalQueue) {
    this.#nc = nc;
    this.#local = local;
    const s = this.#subjects = queueSubjects(queueId);
    const on = (subject: string, take: (msg: NatsMsg) => void) =>
      this.#subs.push(nc.subscribe(subject, {
        callback: (error, msg) => {
          if (error === null && !this.#closed) take(msg);
        },
      }));
    on(s.ping, (msg) => this.#ping(msg));
    on(s.open, (msg) => void this.#open(msg));
    on(s.register, (msg) => this.#register(msg));
    on(s.goodbye, (msg) => this.#goodbye(msg));
    on(s.posts, (msg) => this.#posts(msg));
    this.#sweep = setInterval(() => this.#closeSilent(), PING_MS);
  }

  /**
   * Connects to NATS, makes sure no other host serves `queueId` there, and subscribes.
   *
   * @throws {IpcError} `ALREADY_SERVED` when another host of `queueId` answers on NATS.
   */
  static async start(queueId: string, nats: NatsOptions, local: LocalQueue): Promise<QueueBridge> {
    const nc = await connectNats(nats, `shmcall event queue ${queueId}`);
    try {
      const s = queueSubjects(queueId);
      try {
        await ask(nc, s.ping, encodeQueue(NATS_FRAME.QUEUE_PING, 0, 0, 0, NO_SESSION), 1_000);
        throw new IpcError(
          Status.ALREADY_SERVED,
          `the event queue '${queueId}' is hosted on NATS already, by another process (ALREADY_SERVED)`,
        );
      } catch (e) {
        if (e instanceof IpcError) throw e;
        // No responder (or none in time): this host is the queue's.
      }
      const bridge = new QueueBridge(queueId, nc, local);
      try {
        await nc.flush();
        await checkSubscribed(bridge.#subs, `the event queue '${queueId}'`);
        bridge.#producer = await local.openProducer();
      } catch (e) {
        bridge.stop();
        throw e;
      }
      return bridge;
    } catch (e) {
      await nc.close().catch(() => {});
      throw e;
    }
  }

  #ping(msg: NatsMsg): void {
    const f = decodeQueue(msg.data, NATS_FRAME.QUEUE_PING);
    if ("why" in f) return answer(msg, f.status);
    const c = this.#consumers.get(f.session);
    if (c !== undefined) c.heard = performance.now();
    answer(msg, 0);
  }

  async #open(msg: NatsMsg): Promise<void> {
    const f = decodeQueue(msg.data, NATS_FRAME.QUEUE_OPEN);
    if ("why" in f) return answer(msg, f.status);
    const events = parseRegistration(f.payload);
    if (!Array.isArray(events) && events !== "all") return answer(msg, events.status);
    if (this.#consumers.has(f.session) || this.#opening.has(f.session)) {
      return answer(msg, Status.ALREADY_SERVED);
    }
    if (this.#consumers.size + this.#opening.size >= MAX_REMOTE_CONSUMERS) {
      return answer(msg, Status.PERMISSION_DENIED);
    }
    const capacity = Math.min(Math.max(1, f.a), this.#local.maxCapacity);
    let local: Consumer;
    this.#opening.add(f.session);
    try {
      local = await this.#local.openConsumer(events, capacity);
    } catch (e) {
      return answer(msg, e instanceof IpcError ? e.status : Status.INVALID_ARGUMENT);
    } finally {
      this.#opening.delete(f.session);
    }
    if (this.#closed) {
      local.close();
      return answer(msg, Status.PEER_TERMINATED);
    }
    const c: RemoteConsumer = {
      session: f.session,
      local,
      subject: this.#subjects.notes(f.session),
      sent: 0,
      heard: performance.now(),
    };
    this.#consumers.set(f.session, c);
    answer(msg, 0, capacity);
    const pumped = this.#pump(c);
    this.#pumps.add(pumped);
    void pumped.finally(() => this.#pumps.delete(pumped));
  }

  /** Sends a remote consumer's notifications on, in batches, until its local consumer ends. */
  async #pump(c: RemoteConsumer): Promise<void> {
    const most = Math.min(
      NOTES_MOST,
      Math.floor(
        (maxPayload(this.#nc) - NATS_FRAME.HEADER - NATS_FRAME.NOTES_DROPPED) /
          (NATS_FRAME.NOTE_RECORD + this.#local.maxData),
      ),
    );
    while (true) {
      let batch: Notification[];
      try {
        const first = await c.local.next();
        batch = [first, ...c.local.retrieve(most - 1)];
      } catch (e) {
        // The host closed (its lists' last notifications were sent on first): the remote
        // consumer is told. Closed by its goodbye or its silence: no one is left to tell.
        if (e instanceof IpcError && e.status !== Status.CLOSED) {
          this.#send(c, [], NATS_FRAME.END);
        }
        return;
      }
      this.#send(c, batch, 0);
    }
  }

  #send(c: RemoteConsumer, notes: readonly NoteRecord[], flags: number): void {
    const payload = encodeNotes(c.local.stats().dropped, notes);
    const frame = encodeQueue(
      NATS_FRAME.QUEUE_NOTES,
      flags,
      notes.length,
      c.sent,
      NO_SESSION,
      payload,
    );
    c.sent = (c.sent + notes.length) >>> 0;
    try {
      this.#nc.publish(c.subject, frame);
    } catch {
      // The NATS connection closed: the consumer learns it from its pings.
    }
  }

  #register(msg: NatsMsg): void {
    const f = decodeQueue(msg.data, NATS_FRAME.QUEUE_REGISTER, NATS_FRAME.UNREGISTER);
    if ("why" in f) return answer(msg, f.status);
    const c = this.#consumers.get(f.session);
    if (c === undefined) return answer(msg, Status.NOT_FOUND);
    const events = parseRegistration(f.payload);
    if (!Array.isArray(events) && events !== "all") return answer(msg, events.status);
    c.heard = performance.now();
    const list = events === "all" ? ["all" as const] : events;
    try {
      if ((f.flags & NATS_FRAME.UNREGISTER) !== 0) c.local.unregister(...list);
      else c.local.register(...list);
      answer(msg, 0);
    } catch (e) {
      answer(msg, e instanceof IpcError ? e.status : Status.INVALID_ARGUMENT);
    }
  }

  #goodbye(msg: NatsMsg): void {
    const f = decodeQueue(msg.data, NATS_FRAME.QUEUE_GOODBYE);
    if ("why" in f) return;
    this.#posted.delete(f.session);
    const c = this.#consumers.get(f.session);
    if (c === undefined) return;
    this.#consumers.delete(f.session);
    c.local.close();
  }

  #posts(msg: NatsMsg): void {
    const f = decodeQueue(msg.data, NATS_FRAME.QUEUE_POSTS);
    if ("why" in f) return;
    const posts = parsePosts(f.payload, f.a, this.#local.maxData);
    if (!Array.isArray(posts)) return;
    // `b` counts the producer's posts before these: a gap is what NATS lost.
    this.lost += gap(this.#posted.get(f.session) ?? 0, f.b);
    this.#posted.delete(f.session);
    this.#posted.set(f.session, (f.b + posts.length) >>> 0);
    // Producers that never said goodbye (killed) are forgotten, oldest first.
    if (this.#posted.size > MAX_PRODUCERS_KEPT) {
      this.#posted.delete(this.#posted.keys().next().value!);
    }
    try {
      for (const p of posts) this.#producer?.post(p.event, p.data);
    } catch {
      // The host closed meanwhile: nothing takes posts any more.
    }
  }

  /** Closes the consumers of remote ends not heard of for {@linkcode SILENCE_MS}. */
  #closeSilent(): void {
    const before = performance.now() - SILENCE_MS;
    for (const [session, c] of this.#consumers) {
      if (c.heard < before) {
        this.#consumers.delete(session);
        c.local.close();
      }
    }
  }

  /**
   * Stops taking anything from NATS and closes the bridge's producer (its posts made so far are
   * accepted first). The host closes next: the bridge's consumers then end as any consumer at a
   * host's end, and their pumps send on what their lists still held, then the end.
   */
  stop(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweep);
    for (const sub of this.#subs) {
      try {
        sub.unsubscribe();
      } catch {
        // Closed already.
      }
    }
    try {
      this.#producer?.close();
    } catch {
      // The host went first.
    }
  }

  /** After the host closed: waits (at most 5 s) for the pumps, then leaves NATS. */
  async finish(): Promise<void> {
    this.stop();
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all([...this.#pumps]),
      new Promise((resolve) => timer = setTimeout(resolve, 5_000)),
    ]);
    clearTimeout(timer);
    for (const c of this.#consumers.values()) c.local.close();
    this.#consumers.clear();
    try {
      await this.#nc.flush();
    } catch {
      // Closed already.
    }
    await this.#nc.close().catch(() => {});
  }
}

// -------------------------------------------------------------------------------------------
// The remote ends

/** A remote end's NATS connection and its ping of the host. */
class RemoteEnd {
  readonly queueId: string;
  readonly nc: NatsConnection;
  readonly session = newSession();
  readonly subjects: ReturnType<typeof queueSubjects>;
  readonly #ping: ReturnType<typeof setInterval>;
  #pinging = false;
  /** Why it ended: the host went away, NATS closed, or the user closed it. */
  ended: IpcError | undefined;
  readonly #onEnd: (why: IpcError) => void;

  constructor(queueId: string, nc: NatsConnection, onEnd: (why: IpcError) => void) {
    this.queueId = queueId;
    this.nc = nc;
    this.subjects = queueSubjects(queueId);
    this.#onEnd = onEnd;
    this.#ping = setInterval(() => void this.#pingHost(), PING_MS);
    void nc.closed().then(() =>
      this.end(
        new IpcError(
          Status.PEER_TERMINATED,
          `the NATS connection to the event queue '${queueId}' closed (PEER_TERMINATED)`,
        ),
      )
    );
  }

  async #pingHost(): Promise<void> {
    if (this.#pinging || this.ended !== undefined) return;
    this.#pinging = true;
    try {
      const frame = encodeQueue(NATS_FRAME.QUEUE_PING, 0, 0, 0, this.session);
      await ask(this.nc, this.subjects.ping, frame, PING_MS);
    } catch (e) {
      if (noResponders(e)) {
        this.end(
          new IpcError(
            Status.PEER_TERMINATED,
            `the event queue '${this.queueId}' went away: its host no longer answers on NATS (PEER_TERMINATED)`,
          ),
        );
      }
      // A ping that timed out says nothing yet: NATS may be reconnecting.
    } finally {
      this.#pinging = false;
    }
  }

  end(why: IpcError): void {
    if (this.ended !== undefined) return;
    this.ended = why;
    clearInterval(this.#ping);
    this.#onEnd(why);
  }

  /**
   * Ends with `CLOSED`, then says goodbye to the host (which forgets this end: a consumer's list,
   * a producer's count of posts) and closes the NATS connection once it went.
   */
  async close(): Promise<void> {
    this.end(new IpcError(Status.CLOSED, `the end of '${this.queueId}' was closed`));
    try {
      if (!this.nc.isClosed()) {
        const goodbye = encodeQueue(NATS_FRAME.QUEUE_GOODBYE, 0, 0, 0, this.session);
        this.nc.publish(this.subjects.goodbye, goodbye);
        await this.nc.flush();
      }
    } catch {
      // Gone already.
    }
    await this.nc.close().catch(() => {});
  }
}

/** Opens NATS for a remote end (`what`) of `queueId`, once its id makes subjects. */
async function openRemote(
  queueId: string,
  nats: NatsOptions,
  what: string,
): Promise<NatsConnection> {
  queueSubjects(queueId);
  return await connectNats(nats, `shmcall ${what} of ${queueId}`);
}

/** The failure of an open that the host refused or did not answer. */
function openFailure(queueId: string, e: unknown): IpcError {
  if (e instanceof IpcError) return e;
  if (noResponders(e)) {
    return new IpcError(
      Status.NOT_FOUND,
      `no host of the event queue '${queueId}' answers on NATS (NOT_FOUND)`,
    );
  }
  return new IpcError(
    Status.TIMED_OUT,
    `the host of the event queue '${queueId}' did not answer through NATS within ${OPEN_TIMEOUT} ms (TIMED_OUT)`,
  );
}

/**
 * A producer of an event queue hosted on another host, through NATS: {@linkcode openProducer}
 * with the `nats` option. Its posts made in one run of code travel in one NATS message.
 */
export class NatsProducer implements Disposable, AsyncDisposable {
  readonly #end: RemoteEnd;
  /** The batch being made: records from byte 0 to `#used`. */
  #batch = new Uint8Array(4096);
  #used = 0;
  #count = 0;
  /** Posts sent so far (mod 2^32): the host counts a gap as lost. */
  #sent = 0;
  #scheduled = false;
  /** The queue's id. */
  readonly queueId: string;

  /** @internal Made by {@linkcode openNatsProducer}. */
  constructor(queueId: string, nc: NatsConnection) {
    this.queueId = queueId;
    this.#end = new RemoteEnd(queueId, nc, () => {});
  }

  /**
   * Posts a notification of `event` with `data`, as {@linkcode Producer.post} does: it never
   * waits; the posts of one run of code leave in one NATS message, in this producer's order.
   *
   * @throws {IpcError} `PEER_TERMINATED` once the host is known gone (its pings go unanswered),
   * `CLOSED` once closed.
   * @throws {TypeError | RangeError} On a bad event or data, naming it.
   */
  post(event: number, data?: Uint8Array): void {
    checkPost(event, data);
    if (this.#end.ended !== undefined) throw this.#end.ended;
    const bytes = data ?? NOTHING;
    const size = NATS_FRAME.POST_RECORD + bytes.length;
    if (NATS_FRAME.HEADER + this.#used + size > maxPayload(this.#end.nc)) this.#send();
    if (this.#used + size > this.#batch.length) {
      const grown = new Uint8Array(Math.max(this.#batch.length * 2, this.#used + size));
      grown.set(this.#batch.subarray(0, this.#used));
      this.#batch = grown;
    }
    this.#used = writePost(this.#batch, this.#used, event, bytes);
    this.#count++;
    if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(() => this.#send());
    }
  }

  #send(): void {
    this.#scheduled = false;
    if (this.#count === 0) return;
    const frame = encodeQueue(
      NATS_FRAME.QUEUE_POSTS,
      0,
      this.#count,
      this.#sent,
      this.#end.session,
      this.#batch.subarray(0, this.#used),
    );
    this.#sent = (this.#sent + this.#count) >>> 0;
    this.#count = this.#used = 0;
    try {
      this.#end.nc.publish(this.#end.subjects.posts, frame);
    } catch (e) {
      this.#end.end(
        new IpcError(
          Status.PEER_TERMINATED,
          `the posts to '${this.queueId}' could not be sent through NATS: ${
            (e as Error)?.message
          } (PEER_TERMINATED)`,
        ),
      );
    }
  }

  /**
   * Sends the posts made so far and waits (at most `timeout` ms, default 5,000) until the NATS
   * server has them; resolves to whether it did. Unlike a local producer's, it is asynchronous:
   * no thread may wait on a network.
   */
  async flush(timeout = 5_000): Promise<boolean> {
    this.#send();
    if (this.#end.ended !== undefined) return false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        this.#end.nc.flush().then(() => true, () => false),
        new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), timeout)),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends the posts made so far, then closes the NATS connection. Idempotent. */
  close(): void {
    void this[Symbol.asyncDispose]();
  }

  /** Closes the producer ({@linkcode NatsProducer.close}). */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Closes the producer and waits until its posts left and NATS closed. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#end.ended?.status === Status.CLOSED) return;
    this.#send();
    await this.#end.close();
  }
}

/** Opens a producer of `queueId` through NATS. */
export async function openNatsProducer(
  queueId: string,
  nats: NatsOptions,
): Promise<NatsProducer> {
  const nc = await openRemote(queueId, nats, "producer");
  try {
    const s = queueSubjects(queueId);
    const ping = encodeQueue(NATS_FRAME.QUEUE_PING, 0, 0, 0, NO_SESSION);
    await ask(nc, s.ping, ping, OPEN_TIMEOUT).catch((e) => {
      throw openFailure(queueId, e);
    });
  } catch (e) {
    await nc.close().catch(() => {});
    throw e;
  }
  return new NatsProducer(queueId, nc);
}

/**
 * A consumer of an event queue hosted on another host, through NATS: {@linkcode openConsumer}
 * with the `nats` option. The host's bridge keeps a list for it there, and sends its
 * notifications on in batches, which this keeps in a list of `capacity` in this process.
 */
export class NatsConsumer implements Disposable, AsyncDisposable, AsyncIterable<Notification> {
  readonly #end: RemoteEnd;
  readonly #capacity: number;
  readonly #maxData: number;
  readonly #notes: Notification[] = [];
  #at = 0;
  readonly #sub: NatsSubscription;
  /** Notifications received so far (mod 2^32), against the host's count of those it sent. */
  #received = 0;
  /** What the host's list dropped, what NATS lost, and what this list dropped. */
  #hostDropped = 0;
  #lost = 0;
  #overflow = 0;
  #retrieved = 0;
  /** The host said it closed: what is listed is all there is. */
  #hostEnded = false;
  #wake: (() => void) | undefined;
  #arrival: Promise<void> | undefined;
  /** The queue's id. */
  readonly queueId: string;

  /** @internal Made by {@linkcode openNatsConsumer}. */
  constructor(queueId: string, nc: NatsConnection, capacity: number, maxData: number) {
    this.queueId = queueId;
    this.#capacity = capacity;
    this.#maxData = maxData;
    this.#end = new RemoteEnd(queueId, nc, () => this.#wake?.());
    this.#sub = nc.subscribe(this.#end.subjects.notes(sessionName(this.#end.session)), {
      callback: (error, msg) => {
        if (error === null) this.#take(msg);
      },
    });
  }

  /** @internal Its session (the host's bridge knows it by it). */
  get session(): Uint8Array {
    return this.#end.session;
  }

  /** @internal Its notes' subscription. */
  get [notes](): NatsSubscription {
    return this.#sub;
  }

  /** A notes frame from the host's bridge. */
  #take(msg: NatsMsg): void {
    const f = decodeQueue(msg.data, NATS_FRAME.QUEUE_NOTES, NATS_FRAME.END);
    const parsed = "why" in f ? f : parseNotes(f.payload, f.a, this.#maxData);
    if ("why" in parsed) {
      this.#violation(parsed);
      return;
    }
    const frame = f as Exclude<typeof f, Refusal>;
    // The host's count of what it sent before these: a gap is what NATS lost.
    this.#lost += gap(this.#received, frame.b);
    this.#received = (frame.b + frame.a) >>> 0;
    this.#hostDropped = parsed.dropped;
    for (const n of parsed.notes) {
      if (this.#notes.length - this.#at >= this.#capacity) this.#overflow++;
      else this.#notes.push(n);
    }
    if ((frame.flags & NATS_FRAME.END) !== 0) {
      this.#hostEnded = true;
      this.#end.end(
        new IpcError(
          Status.PEER_TERMINATED,
          `the event queue '${this.queueId}' went away: its host closed (PEER_TERMINATED)`,
        ),
      );
    }
    this.#wake?.();
  }

  #violation(r: Refusal): void {
    this.#end.end(
      new IpcError(
        r.status,
        `the event queue '${this.queueId}' through NATS: ${r.why} (${statusName(r.status)})`,
      ),
    );
    this.#wake?.();
  }

  /** Registers more events, as {@linkcode Consumer.register} does (the host applies it). */
  register(...events: (number | "all")[]): void {
    this.#registration(events, 0, "register");
  }

  /** Unregisters events; `"all"` unregisters every event. */
  unregister(...events: (number | "all")[]): void {
    this.#registration(events, NATS_FRAME.UNREGISTER, "unregister");
  }

  #registration(events: (number | "all")[], flags: number, what: string): void {
    const payload = registration(events, what);
    if (this.#end.ended !== undefined) throw this.#end.ended;
    const frame = encodeQueue(NATS_FRAME.QUEUE_REGISTER, flags, 0, 0, this.#end.session, payload);
    ask(this.#end.nc, this.#end.subjects.register, frame, OPEN_TIMEOUT).then(
      (a) => {
        if (a.status < 0) {
          this.#end.end(
            new IpcError(
              a.status,
              `the host of '${this.queueId}' refused a ${what} (${statusName(a.status)})`,
            ),
          );
          this.#wake?.();
        }
      },
      () => {
        // No answer: the pings tell whether the host is gone.
      },
    );
  }

  /** The notifications listed so far, at most `max`, possibly none (no system call). */
  retrieve(max = Infinity): Notification[] {
    if (max !== Infinity && (!Number.isInteger(max) || max < 0)) {
      throw new RangeError(`max must be a non-negative integer or Infinity, received ${max}`);
    }
    if (this.#end.ended?.status === Status.CLOSED) return [];
    const n = Math.min(max, this.#notes.length - this.#at);
    const out = this.#notes.slice(this.#at, this.#at + n);
    this.#at += n;
    this.#compact();
    this.#retrieved += n;
    return out;
  }

  #compact(): void {
    if (this.#at > 1024 && this.#at * 2 > this.#notes.length) {
      this.#notes.splice(0, this.#at);
      this.#at = 0;
    }
  }

  /**
   * The next notification: at once when one is listed, else when one comes.
   *
   * @throws {IpcError} `PEER_TERMINATED` once the host is gone and every notification listed
   * was retrieved; `CLOSED` once closed.
   */
  async next(): Promise<Notification> {
    while (true) {
      const ended = this.#end.ended;
      if (ended?.status === Status.CLOSED) throw ended;
      if (this.#at < this.#notes.length) {
        const n = this.#notes[this.#at++]!;
        this.#compact();
        this.#retrieved++;
        return n;
      }
      if (ended !== undefined) throw ended;
      // One Promise for every waiting `next()`, settled by the next notes or the end.
      this.#arrival ??= new Promise<void>((resolve) => {
        this.#wake = () => {
          this.#arrival = this.#wake = undefined;
          resolve();
        };
      });
      await this.#arrival;
    }
  }

  /** The notifications as they come; ends when closed, throws once the host is gone. */
  [Symbol.asyncIterator](): AsyncIterator<Notification> {
    return notificationsOf(this);
  }

  /**
   * Its counters: `dropped` counts the host's drops (its list for this consumer was full),
   * notifications NATS lost on the way, and those this consumer's list had no room for.
   */
  stats(): ConsumerStats {
    return {
      dropped: this.#hostDropped + this.#lost + this.#overflow,
      retrieved: this.#retrieved,
      waiting: this.#end.ended?.status === Status.CLOSED ? 0 : this.#notes.length - this.#at,
    };
  }

  /** Closes the consumer: the host's bridge frees its list. Idempotent. */
  close(): void {
    void this[Symbol.asyncDispose]();
  }

  /** Closes the consumer ({@linkcode NatsConsumer.close}). */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Closes the consumer and waits until NATS closed. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#end.ended?.status === Status.CLOSED) return;
    try {
      this.#sub.unsubscribe();
    } catch {
      // Closed already.
    }
    this.#wake?.();
    await this.#end.close();
  }
}

/** Opens a consumer of `queueId` through NATS, registered for `events`. */
export async function openNatsConsumer(
  queueId: string,
  nats: NatsOptions,
  events: "all" | readonly number[],
  capacity: number,
  maxData: number,
): Promise<NatsConsumer> {
  const payload = registration(events === "all" ? ["all"] : events, "events");
  const nc = await openRemote(queueId, nats, "consumer");
  let consumer: NatsConsumer;
  try {
    consumer = new NatsConsumer(queueId, nc, capacity, maxData);
    await nc.flush();
    await checkSubscribed([consumer[notes]], `the consumer of '${queueId}'`);
    // Subscribed before the host may send: NATS takes this connection's messages in order.
    const frame = encodeQueue(NATS_FRAME.QUEUE_OPEN, 0, capacity, 0, consumer.session, payload);
    const a = await ask(nc, queueSubjects(queueId).open, frame, OPEN_TIMEOUT).catch((e) => {
      throw openFailure(queueId, e);
    });
    if (a.status < 0) {
      throw new IpcError(
        a.status,
        `the host of the event queue '${queueId}' refused the consumer (${statusName(a.status)})`,
      );
    }
  } catch (e) {
    await nc.close().catch(() => {});
    throw e;
  }
  return consumer;
}
