/**
 * The body of a pool worker (see `pool.ts`), the same in every runtime: it loads the handler
 * module, keeps each connection's context as the server sent it, and takes its commands from
 * the core (`native.poolTake`) — reading their areas and answering them itself, through its own
 * binding of the core. The runtime's worker entry (`ffi/worker.ts`, `node/worker.ts`) binds the
 * core, then calls {@linkcode runWorker}.
 *
 * @module
 */

import {
  type Answerer,
  backupOf,
  commandOf,
  type ConnInfo,
  type Exec,
  failedLength,
  runExec,
} from "./exec.ts";
import { setImmediate } from "node:timers";
import { type Handle, type Mapping, native } from "./native.ts";
import type { FromWorker, ToWorker } from "./pool.ts";
import { Status } from "./status.ts";

/** How a worker talks to its server. */
export interface Parent {
  post(message: FromWorker): void;
  onMessage(receive: (message: ToWorker) => void): void;
}

interface Known {
  info: ConnInfo;
  context: unknown;
  segment: Mapping | undefined;
  /** Its context could not be cloned into this worker: its commands fail. */
  unusable: boolean;
}

/**
 * Commands one worker runs at once (async ones: a synchronous `exec` holds the thread anyway):
 * beyond them, commands wait in the core, for whichever worker is free first.
 */
export const DEPTH = 2;

/**
 * How long a worker with nothing to run polls the server's connections (when it is the one
 * that polls) or waits for a command, in ms, before it sleeps: a command that follows an
 * answer within it costs no wake-up.
 */
const SPIN_MS = 0.05;

/**
 * How long a worker waits in the core for its next command before it hands its thread back to
 * its event loop (the core then has the server's thread poke it with a message), in ms, and how
 * long it serves a steady stream of commands before it gives its event loop a turn. Both hold
 * the event loop, so the handler module's own timers and I/O run late by up to this much.
 */
const SLEEP_MS = 5;

const SPIN_NS = Math.round(SPIN_MS * 1e6);
const SLEEP_NS = Math.round(SLEEP_MS * 1e6);

/** Serves the pool's messages and commands until the worker is stopped. */
export function runWorker(parent: Parent, load: (module: string) => Promise<unknown>): void {
  let exec: Exec<unknown> | undefined;
  const conns = new Map<number, Known>();
  /** The core's pool and this worker's number there, once the server serves. */
  let pool: Handle | undefined;
  let me = 0;
  /** `exec` calls running (async ones included). */
  let running = 0;
  let stopping = false;
  /** Whether {@linkcode serve} runs (an answer inside it must not start another). */
  let serving = false;
  /** Whether a command was answered yet (the pool hears of the first). */
  let answered = false;
  /**
   * When serving must give the event loop a turn ({@linkcode SLEEP_MS} after it began without
   * one), or 0 when it had one since.
   */
  let turnEnds = 0;
  /** Set while serving waits for the event loop's turn it asked for. */
  let yielding = false;
  /** Whether a failed `exec`'s reason goes to its client (the server's `exposeErrors`). */
  let expose = false;
  /** The command taken and not yet run: its connection's "open" is still on its way. */
  let stashed = false;
  /** The command being taken (one object, filled in place from the event). */
  const job = {
    command: 0,
    code: 0,
    conn: 0,
    inSegment: false,
    inputOffset: 0,
    outputOffset: 0,
    inputLength: 0,
    outputLength: 0,
  };
  /** Gives every segment back (nothing runs that could use a view) and says so. */
  const stop = () => {
    for (const conn of conns.values()) conn.segment?.release();
    conns.clear();
    parent.post({ kind: "stopped" });
  };
  /** An `exec` ended: the last one of a stopping worker stops it; otherwise serving goes on. */
  const ended = () => {
    if (serving) return;
    if (!stopping) serve();
    else if (running === 0 && !stashed) stop();
  };
  const answerer: Answerer<number> = {
    answer(_conn, command, status, length, from) {
      running--;
      try {
        native.commandFinish(command, status, length, from);
      } finally {
        if (!answered) {
          answered = true;
          parent.post({ kind: "served" });
        }
        ended();
      }
    },
    failed(conn, command, status, wanted, code, error, output, from) {
      running--;
      try {
        const length = failedLength(status, wanted, error, output, expose);
        native.commandFinish(command, status, length, from);
      } finally {
        // The server reports it (its `onError` lives there): as plain strings, since an error
        // may not be cloneable.
        const e = error instanceof Error
          ? { name: error.name, message: error.message, stack: error.stack }
          : { name: "Error", message: `thrown: ${String(error)}`, stack: undefined };
        const info = conns.get(conn)?.info ?? { id: conn, pid: 0, uid: 0 };
        parent.post({ kind: "error", conn: info, code, error: e });
        ended();
      }
    },
    async() {},
  };
  /** Answers the command taken, unrun. */
  const refuse = (status: number) => {
    running++;
    answerer.answer(job.conn, job.command, status, 0, null);
  };
  /** Runs the command taken, for connection `conn`. */
  const run = (conn: Known) => {
    if (conn.unusable) return refuse(Status.HANDLER_FAILED);
    running++;
    let cmd;
    try {
      if (job.inSegment && (conn.segment === undefined || conn.segment.detached)) {
        // First use, or a handler detached the last view (Mapping.detached).
        conn.segment?.release();
        conn.segment = native.commandSegment(job.command);
      }
      cmd = exec && commandOf(job.command, job.code, job, conn.segment);
    } catch {
      cmd = undefined;
    }
    if (cmd === undefined || exec === undefined) {
      answerer.answer(job.conn, job.command, Status.HANDLER_FAILED, 0, null);
      return;
    }
    runExec(exec, cmd, conn.info, conn.context, job.command, backupOf(), answerer, job.conn);
  };
  /** Takes the next command from the core into `job`: false when none came. */
  const take = (p: Handle): boolean => {
    // With an async `exec` under way, only a look: its continuation needs the event loop, and
    // the core pokes this worker when commands wait.
    const got = running > 0
      ? native.poolTake(p, me, 0, 0)
      : native.poolTake(p, me, SPIN_NS, SLEEP_NS);
    if (!got) return false;
    const e = native.event;
    job.command = e.handle;
    job.code = e.code >>> 0;
    job.conn = e.token;
    job.inSegment = e.inSegment;
    job.inputOffset = e.inputOffset;
    job.outputOffset = e.outputOffset;
    job.inputLength = e.inputLength;
    job.outputLength = e.outputLength;
    return true;
  };
  /**
   * Takes commands from the core and runs them, while there is room ({@linkcode DEPTH}); with
   * none running, waits in the core for the next (see {@linkcode SLEEP_MS}), then hands the
   * thread back to the event loop. Returns to the event loop to receive a connection's "open"
   * that a command came before, while an async `exec` runs, and once a turn is long enough.
   */
  const serve = () => {
    const p = pool;
    if (p === undefined || exec === undefined || stopping || yielding || running >= DEPTH) {
      return;
    }
    serving = true;
    if (turnEnds === 0) turnEnds = performance.now() + SLEEP_MS;
    try {
      for (;;) {
        if (performance.now() > turnEnds) {
          // A steady stream of commands: the event loop gets a turn — the module's own timers
          // and I/O — then this goes on.
          yieldTurn();
          return;
        }
        if (!stashed) {
          let got: boolean;
          try {
            got = take(p);
          } catch {
            return; // the server closed: the pool's "stop" comes next
          }
          if (!got) {
            // Back to the event loop (or to the microtasks of an async `exec`: the turn goes
            // on); the core pokes this worker when commands wait.
            return;
          }
          // Taken here, just before it runs: until now its client could still withdraw it.
          if (!native.commandTake(job.command)) continue;
        }
        const conn = conns.get(job.conn);
        if (conn === undefined) {
          // Its "open" is on its way (posted before the client was welcome): the event loop
          // delivers it, then this goes on.
          stashed = true;
          yieldTurn();
          return;
        }
        stashed = false;
        run(conn);
        if (running >= DEPTH) return;
      }
    } finally {
      serving = false;
    }
  };
  const yieldTurn = () => {
    yielding = true;
    // Not setTimeout: nested ones are held back 4 ms (the HTML timer clamp).
    setImmediate(afterTurn);
  };
  /** The event loop had its turn: serving goes on with a budget of its own. */
  const afterTurn = () => {
    yielding = false;
    turnEnds = 0;
    if (stopping && stashed) {
      stashed = false;
      refuse(Status.CLOSED);
      return;
    }
    serve();
  };
  parent.onMessage((m) => {
    switch (m.kind) {
      case "load":
        expose = m.expose;
        load(m.module).then(
          (mod) => {
            const f = (mod as { exec?: unknown } | undefined)?.exec;
            if (typeof f !== "function") {
              parent.post({
                kind: "failed",
                message: `it exports no function named exec (found ${typeof f})`,
              });
              return;
            }
            exec = f as Exec<unknown>;
            parent.post({ kind: "ready" });
            if (!serving) serve();
          },
          (e) => parent.post({ kind: "failed", message: e instanceof Error ? e.message : `${e}` }),
        );
        return;
      case "serve":
        pool = m.pool as unknown as Handle;
        me = m.worker;
        break;
      case "open":
        conns.set(m.conn.id, {
          info: m.conn,
          context: m.context,
          segment: undefined,
          unusable: m.unusable,
        });
        break;
      case "close":
        // Sent once the connection's commands drained: no view of its segment is in use.
        conns.get(m.conn)?.segment?.release();
        conns.delete(m.conn);
        return;
      case "stop":
        stopping = true;
        if (stashed && !yielding) {
          // A command that waited for its connection's "open": it does not run.
          stashed = false;
          refuse(Status.CLOSED);
          return;
        }
        if (running === 0 && !stashed) stop();
        return;
      case "poke":
        break;
    }
    // A message is a task of the event loop: the loop had its turn.
    turnEnds = 0;
    if (!serving && !yielding) serve();
  });
}
