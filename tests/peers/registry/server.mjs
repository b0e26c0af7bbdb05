// A Node server of the installed package (tests/registry_test.ts): serves `<ic-id>` in
// `<socket-dir>`, answering each command with its input's letters' case swapped and status 7,
// inline or on its pool of one worker (handler.mjs); prints "ready", and ends when its standard
// input closes.
import { serve } from "shmcall";
import process from "node:process";

const [icId, socketDir] = process.argv.slice(2);
const server = await serve(icId, {
  exec({ input, output }) {
    for (let i = 0; i < input.length; i++) output[i] = input[i] ^ 0x20;
    return { status: 7, length: input.length };
  },
}, { socketDir, workers: 1, module: new URL("./handler.mjs", import.meta.url) });
console.log("ready");
process.stdin.resume();
process.stdin.on("end", () => server.close());
