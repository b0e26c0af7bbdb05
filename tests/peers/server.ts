/**
 * A Deno server peer for the tests: `deno run -A tests/peers/server.ts <ic-id> <socket-dir>`.
 *
 * Prints `ready`, then `open <conn>` and `close <conn>`, and with `--verbose` `exec <conn>
 * <code>` per command. Operation codes, as the Rust peer's:
 * 1 echo; 2 checksum (FNV-1a-64 of the input, status 7); 3 hold (never answers);
 * 4 throw; 5 reject (async); 6 echo after 200 ms (async); 8 kill this process with SIGKILL
 * 50 ms later (without answering); 9 echo after keeping this thread busy for 300 ms (so that
 * no other command is taken meanwhile); 10 the server's pid (4 bytes, little-endian); 11 answers
 * 8 bytes more than the output area holds. `--log FILE` appends `open`, `exec`, `close` to FILE.
 * `--nats URL` serves through NATS too (`open` and `close` then print the session); `--expose`
 * sets `exposeErrors`.
 *
 * @module
 */

import { serve } from "../../mod.ts";
import { fnv1a64 } from "./fnv.ts";

const [icId, socketDir, ...flags] = Deno.args;
if (icId === undefined || socketDir === undefined) {
  throw new Error("usage: server.ts <ic-id> <dir>");
}
const verbose = flags.includes("--verbose");
const logAt = flags.indexOf("--log");
const logFile = logAt >= 0 ? flags[logAt + 1] : undefined;
const log = (what: string) => {
  if (logFile) Deno.writeTextFileSync(logFile, `${what}\n`, { append: true });
};
const spinAt = flags.indexOf("--spin");
const spinMicros = spinAt >= 0 ? Number(flags[spinAt + 1]) : undefined;

const natsAt = flags.indexOf("--nats");
const natsUrl = natsAt >= 0 ? flags[natsAt + 1] : undefined;

const say = (line: string) => console.log(line);
const named = (conn: { id: number; session?: string }) =>
  conn.session === undefined ? `${conn.id}` : `${conn.id} ${conn.session}`;

const server = await serve(icId, {
  open: (conn) => {
    log("open");
    say(`open ${named(conn)}`);
    return conn.id;
  },
  exec: ({ code, input, output }, conn) => {
    log("exec");
    if (verbose) say(`exec ${conn.id} ${code}`);
    switch (code) {
      case 1:
        output.set(input.subarray(0, output.length));
        return { length: Math.min(input.length, output.length) };
      case 2:
        new DataView(output.buffer, output.byteOffset, 8).setBigUint64(0, fnv1a64(input), true);
        return { status: 7, length: 8 };
      case 3:
        return new Promise(() => {});
      case 4:
        throw new Error("the handler throws");
      case 5:
        return Promise.reject(new Error("the handler rejects"));
      case 6:
        return new Promise((resolve) =>
          setTimeout(() => {
            output.set(input.subarray(0, output.length));
            resolve({ length: Math.min(input.length, output.length) });
          }, 200)
        );
      case 8:
        setTimeout(() => Deno.kill(Deno.pid, "SIGKILL"), 50);
        return new Promise(() => {});
      case 9: {
        const until = performance.now() + 300;
        while (performance.now() < until) { /* busy: nothing else is taken meanwhile */ }
        output.set(input.subarray(0, output.length));
        return { length: Math.min(input.length, output.length) };
      }
      case 10:
        new DataView(output.buffer, output.byteOffset, 4).setUint32(0, Deno.pid, true);
        return { length: 4 };
      case 11:
        return { length: output.length + 8 };
      default:
        return { status: 0, length: 0 };
    }
  },
  close: (conn) => {
    log("close");
    say(`close ${named(conn)}`);
  },
}, {
  socketDir,
  ...(spinMicros === undefined ? {} : { spinMicros }),
  ...(natsUrl === undefined ? {} : { nats: { servers: natsUrl } }),
  ...(flags.includes("--expose") ? { exposeErrors: true } : {}),
});
say("ready");
// Serve until stdin closes (the parent went away).
for await (const _ of Deno.stdin.readable) { /* nothing to read */ }
await server.close();
