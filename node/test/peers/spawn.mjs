// Starting peer processes from the Node tests: every wait is bounded, and `kill` (called from
// a `finally`) ends and reaps the child whatever happened.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** The Deno executable: `SHMCALL_DENO`, else `deno` on the PATH (`npx deno task` puts it there). */
export const DENO = process.env.SHMCALL_DENO ?? "deno";

/** The Rust peer binary of `core-rs` (built by `cargo build --release`). */
export const PEER_BIN = fileURLToPath(
  new URL("../../../target/release/shmcall-peer", import.meta.url),
);

/** How to run a peer script of this directory in `runtime` ("node" or "deno"). */
export function peerCommand(runtime, script, args) {
  const path = fileURLToPath(new URL(script, import.meta.url));
  return runtime === "node"
    ? [process.execPath, [path, ...args]]
    : [DENO, ["run", "-A", path, ...args]];
}

/** A running peer and the lines it printed; its stdout is drained continuously. */
export class Peer {
  #child;
  #wake = () => {};
  #buffer = "";
  /** Every line the peer printed so far. */
  seen = [];
  /** What it wrote to standard error, when started with `{ stderr: true }`. */
  stderr = "";
  /** Set once the process ended: `{ code, signal }`. */
  exit;
  #exited;

  constructor(command, args, options = {}) {
    this.#child = spawn(command, args, {
      stdio: ["pipe", "pipe", options.stderr ? "pipe" : "inherit"],
    });
    if (options.stderr) {
      this.#child.stderr.setEncoding("utf8");
      this.#child.stderr.on("data", (chunk) => this.stderr += chunk);
    }
    this.#child.stdout.setEncoding("utf8");
    this.#child.stdout.on("data", (chunk) => {
      this.#buffer += chunk;
      const lines = this.#buffer.split("\n");
      this.#buffer = lines.pop();
      this.seen.push(...lines);
      this.#wake();
    });
    this.#exited = new Promise((resolve) => {
      this.#child.on("exit", (code, signal) => {
        this.exit = { code, signal };
        this.#wake();
        resolve(this.exit);
      });
      this.#child.on("error", (error) => {
        this.exit = { code: null, signal: null, error };
        this.#wake();
        resolve(this.exit);
      });
    });
  }

  /** Starts a peer and waits (bounded) for its `ready` line. */
  static async start(command, args, timeoutMs = 15_000, options = {}) {
    const peer = new Peer(command, args, options);
    try {
      await peer.expect("ready", timeoutMs);
    } catch (e) {
      await peer.kill();
      throw e;
    }
    return peer;
  }

  get pid() {
    return this.#child.pid;
  }

  /**
   * The first line printed from now on (or already printed and not yet taken) that starts
   * with `prefix`; rejects after `timeoutMs`, or when the peer exits without printing it.
   */
  expect(prefix, timeoutMs = 10_000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#wake = () => {};
        reject(
          new Error(
            `no '${prefix}' within ${timeoutMs} ms; seen: ${this.seen.join(" | ")}`,
          ),
        );
      }, timeoutMs);
      const look = () => {
        const i = this.seen.findIndex((l) => l.startsWith(prefix));
        if (i >= 0) {
          clearTimeout(timer);
          this.#wake = () => {};
          resolve(this.seen.splice(i, 1)[0]);
        } else if (this.exit !== undefined) {
          clearTimeout(timer);
          this.#wake = () => {};
          reject(
            new Error(
              `exited (${JSON.stringify(this.exit)}) without '${prefix}'; seen: ${
                this.seen.join(" | ")
              }`,
            ),
          );
        }
      };
      this.#wake = look;
      look();
    });
  }

  /** The exit of the process, or a rejection after `timeoutMs`. */
  exited(timeoutMs = 10_000) {
    let timer;
    return Promise.race([
      this.#exited,
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`still running after ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]).finally(() => clearTimeout(timer));
  }

  /** Closes its stdin (a server peer then closes and exits). */
  endInput() {
    this.#child.stdin.end();
  }

  /** Kills with `signal` (SIGKILL by default) unless it already ended, and reaps it. */
  async kill(signal = "SIGKILL") {
    if (this.exit === undefined) this.#child.kill(signal);
    this.#child.stdin.destroy();
    await this.#exited;
  }
}

/** A socket directory only this user can enter, removed by `remove()`. */
export function tempSocketDir() {
  const path = mkdtempSync(join(tmpdir(), "shmcall-node-test-"));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}
