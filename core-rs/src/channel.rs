//! The control channel: a Unix stream socket per connection that carries the handshake (with
//! the segment's memfd as SCM_RIGHTS), the backup path's frames, and — by ending — the news
//! that the peer is gone.
//!
//! Peer death needs no timeout and no heartbeat: when a process dies, however it dies, the
//! kernel closes its end of the socket, and the blocking read on this side returns end-of-file
//! (or `ECONNRESET`) at once. Each side keeps one thread in that read; see `client.rs` and
//! `server.rs` for what they do when it returns.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, getsockopt, recvmsg, sendmsg, sockopt,
};

use crate::futex::{self, Scope};
use crate::ring::Spin;
use crate::status::{Error, Status};
use crate::wire::{self, FrameHeader, HEADER_LEN, Message, WireError};

/// Who is on the other end of a socket, as the kernel recorded it when it connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Process id.
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// The peer's credentials (`SO_PEERCRED`).
pub fn peer_credentials(stream: &UnixStream) -> Result<Credentials, Error> {
    let c = getsockopt(stream, sockopt::PeerCredentials)
        .map_err(|e| Error::io("reading the peer's credentials failed", e))?;
    Ok(Credentials {
        pid: c.pid(),
        uid: c.uid(),
        gid: c.gid(),
    })
}

/// Sends one frame with one descriptor attached to its first byte.
pub fn send_with_fd(stream: &UnixStream, frame: &[u8], fd: BorrowedFd<'_>) -> Result<(), Error> {
    let fds = [fd.as_raw_fd()];
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(frame)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| Error::io("sending the hello failed", e))?;
    // A stream socket may take part of a frame; the descriptor went with the first byte.
    (&*stream)
        .write_all(&frame[sent..])
        .map_err(|e| Error::io("sending the hello failed", e))
}

/// Reads from a stream until a deadline: each read waits at most the time left, so a peer that
/// trickles bytes cannot stretch a handshake past its bound.
#[derive(Debug)]
pub struct Deadline<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl<'a> Deadline<'a> {
    /// Reads from `stream` until `deadline`.
    pub fn new(stream: &'a UnixStream, deadline: Instant) -> Deadline<'a> {
        Deadline { stream, deadline }
    }

    fn arm(&self) -> std::io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the handshake did not finish in time",
            ));
        }
        self.stream.set_read_timeout(Some(left))
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm()?;
        let mut s = self.stream;
        s.read(buf)
    }
}

/// Receives the first frame of a connection and every descriptor attached to it, by
/// `deadline`. Descriptors are returned owned (and close-on-exec), so whatever the caller
/// refuses is closed.
pub fn recv_with_fds(
    stream: &UnixStream,
    deadline: Instant,
) -> Result<(Message, Vec<OwnedFd>), WireError> {
    let mut timed = Deadline::new(stream, deadline);
    let mut header = [0u8; HEADER_LEN];
    let mut fds = Vec::new();
    // Room for the most descriptors one message can carry (the kernel's SCM_MAX_FD, 253):
    // never truncated, so every descriptor the kernel installed is taken into ownership here
    // and closed with the refusal. A smaller buffer would leave the installed ones unowned.
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 253]);
    let (got, truncated) = loop {
        timed.arm().map_err(WireError::from_io)?;
        let mut iov = [IoSliceMut::new(&mut header)];
        match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                for c in msg.cmsgs().map_err(|e| WireError::Io(e.into()))? {
                    if let ControlMessageOwned::ScmRights(received) = c {
                        for fd in received {
                            // SAFETY: the kernel just installed `fd` in our table for us; no one
                            // else owns it.
                            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
                break (msg.bytes, msg.flags.contains(MsgFlags::MSG_CTRUNC));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(WireError::from_io(e.into())),
        }
    };
    if got == 0 {
        return Err(WireError::Closed);
    }
    if truncated {
        return Err(WireError::Malformed(
            "more descriptors than a hello carries",
        ));
    }
    if got < HEADER_LEN {
        timed
            .read_exact(&mut header[got..])
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => WireError::Truncated,
                _ => WireError::from_io(e),
            })?;
    }
    let message = wire::read_payload(&mut timed, FrameHeader::parse(&header)?)?;
    Ok((message, fds))
}

/// The sending half of a control channel, shared by every thread that answers or sends.
///
/// Sends are serialized by a mutex, so frames never interleave. Ending the channel does not
/// take that mutex: a thread blocked in a send (the peer stopped reading) must not block the
/// one that ends the connection; `shutdown` also makes that blocked send fail at once.
#[derive(Debug)]
pub struct Sender {
    stream: Mutex<UnixStream>,
    control: UnixStream,
}

impl Sender {
    /// A sender over clones of the stream.
    pub fn new(stream: &UnixStream) -> Result<Sender, Error> {
        let dup = || {
            stream
                .try_clone()
                .map_err(|e| Error::io("duplicating the control socket failed", e))
        };
        Ok(Sender {
            stream: Mutex::new(dup()?),
            control: dup()?,
        })
    }

    /// Bounds each send: a peer that stops reading for longer fails the send.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), Error> {
        self.control
            .set_write_timeout(timeout)
            .map_err(|e| Error::io("setting the send timeout failed", e))
    }

    /// Writes one whole frame.
    pub fn send(&self, frame: &[u8]) -> Result<(), Error> {
        let s = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        (&*s).write_all(frame).map_err(|e| {
            Error::new(
                Status::PeerTerminated,
                format!("the control channel is closed: {e}"),
            )
        })
    }

    /// Ends both directions: the peer reads end-of-file, our reader thread returns, a send
    /// blocked on a full socket fails.
    pub fn shutdown(&self) {
        let _ = self.control.shutdown(std::net::Shutdown::Both);
    }
}

/// Bounds a blocking handshake read.
pub fn set_handshake_timeout(stream: &UnixStream, t: Option<Duration>) -> Result<(), Error> {
    stream
        .set_read_timeout(t)
        .and_then(|()| stream.set_write_timeout(t))
        .map_err(|e| Error::io("setting the handshake timeout failed", e))
}

/// A process-local "something changed" signal: threads wait for a condition, any change bumps
/// the epoch. Waiters spin first, then sleep on a private futex; the notifier makes a system
/// call only when someone sleeps.
#[derive(Debug, Default)]
pub struct Event {
    epoch: AtomicU32,
    sleepers: AtomicU32,
}

impl Event {
    /// An event nobody waits on yet.
    pub const fn new() -> Event {
        Event {
            epoch: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        }
    }

    /// Tells every waiter to re-check its condition.
    #[inline]
    pub fn notify(&self) {
        // SeqCst on both: with the waiter's SeqCst `sleepers` increment and `epoch` load this is
        // the store-buffer pattern, so either we see the sleeper or it sees the new epoch.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            futex::wake(&self.epoch, u32::MAX, Scope::Private);
        }
    }

    /// Returns once `done()` is true: spins for `spin`, then sleeps between notifications.
    pub fn wait_until(&self, spin: Spin, done: impl Fn() -> bool) {
        self.wait_until_for(spin, None, done);
    }

    /// As [`Event::wait_until`], but gives up at `timeout` (when given); returns whether
    /// `done()` became true.
    pub fn wait_until_for(
        &self,
        spin: Spin,
        timeout: Option<Duration>,
        done: impl Fn() -> bool,
    ) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        if spin.run(|| done().then_some(())).is_some() {
            return true;
        }
        loop {
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return done(),
                },
                None => None,
            };
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let seen = self.epoch.load(Ordering::SeqCst);
            if done() {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return true;
            }
            futex::wait(&self.epoch, seen, left, Scope::Private);
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            if done() {
                return true;
            }
        }
    }
}
