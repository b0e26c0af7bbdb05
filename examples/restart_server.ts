/**
 * The restart example's server (see restart.ts):
 * `deno run -A examples/restart_server.ts <ic-id> <socket-dir> <generation>`.
 *
 * Echoes each command's input and answers its generation as the status; one command in ten
 * takes 2 ms (asynchronously), so that a quiesce has work in progress to wait for. Prints
 * `ready`. On SIGTERM (or when stdin closes) it quiesces, waits for its clients to leave, closes,
 * prints what it did, and exits.
 *
 * @module
 */

import { serve } from "shmcall";

const [icId, socketDir, generation] = Deno.args;
if (icId === undefined || socketDir === undefined || generation === undefined) {
  throw new Error("usage: restart_server.ts <ic-id> <socket-dir> <generation>");
}
const status = Number(generation);
/** The longest the server waits for its clients to leave once quiesced, in ms. */
const LEAVE_MS = 5_000;
let ran = 0;

const server = await serve(icId, {
  exec({ input, output }) {
    output.set(input);
    const answer = { status, length: input.length };
    if (++ran % 10 !== 0) return answer;
    return new Promise((resolve) => setTimeout(() => resolve(answer), 2));
  },
}, { socketDir });
console.log("ready");

// Serve until SIGTERM, or until stdin closes (the parent went away).
const stdin = Deno.stdin.readable.getReader();
const stop = () => void stdin.cancel();
Deno.addSignalListener("SIGTERM", stop);
while (!(await stdin.read()).done) { /* nothing to read */ }
Deno.removeSignalListener("SIGTERM", stop);

await server.quiesce(); // new commands and clients get SERVER_QUIESCING; those taken finish
// Clients leave once they met SERVER_QUIESCING and their other commands settled. Close only
// then (or after a deadline): close() fails what a client sent that this server has not taken
// yet with PEER_TERMINATED, not SERVER_QUIESCING, and the client cannot tell that it never ran.
const deadline = Date.now() + LEAVE_MS;
while (server.stats().connections > 0 && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 5));
}
const { commands, failures } = server.stats();
await server.close();
console.log(`closed: ran ${ran} of ${commands}, turned away ${failures.SERVER_QUIESCING ?? 0}`);
