// A server peer in Node or Deno: `<runtime> server.mjs <ic-id> <socket-dir> [nats-url]`; with
// a NATS server's URL it serves through NATS too.
//
// Prints `ready`, then `open <conn>` and `close <conn>`; serves until its standard input ends.
// Operation codes, as the other test peers': 1 echo; 3 hold (never answers); 4 throw;
// 7 echo with the user status 42;
// 6 echo after 100 ms (async); 8 kill this process with SIGKILL 50 ms later (unanswered);
// 9 print `busy`, then echo after keeping this thread busy for 300 ms (so that no other command
// is taken meanwhile).
import process from "node:process";
import { serve, stdinEnds } from "./api.mjs";

const [icId, socketDir, natsUrl] = process.argv.slice(2);
if (icId === undefined || socketDir === undefined) {
  console.error("usage: server.mjs <ic-id> <socket-dir>");
  process.exit(2);
}

const echo = (input, output) => {
  const n = Math.min(input.length, output.length);
  output.set(n === input.length ? input : input.subarray(0, n));
  return { length: n };
};

const server = await serve(icId, {
  open: (conn) => {
    console.log(`open ${conn.id} ${conn.pid}`);
    return conn.id;
  },
  exec: ({ code, input, output }) => {
    switch (code) {
      case 1:
        return echo(input, output);
      case 3:
        return new Promise(() => {});
      case 4:
        throw new Error("the handler throws");
      case 7:
        return { ...echo(input, output), status: 42 };
      case 6:
        return new Promise((resolve) => setTimeout(() => resolve(echo(input, output)), 100));
      case 8:
        setTimeout(() => process.kill(process.pid, "SIGKILL"), 50);
        return new Promise(() => {});
      case 9: {
        console.log("busy"); // written at once to a pipe on Linux, in Node and Deno alike
        const until = performance.now() + 300;
        while (
          performance.now() < until
        ) { /* busy: nothing else is taken meanwhile */ }
        return echo(input, output);
      }
      default:
        return { status: 0, length: 0 };
    }
  },
  close: (conn) => console.log(`close ${conn.id}`),
}, natsUrl === undefined ? { socketDir } : { socketDir, nats: { servers: natsUrl } });
console.log("ready");
await stdinEnds();
await server.close();
