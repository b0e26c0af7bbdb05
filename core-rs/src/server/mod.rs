//! The server: listens on an ic id, takes clients, and runs their commands through a
//! [`Handler`].
//!
//! - [`accept`]: the listening socket and each client's handshake, driven by the reactor;
//! - [`connection`]: one client's connection — what its owner polls and the reactor feeds;
//! - [`command`]: one command and its answer;
//! - [`handler`]: what a server does with its clients;
//! - [`pool`]: the worker threads that run the commands sent to them.
//!
//! A server starts no thread of its own (but its pool's): the process's reactor takes its
//! clients and watches their sockets, and its owner — the process's runner, or the JavaScript
//! thread that served it — runs its handlers (docs/architecture.md).

mod accept;
mod command;
mod connection;
mod handler;
mod pool;

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use command::Command;
pub use handler::{ConnInfo, Handler, Handlers, Opening, handlers};

use accept::Listener;
use connection::{Peer, lock};
use handler::Context;
use pool::Pool;

use crate::channel::Event;
use crate::endpoint::{Endpoint, ServerLock};
use crate::owner::{Lent, Member, Owner, Runner};
use crate::reactor::{self, Reactor, Token};
use crate::ring::Spin;
use crate::segment::{Layout, Segment};
use crate::slot::Mode;
use crate::stats::Stats;
use crate::status::{Error, Status};
use crate::wire::Message;

/// How a server runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Threads in the worker pool; 0 runs every command on the server's owner.
    pub workers: usize,
    /// Where commands that do not choose run ([`Mode::Default`] means inline).
    pub default_mode: Mode,
    /// User ids allowed besides the server's own.
    pub allow_uids: Vec<u32>,
    /// How long the owner keeps polling a connection for its next command before it sleeps.
    pub spin: Duration,
    /// Bound on a client's whole handshake.
    pub handshake_timeout: Duration,
    /// Bound on sending backup answers: a client that reads none of them for this long loses
    /// its connection.
    pub send_timeout: Duration,
    /// The socket directory; `None` means the default (see [`crate::endpoint`]).
    pub socket_dir: Option<PathBuf>,
    /// The thread that runs the handlers and pops the CS rings; `None` means the process's
    /// [`Runner`].
    pub owner: Option<Arc<dyn Owner>>,
    /// The highest protocol minor it speaks. Only tests change it, to serve as an older server
    /// does.
    #[doc(hidden)]
    pub protocol_minor: u16,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            workers: 0,
            default_mode: Mode::Inline,
            allow_uids: Vec::new(),
            spin: Duration::from_micros(50),
            handshake_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(5),
            socket_dir: None,
            owner: None,
            protocol_minor: crate::segment::PROTOCOL_MINOR,
        }
    }
}

/// The listening socket as the reactor watches it: its token, its descriptor, and itself.
type Registered<H> = (Token, RawFd, Arc<Listener<H>>);

/// What every part of one server shares.
pub(crate) struct Shared<H: Handler> {
    pub(crate) handler: H,
    pub(crate) options: ServeOptions,
    pub(crate) ic_id: String,
    pool: Option<Arc<Pool>>,
    pub(crate) uid: u32,
    pub(crate) next_id: AtomicU64,
    pub(crate) closing: AtomicBool,
    pub(crate) owner: Arc<dyn Owner>,
    /// Open connections (and those whose `open` runs), by id.
    connections: Mutex<HashMap<u64, Arc<Peer<H>>>>,
    /// Connections lent to a consumer ([`Handler::lane`]), until they ended and it holds none
    /// of their commands.
    lanes: Mutex<HashMap<u64, LaneEntry>>,
    /// Handshakes in progress: their tokens and sockets, for `close` to end.
    handshakes: Mutex<HashMap<Token, RawFd>>,
    /// Notified when a connection leaves `connections`.
    gone: Event,
    pub(crate) stats: Arc<Stats>,
    listener: Mutex<Option<Registered<H>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    lock: Mutex<Option<ServerLock>>,
}

impl<H: Handler> Shared<H> {
    /// Adds a connection.
    pub(crate) fn remember(&self, id: u64, peer: Arc<Peer<H>>) {
        lock(&self.connections).insert(id, peer);
    }

    /// Keeps a lent connection for its consumer's calls.
    pub(crate) fn lend(&self, id: u64, conn: Arc<connection::Connection>) {
        lock(&self.lanes).insert(
            id,
            LaneEntry {
                conn,
                holds: 0,
                draining: false,
                ended: false,
            },
        );
    }

    /// Lent connection `id` ended: the consumer has `drain` more to take (commands the client
    /// sent before it went), for which it holds the connection until [`Shared::lane_change`]
    /// with `ended`; without, and with no command of it held, the consumer lets go of it now.
    pub(crate) fn lane_ended(&self, id: u64, drain: bool) {
        self.lane_change(id, |e| {
            e.ended = true;
            if drain && !e.draining {
                e.draining = true;
                e.holds += 1;
                e.conn.hold();
            }
        });
    }

    /// Changes lent connection `id`'s entry; drops the entry once it ended and holds nothing.
    fn lane_change(&self, id: u64, change: impl FnOnce(&mut LaneEntry)) -> Option<()> {
        let mut lanes = lock(&self.lanes);
        let entry = lanes.get_mut(&id)?;
        change(entry);
        if entry.ended && entry.holds == 0 {
            lanes.remove(&id);
        }
        Some(())
    }

    /// Removes a connection that ended (or was refused).
    pub(crate) fn forget(&self, id: u64) {
        lock(&self.connections).remove(&id);
        self.gone.notify();
    }

    pub(crate) fn handshakes(&self, f: impl FnOnce(&mut HashMap<Token, RawFd>)) {
        f(&mut lock(&self.handshakes));
    }

    /// Tells the handler that a client was turned away.
    pub(crate) fn refused(&self, peer: Option<&ConnInfo>, why: &Error) {
        let _ = catch_unwind(AssertUnwindSafe(|| self.handler.refused(peer, why)));
    }

    /// The server's counters as a request for them is answered: the [`crate::stats::word`]
    /// figures as little-endian `f64`s.
    pub(crate) fn stats_bytes(&self) -> Vec<u8> {
        let mut words = [0.0; crate::stats::word::LEN];
        let connections = lock(&self.connections).len();
        self.stats.snapshot(connections, &mut words);
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

/// A server with its handler's type erased.
trait Serving: Send + Sync {
    fn close(&self);
    fn connections(&self) -> usize;
    fn lane(&self, id: u64) -> Option<Arc<connection::Connection>>;
    fn lane_hold(&self, id: u64, hold: bool) -> Option<()>;
    fn lane_drained(&self, id: u64);
}

impl<H: Handler> Serving for Shared<H> {
    fn close(&self) {
        if self.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        let reactor = Reactor::get().ok();
        if let Some((token, fd, listener)) = lock(&self.listener).take() {
            if let Some(r) = reactor {
                r.remove(token, fd);
            }
            drop(listener);
        }
        let handshakes: Vec<_> = lock(&self.handshakes).drain().collect();
        if let Some(r) = reactor {
            for (token, fd) in handshakes {
                r.remove(token, fd);
            }
        }
        let peers: Vec<_> = lock(&self.connections).values().cloned().collect();
        for p in &peers {
            p.conn.end();
        }
        if self.owner.is_current() {
            // The owner is this thread: let go of them now.
            for p in &peers {
                p.poll();
            }
        } else {
            self.gone
                .wait_until(Spin(Duration::ZERO), || lock(&self.connections).is_empty());
        }
        if let Some(pool) = &self.pool {
            pool.stop();
        }
        let me = std::thread::current().id();
        let workers = std::mem::take(&mut *lock(&self.workers));
        for w in workers {
            if w.thread().id() != me {
                let _ = w.join();
            }
        }
        // Removes the socket and lock files.
        lock(&self.lock).take();
    }

    fn connections(&self) -> usize {
        lock(&self.connections).len()
    }

    fn lane(&self, id: u64) -> Option<Arc<connection::Connection>> {
        lock(&self.lanes).get(&id).map(|e| e.conn.clone())
    }

    fn lane_hold(&self, id: u64, hold: bool) -> Option<()> {
        self.lane_change(id, |e| {
            if hold {
                e.holds += 1;
                e.conn.hold();
            } else if e.holds > 0 {
                e.holds -= 1;
                e.conn.release();
            }
        })
    }

    fn lane_drained(&self, id: u64) {
        // The drain's hold, if `lane_ended` took one: the consumer took what was left.
        let _ = self.lane_change(id, |e| {
            if e.draining {
                e.draining = false;
                e.holds -= 1;
                e.conn.release();
            }
        });
    }
}

/// A running server. [`Server::close`] (or dropping it) stops it.
pub struct Server {
    serving: Arc<dyn Serving>,
    endpoint: Endpoint,
    stats: Arc<Stats>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("ic_id", &self.endpoint.ic_id)
            .field("socket", &self.endpoint.socket)
            .finish()
    }
}

/// The most clients the kernel queues for `accept` (it caps it at `net.core.somaxconn`).
const BACKLOG: libc::c_int = 4096;

impl Server {
    /// Serves `ic_id` with `handler`.
    ///
    /// Fails with [`Status::AlreadyServed`] when a live server has it, replaces a stale socket
    /// left by a dead one, and fails with [`Status::InvalidArgument`] for a bad ic id.
    pub fn serve<H: Handler>(
        ic_id: &str,
        handler: H,
        options: ServeOptions,
    ) -> Result<Server, Error> {
        let shared_dir = !options.allow_uids.is_empty();
        let access = crate::endpoint::Access {
            shared: shared_dir,
            owners: &[],
        };
        let endpoint = Endpoint::for_ic_id(ic_id, options.socket_dir.as_deref(), access)?;
        let reactor = Reactor::get()?;
        let owner: Arc<dyn Owner> = match &options.owner {
            Some(o) => o.clone(),
            None => Runner::get()?,
        };
        let server_lock = endpoint.lock()?;
        server_lock.clear_stale_socket()?;
        let listener = UnixListener::bind(&endpoint.socket).map_err(|e| {
            Error::io(
                &format!("cannot listen at {}", endpoint.socket.display()),
                e,
            )
        })?;
        // SAFETY: `listen` on our own listening socket, to enlarge its backlog.
        unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) };
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("cannot make the listening socket non-blocking", e))?;
        server_lock.restrict_socket(shared_dir)?;
        let stats = Arc::new(Stats::default());
        let pool = (options.workers > 0).then(|| Arc::new(Pool::default()));
        let shared = Arc::new(Shared {
            handler,
            ic_id: ic_id.to_string(),
            pool: pool.clone(),
            uid: nix::unistd::geteuid().as_raw(),
            next_id: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            owner,
            connections: Mutex::new(HashMap::new()),
            lanes: Mutex::new(HashMap::new()),
            handshakes: Mutex::new(HashMap::new()),
            gone: Event::new(),
            stats: stats.clone(),
            listener: Mutex::new(None),
            workers: Mutex::new(Vec::new()),
            lock: Mutex::new(Some(server_lock)),
            options,
        });
        if let Some(pool) = &pool {
            let started = pool.start(shared.options.workers);
            match started {
                Ok(workers) => *lock(&shared.workers) = workers,
                Err(e) => {
                    shared.close();
                    return Err(e);
                }
            }
        }
        let fd = listener.as_raw_fd();
        let listener = Arc::new(Listener {
            socket: listener,
            shared: Arc::downgrade(&shared),
        });
        match reactor.add(fd, reactor::READ, listener.clone()) {
            Ok(token) => *lock(&shared.listener) = Some((token, fd, listener)),
            Err(e) => {
                shared.close();
                return Err(e);
            }
        }
        lock(&LOCAL_OWNERS).push((endpoint.socket.clone(), shared.owner.clone()));
        Ok(Server {
            serving: shared,
            endpoint,
            stats,
        })
    }

    /// The socket clients connect to.
    pub fn socket_path(&self) -> &PathBuf {
        &self.endpoint.socket
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.serving.connections()
    }

    /// The counters of every command this server took (see [`Stats::snapshot`]).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The lent connection `id` ([`Handler::lane`]): its layout and where its rings stand.
    pub fn lane_layout(&self, id: u64) -> Result<(Layout, Lent), Error> {
        let conn = self.lent(id)?;
        Ok((
            *conn.segment.layout(),
            Lent {
                cs_position: conn.cs.position(),
                sc_position: conn.sc.position(),
            },
        ))
    }

    /// The lent connection `id`'s segment, for its consumer's view.
    pub fn lane_segment(&self, id: u64) -> Result<Arc<Segment>, Error> {
        Ok(self.lent(id)?.segment.clone())
    }

    /// After the consumer's push onto the SC ring of lent connection `id` and a full fence,
    /// wakes the client as its sleep flag asks.
    /// Nothing when the connection is gone already (it ended, and nothing of it is held).
    pub fn lane_wake(&self, id: u64) {
        if let Some(conn) = self.serving.lane(id) {
            conn.wake_client();
        }
    }

    /// The consumer of lent connection `id` found the client breaking the protocol: drops the
    /// connection, telling the client `why`, as the server does for what it finds itself.
    /// Nothing when the connection is gone already.
    pub fn lane_violation(&self, id: u64, why: &str) {
        if let Some(conn) = self.serving.lane(id) {
            conn.violation(why.to_string(), true);
        }
    }

    /// The consumer of lent connection `id` keeps a command it took past this call (an `exec`
    /// that answers later): the connection, and its segment, stay until the matching
    /// [`Server::lane_release`]. A command answered within the consumer's turn needs none: the
    /// owner, which runs that turn, cannot let go of the connection meanwhile.
    pub fn lane_hold(&self, id: u64) -> Result<(), Error> {
        self.serving.lane_hold(id, true).ok_or_else(|| not_lent(id))
    }

    /// The consumer answered a command it kept ([`Server::lane_hold`]).
    pub fn lane_release(&self, id: u64) -> Result<(), Error> {
        self.serving
            .lane_hold(id, false)
            .ok_or_else(|| not_lent(id))
    }

    /// The consumer took what lent connection `id` had left after its end (it was told of the
    /// end): the connection goes once the commands it kept are answered. Any number of times.
    pub fn lane_drained(&self, id: u64) {
        self.serving.lane_drained(id);
    }

    fn lent(&self, id: u64) -> Result<Arc<connection::Connection>, Error> {
        self.serving.lane(id).ok_or_else(|| not_lent(id))
    }

    /// Stops taking clients, ends every connection (their commands in progress still finish,
    /// and their `close` runs once they did), stops the pool once it ran what it holds, and
    /// removes the socket. When it returns, every connection whose commands were all answered
    /// has had its `close`. Idempotent.
    pub fn close(&mut self) {
        lock(&LOCAL_OWNERS).retain(|(socket, _)| *socket != self.endpoint.socket);
        self.serving.close();
    }
}

/// The owners of this process's servers, by socket path: a client of one of them would wait
/// for itself only on that owner's thread.
static LOCAL_OWNERS: Mutex<Vec<(PathBuf, Arc<dyn Owner>)>> = Mutex::new(Vec::new());

/// The owner that runs the server of this process listening at `socket`, if any.
pub(crate) fn local_owner(socket: &std::path::Path) -> Option<Arc<dyn Owner>> {
    lock(&LOCAL_OWNERS)
        .iter()
        .find(|(s, _)| s == socket)
        .map(|(_, owner)| owner.clone())
}

/// A lent connection as its consumer's calls find it.
struct LaneEntry {
    conn: Arc<connection::Connection>,
    /// Holds the consumer has on the connection: commands it kept, and the drain after the end.
    holds: usize,
    /// Whether one of `holds` is the drain's ([`Shared::lane_ended`]).
    draining: bool,
    /// Whether the connection ended (the consumer was told).
    ended: bool,
}

fn not_lent(id: u64) -> Error {
    Error::new(
        Status::InvalidArgument,
        format!("connection {id} is not lent (or was given back)"),
    )
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close();
    }
}

pub(crate) fn kind_name(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "hello",
        Message::Welcome { .. } => "welcome",
        Message::Refuse { .. } => "refuse",
        Message::Exec(_) => "exec",
        Message::Reply(_) => "reply",
        Message::Wake => "wake",
        Message::Bye => "bye",
    }
}

/// Runs a command inline (on the owner) or hands it to the pool.
pub(crate) fn dispatch<H: Handler>(
    shared: &Arc<Shared<H>>,
    context: &Context<H>,
    command: Command,
) {
    let mode = match command.mode {
        Mode::Default => shared.options.default_mode,
        m => m,
    };
    match (&shared.pool, mode) {
        (_, Mode::Stats) => command.fail(Status::InvalidCommand),
        // Only a queue's host runs queue operations, and it runs nothing else.
        (_, Mode::Queue) if !shared.handler.hosts_queue() => command.fail(Status::InvalidCommand),
        (_, m) if m != Mode::Queue && shared.handler.hosts_queue() => {
            command.fail(Status::InvalidCommand)
        }
        (Some(pool), Mode::Worker) => {
            let (shared, context) = (shared.clone(), context.clone());
            pool.submit(Box::new(move || run(&shared, &context, command)));
        }
        _ => run(shared, context, command),
    }
}

/// Runs `exec` on a command it takes (one its client withdrew is answered `CANCELLED`
/// instead). A panic drops the command during unwinding, which answers HANDLER_FAILED.
fn run<H: Handler>(shared: &Shared<H>, context: &H::Context, mut command: Command) {
    if !shared.handler.takes_commands() && !command.take() {
        return;
    }
    let info = command.conn.info;
    let _ = catch_unwind(AssertUnwindSafe(|| {
        shared.handler.exec(command, &info, context)
    }));
}
