// The pool module of the registry test's servers (server.mjs, server_deno.ts): the same answer
// as their inline `exec`, run on a pool worker of the installed package.
export function exec({ input, output }) {
  for (let i = 0; i < input.length; i++) output[i] = input[i] ^ 0x20;
  return { status: 7, length: input.length };
}
