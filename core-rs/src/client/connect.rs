//! Connecting: the client's half of the handshake, driven by the reactor so that no thread
//! waits for it.
//!
//! The caller's thread connects the socket, checks the server's credentials, creates the
//! segment and sends the hello with its memfd; the reactor then waits for the welcome (or a
//! refusal) by the handshake's deadline, makes the connection and hands it to `done` — on its
//! own thread, so `done` must not block (a blocking [`crate::Client::connect`] waits for it on
//! a channel). A server whose backlog is full answers the connect with `EAGAIN`: it is tried
//! again every millisecond until the deadline.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};

use super::conn::{Conn, Parts, lock};
use super::{Client, ConnectOptions};
use crate::channel::{self, Credentials};
use crate::endpoint::Endpoint;
use crate::link::Link;
use crate::owner::Owner;
use crate::reactor::{self, Reactor, Source, Token};
use crate::ring::Spin;
use crate::segment::{PROTOCOL_MINOR, Segment};
use crate::status::{Error, Status};
use crate::wire::{self, Message};

/// What a connect ends with, called once (on the reactor's thread, or the caller's).
pub(crate) type Done = Box<dyn FnOnce(Result<Client, Error>) + Send>;

/// How often a connect refused for a full backlog is tried again.
const RETRY: Duration = Duration::from_millis(1);

enum Step {
    /// The socket is not connected yet: the server's backlog was full.
    Queued(OwnedFd),
    /// The hello went; the welcome is awaited.
    Sent {
        stream: UnixStream,
        segment: Segment,
        server: Credentials,
        reader: wire::Reader,
    },
    /// Done, one way or the other.
    Over,
}

/// One connect on its way; see the module doc.
pub(crate) struct Connecting {
    ic_id: String,
    options: ConnectOptions,
    endpoint: Endpoint,
    owner: Arc<dyn Owner>,
    /// Whether the caller waits for the connect on its thread (see [`Connecting::check`]).
    blocking: bool,
    deadline: Instant,
    step: Mutex<Step>,
    done: Mutex<Option<Done>>,
    token: AtomicU64,
}

fn connect_error(ic_id: &str, endpoint: &Endpoint, e: Errno) -> Error {
    match e {
        Errno::ENOENT | Errno::ECONNREFUSED => {
            // Refused: a socket with no one listening, left by a killed server.
            if e == Errno::ECONNREFUSED {
                endpoint.remove_if_stale();
            }
            Error::new(
                Status::NotFound,
                format!(
                    "Cannot connect to '{ic_id}' as no server is listening at {}",
                    endpoint.socket.display()
                ),
            )
        }
        Errno::EACCES | Errno::EPERM => Error::new(
            Status::PermissionDenied,
            format!(
                "Cannot connect to '{ic_id}': permission denied at {}",
                endpoint.socket.display()
            ),
        ),
        other => Error::io(
            &format!(
                "Cannot connect to '{ic_id}' at {}",
                endpoint.socket.display()
            ),
            other,
        ),
    }
}

impl Connecting {
    /// Starts a connect; `done` gets the client or the failure. Fails at once (without calling
    /// `done`) when it cannot even start: a bad ic id, no server, an unsafe directory...
    pub(crate) fn start(
        ic_id: &str,
        options: &ConnectOptions,
        owner: Arc<dyn Owner>,
        blocking: bool,
        done: Done,
    ) -> Result<(), Error> {
        let access = crate::endpoint::Access {
            shared: false,
            owners: &options.allow_server_uids,
        };
        let endpoint = Endpoint::for_ic_id(ic_id, options.socket_dir.as_deref(), access)?;
        options.geometry.layout()?;
        let reactor = Reactor::get()?;
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| Error::io("cannot create a socket", e))?;
        let this = Arc::new(Connecting {
            ic_id: ic_id.to_string(),
            options: options.clone(),
            endpoint,
            owner,
            blocking,
            deadline: reactor::after(options.handshake_timeout),
            step: Mutex::new(Step::Queued(fd)),
            done: Mutex::new(Some(done)),
            token: AtomicU64::new(0),
        });
        let token = reactor.enlist(this.clone())?;
        this.token.store(token, Ordering::Release);
        match this.attempt(reactor, token) {
            Ok(()) => {
                reactor.deadline(token, this.deadline);
                Ok(())
            }
            Err(e) => {
                reactor.remove(token, -1);
                *lock(&this.step) = Step::Over;
                lock(&this.done).take();
                Err(e)
            }
        }
    }

    /// Connects the socket and sends the hello, or (backlog full) tries again in a moment.
    fn attempt(&self, reactor: &Reactor, token: Token) -> Result<(), Error> {
        let mut step = lock(&self.step);
        let Step::Queued(fd) = &*step else {
            return Ok(());
        };
        let addr = UnixAddr::new(&self.endpoint.socket)
            .map_err(|e| Error::io("the socket path does not fit a Unix address", e))?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => {}
            Err(Errno::EAGAIN) if Instant::now() < self.deadline => {
                reactor.deadline(token, Instant::now() + RETRY);
                return Ok(());
            }
            Err(Errno::EAGAIN) => {
                return Err(Error::new(
                    Status::Io,
                    format!(
                        "Cannot connect to '{}': its server's backlog stayed full for {:?}",
                        self.ic_id, self.options.handshake_timeout
                    ),
                ));
            }
            Err(e) => return Err(connect_error(&self.ic_id, &self.endpoint, e)),
        }
        let Step::Queued(fd) = std::mem::replace(&mut *step, Step::Over) else {
            unreachable!("checked above");
        };
        let stream = UnixStream::from(fd);
        let server = self.check(&stream)?;
        let (segment, memfd) = Segment::create(
            &self.options.geometry,
            &self.ic_id,
            self.options.protocol_major,
        )?;
        let hello = wire::encode(&Message::Hello {
            major: self.options.protocol_major,
            minor: PROTOCOL_MINOR,
            ic_id: self.ic_id.clone(),
            geometry: self.options.geometry,
        });
        channel::send_with_fd(&stream, &hello, memfd.as_fd())?;
        // The server has its own descriptor now; the mapping is all this side needs.
        drop(memfd);
        reactor.watch(token, stream.as_raw_fd(), reactor::READ)?;
        *step = Step::Sent {
            stream,
            segment,
            server,
            reader: wire::Reader::default(),
        };
        Ok(())
    }

    /// The server's credentials, if this client may use it.
    fn check(&self, stream: &UnixStream) -> Result<Credentials, Error> {
        let server = channel::peer_credentials(stream)?;
        let me = nix::unistd::geteuid().as_raw();
        if server.uid != me && !self.options.allow_server_uids.contains(&server.uid) {
            return Err(Error::new(
                Status::PermissionDenied,
                format!(
                    "Cannot connect to '{}' as its server (pid {}) runs as uid {}, not {me}",
                    self.ic_id, server.pid, server.uid
                ),
            ));
        }
        if self.blocking && server.pid == std::process::id() as i32 && self.owner.is_current() {
            // The server's `open` would run on this very thread, which is about to wait.
            return Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "Cannot connect to '{}' from the thread that runs this process's handlers: its server is in this process, and its open would wait for this thread; connect from another thread",
                    self.ic_id
                ),
            ));
        }
        Ok(server)
    }

    /// Ends the connect with `result` (once).
    fn finish(&self, result: Result<Client, Error>) {
        *lock(&self.step) = Step::Over;
        if let Ok(r) = Reactor::get() {
            r.remove(self.token.load(Ordering::Acquire), -1);
        }
        let done = lock(&self.done).take();
        match done {
            Some(done) => done(result),
            None => drop(result),
        }
    }

    fn fail(&self, e: Error) {
        self.finish(Err(e));
    }

    /// The answer to the hello arrived: make the connection.
    fn answered(&self, answer: Message) {
        let Step::Sent {
            stream,
            segment,
            server,
            ..
        } = std::mem::replace(&mut *lock(&self.step), Step::Over)
        else {
            return;
        };
        let ic_id = &self.ic_id;
        let major = self.options.protocol_major;
        match answer {
            Message::Welcome { major: m, .. } if m == major => {}
            Message::Welcome {
                major: m, minor, ..
            } => {
                return self.fail(Error::new(
                    Status::VersionMismatch,
                    format!(
                        "the server of '{ic_id}' speaks protocol {m}.{minor} and this client speaks {major}.{PROTOCOL_MINOR}: majors must match"
                    ),
                ));
            }
            Message::Refuse { status, reason } => {
                return self.fail(Error::new(
                    Status::from_code(status).unwrap_or(Status::ProtocolViolation),
                    reason,
                ));
            }
            _ => {
                return self.fail(Error::new(
                    Status::ProtocolViolation,
                    format!("the server of '{ic_id}' answered the hello with an unexpected frame"),
                ));
            }
        }
        // The reactor forgets the handshake's registration; the connection registers anew.
        if let Ok(r) = Reactor::get() {
            r.remove(self.token.load(Ordering::Acquire), stream.as_raw_fd());
        }
        let made = Link::new(stream, None).and_then(|link| {
            let conn = Conn::new(Parts {
                ic_id: ic_id.clone(),
                endpoint: self.endpoint.clone(),
                server_pid: server.pid,
                segment,
                spin: Spin(self.options.spin),
                link,
                owner: self.owner.clone(),
            });
            conn.link.register(conn.clone())?;
            Ok(Client { conn })
        });
        self.finish(made);
    }
}

impl Source for Connecting {
    fn ready(self: Arc<Self>, events: u32) {
        if events & (reactor::READ | reactor::ENDED) == 0 {
            return;
        }
        let read = {
            let mut step = lock(&self.step);
            let Step::Sent { stream, reader, .. } = &mut *step else {
                return;
            };
            let mut budget = usize::MAX;
            reader.read(&mut &*stream, &mut budget)
        };
        let ic_id = &self.ic_id;
        match read {
            Ok(Some(answer)) => self.answered(answer),
            Ok(None) => {}
            Err(wire::WireError::Closed) => self.fail(Error::new(
                Status::PeerTerminated,
                format!("the server of '{ic_id}' closed the connection during the handshake"),
            )),
            Err(e) => self.fail(Error::from(e)),
        }
    }

    fn expired(self: Arc<Self>) {
        let queued = matches!(&*lock(&self.step), Step::Queued(_));
        if queued {
            let Ok(reactor) = Reactor::get() else { return };
            let token = self.token.load(Ordering::Acquire);
            if let Err(e) = self.attempt(reactor, token) {
                self.fail(e);
            }
            return;
        }
        let sent = matches!(&*lock(&self.step), Step::Sent { .. });
        if sent && Instant::now() >= self.deadline {
            self.fail(Error::new(
                Status::Io,
                format!(
                    "'{}' did not answer the hello within {:?}",
                    self.ic_id, self.options.handshake_timeout
                ),
            ));
        }
    }
}
