// The same client as `client.mjs`, in Deno (tests/registry_test.ts), wherever `shmcall` maps to:
// the npm package, or the JSR-shaped sources served over HTTP.
import { connect } from "shmcall";

const [icId, socketDir] = Deno.args;
const encode = (s: string) => new TextEncoder().encode(s);
const decode = (b: Uint8Array) => new TextDecoder().decode(b);
await using client = await connect(icId!, { socketDir: socketDir! });
const sync = client.execute(1, { input: encode("Hello"), outputLength: 5 });
const late = await client.execute(2, {
  input: encode("World"),
  outputLength: 5,
  inline: false, // on the server's pool
  completion() {},
});
console.log(
  JSON.stringify({ status: sync.status, sync: decode(sync.output), async: decode(late.output) }),
);
