/**
 * What the client, the server and the hub need from the core, whichever runtime loaded it:
 * the {@linkcode Native} primitives, which Deno's FFI (`ffi/native.ts`) and Node-API
 * (`node/native.ts`) both provide over the same Rust operations, and the pieces of shared
 * memory both hand out. The runtime's entry (`mod.ts`, `node/index.ts`) binds its primitives
 * before anything runs; nothing here is exported to users.
 *
 * @module
 */

/** Success. */
export const OK = 0;
/** Nothing ready. */
export const EMPTY = 1;
/** An offset of {@linkcode Native.begunAt} meaning "on the backup path". */
export const NOWHERE = 0xffff_ffff;
/** A spin budget meaning "the core's default". */
export const DEFAULT_SPIN = -1;

/**
 * Where each figure sits in a counters snapshot (`stats::word` in core-rs/src/stats.rs). This
 * file's tables are copies of the library's (`CONSTANTS` in bindings/src/surface.rs), kept here
 * for speed; `tests/constants_test.ts` checks that they agree.
 */
export const STATS = {
  COMMANDS: 0,
  FINISHED: 1,
  BYTES_IN: 2,
  BYTES_OUT: 3,
  BACKUP: 4,
  TIMED: 5,
  P50: 6,
  P90: 7,
  P99: 8,
  MAX: 9,
  CONNECTIONS: 10,
  WORKERS: 11,
  QUIESCING: 12,
  /** The first failure counter; failure `s` (< 0) is at `FAILURES - s`. */
  FAILURES: 16,
  /** Words in a snapshot. */
  LEN: 32,
} as const;

/** Hub event kinds (`EVENT_*` in bindings/src/surface.rs). */
export const EVENT = {
  COMPLETION: 1,
  OPEN: 2,
  EXEC: 3,
  CLOSE: 4,
  CONNECTED: 5,
  LANE: 6,
  /** A server's pool says something: `code` is one of {@linkcode POOL_NOTE}. */
  POOL: 7,
} as const;

/** How a server serves: {@linkcode Native.serverServe}'s flags (`SERVE_*` in bindings/src/surface.rs). */
export const SERVE = {
  /** A client is welcome only once this thread answered its open event. */
  ASKS_OPEN: 1,
  /** This thread takes its connections' slot commands itself (lanes). */
  LANES: 2,
  /** With a pool: commands with no mode flag run on the server's thread. */
  INLINE: 4,
  /** A worker pool owns the connections and takes their commands (not with lanes). */
  POOL: 8,
} as const;

/** What a pool event says (`PoolNote` in bindings/src/pool.rs). */
export const POOL_NOTE = {
  /** Commands wait for the pool's workers and none waits for them: poke those in their event loop. */
  POKE: 1,
  /** The server quiesces, and its pool holds no command any more. */
  DRAINED: 2,
} as const;

/**
 * Where a lent connection's layout sits in the words {@linkcode Native.clientLend} writes
 * (`LANE_*` in bindings/src/surface.rs). Each slot class takes `CLASS_WORDS` words from
 * `CLASSES`: its first slot's offset, the stride between slots, the count, the input and output
 * capacities, and its first slot's index.
 */
export const LANE = {
  CS_RING: 0,
  SC_RING: 1,
  RING_CAPACITY: 2,
  CS_POSITION: 3,
  SC_POSITION: 4,
  CLASSES: 5,
  CLASS_WORDS: 6,
  WORDS: 17,
} as const;

/**
 * Where each figure sits in what a lane reports with {@linkcode Native.clientLaneCount}
 * (`stats::lane` in core-rs/src/stats.rs): counts, failures by `-status`, then round-trip
 * samples in ns.
 */
export const LANE_COUNT = {
  COMMANDS: 0,
  FINISHED: 1,
  BYTES_IN: 2,
  BYTES_OUT: 3,
  FAILURES: 4,
  SAMPLES: 20,
  FIRST_SAMPLE: 21,
  MAX_SAMPLES: 64,
  LEN: 85,
} as const;

/** Byte offsets in a slot's 64-byte header (`slot::field` in core-rs/src/slot.rs). */
export const SLOT = {
  HEADER_SIZE: 64,
  CODE: 0,
  FLAGS: 4,
  INPUT_LEN: 8,
  OUTPUT_CAP: 12,
  GENERATION: 16,
  STATUS: 20,
  OUTPUT_LEN: 24,
  REPLY_GENERATION: 28,
  CLAIM: 32,
} as const;

/** Values of a slot's claim word (`slot::CLAIM_*` in core-rs/src/slot.rs). */
export const CLAIM = { PENDING: 1, CANCELLED: 2, TAKEN: 3 } as const;

/**
 * A ring header's size and the byte offsets of its read position and sleep flag, and the flag's
 * values when the consumer needs no wake and when its process watches the control socket
 * (`RingHeader`, `ring::AWAKE` and `ring::WATCHED` in core-rs/src/ring.rs).
 */
export const RING = { HEADER_SIZE: 128, READ: 0, FLAG: 4, AWAKE: 0, WATCHED: 2 } as const;

/** The 32-bit words of a hub event (`HubEvent` in bindings/src/surface.rs). */
export const EVENT_WORD = {
  KIND: 0,
  CODE: 1,
  OWNER: 2,
  TOKEN: 4,
  HANDLE: 6,
  IN_SEGMENT: 12,
  INPUT_OFFSET: 13,
  OUTPUT_OFFSET: 14,
  INPUT_LEN: 16,
  OUTPUT_LEN: 17,
  PID: 18,
  UID: 19,
  /** Words in an event. */
  WORDS: 20,
} as const;

/** What {@linkcode Native.hubIdle} found (`Idle` in bindings/src/hub.rs). */
export const IDLE = { EVENTS: 0, IDLE: 1, SPENT: 2 } as const;

/** The mode flags of a command (`slot::FLAG_*` in core-rs/src/slot.rs). */
export const FLAG = { INLINE: 1, WORKER: 2, STATS: 4, QUEUE: 8 } as const;

/**
 * Event queues' operation codes, limits and list layout (`core-rs/src/queue.rs`; byte offsets
 * in the list, docs/events.md).
 */
export const QUEUE = {
  POST: 1,
  LIST: 2,
  BELL: 3,
  REGISTER: 4,
  UNREGISTER: 5,
  POSTS: 6,
  POSTS_RECORD_HEADER: 8,
  /** The most input one `POSTS` carries. */
  MAX_POSTS_INPUT: 65536,
  /** The protocol minor from which a host takes `POSTS`. */
  POSTS_SINCE_MINOR: 5,
  EVENTS_LISTED: 0,
  EVENTS_ALL: 1,
  MAX_DATA: 240,
  MAX_CAPACITY: 65536,
  /** Words of a queue's counters: posted, delivered, dropped, connections, consumers. */
  STATS_LEN: 5,
  LIST_MAGIC: 0x4c514853,
  LIST_CAPACITY_AT: 8,
  LIST_FLAG_AT: 12,
  LIST_WRITE_AT: 16,
  LIST_DROPPED_AT: 20,
  LIST_READ_AT: 64,
  LIST_ENTRIES_AT: 128,
  LIST_ENTRY_HEADER: 16,
  LIST_ENTRY_SIZE: 256,
  LIST_SLEEPING: 1,
  LIST_AWAKE: 0,
} as const;

declare const handleBrand: unique symbol;
/** A client or server as the library names it: a checked `u32` handle, in both runtimes. */
export type Handle = number & { readonly [handleBrand]: true };

/** A pool worker, as the runtime started it (see `pool.ts`). */
export interface WorkerPort {
  /** Sends a message (a structured clone; throws when it cannot be cloned). */
  post(message: unknown): void;
  /** Receives its messages. */
  onMessage(receive: (message: unknown) => void): void;
  /** Learns of an error it did not catch (it is then unusable). */
  onError(receive: (error: string) => void): void;
  /** Learns that it ended, where the runtime says so (Node's `exit`; Deno's worker says "exiting" itself). */
  onExit(receive: () => void): void;
  /** Stops it at once. */
  terminate(): void;
}

/** Which doorbell wakes the event loop when the core queues events for an idle thread. */
export type Doorbell = "napi" | "wait";

/** The fields of the hub event last taken (the layout of `HubEvent` in bindings/src/surface.rs). */
export interface HubEventView {
  readonly kind: number;
  readonly code: number;
  readonly owner: number;
  readonly token: number;
  /** A ticket's, command's or (connected) client's handle (a `u32`). */
  readonly handle: number;
  /** Whether the areas lie in the connection's segment (else: the backup path). */
  readonly inSegment: boolean;
  readonly inputOffset: number;
  readonly outputOffset: number;
  readonly inputLength: number;
  readonly outputLength: number;
  readonly pid: number;
  readonly uid: number;
}

const TWO_32 = 0x1_0000_0000;

/**
 * Reads hub events out of the 20 words the core writes them to. Ids and offsets are read as
 * numbers, which cost no allocation (ids stay far below 2^53).
 */
export function eventView(words: Uint32Array): HubEventView {
  const ints = new Int32Array(words.buffer, words.byteOffset, words.length);
  const W = EVENT_WORD;
  return {
    get kind() {
      return words[W.KIND]!;
    },
    get code() {
      return ints[W.CODE]!;
    },
    get owner() {
      return words[W.OWNER]! + words[W.OWNER + 1]! * TWO_32;
    },
    get token() {
      return words[W.TOKEN]! + words[W.TOKEN + 1]! * TWO_32;
    },
    get handle() {
      return words[W.HANDLE]!;
    },
    get inSegment() {
      return words[W.IN_SEGMENT] === 1;
    },
    get inputOffset() {
      return words[W.INPUT_OFFSET]!;
    },
    get outputOffset() {
      return words[W.OUTPUT_OFFSET]!;
    },
    get inputLength() {
      return words[W.INPUT_LEN]!;
    },
    get outputLength() {
      return words[W.OUTPUT_LEN]!;
    },
    get pid() {
      return ints[W.PID]!;
    },
    get uid() {
      return words[W.UID]!;
    },
  };
}

/**
 * One view over a whole segment, which the runtime keeps mapped while the view is reachable —
 * or until {@linkcode Mapping.release}. Every area handed to user code is a subarray of it, so
 * they share its `ArrayBuffer`.
 */
export class Mapping {
  readonly view: Uint8Array;
  #release: ((buffer: ArrayBuffer | undefined) => void) | undefined;

  /**
   * `release` detaches the view's `buffer` and lets the segment go at once. It gets
   * `undefined` when someone else detached the buffer already: user code may transfer an
   * area's buffer, which moves the memory to another `ArrayBuffer` that still points into the
   * segment, so the segment must then stay mapped for as long as that one lives.
   */
  constructor(view: Uint8Array, release: (buffer: ArrayBuffer | undefined) => void) {
    this.view = view;
    this.#release = release;
  }

  /**
   * Gives the segment back now rather than at a garbage collection: every view of it becomes
   * empty, so none can reach unmapped memory. For a connection that closed (a view per
   * connection would otherwise hold its mapping, and count as external memory that drives the
   * collector, until a collection), and for a thread about to end (a pool worker), whose
   * collector would never run. Idempotent.
   */
  release(): void {
    const release = this.#release;
    if (release === undefined) return;
    this.#release = undefined;
    this.#views.clear();
    const buffer = this.view.buffer as ArrayBuffer;
    // A segment is never empty, so an empty buffer is a detached one (Node 20 has no
    // `ArrayBuffer.prototype.detached`).
    release(buffer.byteLength === 0 ? undefined : buffer);
  }

  /**
   * Whether user code detached the view's buffer: `transfer()`, `structuredClone` or
   * `postMessage` with a transfer list, on any area (they all share it). The memory then
   * belongs to the buffer it went to, and stays mapped for it ({@linkcode Mapping.release});
   * the owner of this view releases it and views the segment again.
   */
  get detached(): boolean {
    // A segment is never empty, and a detached view has length 0.
    return this.view.length === 0;
  }

  /**
   * Views made, by offset: a slot's areas come back command after command, usually with the
   * same lengths, and a view made once spares an allocation (and the garbage collections it
   * leads to) per command. A view is of shared memory either way, so handing out the same
   * object again changes nothing a user could see in its bytes.
   */
  readonly #views = new Map<number, Uint8Array>();

  /** The area at `offset` in this segment, if it lies inside, else `undefined`. */
  at(offset: number, length: number): Uint8Array | undefined {
    const made = this.#views.get(offset);
    if (made !== undefined && made.length === length) return made;
    const end = offset + length;
    if (end > this.view.length) return undefined;
    const view = this.view.subarray(offset, end);
    this.#views.set(offset, view);
    return view;
  }
}

/**
 * The core's primitives. Every call that can fail throws an `IpcError` with the core's status
 * and sentence; handles are checked by the core, never trusted.
 */
export interface Native {
  /** The sentence of the last failure of a core call on this thread. */
  lastError(): string;
  /** The protocol version the core speaks, as "major.minor". */
  protocolVersion(): string;
  /** The socket directory `dir` names (undefined: the default), resolved and created as the core does. */
  socketDir(dir: string | undefined): string;

  /** The value of the library's constant `name` (`CONSTANTS` in bindings/src/surface.rs), or `undefined`. */
  constant(name: string): number | undefined;

  /**
   * Connects: the client's handle when the server answered at once (within a millisecond);
   * otherwise `undefined`, and the connect's end comes as a {@linkcode EVENT}`.CONNECTED` hub
   * event for `id` (the library's I/O thread waits for it, so a server of this process runs
   * `open` meanwhile). Throws when the connect cannot even start or was refused at once.
   */
  clientConnect(
    icId: string,
    dir: string | undefined,
    spinNs: number,
    id: number,
    /** Above 0: the segment's large slot class is one slot of this much output. */
    largeOutput?: number,
  ): Handle | undefined;
  /** The client's segment, mapped for as long as the returned view is reachable. */
  clientSegment(client: Handle): Mapping;
  /** Takes a slot (or backup buffers) for a command; returns the ticket, its areas' offsets are in {@linkcode Native.begunAt}. */
  clientBegin(
    client: Handle,
    code: number,
    inputLength: number,
    outputCapacity: number,
    mode: number,
  ): number;
  /** Where {@linkcode Native.clientBegin} put the command: input and output offsets in the segment, then its slot; {@linkcode NOWHERE} on the backup path. */
  readonly begunAt: Uint32Array;
  /** Copies `input` into a backup-path ticket's input area. */
  ticketWriteInput(ticket: number, input: Uint8Array): void;
  /** Copies a finished backup-path ticket's output into `into` (`into.length` bytes at most). */
  ticketReadOutput(ticket: number, into: Uint8Array): void;
  /**
   * Sends and waits inside this call, for at most `timeoutMs` when it is positive (then
   * `CANCELLED` if the server had not taken it, else `TIMED_OUT`); returns the server's status
   * ({@linkcode Native.callLength} the output length).
   */
  clientCall(client: Handle, ticket: number, timeoutMs: number): number;
  /** The output length of the last {@linkcode Native.clientCall}. */
  callLength(): number;
  /** Sends; the finished ticket comes back as a hub completion with `token`. */
  clientSubmit(client: Handle, ticket: number, token: number): void;
  /** Withdraws the submitted command in `slot` unless the server took it; true if it did (its completion, `CANCELLED`, still comes). */
  clientWithdraw(client: Handle, slot: number): boolean;
  /** Copies the client's counters into `into` (positions in {@linkcode STATS}). */
  clientStats(client: Handle, into: Float64Array): void;
  /** The library's monotonic clock, in ns (cheaper than `performance.now()` in Deno). */
  nowNs(): number;
  /**
   * Lends the client's rings and slots to this thread, which pushes and pops them itself
   * (`src/lane.ts`): writes the layout and where the rings stand into `into` (positions in
   * {@linkcode LANE}). Answers to pop then come as {@linkcode EVENT}`.LANE` events.
   */
  clientLend(client: Handle, into: Uint32Array): void;
  /** After a push onto a lent CS ring whose sleep flag was raised: wakes the server. */
  clientLaneWake(client: Handle): void;
  /** The protocol minor the client's connection speaks: the lower of its server's and ours. */
  clientProtocolMinor(client: Handle): number;
  /**
   * The lent client takes its answers itself when it next sends or waits: the core no longer
   * arms its SC ring, so an answer wakes nobody (the queue's one-way posts).
   */
  clientLaneQuiet(client: Handle): void;
  /**
   * An asynchronous command went out while the lent SC ring was armed (`Lane.watched`): the
   * core's owner polls it again, so that its answer needs no WAKE frame.
   */
  clientLaneActivate(client: Handle): void;
  /**
   * Waits on this thread for an answer to pop from a lent SC ring, at most `timeoutMs` when
   * positive: true when one is there, false when the time ran out; throws the connection's end.
   */
  clientLaneWait(client: Handle, timeoutMs: number): boolean;
  /** The server broke the protocol, as a lane found: ends the connection with `why`. */
  clientLaneViolation(client: Handle, why: string): void;
  /** Adds what a lane counted (positions in {@linkcode LANE_COUNT}) to the client's counters. */
  clientLaneCount(client: Handle, report: Float64Array): void;
  /** Frees a ticket and gives its slot back. */
  ticketFree(ticket: number): void;
  /** Closes the connection and frees the handle. */
  clientFree(client: Handle): void;

  /**
   * Serves; `id` names the server in hub events. `asksOpen`: a client is welcome only once
   * {@linkcode Native.serverOpened} answered its open event; without, at once (its open event
   * only tells). `lanes`: every connection is lent to this thread as it opens, which takes its
   * slot commands itself (`ServerLane` in `src/lane.ts`; lane events name the connection).
   */
  serverServe(
    icId: string,
    dir: string | undefined,
    spinNs: number,
    id: number,
    flags: number,
  ): Handle;
  /** The layout and ring positions of lent connection `conn` (positions in {@linkcode LANE}). */
  serverLaneLayout(server: Handle, conn: number, into: Uint32Array): void;
  /** A view of lent connection `conn`'s segment. */
  serverLaneSegment(server: Handle, conn: number): Mapping;
  /** After a push onto lent connection `conn`'s SC ring whose sleep flag was raised: wakes the client (nothing once it is gone). */
  serverLaneWake(server: Handle, conn: number): void;
  /** The client of lent connection `conn` broke the protocol, as a lane found: drops it, saying `why`. */
  serverLaneViolation(server: Handle, conn: number, why: string): void;
  /**
   * Keeps a command of lent connection `conn` past this turn (an `exec` that answers later): the
   * connection and its segment stay until the matching {@linkcode Native.serverLaneRelease}.
   */
  serverLaneHold(server: Handle, conn: number): void;
  /** A command kept with {@linkcode Native.serverLaneHold} was answered. */
  serverLaneRelease(server: Handle, conn: number): void;
  /** Lent connection `conn` ended, and this thread took what it had left. */
  serverLaneDrained(server: Handle, conn: number): void;
  /** Adds what a server's lanes counted (positions in {@linkcode LANE_COUNT}). */
  serverLaneCount(server: Handle, report: Float64Array): void;
  /** Answers an open: 0 accepts, a negative status refuses (`reason`, may be empty, for the client). */
  serverOpened(server: Handle, conn: number, status: number, reason: string): void;
  /** Copies the server's counters into `into` (positions in {@linkcode STATS}). */
  serverStats(server: Handle, into: Float64Array): void;
  /** Records the pool's size and whether the server quiesces, which its counters report. */
  serverNote(server: Handle, workers: number, quiescing: boolean): void;
  /** Takes a command to run it; false (and the command answered `CANCELLED` and freed) when its client withdrew it. */
  commandTake(command: number): boolean;
  /** Answers a command (copying `output` into its area first, when given) and frees it. */
  commandFinish(command: number, status: number, length: number, output: Uint8Array | null): void;
  /** The segment of an in-segment command, mapped for as long as the returned view is reachable. */
  commandSegment(command: number): Mapping;
  /** Copies a command's input into `into` (the backup path). */
  commandReadInput(command: number, into: Uint8Array): void;
  /** Stops the server and frees the handle. */
  serverFree(server: Handle): void;

  /** Makes this thread the one that drains the hub; throws while another thread has objects. */
  hubClaim(): number;
  /** How many doorbells were installed in the process so far (see {@linkcode Native.hubClaim}). */
  hubBells(): number;
  /** This thread has no client or server left: another may claim the hub. */
  hubUnclaim(): void;
  /** An id for a client or server, unique in the process. */
  hubNewId(): number;
  /** Takes the next hub event into {@linkcode Native.event}; false when there is none. */
  hubNext(): boolean;
  /** The event {@linkcode Native.hubNext} took last. */
  readonly event: HubEventView;
  /** A drain begins, which should hand the event loop back after `budgetNs`. */
  hubDrain(budgetNs: number): void;
  /** Whether the current drain's budget is spent. */
  hubSpent(): boolean;
  /**
   * The pool of `server` (one served without lanes), as a handle of its own, which outlives the
   * server until {@linkcode Native.poolFree} (its workers' commands are accounted for there).
   */
  serverPool(server: Handle): Handle;
  /** Frees a pool's handle, once its workers stopped. */
  poolFree(pool: Handle): void;
  /**
   * Worker `worker` of `pool` waits for its next command (spinning `spinNs`, then sleeping, for
   * at most `waitNs`): true with the command in {@linkcode Native.event} as an exec event; false
   * when none came. Throws `CLOSED` once the server closed.
   */
  poolTake(pool: Handle, worker: number, spinNs: number, waitNs: number): boolean;
  /** Answers with `status` the commands worker `worker` of `pool` held (it is gone); returns how many. */
  poolBury(pool: Handle, worker: number, status: number): number;
  /** The server's thread takes a {@linkcode POOL_NOTE}`.POKE`, before it posts the workers their pokes. */
  poolPoked(pool: Handle): void;
  /** The commands `pool` has queued or its workers hold. */
  poolInProgress(pool: Handle): number;
  /** Waits up to `waitNs` for events (popping the rings), then arms the doorbell: one of {@linkcode IDLE}. */
  hubIdle(waitNs: number): number;
  /** Installs `ring` as the doorbell of this thread; says which kind it is. */
  installDoorbell(ring: () => void): Doorbell;
  /** The fallback doorbell (`"wait"`): resolves when events are queued, on interrupt, or on timeout. */
  hubWait(timeoutNs: number): Promise<number>;
  /** Ends a pending {@linkcode Native.hubWait}. */
  hubInterrupt(): void;

  /** Hosts the event queue `queueId` in `dir` (empty: the default), on the core's own thread. */
  queueServe(queueId: string, dir: string): Handle;
  /** An event queue's counters into `into` ({@linkcode QUEUE}'s `STATS_LEN` words). */
  queueStats(queue: Handle, into: Float64Array): void;
  /** Stops hosting an event queue and frees its handle. */
  queueFree(queue: Handle): void;

  /** Starts a pool worker of this runtime, which binds the core and runs `runWorker` (`worker.ts`). */
  startWorker(): WorkerPort;
}

function unbound(): never {
  throw new Error(
    "shmcall's core is not loaded: import shmcall from its entry (mod.ts in Deno, the package in Node)",
  );
}

/** The primitives of the runtime this process runs in, once its entry bound them. */
export let native: Native = new Proxy({} as Native, { get: unbound });

/** Binds the runtime's primitives (once per process; its entry does it on import). */
export function bindNative(primitives: Native): void {
  native = primitives;
}
