/**
 * A relay peer for the tests, a server that is also a client:
 * `deno run -A tests/peers/relay.ts <ic-id> <socket-dir> <downstream-ic-id> [--name NAME]`.
 *
 * It connects to the downstream ic id, serves its own, and prints `ready`. Each command is
 * forwarded downstream with its input prefixed by `NAME>` (NAME defaults to the ic id); the
 * answer carries the downstream output followed by `<NAME` and the downstream status, so a
 * caller sees that the relay ran on the way down and on the way back. The output capacity
 * forwarded is the caller's minus the suffix; a capacity shorter than the suffix fails the
 * command.
 *
 * Operation codes: the low 16 bits are the downstream code; with bit 16 (`0x10000`) set the
 * forward is asynchronous (`exec` returns a Promise awaiting an async `execute`), otherwise
 * synchronous (a sync `execute` inside `exec`, which holds this thread until the answer).
 * `0x20000` (ping) answers `NAME` without going downstream.
 *
 * A downstream failure fails the command (the caller sees `HANDLER_FAILED`). When the
 * downstream connection ends (`PEER_TERMINATED`) the relay prints `lost PEER_TERMINATED`,
 * drops it, and connects again on the next forward (printing `connected`); a forward that
 * cannot connect fails at once.
 *
 * Ends, printing `bye`, when stdin closes or on SIGTERM.
 *
 * @module
 */

import { type Client, connect, type ExecResult, IpcError, serve, Status } from "../../mod.ts";
import type { ServerCommand } from "../../mod.ts";

/** Set in an operation code: forward asynchronously. */
const ASYNC = 0x1_0000;
/** Answers the relay's name, never forwarding. */
const PING = 0x2_0000;

const [icId, dir, downstream, ...flags] = Deno.args;
if (icId === undefined || dir === undefined || downstream === undefined) {
  throw new Error("usage: relay.ts <ic-id> <socket-dir> <downstream-ic-id> [--name NAME]");
}
// Constants, so that the closures below see them defined.
const socketDir = dir;
const downIcId = downstream;
const nameAt = flags.indexOf("--name");
const name = (nameAt >= 0 ? flags[nameAt + 1] : undefined) ?? icId;
const encoder = new TextEncoder();
const prefix = encoder.encode(`${name}>`);
const suffix = encoder.encode(`<${name}`);
const say = (line: string) => console.log(line);

let down: Client | null = await connect(downIcId, { socketDir });
/** The connect in progress after a loss, shared by the forwards that wait for it. */
let reconnecting: Promise<Client> | undefined;

/** Connects again after a loss; every forward meanwhile waits for the same attempt. */
function reconnect(): Promise<Client> {
  reconnecting ??= connect(downIcId, { socketDir }).then((c) => {
    down = c;
    say("connected");
    return c;
  }).finally(() => reconnecting = undefined);
  return reconnecting;
}

/** Drops `client` if the failure says its connection is gone; rethrows `e`. */
function failed(client: Client, e: unknown): never {
  if (e instanceof IpcError && e.status === Status.PEER_TERMINATED && down === client) {
    down = null;
    client.close();
    say("lost PEER_TERMINATED");
  }
  throw e;
}

/** The downstream command's options, writing straight into the shared areas of both hops. */
function forwardOptions({ input, output }: ServerCommand) {
  if (output.length < suffix.length) {
    throw new RangeError(`output capacity ${output.length} cannot hold the suffix`);
  }
  return {
    inputLength: prefix.length + input.length,
    inputPrepare: (area: Uint8Array) => {
      area.set(prefix);
      area.set(input, prefix.length);
    },
    outputLength: output.length - suffix.length,
    outputPost: (area: Uint8Array) => {
      output.set(area);
    },
  };
}

function answer(output: Uint8Array, status: number, length: number): ExecResult {
  output.set(suffix, length);
  return { status, length: length + suffix.length };
}

function forwardSync(client: Client, command: ServerCommand, code: number): ExecResult {
  let r;
  try {
    r = client.execute(code, forwardOptions(command));
  } catch (e) {
    failed(client, e);
  }
  return answer(command.output, r.status, r.length);
}

async function forwardAsync(
  client: Client,
  command: ServerCommand,
  code: number,
): Promise<ExecResult> {
  let r;
  try {
    r = await client.execute(code, { ...forwardOptions(command), completion: () => {} });
  } catch (e) {
    failed(client, e);
  }
  return answer(command.output, r.status, r.length);
}

const server = await serve(icId, {
  exec: (command) => {
    const { code, output } = command;
    if (code === PING) {
      output.set(encoder.encode(name));
      return { length: name.length };
    }
    const downCode = code & 0xffff;
    const client = down;
    if (client === null) {
      return reconnect().then((c) => forwardAsync(c, command, downCode));
    }
    return code & ASYNC
      ? forwardAsync(client, command, downCode)
      : forwardSync(client, command, downCode);
  },
}, { socketDir });
say("ready");

// Serve until stdin closes (the parent went away) or SIGTERM.
const stdin = Deno.stdin.readable.getReader();
const stop = () => void stdin.cancel();
Deno.addSignalListener("SIGTERM", stop);
while (!(await stdin.read()).done) { /* nothing to read */ }
Deno.removeSignalListener("SIGTERM", stop);
(down as Client | null)?.close();
await server.close();
say("bye");
