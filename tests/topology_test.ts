import "./setup.ts";
import { isIpcError, within } from "./peers/assertions.ts";
import assert from "node:assert/strict";
import {
  connect,
  type ConnInfo,
  type ExecResult,
  serve,
  type Server,
  type ServerCommand,
  Status,
} from "../mod.ts";
import { fnv1a64 } from "./peers/fnv.ts";
import { Peer, tempSocketDir } from "./peers/spawn.ts";

const ECHO = 1;
const CHECKSUM = 2;
const HOLD = 3;
/** Relay codes (tests/peers/relay.ts): forward asynchronously; answer without forwarding. */
const ASYNC = 0x1_0000;
const PING = 0x2_0000;
/** The default geometry's largest slot areas (core-rs/src/segment.rs): 1 MiB each way. */
const LARGE_SLOT = 1 << 20;

const SERVER = decodeURIComponent(new URL("./peers/server.ts", import.meta.url).pathname);
const RELAY = decodeURIComponent(new URL("./peers/relay.ts", import.meta.url).pathname);

function denoServer(icId: string, dir: string, ...flags: string[]): Promise<Peer> {
  return Peer.start(Deno.execPath(), ["run", "-A", SERVER, icId, dir, ...flags]);
}

/** A relay serving `icId` and forwarding to `downstream`; its prefix is `name>`. */
function relay(icId: string, dir: string, downstream: string, name: string): Promise<Peer> {
  return Peer.start(Deno.execPath(), [
    "run",
    "-A",
    RELAY,
    icId,
    dir,
    downstream,
    "--name",
    name,
  ]);
}

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);
const files = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();
const concat = (...parts: Uint8Array[]) => {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return all;
};

/** Asserts two byte arrays are equal, naming the first difference (fast on megabytes). */
function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      assert.fail(`${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

Deno.test("three servers and six clients in one process route every async command to its own server and connection", async () => {
  using dir = tempSocketDir();
  const socketDir = dir.path;
  const PER_CLIENT = 200;
  interface Context {
    server: string;
    conn: number;
    labels: Set<string>;
    seqs: Set<number>;
    closes: number;
  }
  const contexts: Context[] = [];
  let closes = 0;
  let allClosed!: () => void;
  const closedAll = new Promise<void>((r) => allClosed = r);
  let inFlight = 0;
  let maxInFlight = 0;

  /** Common bookkeeping around each server's own answer. */
  function handlers(
    server: string,
    reply: (output: Uint8Array, line: Uint8Array) => ExecResult | Promise<ExecResult>,
  ) {
    return {
      open: (conn: ConnInfo): Context => {
        assert.equal(conn.pid, Deno.pid);
        const context = {
          server,
          conn: conn.id,
          labels: new Set<string>(),
          seqs: new Set<number>(),
          closes: 0,
        };
        contexts.push(context);
        return context;
      },
      exec: ({ code, input, output }: ServerCommand, _conn: ConnInfo, context: Context) => {
        const [label, seq] = str(input).split(" ");
        context.labels.add(label!);
        context.seqs.add(Number(seq));
        const line = text(`${server} ${context.conn} ${label} ${seq} ${code}`);
        return reply(output, line);
      },
      close: (_conn: ConnInfo, context: Context) => {
        context.closes++;
        if (++closes === 6) allClosed();
      },
    };
  }
  const servers: Server<Context>[] = [];
  const clients: { server: string; label: string; client: Awaited<ReturnType<typeof connect>> }[] =
    [];
  try {
    // alpha answers inline; beta after a timer (many execs pending at once); gamma after a
    // microtask. Each with its own user status.
    const alpha = handlers("alpha", (output, line) => {
      output.set(line);
      return { status: 11, length: line.length };
    });
    const beta = handlers("beta", (output, line) => {
      maxInFlight = Math.max(maxInFlight, ++inFlight);
      return new Promise((resolve) =>
        setTimeout(() => {
          inFlight--;
          output.set(line);
          resolve({ status: 22, length: line.length });
        }, 0)
      );
    });
    const gamma = handlers("gamma", async (output, line) => {
      await Promise.resolve();
      output.set(line);
      return { status: 33, length: line.length };
    });
    for (const [name, h] of [["alpha", alpha], ["beta", beta], ["gamma", gamma]] as const) {
      servers.push(await serve(name, h, { socketDir }));
    }
    for (const server of ["alpha", "beta", "gamma"]) {
      for (const n of [0, 1]) {
        const client = await connect(server, { socketDir });
        clients.push({ server, label: `${server}/${n}`, client });
      }
    }
    assert.equal(contexts.length, 6, "one open per client");

    // Interleaved across all six clients, every command in flight before any is awaited.
    const results: Promise<{ c: number; seq: number; status: number; line: string }>[] = [];
    for (let seq = 0; seq < PER_CLIENT; seq++) {
      clients.forEach(({ label, client }, c) => {
        const code = 100 + c;
        results.push(
          client.execute(code, {
            input: text(`${label} ${seq}`),
            outputLength: 64,
            completion: () => {},
          }).then((r) => ({ c, seq, status: r.status, line: str(r.output) })),
        );
      });
    }
    const answers = await within("1200 async commands", Promise.all(results));
    const connOf = new Map<number, string>();
    for (const { c, seq, status, line } of answers) {
      const { server, label } = clients[c]!;
      const [gotServer, conn, gotLabel, gotSeq, gotCode] = line.split(" ");
      assert.equal(gotServer, server, `command ${seq} of ${label} reached ${gotServer}`);
      assert.equal(status, { alpha: 11, beta: 22, gamma: 33 }[server]);
      assert.deepEqual([gotLabel, Number(gotSeq), Number(gotCode)], [label, seq, 100 + c]);
      const seen = connOf.get(c) ?? conn!;
      assert.equal(conn, seen, `every command of ${label} ran on one connection`);
      connOf.set(c, conn!);
    }
    assert.ok(maxInFlight > 1, `beta had ${maxInFlight} execs pending at most`);
    for (const context of contexts) {
      const label = [...context.labels];
      assert.equal(label.length, 1, `connection ${context.conn} served one client: ${label}`);
      assert.ok(label[0]!.startsWith(`${context.server}/`));
      assert.equal(context.seqs.size, PER_CLIENT);
      assert.equal(context.closes, 0);
    }
    // The two clients of a server are two connections.
    for (const s of [0, 2, 4]) assert.notEqual(connOf.get(s), connOf.get(s + 1));

    for (const { client } of clients) client.close();
    await within("six closes", closedAll);
    assert.deepEqual(contexts.map((c) => c.closes), [1, 1, 1, 1, 1, 1]);
  } finally {
    for (const { client } of clients) client.close();
    for (const server of servers) await server.close();
  }
  assert.deepEqual(
    contexts.map((c) => c.closes),
    [1, 1, 1, 1, 1, 1],
    "closing the servers closes nothing twice",
  );
  assert.deepEqual(files(socketDir), [], "no socket or lock file is left");
});

/** Input sizes: empty, small, one that needs a large slot, one past every slot (backup path). */
const SIZES = [0, 64, 64 << 10, LARGE_SLOT + (LARGE_SLOT >> 1)];
const pattern = (n: number) => new Uint8Array(n).map((_, i) => (i * 31 + n) & 0xff);

Deno.test("a chain of three processes (A -> relay B -> server C) carries sync and async forwards of every size", async () => {
  using dir = tempSocketDir();
  await using c = await denoServer("hop-c", dir.path);
  await using b = await relay("hop-b", dir.path, "hop-c", "B");
  await c.expect("open");
  using a = await connect("hop-b", { socketDir: dir.path });
  const [down, up] = [text("B>"), text("<B")];

  assert.equal(str(a.execute(PING, { outputLength: 8 }).output), "B");
  for (const size of SIZES) {
    const input = pattern(size);
    const echoed = concat(down, input, up);
    for (const forward of [0, ASYNC]) {
      const what = `${size} B, ${forward ? "async" : "sync"} forward`;
      const options = { input, outputLength: size + 4 };
      const sync = a.execute(ECHO | forward, options);
      assert.equal(sync.status, 0);
      assertBytes(sync.output, echoed, `echo of ${what}, sync call`);
      const async = await within(
        `echo of ${what}`,
        a.execute(ECHO | forward, { ...options, completion: () => {} }),
      );
      assertBytes(async.output, echoed, `echo of ${what}, async call`);
      if (size > 64 << 10) continue;
      // C's checksum of what B sent proves C ran on B's bytes, not A's.
      const sum = a.execute(CHECKSUM | forward, { input, outputLength: 8 + 2 });
      assert.equal(sum.status, 7, "C's user status comes back through B");
      const view = new DataView(sum.output.buffer, sum.output.byteOffset);
      assert.equal(view.getBigUint64(0, true), fnv1a64(concat(down, input)), what);
      assert.equal(str(sum.output.subarray(8)), "<B");
    }
  }

  // Many at once: sync and async forwards interleaved, a few through the large slots.
  const all = Array.from({ length: 1000 }, (_, i) => {
    const input = i % 50 === 0 ? pattern(64 << 10) : text(`command ${i}`);
    return a.execute(ECHO | (i % 2 ? ASYNC : 0), {
      input,
      outputLength: input.length + 4,
      completion: () => {},
    }).then((r) => assertBytes(r.output, concat(down, input, up), `command ${i}`));
  });
  await within("1000 commands through the chain", Promise.all(all), 30_000);
  assert.deepEqual(c.seen.filter((l) => l.startsWith("open")).length, 1, "B connected once");
  assert.deepEqual(b.seen, ["ready"], "B never lost C");

  // SIGTERM ends B cleanly: its connection to C closes, its files go, the process exits.
  b.signal("SIGTERM");
  await b.expect("bye");
  await c.expect("close");
  await assert.rejects(b.expect("never", 5_000), /peer exited before printing 'never'/);
  assert.deepEqual(files(dir.path), ["hop-c.lock", "hop-c.sock"]);
  assert.throws(() => a.execute(PING, {}), isIpcError(Status.PEER_TERMINATED));
});

Deno.test("killing the last process of a chain fails the commands in flight through the relay with HANDLER_FAILED, and the relay serves on", async () => {
  using dir = tempSocketDir();
  await using c = await denoServer("mid-c", dir.path, "--verbose");
  await using b = await relay("mid-b", dir.path, "mid-c", "B");
  using a = await connect("mid-b", { socketDir: dir.path });
  const cmd = (code: number) =>
    a.execute(code, { input: text("held"), outputLength: 16, completion: () => {} });

  // Ten async forwards held by C, then a sync forward that holds B's thread, then five more
  // that wait behind it in B. Each outcome is taken at once, so no rejection goes unhandled
  // whatever fails first.
  const inFlight: Promise<unknown>[] = [];
  const send = (code: number) => inFlight.push(cmd(code).then(() => "resolved", (e) => e));
  for (let i = 0; i < 10; i++) send(HOLD | ASYNC);
  for (let i = 0; i < 10; i++) await c.expect("exec");
  send(HOLD);
  await c.expect("exec");
  for (let i = 0; i < 5; i++) send(ECHO | ASYNC);
  await c.kill();

  // B is alive, so A's connection stands: B's execs fail (its downstream did), which A sees
  // as HANDLER_FAILED, never as PEER_TERMINATED.
  const outcomes = await within("the commands in flight", Promise.all(inFlight));
  for (const outcome of outcomes) isIpcError(Status.HANDLER_FAILED)(outcome);
  await b.expect("lost PEER_TERMINATED");
  assert.deepEqual(files(dir.path), ["mid-b.lock", "mid-b.sock"], "B removed the killed C's files");

  // B serves on: a ping answers, a forward fails at once (C is gone), sync and async.
  assert.equal(str(a.execute(PING, { outputLength: 8 }).output), "B");
  const started = performance.now();
  assert.throws(() => a.execute(ECHO, { outputLength: 8 }), isIpcError(Status.HANDLER_FAILED));
  await within(
    "a forward while C is gone",
    assert.rejects(cmd(ECHO | ASYNC), isIpcError(Status.HANDLER_FAILED)),
    2_000,
  );
  const took = performance.now() - started;
  assert.ok(took < 2_000, `failing two forwards took ${took.toFixed(0)} ms`);

  // A new C on the same ic id: B connects again on the next forward.
  await using c2 = await denoServer("mid-c", dir.path);
  const r = await within("a forward to the new C", cmd(ECHO | ASYNC));
  assert.equal(str(r.output), "B>held<B");
  await c2.expect("open");
  assert.equal(str(a.execute(ECHO, { input: text("sync"), outputLength: 8 }).output), "B>sync<B");
  assert.deepEqual(b.seen, ["ready", "lost PEER_TERMINATED", "connected"]);
});

Deno.test("two processes that serve each other (A -> B -> A) complete concurrent async calls without deadlock", async () => {
  using dir = tempSocketDir();
  const opens: ConnInfo[] = [];
  let closes = 0;
  let closed!: () => void;
  const onClose = new Promise<void>((r) => closed = r);
  // A serves X; B (a relay) serves Y and is a client of X.
  const x = await serve("cycle-x", {
    open: (conn) => {
      opens.push(conn);
    },
    exec: async ({ code, input, output }) => {
      if (code === ECHO + 1) await new Promise((r) => setTimeout(r, 0));
      output.set(text("X:"));
      output.set(input, 2);
      return { length: input.length + 2 };
    },
    close: () => {
      closes++;
      closed();
    },
  }, { socketDir: dir.path });
  try {
    await using b = await relay("cycle-y", dir.path, "cycle-x", "B");
    assert.deepEqual(opens.map((o) => o.pid), [b.pid], "B is X's client");
    using a = await connect("cycle-y", { socketDir: dir.path });
    // A waits asynchronously, so its thread runs X's exec for B — also while B's thread waits
    // in a synchronous forward.
    const all = Array.from({ length: 400 }, (_, i) => {
      const input = text(`call ${i}`);
      const code = (i % 2 ? ECHO : ECHO + 1) | (i % 3 ? ASYNC : 0);
      return a.execute(code, { input, outputLength: input.length + 6, completion: () => {} })
        .then((r) => assert.equal(str(r.output), `X:B>call ${i}<B`));
    });
    await within("400 calls around the cycle", Promise.all(all));
    b.signal("SIGTERM");
    await b.expect("bye");
    await within("X's close of B's connection", onClose);
    assert.equal(closes, 1);
  } finally {
    await x.close();
  }
  assert.deepEqual(files(dir.path), []);
});
