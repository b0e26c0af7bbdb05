/**
 * Typed primitives over the C surface: out-parameters, error sentences, hub events, and views
 * of shared memory. The public client and server are built on these; nothing here is exported
 * by `mod.ts`.
 *
 * @module
 */

import { library } from "../ffi/load.ts";
import { IpcError } from "./errors.ts";

/** Success. */
export const OK = 0;
/** Nothing ready. */
export const EMPTY = 1;
/** Spin budget meaning "the core's default". */
export const DEFAULT_SPIN = 0xffff_ffff_ffff_ffffn;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Out-parameter scratch space, reused: JavaScript calls into the library one call at a time.
const out64 = [new BigUint64Array(1), new BigUint64Array(1), new BigUint64Array(1)] as const;
const outI32 = new Int32Array(1);
const outU32 = new Uint32Array(1);
const sentence = new Uint8Array(1024);

/** The sentence of the last failure of a C call on this thread. */
export function lastError(): string {
  const n = library().shmcall_last_error(sentence, BigInt(sentence.length));
  return decoder.decode(sentence.subarray(0, Math.min(n, sentence.length)));
}

/** Throws the {@linkcode IpcError} of a failed C call; returns OK or EMPTY. */
export function check(rc: number): number {
  if (rc < 0) throw new IpcError(rc, lastError());
  return rc;
}

/** The protocol version the library speaks, as "major.minor". */
export function protocolVersion(): string {
  const v = library().shmcall_protocol_version();
  return `${v >> 16}.${v & 0xffff}`;
}

/** The core's name for library status `code`, or `undefined` when it is none. */
export function coreStatusName(code: number): string | undefined {
  const buf = new Uint8Array(64);
  const n = library().shmcall_status_name(code, buf, BigInt(buf.length));
  return n < 0 ? undefined : decoder.decode(buf.subarray(0, n));
}

function pointer(value: bigint): Deno.PointerObject {
  const p = Deno.UnsafePointer.create(value);
  if (p === null) throw new Error("the library returned a null handle");
  return p;
}

/**
 * A view of foreign memory. Only for memory that outlives every use of the view: segments
 * (kept mapped by a {@linkcode Mapping}) and buffers read or written at once, inside this
 * module's callers, before the C call that may free them.
 */
export function foreignView(address: bigint, length: number): Uint8Array {
  if (length === 0) return new Uint8Array(0);
  return new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pointer(address), length));
}

// A segment is released when the last view over it becomes unreachable: every area handed to
// user code is a subarray of one view per segment, so they share its ArrayBuffer.
const segments = new FinalizationRegistry<Deno.PointerObject>((ref) => {
  library().shmcall_segment_release(ref);
});

/** One view over a whole segment, which stays mapped while the view is reachable. */
export class Mapping {
  readonly base: bigint;
  readonly view: Uint8Array;

  constructor(base: bigint, length: number, ref: Deno.PointerObject) {
    this.base = base;
    this.view = foreignView(base, length);
    segments.register(this.view.buffer, ref);
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

function text(value: string): [Uint8Array, bigint] {
  const b = encoder.encode(value);
  return [b, BigInt(b.length)];
}

// ---------------------------------------------------------------------------------------------
// Client

/** Connects (off this thread); `id` names the client in hub events. */
export async function clientConnect(
  icId: string,
  dir: string | undefined,
  spinNs: bigint,
  id: bigint,
): Promise<Deno.PointerObject> {
  const [ic, icLen] = text(icId);
  const [d, dLen] = text(dir ?? "");
  // Buffers of its own: the call runs while other calls use the shared scratch space.
  const out = new BigUint64Array(1);
  const error = new Uint8Array(1024);
  const rc = await library().shmcall_client_connect(
    ic,
    icLen,
    d,
    dLen,
    spinNs,
    id,
    out,
    error,
    BigInt(error.length),
  );
  if (rc < 0) {
    const end = error.indexOf(0);
    throw new IpcError(rc, decoder.decode(end < 0 ? error : error.subarray(0, end)));
  }
  return pointer(out[0]!);
}

/** The client's segment, mapped for as long as the returned view is reachable. */
export function clientSegment(client: Deno.PointerObject): Mapping {
  check(library().shmcall_client_segment(client, out64[0], out64[1], out64[2]));
  return new Mapping(out64[0][0]!, Number(out64[1][0]!), pointer(out64[2][0]!));
}

/** Where {@linkcode clientBegin} put the areas: offsets in the segment, or {@linkcode NOWHERE}. */
export const begunAt = new Uint32Array(2);
/** An offset of {@linkcode begunAt} meaning "on the backup path". */
export const NOWHERE = 0xffff_ffff;

/** Takes a slot (or backup buffers) for a command; its areas are in {@linkcode begunAt}. */
export function clientBegin(
  client: Deno.PointerObject,
  code: number,
  inputLength: number,
  outputCapacity: number,
  mode: number,
): number {
  check(
    library().shmcall_client_begin_at(
      client,
      code,
      inputLength,
      outputCapacity,
      mode,
      outU32,
      begunAt,
    ),
  );
  return outU32[0]!;
}

/** The addresses of a ticket's input and output buffers (for the backup path). */
export function ticketAreas(ticket: number): [bigint, bigint] {
  check(library().shmcall_ticket_areas(ticket, out64[0], out64[1]));
  return [out64[0][0]!, out64[1][0]!];
}

/**
 * Sends and waits inside this call; returns the server's status ({@linkcode callLength}
 * gives the output length).
 */
export function clientCall(client: Deno.PointerObject, ticket: number): number {
  check(library().shmcall_client_call(client, ticket, outI32, outU32));
  return outI32[0]!;
}

/** The output length of the last {@linkcode clientCall}. */
export function callLength(): number {
  return outU32[0]!;
}

/** Sends; the finished ticket comes back as a hub completion with `token`. */
export function clientSubmit(
  client: Deno.PointerObject,
  ticket: number,
  token: number,
): void {
  check(library().shmcall_client_submit(client, ticket, BigInt(token)));
}

/** The address of a finished ticket's output area. */
export function ticketOutput(ticket: number): bigint {
  check(library().shmcall_ticket_answer(ticket, outI32, outU32, out64[0]));
  return out64[0][0]!;
}

/** Frees a ticket and gives its slot back. */
export function ticketFree(ticket: number): void {
  check(library().shmcall_ticket_free(ticket));
}

/** Closes the connection and frees the handle. */
export function clientFree(client: Deno.PointerObject): void {
  check(library().shmcall_client_free(client));
}

// ---------------------------------------------------------------------------------------------
// Server

/** Serves; `id` names the server in hub events. */
export function serverServe(
  icId: string,
  dir: string | undefined,
  spinNs: bigint,
  id: bigint,
): Deno.PointerObject {
  const [ic, icLen] = text(icId);
  const [d, dLen] = text(dir ?? "");
  check(library().shmcall_server_serve(ic, icLen, d, dLen, spinNs, id, out64[0]));
  return pointer(out64[0][0]!);
}

/** Answers an open: 0 accepts, a negative status refuses. */
export function serverOpened(server: Deno.PointerObject, conn: number, status: number): void {
  check(library().shmcall_server_opened(server, BigInt(conn), status));
}

/** Answers a command (copying `output` into its area first, when given) and frees it. */
export function commandFinish(
  command: number,
  status: number,
  length: number,
  output: Uint8Array | null,
): void {
  check(library().shmcall_command_finish(command, status, length, output));
}

/** The segment of a command, mapped for as long as the returned view is reachable. */
export function commandSegment(command: number): Mapping | undefined {
  check(library().shmcall_command_segment(command, out64[0], out64[1], out64[2]));
  const ref = Deno.UnsafePointer.create(out64[2][0]!);
  return ref === null ? undefined : new Mapping(out64[0][0]!, Number(out64[1][0]!), ref);
}

/** Stops the server and frees the handle. */
export function serverFree(server: Deno.PointerObject): void {
  check(library().shmcall_server_free(server));
}

// ---------------------------------------------------------------------------------------------
// Hub

/** Hub event kinds (core-rs/src/ffi.rs). */
export const EVENT = { COMPLETION: 1, OPEN: 2, EXEC: 3, CLOSE: 4 } as const;

const eventWords = new Uint32Array(20);
const eventInts = new Int32Array(eventWords.buffer);
const eventBytes = new Uint8Array(eventWords.buffer);
const eventData = new DataView(eventWords.buffer);
const TWO_32 = 0x1_0000_0000;

/**
 * The fields of the event {@linkcode hubNext} read last (offsets of `HubEvent`). Ids and
 * offsets are read as numbers, which cost no allocation (ids stay far below 2^53).
 */
export const event = {
  get kind(): number {
    return eventWords[0]!;
  },
  get code(): number {
    return eventInts[1]!;
  },
  get owner(): number {
    return eventWords[2]! + eventWords[3]! * TWO_32;
  },
  get token(): number {
    return eventWords[4]! + eventWords[5]! * TWO_32;
  },
  /** A ticket's or command's handle (a `u32`). */
  get handle(): number {
    return eventWords[6]!;
  },
  get input(): bigint {
    return eventData.getBigUint64(32, true);
  },
  /** Whether the areas lie in the connection's segment (else: the backup path). */
  get inSegment(): boolean {
    return eventWords[12] === 1;
  },
  get inputOffset(): number {
    return eventWords[13]!;
  },
  get outputOffset(): number {
    return eventWords[14]!;
  },
  get inputLength(): number {
    return eventWords[16]!;
  },
  get outputLength(): number {
    return eventWords[17]!;
  },
  get pid(): number {
    return eventInts[18]!;
  },
  get uid(): number {
    return eventWords[19]!;
  },
};

/** Makes this thread the one that drains the hub; throws while another thread has objects. */
export function hubClaim(): void {
  check(library().shmcall_hub_claim());
}

/** This thread has no client or server left: another may claim the hub. */
export function hubUnclaim(): void {
  library().shmcall_hub_unclaim();
}

/** An id for a client or server, unique in the process (across JavaScript threads). */
export function hubNewId(): bigint {
  return library().shmcall_hub_new_id();
}

/** Takes the next hub event into {@linkcode event}; false when there is none. */
export function hubNext(): boolean {
  return check(library().shmcall_hub_next(eventBytes)) === OK;
}

/** A drain begins, which should hand the event loop back after `budgetNs`. */
export function hubDrain(budgetNs: bigint): void {
  library().shmcall_hub_drain(budgetNs);
}

/** Whether the current drain's budget is spent. */
export function hubSpent(): boolean {
  return library().shmcall_hub_spent() === 1;
}

/** What {@linkcode hubIdle} found (`Idle` in core-rs/src/hub.rs). */
export const IDLE = { EVENTS: 0, IDLE: 1, SPENT: 2 } as const;

/**
 * Waits up to `waitNs` for events (popping the rings), then arms the doorbell: one of
 * {@linkcode IDLE}.
 */
export function hubIdle(waitNs: bigint): number {
  return library().shmcall_hub_idle(waitNs);
}

/** The fallback doorbell: resolves when events are queued, on interrupt, or on timeout. */
export function hubWait(timeoutNs: bigint): Promise<number> {
  return library().shmcall_hub_wait(timeoutNs);
}

/** Ends a pending {@linkcode hubWait}. */
export function hubInterrupt(): void {
  library().shmcall_hub_interrupt();
}
