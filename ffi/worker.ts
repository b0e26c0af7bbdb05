/**
 * A server's pool worker in Deno (a Web Worker): binds the core over FFI, then serves the
 * pool's messages (`src/worker.ts`).
 *
 * @module
 */

import "./native.ts";
import type { ToWorker } from "../src/pool.ts";
import { runWorker } from "../src/worker.ts";

/** The worker's global scope, as far as this module needs it. */
const scope = globalThis as unknown as {
  postMessage(message: unknown): void;
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
};

runWorker(
  {
    post: (message) => scope.postMessage(message),
    onMessage: (receive) => {
      scope.onmessage = (event) => receive(event.data);
    },
  },
  (module) => import(module),
);
