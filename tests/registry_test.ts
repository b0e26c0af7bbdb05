/**
 * The packages as a user gets them: `deno task pack`'s two npm tarballs are published to a real
 * local npm registry (verdaccio, started here on 127.0.0.1 and killed in a `finally`), then:
 *
 * - in a fresh project, with no cargo on the PATH, `npm install shmcall`; a Node client as an ES
 *   module and one through `require` call a Deno server of the installed package, and a Deno
 *   client of `npm:shmcall` (Deno's own cache, no node_modules) calls a Node server;
 * - the package's types check under tsc for `import` and `require` (module node16) and for
 *   bundlers, and `deno check` finds them through the `deno` condition;
 * - the bin `shmcall-top` answers `--help` and lists the running server;
 * - the JSR package's files (what `deno publish --dry-run` lists), served over HTTP as JSR
 *   would serve them, find their library through `npm:` from the registry, with no
 *   `SHMCALL_LIB` and no cargo build, and call the Node server.
 *
 * Every child is bounded by a timeout and killed in a `finally`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Peer, tempSocketDir } from "./peers/spawn.ts";
import { PACKAGE_VERSION, PLATFORM_PACKAGE } from "../src/library.ts";

const root = decodeURIComponent(new URL("../", import.meta.url).pathname);
const fixtures = `${root}tests/peers/registry/`;
/** The newest verdaccio that runs on Node 20 (6.9 needs Node 22). */
const VERDACCIO = "verdaccio@6.8.0";
/** Where verdaccio is installed once, reused by later runs (cargo's target directory). */
const toolsDir = `${root}target/registry-tools`;
const tsc = `${root}node/node_modules/typescript/bin/tsc`;

/** The PATH without any directory that holds cargo: a user's machine with no Rust toolchain. */
const pathWithoutCargo = (Deno.env.get("PATH") ?? "").split(":").filter((dir) => {
  try {
    Deno.statSync(`${dir}/cargo`);
    return false;
  } catch {
    return true;
  }
}).join(":");

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `cmd` to its end, killed after `timeoutMs`; fails naming it when it fails. */
async function run(
  cmd: string,
  args: string[],
  { cwd = root, env = {}, timeoutMs = 120_000, check = true }: {
    cwd?: string;
    env?: Record<string, string>;
    timeoutMs?: number;
    check?: boolean;
  } = {},
): Promise<Ran> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd,
    env,
    // The user's environment is the whole of it: nothing of ours (SHMCALL_LIB, cargo's PATH).
    clearEnv: Object.keys(env).length > 0,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  const text = new TextDecoder();
  const ran = { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
  if (check && out.code !== 0) {
    throw new Error(
      `${cmd} ${args.join(" ")} exited ${out.code}\n${ran.stdout}\n${ran.stderr}`.slice(0, 4000),
    );
  }
  return ran;
}

/** Installs verdaccio where later runs find it (once per clone). */
async function installVerdaccio(): Promise<void> {
  try {
    Deno.statSync(`${toolsDir}/node_modules/verdaccio/package.json`);
    return;
  } catch {
    // Not yet: install it.
  }
  Deno.mkdirSync(toolsDir, { recursive: true });
  Deno.writeTextFileSync(`${toolsDir}/package.json`, '{ "private": true }\n');
  await run("npm", [
    "install",
    "--no-audit",
    "--no-fund",
    "--loglevel=error",
    "--prefix",
    toolsDir,
    VERDACCIO,
  ], { timeoutMs: 300_000 });
}

/** The registry's address, and a token that may publish to it. */
async function register(url: string): Promise<string> {
  const response = await fetch(`${url}-/user/org.couchdb.user:ci`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name: "ci", password: "ci-password-1" }),
    signal: AbortSignal.timeout(30_000),
  });
  const body = await response.json() as { token?: string };
  assert.ok(response.ok && body.token, `verdaccio registered no user: ${JSON.stringify(body)}`);
  return body.token;
}

/** The files `deno publish --dry-run` would publish, relative to the root. */
async function jsrFiles(): Promise<string[]> {
  const { stdout, stderr } = await run(Deno.execPath(), ["publish", "--dry-run", "--allow-dirty"], {
    env: { NO_COLOR: "1" },
  });
  const files = [...(stdout + stderr).matchAll(/file:\/\/(\/\S+)/g)].map((m) =>
    m[1]!.slice(root.length)
  );
  assert.ok(files.includes("mod.ts"), `deno publish lists no mod.ts: ${stdout}${stderr}`);
  // The module's own sources and its documents: no tests, benches, fuzz corpus or Rust.
  const foreign = files.filter((f) =>
    !/^(mod\.ts|deno\.json|README\.md|LICENSE|CHANGELOG\.md|(src|ffi)\/[a-z_]+\.ts)$/.test(f)
  );
  assert.deepEqual(foreign, [], "deno publish lists files that are not the module's");
  return files;
}

/** Whether a directory named `name` is somewhere under `dir`. */
function findDir(dir: string, name: string): boolean {
  for (const e of Deno.readDirSync(dir)) {
    if (!e.isDirectory) continue;
    if (e.name === name || findDir(`${dir}/${e.name}`, name)) return true;
  }
  return false;
}

/**
 * The uncaught error a runtime printed: its message is one line, which matches `expected`,
 * with no list of paths that cannot exist and no advice to build.
 */
function assertFirstLine(stderr: string, expected: RegExp): void {
  const line = stderr.split("\n").find((l) => l.includes("Error: ")) ?? "";
  assert.match(line, expected, stderr);
  assert.doesNotMatch(stderr, /npm run build|deno task build|Could not open library/, stderr);
  // The message is that one line: the stack follows it, after at most the two lines of source
  // that Deno shows there.
  const lines = stderr.split("\n");
  const from = lines.indexOf(line);
  const stack = lines.findIndex((l, i) => i > from && /^\s+at /.test(l));
  assert.ok(stack > from && stack <= from + 3, `more than one line of message:\n${stderr}`);
}

/** One line of JSON a client printed, checked to be the service's answers. */
function assertAnswered(who: string, ran: Ran): void {
  const line = ran.stdout.trim().split("\n").at(-1) ?? "";
  let result: unknown;
  try {
    result = JSON.parse(line);
  } catch {
    throw new Error(`${who} printed no result:\n${ran.stdout}\n${ran.stderr}`);
  }
  assert.deepEqual(result, { status: 7, sync: "hELLO", async: "wORLD" }, who);
}

Deno.test({
  name: "published to a real registry, the packages install and run with no Rust toolchain",
  // npm and verdaccio run for tens of seconds; nothing of this process is left open.
  sanitizeOps: true,
  sanitizeResources: true,
}, async () => {
  // No toolchain on the PATH the user's commands see.
  const noCargo = await run("sh", ["-c", "command -v cargo"], {
    env: { PATH: pathWithoutCargo },
    check: false,
  });
  assert.notEqual(noCargo.code, 0, `cargo is still reachable: ${noCargo.stdout}`);

  await run(Deno.execPath(), ["run", "-A", `${root}tools/pack.ts`], { timeoutMs: 300_000 });
  await installVerdaccio();

  const work = Deno.makeTempDirSync({ prefix: "shmcall-registry-" });
  using sockets = tempSocketDir();
  const config = `${work}/verdaccio.yaml`;
  Deno.writeTextFileSync(
    config,
    [
      `storage: ${work}/storage`,
      `auth:`,
      `  htpasswd:`,
      `    file: ${work}/htpasswd`,
      `uplinks: {}`,
      `packages:`,
      `  "**":`,
      `    access: $all`,
      `    publish: $authenticated`,
      `log: { type: stdout, format: pretty, level: error }`,
      ``,
    ].join("\n"),
  );
  const peers: Peer[] = [];
  let server: Deno.HttpServer<Deno.NetAddr> | undefined;
  try {
    const registry = await Peer.start(
      "node",
      [`${fixtures}verdaccio.mjs`, toolsDir, config],
      60_000,
      true,
    );
    peers.push(registry);
    const port = Number(registry.seen.find((l) => l.startsWith("ready "))!.slice(6));
    const url = `http://127.0.0.1:${port}/`;
    const token = await register(url);
    const npmrc = `${work}/npmrc`;
    Deno.writeTextFileSync(npmrc, `registry=${url}\n//127.0.0.1:${port}/:_authToken=${token}\n`);
    // The user's environment: no cargo, this registry, caches of their own.
    const env = {
      PATH: pathWithoutCargo,
      HOME: work,
      npm_config_userconfig: npmrc,
      npm_config_cache: `${work}/npm-cache`,
      NPM_CONFIG_REGISTRY: url,
      DENO_DIR: `${work}/deno-dir`,
      NO_COLOR: "1",
    };

    for (const name of [PLATFORM_PACKAGE, "shmcall"]) {
      await run("npm", ["publish", `${root}dist/npm/${name}-${PACKAGE_VERSION}.tgz`], {
        env,
        cwd: work,
      });
    }

    // A fresh Node project installs the package from the registry.
    const app = `${work}/app`;
    Deno.mkdirSync(app);
    Deno.writeTextFileSync(
      `${app}/package.json`,
      '{ "name": "app", "version": "1.0.0", "private": true }\n',
    );
    await run("npm", ["install", "--no-audit", "--no-fund", "shmcall"], { env, cwd: app });
    const installed = JSON.parse(
      Deno.readTextFileSync(`${app}/node_modules/${PLATFORM_PACKAGE}/package.json`),
    );
    assert.equal(installed.version, PACKAGE_VERSION, "npm installed the platform package");
    for (
      const f of [
        "server.mjs",
        "server_deno.ts",
        "client.mjs",
        "client.cjs",
        "client_deno.ts",
        "handler.mjs",
      ]
    ) {
      Deno.copyFileSync(`${fixtures}${f}`, `${app}/${f}`);
    }
    const deno = Deno.execPath();
    // Deno fetches no npm version younger than a day by default; these were published just now.
    const fresh = "--minimum-dependency-age=0";
    const denoFlags = ["run", fresh, "--no-prompt", "--allow-ffi", "--allow-env"];

    // A Deno server of the installed package, which Deno takes through its FFI entry.
    const denoServer = await Peer.start(
      deno,
      // A pool worker imports its module at run time, which Deno allows with --allow-read.
      [...denoFlags, "--allow-read", "server_deno.ts", "reg-deno", sockets.path],
      60_000,
      true,
      { cwd: app, env },
    );
    peers.push(denoServer);
    const entry = JSON.parse(denoServer.seen.find((l) => l.startsWith("{"))!).entry as string;
    assert.match(
      entry,
      /node_modules\/shmcall\/lib\/deno\/mod\.js$/,
      "Deno's entry of the package",
    );
    const nodeServer = await Peer.start(
      "node",
      ["server.mjs", "reg-node", sockets.path],
      30_000,
      true,
      {
        cwd: app,
        env,
      },
    );
    peers.push(nodeServer);

    // Node clients, `import` and `require`, against the Deno server.
    for (const client of ["client.mjs", "client.cjs"]) {
      assertAnswered(
        `Node ${client}`,
        await run("node", [client, "reg-deno", sockets.path], { env, cwd: app }),
      );
    }

    // A Deno client of `npm:shmcall` with no node_modules: Deno fetches the packages itself.
    const denoApp = `${work}/deno-app`;
    Deno.mkdirSync(denoApp);
    Deno.writeTextFileSync(
      `${denoApp}/deno.json`,
      JSON.stringify({ imports: { shmcall: `npm:shmcall@${PACKAGE_VERSION}` } }) + "\n",
    );
    Deno.copyFileSync(`${fixtures}client_deno.ts`, `${denoApp}/client_deno.ts`);
    assertAnswered(
      "Deno client of npm:shmcall",
      await run(deno, [...denoFlags, "client_deno.ts", "reg-node", sockets.path], {
        env,
        cwd: denoApp,
      }),
    );
    await run(deno, ["check", fresh, "client_deno.ts"], { env, cwd: denoApp });
    // Without --allow-ffi, the first line says so (not "build it", not "could not open").
    const refused = await run(
      deno,
      ["run", fresh, "--no-prompt", "--allow-env", "client_deno.ts", "reg-node", sockets.path],
      {
        env,
        cwd: denoApp,
        check: false,
      },
    );
    assert.notEqual(refused.code, 0);
    assertFirstLine(refused.stderr, /shmcall needs Deno's --allow-ffi and --allow-env permissions/);

    // The types, for each module resolution mode.
    for (const f of ["types.mts", "types.cts"]) Deno.copyFileSync(`${fixtures}${f}`, `${app}/${f}`);
    Deno.copyFileSync(`${fixtures}types.mts`, `${app}/types_bundler.ts`);
    // No @types/node: the package's types must stand on their own.
    const strict = { strict: true, noEmit: true, target: "es2022", types: [], skipLibCheck: false };
    const projects = {
      "tsconfig.node16.json": {
        compilerOptions: { ...strict, module: "node16" },
        files: ["types.mts", "types.cts"],
      },
      "tsconfig.bundler.json": {
        compilerOptions: { ...strict, module: "esnext", moduleResolution: "bundler" },
        files: ["types_bundler.ts"],
      },
    };
    for (const [file, project] of Object.entries(projects)) {
      Deno.writeTextFileSync(`${app}/${file}`, JSON.stringify(project));
      await run("node", [tsc, "-p", file], { env, cwd: app });
    }

    // The bin.
    const help = await run("npx", ["--no-install", "shmcall-top", "--help"], { env, cwd: app });
    assert.match(help.stdout, /^usage: shmcall-top /m);
    const top = await run("npx", [
      "--no-install",
      "shmcall-top",
      "reg-node",
      "--dir",
      sockets.path,
      "--count",
      "1",
    ], { env, cwd: app });
    assert.match(top.stdout, /reg-node\s+1\s/, `shmcall-top's table:\n${top.stdout}`);

    // Without its platform package (npm's --omit=optional), the first line says so.
    Deno.removeSync(`${app}/node_modules/${PLATFORM_PACKAGE}`, { recursive: true });
    const missing = await run("node", ["client.mjs", "reg-deno", sockets.path], {
      env,
      cwd: app,
      check: false,
    });
    assert.notEqual(missing.code, 0);
    assertFirstLine(
      missing.stderr,
      new RegExp(`shmcall's library package ${PLATFORM_PACKAGE} is not installed: install`),
    );

    // The JSR package's files, served as JSR serves them: a remote module, no SHMCALL_LIB.
    const files = new Set(await jsrFiles());
    server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
      const path = new URL(request.url).pathname.slice(1);
      if (!files.has(path)) return new Response("not published", { status: 404 });
      return new Response(Deno.readFileSync(`${root}${path}`), {
        headers: { "content-type": "application/typescript" },
      });
    });
    const host = `127.0.0.1:${server.addr.port}`;
    const jsrApp = `${work}/jsr-app`;
    Deno.mkdirSync(jsrApp);
    Deno.writeTextFileSync(
      `${jsrApp}/deno.json`,
      JSON.stringify({ imports: { shmcall: `http://${host}/mod.ts` } }) + "\n",
    );
    Deno.copyFileSync(`${fixtures}client_deno.ts`, `${jsrApp}/client_deno.ts`);
    const jsrDenoDir = `${work}/jsr-deno-dir`;
    assertAnswered(
      "Deno client of the JSR files",
      await run(deno, [
        ...denoFlags,
        `--allow-import=${host}`,
        "client_deno.ts",
        "reg-node",
        sockets.path,
      ], { env: { ...env, DENO_DIR: jsrDenoDir }, cwd: jsrApp }),
    );
    // Its library came from the platform package, which Deno fetched for it.
    assert.ok(findDir(jsrDenoDir, PLATFORM_PACKAGE), `no ${PLATFORM_PACKAGE} in Deno's cache`);
  } finally {
    await server?.shutdown();
    for (const peer of peers.reverse()) await peer.kill();
    Deno.removeSync(work, { recursive: true });
  }
});
