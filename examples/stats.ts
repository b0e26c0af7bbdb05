/**
 * The counters of both ends of a connection: the client runs some commands against a server in
 * another process (tests/peers/server.ts) — echoes through shared memory, one too large for a
 * slot (the backup path), two whose handler throws — then prints its own counters
 * (`client.stats()`) beside the server's, which it asks the server for over the same
 * connection (`client.serverStats()`: the server's library answers, no handler sees it).
 *
 * `deno run -A examples/stats.ts`
 *
 * @module
 */

import { connect, type IpcError, type Stats } from "shmcall";
import { Peer, tempSocketDir } from "../tests/peers/spawn.ts";

const ECHO = 1;
const THROW = 4;

using dir = tempSocketDir();
const SERVER = decodeURIComponent(new URL("../tests/peers/server.ts", import.meta.url).pathname);
const server = await Peer.start(Deno.execPath(), ["run", "-A", SERVER, "stats", dir.path]);
try {
  using client = await connect("stats", { socketDir: dir.path });
  const completion = () => {};
  const small = new Uint8Array(100);
  for (let i = 0; i < 10; i++) {
    // 100 asynchronous commands in flight at once, then 10 synchronous ones.
    await Promise.all(
      Array.from(
        { length: 100 },
        () => client.execute(ECHO, { input: small, outputLength: 100, completion }),
      ),
    );
    for (let j = 0; j < 10; j++) client.execute(ECHO, { input: small, outputLength: 100 });
  }
  const large = new Uint8Array(2 << 20); // larger than any slot: the backup path
  await client.execute(ECHO, { input: large, outputLength: large.length, completion });
  for (let i = 0; i < 2; i++) {
    await client.execute(THROW, { completion }).catch((e: IpcError) => e); // HANDLER_FAILED
  }

  // Read first: the client counts the serverStats() request among its commands (the server
  // does not), which would make the two columns differ by one.
  const mine = client.stats();
  const theirs = await client.serverStats();
  const row = (name: string, f: (s: Stats) => string | number) =>
    `${name.padEnd(12)} ${String(f(mine)).padStart(18)} ${String(f(theirs)).padStart(18)}`;
  const failures = (s: Stats) =>
    Object.entries(s.failures).map(([name, n]) => `${name} ${n}`).join(", ") || "-";
  console.log(
    [
      row("", (s) => s === mine ? "client" : "server"),
      row("commands", (s) => s.commands),
      row("in flight", (s) => s.inFlight),
      row("bytes in", (s) => s.bytesIn),
      row("bytes out", (s) => s.bytesOut),
      row("backup", (s) => s.backup),
      row("failures", failures),
      row("timed", (s) => s.latency.count),
      row("p50 µs", (s) => s.latency.p50.toFixed(1)),
      row("p90 µs", (s) => s.latency.p90.toFixed(1)),
      row("p99 µs", (s) => s.latency.p99.toFixed(1)),
      row("max µs", (s) => s.latency.max.toFixed(1)),
    ].join("\n"),
  );
  console.log(
    `server: ${theirs.connections} connection, ${theirs.workers} workers, ${
      theirs.quiescing ? "quiescing" : "serving"
    }`,
  );
  console.log(`stats: client ${mine.commands} commands, server ${theirs.commands} commands`);
} finally {
  await server.kill();
}
