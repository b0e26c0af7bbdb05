// Type-checked by tsc in the installed project (tests/registry_test.ts), module node16, as an
// ES module: the package's types for `import`.
import { type Client, connect, IpcError, Status, type StatusName } from "shmcall";

const client: Client = await connect("types", { socketDir: "/tmp" });
const r = client.execute(1, { input: new Uint8Array(1), outputLength: 1 });
const status: number = r.status;
const name: StatusName = "PEER_TERMINATED";
const error: IpcError = new IpcError(Status[name], "typed");
export { error, status };
