// Node.js reads the library's tables through the same TypeScript copies as Deno; they must be
// the library's (`CONSTANTS` in bindings/src/surface.rs), asked of the addon. And a closed
// client gives its segment back at once: areas a callback kept become empty.
import assert from "node:assert/strict";
import { test } from "node:test";
import { connect, serve } from "../dist/node/index.js";
import { SCRATCH } from "../dist/node/addon.js";
import { EVENT, EVENT_WORD, FLAG, IDLE, native, NOWHERE, STATS } from "../dist/src/native.js";
import { tempSocketDir } from "./peers/spawn.mjs";

function agrees(prefix, table, rename = {}) {
  for (const [key, value] of Object.entries(table)) {
    const name = rename[key] ?? `${prefix}${key}`;
    assert.equal(value, native.constant(name), `${name} in Node`);
  }
}

test("Node: the tables TypeScript keeps of the library's values are the library's", () => {
  agrees("EVENT_", EVENT);
  agrees("EVENT_WORD_", EVENT_WORD, { WORDS: "EVENT_WORDS" });
  agrees("IDLE_", IDLE);
  agrees("FLAG_", FLAG);
  agrees("STATS_", STATS);
  agrees("SCRATCH_", SCRATCH);
  assert.equal(NOWHERE, native.constant("NOWHERE"));
  assert.equal(native.constant("NO_SUCH_CONSTANT"), undefined);
});

test("Node: a closed client gives its segment back at once: areas kept from callbacks become empty", async () => {
  const dir = tempSocketDir();
  try {
    let serverInput;
    let closed;
    const serverClosed = new Promise((resolve) => closed = resolve);
    const server = await serve("node-give-back", {
      exec({ input, output }) {
        serverInput = input;
        output.set(input);
        return { length: input.length };
      },
      close: () => closed(serverInput.length),
    }, { socketDir: dir.path });
    try {
      const client = await connect("node-give-back", { socketDir: dir.path });
      let kept;
      await client.execute(1, {
        input: new Uint8Array([1, 2, 3, 4]),
        outputLength: 4,
        outputPost: (area) => {
          kept = area;
          return area.slice();
        },
        completion: () => {},
      });
      assert.equal(kept.length, 4);
      client.close();
      assert.equal(
        kept.length,
        0,
        "the client's kept area is empty after close",
      );
      assert.equal(
        await serverClosed,
        0,
        "the server's kept input is empty once it closed",
      );
    } finally {
      await server.close();
    }
  } finally {
    dir.remove();
  }
});
