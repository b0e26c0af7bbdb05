/**
 * Many commands in flight on one client, whose lane pushes and pops the rings in JavaScript
 * (src/lane.ts): each answer reaches its own command exactly once, in any order the server
 * answers; synchronous commands in between keep the others' answers for them; a server killed
 * or scribbling on the segment fails what is out, and nothing hangs.
 *
 * @module
 */

import "./setup.ts";
import assert from "node:assert/strict";
import { type Client, connect, IpcError, serve, Status } from "../mod.ts";
import { within } from "./peers/assertions.ts";
import { Peer, PEER_BIN, tempSocketDir } from "./peers/spawn.ts";

const ECHO = 1;
const SERVER = decodeURIComponent(new URL("./peers/server.ts", import.meta.url).pathname);

/** `count` echoes, `inFlight` at a time, each with input of its own; returns their outputs. */
async function pipeline(client: Client, count: number, inFlight: number): Promise<number[]> {
  const seen = new Array<number>(count).fill(0);
  let next = 0;
  const worker = async () => {
    const input = new Uint8Array(8);
    const view = new DataView(input.buffer);
    while (next < count) {
      const i = next++;
      view.setUint32(0, i, true);
      view.setUint32(4, i ^ 0x5a5a_5a5a, true);
      let completions = 0;
      const r = await client.execute(ECHO, {
        input,
        outputLength: 8,
        completion: () => completions++,
      });
      assert.equal(completions, 1, `command ${i}: its completion ran once`);
      assert.equal(r.status, 0);
      const out = new DataView(r.output.buffer, r.output.byteOffset, r.output.length);
      assert.equal(out.getUint32(0, true), i, `command ${i} got another command's answer`);
      assert.equal(out.getUint32(4, true), (i ^ 0x5a5a_5a5a) >>> 0);
      seen[i]!++;
    }
  };
  await within(`${count} commands`, Promise.all(Array.from({ length: inFlight }, worker)), 60_000);
  return seen;
}

for (
  const [name, start] of [
    [
      "a Deno server",
      (dir: string) => Peer.start(Deno.execPath(), ["run", "-A", SERVER, "p", dir]),
    ],
    ["a Rust server", (dir: string) => Peer.start(PEER_BIN, ["serve", "p", "--dir", dir])],
  ] as const
) {
  Deno.test(`with ${name}, 20,000 commands 300 in flight each get their own answer exactly once`, async () => {
    using dir = tempSocketDir();
    await using _server = await start(dir.path);
    using client = await connect("p", { socketDir: dir.path });
    // More in flight than the 264 slots: the rest take the backup path.
    const seen = await pipeline(client, 20_000, 300);
    assert.deepEqual(seen.filter((n) => n !== 1), [], "every command answered once");
    const stats = client.stats();
    assert.equal(stats.commands, 20_000);
    assert.equal(stats.inFlight, 0);
    assert.ok(stats.backup > 0, "some commands took the backup path");
    assert.ok(stats.latency.count > 0 && stats.latency.count < 20_000, "a sample is timed");
  });
}

Deno.test("synchronous commands between pipelined ones keep the answers they pop for their owners", async () => {
  using dir = tempSocketDir();
  await using _server = await Peer.start(PEER_BIN, ["serve", "p", "--dir", dir.path]);
  using client = await connect("p", { socketDir: dir.path });
  const text = (s: string) => new TextEncoder().encode(s);
  const str = (b: Uint8Array) => new TextDecoder().decode(b);
  for (let round = 0; round < 50; round++) {
    const out = Array.from(
      { length: 32 },
      (_, i) =>
        client.execute(ECHO, { input: text(`a${round}.${i}`), outputLength: 16, completion() {} }),
    );
    // Popped while the asynchronous answers arrive: each is kept, and settled after.
    for (let i = 0; i < 4; i++) {
      const r = client.execute(ECHO, { input: text(`s${round}.${i}`), outputLength: 16 });
      assert.equal(str(r.output), `s${round}.${i}`);
    }
    const results = await within("the pipelined answers", Promise.all(out));
    assert.deepEqual(results.map((r) => str(r.output)), out.map((_, i) => `a${round}.${i}`));
  }
});

Deno.test("a server killed with 256 commands in flight fails every one of them PEER_TERMINATED, none hangs", async () => {
  using dir = tempSocketDir();
  // Its HOLD never answers, and leaves the server's thread free for the next command.
  const server = await Peer.start(Deno.execPath(), ["run", "-A", SERVER, "p", dir.path]);
  try {
    using client = await connect("p", { socketDir: dir.path });
    const HOLD = 3;
    const statuses: number[] = [];
    const out = Array.from({ length: 256 }, () =>
      client.execute(HOLD, {
        input: new Uint8Array(8),
        outputLength: 8,
        completion: (r) => statuses.push(r.status),
      }).then(
        () => "answered",
        (e) => e instanceof IpcError ? e.statusName : String(e),
      ));
    // Every command reached the server before it dies: a round trip after them.
    await within("an echo", client.execute(ECHO, { outputLength: 0, completion() {} }));
    await server.kill();
    const settled = await within("the held commands", Promise.all(out));
    assert.deepEqual(new Set(settled), new Set(["PEER_TERMINATED"]));
    assert.equal(statuses.length, 256, "each completion ran once");
    assert.ok(statuses.every((s) => s === Status.PEER_TERMINATED));
    await assert.rejects(
      () => client.execute(ECHO, { completion() {} }),
      (e) => e instanceof IpcError && e.status === Status.PEER_TERMINATED,
    );
  } finally {
    await server.kill();
  }
});

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether process `pid` (a child of this one) is dead: gone, or a zombie not yet reaped. */
function dead(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}

Deno.test("answers on the ring when the server dies are delivered, not failed", async () => {
  using dir = tempSocketDir();
  // It keeps looking at its ring (a spin of 1 s, the longest there is): it takes every command this
  // client pushes while the client's thread is busy.
  const server = await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    SERVER,
    "p",
    dir.path,
    "--spin",
    "1000000",
  ]);
  try {
    using client = await connect("p", { socketDir: dir.path });
    const DIE = 8;
    // Warm: the lane exists and the server's thread is awake.
    await within("an echo", client.execute(ECHO, { outputLength: 0, completion() {} }));
    const echoes = Array.from(
      { length: 64 },
      (_, i) =>
        client.execute(ECHO, { input: new Uint8Array([i]), outputLength: 1, completion() {} })
          .then((r) => r.output[0], (e) => e instanceof IpcError ? e.statusName : String(e)),
    );
    const died = client.execute(DIE, { completion() {} }).catch((e) => e.statusName);
    // This thread takes no answer until the server is dead — it takes the commands in order,
    // so it answered the 64 echoes before the one that kills it — and this process's reactor
    // noticed: it removes the dead server's socket file just before it ends the connection.
    // So the end is what this thread learns first, with the 64 answers still on the ring.
    const socket = `${dir.path}/p.sock`;
    const deadline = performance.now() + 10_000;
    while (!dead(server.pid) || exists(socket)) {
      if (performance.now() > deadline) throw new Error("the server's death went unseen for 10 s");
    }
    assert.deepEqual(
      await within("the echoes", Promise.all(echoes)),
      Array.from({ length: 64 }, (_, i) => i),
    );
    assert.equal(await within("the fatal command", died), "PEER_TERMINATED");
  } finally {
    await server.kill();
  }
});

Deno.test("a server that scribbles on the segment while answering cannot make a pipelining client crash or hang", async () => {
  using dir = tempSocketDir();
  await using server = await Peer.start(
    PEER_BIN,
    [
      "hostile-serve",
      "h",
      "--dir",
      dir.path,
      "--seed",
      "15",
    ],
    10_000,
    true,
  );
  const outcomes = new Map<string, number>();
  const count = (what: string) => outcomes.set(what, (outcomes.get(what) ?? 0) + 1);
  /** Why connects failed, with the server's state then (for a failure's message). */
  const refusals: string[] = [];
  for (let attempt = 0; attempt < 5; attempt++) {
    let client: Client;
    try {
      client = await connect("h", { socketDir: dir.path, timeout: 2_000 });
    } catch (e) {
      count(e instanceof IpcError ? e.statusName : "connect threw");
      refusals.push(
        `attempt ${attempt}: ${e}; the server ${server.ended ? "had exited" : "was running"}`,
      );
      continue;
    }
    try {
      const out = Array.from({ length: 200 }, (_, i) =>
        client.execute(ECHO, {
          input: new Uint8Array(16).fill(i),
          outputLength: 16,
          completion() {},
        }).then(
          (r) => {
            assert.ok(r.length <= 16, `an answer of ${r.length} bytes for 16`);
            return "answered";
          },
          (e) => {
            assert.ok(e instanceof IpcError, `not an IpcError: ${e}`);
            return e.statusName;
          },
        ));
      try {
        client.execute(ECHO, { input: new Uint8Array(4), outputLength: 4 });
        count("sync answered");
      } catch (e) {
        assert.ok(e instanceof IpcError, `not an IpcError: ${e}`);
        count(`sync ${e.statusName}`);
      }
      for (const o of await within("the commands", Promise.all(out), 30_000)) count(o);
    } finally {
      client.close();
    }
  }
  // Answers that came through, and the connection ended by what the lane found.
  assert.ok(outcomes.size > 0);
  for (const what of outcomes.keys()) {
    assert.match(
      what,
      /^(sync )?(answered|PROTOCOL_VIOLATION|PEER_TERMINATED|TIMED_OUT|CANCELLED|HANDLER_FAILED|INVALID_COMMAND|OUTPUT_OVERFLOW|CLOSED)$/,
      `${JSON.stringify([...outcomes])}; ${
        refusals.join("; ")
      }; the server wrote: ${server.stderr}`,
    );
  }
});

Deno.test("a client that scribbles on its segment loses only its own connection to a server that pops its rings in JavaScript", async () => {
  using dir = tempSocketDir();
  await using server = await Peer.start(Deno.execPath(), ["run", "-A", SERVER, "s", dir.path]);
  using good = await connect("s", { socketDir: dir.path });
  for (let seed = 1; seed <= 3; seed++) {
    await using hostile = await Peer.start(PEER_BIN, [
      "hostile",
      "s",
      "--dir",
      dir.path,
      "--seed",
      String(seed),
      "--millis",
      "300",
    ]);
    // The well-behaved client pipelines meanwhile, and every one of its commands is answered.
    const seen = await pipeline(good, 2_000, 64);
    assert.deepEqual(seen.filter((n) => n !== 1), []);
    await hostile.expect("done", 20_000);
  }
  // The server process is still there, and serves.
  const seen = await pipeline(good, 500, 16);
  assert.deepEqual(seen.filter((n) => n !== 1), []);
  assert.equal(server.seen.includes("ready"), true);
});

Deno.test("an exec that answers after its client closed keeps the connection's segment: the client's next connection is not written by it", async () => {
  using dir = tempSocketDir();
  const LATE = 2;
  let lateWrites = 0;
  let late!: () => void;
  const lateDone = new Promise<void>((r) => late = r);
  await using _server = await serve("late", {
    exec: ({ code, input, output }) => {
      if (code !== LATE) {
        output.set(input);
        return { length: input.length };
      }
      return new Promise((resolve) =>
        setTimeout(() => {
          // Written after the client went: into this connection's segment, which must still be
          // this connection's alone.
          output.fill(0xee);
          lateWrites++;
          resolve({ length: output.length });
          late();
        }, 50)
      );
    },
  }, { socketDir: dir.path });
  const first = await connect("late", { socketDir: dir.path });
  const held = first.execute(LATE, { input: new Uint8Array(8), outputLength: 64, completion() {} })
    .catch((e) => e instanceof IpcError ? e.statusName : String(e));
  // Taken by the server (its exec runs) before the close.
  await within("an echo", first.execute(ECHO, { outputLength: 0, completion() {} }));
  first.close();
  assert.equal(await held, "CLOSED");
  using second = await connect("late", { socketDir: dir.path });
  let checked = 0;
  while (lateWrites === 0 || checked < 200) {
    const input = new Uint8Array(64).fill(checked & 0x7f);
    const r = await within(
      "an echo",
      second.execute(ECHO, { input, outputLength: 64, completion() {} }),
    );
    assert.deepEqual(r.output, input, `echo ${checked} was written by another connection's exec`);
    checked++;
  }
  await within("the late exec", lateDone);
});
