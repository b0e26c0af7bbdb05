#!/usr/bin/env node
/**
 * `shmcall-top`, the npm package's bin: a live table of shmcall servers' counters, like `top`
 * (`shmcall-top --help` says more). The tool itself is `tools/top_run.ts`, which Deno runs as
 * `deno task top`.
 *
 * @module
 */

import process from "node:process";
import { runTop } from "../tools/top_run.ts";

process.exit(await runTop(() => import("./index.ts"), "shmcall-top", process.argv.slice(2)));
