// The same client as `client.mjs`, through `require` (tests/registry_test.ts).
const { connect } = require("shmcall");

async function main() {
  const [icId, socketDir] = process.argv.slice(2);
  const client = await connect(icId, { socketDir });
  const sync = client.execute(1, { input: Buffer.from("Hello"), outputLength: 5 });
  const late = await client.execute(2, {
    input: Buffer.from("World"),
    outputLength: 5,
    inline: false, // on the server's pool
    completion() {},
  });
  client.close();
  console.log(JSON.stringify({
    status: sync.status,
    sync: Buffer.from(sync.output).toString(),
    async: Buffer.from(late.output).toString(),
  }));
}
main();
