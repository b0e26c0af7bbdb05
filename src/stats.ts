/**
 * What {@linkcode Client.stats} and {@linkcode Server.stats} report. The core counts every
 * command with a few relaxed atomic adds and two clock reads, so the counters are always on;
 * a snapshot costs one call.
 *
 * @module
 */

import { STATS } from "./native.ts";
import { Status, type StatusName } from "./status.ts";

/** Round-trip times, in microseconds, to within 1/16 of each value (a log-linear histogram). */
export interface Latency {
  /**
   * Commands timed: those answered with a status >= 0 — on a Deno or Node client, each one sent
   * while no other was out, and one in 32 of those sent while others were; on a Deno or Node
   * server, each one that came alone, and one in 32 of the others.
   */
  count: number;
  /** Median. */
  p50: number;
  /** 90th percentile. */
  p90: number;
  /** 99th percentile. */
  p99: number;
  /** Longest. */
  max: number;
}

/** The counters of a client's connection or of a server, since it started. */
export interface Stats {
  /** Commands sent (client) or received (server). */
  commands: number;
  /** Commands sent or received and not answered yet. */
  inFlight: number;
  /** Input bytes sent (client) or received (server). */
  bytesIn: number;
  /** Output bytes received (client) or answered (server), of commands with a status >= 0. */
  bytesOut: number;
  /** Commands that took the backup path (the control socket) instead of shared memory. */
  backup: number;
  /** Commands that ended with a library status, by its name (only those that happened). */
  failures: Partial<Record<StatusName, number>>;
  /**
   * Times of commands answered with a status >= 0: for a client, from sending to the answer's
   * arrival; for a server, from receiving the command to answering it (queueing and `exec`).
   */
  latency: Latency;
}

/** A server's counters, and its state. */
export interface ServerStats extends Stats {
  /** Connections open. */
  connections: number;
  /** Workers in its pool (0: every command runs inline). */
  workers: number;
  /** Whether {@linkcode Server.quiesce} was called. */
  quiescing: boolean;
}

const NAMES = Object.entries(Status) as [StatusName, number][];

/** Reads a server's snapshot (its pool's size and state included). */
export function readServerStats(words: Float64Array): ServerStats {
  return {
    ...readStats(words),
    connections: words[STATS.CONNECTIONS]!,
    workers: words[STATS.WORKERS]!,
    quiescing: words[STATS.QUIESCING] === 1,
  };
}

/** Reads a snapshot the core wrote at the `STATS` positions. */
export function readStats(words: Float64Array): Stats {
  const failures: Partial<Record<StatusName, number>> = {};
  for (const [name, code] of NAMES) {
    const n = words[STATS.FAILURES - code] ?? 0;
    if (n > 0) failures[name] = n;
  }
  const us = (at: number) => words[at]! / 1000;
  return {
    commands: words[STATS.COMMANDS]!,
    inFlight: words[STATS.COMMANDS]! - words[STATS.FINISHED]!,
    bytesIn: words[STATS.BYTES_IN]!,
    bytesOut: words[STATS.BYTES_OUT]!,
    backup: words[STATS.BACKUP]!,
    failures,
    latency: {
      count: words[STATS.TIMED]!,
      p50: us(STATS.P50),
      p90: us(STATS.P90),
      p99: us(STATS.P99),
      max: us(STATS.MAX),
    },
  };
}
