// A pool's handler module for the Node tests: answers which thread ran it, and the context's tag.
import { threadId } from "node:worker_threads";

export function exec({ output }, _conn, context) {
  const text = new TextEncoder().encode(`${threadId}:${context.tag}`);
  output.set(text);
  return { status: 0, length: text.length };
}
