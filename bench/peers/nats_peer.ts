/**
 * A server of the NATS bench (`bench/nats.ts`): `deno run -A bench/peers/nats_peer.ts <role>
 * <socket-dir> [nats-url]`. Prints `ready` once it serves, and serves until killed.
 *
 * Roles:
 * - `bare`: a bare NATS responder on `bench.bare` (queue group `bench`) that answers each request
 *   with its own bytes — the baseline, written as a NATS user would.
 * - `shm`: `serve("bench-nats", echo, { nats })`: the same echo through shmcall's NATS bridge.
 * - `local`: `serve("bench-local", echo)`, on this host alone; with a NATS URL, serving through
 *   NATS too.
 *
 * @module
 */

import { connect as natsConnect } from "@nats-io/transport-node";
import { serve } from "../../mod.ts";

const [role, socketDir, url] = Deno.args;
if (role === undefined || socketDir === undefined) {
  throw new Error("usage: nats_peer.ts <bare|shm|local> <socket-dir> [nats-url]");
}

const echo = {
  exec: ({ input, output }: { input: Uint8Array; output: Uint8Array }) => {
    output.set(input);
    return { length: input.length };
  },
};

if (role === "bare") {
  const nc = await natsConnect({ servers: url! });
  nc.subscribe("bench.bare", {
    queue: "bench",
    callback: (_e, m) => {
      m.respond(m.data);
    },
  });
  await nc.flush();
} else if (role === "shm") {
  await serve("bench-nats", echo, { socketDir, nats: { servers: url! } });
} else if (role === "local") {
  await serve("bench-local", echo, {
    socketDir,
    ...(url === undefined ? {} : { nats: { servers: url } }),
  });
} else {
  throw new Error(`no role '${role}'`);
}
console.log("ready");
