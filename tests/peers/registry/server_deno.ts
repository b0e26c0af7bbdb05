// A Deno server of the installed package (tests/registry_test.ts): the same service as
// `server.mjs`; prints "ready" and the module `shmcall` resolved to, and ends when its standard
// input closes.
import { serve } from "shmcall";

const [icId, socketDir] = Deno.args;
await using _server = await serve(icId!, {
  exec({ input, output }) {
    for (let i = 0; i < input.length; i++) output[i] = input[i]! ^ 0x20;
    return { status: 7, length: input.length };
  },
}, {
  socketDir: socketDir!,
  workers: 1,
  module: new URL("./handler.mjs", import.meta.url),
});
console.log(JSON.stringify({ entry: import.meta.resolve("shmcall") }));
console.log("ready");
for await (const _ of Deno.stdin.readable) { /* until our parent closes it */ }
