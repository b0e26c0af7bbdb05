/**
 * Library statuses: negative codes with names, the same table as `core-rs/src/status.rs`
 * (a test checks the two agree). User statuses, the server's own, are never negative.
 *
 * @module
 */

/**
 * Every library status by name.
 *
 * @example Telling a library status from a user status
 * ```ts
 * import { Status } from "./status.ts";
 *
 * const status = -1;
 * if (status === Status.PEER_TERMINATED) console.log("the server went away");
 * ```
 */
export const Status = {
  /** The peer process ended or closed the connection before the command finished. */
  PEER_TERMINATED: -1,
  /** The server's handler threw, rejected, or dropped the command. */
  HANDLER_FAILED: -2,
  /** The command was malformed. */
  INVALID_COMMAND: -3,
  /** The server reported more output than the output capacity. */
  OUTPUT_OVERFLOW: -4,
  /** The command was cancelled before the server took it. */
  CANCELLED: -5,
  /** The server is quiescing and takes no new commands. */
  SERVER_QUIESCING: -6,
  /** The local side closed while the command was outstanding. */
  CLOSED: -7,
  /** The peer broke the protocol; the connection was dropped. */
  PROTOCOL_VIOLATION: -8,
  /** The peers speak different protocol major versions. */
  VERSION_MISMATCH: -9,
  /** No server is listening on that ic id. */
  NOT_FOUND: -10,
  /** A live server already serves that ic id. */
  ALREADY_SERVED: -11,
  /** The peer's credentials are not allowed, or the socket directory is unsafe. */
  PERMISSION_DENIED: -12,
  /** An argument was out of range or of the wrong form. */
  INVALID_ARGUMENT: -13,
  /** An operating-system call failed. */
  IO_ERROR: -14,
  /**
   * The command's `timeout` passed after the server took it: it may have run. Its answer,
   * when it comes, is discarded.
   */
  TIMED_OUT: -15,
} as const;

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
 * import { statusName } from "./status.ts";
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
