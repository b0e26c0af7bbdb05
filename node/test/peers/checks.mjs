// The round trips every pairing of runtimes must pass, from the client's side; the server
// echoes code 1 (server.mjs). Throws on the first wrong answer; returns the commands checked.
import { pattern } from "./api.mjs";

function same(what, got, want) {
  if (got.length !== want.length) {
    throw new Error(
      `${what}: ${got.length} bytes came back, ${want.length} were sent`,
    );
  }
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) {
      throw new Error(`${what}: byte ${i} is ${got[i]}, not ${want[i]}`);
    }
  }
}

/** Sizes of every path: empty, small, a slot's worth, and beyond any slot (the backup path). */
export const SIZES = [0, 1, 64, 4096, 65536, 3 << 20];

export async function roundTrips(client) {
  let n = 0;
  for (const [k, size] of SIZES.entries()) {
    const input = pattern(size, k + 1);
    // Synchronous, copying.
    const r = client.execute(1, { input, outputLength: size });
    if (r.status !== 0 || r.length !== size) {
      throw new Error(`sync ${size} B: status ${r.status}, length ${r.length}`);
    }
    same(`sync ${size} B`, r.output, input);
    n++;
    // Asynchronous, with every callback, in the order the spec names.
    const order = [];
    const a = await client.execute(1, {
      inputLength: size,
      outputLength: size,
      inputPrepare: (area) => {
        order.push("inputPrepare");
        area.set(input);
      },
      outputPrepare: () => order.push("outputPrepare"),
      inputPost: () => order.push("inputPost"),
      outputPost: (area) => {
        order.push("outputPost");
        return area.slice();
      },
      completion: (result, context) => order.push(`completion ${context} ${result.length}`),
      context: k,
    });
    same(`async ${size} B`, a.output, input);
    const want = `inputPrepare outputPrepare inputPost outputPost completion ${k} ${size}`;
    if (order.join(" ") !== want) {
      throw new Error(`callbacks ran as ${order.join(", ")}`);
    }
    n++;
  }
  // A user status comes back as the result, synchronous or not, never thrown.
  const sync = client.execute(7, { input: pattern(5, 7), outputLength: 5 });
  const later = await client.execute(7, {
    input: pattern(6, 8),
    outputLength: 6,
    completion() {},
  });
  if (sync.status !== 42 || later.status !== 42) {
    throw new Error(
      `user status 42 came back as ${sync.status} and ${later.status}`,
    );
  }
  same("user status echo", later.output, pattern(6, 8));
  n += 2;
  // Many in flight at once, each checked against its own input.
  const inputs = Array.from(
    { length: 200 },
    (_, i) => pattern(1 + (i * 37) % 2000, 100 + i),
  );
  const outs = await Promise.all(
    inputs.map((input) =>
      client.execute(1, {
        input,
        outputLength: input.length,
        completion: () => {},
      })
    ),
  );
  outs.forEach((r, i) => same(`in flight ${i}`, r.output, inputs[i]));
  return n + inputs.length;
}
