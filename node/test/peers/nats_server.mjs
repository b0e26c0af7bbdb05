// A real nats-server for the Node tests (Debian's `nats-server`, which `.ci/run` installs), on a
// free port of 127.0.0.1, its messages up to 2 MiB: started bounded; `kill` (from a `finally`)
// ends and reaps it, and removes its files.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A port no one listens on now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** The nats-server binary (Debian puts it in /usr/sbin), or a clear error. */
function binary() {
  for (const c of ["nats-server", "/usr/sbin/nats-server"]) {
    if (spawnSync(c, ["--version"]).status === 0) return c;
  }
  throw new Error(
    "nats-server is not installed: `apt-get install -y nats-server` (Debian's package; .ci/run installs it)",
  );
}

export class NatsServer {
  #child;
  #dir;
  #auth;

  constructor(port, dir) {
    this.port = port;
    this.#dir = dir;
  }

  get url() {
    return `nats://127.0.0.1:${this.port}`;
  }

  /**
   * Starts one on a free port; resolves once it takes connections (at most `timeoutMs`). With
   * `auth` ({ user, password }), only that user may connect.
   */
  static async start(timeoutMs = 10_000, auth = undefined) {
    const server = new NatsServer(await freePort(), mkdtempSync(join(tmpdir(), "shmcall-nats-")));
    server.#auth = auth;
    try {
      await server.#run(timeoutMs);
    } catch (e) {
      server.kill();
      throw e;
    }
    return server;
  }

  #run(timeoutMs) {
    const config = join(this.#dir, "nats.conf");
    const auth = this.#auth === undefined
      ? ""
      : `authorization { user: ${JSON.stringify(this.#auth.user)}, password: ${
        JSON.stringify(this.#auth.password)
      } }\n`;
    writeFileSync(config, `listen: "127.0.0.1:${this.port}"\nmax_payload: ${2 << 20}\n${auth}`);
    const child = spawn(binary(), ["-c", config], { stdio: ["ignore", "ignore", "pipe"] });
    this.#child = child;
    child.stderr.setEncoding("utf8");
    let seen = "";
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`nats-server did not start within ${timeoutMs} ms: ${seen}`)),
        timeoutMs,
      );
      child.stderr.on("data", (chunk) => {
        seen += chunk;
        if (seen.includes("Server is ready")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on("exit", () => {
        clearTimeout(timer);
        reject(new Error(`nats-server exited: ${seen}`));
      });
    });
  }

  /** Kills it and removes its files. */
  kill() {
    this.#child?.kill("SIGKILL");
    this.#child = undefined;
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
