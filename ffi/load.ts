/**
 * Finds and opens the shmcall core library for Deno's FFI (`src/library.ts` says where it is
 * looked for). Where this module runs decides the candidates after `SHMCALL_LIB`:
 * - a clone of the repository (a local `.ts` file): its `cargo build` output;
 * - the npm package (`npm:shmcall`, a `.js` file there): the platform package beside it;
 * - a remote module (JSR, or a URL): the platform package of this version, fetched through
 *   `npm:` on first use.
 *
 * Needs `--allow-ffi` (unscoped: pointer views require it) and `--allow-env`.
 *
 * @module
 */

import {
  type Candidate,
  LIBRARY_ENV,
  libraryError,
  type LoadFailure,
  PACKAGE_VERSION,
  packagedLibrary,
  permissionError,
  PLATFORM_PACKAGE,
} from "../src/library.ts";
import { type Symbols, symbols } from "./symbols.ts";

export { LIBRARY_ENV };

const here = import.meta.url;
const inClone = here.startsWith("file:") && here.endsWith(".ts");
const remote = !here.startsWith("file:");

/** `SHMCALL_LIB`, read as Deno allows: a withheld `--allow-env` is said as such. */
function fromEnv(): string | undefined {
  try {
    return Deno.env.get(LIBRARY_ENV) || undefined;
  } catch (error) {
    throw permissionError(error);
  }
}

/**
 * The platform package's library for a remote module: an `npm:` import of this version's
 * package (Deno fetches and caches it), or `undefined` when it cannot be had.
 */
async function fetchedLibrary(): Promise<string | undefined> {
  // Built at run time, so that no tool fetches it merely to analyse this module.
  const specifier = `npm:${PLATFORM_PACKAGE}@${PACKAGE_VERSION}`;
  try {
    const found = await import(specifier) as { default?: { path?: unknown }; path?: unknown };
    const path = found.default?.path ?? found.path;
    return typeof path === "string" ? path : undefined;
  } catch {
    return undefined;
  }
}

// Only a remote module waits for this, and only when `SHMCALL_LIB` does not settle the matter.
const fetched = remote && fromEnv() === undefined ? await fetchedLibrary() : undefined;

/** The paths {@linkcode loadLibrary} tries, in order. */
export function libraryCandidates(): Candidate[] {
  const env = fromEnv();
  if (env !== undefined) return [{ path: env, from: "SHMCALL_LIB" }];
  const candidates: Candidate[] = [];
  if (inClone) {
    for (const profile of ["release", "debug"]) {
      const url = new URL(`../target/${profile}/libshmcall.so`, here);
      candidates.push({ path: decodeURIComponent(url.pathname), from: "build" });
    }
  }
  const packaged = remote ? fetched : packagedLibrary(here);
  if (packaged !== undefined) candidates.push({ path: packaged, from: "package" });
  return candidates;
}

interface LoadedLibrary {
  lib: Deno.DynamicLibrary<typeof symbols>;
  path: string;
}

/** Opens the first candidate that loads. */
function openFirst(candidates: Candidate[]): LoadedLibrary {
  const failures: LoadFailure[] = [];
  for (const candidate of candidates) {
    try {
      return { lib: Deno.dlopen(candidate.path, symbols), path: candidate.path };
    } catch (error) {
      failures.push({ ...candidate, error });
    }
  }
  throw libraryError(failures, inClone ? "deno task build" : undefined);
}

/**
 * Opens the first candidate that loads.
 *
 * @throws {Error} whose first line says what went wrong and what to do; `cause` holds every
 * candidate's failure.
 */
export function loadLibrary(
  candidates: Candidate[] = libraryCandidates(),
): Deno.DynamicLibrary<typeof symbols> {
  return openFirst(candidates).lib;
}

let opened: LoadedLibrary | undefined;

/** The library, opened on first use and kept for the life of the process. */
export function library(): Symbols {
  opened ??= openFirst(libraryCandidates());
  return opened.lib.symbols;
}

/** The path of the opened library (to load it again as a Node-API addon). */
export function libraryPath(): string {
  opened ??= openFirst(libraryCandidates());
  return opened.path;
}
