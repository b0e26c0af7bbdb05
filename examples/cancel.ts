/**
 * Withdrawing commands with `signal` and `timeout`. The server (another process,
 * tests/peers/gate.ts) runs one command that holds its thread until we release it; commands
 * sent meanwhile wait, not yet taken, and can be withdrawn: they settle `CANCELLED` at once and
 * never run. The holding command was taken before its signal aborted, which has no effect on
 * it, and before its timeout passed, which fails it `TIMED_OUT`: it may have run (here it is
 * still running), and its answer, when the server is released, is discarded.
 *
 * `deno run -A examples/cancel.ts`
 *
 * @module
 */

import { connect, type IpcError } from "shmcall";
import { BLOCK, COUNT, COUNTED } from "../tests/peers/gate.ts";
import { Peer, tempSocketDir } from "../tests/peers/spawn.ts";

using dir = tempSocketDir();
const GATE = decodeURIComponent(new URL("../tests/peers/gate.ts", import.meta.url).pathname);
const server = await Peer.start(Deno.execPath(), ["run", "-A", GATE, "gate", dir.path]);
try {
  using client = await connect("gate", { socketDir: dir.path });
  const completion = () => {};
  const outcome = (p: Promise<{ status: number }>) =>
    p.then((r) => `ran, status ${r.status}`, (e: IpcError) => `${e.statusName}: ${e.message}`);

  // Taken: the server is running it (it printed "blocked") when its signal aborts and its
  // timeout passes.
  const release = `${dir.path}/release`;
  const holdAbort = new AbortController();
  // (Each outcome is taken at once: a Promise that rejects before anyone awaits it is an
  // unhandled rejection.)
  const hold = outcome(client.execute(BLOCK, {
    input: new TextEncoder().encode(release),
    signal: holdAbort.signal,
    timeout: 50,
    completion,
  }));
  await server.expect("blocked");

  // Not taken: the server's thread is busy, so these wait in line. The third one's timeout is
  // long enough: it is taken once the server is free, and runs.
  const abort = new AbortController();
  const bySignal = outcome(client.execute(COUNT, { signal: abort.signal, completion }));
  const byTimeout = outcome(client.execute(COUNT, { timeout: 50, completion }));
  const waits = outcome(client.execute(COUNT, { timeout: 60_000, completion }));

  abort.abort("not needed any more");
  holdAbort.abort("too late");
  console.log(`signal:  ${await bySignal}`); // at once, the server still blocked
  console.log(`timeout: ${await byTimeout}`); // 50 ms later, the server still blocked
  console.log(`taken:   ${await hold}`); // TIMED_OUT, the server still blocked
  Deno.writeTextFileSync(release, ""); // let the server go on: the held answer is discarded
  console.log(`waited:  ${await waits}`);

  const ran = client.execute(COUNTED).status; // the server counts the COUNT commands it ran
  const { commands, failures } = client.stats();
  console.log(
    `cancel: ${commands} commands sent, ${
      failures.CANCELLED ?? 0
    } withdrawn, ${ran} of the 3 queued ran`,
  );
} finally {
  await server.kill();
}
