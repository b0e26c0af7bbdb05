/**
 * A pool handler module for the tests (`serve(…, { workers, module })`). Each worker that
 * loads it gets an id of its own, made at the module's top level.
 *
 * Operation codes: 1 who — outputs `{"worker", "context"}` as JSON; 2 throw; 3 invert — outputs
 * each input byte XOR 0xff; 4 hold — with a context of {@linkcode Held}, counts itself started
 * in `gate[0]`, waits (at most 10 s) until `gate[1 + i]` (i: the input's first u32) is set, then
 * outputs the worker id, status 1 (released) or 2 (timed out); 5 bump — increments the
 * context's `n` in this worker, answers it as status; 6 exit — the worker calls `close()` and never
 * answers; 7 — the same with `Deno.exit()`; 8 overflow — answers one byte more than its output
 * area holds; 9 ticks — starts a 1 ms interval timer in this worker on its first call, and
 * answers how many times it fired so far as status; 10 block — as hold, but the worker's thread
 * waits in `Atomics.wait` (it runs nothing else meanwhile, nor takes commands).
 *
 * @module
 */

import type { ConnInfo, ExecResult, ServerCommand } from "../../mod.ts";

export const WHO = 1;
export const THROW = 2;
export const INVERT = 3;
export const HOLD = 4;
export const BUMP = 5;
export const EXIT = 6;
export const DENO_EXIT = 7;
export const OVERFLOW = 8;
export const TICKS = 9;
export const BLOCK = 10;

/** Times this worker's interval timer fired (`TICKS`), or -1 before it started. */
let ticks = -1;

/** This worker's id. */
const WORKER = crypto.randomUUID();

/** A context whose `gate` holds commands: `[started, release 0, release 1, …]`. */
export interface Held {
  gate: SharedArrayBuffer;
}

const HOLD_MS = 10_000;

function put(output: Uint8Array, text: string): ExecResult {
  const bytes = new TextEncoder().encode(text);
  output.set(bytes.subarray(0, output.length));
  return { length: Math.min(bytes.length, output.length) };
}

export async function exec(
  { code, input, output }: ServerCommand,
  _conn: ConnInfo,
  context: unknown,
): Promise<ExecResult> {
  switch (code) {
    case WHO:
      return put(output, JSON.stringify({ worker: WORKER, context }));
    case THROW:
      throw new Error("the pool handler throws");
    case OVERFLOW:
      return { length: output.length + 1 };
    case INVERT: {
      const n = Math.min(input.length, output.length);
      for (let i = 0; i < n; i++) output[i] = input[i]! ^ 0xff;
      return { length: n };
    }
    case HOLD: {
      const gate = new Int32Array((context as Held).gate);
      const at = 1 + new DataView(input.buffer, input.byteOffset, 4).getUint32(0, true);
      Atomics.add(gate, 0, 1);
      Atomics.notify(gate, 0);
      const deadline = Date.now() + HOLD_MS;
      while (Atomics.load(gate, at) === 0 && Date.now() < deadline) {
        const w = Atomics.waitAsync(gate, at, 0, deadline - Date.now());
        if (w.async) await w.value;
      }
      return { ...put(output, WORKER), status: Atomics.load(gate, at) === 0 ? 2 : 1 };
    }
    case BUMP: {
      const c = context as { n: number };
      return { status: ++c.n };
    }
    case EXIT:
      // The worker ends itself, with no error, before it answers.
      (globalThis as unknown as { close(): void }).close();
      return await new Promise<never>(() => {});
    case DENO_EXIT:
      // In a worker, this ends the worker alone, as silently.
      Deno.exit(0);
      break;
    case BLOCK: {
      const gate = new Int32Array((context as Held).gate);
      const at = 1 + new DataView(input.buffer, input.byteOffset, 4).getUint32(0, true);
      Atomics.add(gate, 0, 1);
      Atomics.notify(gate, 0);
      Atomics.wait(gate, at, 0, HOLD_MS);
      return { ...put(output, WORKER), status: Atomics.load(gate, at) === 0 ? 2 : 1 };
    }
    case TICKS:
      if (ticks < 0) {
        ticks = 0;
        setInterval(() => ticks++, 1);
      }
      return { status: ticks };
    default:
      return { status: 0 };
  }
}
