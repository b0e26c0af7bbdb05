/**
 * The server: {@linkcode serve} and its handlers.
 *
 * @module
 */

import {
  type Answerer,
  backupOf,
  commandOf,
  type ConnInfo,
  type Exec,
  type ExecResult,
  failedLength,
  reasonOf,
  runExec,
  type ServerCommand,
} from "./exec.ts";
import * as hub from "./hub.ts";
import { ServerLane } from "./lane.ts";
import {
  EVENT,
  FLAG,
  type Handle,
  LANE,
  type Mapping,
  native,
  POOL_NOTE,
  SERVE,
  STATS,
} from "./native.ts";
import { Pool, type PoolHost } from "./pool.ts";
import { readServerStats, type ServerStats } from "./stats.ts";
import { Status } from "./status.ts";
import { checkIcId, checkOptionsObject, checkSocketDir, shown, spinNanos } from "./validate.ts";
import { checkNatsOptions, type NatsOptions } from "./nats.ts";
import { NatsBridge } from "./nats_server.ts";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

export type { ConnInfo, ExecResult, ServerCommand };

/** A server's handlers. `C` is the user context `open` returns. */
export interface Handlers<C> {
  /** A client connected; the value (or what its Promise resolves to) is the connection's context. Throwing refuses the client. */
  open?: (conn: ConnInfo) => C | Promise<C>;
  /**
   * One command run inline (on the server's thread); a throw or rejection fails that command
   * with `HANDLER_FAILED`. Commands run by the pool go to its module's `exec` instead.
   */
  exec: Exec<C>;
  /** The connection ended, after its commands drained; once per `open`. */
  close?: (conn: ConnInfo, context: C) => void;
}

/** How {@linkcode serve} serves. */
export interface ServeOptions {
  /** The socket directory; see {@linkcode ConnectOptions.socketDir}. */
  socketDir?: string;
  /**
   * How long the thread that polls a connection (the server's, or with a pool a waiting
   * worker) looks for its next command before it arms it (a later command then wakes it), in µs
   * (default 50).
   */
  spinMicros?: number;
  /**
   * Workers in the server's pool (default 0: no pool). Each loads {@linkcode ServeOptions.module}
   * and runs the commands sent to the pool, in parallel with the server's thread: Web Workers
   * in Deno, `worker_threads` in Node.js. At most {@linkcode MAX_WORKERS}.
   */
  workers?: number;
  /**
   * The handler module of the pool (required with `workers`): a URL, or a file path, of a
   * module that exports `exec(command, conn, context)` — the same contract as
   * {@linkcode Handlers.exec}. `context` is a structured clone of what `open` returned, made
   * once per connection for each worker that runs its commands: changes to it stay in that
   * worker, and a context that cannot be cloned fails the connection's pool commands with
   * `HANDLER_FAILED`.
   */
  module?: string | URL;
  /**
   * Where a command runs when it does not choose (its `inline` option): `true` on the server's
   * thread, `false` on the pool. Default: the pool when there is one. Without a pool every
   * command runs inline.
   */
  inline?: boolean;
  /**
   * Called with each failure of a handler in place of the default report, which writes it to
   * standard error (the ic id, the connection, the operation code, and the error with its
   * stack): an `exec` that threw, rejected or answered nonsense — inline or in a pool worker
   * — with its command's `{ code }`, and an `open` or `close` that threw or rejected, with
   * `undefined`. What `onError` itself throws is written to standard error. A server that
   * serves through NATS also reports here, with connection `{ id: 0, pid: 0, uid: -1 }`, when
   * NATS ends its subscriptions (its authorization changed): it no longer serves NATS then.
   */
  onError?: (error: unknown, conn: ConnInfo, command: { code: number } | undefined) => void;
  /**
   * Whether clients learn why a handler failed (default false: a message may hold what a client
   * should not see). When true, a failed command's `HANDLER_FAILED` carries the error's name
   * and message in its output area, as much as its capacity holds, and the client's
   * `IpcError` shows it; a client refused by a failing `open` sees it in `connect`'s error.
   */
  exposeErrors?: boolean;
  /**
   * Also serve through NATS: where the NATS servers are, and NATS's own connection options
   * (authentication, TLS, reconnecting), passed through. The server then takes commands from
   * clients on other hosts ({@linkcode connect} with `nats`) in a queue group of its ic id —
   * several servers of one ic id share them — and runs them with the same handlers, on this
   * thread; its local clients are unaffected. `serve` resolves once NATS has the server's
   * subscriptions.
   */
  nats?: NatsOptions;
}

/** @internal Starts the NATS side of a server ({@linkcode ServeOptions.nats}). */
export const serveNats: unique symbol = Symbol("shmcall serve nats");

/** The most workers a pool may have. */
export const MAX_WORKERS = 64;

/**
 * The most commands one turn takes from a connection's lane: a client that keeps pushing
 * would otherwise hold the thread (the hub raises the lane's event again for the rest).
 */
const BATCH_MOST = 256;

/**
 * Looks at an empty CS ring before a batch ends (`ServerLane.expect`): each an atomic load of
 * some 20 ns here, so about 2 µs in all, under the gap between two commands of a client that
 * issues a batch (measured: a 2-process pipelined run's server took 13 commands a batch
 * without it).
 */
const EXPECT_LOOKS = 100;

interface Connection<C> {
  info: ConnInfo;
  context: C;
  /** The client's segment, viewed once per connection. */
  segment: Mapping | undefined;
  /** Commands handed to `exec` (or to the pool) and not yet answered. */
  pending: number;
  /** `close` is due once `pending` is 0 (the server was closed meanwhile). */
  closeWhenDrained: boolean;
  /**
   * The connection's rings, which this thread pops and pushes itself (src/lane.ts): made with
   * the segment's view on its first lane event.
   */
  lane: ServerLane | undefined;
  /** The connection ended: its lane's answers go nowhere (the core is told once it took what was left). */
  laneEnded: boolean;
}

/**
 * A running server. Create one with {@linkcode serve}.
 *
 * @example Serving until disposed
 * ```ts
 * import { serve } from "shmcall";
 *
 * await using server = await serve("doc-server", {
 *   exec: ({ input, output }) => {
 *     output.set(input);
 *     return { length: input.length };
 *   },
 * });
 * console.log(server.icId); // "doc-server"
 * ```
 */
export class Server<C = unknown> {
  #handle: Handle | null;
  readonly #id: number;
  readonly #handlers: Handlers<C>;
  readonly #connections = new Map<number, Connection<C>>();
  readonly #icId: string;
  readonly #key: string;
  /** Whether a command that does not choose runs inline. */
  readonly #inline: boolean;
  #pool: Pool | undefined;
  /** Commands handed to `exec` or the pool and not yet answered, over all connections. */
  #inProgress = 0;
  #quiescing = false;
  /** Resolves `quiesce()` once nothing is in progress. */
  #quiesced: (() => void) | undefined;
  readonly #stats = new Float64Array(STATS.LEN);
  readonly #onError: ServeOptions["onError"];
  readonly #exposeErrors: boolean;
  /** The NATS side, when serving through NATS too. */
  #nats: NatsBridge<C> | undefined;
  /** How the inline path answers: through `#answer`, with the connection as the tag. */
  readonly #answerer: Answerer<Connection<C>> = {
    answer: (conn, command, status, length, from) =>
      this.#answer(conn, command, status, length, from),
    failed: (conn, command, status, wanted, code, error, output, from) => {
      this.#report(error, conn.info, { code }, "exec");
      const length = failedLength(status, wanted, error, output, this.#exposeErrors);
      this.#answer(conn, command, status, length, from);
    },
    async: () => hub.needTurn(),
  };
  /** How the lanes answer: into the slot, through `#answerLane`. */
  readonly #laneAnswerer: Answerer<Connection<C>> = {
    answer: (conn, slot, status, length) => this.#answerLane(conn, slot, status, length),
    failed: (conn, slot, status, wanted, code, error, output) => {
      this.#report(error, conn.info, { code }, "exec");
      const length = failedLength(status, wanted, error, output, this.#exposeErrors);
      this.#answerLane(conn, slot, status, length);
    },
    async: (conn, slot) => {
      hub.needTurn();
      // Kept past this turn: the core keeps the connection and its segment until the answer.
      conn.lane!.keep(slot);
      if (this.#handle !== null) native.serverLaneHold(this.#handle, conn.info.id);
    },
  };

  /** Reports the failure of a handler: to `onError`, else to standard error. */
  #report(
    error: unknown,
    conn: ConnInfo,
    command: { code: number } | undefined,
    handler: string,
  ): void {
    const onError = this.#onError;
    if (onError !== undefined) {
      try {
        onError(error, conn, command);
        return;
      } catch (thrown) {
        console.error(`shmcall: the onError of '${this.#icId}' threw:`, thrown);
      }
    }
    console.error(
      `shmcall: the ${handler} handler of '${this.#icId}' failed on connection ${conn.id} (${
        conn.session === undefined ? `pid ${conn.pid}` : `NATS session ${conn.session}`
      })${command === undefined ? "" : `, operation code ${command.code}`}:`,
      error,
    );
  }

  /** @internal Use {@linkcode serve}; `pool` is running already, and `host` its view of this server. */
  constructor(
    icId: string,
    handlers: Handlers<C>,
    options: ServeOptions,
    pool: Pool | undefined,
    host: PoolHost,
  ) {
    this.#icId = icId;
    this.#handlers = handlers;
    this.#onError = options.onError;
    this.#exposeErrors = options.exposeErrors === true;
    this.#inline = options.inline ?? pool === undefined;
    this.#pool = pool;
    host.connections = () => [...this.#connections.values()];
    host.failed = (conn, code, error) => this.#report(error, conn, { code }, "exec (pool)");
    this.#id = hub.register(this);
    try {
      const spin = spinNanos(options.spinMicros);
      this.#handle = native.serverServe(
        icId,
        options.socketDir,
        spin,
        this.#id,
        // With a pool, a client is welcome only after this thread posted every worker the
        // connection (`#admit`), even with no `open` to run: its first command may reach a
        // worker at once.
        (handlers.open !== undefined || pool !== undefined ? SERVE.ASKS_OPEN : 0) |
          // A server with a pool leaves its connections to the core, whose pool hands their
          // commands to the workers; one without pops its rings itself.
          (pool === undefined ? SERVE.LANES : SERVE.POOL) |
          (this.#inline ? SERVE.INLINE : 0),
      );
    } catch (e) {
      hub.unregister(this.#id);
      throw e;
    }
    this.#key = hub.endpointKey(icId, options.socketDir);
    hub.served.add(this.#key);
    hub.hold();
    if (pool !== undefined) {
      native.serverNote(this.#handle, pool.size, false);
      pool.serveFrom(native.serverPool(this.#handle));
    }
  }

  /** The ic id served. */
  get icId(): string {
    return this.#icId;
  }

  /** @internal Serves through NATS too, with this server's handlers and rules. */
  async [serveNats](nats: NatsOptions): Promise<void> {
    const bridge = await NatsBridge.start<C>(this.#icId, nats, {
      handlers: this.#handlers,
      exposeErrors: this.#exposeErrors,
      quiescing: () => this.#quiescing,
      began: () => this.#inProgress++,
      ended: () => this.#settleOne(),
      report: (error, conn, command, handler) => this.#report(error, conn, command, handler),
      count: (words) => {
        if (this.#handle !== null) native.serverLaneCount(this.#handle, words);
      },
      lost: (error) => {
        const said = new Error(
          `the server of '${this.#icId}' no longer takes commands from NATS: ${error.message}`,
          { cause: error },
        );
        if (this.#onError !== undefined) {
          try {
            this.#onError(said, { id: 0, pid: 0, uid: -1 }, undefined);
            return;
          } catch (thrown) {
            console.error(`shmcall: the onError of '${this.#icId}' threw:`, thrown);
          }
        }
        console.error(`shmcall: ${said.message}`);
      },
    });
    if (this.#handle === null) {
      // Closed meanwhile.
      await bridge.close();
      return;
    }
    this.#nats = bridge;
  }

  /** @internal An open, exec or close from the hub. */
  onEvent(): void {
    const e = native.event;
    switch (e.kind) {
      case EVENT.OPEN:
        return this.#open(e.token, { id: e.token, pid: e.pid, uid: e.uid });
      case EVENT.EXEC:
        return this.#exec(e.token);
      case EVENT.CLOSE:
        return this.#close(e.token);
      case EVENT.LANE:
        return this.#onLane(e.token, e.code);
      case EVENT.POOL:
        if (e.code === POOL_NOTE.POKE) this.#pool?.poked();
        else if (e.code === POOL_NOTE.DRAINED) this.#settled();
        return;
    }
  }

  /** Commands to take on connection `token`'s lane (`code` 0), or its end (`code` < 0). */
  #onLane(token: number, code: number): void {
    const handle = this.#handle;
    const conn = this.#connections.get(token);
    if (handle === null) return;
    if (conn !== undefined) {
      if (code < 0) conn.laneEnded = true;
      // At the end too: what the client sent before it went still runs, as the core does.
      this.#takeLane(handle, conn);
    }
    // Never admitted here, or taken what was left: the core lets go of it once the commands
    // kept past their turn are answered.
    if (code < 0) native.serverLaneDrained(handle, token);
  }

  /** Takes and runs every command waiting on `conn`'s lane. */
  #takeLane(handle: Handle, conn: Connection<C>): void {
    let lane = conn.lane;
    if (lane === undefined) {
      const words = new Uint32Array(LANE.WORDS);
      try {
        native.serverLaneLayout(handle, conn.info.id, words);
      } catch {
        // Gone already: it ended before its first command was taken, and nothing was left.
        return;
      }
      const id = conn.info.id;
      lane = conn.lane = new ServerLane(this.#laneSegment(handle, conn), words, (why) => {
        if (this.#handle !== null) native.serverLaneViolation(this.#handle, id, why);
      }, native.nowNs);
    }
    // Answers given within this batch are fenced once, after it (`ServerLane.fence`).
    lane.batching = true;
    try {
      for (let taken = 0; taken < BATCH_MOST;) {
        // An `exec` may have detached the views: made again before each take.
        if (lane.detached) lane.view(this.#laneSegment(handle, conn));
        const slot = lane.next();
        if (slot < 0) {
          // Caught up with the client: what was answered is announced, then a short look for
          // its next command, which a client issuing a batch pushes within a microsecond or so
          // (taken here, it spares the round through the hub that a batch of its own costs).
          this.#fenceLane(handle, conn, lane);
          if (lane.broken || conn.laneEnded || !lane.expect(EXPECT_LOOKS)) break;
          continue;
        }
        this.#runLane(conn, lane, slot);
        if (this.#handle === null) return;
        taken++;
      }
    } finally {
      lane.batching = false;
      if (this.#handle !== null) this.#fenceLane(handle, conn, lane);
    }
    // Counted once per batch: a request for the counters may come over the backup path, which
    // the library answers without asking this thread.
    this.#reportLane(handle, lane);
  }

  /** Announces the answers pushed onto `conn`'s lane since its last fence, waking its client if it sleeps. */
  #fenceLane(handle: Handle, conn: Connection<C>, lane: ServerLane): void {
    if (!lane.unfenced || conn.laneEnded) return;
    if (lane.detached) lane.view(this.#laneSegment(handle, conn));
    if (lane.fence()) native.serverLaneWake(handle, conn.info.id);
  }

  /** Views `conn`'s segment (again), letting go of the view it had. */
  #laneSegment(handle: Handle, conn: Connection<C>): Mapping {
    conn.segment?.release();
    return conn.segment = native.serverLaneSegment(handle, conn.info.id);
  }

  /** Runs (or answers at once) the command just taken in `slot` of `conn`'s lane. */
  #runLane(conn: Connection<C>, lane: ServerLane, slot: number): void {
    const flags = lane.flags;
    if (flags === FLAG.STATS) {
      // A request for the server's counters, which the library answers: no handler sees it,
      // and the counters do not count it.
      this.#answerStats(conn, lane, slot);
      return;
    }
    lane.count(slot);
    conn.pending++;
    this.#inProgress++;
    if (!lane.claim(slot)) {
      // Its client withdrew it first: it does not run.
      return this.#answerLane(conn, slot, Status.CANCELLED, 0);
    }
    if (this.#quiescing) {
      // It does not run, and the client may send it again elsewhere.
      return this.#answerLane(conn, slot, Status.SERVER_QUIESCING, 0);
    }
    if (flags !== 0 && flags !== FLAG.INLINE && flags !== FLAG.WORKER) {
      return this.#answerLane(conn, slot, Status.INVALID_COMMAND, 0);
    }
    runExec(
      this.#handlers.exec,
      {
        code: lane.code,
        input: lane.input(slot, lane.inputLength),
        output: lane.output(slot, lane.outputCapacity),
      },
      conn.info,
      conn.context,
      slot,
      null,
      this.#laneAnswerer,
      conn,
    );
  }

  /** Answers a request for the server's counters in `slot`: its words, as little-endian doubles. */
  #answerStats(conn: Connection<C>, lane: ServerLane, slot: number): void {
    const handle = this.#handle!;
    this.#reportLanes(handle);
    native.serverStats(handle, this.#stats);
    const bytes = new Uint8Array(
      this.#stats.buffer,
      this.#stats.byteOffset,
      this.#stats.byteLength,
    );
    const output = lane.output(slot, lane.outputCapacity);
    if (output.length >= bytes.length) {
      output.set(bytes);
      this.#answerLane(conn, slot, 0, bytes.length, false);
    } else {
      // Says how many bytes it wanted, as the core does.
      this.#answerLane(conn, slot, Status.OUTPUT_OVERFLOW, bytes.length, false);
    }
  }

  /**
   * Answers the command in `slot` of `conn`'s lane exactly once (or lets it go, when the
   * connection ended), then lets go of the core's hold when it was kept past its turn.
   */
  #answerLane(
    conn: Connection<C>,
    slot: number,
    status: number,
    length: number,
    counted = true,
  ): void {
    const lane = conn.lane!;
    const handle = this.#handle;
    const kept = lane.kept(slot);
    if (handle === null || conn.laneEnded) lane.drop(slot, status);
    else {
      if (lane.detached) lane.view(this.#laneSegment(handle, conn));
      // Within a batch of `#takeLane`, fenced once after it — unless the client is seen
      // asleep (a later `exec` of the batch may take long); alone (an async `exec`), now.
      if (
        lane.answer(slot, status, length) && (!lane.batching || lane.peerAsleep) &&
        lane.fence()
      ) {
        native.serverLaneWake(handle, conn.info.id);
      }
    }
    // After its answer: the core may let go of the connection, and the client reuse the segment.
    if (kept && handle !== null) native.serverLaneRelease(handle, conn.info.id);
    if (counted) this.#ended(conn);
  }

  /** Adds what a lane counted to the server's counters. */
  #reportLane(handle: Handle, lane: ServerLane): void {
    lane.counts.report((words) => native.serverLaneCount(handle, words));
  }

  /** Adds what every lane counted to the server's counters. */
  #reportLanes(handle: Handle): void {
    for (const conn of this.#connections.values()) {
      if (conn.lane !== undefined) this.#reportLane(handle, conn.lane);
    }
    for (const conn of this.#closing.values()) {
      if (conn.lane !== undefined) this.#reportLane(handle, conn.lane);
    }
  }

  /** A client is welcome: its connection, with the context its `open` made. */
  #admit(token: number, info: ConnInfo, context: C): void {
    this.#pool?.opened(info, context);
    this.#connections.set(token, {
      info,
      context,
      segment: undefined,
      pending: 0,
      closeWhenDrained: false,
      lane: undefined,
      laneEnded: false,
    });
  }

  #open(token: number, info: ConnInfo): void {
    if (this.#handlers.open === undefined && this.#pool === undefined) {
      // The library welcomed the client already (there is no `open` to run): this only tells.
      this.#admit(token, info, undefined as C);
      return;
    }
    if (this.#quiescing) {
      native.serverOpened(this.#handle!, token, Status.SERVER_QUIESCING, "");
      return;
    }
    const accept = (context: C) => {
      const handle = this.#handle;
      if (handle === null || this.#quiescing) {
        // `open` ran but the client is turned away (the server closed or began quiescing
        // while `open` settled): its `close` runs now, once per `open` as always.
        if (handle !== null) native.serverOpened(handle, token, Status.SERVER_QUIESCING, "");
        this.#callClose(info, context);
        return;
      }
      this.#admit(token, info, context);
      native.serverOpened(handle, token, 0, "");
    };
    const refuse = (error: unknown) => {
      this.#report(error, info, undefined, "open");
      if (this.#handle === null) return;
      const reason = this.#exposeErrors ? reasonOf(error) : "";
      native.serverOpened(this.#handle, token, Status.HANDLER_FAILED, reason);
    };
    try {
      const made = this.#handlers.open?.(info) as C | Promise<C>;
      if (made instanceof Promise) {
        hub.needTurn();
        made.then(accept, refuse);
      } else accept(made);
    } catch (e) {
      refuse(e);
    }
  }

  #exec(token: number): void {
    const e = native.event;
    const command = e.handle;
    if (this.#quiescing) {
      // It does not run, and the client may send it again elsewhere (one its client
      // withdrew meanwhile is answered CANCELLED by the take).
      if (native.commandTake(command)) {
        native.commandFinish(command, Status.SERVER_QUIESCING, 0, null);
      }
      return;
    }
    const conn = this.#connections.get(token);
    if (conn === undefined) {
      native.commandFinish(command, Status.HANDLER_FAILED, 0, null);
      return;
    }
    // A server with a pool gets here only the commands its own thread runs: the core hands the
    // others to the workers (bindings/src/pool.rs).
    // Taken here, just before it runs: until now its client could still withdraw it.
    if (!native.commandTake(command)) return;
    let cmd: ServerCommand | undefined;
    try {
      if (e.inSegment && (conn.segment === undefined || conn.segment.detached)) {
        // First use, or a handler detached the last view (Mapping.detached).
        conn.segment?.release();
        conn.segment = native.commandSegment(command);
      }
      cmd = commandOf(command, e.code >>> 0, e, conn.segment);
    } catch {
      // The runtime could not view the segment: the command fails, the server goes on.
      cmd = undefined;
    }
    if (cmd === undefined) {
      native.commandFinish(command, Status.HANDLER_FAILED, 0, null);
      return;
    }
    conn.pending++;
    this.#inProgress++;
    runExec(
      this.#handlers.exec,
      cmd,
      conn.info,
      conn.context,
      command,
      backupOf(),
      this.#answerer,
      conn,
    );
  }

  /** Finishes a command (exactly once), then runs `close` if it was the last one due. */
  #answer(
    conn: Connection<C>,
    command: number,
    status: number,
    length: number,
    from: Uint8Array | null,
  ): void {
    native.commandFinish(command, status, length, from);
    this.#ended(conn);
  }

  /** One of `conn`'s commands ended. */
  #ended(conn: Connection<C>): void {
    if (--conn.pending === 0 && conn.closeWhenDrained) this.#runClose(conn);
    this.#settleOne();
  }

  #settleOne(): void {
    if (--this.#inProgress === 0) this.#settled();
  }

  /** Resolves `quiesce()` once nothing is in progress, here nor in the pool's workers. */
  #settled(): void {
    if (
      this.#quiesced !== undefined && this.#inProgress === 0 &&
      (this.#pool?.inProgress() ?? 0) === 0
    ) {
      const quiesced = this.#quiesced;
      this.#quiesced = undefined;
      quiesced();
    }
  }

  /** Connections that ended with commands still in progress, until they drain. */
  readonly #closing = new Map<number, Connection<C>>();

  #close(token: number): void {
    const conn = this.#connections.get(token);
    if (conn === undefined) return;
    this.#connections.delete(token);
    // `close` runs after the connection's commands have drained.
    if (conn.pending > 0) {
      conn.closeWhenDrained = true;
      this.#closing.set(token, conn);
    } else this.#runClose(conn);
  }

  #runClose(conn: Connection<C>): void {
    this.#closing.delete(conn.info.id);
    // Its commands have drained: no view of its segment is in use any more.
    conn.segment?.release();
    this.#pool?.connectionClosed(conn.info.id);
    this.#callClose(conn.info, conn.context);
  }

  #callClose(info: ConnInfo, context: C): void {
    try {
      const done = this.#handlers.close?.(info, context) as unknown;
      if (done instanceof Promise) done.catch((e) => this.#report(e, info, undefined, "close"));
    } catch (e) {
      // A failing close handler must not take the event loop with it.
      this.#report(e, info, undefined, "close");
    }
  }

  /**
   * Stops taking work, for a restart or an upgrade without failed work (README.md, `quiesce()`): from now
   * on new commands are answered `SERVER_QUIESCING` without running (their clients may send
   * them again, to this server's successor) and new clients are refused with it. Resolves once
   * every command already taken has been answered. Commands waiting for a pool worker when it
   * is called still run. Idempotent.
   *
   * Commands still on their way when {@linkcode Server.close} runs fail with
   * `PEER_TERMINATED`, as with any server that goes away, and their clients cannot tell
   * whether they ran. So close once the clients have moved on — a client that gets
   * `SERVER_QUIESCING` stops sending, lets its outstanding commands settle and closes its
   * connection — that is, once `stats().connections` is 0, or after a grace period.
   *
   * @example A restart that fails no accepted command
   * ```ts
   * import { serve } from "shmcall";
   *
   * const old = await serve("doc-quiesce", { exec: () => ({ status: 0 }) });
   * await old.quiesce(); // clients now get SERVER_QUIESCING and move on
   * await old.close();
   * await using _next = await serve("doc-quiesce", { exec: () => ({ status: 1 }) });
   * ```
   */
  quiesce(): Promise<void> {
    if (!this.#quiescing && this.#handle !== null) {
      native.serverNote(this.#handle, this.#pool?.size ?? 0, true);
    }
    this.#quiescing = true;
    // The pool's count is read after the core knows of the quiescing: a pool command answered
    // from now on that leaves none brings a POOL_NOTE.DRAINED event.
    if (this.#inProgress === 0 && (this.#pool?.inProgress() ?? 0) === 0) return Promise.resolve();
    const already = this.#drained;
    if (already !== undefined) return already;
    return this.#drained = new Promise<void>((resolve) => {
      this.#quiesced = () => {
        this.#drained = undefined;
        resolve();
      };
    });
  }

  #drained: Promise<void> | undefined;

  /** Whether {@linkcode Server.quiesce} was called. */
  get quiescing(): boolean {
    return this.#quiescing;
  }

  /**
   * The server's counters over every connection: commands, bytes, commands in progress,
   * backup-path commands, failures by status (`SERVER_QUIESCING`, `CANCELLED`,
   * `HANDLER_FAILED`, …), and the time from receiving a command to answering it. After
   * {@linkcode Server.close}, those at the close.
   */
  stats(): ServerStats {
    if (this.#handle !== null) {
      this.#reportLanes(this.#handle);
      this.#nats?.report();
      native.serverStats(this.#handle, this.#stats);
    }
    return readServerStats(this.#stats);
  }

  /**
   * Stops the server: no new clients; connections end (their clients see `PEER_TERMINATED`
   * for commands still outstanding); the pool's workers stop, failing the commands they held
   * with `CLOSED`; the socket is removed. Call {@linkcode Server.quiesce} first to fail none.
   * Resolves once the pool's workers have stopped. Idempotent.
   */
  close(): Promise<void> {
    if (this.#handle !== null) {
      let stopped = Promise.resolve();
      const handle = this.#handle;
      this.#reportLanes(handle);
      this.#nats?.report();
      native.serverStats(handle, this.#stats);
      this.#handle = null;
      native.serverFree(handle);
      hub.served.delete(this.#key);
      if (this.#pool !== undefined) stopped = this.#pool.close();
      if (this.#nats !== undefined) {
        const nats = this.#nats.close();
        stopped = Promise.all([stopped, nats]).then(() => {});
      }
      // Before the close handlers below run: one that calls `close()` again gets this too.
      this.#stopped = stopped;
      // Closes of connections that were open: the core delivers them, but to no one now.
      for (const [token] of this.#connections) this.#close(token);
      hub.unregister(this.#id);
      hub.release();
    }
    return this.#stopped;
  }

  /** Settles once `close` is done. */
  #stopped = Promise.resolve();

  /** Same as {@linkcode Server.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Serves `icId`: clients connecting to it run `handlers.open`, their commands run
 * `handlers.exec` (or the pool's module), and `handlers.close` runs once per connection when
 * it ends.
 *
 * @param icId The name to serve, its ic id: 1 to 100 characters of `A-Z a-z 0-9 . _ -`.
 * @param handlers `open`, `exec` and `close` (only `exec` is required).
 * @param options The socket directory, the spin budget, the pool, error reporting; all
 * optional.
 * @returns The running server, once its pool's workers (if any) loaded their module.
 * @throws {IpcError} `ALREADY_SERVED` when a live server has `icId`, `PERMISSION_DENIED`, …
 * @throws {TypeError | RangeError} On a bad argument, naming it.
 * @throws {Error} When a pool worker cannot load `module`, naming it and why.
 *
 * @example A server whose context counts each connection's commands
 * ```ts
 * import { connect, serve } from "shmcall";
 *
 * const server = await serve("doc-serve", {
 *   open: () => ({ count: 0 }),
 *   exec: (_command, _conn, context) => ({ status: ++context.count }),
 *   close: (conn, context) => console.log(`connection ${conn.id}: ${context.count} commands`),
 * });
 * const client = await connect("doc-serve");
 * const second = await client.execute(1, { completion: () => {} })
 *   .then(() => client.execute(1, { completion: () => {} }));
 * console.log(second.status); // 2
 * client.close();
 * await server.close();
 * ```
 */
export async function serve<C = unknown>(
  icId: string,
  handlers: Handlers<C>,
  options?: ServeOptions,
): Promise<Server<C>> {
  if (options === undefined) options = {};
  checkIcId(icId);
  checkOptionsObject("serve", options);
  checkSocketDir(options.socketDir);
  spinNanos(options.spinMicros);
  if (typeof handlers !== "object" || handlers === null) {
    throw new TypeError(`handlers must be an object, received ${shown(handlers)}`);
  }
  if (typeof handlers.exec !== "function") {
    throw new TypeError(`handlers.exec must be a function, received ${shown(handlers.exec)}`);
  }
  for (const name of ["open", "close"] as const) {
    const f = handlers[name];
    if (f !== undefined && typeof f !== "function") {
      throw new TypeError(`handlers.${name} must be a function, received ${shown(f)}`);
    }
  }
  if (options.onError !== undefined && typeof options.onError !== "function") {
    throw new TypeError(`onError must be a function, received ${shown(options.onError)}`);
  }
  if (options.exposeErrors !== undefined && typeof options.exposeErrors !== "boolean") {
    throw new TypeError(`exposeErrors must be a boolean, received ${shown(options.exposeErrors)}`);
  }
  const module = checkPool(options);
  if (options.nats !== undefined) checkNatsOptions("serve", options.nats);
  // The pool runs before the first client can connect: no command meant for it runs inline.
  const host: PoolHost = { connections: () => [], failed: () => {} };
  const pool = module === undefined ? undefined : await Pool.start(
    options.workers!,
    module,
    options.exposeErrors === true,
    host,
  );
  let server: Server<C>;
  try {
    server = new Server(icId, handlers, options, pool, host);
  } catch (e) {
    await pool?.close();
    throw e;
  }
  if (options.nats !== undefined) {
    try {
      await server[serveNats](options.nats);
    } catch (e) {
      await server.close();
      throw e;
    }
  }
  return server;
}

/** Checks the pool's options; returns the module's URL when there is a pool. */
function checkPool(options: ServeOptions): string | undefined {
  const { workers = 0, module, inline } = options;
  if (!Number.isInteger(workers) || workers < 0 || workers > MAX_WORKERS) {
    throw new RangeError(
      `workers must be an integer from 0 to ${MAX_WORKERS}, received ${shown(workers)}`,
    );
  }
  if (inline !== undefined && typeof inline !== "boolean") {
    throw new TypeError(`inline must be a boolean, received ${shown(inline)}`);
  }
  if (workers === 0) {
    if (module !== undefined) {
      throw new TypeError(`module ${String(module)} needs workers: pass workers >= 1`);
    }
    return undefined;
  }
  if (module instanceof URL) return module.href;
  if (typeof module !== "string" || module === "") {
    throw new TypeError(
      `module must be the URL or path of the pool's handler module, received ${
        module === "" ? '""' : typeof module
      }`,
    );
  }
  // A URL as it is; a path, relative to the working directory, as a file URL.
  return URL.canParse(module) ? module : pathToFileURL(resolve(module)).href;
}
