//! shmcall's core: calls between processes on one Linux host through shared memory.
//!
//! A [`Client`] issues commands — an operation code, input bytes, room for output — to a
//! [`Server`] named by an ic id. Each command travels in a slot of a shared segment; only its
//! 4-byte offset crosses between the processes, on the CS ring one way and the SC ring back.
//! The control channel (a Unix socket) carries the handshake, commands that do not fit a slot,
//! the wake-ups of a process whose rings sleep, and the news that a peer died.
//!
//! The layers, each depending only on those above it in this list (docs/architecture.md):
//!
//! - transport: [`futex`], [`ring`], [`segment`], [`slot`], [`wire`], [`channel`],
//!   [`endpoint`], [`stats`], [`status`];
//! - the process's threads: [`reactor`] (the one waiter), [`link`] (a connection's socket),
//!   [`owner`] (who runs a connection's work);
//! - [`client`] and [`server`];
//! - [`queue`]: event queues, hosted by a server whose producers and consumers are its clients.
//!
//! This crate knows nothing of JavaScript: the bindings crate (`bindings/`) puts the hub, the
//! handle tables, the C surface and the Node-API surface on top of it.

pub mod channel;
pub mod client;
pub mod endpoint;
pub mod futex;
pub mod link;
pub mod owner;
pub mod queue;
pub mod reactor;
pub mod ring;
pub mod segment;
pub mod server;
pub mod slot;
pub mod stats;
pub mod status;
mod warm;
pub mod wire;

/// The atomics of the ring ([`ring`]): std's here; the loom model (`tests/loom_ring.rs`)
/// includes `ring.rs` under a `sync` of loom's.
pub(crate) mod sync {
    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{AtomicU32, Ordering, fence};
    }
}

pub use client::{
    Answer, Call, Callbacks, Client, ConnectOptions, Copying, Lent, Output, Ticket,
    release_warm_segments, warm_connections_reused, warm_segments_kept, warm_segments_reused,
};
pub use owner::{Member, Owner, Runner};
pub use segment::{Geometry, PROTOCOL_MAJOR, PROTOCOL_MINOR, SlotClass};
pub use server::{Command, ConnInfo, Handler, Handlers, Opening, ServeOptions, Server, handlers};
pub use slot::{Area, Mode};
pub use stats::Stats;
pub use status::{Error, Result, Status};
