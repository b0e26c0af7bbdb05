/**
 * The baseline a Deno user would write instead: request/response over a Unix socket, each
 * message a little-endian u32 length and that many bytes. `deno run -A
 * examples/socket_echo_server.ts <socket-path>`; prints `ready`.
 *
 * @module
 */

const [path] = Deno.args;
if (path === undefined) throw new Error("usage: socket_echo_server.ts <socket-path>");
const listener = Deno.listen({ transport: "unix", path });
console.log("ready");
for await (const conn of listener) {
  (async () => {
    const header = new Uint8Array(4);
    let buf = new Uint8Array(0);
    const readFull = async (into: Uint8Array) => {
      for (let got = 0; got < into.length;) {
        const n = await conn.read(into.subarray(got));
        if (n === null) return false;
        got += n;
      }
      return true;
    };
    while (await readFull(header)) {
      const len = new DataView(header.buffer).getUint32(0, true);
      if (buf.length < 4 + len) buf = new Uint8Array(4 + len);
      const frame = buf.subarray(0, 4 + len);
      frame.set(header);
      if (!await readFull(frame.subarray(4))) break;
      // One write per reply, as a careful user would.
      for (let sent = 0; sent < frame.length;) sent += await conn.write(frame.subarray(sent));
    }
    conn.close();
  })();
}
