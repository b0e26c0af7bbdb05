/**
 * A server restarted under load without one failed command. The client keeps 16 commands in
 * flight; meanwhile server v1 (another process) is quiesced, closed and replaced by v2. The
 * client follows the restart protocol:
 *
 * 1. A command answered `SERVER_QUIESCING` never ran: the client stops sending on that
 *    connection,
 * 2. waits for the connection's other outstanding commands (those the server took run to
 *    their end and answer normally),
 * 3. closes it and connects again, retrying for at most 10 s while the old server closes and
 *    its successor starts (`NOT_FOUND`, `SERVER_QUIESCING`, …),
 * 4. and sends the turned-away commands again, to the successor.
 *
 * `deno run -A examples/restart.ts`
 *
 * @module
 */

import { type Client, connect, IpcError, Status } from "shmcall";
import { Peer, tempSocketDir } from "../tests/peers/spawn.ts";

const ID = "restart";
const IN_FLIGHT = 16;
/** Commands the successor must answer before the load stops. */
const AFTER_RESTART = 2000;
const RECONNECT_MS = 10_000;

using dir = tempSocketDir();
const SERVER = decodeURIComponent(new URL("./restart_server.ts", import.meta.url).pathname);
const start = (generation: number) =>
  Peer.start(Deno.execPath(), ["run", "-A", SERVER, ID, dir.path, String(generation)]);

/** A connection, and how many of its commands are outstanding. */
interface Link {
  client: Client;
  outstanding: number;
  replaced: boolean;
  drained?: () => void;
}

/**
 * Connects, retrying any library failure for a while: no server listens yet (NOT_FOUND), the
 * old one still quiesces (SERVER_QUIESCING) or closes meanwhile (PEER_TERMINATED).
 * Retrying a connect is always safe: it sends no command.
 */
async function connectRetrying(): Promise<Link> {
  const deadline = Date.now() + RECONNECT_MS;
  for (let wait = 1;; wait = Math.min(2 * wait, 50)) {
    try {
      return {
        client: await connect(ID, { socketDir: dir.path }),
        outstanding: 0,
        replaced: false,
      };
    } catch (e) {
      if (!(e instanceof IpcError) || Date.now() + wait > deadline) throw e;
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

let link: Promise<Link> = connectRetrying();

/** Steps 2 and 3: once `old`'s outstanding commands settled, close it and connect again. */
function replace(old: Link): void {
  if (old.replaced) return; // another command of it already did
  old.replaced = true;
  link = new Promise<void>((resolve) => old.drained = resolve).then(() => {
    old.client.close();
    return connectRetrying();
  });
}

let turnedAway = 0;
/** Sends one command until a server accepts it (step 4); resolves with that server's generation. */
async function call(seq: number): Promise<number> {
  const input = new Uint8Array(4);
  new DataView(input.buffer).setUint32(0, seq, true);
  while (true) {
    const l = await link; // step 1: after a SERVER_QUIESCING, this waits for the successor
    l.outstanding++;
    try {
      const r = await l.client.execute(1, { input, outputLength: 4, completion: () => {} });
      if (new DataView(r.output.buffer).getUint32(0, true) !== seq) throw new Error("wrong echo");
      return r.status;
    } catch (e) {
      if (!(e instanceof IpcError) || e.status !== Status.SERVER_QUIESCING) throw e;
      turnedAway++;
      replace(l);
    } finally {
      if (--l.outstanding === 0 && l.replaced) l.drained?.();
    }
  }
}

const accepted = [0, 0, 0]; // by generation
const failed: string[] = [];
let sent = 0;
let stopping = false;

/** Keeps one command in flight until v2 has accepted AFTER_RESTART, or one fails. */
async function lane(): Promise<void> {
  while (!stopping && accepted[2]! < AFTER_RESTART) {
    const seq = sent++;
    try {
      accepted[await call(seq)]!++;
    } catch (e) {
      failed.push(`${seq}: ${e instanceof IpcError ? e.statusName : e}`);
      stopping = true;
    }
  }
}

let v1: Peer | undefined;
let v2: Peer | undefined;
/** Once v1 accepted 1000 commands: quiesces and closes it, then starts v2. */
async function restart(): Promise<void> {
  while (!stopping && accepted[1]! < 1000) await new Promise((r) => setTimeout(r, 5));
  if (stopping) return;
  v1!.signal("SIGTERM"); // v1 quiesces, waits for its client to leave, closes
  console.log(`v1 ${await v1!.expect("closed")}`);
  v2 = await start(2);
}

try {
  v1 = await start(1);
  await Promise.all([restart(), ...Array.from({ length: IN_FLIGHT }, lane)]);
} finally {
  stopping = true;
  await link.then((l) => l.client.close(), () => {});
  await v1?.kill();
  await v2?.kill();
}
console.log(
  `restart: ${sent} sent, ${accepted[1]! + accepted[2]!} accepted (v1 ${accepted[1]}, v2 ${
    accepted[2]
  }), ${turnedAway} turned away and sent again, ${failed.length} failed`,
);
if (failed.length > 0) {
  console.log(failed.join("\n"));
  Deno.exitCode = 1;
}
