/**
 * shmcall: processes on one Linux host calling each other through shared memory.
 *
 * A client issues a command — an operation code, input bytes, room for output — to a server
 * named by an ic id; only a 4-byte slot offset crosses between the processes per command, the
 * data stays in a shared segment. The Rust core (`core-rs/`) carries the transport; this
 * module is its Deno face. Needs `--allow-ffi` and `--allow-env`.
 *
 * @example A server and a client (in one process here; normally two)
 * ```ts
 * import { connect, serve, Status } from "./mod.ts";
 *
 * await using _server = await serve("doc-module", {
 *   exec: ({ input, output }) => {
 *     output.set(input.map((b) => b + 1));
 *     return { status: 0, length: input.length };
 *   },
 * });
 * await using client = await connect("doc-module");
 * const r = await client.execute(1, {
 *   input: new Uint8Array([1, 2, 3]),
 *   outputLength: 3,
 *   completion: () => {},
 * });
 * console.log(r.output, Status.PEER_TERMINATED); // Uint8Array(3) [ 2, 3, 4 ] -1
 * ```
 *
 * @module
 */

// Deno's FFI binds the core before anything else runs.
import "./ffi/native.ts";

export * from "./src/api.ts";
