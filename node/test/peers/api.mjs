// The shmcall API of the runtime this peer runs in: Deno's module under Deno, the package's
// build under Node. The peers of this directory run in either, so that every pairing of
// runtimes is one script each side.
export const {
  connect,
  serve,
  IpcError,
  Status,
  serveEventQueue,
  openProducer,
  openConsumer,
} = await import(
  globalThis.Deno === undefined ? "../../dist/node/index.js" : "../../../mod.ts"
);

/** The name of the runtime running this peer. */
export const runtime = globalThis.Deno === undefined ? "node" : "deno";

/**
 * A payload whose bytes depend on `seed` and their position, so that an echo that comes back
 * shifted, truncated or from another command fails the comparison.
 */
export function pattern(length, seed) {
  const bytes = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

/** Resolves when this process's standard input ends (its parent went away or closed it). */
export async function stdinEnds() {
  const process = (await import("node:process")).default;
  process.stdin.resume();
  await new Promise((resolve) => {
    process.stdin.on("end", resolve);
    process.stdin.on("close", resolve);
  });
}
