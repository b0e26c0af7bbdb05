// Starts verdaccio, a local npm registry, for tests/registry_test.ts: the copy installed in
// `<tools-dir>`, with `<config>`, on 127.0.0.1 at a port the system picks. Prints
// "ready <port>" once it listens; runs until killed.
import { createRequire } from "node:module";
import process from "node:process";

const [toolsDir, config] = process.argv.slice(2);
const { runServer } = createRequire(`${toolsDir}/package.json`)("verdaccio");
const app = await runServer(config);
const server = app.listen(0, "127.0.0.1", () => console.log(`ready ${server.address().port}`));
