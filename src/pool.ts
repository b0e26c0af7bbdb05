/**
 * A server's worker pool (SPEC.md §5): workers — Web Workers in Deno, `worker_threads` in
 * Node — that each load the handler module and run the commands handed to them. The core's
 * command handles are process-wide, so a worker reads the areas and answers the command
 * itself, through its own binding of the same library; only the handle and where the areas
 * lie cross to it (a structured clone of a few numbers), and a "done" comes back.
 *
 * Each worker has at most {@linkcode DEPTH} commands at once; the rest wait here, not yet
 * taken, so that a client can still withdraw them and an idle worker gets the next one.
 *
 * @module
 */

import type { Areas, ConnInfo } from "./exec.ts";
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
  | { kind: "load"; module: string }
  | { kind: "open"; conn: ConnInfo; context: unknown }
  | { kind: "exec"; job: Job }
  | { kind: "close"; conn: number }
  | { kind: "stop" };

/** What a worker tells the server. */
export type FromWorker =
  | { kind: "ready" }
  | { kind: "failed"; message: string }
  | { kind: "done"; command: number }
  | { kind: "stopped" };

/** The server, as the pool sees it. */
export interface PoolHost {
  /** The connection's info and the context its `open` returned, while it is open. */
  connection(conn: number): { info: ConnInfo; context: unknown } | undefined;
  /** A job ended: answered, withdrawn, or failed. Once per job. */
  finished(job: Job): void;
}

/** How long a stopping worker may take to finish what it runs and give its segments back. */
const STOP_MS = 2_000;

/** Commands one worker holds at once: two, so that it never waits for the next one's message. */
const DEPTH = 2;

interface Member {
  port: WorkerPort;
  /** Commands handed to it and not yet done, by handle. */
  busy: Map<number, Job>;
  /** Connections whose context it has. */
  knows: Set<number>;
  /** Set while it stops: its "stopped" ends the wait. */
  stopped?: () => void;
}

/** A pool of workers running one handler module. */
export class Pool {
  readonly size: number;
  readonly #module: string;
  readonly #host: PoolHost;
  readonly #members: Member[] = [];
  /** Workers still loading the module: stopped by `close`. */
  readonly #loading = new Set<() => void>();
  readonly #queue: Job[] = [];
  #head = 0;
  #closed = false;

  private constructor(size: number, module: string, host: PoolHost) {
    this.size = size;
    this.#module = module;
    this.#host = host;
  }

  /**
   * Starts `size` workers on `module` and resolves once each loaded it; rejects, naming the
   * module and why, if one could not (within `timeoutMs`), with every worker stopped.
   */
  static async start(
    size: number,
    module: string,
    host: PoolHost,
    timeoutMs: number,
  ): Promise<Pool> {
    const pool = new Pool(size, module, host);
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
    const member: Member = { port, busy: new Map(), knows: new Set() };
    return new Promise<void>((resolve, reject) => {
      let loaded = false;
      const stop = () => {
        clearTimeout(timer);
        this.#loading.delete(stop);
        port.terminate();
        reject(new Error(`the pool was closed while a worker loaded ${this.#module}`));
      };
      this.#loading.add(stop);
      const timer = setTimeout(() => {
        this.#loading.delete(stop);
        port.terminate();
        reject(new Error(`the worker did not load ${this.#module} within ${timeoutMs} ms`));
      }, timeoutMs);
      port.onMessage((m) => {
        const message = m as FromWorker;
        if (message.kind === "done") return this.#done(member, message.command);
        if (message.kind === "stopped") return member.stopped?.();
        clearTimeout(timer);
        this.#loading.delete(stop);
        if (message.kind === "ready" && !this.#closed) {
          loaded = true;
          this.#members.push(member);
          this.#pump();
          resolve();
        } else {
          port.terminate();
          const why = message.kind === "failed" ? message.message : "the pool was closed";
          reject(new Error(`a pool worker cannot run ${this.#module}: ${why}`));
        }
      });
      port.onError((error) => {
        clearTimeout(timer);
        this.#loading.delete(stop);
        if (!loaded) {
          port.terminate();
          reject(new Error(`a pool worker failed loading ${this.#module}: ${error}`));
        } else this.#lost(member, error);
      });
      port.post({ kind: "load", module: this.#module } satisfies ToWorker);
    });
  }

  /** Commands queued or held by workers. */
  get inProgress(): number {
    let n = this.#queue.length - this.#head;
    for (const m of this.#members) n += m.busy.size;
    return n;
  }

  /** Hands a command to a worker, or queues it until one has room. */
  submit(job: Job): void {
    this.#queue.push(job);
    this.#pump();
  }

  /** Tells the workers that knew a connection that it ended. */
  connectionClosed(conn: number): void {
    for (const m of this.#members) {
      if (m.knows.delete(conn)) m.port.post({ kind: "close", conn } satisfies ToWorker);
    }
  }

  #pump(): void {
    while (this.#head < this.#queue.length) {
      const member = this.#leastBusy();
      if (member === undefined) return;
      const job = this.#queue[this.#head]!;
      this.#queue[this.#head++] = undefined as unknown as Job;
      if (this.#head === this.#queue.length) {
        this.#queue.length = 0;
        this.#head = 0;
      }
      this.#handTo(member, job);
    }
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
        member.port.post({ kind: "open", conn: c.info, context: c.context } satisfies ToWorker);
      } catch {
        // The context cannot be cloned into a worker (a function, say): this command fails.
        return this.#fail(job, Status.HANDLER_FAILED);
      }
      member.knows.add(job.conn);
    }
    member.busy.set(job.command, job);
    member.port.post({ kind: "exec", job } satisfies ToWorker);
  }

  #done(member: Member, command: number): void {
    const job = member.busy.get(command);
    if (job === undefined) return;
    member.busy.delete(command);
    this.#host.finished(job);
    this.#pump();
  }

  /** A worker died of an error its handler module did not catch: its commands fail, a new one starts. */
  #lost(member: Member, error: unknown): void {
    const at = this.#members.indexOf(member);
    if (at < 0) return;
    this.#members.splice(at, 1);
    member.port.terminate();
    this.#failAll(member, Status.HANDLER_FAILED);
    if (this.#closed) return;
    console.error(`shmcall: a pool worker running ${this.#module} failed: ${error}`);
    this.#spawn(POOL_LOAD_MS).catch((e) => console.error(`shmcall: ${e}`));
  }

  /** Answers `job` with `status`, unless its worker did meanwhile, and ends it. */
  #fail(job: Job, status: number): void {
    try {
      native.commandFinish(job.command, status, 0, null);
    } catch {
      // Its worker answered it just before it stopped: the handle is gone.
    }
    this.#host.finished(job);
  }

  #failAll(member: Member, status: number): void {
    const jobs = [...member.busy.values()];
    member.busy.clear();
    for (const job of jobs) this.#fail(job, status);
  }

  /**
   * Stops the pool: commands the workers held or that waited fail with `CLOSED` now; each
   * worker lets the `exec` calls it runs end (their answers are dropped), gives its segment
   * mappings back, and is terminated — after {@linkcode STOP_MS} at the latest. Resolves once
   * every worker is gone.
   */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    for (const stop of [...this.#loading]) stop();
    const stopping: Promise<void>[] = [];
    for (const m of this.#members.splice(0)) {
      this.#failAll(m, Status.CLOSED);
      stopping.push(this.#stop(m));
    }
    const waiting = this.#queue.slice(this.#head);
    this.#queue.length = 0;
    this.#head = 0;
    for (const job of waiting) this.#fail(job, Status.CLOSED);
    return Promise.all(stopping).then(() => {});
  }

  #stop(m: Member): Promise<void> {
    return new Promise<void>((resolve) => {
      const end = () => {
        clearTimeout(timer);
        m.port.terminate();
        resolve();
      };
      const timer = setTimeout(end, STOP_MS);
      m.stopped = end;
      try {
        m.port.post({ kind: "stop" } satisfies ToWorker);
      } catch {
        end();
      }
    });
  }
}

/** How long a worker may take to load the handler module, in ms. */
export const POOL_LOAD_MS = 30_000;
