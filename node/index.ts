/**
 * shmcall for Node.js: processes on one Linux host calling each other through shared memory,
 * with the same API as the Deno module and the same wire protocol, so that Node and Deno
 * processes call each other. Node 20 or later; `import { connect, serve } from "shmcall"` (ESM)
 * or `const { connect, serve } = require("shmcall")` (CommonJS).
 *
 * @example A client of the server "kv" (another process)
 * ```js
 * import { connect } from "shmcall";
 *
 * const client = await connect("kv");
 * const r = client.execute(1, { input: new TextEncoder().encode("key"), outputLength: 64 });
 * console.log(r.status, r.output);
 * client.close();
 * ```
 *
 * @module
 */

// Node-API binds the core before anything else runs.
import "./native.ts";

export * from "../src/api.ts";
