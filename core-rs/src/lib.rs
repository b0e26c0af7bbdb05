//! shmcall's core: calls between processes on one Linux host through shared memory.
//!
//! A [`Client`] issues commands — an operation code, input bytes, room for output — to a
//! [`Server`] named by an ic id. Each command travels in a slot of a shared segment; only its
//! 4-byte offset crosses between the processes, on the CS ring one way and the SC ring back.
//! The control channel (a Unix socket) carries the handshake, commands that do not fit a slot,
//! and the news that a peer died.
//!
//! The crate is also a `cdylib` with a C surface ([`ffi`]) for Deno's FFI and a Node-API
//! surface ([`napi`]) for Node.js, both thin wrappers over the operations of [`surface`].

pub mod channel;
pub mod client;
pub mod endpoint;
pub mod ffi;
pub mod futex;
pub mod handles;
pub mod hub;
pub mod napi;
pub mod ring;
pub mod segment;
pub mod server;
pub mod slot;
pub mod stats;
pub mod status;
pub mod surface;
pub mod wire;

/// The atomics of the ring ([`ring`]): std's here; the loom model (`tests/loom_ring.rs`)
/// includes `ring.rs` under a `sync` of loom's.
pub(crate) mod sync {
    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{AtomicU32, Ordering, fence};
    }
}

pub use client::{Answer, Call, Callbacks, Client, ConnectOptions, Copying, Output, Ticket};
pub use segment::{Geometry, PROTOCOL_MAJOR, PROTOCOL_MINOR, SlotClass};
pub use server::{Command, ConnInfo, Handler, Handlers, ServeOptions, Server, handlers};
pub use slot::{Area, Mode};
pub use stats::Stats;
pub use status::{Error, Result, Status};
