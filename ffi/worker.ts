/**
 * A server's pool worker in Deno (a Web Worker): binds the core over FFI, then serves the
 * pool's messages (`src/worker.ts`).
 *
 * @module
 */

import "./native.ts";
import type { FromWorker, ToWorker } from "../src/pool.ts";
import { runWorker } from "../src/worker.ts";

/** The worker's global scope, as far as this module needs it. */
const scope = globalThis as unknown as {
  postMessage(message: unknown): void;
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  close(): void;
};

// A Web Worker that ends itself fires no event in its parent: say so first, so that the pool
// answers what it held and starts another. (An end by other means, such as a runtime's crash,
// still goes unseen: the pool's stop then waits out its bound.)
const close = scope.close.bind(scope);
scope.close = () => {
  scope.postMessage({ kind: "exiting" } satisfies FromWorker);
  close();
};
// `Deno.exit()` in a worker ends only the worker, silently too.
const exit = Deno.exit;
Deno.exit = (code?: number): never => {
  scope.postMessage({ kind: "exiting" } satisfies FromWorker);
  return exit(code);
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
