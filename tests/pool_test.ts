import "./setup.ts";
import { isIpcError, within } from "./peers/assertions.ts";
import assert from "node:assert/strict";
import { connect, type ExecuteResult, IpcError, MAX_WORKERS, serve, Status } from "../mod.ts";
import {
  BLOCK,
  BUMP,
  DENO_EXIT,
  EXIT,
  type Held,
  HOLD,
  INVERT,
  THROW,
  TICKS,
  WHO,
} from "./peers/pool_handler.ts";
import { tempSocketDir } from "./peers/spawn.ts";

const HANDLER = new URL("./peers/pool_handler.ts", import.meta.url);
const HANDLER_PATH = decodeURIComponent(HANDLER.pathname);
const BAD_HANDLER = new URL("./peers/bad_handler.ts", import.meta.url);
/** Larger than the default geometry's largest slot area (1 MiB): the backup path. */
const BEYOND_SLOTS = 2 << 20;

const str = (b: Uint8Array) => new TextDecoder().decode(b);
const u32 = (n: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
};
const done = () => {};
/** `p`, marked handled: a test that fails before awaiting it reports its own failure. */
function handled<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** What `WHO` answers. */
interface Who {
  worker: string;
  context: unknown;
}
const who = (r: ExecuteResult): Who => JSON.parse(str(r.output));

/**
 * Holds `HOLD` commands in workers: `gate[0]` counts those started, `gate[1 + i]` releases
 * the one whose input is `i`. Shared with the workers through the connection's context.
 */
class Gate {
  readonly buffer: SharedArrayBuffer;
  readonly #words: Int32Array;

  constructor(commands: number) {
    this.buffer = new SharedArrayBuffer(4 * (1 + commands));
    this.#words = new Int32Array(this.buffer);
  }

  get started(): number {
    return Atomics.load(this.#words, 0);
  }

  /** Waits (bounded) until `n` held commands started in workers. */
  async waitStarted(n: number, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (true) {
      const seen = Atomics.load(this.#words, 0);
      if (seen >= n) return;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${seen} of ${n} held commands started within ${ms} ms`);
      const w = Atomics.waitAsync(this.#words, 0, seen, left);
      if (w.async) await w.value;
    }
  }

  release(i: number): void {
    Atomics.store(this.#words, 1 + i, 1);
    Atomics.notify(this.#words, 1 + i);
  }

  releaseAll(): void {
    for (let i = 1; i < this.#words.length; i++) this.release(i - 1);
  }
}

/** Handlers whose context holds `gate`, and whose inline exec answers `main` (status 100). */
function gated(gate: Gate) {
  return {
    open: (): Held => ({ gate: gate.buffer }),
    exec: ({ output }: { output: Uint8Array }) => {
      output.set(new TextEncoder().encode("main").subarray(0, output.length));
      return { status: 100, length: Math.min(4, output.length) };
    },
  };
}

Deno.test("pool commands run in parallel in distinct workers, inline ones in the main handler", async () => {
  using dir = tempSocketDir();
  const gate = new Gate(8);
  let inline = 0;
  const handlers = gated(gate);
  await using server = await serve("pool-spread", {
    ...handlers,
    exec: (command) => {
      inline++;
      return handlers.exec(command);
    },
  }, { socketDir: dir.path, workers: 4, module: HANDLER });
  assert.equal(server.stats().workers, 4);
  using client = await connect("pool-spread", { socketDir: dir.path });
  try {
    const held = Array.from(
      { length: 8 },
      (_, i) =>
        handled(client.execute(HOLD, { input: u32(i), outputLength: 64, completion: done })),
    );
    // Eight commands held at once need all four workers (each holds at most two).
    await gate.waitStarted(8);
    const forced = await within(
      "an inline command while the workers are busy",
      client.execute(WHO, { inline: true, outputLength: 64, completion: done }),
    );
    assert.deepEqual([forced.status, str(forced.output)], [100, "main"]);
    gate.releaseAll();
    const results = await within("the held commands", Promise.all(held));
    assert.deepEqual(results.map((r) => r.status), Array(8).fill(1), "released, not timed out");
    const perWorker = new Map<string, number>();
    for (const r of results) perWorker.set(str(r.output), (perWorker.get(str(r.output)) ?? 0) + 1);
    assert.equal(perWorker.size, 4, `workers seen: ${[...perWorker.keys()]}`);
    assert.deepEqual([...perWorker.values()], [2, 2, 2, 2]);
    assert.equal(inline, 1, "only the inline command ran in the main handler");
  } finally {
    gate.releaseAll();
  }
});

Deno.test("while every worker's thread is blocked, inline commands and new clients are still served", async () => {
  // The workers take their commands from the core themselves; with none of them waiting, the
  // server's thread polls the connections (after at most a few milliseconds, not after the
  // blocked commands end).
  using dir = tempSocketDir();
  const gate = new Gate(2);
  await using _server = await serve("pool-blocked", gated(gate), {
    socketDir: dir.path,
    workers: 2,
    module: HANDLER,
  });
  using client = await connect("pool-blocked", { socketDir: dir.path });
  try {
    // The workers busy first, so that they poll the connection when the blocking commands come
    // (rather than come back from their event loop for them, through the server's thread).
    const invert = () =>
      client.execute(INVERT, { input: u32(1), outputLength: 4, completion: done });
    for (let i = 0; i < 20; i++) await within("warming up", Promise.all([invert(), invert()]));
    const blocked = [0, 1].map((i) =>
      handled(client.execute(BLOCK, { input: u32(i), outputLength: 64, completion: done }))
    );
    await gate.waitStarted(2);
    const forced = await within(
      "an inline command while both workers' threads are blocked",
      client.execute(WHO, { inline: true, outputLength: 64, completion: done }),
    );
    assert.deepEqual([forced.status, str(forced.output)], [100, "main"]);
    // A pool command waits for a worker meanwhile, and runs once one is free.
    const queued = handled(
      client.execute(INVERT, { input: u32(7), outputLength: 4, completion: done }),
    );
    using late = await within(
      "a client that connects while both workers' threads are blocked",
      connect("pool-blocked", { socketDir: dir.path }),
    );
    const answer = await within(
      "its inline command",
      late.execute(WHO, { inline: true, outputLength: 64, completion: done }),
    );
    assert.equal(answer.status, 100);
    gate.releaseAll();
    const results = await within("the blocked commands", Promise.all(blocked));
    assert.deepEqual(results.map((r) => r.status), [1, 1], "released, not timed out");
    const inverted = await within("the queued pool command", queued);
    assert.deepEqual([...inverted.output], [...u32(7)].map((b) => b ^ 0xff));
  } finally {
    gate.releaseAll();
  }
});

/**
 * The file descriptors this process has open (listed by `ls`: Deno reads `/proc` only with
 * `--allow-all`, which the tests do not have).
 */
const openFds = () => {
  const out = new Deno.Command("ls", { args: [`/proc/${Deno.pid}/fd`], stdout: "piped" })
    .outputSync();
  assert.ok(out.success, "ls /proc/<pid>/fd");
  return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l !== "").length;
};

Deno.test("a pool server closed with clients connected lets go of their connections", async () => {
  using dir = tempSocketDir();
  const round = async (i: number) => {
    const server = await serve(`pool-gone-${i}`, { exec: () => {} }, {
      socketDir: dir.path,
      workers: 1,
      module: HANDLER,
    });
    const client = await connect(`pool-gone-${i}`, { socketDir: dir.path });
    try {
      await within(
        "a pool command",
        client.execute(INVERT, { input: u32(1), outputLength: 4, completion: done }),
      );
    } finally {
      // The server first: its connection ends while the client still holds its side.
      await server.close();
      client.close();
    }
  };
  await round(0);
  const before = openFds();
  for (let i = 1; i <= 4; i++) await round(i);
  // Each connection held a control socket and a segment's descriptor on the server's side: a
  // closed server that kept its connections would keep them (two or more a round).
  assert.ok(openFds() - before < 4, `${openFds() - before} descriptors more after 4 rounds`);
});

Deno.test("serve({ inline: true }) runs commands in the main handler unless one asks for the pool", async () => {
  using dir = tempSocketDir();
  const gate = new Gate(0);
  await using _server = await serve("pool-inline", gated(gate), {
    socketDir: dir.path,
    workers: 1,
    module: HANDLER_PATH,
    inline: true,
  });
  using client = await connect("pool-inline", { socketDir: dir.path });
  const byDefault = await within(
    "a command",
    client.execute(WHO, { outputLength: 256, completion: done }),
  );
  assert.deepEqual([byDefault.status, str(byDefault.output)], [100, "main"]);
  const pooled = await within(
    "a pool command",
    client.execute(WHO, { inline: false, outputLength: 256, completion: done }),
  );
  assert.equal(pooled.status, 0);
  assert.match(who(pooled).worker, /^[0-9a-f-]{36}$/);
});

Deno.test("each worker gets a structured clone of open's context; its changes stay in the worker", async () => {
  using dir = tempSocketDir();
  const contexts: { name: string; n: number; when: Date }[] = [];
  await using _server = await serve("pool-context", {
    open: (conn) => {
      const context = { name: `conn ${conn.id}`, n: 10, when: new Date(0) };
      contexts.push(context);
      return context;
    },
    exec: (_command, _conn, context) => ({ status: context.n }),
  }, { socketDir: dir.path, workers: 1, module: HANDLER });
  using client = await connect("pool-context", { socketDir: dir.path });
  const r = await within(
    "a pool command",
    client.execute(WHO, { outputLength: 256, completion: done }),
  );
  const { context } = who(r) as Who & { context: { name: string; n: number; when: string } };
  assert.equal(contexts.length, 1);
  assert.deepEqual(context, { name: contexts[0]!.name, n: 10, when: new Date(0).toJSON() });
  const bumps: number[] = [];
  for (let i = 0; i < 3; i++) {
    bumps.push((await client.execute(BUMP, { completion: done })).status);
  }
  assert.deepEqual(bumps, [11, 12, 13], "the worker keeps its copy between commands");
  const inline = await client.execute(BUMP, { inline: true, completion: done });
  assert.equal(inline.status, 10, "the main handler's context is untouched");
  assert.equal(contexts[0]!.n, 10);
});

Deno.test("a context that cannot be cloned fails pool commands with HANDLER_FAILED, inline ones still run", async () => {
  using dir = tempSocketDir();
  await using server = await serve("pool-unclonable", {
    open: () => ({ f: () => 1 }),
    exec: (_command, _conn, context) => ({ status: context.f() }),
  }, { socketDir: dir.path, workers: 2, module: HANDLER });
  using client = await connect("pool-unclonable", { socketDir: dir.path });
  for (let i = 0; i < 3; i++) {
    let completed: number | undefined;
    await assert.rejects(
      within(
        "a pool command",
        client.execute(WHO, { outputLength: 64, completion: (r) => completed = r.status }),
      ),
      isIpcError(Status.HANDLER_FAILED),
    );
    assert.equal(completed, Status.HANDLER_FAILED);
  }
  const r = await within(
    "an inline command",
    client.execute(WHO, { inline: true, completion: done }),
  );
  assert.equal(r.status, 1);
  assert.equal(server.stats().failures.HANDLER_FAILED, 3);
});

Deno.test("serve() rejects a module that exports no exec, naming it, and frees the ic id", async () => {
  using dir = tempSocketDir();
  await assert.rejects(
    serve("pool-bad", { exec: () => {} }, {
      socketDir: dir.path,
      workers: 1,
      module: BAD_HANDLER,
    }),
    (e: unknown) => {
      assert.ok(e instanceof Error && !(e instanceof IpcError), `got ${e}`);
      assert.match(e.message, /bad_handler\.ts/);
      assert.match(e.message, /exec/);
      return true;
    },
  );
  // Nothing was left serving: the id can be served again.
  await using _again = await serve("pool-bad", { exec: () => {} }, { socketDir: dir.path });
});

Deno.test("serve() rejects a module path that does not exist, naming it", async () => {
  using dir = tempSocketDir();
  const missing = `${dir.path}/no_such_handler.ts`;
  await assert.rejects(
    serve("pool-missing", { exec: () => {} }, {
      socketDir: dir.path,
      workers: 1,
      module: missing,
    }),
    (e: unknown) => {
      assert.ok(e instanceof Error, `got ${e}`);
      assert.match(e.message, /no_such_handler\.ts/);
      return true;
    },
  );
  await assert.rejects(
    connect("pool-missing", { socketDir: dir.path }),
    isIpcError(Status.NOT_FOUND),
  );
});

Deno.test("serve() checks workers, module and inline, naming them", async () => {
  using dir = tempSocketDir();
  const exec = () => {};
  const socketDir = dir.path;
  for (const workers of [-1, 1.5, NaN, MAX_WORKERS + 1]) {
    await assert.rejects(
      serve("pool-args", { exec }, { socketDir, workers, module: HANDLER }),
      (e: unknown) =>
        e instanceof RangeError && e.message.includes("workers") &&
        e.message.includes(String(workers)),
      `workers ${workers}`,
    );
  }
  await assert.rejects(
    serve("pool-args", { exec }, { socketDir, module: HANDLER }),
    (e: unknown) => e instanceof TypeError && /module/.test(e.message) && /workers/.test(e.message),
    "a module without workers",
  );
  await assert.rejects(
    serve("pool-args", { exec }, { socketDir, workers: 2 }),
    (e: unknown) => e instanceof TypeError && /module/.test(e.message),
    "workers without a module",
  );
  await assert.rejects(
    serve("pool-args", { exec }, {
      socketDir,
      workers: 1,
      module: HANDLER,
      inline: "yes" as unknown as boolean,
    }),
    (e: unknown) => e instanceof TypeError && /inline/.test(e.message),
    "inline not a boolean",
  );
  await assert.rejects(
    connect("pool-args", { socketDir }),
    isIpcError(Status.NOT_FOUND),
    "no server was left behind",
  );
});

Deno.test("a pool exec that throws fails that command with HANDLER_FAILED and its worker serves on", async () => {
  using dir = tempSocketDir();
  await using _server = await serve("pool-throw", { exec: () => {} }, {
    socketDir: dir.path,
    workers: 1,
    module: HANDLER,
  });
  using client = await connect("pool-throw", { socketDir: dir.path });
  const before = who(await client.execute(WHO, { outputLength: 256, completion: done }));
  await assert.rejects(
    within("a throwing command", client.execute(THROW, { completion: done })),
    isIpcError(Status.HANDLER_FAILED),
  );
  const after = who(await client.execute(WHO, { outputLength: 256, completion: done }));
  assert.equal(after.worker, before.worker, "the same worker, not a replacement");
});

Deno.test("a pool worker takes the next command whether it looks at its mailbox, sleeps on it, or waits in its event loop", async () => {
  using dir = tempSocketDir();
  await using _server = await serve("pool-idle", { exec: () => {} }, {
    socketDir: dir.path,
    workers: 1,
    module: HANDLER,
  });
  using client = await connect("pool-idle", { socketDir: dir.path });
  // Idle gaps after an answer (not synchronization): none — the worker still looks at its
  // mailbox; 2 ms — it sleeps on it (Atomics.wait); 50 ms — it went back to its event loop, and
  // the command reaches it with a message. A missed wake-up leaves the command unanswered.
  for (const gap of [0, 0, 2, 2, 50, 50, 0]) {
    if (gap > 0) await new Promise((r) => setTimeout(r, gap));
    const input = Uint8Array.of(gap, 1, 2, 3);
    const r = await within(
      `a command ${gap} ms after the last answer`,
      client.execute(INVERT, { input, outputLength: 4, completion: done }),
    );
    assert.deepEqual([...r.output], [...input].map((b) => b ^ 0xff));
  }
});

Deno.test("a pool worker under a steady stream of commands still gives its event loop turns", async () => {
  using dir = tempSocketDir();
  await using _server = await serve("pool-turns", { exec: () => {} }, {
    socketDir: dir.path,
    workers: 1,
    module: HANDLER,
  });
  using client = await connect("pool-turns", { socketDir: dir.path });
  const ticks = async () =>
    (await within("ticks", client.execute(TICKS, { completion: done }))).status;
  assert.equal(await ticks(), 0, "the worker's timer starts");
  // Commands back to back, 8 at once, for 200 ms: the worker never runs out of them.
  const input = new Uint8Array(64);
  const ends = Date.now() + 200;
  let answered = 0;
  const stream = async () => {
    while (Date.now() < ends) {
      await client.execute(INVERT, { input, outputLength: 64, completion: done });
      answered++;
    }
  };
  await within("the stream", Promise.all(Array.from({ length: 8 }, stream)));
  const fired = await ticks();
  // A 1 ms timer over 200 ms fires up to 200 times; a worker that gives its loop a turn every
  // 5 ms lets it fire about 40 times, one that never does not at all.
  assert.ok(
    fired >= 10,
    `the worker's 1 ms timer fired ${fired} times in 200 ms of ${answered} commands`,
  );
});

Deno.test("commands too large for a slot (2 MiB each way) run in workers", async () => {
  using dir = tempSocketDir();
  await using server = await serve("pool-large", { exec: () => ({ status: 100 }) }, {
    socketDir: dir.path,
    workers: 2,
    module: HANDLER,
  });
  using client = await connect("pool-large", { socketDir: dir.path });
  const input = new Uint8Array(BEYOND_SLOTS);
  for (let i = 0; i < input.length; i++) input[i] = (i * 31) >>> 3;
  const all = [0, 1, 2].map(() =>
    client.execute(INVERT, { input, outputLength: BEYOND_SLOTS, completion: done })
  );
  for (const r of await within("the large commands", Promise.all(all))) {
    assert.equal(r.status, 0, "run by the pool module, not the inline handler");
    assert.equal(r.length, BEYOND_SLOTS);
    for (let i = 0; i < input.length; i++) {
      if (r.output[i] !== (input[i]! ^ 0xff)) assert.fail(`byte ${i} is ${r.output[i]}`);
    }
  }
  assert.equal(client.stats().backup, 3);
  assert.equal(server.stats().backup, 3);
});

Deno.test("a command handed to a worker runs to its end though its signal aborts; one still queued is withdrawn", async () => {
  using dir = tempSocketDir();
  const gate = new Gate(3);
  await using server = await serve("pool-abort", gated(gate), {
    socketDir: dir.path,
    workers: 1,
    module: HANDLER,
  });
  using client = await connect("pool-abort", { socketDir: dir.path });
  try {
    const ac = new AbortController();
    const completions: number[] = [];
    const hold = (i: number) =>
      handled(client.execute(HOLD, {
        input: u32(i),
        outputLength: 64,
        signal: ac.signal,
        completion: (r) => completions.push(r.status),
      }));
    // One worker holds two commands at once; the third waits in the pool, untaken.
    const taken = [hold(0), hold(1)];
    await gate.waitStarted(2);
    const queued = hold(2);
    // Wait until the server has it queued: a later inline command's answer says so.
    await within("an inline command", client.execute(WHO, { inline: true, completion: done }));
    ac.abort();
    await assert.rejects(within("the queued command", queued), isIpcError(Status.CANCELLED));
    assert.deepEqual(completions, [Status.CANCELLED]);
    gate.releaseAll();
    const results = await within("the taken commands", Promise.all(taken));
    assert.deepEqual(results.map((r) => r.status), [1, 1], "both ran to their end");
    // The pool's queue is first in, first out: past a later pool command, the withdrawn one
    // has met its take.
    await within("a later pool command", client.execute(WHO, { completion: done }));
    assert.equal(gate.started, 2, "the withdrawn command never started");
    assert.equal(server.stats().failures.CANCELLED, 1);
  } finally {
    gate.releaseAll();
  }
});

Deno.test("quiesce() waits for the commands running in workers", async () => {
  using dir = tempSocketDir();
  const gate = new Gate(2);
  const server = await serve("pool-quiesce", gated(gate), {
    socketDir: dir.path,
    workers: 2,
    module: HANDLER,
  });
  try {
    using client = await connect("pool-quiesce", { socketDir: dir.path });
    const held = [0, 1].map((i) =>
      handled(client.execute(HOLD, { input: u32(i), outputLength: 64, completion: done }))
    );
    await gate.waitStarted(2);
    let quiesced = false;
    const quiescing = server.quiesce().then(() => quiesced = true);
    await assert.rejects(
      within("a command after quiesce()", client.execute(WHO, { completion: done })),
      isIpcError(Status.SERVER_QUIESCING),
    );
    gate.release(0);
    assert.equal((await within("the first held command", held[0]!)).status, 1);
    assert.equal(quiesced, false, "one pool command is still running");
    gate.release(1);
    assert.equal((await within("the second held command", held[1]!)).status, 1);
    await within("quiesce()", quiescing);
    assert.equal(server.stats().inFlight, 0);
  } finally {
    gate.releaseAll();
    await server.close();
  }
});

Deno.test("close() with commands held in workers fails them and nothing hangs", async () => {
  using dir = tempSocketDir();
  const gate = new Gate(4);
  const server = await serve("pool-close", gated(gate), {
    socketDir: dir.path,
    workers: 2,
    module: HANDLER,
  });
  try {
    using client = await connect("pool-close", { socketDir: dir.path });
    const completions: number[] = [];
    const held = [0, 1, 2, 3].map((i) =>
      handled(client.execute(HOLD, {
        input: u32(i),
        outputLength: 64,
        completion: (r) => completions.push(r.status),
      }))
    );
    await gate.waitStarted(4);
    await server.close();
    const settled = await within("the held commands", Promise.allSettled(held));
    for (const s of settled) {
      assert.equal(s.status, "rejected");
      isIpcError(Status.PEER_TERMINATED)((s as PromiseRejectedResult).reason);
    }
    assert.deepEqual(completions, Array(4).fill(Status.PEER_TERMINATED));
  } finally {
    gate.releaseAll();
    await server.close();
  }
});

// When one of several workers fails to load, serve() rejects at once: the workers still
// loading, and their load timers, must be stopped with it (the sanitizers check).
Deno.test("serve() rejecting a module leaves no worker or timer of several behind", async () => {
  using dir = tempSocketDir();
  await assert.rejects(
    serve("pool-bad-many", { exec: () => {} }, {
      socketDir: dir.path,
      workers: 4,
      module: BAD_HANDLER,
    }),
    /bad_handler\.ts/,
  );
});

for (const [how, code] of [["close()", EXIT], ["Deno.exit()", DENO_EXIT]] as const) {
  Deno.test(`a worker that ends itself by ${how} fails what it held and is replaced`, async () => {
    using dir = tempSocketDir();
    await using server = await serve("pool-exit", { exec: () => {} }, {
      socketDir: dir.path,
      workers: 1,
      module: HANDLER,
    });
    using client = await connect("pool-exit", { socketDir: dir.path });
    const ask = () => client.execute(WHO, { outputLength: 256, completion: done });
    const before = who(await within("a first command", ask()));
    await within(
      "the command its worker never answers",
      assert.rejects(client.execute(code, { completion: done }), isIpcError(Status.HANDLER_FAILED)),
    );
    // A new worker serves; nothing is left in flight, so quiesce resolves.
    const after = who(await within("a command after", ask()));
    assert.notEqual(after.worker, before.worker, "the same worker answered after it ended");
    await within("quiesce", server.quiesce());
    assert.equal(server.stats().inFlight, 0);
  });
}

Deno.test("a worker's late answer after close() lands on its own command, not on a reused handle", async () => {
  using dir = tempSocketDir();
  const gate = new Gate(1);
  const pooled = await serve("pool-late", gated(gate), {
    socketDir: dir.path,
    workers: 1,
    module: HANDLER,
  });
  // Another server of this process, whose commands reuse the command handles freed meanwhile.
  let release: (() => void) | undefined;
  await using _other = await serve("pool-other", {
    exec: ({ code }) =>
      code === 2 ? new Promise((r) => release = () => r({ status: 7 })) : { status: 3 },
  }, { socketDir: dir.path });
  using toPool = await connect("pool-late", { socketDir: dir.path });
  using toOther = await connect("pool-other", { socketDir: dir.path });
  const held = handled(toPool.execute(HOLD, { input: u32(0), completion: done }));
  await gate.waitStarted(1);
  const closed = pooled.close();
  await assert.rejects(held, isIpcError(Status.PEER_TERMINATED));
  // A handle has 255 generations: after 254 more commands take and free it, the 255th gets
  // the held command's handle value again.
  for (let i = 0; i < 254; i++) {
    assert.equal((await toOther.execute(1, { completion: done })).status, 3);
  }
  const victim = toOther.execute(2, { completion: done });
  await within(
    "the victim to start",
    (async () => {
      while (release === undefined) await new Promise((r) => setTimeout(r, 1));
    })(),
  );
  gate.releaseAll(); // the worker now answers its command, late
  await within("the pool to close", closed);
  release!();
  assert.equal(
    (await within("the victim", victim)).status,
    7,
    "another server's command was answered",
  );
});

Deno.test("an abort while the prepare callbacks run still withdraws the command", async () => {
  using dir = tempSocketDir();
  let ran = 0;
  await using _server = await serve("abort-prepare", { exec: () => void ran++ }, {
    socketDir: dir.path,
  });
  using client = await connect("abort-prepare", { socketDir: dir.path });
  const ac = new AbortController();
  await assert.rejects(
    client.execute(1, { signal: ac.signal, inputPrepare: () => ac.abort(), completion: done }),
    isIpcError(Status.CANCELLED),
  );
  await client.execute(1, { completion: done });
  assert.equal(ran, 1, "the withdrawn command ran");
});

Deno.test("serverStats() is answered while every slot is busy (over the backup path)", async () => {
  using dir = tempSocketDir();
  const releases: (() => void)[] = [];
  await using _server = await serve("stats-busy", {
    exec: () => new Promise((r) => releases.push(() => r({ status: 0 }))),
  }, { socketDir: dir.path });
  using client = await connect("stats-busy", { socketDir: dir.path });
  const held = Array.from({ length: 300 }, () => handled(client.execute(1, { completion: done })));
  await within(
    "the commands to arrive",
    (async () => {
      while (releases.length < 300) await new Promise((r) => setTimeout(r, 1));
    })(),
  );
  const stats = await within("serverStats", client.serverStats());
  assert.equal(stats.commands, 300);
  assert.equal(stats.inFlight, 300);
  assert.ok(client.stats().backup >= 1, "the request did not take the backup path");
  for (const r of releases) r();
  await within("the held commands", Promise.all(held));
});
