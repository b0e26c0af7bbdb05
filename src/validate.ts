/**
 * Argument checks shared by the client and the server: errors name the argument and the value.
 *
 * @module
 */

const IC_ID = /^[A-Za-z0-9._-]{1,100}$/;

/** Throws unless `icId` is 1 to 100 characters of `A-Z a-z 0-9 . _ -`. */
export function checkIcId(icId: unknown): asserts icId is string {
  if (typeof icId !== "string") {
    throw new TypeError(`ic id must be a string, received ${typeof icId}`);
  }
  if (!IC_ID.test(icId)) {
    throw new RangeError(
      `ic id ${
        JSON.stringify(icId)
      } is invalid: it must be 1 to 100 characters of A-Z, a-z, 0-9, '.', '_' or '-'`,
    );
  }
}

/** Throws unless `dir` is undefined or a non-empty string. */
export function checkSocketDir(dir: unknown): void {
  if (dir !== undefined && (typeof dir !== "string" || dir === "")) {
    throw new TypeError(`socketDir must be a non-empty string, received ${JSON.stringify(dir)}`);
  }
}
