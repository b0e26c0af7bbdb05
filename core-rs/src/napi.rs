//! The Node-API surface: the same library, loaded by Node's (or Deno's) `process.dlopen`.
//!
//! For now it tells which protocol it speaks, which proves the one `.so` is a working addon
//! beside its C surface; the doorbell that wakes a JavaScript event loop (a threadsafe function,
//! see FACTS.md) and the Node.js binding build on it.

use napi_derive::napi;

use crate::segment::{PROTOCOL_MAJOR, PROTOCOL_MINOR};

/// The protocol version this library speaks, as "major.minor".
#[napi]
pub fn protocol_version() -> String {
    format!("{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}")
}
