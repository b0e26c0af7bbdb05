/**
 * `deno task top`: a live table of shmcall servers' counters, like `top`.
 *
 * ```sh
 * deno task top                      # every server in the default socket directory
 * deno task top kv jobs --dir /d     # these servers, in /d
 * deno task top kv --count 3         # three refreshes, then exit
 * ```
 *
 * It connects to each server as a client and asks for its counters (`Client.serverStats`), a
 * request the servers' library answers itself: their `exec` never sees it, though their `open`
 * and `close` run for the connection, as for any client. Rates are over the last interval.
 *
 * @module
 */

import { type Client, connect, IpcError, type ServerStats, socketDir, statusName } from "../mod.ts";

interface Args {
  ids: string[];
  dir: string | undefined;
  intervalMs: number;
  count: number;
}

function usage(why: string): never {
  console.error(`${why}\nusage: deno task top [ic-id ...] [--dir D] [--interval MS] [--count N]`);
  Deno.exit(2);
}

function parse(args: string[]): Args {
  const out: Args = { ids: [], dir: undefined, intervalMs: 1000, count: Infinity };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = () => args[++i] ?? usage(`${a} needs a value`);
    if (a === "--dir") out.dir = value();
    else if (a === "--interval") out.intervalMs = Number(value());
    else if (a === "--count") out.count = Number(value());
    else if (a.startsWith("--")) usage(`unknown option ${a}`);
    else out.ids.push(a);
  }
  if (!(out.intervalMs >= 10)) usage(`--interval must be at least 10 ms`);
  if (!(out.count >= 1)) usage(`--count must be at least 1`);
  return out;
}

/** The ic ids served in `dir`, from its sockets' names (ids too long for a path show hashed). */
function discover(dir: string): string[] {
  const ids: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) {
      if (e.name.endsWith(".sock") && !e.name.includes("~")) ids.push(e.name.slice(0, -5));
    }
  } catch {
    // No directory: no servers.
  }
  return ids.sort();
}

interface Row {
  id: string;
  now?: ServerStats;
  error?: string;
}

const COLUMNS = [
  "ic id",
  "conns",
  "workers",
  "state",
  "commands",
  "cmd/s",
  "in flight",
  "in MB/s",
  "out MB/s",
  "backup",
  "p50 µs",
  "p99 µs",
  "failures",
];

function failures(s: ServerStats): string {
  const parts = Object.entries(s.failures).map(([name, n]) => `${name} ${n}`);
  return parts.length === 0 ? "-" : parts.join(", ");
}

function render(rows: Row[], before: Map<string, ServerStats>, seconds: number): string {
  const cells = rows.map(({ id, now, error }) => {
    if (now === undefined) return [id, "-", "-", error ?? "?", "", "", "", "", "", "", "", "", ""];
    const was = before.get(id);
    const rate = (f: (s: ServerStats) => number, scale = 1) =>
      was === undefined ? "-" : ((f(now) - f(was)) / seconds / scale).toFixed(scale === 1 ? 0 : 2);
    return [
      id,
      String(now.connections),
      String(now.workers),
      now.quiescing ? "quiescing" : "serving",
      String(now.commands),
      rate((s) => s.commands),
      String(now.inFlight),
      rate((s) => s.bytesIn, 1e6),
      rate((s) => s.bytesOut, 1e6),
      String(now.backup),
      now.latency.count === 0 ? "-" : now.latency.p50.toFixed(1),
      now.latency.count === 0 ? "-" : now.latency.p99.toFixed(1),
      failures(now),
    ];
  });
  const widths = COLUMNS.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r.map((c, i) => i === 0 || i >= 12 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))
      .join("  ").trimEnd();
  return [line(COLUMNS), ...cells.map(line)].join("\n");
}

async function main(): Promise<void> {
  const args = parse(Deno.args);
  const dir = socketDir(args.dir);
  const clients = new Map<string, Client>();
  let before = new Map<string, ServerStats>();
  let beforeAt = 0;
  const tty = Deno.stdout.isTerminal();
  try {
    for (let round = 0; round < args.count; round++) {
      if (round > 0) await new Promise((r) => setTimeout(r, args.intervalMs));
      const ids = args.ids.length > 0 ? args.ids : discover(dir);
      const rows: Row[] = [];
      for (const id of ids) {
        try {
          let client = clients.get(id);
          if (client === undefined || client.closed) {
            client = await connect(id, { socketDir: dir });
            clients.set(id, client);
          }
          rows.push({ id, now: await client.serverStats() });
        } catch (e) {
          clients.get(id)?.close();
          clients.delete(id);
          const why = e instanceof IpcError ? statusName(e.status) ?? String(e.status) : String(e);
          rows.push({ id, error: why });
        }
      }
      const now = performance.now();
      const seconds = (now - beforeAt) / 1000;
      beforeAt = now;
      const at = new Date().toISOString().slice(11, 19);
      const table = ids.length === 0 ? `no servers in ${dir}` : render(rows, before, seconds);
      const text = `shmcall top — ${dir} — ${at}\n${table}\n`;
      console.log(tty ? `\x1b[H\x1b[2J${text}` : text);
      before = new Map(rows.flatMap((r) => r.now === undefined ? [] : [[r.id, r.now]]));
    }
  } finally {
    for (const c of clients.values()) c.close();
  }
}

if (import.meta.main) await main();
