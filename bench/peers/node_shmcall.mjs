// shmcall between two Node.js processes, for the bench suite's Node table: the Node package
// (node/dist/node/index.js, built by `deno task build:node`) as client and as server.
//
// `node bench/peers/node_shmcall.mjs <samples> <warmup> <size>...` starts itself as an echoing
// server in a private temporary socket directory, connects, and prints two JSON lines per
// payload size, synchronous then asynchronous: {"mode", "size", "n", "p50", "p99", "p999",
// "max", "mean"} in microseconds (nearest-rank percentiles, as bench/percentiles.ts).
//
// - "sync": `execute` without `completion`, the input built in an array of ours, copied in and
//   the output copied out by the library;
// - "async": `await execute(…, { completion })`, one in flight.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import {
  parseArgs,
  pipelinedArgs,
  sample,
  summaryLine,
  waitForLine,
  watchdog,
} from "./node_harness.mjs";

const ECHO = 1;
const IC_ID = "node-bench";
const PACKAGE = new URL("../../node/dist/node/index.js", import.meta.url);

/** The Node package's exports; a failure says where it looked and how it is built. */
async function loadPackage() {
  try {
    return await import(PACKAGE.href);
  } catch (e) {
    throw new Error(
      `cannot load the Node package at ${
        fileURLToPath(PACKAGE)
      } (built by \`deno task build:node\`): ${e.message}`,
    );
  }
}

if (process.argv[2] === "--serve") {
  await server(process.argv[3]).catch((e) => {
    console.error(`node_shmcall server: ${e.message}`);
    process.exit(1);
  });
} else {
  await main().catch((e) => {
    console.error(`node_shmcall: ${e.message}`);
    process.exit(1);
  });
}

/**
 * The child: serves echoes in `socketDir` and prints `ready`; when its stdin (the parent's end
 * of a pipe) closes, it closes the server and removes the directory too, in case the parent
 * was killed.
 */
async function server(socketDir) {
  process.on("exit", () => rmSync(socketDir, { recursive: true, force: true }));
  const { serve } = await loadPackage();
  const served = await serve(IC_ID, {
    exec({ code, input, output }) {
      if (code !== ECHO) throw new RangeError(`unknown code ${code}`);
      // A subarray only when the output is shorter: every object made per command is garbage.
      const length = Math.min(input.length, output.length);
      output.set(length === input.length ? input : input.subarray(0, length));
      return { status: 0, length };
    },
  }, { socketDir });
  const closing = new Promise((resolve) => {
    process.stdin.on("end", resolve);
    process.stdin.on("error", resolve);
  });
  process.stdin.resume();
  console.log("ready");
  await closing;
  await served.close();
  process.exit(0);
}

async function main() {
  const pipelined = pipelinedArgs();
  const { samples, warmup, sizes } = pipelined === undefined
    ? parseArgs("node_shmcall.mjs")
    : { samples: 0, warmup: 0, sizes: [] };
  // Owner-only (mkdtemp's mode), as shmcall's socket directories must be.
  const dir = mkdtempSync(join(tmpdir(), "shmcall-node-bench-"));
  let finished = false;
  let client;
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "--serve", dir], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  // Every way out, this one included, closes the client, kills the child and removes the
  // directory.
  process.on("exit", () => {
    try {
      client?.close();
    } finally {
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
    process.on(signal, () => process.exit(1));
  }
  const fail = (why) => {
    console.error(`node_shmcall: ${why}`);
    process.exit(1);
  };
  // A bound on the whole run: a hung child must not hang the suite, even while this thread
  // waits in a synchronous call.
  watchdog(120_000, child, dir, "node_shmcall: no end within 120 s");
  child.on("exit", (code, signal) => {
    if (!finished) fail(`the server exited early (${signal ?? code})`);
  });

  const [{ connect }] = await Promise.all([
    loadPackage(),
    waitForLine(child.stdout, "ready", 30_000),
  ]);
  client = await connect(IC_ID, { socketDir: dir });

  const completion = () => {};
  if (pipelined !== undefined) {
    // Each of `inFlight` loops issues its next 64-byte command when its last one settled.
    const run = async (total) => {
      let issued = 0;
      const loop = async () => {
        const input = new Uint8Array(64).fill(3);
        const output = new Uint8Array(64);
        while (issued < total) {
          issued++;
          const r = await client.execute(ECHO, { input, output, completion });
          if (r.length !== 64 || r.output[63] !== 3) fail("pipelined: the echo came back wrong");
        }
      };
      const start = performance.now();
      await Promise.all(Array.from({ length: pipelined.inFlight }, loop));
      return total / ((performance.now() - start) / 1000);
    };
    await run(Math.ceil(pipelined.total / 10));
    const rate = await run(pipelined.total);
    console.log(JSON.stringify({ mode: "pipelined", inFlight: pipelined.inFlight, rate }));
  }
  for (const size of sizes) {
    const input = new Uint8Array(size);
    const output = new Uint8Array(size);
    const check = (result, v, mode) => {
      const out = result.output;
      if (
        result.status !== 0 || result.length !== size || out.length !== size ||
        (size > 0 && (out[0] !== v || out[size >> 1] !== v || out[size - 1] !== v))
      ) {
        fail(`${mode} ${size} B: the echo came back wrong`);
      }
    };
    const sync = (i) => {
      // The copying path: the input is built in an array of ours, the library copies it in,
      // and the output out.
      input.fill(i & 0xff);
      check(client.execute(ECHO, { input, output }), i & 0xff, "sync");
    };
    const async = async (i) => {
      input.fill(i & 0xff);
      check(await client.execute(ECHO, { input, output, completion }), i & 0xff, "async");
    };
    console.log(summaryLine({ mode: "sync", size }, await sample(samples, warmup, sync)));
    console.log(summaryLine({ mode: "async", size }, await sample(samples, warmup, async)));
  }
  finished = true;
  client.close();
  client = undefined;
  // The server closes and ends when its stdin does; bounded, then the exit handler kills it.
  child.stdin.end();
  if (child.exitCode === null && child.signalCode === null) {
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 5_000);
      child.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  process.exit(0);
}
