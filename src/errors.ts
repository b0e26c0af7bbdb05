/**
 * The error the library throws and rejects with.
 *
 * @module
 */

import { type StatusName, statusName } from "./status.ts";

/**
 * A library failure: a named, negative {@linkcode Status} and a sentence that names the value
 * involved. The server's own (user) statuses are returned as results, never thrown.
 *
 * @example
 * ```ts
 * import { IpcError } from "shmcall";
 *
 * const e = new IpcError(-1, "the server of 'kv' ended the connection");
 * console.log(e.statusName); // "PEER_TERMINATED"
 * ```
 */
export class IpcError extends Error {
  /** The library status code (negative). */
  readonly status: number;
  /** The status's name, such as `"PEER_TERMINATED"`. */
  readonly statusName: StatusName | "UNKNOWN";

  /**
   * Creates an error for a library status.
   *
   * @param status A library status code.
   * @param message What went wrong.
   */
  constructor(status: number, message: string) {
    super(message);
    this.name = "IpcError";
    this.status = status;
    this.statusName = statusName(status) ?? "UNKNOWN";
  }
}
