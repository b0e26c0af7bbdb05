/**
 * The client: {@linkcode connect} and {@linkcode Client.execute}.
 *
 * @module
 */

import { clearTimeout as cancelLater, setTimeout as later } from "node:timers";
import { IpcError } from "./errors.ts";
import * as hub from "./hub.ts";
import { Lane } from "./lane.ts";
import { EVENT, FLAG, type Handle, LANE, type Mapping, native, NOWHERE, STATS } from "./native.ts";
import { readServerStats, readStats, type ServerStats, type Stats } from "./stats.ts";
import { Status, statusName } from "./status.ts";
import { checkIcId, checkOptionsObject, checkSocketDir, shown, spinNanos } from "./validate.ts";
import { checkNatsOptions, type NatsOptions } from "./nats.ts";
import { connectThroughNats, type NatsClient } from "./nats_client.ts";

/** Largest input or output area a command may have, in bytes (64 MiB). */
export const MAX_AREA = 64 << 20;

/** How {@linkcode connect} connects. */
export interface ConnectOptions {
  /** The socket directory; by default `$SHMCALL_DIR`, `$XDG_RUNTIME_DIR/shmcall` or `/tmp/shmcall-<uid>`. */
  socketDir?: string;
  /** How long a waiting thread spins before it sleeps, in microseconds (default 50). */
  spinMicros?: number;
  /**
   * The {@linkcode ExecuteOptions.timeout} of every command of this client that gives none,
   * in milliseconds (default: none).
   */
  timeout?: number;
  /**
   * Connect again when the server goes away (`true`: the default policy). Off by default.
   *
   * The commands out when the server went away fail `PEER_TERMINATED` and are never sent
   * again: they may have run. The client notices the loss with the first command that fails
   * so; it then connects again in the background, after `minDelay` ms, doubling the wait after
   * each failed attempt up to `maxDelay`. Commands issued meanwhile fail at once with
   * `PEER_TERMINATED` ("connecting again"); once connected, later commands go to the new
   * server (a restart on the same ic id) and counters start again. After `attempts` failed
   * attempts the client gives up and closes: its commands fail `PEER_TERMINATED`, saying so.
   */
  reconnect?: boolean | ReconnectOptions;
  /**
   * Reach the ic id through NATS, and only so ({@linkcode NatsClient}): where the NATS servers
   * are, and NATS's own connection options (authentication, TLS, reconnecting), passed
   * through. `socketDir` and `spinMicros` do not apply then, and `reconnect` is refused: the
   * NATS client reconnects by its own options.
   */
  nats?: NatsOptions;
}

/** A client's policy for connecting again ({@linkcode ConnectOptions.reconnect}). */
export interface ReconnectOptions {
  /** Attempts before the client gives up and closes (default 10, at most 1,000). */
  attempts?: number;
  /** The wait before the first attempt, in ms (default 50). */
  minDelay?: number;
  /** The longest wait between two attempts, in ms (default 2,000). */
  maxDelay?: number;
}

/** A command's result. */
export interface ExecuteResult {
  /** The server's status (>= 0; library failures are thrown as {@linkcode IpcError}). */
  status: number;
  /** The number of output bytes the server wrote. */
  length: number;
  /**
   * The output: by default a copy of the output area into `output` (or a fresh array),
   * `length` bytes; with an `outputPost` callback, what it returned if that is a
   * `Uint8Array`, else `output` (or an empty array).
   */
  output: Uint8Array;
}

/** Called last for an asynchronous command, with its result and the `context` option. */
export type Completion<C> = (result: ExecuteResult, context: C) => void;

/** One command's options. The areas handed to callbacks are views of shared memory. */
export interface ExecuteOptions<C = unknown> {
  /** Bytes to send. */
  input?: Uint8Array;
  /** The input area's size; defaults to `input.length`. */
  inputLength?: number;
  /** A buffer that receives the output. */
  output?: Uint8Array;
  /** The output area's capacity; defaults to `output.length` (0 without `output`). */
  outputLength?: number;
  /** Fills the input area before sending; the default copies `input` into it. */
  inputPrepare?: (area: Uint8Array, input: Uint8Array | undefined) => void;
  /** Prepares the output area before sending; the default does nothing. */
  outputPrepare?: (area: Uint8Array, output: Uint8Array | undefined) => void;
  /** Sees the input area after the server finished; the default does nothing. */
  inputPost?: (area: Uint8Array, input: Uint8Array | undefined) => void;
  /**
   * Reads the output area (cut to the reported length) after the server finished; the
   * default copies it into `output`, or into a fresh array.
   */
  outputPost?: (area: Uint8Array, output: Uint8Array | undefined) => Uint8Array | void;
  /** Makes the call asynchronous: called last, then the Promise settles. */
  completion?: Completion<C>;
  /** Handed to `completion`. */
  context?: C;
  /** Run on the thread that receives it (`true`) or the server's pool (`false`); default: the server's choice. */
  inline?: boolean;
  /**
   * Withdraws the command when it aborts, if the server has not taken it yet (asynchronous
   * calls only): `completion` gets `CANCELLED` and the Promise rejects with an
   * {@linkcode IpcError} of status `CANCELLED` at once. Once the server took it, an abort
   * has no effect. See {@linkcode ExecuteOptions.timeout} for what "taken" means.
   */
  signal?: AbortSignal;
  /**
   * A deadline on the whole wait, in milliseconds, for synchronous and asynchronous calls
   * alike (default: the client's, from {@linkcode ConnectOptions.timeout}, else none). When it
   * passes:
   *
   * - a command the server has not taken is withdrawn: it never runs, and the call fails
   *   `CANCELLED`;
   * - a taken one fails `TIMED_OUT`: it may have run, or may still be running. Its answer,
   *   when it comes, is discarded, and its slot serves again only then: a late answer never
   *   reaches a later command.
   *
   * The server takes a command when its `exec` is about to run it (inline) or it hands it
   * to a worker. A command on the backup path (no free slot fits it) is taken as it is sent.
   * So `CANCELLED` always means the command did not run; any other failure may not.
   */
  timeout?: number;
}

type Callback = "inputPrepare" | "outputPrepare" | "inputPost" | "outputPost" | "completion";

/** An asynchronous command between `submit` and its completion. */
interface Pending {
  /** Areas user code sees: views of the segment, or arrays of ours on the backup path. */
  input: Uint8Array;
  output: Uint8Array;
  backup: boolean;
  /** The command's slot ({@linkcode NOWHERE} on the backup path), to withdraw it. */
  slot: number;
  options: ExecuteOptions<unknown>;
  resolve: (r: ExecuteResult) => void;
  reject: (e: unknown) => void;
  /** Stops watching `signal` and `timeout`, once settled. */
  unwatch: (() => void) | undefined;
}

/**
 * The asynchronous commands of a client between `submit` and their completion, by token. A
 * command on a slot has the slot's index as its token — a slot holds one command at a time,
 * until its completion frees it — and is kept in an array; one on the backup path has a token
 * from {@linkcode BACKUP_TOKENS} on and is kept in a map. An array indexed by slot allocates
 * nothing per command, where a map's sets and deletes cost some 200 bytes of garbage each
 * (measured here: a pending map made a pipelined command allocate 780 bytes).
 */
class PendingTable {
  readonly #bySlot: (Pending | undefined)[] = [];
  readonly #backup = new Map<number, Pending>();
  #size = 0;

  get size(): number {
    return this.#size;
  }

  /** Empties the table; returns what it held. */
  take(): Pending[] {
    const all = this.values();
    this.#bySlot.length = 0;
    this.#backup.clear();
    this.#size = 0;
    return all;
  }

  /** Takes the commands out on slots out of the table; returns them. */
  takeSlots(): Pending[] {
    const all = this.#bySlot.filter((p) => p !== undefined);
    this.#bySlot.length = 0;
    this.#size -= all.length;
    return all;
  }

  get(token: number): Pending | undefined {
    return token < BACKUP_TOKENS ? this.#bySlot[token] : this.#backup.get(token);
  }

  set(token: number, p: Pending): void {
    if (token < BACKUP_TOKENS) {
      // Filled up to the index first, so that the array stays packed.
      while (this.#bySlot.length < token) this.#bySlot.push(undefined);
      this.#bySlot[token] = p;
    } else {
      this.#backup.set(token, p);
    }
    this.#size++;
  }

  delete(token: number): void {
    if (token < BACKUP_TOKENS) {
      if (this.#bySlot[token] === undefined) return;
      this.#bySlot[token] = undefined;
    } else if (!this.#backup.delete(token)) {
      return;
    }
    this.#size--;
  }

  values(): Pending[] {
    const all = this.#bySlot.filter((p) => p !== undefined);
    return all.concat([...this.#backup.values()]);
  }
}

/** The key of {@linkcode Client}'s queue operations, which only `queue.ts` uses. */
export const queueOperation: unique symbol = Symbol("shmcall queue operation");
/**
 * The key of {@linkcode Client}'s one-way send of a queue operation (a post): it goes on the CS
 * ring and the call returns, its answer taken later (`Client[queueSend]`).
 */
export const queueSend: unique symbol = Symbol("shmcall queue send");
/** The key of {@linkcode Client}'s wait for its one-way sends' answers. */
export const queueFlush: unique symbol = Symbol("shmcall queue flush");
/** The key of {@linkcode Client}'s one-way batches (`Client[queueAppend]`). */
export const queueAppend: unique symbol = Symbol("shmcall queue append");
/** The key of {@linkcode Client}'s area of the one-way batch being filled. */
export const queueArea: unique symbol = Symbol("shmcall queue area");
/** The key of {@linkcode Client}'s protocol minor, as negotiated with its server. */
export const queueMinor: unique symbol = Symbol("shmcall queue minor");

let capturedResolve: ((r: ExecuteResult) => void) | undefined;
let capturedReject: ((e: unknown) => void) | undefined;

/** The executor of every command's Promise: it leaves the resolvers where `#issue` takes them. */
function captureResolvers(
  resolve: (r: ExecuteResult) => void,
  reject: (e: unknown) => void,
): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

/** Answers popped before the commands they settled may issue more (`Client.#popAnswers`). */
const ANSWERS_AT_ONCE = 16;

/** The output of no command. */
const NO_OUTPUT = new Uint8Array(0);

/** The first token of commands on the backup path (below it: slot indexes). */
const BACKUP_TOKENS = 2 ** 32;

/** The longest `timeout` a command may have, in ms (that of `setTimeout`). */
const MAX_TIMEOUT = 0x7fff_ffff;

/** The options of a call that passed none. */
const NO_OPTIONS: ExecuteOptions<unknown> = Object.freeze({});

/** The input area's length {@linkcode checkOptions} found (a variable, not a fresh pair). */
let checkedInput = 0;
/** The output area's length {@linkcode checkOptions} found. */
let checkedOutput = 0;

function checkCallback(name: Callback, f: unknown): void {
  if (f !== undefined && typeof f !== "function") {
    throw new TypeError(`${name} must be a function, received ${shown(f)}`);
  }
}

function checkLength(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > MAX_AREA) {
    throw new RangeError(
      `${name} must be an integer from 0 to ${MAX_AREA}, received ${shown(value)}`,
    );
  }
}

/** Throws unless `array` is undefined or a Uint8Array whose memory is still there. */
function checkArray(name: string, array: unknown): void {
  if (array === undefined) return;
  if (!(array instanceof Uint8Array)) {
    throw new TypeError(`${name} must be a Uint8Array, received ${shown(array)}`);
  }
  // Only an empty array may be detached: the look is paid for empty ones alone.
  if (array.length === 0 && isDetached(array.buffer)) {
    throw new TypeError(
      `${name} is detached: its memory was transferred (transfer(), structuredClone or postMessage with a transfer list); pass an array whose memory you still hold`,
    );
  }
}

/** Whether `buffer` was detached (Node 20 has no `ArrayBuffer.prototype.detached`). */
function isDetached(buffer: ArrayBufferLike): boolean {
  if (buffer.byteLength !== 0) return false;
  const detached = (buffer as { detached?: boolean }).detached;
  if (detached !== undefined) return detached;
  try {
    new Uint8Array(buffer);
    return false;
  } catch {
    return true;
  }
}

/**
 * Checks a command's arguments, as {@linkcode Client.execute} does, for another kind of client:
 * the input and output areas' lengths.
 */
export function checkCommand(code: unknown, o: ExecuteOptions<unknown>): [number, number] {
  checkOptions(code, o);
  return [checkedInput, checkedOutput];
}

/** Checks a command's arguments; the areas' lengths go to `checkedInput`/`checkedOutput`. */
function checkOptions(code: unknown, o: ExecuteOptions<unknown>): void {
  if (typeof code !== "number" || !Number.isInteger(code) || code < 0 || code > 0xffff_ffff) {
    throw new RangeError(`code must be an integer from 0 to 4294967295, received ${shown(code)}`);
  }
  if (typeof o !== "object" || o === null) {
    throw new TypeError(
      `the options of execute must be an object (or omitted), received ${shown(o)}`,
    );
  }
  const { input, output } = o;
  checkArray("input", input);
  checkArray("output", output);
  // One by one, not in a loop over names: a keyed lookup is several times slower.
  checkCallback("inputPrepare", o.inputPrepare);
  checkCallback("outputPrepare", o.outputPrepare);
  checkCallback("inputPost", o.inputPost);
  checkCallback("outputPost", o.outputPost);
  checkCallback("completion", o.completion);
  if (o.inline !== undefined && typeof o.inline !== "boolean") {
    throw new TypeError(`inline must be a boolean, received ${shown(o.inline)}`);
  }
  if (o.signal !== undefined || o.timeout !== undefined) checkCancellation(o);
  const inputLength = o.inputLength ?? input?.length ?? 0;
  checkLength("inputLength", inputLength);
  if (input !== undefined && o.inputPrepare === undefined && input.length > inputLength) {
    throw new RangeError(`input of ${input.length} bytes does not fit inputLength ${inputLength}`);
  }
  const outputLength = o.outputLength ?? output?.length ?? 0;
  checkLength("outputLength", outputLength);
  if (output !== undefined && o.outputPost === undefined && output.length < outputLength) {
    throw new RangeError(
      `output of ${output.length} bytes is shorter than outputLength ${outputLength}`,
    );
  }
  checkedInput = inputLength;
  checkedOutput = outputLength;
}

function checkCancellation(o: ExecuteOptions<unknown>): void {
  const { signal } = o;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError(`signal must be an AbortSignal, received ${shown(signal)}`);
  }
  checkTimeout("timeout", o.timeout);
  if (signal !== undefined && o.completion === undefined) {
    throw new TypeError(
      "signal needs an asynchronous call (pass completion): nothing can abort a synchronous call while its thread waits (give it a timeout)",
    );
  }
}

/** The policy `reconnect` asks for (defaults filled in), or undefined; throws on a bad one. */
function reconnectPolicy(reconnect: unknown): Required<ReconnectOptions> | undefined {
  if (reconnect === undefined || reconnect === false) return undefined;
  if (reconnect !== true && (typeof reconnect !== "object" || reconnect === null)) {
    throw new TypeError(
      `reconnect must be a boolean or { attempts, minDelay, maxDelay }, received ${
        shown(reconnect)
      }`,
    );
  }
  const r = reconnect === true ? {} : reconnect as ReconnectOptions;
  const policy = {
    attempts: r.attempts ?? 10,
    minDelay: r.minDelay ?? 50,
    maxDelay: r.maxDelay ?? 2_000,
  };
  if (!Number.isInteger(policy.attempts) || policy.attempts < 1 || policy.attempts > 1_000) {
    throw new RangeError(
      `reconnect.attempts must be an integer from 1 to 1000, received ${shown(policy.attempts)}`,
    );
  }
  for (const name of ["minDelay", "maxDelay"] as const) {
    const v = policy[name];
    if (typeof v !== "number" || !(v >= 0) || v > MAX_TIMEOUT) {
      throw new RangeError(
        `reconnect.${name} must be a number of milliseconds from 0 to ${MAX_TIMEOUT}, received ${
          shown(v)
        }`,
      );
    }
  }
  if (policy.maxDelay < policy.minDelay) {
    throw new RangeError(
      `reconnect.maxDelay (${policy.maxDelay}) must be at least reconnect.minDelay (${policy.minDelay})`,
    );
  }
  return policy;
}

/** Checks a timeout option named `name`: undefined, or milliseconds in (0, MAX_TIMEOUT]. */
export function checkTimeout(name: string, timeout: unknown): void {
  if (
    timeout !== undefined &&
    (typeof timeout !== "number" || !(timeout > 0) || timeout > MAX_TIMEOUT)
  ) {
    throw new RangeError(
      `${name} must be a number of milliseconds from 0 (excluded) to ${MAX_TIMEOUT}, received ${
        shown(timeout)
      }`,
    );
  }
}

/**
 * A connection to a server. Create one with {@linkcode connect}.
 *
 * @example A round trip (the server runs in this process here, so the call is asynchronous)
 * ```ts
 * import { connect, serve } from "shmcall";
 *
 * await using _server = await serve("doc-client", {
 *   exec: ({ input, output }) => {
 *     output.set(input);
 *     return { status: 0, length: input.length };
 *   },
 * });
 * using client = await connect("doc-client");
 * const r = await client.execute(1, {
 *   input: new Uint8Array([1, 2, 3]),
 *   outputLength: 3,
 *   completion: () => {},
 * });
 * console.log(r.output); // Uint8Array(3) [ 1, 2, 3 ]
 * ```
 */
export class Client {
  #handle: Handle | null;
  #id: number;
  /** The segment's view. */
  #segment: Mapping | undefined;
  /**
   * The connection's rings and slots, which this thread pushes and pops itself: made with the
   * segment's view on the first command (a process may hold thousands of idle connections).
   */
  #lane: Lane | undefined;
  /** Where the rings stood when the core lent them (positions of `LANE`). */
  #lent: Uint32Array;
  /**
   * Answers a synchronous command's wait popped for asynchronous ones, as (slot, status,
   * length) triples: their completions run at the next microtask, never inside the wait.
   */
  readonly #early: number[] = [];
  #earlyScheduled = false;
  /** Why the connection ended, once its lane heard of it. */
  #ended: IpcError | undefined;
  readonly #pending = new PendingTable();
  #nextToken = 1;
  readonly #icId: string;
  /** The server's key in `hub.served`, made on first need (it resolves a path). */
  #endpoint: string | undefined;
  readonly #socketDir: string | undefined;
  /** The `timeout` of commands that give none ({@linkcode ConnectOptions.timeout}). */
  readonly #timeout: number | undefined;
  readonly #spinMicros: number | undefined;
  /** How it connects again ({@linkcode ConnectOptions.reconnect}), if it does. */
  readonly #policy: Required<ReconnectOptions> | undefined;
  /** While it connects again: the attempt under way or next (from 1); else 0. */
  #attempt = 0;
  #retry: ReturnType<typeof later> | undefined;
  /** Why it closed itself: its last attempt to connect again failed. */
  #gaveUp: string | undefined;
  /** The output length and output of the last synchronous command (see `execute`). */
  #answered = 0;
  #answeredOutput: Uint8Array = NO_OUTPUT;
  /** The counters' last snapshot (kept at close, so that `stats()` still answers). */
  readonly #stats = new Float64Array(STATS.LEN);

  /** @internal Use {@linkcode connect}. */
  constructor(icId: string, options: ConnectOptions, id: number, handle: Handle) {
    this.#icId = icId;
    this.#socketDir = options.socketDir;
    this.#timeout = options.timeout;
    this.#spinMicros = options.spinMicros;
    this.#policy = reconnectPolicy(options.reconnect);
    this.#id = id;
    this.#handle = handle;
    // Before any command: from now on the slots and rings are this thread's (src/lane.ts).
    this.#lent = new Uint32Array(LANE.WORDS);
    native.clientLend(handle, this.#lent);
    hub.adopt(id, this);
  }

  #fenceQueued = false;
  /**
   * Ends a batch of asynchronous commands (`Lane.fence`), once the microtasks that issued them
   * ran or this thread goes idle (`hub.fenceSoon`): one fence and one look at the server's sleep
   * flag for all of them. A closed client, or one whose connection ended, has nothing to wake.
   */
  readonly #fence = (): void => {
    this.#fenceQueued = false;
    const handle = this.#handle;
    const lane = this.#lane;
    if (handle === null || lane === undefined || !lane.unfenced || this.#ended !== undefined) {
      return;
    }
    if (lane.detached) lane.view(this.#remap(handle));
    if (lane.fence()) native.clientLaneWake(handle);
  };

  /** The lane, made on first use, with views of the segment (again, if user code detached them). */
  #useLane(handle: Handle): Lane {
    const lane = this.#lane;
    if (lane === undefined) {
      return this.#lane = new Lane(this.#remap(handle), this.#lent, (why) => {
        if (this.#handle !== null) native.clientLaneViolation(this.#handle, why);
      }, native.nowNs);
    }
    if (lane.detached) lane.view(this.#remap(handle));
    return lane;
  }

  /** The ic id this client is connected to. */
  get icId(): string {
    return this.#icId;
  }

  /** Whether {@linkcode Client.close} was called. */
  get closed(): boolean {
    return this.#handle === null;
  }

  /**
   * Issues one command **synchronously**: the thread waits inside one call and the result is
   * returned. Library failures throw {@linkcode IpcError}; the server's own statuses are
   * returned.
   *
   * @param code The operation code, an integer from 0 to 2^32 - 1.
   * @param options The input, the output, the callbacks.
   * @returns The server's status, the output length and the output.
   * @throws {IpcError} On a library failure: `PEER_TERMINATED`, `HANDLER_FAILED`, `CLOSED`, …
   * @throws {TypeError | RangeError} On a bad argument, naming it.
   */
  execute(
    code: number,
    options?: ExecuteOptions<unknown> & { completion?: undefined },
  ): ExecuteResult;
  /**
   * Issues one command **asynchronously** (because `completion` is given): returns a Promise
   * at once; when the server finished, the post callbacks and `completion` run, then it
   * settles. Library failures call `completion` with the failure's status and reject with
   * {@linkcode IpcError}.
   *
   * @param code The operation code, an integer from 0 to 2^32 - 1.
   * @param options The input, the output, the callbacks, `completion` and its `context`.
   * @returns A Promise of the server's status, the output length and the output.
   * @throws {TypeError | RangeError} On a bad argument, naming it (synchronously).
   */
  execute<C>(
    code: number,
    options: ExecuteOptions<C> & { completion: Completion<C> },
  ): Promise<ExecuteResult>;
  execute<C>(
    code: number,
    options: ExecuteOptions<C> = NO_OPTIONS as ExecuteOptions<C>,
  ): ExecuteResult | Promise<ExecuteResult> {
    const o = options as ExecuteOptions<unknown>;
    checkOptions(code, o);
    const mode = o.inline === undefined ? 0 : o.inline ? 1 : 2;
    if (o.completion === undefined) {
      // The result is made here, in a function small enough to be inlined where it is
      // called: a caller that only reads its fields then allocates nothing for it.
      const status = this.#issue(code, o, mode) as number;
      const output = this.#answeredOutput;
      // Not kept past this call: it may be a large array of the caller's.
      this.#answeredOutput = NO_OUTPUT;
      return { status, length: this.#answered, output };
    }
    return this.#issueAsync(code, o, mode);
  }

  /** Slots of one-way sends whose answers were not taken yet (`Client[queueSend]`). */
  readonly #sent = new Set<number>();
  /** The first failure a one-way send's answer carried: the next send throws it. */
  #sendFailed: IpcError | undefined;
  /** Whether the core was told that this client takes its answers itself. */
  #quiet = false;

  /**
   * Sends queue operation `code` with `input` one way: its slot goes on the CS ring and this
   * returns, in the order of the sends (a slot each, never the backup path, which could overtake
   * the ring). The answers are taken as later sends find them, or as the hub delivers them; a
   * send that finds no slot free waits for an answer, at most `timeout` ms.
   *
   * @throws {IpcError} The connection's end (`PEER_TERMINATED`, `CLOSED`), a failure an earlier
   * send's answer carried, or `TIMED_OUT` when no slot came free within `timeout`.
   */
  [queueSend](code: number, input: Uint8Array, timeout: number): void {
    const handle = this.#open();
    this.#sendBatch(handle);
    const { lane, slot } = this.#sendSlot(handle, input.length, timeout);
    lane.input(slot, input.length).set(input);
    this.#sent.add(slot);
    this.#pushLater(handle, lane, slot, code, FLAG.QUEUE, input.length, 0, false);
  }

  /**
   * A free slot for a one-way send of `length` input bytes, after taking the answers there;
   * waits for one at most `timeout` ms when every slot is out.
   */
  #sendSlot(handle: Handle, length: number, timeout: number): { lane: Lane; slot: number } {
    if (this.#ended !== undefined) throw this.#ended;
    if (this.#sendFailed !== undefined) throw this.#sendFailed;
    let lane = this.#useLane(handle);
    if (!this.#quiet) {
      // The answers are taken here and by `flush`: none need wake this thread.
      this.#quiet = true;
      native.clientLaneQuiet(handle);
    }
    this.#takeSent(lane);
    let slot = lane.take(length, 0);
    if (slot < 0) {
      const deadline = performance.now() + timeout;
      while (slot < 0) {
        if (this.#sent.size === 0 || !this.#waitForSent(handle, deadline)) {
          throw new IpcError(
            Status.TIMED_OUT,
            `no slot of the connection to '${this.#icId}' came free within ${timeout} ms: the queue's host takes no posts`,
          );
        }
        if (this.#sendFailed !== undefined) throw this.#sendFailed;
        lane = this.#useLane(handle);
        slot = lane.take(length, 0);
      }
    }
    return { lane, slot };
  }

  /** The slot of the one-way batch being filled (`Client[queueAppend]`), or -1. */
  #batchSlot = -1;
  /** The code of that batch's command. */
  #batchCode = 0;
  /** The bytes written into that batch so far. */
  #batchLength = 0;
  /** The batch slot's whole input area. */
  #batchArea: Uint8Array = NO_OUTPUT;
  /** Whether a microtask will send the batch. */
  #batchQueued = false;
  readonly #sendBatchSoon = (): void => {
    this.#batchQueued = false;
    if (this.#handle !== null) this.#sendBatch(this.#handle);
  };

  /**
   * Room for `length` more bytes of the input of a one-way send of queue operation `code`,
   * batched: the records appended during one run of synchronous code travel in one command
   * (one slot, one push), sent once the microtasks queued so far ran, or at once when the next
   * record does not fit (in the slot, or within `most` bytes) or is of another code. Returns
   * where in {@linkcode Client[queueArea]}
   * the caller writes the record, at once (no view is made per record). The batch's order
   * among this client's one-way sends is that of its first record.
   *
   * @throws {IpcError} As {@linkcode Client[queueSend]}.
   */
  [queueAppend](code: number, length: number, most: number, timeout: number): number {
    const handle = this.#open();
    // A batch that the record does not fit goes now. So does one whose view user code
    // detached (a transfer leaves it 0 bytes long): its records are in the segment already.
    if (
      this.#batchSlot >= 0 &&
      (this.#batchCode !== code ||
        this.#batchLength + length > Math.min(this.#batchArea.length, most))
    ) {
      this.#sendBatch(handle);
    }
    if (this.#batchSlot < 0) {
      const { lane, slot } = this.#sendSlot(handle, length, timeout);
      this.#batchSlot = slot;
      this.#batchCode = code;
      this.#batchLength = 0;
      this.#batchArea = lane.input(slot, lane.inputCapacity(slot));
      if (!this.#batchQueued) {
        // With the fences: before this thread polls or goes idle, should that come first.
        this.#batchQueued = true;
        hub.fenceSoon(this.#sendBatchSoon);
      }
    }
    const at = this.#batchLength;
    this.#batchLength = at + length;
    return at;
  }

  /** The input area of the one-way batch being filled (`Client[queueAppend]`). */
  get [queueArea](): Uint8Array {
    return this.#batchArea;
  }

  /** Sends the one-way batch being filled, if any. */
  #sendBatch(handle: Handle): void {
    const slot = this.#batchSlot;
    if (slot < 0) return;
    this.#batchSlot = -1;
    this.#batchArea = NO_OUTPUT;
    if (this.#ended !== undefined) return;
    this.#sent.add(slot);
    const lane = this.#useLane(handle);
    this.#pushLater(handle, lane, slot, this.#batchCode, FLAG.QUEUE, this.#batchLength, 0, false);
  }

  /** The protocol minor this client and its server speak (`queue.ts`: which posts it may send). */
  [queueMinor](): number {
    return native.clientProtocolMinor(this.#open());
  }

  /**
   * Waits until every one-way send was answered, at most `timeout` ms; returns whether they
   * were (false also when the connection ended first).
   */
  [queueFlush](timeout: number): boolean {
    const handle = this.#handle;
    if (handle === null || this.#lane === undefined) return this.#sent.size === 0;
    const deadline = performance.now() + timeout;
    this.#sendBatch(handle);
    this.#takeSent(this.#useLane(handle));
    try {
      while (this.#sent.size > 0 && this.#ended === undefined) {
        if (!this.#waitForSent(handle, deadline)) break;
      }
    } catch {
      // The connection ended: what was not answered will not be.
      return false;
    }
    return this.#sent.size === 0;
  }

  /**
   * Waits for an answer on the lane until `deadline` (`performance.now()`), then takes the
   * answers there; false when the time was up before the wait.
   *
   * @throws {IpcError} The connection's end.
   */
  #waitForSent(handle: Handle, deadline: number): boolean {
    const left = deadline - performance.now();
    if (left <= 0) return false;
    try {
      native.clientLaneWait(handle, left);
    } catch (e) {
      this.#lost(e);
      throw e;
    }
    this.#takeSent(this.#useLane(handle));
    return true;
  }

  /** Takes the answers on the lane: a one-way send's frees its slot, others are kept. */
  #takeSent(lane: Lane): void {
    let slot: number;
    while ((slot = lane.pop()) >= 0) {
      if (!this.#sentAnswered(slot, lane.status, lane.length)) {
        this.#keepEarly(slot, lane.status, lane.length);
      }
    }
  }

  /** Whether `slot` was a one-way send's; if so, its answer frees it (a failure is kept). */
  #sentAnswered(slot: number, status: number, length: number): boolean {
    if (!this.#sent.delete(slot)) return false;
    if (status < 0) {
      this.#sendFailed ??= this.#answeredFailure(status, length, NO_OUTPUT);
    }
    this.#lane!.free(slot);
    return true;
  }

  /**
   * An operation on an event queue (`queue.ts`): a command flagged `QUEUE`, synchronous without
   * `completion` and asynchronous with it, as {@linkcode Client.execute}. Not part of the API.
   */
  [queueOperation](
    code: number,
    options: ExecuteOptions<unknown>,
  ): ExecuteResult | Promise<ExecuteResult> {
    checkOptions(code, options);
    if (options.completion === undefined) {
      const status = this.#issue(code, options, FLAG.QUEUE) as number;
      const output = this.#answeredOutput;
      this.#answeredOutput = NO_OUTPUT;
      return { status, length: this.#answered, output };
    }
    return this.#issueAsync(code, options, FLAG.QUEUE);
  }

  /**
   * {@linkcode Client.#issue} of an asynchronous command: whatever fails before it is sent
   * (the client closed, the server gone, a prepare callback's throw) rejects the Promise
   * rather than throwing, and a library failure runs `completion` first, as it would later.
   */
  #issueAsync(code: number, o: ExecuteOptions<unknown>, mode: number): Promise<ExecuteResult> {
    try {
      return this.#issue(code, o, mode) as Promise<ExecuteResult>;
    } catch (e) {
      if (e instanceof IpcError) failed(o, e.status);
      return Promise.reject(e);
    }
  }

  /**
   * Asks the server for its counters ({@linkcode Server.stats}, from another process): a
   * request the server's library answers itself, which no handler sees and its counters do
   * not count. Servers that speak protocol 1.0 fail it with `INVALID_COMMAND`.
   *
   * @throws {IpcError} `INVALID_COMMAND` from a 1.0 server, `PEER_TERMINATED`, `CLOSED`, …
   */
  async serverStats(): Promise<ServerStats> {
    const words = new Float64Array(STATS.LEN);
    const o: ExecuteOptions<unknown> = {
      output: new Uint8Array(words.buffer),
      completion: () => {},
    };
    checkOptions(0, o);
    await this.#issueAsync(0, o, FLAG.STATS);
    return readServerStats(words);
  }

  /** Issues a checked command in `mode` (0 the server's choice, 1 inline, 2 worker, 4 stats). */
  #issue(
    code: number,
    o: ExecuteOptions<unknown>,
    mode: number,
  ): number | Promise<ExecuteResult> {
    const inputLength = checkedInput;
    const outputLength = checkedOutput;
    const handle = this.#open();
    if (o.signal?.aborted) {
      // Aborted before it was issued: withdrawn without taking a slot or running a callback.
      failed(o, Status.CANCELLED);
      return Promise.reject(this.#cancelled(o.signal, undefined));
    }
    const lane = this.#useLane(handle);
    const slot = this.#ended === undefined ? lane.take(inputLength, outputLength) : -1;
    if (slot < 0) return this.#issueBackup(handle, code, o, mode, inputLength, outputLength);
    const input = lane.input(slot, inputLength);
    const output = lane.output(slot, outputLength);
    try {
      this.#prepare(o, handle, input, output, inputLength, outputLength);
    } catch (e) {
      lane.free(slot);
      throw e;
    }
    if (o.completion === undefined) {
      if (this.#servedHere()) {
        lane.free(slot);
        throw this.#waitingForItself();
      }
      const withdrawable = (o.timeout ?? this.#timeout) !== undefined;
      if (lane.push(slot, code, mode, inputLength, outputLength, withdrawable) && lane.fence()) {
        native.clientLaneWake(handle);
      }
      return this.#wait(handle, o, slot, input, output, o.timeout ?? this.#timeout);
    }
    const promise = new Promise<ExecuteResult>(captureResolvers);
    const p: Pending = {
      input,
      output,
      backup: false,
      slot,
      options: o,
      resolve: capturedResolve!,
      reject: capturedReject!,
      unwatch: undefined,
    };
    // Withdrawn only when its signal aborts or its timeout passes (`#watch`).
    const withdrawable = o.signal !== undefined || o.timeout !== undefined ||
      this.#timeout !== undefined;
    this.#pushLater(handle, lane, slot, code, mode, inputLength, outputLength, withdrawable);
    // The first command after a pause: the owner polls for its answer again.
    if (lane.watched) native.clientLaneActivate(handle);
    this.#pending.set(slot, p);
    hub.hold();
    if (withdrawable) this.#watch(slot, p);
    return promise;
  }

  /**
   * Pushes a command that this thread does not wait for: fenced once for the commands issued in
   * this run of microtasks (`#fence`) — or at once when the server is seen asleep, so that it
   * starts on them even if this thread then stays busy.
   */
  #pushLater(
    handle: Handle,
    lane: Lane,
    slot: number,
    code: number,
    mode: number,
    inputLength: number,
    outputLength: number,
    withdrawable: boolean,
  ): void {
    if (!lane.push(slot, code, mode, inputLength, outputLength, withdrawable)) return;
    if (!this.#fenceQueued) {
      this.#fenceQueued = true;
      hub.fenceSoon(this.#fence);
    }
    if (lane.peerAsleep && lane.fence()) native.clientLaneWake(handle);
  }

  /** Runs a command's prepare callbacks on its areas, and checks what they did. */
  #prepare(
    o: ExecuteOptions<unknown>,
    handle: Handle,
    input: Uint8Array,
    output: Uint8Array,
    inputLength: number,
    outputLength: number,
  ): void {
    if (o.inputPrepare) o.inputPrepare(input, o.input);
    else if (o.input) input.set(o.input);
    o.outputPrepare?.(output, o.output);
    if (this.#handle !== handle) {
      // A callback closed this very client: the command goes nowhere.
      throw new IpcError(
        Status.CLOSED,
        `the client of '${this.#icId}' was closed by a prepare callback of this command, which was not sent`,
      );
    }
    if (input.length !== inputLength || output.length !== outputLength) {
      throw new TypeError(
        `a prepare callback detached the memory of an area (ArrayBuffer.prototype.transfer, structuredClone or postMessage with a transfer list): the command to '${this.#icId}' was not sent; copy the bytes instead`,
      );
    }
  }

  /** Whether this client's server is served by this very thread. */
  #servedHere(): boolean {
    return hub.served.size !== 0 &&
      hub.served.has(this.#endpoint ??= hub.endpointKey(this.#icId, this.#socketDir));
  }

  #waitingForItself(): IpcError {
    // The server's handlers run on this very thread, which would be blocked waiting.
    return new IpcError(
      Status.INVALID_ARGUMENT,
      `Cannot execute synchronously on '${this.#icId}': it is served by this same thread, whose exec could never run while it waits; pass a completion`,
    );
  }

  /**
   * Waits on this thread for the answer of the synchronous command in `slot`: pops the lane
   * (keeping other answers for their completions, at the next microtask) and, while it is
   * empty, waits in the core. Returns the server's status; the output is made as `execute`
   * returns it.
   */
  #wait(
    handle: Handle,
    o: ExecuteOptions<unknown>,
    slot: number,
    input: Uint8Array,
    output: Uint8Array,
    timeout: number | undefined,
  ): number {
    const lane = this.#lane!;
    const deadline = timeout === undefined ? 0 : performance.now() + timeout;
    while (true) {
      const popped = lane.pop();
      if (popped === slot) break;
      if (popped >= 0) {
        this.#keepEarly(popped, lane.status, lane.length);
        continue;
      }
      // 0: no deadline, for the core as here.
      const left = deadline === 0 ? 0 : deadline - performance.now();
      let found = false;
      try {
        if (deadline === 0 || left > 0) found = native.clientLaneWait(handle, left);
      } catch (e) {
        // The connection ended: the slot goes with it.
        lane.failed(slot, e instanceof IpcError ? e.status : Status.PEER_TERMINATED);
        this.#lost(e);
        throw e;
      }
      if (found) continue;
      // Either way its answer is still to come: it finds no command and frees the slot.
      throw lane.withdraw(slot) ? this.#cancelled(undefined, timeout) : this.#timedOut(timeout!);
    }
    const status = lane.status;
    const length = lane.length;
    // Whatever else came is kept too: the core announced a watch again as the wait ended, which
    // wakes this thread only for answers pushed after it.
    let other: number;
    while ((other = lane.pop()) >= 0) this.#keepEarly(other, lane.status, lane.length);
    try {
      if (status < 0) throw this.#answeredFailure(status, length, output);
      this.#answeredOutput = this.#finish(o, 0, input, output, false, length);
      this.#answered = length;
      return status;
    } finally {
      lane.free(slot);
      if (lane.counts.full) this.#report(handle);
    }
  }

  /** Keeps an answer popped by a synchronous wait for its completion, at the next microtask. */
  #keepEarly(slot: number, status: number, length: number): void {
    this.#early.push(slot, status, length);
    if (this.#earlyScheduled) return;
    this.#earlyScheduled = true;
    queueMicrotask(() => {
      this.#earlyScheduled = false;
      this.#drainLane(ANSWERS_AT_ONCE);
    });
  }

  /** A command on the backup path: its areas are the core's, copied in and out. */
  #issueBackup(
    handle: Handle,
    code: number,
    o: ExecuteOptions<unknown>,
    mode: number,
    inputLength: number,
    outputLength: number,
  ): number | Promise<ExecuteResult> {
    let ticket: number;
    try {
      ticket = native.clientBegin(handle, code, inputLength, outputLength, mode);
    } catch (e) {
      this.#lost(e);
      throw e;
    }
    // The core's buffers live only as long as the ticket, so user code gets arrays of its own,
    // copied in before sending and out after the answer.
    const input = new Uint8Array(inputLength);
    const output = new Uint8Array(outputLength);
    try {
      this.#prepare(o, handle, input, output, inputLength, outputLength);
      native.ticketWriteInput(ticket, input);
    } catch (e) {
      native.ticketFree(ticket);
      throw e;
    }
    if (o.completion === undefined) {
      if (this.#servedHere()) {
        native.ticketFree(ticket);
        throw this.#waitingForItself();
      }
      try {
        const status = native.clientCall(handle, ticket, o.timeout ?? this.#timeout ?? 0);
        const length = native.callLength();
        this.#answeredOutput = this.#finish(o, ticket, input, output, true, length);
        this.#answered = length;
        return status;
      } catch (e) {
        this.#lost(e);
        throw e;
      } finally {
        native.ticketFree(ticket);
      }
    }
    const token = BACKUP_TOKENS + this.#nextToken++;
    // One executor for every command, which hands its resolvers out: a closure over this
    // call's variables would be one more allocation per command.
    const promise = new Promise<ExecuteResult>(captureResolvers);
    const resolve = capturedResolve!;
    const reject = capturedReject!;
    try {
      native.clientSubmit(handle, ticket, token);
    } catch (e) {
      // Not sent (the connection is gone): `completion` still runs, as for any failure.
      this.#lost(e);
      failed(o, e instanceof IpcError ? e.status : Status.HANDLER_FAILED);
      reject(e);
      return promise;
    }
    const p: Pending = {
      input,
      output,
      backup: true,
      slot: NOWHERE,
      options: o,
      resolve,
      reject,
      unwatch: undefined,
    };
    this.#pending.set(token, p);
    hub.hold();
    if (o.signal !== undefined || o.timeout !== undefined || this.#timeout !== undefined) {
      this.#watch(token, p);
    }
    return promise;
  }

  /** The failure a server's library status makes ({@linkcode answeredFailure}). */
  #answeredFailure(status: number, length: number, output: Uint8Array): IpcError {
    return answeredFailure(this.#icId, status, length, output);
  }

  /**
   * Withdraws the command of `token` when its signal aborts or its timeout passes; fails it
   * `TIMED_OUT` when its timeout passes after the server took it.
   */
  #watch(token: number, p: Pending): void {
    const { signal } = p.options;
    const timeout = p.options.timeout ?? this.#timeout;
    const withdraw = (timedOut: number | undefined) => {
      const handle = this.#handle;
      if (this.#pending.get(token) !== p || handle === null) return;
      const withdrawn = p.slot !== NOWHERE && this.#lane!.withdraw(p.slot);
      // An abort after the server took the command changes nothing; a deadline fails it.
      if (!withdrawn && timedOut === undefined) return;
      // Either way its answer is still to come: it finds no pending command and only frees the
      // ticket or the slot (never reused before).
      this.#pending.delete(token);
      p.unwatch?.();
      hub.release();
      const error = withdrawn ? this.#cancelled(signal, timedOut) : this.#timedOut(timedOut!);
      failed(p.options, error.status);
      p.reject(error);
    };
    let timer: ReturnType<typeof setTimeout> | undefined;
    const onAbort = () => withdraw(undefined);
    if (timeout !== undefined) timer = setTimeout(() => withdraw(timeout), timeout);
    signal?.addEventListener("abort", onAbort, { once: true });
    p.unwatch = () => {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    // Aborted while the prepare callbacks ran, before the listener was there.
    if (signal?.aborted) withdraw(undefined);
  }

  /** The failure of a command the server took but did not answer within `timeout` ms. */
  #timedOut(timeout: number): IpcError {
    return new IpcError(
      Status.TIMED_OUT,
      `a command to '${this.#icId}' had no answer within its timeout of ${timeout} ms: the server took it, so it may have run; its answer will be discarded`,
    );
  }

  #cancelled(signal: AbortSignal | undefined, timedOut: number | undefined): IpcError {
    const why = timedOut !== undefined
      ? `the server did not take it within its timeout of ${timedOut} ms`
      : `its signal aborted${signal?.reason === undefined ? "" : ` (${String(signal.reason)})`}`;
    return new IpcError(
      Status.CANCELLED,
      `a command to '${this.#icId}' was withdrawn before the server took it: ${why}`,
    );
  }

  /** Views the segment (again, after user code detached the last view: Mapping.detached). */
  #remap(handle: Handle): Mapping {
    this.#segment?.release();
    return this.#segment = native.clientSegment(handle);
  }

  #open(): Handle {
    const handle = this.#handle;
    // The rare cases in a function of their own: this one stays small enough to be inlined
    // into `execute` (a larger one cost 8 bytes of garbage per command, measured).
    if (handle === null || this.#attempt > 0) return this.#notOpen();
    return handle;
  }

  /** Throws why no command may be issued now: closed, or connecting again. */
  #notOpen(): never {
    if (this.#handle === null) {
      if (this.#gaveUp !== undefined) throw new IpcError(Status.PEER_TERMINATED, this.#gaveUp);
      throw new IpcError(Status.CLOSED, `the client of '${this.#icId}' is closed`);
    }
    throw new IpcError(
      Status.PEER_TERMINATED,
      `the server of '${this.#icId}' went away; connecting again (attempt ${this.#attempt} of ${
        this.#policy!.attempts
      })`,
    );
  }

  /** A failure `e` says the server went away: with a policy, connect again. */
  #lost(e: unknown): void {
    if (
      this.#policy === undefined || this.#attempt > 0 || this.#handle === null ||
      !(e instanceof IpcError) || e.status !== Status.PEER_TERMINATED
    ) return;
    this.#retryIn(1);
  }

  /** Attempt `attempt` to connect again, after its wait. */
  #retryIn(attempt: number): void {
    const { minDelay, maxDelay } = this.#policy!;
    this.#attempt = attempt;
    const wait = Math.min(maxDelay, minDelay * 2 ** (attempt - 1));
    // Unreferenced: a client that waits to connect again does not hold the process.
    this.#retry = later(() => void this.#connectAgain(), wait);
    this.#retry.unref();
  }

  async #connectAgain(): Promise<void> {
    this.#retry = undefined;
    let fresh: Client;
    try {
      fresh = await connect(this.#icId, {
        ...(this.#socketDir === undefined ? {} : { socketDir: this.#socketDir }),
        ...(this.#spinMicros === undefined ? {} : { spinMicros: this.#spinMicros }),
      });
    } catch (e) {
      if (this.#handle === null) return; // closed meanwhile
      if (this.#attempt < this.#policy!.attempts) return this.#retryIn(this.#attempt + 1);
      this.#gaveUp = `the server of '${this.#icId}' went away, and ${
        this.#policy!.attempts
      } attempts to connect again failed (the last: ${e instanceof Error ? e.message : String(e)})`;
      this.#attempt = 0;
      this.close();
      return;
    }
    if (this.#handle === null) {
      fresh.close(); // closed meanwhile
      return;
    }
    this.#adopt(fresh);
  }

  /** Takes over the connection of `fresh` (a client of this same server, just made). */
  #adopt(fresh: Client): void {
    // What was out went with the old connection: failed already, or now (its late events find
    // no owner and are only freed).
    for (const p of this.#pending.take()) {
      p.unwatch?.();
      hub.release();
      failed(p.options, Status.PEER_TERMINATED);
      p.reject(new IpcError(Status.PEER_TERMINATED, `the server of '${this.#icId}' went away`));
    }
    native.clientFree(this.#handle!);
    this.#segment?.release();
    this.#segment = undefined;
    hub.adopt(fresh.#id, this);
    hub.unregister(this.#id);
    this.#id = fresh.#id;
    this.#handle = fresh.#handle;
    this.#segment = fresh.#segment;
    this.#lane = fresh.#lane;
    this.#lent = fresh.#lent;
    this.#early.length = 0;
    this.#ended = undefined;
    fresh.#segment = undefined;
    // An empty shell now: nothing of it is left to close.
    fresh.#handle = null;
    this.#attempt = 0;
  }

  /** Runs the post callbacks on a finished command and makes its result. */
  #finish(
    o: ExecuteOptions<unknown>,
    ticket: number,
    input: Uint8Array,
    output: Uint8Array,
    backup: boolean,
    length: number,
  ): Uint8Array {
    if (length > output.length) {
      // Only a detached area is shorter than the length the core checked against it.
      throw new TypeError(
        `user code detached the memory of a command's output area (ArrayBuffer.prototype.transfer, structuredClone or postMessage with a transfer list) before its answer came: the output of that command to '${this.#icId}' is lost`,
      );
    }
    if (backup) native.ticketReadOutput(ticket, output);
    // Whole arrays where the lengths agree: a subarray per command is garbage to collect.
    const area = length === output.length ? output : output.subarray(0, length);
    o.inputPost?.(input, o.input);
    let made: Uint8Array;
    if (o.outputPost) {
      const r = o.outputPost(area, o.output);
      made = r instanceof Uint8Array ? r : (o.output ?? new Uint8Array(0));
    } else if (o.output) {
      o.output.set(area);
      made = length === o.output.length ? o.output : o.output.subarray(0, length);
    } else {
      made = area.slice();
    }
    return made;
  }

  /** @internal An event from the hub: answers on the lane, or a backup command's completion. */
  onEvent(): void {
    if (native.event.kind === EVENT.LANE) {
      const code = native.event.code;
      if (code < 0) this.#laneEnded(new IpcError(code, native.lastError()));
      else this.#drainLane(ANSWERS_AT_ONCE);
      return;
    }
    const token = native.event.token;
    const ticket = native.event.handle;
    const p = this.#pending.get(token);
    if (p === undefined) {
      native.ticketFree(ticket);
      return;
    }
    this.#pending.delete(token);
    p.unwatch?.();
    hub.release();
    hub.needTurn();
    const status = native.event.code;
    if (status < 0) {
      const error = new IpcError(status, native.lastError());
      this.#lost(error);
      native.ticketFree(ticket);
      failed(p.options, status);
      p.reject(error);
      return;
    }
    let result: ExecuteResult;
    try {
      const length = native.event.outputLength;
      result = {
        status,
        length,
        output: this.#finish(p.options, ticket, p.input, p.output, p.backup, length),
      };
    } catch (e) {
      p.reject(e);
      return;
    } finally {
      native.ticketFree(ticket);
    }
    try {
      p.options.completion?.(result, p.options.context);
      p.resolve(result);
    } catch (e) {
      p.reject(e);
    }
  }

  /**
   * Delivers the answers a synchronous wait kept, then those on the lane: `most` at once (the
   * rest follow in a microtask: `#popAnswers`).
   */
  #drainLane(most: number): void {
    const early = this.#early;
    if (early.length > 0) {
      const kept = early.splice(0);
      for (let i = 0; i < kept.length; i += 3) this.#answer(kept[i]!, kept[i + 1]!, kept[i + 2]!);
    }
    this.#popAnswers(most);
  }

  /** Whether a microtask that pops more answers is queued (`#popAnswers`). */
  #popping = false;
  /** `#popAnswers` as the microtask that continues it, made once. */
  readonly #popMore = (): void => {
    hub.continued();
    this.#popping = false;
    this.#popAnswers(ANSWERS_AT_ONCE);
  };

  /**
   * Pops the answers on the lane and settles their commands, {@linkcode ANSWERS_AT_ONCE} at a
   * time: when more are there, it continues in a microtask queued after the reactions of
   * those settled, which issue the next commands. So a client that keeps many commands in
   * flight sends new ones while the server still answers the rest, rather than answering a
   * whole batch and then sending one (measured: a 2-process pipelined run went from batches
   * that alternated between the two sides to both working at once). The drain's budget bounds
   * the chain: once spent, the hub takes up what is left after the event loop's turn.
   */
  #popAnswers(most: number): void {
    // No lane yet: no command was sent, so there is nothing to pop.
    if (this.#handle === null || this.#lane === undefined) return;
    let lane = this.#useLane(this.#handle);
    let slot: number;
    let popped = 0;
    while ((slot = lane.pop()) >= 0) {
      // A completion may close the client, or detach the segment's memory.
      this.#answer(slot, lane.status, lane.length);
      if (this.#handle === null) return;
      lane = this.#useLane(this.#handle);
      if (++popped === most) {
        if (!this.#popping && !native.hubSpent()) {
          this.#popping = true;
          hub.continueSoon(this.#popMore);
        }
        break;
      }
    }
    if (lane.counts.full && this.#handle !== null) this.#report(this.#handle);
  }

  /** Settles the asynchronous command in `slot` with its answer, and frees the slot. */
  #answer(slot: number, status: number, length: number): void {
    const p = this.#pending.get(slot);
    if (p === undefined) {
      if (this.#sentAnswered(slot, status, length)) return;
      // Withdrawn, timed out, or a synchronous command that gave up: only the slot is left.
      this.#lane!.free(slot);
      return;
    }
    this.#pending.delete(slot);
    p.unwatch?.();
    hub.release();
    hub.needTurn();
    let result: ExecuteResult;
    try {
      if (status < 0) {
        const error = this.#answeredFailure(status, length, p.output);
        failed(p.options, status);
        p.reject(error);
        return;
      }
      result = {
        status,
        length,
        output: this.#finish(p.options, 0, p.input, p.output, false, length),
      };
    } catch (e) {
      p.reject(e);
      return;
    } finally {
      this.#lane!.free(slot);
    }
    try {
      p.options.completion?.(result, p.options.context);
      p.resolve(result);
    } catch (e) {
      p.reject(e);
    }
  }

  /**
   * The connection ended (`error` says why): the answers already on the lane are delivered,
   * and the commands still out fail with `error`.
   */
  #laneEnded(error: IpcError): void {
    if (this.#ended !== undefined) return;
    // Every answer there, not a first few: the commands left out fail next.
    this.#drainLane(Infinity);
    this.#ended = error;
    this.#failLane(error);
    this.#lost(error);
  }

  /** Fails every command out on the lane with `error` (their slots go with the connection). */
  #failLane(error: IpcError): void {
    for (const p of this.#pending.takeSlots()) {
      p.unwatch?.();
      hub.release();
      this.#lane!.failed(p.slot, error.status);
      failed(p.options, error.status);
      p.reject(error);
    }
  }

  /** Adds what the lane counted to the core's counters. */
  #report(handle: Handle): void {
    this.#lane?.counts.report((words) => native.clientLaneCount(handle, words));
  }

  /**
   * Closes the connection: commands in flight fail with `CLOSED` (their Promises reject at
   * the next turn of the event loop). Idempotent.
   */
  close(): void {
    if (this.#retry !== undefined) cancelLater(this.#retry);
    this.#retry = undefined;
    this.#attempt = 0;
    if (this.#handle === null) return;
    const handle = this.#handle;
    this.#stats.set(this.#snapshot(handle));
    this.#handle = null;
    native.clientFree(handle);
    if (this.#pending.size === 0) {
      this.#gone();
      return;
    }
    this.#unregisterWhenSettled();
    // The lane's commands fail at the next microtask, as the core's do at the next event: user
    // code in their completions does not run inside `close`.
    this.#ended ??= new IpcError(Status.CLOSED, `the client of '${this.#icId}' was closed`);
    const closed = this.#ended;
    queueMicrotask(() => this.#failLane(closed));
  }

  /** Nothing of this client runs any more: the hub forgets it, and its segment goes at once. */
  #gone(): void {
    hub.unregister(this.#id);
    this.#segment?.release();
  }

  #unregisterWhenSettled(): void {
    const all = [...this.#pending.values()].map((p) =>
      new Promise<void>((done) => {
        const { resolve, reject } = p;
        p.resolve = (r) => {
          resolve(r);
          done();
        };
        p.reject = (e) => {
          reject(e);
          done();
        };
      })
    );
    void Promise.all(all).then(() => this.#gone());
  }

  /**
   * This connection's counters: commands, bytes, commands in flight, backup-path commands,
   * failures by status, and round-trip times. After {@linkcode Client.close}, those at the
   * close.
   *
   * @example Round trips of a client
   * ```ts
   * import { connect, serve } from "shmcall";
   *
   * await using _server = await serve("doc-stats", { exec: () => ({ status: 0 }) });
   * using client = await connect("doc-stats");
   * await client.execute(1, { completion: () => {} });
   * const { commands, latency } = client.stats();
   * console.log(`${commands} command, median ${latency.p50} µs`);
   * ```
   */
  stats(): Stats {
    return readStats(this.#handle === null ? this.#stats : this.#snapshot(this.#handle));
  }

  #snapshot(handle: Handle): Float64Array {
    this.#report(handle);
    native.clientStats(handle, this.#stats);
    return this.#stats;
  }

  /** Same as {@linkcode Client.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Same as {@linkcode Client.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/** Most bytes of a handler's failure that a client's error shows. */
const MAX_REASON = 1024;
const reasonDecoder = new TextDecoder();

/**
 * The reason a failed command's server gave in its output area: text from the peer, decoded
 * lossily and cut to {@linkcode MAX_REASON} bytes, control characters replaced.
 */
function reason(output: Uint8Array, length: number): string {
  const text = reasonDecoder.decode(output.subarray(0, Math.min(length, MAX_REASON)));
  return text.replace(/\p{Cc}/gu, " ");
}

/**
 * The failure a server's library status makes: the wording of the core's own answers
 * (core-rs/src/client/ticket.rs), for `status` with `length` output bytes in `output`.
 */
export function answeredFailure(
  icId: string,
  status: number,
  length: number,
  output: Uint8Array,
): IpcError {
  const id = `'${icId}'`;
  let why: string;
  switch (status) {
    case Status.OUTPUT_OVERFLOW: {
      // How many bytes the handler wanted: the server's figure, only shown.
      const wanted = length > 0 ? `${length} bytes of output` : "more output";
      why =
        `${id}: the server's handler answered ${wanted} for an output area of ${output.length} bytes`;
      break;
    }
    case Status.HANDLER_FAILED:
      why = `${id}: the server's handler failed for this command`;
      // A server that exposes its errors says why in the output area.
      if (length > 0 && length <= output.length) why += `: ${reason(output, length)}`;
      break;
    case Status.INVALID_COMMAND:
      why = `${id}: the server refused the command as malformed`;
      break;
    default:
      why = `${id}: the server answered ${statusName(status)}`;
  }
  // Worded as the core words its errors: the sentence, then the status's name.
  return new IpcError(status, `${why} (${statusName(status)})`);
}

/** Runs `completion` for a command that failed with library status `status`. */
export function failed(o: ExecuteOptions<unknown>, status: number): void {
  try {
    o.completion?.({ status, length: 0, output: new Uint8Array(0) }, o.context);
  } catch {
    // The Promise rejects with the library failure either way.
  }
}

/**
 * Connects to the server of `icId` through NATS ({@linkcode ConnectOptions.nats}), and only
 * so: the client reaches the servers of `icId` on any host that reaches the same NATS servers,
 * and resolves once connected to NATS (servers are found per command).
 *
 * @param icId The servers' name, their ic id.
 * @param options `nats`, and a default `timeout`.
 * @returns The client, whose `execute` is asynchronous only.
 * @throws {IpcError} `IO_ERROR` when no NATS server could be reached, `PERMISSION_DENIED` when
 * NATS refused the credentials.
 * @throws {TypeError | RangeError} On a bad argument, naming it.
 */
export function connect(
  icId: string,
  options: ConnectOptions & { nats: NatsOptions },
): Promise<NatsClient>;
/**
 * Connects to the server of `icId`: the first contact creates the connection's shared
 * segment and hands it over; it resolves once the server's `open` ran.
 *
 * @param icId The server's name, its ic id: 1 to 100 characters of `A-Z a-z 0-9 . _ -`.
 * @param options The socket directory, the spin budget, the default timeout, reconnecting;
 * all optional.
 * @returns The connected client.
 * @throws {IpcError} `NOT_FOUND` when no server listens, `VERSION_MISMATCH`, `PERMISSION_DENIED`, …
 * @throws {TypeError | RangeError} On a bad argument, naming it.
 *
 * @example Connecting, and a command with a completion
 * ```ts
 * import { connect, serve } from "shmcall";
 *
 * await using _server = await serve("doc-connect", { exec: () => ({ status: 42 }) });
 * await using client = await connect("doc-connect");
 * const result = await client.execute(7, {
 *   completion: (r, context) => console.log(`status ${r.status} for ${context}`),
 *   context: "the first command",
 * });
 * ```
 */
export function connect(icId: string, options?: ConnectOptions): Promise<Client>;
export function connect(
  icId: string,
  options?: ConnectOptions,
): Promise<Client> | Promise<NatsClient> {
  if (options?.nats !== undefined) return connectNatsClient(icId, options);
  return connectWith(icId, options, 0);
}

/** {@linkcode connect} through NATS: the options a local connection alone takes are refused. */
async function connectNatsClient(icId: string, options: ConnectOptions): Promise<NatsClient> {
  checkIcId(icId);
  checkOptionsObject("connect", options);
  checkNatsOptions("connect", options.nats);
  if (options.reconnect !== undefined) {
    throw new TypeError(
      "reconnect is for a local connection: through NATS, the NATS client reconnects (nats.reconnect, nats.maxReconnectAttempts)",
    );
  }
  return await connectThroughNats(icId, options.nats, options.timeout);
}

/**
 * {@linkcode connect}, with the segment's large slot class made one slot of `largeOutput`
 * bytes of output when that is above 0 (an event-queue consumer's list longer than a default
 * slot holds). Not part of the API.
 */
export async function connectWith(
  icId: string,
  options: ConnectOptions | undefined,
  largeOutput: number,
): Promise<Client> {
  if (options === undefined) options = {};
  checkIcId(icId);
  checkOptionsObject("connect", options);
  checkSocketDir(options.socketDir);
  checkTimeout("the timeout of connect", options.timeout);
  reconnectPolicy(options.reconnect);
  const spin = spinNanos(options.spinMicros);
  // The id is taken before connecting so that the core can name this client in its events:
  // the library's I/O thread drives the connect, and its end comes as a hub event (a server of
  // this process runs `open` meanwhile, on this thread).
  let settle: { resolve: (h: Handle) => void; reject: (e: unknown) => void } | undefined;
  const connected = new Promise<Handle>((resolve, reject) => settle = { resolve, reject });
  const id = hub.register({
    onEvent() {
      const e = native.event;
      if (e.kind !== EVENT.CONNECTED) return;
      if (e.code < 0) settle!.reject(new IpcError(e.code, native.lastError()));
      else settle!.resolve(e.handle as Handle);
    },
  });
  hub.hold();
  try {
    const handle = native.clientConnect(icId, options.socketDir, spin, id, largeOutput) ??
      await connected;
    try {
      return new Client(icId, options, id, handle);
    } catch (e) {
      native.clientFree(handle);
      throw e;
    }
  } catch (e) {
    hub.unregister(id);
    throw e;
  } finally {
    hub.release();
  }
}
