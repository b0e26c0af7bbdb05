/**
 * A server peer whose thread can be held shut, so that commands sent meanwhile stay untaken:
 * `deno run -A tests/peers/gate.ts <ic-id> <socket-dir>`. Prints `ready`.
 *
 * Operation codes: 1 block — prints `blocked`, then holds the server's JavaScript thread
 * (a synchronous exec, so nothing else is taken) until the file named by the input exists,
 * at most 10 s, and answers status 1 if it appeared, 2 if not; 2 count — counts the command
 * and answers its input length as status; 3 counted — answers how many code-2 commands ran,
 * as status.
 *
 * @module
 */

import { serve } from "../../mod.ts";

export const BLOCK = 1;
export const COUNT = 2;
export const COUNTED = 3;

/** The longest a block holds the thread, in ms. */
const BLOCK_MS = 10_000;

if (import.meta.main) {
  const [icId, socketDir] = Deno.args;
  if (icId === undefined || socketDir === undefined) {
    throw new Error("usage: gate.ts <ic-id> <socket-dir>");
  }
  const nap = new Int32Array(new SharedArrayBuffer(4));
  const exists = (path: string) => {
    try {
      Deno.statSync(path);
      return true;
    } catch {
      return false;
    }
  };
  let counted = 0;
  const server = await serve(icId, {
    exec: ({ code, input }) => {
      switch (code) {
        case BLOCK: {
          const release = new TextDecoder().decode(input);
          console.log("blocked");
          const deadline = Date.now() + BLOCK_MS;
          // A synchronous wait keeps this thread, and so the hub's queue, shut.
          while (!exists(release)) {
            if (Date.now() > deadline) return { status: 2 };
            Atomics.wait(nap, 0, 0, 2);
          }
          return { status: 1 };
        }
        case COUNT:
          counted++;
          return { status: input.length };
        case COUNTED:
          return { status: counted };
        default:
          return { status: 0 };
      }
    },
  }, { socketDir });
  console.log("ready");
  // Serve until stdin closes (the parent went away).
  for await (const _ of Deno.stdin.readable) { /* nothing to read */ }
  await server.close();
}
