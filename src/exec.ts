/**
 * Running one command's `exec`, the same way on the server's thread and in a pool worker: the
 * areas it sees, what its result means, and an answer exactly once whatever it does.
 *
 * @module
 */

import { type Mapping, native } from "./native.ts";
import { Status } from "./status.ts";
import { shown } from "./validate.ts";

/** Who a connection is with. */
export interface ConnInfo {
  /** The server's id for this connection. */
  id: number;
  /** The client process's id. */
  pid: number;
  /** The client process's user id. */
  uid: number;
  /**
   * The session of a client reached through NATS (16 hexadecimal digits), which names it
   * across its commands; `pid` is 0 and `uid` -1 then, since NATS carries no credentials.
   */
  session?: string;
}

/** One command, as a handler sees it. */
export interface ServerCommand {
  /** The operation code. */
  code: number;
  /** The input area: a view of shared memory (a copy on the backup path). */
  input: Uint8Array;
  /** The output area, as long as its capacity. */
  output: Uint8Array;
}

/**
 * What `exec` answers: the output status (default 0) and length (default 0). A status outside
 * 0 to 2^31 - 1 or a length that is not an integer from 0 to 2^32 - 1 fails the command with
 * `HANDLER_FAILED`; a length beyond the output capacity fails it with `OUTPUT_OVERFLOW`.
 */
export interface ExecResult {
  /** The output status, the server's own (>= 0). */
  status?: number;
  /** The number of output bytes written. */
  length?: number;
}

/** A handler of commands: `exec` of {@linkcode Handlers}, or of a pool's handler module. */
export type Exec<C> = (
  command: ServerCommand,
  conn: ConnInfo,
  context: C,
) => ExecResult | void | Promise<ExecResult | void>;

/** Where a command's answer goes; `T` is what the runner hands back with it. */
export interface Answerer<T> {
  /** Answers `command` (copying `from` into its output area first, when given), once. */
  answer(tag: T, command: number, status: number, length: number, from: Uint8Array | null): void;
  /**
   * `exec` failed with `error` (it threw, rejected, or answered nonsense): reports it and
   * answers `command` with `status` once (through {@linkcode failedLength}). `wanted` is the
   * length an overflowing `exec` answered; `output` is the command's output area, where a
   * reason for the client may go (`from` as for `answer`).
   */
  failed(
    tag: T,
    command: number,
    status: number,
    wanted: number,
    code: number,
    error: unknown,
    output: Uint8Array,
    from: Uint8Array | null,
  ): void;
  /** `exec` returned a Promise for `command`: its reactions need the event loop. */
  async(tag: T, command: number): void;
}

/** Where an exec event's command lies (the hub event's fields, or a pool job's). */
export interface Areas {
  inSegment: boolean;
  inputOffset: number;
  outputOffset: number;
  inputLength: number;
  outputLength: number;
}

const I32_MAX = 0x7fff_ffff;
const U32_MAX = 0xffff_ffff;

/** The backup-path output array of the last {@linkcode commandOf} (null: in the segment). */
let lastBackup: Uint8Array | null = null;

/**
 * The command a handler sees, from its areas in `segment` — or, on the backup path, arrays of
 * its own, since the command's buffers live only until it is answered: the input copied in,
 * the output (then also {@linkcode backupOf}) copied back at the answer. Undefined when the
 * core placed the areas outside the segment (a bug: the caller fails the command).
 */
export function commandOf(
  command: number,
  code: number,
  at: Areas,
  segment: Mapping | undefined,
): ServerCommand | undefined {
  if (at.inSegment) {
    lastBackup = null;
    const input = segment?.at(at.inputOffset, at.inputLength);
    const output = segment?.at(at.outputOffset, at.outputLength);
    if (input === undefined || output === undefined) return undefined;
    return { code, input, output };
  }
  const input = new Uint8Array(at.inputLength);
  native.commandReadInput(command, input);
  const output = lastBackup = new Uint8Array(at.outputLength);
  return { code, input, output };
}

/** The output array to copy back at the answer of the last {@linkcode commandOf}, if any. */
export function backupOf(): Uint8Array | null {
  return lastBackup;
}

/**
 * Runs `exec` on a command already taken and answers it through `to` exactly once: with what
 * it returned if that makes sense, else `HANDLER_FAILED` (also for a throw or a rejection).
 */
export function runExec<C, T>(
  exec: Exec<C>,
  cmd: ServerCommand,
  conn: ConnInfo,
  context: C,
  command: number,
  backup: Uint8Array | null,
  to: Answerer<T>,
  tag: T,
): void {
  // Before `exec` runs: it may detach the area's memory.
  const capacity = cmd.output.length;
  let r: ExecResult | void | Promise<ExecResult | void>;
  try {
    r = exec(cmd, conn, context);
  } catch (e) {
    to.failed(tag, command, Status.HANDLER_FAILED, 0, cmd.code, e, cmd.output, backup);
    return;
  }
  if (!(r instanceof Promise)) {
    // The common case, with no closure made: answered before anything else runs.
    settle(r, cmd, capacity, command, backup, to, tag);
    return;
  }
  to.async(tag, command);
  // Exactly once, whatever the Promise does: resolve, reject, or resolve with nonsense.
  let answered = false;
  const ok = (r: ExecResult | void) => {
    if (answered) return;
    answered = true;
    settle(r, cmd, capacity, command, backup, to, tag);
  };
  const fail = (e: unknown) => {
    if (answered) return;
    answered = true;
    to.failed(tag, command, Status.HANDLER_FAILED, 0, cmd.code, e, cmd.output, backup);
  };
  r.then(ok, fail).catch(fail);
}

/** Answers with what `exec` returned, if it makes sense, else fails it saying why. */
function settle<T>(
  r: ExecResult | void,
  cmd: ServerCommand,
  capacity: number,
  command: number,
  backup: Uint8Array | null,
  to: Answerer<T>,
  tag: T,
): void {
  const status = (r as ExecResult | undefined)?.status ?? 0;
  const length = (r as ExecResult | undefined)?.length ?? 0;
  let why: Error | undefined;
  if (r !== undefined && (typeof r !== "object" || r === null)) {
    why = new TypeError(`exec returned ${shown(r)}: it must return { status, length } or nothing`);
  } else if (!Number.isInteger(status) || status < 0 || status > I32_MAX) {
    why = new RangeError(
      `exec answered status ${
        shown(status)
      }: a status is an integer from 0 to ${I32_MAX} (the negative ones are the library's)`,
    );
  } else if (!Number.isInteger(length) || length < 0 || length > U32_MAX) {
    why = new RangeError(
      `exec answered length ${shown(length)}: a length is an integer from 0 to ${U32_MAX}`,
    );
  } else if (length > capacity) {
    const error = new RangeError(
      `exec answered ${length} output bytes for an output area of ${capacity}`,
    );
    to.failed(tag, command, Status.OUTPUT_OVERFLOW, length, cmd.code, error, cmd.output, backup);
    return;
  }
  if (why === undefined) to.answer(tag, command, status, length, backup);
  else to.failed(tag, command, Status.HANDLER_FAILED, 0, cmd.code, why, cmd.output, backup);
}

/** What a client is told of `error` (`exposeErrors`): its name and message. */
export function reasonOf(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return `thrown: ${shown(error)}`;
}

/**
 * The length a failed command is answered with: for `OUTPUT_OVERFLOW` the bytes `exec`
 * wanted (the core tells the client), for `HANDLER_FAILED` with `expose` the reason written
 * into `output`, else 0.
 */
export function failedLength(
  status: number,
  wanted: number,
  error: unknown,
  output: Uint8Array,
  expose: boolean,
): number {
  if (status === Status.OUTPUT_OVERFLOW) return wanted;
  if (status === Status.HANDLER_FAILED && expose) return writeReason(output, reasonOf(error));
  return 0;
}

const encoder = new TextEncoder();

/**
 * Writes `reason` into a failed command's output area, as much as fits (whole characters);
 * returns the bytes written (0 when the area is empty or its memory was detached).
 */
export function writeReason(output: Uint8Array, reason: string): number {
  if (output.length === 0) return 0;
  return encoder.encodeInto(reason, output).written;
}
