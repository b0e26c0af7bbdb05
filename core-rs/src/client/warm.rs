//! Warm segments on the client: a closed connection's segment, kept for this process's next
//! connection to the same server process ([`crate::warm`]).
//!
//! The server marks a segment **released** as its last holder drops it, and never touches it
//! afterwards (docs/protocol.md, "Ending"); then the client may send it again. A warm segment
//! only ever goes back to the server process that had it — same socket, same pid — so no
//! process sees memory another one wrote; its rings are emptied and the released word cleared
//! before it goes ([`Segment::reuse`]).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::segment::{Layout, Segment};
use crate::warm::Shelf;

/// Memfds kept at most, for live connections and warm segments together: a process with
/// thousands of connections keeps those of the first few only, not a descriptor per connection.
const HELD_MAX: usize = 16;

/// Whom a warm segment may go to, and its memfd (to send it again).
struct Key {
    socket: PathBuf,
    pid: i32,
    memfd: Held,
}

static SHELF: Shelf<Key> = Shelf::new();
static HELD: AtomicUsize = AtomicUsize::new(0);

/// A memfd this module keeps, counted in [`HELD`].
struct Held(Option<OwnedFd>);

impl Held {
    /// Holds `fd`, unless [`HELD_MAX`] are held already.
    fn new(fd: OwnedFd) -> Option<Held> {
        // Relaxed: a count that bounds how many are held; it orders nothing else.
        HELD.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < HELD_MAX).then_some(n + 1)
        })
        .ok()
        .map(|_| Held(Some(fd)))
    }

    /// The memfd, to send: no longer this module's (counted out when `self` drops).
    fn take(&mut self) -> OwnedFd {
        self.0.take().expect("taken once")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Relaxed: as in `new`.
        HELD.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many connections of this process used a warm segment so far.
pub fn reused() -> u64 {
    SHELF.reused()
}

/// How many warm segments this process keeps now.
pub fn kept() -> usize {
    SHELF.len()
}

/// Lets every warm segment go now (unmapped, memfds closed).
pub fn release() {
    SHELF.clear();
}

/// Arranges for `segment`, sent to the server at `socket` (process `pid`) with `memfd`, to be
/// kept warm when its last holder lets go of it — unless too many memfds are held already
/// (then `memfd` is closed, and the segment unmapped at its end as usual).
pub(crate) fn keep(segment: &mut Segment, memfd: OwnedFd, socket: &Path, pid: i32) {
    let Some(memfd) = Held::new(memfd) else {
        return;
    };
    let key = Key {
        socket: socket.to_path_buf(),
        pid,
        memfd,
    };
    segment.keep(move |map, layout| SHELF.put(key, map, layout));
}

/// Whether a warm segment of `layout` for the server at `socket` may be there to take.
pub(crate) fn may_have(socket: &Path, layout: &Layout) -> bool {
    SHELF.has(|k, l| k.socket == socket && l == layout)
}

/// A warm segment of `layout` for the server at `socket`, and its memfd, if one was released
/// by that server. `pid` says which process the caller will send it to; a segment of another
/// process is never handed out.
pub(crate) fn take(socket: &Path, pid: i32, layout: &Layout) -> Option<(Segment, OwnedFd)> {
    SHELF.take(
        |k, l| k.pid == pid && k.socket == socket && l == layout,
        // Not released yet (`Err`): kept for a later connect.
        |k, map, layout| Segment::reuse(map, layout).map(|s| (s, k.memfd.take())),
    )
}
