/**
 * The body of a pool worker (see `pool.ts`), the same in every runtime: it loads the handler
 * module, keeps each connection's context as the server sent it, and runs the commands it finds
 * in its mailbox (`mailbox.ts`) — reading their areas and answering them itself, through its own
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
import { LOOP, Mailbox, SPIN } from "./mailbox.ts";
import { type Mapping, native } from "./native.ts";
import type { FromWorker, Job, ToWorker } from "./pool.ts";
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
}

/**
 * How long a worker looks at its mailbox for the next job after its last one, in ms, before it
 * sleeps on it: a command that follows an answer within it costs no wake-up.
 */
const SPIN_MS = 0.05;

/**
 * How long a worker sleeps on its mailbox (in `Atomics.wait`: a futex) before it hands its
 * thread back to its event loop, in ms, and how long it serves a steady stream of jobs before
 * it gives its event loop a turn. Both hold the event loop, so the handler module's own timers
 * and I/O run late by up to this much; a job after the sleep costs a message.
 */
const SLEEP_MS = 5;

/** Serves the pool's messages and jobs until the worker is stopped. */
export function runWorker(parent: Parent, load: (module: string) => Promise<unknown>): void {
  let exec: Exec<unknown> | undefined;
  const conns = new Map<number, Known>();
  /** Where the jobs come from (`mailbox.ts`), once the module is loaded. */
  let box: Mailbox | undefined;
  /** Messages with state received (the server counts them in the mailbox). */
  let received = 0;
  /** `exec` calls running (async ones included). */
  let running = 0;
  let stopping = false;
  /** Whether {@linkcode serve} runs (an answer inside it must not start another). */
  let serving = false;
  /**
   * When serving must give the event loop a turn ({@linkcode SLEEP_MS} after it began without
   * one), or 0 when it had one since.
   */
  let turnEnds = 0;
  /** Set while serving waits for the event loop's turn it asked for. */
  let yielding = false;
  /** Whether a failed `exec`'s reason goes to its client (the server's `exposeErrors`). */
  let expose = false;
  /** The job being taken (one object, filled in place). */
  const job: Job = {
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
  /**
   * An `exec` ended: once stopping, the last one stops the worker; otherwise the mailbox is
   * served again (unless this ran inside that loop, which goes on by itself).
   */
  const ended = () => {
    if (serving) return;
    if (!stopping) serve();
    else if (running === 0) stop();
  };
  /** Answers job `id` (its command's handle is this worker's alone until it is done). */
  const answerer: Answerer<number> = {
    answer(id, command, status, length, from) {
      running--;
      try {
        native.commandFinish(command, status, length, from);
      } finally {
        if (box!.finish(id)) parent.post({ kind: "reap" });
        ended();
      }
    },
    failed(id, command, status, wanted, _code, error, output, from) {
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
        parent.post({ kind: "done", id, error: e });
        ended();
      }
    },
    async() {},
  };
  /** Runs the job just taken, as job `id`. */
  const run = (id: number) => {
    running++;
    if (box!.stopped) {
      // The pool stopped while this waited in the mailbox: it does not run.
      answerer.answer(id, job.command, Status.CLOSED, 0, null);
      return;
    }
    const conn = conns.get(job.conn);
    let cmd;
    try {
      if (conn !== undefined && job.inSegment) {
        if (conn.segment === undefined || conn.segment.detached) {
          // First use, or a handler detached the last view (Mapping.detached).
          conn.segment?.release();
          conn.segment = native.commandSegment(job.command);
        }
      }
      cmd = conn && exec && commandOf(job.command, job.code, job, conn.segment);
    } catch {
      cmd = undefined;
    }
    if (cmd === undefined || conn === undefined || exec === undefined) {
      answerer.answer(id, job.command, Status.HANDLER_FAILED, 0, null);
      return;
    }
    runExec(exec, cmd, conn.info, conn.context, job.command, backupOf(), answerer, id);
  };
  /**
   * Takes the jobs in the mailbox and runs them; with none left and none running, looks for
   * the next one for {@linkcode SPIN_MS}, then sleeps on the mailbox for {@linkcode SLEEP_MS},
   * then hands the thread back to the event loop (the server then pokes it with a message).
   * Returns at once to receive a message the server posted (its "open" comes before the
   * connection's first job), and while an async `exec` runs (its continuation needs the loop).
   */
  const serve = () => {
    const b = box;
    if (b === undefined || exec === undefined || stopping || yielding) return;
    serving = true;
    if (turnEnds === 0) turnEnds = performance.now() + SLEEP_MS;
    try {
      for (;;) {
        b.state = SPIN;
        if (performance.now() > turnEnds) {
          // A steady stream of commands (each async one comes back here from a microtask):
          // the event loop gets a turn — the module's own timers and I/O — then this goes on.
          b.state = LOOP;
          yielding = true;
          // Not setTimeout: nested ones are held back 4 ms (the HTML timer clamp).
          setImmediate(afterTurn);
          return;
        }
        if (!next(b)) {
          // Back to the event loop; a job published before this store was seen by the look
          // that follows it, or its server saw the state and pokes.
          b.state = LOOP;
          if (!ready(b)) return;
          continue;
        }
        run(b.take(job));
      }
    } finally {
      serving = false;
    }
  };
  /** The event loop had its turn: serving goes on with a budget of its own. */
  const afterTurn = () => {
    yielding = false;
    turnEnds = 0;
    serve();
  };
  /** Whether a job may be taken now. */
  const ready = (b: Mailbox) => b.hasJob && b.postedCount === received;
  /** Waits, while nothing runs, until a job may be taken: false to return to the loop. */
  const next = (b: Mailbox) => {
    if (ready(b)) return true;
    if (running > 0 || b.postedCount !== received) return false;
    let deadline = 0;
    for (let turns = 1;; turns++) {
      if (ready(b)) return true;
      if (b.postedCount !== received || b.stopped) return false;
      // The clock once every few turns: a reading costs as much as many looks.
      if ((turns & 31) !== 0) continue;
      const now = performance.now();
      if (deadline === 0) deadline = now + SPIN_MS;
      else if (now > deadline) {
        if (!b.sleep(SLEEP_MS, received)) {
          // Nothing for the whole sleep: the event loop is free again until the next job.
          turnEnds = 0;
          return ready(b);
        }
        deadline = 0;
      }
    }
  };
  parent.onMessage((m) => {
    if (m.kind !== "poke") received++;
    switch (m.kind) {
      case "load":
        box = new Mailbox(m.box);
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
            serve();
          },
          (e) => parent.post({ kind: "failed", message: e instanceof Error ? e.message : `${e}` }),
        );
        return;
      case "open":
        conns.set(m.conn.id, { info: m.conn, context: m.context, segment: undefined });
        break;
      case "close":
        // Sent once the connection's commands drained: no view of its segment is in use.
        conns.get(m.conn)?.segment?.release();
        conns.delete(m.conn);
        break;
      case "stop":
        stopping = true;
        // What waits in the mailbox is answered CLOSED without running (`run`).
        serving = true;
        try {
          while (box !== undefined && box.hasJob) run(box.take(job));
        } finally {
          serving = false;
        }
        if (running === 0) stop();
        return;
      case "poke":
        break;
    }
    if (!serving) serve();
  });
}
