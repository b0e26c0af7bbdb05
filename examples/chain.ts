/**
 * A chain of three processes: this one (A) calls a relay (B) that serves and is also a client,
 * of a server (C). B prefixes the input with `B>` on the way down, C echoes it, and B appends
 * `<B` on the way back, so the answer shows both hops. B's `exec` forwards synchronously (a
 * synchronous `execute` inside `exec`, which holds B's thread for the round trip) or
 * asynchronously (an `exec` that returns the Promise of an asynchronous `execute`), as the
 * operation code asks. The peers are the tests' (tests/peers/relay.ts, tests/peers/server.ts).
 *
 * `deno run -A examples/chain.ts`
 *
 * @module
 */

import { connect } from "shmcall";
import { Peer, tempSocketDir } from "../tests/peers/spawn.ts";

const ECHO = 1;
/** In a code sent to the relay: forward asynchronously. */
const ASYNC = 0x1_0000;

const peer = (file: string) => decodeURIComponent(new URL(file, import.meta.url).pathname);
using dir = tempSocketDir();
let c: Peer | undefined;
let b: Peer | undefined;
try {
  c = await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    peer("../tests/peers/server.ts"),
    "C",
    dir.path,
  ]);
  b = await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    peer("../tests/peers/relay.ts"),
    "B",
    dir.path,
    "C", // B's downstream
    "--name",
    "B",
  ]);
  using client = await connect("B", { socketDir: dir.path });
  const input = new TextEncoder().encode("hello");
  const text = (r: { output: Uint8Array }) => new TextDecoder().decode(r.output);

  // A waits inline; so does B (its synchronous forward), while C answers.
  const sync = client.execute(ECHO, { input, outputLength: 64 });
  // A gets a Promise; B's exec awaits its own asynchronous call to C.
  const async = await client.execute(ECHO | ASYNC, {
    input,
    outputLength: 64,
    completion: () => {},
  });
  console.log(`A (pid ${Deno.pid}) -> B (pid ${b.pid}) -> C (pid ${c.pid})`);
  console.log(`sync forward:  ${text(sync)}`);
  console.log(`async forward: ${text(async)}`);
  console.log(`chain: ${text(sync) === text(async) ? text(sync) : "the forwards differ"}`);
} finally {
  await b?.kill();
  await c?.kill();
}
