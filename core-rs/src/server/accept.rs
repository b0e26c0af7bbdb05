//! Taking clients: the listening socket and each client's handshake, driven by the reactor.
//!
//! The reactor accepts every pending client at once, checks its credentials, and reads its
//! hello as the bytes arrive, by the handshake's deadline: a client that trickles its hello or
//! sends nothing holds no thread, only its own socket. A hello that passes every check becomes
//! a [`Peer`], which its owner asks `open` for.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::connection::{Peer, lock};
use super::handler::{ConnInfo, Handler};
use super::{Shared, kind_name};
use crate::channel::{self, Received};
use crate::link::Link;
use crate::reactor::{self, Reactor, Source};
use crate::segment::{PROTOCOL_MAJOR, PROTOCOL_MINOR, Segment};
use crate::status::{Error, Status};
use crate::wire::{self, Message, WireError};

/// Clients one readiness of the listener accepts before the reactor looks at other sources.
const ACCEPT_BATCH: usize = 64;

/// A handshake's token before the reactor watches its socket (its hello came whole at once).
const UNWATCHED: u64 = 0;

/// The listening socket of a server.
pub(crate) struct Listener<H: Handler> {
    pub(crate) socket: UnixListener,
    pub(crate) shared: Weak<Shared<H>>,
}

impl<H: Handler> Source for Listener<H> {
    fn ready(self: Arc<Self>, _events: u32) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        for _ in 0..ACCEPT_BATCH {
            // SAFETY: accept4 on our listening socket; null address pointers are allowed.
            let fd = unsafe {
                libc::accept4(
                    self.socket.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                // EAGAIN: no one left; anything else (out of descriptors) is tried again at
                // the next readiness.
                return;
            }
            // SAFETY: accept4 returned a new descriptor that no one else owns.
            let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
            if shared.closing.load(Ordering::SeqCst) {
                continue;
            }
            Handshake::start(&shared, stream);
        }
    }
}

/// Says no to a client during the handshake, and tells the handler.
fn refuse<H: Handler>(
    shared: &Shared<H>,
    stream: &UnixStream,
    peer: Option<&ConnInfo>,
    err: Error,
) {
    let frame = wire::encode(&Message::Refuse {
        status: err.status().code(),
        reason: err.message().to_string(),
    });
    // Non-blocking, and small: a fresh socket's buffer takes it, or the client is gone.
    let _ = stream.write_all_nonblocking(&frame);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    shared.refused(peer, &err);
}

/// A write that gives up rather than wait.
trait WriteNow {
    fn write_all_nonblocking(self, bytes: &[u8]) -> std::io::Result<()>;
}

impl WriteNow for &UnixStream {
    fn write_all_nonblocking(self, bytes: &[u8]) -> std::io::Result<()> {
        let mut at = 0;
        while at < bytes.len() {
            // SAFETY: `bytes[at..]` is valid for its length; the descriptor is our socket.
            let n = unsafe {
                libc::send(
                    self.as_raw_fd(),
                    bytes[at..].as_ptr().cast(),
                    bytes.len() - at,
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                return Err(std::io::Error::last_os_error());
            }
            at += n as usize;
        }
        Ok(())
    }
}

/// Reads a hello through `recvmsg`, keeping every descriptor that comes with its bytes.
struct WithFds<'a> {
    stream: &'a UnixStream,
    fds: &'a mut Vec<OwnedFd>,
    truncated: &'a mut bool,
}

impl Read for WithFds<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match channel::recv_with_fds(self.stream, buf)? {
            Received::Bytes(n, fds) => {
                self.fds.extend(fds);
                Ok(n)
            }
            Received::WouldBlock => Err(std::io::ErrorKind::WouldBlock.into()),
            Received::Closed => Ok(0),
            Received::Truncated(fds) => {
                self.fds.extend(fds);
                *self.truncated = true;
                Ok(0)
            }
        }
    }
}

struct Progress {
    reader: wire::Reader,
    fds: Vec<OwnedFd>,
    /// Set once done, either way.
    over: bool,
}

/// One client between `accept` and its hello's verdict.
///
/// A **parked** handshake is the socket of a connection its client closed with a BYE (protocol
/// 2.3), waiting for that client's next hello: until its first byte comes it is no client yet, so
/// the socket's end or the handshake's deadline let it go quietly — no refusal, no `refused`.
/// From the first byte on, it is any client's handshake.
pub(crate) struct Handshake<H: Handler> {
    shared: Arc<Shared<H>>,
    stream: Mutex<Option<UnixStream>>,
    info: ConnInfo,
    progress: Mutex<Progress>,
    token: AtomicU64,
    parked: bool,
}

impl<H: Handler> Handshake<H> {
    /// Waits on `stream`, the socket of a connection that ended with a BYE, for its client's next
    /// hello (see the type's doc).
    pub(crate) fn parked(shared: &Arc<Shared<H>>, stream: UnixStream) {
        Self::begin(shared, stream, true);
    }

    fn start(shared: &Arc<Shared<H>>, stream: UnixStream) {
        Self::begin(shared, stream, false);
    }

    fn begin(shared: &Arc<Shared<H>>, stream: UnixStream, parked: bool) {
        let creds = match channel::peer_credentials(&stream) {
            Ok(c) => c,
            Err(e) => return refuse(shared, &stream, None, e),
        };
        let info = ConnInfo {
            id: shared.next_id.fetch_add(1, Ordering::Relaxed),
            pid: creds.pid,
            uid: creds.uid,
            gid: creds.gid,
            minor: 0,
        };
        if creds.uid != shared.uid && !shared.options.allow_uids.contains(&creds.uid) {
            let err = Error::new(
                Status::PermissionDenied,
                format!(
                    "client pid {} runs as uid {}, which may not use '{}' (served by uid {})",
                    creds.pid, creds.uid, shared.ic_id, shared.uid
                ),
            );
            return refuse(shared, &stream, Some(&info), err);
        }
        let fd = stream.as_raw_fd();
        let this = Arc::new(Handshake {
            shared: shared.clone(),
            stream: Mutex::new(Some(stream)),
            info,
            progress: Mutex::new(Progress {
                reader: wire::Reader::default(),
                fds: Vec::new(),
                over: false,
            }),
            token: AtomicU64::new(UNWATCHED),
            parked,
        });
        // A client sends its hello with its connect: it is usually here already, and then the
        // socket goes to the reactor once, as the peer's.
        this.clone().ready(reactor::READ);
        if lock(&this.progress).over {
            return;
        }
        // Level-triggered: bytes that came since the read above are reported at once.
        let Ok(reactor) = Reactor::get() else { return };
        let Ok(token) = reactor.add(fd, reactor::READ, this.clone()) else {
            return;
        };
        this.token.store(token, Ordering::Release);
        shared.handshakes(|h| {
            h.insert(token, fd);
        });
        reactor.deadline(token, reactor::after(shared.options.handshake_timeout));
    }

    /// Stops watching the socket and takes it.
    fn take(&self) -> Option<UnixStream> {
        let stream = lock(&self.stream).take()?;
        let token = self.token.load(Ordering::Acquire);
        if token != UNWATCHED {
            self.shared.handshakes(|h| {
                h.remove(&token);
            });
            if let Ok(r) = Reactor::get() {
                r.remove(token, stream.as_raw_fd());
            }
        }
        Some(stream)
    }

    fn fail(&self, err: Error) {
        if let Some(stream) = self.take() {
            refuse(&self.shared, &stream, Some(&self.info), err);
        }
    }

    /// Whether this is a parked handshake that no byte came to yet.
    fn idle_parked(&self) -> bool {
        self.parked && lock(&self.progress).reader.at_boundary()
    }

    /// Lets a parked socket go without a word: its client did not come back.
    fn let_go(&self) {
        if let Some(stream) = self.take() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// The hello is whole: check it, map the segment, and make the peer.
    fn hello(&self, hello: Message, mut fds: Vec<OwnedFd>) -> Result<(), Error> {
        let Message::Hello {
            major,
            minor,
            ic_id,
            geometry,
        } = hello
        else {
            return Err(Error::new(
                Status::ProtocolViolation,
                format!(
                    "the first frame was a {} rather than a hello",
                    kind_name(&hello)
                ),
            ));
        };
        if major != PROTOCOL_MAJOR {
            return Err(Error::new(
                Status::VersionMismatch,
                format!(
                    "the client speaks protocol {major}.{minor} and this server speaks {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}: majors must match"
                ),
            ));
        }
        if ic_id != self.shared.ic_id {
            return Err(Error::new(
                Status::NotFound,
                format!(
                    "the client asked for '{ic_id}' but this server serves '{}'",
                    self.shared.ic_id
                ),
            ));
        }
        if fds.len() != 1 {
            return Err(Error::new(
                Status::ProtocolViolation,
                format!(
                    "the hello carried {} descriptors instead of one segment",
                    fds.len()
                ),
            ));
        }
        let segment = Segment::attach(fds.remove(0), &geometry)?;
        let Some(stream) = self.take() else {
            return Ok(());
        };
        let link = Link::new(stream, Some(self.shared.options.send_timeout))?;
        let peer = Peer::new(&self.shared, self.info, segment, link, minor);
        self.shared.remember(self.info.id, peer.clone());
        if let Err(e) = peer.conn.link.register(peer.clone()) {
            self.shared.forget(self.info.id);
            return Err(e);
        }
        // `close` may have ended the connections it found just before we added ours: it sets
        // `closing` before it takes the map's lock, so after our insert we see it.
        if self.shared.closing.load(Ordering::SeqCst) {
            peer.conn.end();
        }
        match self.shared.handler.open_at_once(&self.info) {
            // Answered here: the client is welcome (or refused) with no wait for the owner.
            Some(result) => peer.opened(result),
            // The owner asks `open` (or lets go of it, if it ended meanwhile).
            None => self.shared.owner.wake(peer),
        }
        Ok(())
    }
}

impl<H: Handler> Source for Handshake<H> {
    fn ready(self: Arc<Self>, _events: u32) {
        let read = {
            let stream = lock(&self.stream);
            let Some(stream) = stream.as_ref() else {
                return;
            };
            let mut p = lock(&self.progress);
            if p.over {
                return;
            }
            let Progress { reader, fds, .. } = &mut *p;
            let mut truncated = false;
            let mut budget = usize::MAX;
            let mut source = WithFds {
                stream,
                fds,
                truncated: &mut truncated,
            };
            let read = reader.read(&mut source, &mut budget);
            match read {
                _ if truncated => Err(WireError::Malformed(
                    "more descriptors than a hello carries",
                )),
                Ok(Some(m)) => {
                    p.over = true;
                    Ok(Some((m, std::mem::take(&mut p.fds))))
                }
                Ok(None) => Ok(None),
                Err(e) => {
                    p.over = true;
                    Err(e)
                }
            }
        };
        match read {
            Ok(None) => {}
            Ok(Some((hello, fds))) => {
                if let Err(e) = self.hello(hello, fds) {
                    self.fail(e);
                }
            }
            Err(WireError::Closed) if self.idle_parked() => self.let_go(),
            Err(WireError::Closed) => self.fail(Error::new(
                Status::PeerTerminated,
                "the client closed the connection during the handshake",
            )),
            Err(e) => self.fail(Error::from(e)),
        }
    }

    fn expired(self: Arc<Self>) {
        let over = {
            let mut p = lock(&self.progress);
            std::mem::replace(&mut p.over, true)
        };
        if over {
            return;
        }
        if self.idle_parked() {
            self.let_go();
        } else {
            self.fail(Error::from(WireError::TimedOut));
        }
    }
}
