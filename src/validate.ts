/**
 * Argument checks shared by the client and the server: errors name the argument and the value.
 *
 * @module
 */

import { DEFAULT_SPIN } from "./native.ts";

const IC_ID = /^[A-Za-z0-9._-]{1,100}$/;

/**
 * A value as an error message shows it: strings quoted, so that `"1"` is told from `1`;
 * objects by their kind; never more than 80 characters.
 */
export function shown(value: unknown): string {
  let s: string;
  switch (typeof value) {
    case "string":
      s = JSON.stringify(value);
      break;
    case "bigint":
      s = `${value}n`;
      break;
    case "function":
      s = `a function${value.name ? ` (${value.name})` : ""}`;
      break;
    case "symbol":
      s = value.toString();
      break;
    case "object":
      if (value === null) s = "null";
      else if (Array.isArray(value)) s = `an array of ${value.length}`;
      else if (ArrayBuffer.isView(value)) {
        s = `a ${value.constructor.name} of ${value.byteLength} bytes`;
      } else s = `an object (${Object.prototype.toString.call(value).slice(8, -1)})`;
      break;
    default:
      s = String(value);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** Throws unless `icId` is 1 to 100 characters of `A-Z a-z 0-9 . _ -`. */
export function checkIcId(icId: unknown): asserts icId is string {
  if (typeof icId !== "string") {
    throw new TypeError(`ic id must be a string, received ${shown(icId)}`);
  }
  if (!IC_ID.test(icId)) {
    throw new RangeError(
      `ic id ${
        JSON.stringify(icId)
      } is invalid: it must be 1 to 100 characters of A-Z, a-z, 0-9, '.', '_' or '-'`,
    );
  }
}

/** Throws unless the options of `call` (`connect`, `serve`) are an object. */
export function checkOptionsObject(call: string, options: unknown): void {
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      `the options of ${call} must be an object (or omitted), received ${shown(options)}`,
    );
  }
}

/** Throws unless `dir` is undefined or a non-empty string. */
export function checkSocketDir(dir: unknown): void {
  if (dir !== undefined && (typeof dir !== "string" || dir === "")) {
    throw new TypeError(`socketDir must be a non-empty string, received ${shown(dir)}`);
  }
}

/** The longest spin before sleeping a caller may ask for, in microseconds (one second). */
export const MAX_SPIN_MICROS = 1_000_000;

/**
 * The spin budget in nanoseconds for the core, from `spinMicros` ({@linkcode DEFAULT_SPIN}
 * when undefined); throws unless it is a number from 0 to {@linkcode MAX_SPIN_MICROS}.
 */
export function spinNanos(spinMicros: unknown): number {
  if (spinMicros === undefined) return DEFAULT_SPIN;
  if (
    typeof spinMicros !== "number" || !Number.isFinite(spinMicros) || spinMicros < 0 ||
    spinMicros > MAX_SPIN_MICROS
  ) {
    throw new RangeError(
      `spinMicros must be a number from 0 to ${MAX_SPIN_MICROS}, received ${shown(spinMicros)}`,
    );
  }
  return Math.round(spinMicros * 1000);
}
