//! Connecting: the client's half of the handshake.
//!
//! The caller's thread connects the socket, checks the server's credentials, creates the
//! segment and sends the hello with its memfd, then waits on the socket for the welcome (or a
//! refusal) for a short while of its own: a server that answers at once — one with no `open` to
//! run, or a quick one — costs no other thread a wake-up. When the answer takes longer, the
//! reactor takes the handshake over and waits for it by the handshake's deadline, and hands the
//! connection (or the failure) to `done` — on its own thread, so `done` must not block (a
//! blocking [`crate::Client::connect`] waits inline for the whole handshake instead). A server
//! whose backlog is full answers the connect with `EAGAIN`: the reactor tries it again every
//! millisecond until the deadline.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};

use super::conn::{Conn, Parts, lock};
use super::warm::{self, Parking};
use super::{Client, ConnectOptions};
use crate::channel::{self, Credentials};
use crate::endpoint::Endpoint;
use crate::link::Link;
use crate::owner::Owner;
use crate::reactor::{self, Reactor, Source, Token};
use crate::ring::{Polite, Spin};
use crate::segment::{PROTOCOL_MAJOR, PROTOCOL_MINOR, Segment};
use crate::status::{Error, Status};
use crate::wire::{self, Message, WireError};

/// What a connect ends with, called once (on the reactor's thread).
pub(crate) type Done = Box<dyn FnOnce(Result<Client, Error>) + Send>;

/// How often a connect refused for a full backlog is tried again.
const RETRY: Duration = Duration::from_millis(1);

/// How long the connecting thread spins on its socket for the welcome before it sleeps there:
/// a server's reactor answers a hello in some 30 to 70 µs here (accept, checks, mapping), and
/// waking a thread that sleeps costs 35 to 70 µs on this kind of machine, so a spin of about
/// that long is never much worse than sleeping, and usually spares the wake-up.
const HANDSHAKE_SPIN: Duration = Duration::from_micros(100);

/// Bytes one look at a warm connection's socket reads at most while it skips what the last
/// connection left there.
const SKIP_BUDGET: usize = 1 << 20;
/// Frames one look skips at most (a WAKE has no body for the byte budget to count).
const SKIP_FRAMES: usize = 256;

/// No reactor registration (yet).
const NO_TOKEN: u64 = 0;

enum Step {
    /// The socket is not connected yet (the server's backlog was full): the socket, and the
    /// segment made for the hello, with its memfd (none yet when a warm one may do).
    Queued(OwnedFd, Option<(Segment, OwnedFd)>),
    /// The hello went; the welcome is awaited.
    Sent {
        stream: UnixStream,
        segment: Segment,
        server: Credentials,
        reader: wire::Reader,
        /// Where the connection may park its socket as it closes (its segment is kept warm).
        parking: Option<Parking>,
        /// Whether the socket is a warm connection's: what its last connection left unread is
        /// skipped, and a failure sends the connect the usual way instead.
        reused: bool,
    },
    /// Done, one way or the other.
    Over,
}

/// What [`Connecting::attempt`] got to.
enum Attempt {
    Queued,
    Sent,
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

/// Waits until `fd` is readable (or its peer's end came), or `timeout` passes.
fn wait_readable(fd: std::os::fd::RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd and a valid timespec, both alive for the call; no signal mask.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}

impl Connecting {
    /// Starts a connect. Returns the client when the server answered within `wait` (on this
    /// thread); otherwise `Ok(None)`, and `done` gets the client or the failure later. Fails at
    /// once (without calling `done`) when it cannot even start — a bad ic id, no server, an
    /// unsafe directory — or when the server refused within `wait`. The hello goes on a parked
    /// socket first when `parked` allows it and there is one (see `warm`).
    pub(crate) fn start(
        ic_id: &str,
        options: &ConnectOptions,
        owner: Arc<dyn Owner>,
        wait: Duration,
        blocking: bool,
        done: Done,
        parked: bool,
    ) -> Result<Option<Client>, Error> {
        let access = crate::endpoint::Access {
            shared: false,
            owners: &options.allow_server_uids,
        };
        let endpoint = Endpoint::for_ic_id(ic_id, options.socket_dir.as_deref(), access)?;
        let layout = options.geometry.layout()?;
        let this = Arc::new(Connecting {
            ic_id: ic_id.to_string(),
            options: options.clone(),
            endpoint,
            owner,
            blocking,
            deadline: reactor::after(options.handshake_timeout),
            step: Mutex::new(Step::Over),
            done: Mutex::new(Some(done)),
            token: AtomicU64::new(NO_TOKEN),
        });
        let fail = |e: Error| {
            lock(&this.done).take();
            *lock(&this.step) = Step::Over;
            e
        };
        // A warm connection first. The server's answer on it — a welcome or a refusal — is the
        // connect's, as a new socket's would be; a socket lost meanwhile (the server went, or
        // let it go) sends the connect the usual way.
        if parked
            && options.protocol_major == PROTOCOL_MAJOR
            && this.again(&layout).map_err(fail)?
        {
            match this.wait_inline(Instant::now() + this.inline_wait(wait)) {
                // `made` ran (the step is over): the server answered.
                Some(answer) if !this.is_sent() => {
                    lock(&this.done).take();
                    return answer.map(Some);
                }
                Some(_) => {}
                None => {
                    this.hand_over(this.sent_fd()).map_err(fail)?;
                    return Ok(None);
                }
            }
        }
        let endpoint = &this.endpoint;
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| Error::io("cannot create a socket", e))?;
        // The segment is made before the connect, so that the hello follows the connect at
        // once: the server's reactor then finds it as it accepts. A warm one (`warm`) can only
        // be chosen once the server's process is known, after the connect.
        let made = if options.protocol_major == PROTOCOL_MAJOR
            && warm::may_have(&endpoint.socket, &layout)
        {
            None
        } else {
            Some(Segment::create(
                &options.geometry,
                ic_id,
                options.protocol_major,
            )?)
        };
        *lock(&this.step) = Step::Queued(fd, made);
        match this.attempt().map_err(fail)? {
            Attempt::Queued => {
                this.hand_over(None).map_err(fail)?;
                return Ok(None);
            }
            Attempt::Sent => {}
        }
        if let Some(answer) = this.wait_inline(Instant::now() + this.inline_wait(wait)) {
            lock(&this.done).take();
            return answer.map(Some);
        }
        this.hand_over(this.sent_fd()).map_err(fail)?;
        Ok(None)
    }

    /// How long the caller's thread may wait for the answer to the hello, of the `wait` it
    /// offered: none when a server of this process may need this very thread to answer (its
    /// `open` runs on its owner) — then the reactor waits, not this thread.
    fn inline_wait(&self, wait: Duration) -> Duration {
        let own_server = match &*lock(&self.step) {
            Step::Sent { server, .. } => server.pid == std::process::id() as i32,
            _ => false,
        };
        if own_server && !self.blocking && self.owner.is_current() {
            Duration::ZERO
        } else {
            wait.min(self.options.handshake_timeout)
        }
    }

    /// The socket the hello went on, if it went.
    fn sent_fd(&self) -> Option<std::os::fd::RawFd> {
        match &*lock(&self.step) {
            Step::Sent { stream, .. } => Some(stream.as_raw_fd()),
            _ => None,
        }
    }

    /// Sends the hello on a warm connection's socket, if this process has one for this server
    /// (see `warm`); returns whether it did. A socket that would not take the hello is let go
    /// (the server finds the connection ended); a server this client may no longer use is an
    /// error, as it would be on a new socket.
    fn again(&self, layout: &crate::segment::Layout) -> Result<bool, Error> {
        let Some((mut segment, memfd, stream, server)) =
            warm::take_parked(&self.endpoint.socket, layout)
        else {
            return Ok(false);
        };
        self.check_server(&server)?;
        if channel::send_with_fd(&stream, &self.hello(), memfd.as_fd()).is_err() {
            return Ok(false);
        }
        let parking = warm::keep(&mut segment, memfd, &self.endpoint.socket, server);
        *lock(&self.step) = Step::Sent {
            stream,
            segment,
            server,
            reader: wire::Reader::default(),
            parking,
            reused: true,
        };
        Ok(true)
    }

    fn hello(&self) -> Vec<u8> {
        wire::encode(&Message::Hello {
            major: self.options.protocol_major,
            minor: self.options.protocol_minor,
            ic_id: self.ic_id.clone(),
            geometry: self.options.geometry,
        })
    }

    /// Reads the answer to the hello from a step that sent it: `Ok(None)` until it is whole.
    /// On a warm connection's socket, what its last connection left unread comes first — a
    /// WAKE, a late backup REPLY — and is skipped (their lengths were checked as any frame's).
    fn read_answer(&self) -> Result<Option<Message>, WireError> {
        let mut step = lock(&self.step);
        let Step::Sent {
            stream,
            reader,
            reused,
            ..
        } = &mut *step
        else {
            return Ok(None);
        };
        // Bounded, so that a server that writes frames as fast as they are read cannot keep
        // this thread here past its deadline: the caller comes back.
        let mut budget = SKIP_BUDGET;
        for _ in 0..SKIP_FRAMES {
            match reader.read(&mut &*stream, &mut budget)? {
                Some(Message::Wake | Message::Reply(_)) if *reused => {}
                answer => return Ok(answer),
            }
        }
        Ok(None)
    }

    /// Whether the hello went on a warm connection's socket.
    fn reused(&self) -> bool {
        matches!(&*lock(&self.step), Step::Sent { reused: true, .. })
    }

    /// Whether the hello went and its answer is still to come.
    fn is_sent(&self) -> bool {
        matches!(&*lock(&self.step), Step::Sent { .. })
    }

    /// Gives the connect to the reactor: it watches `fd` (the sent hello's socket), or tries a
    /// queued one again soon, and ends the connect at the handshake's deadline.
    fn hand_over(self: &Arc<Self>, fd: Option<std::os::fd::RawFd>) -> Result<(), Error> {
        let reactor = Reactor::get()?;
        let token = reactor.enlist(self.clone())?;
        self.token.store(token, Ordering::Release);
        if let Some(fd) = fd
            && let Err(e) = reactor.watch(token, fd, reactor::READ)
        {
            reactor.remove(token, -1);
            return Err(e);
        }
        if fd.is_none() {
            reactor.deadline(token, Instant::now() + RETRY);
        }
        reactor.deadline(token, self.deadline);
        Ok(())
    }

    /// Reads the answer to the hello on this thread until `until` — spinning on the socket for
    /// [`HANDSHAKE_SPIN`] first, then sleeping on it: `Some` once it came (the client or why
    /// not), `None` if it did not come in time.
    fn wait_inline(&self, until: Instant) -> Option<Result<Client, Error>> {
        let start = Instant::now();
        let spin_until = start + HANDSHAKE_SPIN;
        let mut polite = Polite::new(start);
        let fd = self.sent_fd()?;
        loop {
            match self.read_answer() {
                Ok(Some(answer)) => return Some(self.made(answer)),
                Ok(None) => {}
                Err(e) => return Some(Err(self.handshake_error(e))),
            }
            let now = Instant::now();
            if now >= until {
                return None;
            }
            if now < spin_until.min(until) {
                std::hint::spin_loop();
                polite.tick(now);
                continue;
            }
            wait_readable(fd, until - now);
        }
    }

    /// Connects the socket and sends the hello; or finds the server's backlog full.
    fn attempt(&self) -> Result<Attempt, Error> {
        let mut step = lock(&self.step);
        let Step::Queued(fd, _) = &*step else {
            return Ok(Attempt::Sent);
        };
        let addr = UnixAddr::new(&self.endpoint.socket)
            .map_err(|e| Error::io("the socket path does not fit a Unix address", e))?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => {}
            Err(Errno::EAGAIN) if Instant::now() < self.deadline => return Ok(Attempt::Queued),
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
        let Step::Queued(fd, made) = std::mem::replace(&mut *step, Step::Over) else {
            unreachable!("checked above");
        };
        let stream = UnixStream::from(fd);
        // The server's credentials are checked before the segment goes to it.
        let server = channel::peer_credentials(&stream)?;
        self.check_server(&server)?;
        let socket = &self.endpoint.socket;
        let (mut segment, memfd) = match made {
            Some(made) => made,
            None => match warm::take(socket, server.pid, &self.options.geometry.layout()?) {
                Some(warm) => warm,
                None => Segment::create(&self.options.geometry, &self.ic_id, PROTOCOL_MAJOR)?,
            },
        };
        channel::send_with_fd(&stream, &self.hello(), memfd.as_fd())?;
        // For this process's next connection to the same server, once this one is over.
        let parking = if self.options.protocol_major == PROTOCOL_MAJOR {
            warm::keep(&mut segment, memfd, socket, server)
        } else {
            None
        };
        *step = Step::Sent {
            stream,
            segment,
            server,
            reader: wire::Reader::default(),
            parking,
            reused: false,
        };
        Ok(Attempt::Sent)
    }

    /// Whether this client may use the server of credentials `server`.
    fn check_server(&self, server: &Credentials) -> Result<(), Error> {
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
        Ok(())
    }

    fn handshake_error(&self, e: WireError) -> Error {
        match e {
            WireError::Closed => Error::new(
                Status::PeerTerminated,
                format!(
                    "the server of '{}' closed the connection during the handshake",
                    self.ic_id
                ),
            ),
            other => Error::from(other),
        }
    }

    /// Ends a connect the reactor took over with `result` (once).
    fn finish(&self, result: Result<Client, Error>) {
        *lock(&self.step) = Step::Over;
        let token = self.token.load(Ordering::Acquire);
        if token != NO_TOKEN
            && let Ok(r) = Reactor::get()
        {
            r.remove(token, -1);
        }
        let done = lock(&self.done).take();
        match done {
            Some(done) => done(result),
            None => drop(result),
        }
    }

    /// The answer to the hello arrived: the connection, or why not.
    fn made(&self, answer: Message) -> Result<Client, Error> {
        let Step::Sent {
            stream,
            segment,
            server,
            parking,
            ..
        } = std::mem::replace(&mut *lock(&self.step), Step::Over)
        else {
            return Err(Error::new(Status::Io, "the handshake ended twice"));
        };
        let ic_id = &self.ic_id;
        let major = self.options.protocol_major;
        let minor = match answer {
            Message::Welcome {
                major: m, minor, ..
            } if m == major => minor,
            Message::Welcome {
                major: m, minor, ..
            } => {
                return Err(Error::new(
                    Status::VersionMismatch,
                    format!(
                        "the server of '{ic_id}' speaks protocol {m}.{minor} and this client speaks {major}.{PROTOCOL_MINOR}: majors must match"
                    ),
                ));
            }
            Message::Refuse { status, reason } => {
                return Err(Error::new(
                    Status::from_code(status).unwrap_or(Status::ProtocolViolation),
                    reason,
                ));
            }
            _ => {
                return Err(Error::new(
                    Status::ProtocolViolation,
                    format!("the server of '{ic_id}' answered the hello with an unexpected frame"),
                ));
            }
        };
        // The reactor forgets the handshake's registration (if it had one); the connection
        // registers anew.
        let token = self.token.swap(NO_TOKEN, Ordering::AcqRel);
        if token != NO_TOKEN
            && let Ok(r) = Reactor::get()
        {
            r.remove(token, stream.as_raw_fd());
        }
        let link = Link::new(stream, None)?;
        let conn = Conn::new(Parts {
            ic_id: ic_id.clone(),
            endpoint: self.endpoint.clone(),
            server_pid: server.pid,
            minor,
            segment,
            spin: Spin(self.options.spin),
            link,
            owner: self.owner.clone(),
            // A server that does not know BYE has its socket closed, as before.
            parking: parking.filter(|_| minor >= 3),
        });
        conn.link.register(conn.clone())?;
        Ok(Client { conn })
    }
}

impl Source for Connecting {
    fn ready(self: Arc<Self>, events: u32) {
        if events & (reactor::READ | reactor::ENDED) == 0 {
            return;
        }
        let reused = self.reused();
        match self.read_answer() {
            Ok(Some(answer)) => {
                let made = self.made(answer);
                self.finish(made);
            }
            Ok(None) => {}
            // A warm connection's socket lost before the answer: the usual way.
            Err(_) if reused => self.afresh(),
            Err(e) => self.finish(Err(self.handshake_error(e))),
        }
    }

    fn expired(self: Arc<Self>) {
        let queued = matches!(&*lock(&self.step), Step::Queued(..));
        if queued {
            let Ok(reactor) = Reactor::get() else { return };
            match self.attempt() {
                Ok(Attempt::Queued) => reactor.deadline(self.token(), Instant::now() + RETRY),
                Ok(Attempt::Sent) => {
                    let fd = match &*lock(&self.step) {
                        Step::Sent { stream, .. } => stream.as_raw_fd(),
                        _ => return,
                    };
                    if let Err(e) = reactor.watch(self.token(), fd, reactor::READ) {
                        self.finish(Err(e));
                    }
                }
                Err(e) => self.finish(Err(e)),
            }
            return;
        }
        let sent = matches!(&*lock(&self.step), Step::Sent { .. });
        if sent && Instant::now() >= self.deadline {
            self.finish(Err(Error::new(
                Status::Io,
                format!(
                    "'{}' did not answer the hello within {:?}",
                    self.ic_id, self.options.handshake_timeout
                ),
            )));
        }
    }
}

impl Connecting {
    fn token(&self) -> Token {
        self.token.load(Ordering::Acquire)
    }

    /// A warm connection's socket was lost before the answer to its hello, on the reactor's
    /// thread: the connect starts again on a new socket, and its end goes to the same `done`.
    fn afresh(&self) {
        *lock(&self.step) = Step::Over;
        let token = self.token.swap(NO_TOKEN, Ordering::AcqRel);
        if token != NO_TOKEN
            && let Ok(r) = Reactor::get()
        {
            r.remove(token, -1);
        }
        let Some(done) = lock(&self.done).take() else {
            return;
        };
        let once = Arc::new(Mutex::new(Some(done)));
        let later = once.clone();
        let end = move |result: Result<Client, Error>| {
            if let Some(done) = lock(&later).take() {
                done(result);
            }
        };
        let now = Connecting::start(
            &self.ic_id,
            &self.options,
            self.owner.clone(),
            Duration::ZERO,
            false,
            Box::new(end),
            false,
        );
        let result = match now {
            Ok(None) => return,
            Ok(Some(client)) => Ok(client),
            Err(e) => Err(e),
        };
        if let Some(done) = lock(&once).take() {
            done(result);
        }
    }
}
