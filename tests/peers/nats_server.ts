/**
 * A real nats-server for the tests (Debian's `nats-server`, which `.ci/run` installs), on a free
 * port of 127.0.0.1: started bounded, killed and reaped by `kill` (call it from a `finally`).
 * Its messages hold up to 2 MiB, room for a 1 MiB area and the frame's header.
 *
 * @module
 */

/** Where Debian puts it, for a PATH without /usr/sbin. */
const CANDIDATES = ["nats-server", "/usr/sbin/nats-server"];

/** The largest message the test server takes. */
export const TEST_MAX_PAYLOAD = 2 << 20;

/** A port no one listens on now. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** The nats-server binary, or a clear error saying how to get one. */
function binary(): string {
  for (const c of CANDIDATES) {
    try {
      const out = new Deno.Command(c, { args: ["--version"], stdout: "null", stderr: "null" })
        .outputSync();
      if (out.success) return c;
    } catch {
      // Not this one.
    }
  }
  throw new Error(
    "nats-server is not installed: `apt-get install -y nats-server` (Debian's package; .ci/run installs it)",
  );
}

/** A CA, and a certificate for 127.0.0.1 that it signed, made with openssl in `dir`. */
function makeCertificates(dir: string): void {
  const openssl = (...args: string[]) => {
    const out = new Deno.Command("openssl", { args, cwd: dir, stdout: "null", stderr: "piped" })
      .outputSync();
    if (!out.success) {
      throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
    }
  };
  const key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl(
    "req",
    "-x509",
    ...key,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "1",
    "-subj",
    "/CN=shmcall test CA",
  );
  openssl("req", ...key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1");
  Deno.writeTextFileSync(`${dir}/san.ext`, "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  openssl(
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "server.pem",
    "-days",
    "1",
    "-extfile",
    "san.ext",
  );
}

/** A running nats-server. */
export class NatsServer {
  readonly port: number;
  readonly #dir: string;
  readonly #auth: { user: string; password: string } | undefined;
  readonly #tls: boolean;
  #extra = "";
  #child: Deno.ChildProcess | undefined;

  private constructor(
    port: number,
    dir: string,
    auth: { user: string; password: string } | undefined,
    tls: boolean,
  ) {
    this.port = port;
    this.#dir = dir;
    this.#auth = auth;
    this.#tls = tls;
  }

  /** The URL clients connect to. */
  get url(): string {
    return `${this.#tls ? "tls" : "nats"}://127.0.0.1:${this.port}`;
  }

  /**
   * Starts one on a free port; resolves once it takes connections (within 10 s). With `auth`,
   * only that user and password may connect; with `tls`, only TLS clients, under a certificate
   * for 127.0.0.1 signed by a CA made here ({@linkcode NatsServer.caFile}); `config` is added to
   * its configuration as it is.
   */
  static async start(
    options: { auth?: { user: string; password: string }; tls?: boolean; config?: string } = {},
  ): Promise<NatsServer> {
    const dir = Deno.makeTempDirSync({ prefix: "shmcall-nats-" });
    const server = new NatsServer(freePort(), dir, options.auth, options.tls === true);
    server.#extra = options.config ?? "";
    try {
      if (options.tls) makeCertificates(dir);
      await server.restart();
    } catch (e) {
      await server.kill();
      throw e;
    }
    return server;
  }

  /** The CA that signed a TLS server's certificate. */
  get caFile(): string {
    return `${this.#dir}/ca.pem`;
  }

  /** Starts it (again, after {@linkcode NatsServer.stop}) on the same port. */
  async restart(timeoutMs = 10_000): Promise<void> {
    const config = `${this.#dir}/nats.conf`;
    Deno.writeTextFileSync(
      config,
      `listen: "127.0.0.1:${this.port}"\nmax_payload: ${TEST_MAX_PAYLOAD}\n` +
        (this.#auth === undefined
          ? ""
          : `authorization { user: ${JSON.stringify(this.#auth.user)}, password: ${
            JSON.stringify(this.#auth.password)
          } }\n`) +
        (this.#tls
          ? `tls { cert_file: "${this.#dir}/server.pem", key_file: "${this.#dir}/server.key" }\n`
          : "") +
        this.#extra,
    );
    const child = new Deno.Command(binary(), {
      args: ["-c", config],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    // It says it is ready on standard error; what it writes after that is drained.
    const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`nats-server did not start within ${timeoutMs} ms: ${seen}`)),
        timeoutMs,
      );
    });
    try {
      await Promise.race([
        (async () => {
          while (!seen.includes("Server is ready")) {
            const { value, done } = await lines.read();
            if (done) throw new Error(`nats-server exited: ${seen}`);
            seen += value;
          }
        })(),
        deadline,
      ]);
    } finally {
      clearTimeout(timer);
    }
    void (async () => {
      try {
        while (!(await lines.read()).done) { /* drained */ }
      } catch {
        // Killed.
      }
    })();
  }

  /** Kills it with SIGKILL and reaps it; the port stays this server's for a restart. */
  async stop(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (child === undefined) return;
    try {
      child.kill("SIGKILL");
    } catch {
      // Exited already.
    }
    await child.status;
  }

  /** Stops it for good and removes its files. */
  async kill(): Promise<void> {
    await this.stop();
    Deno.removeSync(this.#dir, { recursive: true });
  }

  /** Alias of {@linkcode NatsServer.kill} for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}
