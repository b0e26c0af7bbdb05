/**
 * Assertions the test files share: bounded waits, a command's failure, and a matcher of library
 * failures.
 *
 * @module
 */

import assert from "node:assert/strict";
import { IpcError } from "../../mod.ts";

/** Fails if `promise` does not settle within `ms`. */
export async function within<T>(what: string, promise: Promise<T>, ms = 10_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits until `ready()` holds, looking again each millisecond, for a state that no event
 * announces (a host forgetting a connection); fails after `ms`.
 */
export async function eventually(what: string, ready: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * The {@linkcode IpcError} that `run` threw, or its Promise rejected with — bounded by
 * {@linkcode within}, so that a lost wake-up fails the test instead of hanging it.
 */
export async function failure(run: () => unknown): Promise<IpcError> {
  try {
    await within("the command's failure", (async () => await run())());
  } catch (e) {
    assert.ok(e instanceof IpcError, String(e));
    return e;
  }
  throw new assert.AssertionError({ message: "the command did not fail" });
}

/**
 * A condition for {@linkcode eventually}: false while `run` returns, true once it throws an
 * {@linkcode IpcError} of `status` (any other throw fails the test).
 */
export function throwsStatus(status: number, run: () => unknown): () => boolean {
  return () => {
    try {
      run();
      return false;
    } catch (e) {
      isIpcError(status)(e);
      return true;
    }
  };
}

/** For `assert.throws`/`rejects`: the error is an {@linkcode IpcError} of `status`. */
export function isIpcError(status: number): (e: unknown) => true {
  return (e: unknown) => {
    assert.ok(e instanceof IpcError, `expected an IpcError, got ${e}`);
    assert.equal(e.status, status, `${e.statusName}: ${e.message}`);
    return true;
  };
}
