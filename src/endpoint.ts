/**
 * Where servers' sockets live.
 *
 * @module
 */

import { native } from "./native.ts";
import { checkSocketDir } from "./validate.ts";

/**
 * The socket directory that `serve` and `connect` use for `dir` — `dir` itself, or by default
 * `$SHMCALL_DIR`, `$XDG_RUNTIME_DIR/shmcall` or `/tmp/shmcall-<uid>` — as the core resolves it:
 * created if missing, and checked to be reachable by its owner only.
 *
 * @param dir A socket directory, or undefined for the default.
 * @returns The directory's path.
 * @throws {IpcError} `PERMISSION_DENIED` when the directory is not the owner's only, `IO_ERROR`.
 * @throws {TypeError} When `dir` is not a non-empty string.
 *
 * @example
 * ```ts
 * import { socketDir } from "shmcall";
 *
 * console.log(socketDir()); // "/run/user/1000/shmcall", say
 * ```
 */
export function socketDir(dir?: string): string {
  checkSocketDir(dir);
  return native.socketDir(dir);
}
