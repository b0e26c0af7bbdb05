/**
 * A server whose handlers fail in every way a handler can:
 * `deno run -A tests/peers/failing.ts <ic-id> <socket-dir> [--expose] [--on-error]`.
 *
 * Operation codes: 1 echo; 4 throw; 5 reject; 10 return a string; 11 answer status -3;
 * 12 answer 300 output bytes. With `--refuse`, `open` throws; `close` always throws. With `--on-error` the server's `onError`
 * prints `onError <conn> <code|-> <name>: <message>` instead of the default report (standard
 * error). Prints `ready`; serves until its standard input ends.
 *
 * @module
 */

import { serve } from "../../mod.ts";

const [icId, socketDir, ...flags] = Deno.args;
if (icId === undefined || socketDir === undefined) {
  throw new Error("usage: failing.ts <ic-id> <socket-dir> [--expose] [--on-error] [--refuse]");
}
const refuse = () => {
  throw new TypeError("open refuses everyone");
};
const server = await serve(icId, {
  ...(flags.includes("--refuse") ? { open: refuse } : {}),
  exec: ({ code, input, output }) => {
    switch (code) {
      case 1:
        output.set(input.subarray(0, output.length));
        return { length: Math.min(input.length, output.length) };
      case 4:
        throw new Error("the handler throws");
      case 5:
        return Promise.reject(new RangeError("the handler rejects"));
      case 10:
        return "str" as never;
      case 11:
        return { status: -3 };
      case 12:
        return { length: 300 };
      default:
        return {};
    }
  },
  close: () => {
    throw new Error("close throws");
  },
}, {
  socketDir,
  exposeErrors: flags.includes("--expose"),
  ...(flags.includes("--on-error")
    ? {
      onError: (error: unknown, conn: { id: number }, command: { code: number } | undefined) => {
        const e = error as Error;
        console.log(`onError ${conn.id} ${command?.code ?? "-"} ${e.name}: ${e.message}`);
      },
    }
    : {}),
});
console.log("ready");
for await (const _ of Deno.stdin.readable) { /* serve until stdin closes */ }
await server.close();
