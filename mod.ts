/**
 * shmcall: processes on one Linux host calling each other through shared memory, Deno and
 * Node.js processes alike.
 *
 * A server serves under an ic id — a name of 1 to 100 characters of `A-Z a-z 0-9 . _ -`, which
 * becomes the name of a socket file in the socket directory — and clients connect to it by that
 * name. A client issues commands — an operation code, input bytes, room for output —
 * synchronously, or asynchronously with a `completion`; per command only a 4-byte slot offset
 * crosses between the processes, the data stays in the connection's shared segment.
 *
 * Run with `--allow-ffi --allow-env` (`--allow-ffi` unscoped: views of shared memory need it).
 * The core library is the one `$SHMCALL_LIB` names, if set; else, in a clone of the
 * repository, the local `cargo build --release` output; else the prebuilt one of the npm package
 * `shmcall-linux-x64-gnu` of this version (Linux x64, glibc 2.34 or later), which Deno fetches
 * on first use. On other platforms, build it from source (`cargo build --release -p shmcall`)
 * and set `SHMCALL_LIB`.
 *
 * @example A server and a client (in one process here; normally two)
 * ```ts
 * import { connect, serve, Status } from "shmcall";
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
