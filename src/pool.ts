/**
 * A server's worker pool (README.md, "A worker pool"): workers — Web Workers in Deno, `worker_threads` in
 * Node — that each load the handler module and run the server's pool commands. The workers take
 * their commands from the core themselves (`native.poolTake`, in `worker.ts`): a worker with
 * nothing to run waits in a synchronous call of its own thread, and the waiting worker polls
 * the server's connections itself, so that a command goes from its client to a worker with no
 * other thread between them (bindings/src/pool.rs). Nothing crosses this thread per command.
 *
 * This thread gives the workers what they cannot take from the core — each connection's
 * context (a structured clone of what `open` returned, posted to every worker before the
 * client is welcome) and its end — and it stands in for them when none waits: a wake then
 * comes to its hub, and a command queued while every worker is in its event loop comes as a
 * {@linkcode POOL_NOTE}`.POKE`, passed on as a message.
 *
 * A command a worker took is that worker's to answer, and no one else's, while the worker
 * lives: command handles are reused (an old one can name a newer command, even another
 * server's), so answering it here too could make the worker's late answer land on a stranger.
 * Only a worker that is gone — it died, exited, or was terminated — has its commands answered
 * here (`native.poolBury`: the core knows which it held). (`terminate()` does not interrupt a
 * call into the core that is under way, so one answer of the worker may still race ours; the
 * core's table then refuses the second, and a handle reused in that instant would need 255
 * reuses of it first.)
 *
 * @module
 */

import type { ConnInfo } from "./exec.ts";
import { type Handle, native, type WorkerPort } from "./native.ts";
import { Status } from "./status.ts";

/** What the server tells a worker. */
export type ToWorker =
  /** Load `module`. */
  | { kind: "load"; module: string; expose: boolean }
  /** Take commands from the core's pool `pool`, as worker `worker` (`native.poolTake`). */
  | { kind: "serve"; pool: number; worker: number }
  /** A connection's context; `unusable` when it could not be cloned (its commands then fail). */
  | { kind: "open"; conn: ConnInfo; context: unknown; unusable: boolean }
  /** Commands wait in the core for a worker: take them, if there is room. */
  | { kind: "poke" }
  | { kind: "close"; conn: number }
  | { kind: "stop" };

/** What a worker tells the server. */
export type FromWorker =
  | { kind: "ready" }
  | { kind: "failed"; message: string }
  /** Its first command is answered (the module works: see `LOST_IN_A_ROW`). */
  | { kind: "served" }
  /** An `exec` on connection `conn` failed: `error` says why. */
  | { kind: "error"; conn: ConnInfo; code: number; error: WorkerError }
  /** It answered every command it held and gave its segments back. */
  | { kind: "stopped" }
  /** It is ending by itself (it called `close()`). */
  | { kind: "exiting" };

/** A worker's `exec` failure, as it crosses to the server (an error may not be cloneable). */
export interface WorkerError {
  name: string;
  message: string;
  stack: string | undefined;
}

/** The failure a worker reported, as an `Error` again. */
export function revived(e: WorkerError): Error {
  const error = new Error(e.message);
  error.name = e.name;
  if (e.stack !== undefined) error.stack = e.stack;
  return error;
}

/** The server, as the pool sees it. */
export interface PoolHost {
  /** The open connections: their info and the context each `open` returned. */
  connections(): Iterable<{ info: ConnInfo; context: unknown }>;
  /** An `exec` on connection `conn` failed in a worker (`code`: its operation code). */
  failed(conn: ConnInfo, code: number, error: Error): void;
}

/** How long a stopping worker may take to finish what it runs and give its segments back. */
const STOP_MS = 2_000;

/**
 * Workers that may end by themselves in a row, with none of them answering a command, before
 * the pool stops replacing them (a module that kills every worker would otherwise be loaded
 * again and again); the pool's commands then fail `HANDLER_FAILED`.
 */
const LOST_IN_A_ROW = 3;

/** How long a worker may take to load the handler module, in ms. */
export const POOL_LOAD_MS = 30_000;

/** The worker number this thread takes with when no worker is left (see `#orphaned`). */
const NO_WORKER = 0;

interface Member {
  port: WorkerPort;
  /** Its number for the core (`native.poolTake`): never reused. */
  id: number;
  /** Connections whose context it has. */
  knows: Set<number>;
  /** Set while it stops: its "stopped" ends the wait. */
  stopped?: (() => void) | undefined;
  /** Terminated, or known dead: its commands were answered here. */
  gone: boolean;
}

/** A pool of workers running one handler module. */
export class Pool {
  readonly size: number;
  readonly #module: string;
  /** Whether workers write a failed `exec`'s reason for its client (`exposeErrors`). */
  readonly #expose: boolean;
  readonly #host: PoolHost;
  readonly #members: Member[] = [];
  /** Workers still loading the module: stopped by `close`. */
  readonly #loading = new Set<() => void>();
  /** The core's pool, once the server serves (`serveFrom`). */
  #pool: Handle | undefined;
  #nextId = NO_WORKER + 1;
  #closed = false;
  /** Workers that ended by themselves since one last answered a command: see `#lost`. */
  #lostInARow = 0;
  /** Set once no worker is left nor replaced: this thread fails the pool's commands. */
  #orphaned = false;

  private constructor(size: number, module: string, expose: boolean, host: PoolHost) {
    this.size = size;
    this.#module = module;
    this.#expose = expose;
    this.#host = host;
  }

  /**
   * Starts `size` workers on `module` and resolves once each loaded it; rejects, naming the
   * module and why, if one could not (within `timeoutMs`), with every worker stopped.
   */
  static async start(
    size: number,
    module: string,
    expose: boolean,
    host: PoolHost,
    timeoutMs = POOL_LOAD_MS,
  ): Promise<Pool> {
    const pool = new Pool(size, module, expose, host);
    try {
      await Promise.all(Array.from({ length: size }, () => pool.#spawn(timeoutMs)));
    } catch (e) {
      await pool.close();
      throw e;
    }
    return pool;
  }

  /** Starts one worker and adds it once it loaded the module. */
  #spawn(timeoutMs: number): Promise<void> {
    const port = native.startWorker();
    const member: Member = { port, id: this.#nextId++, knows: new Set(), gone: false };
    return new Promise<void>((resolve, reject) => {
      let loaded = false;
      const fail = (why: string) => {
        clearTimeout(timer);
        this.#loading.delete(stop);
        member.gone = true;
        port.terminate();
        reject(new Error(`a pool worker cannot run ${this.#module}: ${why}`));
      };
      const stop = () => fail("the pool was closed while it loaded");
      this.#loading.add(stop);
      const timer = setTimeout(() => fail(`it did not load within ${timeoutMs} ms`), timeoutMs);
      const ended = (why: string) => {
        if (loaded) this.#lost(member, why);
        else if (!member.gone) fail(why);
      };
      port.onMessage((m) => {
        const message = m as FromWorker;
        // Terminated already (its load failed, or it was buried): what it still says is moot.
        if (member.gone) return;
        switch (message.kind) {
          case "served":
            this.#lostInARow = 0;
            return;
          case "error":
            return this.#host.failed(message.conn, message.code, revived(message.error));
          case "stopped":
            return member.stopped?.();
          case "exiting":
            return ended("it called close()");
          case "failed":
            return fail(message.message);
          case "ready":
            if (this.#closed) return fail("the pool was closed while it loaded");
            clearTimeout(timer);
            this.#loading.delete(stop);
            loaded = true;
            this.#members.push(member);
            // A worker that replaces one: the connections open so far, before any command.
            for (const c of this.#host.connections()) this.#open(member, c.info, c.context);
            if (this.#pool !== undefined) this.#serve(member, this.#pool);
            resolve();
        }
      });
      port.onError((error) => ended(`it failed: ${error}`));
      port.onExit(() => ended("it exited"));
      this.#post(member, { kind: "load", module: this.#module, expose: this.#expose });
    });
  }

  /** From now on the workers take their commands from the core's pool `pool`. */
  serveFrom(pool: Handle): void {
    this.#pool = pool;
    for (const m of this.#members) this.#serve(m, pool);
  }

  /** Tells `member` where its commands come from. */
  #serve(member: Member, pool: Handle): void {
    this.#post(member, { kind: "serve", pool: pool as unknown as number, worker: member.id });
  }

  /**
   * Gives every worker a connection's context, before its client is welcome (so before its
   * first command can come): a context that cannot be cloned fails the connection's commands
   * in the workers.
   */
  opened(info: ConnInfo, context: unknown): void {
    for (const m of this.#members) this.#open(m, info, context);
  }

  #open(member: Member, info: ConnInfo, context: unknown): void {
    try {
      this.#post(member, { kind: "open", conn: info, context, unusable: false });
    } catch {
      this.#post(member, { kind: "open", conn: info, context: undefined, unusable: true });
    }
    member.knows.add(info.id);
  }

  /** Tells the workers that knew a connection that it ended. */
  connectionClosed(conn: number): void {
    for (const m of this.#members) {
      if (m.knows.delete(conn)) this.#post(m, { kind: "close", conn });
    }
  }

  /**
   * The core says commands wait and no worker waits for them: the workers in their event loop
   * (an async `exec` under way, or idle) are poked to take them.
   */
  poked(): void {
    const pool = this.#pool;
    if (pool === undefined) return;
    // Before the messages: a command queued after the workers looked asks for another poke.
    native.poolPoked(pool);
    if (this.#orphaned) this.#failQueued(pool);
    else for (const m of this.#members) this.#post(m, { kind: "poke" });
  }

  /** The commands the core holds for the workers. */
  inProgress(): number {
    return this.#pool === undefined ? 0 : native.poolInProgress(this.#pool);
  }

  #post(member: Member, message: ToWorker): void {
    member.port.post(message);
  }

  /**
   * A worker ended by itself (an error its module did not catch, `close()`, an exit): it is
   * terminated, its commands are answered `HANDLER_FAILED` here, and another one starts.
   */
  #lost(member: Member, why: string): void {
    if (member.gone) return;
    // Stopping (the pool closes): its stop need not wait out its bound.
    if (member.stopped !== undefined) return member.stopped();
    const at = this.#members.indexOf(member);
    if (at < 0) return;
    this.#members.splice(at, 1);
    this.#bury(member, Status.HANDLER_FAILED);
    if (this.#closed) return;
    if (++this.#lostInARow > LOST_IN_A_ROW) {
      console.error(
        `shmcall: a pool worker running ${this.#module} ended (${why}); not replaced: ${LOST_IN_A_ROW} ended before it with none answering a command`,
      );
      return this.#orphan();
    }
    console.error(
      `shmcall: a pool worker running ${this.#module} ended (${why}); starting another`,
    );
    this.#spawn(POOL_LOAD_MS).catch((e) => {
      if (this.#closed) return;
      console.error(`shmcall: ${e instanceof Error ? e.message : e}`);
      this.#orphan();
    });
  }

  /**
   * With no worker left nor on its way, this thread fails the pool's commands
   * `HANDLER_FAILED`: those queued now, and — as the only taker, which the core pokes — every
   * later one.
   */
  #orphan(): void {
    if (this.#members.length > 0 || this.#loading.size > 0 || this.#pool === undefined) return;
    this.#orphaned = true;
    this.#failQueued(this.#pool);
  }

  /** Takes and fails every command queued for the workers (then waits, as a worker, for a poke). */
  #failQueued(pool: Handle): void {
    try {
      while (native.poolTake(pool, NO_WORKER, 0, 0)) {
        const command = native.event.handle;
        native.commandFinish(command, Status.HANDLER_FAILED, 0, null);
      }
    } catch {
      // The server closed.
    }
  }

  /** Terminates a worker and answers, with `status`, the commands it still held. */
  #bury(member: Member, status: number): void {
    member.gone = true;
    member.port.terminate();
    if (this.#pool !== undefined) native.poolBury(this.#pool, member.id, status);
  }

  /**
   * Stops the pool, once its server closed (the core answered `CLOSED` what was queued): each
   * worker answers the commands it holds — those it has begun when their `exec` ends (the
   * answers reach no one once the server closed), the others `CLOSED` without running them —
   * gives its segment mappings back, and is terminated; after {@linkcode STOP_MS} it is
   * terminated anyway, and what it still held is answered `CLOSED` here. Resolves once every
   * worker is gone; the core's pool is then freed.
   */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    for (const stop of [...this.#loading]) stop();
    return Promise.all(this.#members.splice(0).map((m) => this.#stop(m))).then(() => {
      if (this.#pool !== undefined) native.poolFree(this.#pool);
      this.#pool = undefined;
    });
  }

  #stop(m: Member): Promise<void> {
    return new Promise<void>((resolve) => {
      const end = () => {
        clearTimeout(timer);
        m.stopped = undefined;
        this.#bury(m, Status.CLOSED);
        resolve();
      };
      const timer = setTimeout(end, STOP_MS);
      m.stopped = end;
      try {
        this.#post(m, { kind: "stop" });
      } catch {
        end();
      }
    });
  }
}
