import "./setup.ts";
import { isIpcError, within } from "./peers/assertions.ts";
import assert from "node:assert/strict";
import { type Client, connect, IpcError, serve, type ServerCommand, Status } from "../mod.ts";
import { BLOCK, COUNT, COUNTED } from "./peers/gate.ts";
import { Peer, tempSocketDir } from "./peers/spawn.ts";

const GATE = decodeURIComponent(new URL("./peers/gate.ts", import.meta.url).pathname);
const LOAD = decodeURIComponent(new URL("./peers/load.ts", import.meta.url).pathname);
/** Larger than the default geometry's largest slot area (1 MiB): the backup path. */
const BEYOND_SLOTS = 2 << 20;

const text = (s: string) => new TextEncoder().encode(s);
const done = () => {};
/** `p`, marked handled: a test that fails before awaiting it reports its own failure. */
function handled<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** A resolver made outside its Promise. */
function signal<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => resolve = r);
  return { promise, resolve };
}

/** A gate server peer (tests/peers/gate.ts) and a client of it. */
async function gateServer(icId: string, dir: string): Promise<{ peer: Peer; client: Client }> {
  const peer = await Peer.start(Deno.execPath(), ["run", "-A", GATE, icId, dir]);
  try {
    return { peer, client: await connect(icId, { socketDir: dir }) };
  } catch (e) {
    await peer.kill();
    throw e;
  }
}

/**
 * Holds the gate server's thread: resolves once it is blocked, with the blocking command's
 * Promise (status 1 once `release()` was called) and `release`.
 */
async function block(peer: Peer, client: Client, dir: string) {
  const file = `${dir}/release`;
  const blocking = handled(client.execute(BLOCK, { input: text(file), completion: done }));
  await peer.expect("blocked");
  return { blocking, release: () => Deno.writeTextFileSync(file, "") };
}

/** How many code-2 commands the gate server ran. */
async function counted(client: Client): Promise<number> {
  return (await within("a count", client.execute(COUNTED, { completion: done }))).status;
}

// ---- cancellation ----

Deno.test("an aborted async command the server has not taken is withdrawn: CANCELLED at once, never run", async () => {
  using dir = tempSocketDir();
  const { peer, client } = await gateServer("abort", dir.path);
  try {
    const gate = await block(peer, client, dir.path);
    const ac = new AbortController();
    const completions: number[] = [];
    const queued = Array.from({ length: 5 }, () =>
      handled(client.execute(COUNT, {
        input: text("x"),
        signal: ac.signal,
        completion: (r) => completions.push(r.status),
      })));
    const kept = handled(client.execute(COUNT, { input: text("kept"), completion: done }));
    ac.abort("enough");
    // Settled while the server's thread is still held: the server had no part in it.
    for (const p of queued) {
      await assert.rejects(within("a withdrawn command", p, 2_000), (e: unknown) => {
        isIpcError(Status.CANCELLED)(e);
        assert.match((e as Error).message, /'abort'.*signal aborted \(enough\)/);
        return true;
      });
    }
    assert.deepEqual(completions, Array(5).fill(Status.CANCELLED));
    gate.release();
    assert.equal((await within("the blocking command", gate.blocking)).status, 1);
    assert.equal((await within("the command not aborted", kept)).status, 4);
    assert.equal(await counted(client), 1, "only the command not aborted ran");
    assert.equal(client.stats().failures.CANCELLED, 5);
    // The withdrawn commands' slots serve again (a command on a slot is known by its slot):
    // each later command gets its own answer, and once.
    const statuses: number[] = [];
    const later = Array.from({ length: 30 }, (_, i) =>
      client.execute(COUNT, {
        input: text("x".repeat(i + 1)),
        completion: (r) => statuses.push(r.status),
      }).then((r) => r.status));
    assert.deepEqual(
      await within("the later commands", Promise.all(later)),
      Array.from({ length: 30 }, (_, i) => i + 1),
    );
    assert.deepEqual(statuses.sort((x, y) => x - y), Array.from({ length: 30 }, (_, i) => i + 1));
  } finally {
    client.close();
    await peer.kill();
  }
});

Deno.test("timeout withdraws an async command the server did not take in time; a longer one runs", async () => {
  using dir = tempSocketDir();
  const { peer, client } = await gateServer("timeout", dir.path);
  try {
    const gate = await block(peer, client, dir.path);
    let completed: number | undefined;
    const short = client.execute(COUNT, {
      input: text("x"),
      timeout: 30,
      completion: (r) => completed = r.status,
    });
    // Its timer must be cleared once it settles, or the sanitizer reports it.
    const long = handled(
      client.execute(COUNT, { input: text("long"), timeout: 60_000, completion: done }),
    );
    await assert.rejects(within("the short command", short, 2_000), (e: unknown) => {
      isIpcError(Status.CANCELLED)(e);
      assert.match((e as Error).message, /timeout of 30 ms/);
      return true;
    });
    assert.equal(completed, Status.CANCELLED);
    gate.release();
    await within("the blocking command", gate.blocking);
    assert.equal((await within("the long command", long)).status, 4);
    assert.equal(await counted(client), 1, "the timed-out command never ran");
  } finally {
    client.close();
    await peer.kill();
  }
});

Deno.test("a command on the backup path cannot be withdrawn: abort has no effect and it runs", async () => {
  using dir = tempSocketDir();
  const { peer, client } = await gateServer("abort-backup", dir.path);
  try {
    const gate = await block(peer, client, dir.path);
    const ac = new AbortController();
    let settled = false;
    const large = handled(client.execute(COUNT, {
      input: new Uint8Array(BEYOND_SLOTS),
      signal: ac.signal,
      completion: done,
    }));
    void large.finally(() => settled = true).catch(() => {});
    const small = handled(
      client.execute(COUNT, { input: text("x"), signal: ac.signal, completion: done }),
    );
    ac.abort();
    // The abort reached both; only the slot command could be withdrawn.
    await assert.rejects(within("the small command", small, 2_000), isIpcError(Status.CANCELLED));
    assert.equal(settled, false);
    gate.release();
    await within("the blocking command", gate.blocking);
    assert.equal((await within("the large command", large)).status, BEYOND_SLOTS);
    assert.equal(await counted(client), 1);
    assert.equal(client.stats().backup, 1);
  } finally {
    client.close();
    await peer.kill();
  }
});

Deno.test("once the server took the command an abort has no effect and its timeout fails it TIMED_OUT, its answer discarded", async () => {
  using dir = tempSocketDir();
  const started = signal();
  const finish = [signal(), signal()];
  let ran = 0;
  await using _server = await serve("taken", {
    exec: async ({ code }) => {
      ran++;
      started.resolve();
      await finish[code - 1]!.promise;
      return { status: 4 + code };
    },
  }, { socketDir: dir.path });
  using client = await connect("taken", { socketDir: dir.path });
  // Aborted after it was taken: it runs to its end, and settles with its result.
  const ac = new AbortController();
  const completions: number[] = [];
  const completion = (r: { status: number }) => void completions.push(r.status);
  const aborted = client.execute(1, { signal: ac.signal, completion });
  await within("exec to start", started.promise);
  ac.abort();
  finish[0]!.resolve();
  assert.equal((await within("the taken command", aborted)).status, 5);
  assert.deepEqual(completions, [5]);
  // Timed out while it runs: it fails TIMED_OUT at its deadline.
  const late = client.execute(2, { timeout: 20, completion }).then(() => "resolved", (e) => e);
  const error = await within("the timed-out command", late);
  assert.ok(error instanceof IpcError && error.status === Status.TIMED_OUT, String(error));
  assert.deepEqual(completions, [5, Status.TIMED_OUT]);
  // Its answer comes later and reaches nobody; the next command gets its own.
  finish[1]!.resolve();
  await within(
    "the late answer",
    (async () => {
      while (client.stats().inFlight > 0) await new Promise((r) => setTimeout(r, 1));
    })(),
  );
  assert.deepEqual(completions, [5, Status.TIMED_OUT], "the late answer reached a completion");
  assert.equal((await client.execute(1, { completion })).status, 5);
  assert.equal(ran, 3);
});

Deno.test("an abort in the same tick withdraws a command to a server of this process", async () => {
  using dir = tempSocketDir();
  let ran = 0;
  await using server = await serve("same-tick", { exec: () => void ran++ }, {
    socketDir: dir.path,
  });
  using client = await connect("same-tick", { socketDir: dir.path });
  const ac = new AbortController();
  const p = client.execute(1, { signal: ac.signal, completion: done });
  ac.abort();
  await assert.rejects(within("the withdrawn command", p), isIpcError(Status.CANCELLED));
  // Past a later command's answer, the server has met the withdrawn one.
  await within("a later command", client.execute(1, { completion: done }));
  assert.equal(ran, 1);
  assert.equal(server.stats().failures.CANCELLED, 1);
});

Deno.test("an already-aborted signal rejects with CANCELLED without sending anything", async () => {
  using dir = tempSocketDir();
  let ran = 0;
  await using server = await serve("pre-aborted", { exec: () => void ran++ }, {
    socketDir: dir.path,
  });
  using client = await connect("pre-aborted", { socketDir: dir.path });
  const completions: number[] = [];
  let prepared = false;
  await assert.rejects(
    client.execute(1, {
      input: text("never"),
      signal: AbortSignal.abort(),
      inputPrepare: () => prepared = true,
      completion: (r) => completions.push(r.status),
    }),
    isIpcError(Status.CANCELLED),
  );
  assert.deepEqual(completions, [Status.CANCELLED]);
  assert.equal(prepared, false);
  await within("a later command", client.execute(1, { completion: done }));
  assert.equal(ran, 1);
  assert.equal(client.stats().commands, 1);
  assert.equal(server.stats().commands, 1);
});

Deno.test("signal needs an async call, and a bad timeout is refused, naming it", async () => {
  using dir = tempSocketDir();
  await using _server = await serve("cancel-args", { exec: () => {} }, { socketDir: dir.path });
  using client = await connect("cancel-args", { socketDir: dir.path });
  const ac = new AbortController();
  assert.throws(() => client.execute(1, { signal: ac.signal }), (e: unknown) => {
    return e instanceof TypeError && /signal/.test(e.message) && /completion/.test(e.message);
  });
  for (const timeout of [0, -1, NaN, 2 ** 31, Infinity]) {
    assert.throws(
      () => client.execute(1, { timeout }),
      (e: unknown) =>
        e instanceof RangeError && /timeout/.test(e.message) && e.message.includes(String(timeout)),
      `timeout ${timeout}`,
    );
  }
  assert.throws(
    () => client.execute(1, { signal: "stop" as unknown as AbortSignal, completion: done }),
    (e: unknown) => e instanceof TypeError && /signal/.test(e.message),
  );
  assert.equal(client.stats().commands, 0, "nothing was sent");
});

// ---- mappings ----

Deno.test("a closed connection gives its segment back at once: areas kept from callbacks become empty, on both sides", async () => {
  using dir = tempSocketDir();
  let serverInput: Uint8Array | undefined;
  const closed = signal<number>();
  await using _server = await serve("give-back", {
    exec({ input, output }) {
      serverInput = input;
      output.set(input);
      return { length: input.length };
    },
    // Runs after the connection's segment was given back: the view kept above is empty.
    close: () => closed.resolve(serverInput?.length ?? -1),
  }, { socketDir: dir.path });
  const client = await connect("give-back", { socketDir: dir.path });
  let kept: Uint8Array | undefined;
  await within(
    "an echo",
    client.execute(1, {
      input: text("kept"),
      outputLength: 4,
      outputPost: (area) => {
        kept = area;
        return area.slice();
      },
      completion: done,
    }),
  );
  assert.equal(kept?.length, 4);
  assert.equal(serverInput?.length, 4);
  client.close();
  assert.equal(kept!.length, 0, "the client's kept area is empty after close");
  assert.equal(kept![0], undefined);
  assert.equal(await within("the server's close", closed.promise), 0);
});

Deno.test("a segment whose memory user code moved to another buffer stays mapped after close", async () => {
  using dir = tempSocketDir();
  await using _server = await serve("moved", {
    exec: ({ output }) => ({ length: output.length }),
  }, { socketDir: dir.path });
  const client = await connect("moved", { socketDir: dir.path });
  let moved: ArrayBuffer | undefined;
  await within(
    "a command",
    client.execute(1, {
      input: text("move"),
      outputLength: 4,
      inputPrepare: (area, input) => {
        area.set(input!);
        moved = (area.buffer as ArrayBuffer).transfer();
      },
      completion: done,
    }).catch(() => {}),
  );
  client.close();
  // The moved buffer still points into the segment, which the close left mapped: it reads
  // and writes (a dangling one would kill this process).
  assert.ok(moved !== undefined && moved.byteLength > 0);
  const view = new Uint8Array(moved!);
  view[0] = 7;
  assert.equal(view[0], 7);
});

// ---- stats ----

Deno.test("stats() count commands, bytes, backup, failures and latency on both sides, and survive close", async () => {
  using dir = tempSocketDir();
  const ECHO = 1;
  const THROW = 2;
  const server = await serve("stats", {
    exec: ({ code, input, output }: ServerCommand) => {
      if (code === THROW) throw new Error("fails");
      const n = Math.min(50, output.length);
      output.set(input.subarray(0, n));
      return { length: n };
    },
  }, { socketDir: dir.path });
  try {
    const client = await connect("stats", { socketDir: dir.path });
    const zero = client.stats();
    assert.deepEqual(zero, {
      commands: 0,
      inFlight: 0,
      bytesIn: 0,
      bytesOut: 0,
      backup: 0,
      failures: {},
      latency: { count: 0, p50: 0, p90: 0, p99: 0, max: 0 },
    });
    const run = (code: number, input: number, output: number, signal?: AbortSignal) =>
      client.execute(code, {
        input: new Uint8Array(input).fill(7),
        outputLength: output,
        completion: done,
        ...(signal ? { signal } : {}),
      });
    // 2 withdrawn (7 bytes in), 2 failed (10 in), 1 backup (2 MiB in, 16 out), 6 echoes
    // (100 in, 50 out).
    const ac = new AbortController();
    const withdrawn = [run(ECHO, 7, 8, ac.signal), run(ECHO, 7, 8, ac.signal)];
    ac.abort();
    for (const p of withdrawn) await assert.rejects(p, isIpcError(Status.CANCELLED));
    for (let i = 0; i < 2; i++) {
      await assert.rejects(within("a failing command", run(THROW, 10, 8)));
    }
    assert.equal((await within("a backup command", run(ECHO, BEYOND_SLOTS, 16))).length, 16);
    for (let i = 0; i < 6; i++) {
      assert.equal((await within("an echo", run(ECHO, 100, 64))).length, 50);
    }
    const expected = {
      commands: 11,
      inFlight: 0,
      bytesIn: 2 * 7 + 2 * 10 + BEYOND_SLOTS + 6 * 100,
      bytesOut: 16 + 6 * 50,
      backup: 1,
      failures: { HANDLER_FAILED: 2, CANCELLED: 2 },
    };
    const fromClient = client.stats();
    const fromServer = server.stats();
    for (const [side, s] of [["client", fromClient], ["server", fromServer]] as const) {
      const { latency, ...counts } = s;
      assert.deepEqual(
        { ...counts, connections: undefined, workers: undefined, quiescing: undefined },
        { ...expected, connections: undefined, workers: undefined, quiescing: undefined },
        side,
      );
      assert.equal(latency.count, 7, `${side}: answered commands are timed`);
      assert.ok(latency.p50 > 0, `${side}: p50 ${latency.p50}`);
      assert.ok(
        latency.p50 <= latency.p90 && latency.p90 <= latency.p99 && latency.p99 <= latency.max,
        `${side}: ${JSON.stringify(latency)}`,
      );
    }
    assert.deepEqual(
      [fromServer.connections, fromServer.workers, fromServer.quiescing],
      [1, 0, false],
    );
    // One more command, unseen by stats() until after the closes: each close keeps its own
    // snapshot.
    await within("an echo", run(ECHO, 100, 64));
    client.close();
    const closedClient = client.stats();
    assert.deepEqual(
      [closedClient.commands, closedClient.bytesOut, closedClient.latency.count],
      [12, expected.bytesOut + 50, 8],
      "a closed client answers its counters at close",
    );
    assert.deepEqual(client.stats(), closedClient);
    await server.close();
    const closedServer = server.stats();
    assert.deepEqual(
      [closedServer.commands, closedServer.bytesOut, closedServer.latency.count],
      [12, expected.bytesOut + 50, 8],
      "a closed server answers its counters at close",
    );
  } finally {
    await server.close();
  }
});

// ---- quiesce ----

Deno.test("quiesce() answers new commands SERVER_QUIESCING without running them and refuses new clients", async () => {
  using dir = tempSocketDir();
  let ran = 0;
  const server = await serve("quiesce-refuses", { exec: () => void ran++ }, {
    socketDir: dir.path,
  });
  try {
    using client = await connect("quiesce-refuses", { socketDir: dir.path });
    await within("a command", client.execute(1, { completion: done }));
    await within("quiesce()", server.quiesce());
    assert.equal(server.stats().quiescing, true);
    const completions: number[] = [];
    await assert.rejects(
      within(
        "a command after quiesce()",
        client.execute(1, { completion: (r) => completions.push(r.status) }),
      ),
      isIpcError(Status.SERVER_QUIESCING),
    );
    assert.deepEqual(completions, [Status.SERVER_QUIESCING]);
    await assert.rejects(
      within("a connect after quiesce()", connect("quiesce-refuses", { socketDir: dir.path })),
      isIpcError(Status.SERVER_QUIESCING),
    );
    assert.equal(ran, 1);
    assert.equal(server.stats().failures.SERVER_QUIESCING, 1);
    await within("quiesce() again", server.quiesce());
  } finally {
    await server.close();
  }
});

Deno.test("quiesce() resolves once the commands in progress finished, slow async execs included", async () => {
  using dir = tempSocketDir();
  const finish = [signal(), signal(), signal()];
  const started = signal();
  let running = 0;
  const server = await serve("quiesce-drains", {
    exec: async ({ code }) => {
      if (++running === 3) started.resolve();
      await finish[code]!.promise;
      return { status: code };
    },
  }, { socketDir: dir.path });
  try {
    using client = await connect("quiesce-drains", { socketDir: dir.path });
    const slow = [0, 1, 2].map((code) => handled(client.execute(code, { completion: done })));
    await within("three execs to start", started.promise);
    let quiesced = false;
    const first = server.quiesce();
    const second = server.quiesce();
    void first.then(() => quiesced = true);
    finish[0]!.resolve();
    finish[1]!.resolve();
    assert.equal((await within("command 0", slow[0]!)).status, 0);
    assert.equal((await within("command 1", slow[1]!)).status, 1);
    assert.equal(quiesced, false, "one exec is still in progress");
    assert.equal(server.stats().inFlight, 1);
    finish[2]!.resolve();
    await within("quiesce()", Promise.all([first, second]));
    assert.equal((await within("command 2", slow[2]!)).status, 2, "it was not failed");
    await within("quiesce() once drained", server.quiesce());
  } finally {
    await server.close();
  }
});

Deno.test("a server restarts under load from another process without a single failed accepted command", async () => {
  using dir = tempSocketDir();
  const ID = "restart";
  const PER_SERVER = 3000;

  /** A server generation: what it executed, when it reached a count, when its client left. */
  function generation() {
    const executed: number[] = [];
    const reached = signal();
    const left = signal();
    const handlers = {
      exec: ({ code, input }: ServerCommand) => {
        const seq = new DataView(input.buffer, input.byteOffset, 4).getUint32(0, true);
        if (seq !== code) throw new Error(`input ${seq} under code ${code}`);
        executed.push(seq);
        if (executed.length === PER_SERVER) reached.resolve();
        // Some slow async execs, so that quiesce() has work in progress to wait for.
        if (seq % 8 === 0) {
          return new Promise<{ status: number }>((r) => setTimeout(() => r({ status: seq }), 1));
        }
        return { status: seq };
      },
      close: () => left.resolve(),
    };
    return { executed, reached: reached.promise, left: left.promise, handlers };
  }

  const v1 = generation();
  const v2 = generation();
  const first = await serve(ID, v1.handlers, { socketDir: dir.path });
  let second: Awaited<ReturnType<typeof serve>> | undefined;
  let load: Peer | undefined;
  try {
    load = await Peer.start(Deno.execPath(), ["run", "-A", LOAD, ID, dir.path, "16"]);
    await within("v1 to execute its share", v1.reached);
    await within("v1's quiesce()", first.quiesce());
    const atQuiesce = v1.executed.length;
    await within("the load to leave v1", v1.left);
    assert.equal(v1.executed.length, atQuiesce, "v1 executed nothing after quiesce() resolved");
    await first.close();
    const v1Stats = first.stats();
    second = await serve(ID, v2.handlers, { socketDir: dir.path });
    await load.expect("reconnected");
    await within("v2 to execute its share", v2.reached);
    load.signal("SIGTERM");
    const line = await load.expect("done", 10_000);
    await within("the load to leave v2", v2.left);

    const fields = new Map(
      line.split(" ").slice(1).map((f) => f.split("=") as [string, string]),
    );
    const count = (name: string) => Number(fields.get(name));
    assert.equal(count("failed"), 0, `failures other than SERVER_QUIESCING: ${line.slice(0, 300)}`);
    assert.ok(count("retried") > 0, "the load met the quiescing server");
    assert.equal(count("reconnects"), 1);
    const sent = count("sent");
    assert.equal(count("ok"), sent, "every command was answered");
    const all = Array.from({ length: sent }, (_, i) => i);
    const answered = fields.get("answered")!.split(",").map(Number).sort((a, b) => a - b);
    assert.deepEqual(answered, all, "each command answered once");
    const executed = [...v1.executed, ...v2.executed].sort((a, b) => a - b);
    assert.equal(executed.length, sent, "no command executed twice or lost");
    assert.deepEqual(executed, all);
    assert.equal(v1.executed.length, atQuiesce);
    // v1 received its executed commands and the ones it turned away, and nothing else.
    assert.equal(v1Stats.failures.SERVER_QUIESCING, count("retried"));
    assert.equal(v1Stats.commands, atQuiesce + count("retried"));
    assert.equal(second.stats().commands, v2.executed.length);
  } finally {
    await load?.kill();
    await first.close();
    await second?.close();
  }
});

Deno.test("an async command that cannot even begin rejects, after completion, instead of throwing", async () => {
  using dir = tempSocketDir();
  const server = await serve("never-begins", { exec: () => ({ status: 0 }) }, {
    socketDir: dir.path,
  });
  using client = await connect("never-begins", { socketDir: dir.path });
  const seen: number[] = [];
  const completion = (r: { status: number }) => void seen.push(r.status);
  await server.close();
  // The first command may be sent before the client hears of the close; it fails either way.
  await assert.rejects(
    client.execute(1, { completion }),
    isIpcError(Status.PEER_TERMINATED),
  );
  // Now the connection is known to be gone: the command fails before it is sent.
  let p: Promise<unknown> | undefined;
  assert.doesNotThrow(() => p = client.execute(1, { completion }));
  await assert.rejects(p!, isIpcError(Status.PEER_TERMINATED));
  client.close();
  let q: Promise<unknown> | undefined;
  assert.doesNotThrow(() => q = client.execute(1, { completion }));
  await assert.rejects(q!, isIpcError(Status.CLOSED));
  assert.deepEqual(seen, [Status.PEER_TERMINATED, Status.PEER_TERMINATED, Status.CLOSED]);
  // A synchronous call still throws.
  assert.throws(
    () => client.execute(1),
    isIpcError(Status.CLOSED),
  );
});
