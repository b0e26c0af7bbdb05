/**
 * Where the core library is looked for, and what to say when it is not found: the part of
 * loading that Deno's and Node's bindings share (`ffi/load.ts`, `node/load.ts`).
 *
 * The library is looked for, in order:
 * 1. at the path in `SHMCALL_LIB`, when it is set (and then only there);
 * 2. in the platform package `shmcall-linux-x64-gnu`, an optional dependency of the npm
 *    package (npm installs it only on a machine it fits);
 * 3. in a clone of the repository, at its `cargo build` output.
 *
 * A failure's message says in its first line which of three things went wrong — a permission
 * is missing, there is no library for this platform, or a library was found and would not
 * load — and what to do about it.
 *
 * @module
 */

import { createRequire } from "node:module";
import process from "node:process";

/**
 * This package's version: the npm packages', the JSR package's and the CHANGELOG's, which a test
 * keeps equal. A remote module (JSR) fetches the platform package of this very version.
 */
export const PACKAGE_VERSION = "0.2.0";

/** The environment variable naming the library file to load before any other. */
export const LIBRARY_ENV = "SHMCALL_LIB";

/** The platform for which a prebuilt library is published, as npm packages name platforms. */
export const PREBUILT_PLATFORM = "linux-x64-gnu";

/** The npm package that holds the prebuilt library (`shmcall.node` and an `index.js` naming it). */
export const PLATFORM_PACKAGE = `shmcall-${PREBUILT_PLATFORM}`;

/** The oldest glibc the prebuilt library runs with (its newest versioned symbol). */
export const GLIBC_NEEDED = "2.34";

/** A path to try, and where it came from. */
export interface Candidate {
  path: string;
  from: "SHMCALL_LIB" | "package" | "build";
}

/** A candidate that was tried, and why it did not load. */
export interface LoadFailure extends Candidate {
  error: unknown;
}

/** This machine as npm's platform packages name it: `linux-x64-gnu`, `linux-arm64-musl`, … */
export function platformName(): string {
  const base = `${process.platform}-${process.arch}`;
  if (process.platform !== "linux") return base;
  return `${base}-${isMusl() ? "musl" : "gnu"}`;
}

/** Whether this Linux runs on musl rather than glibc (what Node's report says, where it has one). */
function isMusl(): boolean {
  try {
    const report = process.report?.getReport() as
      | { header?: { glibcVersionRuntime?: string } }
      | undefined;
    if (report?.header !== undefined) return report.header.glibcVersionRuntime === undefined;
  } catch {
    // No report here: assume glibc, the common case; a failed load then says why.
  }
  return false;
}

/**
 * The prebuilt library's path, from the platform package as resolved from `from` (a module's
 * URL inside an installed package), or `undefined` when that package is not installed there.
 */
export function packagedLibrary(from: string): string | undefined {
  try {
    const found = createRequire(from)(PLATFORM_PACKAGE) as { path?: unknown };
    return typeof found.path === "string" ? found.path : undefined;
  } catch {
    return undefined;
  }
}

/** The message a runtime's own failure carries, without the repetitions some runtimes add. */
function reason(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  const firstLine = text.split("\n", 1)[0]!;
  // Deno says "Could not open library: Could not open library: <dlerror>".
  const marker = "Could not open library: ";
  const at = firstLine.lastIndexOf(marker);
  return at < 0 ? firstLine : firstLine.slice(at + marker.length);
}

/** Whether a failure was only that nothing is at the path. */
function missing(error: unknown): boolean {
  return /No such file or directory|cannot open shared object file|ENOENT/.test(reason(error));
}

/** What to run to build the library in a clone of the repository. */
export type BuildHint = "deno task build" | "npm run build";

/** Whether a failure was a permission the runtime withheld (Deno's `--allow-ffi`). */
function denied(error: unknown): boolean {
  const name = error instanceof Error ? error.name : "";
  return name === "NotCapable" || name === "PermissionDenied";
}

/** Deno's refusal to load any library: the flags to run with. */
export function permissionError(error: unknown): Error {
  return new Error(
    `shmcall needs Deno's --allow-ffi and --allow-env permissions: run 'deno run --allow-ffi ` +
      `--allow-env …' (${reason(error)})`,
  );
}

/**
 * The error of a library that no candidate loaded. Its first line names the kind of failure:
 * - a permission withheld (Deno without `--allow-ffi`): the flags to run with;
 * - `SHMCALL_LIB` naming no file;
 * - a file that was there and would not load: the loader's reason, then that file;
 * - no candidate at all, or only paths with nothing there: not built yet (in a clone), no
 *   library for this platform, or the platform package missing.
 *
 * `cause` lists every candidate tried, one line each, for whoever wants the detail.
 */
export function libraryError(failures: LoadFailure[], buildHint: BuildHint | undefined): Error {
  const refused = failures.find((f) => denied(f.error));
  if (refused !== undefined) return permissionError(refused.error);
  const present = failures.filter((f) => !missing(f.error));
  const here = platformName();
  let message: string;
  if (failures.length === 1 && failures[0]!.from === "SHMCALL_LIB" && present.length === 0) {
    message = `${LIBRARY_ENV} names ${failures[0]!.path}, where there is no library: set it to ` +
      `a libshmcall.so, or unset it to use the installed one.`;
  } else if (present.length > 0) {
    const { path, error } = present[0]!;
    const why = reason(error);
    message = `shmcall's library would not load: ${why}\n  (${path})`;
    if (/GLIBC_/.test(why)) {
      message += `\nThe prebuilt library needs glibc ${GLIBC_NEEDED} or later ('ldd --version' ` +
        `shows this machine's); on an older system, build it with cargo and set ${LIBRARY_ENV}.`;
    }
  } else if (buildHint !== undefined) {
    message = `shmcall's library is not built in this clone: run '${buildHint}', or set ` +
      `${LIBRARY_ENV} to a built libshmcall.so.`;
  } else if (here !== PREBUILT_PLATFORM) {
    message = `shmcall has no prebuilt library for ${here} (it ships one for ` +
      `${PREBUILT_PLATFORM}): build it from source with cargo ('cargo build --release -p shmcall' ` +
      `in a clone) and set ${LIBRARY_ENV} to target/release/libshmcall.so.`;
  } else {
    message = `shmcall's library package ${PLATFORM_PACKAGE} is not installed: install shmcall ` +
      `again without omitting optional dependencies (npm's --omit=optional or --no-optional ` +
      `skip it), or set ${LIBRARY_ENV} to a libshmcall.so.`;
  }
  // The detail, one line a candidate: the error stays short when a runtime prints its cause.
  const tried = failures.map((f) => `${f.path} (${f.from}): ${reason(f.error)}`);
  return new Error(message, tried.length === 0 ? undefined : { cause: tried });
}
