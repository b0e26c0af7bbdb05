/**
 * A client peer that keeps a server under load across restarts:
 * `deno run -A tests/peers/load.ts <ic-id> <socket-dir> [in-flight]`.
 *
 * Keeps `in-flight` (default 16) asynchronous commands outstanding, each with the next
 * sequence number as its code and its 4-byte input; the server is expected to answer the
 * sequence number as its status. When a command is answered `SERVER_QUIESCING` it stops
 * sending on that connection, waits for the connection's other commands, closes it,
 * reconnects (retrying with backoff, at most {@linkcode RECONNECT_MS}) and sends the rejected
 * commands again before new ones. Prints `ready` once connected, `reconnected` after each
 * reconnection. On SIGTERM it stops issuing new numbers, waits for what is outstanding, and
 * prints one line:
 * `done sent=<n> ok=<n> retried=<n> failed=<n> reconnects=<n> failures=<seq:STATUS,…> answered=<seq,…>`.
 *
 * @module
 */

import { type Client, connect, IpcError, Status } from "../../mod.ts";

const [icId, socketDir, depth = "16"] = Deno.args;
if (icId === undefined || socketDir === undefined) {
  throw new Error("usage: load.ts <ic-id> <socket-dir> [in-flight]");
}
const IN_FLIGHT = Number(depth);
/** The longest a reconnection keeps trying, in ms. */
const RECONNECT_MS = 10_000;

let client: Client = await connectRetrying();
console.log("ready");

let next = 0;
let outstanding = 0;
let ok = 0;
let retried = 0;
let reconnects = 0;
let draining = false;
let stopping = false;
const resend: number[] = [];
const answered: number[] = [];
const failures: string[] = [];

Deno.addSignalListener("SIGTERM", stop);
fill();

/** Connects, retrying while no server serves or the one there is quiescing. */
async function connectRetrying(): Promise<Client> {
  const deadline = Date.now() + RECONNECT_MS;
  let wait = 1;
  while (true) {
    try {
      return await connect(icId!, { socketDir: socketDir! });
    } catch (e) {
      if (!(e instanceof IpcError) || Date.now() + wait > deadline) throw e;
    }
    await new Promise((resolve) => setTimeout(resolve, wait));
    wait = Math.min(wait * 2, 50);
  }
}

/** Sends until `IN_FLIGHT` commands are outstanding: those to send again first. */
function fill(): void {
  while (!draining && outstanding < IN_FLIGHT) {
    const seq = resend.shift() ?? (stopping ? undefined : next++);
    if (seq === undefined) break;
    send(client, seq);
  }
  if (stopping && outstanding === 0 && !draining) finish();
}

function send(to: Client, seq: number): void {
  outstanding++;
  const input = new Uint8Array(4);
  new DataView(input.buffer).setUint32(0, seq, true);
  to.execute(seq, { input, completion: () => {} }).then(
    (r) => {
      if (r.status === seq) {
        ok++;
        answered.push(seq);
      } else failures.push(`${seq}:status ${r.status}`);
    },
    (e) => {
      if (e instanceof IpcError && e.status === Status.SERVER_QUIESCING) {
        retried++;
        resend.push(seq);
        draining = true;
      } else failures.push(`${seq}:${e instanceof IpcError ? e.statusName : String(e)}`);
    },
  ).then(() => {
    outstanding--;
    if (draining && outstanding === 0) void reconnect();
    else fill();
  });
}

async function reconnect(): Promise<void> {
  client.close();
  client = await connectRetrying();
  reconnects++;
  console.log("reconnected");
  draining = false;
  fill();
}

function stop(): void {
  stopping = true;
  fill();
}

let finished = false;

function finish(): void {
  if (finished) return;
  finished = true;
  Deno.removeSignalListener("SIGTERM", stop);
  client.close();
  console.log(
    `done sent=${next} ok=${ok} retried=${retried} failed=${failures.length} reconnects=${reconnects} failures=${
      failures.join(",")
    } answered=${answered.join(",")}`,
  );
}
