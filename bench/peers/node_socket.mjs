// The Node.js Unix-socket baseline of the bench suite: request/response over a Unix-domain
// socket between two Node processes, frames of a little-endian u32 length and that many bytes,
// the way a Node user would write it with `node:net`.
//
// `node bench/peers/node_socket.mjs <samples> <warmup> <size>...` starts itself as the echoing
// server in a private temporary directory, then runs one round trip at a time and prints one
// JSON line per payload size: {"size", "n", "p50", "p99", "p999", "max", "mean"} in
// microseconds (nearest-rank percentiles, as bench/percentiles.ts).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs, pipelinedArgs, sample, summaryLine, waitForLine } from "./node_harness.mjs";

/** Refused above this: a corrupt length must not make either side allocate gigabytes. */
const MAX_FRAME = 64 << 20;

/**
 * Splits a byte stream into frames. A frame that arrived whole in one chunk is handed on as a
 * view of that chunk (no copy); one split over chunks is copied once, piece by piece, into a
 * buffer of its announced length. No work is done per byte in JavaScript.
 */
class FrameReader {
  #onFrame;
  #head = Buffer.alloc(4);
  #headGot = 0;
  /** The frame being assembled across chunks, or null between frames. */
  #body = null;
  #bodyGot = 0;

  /** @param {(frame: Buffer) => void} onFrame Called with each complete frame's payload. */
  constructor(onFrame) {
    this.#onFrame = onFrame;
  }

  /** @param {Buffer} chunk What one read brought. */
  push(chunk) {
    let at = 0;
    while (at < chunk.length) {
      if (this.#body === null) {
        let length;
        if (this.#headGot === 0 && chunk.length - at >= 4) {
          length = chunk.readUInt32LE(at);
          at += 4;
        } else {
          // The length itself is split over chunks.
          const n = Math.min(4 - this.#headGot, chunk.length - at);
          chunk.copy(this.#head, this.#headGot, at, at + n);
          this.#headGot += n;
          at += n;
          if (this.#headGot < 4) return;
          this.#headGot = 0;
          length = this.#head.readUInt32LE(0);
        }
        if (length > MAX_FRAME) throw new RangeError(`frame of ${length} bytes refused`);
        if (chunk.length - at >= length) {
          this.#onFrame(chunk.subarray(at, at + length));
          at += length;
          continue;
        }
        this.#body = Buffer.allocUnsafe(length);
        this.#bodyGot = 0;
      }
      const n = Math.min(this.#body.length - this.#bodyGot, chunk.length - at);
      chunk.copy(this.#body, this.#bodyGot, at, at + n);
      this.#bodyGot += n;
      at += n;
      if (this.#bodyGot === this.#body.length) {
        const frame = this.#body;
        this.#body = null;
        this.#onFrame(frame);
      }
    }
  }
}

/** A frame's length prefix. */
function header(length) {
  const h = Buffer.allocUnsafe(4);
  h.writeUInt32LE(length, 0);
  return h;
}

if (process.argv[2] === "--serve") {
  // The server: echo every frame; the echoes of one read go out in one writev (cork). It
  // serves until its stdin (the parent's end of a pipe) closes, so it never outlives the
  // parent, and then removes the parent's directory too, in case the parent was killed.
  const path = process.argv[3];
  process.on("exit", () => rmSync(dirname(path), { recursive: true, force: true }));
  const server = createServer((socket) => {
    socket.setNoDelay?.(true);
    const frames = new FrameReader((frame) => {
      socket.write(header(frame.length));
      if (frame.length > 0) socket.write(frame);
    });
    socket.on("data", (chunk) => {
      socket.cork();
      try {
        frames.push(chunk);
      } catch (e) {
        console.error(`node_socket server: ${e.message}`);
        socket.destroy();
        return;
      } finally {
        socket.uncork();
      }
    });
    socket.on("error", () => socket.destroy());
  });
  server.listen(path, () => console.log("ready"));
  process.stdin.on("end", () => process.exit(0));
  process.stdin.on("error", () => process.exit(0));
  process.stdin.resume();
} else {
  await main().catch((e) => {
    console.error(`node_socket: ${e.message}`);
    process.exit(1);
  });
}

async function main() {
  const pipelined = pipelinedArgs();
  const { samples, warmup, sizes } = pipelined === undefined
    ? parseArgs("node_socket.mjs")
    : { samples: 0, warmup: 0, sizes: [] };
  const dir = mkdtempSync(join(tmpdir(), "shmcall-node-socket-"));
  const path = join(dir, "echo.sock");
  let finished = false;
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), "--serve", path], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  // Every way out, this one included, kills the child and removes the directory.
  process.on("exit", () => {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
    process.on(signal, () => process.exit(1));
  }
  const fail = (why) => {
    console.error(`node_socket: ${why}`);
    process.exit(1);
  };
  // A bound on the whole run: a hung child must not hang the suite. Unref'd: it never keeps
  // this process alive by itself.
  setTimeout(() => fail("no end within 120 s"), 120_000).unref();
  child.on("exit", (code, signal) => {
    if (!finished) fail(`the server exited early (${signal ?? code})`);
  });

  await waitForLine(child.stdout, "ready", 10_000);
  const socket = createConnection(path);
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  socket.setNoDelay?.(true);
  socket.on("error", (e) => fail(`socket: ${e.message}`));
  socket.on("close", () => {
    if (!finished) fail("the server closed the connection");
  });

  let answer = null;
  const frames = new FrameReader((frame) => {
    const resolve = answer;
    answer = null;
    if (resolve === null) fail("an answer nobody asked for");
    else resolve(frame);
  });
  if (pipelined !== undefined) {
    // The batched baseline: as many 64-byte frames as answers came, sent in one write.
    const { inFlight } = pipelined;
    const frameLength = 4 + 64;
    const frames = Buffer.alloc(frameLength * inFlight, 3);
    for (let k = 0; k < inFlight; k++) frames.writeUInt32LE(64, k * frameLength);
    const run = (total) =>
      new Promise((resolve) => {
        const start = performance.now();
        let sent = Math.min(inFlight, total);
        let bytesIn = 0;
        let received = 0;
        const onData = (chunk) => {
          bytesIn += chunk.length;
          const now = Math.floor(bytesIn / frameLength);
          const more = Math.min(now - received, total - sent);
          received = now;
          if (more > 0) {
            sent += more;
            socket.write(frames.subarray(0, more * frameLength));
          }
          if (received >= total) {
            socket.off("data", onData);
            resolve(total / ((performance.now() - start) / 1000));
          }
        };
        socket.on("data", onData);
        socket.write(frames.subarray(0, sent * frameLength));
      });
    await run(Math.ceil(pipelined.total / 10));
    const rate = await run(pipelined.total);
    console.log(JSON.stringify({ mode: "pipelined", inFlight, rate }));
  } else {
    socket.on("data", (chunk) => {
      try {
        frames.push(chunk);
      } catch (e) {
        fail(e.message);
      }
    });
  }
  for (const size of sizes) {
    // The whole request in one buffer, so that it goes out in one write.
    const request = Buffer.allocUnsafe(4 + size);
    request.writeUInt32LE(size, 0);
    const body = request.subarray(4);
    const roundTrip = async (i) => {
      // Built in full, as the shmcall scenarios build their input.
      const v = i & 0xff;
      body.fill(v);
      const echo = await new Promise((resolve) => {
        answer = resolve;
        socket.write(request);
      });
      if (
        echo.length !== size ||
        (size > 0 && (echo[0] !== v || echo[size >> 1] !== v || echo[size - 1] !== v))
      ) {
        fail(`the echo of ${size} B came back wrong`);
      }
    };
    console.log(summaryLine({ size }, await sample(samples, warmup, roundTrip)));
  }
  finished = true;
  socket.destroy();
  child.stdin.end();
  // The exit handler kills the child if it has not ended by then.
  process.exit(0);
}
