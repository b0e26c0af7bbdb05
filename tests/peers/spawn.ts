/**
 * Starting peer processes from tests and examples: every wait is bounded, and `kill` (called
 * from a `finally`) ends and reaps the child whatever happened.
 *
 * @module
 */

/** The Rust peer binary of `core-rs` (built by `cargo build --release`). */
export const PEER_BIN = decodeURIComponent(
  new URL("../../target/release/shmcall-peer", import.meta.url).pathname,
);

/**
 * A running peer and the lines it printed. Its stdout is drained continuously, so a chatty
 * peer never blocks on a full pipe.
 */
export class Peer {
  readonly #child: Deno.ChildProcess;
  readonly #pump: Promise<void>;
  readonly #errPump: Promise<void>;
  /** What the peer wrote to standard error, when started with `stderr: true`. */
  stderr = "";
  #read = 0;
  #ended = false;
  #wake: (() => void) | undefined;
  #killed = false;
  /** Every line the peer printed so far. */
  readonly seen: string[] = [];

  private constructor(child: Deno.ChildProcess, stderr: boolean) {
    this.#child = child;
    this.#errPump = stderr
      ? (async () => {
        for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
          this.stderr += text;
        }
      })()
      : Promise.resolve();
    this.#pump = (async () => {
      const lines = child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(
        new LineSplitter(),
      );
      for await (const line of lines) {
        this.seen.push(line);
        this.#wake?.();
      }
      this.#ended = true;
      this.#wake?.();
    })();
  }

  /**
   * Starts `command args` and waits (bounded) for it to print `ready`; with `stderr`, keeps
   * what it writes to standard error in {@linkcode Peer.stderr} (else it goes to ours). `cwd`
   * is the child's directory, and `env`, when given, its whole environment.
   */
  static async start(
    command: string,
    args: string[],
    timeoutMs = 10_000,
    stderr = false,
    { cwd, env }: { cwd?: string; env?: Record<string, string> } = {},
  ): Promise<Peer> {
    const child = new Deno.Command(command, {
      args,
      ...(cwd === undefined ? {} : { cwd }),
      ...(env === undefined ? {} : { env, clearEnv: true }),
      stdin: "piped",
      stdout: "piped",
      stderr: stderr ? "piped" : "inherit",
    }).spawn();
    const peer = new Peer(child, stderr);
    try {
      await peer.expect("ready", timeoutMs);
    } catch (e) {
      await peer.kill();
      // What it said on the way out, when it was kept.
      if (stderr && e instanceof Error) e.message += `; its stderr:\n${peer.stderr}`;
      throw e;
    }
    return peer;
  }

  /** Whether the child's standard output ended (it exited, as a rule). */
  get ended(): boolean {
    return this.#ended;
  }

  /** The child's pid. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Waits (bounded) for the next line starting with `prefix`; earlier lines are skipped. */
  async expect(prefix: string, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      while (this.#read < this.seen.length) {
        const line = this.seen[this.#read++]!;
        if (line.startsWith(prefix)) return line;
      }
      const saw = JSON.stringify(this.seen);
      if (this.#ended) throw new Error(`peer exited before printing '${prefix}'; saw ${saw}`);
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`no line starting with '${prefix}' within ${timeoutMs} ms; saw ${saw}`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      this.#wake = undefined;
    }
  }

  /** Sends `signal` now, without waiting (for an `unload` handler, which cannot wait). */
  signal(signal: Deno.Signal): void {
    try {
      this.#child.kill(signal);
    } catch {
      // Already exited.
    }
  }

  /** Closes the child's standard input (a peer that serves until it ends then stops). */
  async endInput(): Promise<void> {
    await this.#child.stdin.close().catch(() => {});
  }

  /** Kills the child with SIGKILL (once) and reaps it, closing its pipes. */
  async kill(): Promise<void> {
    if (this.#killed) return;
    this.#killed = true;
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await this.#child.stdin.close().catch(() => {});
    await this.#child.status;
    await this.#pump;
    await this.#errPump;
  }

  /** Alias of {@linkcode Peer.kill} for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}

/** Splits a text stream into lines. */
class LineSplitter extends TransformStream<string, string> {
  constructor() {
    let rest = "";
    super({
      transform(chunk, controller) {
        const parts = (rest + chunk).split("\n");
        rest = parts.pop() ?? "";
        for (const line of parts) controller.enqueue(line);
      },
      flush(controller) {
        if (rest) controller.enqueue(rest);
      },
    });
  }
}

/**
 * Runs a Deno script to its end, killing it after `timeoutMs`; its exit code and stdout.
 * A script killed by the bound exits with a signal's code, which callers' assertions catch.
 */
export async function runScript(
  script: string,
  env: Record<string, string> = {},
  timeoutMs = 15_000,
): Promise<{ code: number; stdout: string }> {
  const { code, stdout } = await runDeno(["run", "-A", script], { env, timeoutMs });
  return { code, stdout };
}

/**
 * Runs `deno <args>` to its end, killing it with SIGKILL after `timeoutMs`: its exit code,
 * the signal that ended it (a crash, or the bound), its stdout, and its stderr when `stderr`
 * is `"piped"` (else it goes to ours).
 */
export async function runDeno(
  args: string[],
  { env = {}, timeoutMs = 15_000, stderr = "inherit" }: {
    env?: Record<string, string>;
    timeoutMs?: number;
    stderr?: "piped" | "inherit";
  } = {},
): Promise<{ code: number; signal: Deno.Signal | null; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), { args, env, stdout: "piped", stderr }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  try {
    const out = await child.output();
    const text = new TextDecoder();
    return {
      code: out.code,
      signal: out.signal,
      stdout: text.decode(out.stdout),
      stderr: stderr === "piped" ? text.decode(out.stderr) : "",
    };
  } finally {
    clearTimeout(timer);
  }
}

/** A private, owner-only directory for sockets; removed by `Symbol.dispose`. */
export function tempSocketDir(): { path: string } & Disposable {
  const path = Deno.makeTempDirSync({ prefix: "shmcall-" });
  Deno.chmodSync(path, 0o700);
  return {
    path,
    [Symbol.dispose]() {
      Deno.removeSync(path, { recursive: true });
    },
  };
}
