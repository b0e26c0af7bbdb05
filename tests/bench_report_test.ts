import assert from "node:assert/strict";
import {
  ASYNC,
  chart,
  markdown,
  type Results,
  sizeName,
  SOCKET,
  SYNC,
  ZERO_COPY,
} from "../bench/report.ts";

const summary = (p50: number) => ({
  n: 1,
  p50,
  p99: p50 * 2,
  p999: p50 * 3,
  max: p50 * 4,
  mean: p50,
});

function results(): Results {
  return {
    latency: [
      { scenario: SOCKET, size: 64, summary: summary(30) },
      { scenario: SYNC, size: 64, summary: summary(1.5) },
      { scenario: ASYNC, size: 64, summary: summary(10) },
      { scenario: SOCKET, size: 1 << 20, summary: summary(300) },
      { scenario: ZERO_COPY, size: 1 << 20, summary: summary(50) },
    ],
    throughput: [{ inFlight: 64, shm: 2_000_000, socket: 1_000_000, promiseFloor: 8_000_000 }],
    memoryFloor: 40,
    load: [],
    rust: [
      { scenario: "futex ping-pong, sleeping", p50: 10, p99: 20 },
      { scenario: "shmcall rust, sleeping, 64 B", p50: 16, p99: 30 },
    ],
    syscalls: [
      { tool: "strace -c -f", commands: 1_000_000, calls: 500, top: "futex 500" },
      { tool: "perf stat", commands: 1_000_000, calls: 100, top: "" },
    ],
    noAllocations: true,
    seconds: 1,
    quick: true,
  };
}

Deno.test("the bench report judges each target by its ratio to the baseline of the same run", () => {
  const md = markdown(results());
  const row = (target: string) => md.split("\n").find((l) => l.startsWith(`| ${target}`));
  assert.match(row("sync round trip, 64 B")!, /\| 20× \| yes \|$/);
  assert.match(row("async round trip, 64 B")!, /\| 3\.0× \| \*\*no\*\* \|$/);
  assert.match(row("1 MiB round trip")!, /\| 6\.0× \| yes \|$/);
  assert.match(row("pipelined, 64 B, 64 in flight")!, /\| 2\.0× \| \*\*no\*\* \|$/);
  assert.match(row("… the ceiling of that ratio: Promises")!, /\| 8\.0× \| — \|$/);
  assert.match(row("… the ceiling of that ratio: the socket")!, /\| 7\.5× \(40\.00 µs\) \| — \|$/);
  assert.match(row("Rust core, both sleeping")!, /\| 1\.6× \| \*\*no\*\* \|$/);
  // Judged by strace, which the target names; perf's unperturbed count is shown beside it.
  assert.match(row("system calls per command")!, /strace -c -f`\) \| 0\.00050 \| yes \|$/);
  assert.match(md, /\| `perf stat` \| 1000000 \| 100 \| 0\.00010 \| — \|/);
  assert.match(row("heap allocations per command")!, /\| 0 in 40 000 \| yes \|$/);
  // The round-trip table: p50 (p99) and the speed-up on the socket, per payload size.
  assert.match(md, /\| shmcall sync, copying \| 1\.50 \(3\.00\) \*\*20×\*\* \| {2}\|/);
});

Deno.test("the bench chart draws one line per scenario, with a point per payload size", () => {
  const svg = chart(results());
  assert.equal(svg.match(/<polyline/g)?.length, 4);
  assert.equal(svg.match(/<circle/g)?.length, 5);
  for (const s of [SOCKET, SYNC, ASYNC, ZERO_COPY]) assert.ok(svg.includes(s), s);
  assert.deepEqual([64, 4096, 1 << 20].map(sizeName), ["64 B", "4 KiB", "1 MiB"]);
});
