//! Warm segments on the client: a closed connection's segment, kept for this process's next
//! connection to the same server process ([`crate::warm`]).
//!
//! The server marks a segment **released** as its last holder drops it, and never touches it
//! afterwards (docs/protocol.md, "Ending"); then the client may send it again. A warm segment
//! only ever goes back to the server process that had it — same socket, same pid — so no
//! process sees memory another one wrote; its rings are emptied and the released word cleared
//! before it goes ([`Segment::reuse`]).
//!
//! A **warm connection** goes one step further (protocol 2.3): a client that closes says BYE on
//! its control socket instead of closing it, and the socket is kept beside the segment
//! ([`Parking`]). The next connect to the same server takes both and sends its hello on that
//! socket: no new socket, no connect, no accept, no credentials to learn — the server treats
//! the hello as a new client's. Anything left to read on the socket from the closed connection
//! (a WAKE, a late backup REPLY) comes before the answer to the hello, and is skipped.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::conn::lock;
use crate::channel::Credentials;
use crate::segment::{Layout, Segment};
use crate::warm::Shelf;

/// Memfds kept at most, for live connections and warm segments together: a process with
/// thousands of connections keeps those of the first few only, not a descriptor per connection.
const HELD_MAX: usize = 16;

/// Whom a warm segment may go to, and its memfd (to send it again).
struct Key {
    socket: PathBuf,
    /// The server's credentials, as the socket said when this segment first went to it.
    server: Credentials,
    memfd: Held,
    /// The control socket, when its connection closed with a BYE.
    parked: Parking,
}

/// Where a connection that closes with a BYE leaves its control socket, for the segment's
/// [`Key`] to keep: filled (once) by [`crate::Client::close`].
pub(crate) type Parking = Arc<Mutex<Option<UnixStream>>>;

static SHELF: Shelf<Key> = Shelf::new();
static HELD: AtomicUsize = AtomicUsize::new(0);
/// How many connects used a parked socket so far.
static PARKED_REUSED: AtomicU64 = AtomicU64::new(0);

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

/// How many connections of this process used the control socket of a closed one (a warm
/// connection) so far.
pub fn connections_reused() -> u64 {
    // Relaxed: a count for diagnostics and tests; it orders nothing.
    PARKED_REUSED.load(Ordering::Relaxed)
}

/// How many warm segments this process keeps now.
pub fn kept() -> usize {
    SHELF.len()
}

/// Lets every warm segment go now (unmapped, memfds closed).
pub fn release() {
    SHELF.clear();
}

/// Arranges for `segment`, sent to `server` (listening at `socket`) with `memfd`, to be kept
/// warm when its last holder lets go of it — unless too many memfds are held already (then
/// `memfd` is closed, and the segment unmapped at its end as usual). Returns where the
/// connection may park its control socket as it closes, if it is kept.
pub(crate) fn keep(
    segment: &mut Segment,
    memfd: OwnedFd,
    socket: &Path,
    server: Credentials,
) -> Option<Parking> {
    let memfd = Held::new(memfd)?;
    let parked = Parking::default();
    let key = Key {
        socket: socket.to_path_buf(),
        server,
        memfd,
        parked: parked.clone(),
    };
    segment.keep(move |map, layout| SHELF.put(key, map, layout));
    Some(parked)
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
        |k, l| k.server.pid == pid && k.socket == socket && l == layout,
        // Not released yet (`Err`): kept for a later connect.
        |k, map, layout| Segment::reuse(map, layout).map(|s| (s, k.memfd.take())),
    )
}

/// Whether the peer of `stream` has not closed its end: bytes wait, or none yet.
fn still_open(stream: &UnixStream) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: a valid one-byte buffer; the descriptor is the stream's, open while it lives;
    // MSG_PEEK leaves what it finds for the real read.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n > 0 || (n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock)
}

/// A warm connection to the server at `socket`: a segment of `layout` that its server released,
/// its memfd, the control socket its last connection parked, and the server's credentials.
pub(crate) fn take_parked(
    socket: &Path,
    layout: &Layout,
) -> Option<(Segment, OwnedFd, UnixStream, Credentials)> {
    // A socket whose server went (exited, killed) reads end-of-file: not worth a hello.
    let parked = |k: &Key| lock(&k.parked).as_ref().is_some_and(still_open);
    let taken = SHELF.take(
        |k, l| k.socket == socket && l == layout && parked(k),
        |k, map, layout| {
            let segment = Segment::reuse(map, layout)?;
            let stream = lock(&k.parked).take();
            Ok((segment, k.memfd.take(), stream, k.server))
        },
    )?;
    let (segment, memfd, stream, server) = taken;
    let stream = stream?;
    // Relaxed: as in `connections_reused`.
    PARKED_REUSED.fetch_add(1, Ordering::Relaxed);
    Some((segment, memfd, stream, server))
}
