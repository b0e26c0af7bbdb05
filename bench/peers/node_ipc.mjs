// The Node.js baseline of the bench suite: request/response over `child_process`'s IPC channel
// with advanced serialization, the way a Node user would call another process.
//
// `node bench/peers/node_ipc.mjs <samples> <warmup> <size>...` forks itself as the echoing
// child, then prints one JSON line per payload size: {"size", "n", "p50", "p99", "p999",
// "max", "mean"} in microseconds (nearest-rank percentiles, as bench/percentiles.ts).
import { fork } from "node:child_process";
import process from "node:process";
import { parseArgs, sample, summaryLine } from "./node_harness.mjs";

if (process.send !== undefined) {
  // The child: echo every message back.
  process.on("message", (m) => process.send(m));
  process.on("disconnect", () => process.exit(0));
} else {
  const { samples, warmup, sizes } = parseArgs("node_ipc.mjs");
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
  for (const size of sizes) {
    const payload = new Uint8Array(size).fill(7);
    console.log(summaryLine({ size }, await sample(samples, warmup, () => roundTrip(payload))));
  }
  clearTimeout(bound);
  child.disconnect();
}
