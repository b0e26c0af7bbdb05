/**
 * Serves, connects, runs commands both ways, closes everything, and then simply ends: the
 * test that spawns it checks the process exits by itself.
 *
 * @module
 */

import { connect, serve } from "../../mod.ts";
import { doorbellMode } from "../../src/hub.ts";

const dir = Deno.makeTempDirSync({ prefix: "shmcall-exits-" });
Deno.chmodSync(dir, 0o700);
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
if (Deno.env.get("SHMCALL_DOORBELL") === "wait") console.log(doorbellMode());
client.close();
await server.close();
Deno.removeSync(dir, { recursive: true });
console.log("done");
