/**
 * shmcall top, whatever the runtime: `deno task top` (tools/top.ts) and the npm package's
 * `shmcall-top` (node/top.ts) each pass a loader of their runtime's shmcall API and their
 * command's name to {@linkcode runTop}. Only `node:` built-ins are used here, which Deno and
 * Node both have; the API is loaded only once the arguments are good, so that `--help` and a
 * usage error need no core library.
 *
 * @module
 */

import { lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import type * as Shmcall from "../src/api.ts";
import type { Client, ServerStats } from "../src/api.ts";

/** The parts of the shmcall API that top uses: `mod.ts` in Deno, the package in Node. */
export type TopApi = Pick<typeof Shmcall, "connect" | "IpcError" | "socketDir" | "statusName">;

/** What a row's state says of a socket with no server listening behind it. */
export const STALE = "stale: no server listening";

const SYNOPSIS = "[ic-id ...] [--dir D] [--interval MS] [--count N]";

/** The text of `--help`, for `command` (`shmcall-top`, `deno task top`). */
export function helpText(command: string): string {
  return `usage: ${command} ${SYNOPSIS}

A live table of the shmcall servers in a socket directory, like top. It connects to each server
as a client and asks for its counters: no handler sees the request, though the server's open and
close run for the connection, and it counts among the server's connections.

  ic-id ...       only these servers (default: every socket in the directory)
  --dir D         the socket directory (default: $SHMCALL_DIR, else $XDG_RUNTIME_DIR/shmcall,
                  else /tmp/shmcall-<uid>)
  --interval MS   milliseconds between refreshes, at least 10 (default 1000)
  --count N       refreshes before exiting (default: until interrupted)
  -h, --help      this text

Columns (rates are over the last interval, "-" on the first table):
  ic id       the server's ic id, from its socket's name
  conns       connections open, this tool's own included
  workers     workers in its pool (0: every command runs on the server's thread)
  state       serving or quiescing; "${STALE}" for a socket left behind
              by a server that ended without removing it (connecting removes it when no
              server holds its lock); else the library status that stopped the look, such as
              PERMISSION_DENIED (the socket or the server refuses this user), SERVER_QUIESCING
              (a quiescing server takes no new client) or NOT_FOUND (no socket for a named id)
  commands    commands received since the server started
  cmd/s       commands received per second
  in flight   commands received and not answered yet
  in MB/s     input bytes received per second, in millions
  out MB/s    output bytes answered per second, in millions
  backup      commands that took the backup path (the control socket) instead of shared memory
  p50 µs      median time from receiving a command to answering it, in microseconds
  p99 µs      99th percentile of that time
  failures    commands that ended with a library status, by its name

Exit status: 0 when done (after --count tables), 1 when the socket directory cannot be used or
read, 2 for a wrong argument.`;
}

class UsageError extends Error {}

interface Args {
  help: boolean;
  ids: string[];
  dir: string | undefined;
  intervalMs: number;
  count: number;
}

function parse(args: string[]): Args {
  const out: Args = { help: false, ids: [], dir: undefined, intervalMs: 1000, count: Infinity };
  let options = true;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const value = () => {
      const v = args[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      return v;
    };
    if (!options || !a.startsWith("-")) out.ids.push(a);
    else if (a === "--") options = false;
    else if (a === "-h" || a === "--help") out.help = true;
    else if (a === "--dir") out.dir = value();
    else if (a === "--interval") out.intervalMs = Number(value());
    else if (a === "--count") out.count = Number(value());
    else throw new UsageError(`unknown option ${a}`);
  }
  if (out.dir === "") throw new UsageError(`--dir must not be empty`);
  if (!(out.intervalMs >= 10)) throw new UsageError(`--interval must be at least 10 ms`);
  if (!(out.count >= 1)) throw new UsageError(`--count must be at least 1`);
  return out;
}

/** An error's cause in a few words, on one line: `permission denied (EACCES)`, say. */
function cause(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  const message = e instanceof Error ? e.message : String(e);
  if (typeof code === "string") {
    // Node's system errors read `EACCES: permission denied, scandir '/d'`.
    const what = message.startsWith(`${code}: `)
      ? message.slice(code.length + 2).split(",")[0]!
      : message;
    return `${what} (${code})`;
  }
  return message;
}

const oneLine = (text: string) => text.replace(/\s*\n\s*/g, " ");

/** Why top cannot go on: printed on one line, then it exits 1. */
class Fatal extends Error {}

/**
 * The ic ids served in `dir`, from its sockets' names (ids too long for a path show hashed and
 * are left out). A directory that cannot be read is fatal; one that is gone holds no server.
 */
function discover(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    if ((e as { code?: unknown }).code === "ENOENT") return [];
    // EACCES, or in Deno a missing --allow-read (Deno.errors.NotCapable), among others.
    throw new Fatal(`cannot read the socket directory ${dir}: ${cause(e)}`);
  }
  const ids = names.filter((n) => n.endsWith(".sock") && !n.includes("~")).map((n) =>
    n.slice(0, -5)
  );
  return ids.sort();
}

/** Whether `dir` holds a socket file named for `id`. */
function hasSocket(dir: string, id: string): boolean {
  try {
    lstatSync(join(dir, `${id}.sock`));
    return true;
  } catch {
    return false;
  }
}

/** One server's line: its counters, or why there are none. */
export interface Row {
  id: string;
  now?: ServerStats;
  error?: string;
}

/**
 * Asks each of `ids` in `dir` for its counters, over the connections in `clients` (made as
 * needed, dropped when one fails). A socket with nobody listening behind it is marked
 * {@linkcode STALE}; other failures show the library status's name.
 */
export async function collect(
  api: TopApi,
  dir: string,
  ids: string[],
  clients: Map<string, Client>,
  discovered = false,
): Promise<Row[]> {
  const rows: Row[] = [];
  for (const id of ids) {
    let socketSeen = discovered;
    try {
      let client = clients.get(id);
      if (client === undefined || client.closed) {
        // Looked at before connecting: connecting to a stale socket may remove it.
        socketSeen ||= hasSocket(dir, id);
        client = await api.connect(id, { socketDir: dir });
        clients.set(id, client);
      }
      rows.push({ id, now: await client.serverStats() });
    } catch (e) {
      clients.get(id)?.close();
      clients.delete(id);
      let why: string;
      if (e instanceof api.IpcError) {
        const name = api.statusName(e.status);
        why = name === "NOT_FOUND" && socketSeen ? STALE : name ?? String(e.status);
      } else {
        why = oneLine(cause(e));
      }
      rows.push({ id, error: why });
    }
  }
  return rows;
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

/** The table of `rows`, with rates against `before` over `seconds`. */
export function render(rows: Row[], before: Map<string, ServerStats>, seconds: number): string {
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

/**
 * Runs top with command-line `args`; `command` names it in the usage line, and `load` gives
 * the shmcall API (called once the arguments are good). Prints tables on standard output,
 * errors on standard error.
 *
 * @returns The exit status: 0 done, 1 the socket directory cannot be used or read, 2 a wrong
 * argument (or 0 for `--help`).
 */
export async function runTop(
  load: () => Promise<TopApi>,
  command: string,
  args: string[],
): Promise<number> {
  let parsed: Args;
  try {
    parsed = parse(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`${command}: ${e.message}\nusage: ${command} ${SYNOPSIS} (--help for more)`);
    return 2;
  }
  if (parsed.help) {
    console.log(helpText(command));
    return 0;
  }
  const api = await load();
  const clients = new Map<string, Client>();
  try {
    // Resolved and checked as connect would: an unsafe or uncreatable directory ends it here.
    let dir: string;
    try {
      dir = api.socketDir(parsed.dir);
    } catch (e) {
      throw new Fatal(oneLine(cause(e)));
    }
    let before = new Map<string, ServerStats>();
    let beforeAt = 0;
    const tty = process.stdout.isTTY === true;
    for (let round = 0; round < parsed.count; round++) {
      if (round > 0) await new Promise((r) => setTimeout(r, parsed.intervalMs));
      const named = parsed.ids.length > 0;
      const ids = named ? parsed.ids : discover(dir);
      const rows = await collect(api, dir, ids, clients, !named);
      const now = performance.now();
      const seconds = (now - beforeAt) / 1000;
      beforeAt = now;
      const at = new Date().toISOString().slice(11, 19);
      const table = ids.length === 0 ? `no servers in ${dir}` : render(rows, before, seconds);
      const text = `shmcall top — ${dir} — ${at}\n${table}\n`;
      console.log(tty ? `\x1b[H\x1b[2J${text}` : text);
      before = new Map(rows.flatMap((r) => r.now === undefined ? [] : [[r.id, r.now]]));
    }
    return 0;
  } catch (e) {
    if (!(e instanceof Fatal)) throw e;
    console.error(`${command}: ${e.message}`);
    return 1;
  } finally {
    for (const c of clients.values()) c.close();
  }
}
