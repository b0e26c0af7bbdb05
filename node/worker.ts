/**
 * A server's pool worker in Node.js (a `worker_threads` Worker): binds the core as an addon,
 * then serves the pool's messages (`src/worker.ts`).
 *
 * @module
 */

import { parentPort } from "node:worker_threads";
import "./native.ts";
import type { ToWorker } from "../src/pool.ts";
import { runWorker } from "../src/worker.ts";

const parent = parentPort;
if (parent === null) throw new Error("node/worker.ts runs as a pool worker only");

runWorker(
  {
    post: (message) => parent.postMessage(message),
    onMessage: (receive) => {
      parent.on("message", (message: ToWorker) => receive(message));
    },
  },
  (module) => import(module),
);
