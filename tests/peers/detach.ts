/**
 * User code that detaches the memory of the areas it is handed — the client's prepare
 * callback, the server's `exec` — then writes through the buffers it took after everything
 * closed and a garbage collection ran. Run as `deno run -A --v8-flags=--expose-gc detach.ts
 * <socket-dir>`; prints one line per step and `survived` at the end (a crash prints nothing
 * more).
 *
 * @module
 */

import { connect, serve } from "../../mod.ts";

const [dir] = Deno.args;
if (dir === undefined) throw new Error("usage: detach.ts <socket-dir>");
const taken: ArrayBuffer[] = [];
const STEAL = 9;
const server = await serve("detach", {
  exec({ code, input, output }) {
    if (code === STEAL) {
      taken.push((output.buffer as ArrayBuffer).transfer());
      return { length: 0 };
    }
    output.set(input);
    return { length: input.length };
  },
}, { socketDir: dir });
const client = await connect("detach", { socketDir: dir });
const input = new Uint8Array([1, 2, 3]);
const completion = () => {};
const say = (step: string, what: () => Promise<{ status: number; output: Uint8Array }>) =>
  what().then(
    (r) => console.log(`${step}: status ${r.status} output ${r.output.join(",")}`),
    (e) => console.log(`${step}: ${e.name}: ${e.message}`),
  );

await say("prepare detaches", () =>
  client.execute(1, {
    input,
    outputLength: 8,
    completion,
    inputPrepare: (area) => void taken.push((area.buffer as ArrayBuffer).transfer()),
  }));
await say("next", () => client.execute(1, { input, outputLength: 8, completion }));
await say("exec detaches", () => client.execute(STEAL, { input, outputLength: 8, completion }));
await say("after", () => client.execute(1, { input, outputLength: 8, completion }));
client.close();
await server.close();
(globalThis as { gc?: () => void }).gc!();
await new Promise((r) => setTimeout(r, 20));
(globalThis as { gc?: () => void }).gc!();
for (const buffer of taken) new Uint8Array(buffer).fill(0xee);
console.log(`wrote through ${taken.length} taken buffers`);
console.log("survived");
