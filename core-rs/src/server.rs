//! The server: listens on an ic id, accepts clients, and runs their commands through a
//! [`Handler`].
//!
//! # Threads
//!
//! - one **acceptor** thread blocks in `accept` and starts a connection for each client;
//! - per connection, a **control** thread does the handshake, then blocks reading the control
//!   channel (backup-path commands arrive there; its end is the client's death), and a **ring**
//!   thread pops the CS ring;
//! - an optional **worker pool** runs the commands whose flag (or the server default) says so;
//!   the others run inline on the thread that received them.
//!
//! # A connection's end
//!
//! When the client goes (EOF on the control channel), breaks the protocol, or the server
//! closes, the connection is marked ended and both its threads are woken. Every command already
//! taken still runs to its end (its answer is dropped), and `close` runs exactly once, when the
//! last of {control thread, ring thread, commands in progress} lets go: a counter of those
//! holders reaching zero is what "drained" means.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::fmt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::channel::{self, Credentials, Event, Sender};
use crate::endpoint::Endpoint;
use crate::ring::{FutexPark, Ring, Spin};
use crate::segment::{PROTOCOL_MAJOR, PROTOCOL_MINOR, Segment, SlotRef};
use crate::slot::{Area, FLAG_STATS, Mode, Reply, Request};
use crate::stats::Stats;
use crate::status::{Error, Status};
use crate::wire::{self, Message};

/// Who a connection is with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// The server's identifier for this connection, unique for the server's life.
    pub id: u64,
    /// The client process's id.
    pub pid: i32,
    /// The client process's effective user id.
    pub uid: u32,
    /// The client process's effective group id.
    pub gid: u32,
}

/// What a server does with its clients and their commands. Every method may be called from any
/// of the server's threads.
pub trait Handler: Send + Sync + 'static {
    /// The user context of one connection.
    type Context: Send + Sync + 'static;

    /// A client connected. Runs before the client learns it is connected, so before any of its
    /// commands. The value returned is handed to `exec` and `close` for this connection; an
    /// error refuses the client, whose `connect` fails with it (and `close` does not run).
    fn open(&self, conn: &ConnInfo) -> Result<Self::Context, Error>;

    /// Runs one command. Answer it with [`Command::finish`], now or later from any thread; a
    /// command dropped unanswered, or a panic, answers [`Status::HandlerFailed`].
    fn exec(&self, command: Command, conn: &ConnInfo, context: &Self::Context);

    /// The connection ended. Runs exactly once per `open`, after every command of the
    /// connection has been answered or failed.
    fn close(&self, conn: &ConnInfo, context: &Self::Context);

    /// A client was turned away during the handshake, or a connection was dropped for breaking
    /// the protocol. Nothing is required; the default does nothing.
    fn refused(&self, _peer: Option<&ConnInfo>, _why: &Error) {}

    /// Whether `exec` takes its commands itself ([`Command::take`]), later than it receives
    /// them (a handler that queues them, as the C surface does for JavaScript). By default the
    /// server takes each command just before `exec`: a withdrawn one never reaches it.
    fn takes_commands(&self) -> bool {
        false
    }
}

/// A [`Handler`] made of three closures; see [`handlers`].
pub struct Handlers<O, E, C> {
    open: O,
    exec: E,
    close: C,
}

impl<O, E, C> fmt::Debug for Handlers<O, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handlers")
    }
}

/// A handler from `open`, `exec` and `close` closures; `open`'s value is the user context.
///
/// ```no_run
/// use shmcall::{handlers, ServeOptions, Server};
///
/// let echo = handlers(
///     |_conn| Ok(0u64),
///     |mut command, _conn, _count| {
///         let (input, mut output) = command.areas();
///         let mut buf = vec![0; input.len().min(output.len())];
///         input.read_at(0, &mut buf);
///         output.write(&buf);
///         command.finish(0, buf.len());
///     },
///     |_conn, _count| {},
/// );
/// let server = Server::serve("echo", echo, ServeOptions::default())?;
/// # Ok::<(), shmcall::Error>(())
/// ```
pub fn handlers<Ctx, O, E, C>(open: O, exec: E, close: C) -> Handlers<O, E, C>
where
    Ctx: Send + Sync + 'static,
    O: Fn(&ConnInfo) -> Result<Ctx, Error> + Send + Sync + 'static,
    E: Fn(Command, &ConnInfo, &Ctx) + Send + Sync + 'static,
    C: Fn(&ConnInfo, &Ctx) + Send + Sync + 'static,
{
    Handlers { open, exec, close }
}

impl<Ctx, O, E, C> Handler for Handlers<O, E, C>
where
    Ctx: Send + Sync + 'static,
    O: Fn(&ConnInfo) -> Result<Ctx, Error> + Send + Sync + 'static,
    E: Fn(Command, &ConnInfo, &Ctx) + Send + Sync + 'static,
    C: Fn(&ConnInfo, &Ctx) + Send + Sync + 'static,
{
    type Context = Ctx;

    fn open(&self, conn: &ConnInfo) -> Result<Ctx, Error> {
        (self.open)(conn)
    }

    fn exec(&self, command: Command, conn: &ConnInfo, context: &Ctx) {
        (self.exec)(command, conn, context)
    }

    fn close(&self, conn: &ConnInfo, context: &Ctx) {
        (self.close)(conn, context)
    }
}

/// How a server runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Threads in the worker pool; 0 runs every command inline.
    pub workers: usize,
    /// Where commands that do not choose run ([`Mode::Default`] means inline).
    pub default_mode: Mode,
    /// User ids allowed besides the server's own.
    pub allow_uids: Vec<u32>,
    /// How long a thread spins for the next command before it sleeps.
    pub spin: Duration,
    /// Bound on a client's whole handshake.
    pub handshake_timeout: Duration,
    /// Bound on sending one backup answer: a client that reads none for this long loses its
    /// connection rather than holding the answering thread.
    pub send_timeout: Duration,
    /// The socket directory; `None` means the default (see [`crate::endpoint`]).
    pub socket_dir: Option<PathBuf>,
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
        }
    }
}

/// One command, taken by the server. Answer it with [`Command::finish`].
pub struct Command {
    conn: Arc<Connection>,
    code: u32,
    mode: Mode,
    body: Body,
    answered: bool,
    /// When the server received it ([`crate::stats::now_ns`]).
    started: u64,
    /// Whether it counts in the server's statistics (a request for them does not).
    counted: bool,
}

enum Body {
    Slot {
        slot: SlotRef,
        request: Request,
    },
    Backup {
        token: u64,
        input: Vec<u8>,
        output: Vec<u8>,
    },
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("connection", &self.conn.info.id)
            .field("code", &self.code)
            .field("input_len", &self.input_len())
            .field("output_capacity", &self.output_capacity())
            .finish()
    }
}

impl Command {
    /// The operation code.
    #[inline]
    pub fn code(&self) -> u32 {
        self.code
    }

    /// Where the command asked to run.
    #[inline]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The segment its areas lie in, for a caller that must keep the mapping alive after the
    /// command (views of it handed to JavaScript); `None` on the backup path.
    pub fn segment(&self) -> Option<Arc<Segment>> {
        match self.body {
            Body::Slot { .. } => Some(self.conn.segment.clone()),
            Body::Backup { .. } => None,
        }
    }

    /// Whether it came over the backup path rather than shared memory.
    pub fn is_backup(&self) -> bool {
        matches!(self.body, Body::Backup { .. })
    }

    /// Bytes of input.
    pub fn input_len(&self) -> usize {
        match &self.body {
            Body::Slot { request, .. } => request.input_len as usize,
            Body::Backup { input, .. } => input.len(),
        }
    }

    /// Bytes of output the client made room for.
    pub fn output_capacity(&self) -> usize {
        match &self.body {
            Body::Slot { request, .. } => request.output_cap as usize,
            Body::Backup { output, .. } => output.len(),
        }
    }

    /// The input area (in shared memory unless [`Command::is_backup`]).
    pub fn input(&mut self) -> Area<'_> {
        match &mut self.body {
            Body::Slot { slot, request } => self.conn.segment.input(*slot, request.input_len),
            Body::Backup { input, .. } => Area::from_slice(input),
        }
    }

    /// The output area, as long as its capacity.
    pub fn output(&mut self) -> Area<'_> {
        match &mut self.body {
            Body::Slot { slot, request } => self.conn.segment.output(*slot, request.output_cap),
            Body::Backup { output, .. } => Area::from_slice(output),
        }
    }

    /// Both areas at once, for handlers that read the input while writing the output.
    pub fn areas(&mut self) -> (Area<'_>, Area<'_>) {
        match &mut self.body {
            Body::Slot { slot, request } => (
                self.conn.segment.input(*slot, request.input_len),
                self.conn.segment.output(*slot, request.output_cap),
            ),
            Body::Backup { input, output, .. } => {
                (Area::from_slice(input), Area::from_slice(output))
            }
        }
    }

    /// Answers the command: `status` (the server's own, >= 0, or a library status) and the
    /// number of output bytes written. A length beyond the capacity answers
    /// [`Status::OutputOverflow`] instead.
    pub fn finish(mut self, status: i32, len: usize) {
        self.answer(status, len);
    }

    /// Answers the command with a library failure.
    pub fn fail(mut self, status: Status) {
        self.answer(status.code(), 0);
    }

    /// Takes the command to run it, unless its client withdrew it first (protocol 1.1): then
    /// it is answered `CANCELLED` here, `false` is returned, and the caller drops it without
    /// running it. Commands on the backup path cannot be withdrawn: always taken.
    pub fn take(&mut self) -> bool {
        let taken = match &self.body {
            Body::Slot { slot, .. } => self.conn.segment.header(*slot).take(),
            Body::Backup { .. } => true,
        };
        if !taken {
            self.answer(Status::Cancelled.code(), 0);
        }
        taken
    }

    /// Whether the command has been answered (by [`Command::take`] finding it withdrawn).
    pub fn is_answered(&self) -> bool {
        self.answered
    }

    fn answer(&mut self, status: i32, len: usize) {
        if self.answered {
            return;
        }
        self.answered = true;
        let (status, len) = if len > self.output_capacity() {
            (Status::OutputOverflow.code(), 0)
        } else if status < 0 && Status::from_code(status).is_none() {
            // The client would take an unknown library status for a broken protocol and drop
            // the whole connection; it is this handler's failure, and only this command's.
            (Status::HandlerFailed.code(), 0)
        } else {
            (status, len as u32)
        };
        let conn = &self.conn;
        if self.counted {
            conn.stats.finish(self.started, status, len);
        }
        match &mut self.body {
            Body::Slot { slot, request } => {
                conn.segment.header(*slot).write_reply(&Reply {
                    status,
                    output_len: len,
                    generation: request.generation,
                });
                // The client may push this slot again only after it pops our answer, so the
                // slot must read as "not ours" before the push that returns it.
                conn.held[slot.index as usize].store(false, Ordering::Release);
                // Never wait here: each slot is in at most one ring at a time and the ring has
                // a cell per slot, so a full SC ring means the client tampered with its read
                // position. Waiting would let it hold this thread (a pool worker, or the
                // JavaScript thread of a Deno server) forever.
                if !conn.ended() && conn.sc.try_push(slot.offset, &FutexPark::SHARED).is_err() {
                    conn.violation("the SC ring is full, which a client that follows the protocol never causes".into(), true);
                }
            }
            Body::Backup { token, output, .. } => {
                if !conn.ended() {
                    let frame = wire::encode_reply(*token, status, &output[..len as usize]);
                    if let Err(e) = conn.sender.send(&frame) {
                        // The client stopped reading (the send timed out) or went away.
                        conn.violation(format!("cannot send an answer: {}", e.message()), false);
                    }
                }
            }
        }
    }
}

impl Drop for Command {
    fn drop(&mut self) {
        if !self.answered {
            self.answer(Status::HandlerFailed.code(), 0);
        }
        if let Body::Backup { input, output, .. } = &self.body {
            self.conn.backup_done(input.len() + output.len());
        }
        self.conn.release();
    }
}

/// Backup commands one connection may have in progress at once, and their bytes: past either,
/// its control thread stops reading until one finishes, so a client cannot queue unbounded
/// work and memory on the server.
const MAX_BACKUP_COMMANDS: usize = 64;
const MAX_BACKUP_BYTES: usize = 256 << 20;

/// Backup commands in progress on one connection.
#[derive(Debug, Default)]
struct BackupLoad {
    commands: usize,
    bytes: usize,
}

/// Tells the handler that a connection broke the protocol (its `refused`), with the handler's
/// type erased so that `Connection` and `Command` need not carry it.
type ViolationHook = Box<dyn Fn(&ConnInfo, &Error) + Send + Sync>;

/// One client's connection, as the server sees it.
struct Connection {
    info: ConnInfo,
    segment: Arc<Segment>,
    cs: Ring,
    sc: Ring,
    /// Which slots the server holds (popped, not yet answered): a slot pushed twice is caught.
    held: Box<[AtomicBool]>,
    sender: Sender,
    spin: Spin,
    ended: AtomicBool,
    /// Holders that keep the connection from being drained; see the module doc.
    holders: AtomicUsize,
    on_drained: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Tells the handler that this connection broke the protocol.
    on_violation: ViolationHook,
    backups: Mutex<BackupLoad>,
    backup_freed: Condvar,
    /// Who pops the CS ring: [`FREE`], [`RING`] (the ring thread) or [`POLLER`].
    consumer: AtomicU32,
    /// A poller asks the ring thread for the consumer role.
    yield_wanted: AtomicBool,
    /// Wakes the ring thread when a poller gives the role back.
    role_free: Event,
    /// The server's counters.
    stats: Arc<Stats>,
}

/// Nobody pops the CS ring.
const FREE: u32 = 0;
/// The ring thread pops it.
const RING: u32 = 1;
/// A [`Poller`] pops it.
const POLLER: u32 = 2;

impl Connection {
    #[inline]
    fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Marks the connection ended and wakes both of its threads.
    fn end(&self) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            self.sender.shutdown();
            self.cs.interrupt(&FutexPark::SHARED);
            self.sc.interrupt(&FutexPark::SHARED);
            self.role_free.notify();
            // Taking the lock orders this wake after a waiter's check of `ended`.
            drop(lock_ok(&self.backups));
            self.backup_freed.notify_all();
        }
    }

    /// Drops a connection whose client broke the protocol: tells the client why (when `tell`,
    /// which a client that stopped reading would not hear), ends it, and tells the handler.
    fn violation(&self, why: String, tell: bool) {
        if self.ended() {
            return;
        }
        let err = Error::new(
            Status::ProtocolViolation,
            format!("connection {} dropped: {why}", self.info.id),
        );
        if tell {
            let _ = self.sender.send(&wire::encode(&Message::Refuse {
                status: err.status().code(),
                reason: err.message().to_string(),
            }));
        }
        self.end();
        let _ = catch_unwind(AssertUnwindSafe(|| (self.on_violation)(&self.info, &err)));
    }

    /// Waits until a backup command of `bytes` fits the connection's budget, then counts it.
    /// Returns false if the connection ended meanwhile.
    fn backup_admit(&self, bytes: usize) -> bool {
        let mut load = lock_ok(&self.backups);
        while load.commands > 0
            && (load.commands >= MAX_BACKUP_COMMANDS || load.bytes + bytes > MAX_BACKUP_BYTES)
        {
            if self.ended() {
                return false;
            }
            load = self
                .backup_freed
                .wait(load)
                .unwrap_or_else(|p| p.into_inner());
        }
        load.commands += 1;
        load.bytes += bytes;
        true
    }

    fn backup_done(&self, bytes: usize) {
        let mut load = lock_ok(&self.backups);
        load.commands -= 1;
        load.bytes -= bytes;
        drop(load);
        self.backup_freed.notify_one();
    }

    fn hold(&self) {
        self.holders.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the CS consumer role for `who` if nobody has it. Acquire: the previous holder's
    /// pops (and the ring position it advanced) happen before ours.
    fn take_role(&self, who: u32) -> bool {
        self.consumer
            .compare_exchange(FREE, who, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Gives the consumer role back. Release pairs with `take_role`; the notify wakes a ring
    /// thread waiting for it. A poller's request (`yield_wanted`) stays set until the poller
    /// takes the role or stops asking, so a yielding ring thread cannot take it straight back.
    fn give_role(&self) {
        self.consumer.store(FREE, Ordering::SeqCst);
        self.role_free.notify();
    }

    fn release(&self) {
        // AcqRel: the last holder must see everything the others did before calling `close`.
        if self.holders.fetch_sub(1, Ordering::AcqRel) == 1 {
            let drained = self
                .on_drained
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(close) = drained {
                close();
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The worker pool's queue: jobs, and whether the pool is shutting down.
#[derive(Default)]
struct Jobs {
    queue: VecDeque<Job>,
    closing: bool,
}

struct Pool {
    jobs: Mutex<Jobs>,
    ready: Condvar,
}

impl Pool {
    fn submit(&self, job: Job) {
        lock_ok(&self.jobs).queue.push_back(job);
        self.ready.notify_one();
    }

    fn run(&self) {
        loop {
            let job = {
                let mut q = lock_ok(&self.jobs);
                loop {
                    if let Some(job) = q.queue.pop_front() {
                        break job;
                    }
                    if q.closing {
                        return;
                    }
                    q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            job();
        }
    }
}

/// Open connections by id, each with its user context.
type Connections<H> = HashMap<u64, (Arc<Connection>, Arc<<H as Handler>::Context>)>;

/// The same connections as a list a poller iterates without holding any lock.
type PollList<H> = Arc<Vec<(Arc<Connection>, Arc<<H as Handler>::Context>)>>;

struct Shared<H: Handler> {
    handler: H,
    options: ServeOptions,
    ic_id: String,
    pool: Option<Arc<Pool>>,
    uid: u32,
    next_id: AtomicU64,
    closing: AtomicBool,
    connections: Mutex<Connections<H>>,
    /// Rebuilt whenever `connections` changes; see [`ServerPoller`].
    poll_list: Mutex<PollList<H>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Commands, bytes, failures and times of every connection.
    stats: Arc<Stats>,
}

/// A running server. [`Server::close`] (or dropping it) stops it.
pub struct Server {
    stop: Option<Box<dyn FnOnce() + Send>>,
    endpoint: Endpoint,
    live: Arc<dyn Fn() -> usize + Send + Sync>,
    poller: Arc<dyn Poller>,
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
        let shared = !options.allow_uids.is_empty();
        let access = crate::endpoint::Access {
            shared,
            owners: &[],
        };
        let endpoint = Endpoint::for_ic_id(ic_id, options.socket_dir.as_deref(), access)?;
        let lock = endpoint.lock()?;
        lock.clear_stale_socket()?;
        let listener = UnixListener::bind(&endpoint.socket).map_err(|e| {
            Error::io(
                &format!("cannot listen at {}", endpoint.socket.display()),
                e,
            )
        })?;
        lock.restrict_socket(shared)?;
        let stats = Arc::new(Stats::default());
        let pool = (options.workers > 0).then(|| {
            Arc::new(Pool {
                jobs: Mutex::new(Jobs::default()),
                ready: Condvar::new(),
            })
        });
        let shared = Arc::new(Shared {
            handler,
            ic_id: ic_id.to_string(),
            pool: pool.clone(),
            uid: nix::unistd::geteuid().as_raw(),
            next_id: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
            poll_list: Mutex::new(Arc::new(Vec::new())),
            threads: Mutex::new(Vec::new()),
            stats: stats.clone(),
            options,
        });
        let mut workers = Vec::new();
        if let Some(pool) = &pool {
            for i in 0..shared.options.workers {
                let pool = pool.clone();
                workers.push(spawn(&format!("shmcall-worker-{i}"), move || pool.run())?);
            }
        }
        let listener = Arc::new(listener);
        let acceptor = {
            let (shared, listener) = (shared.clone(), listener.clone());
            spawn("shmcall-accept", move || accept_loop(&shared, &listener))?
        };
        let live = {
            let shared = shared.clone();
            Arc::new(move || lock_ok(&shared.connections).len())
        };
        let poller: Arc<dyn Poller> = Arc::new(ServerPoller(shared.clone()));
        let stop = Box::new(move || {
            shared.closing.store(true, Ordering::SeqCst);
            // Wakes `accept` (it returns EINVAL on a shut-down listener).
            // SAFETY: `listener` owns a valid socket descriptor for the duration of the call.
            unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(&*listener), libc::SHUT_RDWR) };
            let _ = acceptor.join();
            for (conn, _) in lock_ok(&shared.connections).values() {
                conn.end();
            }
            let threads = std::mem::take(&mut *lock_ok(&shared.threads));
            for t in threads {
                let _ = t.join();
            }
            if let Some(pool) = &shared.pool {
                lock_ok(&pool.jobs).closing = true;
                pool.ready.notify_all();
            }
            for w in workers {
                let _ = w.join();
            }
            drop(lock);
        });
        Ok(Server {
            stop: Some(stop),
            endpoint,
            live,
            poller,
            stats,
        })
    }

    /// The socket clients connect to.
    pub fn socket_path(&self) -> &PathBuf {
        &self.endpoint.socket
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        (self.live)()
    }

    /// The counters of every command this server took (see [`Stats::snapshot`]).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A poller that pops this server's CS rings on the caller's thread (see [`Poller`]). A
    /// thread that waits for the commands it will run anyway (the JavaScript thread) takes
    /// them this way without a hop from the ring thread.
    pub fn poller(&self) -> Arc<dyn Poller> {
        self.poller.clone()
    }

    /// Stops accepting, ends every connection (their commands in progress still finish and
    /// their `close` runs), waits for the server's threads, and removes the socket. Idempotent.
    pub fn close(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close();
    }
}

impl<H: Handler> Shared<H> {
    /// Adds an open connection.
    fn remember(&self, id: u64, conn: Arc<Connection>, context: Arc<H::Context>) {
        let mut map = lock_ok(&self.connections);
        map.insert(id, (conn, context));
        *lock_ok(&self.poll_list) = Arc::new(map.values().cloned().collect());
    }

    /// Removes a connection that ended.
    fn forget(&self, id: u64) {
        let mut map = lock_ok(&self.connections);
        map.remove(&id);
        *lock_ok(&self.poll_list) = Arc::new(map.values().cloned().collect());
    }
}

fn lock_ok<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| Error::io(&format!("cannot start thread {name}"), e))
}

fn accept_loop<H: Handler>(shared: &Arc<Shared<H>>, listener: &UnixListener) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if shared.closing.load(Ordering::SeqCst) {
                    return;
                }
                let s = shared.clone();
                if let Ok(t) = spawn("shmcall-conn", move || control_loop(&s, stream)) {
                    let mut threads = lock_ok(&shared.threads);
                    threads.retain(|t| !t.is_finished());
                    threads.push(t);
                }
            }
            Err(_) if shared.closing.load(Ordering::SeqCst) => return,
            // Out of descriptors or memory: back off instead of spinning on the error.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
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
    let _ = std::io::Write::write_all(&mut &*stream, &frame);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = catch_unwind(AssertUnwindSafe(|| shared.handler.refused(peer, &err)));
}

/// Handshake, then the connection's control channel until it ends.
fn control_loop<H: Handler>(shared: &Arc<Shared<H>>, stream: UnixStream) {
    let creds = match channel::peer_credentials(&stream) {
        Ok(c) => c,
        Err(e) => return refuse(shared, &stream, None, e),
    };
    let info = ConnInfo {
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        pid: creds.pid,
        uid: creds.uid,
        gid: creds.gid,
    };
    let (conn, context) = match handshake(shared, &stream, creds, info) {
        Ok(c) => c,
        Err(e) => return refuse(shared, &stream, Some(&info), e),
    };
    let ring_thread = {
        let (shared, conn, context) = (shared.clone(), conn.clone(), context.clone());
        spawn("shmcall-ring", move || ring_loop(&shared, &conn, &context))
    };
    if ring_thread.is_err() {
        // Without its ring thread the CS ring would be popped only while a poller happens to
        // run: refuse to go on rather than hold commands that may never be taken.
        conn.end();
        conn.release();
    }
    let mut reader = &stream;
    loop {
        match wire::read_message(&mut reader) {
            Ok(Message::Exec(exec)) => {
                if exec.flags == FLAG_STATS {
                    // A request for the counters that found no free slot: answered here.
                    let bytes = stats_bytes(shared);
                    let frame = if (exec.output_cap as usize) < bytes.len() {
                        wire::encode_reply(exec.token, Status::OutputOverflow.code(), &[])
                    } else {
                        wire::encode_reply(exec.token, 0, &bytes)
                    };
                    let _ = conn.sender.send(&frame);
                    continue;
                }
                let Some(mode) = Mode::from_flags(exec.flags) else {
                    let frame = wire::encode_reply(exec.token, Status::InvalidCommand.code(), &[]);
                    let _ = conn.sender.send(&frame);
                    continue;
                };
                if !conn.backup_admit(exec.input.len() + exec.output_cap as usize) {
                    break;
                }
                conn.hold();
                let input_len = exec.input.len() as u32;
                let command = Command {
                    conn: conn.clone(),
                    code: exec.code,
                    mode,
                    answered: false,
                    started: conn.stats.start(input_len, true),
                    counted: true,
                    body: Body::Backup {
                        token: exec.token,
                        output: vec![0; exec.output_cap as usize],
                        input: exec.input,
                    },
                };
                dispatch(shared, &context, command);
            }
            Ok(other) => {
                let why = format!("unexpected {} frame after the handshake", kind_name(&other));
                conn.violation(why, true);
                break;
            }
            // A client killed while it wrote a frame is a death, not a violation.
            Err(e) if e.is_end() => break,
            Err(e) => {
                conn.violation(e.to_string(), true);
                break;
            }
        }
    }
    conn.end();
    if let Ok(t) = ring_thread {
        let _ = t.join();
    }
    shared.forget(conn.info.id);
    conn.release();
}

fn kind_name(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "hello",
        Message::Welcome { .. } => "welcome",
        Message::Refuse { .. } => "refuse",
        Message::Exec(_) => "exec",
        Message::Reply(_) => "reply",
    }
}

fn handshake<H: Handler>(
    shared: &Arc<Shared<H>>,
    stream: &UnixStream,
    creds: Credentials,
    info: ConnInfo,
) -> Result<(Arc<Connection>, Arc<H::Context>), Error> {
    if creds.uid != shared.uid && !shared.options.allow_uids.contains(&creds.uid) {
        return Err(Error::new(
            Status::PermissionDenied,
            format!(
                "client pid {} runs as uid {}, which may not use '{}' (served by uid {})",
                creds.pid, creds.uid, shared.ic_id, shared.uid
            ),
        ));
    }
    let deadline = std::time::Instant::now() + shared.options.handshake_timeout;
    channel::set_handshake_timeout(stream, Some(shared.options.handshake_timeout))?;
    let (hello, mut fds) = channel::recv_with_fds(stream, deadline)?;
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
    if ic_id != shared.ic_id {
        return Err(Error::new(
            Status::NotFound,
            format!(
                "the client asked for '{ic_id}' but this server serves '{}'",
                shared.ic_id
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
    let segment = Arc::new(Segment::attach(fds.remove(0), &geometry)?);
    channel::set_handshake_timeout(stream, None)?;
    let slots = segment.layout().slot_count() as usize;
    let conn = Arc::new(Connection {
        info,
        cs: segment.cs_ring(),
        sc: segment.sc_ring(),
        segment,
        held: (0..slots).map(|_| AtomicBool::new(false)).collect(),
        sender: Sender::new(stream)?,
        spin: Spin(shared.options.spin),
        ended: AtomicBool::new(false),
        // The control thread and the ring thread.
        holders: AtomicUsize::new(2),
        on_drained: Mutex::new(None),
        on_violation: {
            let shared = shared.clone();
            Box::new(move |info, err| shared.handler.refused(Some(info), err))
        },
        backups: Mutex::new(BackupLoad::default()),
        backup_freed: Condvar::new(),
        consumer: AtomicU32::new(FREE),
        yield_wanted: AtomicBool::new(false),
        role_free: Event::new(),
        stats: shared.stats.clone(),
    });
    conn.sender.set_timeout(Some(shared.options.send_timeout))?;
    let context = catch_unwind(AssertUnwindSafe(|| shared.handler.open(&info)))
        .map_err(|_| Error::new(Status::HandlerFailed, "the server's open handler failed"))??;
    let context = Arc::new(context);
    {
        let (shared, context) = (shared.clone(), context.clone());
        *lock_ok(&conn.on_drained) = Some(Box::new(move || {
            let _ = catch_unwind(AssertUnwindSafe(|| shared.handler.close(&info, &context)));
        }));
    }
    shared.remember(info.id, conn.clone(), context.clone());
    // `close` may have ended the connections it found just before we inserted ours: it set
    // `closing` before taking the map's lock, so after our insert we see it, and end ourselves.
    if shared.closing.load(Ordering::SeqCst) {
        conn.end();
    }
    let welcome = wire::encode(&Message::Welcome {
        major: PROTOCOL_MAJOR,
        minor: minor.min(PROTOCOL_MINOR),
        connection: info.id,
    });
    if let Err(e) = conn.sender.send(&welcome) {
        // `open` ran, so `close` must: the caller's error path does not drain, we do.
        shared.forget(info.id);
        conn.end();
        conn.release();
        conn.release();
        return Err(e);
    }
    Ok((conn, context))
}

/// Validates one CS ring entry and runs (or queues) its command. `false` means the client broke
/// the protocol and the connection has been dropped.
fn take_command<H: Handler>(
    shared: &Arc<Shared<H>>,
    conn: &Arc<Connection>,
    context: &Arc<H::Context>,
    offset: u32,
) -> bool {
    let layout = conn.segment.layout();
    let Some(slot) = layout.locate(offset) else {
        conn.violation(
            format!("CS ring entry {offset:#x} is not the offset of a slot"),
            true,
        );
        return false;
    };
    if conn.held[slot.index as usize].swap(true, Ordering::AcqRel) {
        conn.violation(
            format!("slot {} was pushed while the server held it", slot.index),
            true,
        );
        return false;
    }
    // Read once: the client can change the header at any time from here on.
    let request = conn.segment.header(slot).read_request();
    let class = layout.classes[slot.class].class;
    if request.input_len > class.input_capacity || request.output_cap > class.output_capacity {
        conn.violation(
            format!(
                "slot {} asks for {} input and {} output bytes but holds {} and {}",
                slot.index,
                request.input_len,
                request.output_cap,
                class.input_capacity,
                class.output_capacity
            ),
            true,
        );
        return false;
    }
    conn.hold();
    if request.flags == FLAG_STATS {
        answer_stats(shared, conn, slot, request);
        return true;
    }
    let mut command = Command {
        conn: conn.clone(),
        code: request.code,
        mode: Mode::Default,
        answered: false,
        counted: true,
        started: conn.stats.start(request.input_len, false),
        body: Body::Slot { slot, request },
    };
    match Mode::from_flags(request.flags) {
        Some(mode) => {
            command.mode = mode;
            dispatch(shared, context, command);
        }
        None => command.fail(Status::InvalidCommand),
    }
    true
}

/// Answers a request for the server's counters: the [`crate::stats::word`] figures, as
/// little-endian `f64`s, in the output area (`OUTPUT_OVERFLOW` if it is too small).
fn answer_stats<H: Handler>(
    shared: &Arc<Shared<H>>,
    conn: &Arc<Connection>,
    slot: SlotRef,
    request: Request,
) {
    let mut command = Command {
        conn: conn.clone(),
        code: request.code,
        mode: Mode::Stats,
        answered: false,
        counted: false,
        started: 0,
        body: Body::Slot { slot, request },
    };
    let bytes = stats_bytes(shared);
    if command.output_capacity() < bytes.len() {
        command.fail(Status::OutputOverflow);
        return;
    }
    command.output().write(&bytes);
    command.finish(0, bytes.len());
}

/// The server's counters as a request for them is answered: the [`crate::stats::word`]
/// figures as little-endian `f64`s.
fn stats_bytes<H: Handler>(shared: &Shared<H>) -> Vec<u8> {
    let mut words = [0.0; crate::stats::word::LEN];
    let connections = lock_ok(&shared.connections).len();
    shared.stats.snapshot(connections, &mut words);
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The connection's ring thread: pops the CS ring whenever it holds the consumer role, and
/// hands the role to a poller that asks for it (see [`Server::poller`]).
fn ring_loop<H: Handler>(
    shared: &Arc<Shared<H>>,
    conn: &Arc<Connection>,
    context: &Arc<H::Context>,
) {
    let park = FutexPark::SHARED;
    'role: while !conn.ended() {
        if conn.yield_wanted.load(Ordering::SeqCst) || !conn.take_role(RING) {
            // A poller pops (or asked to) for now; sleep until it gives the role back.
            conn.role_free.wait_until(Spin(Duration::ZERO), || {
                conn.ended()
                    || (conn.consumer.load(Ordering::SeqCst) == FREE
                        && !conn.yield_wanted.load(Ordering::SeqCst))
            });
            continue;
        }
        loop {
            let popped = conn.cs.pop_blocking(conn.spin, &park, || {
                conn.ended() || conn.yield_wanted.load(Ordering::SeqCst)
            });
            match popped {
                Ok(offset) => {
                    if !take_command(shared, conn, context, offset) {
                        conn.give_role();
                        break 'role;
                    }
                }
                Err(_) => {
                    conn.give_role();
                    continue 'role;
                }
            }
            if conn.yield_wanted.load(Ordering::SeqCst) {
                conn.give_role();
                continue 'role;
            }
        }
    }
    conn.release();
}

/// Pops CS rings from outside the ring threads: the JavaScript thread of a Deno server does,
/// while it waits for events, so that a command reaches it with no thread hop.
pub trait Poller: Send + Sync {
    /// Takes the consumer role of every connection it can (asking ring threads for theirs) and
    /// runs every command waiting on those; returns whether it took any.
    fn poll(&self) -> bool;
    /// Gives every role it holds back to the ring threads.
    fn release(&self);
}

struct ServerPoller<H: Handler>(Arc<Shared<H>>);

impl<H: Handler> Poller for ServerPoller<H> {
    fn poll(&self) -> bool {
        let shared = &self.0;
        let park = FutexPark::SHARED;
        let mut took = false;
        // A snapshot: handlers run below, and must be free to take the server's locks.
        let conns = lock_ok(&shared.poll_list).clone();
        for (conn, context) in conns.iter() {
            if conn.ended() {
                continue;
            }
            if conn.consumer.load(Ordering::Relaxed) != POLLER {
                if !conn.take_role(POLLER) {
                    // The ring thread has it: ask for it (once), and wake it if it sleeps.
                    if !conn.yield_wanted.swap(true, Ordering::SeqCst) {
                        conn.cs.interrupt(&park);
                    }
                    continue;
                }
                conn.yield_wanted.store(false, Ordering::SeqCst);
            }
            while let Some(offset) = conn.cs.try_pop(&park) {
                took = true;
                if !take_command(shared, conn, context, offset) {
                    break;
                }
            }
        }
        took
    }

    fn release(&self) {
        let conns = lock_ok(&self.0.poll_list).clone();
        for (conn, _) in conns.iter() {
            if conn.consumer.load(Ordering::Relaxed) == POLLER {
                conn.give_role();
            } else if conn.yield_wanted.swap(false, Ordering::SeqCst) {
                // Asked but never took it: the ring thread may go on.
                conn.role_free.notify();
            }
        }
    }
}

/// Runs a command inline or hands it to the pool.
fn dispatch<H: Handler>(shared: &Arc<Shared<H>>, context: &Arc<H::Context>, command: Command) {
    let mode = match command.mode {
        Mode::Default => shared.options.default_mode,
        m => m,
    };
    match (&shared.pool, mode) {
        (_, Mode::Stats) => command.fail(Status::InvalidCommand),
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
