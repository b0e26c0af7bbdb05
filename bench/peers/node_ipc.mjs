// The Node.js baseline of the bench suite: request/response over `child_process`'s IPC channel
// with advanced serialization, the way a Node user would call another process.
//
// `node bench/peers/node_ipc.mjs <samples> <warmup> <size>...` forks itself as the echoing
// child, then prints one JSON line per payload size: {"size", "n", "p50", "p99", "p999",
// "max", "mean"} in microseconds (nearest-rank percentiles, as bench/percentiles.ts).
import { fork } from "node:child_process";
import process from "node:process";

if (process.send !== undefined) {
  // The child: echo every message back.
  process.on("message", (m) => process.send(m));
  process.on("disconnect", () => process.exit(0));
} else {
  const [samples, warmup, ...sizes] = process.argv.slice(2).map(Number);
  if (!(samples > 0) || !(warmup >= 0) || sizes.length === 0) {
    console.error("usage: node_ipc.mjs <samples> <warmup> <size>...");
    process.exit(2);
  }
  const child = fork(new URL(import.meta.url).pathname, [], { serialization: "advanced" });
  // A bound on the whole run: a hung child must not hang the suite.
  const bound = setTimeout(() => {
    console.error("node_ipc: no answer within 120 s");
    child.kill("SIGKILL");
    process.exit(1);
  }, 120_000);
  let answer = () => {};
  child.on("message", () => answer());
  const roundTrip = (payload) =>
    new Promise((resolve) => {
      answer = resolve;
      child.send(payload);
    });
  const rank = (sorted, q) =>
    sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
  for (const size of sizes) {
    const payload = new Uint8Array(size).fill(7);
    for (let i = 0; i < warmup; i++) await roundTrip(payload);
    const out = new Float64Array(samples);
    let start = performance.now();
    for (let i = 0; i < samples; i++) {
      await roundTrip(payload);
      const end = performance.now();
      out[i] = (end - start) * 1000;
      start = end;
    }
    const sum = out.reduce((a, b) => a + b, 0);
    out.sort();
    console.log(JSON.stringify({
      size,
      n: samples,
      p50: rank(out, 0.5),
      p99: rank(out, 0.99),
      p999: rank(out, 0.999),
      max: out[out.length - 1],
      mean: sum / samples,
    }));
  }
  clearTimeout(bound);
  child.disconnect();
}
