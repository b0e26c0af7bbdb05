/**
 * A prototype, not part of the suite (docs/throughput.md): a ring pair in shared memory that two
 * Deno processes push and pop in JavaScript alone — no call into a library per command, one
 * Promise per command — to measure what "JavaScript uses the rings itself" can reach here.
 *
 * `deno run -A bench/peers/js_ring.ts server <file>` maps `<file>` (a new file under /dev/shm,
 * which the caller removes), prints `ready` and echoes 64-byte commands, spinning, until the
 * client says it is done. `deno run -A bench/peers/js_ring.ts client <file> <in-flight> <total>`
 * runs `<total>` commands twice (a warm-up, then timed) with `<in-flight>` awaited at once and
 * prints `{"inFlight", "rate"}`.
 *
 * Layout (32-bit words): CS tail at 0, CS head at 16, SC tail at 32, SC head at 48, READY at
 * 64, DONE at 80; 256 cells from word 1024 (CS) and 2048 (SC); slot `s`'s input at byte
 * 65536 + 128 s, its output 64 bytes further. Slots read from a ring are masked into range.
 *
 * @module
 */
const [role, path, inFlightArg, totalArg] = Deno.args;
if ((role !== "server" && role !== "client") || path === undefined) {
  throw new Error("usage: js_ring.ts server <file> | client <file> <in-flight> <total>");
}
const SIZE = 1 << 20;
const libc = Deno.dlopen("libc.so.6", {
  open: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
});
const O_RDWR = 2, O_CREAT = 0o100, PROT_RW = 3, MAP_SHARED = 1;
const fd = libc.symbols.open(new TextEncoder().encode(path + "\0"), O_RDWR | O_CREAT, 0o600);
if (role === "server") libc.symbols.ftruncate(fd, BigInt(SIZE));
const p = libc.symbols.mmap(null, BigInt(SIZE), PROT_RW, MAP_SHARED, fd, 0n)!;
const buf = Deno.UnsafePointerView.getArrayBuffer(p, SIZE);
const w = new Uint32Array(buf);
const bytes = new Uint8Array(buf);
const CS_TAIL = 0, CS_HEAD = 16, SC_TAIL = 32, SC_HEAD = 48, CS = 1024, SC = 2048, MASK = 255;
const READY = 64, DONE = 80;
const slotIn = (s: number) => 65536 + s * 128;
if (role === "server") {
  Atomics.store(w, READY, 1);
  console.log("ready");
  let head = 0, tail = Atomics.load(w, SC_TAIL), served = 0;
  const views: Uint8Array[] = [];
  for (let s = 0; s < 256; s++) views.push(bytes.subarray(slotIn(s), slotIn(s) + 128));
  while (Atomics.load(w, DONE) === 0) {
    const avail = Atomics.load(w, CS_TAIL);
    if (avail === head) continue;
    while (head !== avail) {
      const s = w[CS + (head & MASK)]! & MASK; // untrusted: masked into range
      head = (head + 1) >>> 0;
      const v = views[s]!;
      v.copyWithin(64, 0, 64); // the echo
      w[SC + (tail & MASK)] = s;
      tail = (tail + 1) >>> 0;
      served++;
    }
    Atomics.store(w, CS_HEAD, head);
    Atomics.store(w, SC_TAIL, tail);
  }
  console.log("served", served);
} else {
  while (Atomics.load(w, READY) === 0) { /* wait for the server */ }
  const inFlight = Number(inFlightArg), total = Number(totalArg);
  const free: number[] = [];
  for (let s = inFlight - 1; s >= 0; s--) free.push(s);
  const pending: (((v: number) => void) | undefined)[] = new Array(256);
  let csTail = 0, scHead = 0, issued = 0, draining = false;
  const input = new Uint8Array(64).fill(3);
  const exec = (): Promise<number> => {
    const s = free.pop()!;
    bytes.set(input, slotIn(s));
    w[CS + (csTail & MASK)] = s;
    csTail = (csTail + 1) >>> 0;
    Atomics.store(w, CS_TAIL, csTail);
    if (!draining) {
      draining = true;
      queueMicrotask(drain);
    }
    return new Promise((r) => pending[s] = r);
  };
  const drain = (): void => {
    for (;;) {
      const avail = Atomics.load(w, SC_TAIL);
      if (avail !== scHead) {
        while (scHead !== avail) {
          const s = w[SC + (scHead & MASK)]! & MASK;
          scHead = (scHead + 1) >>> 0;
          const r = pending[s];
          pending[s] = undefined;
          free.push(s);
          r?.(bytes[slotIn(s) + 64]!);
        }
        Atomics.store(w, SC_HEAD, scHead);
        break;
      }
    }
    draining = false;
    if (free.length < inFlight) {
      draining = true;
      queueMicrotask(drain);
    }
  };
  const worker = async () => {
    while (issued < total) {
      issued++;
      const v = await exec();
      if (v !== 3) throw new Error("bad echo");
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker)); // warm-up round
  issued = 0;
  const t = performance.now();
  await Promise.all(Array.from({ length: inFlight }, worker));
  const el = (performance.now() - t) / 1000;
  console.log(JSON.stringify({ inFlight, rate: Math.round(total / el) }));
  Atomics.store(w, DONE, 1);
}
