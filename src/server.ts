/**
 * The server: {@linkcode serve} and its handlers.
 *
 * @module
 */

import * as hub from "./hub.ts";
import { EVENT, type Handle, type Mapping, native } from "./native.ts";
import { Status } from "./status.ts";
import { checkIcId, checkSocketDir, spinNanos } from "./validate.ts";

/** Who a connection is with. */
export interface ConnInfo {
  /** The server's id for this connection. */
  id: number;
  /** The client process's id. */
  pid: number;
  /** The client process's user id. */
  uid: number;
}

/** One command, as a handler sees it. */
export interface ServerCommand {
  /** The operation code. */
  code: number;
  /** The input area: a view of shared memory (a copy on the backup path). */
  input: Uint8Array;
  /** The output area, as long as its capacity. */
  output: Uint8Array;
}

/**
 * What `exec` answers: the output status (default 0) and length (default 0). A status outside
 * 0 to 2^31 - 1 or a length that is not an integer from 0 to 2^32 - 1 fails the command with
 * `HANDLER_FAILED`; a length beyond the output capacity fails it with `OUTPUT_OVERFLOW`.
 */
export interface ExecResult {
  /** The output status, the server's own (>= 0). */
  status?: number;
  /** The number of output bytes written. */
  length?: number;
}

/** A server's handlers. `C` is the user context `open` returns. */
export interface Handlers<C> {
  /** A client connected; the value (or what its Promise resolves to) is the connection's context. Throwing refuses the client. */
  open?: (conn: ConnInfo) => C | Promise<C>;
  /** One command; a throw or rejection fails that command with `HANDLER_FAILED`. */
  exec: (
    command: ServerCommand,
    conn: ConnInfo,
    context: C,
  ) => ExecResult | void | Promise<ExecResult | void>;
  /** The connection ended, after its commands drained; once per `open`. */
  close?: (conn: ConnInfo, context: C) => void;
}

/** How {@linkcode serve} serves. */
export interface ServeOptions {
  /** The socket directory; see {@linkcode ConnectOptions.socketDir}. */
  socketDir?: string;
  /** How long a connection's thread spins for the next command before it sleeps, in µs. */
  spinMicros?: number;
}

interface Connection<C> {
  info: ConnInfo;
  context: C;
  /** The client's segment, viewed once per connection. */
  segment: Mapping | undefined;
  /** Commands handed to `exec` and not yet answered. */
  pending: number;
  /** `close` is due once `pending` is 0 (the server was closed meanwhile). */
  closeWhenDrained: boolean;
}

const I32_MAX = 0x7fff_ffff;
const U32_MAX = 0xffff_ffff;

/**
 * A running server. Create one with {@linkcode serve}.
 *
 * @example Serving until disposed
 * ```ts
 * import { serve } from "../mod.ts";
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

  /** @internal Use {@linkcode serve}. */
  constructor(icId: string, handlers: Handlers<C>, options: ServeOptions) {
    this.#icId = icId;
    this.#handlers = handlers;
    this.#id = hub.register(this);
    try {
      const spin = spinNanos(options.spinMicros);
      this.#handle = native.serverServe(icId, options.socketDir, spin, this.#id);
    } catch (e) {
      hub.unregister(this.#id);
      throw e;
    }
    this.#key = hub.endpointKey(icId, options.socketDir);
    hub.served.add(this.#key);
    hub.hold();
  }

  /** The ic id served. */
  get icId(): string {
    return this.#icId;
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
    }
  }

  #open(token: number, info: ConnInfo): void {
    const accept = (context: C) => {
      const handle = this.#handle;
      if (handle === null) return;
      this.#connections.set(token, {
        info,
        context,
        segment: undefined,
        pending: 0,
        closeWhenDrained: false,
      });
      native.serverOpened(handle, token, 0);
    };
    const refuse = () => {
      if (this.#handle !== null) native.serverOpened(this.#handle, token, Status.HANDLER_FAILED);
    };
    try {
      const made = this.#handlers.open?.(info) as C | Promise<C>;
      if (made instanceof Promise) {
        hub.needTurn();
        made.then(accept, refuse);
      } else accept(made);
    } catch {
      refuse();
    }
  }

  #exec(token: number): void {
    const e = native.event;
    const command = e.handle;
    const conn = this.#connections.get(token);
    if (conn === undefined) {
      native.commandFinish(command, Status.HANDLER_FAILED, 0, null);
      return;
    }
    let input: Uint8Array | undefined;
    let output: Uint8Array | undefined;
    if (e.inSegment) {
      try {
        conn.segment ??= native.commandSegment(command);
      } catch {
        // The runtime could not view the segment: the command fails, the server goes on.
        native.commandFinish(command, Status.HANDLER_FAILED, 0, null);
        return;
      }
      input = conn.segment.at(e.inputOffset, e.inputLength);
      output = conn.segment.at(e.outputOffset, e.outputLength);
    }
    let backup: Uint8Array | null = null;
    if (input === undefined || output === undefined) {
      // The backup path: the command's buffers live only until it is finished, so the
      // handler gets arrays of its own; the output is copied back at finish.
      input = new Uint8Array(e.inputLength);
      native.commandReadInput(command, input);
      output = backup = new Uint8Array(e.outputLength);
    }
    const cmd: ServerCommand = { code: e.code >>> 0, input, output };
    conn.pending++;
    let r: ExecResult | void | Promise<ExecResult | void>;
    try {
      r = this.#handlers.exec(cmd, conn.info, conn.context);
    } catch {
      this.#answer(conn, command, Status.HANDLER_FAILED, 0, null);
      return;
    }
    if (!(r instanceof Promise)) {
      // The common case, with no closure made: answered before anything else runs.
      this.#settle(conn, command, r, backup);
      return;
    }
    hub.needTurn();
    // Exactly once, whatever the Promise does: resolve, reject, or resolve with nonsense.
    let answered = false;
    const settle = (r: ExecResult | void) => {
      if (answered) return;
      answered = true;
      this.#settle(conn, command, r, backup);
    };
    const fail = () => {
      if (answered) return;
      answered = true;
      this.#answer(conn, command, Status.HANDLER_FAILED, 0, null);
    };
    r.then(settle, fail).catch(fail);
  }

  /** Answers with what `exec` returned, if it makes sense, else with HANDLER_FAILED. */
  #settle(
    conn: Connection<C>,
    command: number,
    r: ExecResult | void,
    backup: Uint8Array | null,
  ): void {
    const status = r?.status ?? 0;
    const length = r?.length ?? 0;
    const valid = Number.isInteger(status) && status >= 0 && status <= I32_MAX &&
      Number.isInteger(length) && length >= 0 && length <= U32_MAX;
    if (valid) this.#answer(conn, command, status, length, backup);
    else this.#answer(conn, command, Status.HANDLER_FAILED, 0, null);
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
    if (--conn.pending === 0 && conn.closeWhenDrained) this.#runClose(conn);
  }

  #close(token: number): void {
    const conn = this.#connections.get(token);
    if (conn === undefined) return;
    this.#connections.delete(token);
    // `close` runs after the connection's commands have drained (SPEC.md §3).
    if (conn.pending > 0) conn.closeWhenDrained = true;
    else this.#runClose(conn);
  }

  #runClose(conn: Connection<C>): void {
    try {
      this.#handlers.close?.(conn.info, conn.context);
    } catch {
      // A failing close handler must not take the event loop with it.
    }
  }

  /**
   * Stops the server: no new clients; connections end (their clients see `PEER_TERMINATED`);
   * the socket is removed. Idempotent.
   */
  close(): Promise<void> {
    if (this.#handle !== null) {
      const handle = this.#handle;
      this.#handle = null;
      native.serverFree(handle);
      hub.served.delete(this.#key);
      // Closes of connections that were open: the core delivers them, but to no one now.
      for (const [token] of this.#connections) this.#close(token);
      hub.unregister(this.#id);
      hub.release();
    }
    return Promise.resolve();
  }

  /** Same as {@linkcode Server.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Serves `icId`: clients connecting to it run `handlers.open`, their commands run
 * `handlers.exec`, and `handlers.close` runs once per connection when it ends.
 *
 * @param icId The name to serve: 1 to 100 characters of `A-Z a-z 0-9 . _ -`.
 * @param handlers `open`, `exec` and `close`.
 * @param options The socket directory, the spin budget.
 * @returns The running server.
 * @throws {IpcError} `ALREADY_SERVED` when a live server has `icId`, `PERMISSION_DENIED`, …
 * @throws {TypeError | RangeError} On a bad argument, naming it.
 *
 * @example A server whose context counts each connection's commands
 * ```ts
 * import { connect, serve } from "../mod.ts";
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
export function serve<C = unknown>(
  icId: string,
  handlers: Handlers<C>,
  options: ServeOptions = {},
): Promise<Server<C>> {
  try {
    checkIcId(icId);
    checkSocketDir(options.socketDir);
    spinNanos(options.spinMicros);
    if (typeof handlers !== "object" || handlers === null) {
      throw new TypeError(
        `handlers must be an object, received ${handlers === null ? "null" : typeof handlers}`,
      );
    }
    if (typeof handlers.exec !== "function") {
      throw new TypeError(`handlers.exec must be a function, received ${typeof handlers.exec}`);
    }
    for (const name of ["open", "close"] as const) {
      const f = handlers[name];
      if (f !== undefined && typeof f !== "function") {
        throw new TypeError(`handlers.${name} must be a function, received ${typeof f}`);
      }
    }
    return Promise.resolve(new Server(icId, handlers, options));
  } catch (e) {
    return Promise.reject(e);
  }
}
