/**
 * `deno task top`: a live table of shmcall servers' counters, like `top`.
 *
 * ```sh
 * deno task top                      # every server in the default socket directory
 * deno task top kv jobs --dir /d     # these servers, in /d
 * deno task top kv --count 3         # three refreshes, then exit
 * deno task top --help               # the options, and what the columns mean
 * ```
 *
 * It connects to each server as a client and asks for its counters (`Client.serverStats`), a
 * request the servers' library answers itself: their `exec` never sees it, though their `open`
 * and `close` run for the connection, as for any client. Rates are over the last interval.
 *
 * This is the Deno entry; the tool itself is `top_run.ts`, which the npm package runs as
 * `shmcall-top` (node/top.ts).
 *
 * @module
 */

import { runTop } from "./top_run.ts";

if (import.meta.main) {
  Deno.exit(await runTop(() => import("../mod.ts"), "deno task top", Deno.args));
}
