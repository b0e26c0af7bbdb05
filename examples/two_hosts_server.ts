/**
 * "Host A" of `examples/two_hosts.ts`: serves the ic id `prices` (a price for a symbol) and hosts
 * the event queue `ticks`, on this host through its socket directory and to other hosts through
 * NATS. `deno run -A examples/two_hosts_server.ts <socket-dir> <nats-url>`; prints `ready`, and
 * stops when its standard input ends.
 *
 * @module
 */

import { serve, serveEventQueue } from "shmcall";

const [socketDir, url] = Deno.args;
if (socketDir === undefined || url === undefined) {
  throw new Error("usage: two_hosts_server.ts <socket-dir> <nats-url>");
}
const nats = { servers: url };
const prices: Record<string, number> = { ACME: 101.5, INIT: 48.25 };

await using _server = await serve("prices", {
  exec: ({ input, output }, conn) => {
    const symbol = new TextDecoder().decode(input);
    const price = prices[symbol];
    if (price === undefined) return { status: 404 };
    const where = conn.session === undefined ? `pid ${conn.pid}` : "NATS";
    return { length: new TextEncoder().encodeInto(`${price} (via ${where})`, output).written };
  },
}, { socketDir, nats });
await using _queue = await serveEventQueue("ticks", { socketDir, nats });
console.log("ready");
for await (const _ of Deno.stdin.readable) { /* serve until the parent goes */ }
