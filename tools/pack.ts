/**
 * `deno task pack`: writes the two npm packages into `dist/npm/`, after the conventions of
 * Node-API packages with prebuilt binaries (napi-rs's platform packages):
 *
 * - `shmcall-<version>.tgz`: the JavaScript — a CommonJS bundle for `require`, an ES module for
 *   `import` (over that same bundle, so that a process never holds two copies of the library's
 *   state), an ES module bundle that Deno picks through the `deno` condition (Deno's FFI, not
 *   Node-API), the types for every module resolution mode (`.d.ts` and `.d.cts`), the bin
 *   `shmcall-top`, README and LICENSE — with an optional dependency on the platform package;
 * - `shmcall-linux-x64-gnu-<version>.tgz`: the stripped release library with `os`, `cpu` and
 *   `libc`, so that npm installs it only where it runs.
 *
 * The task's dependencies build the library (cargo) and the types (tsc) first; this script
 * bundles with esbuild (a development dependency of `node/`) and packs with `npm pack`.
 *
 * ```sh
 * npx --yes deno@2.9.6 task pack
 * ```
 *
 * @module
 */

import { PACKAGE_VERSION, PLATFORM_PACKAGE } from "../src/library.ts";
import { NATS_PACKAGE } from "../src/nats.ts";

const root = decodeURIComponent(new URL("../", import.meta.url).pathname);
const out = `${root}dist/npm/`;
const stage = `${out}stage/`;

/** Runs `cmd`, failing with its output when it fails. */
async function run(cmd: string, args: string[], cwd = root, env?: Record<string, string>) {
  const { code, stdout, stderr } = await new Deno.Command(cmd, {
    args,
    cwd,
    stdout: "piped",
    stderr: "piped",
    ...(env ? { env } : {}),
  }).output();
  const text = new TextDecoder().decode(stdout);
  if (code !== 0) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed (${code}):\n${text}${new TextDecoder().decode(stderr)}`,
    );
  }
  return text;
}

/** The versions this release states, which must all be {@linkcode PACKAGE_VERSION}. */
function checkVersions(): void {
  const stated: Record<string, unknown> = {
    "deno.json": JSON.parse(Deno.readTextFileSync(`${root}deno.json`)).version,
    "node/package.json": JSON.parse(Deno.readTextFileSync(`${root}node/package.json`)).version,
    "CHANGELOG.md": Deno.readTextFileSync(`${root}CHANGELOG.md`).match(/^## (\d+\.\d+\.\d+)/m)
      ?.[1],
  };
  for (const [file, version] of Object.entries(stated)) {
    if (version !== PACKAGE_VERSION) {
      throw new Error(`${file} says version ${version}, src/library.ts says ${PACKAGE_VERSION}`);
    }
  }
}

const esbuild = `${root}node/node_modules/.bin/esbuild`;

/**
 * Bundles a Node entry: into CommonJS, with `import.meta.url` made from the bundle's path, or
 * (for a program such as the bin, which may await at its top) into an ES module.
 */
async function bundleNode(entry: string, outfile: string, format = "cjs"): Promise<void> {
  // A module injected into the bundle defines the name that `import.meta.url` becomes (a banner
  // would come before the bundle's "use strict" and void it).
  const inject = `${stage}module_url.cjs`;
  Deno.writeTextFileSync(
    inject,
    `export const __shmcall_module_url = require("node:url").pathToFileURL(__filename).href;\n`,
  );
  const cjs = format === "cjs"
    ? ["--define:import.meta.url=__shmcall_module_url", `--inject:${inject}`]
    : [];
  await run(esbuild, [
    entry,
    "--bundle",
    "--platform=node",
    "--target=node20",
    `--format=${format}`,
    "--log-level=warning",
    ...cjs,
    `--outfile=${outfile}`,
  ]);
}

/** Bundles a Deno entry into one ES module, leaving Node's built-ins to Deno. */
async function bundleDeno(entry: string, outfile: string): Promise<void> {
  await run(esbuild, [
    entry,
    "--bundle",
    "--platform=neutral",
    "--target=esnext",
    "--format=esm",
    "--log-level=warning",
    "--external:node:*",
    `--outfile=${outfile}`,
  ]);
}

/** Copies the declarations tsc wrote, once as `.d.ts` and once as `.d.cts` for `require`. */
function copyTypes(from: string, to: string): void {
  Deno.mkdirSync(to, { recursive: true });
  for (const e of Deno.readDirSync(from)) {
    if (!e.isFile || !e.name.endsWith(".d.ts")) continue;
    let text = Deno.readTextFileSync(`${from}/${e.name}`);
    // `using` needs these symbols' types, which a project's own `lib` may not include.
    if (/Symbol\.(async)?[dD]ispose/.test(text)) {
      text = `/// <reference lib="esnext.disposable" />\n${text}`;
    }
    // tsc keeps the sources' `./x.ts`: an ES module declaration names `./x.js`, and a CommonJS
    // one `./x.cjs`, each resolved to the declaration beside it.
    const relative = /(from\s+|import\s*\(\s*|import\s+)(["'])(\.{1,2}\/[^"']+)\.(?:ts|js)\2/g;
    Deno.writeTextFileSync(`${to}/${e.name}`, text.replace(relative, "$1$2$3.js$2"));
    Deno.writeTextFileSync(
      `${to}/${e.name.slice(0, -".d.ts".length)}.d.cts`,
      text.replace(relative, "$1$2$3.cjs$2"),
    );
  }
}

/** The `import` entry: the names of the CommonJS bundle, re-exported. */
async function esmWrapper(bundle: string, wrapper: string): Promise<void> {
  const names = JSON.parse(
    await run(
      "node",
      ["-e", `console.log(JSON.stringify(Object.keys(require(${JSON.stringify(bundle)}))))`],
      root,
      {
        SHMCALL_LIB: `${root}target/release/libshmcall.so`,
      },
    ),
  ) as string[];
  if (!names.includes("connect") || !names.includes("serve")) {
    throw new Error(`the CommonJS bundle exports ${names.join(", ")}`);
  }
  Deno.writeTextFileSync(
    wrapper,
    `// The ES module entry: the CommonJS bundle's exports, so that \`import\` and \`require\` share\n` +
      `// one copy of the library's state.\n` +
      `import shmcall from "./index.cjs";\n\n` +
      `export const { ${names.join(", ")} } = shmcall;\n`,
  );
}

async function packMain(): Promise<void> {
  const dir = `${stage}shmcall/`;
  const lib = `${dir}lib/`;
  await bundleNode(`${root}node/index.ts`, `${lib}node/index.cjs`);
  await bundleNode(`${root}node/worker.ts`, `${lib}node/worker.cjs`);
  await bundleNode(`${root}node/top.ts`, `${lib}node/top.mjs`, "esm");
  Deno.chmodSync(`${lib}node/top.mjs`, 0o755);
  await esmWrapper(`${lib}node/index.cjs`, `${lib}node/index.mjs`);
  await bundleDeno(`${root}mod.ts`, `${lib}deno/mod.js`);
  await bundleDeno(`${root}ffi/worker.ts`, `${lib}deno/worker.js`);
  for (const part of ["node", "src", "tools"]) {
    try {
      copyTypes(`${root}node/dist/${part}`, `${lib}types/${part}`);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  const dev = JSON.parse(Deno.readTextFileSync(`${root}node/package.json`));
  const manifest = {
    name: "shmcall",
    version: PACKAGE_VERSION,
    description: dev.description,
    license: dev.license,
    keywords: ["ipc", "shared-memory", "rpc", "deno", "napi", "linux"],
    type: "module",
    os: ["linux"],
    engines: dev.engines,
    main: "./lib/node/index.cjs",
    types: "./lib/types/node/index.d.ts",
    exports: {
      ".": {
        deno: { types: "./lib/types/node/index.d.ts", default: "./lib/deno/mod.js" },
        import: { types: "./lib/types/node/index.d.ts", default: "./lib/node/index.mjs" },
        require: { types: "./lib/types/node/index.d.cts", default: "./lib/node/index.cjs" },
      },
      "./package.json": "./package.json",
    },
    bin: { "shmcall-top": "./lib/node/top.mjs" },
    files: ["lib/"],
    optionalDependencies: { [PLATFORM_PACKAGE]: PACKAGE_VERSION },
    // Only the `nats` option loads it: installed beside this package by whoever crosses hosts.
    peerDependencies: { [NATS_PACKAGE]: `^${dev.devDependencies[NATS_PACKAGE]}` },
    peerDependenciesMeta: { [NATS_PACKAGE]: { optional: true } },
  };
  Deno.writeTextFileSync(`${dir}package.json`, JSON.stringify(manifest, null, 2) + "\n");
  Deno.copyFileSync(`${root}README.md`, `${dir}README.md`);
  Deno.copyFileSync(`${root}LICENSE`, `${dir}LICENSE`);
}

async function packPlatform(): Promise<void> {
  const dir = `${stage}${PLATFORM_PACKAGE}/`;
  Deno.mkdirSync(dir, { recursive: true });
  await run("strip", [
    "--strip-unneeded",
    "-o",
    `${dir}shmcall.node`,
    `${root}target/release/libshmcall.so`,
  ]);
  Deno.writeTextFileSync(
    `${dir}index.js`,
    `// The path of shmcall's library in this package, for the loaders of Node and Deno.\n` +
      `module.exports = { path: require("node:path").join(__dirname, "shmcall.node") };\n`,
  );
  const manifest = {
    name: PLATFORM_PACKAGE,
    version: PACKAGE_VERSION,
    description: "shmcall's prebuilt library for Linux on x86-64 with glibc 2.34 or later",
    license: "MIT",
    os: ["linux"],
    cpu: ["x64"],
    libc: ["glibc"],
    main: "index.js",
    files: ["index.js", "shmcall.node"],
  };
  Deno.writeTextFileSync(`${dir}package.json`, JSON.stringify(manifest, null, 2) + "\n");
  Deno.writeTextFileSync(
    `${dir}README.md`,
    `# ${PLATFORM_PACKAGE}\n\nThe prebuilt library of [shmcall](https://www.npmjs.com/package/shmcall) ` +
      `for Linux on x86-64 with glibc 2.34 or later. Install \`shmcall\`, not this package: npm ` +
      `picks it for the machines it runs on.\n`,
  );
  Deno.copyFileSync(`${root}LICENSE`, `${dir}LICENSE`);
}

if (import.meta.main) {
  checkVersions();
  await Deno.remove(out, { recursive: true }).catch(() => {});
  Deno.mkdirSync(stage, { recursive: true });
  await packMain();
  await packPlatform();
  for (const name of ["shmcall", PLATFORM_PACKAGE]) {
    const file =
      (await run("npm", ["pack", "--silent", "--pack-destination", out], `${stage}${name}`))
        .trim();
    const size = Deno.statSync(`${out}${file}`).size;
    console.log(`dist/npm/${file} (${(size / 1024).toFixed(0)} KiB)`);
  }
}
