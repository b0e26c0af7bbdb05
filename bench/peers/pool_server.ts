/**
 * The pool bench's server peer: `deno run -A bench/peers/pool_server.ts <ic-id> <socket-dir>
 * <workers>`. Serves `bench/peers/pool_handler.ts`'s `exec` inline (workers 0), or in a pool of
 * that many workers that load the same module. Prints `ready`, then serves until its stdin
 * closes.
 *
 * @module
 */

import { serve } from "../../mod.ts";
import { exec } from "./pool_handler.ts";

const [icId, socketDir, workersArg] = Deno.args;
if (icId === undefined || socketDir === undefined || workersArg === undefined) {
  throw new Error("usage: pool_server.ts <ic-id> <socket-dir> <workers>");
}
const workers = Number(workersArg);

await using _server = await serve(
  icId,
  { exec },
  workers > 0
    ? { socketDir, workers, module: new URL("./pool_handler.ts", import.meta.url) }
    : { socketDir },
);
console.log("ready");
for await (const _ of Deno.stdin.readable) { /* serve until stdin closes */ }
