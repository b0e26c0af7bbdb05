/**
 * The public API, the same for every runtime: `mod.ts` (Deno) and `node/index.ts` (Node.js)
 * each bind their runtime's core first, then export this.
 *
 * @module
 */

export { Client, connect } from "./client.ts";
export type {
  Completion,
  ConnectOptions,
  ExecuteOptions,
  ExecuteResult,
  ReconnectOptions,
} from "./client.ts";
export { MAX_WORKERS, serve, Server } from "./server.ts";
export type { ConnInfo, ExecResult, Handlers, ServeOptions, ServerCommand } from "./server.ts";
export type { Exec } from "./exec.ts";
export type { Latency, ServerStats, Stats } from "./stats.ts";
export { LIST_HEADER_SIZE, LIST_MAGIC, listSize, readList, writeList } from "./layout.ts";
export type { ListView } from "./layout.ts";
export { IpcError } from "./errors.ts";
export { NATS_DEFAULT_TIMEOUT, NatsClient } from "./nats_client.ts";
export type { NatsOptions } from "./nats.ts";
export { NATS_FRAME } from "./nats_frame.ts";
export { NatsConsumer, NatsProducer } from "./nats_queue.ts";
export { Status, statusName } from "./status.ts";
export type { StatusName } from "./status.ts";
export { protocolVersion } from "./version.ts";
export { socketDir } from "./endpoint.ts";
export {
  Consumer,
  EventQueue,
  MAX_CONSUMER_CAPACITY,
  MAX_NOTIFICATION_DATA,
  openConsumer,
  openProducer,
  Producer,
  serveEventQueue,
} from "./queue.ts";
export type {
  ConsumerOptions,
  ConsumerStats,
  Events,
  Notification,
  QueueOptions,
  QueueStats,
} from "./queue.ts";
