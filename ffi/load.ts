/**
 * Finds and opens the shmcall core library.
 *
 * Tried in order: the path in `SHMCALL_LIB`, then the local `cargo build --release` output,
 * then the debug build. Needs `--allow-ffi` (unscoped: pointer views require it) and
 * `--allow-env=SHMCALL_LIB`.
 *
 * @module
 */

import { loadError, type LoadFailure } from "../src/native.ts";
import { type Symbols, symbols } from "./symbols.ts";

/** Environment variable naming the library file to load first. */
export const LIBRARY_ENV = "SHMCALL_LIB";

const FILE = "libshmcall.so";

/** The paths {@linkcode loadLibrary} tries, in order. */
export function libraryCandidates(): string[] {
  const candidates: string[] = [];
  const fromEnv = Deno.env.get(LIBRARY_ENV);
  if (fromEnv) candidates.push(fromEnv);
  for (const profile of ["release", "debug"]) {
    const url = new URL(`../target/${profile}/${FILE}`, import.meta.url);
    candidates.push(decodeURIComponent(url.pathname));
  }
  return candidates;
}

/** Opens the first candidate that loads; the failure lists every path tried. */
function openFirst(candidates: string[]): LoadedLibrary {
  const failures: LoadFailure[] = [];
  for (const path of candidates) {
    try {
      return { lib: Deno.dlopen(path, symbols), path };
    } catch (error) {
      failures.push({ path, error });
    }
  }
  throw loadError(
    "library",
    failures,
    `Build it with 'cargo build --release' or set ${LIBRARY_ENV} to its path.`,
  );
}

interface LoadedLibrary {
  lib: Deno.DynamicLibrary<typeof symbols>;
  path: string;
}

/**
 * Opens the first candidate that loads.
 *
 * @throws {Error} listing every path tried and why each failed; `cause` holds the failures.
 */
export function loadLibrary(
  candidates: string[] = libraryCandidates(),
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
