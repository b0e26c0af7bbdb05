/**
 * A client that reaches its ic id through NATS: {@linkcode connect} with the `nats` option.
 *
 * @module
 */

import {
  answeredFailure,
  checkCommand,
  checkTimeout,
  type Completion,
  type ExecuteOptions,
  type ExecuteResult,
  failed,
} from "./client.ts";
import { IpcError } from "./errors.ts";
import {
  checkSubscribed,
  connectNats,
  maxPayload,
  type NatsConnection,
  type NatsMsg,
  type NatsOptions,
  type NatsSubscription,
  subjects,
} from "./nats.ts";
import {
  decodeAnswer,
  encodeCommand,
  encodeGoodbye,
  NATS_FRAME,
  newSession,
  sessionName,
} from "./nats_frame.ts";
import { Status, statusName } from "./status.ts";

/**
 * A command's deadline through NATS when neither it nor its client gives one (60 s): nothing
 * tells a client that the server running its command died, so no command waits forever.
 */
export const NATS_DEFAULT_TIMEOUT = 60_000;

/**
 * Deadlines are kept in buckets of this many milliseconds, one timer a bucket: a timer per
 * command cost as much as the rest of a command (profiled with 64 in flight).
 */
const BUCKET_MS = 5;

/** The answers' subscription of a {@linkcode NatsClient} (internal). */
const replies: unique symbol = Symbol("shmcall nats replies");

/** A command sent and not answered yet: settles once, whichever comes first. */
interface InFlight {
  /** The answer came: a frame, or NATS's word that no one listens. */
  answered(msg: NatsMsg): void;
  fail(error: IpcError): void;
  /** The command's timeout, for its message. */
  timeout: number;
  /** Its deadline's bucket. */
  bucket: number;
}

/**
 * A client of an ic id served through NATS, on any host that reaches the same NATS servers.
 * Create one with {@linkcode connect} and its `nats` option.
 *
 * Its {@linkcode NatsClient.execute} takes the options of {@linkcode Client.execute} and is
 * asynchronous only: a command's areas are arrays of their own (no memory is shared across
 * hosts), sent in one NATS request and answered in its reply.
 */
export class NatsClient implements Disposable, AsyncDisposable {
  readonly #icId: string;
  readonly #nc: NatsConnection;
  readonly #subject: string;
  readonly #goodbyes: string;
  readonly #session = newSession();
  readonly #timeout: number | undefined;
  /** The commands in flight, by the token their reply subject ends with. */
  readonly #inFlight = new Map<number, InFlight>();
  #nextToken = 0;
  /** Where answers come: this prefix, then a command's token. */
  readonly #inbox: string;
  readonly #replies: NatsSubscription;
  /** Commands by deadline bucket ({@linkcode BUCKET_MS}), each bucket with one timer. */
  readonly #deadlines = new Map<
    number,
    { commands: InFlight[]; open: number; timer: ReturnType<typeof setTimeout> }
  >();
  /** Why commands fail at once: this client closed, or its NATS connection did. */
  #ended: IpcError | undefined;
  /** The NATS connection's end, once {@linkcode NatsClient.close} began it. */
  #closing: Promise<void> | undefined;
  /** The NATS connection is down, and the NATS client reconnecting. */
  #down = false;

  /** @internal Made by {@linkcode connectThroughNats}. */
  constructor(
    icId: string,
    nc: NatsConnection,
    timeout: number | undefined,
    inboxPrefix: unknown,
  ) {
    this.#icId = icId;
    this.#nc = nc;
    const s = subjects(icId);
    this.#subject = s.commands;
    this.#goodbyes = s.goodbyes;
    this.#timeout = timeout;
    // One subscription for every answer: a reply subject per command under it, as NATS's own
    // request/reply does, without its timer and bookkeeping per request.
    const prefix = typeof inboxPrefix === "string" && inboxPrefix !== "" ? inboxPrefix : "_INBOX";
    this.#inbox = `${prefix}.${sessionName(this.#session)}.`;
    this.#replies = nc.subscribe(`${this.#inbox}*`, {
      callback: (error, msg) => {
        if (error !== null) return;
        const command = this.#inFlight.get(Number(msg.subject.slice(this.#inbox.length)));
        command?.answered(msg);
      },
    });
    void this.#watch();
    void nc.closed().then((e) => {
      this.#ended ??= new IpcError(
        Status.PEER_TERMINATED,
        `the NATS connection of the client of '${icId}' closed${
          e instanceof Error ? `: ${e.message}` : ""
        }`,
      );
      this.#failAll(this.#ended);
    });
  }

  /** Fails what is in flight when the NATS connection drops: it may have run, or not. */
  async #watch(): Promise<void> {
    try {
      for await (const s of this.#nc.status()) {
        if (s.type === "reconnect") this.#down = false;
        else if (s.type === "disconnect" || s.type === "reconnecting") {
          this.#down = true;
          this.#failAll(
            new IpcError(
              Status.PEER_TERMINATED,
              `the NATS connection of the client of '${this.#icId}' was lost with the command in flight: it may have run (PEER_TERMINATED)`,
            ),
          );
        }
      }
    } catch {
      // The NATS client ended its status stream with an error: `closed()` tells the rest.
    }
  }

  #failAll(error: IpcError): void {
    const all = [...this.#inFlight.values()];
    this.#inFlight.clear();
    for (const c of all) c.fail(error);
  }

  /** Fails `command` with `TIMED_OUT` once `timeout` ms passed, unless it settled before. */
  #expire(command: InFlight, timeout: number): void {
    const at = Math.ceil((performance.now() + timeout) / BUCKET_MS);
    command.bucket = at;
    const bucket = this.#deadlines.get(at);
    if (bucket !== undefined) {
      bucket.commands.push(command);
      bucket.open++;
      return;
    }
    const timer = setTimeout(() => {
      const expired = this.#deadlines.get(at);
      this.#deadlines.delete(at);
      for (const c of expired?.commands ?? []) c.fail(this.#timedOut(c.timeout));
    }, Math.max(0, at * BUCKET_MS - performance.now()));
    this.#deadlines.set(at, { commands: [command], open: 1, timer });
  }

  /** `command` settled: its bucket's timer goes once none of the bucket is left. */
  #settled(command: InFlight): void {
    const bucket = this.#deadlines.get(command.bucket);
    if (bucket !== undefined && --bucket.open === 0) {
      clearTimeout(bucket.timer);
      this.#deadlines.delete(command.bucket);
    }
  }

  /** The ic id this client reaches. */
  get icId(): string {
    return this.#icId;
  }

  /** @internal Its answers' subscription. */
  get [replies](): NatsSubscription {
    return this.#replies;
  }

  /** Whether {@linkcode NatsClient.close} was called. */
  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /**
   * Issues one command through NATS, **asynchronously**: `completion` is required (a
   * synchronous call would hold the thread for a network round trip, and throws a `TypeError`
   * saying so). The options and callbacks are {@linkcode Client.execute}'s; the areas the
   * callbacks see are arrays of their own.
   *
   * `timeout` (or the client's, else {@linkcode NATS_DEFAULT_TIMEOUT}) fails the command
   * `TIMED_OUT` when no answer came in time: it may have run. An abort of `signal` cancels a command not sent yet; once sent, a command is
   * the server's, and an abort has no effect. With no server of the ic id on NATS, the command
   * fails `NOT_FOUND`; when the NATS connection drops with the command in flight,
   * `PEER_TERMINATED`, and so does a command issued while the NATS client reconnects (later ones
   * go through once it has).
   *
   * @throws {TypeError | RangeError} On a bad argument, naming it, and for an area larger than
   * a NATS message holds (synchronously).
   */
  execute<C>(
    code: number,
    options: ExecuteOptions<C> & { completion: Completion<C> },
  ): Promise<ExecuteResult>;
  /** Not through NATS: throws a `TypeError` (pass `completion`). */
  execute(code: number, options?: ExecuteOptions<unknown> & { completion?: undefined }): never;
  execute<C>(code: number, options?: ExecuteOptions<C>): Promise<ExecuteResult> {
    const o = (options ?? {}) as ExecuteOptions<unknown>;
    const [inputLength, outputLength] = checkCommand(code, o);
    if (o.completion === undefined) {
      throw new TypeError(
        `execute through NATS is asynchronous only: pass completion (a synchronous call to '${this.#icId}' would hold this thread for a network round trip)`,
      );
    }
    const most = maxPayload(this.#nc) - NATS_FRAME.HEADER;
    const sent = inputLength + (o.outputPrepare === undefined ? 0 : outputLength);
    if (sent > most || outputLength > most) {
      const [name, value] = outputLength > most
        ? ["outputLength", outputLength]
        : ["inputLength", inputLength];
      throw new RangeError(
        `${name} ${value} is too large for NATS: its server takes messages of at most ${
          maxPayload(this.#nc)
        } bytes, ${NATS_FRAME.HEADER} of them the frame's header${
          o.outputPrepare === undefined ? "" : " (a prepared output area travels too)"
        }`,
      );
    }
    try {
      return this.#send(code, o, inputLength, outputLength);
    } catch (e) {
      if (e instanceof IpcError) failed(o, e.status);
      return Promise.reject(e);
    }
  }

  #send(
    code: number,
    o: ExecuteOptions<unknown>,
    inputLength: number,
    outputLength: number,
  ): Promise<ExecuteResult> {
    if (this.#ended !== undefined) throw this.#ended;
    if (this.#down) {
      throw new IpcError(
        Status.PEER_TERMINATED,
        `the NATS connection of the client of '${this.#icId}' is down and reconnecting: the command was not sent (PEER_TERMINATED)`,
      );
    }
    if (o.signal?.aborted) {
      throw new IpcError(
        Status.CANCELLED,
        `the command to '${this.#icId}' was aborted before it was sent (CANCELLED)`,
      );
    }
    const input = new Uint8Array(inputLength);
    if (o.inputPrepare !== undefined) o.inputPrepare(input, o.input);
    else if (o.input !== undefined) input.set(o.input);
    let prepared: Uint8Array | undefined;
    if (o.outputPrepare !== undefined) {
      prepared = new Uint8Array(outputLength);
      o.outputPrepare(prepared, o.output);
    }
    // After the callbacks, which may have closed this client.
    if (this.#ended !== undefined) throw this.#ended;
    const frame = encodeCommand(code, o.inline, this.#session, input, outputLength, prepared);
    const timeout = o.timeout ?? this.#timeout ?? NATS_DEFAULT_TIMEOUT;
    const token = this.#nextToken++;
    return new Promise<ExecuteResult>((resolve, reject) => {
      let settled = false;
      const command: InFlight = {
        timeout,
        bucket: 0,
        answered: (msg) => {
          if (settled) return;
          if (msg.headers?.hasError && msg.headers.code === 503) {
            command.fail(this.#noResponders());
            return;
          }
          settled = true;
          this.#inFlight.delete(token);
          this.#settled(command);
          try {
            const result = this.#result(o, msg.data, input, outputLength);
            o.completion!(result, o.context);
            resolve(result);
          } catch (e) {
            if (e instanceof IpcError) failed(o, e.status);
            reject(e);
          }
        },
        fail: (error) => {
          if (settled) return;
          settled = true;
          this.#inFlight.delete(token);
          this.#settled(command);
          failed(o, error.status);
          reject(error);
        },
      };
      this.#inFlight.set(token, command);
      this.#expire(command, timeout);
      try {
        this.#nc.publish(this.#subject, frame, { reply: `${this.#inbox}${token}` });
      } catch (e) {
        command.fail(this.#sendFailure(e));
      }
    });
  }

  /** The result of an answer, after the post callbacks; throws the failure it carries. */
  #result(
    o: ExecuteOptions<unknown>,
    frame: Uint8Array,
    input: Uint8Array,
    outputLength: number,
  ): ExecuteResult {
    const a = decodeAnswer(frame, outputLength);
    if ("why" in a) {
      throw new IpcError(
        a.status,
        `the answer from '${this.#icId}' through NATS: ${a.why} (${statusName(a.status)})`,
      );
    }
    if (a.status < 0) {
      const area = a.status === Status.OUTPUT_OVERFLOW ? new Uint8Array(outputLength) : a.output;
      throw answeredFailure(this.#icId, a.status, a.length, area);
    }
    // An array of its own (a copy: the message's bytes belong to the NATS client, and its
    // arrays are Buffers, whose slice() is a view).
    const area = new Uint8Array(a.output);
    o.inputPost?.(input, o.input);
    let output: Uint8Array;
    if (o.outputPost !== undefined) {
      const r = o.outputPost(area, o.output);
      output = r instanceof Uint8Array ? r : (o.output ?? new Uint8Array(0));
    } else if (o.output !== undefined) {
      o.output.set(area);
      output = a.length === o.output.length ? o.output : o.output.subarray(0, a.length);
    } else {
      output = area;
    }
    return { status: a.status, length: a.length, output };
  }

  #noResponders(): IpcError {
    return new IpcError(
      Status.NOT_FOUND,
      `no server of '${this.#icId}' answers through NATS (no responders on ${this.#subject}) (NOT_FOUND)`,
    );
  }

  #timedOut(timeout: number): IpcError {
    return new IpcError(
      Status.TIMED_OUT,
      `the command to '${this.#icId}' through NATS had no answer within ${timeout} ms: it may have run (TIMED_OUT)`,
    );
  }

  /** The library failure a publish that threw makes (the NATS connection closed). */
  #sendFailure(e: unknown): IpcError {
    const message = (e as { message?: unknown })?.message;
    return this.#ended ?? new IpcError(
      Status.PEER_TERMINATED,
      `the command to '${this.#icId}' could not be sent through NATS: ${
        typeof message === "string" ? message : String(e)
      } (PEER_TERMINATED)`,
    );
  }

  /**
   * Closes the client: commands in flight fail with `CLOSED`, the servers that saw it are told
   * (their `close` handlers run), and the NATS connection closes. Idempotent.
   */
  close(): void {
    if (this.#closing !== undefined) return;
    this.#ended = new IpcError(Status.CLOSED, `the client of '${this.#icId}' was closed`);
    this.#failAll(this.#ended);
    const nc = this.#nc;
    this.#closing = (async () => {
      try {
        if (!nc.isClosed()) {
          this.#replies.unsubscribe();
          nc.publish(this.#goodbyes, encodeGoodbye(this.#session));
          await nc.flush();
        }
      } catch {
        // Gone already: its servers time the session out.
      }
      await nc.close().catch(() => {});
    })();
  }

  /** Closes the client ({@linkcode NatsClient.close}). */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Closes the client and waits for its NATS connection to close. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.#closing;
  }
}

/** {@linkcode connect} with the `nats` option: a client that reaches `icId` through NATS only. */
export async function connectThroughNats(
  icId: string,
  nats: NatsOptions,
  timeout: unknown,
): Promise<NatsClient> {
  checkTimeout("the timeout of connect", timeout);
  subjects(icId);
  const nc = await connectNats(nats, `shmcall client of ${icId}`);
  const client = new NatsClient(icId, nc, timeout as number | undefined, nats.inboxPrefix);
  try {
    // Its answers' subscription, unless NATS's authorization refused it.
    await nc.flush();
    await checkSubscribed([client[replies]], `the client of '${icId}'`);
  } catch (e) {
    await client[Symbol.asyncDispose]();
    throw e;
  }
  return client;
}
