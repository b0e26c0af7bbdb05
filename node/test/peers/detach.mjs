// User code that detaches the memory of the areas it is handed — the client's prepare callback,
// the server's `exec` — then writes through the buffers it took after everything closed and a
// garbage collection ran: `node --expose-gc detach.mjs <socket-dir>` (or Deno with
// `--v8-flags=--expose-gc`). Prints one line per step and `survived` at the end.
import { connect, serve } from "./api.mjs";

const dir = (globalThis.Deno?.args ?? process.argv.slice(2))[0];
const taken = [];
/** Takes `buffer`'s memory as user code can: `transfer()` where there is one, else a transfer list. */
const steal = (buffer) =>
  typeof buffer.transfer === "function"
    ? buffer.transfer()
    : structuredClone(buffer, { transfer: [buffer] });
const STEAL = 9;
const server = await serve("detach", {
  exec({ code, input, output }) {
    if (code === STEAL) {
      taken.push(steal(output.buffer));
      return { length: 0 };
    }
    output.set(input);
    return { length: input.length };
  },
}, { socketDir: dir });
const client = await connect("detach", { socketDir: dir });
const input = new Uint8Array([1, 2, 3]);
const completion = () => {};
const say = (step, what) =>
  what().then(
    (r) => console.log(`${step}: status ${r.status} output ${r.output.join(",")}`),
    (e) => console.log(`${step}: ${e.name}: ${e.message}`),
  );

await say("prepare detaches", () =>
  client.execute(1, {
    input,
    outputLength: 8,
    completion,
    inputPrepare: (area) => void taken.push(steal(area.buffer)),
  }));
await say(
  "next",
  () => client.execute(1, { input, outputLength: 8, completion }),
);
await say(
  "exec detaches",
  () => client.execute(STEAL, { input, outputLength: 8, completion }),
);
await say(
  "after",
  () => client.execute(1, { input, outputLength: 8, completion }),
);
client.close();
await server.close();
globalThis.gc();
await new Promise((r) => setTimeout(r, 20));
globalThis.gc();
for (const buffer of taken) new Uint8Array(buffer).fill(0xee);
console.log(`wrote through ${taken.length} taken buffers`);
console.log("survived");
