/**
 * The core's primitives ({@linkcode Native}) over Node-API: the addon's functions take and
 * return plain numbers, and what does not fit a return value is read from this thread's
 * scratch. Importing this module binds them for the client, the server and the hub (the
 * package entry does).
 *
 * @module
 */

import { IpcError } from "../src/errors.ts";
import { Worker } from "node:worker_threads";
import {
  bindNative,
  eventView,
  type Handle,
  Mapping,
  type Native,
  OK,
  type WorkerPort,
} from "../src/native.ts";
import { Status } from "../src/status.ts";
import { SCRATCH } from "./addon.ts";
import { loadAddon } from "./load.ts";

const addon = loadAddon();

const scratch = addon.scratch();
if (scratch === null) {
  throw new IpcError(addon.lastStatus(), addon.lastError());
}
const words = new Uint32Array(scratch);
const ints = new Int32Array(scratch);
const begunAt = words.subarray(SCRATCH.BEGUN + 1, SCRATCH.BEGUN + 4);

/** Throws the {@linkcode IpcError} of a failed call; returns OK or EMPTY. */
function check(rc: number): number {
  if (rc < 0) throw new IpcError(rc, addon.lastError());
  return rc;
}

/** A view the addon made, or the {@linkcode IpcError} of why it could not. */
function mapping(buffer: ArrayBuffer | null): Mapping {
  if (buffer === null) {
    throw new IpcError(addon.lastStatus(), addon.lastError());
  }
  // The finalizer of an external buffer lets the segment go once no buffer shares its memory:
  // at once after the detach, or, when user code transferred the memory to another buffer,
  // when that one is collected.
  return new Mapping(new Uint8Array(buffer), (view) => {
    if (view !== undefined) addon.detach(view);
  });
}

const asHandle = (n: number) => n as Handle;

/** Node's primitives. */
export const nodeNative: Native = {
  lastError: () => addon.lastError(),
  protocolVersion: () => addon.protocolVersion(),

  socketDir(dir) {
    const path = addon.socketDir(dir ?? "");
    if (path === null) throw new IpcError(addon.lastStatus(), addon.lastError());
    return path;
  },

  constant: (name) => addon.constant(name) ?? undefined,

  clientConnect(icId, dir, spinNs, id, largeOutput = 0) {
    const rc = check(addon.clientConnect(icId, dir ?? "", spinNs, largeOutput, id));
    return rc === OK ? asHandle(words[SCRATCH.BEGUN]!) : undefined;
  },

  clientSegment: (client) => mapping(addon.clientSegment(client)),

  begunAt,

  clientBegin(client, code, inputLength, outputCapacity, mode) {
    check(
      addon.clientBeginAt(
        client,
        code,
        inputLength,
        outputCapacity,
        mode,
      ),
    );
    return words[SCRATCH.BEGUN]!;
  },

  ticketWriteInput(ticket, input) {
    check(addon.ticketWriteInput(ticket, input));
  },

  ticketReadOutput(ticket, into) {
    check(addon.ticketReadOutput(ticket, into));
  },

  clientCall(client, ticket, timeoutMs) {
    check(addon.clientCall(client, ticket, timeoutMs));
    return ints[SCRATCH.ANSWER]!;
  },

  callLength: () => words[SCRATCH.ANSWER + 1]!,

  clientSubmit(client, ticket, token) {
    check(addon.clientSubmit(client, ticket, token));
  },

  clientWithdraw: (client, slot) => check(addon.clientWithdraw(client, slot)) === 1,

  nowNs: () => addon.nowNs(),
  clientLend(client, into) {
    check(addon.clientLend(client, into));
  },
  clientLaneWake(client) {
    check(addon.clientLaneWake(client));
  },
  clientProtocolMinor: (client) => check(addon.clientProtocolMinor(client)),
  clientLaneQuiet(client) {
    check(addon.clientLaneQuiet(client));
  },
  clientLaneActivate(client) {
    check(addon.clientLaneActivate(client));
  },
  clientLaneWait: (client, timeoutMs) => check(addon.clientLaneWait(client, timeoutMs)) === 1,
  clientLaneViolation(client, why) {
    check(addon.clientLaneViolation(client, why));
  },
  clientLaneCount(client, report) {
    check(addon.clientLaneCount(client, report));
  },
  clientStats(client, into) {
    check(addon.clientStats(client, into));
  },

  ticketFree(ticket) {
    check(addon.ticketFree(ticket));
  },

  clientFree(client) {
    check(addon.clientFree(client));
  },

  serverServe(icId, dir, spinNs, id, flags) {
    check(addon.serverServe(icId, dir ?? "", spinNs, id, flags));
    return asHandle(words[SCRATCH.BEGUN]!);
  },

  serverPool(server) {
    check(addon.serverPool(server));
    return asHandle(words[SCRATCH.BEGUN]!);
  },

  poolFree(pool) {
    check(addon.poolFree(pool));
  },

  poolTake: (pool, worker, spinNs, waitNs) =>
    check(addon.poolTake(pool, worker, spinNs, waitNs)) === OK,
  poolBury: (pool, worker, status) => check(addon.poolBury(pool, worker, status)),
  poolPoked(pool) {
    check(addon.poolPoked(pool));
  },
  poolInProgress: (pool) => check(addon.poolInProgress(pool)),

  serverOpened(server, conn, status, reason) {
    check(addon.serverOpened(server, conn, status, reason));
  },

  serverStats(server, into) {
    check(addon.serverStats(server, into));
  },

  serverNote(server, workers, quiescing) {
    check(addon.serverNote(server, workers, quiescing));
  },

  commandTake: (command) => check(addon.commandTake(command)) === 1,

  commandFinish(command, status, length, output) {
    check(addon.commandFinish(command, status, length, output));
  },

  commandSegment: (command) => mapping(addon.commandSegment(command)),
  serverLaneLayout(server, conn, into) {
    check(addon.serverLaneLayout(server, conn, into));
  },
  serverLaneSegment: (server, conn) => mapping(addon.serverLaneSegment(server, conn)),
  serverLaneWake(server, conn) {
    check(addon.serverLaneWake(server, conn));
  },
  serverLaneViolation(server, conn, why) {
    check(addon.serverLaneViolation(server, conn, why));
  },
  serverLaneHold(server, conn) {
    check(addon.serverLaneHold(server, conn));
  },
  serverLaneRelease(server, conn) {
    check(addon.serverLaneRelease(server, conn));
  },
  serverLaneDrained(server, conn) {
    check(addon.serverLaneDrained(server, conn));
  },
  serverLaneCount(server, report) {
    check(addon.serverLaneCount(server, report));
  },

  commandReadInput(command, into) {
    check(addon.commandReadInput(command, into));
  },

  serverFree(server) {
    check(addon.serverFree(server));
  },

  queueServe(queueId, dir) {
    check(addon.queueServe(queueId, dir));
    return asHandle(words[SCRATCH.BEGUN]!);
  },

  queueStats(queue, into) {
    check(addon.queueStats(queue, into));
  },

  queueFree(queue) {
    check(addon.queueFree(queue));
  },

  hubClaim: () => check(addon.hubClaim()),
  hubBells: () => addon.hubBells(),

  hubUnclaim: () => addon.hubUnclaim(),
  hubNewId: () => addon.hubNewId(),
  hubNext: () => check(addon.hubNext()) === OK,
  event: eventView(words.subarray(0, SCRATCH.BEGUN)),
  hubDrain: (budgetNs) => addon.hubDrain(budgetNs),
  hubSpent: () => addon.hubSpent() === 1,
  hubIdle: (waitNs) => addon.hubIdle(waitNs),

  installDoorbell(ring) {
    addon.setDoorbell(ring);
    return "napi";
  },

  hubWait: () =>
    Promise.reject(
      new IpcError(
        Status.INVALID_ARGUMENT,
        "Node's doorbell is Node-API's: there is no fallback wait",
      ),
    ),

  hubInterrupt: () => {},

  startWorker(): WorkerPort {
    // Beside this module: `worker.js` once built with tsc (dist/node/), `worker.cjs` in the npm
    // package's bundle (lib/node/).
    const file = import.meta.url.endsWith(".cjs") ? "./worker.cjs" : "./worker.js";
    const worker = new Worker(new URL(file, import.meta.url));
    return {
      post: (message) => worker.postMessage(message),
      onMessage: (receive) => {
        worker.on("message", receive);
      },
      onError: (receive) => {
        worker.on("error", (e) => receive(e instanceof Error ? e.message : String(e)));
        worker.on("messageerror", () => receive("a message could not be deserialized"));
      },
      onExit: (receive) => {
        worker.on("exit", () => receive());
      },
      terminate: () => void worker.terminate(),
    };
  },
};

bindNative(nodeNative);
