/**
 * What `/proc` says of a process, for the tests and benches that hold many connections: its
 * CPU time, its threads, its open descriptors.
 *
 * @module
 */

/** Clock ticks per second of `/proc/<pid>/stat`'s times (`getconf CLK_TCK`, 100 on Linux). */
const TICKS = 100;

/**
 * The output of a shell command over `/proc`: Deno reads another process's `/proc` entries
 * only with `--allow-all`, which the test and bench tasks do not grant; they may run programs.
 */
function shell(script: string): string {
  const out = new Deno.Command("sh", { args: ["-c", script], stderr: "piped" }).outputSync();
  if (!out.success) {
    throw new Error(`${script} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** User and system CPU of process `pid` so far, in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = shell(`cat /proc/${Number(pid)}/stat`);
  // The fields after the command name (which may hold spaces) start after its ')'.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
  return (Number(f[11]) + Number(f[12])) / TICKS;
}

/** The names of process `pid`'s threads. */
export function threadNames(pid: number): string[] {
  // A thread may end between the listing and its reading: its name is then left out.
  return shell(`cat /proc/${Number(pid)}/task/*/comm 2>/dev/null || true`).split("\n")
    .filter((n) => n !== "");
}

/** The names of process `pid`'s threads that are shmcall's own (`shmcall-*`), sorted. */
export function libraryThreads(pid: number): string[] {
  return threadNames(pid).filter((n) => n.startsWith("shmcall-")).sort();
}

/** How many descriptors process `pid` has open. */
export function openDescriptors(pid: number): number {
  return shell(`ls /proc/${Number(pid)}/fd`).split("\n").filter((n) => n !== "").length;
}

/** The CPU (in cores) process `pid` uses over `seconds` while nothing is asked of it. */
export async function idleCpu(pid: number, seconds: number): Promise<number> {
  const before = cpuSeconds(pid);
  const start = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  return (cpuSeconds(pid) - before) / ((performance.now() - start) / 1000);
}
