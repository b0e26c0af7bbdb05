//! The control channel's set-up: who is on the other end of a socket, the hello that carries the
//! segment's memfd (SCM_RIGHTS), and [`Event`], the process-local wake-up its waiters use.
//!
//! Once a connection is set up, its socket is a [`crate::link::Link`] watched by the process's
//! one waiter ([`crate::reactor`]): peer death needs no timeout and no heartbeat, because when a
//! process dies, however it dies, the kernel closes its end of the socket and the waiter reads
//! end-of-file at once.

use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, getsockopt, recvmsg, sendmsg, sockopt,
};

use crate::futex::{self, Scope};
use crate::ring::Spin;
use crate::status::Error;

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

/// Sends one frame with one descriptor attached to its first byte. The socket may be
/// non-blocking: a fresh connection's buffer always takes a hello whole, and what it does not
/// take is written in a blocking way only for a blocking socket.
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

/// What a non-blocking [`recv_with_fds`] found.
#[derive(Debug)]
pub enum Received {
    /// `n` bytes, and the descriptors that came with them.
    Bytes(usize, Vec<OwnedFd>),
    /// Nothing yet.
    WouldBlock,
    /// The peer closed its end.
    Closed,
    /// More descriptors than fit were attached: the kernel truncated them (the ones received
    /// are owned, so they are closed with the refusal).
    Truncated(Vec<OwnedFd>),
}

/// Receives bytes into `buf`, and every descriptor attached to them, from a non-blocking
/// socket. Descriptors are returned owned (and close-on-exec), so whatever the caller refuses is
/// closed.
pub fn recv_with_fds(stream: &UnixStream, buf: &mut [u8]) -> std::io::Result<Received> {
    // Room for the most descriptors one message can carry (the kernel's SCM_MAX_FD, 253):
    // never truncated, so every descriptor the kernel installed is taken into ownership here
    // and closed with the refusal. A smaller buffer would leave the installed ones unowned.
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 253]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs().map_err(std::io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(received) = c {
                        for fd in received {
                            // SAFETY: the kernel just installed `fd` in our table for us; no one
                            // else owns it.
                            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
                if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                    return Ok(Received::Truncated(fds));
                }
                if msg.bytes == 0 {
                    return Ok(Received::Closed);
                }
                return Ok(Received::Bytes(msg.bytes, fds));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(Received::WouldBlock),
            Err(e) => return Err(e.into()),
        }
    }
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
