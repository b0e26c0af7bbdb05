import "./setup.ts";
import { isIpcError, within } from "./peers/assertions.ts";
import assert from "node:assert/strict";
import { connect, type ExecuteResult, IpcError, serve, Status } from "../mod.ts";
import { fnv1a64 } from "./peers/fnv.ts";
import { Peer, PEER_BIN, runScript, tempSocketDir } from "./peers/spawn.ts";

const ECHO = 1;
const CHECKSUM = 2;
const HOLD = 3;
const THROW = 4;
const REJECT = 5;
const DIE = 8;

const SERVER = decodeURIComponent(new URL("./peers/server.ts", import.meta.url).pathname);
const FLOOD = decodeURIComponent(new URL("./peers/flood.ts", import.meta.url).pathname);

/** A Deno server peer in its own process. */
function denoServer(icId: string, dir: string, ...flags: string[]): Promise<Peer> {
  return Peer.start(Deno.execPath(), ["run", "-A", SERVER, icId, dir, ...flags]);
}

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("execute() without completion is synchronous and returns the server's status and output", async () => {
  using dir = tempSocketDir();
  await using _server = await denoServer("sync", dir.path);
  using client = await connect("sync", { socketDir: dir.path });
  const r = client.execute(ECHO, { input: text("hello"), outputLength: 16 });
  assert.ok(!(r instanceof Promise));
  assert.deepEqual([r.status, r.length, str(r.output)], [0, 5, "hello"]);
  const sum = client.execute(CHECKSUM, { input: text("hello"), outputLength: 8 });
  assert.equal(sum.status, 7, "a user status is returned, not thrown");
  assert.equal(new DataView(sum.output.buffer).getBigUint64(0, true), fnv1a64(text("hello")));
});

Deno.test("execute() with completion returns a Promise, calls completion with the result and context, then resolves", async () => {
  using dir = tempSocketDir();
  await using _server = await denoServer("async", dir.path);
  using client = await connect("async", { socketDir: dir.path });
  const seen: [ExecuteResult, string][] = [];
  const p = client.execute(ECHO, {
    input: text("later"),
    outputLength: 8,
    context: "ctx",
    completion: (r, c) => seen.push([r, c]),
  });
  assert.ok(p instanceof Promise);
  assert.equal(seen.length, 0, "completion runs later, not inside execute()");
  const r = await within("the async command", p);
  assert.deepEqual(seen.map(([r, c]) => [str(r.output), c]), [["later", "ctx"]]);
  assert.equal(str(r.output), "later");
});

Deno.test("callbacks run in their documented order across both processes", async () => {
  using dir = tempSocketDir();
  const log = `${dir.path}/events.log`;
  const event = (what: string) => Deno.writeTextFileSync(log, `${what}\n`, { append: true });
  await using server = await denoServer("order", dir.path, "--log", log);
  const client = await connect("order", { socketDir: dir.path });
  const callbacks = {
    input: text("x"),
    outputLength: 1,
    inputPrepare: (a: Uint8Array, i: Uint8Array | undefined) => {
      event("inputPrepare");
      a.set(i!);
    },
    outputPrepare: () => event("outputPrepare"),
    inputPost: () => event("inputPost"),
    outputPost: () => event("outputPost"),
  };
  client.execute(ECHO, callbacks);
  await within(
    "the async command",
    client.execute(ECHO, { ...callbacks, completion: () => event("completion") }),
  );
  client.close();
  await server.expect("close");
  const cycle = ["inputPrepare", "outputPrepare", "exec", "inputPost", "outputPost"];
  assert.deepEqual(Deno.readTextFileSync(log).trim().split("\n"), [
    "open",
    ...cycle,
    ...cycle,
    "completion",
    "close",
  ]);
});

Deno.test("omitted callbacks take their documented defaults", async () => {
  using dir = tempSocketDir();
  await using _server = await denoServer("defaults", dir.path);
  using client = await connect("defaults", { socketDir: dir.path });
  // Default inputPrepare copies the input to the start of an area of inputLength bytes.
  const r = client.execute(ECHO, { input: text("abc"), inputLength: 6, outputLength: 6 });
  assert.equal(r.length, 6);
  assert.equal(str(r.output.subarray(0, 3)), "abc");
  // Default outputPost copies into `output` and returns it cut to the length.
  const output = new Uint8Array(10);
  const r2 = client.execute(ECHO, { input: text("hey"), output, outputLength: 3 });
  assert.equal(r2.output.buffer, output.buffer);
  assert.equal(str(output.subarray(0, 3)), "hey");
  assert.equal(r2.output.length, 3);
  // Without `output`, a fresh array that stays valid after later commands.
  const first = client.execute(ECHO, { input: text("one"), outputLength: 3 }).output;
  client.execute(ECHO, { input: text("two"), outputLength: 3 });
  assert.equal(str(first), "one");
  // The callbacks see views of shared memory, not the caller's arrays.
  let prepared: Uint8Array | undefined;
  let posted: Uint8Array | undefined;
  const input = text("zero-copy");
  client.execute(ECHO, {
    input,
    outputLength: 9,
    inputPrepare: (area, i) => {
      prepared = area;
      area.set(i!);
    },
    outputPost: (area) => {
      posted = area;
    },
  });
  assert.ok(prepared !== undefined && posted !== undefined);
  assert.notEqual(prepared.buffer, input.buffer);
  assert.equal(prepared.buffer, posted.buffer, "both areas lie in the one segment view");
  assert.equal(str(posted), "zero-copy");
});

Deno.test("sync and async commands mix on one client, and four clients share one server", async () => {
  using dir = tempSocketDir();
  await using _server = await denoServer("many", dir.path);
  const clients = await Promise.all(
    [0, 1, 2, 3].map(() => connect("many", { socketDir: dir.path })),
  );
  try {
    const all: Promise<void>[] = [];
    for (let i = 0; i < 400; i++) {
      const client = clients[i % 4]!;
      const input = text(`command ${i}`);
      const want = fnv1a64(input);
      const check = (r: ExecuteResult) => {
        assert.equal(r.status, 7);
        assert.equal(
          new DataView(r.output.buffer, r.output.byteOffset).getBigUint64(0, true),
          want,
        );
      };
      if (i % 3 === 0) check(client.execute(CHECKSUM, { input, outputLength: 8 }));
      else {
        all.push(
          client.execute(CHECKSUM, { input, outputLength: 8, completion: () => {} }).then(check),
        );
      }
    }
    await within("the async commands", Promise.all(all));
  } finally {
    for (const c of clients) c.close();
  }
});

Deno.test("10,000 async commands in flight complete with their checksums", async () => {
  using dir = tempSocketDir();
  await using _server = await denoServer("flood", dir.path);
  using client = await connect("flood", { socketDir: dir.path });
  let completions = 0;
  const all = Array.from({ length: 10_000 }, (_, i) => {
    const input = text(`payload ${i} `.repeat(1 + (i % 50)));
    const want = fnv1a64(input);
    return client.execute(CHECKSUM, { input, outputLength: 8, completion: () => completions++ })
      .then((r) => {
        assert.equal(
          new DataView(r.output.buffer, r.output.byteOffset).getBigUint64(0, true),
          want,
        );
      });
  });
  await within("10,000 commands", Promise.all(all), 60_000);
  assert.equal(completions, 10_000);
});

Deno.test("a command larger than any slot completes through the backup path", async () => {
  using dir = tempSocketDir();
  await using _server = await denoServer("large", dir.path);
  using client = await connect("large", { socketDir: dir.path });
  const input = new Uint8Array(3 << 20).map((_, i) => i * 13);
  const sync = client.execute(ECHO, { input, outputLength: input.length });
  assert.equal(sync.length, input.length);
  assert.deepEqual(sync.output, input);
  const async = await within(
    "the large async command",
    client.execute(ECHO, { input, outputLength: input.length, completion: () => {} }),
  );
  assert.deepEqual(async.output, input);
});

Deno.test("execute() fails with PEER_TERMINATED when the server is killed, sync and async", async () => {
  using dir = tempSocketDir();
  await using _server = await denoServer("dies", dir.path);
  using client = await connect("dies", { socketDir: dir.path });
  const held = Array.from(
    { length: 20 },
    () => client.execute(HOLD, { input: text("held"), completion: () => {} }),
  );
  // The server kills itself while this thread waits in the synchronous call.
  assert.throws(() => client.execute(DIE, {}), isIpcError(Status.PEER_TERMINATED));
  for (const p of held) {
    await within("a held command", assert.rejects(p, isIpcError(Status.PEER_TERMINATED)));
  }
  assert.throws(() => client.execute(ECHO, {}), isIpcError(Status.PEER_TERMINATED));
});

Deno.test("a killed client's connection closes once, and the server serves others", async () => {
  using dir = tempSocketDir();
  const opens: number[] = [];
  const closes: number[] = [];
  let execs = 0;
  let threeTaken!: () => void;
  const taken = new Promise<void>((r) => threeTaken = r);
  let closed!: (id: number) => void;
  let onClose = new Promise<number>((r) => closed = r);
  await using _server = await serve("killed", {
    open: (conn) => {
      opens.push(conn.id);
      return conn.id;
    },
    exec: async ({ input, output }) => {
      if (++execs === 3) threeTaken();
      await new Promise((r) => setTimeout(r, 200));
      output.set(input.subarray(0, output.length));
      return { length: Math.min(input.length, output.length) };
    },
    close: (conn) => {
      closes.push(conn.id);
      closed(conn.id);
    },
  }, { socketDir: dir.path });
  const peer = await Peer.start(PEER_BIN, ["client", "killed", "--dir", dir.path, "--hold", "3"]);
  await within("three commands taken", taken);
  await peer.kill();
  const gone = await within("close of the killed client", onClose);
  assert.deepEqual(closes, [gone], "close ran once, for the killed client");
  assert.equal(execs, 3);
  onClose = new Promise<number>((r) => closed = r);
  // Another client, in this process (so asynchronous), is served.
  const client = await connect("killed", { socketDir: dir.path });
  const r = await within(
    "a command of the next client",
    client.execute(ECHO, { input: text("next"), outputLength: 4, completion: () => {} }),
  );
  assert.equal(str(r.output), "next");
  client.close();
  await within("close of the next client", onClose);
  assert.equal(closes.length, 2);
  assert.deepEqual(opens.length, 2);
});

Deno.test("exec that throws or rejects fails that command with HANDLER_FAILED, and the server serves on", async () => {
  using dir = tempSocketDir();
  await using _server = await denoServer("failing", dir.path);
  using client = await connect("failing", { socketDir: dir.path });
  assert.throws(() => client.execute(THROW, {}), isIpcError(Status.HANDLER_FAILED));
  await within(
    "the rejecting command",
    assert.rejects(
      client.execute(REJECT, { completion: () => {} }),
      isIpcError(Status.HANDLER_FAILED),
    ),
  );
  assert.equal(str(client.execute(ECHO, { input: text("ok"), outputLength: 2 }).output), "ok");
});

Deno.test("a synchronous execute() on a server of this same thread throws instead of hanging", async () => {
  using dir = tempSocketDir();
  await using _server = await serve("self", { exec: () => ({ status: 3 }) }, {
    socketDir: dir.path,
  });
  using client = await connect("self", { socketDir: dir.path });
  assert.throws(() => client.execute(ECHO, {}), isIpcError(Status.INVALID_ARGUMENT));
  const r = await within("the async command", client.execute(ECHO, { completion: () => {} }));
  assert.equal(r.status, 3);
});

Deno.test("connect() to an unknown ic id rejects with NOT_FOUND naming it", async () => {
  using dir = tempSocketDir();
  await assert.rejects(connect("nobody", { socketDir: dir.path }), (e: unknown) => {
    assert.ok(e instanceof IpcError && e.status === Status.NOT_FOUND);
    assert.match(e.message, /'nobody'/);
    return true;
  });
});

Deno.test("a client speaking another protocol major is refused clearly", async () => {
  using dir = tempSocketDir();
  await using _server = await serve("versions", { exec: () => {} }, { socketDir: dir.path });
  const peer = Peer.start(PEER_BIN, ["client", "versions", "--dir", dir.path, "--major", "3"]);
  // The peer exits without "ready"; its error line says why.
  const err = await peer.then(
    (p) => p.kill().then(() => "connected"),
    (e: Error) => e.message,
  );
  assert.match(err, /error VERSION_MISMATCH/);
  assert.match(err, /protocol 3\.\d+ and this server speaks 2\.\d+/);
});

Deno.test("serve() on an ic id a live server has rejects with ALREADY_SERVED", async () => {
  using dir = tempSocketDir();
  await using _first = await serve("taken", { exec: () => {} }, { socketDir: dir.path });
  await assert.rejects(
    serve("taken", { exec: () => {} }, { socketDir: dir.path }),
    isIpcError(Status.ALREADY_SERVED),
  );
});

Deno.test("bad arguments throw TypeError or RangeError naming the value", async () => {
  using dir = tempSocketDir();
  await assert.rejects(connect("bad id", { socketDir: dir.path }), RangeError);
  await assert.rejects(connect(42 as unknown as string), /ic id must be a string, received 42/);
  await assert.rejects(
    serve("x", {} as never),
    /handlers.exec must be a function, received undefined/,
  );
  await using _server = await serve("args", { exec: () => {} }, { socketDir: dir.path });
  using client = await connect("args", { socketDir: dir.path });
  assert.throws(
    () => client.execute(-1, { completion: () => {} }),
    /code must be an integer .* received -1/,
  );
  assert.throws(
    () => client.execute(1, { input: "x" as unknown as Uint8Array, completion: () => {} }),
    /input must be a Uint8Array, received "x"/,
  );
  assert.throws(
    () => client.execute(1, { input: text("abc"), inputLength: 2, completion: () => {} }),
    /input of 3 bytes does not fit inputLength 2/,
  );
  assert.throws(
    () => client.execute(1, { outputPost: 5 as never, completion: () => {} }),
    /outputPost must be a function, received 5/,
  );
  assert.throws(
    () => client.execute(1, { outputLength: 2 ** 40, completion: () => {} }),
    RangeError,
  );
});

Deno.test("close() is idempotent, and execute() on a closed client fails with CLOSED", async () => {
  using dir = tempSocketDir();
  await using server = await serve("closing", { exec: () => {} }, { socketDir: dir.path });
  const client = await connect("closing", { socketDir: dir.path });
  client.close();
  client.close();
  assert.throws(() => client.execute(1), isIpcError(Status.CLOSED));
  await assert.rejects(client.execute(1, { completion: () => {} }), isIpcError(Status.CLOSED));
  await server.close();
  await server.close();
});

Deno.test("a process whose clients and servers are all closed exits by itself", async () => {
  const script = decodeURIComponent(new URL("./peers/exits.ts", import.meta.url).pathname);
  const { code, stdout } = await runScript(script);
  assert.equal(stdout.trim(), "done");
  assert.equal(code, 0, "it exited by itself, not killed after 15 s");
});

Deno.test("an async command after an idle pause completes, whatever held the rings before", async () => {
  using dir = tempSocketDir();
  await using _server = await denoServer("pause", dir.path);
  using client = await connect("pause", { socketDir: dir.path });
  for (let round = 0; round < 3; round++) {
    // A run of back-to-back commands: the pollers of both sides hold the rings meanwhile.
    for (let i = 0; i < 200; i++) {
      await client.execute(ECHO, { input: text("run"), outputLength: 3, completion: () => {} });
    }
    // Idle long past every wait window: the rings go back to their threads.
    await new Promise((r) => setTimeout(r, 20));
    const r = await within(
      "the command after the pause",
      client.execute(ECHO, { input: text("after"), outputLength: 5, completion: () => {} }),
    );
    assert.equal(str(r.output), "after");
    assert.equal(
      str(client.execute(ECHO, { input: text("sync"), outputLength: 4 }).output),
      "sync",
    );
  }
});

Deno.test("exec answers that are not a status and a length fail the command with HANDLER_FAILED", async () => {
  using dir = tempSocketDir();
  const answers: unknown[] = [{ status: -5 }, { length: 2 ** 33 }, { status: 1.5 }];
  let next = 0;
  await using _server = await serve("nonsense", {
    exec: () => {
      const a = answers[next++ % answers.length];
      return next % 2 === 0 ? Promise.resolve(a as never) : a as never;
    },
  }, { socketDir: dir.path });
  using client = await connect("nonsense", { socketDir: dir.path });
  for (let i = 0; i < 6; i++) {
    await within(
      "a command with a nonsense answer",
      assert.rejects(
        client.execute(1, { completion: () => {} }),
        isIpcError(Status.HANDLER_FAILED),
      ),
    );
  }
});

Deno.test("Server.close() runs a connection's close only after its pending execs settle", async () => {
  using dir = tempSocketDir();
  const events: string[] = [];
  let finishExec!: () => void;
  let execStarted!: () => void;
  const started = new Promise<void>((r) => execStarted = r);
  const server = await serve("drain", {
    exec: () => {
      events.push("exec started");
      execStarted();
      return new Promise((resolve) => {
        finishExec = () => {
          events.push("exec settled");
          resolve({ status: 0 });
        };
      });
    },
    close: () => {
      events.push("close");
      closed();
    },
  }, { socketDir: dir.path });
  let closed!: () => void;
  const onClose = new Promise<void>((r) => closed = r);
  const client = await connect("drain", { socketDir: dir.path });
  const pending = client.execute(1, { completion: () => {} }).catch(() => "failed");
  await within("exec to start", started);
  await server.close();
  assert.deepEqual(events, ["exec started"], "close waits for the pending exec");
  finishExec();
  await within("close", onClose);
  assert.deepEqual(events, ["exec started", "exec settled", "close"]);
  assert.equal(await within("the command", pending), "failed", "its server is gone");
  client.close();
});

Deno.test("a second JavaScript thread (a Worker) is refused clearly", async () => {
  using dir = tempSocketDir();
  // This thread uses the library first.
  await using _server = await serve("main-thread", { exec: () => {} }, { socketDir: dir.path });
  const worker = new Worker(new URL("./peers/worker.ts", import.meta.url).href, { type: "module" });
  const answer = new Promise<string>((resolve) => {
    worker.onmessage = (e: MessageEvent<string>) => resolve(e.data);
  });
  worker.postMessage(dir.path);
  try {
    const said = await within("the worker's answer", answer);
    assert.match(said, /IpcError: shmcall serves one JavaScript thread per process at a time/);
  } finally {
    worker.terminate();
  }
});

Deno.test("a Worker may use the library once this thread closed everything of its own", async () => {
  using dir = tempSocketDir();
  // This thread keeps its claim for a few microtask ticks after its last close (so that a loop
  // of connect and close does not claim the hub each time), and must let go after them.
  const server = await serve("main-thread", { exec: () => {} }, { socketDir: dir.path });
  const client = await connect("main-thread", { socketDir: dir.path });
  client.close();
  await server.close();
  const worker = new Worker(new URL("./peers/worker.ts", import.meta.url).href, { type: "module" });
  const answer = new Promise<string>((resolve) => {
    worker.onmessage = (e: MessageEvent<string>) => resolve(e.data);
  });
  worker.postMessage(dir.path);
  try {
    assert.equal(await within("the worker's answer", answer), "served");
  } finally {
    worker.terminate();
  }
});

Deno.test("a flood of large async commands to a server of this same thread completes", async () => {
  using dir = tempSocketDir();
  await using _server = await serve("flood-self", {
    exec: ({ input, output }) => {
      output.set(input.subarray(0, 16));
      return { length: 16 };
    },
  }, { socketDir: dir.path });
  using client = await connect("flood-self", { socketDir: dir.path });
  // 300 KB each: 8 take the large slots, the rest the backup path — far more than the socket
  // buffers and the server's backup budget hold, while the one thread that answers them is
  // this one: sending must never block it.
  const all = Array.from({ length: 100 }, (_, i) => {
    const input = new Uint8Array(300_000).fill(i);
    return client.execute(1, { input, outputLength: 16, completion: () => {} }).then((r) => {
      assert.deepEqual(r.output, new Uint8Array(16).fill(i));
    });
  });
  await within("100 large commands", Promise.all(all), 30_000);
});

Deno.test("a server of this process flooded with commands runs its timers and keeps serving", async () => {
  using dir = tempSocketDir();
  let execs = 0;
  let flooding!: () => void;
  const flood = new Promise<void>((r) => flooding = r);
  await using _server = await serve("flood", {
    exec: ({ output }) => {
      if (++execs === 10_000) flooding();
      return { length: output.length };
    },
  }, { socketDir: dir.path });
  // The flood lasts 4 s at most: a drain that never yielded would hold this thread till then.
  // (That drains yield once their budget is spent is proven deterministically in
  // core-rs/tests/c_surface.rs; here a flooding client may also pause on a busy machine.)
  const peer = await Peer.start(Deno.execPath(), ["run", "-A", FLOOD, "flood", dir.path, "4"]);
  try {
    await within("10,000 commands of the flood", flood);
    const asked = performance.now();
    await new Promise((r) => setTimeout(r, 1));
    const late = performance.now() - asked;
    const during = execs;
    // The flood goes on after the timer ran: it was served while the timer waited its turn.
    await within(
      "more commands of the flood",
      (async () => {
        while (execs < during + 1000) await new Promise((r) => setTimeout(r, 1));
      })(),
    );
    assert.ok(late < 1000, `a 1 ms timer ran ${late.toFixed(0)} ms late during the flood`);
  } finally {
    await peer.kill();
  }
});
