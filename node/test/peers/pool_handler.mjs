// A pool's handler module for the Node tests: answers which thread ran it, and the context's
// tag; code 6 ends the worker thread (process.exit in a worker ends only that thread).
import { threadId } from "node:worker_threads";

export function exec({ code, output }, _conn, context) {
  if (code === 6) process.exit(0);
  const text = new TextEncoder().encode(`${threadId}:${context.tag}`);
  output.set(text);
  return { status: 0, length: text.length };
}
