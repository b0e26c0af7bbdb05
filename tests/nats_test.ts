/**
 * Commands through NATS, against a real nats-server on 127.0.0.1 (tests/peers/nats_server.ts):
 * the client here and every server peer each have a socket directory of their own, so nothing
 * can take the local path by accident.
 *
 * @module
 */

import "./setup.ts";
import assert from "node:assert/strict";
import { connect as natsConnect } from "@nats-io/transport-node";
import { connect, IpcError, NATS_FRAME, type NatsClient, serve, Status } from "../mod.ts";
import { failure, within } from "./peers/assertions.ts";
import { NatsServer } from "./peers/nats_server.ts";
import { Peer, tempSocketDir } from "./peers/spawn.ts";

const SERVER = decodeURIComponent(new URL("./peers/server.ts", import.meta.url).pathname);
const ECHO = 1;
const CHECKSUM = 2;
const HOLD = 3;
const THROW = 4;
const SLOW_ECHO = 6;
const PID = 10;
const OVERFLOW = 11;

/** A Deno server peer of `icId` serving through `nats` too, from a socket directory of its own. */
async function natsServer(icId: string, nats: NatsServer, ...flags: string[]): Promise<Peer> {
  const dir = Deno.makeTempDirSync({ prefix: "shmcall-nats-peer-" });
  const peer = await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    SERVER,
    icId,
    dir,
    "--nats",
    nats.url,
    ...flags,
  ], 30_000);
  const kill = peer.kill.bind(peer);
  peer.kill = async () => {
    await kill();
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  };
  return peer;
}

/** A client of `icId` through `nats`, from a socket directory no server uses. */
function natsClient(icId: string, nats: NatsServer, timeout?: number): Promise<NatsClient> {
  return connect(icId, {
    nats: { servers: nats.url },
    ...(timeout === undefined ? {} : { timeout }),
  });
}

function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

Deno.test("a Deno client reaches a Deno server through NATS: areas of 0 B to 1 MiB come back whole", async () => {
  await using nats = await NatsServer.start();
  await using _server = await natsServer("nats-sizes", nats);
  await using client = await natsClient("nats-sizes", nats);
  for (const n of [0, 1, 64, 4096, 65_536, 1 << 20]) {
    const input = bytes(n, n);
    const r = await client.execute(ECHO, { input, outputLength: n, completion: () => {} });
    assert.equal(r.status, 0);
    assert.equal(r.length, n);
    assert.deepEqual(r.output, input, `${n} bytes`);
  }
});

Deno.test("through NATS, statuses, failures and the callbacks behave as on one host", async () => {
  await using nats = await NatsServer.start();
  await using _server = await natsServer("nats-statuses", nats, "--expose");
  await using client = await natsClient("nats-statuses", nats);
  // A user status comes back, with the output.
  const sum = await client.execute(CHECKSUM, {
    input: bytes(100, 1),
    outputLength: 8,
    completion: () => {},
  });
  assert.equal(sum.status, 7);
  assert.equal(sum.length, 8);
  // A handler that throws: HANDLER_FAILED, with its reason (the server exposes errors).
  const thrown = await failure(() =>
    client.execute(THROW, { outputLength: 256, completion: () => {} })
  );
  assert.equal(thrown.status, Status.HANDLER_FAILED);
  assert.match(thrown.message, /the handler throws/);
  // More output than the area holds: OUTPUT_OVERFLOW, saying how much was wanted.
  const over = await failure(() =>
    client.execute(OVERFLOW, { outputLength: 16, completion: () => {} })
  );
  assert.equal(over.status, Status.OUTPUT_OVERFLOW);
  assert.match(over.message, /24 bytes of output for an output area of 16 bytes/);
  // The callbacks, in order, on arrays of their own; completion gets the failure's status too.
  const seen: string[] = [];
  const output = new Uint8Array(4);
  const r = await client.execute(ECHO, {
    input: new Uint8Array([9, 9, 9]),
    inputLength: 4,
    output,
    inputPrepare: (area, input) => {
      seen.push(`inputPrepare ${area.length}`);
      area.set(input!);
      area[3] = 7;
    },
    outputPrepare: (area) => seen.push(`outputPrepare ${area.length}`),
    inputPost: (area) => seen.push(`inputPost ${area.join(",")}`),
    outputPost: (area, out) => {
      seen.push(`outputPost ${area.join(",")}`);
      out!.set(area);
    },
    completion: (result, context) => seen.push(`completion ${result.status} ${context}`),
    context: "ctx",
  });
  assert.deepEqual(seen, [
    "inputPrepare 4",
    "outputPrepare 4",
    "inputPost 9,9,9,7",
    "outputPost 9,9,9,7",
    "completion 0 ctx",
  ]);
  assert.equal(r.output, output);
  const statuses: number[] = [];
  await failure(() =>
    client.execute(THROW, { completion: (result) => statuses.push(result.status) })
  );
  assert.deepEqual(statuses, [Status.HANDLER_FAILED]);
});

Deno.test("through NATS: a synchronous call, a bad argument and an area larger than a message throw at once", async () => {
  await using nats = await NatsServer.start();
  await using client = await natsClient("nats-arguments", nats);
  assert.throws(
    () => client.execute(ECHO, { input: new Uint8Array(1) } as never),
    (e: unknown) => e instanceof TypeError && /asynchronous only: pass completion/.test(e.message),
  );
  assert.throws(
    () => client.execute(-1, { completion: () => {} }),
    (e: unknown) => e instanceof RangeError && /code must be an integer/.test(e.message),
  );
  assert.throws(
    () => client.execute(ECHO, { outputLength: 3 << 20, completion: () => {} }),
    (e: unknown) =>
      e instanceof RangeError && /outputLength 3145728 is too large for NATS/.test(e.message),
  );
  await assert.rejects(
    () => connect("nats-arguments", { nats: { servers: nats.url }, reconnect: true }),
    (e: unknown) => e instanceof TypeError && /reconnect is for a local connection/.test(e.message),
  );
  await assert.rejects(
    () => connect("nats..dots", { nats: { servers: nats.url } }),
    (e: unknown) => e instanceof RangeError && /empty token/.test(e.message),
  );
  await assert.rejects(
    () => connect("nats-arguments", { nats: { servers: [] } }),
    (e: unknown) => e instanceof TypeError && /nats.servers of connect/.test(e.message),
  );
});

Deno.test("through NATS: no server is NOT_FOUND, a late answer TIMED_OUT, a closed client CLOSED", async () => {
  await using nats = await NatsServer.start();
  await using client = await natsClient("nats-errors", nats);
  const none = await failure(() => client.execute(ECHO, { completion: () => {} }));
  assert.equal(none.status, Status.NOT_FOUND);
  await using _server = await natsServer("nats-errors", nats);
  const late = await failure(() => client.execute(HOLD, { timeout: 200, completion: () => {} }));
  assert.equal(late.status, Status.TIMED_OUT);
  assert.match(late.message, /within 200 ms: it may have run/);
  const held = client.execute(HOLD, { completion: () => {} });
  client.close();
  await assert.rejects(held, (e: unknown) => e instanceof IpcError && e.status === Status.CLOSED);
  await assert.rejects(
    () => client.execute(ECHO, { completion: () => {} }),
    (e: unknown) => e instanceof IpcError && e.status === Status.CLOSED,
  );
});

Deno.test("a NATS client is a session: open at its first command, close after its goodbye", async () => {
  await using nats = await NatsServer.start();
  await using server = await natsServer("nats-session", nats);
  const client = await natsClient("nats-session", nats);
  await client.execute(ECHO, { completion: () => {} });
  const open = await server.expect("open ");
  const [, id, session] = open.split(" ");
  assert.match(session ?? "", /^[0-9a-f]{16}$/, open);
  await client.execute(ECHO, { completion: () => {} });
  await client[Symbol.asyncDispose]();
  assert.equal(await server.expect("close "), `close ${id} ${session}`);
  assert.equal(server.seen.filter((l) => l.startsWith("open ")).length, 1);
});

Deno.test("a server that serves through NATS serves its local clients as before", async () => {
  await using nats = await NatsServer.start();
  using dir = tempSocketDir();
  let remote = 0;
  await using server = await serve("nats-local", {
    exec: ({ input, output }, conn) => {
      if (conn.session !== undefined) remote++;
      output.set(input);
      return { length: input.length };
    },
  }, { socketDir: dir.path, nats: { servers: nats.url } });
  using local = await connect("nats-local", { socketDir: dir.path });
  const near = await local.execute(ECHO, {
    input: new Uint8Array([1, 2]),
    outputLength: 2,
    completion: () => {},
  });
  assert.deepEqual(near.output, new Uint8Array([1, 2]));
  await using far = await natsClient("nats-local", nats);
  const r = await far.execute(ECHO, {
    input: new Uint8Array([3]),
    outputLength: 1,
    completion: () => {},
  });
  assert.deepEqual(r.output, new Uint8Array([3]));
  assert.equal(remote, 1);
  // Its counters hold both: the local command and the one from NATS (1 byte in, 1 out).
  const stats = server.stats();
  assert.equal(stats.commands, 2);
  assert.equal(stats.bytesIn, 3);
  assert.equal(stats.bytesOut, 3);
  assert.equal(stats.connections, 1, "NATS sessions are not connections");
});

Deno.test("two servers of one ic id share the commands; one killed, the other serves on", async () => {
  await using nats = await NatsServer.start();
  const a = await natsServer("nats-pair", nats);
  try {
    await using _b = await natsServer("nats-pair", nats);
    await using client = await natsClient("nats-pair", nats, 5_000);
    const pids = new Map<number, number>();
    const who = async () => {
      const r = await client.execute(PID, { outputLength: 4, completion: () => {} });
      return new DataView(r.output.buffer, r.output.byteOffset, 4).getUint32(0, true);
    };
    for (let i = 0; i < 100; i++) {
      const pid = await who();
      pids.set(pid, (pids.get(pid) ?? 0) + 1);
    }
    assert.equal(pids.size, 2, `both served: ${JSON.stringify([...pids])}`);
    // Commands in flight when one server dies: each fails (TIMED_OUT, as none can tell
    // whether it ran) or is answered by the survivor; none hangs.
    const inFlight = Array.from(
      { length: 20 },
      () => client.execute(SLOW_ECHO, { timeout: 2_000, completion: () => {} }),
    );
    await a.kill();
    const settled = await within("the commands in flight", Promise.allSettled(inFlight));
    for (const s of settled) {
      if (s.status === "rejected") {
        assert.ok(s.reason instanceof IpcError, String(s.reason));
        assert.ok(
          [Status.TIMED_OUT, Status.PEER_TERMINATED].includes(s.reason.status as never),
          s.reason.message,
        );
      }
    }
    // The queue group spread them: some died with the killed server, the survivor answered
    // the others (20 to one server alone would happen once in a million runs).
    const failed = settled.filter((s) => s.status === "rejected").length;
    assert.ok(failed > 0 && failed < 20, `${failed} of 20 failed`);
    // Later commands all reach the survivor.
    const later = new Set<number>();
    for (let i = 0; i < 10; i++) later.add(await who());
    assert.equal(later.size, 1);
    assert.ok(pids.has([...later][0]!));
  } finally {
    await a.kill();
  }
});

Deno.test("nats-server killed and back: in flight PEER_TERMINATED, meanwhile a clear error, then served again", async () => {
  await using nats = await NatsServer.start();
  await using _server = await natsServer("nats-restart", nats);
  const client = await connect("nats-restart", {
    nats: { servers: nats.url, reconnectTimeWait: 50, maxReconnectAttempts: -1 },
    timeout: 5_000,
  });
  try {
    await client.execute(ECHO, { completion: () => {} });
    const held = failure(() => client.execute(HOLD, { completion: () => {} }));
    await nats.stop();
    const lost = await held;
    assert.equal(lost.status, Status.PEER_TERMINATED);
    const meanwhile = await failure(() => client.execute(ECHO, { completion: () => {} }));
    assert.equal(meanwhile.status, Status.PEER_TERMINATED);
    assert.match(meanwhile.message, /down and reconnecting/);
    await nats.restart();
    // Served again once both the client and the server reconnected.
    await within(
      "service after nats-server came back",
      (async () => {
        while (true) {
          try {
            await client.execute(ECHO, { timeout: 500, completion: () => {} });
            return;
          } catch (e) {
            if (!(e instanceof IpcError)) throw e;
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      })(),
      15_000,
    );
  } finally {
    await client[Symbol.asyncDispose]();
  }
});

Deno.test("frames that are not commands are refused, each with its status, and the server serves on", async () => {
  await using nats = await NatsServer.start();
  await using _server = await natsServer("nats-hostile", nats);
  const nc = await natsConnect({ servers: nats.url });
  try {
    const ask = async (bytes: Uint8Array) => {
      const reply = await nc.request("shmcall.cmd.nats-hostile", bytes, { timeout: 5_000 });
      return new DataView(reply.data.buffer, reply.data.byteOffset + 8, 4).getInt32(0, true);
    };
    assert.equal(await ask(new Uint8Array([1, 2, 3])), Status.INVALID_COMMAND);
    const later = new Uint8Array(NATS_FRAME.HEADER);
    later.set([NATS_FRAME.MAGIC_0, NATS_FRAME.MAGIC_1, 2, 0, NATS_FRAME.COMMAND]);
    assert.equal(await ask(later), Status.VERSION_MISMATCH);
    // An output area larger than a message holds.
    const huge = new Uint8Array(NATS_FRAME.HEADER);
    huge.set([NATS_FRAME.MAGIC_0, NATS_FRAME.MAGIC_1, 1, 0, NATS_FRAME.COMMAND]);
    new DataView(huge.buffer).setUint32(12, 0xffff_ffff, true);
    assert.equal(await ask(huge), Status.INVALID_COMMAND);
    // Noise on every subject of the ic id: no answer is owed, and nothing breaks.
    const next = (() => {
      let x = 0x9e3779b9;
      return () => (x = (x ^ (x << 13)) >>> 0,
        x = (x ^ (x >>> 17)) >>> 0,
        x = (x ^ (x << 5)) >>> 0);
    })();
    for (let i = 0; i < 200; i++) {
      const noise = new Uint8Array(next() % 64);
      for (let k = 0; k < noise.length; k++) noise[k] = next();
      if (noise.length > 4 && i % 2 === 0) noise.set([0x53, 0x43, 1, 0, next() % 4]);
      nc.publish("shmcall.cmd.nats-hostile", noise);
      nc.publish("shmcall.bye.nats-hostile", noise);
    }
    await nc.flush();
    await using client = await natsClient("nats-hostile", nats);
    const r = await client.execute(ECHO, {
      input: new Uint8Array([4, 2]),
      outputLength: 2,
      completion: () => {},
    });
    assert.deepEqual(r.output, new Uint8Array([4, 2]));
  } finally {
    await nc.close();
  }
});

Deno.test("NATS's own authentication passes through: a server and a client with credentials", async () => {
  const auth = { user: "shmcall", password: "s3cret" };
  await using nats = await NatsServer.start({ auth });
  using dir = tempSocketDir();
  await using _server = await serve("nats-auth", {
    exec: ({ input, output }) => {
      output.set(input);
      return { length: input.length };
    },
  }, { socketDir: dir.path, nats: { servers: nats.url, user: auth.user, pass: auth.password } });
  // Wrong credentials are PERMISSION_DENIED: tested in Node (node/test/nats.test.mjs). Under Deno,
  // the connection nats-server refuses may end the process with an uncaught ECONNRESET: the NATS
  // client drops its socket's listeners before Deno's last read error comes (2 runs in 15 here).
  await using client = await connect("nats-auth", {
    nats: { servers: nats.url, user: auth.user, pass: auth.password },
  });
  const r = await client.execute(ECHO, {
    input: new Uint8Array([5]),
    outputLength: 1,
    completion: () => {},
  });
  assert.deepEqual(r.output, new Uint8Array([5]));
});

Deno.test("NATS's TLS passes through: a client with the CA reaches a TLS-only server, one without fails", async () => {
  await using nats = await NatsServer.start({ tls: true });
  const tls = { caFile: nats.caFile };
  using dir = tempSocketDir();
  await using _server = await serve("nats-tls", {
    exec: ({ input, output }) => {
      output.set(input);
      return { length: input.length };
    },
  }, { socketDir: dir.path, nats: { servers: nats.url, tls } });
  await using client = await connect("nats-tls", { nats: { servers: nats.url, tls } });
  const r = await client.execute(ECHO, {
    input: new Uint8Array([7, 7]),
    outputLength: 2,
    completion: () => {},
  });
  assert.deepEqual(r.output, new Uint8Array([7, 7]));
  // Without the CA, the server's certificate is not trusted.
  const refused = await failure(() =>
    connect("nats-tls", {
      nats: { servers: nats.url, maxReconnectAttempts: 0, reconnect: false },
    })
  );
  assert.equal(refused.status, Status.IO_ERROR, refused.message);
});

Deno.test("a server or client that NATS's authorization keeps from its subjects fails with PERMISSION_DENIED", async () => {
  await using nats = await NatsServer.start({
    config: `authorization { users = [
      { user: "limited", password: "x", permissions: { subscribe: { deny: ["shmcall.cmd.>"] } } },
      { user: "deaf", password: "x", permissions: { subscribe: { deny: ["_INBOX.>"] } } }
    ] }\n`,
  });
  using dir = tempSocketDir();
  const refused = await failure(() =>
    serve("nats-denied", { exec: () => ({}) }, {
      socketDir: dir.path,
      nats: { servers: nats.url, user: "limited", pass: "x" },
    })
  );
  assert.equal(refused.status, Status.PERMISSION_DENIED, refused.message);
  assert.match(refused.message, /NATS refused the server of 'nats-denied' its subscriptions/);
  // Nothing of it is left: the ic id serves again.
  await using _again = await serve("nats-denied", { exec: () => ({}) }, { socketDir: dir.path });
  // A client that may not hear its answers is refused at connect, not left to time out.
  const deaf = await failure(() =>
    connect("nats-denied", { nats: { servers: nats.url, user: "deaf", pass: "x" } })
  );
  assert.equal(deaf.status, Status.PERMISSION_DENIED, deaf.message);
  assert.match(deaf.message, /NATS refused the client of 'nats-denied' its subscriptions/);
});
