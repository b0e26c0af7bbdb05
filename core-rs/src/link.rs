//! A connection's control socket once the handshake is done: non-blocking, watched by the
//! process's reactor, written by any thread without waiting.
//!
//! A frame is written at once as far as the socket takes it; the rest waits in the link's
//! outbox, which the reactor writes out as the socket drains ([`Link::flush`]). So no thread —
//! neither a JavaScript thread answering a backup command nor a producer waking its peer — ever
//! blocks on a peer that reads slowly, and frames never interleave: the outbox's lock orders
//! them.
//!
//! A WAKE frame ([`Link::signal`]) is the exception that may be dropped: when the outbox already
//! holds bytes, or the socket is full, the peer has unread bytes from us, so its waiter will wake
//! for those and look at its rings then.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::reactor::{self, Reactor, Token};
use crate::status::{Error, Status};
use crate::wire;

/// No reactor registration yet.
const UNREGISTERED: u64 = u64::MAX;

#[derive(Debug, Default)]
struct Outbox {
    frames: VecDeque<Vec<u8>>,
    /// Bytes of the front frame already written.
    sent: usize,
    closed: bool,
    /// Whether the reactor is told to read (a connection over its backup budget stops).
    reading: bool,
    /// When the outbox last made progress while not empty (for the send timeout).
    since: Option<Instant>,
}

/// See the module doc.
pub struct Link {
    stream: UnixStream,
    out: Mutex<Outbox>,
    token: AtomicU64,
    /// A peer that reads nothing of what is queued for this long is dropped (`None`: never).
    send_timeout: Option<Duration>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("fd", &self.stream.as_raw_fd())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a write found.
enum Wrote {
    /// All of it.
    All,
    /// This many bytes; the socket is full.
    Part(usize),
}

/// Writes as much of `bytes` as the socket takes, without blocking.
fn write_some(fd: RawFd, bytes: &[u8]) -> std::io::Result<Wrote> {
    let mut at = 0;
    while at < bytes.len() {
        // SAFETY: `bytes[at..]` is valid for reads of its length; `fd` is an open socket.
        let n = unsafe {
            libc::send(
                fd,
                bytes[at..].as_ptr().cast(),
                bytes.len() - at,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => return Ok(Wrote::Part(at)),
                _ => return Err(e),
            }
        }
        at += n as usize;
    }
    Ok(Wrote::All)
}

impl Link {
    /// A link over `stream`, which must be non-blocking already (both ends make their sockets
    /// so: `socket` and `accept4` with `SOCK_NONBLOCK`); see [`Link::register`].
    pub fn new(stream: UnixStream, send_timeout: Option<Duration>) -> Result<Link, Error> {
        Ok(Link {
            stream,
            out: Mutex::new(Outbox {
                reading: true,
                ..Outbox::default()
            }),
            token: AtomicU64::new(UNREGISTERED),
            send_timeout,
        })
    }

    /// The socket, to read from (it is non-blocking).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The socket's descriptor.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Registers the link with the reactor for `source`, which receives its events.
    pub fn register(&self, source: std::sync::Arc<dyn reactor::Source>) -> Result<(), Error> {
        let out = lock(&self.out);
        if out.closed {
            return Err(Error::new(
                Status::PeerTerminated,
                "the control channel is closed",
            ));
        }
        let token = Reactor::get()?.add(self.fd(), Self::interest(&out), source)?;
        self.token.store(token, Ordering::Release);
        Ok(())
    }

    fn interest(out: &Outbox) -> u32 {
        let read = if out.reading {
            reactor::READ
        } else {
            reactor::HANGUP
        };
        read | if out.frames.is_empty() {
            0
        } else {
            reactor::WRITE
        }
    }

    fn reinterest(&self, out: &Outbox) {
        let token = self.token.load(Ordering::Acquire);
        if token != UNREGISTERED
            && !out.closed
            && let Ok(r) = Reactor::get()
        {
            r.modify(token, self.fd(), Self::interest(out));
        }
    }

    /// The reactor's token for this link, once registered.
    pub fn token(&self) -> Option<Token> {
        let t = self.token.load(Ordering::Acquire);
        (t != UNREGISTERED).then_some(t)
    }

    /// Queues one whole frame: written now as far as the socket takes it, the rest by the
    /// reactor. Never blocks. Fails once the channel is closed or broken.
    pub fn send(&self, frame: Vec<u8>) -> Result<(), Error> {
        let mut out = lock(&self.out);
        if out.closed {
            return Err(Error::new(
                Status::PeerTerminated,
                "the control channel is closed",
            ));
        }
        if !out.frames.is_empty() {
            out.frames.push_back(frame);
            return Ok(());
        }
        match write_some(self.fd(), &frame) {
            Ok(Wrote::All) => Ok(()),
            Ok(Wrote::Part(n)) => {
                out.frames.push_back(frame);
                out.sent = n;
                self.started_waiting(&mut out);
                Ok(())
            }
            Err(e) => Err(Error::new(
                Status::PeerTerminated,
                format!("the control channel is closed: {e}"),
            )),
        }
    }

    /// The outbox just filled: the reactor writes it out when the socket drains, and watches
    /// the send timeout meanwhile.
    fn started_waiting(&self, out: &mut Outbox) {
        out.since = Some(Instant::now());
        self.reinterest(out);
        if let (Some(t), Some(token), Ok(r)) = (self.send_timeout, self.token(), Reactor::get()) {
            r.deadline(token, reactor::after(t));
        }
    }

    /// Sends a WAKE frame, or nothing when the peer has unread bytes from us anyway (see the
    /// module doc). Never blocks.
    pub fn signal(&self) {
        let mut out = lock(&self.out);
        if out.closed || !out.frames.is_empty() {
            return;
        }
        if let Ok(Wrote::Part(n)) = write_some(self.fd(), &wire::WAKE)
            && n > 0
        {
            // Part of a frame went: the rest must follow, or the stream loses its framing.
            out.frames.push_back(wire::WAKE.to_vec());
            out.sent = n;
            self.started_waiting(&mut out);
        }
    }

    /// The reactor found the socket writable: writes what the outbox holds. An error means the
    /// channel broke.
    pub fn flush(&self) -> Result<(), Error> {
        let mut out = lock(&self.out);
        let mut progressed = false;
        while let Some(front) = out.frames.front() {
            match write_some(self.fd(), &front[out.sent..]) {
                Ok(Wrote::All) => {
                    out.frames.pop_front();
                    out.sent = 0;
                    progressed = true;
                }
                Ok(Wrote::Part(n)) => {
                    out.sent += n;
                    progressed |= n > 0;
                    break;
                }
                Err(e) => {
                    return Err(Error::new(
                        Status::PeerTerminated,
                        format!("the control channel is closed: {e}"),
                    ));
                }
            }
        }
        if out.frames.is_empty() {
            out.since = None;
            self.reinterest(&out);
        } else if progressed {
            out.since = Some(Instant::now());
        }
        Ok(())
    }

    /// A send deadline passed: whether the peer read nothing of the outbox for the whole send
    /// timeout (the connection is then dropped). Sets the next deadline otherwise.
    pub fn stalled(&self) -> bool {
        let out = lock(&self.out);
        let (Some(since), Some(t)) = (out.since, self.send_timeout) else {
            return false;
        };
        if since.elapsed() >= t {
            return true;
        }
        if let (Some(token), Ok(r)) = (self.token(), Reactor::get()) {
            r.deadline(token, since + t);
        }
        false
    }

    /// Stops or resumes reading (the peer's end is still noticed while stopped).
    pub fn set_reading(&self, reading: bool) {
        let mut out = lock(&self.out);
        if out.reading != reading {
            out.reading = reading;
            self.reinterest(&out);
        }
    }

    /// Whether the reactor reads the socket (see [`Link::set_reading`]).
    pub fn is_reading(&self) -> bool {
        lock(&self.out).reading
    }

    /// Ends both directions: the peer reads end-of-file, nothing more is sent, and the reactor
    /// stops watching the socket. Idempotent.
    pub fn shutdown(&self) {
        let mut out = lock(&self.out);
        if out.closed {
            return;
        }
        out.closed = true;
        out.frames.clear();
        // Out of the reactor first: the shutdown below ends this side's reads too, and the
        // reactor would otherwise wake for an end this side made itself.
        let token = self.token.swap(UNREGISTERED, Ordering::AcqRel);
        if token != UNREGISTERED
            && let Ok(r) = Reactor::get()
        {
            r.remove(token, self.fd());
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Closes the link as [`Link::shutdown`] does, but leaves the socket open for another use:
    /// writes `last` (a whole frame) now and returns a descriptor of the socket of its own.
    /// `None` — and the link untouched — when that cannot be done cleanly: the link is closed, or
    /// frames wait in its outbox (`last` would come after them, or be lost with them), or the
    /// socket does not take `last` whole at once. A frame written in part leaves the stream
    /// unusable for anything else, so the link is then shut down as usual.
    pub fn hand_off(&self, last: &[u8]) -> Option<UnixStream> {
        let mut out = lock(&self.out);
        if out.closed || !out.frames.is_empty() {
            return None;
        }
        let other = self.stream.try_clone().ok()?;
        match write_some(self.fd(), last) {
            Ok(Wrote::All) => {}
            Ok(Wrote::Part(0)) | Err(_) => return None,
            Ok(Wrote::Part(_)) => {
                drop(out);
                self.shutdown();
                return None;
            }
        }
        out.closed = true;
        let token = self.token.swap(UNREGISTERED, Ordering::AcqRel);
        if token != UNREGISTERED
            && let Ok(r) = Reactor::get()
        {
            r.remove(token, self.fd());
        }
        Some(other)
    }

    /// Whether [`Link::shutdown`] ran.
    pub fn is_closed(&self) -> bool {
        lock(&self.out).closed
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The reactor must forget the descriptor before it is closed (and reused).
        self.shutdown();
    }
}
