/**
 * The server side of the NATS bridge: a server with the `nats` option also takes commands from
 * NATS, in a queue group of its ic id, and runs them with the same handlers as its local ones.
 *
 * A NATS client is a **session** here (its id travels in every command): the first command of a
 * session runs `open`, its goodbye — or {@linkcode SESSION_IDLE_MS} without a command, for a
 * client that died — runs `close` once its commands drained. Commands run on the server's
 * thread, one `exec` each as it arrives.
 *
 * @module
 */

import { type Answerer, type ConnInfo, failedLength, reasonOf, runExec } from "./exec.ts";
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
  type CommandFrame,
  decodeCommand,
  decodeGoodbye,
  encodeAnswer,
  NATS_FRAME,
} from "./nats_frame.ts";
import type { Handlers } from "./server.ts";
import { LANE_COUNT } from "./native.ts";
import { Status } from "./status.ts";
import { clearInterval, setInterval } from "node:timers";

/** A session with no command for this long is closed: its client may have died (10 minutes). */
export const SESSION_IDLE_MS = 600_000;
/** How often sessions are looked at for {@linkcode SESSION_IDLE_MS}. */
const SWEEP_MS = 30_000;
/** Connection ids of NATS sessions start here, apart from local ones. */
const FIRST_SESSION_ID = 2 ** 40;

const NOTHING = new Uint8Array(0);

/** What the bridge needs of its server. */
export interface BridgeHost<C> {
  readonly handlers: Handlers<C>;
  readonly exposeErrors: boolean;
  /** Whether the server quiesces: new commands are answered `SERVER_QUIESCING`. */
  quiescing(): boolean;
  /** A command was handed to `exec`; {@linkcode BridgeHost.ended} follows once. */
  began(): void;
  ended(): void;
  /** NATS ended a subscription of the server's with `error`: it no longer serves NATS. */
  lost(error: Error): void;
  /** Adds what the bridge counted (positions of `LANE_COUNT`) to the server's counters. */
  count(words: Float64Array): void;
  /** Reports a handler's failure as the server does. */
  report(
    error: unknown,
    conn: ConnInfo,
    command: { code: number } | undefined,
    handler: string,
  ): void;
}

interface Session<C> {
  key: string;
  info: ConnInfo;
  context: C | undefined;
  /** Commands that came while `open` ran. */
  waiting: { msg: NatsMsg; frame: CommandFrame }[] | undefined;
  /** Commands handed to `exec` and not answered. */
  pending: number;
  /** When its last command came (`performance.now()`). */
  last: number;
  /** `close` is due once `pending` is 0. */
  ending: boolean;
}

/**
 * What the bridge counts for the server's counters, as a lane does (`LANE_COUNT`): commands,
 * bytes, failures by status, and each command's time from its arrival to its answer.
 */
class Counted {
  readonly words = new Float64Array(LANE_COUNT.LEN);

  /** A command of `inputLength` bytes arrived. */
  started(inputLength: number): void {
    this.words[LANE_COUNT.COMMANDS]!++;
    this.words[LANE_COUNT.BYTES_IN]! += inputLength;
  }

  /** It was answered `status` with `length` bytes, `ms` after it arrived. */
  finished(status: number, length: number, ms: number): void {
    const w = this.words;
    w[LANE_COUNT.FINISHED]!++;
    if (status < 0) {
      w[LANE_COUNT.FAILURES - status]!++;
      return;
    }
    w[LANE_COUNT.BYTES_OUT]! += length;
    const n = w[LANE_COUNT.SAMPLES]!;
    if (n < LANE_COUNT.MAX_SAMPLES) {
      w[LANE_COUNT.FIRST_SAMPLE + n] = ms * 1e6;
      w[LANE_COUNT.SAMPLES] = n + 1;
    }
  }

  /** Whether the room for samples is full: time to report. */
  get full(): boolean {
    return this.words[LANE_COUNT.SAMPLES] === LANE_COUNT.MAX_SAMPLES;
  }

  /** Hands what was counted to `report` (nothing, if nothing), then starts over. */
  report(report: (words: Float64Array) => void): void {
    if (this.words[LANE_COUNT.COMMANDS] === 0 && this.words[LANE_COUNT.FINISHED] === 0) return;
    report(this.words);
    this.words.fill(0);
  }
}

/** One command's way back: answered once, and not at all after the bridge closed. */
interface Reply<C> {
  msg: NatsMsg;
  session: Session<C>;
  /** The command's operation code, for reports. */
  code: number;
  /** When it arrived (`performance.now()`). */
  arrived: number;
  output: Uint8Array;
  answered: boolean;
}

/** See the module doc. */
export class NatsBridge<C> {
  readonly #nc: NatsConnection;
  readonly #host: BridgeHost<C>;
  readonly #sessions = new Map<string, Session<C>>();
  readonly #inFlight = new Set<Reply<C>>();
  readonly #subscriptions: NatsSubscription[];
  readonly #sweep: ReturnType<typeof setInterval>;
  #nextId = FIRST_SESSION_ID;
  #closed = false;
  /** `start` returned: a subscription's end is told from now on. */
  #serving = false;
  readonly #counted = new Counted();
  readonly #answerer: Answerer<Reply<C>> = {
    answer: (reply, _command, status, length) => {
      if (reply.output.length < length) {
        // Only a detached area is shorter than the length `settle` checked against it.
        const error = new TypeError(
          "exec detached the memory of its output area (transfer(), structuredClone or postMessage with a transfer list): its output is lost",
        );
        this.#host.report(error, reply.session.info, { code: reply.code }, "exec (NATS)");
        this.#failed(reply, Status.HANDLER_FAILED, 0, error);
        return;
      }
      this.#answer(reply, status, length, reply.output.subarray(0, length));
    },
    failed: (reply, _command, status, wanted, code, error, output) => {
      this.#host.report(error, reply.session.info, { code }, "exec (NATS)");
      this.#failed(reply, status, wanted, error, output);
    },
    async: () => {},
  };

  private constructor(icId: string, nc: NatsConnection, host: BridgeHost<C>) {
    this.#nc = nc;
    this.#host = host;
    const s = subjects(icId);
    this.#subscriptions = [
      nc.subscribe(s.commands, {
        queue: s.queue,
        callback: (error, msg) => {
          if (error === null) this.#command(msg);
          else this.#lost(error);
        },
      }),
      nc.subscribe(s.goodbyes, {
        callback: (error, msg) => {
          if (error === null) this.#goodbye(msg);
          else this.#lost(error);
        },
      }),
    ];
    this.#sweep = setInterval(() => this.#closeIdle(), SWEEP_MS);
    this.#sweep.unref();
  }

  /** Connects to NATS and subscribes; resolves once NATS has the subscriptions. */
  static async start<C>(
    icId: string,
    nats: NatsOptions,
    host: BridgeHost<C>,
  ): Promise<NatsBridge<C>> {
    subjects(icId);
    const nc = await connectNats(nats, `shmcall server of ${icId}`);
    const bridge = new NatsBridge(icId, nc, host);
    try {
      // Subscribed at the NATS server once this resolves: a request sent after `serve`
      // returned finds this server. A subscription NATS refused is closed by then.
      await nc.flush();
      await checkSubscribed(bridge.#subscriptions, `the server of '${icId}'`);
      bridge.#serving = true;
    } catch (e) {
      await bridge.close();
      throw e;
    }
    return bridge;
  }

  /** NATS ended a subscription with `error` (once serving): said, not silent. */
  #lost(error: Error): void {
    // Before `start` returned, `serve` fails with it instead.
    if (this.#closed || !this.#serving) return;
    this.#host.lost(error);
  }

  /** A command from NATS. */
  #command(msg: NatsMsg): void {
    // A command with nowhere to answer is not one: nothing runs.
    if (msg.reply === undefined || msg.reply === "") return;
    const frame = decodeCommand(msg.data, maxPayload(this.#nc) - NATS_FRAME.HEADER);
    if ("why" in frame) {
      this.#respond(msg, encodeAnswer(frame.status, 0, NOTHING));
      return;
    }
    if (this.#closed || this.#host.quiescing()) {
      this.#respond(msg, encodeAnswer(Status.SERVER_QUIESCING, 0, NOTHING));
      this.#counted.started(frame.input.length);
      this.#counted.finished(Status.SERVER_QUIESCING, 0, 0);
      return;
    }
    let session = this.#sessions.get(frame.session);
    if (session === undefined) session = this.#open(frame.session);
    session.last = performance.now();
    if (session.waiting !== undefined) session.waiting.push({ msg, frame });
    else this.#run(session, msg, frame);
  }

  /** A new session: runs `open`, holding its commands until it settles. */
  #open(key: string): Session<C> {
    const info: ConnInfo = { id: this.#nextId++, pid: 0, uid: -1, session: key };
    const session: Session<C> = {
      key,
      info,
      context: undefined,
      waiting: [],
      pending: 0,
      last: performance.now(),
      ending: false,
    };
    this.#sessions.set(key, session);
    const accept = (context: C) => {
      session.context = context;
      const waiting = session.waiting ?? [];
      session.waiting = undefined;
      for (const { msg, frame } of waiting) this.#run(session, msg, frame);
      this.#closeIfDone(session);
    };
    const refuse = (error: unknown) => {
      this.#host.report(error, info, undefined, "open (NATS)");
      const reason = this.#host.exposeErrors ? new TextEncoder().encode(reasonOf(error)) : NOTHING;
      for (const { msg, frame } of session.waiting ?? []) {
        const said = reason.subarray(0, frame.outputLength);
        this.#respond(msg, encodeAnswer(Status.HANDLER_FAILED, said.length, said));
      }
      // Not admitted: its next command tries `open` again.
      if (this.#sessions.get(key) === session) this.#sessions.delete(key);
    };
    const open = this.#host.handlers.open;
    if (open === undefined) {
      accept(undefined as C);
      return session;
    }
    try {
      const made = open(info);
      if (made instanceof Promise) made.then(accept, refuse);
      else accept(made);
    } catch (e) {
      refuse(e);
    }
    return session;
  }

  #run(session: Session<C>, msg: NatsMsg, frame: CommandFrame): void {
    if (this.#closed) {
      this.#respond(msg, encodeAnswer(Status.PEER_TERMINATED, 0, NOTHING));
      return;
    }
    // Arrays of their own: the message's bytes belong to the NATS client.
    const output = new Uint8Array(frame.outputLength);
    if (frame.output !== undefined) output.set(frame.output);
    const reply: Reply<C> = {
      msg,
      session,
      code: frame.code,
      arrived: performance.now(),
      output,
      answered: false,
    };
    this.#counted.started(frame.input.length);
    session.pending++;
    this.#inFlight.add(reply);
    this.#host.began();
    runExec(
      this.#host.handlers.exec,
      // A copy (new Uint8Array): the NATS client's arrays are Buffers, whose slice() is a view.
      { code: frame.code, input: new Uint8Array(frame.input), output },
      session.info,
      session.context as C,
      0,
      null,
      this.#answerer,
      reply,
    );
  }

  #failed(
    reply: Reply<C>,
    status: number,
    wanted: number,
    error: unknown,
    output: Uint8Array = reply.output,
  ): void {
    const length = failedLength(status, wanted, error, output, this.#host.exposeErrors);
    const carried = status === Status.OUTPUT_OVERFLOW ? NOTHING : output.subarray(0, length);
    this.#answer(reply, status, length, carried);
  }

  /** Answers a command once; the session closes after its last one when it is due. */
  #answer(reply: Reply<C>, status: number, length: number, output: Uint8Array): void {
    if (reply.answered) return;
    reply.answered = true;
    this.#inFlight.delete(reply);
    this.#respond(reply.msg, encodeAnswer(status, length, output));
    this.#counted.finished(status, length, performance.now() - reply.arrived);
    if (this.#counted.full) this.report();
    const session = reply.session;
    session.pending--;
    this.#host.ended();
    this.#closeIfDone(session);
  }

  #respond(msg: NatsMsg, frame: Uint8Array): void {
    try {
      msg.respond(frame);
    } catch {
      // The NATS connection closed: the client's request fails on its side.
    }
  }

  /** A client's goodbye: its session closes once its commands drained. */
  #goodbye(msg: NatsMsg): void {
    const key = decodeGoodbye(msg.data);
    const session = key === undefined ? undefined : this.#sessions.get(key);
    if (session === undefined) return;
    session.ending = true;
    this.#closeIfDone(session);
  }

  #closeIfDone(session: Session<C>): void {
    if (!session.ending || session.pending > 0 || session.waiting !== undefined) return;
    if (this.#sessions.get(session.key) === session) this.#sessions.delete(session.key);
    try {
      const done = this.#host.handlers.close?.(session.info, session.context as C) as unknown;
      if (done instanceof Promise) {
        done.catch((e) => this.#host.report(e, session.info, undefined, "close (NATS)"));
      }
    } catch (e) {
      this.#host.report(e, session.info, undefined, "close (NATS)");
    }
  }

  /** Closes the sessions that had no command for {@linkcode SESSION_IDLE_MS}. */
  #closeIdle(): void {
    const before = performance.now() - SESSION_IDLE_MS;
    for (const session of [...this.#sessions.values()]) {
      if (session.last < before && session.pending === 0) {
        session.ending = true;
        this.#closeIfDone(session);
      }
    }
  }

  /**
   * Stops taking commands from NATS: those running are answered `PEER_TERMINATED` now (they may
   * finish, unheard), every session closes as its commands drain, and the NATS connection
   * closes. Idempotent.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#sweep);
    for (const sub of this.#subscriptions) {
      try {
        sub.unsubscribe();
      } catch {
        // The connection closed already.
      }
    }
    for (const reply of [...this.#inFlight]) {
      this.#answer(reply, Status.PEER_TERMINATED, 0, NOTHING);
    }
    for (const session of [...this.#sessions.values()]) {
      session.ending = true;
      this.#closeIfDone(session);
    }
    try {
      await this.#nc.flush();
    } catch {
      // Closed already.
    }
    await this.#nc.close().catch(() => {});
  }

  /** Adds what was counted since the last report to the server's counters. */
  report(): void {
    this.#counted.report((words) => this.#host.count(words));
  }
}
