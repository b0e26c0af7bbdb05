// A client peer in Node or Deno: `<runtime> client.mjs <ic-id> <socket-dir> <scenario>`.
//
// Scenarios:
// - `check`: round trips of every kind (checked bytes), then prints `checked <n>` and exits;
//   a wrong answer prints `fail <why>` and exits with 1.
// - `hold [code]`: prints `ready`, issues one command (by default code 3, which the server never
//   answers), prints `held`, and then how it ended: `resolved`, or
//   `rejected <status name> <status the completion saw>`.
import process from "node:process";
import { connect, IpcError, pattern } from "./api.mjs";
import { roundTrips } from "./checks.mjs";

const [icId, socketDir, scenario, code] = process.argv.slice(2);
const client = await connect(icId, { socketDir });

if (scenario === "check") {
  try {
    const n = await roundTrips(client);
    console.log(`checked ${n}`);
  } catch (e) {
    console.log(`fail ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  } finally {
    client.close();
  }
} else if (scenario === "hold") {
  console.log("ready");
  let seen = "none";
  const held = client.execute(Number(code ?? 3), {
    input: pattern(16, 3),
    outputLength: 16,
    completion: (r) => (seen = String(r.status)),
  });
  console.log("held");
  try {
    await held;
    console.log("resolved");
  } catch (e) {
    console.log(
      `rejected ${e instanceof IpcError ? e.statusName : String(e)} ${seen}`,
    );
  }
  client.close();
} else {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
