/**
 * shmcall: processes on one Linux host calling each other through shared memory.
 *
 * A client issues a command — an operation code, input bytes, room for output — to a server
 * named by an ic id; only a 4-byte slot offset crosses between the processes per command, the
 * data stays in a shared segment. The Rust core (`core-rs/`) carries the transport; this
 * module is its Deno face. Needs `--allow-ffi` and `--allow-env`.
 *
 * @example Checking the protocol this build speaks
 * ```ts
 * import { protocolVersion, Status } from "./mod.ts";
 *
 * console.log(`shmcall protocol ${protocolVersion()}`);
 * console.log(Status.PEER_TERMINATED); // -1
 * ```
 *
 * @module
 */

export { Client, connect } from "./src/client.ts";
export type { Completion, ConnectOptions, ExecuteOptions, ExecuteResult } from "./src/client.ts";
export { serve, Server } from "./src/server.ts";
export type { ConnInfo, ExecResult, Handlers, ServeOptions, ServerCommand } from "./src/server.ts";
export { IpcError } from "./src/errors.ts";
export { Status, statusName } from "./src/status.ts";
export type { StatusName } from "./src/status.ts";
export { protocolVersion } from "./src/version.ts";
