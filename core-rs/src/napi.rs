//! The Node-API surface: the same library, loaded by Node's (or Deno's) `process.dlopen`.
//!
//! Its job in a Deno process is the doorbell of the [`crate::hub`]: JavaScript registers a
//! function, which becomes a Node-API threadsafe function; a library thread that queues an
//! event while JavaScript is idle calls it, which queues one call of that function on the
//! event loop without waiting for it (FACTS.md: the fast way to wake Deno's event loop). The
//! threadsafe function is weak (unreferenced): it never keeps the process alive by itself.

use napi::bindgen_prelude::Function;
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi_derive::napi;

use crate::hub::HUB;
use crate::segment::{PROTOCOL_MAJOR, PROTOCOL_MINOR};

/// The protocol version this library speaks, as "major.minor".
#[napi]
pub fn protocol_version() -> String {
    format!("{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}")
}

/// Makes `ring` the hub's doorbell: it is called (on the event loop, with no arguments) when
/// an event is queued while JavaScript is idle. Replaces any previous doorbell.
#[napi]
pub fn set_doorbell(ring: Function<(), ()>) -> napi::Result<()> {
    let tsfn = ring
        .build_threadsafe_function::<()>()
        .weak::<true>()
        .callee_handled::<false>()
        .build()?;
    HUB.set_bell(Some(Box::new(move || {
        // NonBlocking: the ringing thread never waits for JavaScript; the queue is unbounded
        // and a ring only happens on an idle → busy transition, so it stays short.
        tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
    })));
    Ok(())
}

/// Removes the doorbell (the hub then only wakes a pending fallback wait).
#[napi]
pub fn clear_doorbell() {
    HUB.set_bell(None);
}
