import "./setup.ts";
import assert from "node:assert/strict";
import { libraryCandidates, loadLibrary } from "../ffi/load.ts";
import { libraryError, PACKAGE_VERSION, platformName, PREBUILT_PLATFORM } from "../src/library.ts";
import { coreStatusName } from "../ffi/native.ts";
import { IpcError, protocolVersion, Status, statusName } from "../mod.ts";

Deno.test("a library not built in a clone is said in one line, with what to run", () => {
  const tried = ["/nonexistent/one/libshmcall.so", "/nonexistent/two/libshmcall.so"];
  const candidates = tried.map((path) => ({ path, from: "build" as const }));
  assert.throws(() => loadLibrary(candidates), (e: unknown) => {
    assert.ok(e instanceof Error);
    assert.equal(
      e.message,
      "shmcall's library is not built in this clone: run 'deno task build', or set SHMCALL_LIB to a built libshmcall.so.",
    );
    assert.ok(Array.isArray(e.cause) && e.cause.length === 2, "every failure is kept in cause");
    return true;
  });
});

Deno.test("SHMCALL_LIB naming no file is said as such, and nothing else is tried", () => {
  Deno.env.set("SHMCALL_LIB", "/nonexistent/custom/libshmcall.so");
  try {
    assert.deepEqual(libraryCandidates(), [
      { path: "/nonexistent/custom/libshmcall.so", from: "SHMCALL_LIB" },
    ]);
    assert.throws(
      () => loadLibrary(),
      /^Error: SHMCALL_LIB names \/nonexistent\/custom\/libshmcall\.so, where there is no library/,
    );
  } finally {
    Deno.env.delete("SHMCALL_LIB");
  }
});

Deno.test("a file that is there and will not load gives the loader's reason, then the file", () => {
  const path = Deno.makeTempFileSync({ suffix: ".so" });
  try {
    Deno.writeTextFileSync(path, "not a library");
    assert.throws(() => loadLibrary([{ path, from: "SHMCALL_LIB" }]), (e: unknown) => {
      assert.ok(e instanceof Error);
      const [first, second, more] = e.message.split("\n");
      assert.match(
        first!,
        /^shmcall's library would not load: .*(invalid ELF header|file too short)/,
      );
      assert.ok(!first!.includes("Could not open library"), first);
      assert.equal(second, `  (${path})`);
      assert.equal(more, undefined);
      return true;
    });
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("outside a clone, a missing library names the platform package or the platform", () => {
  const e = libraryError([], undefined);
  if (platformName() === PREBUILT_PLATFORM) {
    assert.match(e.message, /^shmcall's library package shmcall-linux-x64-gnu is not installed: /);
  } else {
    assert.match(e.message, /^shmcall has no prebuilt library for /);
  }
  assert.equal(e.message.split("\n").length, 1);
});

Deno.test("in a clone, the release build is tried first, then the debug build", () => {
  const c = libraryCandidates();
  assert.match(c[0]!.path, /target\/release\/libshmcall\.so$/);
  assert.match(c[1]!.path, /target\/debug\/libshmcall\.so$/);
  assert.deepEqual(c.map((x) => x.from).slice(0, 2), ["build", "build"]);
});

Deno.test("without --allow-ffi, the first line names the permissions to run with", async () => {
  const script = Deno.makeTempFileSync({ suffix: ".ts" });
  let first: string;
  try {
    Deno.writeTextFileSync(
      script,
      `import { connect } from ${JSON.stringify(new URL("../mod.ts", import.meta.url).href)};
try { await connect("no-ffi"); } catch (e) { console.log(e.message); }`,
    );
    const { stdout, code } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--allow-env", "--allow-read", script],
      stdout: "piped",
      stderr: "inherit",
      signal: AbortSignal.timeout(30_000),
    }).output();
    assert.equal(code, 0);
    first = new TextDecoder().decode(stdout).split("\n")[0]!;
  } finally {
    Deno.removeSync(script);
  }
  assert.match(
    first,
    /^shmcall needs Deno's --allow-ffi and --allow-env permissions: run 'deno run /,
  );
});

Deno.test("protocolVersion() is the version the Rust core declares", () => {
  const source = Deno.readTextFileSync(new URL("../core-rs/src/segment.rs", import.meta.url));
  const major = source.match(/pub const PROTOCOL_MAJOR: u16 = (\d+);/)?.[1];
  const minor = source.match(/pub const PROTOCOL_MINOR: u16 = (\d+);/)?.[1];
  assert.ok(major !== undefined && minor !== undefined, "segment.rs declares the version");
  assert.equal(protocolVersion(), `${major}.${minor}`);
});

Deno.test("the Status table agrees with the core's, code by code", () => {
  for (const [name, code] of Object.entries(Status)) {
    assert.equal(coreStatusName(code), name, `status ${code}`);
    assert.equal(statusName(code), name);
  }
  // Nothing the core names is missing here: the codes are dense from -1 down.
  const count = Object.keys(Status).length;
  assert.equal(coreStatusName(-(count + 1)), undefined);
  assert.equal(coreStatusName(0), undefined);
  assert.equal(statusName(0), undefined);
});

Deno.test("IpcError carries the status code and its name", () => {
  const e = new IpcError(Status.PEER_TERMINATED, "gone");
  assert.equal(e.status, -1);
  assert.equal(e.statusName, "PEER_TERMINATED");
  assert.equal(e.name, "IpcError");
  assert.equal(new IpcError(-99, "?").statusName, "UNKNOWN");
});

Deno.test("the packages, deno.json and the CHANGELOG state one version", () => {
  const read = (file: string) => Deno.readTextFileSync(new URL(`../${file}`, import.meta.url));
  assert.equal(JSON.parse(read("deno.json")).version, PACKAGE_VERSION, "deno.json");
  assert.equal(JSON.parse(read("node/package.json")).version, PACKAGE_VERSION, "node/package.json");
  assert.equal(read("CHANGELOG.md").match(/^## (\d+\.\d+\.\d+)/m)?.[1], PACKAGE_VERSION);
});
