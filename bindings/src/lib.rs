//! shmcall's bindings: what JavaScript needs on top of `shmcall-core`, in one `cdylib` that
//! Deno opens with `Deno.dlopen` and Node.js (and Deno, for its doorbell) with
//! `process.dlopen`.
//!
//! - [`hub`]: the owner of every connection JavaScript makes, and the queue of events for it;
//! - [`handles`]: the tables that name objects by checked `u32` handles;
//! - [`surface`]: every operation JavaScript can do, in safe Rust, once for both runtimes;
//! - [`ffi`]: the C surface over it, for Deno's FFI;
//! - [`napi`]: the Node-API surface over it, for Node.js.
//!
//! Dependencies flow one way: this crate uses the core; the core knows nothing of it.

pub mod ffi;
pub mod handles;
pub mod hub;
pub mod napi;
pub mod pool;
pub mod surface;
