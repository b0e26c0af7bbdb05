/**
 * Finds and opens the shmcall core as a Node-API addon (`src/library.ts` says where it is looked
 * for): `SHMCALL_LIB`, then the platform package, then, in a clone of the repository, this
 * package's own build (`shmcall.node`, which `npm run build` copies here) and cargo's.
 *
 * @module
 */

import { existsSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import {
  type Candidate,
  LIBRARY_ENV,
  libraryError,
  type LoadFailure,
  packagedLibrary,
} from "../src/library.ts";
import type { Addon } from "./addon.ts";

export { LIBRARY_ENV };

// This module runs two directories below the package's root: as `dist/node/load.js` when built
// with tsc, inside `lib/node/index.cjs` or `lib/node/index.mjs` when packed.
const packageDir = new URL("../../", import.meta.url);
const inClone = existsSync(fileURLToPath(new URL("../Cargo.toml", packageDir)));

/** The paths {@linkcode loadAddon} tries, in order. */
export function libraryCandidates(): Candidate[] {
  const env = process.env[LIBRARY_ENV];
  if (env) return [{ path: env, from: "SHMCALL_LIB" }];
  const candidates: Candidate[] = [];
  const packaged = packagedLibrary(import.meta.url);
  if (packaged !== undefined) candidates.push({ path: packaged, from: "package" });
  if (inClone) {
    for (const built of ["shmcall.node", "../target/release/libshmcall.so"]) {
      const path = fileURLToPath(new URL(built, packageDir));
      if (existsSync(path)) candidates.push({ path, from: "build" });
    }
  }
  return candidates;
}

/**
 * Opens the first candidate that loads.
 *
 * @throws {Error} whose first line says what went wrong and what to do; `cause` holds every
 * candidate's failure.
 */
export function loadAddon(candidates: Candidate[] = libraryCandidates()): Addon {
  const failures: LoadFailure[] = [];
  for (const candidate of candidates) {
    const module = { exports: {} as Addon };
    try {
      process.dlopen(module, candidate.path);
      return module.exports;
    } catch (error) {
      failures.push({ ...candidate, error });
    }
  }
  throw libraryError(failures, inClone ? "npm run build" : undefined);
}
