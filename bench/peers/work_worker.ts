/**
 * A Web Worker of the pool bench's ceiling (`bench/pool.ts`): on a message
 * `{ from, count, rounds }` it runs the CPU-bound handler's work (`pool_handler.ts`) for
 * `count` seeds, with no IPC at all, and answers the results' XOR.
 *
 * @module
 */

import { work } from "./pool_handler.ts";

const scope = globalThis as unknown as {
  postMessage(message: unknown): void;
  onmessage:
    | ((event: MessageEvent<{ from: number; count: number; rounds: number }>) => void)
    | null;
};

scope.onmessage = ({ data: { from, count, rounds } }) => {
  let x = 0;
  for (let i = from; i < from + count; i++) x ^= work(i, rounds);
  scope.postMessage(x);
};
