// Assertions the Node test files share.
import assert from "node:assert/strict";
import { IpcError } from "../../dist/node/index.js";

/** The IpcError `run` threw, or its Promise rejected with. */
export async function failure(run) {
  try {
    await run();
  } catch (error) {
    assert.ok(error instanceof IpcError, String(error));
    return error;
  }
  assert.fail("the call did not fail");
}
