/**
 * The core's primitives ({@linkcode Native}) over Deno's FFI: out-parameters, error sentences,
 * hub events and views of shared memory. Importing this module binds them for the client, the
 * server and the hub (`mod.ts` does); nothing here is exported to users.
 *
 * @module
 */

import process from "node:process";
import { library, libraryPath } from "./load.ts";
import { IpcError } from "../src/errors.ts";
import { Status } from "../src/status.ts";
import {
  bindNative,
  type Doorbell,
  EVENT_WORD,
  eventView,
  type Handle,
  Mapping,
  type Native,
  OK,
  type WorkerPort,
} from "../src/native.ts";

/** A spin budget of `u64::MAX`: the core's default. */
const DEFAULT_SPIN = 0xffff_ffff_ffff_ffffn;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// Out-parameter scratch space, reused: JavaScript calls into the library one call at a time.
const out64 = [new BigUint64Array(1), new BigUint64Array(1)] as const;
const outI64 = new BigInt64Array(1);
const outI32 = new Int32Array(1);
const outU32 = new Uint32Array(1);
const begunAt = new Uint32Array(3);
const sentence = new Uint8Array(1024);
const eventWords = new Uint32Array(EVENT_WORD.WORDS);

/** The sentence of the last failure of a C call on this thread. */
function lastError(): string {
  const n = library().shmcall_last_error(sentence, BigInt(sentence.length));
  return decoder.decode(sentence.subarray(0, Math.min(n, sentence.length)));
}

/** Throws the {@linkcode IpcError} of a failed C call; returns OK or EMPTY. */
function check(rc: number): number {
  if (rc < 0) throw new IpcError(rc, lastError());
  return rc;
}

/** The core's name for library status `code`, or `undefined` when it is none. */
export function coreStatusName(code: number): string | undefined {
  const buf = new Uint8Array(64);
  const n = library().shmcall_status_name(code, buf, BigInt(buf.length));
  return n < 0 ? undefined : decoder.decode(buf.subarray(0, n));
}

function pointer(value: bigint): Deno.PointerObject {
  const p = Deno.UnsafePointer.create(value);
  if (p === null) throw new Error("the library returned a null pointer");
  return p;
}

const asHandle = (n: number) => n as Handle;
const spin = (ns: number) => ns < 0 ? DEFAULT_SPIN : BigInt(ns);

// A segment is released when its view is (Mapping.release), or else when the view becomes
// unreachable: every area handed to user code is a subarray of one view per segment, so they
// share its ArrayBuffer.
const segments = new FinalizationRegistry<number>((handle) => {
  library().shmcall_segment_release(handle);
});

/** The segment the last `*_segment` call held (base and length in `out64`, its handle in `outU32`), viewed and released with the view. */
function mapping(): Mapping {
  const handle = outU32[0]!;
  const length = Number(out64[1][0]!);
  const view = new Uint8Array(
    Deno.UnsafePointerView.getArrayBuffer(pointer(out64[0][0]!), length),
  );
  const token = {};
  segments.register(view.buffer, handle, token);
  return new Mapping(view, (buffer) => {
    if (!segments.unregister(token)) return;
    // A buffer user code transferred still points into the segment, and nothing tells when
    // it dies: the segment stays mapped for the life of the process rather than dangle.
    if (buffer === undefined) return;
    buffer.transfer(0);
    library().shmcall_segment_release(handle);
  });
}

function text(value: string): [Uint8Array, bigint] {
  const b = encoder.encode(value);
  return [b, BigInt(b.length)];
}

let doorbellAddon: { setDoorbell?: (ring: () => void) => void } | undefined;

/**
 * The Node-API doorbell: the core library is loaded a second time, as an addon, with
 * `process.dlopen` (the same `.so`, so the same hub), and rings a threadsafe function only
 * when this thread said it is idle (measured on these machines: ~2 µs, against tens for a
 * `nonblocking` call per event). Where that is unavailable, or `SHMCALL_DOORBELL=wait`, a single interruptible
 * `nonblocking` wait stands in.
 */
function installDoorbell(ring: () => void): Doorbell {
  if (Deno.env.get("SHMCALL_DOORBELL") === "wait") return "wait";
  try {
    if (doorbellAddon === undefined) {
      const addon = { exports: {} as { setDoorbell?: (ring: () => void) => void } };
      process.dlopen(addon, libraryPath());
      doorbellAddon = addon.exports;
    }
    if (doorbellAddon.setDoorbell === undefined) return "wait";
    doorbellAddon.setDoorbell(ring);
    return "napi";
  } catch {
    // No Node-API here: the fallback wait serves.
    return "wait";
  }
}

/** Deno's primitives. */
export const denoNative: Native = {
  lastError,

  socketDir(dir) {
    const [d, dLen] = text(dir ?? "");
    const n = check(library().shmcall_socket_dir(d, dLen, sentence, BigInt(sentence.length)));
    if (n > sentence.length) {
      throw new IpcError(
        Status.INVALID_ARGUMENT,
        `the socket directory is over ${sentence.length} bytes`,
      );
    }
    return decoder.decode(sentence.subarray(0, n));
  },

  protocolVersion(): string {
    const v = library().shmcall_protocol_version();
    return `${v >> 16}.${v & 0xffff}`;
  },

  constant(name) {
    const [n, nLen] = text(name);
    return library().shmcall_constant(n, nLen, outI64) === OK ? Number(outI64[0]!) : undefined;
  },

  clientConnect(icId, dir, spinNs, id, largeOutput = 0) {
    const [ic, icLen] = text(icId);
    const [d, dLen] = text(dir ?? "");
    const rc = check(
      library().shmcall_client_connect(
        ic,
        icLen,
        d,
        dLen,
        spin(spinNs),
        largeOutput,
        BigInt(id),
        outU32,
      ),
    );
    return rc === OK ? asHandle(outU32[0]!) : undefined;
  },

  clientSegment(client) {
    check(library().shmcall_client_segment(client, out64[0], out64[1], outU32));
    return mapping();
  },

  begunAt,

  clientBegin(client, code, inputLength, outputCapacity, mode) {
    check(
      library().shmcall_client_begin_at(
        client,
        code,
        inputLength,
        outputCapacity,
        mode,
        outU32,
        begunAt,
      ),
    );
    return outU32[0]!;
  },

  ticketWriteInput(ticket, input) {
    check(library().shmcall_ticket_write_input(ticket, input, BigInt(input.length)));
  },

  ticketReadOutput(ticket, into) {
    check(library().shmcall_ticket_read_output(ticket, into, BigInt(into.length)));
  },

  clientCall(client, ticket, timeoutMs) {
    check(library().shmcall_client_call(client, ticket, timeoutMs, outI32, outU32));
    return outI32[0]!;
  },

  callLength() {
    return outU32[0]!;
  },

  clientSubmit(client, ticket, token) {
    check(library().shmcall_client_submit(client, ticket, BigInt(token)));
  },

  clientWithdraw(client, slot) {
    return check(library().shmcall_client_withdraw(client, slot)) === 1;
  },

  clientStats(client, into) {
    check(library().shmcall_client_stats(client, into, BigInt(into.length)));
  },

  nowNs() {
    return library().shmcall_now_ns();
  },

  clientLend(client, into) {
    check(library().shmcall_client_lend(client, into, BigInt(into.length)));
  },

  clientLaneWake(client) {
    check(library().shmcall_client_lane_wake(client));
  },

  clientProtocolMinor: (client) => check(library().shmcall_client_protocol_minor(client)),

  clientLaneQuiet(client) {
    check(library().shmcall_client_lane_quiet(client));
  },

  clientLaneActivate(client) {
    check(library().shmcall_client_lane_activate(client));
  },

  clientLaneWait(client, timeoutMs) {
    return check(library().shmcall_client_lane_wait(client, timeoutMs)) === 1;
  },

  clientLaneViolation(client, why) {
    const [w, wLen] = text(why);
    check(library().shmcall_client_lane_violation(client, w, wLen));
  },

  clientLaneCount(client, report) {
    check(library().shmcall_client_lane_count(client, report, BigInt(report.length)));
  },

  ticketFree(ticket) {
    check(library().shmcall_ticket_free(ticket));
  },

  clientFree(client) {
    check(library().shmcall_client_free(client));
  },

  serverServe(icId, dir, spinNs, id, flags) {
    const [ic, icLen] = text(icId);
    const [d, dLen] = text(dir ?? "");
    check(
      library().shmcall_server_serve(
        ic,
        icLen,
        d,
        dLen,
        spin(spinNs),
        BigInt(id),
        flags,
        outU32,
      ),
    );
    return asHandle(outU32[0]!);
  },

  serverOpened(server, conn, status, reason) {
    const [r, rLen] = text(reason);
    check(library().shmcall_server_opened(server, BigInt(conn), status, r, rLen));
  },

  serverStats(server, into) {
    check(library().shmcall_server_stats(server, into, BigInt(into.length)));
  },

  serverNote(server, workers, quiescing) {
    check(library().shmcall_server_note(server, workers, quiescing ? 1 : 0));
  },

  commandTake(command) {
    return check(library().shmcall_command_take(command)) === 1;
  },

  commandFinish(command, status, length, output) {
    const from = output === null ? 0 : output.length;
    check(library().shmcall_command_finish(command, status, length, output, from));
  },

  commandSegment(command) {
    check(library().shmcall_command_segment(command, out64[0], out64[1], outU32));
    if (outU32[0] === 0) {
      throw new IpcError(
        Status.INVALID_ARGUMENT,
        `command ${command} travels the backup path: it has no segment`,
      );
    }
    return mapping();
  },

  commandReadInput(command, into) {
    check(library().shmcall_command_read_input(command, into, BigInt(into.length)));
  },

  serverLaneLayout(server, conn, into) {
    check(library().shmcall_server_lane_layout(server, BigInt(conn), into, BigInt(into.length)));
  },

  serverLaneSegment(server, conn) {
    check(library().shmcall_server_lane_segment(server, BigInt(conn), out64[0], out64[1], outU32));
    return mapping();
  },

  serverLaneWake(server, conn) {
    check(library().shmcall_server_lane_wake(server, BigInt(conn)));
  },

  serverLaneViolation(server, conn, why) {
    const [w, wLen] = text(why);
    check(library().shmcall_server_lane_violation(server, BigInt(conn), w, wLen));
  },

  serverLaneHold(server, conn) {
    check(library().shmcall_server_lane_hold(server, BigInt(conn)));
  },

  serverLaneRelease(server, conn) {
    check(library().shmcall_server_lane_release(server, BigInt(conn)));
  },

  serverLaneDrained(server, conn) {
    check(library().shmcall_server_lane_drained(server, BigInt(conn)));
  },

  serverLaneCount(server, report) {
    check(library().shmcall_server_lane_count(server, report, BigInt(report.length)));
  },

  serverFree(server) {
    check(library().shmcall_server_free(server));
  },

  queueServe(queueId, dir) {
    const [q, qLen] = text(queueId);
    const [d, dLen] = text(dir);
    check(library().shmcall_queue_serve(q, qLen, d, dLen, outU32));
    return asHandle(outU32[0]!);
  },

  queueStats(queue, into) {
    check(library().shmcall_queue_stats(queue, into, BigInt(into.length)));
  },

  queueFree(queue) {
    check(library().shmcall_queue_free(queue));
  },

  hubClaim: () => check(library().shmcall_hub_claim()),
  hubBells: () => library().shmcall_hub_bells(),

  hubUnclaim() {
    library().shmcall_hub_unclaim();
  },

  hubNewId() {
    return Number(library().shmcall_hub_new_id());
  },

  hubNext() {
    return check(library().shmcall_hub_next(eventWords)) === OK;
  },

  serverPool(server) {
    check(library().shmcall_server_pool(server, outU32));
    return outU32[0]! as Handle;
  },

  poolFree(pool) {
    check(library().shmcall_pool_free(pool));
  },

  poolTake(pool, worker, spinNs, waitNs) {
    return check(
      library().shmcall_pool_take(pool, worker, BigInt(spinNs), BigInt(waitNs), eventWords),
    ) === OK;
  },

  poolBury: (pool, worker, status) => check(library().shmcall_pool_bury(pool, worker, status)),
  poolPoked(pool) {
    check(library().shmcall_pool_poked(pool));
  },
  poolInProgress: (pool) => check(library().shmcall_pool_in_progress(pool)),

  event: eventView(eventWords),

  hubDrain(budgetNs) {
    library().shmcall_hub_drain(budgetNs);
  },

  hubSpent() {
    return library().shmcall_hub_spent() === 1;
  },

  hubIdle(waitNs) {
    return library().shmcall_hub_idle(waitNs);
  },

  installDoorbell,

  hubWait(timeoutNs) {
    return library().shmcall_hub_wait(timeoutNs);
  },

  hubInterrupt() {
    library().shmcall_hub_interrupt();
  },

  startWorker(): WorkerPort {
    // Beside this module: `worker.ts` in a clone, `worker.js` in the npm package's bundle.
    const file = import.meta.url.endsWith(".ts") ? "./worker.ts" : "./worker.js";
    const worker = new Worker(new URL(file, import.meta.url).href, { type: "module" });
    return {
      post: (message) => worker.postMessage(message),
      onMessage: (receive) => {
        worker.onmessage = (event) => receive(event.data);
      },
      onError: (receive) => {
        worker.onerror = (event) => {
          // Handled here: the server goes on with a new worker.
          event.preventDefault();
          receive(event.message);
        };
        worker.onmessageerror = () => receive("a message could not be deserialized");
      },
      // A Web Worker's end has no event: the worker posts "exiting" (ffi/worker.ts).
      onExit: () => {},
      terminate: () => worker.terminate(),
    };
  },
};

bindNative(denoNative);
