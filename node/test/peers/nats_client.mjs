// A client peer in Node or Deno that reaches its ic id through NATS only:
// `<runtime> nats_client.mjs <ic-id> <nats-url>`. Echoes payloads of 0 B to 1 MiB (code 1),
// checks each, then a user status (code 7) and a handler failure (code 4); prints `done <n>`
// with the number of echoes that came back whole, or throws.
import process from "node:process";
import { connect, IpcError, pattern, Status } from "./api.mjs";

const [icId, natsUrl] = process.argv.slice(2);
console.log("ready");
const client = await connect(icId, { nats: { servers: natsUrl }, timeout: 10_000 });
try {
  let whole = 0;
  for (const n of [0, 1, 64, 65_536, 1 << 20]) {
    const input = pattern(n, n + 1);
    const r = await client.execute(1, { input, outputLength: n, completion: () => {} });
    if (r.length !== n || !r.output.every((b, i) => b === input[i])) {
      throw new Error(`an echo of ${n} bytes came back as ${r.length}`);
    }
    whole++;
  }
  const status = await client.execute(7, { completion: () => {} });
  if (status.status !== 42) throw new Error(`status ${status.status}`);
  try {
    await client.execute(4, { completion: () => {} });
    throw new Error("a throwing handler succeeded");
  } catch (e) {
    if (!(e instanceof IpcError) || e.status !== Status.HANDLER_FAILED) throw e;
  }
  console.log(`done ${whole}`);
} finally {
  await client[Symbol.asyncDispose]();
}
