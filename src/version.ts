/**
 * The protocol version of the loaded core.
 *
 * @module
 */

import { native } from "./native.ts";

/**
 * The protocol version the loaded core speaks, as `"major.minor"`. Peers whose majors differ
 * refuse each other; minors may differ.
 *
 * @returns The version, such as `"2.4"`.
 * @throws {Error} When the core library cannot be loaded; the message lists every path tried.
 *
 * @example
 * ```ts
 * import { protocolVersion } from "shmcall";
 *
 * console.log(protocolVersion()); // "2.3"
 * ```
 */
export function protocolVersion(): string {
  return native.protocolVersion();
}
