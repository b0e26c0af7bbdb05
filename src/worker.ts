/**
 * The body of a pool worker (see `pool.ts`), the same in every runtime: it loads the handler
 * module, keeps each connection's context as the server sent it, and runs the commands it is
 * handed — reading their areas and answering them itself, through its own binding of the core.
 * The runtime's worker entry (`ffi/worker.ts`, `node/worker.ts`) binds the core, then calls
 * {@linkcode runWorker}.
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
import { type Mapping, native } from "./native.ts";
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
}

/** Serves the pool's messages until the worker is stopped. */
export function runWorker(parent: Parent, load: (module: string) => Promise<unknown>): void {
  let exec: Exec<unknown> | undefined;
  const conns = new Map<number, Known>();
  /** 1 once the pool stops: commands not begun are then answered CLOSED without running. */
  let stopFlag = new Int32Array(new SharedArrayBuffer(4));
  /** `exec` calls running (async ones included). */
  let running = 0;
  let stopping = false;
  /** Whether a failed `exec`'s reason goes to its client (the server's `exposeErrors`). */
  let expose = false;
  /** Gives every segment back (nothing runs that could use a view) and says so. */
  const stop = () => {
    for (const conn of conns.values()) conn.segment?.release();
    conns.clear();
    parent.post({ kind: "stopped" });
  };
  /** Answers job `id` (its command's handle is this worker's alone until "done"). */
  const answerer: Answerer<number> = {
    answer(id, command, status, length, from) {
      running--;
      try {
        native.commandFinish(command, status, length, from);
      } finally {
        parent.post({ kind: "done", id });
        if (stopping && running === 0) stop();
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
        if (stopping && running === 0) stop();
      }
    },
    async() {},
  };
  parent.onMessage((m) => {
    switch (m.kind) {
      case "load":
        stopFlag = new Int32Array(m.stop);
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
          },
          (e) => parent.post({ kind: "failed", message: e instanceof Error ? e.message : `${e}` }),
        );
        return;
      case "open":
        conns.set(m.conn.id, { info: m.conn, context: m.context, segment: undefined });
        return;
      case "close":
        // Sent once the connection's commands drained: no view of its segment is in use.
        conns.get(m.conn)?.segment?.release();
        conns.delete(m.conn);
        return;
      case "stop":
        stopping = true;
        if (running === 0) stop();
        return;
      case "exec": {
        const { id, job } = m;
        running++;
        if (Atomics.load(stopFlag, 0) === 1) {
          // The pool stopped while this waited here: it does not run.
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
        return;
      }
    }
  });
}
