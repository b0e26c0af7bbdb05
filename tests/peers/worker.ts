/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A Web Worker that tries to serve: it reports the error (or "served") to its parent.
 *
 * @module
 */

import { serve } from "../../mod.ts";

self.onmessage = async (e: MessageEvent<string>) => {
  try {
    const server = await serve("worker", { exec: () => {} }, { socketDir: e.data });
    await server.close();
    self.postMessage("served");
  } catch (err) {
    self.postMessage(err instanceof Error ? `${err.name}: ${err.message}` : String(err));
  }
  self.close();
};
