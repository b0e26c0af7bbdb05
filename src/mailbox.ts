/**
 * A pool worker's mailbox: the shared memory through which the server's thread hands the worker
 * its commands and the worker says which it finished, instead of a message each way (see
 * `pool.ts` and `worker.ts`, and docs/architecture.md, "The pool's mailbox").
 *
 * One `SharedArrayBuffer` per worker, written by the two threads of one process, which run this
 * same code: it is no peer's memory, so it is trusted as the rest of the process is.
 *
 * - **Jobs**, from the server to the worker: a ring of {@linkcode DEPTH} entries. The server
 *   writes an entry, then publishes it by counting it in `JOBS`; the worker takes entries in
 *   order. The server hands a worker a job only while it holds fewer
 *   than {@linkcode DEPTH} unfinished ones, so the ring never overflows.
 * - **Done**, from the worker to the server: a ring of the ids of the jobs it answered, counted
 *   in `DONE`; the server reads them when it next hands out a job, and when a "reap" message
 *   says there are some (at most one such message is on its way: `REAP`).
 * - **The worker's state** (`STATE`): `LOOP` while it is in its event loop (a job then needs a
 *   "poke" message to reach it), `SPIN` while it looks at the ring, `WAIT` while it sleeps in
 *   `Atomics.wait` on this word (a job then needs an `Atomics.notify`, after setting it to
 *   `SPIN`).
 * - **Messages** the server posted that carry state (load, open, close, stop) are counted in
 *   `POSTED`: a worker takes no job before it received as many, so that a connection's "open"
 *   always comes before its first job, and a message ends the worker's wait.
 *
 * Every handshake is a sequentially consistent store of one side followed by a sequentially
 * consistent load of the other's word (a job: `JOBS`, then `STATE`; the worker: `STATE`, then
 * `JOBS`), so at least one of the two sees the other.
 *
 * @module
 */

import type { Job } from "./pool.ts";

/** Jobs one worker holds at once: two, so that it never waits for the next one. */
export const DEPTH = 2;

/** The control words (an `Int32Array` at the buffer's start). */
const W = {
  /** Jobs the server published (a count that wraps). */
  JOBS: 0,
  /** The worker's state: {@linkcode LOOP}, {@linkcode SPIN} or {@linkcode WAIT}. */
  STATE: 1,
  /** Messages with state the server posted. */
  POSTED: 2,
  /** Jobs the worker finished (its done ring's count). */
  DONE: 3,
  /** 1 while a "reap" message is on its way to the server. */
  REAP: 4,
  /** 1 once the pool stops: jobs not begun are answered `CLOSED` without running. */
  STOP: 5,
  COUNT: 8,
} as const;

/** The worker is in its event loop: a job needs a message to reach it. */
export const LOOP = 0;
/** The worker looks at the job ring. */
export const SPIN = 1;
/** The worker sleeps in `Atomics.wait` on the state word. */
export const WAIT = 2;

/** The numbers of one job entry (a `Float64Array`: handles and ids are up to 2^53). */
const JOB_FIELDS = 9;
const JOBS_AT = W.COUNT * 4;
const DONE_AT = JOBS_AT + DEPTH * JOB_FIELDS * 8;
const BYTES = DONE_AT + DEPTH * 8;

/** One side's view of a worker's mailbox. */
export class Mailbox {
  readonly buffer: SharedArrayBuffer;
  readonly #ctl: Int32Array<SharedArrayBuffer>;
  readonly #jobs: Float64Array<SharedArrayBuffer>;
  readonly #done: Float64Array<SharedArrayBuffer>;
  /** This side's count of the ring it reads: jobs on the worker, done ids on the server. */
  #read = 0;

  /** A new mailbox (the server's), or a view of `buffer` (the worker's). */
  constructor(buffer = new SharedArrayBuffer(BYTES)) {
    if (buffer.byteLength !== BYTES) {
      throw new RangeError(`a pool mailbox is ${BYTES} bytes, received ${buffer.byteLength}`);
    }
    this.buffer = buffer;
    this.#ctl = new Int32Array(buffer, 0, W.COUNT);
    this.#jobs = new Float64Array(buffer, JOBS_AT, DEPTH * JOB_FIELDS);
    this.#done = new Float64Array(buffer, DONE_AT, DEPTH);
  }

  // The server's side.

  /**
   * Publishes job `id` for the worker; returns the worker's state as it was after: `LOOP`
   * means the caller must post it a "poke" message. A sleeping worker is woken here.
   */
  put(id: number, job: Job): number {
    const ctl = this.#ctl;
    const n = ctl[W.JOBS]!;
    const e = (n & (DEPTH - 1)) * JOB_FIELDS;
    const jobs = this.#jobs;
    jobs[e] = id;
    jobs[e + 1] = job.command;
    jobs[e + 2] = job.code;
    jobs[e + 3] = job.conn;
    jobs[e + 4] = job.inSegment ? 1 : 0;
    jobs[e + 5] = job.inputOffset;
    jobs[e + 6] = job.outputOffset;
    jobs[e + 7] = job.inputLength;
    jobs[e + 8] = job.outputLength;
    // Sequentially consistent, and so is the look at the state after it: the worker stores its
    // state, then looks at this count (module doc).
    Atomics.store(ctl, W.JOBS, (n + 1) | 0);
    return this.#rouse();
  }

  /** Counts a message with state posted to the worker, and ends its wait for it. */
  posted(): void {
    Atomics.add(this.#ctl, W.POSTED, 1);
    this.#rouse();
  }

  /** Wakes the worker if it sleeps; its state as it was. */
  #rouse(): number {
    const ctl = this.#ctl;
    const state = Atomics.load(ctl, W.STATE);
    if (state === WAIT && Atomics.compareExchange(ctl, W.STATE, WAIT, SPIN) === WAIT) {
      Atomics.notify(ctl, W.STATE);
    }
    return state;
  }

  /** Calls `done` with the id of every job the worker finished since the last call. */
  reap(done: (id: number) => void): void {
    const end = Atomics.load(this.#ctl, W.DONE);
    while (this.#read !== end) {
      const id = this.#done[this.#read & (DEPTH - 1)]!;
      this.#read = (this.#read + 1) | 0;
      done(id);
    }
  }

  /** A "reap" message arrived: the next finished job may send another. */
  reaped(): void {
    // Before the reap that follows (module doc): a job finished after it sends a message.
    Atomics.store(this.#ctl, W.REAP, 0);
  }

  /** Tells the worker that the pool stops. */
  stop(): void {
    Atomics.store(this.#ctl, W.STOP, 1);
    this.#rouse();
  }

  // The worker's side.

  /** Whether the pool stopped. */
  get stopped(): boolean {
    return Atomics.load(this.#ctl, W.STOP) === 1;
  }

  /** Whether a job was published that this worker did not take yet. */
  get hasJob(): boolean {
    return Atomics.load(this.#ctl, W.JOBS) !== this.#read;
  }

  /** Messages with state the server posted so far. */
  get postedCount(): number {
    return Atomics.load(this.#ctl, W.POSTED);
  }

  /** Takes the next job into `into` (check {@linkcode Mailbox.hasJob} first); returns its id. */
  take(into: Job): number {
    const e = (this.#read & (DEPTH - 1)) * JOB_FIELDS;
    const jobs = this.#jobs;
    const id = jobs[e]!;
    into.command = jobs[e + 1]!;
    into.code = jobs[e + 2]!;
    into.conn = jobs[e + 3]!;
    into.inSegment = jobs[e + 4] === 1;
    into.inputOffset = jobs[e + 5]!;
    into.outputOffset = jobs[e + 6]!;
    into.inputLength = jobs[e + 7]!;
    into.outputLength = jobs[e + 8]!;
    // The server writes this entry again only once the job is done (module doc).
    this.#read = (this.#read + 1) | 0;
    return id;
  }

  /** Says job `id` is answered; true when the caller must post a "reap" message. */
  finish(id: number): boolean {
    const ctl = this.#ctl;
    const n = ctl[W.DONE]!;
    this.#done[n & (DEPTH - 1)] = id;
    // Sequentially consistent, then the look at REAP: the server clears REAP, then reads DONE.
    Atomics.store(ctl, W.DONE, (n + 1) | 0);
    return Atomics.compareExchange(ctl, W.REAP, 0, 1) === 0;
  }

  /** The worker's state: `LOOP`, `SPIN` or `WAIT`. */
  get state(): number {
    return Atomics.load(this.#ctl, W.STATE);
  }

  /** Sets the worker's state (the worker's side). */
  set state(state: number) {
    Atomics.store(this.#ctl, W.STATE, state);
  }

  /**
   * Sleeps until the server publishes a job or a message, or `ms` pass; false on a timeout.
   * The state goes from `SPIN` to `WAIT` first, and the ring is looked at again after it.
   */
  sleep(ms: number, received: number): boolean {
    const ctl = this.#ctl;
    if (Atomics.compareExchange(ctl, W.STATE, SPIN, WAIT) !== SPIN) return true;
    if (this.hasJob || this.postedCount !== received || this.stopped) {
      Atomics.store(ctl, W.STATE, SPIN);
      return true;
    }
    const woke = Atomics.wait(ctl, W.STATE, WAIT, ms) !== "timed-out";
    Atomics.store(ctl, W.STATE, SPIN);
    return woke;
  }
}
