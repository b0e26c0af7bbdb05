/**
 * Thin typed wrappers over the C surface: out-parameters, error sentences, and views of the
 * areas. The public client and server are built on these; nothing here is exported by
 * `mod.ts`.
 *
 * @module
 */

import { library } from "../ffi/load.ts";
import { IpcError } from "./errors.ts";

const OK = 0;
const EMPTY = 1;
const DEFAULT_SPIN = 0xffff_ffff_ffff_ffffn;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Out-parameter scratch space, reused: JavaScript calls into the library one at a time.
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

function view(address: bigint, length: number): Uint8Array {
  if (length === 0) return new Uint8Array(0);
  return new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pointer(address), length));
}

/** Where the server should run a command: its default, inline, or on its worker pool. */
export type Mode = 0 | 1 | 2;

/** A command between begin and free: its handle and its areas. */
export interface RawTicket {
  /** The native ticket. */
  handle: Deno.PointerObject;
  /** The input area (a view of shared memory unless the command takes the backup path). */
  input: Uint8Array;
  /** The output area, at its full capacity. */
  output: Uint8Array;
}

/** A finished command's answer. */
export interface RawAnswer {
  /** The server's status (>= 0). */
  status: number;
  /** Output bytes written. */
  length: number;
}

/**
 * A connection through the C surface. Views of areas point into the segment and are valid
 * until {@linkcode RawClient.free}.
 */
export class RawClient {
  readonly handle: Deno.PointerObject;
  #base: bigint;
  #segment: Uint8Array;

  private constructor(handle: Deno.PointerObject) {
    this.handle = handle;
    check(library().shmcall_client_segment(handle, out64[0], out64[1]));
    this.#base = out64[0][0]!;
    // One view over the whole segment; areas are subarrays of it (views cost ~0.6 µs each).
    this.#segment = view(this.#base, Number(out64[1][0]!));
  }

  /** Connects to `icId`; `dir` overrides the socket directory, `spinNs` the spin budget. */
  static connect(icId: string, options: { dir?: string; spinNs?: bigint } = {}): RawClient {
    const id = encoder.encode(icId);
    const dir = encoder.encode(options.dir ?? "");
    check(
      library().shmcall_client_connect(
        id,
        BigInt(id.length),
        dir,
        BigInt(dir.length),
        options.spinNs ?? DEFAULT_SPIN,
        out64[0],
      ),
    );
    return new RawClient(pointer(out64[0][0]!));
  }

  #area(address: bigint, length: number): Uint8Array {
    const offset = address - this.#base;
    if (offset >= 0n && offset + BigInt(length) <= BigInt(this.#segment.length)) {
      return this.#segment.subarray(Number(offset), Number(offset) + length);
    }
    // A backup-path buffer on the heap.
    return view(address, length);
  }

  /** Takes a slot (or backup buffers) for a command. */
  begin(code: number, inputLength: number, outputCapacity: number, mode: Mode = 0): RawTicket {
    check(
      library().shmcall_client_begin(
        this.handle,
        code,
        inputLength,
        outputCapacity,
        mode,
        out64[0],
        out64[1],
        out64[2],
      ),
    );
    return {
      handle: pointer(out64[0][0]!),
      input: this.#area(out64[1][0]!, inputLength),
      output: this.#area(out64[2][0]!, outputCapacity),
    };
  }

  /** Sends the command and waits for its answer inside this one call. */
  call(ticket: RawTicket): RawAnswer {
    check(library().shmcall_client_call(this.handle, ticket.handle, outI32, outU32));
    return { status: outI32[0]!, length: outU32[0]! };
  }

  /** Sends the command; its ticket comes back from {@linkcode RawClient.poll} with `token`. */
  submit(ticket: RawTicket, token: bigint): void {
    check(library().shmcall_client_submit(this.handle, ticket.handle, token));
  }

  /** The next finished asynchronous command, waiting up to `timeoutNs`. */
  poll(timeoutNs: bigint): { token: bigint; handle: Deno.PointerObject } | undefined {
    const rc = check(library().shmcall_client_poll(this.handle, timeoutNs, out64[0], out64[1]));
    if (rc === EMPTY) return undefined;
    return { token: out64[0][0]!, handle: pointer(out64[1][0]!) };
  }

  /** The answer of a finished command and its output, cut to the reported length. */
  answer(handle: Deno.PointerObject): RawAnswer & { output: Uint8Array } {
    check(library().shmcall_ticket_answer(handle, outI32, outU32, out64[0]));
    const length = outU32[0]!;
    return { status: outI32[0]!, length, output: this.#area(out64[0][0]!, length) };
  }

  /** Gives the ticket's slot back. */
  freeTicket(handle: Deno.PointerObject): void {
    check(library().shmcall_ticket_free(handle));
  }

  /** Closes the connection (idempotent). */
  close(): void {
    check(library().shmcall_client_close(this.handle));
  }

  /** Closes and frees the connection; views of its areas must not be used afterwards. */
  free(): void {
    this.#segment = new Uint8Array(0);
    check(library().shmcall_client_free(this.handle));
  }
}

export { EMPTY, OK };
