/**
 * Finds and opens the shmcall core as a Node-API addon.
 *
 * Tried in order: the path in `SHMCALL_LIB`, then the addon of this package (`shmcall.node`,
 * which `npm run build` copies there), then the local `cargo build --release` output, then
 * the debug build.
 *
 * @module
 */

import process from "node:process";
import { fileURLToPath } from "node:url";
import { loadError, type LoadFailure } from "../src/native.ts";
import type { Addon } from "./addon.ts";

/** Environment variable naming the library file to load first. */
export const LIBRARY_ENV = "SHMCALL_LIB";

// This module runs as `dist/node/load.js` inside the package directory.
const packageDir = new URL("../../", import.meta.url);

/** The paths {@linkcode loadAddon} tries, in order. */
export function libraryCandidates(): string[] {
  const candidates: string[] = [];
  const fromEnv = process.env[LIBRARY_ENV];
  if (fromEnv) candidates.push(fromEnv);
  candidates.push(fileURLToPath(new URL("shmcall.node", packageDir)));
  for (const profile of ["release", "debug"]) {
    candidates.push(
      fileURLToPath(new URL(`../target/${profile}/libshmcall.so`, packageDir)),
    );
  }
  return candidates;
}

/**
 * Opens the first candidate that loads.
 *
 * @throws {Error} listing every path tried and why each failed; `cause` holds the failures.
 */
export function loadAddon(candidates: string[] = libraryCandidates()): Addon {
  const failures: LoadFailure[] = [];
  for (const path of candidates) {
    const module = { exports: {} as Addon };
    try {
      process.dlopen(module, path);
      return module.exports;
    } catch (error) {
      failures.push({ path, error });
    }
  }
  throw loadError(
    "addon",
    failures,
    `Build it with 'npm run build' in the package directory, or set ${LIBRARY_ENV} to its path.`,
  );
}
