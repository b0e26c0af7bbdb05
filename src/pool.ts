/**
 * A server's worker pool (README.md, "A worker pool"): workers — Web Workers in Deno, `worker_threads` in
 * Node — that each load the handler module and run the commands handed to them. The core's
 * command handles are process-wide, so a worker reads the areas and answers the command
 * itself, through its own binding of the same library; only the handle and where the areas
 * lie cross to it, through the worker's mailbox in shared memory (`mailbox.ts`), and the id of
 * each job it answered comes back the same way.
 *
 * A command handed to a worker is that worker's to answer, and no one else's, while the worker
 * lives: command handles are reused (an old one can name a newer command, even another
 * server's), so answering it here too could make the worker's late answer land on a stranger.
 * Only a worker that is gone — it died, exited, or was terminated — has its commands answered
 * here. (`terminate()` does not interrupt a call into the core that is under way, so one
 * answer of the worker may still race ours; the core's table then refuses the second, and a
 * handle reused in that instant would need 255 reuses of it first.)
 *
 * Each worker has at most {@linkcode DEPTH} commands at once; the rest wait here, not yet
 * taken, so that a client can still withdraw them and an idle worker gets the next one.
 *
 * @module
 */

import type { Areas, ConnInfo } from "./exec.ts";
import { offload } from "./hub.ts";
import { DEPTH, LOOP, Mailbox } from "./mailbox.ts";
import { native, type WorkerPort } from "./native.ts";
import { Status } from "./status.ts";

/** A command on its way to a worker: the hub event's fields a worker needs. */
export interface Job extends Areas {
  command: number;
  code: number;
  conn: number;
}

/** What the server tells a worker. */
export type ToWorker =
  /** Load `module`; its jobs come through the mailbox `box` (`mailbox.ts`). */
  | { kind: "load"; module: string; box: SharedArrayBuffer; expose: boolean }
  | { kind: "open"; conn: ConnInfo; context: unknown }
  /** A job is in the mailbox, and the worker was in its event loop. */
  | { kind: "poke" }
  | { kind: "close"; conn: number }
  | { kind: "stop" };

/** What a worker tells the server. */
export type FromWorker =
  | { kind: "ready" }
  | { kind: "failed"; message: string }
  /** Job `id` is answered, and its `exec` failed: `error` says why. */
  | { kind: "done"; id: number; error: WorkerError }
  /** Jobs answered are in the mailbox's done ring. */
  | { kind: "reap" }
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
  /** The connection's info and the context its `open` returned, while it is open. */
  connection(conn: number): { info: ConnInfo; context: unknown } | undefined;
  /** A job ended: answered, withdrawn, or failed (`error`: why its `exec` failed). Once per job. */
  finished(job: Job, error?: Error): void;
}

/** How long a stopping worker may take to finish what it runs and give its segments back. */
const STOP_MS = 2_000;

/**
 * Workers that may end by themselves in a row, with no command answered meanwhile, before the
 * pool stops replacing them (a module that kills every worker would otherwise be loaded again
 * and again); the pool's commands then fail `HANDLER_FAILED`.
 */
const LOST_IN_A_ROW = 3;

/** How long a worker may take to load the handler module, in ms. */
export const POOL_LOAD_MS = 30_000;

interface Member {
  port: WorkerPort;
  /** Jobs handed to it and not yet done, by the pool's id. */
  busy: Map<number, Job>;
  /** Connections whose context it has. */
  knows: Set<number>;
  /** Its jobs, and the ids of those it answered (`mailbox.ts`). */
  box: Mailbox;
  /** Set while it stops: its "stopped" ends the wait. */
  stopped?: (() => void) | undefined;
  /** Terminated, or known dead: its jobs were answered here. */
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
  readonly #queue: Job[] = [];
  #head = 0;
  /** Whether jobs wait in the queue for a worker (told to the hub: see `offload`). */
  #waiting = false;
  #nextId = 1;
  #closed = false;
  /** Workers that ended by themselves since a command was last answered: see `#lost`. */
  #lostInARow = 0;

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
    const member: Member = {
      port,
      busy: new Map(),
      knows: new Set(),
      box: new Mailbox(),
      gone: false,
    };
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
        // Terminated already (its load failed or timed out): what it still says is moot.
        if (member.gone && message.kind !== "done") return;
        switch (message.kind) {
          case "done":
            return this.#done(member, message.id, message.error);
          case "reap":
            member.box.reaped();
            this.#reap(member);
            return this.#pump();
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
            this.#pump();
            resolve();
        }
      });
      port.onError((error) => ended(`it failed: ${error}`));
      port.onExit(() => ended("it exited"));
      this.#post(member, {
        kind: "load",
        module: this.#module,
        box: member.box.buffer,
        expose: this.#expose,
      });
    });
  }

  /** Hands a command to a worker, or queues it until one has room. */
  submit(job: Job): void {
    this.#queue.push(job);
    // What the workers finished since: their room, without waiting for their "reap".
    for (const m of this.#members) this.#reap(m);
    this.#pump();
  }

  /** Tells the workers that knew a connection that it ended. */
  connectionClosed(conn: number): void {
    for (const m of this.#members) {
      if (m.knows.delete(conn)) this.#post(m, { kind: "close", conn });
    }
  }

  /** Posts a message with state to `member` (counted in its mailbox: see `mailbox.ts`). */
  #post(member: Member, message: ToWorker): void {
    member.port.post(message);
    member.box.posted();
  }

  /** Ends the jobs `member` answered since the last look. */
  #reap(member: Member): void {
    member.box.reap((id) => this.#done(member, id, undefined));
  }

  #pump(): void {
    this.#fill();
    this.#updateWaiting();
  }

  #updateWaiting(): void {
    const waiting = this.#head < this.#queue.length;
    if (waiting !== this.#waiting) {
      // Jobs wait for a worker: the server's thread need not poll for more meanwhile.
      this.#waiting = waiting;
      offload(waiting ? 1 : -1);
    }
  }

  #fill(): void {
    while (this.#head < this.#queue.length) {
      const member = this.#leastBusy();
      if (member === undefined) {
        // No worker left, nor one on its way: nothing will ever run these.
        if (this.#members.length === 0 && this.#loading.size === 0) {
          for (const job of this.#takeQueue()) this.#fail(job, Status.HANDLER_FAILED);
        }
        return;
      }
      const job = this.#queue[this.#head]!;
      this.#queue[this.#head++] = undefined as unknown as Job;
      if (this.#head === this.#queue.length) {
        this.#queue.length = 0;
        this.#head = 0;
      }
      this.#handTo(member, job);
    }
  }

  #takeQueue(): Job[] {
    const jobs = this.#queue.slice(this.#head);
    this.#queue.length = 0;
    this.#head = 0;
    return jobs;
  }

  #leastBusy(): Member | undefined {
    let best: Member | undefined;
    for (const m of this.#members) {
      if (m.busy.size < DEPTH && (best === undefined || m.busy.size < best.busy.size)) best = m;
    }
    return best;
  }

  #handTo(member: Member, job: Job): void {
    // Taken here: until now its client could still withdraw it.
    if (!native.commandTake(job.command)) return this.#host.finished(job);
    if (!member.knows.has(job.conn)) {
      const c = this.#host.connection(job.conn);
      try {
        if (c === undefined) throw new Error("the connection is closed");
        this.#post(member, { kind: "open", conn: c.info, context: c.context });
      } catch {
        // The context cannot be cloned into a worker (a function, say): this command fails.
        return this.#fail(job, Status.HANDLER_FAILED);
      }
      member.knows.add(job.conn);
    }
    const id = this.#nextId++;
    member.busy.set(id, job);
    if (member.box.put(id, job) === LOOP) member.port.post({ kind: "poke" } satisfies ToWorker);
  }

  #done(member: Member, id: number, error: WorkerError | undefined): void {
    const job = member.busy.get(id);
    if (job === undefined || member.gone) return;
    member.busy.delete(id);
    this.#lostInARow = 0;
    this.#host.finished(job, error === undefined ? undefined : revived(error));
    this.#pump();
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
        `shmcall: a pool worker running ${this.#module} ended (${why}); not replaced: ${LOST_IN_A_ROW} ended before it with no command answered meanwhile`,
      );
      return this.#pump();
    }
    console.error(
      `shmcall: a pool worker running ${this.#module} ended (${why}); starting another`,
    );
    this.#spawn(POOL_LOAD_MS).catch((e) => {
      if (!this.#closed) console.error(`shmcall: ${e instanceof Error ? e.message : e}`);
      this.#pump();
    });
    this.#pump();
  }

  /** Terminates a worker and answers, with `status`, the commands it still held. */
  #bury(member: Member, status: number): void {
    // What it answered before it went is done, not failed: a handle may name another command
    // by now.
    this.#reap(member);
    member.gone = true;
    member.port.terminate();
    const jobs = [...member.busy.values()];
    member.busy.clear();
    for (const job of jobs) this.#fail(job, status);
  }

  /** Answers `job` with `status` and ends it. */
  #fail(job: Job, status: number): void {
    try {
      native.commandFinish(job.command, status, 0, null);
    } catch {
      // Its worker answered it just before it ended: the handle is gone.
    }
    this.#host.finished(job);
  }

  /**
   * Stops the pool: commands waiting for a worker fail with `CLOSED` now; each worker answers
   * the ones it holds — those it has begun when their `exec` ends (the answers reach no one
   * once the server closed), the others `CLOSED` without running them — gives its segment
   * mappings back, and is terminated; after {@linkcode STOP_MS} it is terminated anyway, and
   * what it still held is answered `CLOSED` here. Resolves once every worker is gone.
   */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    for (const stop of [...this.#loading]) stop();
    for (const job of this.#takeQueue()) this.#fail(job, Status.CLOSED);
    this.#updateWaiting();
    return Promise.all(this.#members.splice(0).map((m) => this.#stop(m))).then(() => {});
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
      m.box.stop();
      try {
        this.#post(m, { kind: "stop" });
      } catch {
        end();
      }
    });
  }
}
