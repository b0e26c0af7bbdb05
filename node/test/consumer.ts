// A TypeScript user of the package, type-checked by `npm run build` (tsc -p test): the package's
// exports map and types must give the same API as the Deno module, overloads included.
import { connect, type ExecuteResult, IpcError, serve, Status } from "shmcall";

export async function roundTrip(): Promise<ExecuteResult> {
  await using _server = await serve("consumer", {
    open: (conn) => ({ pid: conn.pid }),
    exec: ({ input, output }, _conn, context) => {
      output.set(input);
      return { status: context.pid > 0 ? 0 : 1, length: input.length };
    },
  });
  using client = await connect("consumer");
  // Without `completion` the result is returned directly...
  const sync: ExecuteResult = client.execute(1, {
    input: new Uint8Array(3),
    outputLength: 3,
  });
  // ...with it, a Promise.
  const later: Promise<ExecuteResult> = client.execute(1, {
    completion: (r, context: string) => void [r.status, context],
    context: "typed",
  });
  if (sync.status === Status.PEER_TERMINATED) {
    throw new IpcError(sync.status, "unreachable");
  }
  return await later;
}
