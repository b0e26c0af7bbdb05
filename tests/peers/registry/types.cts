// Type-checked by tsc in the installed project (tests/registry_test.ts), module node16, as
// CommonJS: the package's types for `require`.
import shmcall = require("shmcall");

export async function typed(): Promise<number> {
  const client: shmcall.Client = await shmcall.connect("types", { socketDir: "/tmp" });
  const r = client.execute(1, { input: new Uint8Array(1), outputLength: 1 });
  return r.status + shmcall.Status.PEER_TERMINATED;
}
