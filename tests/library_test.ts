import "./setup.ts";
import assert from "node:assert/strict";
import { libraryCandidates, loadLibrary } from "../ffi/load.ts";
import { coreStatusName } from "../ffi/native.ts";
import { IpcError, protocolVersion, Status, statusName } from "../mod.ts";

Deno.test("loadLibrary() names every path it tried when none loads", () => {
  const tried = ["/nonexistent/one/libshmcall.so", "/nonexistent/two/libshmcall.so"];
  assert.throws(() => loadLibrary(tried), (e: unknown) => {
    assert.ok(e instanceof Error);
    for (const path of tried) assert.match(e.message, new RegExp(path.replaceAll(".", "\\.")));
    assert.match(e.message, /tried 2 paths/);
    assert.ok(Array.isArray(e.cause) && e.cause.length === 2);
    return true;
  });
});

Deno.test("libraryCandidates() tries SHMCALL_LIB first, then the release build", () => {
  Deno.env.set("SHMCALL_LIB", "/custom/libshmcall.so");
  try {
    const c = libraryCandidates();
    assert.equal(c[0], "/custom/libshmcall.so");
    assert.match(c[1]!, /target\/release\/libshmcall\.so$/);
  } finally {
    Deno.env.delete("SHMCALL_LIB");
  }
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
