/**
 * Random arguments and random callback behaviour thrown at `connect`, `execute` and `serve` for
 * a bounded time: `deno run -A tests/peers/fuzz_api.ts <socket-dir> <ic-id of a server in
 * another process> <seed> <ms>`. Every failure must be a `TypeError`, `RangeError` or
 * `IpcError` (or what a callback itself threw); anything else is printed as `unexpected …` and
 * ends the process with status 1. At the end, fresh clients are served by both servers, and it
 * prints `survived <operations> operations: <errors by kind>`.
 *
 * @module
 */

import { type Client, connect, type ConnectOptions, IpcError, serve } from "../../mod.ts";

const [dir, remoteId, seedArg, msArg] = Deno.args;
if (dir === undefined || remoteId === undefined) {
  throw new Error("usage: fuzz_api.ts <socket-dir> <remote-ic-id> <seed> <ms>");
}
let seed = Number(seedArg ?? 1) >>> 0 || 1;
const until = performance.now() + Number(msArg ?? 2_000);

/** xorshift32: the run is the same for the same seed. */
function next(): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return seed >>> 0;
}
const pick = <T>(xs: readonly T[]): T => xs[next() % xs.length]!;
const chance = (n: number) => next() % n === 0;

/** What a callback of ours throws: the user's own error, allowed through. */
class Thrown extends Error {}

const kinds = new Map<string, number>();
let operations = 0;
function expected(e: unknown): void {
  if (e instanceof TypeError || e instanceof RangeError || e instanceof IpcError) {
    const kind = e instanceof IpcError ? `IpcError ${e.statusName}` : e.name;
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    return;
  }
  // What a callback of ours threw comes back as it was.
  if (e instanceof Thrown || e === "a string") return;
  console.log(`unexpected ${e instanceof Error ? e.stack : String(e)}`);
  Deno.exit(1);
}

function detached(): Uint8Array {
  const a = new Uint8Array(8);
  a.buffer.transfer();
  return a;
}

/** A value of any kind, often a wrong one. */
function junk(): unknown {
  return pick<() => unknown>([
    () => undefined,
    () => null,
    () => 0,
    () => -1,
    () => 1.5,
    () => NaN,
    () => Infinity,
    () => 2 ** 32,
    () => next() % 5000,
    () => "1",
    () => "",
    () => [],
    () => ({}),
    () => () => {},
    () => Symbol("x"),
    () => 10n,
    () => new Uint8Array(next() % 300),
    () => detached(),
    () => new Uint8Array(new SharedArrayBuffer(16)),
    () => AbortSignal.abort(),
    () => new AbortController().signal,
    () => true,
  ])();
}

const pendingExecs = new Set<() => void>();
/** Asynchronous commands issued, each settling (its failure checked) when it ends. */
const outstanding = new Set<Promise<unknown>>();
const clients: Client[] = [];

/** A callback that does something a user may do: nothing, throw, detach, close, re-enter. */
function callback(client: () => Client | undefined): unknown {
  if (chance(3)) return junk();
  return pick<(area?: Uint8Array) => unknown>([
    () => {},
    () => {
      throw new Thrown("the callback throws");
    },
    () => {
      throw "a string";
    },
    (area) => {
      if (area instanceof Uint8Array && area.buffer instanceof ArrayBuffer && area.length > 0) {
        area.buffer.transfer();
      }
    },
    () => client()?.close(),
    () => {
      const c = client();
      if (c === undefined) return;
      c.execute(next() % 8, { completion: () => {}, timeout: 200 }).catch(expected);
    },
    () => "junk",
  ]);
}

const local = await serve("fuzz-local", {
  exec: ({ code, input, output }) => {
    switch (code % 7) {
      case 0:
        output.set(input.subarray(0, output.length));
        return { length: Math.min(input.length, output.length) };
      case 1:
        throw new Thrown("exec throws");
      case 2:
        if (output.buffer instanceof ArrayBuffer && output.length > 0) output.buffer.transfer();
        return {};
      case 3:
        return junk() as never;
      case 4:
        // Never settles on its own: settled before the server closes.
        return new Promise((resolve) => pendingExecs.add(() => resolve({})));
      case 5:
        return Promise.reject(new Thrown("exec rejects"));
      default:
        return new Promise((resolve) => setTimeout(() => resolve({ status: 1 }), next() % 20));
    }
  },
}, { socketDir: dir, onError: () => {} });

async function operate(): Promise<void> {
  operations++;
  const remote = chance(2);
  switch (next() % 6) {
    case 0: {
      // A connect, with options right or wrong.
      const options = chance(2)
        ? { socketDir: dir, ...(chance(2) ? { timeout: pick([50, 500, junk()]) } : {}) }
        : junk();
      try {
        const c = await connect(
          chance(8) ? junk() as string : (remote ? remoteId! : "fuzz-local"),
          options as ConnectOptions,
        );
        if (clients.length > 8) c.close();
        else clients.push(c);
      } catch (e) {
        expected(e);
      }
      return;
    }
    case 1: {
      // A serve with arguments right or wrong (closed at once when it works).
      try {
        const s = await serve(
          chance(2) ? `fuzz-${next() % 3}` : junk() as string,
          chance(2) ? { exec: callback(() => undefined) } as never : junk() as never,
          (chance(2) ? { socketDir: dir, onError: () => {} } : junk()) as never,
        );
        await s.close();
      } catch (e) {
        expected(e);
      }
      return;
    }
    case 2: {
      const c = clients.length > 0 ? pick(clients) : undefined;
      c?.close();
      return;
    }
    default: {
      if (clients.length === 0) return;
      const c = pick(clients);
      const get = () => c;
      const options: Record<string, unknown> = {};
      for (
        const key of [
          "input",
          "inputLength",
          "output",
          "outputLength",
          "inputPrepare",
          "outputPrepare",
          "inputPost",
          "outputPost",
          "context",
          "inline",
          "signal",
          "timeout",
        ]
      ) {
        if (!chance(3)) continue;
        options[key] = key.endsWith("Prepare") || key.endsWith("Post")
          ? callback(get)
          : key === "timeout"
          ? pick([20, 200, junk()])
          : key === "input" || key === "output"
          ? (chance(3) ? junk() : new Uint8Array(next() % 200))
          : key === "inline"
          ? pick([true, false, junk()])
          : key === "signal"
          ? pick([AbortSignal.abort(), new AbortController().signal, junk()])
          : key.endsWith("Length")
          ? (chance(3) ? junk() : next() % 300)
          : junk();
      }
      // Synchronous calls only to the server in another process (one of this thread's own
      // would be refused), and always with a deadline.
      const sync = c.icId !== "fuzz-local" && chance(2);
      if (sync) options.timeout = 500;
      else options.completion = callback(get);
      // Any code but 8, which makes the other process's server kill itself.
      const code = chance(10) ? junk() : pick([0, 1, 2, 3, 4, 5, 6, 7, 9]);
      try {
        const r = c.execute(code as number, options as never) as unknown;
        // Not awaited: a command whose exec never settles, with no timeout, waits until its
        // client closes — as it should.
        if (r instanceof Promise) outstanding.add(r.catch(expected));
      } catch (e) {
        expected(e);
      }
      // Now and then, a turn of the event loop for the answers.
      if (chance(4)) await new Promise((r) => setTimeout(r, 0));
    }
  }
}

while (performance.now() < until) await operate();
for (const settle of pendingExecs) settle();
for (const c of clients) c.close();
// Closing failed whatever was still out: every command has settled.
await Promise.all(outstanding);
// Fresh clients are served, by both servers.
const fresh = await connect("fuzz-local", { socketDir: dir });
const a = await fresh.execute(7, {
  input: new Uint8Array([1, 2, 3]),
  outputLength: 3,
  completion: () => {},
});
const remote = await connect(remoteId, { socketDir: dir });
const b = remote.execute(1, { input: new Uint8Array([4, 5]), outputLength: 2, timeout: 5_000 });
fresh.close();
remote.close();
await local.close();
if (a.output.join() !== "1,2,3" || b.output.join() !== "4,5") {
  console.log(`unexpected answers ${a.output} ${b.output}`);
  Deno.exit(1);
}
const summary = [...kinds].sort().map(([k, n]) => `${k} ${n}`).join(", ");
console.log(`survived ${operations} operations: ${summary}`);
