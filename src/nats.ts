/**
 * What the NATS bridge shares: the `nats` option, the NATS client library (loaded on first use,
 * so that a process that never crosses hosts never loads it), and the subjects an ic id maps to.
 * The client side is `nats_client.ts`, the server side `nats_server.ts`.
 *
 * @module
 */

import { IpcError } from "./errors.ts";
import { Status, statusName } from "./status.ts";
import { shown } from "./validate.ts";

/** The npm package of the NATS client, and the version this library is tested with. */
export const NATS_PACKAGE = "@nats-io/transport-node";
export const NATS_VERSION = "3.4.0";

/**
 * The `nats` option of {@linkcode serve}, {@linkcode connect}, and the event queues: where the
 * NATS servers are, and any other connection option of `@nats-io/transport-node` (`user` and
 * `pass`, `token`, `authenticator`, `tls`, `reconnect`, `maxReconnectAttempts`, …), passed
 * through as they are.
 */
export interface NatsOptions {
  /** The NATS servers: `"host:port"`, `"nats://host:port"`, `"tls://host:port"`, or a list. */
  servers: string | string[];
  /** Any other connection option of `@nats-io/transport-node`, passed through. */
  [option: string]: unknown;
}

/** A message, as the bridge uses it. */
export interface NatsMsg {
  subject: string;
  reply?: string;
  data: Uint8Array;
  /** Present on NATS's own replies: a status 503 says that no one listens on a subject. */
  headers?: { hasError: boolean; code: number };
  respond(data?: Uint8Array): boolean;
}

/** A subscription, as the bridge uses it. */
export interface NatsSubscription {
  unsubscribe(): void;
  drain(): Promise<void>;
  isClosed(): boolean;
  /** Resolves when it closed: to the error that closed it, if one did. */
  closed: Promise<void | Error>;
}

/** A connection to NATS, as the bridge uses it (a part of `NatsConnection`). */
export interface NatsConnection {
  info?: { max_payload: number };
  subscribe(
    subject: string,
    options: { queue?: string; callback: (error: Error | null, msg: NatsMsg) => void },
  ): NatsSubscription;
  publish(subject: string, data?: Uint8Array, options?: { reply?: string }): void;
  request(subject: string, data: Uint8Array, options: { timeout: number }): Promise<NatsMsg>;
  flush(): Promise<void>;
  drain(): Promise<void>;
  close(): Promise<void>;
  closed(): Promise<void | Error>;
  isClosed(): boolean;
  status(): AsyncIterable<{ type: string }>;
}

interface NatsModule {
  connect(options: Record<string, unknown>): Promise<NatsConnection>;
}

let loaded: Promise<NatsModule> | undefined;

/** The NATS client library, loaded once. */
function natsModule(): Promise<NatsModule> {
  // Deno takes the package from the npm registry on first use; Node.js from the packages
  // installed beside this one.
  const specifier = "Deno" in globalThis ? `npm:${NATS_PACKAGE}@${NATS_VERSION}` : NATS_PACKAGE;
  loaded ??= (import(specifier) as Promise<NatsModule>).catch((e) => {
    loaded = undefined;
    throw new Error(
      `the nats option needs the npm package ${NATS_PACKAGE} (${specifier}), which did not load: ${
        e instanceof Error ? e.message : String(e)
      }`,
      { cause: e },
    );
  });
  return loaded;
}

/** Throws a TypeError naming `where` unless `nats` is a usable {@linkcode NatsOptions}. */
export function checkNatsOptions(where: string, nats: unknown): asserts nats is NatsOptions {
  if (typeof nats !== "object" || nats === null || Array.isArray(nats)) {
    throw new TypeError(
      `the nats option of ${where} must be an object with servers, received ${shown(nats)}`,
    );
  }
  const { servers } = nats as { servers?: unknown };
  const ok = typeof servers === "string" ||
    (Array.isArray(servers) && servers.length > 0 &&
      servers.every((s) => typeof s === "string"));
  if (!ok || servers === "") {
    throw new TypeError(
      `nats.servers of ${where} must be a server ("host:port") or a list of them, received ${
        shown(servers)
      }`,
    );
  }
}

/**
 * Connects to NATS with the user's options; `name` names the connection unless they do.
 *
 * @throws {IpcError} `PERMISSION_DENIED` when NATS refused the credentials, `IO_ERROR` when no
 * NATS server could be reached.
 */
export async function connectNats(options: NatsOptions, name: string): Promise<NatsConnection> {
  const nats = await natsModule();
  try {
    return await nats.connect({ name, ...options });
  } catch (e) {
    const error = e as { name?: unknown; message?: unknown };
    const denied = error?.name === "AuthorizationError" ||
      error?.name === "UserAuthenticationExpiredError";
    const status = denied ? Status.PERMISSION_DENIED : Status.IO_ERROR;
    throw new IpcError(
      status,
      `could not connect to NATS at ${shown(options.servers)}: ${
        typeof error?.message === "string" ? error.message : String(e)
      } (${statusName(status)})`,
    );
  }
}

/**
 * Throws `PERMISSION_DENIED` when NATS refused one of `subs` (its authorization), which is closed
 * once a flush after subscribing returned; `what` names who subscribed.
 */
export async function checkSubscribed(subs: NatsSubscription[], what: string): Promise<void> {
  for (const sub of subs) {
    if (!sub.isClosed()) continue;
    const why = await sub.closed;
    throw new IpcError(
      Status.PERMISSION_DENIED,
      `NATS refused ${what} its subscriptions: ${
        why instanceof Error ? why.message : "closed"
      } (PERMISSION_DENIED)`,
    );
  }
}

/** The largest message the NATS server takes (its `max_payload`), 1 MiB when it does not say. */
export function maxPayload(nc: NatsConnection): number {
  const most = nc.info?.max_payload;
  return typeof most === "number" && Number.isInteger(most) && most > 0 ? most : 1 << 20;
}

/**
 * The subjects of ic id `icId`: its commands (in a queue group of its name) and goodbyes.
 *
 * @throws {RangeError} For an ic id that makes no NATS subject: a `.` at either end or two in a
 * row (an empty token).
 */
export function subjects(icId: string): { commands: string; goodbyes: string; queue: string } {
  if (icId.split(".").includes("")) {
    throw new RangeError(
      `ic id ${
        JSON.stringify(icId)
      } cannot be reached through NATS: its subject would hold an empty token (a '.' at either end, or two in a row)`,
    );
  }
  return { commands: `shmcall.cmd.${icId}`, goodbyes: `shmcall.bye.${icId}`, queue: icId };
}
