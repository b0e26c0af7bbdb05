/**
 * Library statuses: negative codes with names, the same table as `core-rs/src/status.rs`
 * (a test checks the two agree). User statuses, the server's own, are never negative.
 *
 * @module
 */

/**
 * Every library status by name: the negative codes the library fails a call or a command with
 * (an `IpcError`'s `status`). The server's own statuses are never negative.
 *
 * @example Telling a library status from a user status
 * ```ts
 * import { Status } from "shmcall";
 *
 * const status = -1;
 * if (status === Status.PEER_TERMINATED) console.log("the server went away");
 * ```
 */
export const Status: {
  /** The peer process ended or closed the connection before the command finished. */
  readonly PEER_TERMINATED: -1;
  /** The server's handler threw, rejected, or dropped the command. */
  readonly HANDLER_FAILED: -2;
  /** The command was malformed. */
  readonly INVALID_COMMAND: -3;
  /** The server reported more output than the output capacity. */
  readonly OUTPUT_OVERFLOW: -4;
  /** The command was cancelled before the server took it. */
  readonly CANCELLED: -5;
  /** The server is quiescing and takes no new commands. */
  readonly SERVER_QUIESCING: -6;
  /** The local side closed while the command was outstanding. */
  readonly CLOSED: -7;
  /** The peer broke the protocol; the connection was dropped. */
  readonly PROTOCOL_VIOLATION: -8;
  /** The peers speak different protocol major versions. */
  readonly VERSION_MISMATCH: -9;
  /** No server is listening on that ic id. */
  readonly NOT_FOUND: -10;
  /** A live server already serves that ic id. */
  readonly ALREADY_SERVED: -11;
  /** The peer's credentials are not allowed, or the socket directory is unsafe. */
  readonly PERMISSION_DENIED: -12;
  /** An argument was out of range or of the wrong form. */
  readonly INVALID_ARGUMENT: -13;
  /** An operating-system call failed. */
  readonly IO_ERROR: -14;
  /**
   * The command's `timeout` passed after the server took it: it may have run. Its answer,
   * when it comes, is discarded.
   */
  readonly TIMED_OUT: -15;
} = {
  // The type above spells out each value so that the documentation shows it; the compiler holds
  // this object to exactly those names and values.
  PEER_TERMINATED: -1,
  HANDLER_FAILED: -2,
  INVALID_COMMAND: -3,
  OUTPUT_OVERFLOW: -4,
  CANCELLED: -5,
  SERVER_QUIESCING: -6,
  CLOSED: -7,
  PROTOCOL_VIOLATION: -8,
  VERSION_MISMATCH: -9,
  NOT_FOUND: -10,
  ALREADY_SERVED: -11,
  PERMISSION_DENIED: -12,
  INVALID_ARGUMENT: -13,
  IO_ERROR: -14,
  TIMED_OUT: -15,
};

/** The name of a library status, such as `"PEER_TERMINATED"`. */
export type StatusName = keyof typeof Status;

/**
 * The name of a library status code, or `undefined` for a code that is none.
 *
 * @param code A status code.
 * @returns Its name, or `undefined`.
 *
 * @example
 * ```ts
 * import { statusName } from "shmcall";
 *
 * console.log(statusName(-1)); // "PEER_TERMINATED"
 * ```
 */
export function statusName(code: number): StatusName | undefined {
  for (const [name, value] of Object.entries(Status)) {
    if (value === code) return name as StatusName;
  }
  return undefined;
}
