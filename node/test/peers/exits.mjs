// Serves, connects, runs commands both ways, closes everything, and then simply ends: the test
// that runs it checks that the process exits by itself.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, serve } from "./api.mjs";

const dir = mkdtempSync(join(tmpdir(), "shmcall-exits-"));
const server = await serve("exits", {
  exec: async ({ input, output }) => {
    await Promise.resolve();
    output.set(input);
    return { length: input.length };
  },
}, { socketDir: dir });
const client = await connect("exits", { socketDir: dir });
const r = await client.execute(1, {
  input: new Uint8Array([1, 2, 3]),
  outputLength: 3,
  completion: () => {},
});
if (r.length !== 3) throw new Error("wrong answer");
client.close();
await server.close();
rmSync(dir, { recursive: true });
console.log("done");
