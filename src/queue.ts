/**
 * Event queues (docs/events.md): a host ({@linkcode serveEventQueue}), producers that post
 * notifications of events ({@linkcode openProducer}), and consumers that register for events and
 * retrieve their notifications from a list in shared memory ({@linkcode openConsumer}).
 *
 * The host runs in the core, on the library's own thread: no post reaches JavaScript in its
 * process. Producers and consumers are clients of it; a consumer's list is the output area of a
 * command the host keeps, which the consumer reads with no system call.
 *
 * @module
 */

import {
  type Client,
  connect,
  connectWith,
  queueAppend,
  queueArea,
  queueFlush,
  queueMinor,
  queueOperation,
  queueSend,
} from "./client.ts";
import { IpcError } from "./errors.ts";
import { type Handle, native, QUEUE } from "./native.ts";
import { Status } from "./status.ts";
import { checkIcId, checkOptionsObject, checkSocketDir, shown } from "./validate.ts";
import { checkNatsOptions, type NatsOptions } from "./nats.ts";
import {
  type NatsConsumer,
  type NatsProducer,
  openNatsConsumer,
  openNatsProducer,
  QueueBridge,
} from "./nats_queue.ts";

/** The most data bytes a notification carries. */
export const MAX_NOTIFICATION_DATA: number = QUEUE.MAX_DATA;

/** How many notifications `next` takes from the list at a time (it hands them out one by one). */
const NEXT_BATCH = 64;

/** A consumer's list when its options name none, in notifications. */
const DEFAULT_CAPACITY = 1024;

/**
 * The largest list a consumer may have, in notifications (entries of 256 bytes: 16 MiB of the
 * consumer's memory at most, touched as the host fills it).
 */
export const MAX_CONSUMER_CAPACITY: number = QUEUE.MAX_CAPACITY;

/** The output of a default connection's largest slot: a longer list gets a slot of its own. */
const DEFAULT_LARGE_OUTPUT = 1 << 20;

/** Where a queue's host, producers and consumers look for each other. */
export interface QueueOptions {
  /** The socket directory; see {@linkcode ConnectOptions.socketDir}. */
  socketDir?: string;
  /**
   * Across hosts, through NATS (docs/events.md, "Across hosts"): on {@linkcode serveEventQueue},
   * the host also takes producers and consumers of other hosts; on {@linkcode openProducer} and
   * {@linkcode openConsumer}, the end reaches the queue's host through NATS only (`socketDir`
   * does not apply then). Where the NATS servers are, and NATS's own connection options
   * (authentication, TLS, reconnecting), passed through.
   */
  nats?: NatsOptions;
}

/** A queue host's counters ({@linkcode EventQueue.stats}). */
export interface QueueStats {
  /** Posts accepted: each got a sequence number. */
  posted: number;
  /** Notifications written into consumers' lists. */
  delivered: number;
  /** Notifications dropped because a consumer's list was full. */
  dropped: number;
  /** Producers' and consumers' connections open now. */
  connections: number;
  /** Consumers open now. */
  consumers: number;
  /**
   * Posts of producers on other hosts that NATS lost on their way here (a gap in what each
   * producer sent), which no sequence number shows; 0 without `nats`.
   */
  lost: number;
}

/** Checks a post's event and data, for a producer of either kind; returns the data's length. */
export function checkPost(event: unknown, data: unknown): number {
  checkEvent(event);
  if (data !== undefined && !(data instanceof Uint8Array)) {
    throw new TypeError(`data must be a Uint8Array (or omitted), received ${shown(data)}`);
  }
  const length = (data as Uint8Array | undefined)?.length ?? 0;
  if (length > QUEUE.MAX_DATA) {
    throw new RangeError(
      `a notification carries at most ${QUEUE.MAX_DATA} bytes of data, received ${length}`,
    );
  }
  return length;
}

/**
 * A consumer's notifications as they come (its `for await`, for either kind): the loop ends
 * when the consumer is closed, and throws what `next` throws otherwise.
 */
export async function* notificationsOf(
  consumer: { next(): Promise<Notification> },
): AsyncGenerator<Notification> {
  while (true) {
    try {
      yield await consumer.next();
    } catch (e) {
      if (e instanceof IpcError && e.status === Status.CLOSED) return;
      throw e;
    }
  }
}

/** Checks an event number: an integer from 0 to 2^32 - 1. */
export function checkEvent(event: unknown, what = "event"): asserts event is number {
  if (typeof event !== "number" || !Number.isInteger(event)) {
    throw new TypeError(`${what} must be an integer from 0 to 2^32 - 1, received ${shown(event)}`);
  }
  if (event < 0 || event > 0xffff_ffff) {
    throw new RangeError(`${what} must be from 0 to 2^32 - 1, received ${event}`);
  }
}

/** Hosts a queue through NATS too (an internal method of {@linkcode EventQueue}). */
const bridgeTo: unique symbol = Symbol("shmcall queue bridge");

/**
 * A hosted event queue. Its producers and consumers may be in any processes, Deno or Node.js;
 * closing it ends their connections (a consumer still retrieves what its list holds).
 */
export class EventQueue implements AsyncDisposable {
  #handle: Handle | null;
  #keepalive: ReturnType<typeof setInterval> | undefined;
  /** Its end on NATS, when hosting through NATS too. */
  #bridge: QueueBridge | undefined;
  readonly #words = new Float64Array(QUEUE.STATS_LEN);
  /** The queue's id. */
  readonly queueId: string;

  /** @internal Made by {@linkcode serveEventQueue}. */
  constructor(queueId: string, handle: Handle) {
    this.queueId = queueId;
    this.#handle = handle;
    // The host runs on the library's thread: this keeps the process alive while it serves.
    this.#keepalive = setInterval(() => {}, 1 << 30);
  }

  /** The host's counters since it started. */
  stats(): QueueStats {
    if (this.#handle === null) {
      throw new IpcError(Status.CLOSED, `the event queue '${this.queueId}' is closed`);
    }
    native.queueStats(this.#handle, this.#words);
    const [posted, delivered, dropped, connections, consumers] = this.#words;
    return {
      posted: posted!,
      delivered: delivered!,
      dropped: dropped!,
      connections: connections!,
      consumers: consumers!,
      lost: this.#bridge?.lost ?? 0,
    };
  }

  /** @internal Hosts through NATS too ({@linkcode QueueOptions.nats}). */
  async [bridgeTo](nats: NatsOptions, socketDir: string | undefined): Promise<void> {
    const queueId = this.queueId;
    const where = socketDir === undefined ? {} : { socketDir };
    this.#bridge = await QueueBridge.start(queueId, nats, {
      maxData: QUEUE.MAX_DATA,
      maxCapacity: MAX_CONSUMER_CAPACITY,
      openProducer: () => openProducer(queueId, where),
      openConsumer: (events, capacity) => openConsumer(queueId, { ...where, events, capacity }),
    });
  }

  /**
   * Stops hosting: every producer's and consumer's connection ends (consumers on other hosts
   * get what the host's lists held for them first). Idempotent.
   */
  async close(): Promise<void> {
    // Nothing more from NATS, then the host's end, which the bridge's consumers see as any
    // consumer does: they send on what they still hold, then the end.
    this.#bridge?.stop();
    if (this.#handle !== null) {
      const handle = this.#handle;
      this.#handle = null;
      clearInterval(this.#keepalive);
      this.#keepalive = undefined;
      native.queueFree(handle);
    }
    await this.#bridge?.finish();
  }

  /** Closes the queue ({@linkcode EventQueue.close}). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Hosts the event queue `queueId` (an ic id: queues and servers share the socket directory's
 * names). Its work runs on the library's own thread, not on this one.
 *
 * @example A queue, a producer and a consumer (in one process here; normally three)
 * ```ts
 * import { openConsumer, openProducer, serveEventQueue } from "shmcall";
 *
 * await using _queue = await serveEventQueue("doc-events");
 * using consumer = await openConsumer("doc-events", { events: [1] });
 * using producer = await openProducer("doc-events");
 * producer.post(1, new TextEncoder().encode("hello"));
 * producer.post(2); // nobody registered for event 2
 * const n = await consumer.next();
 * console.log(n.event, n.sequence, new TextDecoder().decode(n.data)); // 1 1 hello
 * ```
 *
 * @throws {IpcError} `ALREADY_SERVING` when a live server or queue holds the id, …
 */
export async function serveEventQueue(
  queueId: string,
  options?: QueueOptions,
): Promise<EventQueue> {
  checkIcId(queueId);
  const o = options ?? {};
  checkOptionsObject("serveEventQueue", o);
  checkSocketDir(o.socketDir);
  if (o.nats !== undefined) checkNatsOptions("serveEventQueue", o.nats);
  const queue = new EventQueue(queueId, native.queueServe(queueId, o.socketDir ?? ""));
  if (o.nats !== undefined) {
    try {
      await queue[bridgeTo](o.nats, o.socketDir);
    } catch (e) {
      await queue.close();
      throw e;
    }
  }
  return queue;
}

/** How long a post waits for a slot, and `close` for the host to accept the posts made (ms). */
const SEND_PATIENCE = 5_000;

/** A producer of an event queue: posts notifications. */
export class Producer implements Disposable {
  readonly #client: Client;
  /** The input of a post: the event, then the data. */
  readonly #input = new Uint8Array(4 + QUEUE.MAX_DATA);
  readonly #event = new DataView(this.#input.buffer, 0, 4);
  /** Whether the host takes several posts in one command (protocol 2.5). */
  readonly #batches: boolean;
  /** The queue's id. */
  readonly queueId: string;

  /** @internal Made by {@linkcode openProducer}. */
  constructor(queueId: string, client: Client) {
    this.queueId = queueId;
    this.#client = client;
    this.#batches = client[queueMinor]() >= QUEUE.POSTS_SINCE_MINOR;
  }

  /**
   * Posts a notification of `event` (an integer from 0 to 2^32 - 1) with `data` (at most
   * {@linkcode MAX_NOTIFICATION_DATA} bytes, copied at once). It never waits on a consumer, nor
   * for the host: the posts made in one run of code leave together, in this producer's order,
   * once the microtasks queued so far ran ({@linkcode Producer.flush} sends them at once and
   * waits until the host accepted them; {@linkcode Producer.close} too). Only when the host lags
   * by every slot of the connection does it wait, for at most 5 s, for one to come free.
   *
   * @throws {IpcError} `PEER_TERMINATED` once the host is known gone, `CLOSED` once closed,
   * `TIMED_OUT` when the host took no post for 5 s.
   * @throws {TypeError | RangeError} On a bad event or data, naming it.
   */
  post(event: number, data?: Uint8Array): void {
    const length = checkPost(event, data);
    if (!this.#batches) {
      this.#event.setUint32(0, event, true);
      if (data !== undefined) this.#input.set(data, 4);
      this.#client[queueSend](QUEUE.POST, this.#input.subarray(0, 4 + length), SEND_PATIENCE);
      return;
    }
    // A record of the batch of posts this run of code makes: event, length, data (all posts of
    // one run travel in one command).
    const client = this.#client;
    const at = client[queueAppend](
      QUEUE.POSTS,
      QUEUE.POSTS_RECORD_HEADER + length,
      QUEUE.MAX_POSTS_INPUT,
      SEND_PATIENCE,
    );
    const area = client[queueArea];
    area[at] = event;
    area[at + 1] = event >>> 8;
    area[at + 2] = event >>> 16;
    area[at + 3] = event >>> 24;
    // The length, little-endian: at most 240, one byte.
    area[at + 4] = length;
    area[at + 5] = 0;
    area[at + 6] = 0;
    area[at + 7] = 0;
    if (data !== undefined) area.set(data, at + QUEUE.POSTS_RECORD_HEADER);
  }

  /**
   * Waits (at most `timeout` ms, default 5,000) until the host accepted every post made so far;
   * returns whether it did. A post that returned is on its way; after `flush`, it has its
   * sequence number and is in the lists of the consumers registered then.
   */
  flush(timeout = SEND_PATIENCE): boolean {
    return this.#client[queueFlush](timeout);
  }

  /**
   * Closes the connection, once the host accepted the posts made (waiting for that at most
   * 5 s). Idempotent.
   */
  close(): void {
    this.#client[queueFlush](SEND_PATIENCE);
    this.#client.close();
  }

  /** Closes the producer ({@linkcode Producer.close}). */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Opens a producer of the event queue `queueId` through NATS ({@linkcode QueueOptions.nats}):
 * its posts reach the queue's host on another host.
 */
export async function openProducer(
  queueId: string,
  options: QueueOptions & { nats: NatsOptions },
): Promise<NatsProducer>;
/** Opens a producer of the event queue `queueId`. */
export async function openProducer(queueId: string, options?: QueueOptions): Promise<Producer>;
export async function openProducer(
  queueId: string,
  options?: QueueOptions,
): Promise<Producer | NatsProducer> {
  checkIcId(queueId);
  const o = options ?? {};
  checkOptionsObject("openProducer", o);
  if (o.nats !== undefined) {
    checkNatsOptions("openProducer", o.nats);
    return await openNatsProducer(queueId, o.nats);
  }
  checkSocketDir(o.socketDir);
  const client = await connect(
    queueId,
    o.socketDir === undefined ? {} : { socketDir: o.socketDir },
  );
  return new Producer(queueId, client);
}

/** Events a consumer registers for: a list of event numbers, or `"all"`. */
export type Events = readonly number[] | "all";

/** How a consumer connects ({@linkcode openConsumer}). */
export interface ConsumerOptions extends QueueOptions {
  /** The events to register for at once: event numbers, or `"all"`. */
  events: Events;
  /**
   * The notifications its list holds (default 1,024; at most
   * {@linkcode MAX_CONSUMER_CAPACITY}, 65,536; rounded up to a power of two), 256 bytes each of
   * this consumer's memory, touched as the host fills them. When the list is full, the host
   * drops this consumer's next notifications and counts them: a consumer that takes bursts
   * wants a list that holds one.
   */
  capacity?: number;
}

/** One notification. */
export interface Notification {
  /** The event posted. */
  event: number;
  /**
   * The post's number in the order the host accepted the queue's posts, from 1: a gap is a
   * notification this consumer did not get (dropped, or of an event it did not register for).
   */
  sequence: number;
  /**
   * The data posted: a copy of this consumer's own, in a buffer that may hold the data of other
   * notifications retrieved with it (read it through this view, or its `byteOffset` and
   * `byteLength`, not from the start of `data.buffer`).
   */
  data: Uint8Array;
}

/** A consumer's counters ({@linkcode Consumer.stats}). */
export interface ConsumerStats {
  /** Notifications the host dropped because this consumer's list was full. */
  dropped: number;
  /** Notifications retrieved. */
  retrieved: number;
  /** Notifications listed and not retrieved yet. */
  waiting: number;
}

/** The registration input of `events` (`"all"`, or event numbers). */
export function registration(events: readonly (number | "all")[], what: string): Uint8Array {
  if (events.includes("all")) {
    if (events.length !== 1) {
      throw new TypeError(`${what}: "all" stands alone, received ${shown(events)}`);
    }
    return new Uint8Array(new Uint32Array([QUEUE.EVENTS_ALL]).buffer);
  }
  const words = new Uint32Array(1 + events.length);
  words[0] = QUEUE.EVENTS_LISTED;
  events.forEach((e, i) => {
    checkEvent(e, `${what}: event ${i}`);
    words[1 + i] = e;
  });
  return new Uint8Array(words.buffer);
}

/**
 * A consumer of an event queue: retrieves the notifications of the events it registered for,
 * in the queue's order, from a list in shared memory.
 */
export class Consumer implements Disposable, AsyncIterable<Notification> {
  readonly #client: Client;
  readonly #list: Uint8Array;
  /** The list's header words. */
  readonly #words: Uint32Array;
  /** The whole list as words: an entry's header is read from it (little-endian, as the host's). */
  readonly #entries: Uint32Array;
  readonly #mask: number;
  readonly #capacity: number;
  /** This consumer's read count: what it publishes, never read back from shared memory. */
  #read = 0;
  #retrieved = 0;
  /** Notifications `next` took from the list and has not handed out yet, from `#heldAt` on. */
  readonly #held: Notification[] = [];
  #heldAt = 0;
  #dropped = 0;
  /** The bell that is out: settles when the host rings it, or when the connection ends. */
  #bell: Promise<void> | undefined;
  /** Why the list ended (the host went away, or this consumer closed). */
  #ended: IpcError | undefined;
  /** The queue's id. */
  readonly queueId: string;

  /** @internal Made by {@linkcode openConsumer}. */
  constructor(queueId: string, client: Client, list: Uint8Array, capacity: number) {
    this.queueId = queueId;
    this.#client = client;
    this.#list = list;
    this.#words = new Uint32Array(list.buffer, list.byteOffset, QUEUE.LIST_ENTRIES_AT / 4);
    this.#entries = new Uint32Array(list.buffer, list.byteOffset, list.byteLength >>> 2);
    this.#capacity = capacity;
    this.#mask = capacity - 1;
  }

  /** @internal The list's command ended: its reason is kept for the waits to come. */
  end(why: unknown): void {
    this.#ended ??= why instanceof IpcError
      ? why
      : new IpcError(Status.PEER_TERMINATED, `the event queue '${this.queueId}' went away`);
  }

  /**
   * Registers more events, for the posts the host accepts after this returns: event numbers, or
   * `"all"`.
   */
  register(...events: (number | "all")[]): void {
    const input = registration(events, "register");
    this.#client[queueOperation](QUEUE.REGISTER, { input, outputLength: 0 });
  }

  /** Unregisters events; `"all"` unregisters every event. */
  unregister(...events: (number | "all")[]): void {
    const input = registration(events, "unregister");
    this.#client[queueOperation](QUEUE.UNREGISTER, { input, outputLength: 0 });
  }

  /**
   * The notifications listed so far, at most `max` (default: all of them), possibly none.
   * Synchronous, and no system call.
   *
   * @throws {IpcError} `PROTOCOL_VIOLATION` when the host wrote what no host may; the
   * consumer is then closed.
   */
  retrieve(max = Infinity): Notification[] {
    if (max !== Infinity && (!Number.isInteger(max) || max < 0)) {
      throw new RangeError(
        `max must be a non-negative integer or Infinity, received ${shown(max)}`,
      );
    }
    if (this.#ended?.status === Status.CLOSED) return [];
    // Those `next` took from the list already come first.
    const held = this.#held.length - this.#heldAt;
    const out = held === 0
      ? []
      : this.#held.slice(this.#heldAt, this.#heldAt + Math.min(held, max));
    this.#heldAt += out.length;
    if (out.length < max) this.#copyOut(out, max - out.length);
    this.#retrieved += out.length;
    return out;
  }

  /**
   * Copies up to `max` notifications out of the list onto `out`, their data in one fresh
   * buffer (one allocation for the lot: one per notification cost 0.8 µs each, nine tenths of
   * a retrieve, measured), and gives their entries back to the host.
   */
  #copyOut(out: Notification[], max: number): void {
    const n = Math.min(this.#waiting(), max);
    if (n === 0) return;
    const w = this.#entries;
    let total = 0;
    for (let i = 0; i < n; i++) {
      const length = w[(this.#entryAt((this.#read + i) >>> 0) >>> 2) + 3]!;
      if (length > QUEUE.MAX_DATA) {
        this.#violation(
          `a notification says it holds ${length} bytes, more than ${QUEUE.MAX_DATA}`,
        );
      }
      total += length;
    }
    const data = new Uint8Array(total);
    let offset = 0;
    for (let i = 0; i < n; i++) {
      const at = this.#entryAt((this.#read + i) >>> 0);
      const word = at >>> 2;
      // Read once: the length checked above is what is copied (the host may not rewrite an
      // entry before the read count passes it, but a host that does changes nothing here).
      const length = Math.min(w[word + 3]!, QUEUE.MAX_DATA, total - offset);
      const start = at + QUEUE.LIST_ENTRY_HEADER;
      data.set(this.#list.subarray(start, start + length), offset);
      out.push({
        // The sequence's two words, low first: exact up to 2^53, as numbers are.
        sequence: w[word + 1]! * 2 ** 32 + w[word]!,
        event: w[word + 2]!,
        data: data.subarray(offset, offset + length),
      });
      offset += length;
    }
    this.#read = (this.#read + n) >>> 0;
    // Atomics: the entries were copied out before the host may write over them.
    Atomics.store(this.#words, QUEUE.LIST_READ_AT / 4, this.#read);
  }

  /** How many notifications the list holds: the host's count (a lie about it ends the consumer). */
  #waiting(): number {
    // Atomics: the host's count is read before the entries it covers.
    const written = Atomics.load(this.#words, QUEUE.LIST_WRITE_AT / 4);
    const waiting = (written - this.#read) >>> 0;
    if (waiting > this.#capacity) {
      this.#violation(`the host says ${waiting} notifications wait in a list of ${this.#capacity}`);
    }
    return waiting;
  }

  /** Where entry number `index` (counted from the list's start, wrapping) lies in the list. */
  #entryAt(index: number): number {
    return QUEUE.LIST_ENTRIES_AT + (index & this.#mask) * QUEUE.LIST_ENTRY_SIZE;
  }

  #violation(why: string): never {
    const e = new IpcError(Status.PROTOCOL_VIOLATION, `the event queue '${this.queueId}': ${why}`);
    this.close();
    throw e;
  }

  /**
   * The next notification: at once when one is listed, else when one comes.
   *
   * @throws {IpcError} `PEER_TERMINATED` once the host is gone and every notification it listed
   * was retrieved; `CLOSED` once this consumer is closed.
   */
  next(): Promise<Notification> {
    // The common case first, with no async function's machinery: one is held already.
    if (this.#heldAt < this.#held.length && this.#ended?.status !== Status.CLOSED) {
      this.#retrieved++;
      return Promise.resolve(this.#held[this.#heldAt++]!);
    }
    return this.#nextWaiting();
  }

  /** {@linkcode Consumer.next} when none is held: from the list, or once one comes. */
  async #nextWaiting(): Promise<Notification> {
    while (true) {
      if (this.#ended?.status === Status.CLOSED) throw this.#ended;
      if (this.#heldAt === this.#held.length && this.#waiting() > 0) {
        // A batch at once: the next calls take theirs with no look at the list.
        this.#held.length = this.#heldAt = 0;
        this.#copyOut(this.#held, NEXT_BATCH);
      }
      if (this.#heldAt < this.#held.length) {
        const n = this.#held[this.#heldAt++]!;
        this.#retrieved++;
        return n;
      }
      if (this.#ended !== undefined) throw this.#ended;
      this.#bell ??= this.#ring();
      const words = this.#words;
      // Raised, then a look at the count once more (the store is a full fence here): either
      // this sees the host's entry, or the host sees the flag and rings the bell.
      Atomics.store(words, QUEUE.LIST_FLAG_AT / 4, QUEUE.LIST_SLEEPING);
      if (Atomics.load(words, QUEUE.LIST_WRITE_AT / 4) !== this.#read) {
        Atomics.store(words, QUEUE.LIST_FLAG_AT / 4, QUEUE.LIST_AWAKE);
        continue;
      }
      await this.#bell;
    }
  }

  /** Sends a bell: it settles when the host rings it, or the connection ends. */
  #ring(): Promise<void> {
    const answered = this.#client[queueOperation](QUEUE.BELL, {
      outputLength: 0,
      completion: () => {},
    }) as Promise<unknown>;
    return answered.then(
      () => {
        this.#bell = undefined;
      },
      (e) => {
        this.#bell = undefined;
        this.end(e);
      },
    );
  }

  /**
   * The notifications as they come; the loop ends when the consumer is closed, and throws
   * `PEER_TERMINATED` once the host is gone and its notifications were retrieved.
   */
  [Symbol.asyncIterator](): AsyncIterator<Notification> {
    return notificationsOf(this);
  }

  /** This consumer's counters. */
  stats(): ConsumerStats {
    if (this.#ended?.status !== Status.CLOSED) {
      this.#dropped = Atomics.load(this.#words, QUEUE.LIST_DROPPED_AT / 4);
    }
    return { dropped: this.#dropped, retrieved: this.#retrieved, waiting: this.#backlog() };
  }

  /** Notifications held and listed, not retrieved (a host's count beyond the list is cut). */
  #backlog(): number {
    if (this.#ended?.status === Status.CLOSED) return 0;
    const written = Atomics.load(this.#words, QUEUE.LIST_WRITE_AT / 4);
    const listed = Math.min((written - this.#read) >>> 0, this.#capacity);
    return this.#held.length - this.#heldAt + listed;
  }

  /** Closes the connection: the host frees the list and the registrations. Idempotent. */
  close(): void {
    if (this.#ended?.status !== Status.CLOSED) this.stats();
    this.#ended = new IpcError(Status.CLOSED, `the consumer of '${this.queueId}' was closed`);
    this.#client.close();
  }

  /** Closes the consumer ({@linkcode Consumer.close}). */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Opens a consumer of the event queue `queueId` through NATS ({@linkcode QueueOptions.nats}),
 * registered for `options.events`: once it resolves, the host's bridge keeps a list for it, and
 * every post the host accepts for those events reaches it.
 */
export async function openConsumer(
  queueId: string,
  options: ConsumerOptions & { nats: NatsOptions },
): Promise<NatsConsumer>;
/**
 * Opens a consumer of the event queue `queueId`, registered for `options.events`: once it
 * resolves, every post the host accepts for those events reaches its list.
 */
export async function openConsumer(queueId: string, options: ConsumerOptions): Promise<Consumer>;
export async function openConsumer(
  queueId: string,
  options: ConsumerOptions,
): Promise<Consumer | NatsConsumer> {
  checkIcId(queueId);
  checkOptionsObject("openConsumer", options);
  if (options.nats === undefined) checkSocketDir(options.socketDir);
  else checkNatsOptions("openConsumer", options.nats);
  const { events } = options;
  if (events !== "all" && !Array.isArray(events)) {
    throw new TypeError(
      `events must be a list of event numbers or "all", received ${shown(events)}`,
    );
  }
  const input = registration(events === "all" ? ["all"] : events, "events");
  const asked = options.capacity ?? DEFAULT_CAPACITY;
  if (typeof asked !== "number" || !Number.isInteger(asked)) {
    throw new TypeError(`capacity must be an integer, received ${shown(asked)}`);
  }
  if (asked < 1 || asked > MAX_CONSUMER_CAPACITY) {
    throw new RangeError(`capacity must be from 1 to ${MAX_CONSUMER_CAPACITY}, received ${asked}`);
  }
  const capacity = 2 ** Math.ceil(Math.log2(asked));
  if (options.nats !== undefined) {
    return await openNatsConsumer(queueId, options.nats, events, capacity, QUEUE.MAX_DATA);
  }
  const size = QUEUE.LIST_ENTRIES_AT + capacity * QUEUE.LIST_ENTRY_SIZE;
  const client = await connectWith(
    queueId,
    options.socketDir === undefined ? {} : { socketDir: options.socketDir },
    size > DEFAULT_LARGE_OUTPUT ? size : 0,
  );
  try {
    let list: Uint8Array | undefined;
    const ended = client[queueOperation](QUEUE.LIST, {
      input: new Uint8Array(new Uint32Array([capacity]).buffer),
      outputLength: size,
      outputPrepare: (output) => {
        list = output;
        // The words this consumer writes start clear; the host writes the rest.
        new Uint32Array(output.buffer, output.byteOffset, QUEUE.LIST_ENTRIES_AT / 4).fill(0);
      },
      completion: () => {},
    }) as Promise<unknown>;
    if (list === undefined) throw new Error("the list's area was not handed out");
    const consumer = new Consumer(queueId, client, list, capacity);
    // Settles only when the connection ends (the host keeps the list till then).
    ended.then(() => consumer.end(undefined), (e) => consumer.end(e));
    // One connection's operations run in order: once the registration is answered, the list
    // was taken, and posts accepted later reach it.
    client[queueOperation](QUEUE.REGISTER, { input, outputLength: 0 });
    const words = new Uint32Array(list.buffer, list.byteOffset, QUEUE.LIST_ENTRIES_AT / 4);
    const magic = Atomics.load(words, 0);
    if (magic !== QUEUE.LIST_MAGIC || words[QUEUE.LIST_CAPACITY_AT / 4] !== capacity) {
      throw new IpcError(
        Status.PROTOCOL_VIOLATION,
        `the event queue '${queueId}' did not set up the list (magic ${magic}, capacity ${
          words[QUEUE.LIST_CAPACITY_AT / 4]
        })`,
      );
    }
    return consumer;
  } catch (e) {
    client.close();
    throw e;
  }
}
