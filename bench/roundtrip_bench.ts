/**
 * The round-trip scenarios under `deno bench` (`deno task bench:deno`), which reports means
 * with shmcall next to the Unix-socket baseline in each payload group. The percentile harness
 * is `bench/run.ts`.
 *
 * @module
 */

import { connect } from "../mod.ts";
import { Peer, tempSocketDir } from "../tests/peers/spawn.ts";
import { SocketEcho } from "./socket_client.ts";

const here = (file: string) => decodeURIComponent(new URL(file, import.meta.url).pathname);
const dir = tempSocketDir();
const socketPath = `${dir.path}/socket.sock`;
const peers = [
  await Peer.start(Deno.execPath(), [
    "run",
    "-A",
    here("../examples/echo_server.ts"),
    "b",
    dir.path,
  ]),
  await Peer.start(Deno.execPath(), ["run", "-A", here("./peers/socket_server.ts"), socketPath]),
];
const client = await connect("b", { socketDir: dir.path });
const conn = await Deno.connect({ transport: "unix", path: socketPath });
// `deno bench` has no hook after the last bench: the peers go when this process does.
globalThis.addEventListener("unload", () => {
  conn.close();
  client.close();
  for (const p of peers) p.signal("SIGKILL");
  dir[Symbol.dispose]();
});

for (const size of [64, 4 << 10, 64 << 10, 1 << 20]) {
  const group = `${size} B round trip`;
  const input = new Uint8Array(size).fill(5);
  const output = new Uint8Array(size);
  const socket = new SocketEcho(conn, size);
  socket.body.fill(5);
  const completion = () => {};

  // An async function, not one returning a Promise: `deno bench` awaits only the former.
  Deno.bench({ name: "Deno ↔ Deno, Unix socket", group, baseline: true }, async () => {
    await socket.roundTrip();
  });
  Deno.bench({ name: "shmcall sync, copying", group }, () => {
    client.execute(1, { input, output });
  });
  Deno.bench({ name: "shmcall sync, zero-copy callbacks", group }, () => {
    client.execute(1, {
      inputLength: size,
      outputLength: size,
      inputPrepare: (area) => area.fill(5),
      outputPost: (area) => {
        if (area[size - 1] !== 5) throw new Error("the echo came back wrong");
      },
    });
  });
  Deno.bench({ name: "shmcall async, one in flight", group }, async () => {
    await client.execute(1, { input, output, completion });
  });
}
