//! What JavaScript can do with the core, in safe Rust: the operations both foreign surfaces
//! wrap — the C surface of [`crate::ffi`] (Deno's FFI) and the Node-API surface of
//! [`crate::napi`] (Node.js). Each surface only converts arguments and results; the rules live
//! here once, so a Deno peer and a Node peer behave the same.
//!
//! - Clients, servers, tickets, commands and segment references are named by `u32` handles
//!   ([`crate::handles`]), one scheme for both runtimes: a stale or forged one is refused,
//!   never dereferenced.
//! - Events reach JavaScript through the process-wide [`HUB`], the owner of every connection
//!   JavaScript makes: the end of a connect, the completions of asynchronous commands and every
//!   open, exec and close of a server, one [`HubEvent`] at a time.
//! - A failure is an [`Error`]; a surface records it with [`fail`], which keeps its sentence for
//!   [`last_error`] on this thread and returns its status code.
//! - The numbers both sides must agree on (event kinds and words, scratch words, flags, idle
//!   codes, counters) are in [`CONSTANTS`], which JavaScript's test compares with its own.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::handles::Handles;
use crate::hub::{self, Event, HUB};
use crate::pool::{PoolNote, PoolOwner, Taken};
use shmcall_core::client::{Answer, Client, ConnectOptions, Ticket};
use shmcall_core::owner::{LaneNotify, Lent, Owner};
use shmcall_core::queue::{self, EventQueue};
use shmcall_core::ring::{self, RingHeader};
use shmcall_core::segment::{CLASSES, Layout, MAX_AREA, Segment, SlotClass};
use shmcall_core::server::{Command, ConnInfo, Handler, Opening, ServeOptions, Server};
use shmcall_core::slot::{self, Area, FLAG_INLINE, FLAG_STATS, FLAG_WORKER, HEADER_SIZE, Mode};
use shmcall_core::stats;
use shmcall_core::status::{Error, Status};

/// Clients by handle; a call clones the `Arc` out of the table, so a close meanwhile cannot
/// free a client under a call that is running.
static CLIENTS: Handles<Arc<ClientHandle>> = Handles::new("client");
/// Servers by handle.
static SERVERS: Handles<Arc<ServerHandle>> = Handles::new("server");
static QUEUES: Handles<Arc<Mutex<EventQueue>>> = Handles::new("event queue");
/// Tickets given out by `begin` and by completion events, by handle.
static TICKETS: Handles<Ticket> = Handles::new("ticket");
/// Commands given out by exec events, by handle.
static COMMANDS: Handles<HeldCommand> = Handles::new("command");
/// Pools, by handle: a server's pool outlives its server until its workers stopped
/// (`pool.rs`).
static POOLS: Handles<Arc<PoolOwner>> = Handles::new("pool");

/// A command JavaScript holds, with the pool whose worker took it (told when it is done).
struct HeldCommand {
    command: Box<Command>,
    pool: Option<Arc<PoolOwner>>,
}
/// Segments kept mapped for views JavaScript holds (Deno's; Node's views hold them
/// themselves), by handle.
static SEGMENTS: Handles<Arc<Segment>> = Handles::new("segment");

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
    static LAST_STATUS: Cell<i32> = const { Cell::new(0) };
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records `e` as this thread's last failure and returns its status code.
pub fn fail(e: Error) -> i32 {
    let code = e.status().code();
    LAST_ERROR.with(|l| *l.borrow_mut() = e.to_string());
    LAST_STATUS.set(code);
    code
}

/// A count as a C or Node-API result: saturated to `i32::MAX`, or the failure's code.
pub fn count(r: Result<u32, Error>) -> i32 {
    match r {
        Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
        Err(e) => fail(e),
    }
}

/// The sentence of this thread's last failure.
pub fn last_error() -> String {
    LAST_ERROR.with(|l| l.borrow().clone())
}

/// Calls `f` with the sentence of this thread's last failure, without copying it.
pub fn with_last_error<R>(f: impl FnOnce(&str) -> R) -> R {
    LAST_ERROR.with(|l| f(&l.borrow()))
}

/// The status code of this thread's last failure.
pub fn last_status() -> i32 {
    LAST_STATUS.get()
}

/// Runs `f`, turning a panic into [`Status::HandlerFailed`] so that nothing unwinds into
/// JavaScript's runtime.
pub fn guard<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Error::new(
            Status::HandlerFailed,
            "shmcall panicked inside a call from JavaScript",
        ))
    })
}

fn mode(m: u32) -> Result<Mode, Error> {
    Mode::from_flags(m).ok_or_else(|| {
        Error::new(
            Status::InvalidArgument,
            format!("mode {m} is not 0, 1, 2 or 4"),
        )
    })
}

/// The socket directory argument of `connect` and `serve`: empty means the default.
fn endpoint_dir(dir: &str) -> Option<PathBuf> {
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The socket directory `dir` names (empty: the default one), as the core resolves it for
/// clients and servers: created if missing, and checked to be the owner's only.
pub fn socket_dir(dir: &str) -> Result<String, Error> {
    let access = shmcall_core::endpoint::Access {
        shared: false,
        owners: &[],
    };
    let path = shmcall_core::endpoint::socket_dir(endpoint_dir(dir).as_deref(), access)?;
    path.into_os_string().into_string().map_err(|p| {
        Error::new(
            Status::InvalidArgument,
            format!("the socket directory {} is not UTF-8", p.to_string_lossy()),
        )
    })
}

/// The longest spin a JavaScript caller can ask for (`MAX_SPIN_MICROS` in src/validate.ts).
pub const MAX_SPIN_NS: u64 = 1_000_000_000;

// ---------------------------------------------------------------------------------------------
// Segments

/// Keeps `segment` mapped until [`segment_release`] of the returned handle.
pub fn segment_hold(segment: Arc<Segment>) -> Result<u32, Error> {
    SEGMENTS.insert(segment)
}

/// Lets go of a segment held by [`segment_hold`]: it is unmapped once nothing else holds it.
pub fn segment_release(handle: u32) -> Result<(), Error> {
    SEGMENTS.remove(handle).map(drop)
}

// ---------------------------------------------------------------------------------------------
// Client

/// A client; `id` is JavaScript's name for it in hub events.
#[derive(Debug)]
pub struct ClientHandle {
    client: Client,
    id: u64,
    /// Set when its handle is freed: a thread's cached lookup then refuses it too.
    freed: AtomicBool,
}

thread_local! {
    /// The client this thread looked up last, by handle: a command makes two calls on one
    /// client, and a JavaScript thread usually works one client at a time, so most lookups
    /// take neither the table's lock nor a reference count.
    static LAST_CLIENT: RefCell<Option<(u32, Arc<ClientHandle>)>> = const { RefCell::new(None) };
}

/// The client behind `handle`.
pub fn client(handle: u32) -> Result<Arc<ClientHandle>, Error> {
    let cached = LAST_CLIENT.with(|last| match &*last.borrow() {
        Some((h, c)) if *h == handle && !c.freed.load(Ordering::Acquire) => Some(c.clone()),
        _ => None,
    });
    if let Some(c) = cached {
        return Ok(c);
    }
    let c = CLIENTS.with(handle, |c| c.clone())?;
    LAST_CLIENT.with(|last| *last.borrow_mut() = Some((handle, c.clone())));
    Ok(c)
}

/// How long a connect from JavaScript waits on its own thread for the server's answer before
/// it lets the I/O thread wait (and JavaScript go on): a server that answers at once (one with
/// no `open` to run) is answered within it, and costs no thread a wake-up.
pub const CONNECT_WAIT: Duration = Duration::from_millis(1);

/// Connects to `ic_id` (`dir` empty: the default socket directory; `spin` `None`: the default
/// budget; `large_output` above 0: the segment's large slot class is one slot with that much
/// output, as an event-queue consumer's long list needs); `id` names the client in hub events.
/// Returns the client's handle when the server answered within [`CONNECT_WAIT`]; otherwise
/// `None`, and the connect's end reaches the hub later as a connected event for `id`: the
/// client's handle, or the failure. Fails at once when the connect cannot even start (no server,
/// a bad ic id…) or was refused at once.
pub fn client_connect(
    ic_id: &str,
    dir: &str,
    spin: Option<Duration>,
    large_output: u32,
    id: u64,
) -> Result<Option<u32>, Error> {
    guard(|| {
        let defaults = ConnectOptions::default();
        let mut geometry = defaults.geometry;
        if large_output > 0 {
            // Checked with the rest of the geometry when the segment is made.
            geometry.classes[1] = SlotClass {
                count: 1,
                input_capacity: geometry.classes[0].input_capacity,
                output_capacity: large_output,
            };
        }
        let options = ConnectOptions {
            socket_dir: endpoint_dir(dir),
            spin: spin.unwrap_or(defaults.spin),
            owner: Some(hub::owner()),
            geometry,
            ..defaults
        };
        let connected = Client::connect_with(ic_id, &options, CONNECT_WAIT, move |result| {
            HUB.push(Event::Connected {
                client: id,
                result: result.map(Box::new),
            });
        })?;
        connected.map(|c| hold_client(c, id)).transpose()
    })
}

/// Holds a connected client in [`CLIENTS`]; its handle.
fn hold_client(client: Client, id: u64) -> Result<u32, Error> {
    let h = Arc::new(ClientHandle {
        client,
        id,
        freed: AtomicBool::new(false),
    });
    CLIENTS.insert(h.clone()).inspect_err(|_| h.client.close())
}

/// Closes a client and frees its handle: outstanding commands fail with CLOSED (their
/// completions still reach the hub).
pub fn client_free(handle: u32) -> Result<(), Error> {
    guard(|| {
        let c = CLIENTS.remove(handle)?;
        // Release: a cached lookup that sees it freed refuses the handle (Acquire there).
        c.freed.store(true, Ordering::Release);
        LAST_CLIENT.with(|last| {
            let mut last = last.borrow_mut();
            if last.as_ref().is_some_and(|(h, _)| *h == handle) {
                *last = None;
            }
        });
        c.client.close();
        Ok(())
    })
}

impl ClientHandle {
    /// The client's segment (areas of slot tickets lie inside it).
    pub fn segment(&self) -> Arc<Segment> {
        self.client.segment()
    }

    /// Takes a slot (or backup buffers) for a command; returns the ticket's handle and where
    /// it went ([`Begun`]). `mode_flags`: 0 the server's default, 1 inline, 2 worker, 4 a
    /// request for the server's counters.
    pub fn begin_at(
        &self,
        code: u32,
        input_len: u32,
        output_cap: u32,
        mode_flags: u32,
    ) -> Result<(u32, Begun), Error> {
        self.begin_with(code, input_len, output_cap, mode_flags, |h, t| {
            let Some(slot) = t.slot_index() else {
                return Begun::BACKUP;
            };
            let base = h.client.segment_mapping().0 as usize;
            // Segments are smaller than 4 GiB (`Geometry::layout`), so offsets fit.
            Begun {
                input: (t.input().as_ptr() as usize - base) as u32,
                output: (t.output().as_ptr() as usize - base) as u32,
                slot,
            }
        })
    }

    /// Begins a command and holds its ticket in [`TICKETS`]: returns the handle, and what
    /// `areas` makes of the ticket's areas before it goes into the table.
    pub fn begin_with<A>(
        &self,
        code: u32,
        input_len: u32,
        output_cap: u32,
        mode_flags: u32,
        areas: impl FnOnce(&ClientHandle, &mut Ticket) -> A,
    ) -> Result<(u32, A), Error> {
        guard(|| {
            let mut t = self.client.begin(
                code,
                input_len as usize,
                output_cap as usize,
                mode(mode_flags)?,
            )?;
            let a = areas(self, &mut t);
            Ok((TICKETS.insert(t)?, a))
        })
    }

    /// Sends the command of `ticket` and waits on this thread for the server's answer, for at
    /// most `timeout_ms` when it is positive ([`shmcall_core::Client::call_within`]).
    pub fn call(&self, ticket: u32, timeout_ms: f64) -> Result<Answer, Error> {
        let timeout = timeout(timeout_ms)?;
        guard(|| {
            // Out of the table while the call waits, so that the table's lock is not held.
            let mut t = TICKETS.lend(ticket)?;
            let answered = self.client.call_within(&mut t, timeout);
            TICKETS.give_back(ticket, t);
            answered
        })
    }

    /// Sends the command of `ticket` and returns at once; the finished ticket reaches the hub
    /// as a completion with `token` and a new handle. The ticket's handle is freed here.
    pub fn submit(&self, ticket: u32, token: u64) -> Result<(), Error> {
        let client = self.id;
        guard(|| {
            let t = TICKETS.remove(ticket)?;
            self.client.call_async(t, move |t| {
                HUB.push(Event::Completion {
                    client,
                    token,
                    ticket: Box::new(t),
                });
            })
        })
    }

    /// Withdraws the asynchronous command in slot `slot` ([`Begun::slot`]) if the server has
    /// not taken it; see [`Client::withdraw`]. The caller must not have had its completion.
    pub fn withdraw(&self, slot: u32) -> bool {
        self.client.withdraw(slot)
    }

    /// Lends the connection's rings and slots to JavaScript ([`Client::lend`]): from now on
    /// answers to pop reach the hub as lane events for this client. Returns the segment's
    /// layout and where the rings stand, at the `LANE_*` positions.
    pub fn lend(&self) -> Result<[u32; LANE_WORDS], Error> {
        let client = self.id;
        let due = Arc::new(AtomicBool::new(false));
        guard(|| {
            let lent = self.client.lend(move |result| match result {
                // AcqRel: pairs with the Release clear in `hub_next`; one event at a time.
                Ok(()) => {
                    if !due.swap(true, Ordering::AcqRel) {
                        HUB.push(Event::Lane {
                            owner: client,
                            conn: 0,
                            result: Ok(due.clone()),
                        });
                    }
                }
                Err(e) => HUB.push(Event::Lane {
                    owner: client,
                    conn: 0,
                    result: Err(e),
                }),
            })?;
            Ok(lane_words(self.client.segment().layout(), lent))
        })
    }

    /// Wakes the server after JavaScript's push, as its sleep flag asks ([`Client::lane_wake`]).
    pub fn lane_wake(&self) {
        self.client.lane_wake();
    }

    /// The protocol minor the connection speaks ([`Client::protocol_minor`]).
    pub fn protocol_minor(&self) -> u16 {
        self.client.protocol_minor()
    }

    /// Answers on the lent connection wake nobody ([`Client::lane_quiet`]).
    pub fn lane_quiet(&self) {
        self.client.lane_quiet();
    }

    /// The owner polls the lent connection again ([`Client::lane_activate`]).
    pub fn lane_activate(&self) {
        self.client.lane_activate();
    }

    /// Waits for an answer to pop, at most `timeout_ms` when positive ([`Client::lane_wait`]).
    pub fn lane_wait(&self, timeout_ms: f64) -> Result<bool, Error> {
        let timeout = timeout(timeout_ms)?;
        guard(|| self.client.lane_wait(timeout))
    }

    /// JavaScript found the server breaking the protocol: ends the connection with `why`.
    pub fn lane_violation(&self, why: &str) {
        self.client.lane_violation(why);
    }

    /// Adds what JavaScript counted, at the [`stats::lane`] positions ([`stats::Stats::add`]).
    pub fn lane_count(&self, report: &[f64; stats::lane::LEN]) {
        self.client.stats().add(report);
    }

    /// This client's counters, at the [`stats::word`] positions.
    pub fn stats(&self) -> [f64; stats::word::LEN] {
        let mut out = [0.0; stats::word::LEN];
        self.client.stats().snapshot(0, &mut out);
        out
    }
}

/// The answer of a finished ticket and its output area's first byte.
pub fn ticket_answer(ticket: u32) -> Result<(Answer, *mut u8), Error> {
    TICKETS.with(ticket, |t| t.answer().map(|a| (a, t.output().as_ptr())))?
}

/// The first bytes of a ticket's input and output areas.
pub fn ticket_areas(ticket: u32) -> Result<(*mut u8, *mut u8), Error> {
    TICKETS.with(ticket, |t| (t.input().as_ptr(), t.output().as_ptr()))
}

/// Copies `src` into the start of a ticket's input area (the backup path's way in).
pub fn ticket_write_input(ticket: u32, src: &[u8]) -> Result<(), Error> {
    TICKETS.with(ticket, |t| {
        let mut area = t.input();
        if src.len() > area.len() {
            return Err(too_long("input", src.len(), "the input area", area.len()));
        }
        area.write(src);
        Ok(())
    })?
}

/// Copies a finished ticket's output (cut to the reported length) into the start of `dst`;
/// returns the bytes copied: the output's length, or `dst`'s when shorter.
pub fn ticket_read_output(ticket: u32, dst: &mut [u8]) -> Result<usize, Error> {
    TICKETS.with(ticket, |t| {
        t.answer()?;
        Ok(read_into(&t.output(), dst))
    })?
}

/// Frees a ticket (and gives its slot back).
pub fn ticket_free(ticket: u32) -> Result<(), Error> {
    guard(|| TICKETS.remove(ticket).map(drop))
}

/// A command's timeout from milliseconds: none for 0 or less; refused when not finite.
fn timeout(ms: f64) -> Result<Option<Duration>, Error> {
    if ms.is_nan() || ms.is_infinite() {
        return Err(Error::new(
            Status::InvalidArgument,
            format!("a timeout must be a finite number of milliseconds, received {ms}"),
        ));
    }
    Ok((ms > 0.0).then(|| Duration::from_secs_f64(ms / 1e3)))
}

/// Copies the start of `area` into `dst`, as much as both hold; returns the bytes copied.
fn read_into(area: &Area<'_>, dst: &mut [u8]) -> usize {
    let n = area.len().min(dst.len());
    area.read_at(0, &mut dst[..n]);
    n
}

fn too_long(what: &str, len: usize, into: &str, cap: usize) -> Error {
    Error::new(
        Status::InvalidArgument,
        format!("{what} of {len} bytes does not fit {into} of {cap} bytes"),
    )
}

/// Where [`ClientHandle::begin_at`] put a command: its areas' offsets in the segment and its
/// slot, or [`Begun::BACKUP`]'s `u32::MAX` for all three on the backup path (whose buffers
/// [`ticket_write_input`] and [`ticket_read_output`] reach).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Begun {
    /// The input area's offset.
    pub input: u32,
    /// The output area's offset.
    pub output: u32,
    /// The slot's index, for [`ClientHandle::withdraw`].
    pub slot: u32,
}

impl Begun {
    /// A command on the backup path.
    pub const BACKUP: Begun = Begun {
        input: u32::MAX,
        output: u32::MAX,
        slot: u32::MAX,
    };
}

// ---------------------------------------------------------------------------------------------
// Server

/// Opens waiting for JavaScript's answer, by connection; `None` once the server closed.
type Openings = Mutex<Option<HashMap<u64, Opening<()>>>>;

/// Hands every handler call to the hub (so to JavaScript): `open` waits in [`Openings`] for
/// JavaScript's answer, so that the client is connected only after `open` ran — unless the
/// server's JavaScript has no `open` of its own (`asks_open` false): a client is then welcome
/// as soon as its hello passed, and JavaScript learns of it from an open event that needs no
/// answer.
struct Queueing {
    id: u64,
    asks_open: bool,
    openings: Arc<Openings>,
    /// Set while the server quiesces: new clients are refused with `SERVER_QUIESCING`.
    quiescing: Arc<AtomicBool>,
    /// Whether JavaScript takes its connections' slot commands itself (`src/lane.ts`).
    lanes: bool,
    /// The server's worker pool, when it has one: its workers own the connections and take
    /// every command not flagged `INLINE` (`pool.rs`).
    pool: Option<Arc<PoolOwner>>,
    /// Whether a command with no mode flag runs inline (the server's `inline` option).
    inline_default: bool,
}

impl Handler for Queueing {
    type Context = ();

    fn open(&self, _conn: &ConnInfo) -> Result<(), Error> {
        unreachable!("the server calls `begin_open`")
    }

    fn open_at_once(&self, conn: &ConnInfo) -> Option<Result<(), Error>> {
        if self.asks_open {
            return None;
        }
        if lock(&self.openings).is_none() {
            return Some(Err(Error::new(
                Status::PeerTerminated,
                "the server closed while this client connected",
            )));
        }
        if self.quiescing.load(Ordering::SeqCst) {
            return Some(Err(Error::new(
                Status::ServerQuiescing,
                "the server is quiescing: it takes no new clients",
            )));
        }
        // No answer is awaited: JavaScript may learn of the client when it next wakes.
        HUB.push_quiet(Event::Open {
            server: self.id,
            conn: *conn,
        });
        Some(Ok(()))
    }

    fn begin_open(&self, conn: &ConnInfo, opening: Opening<()>) {
        {
            let mut openings = lock(&self.openings);
            let Some(waiting) = openings.as_mut() else {
                // Gone for this client, as a server that exited is.
                drop(openings);
                opening.answer(Err(Error::new(
                    Status::PeerTerminated,
                    "the server closed while this client connected",
                )));
                return;
            };
            waiting.insert(conn.id, opening);
        }
        HUB.push(Event::Open {
            server: self.id,
            conn: *conn,
        });
    }

    fn exec(&self, command: Command, conn: &ConnInfo, _: &()) {
        let for_pool = match command.mode() {
            Mode::Worker => true,
            Mode::Default => !self.inline_default,
            Mode::Inline | Mode::Stats | Mode::Queue => false,
        };
        let event = Event::Exec {
            server: self.id,
            conn: conn.id,
            command: Box::new(command),
        };
        match &self.pool {
            // Counted by the pool before it looks at the quiescing flag (`admit`); a quiescing
            // server's thread answers the others `SERVER_QUIESCING`, unrun.
            Some(pool) if for_pool && pool.admit() => pool.push(event),
            _ => HUB.push(event),
        }
    }

    fn lane(&self, conn: &ConnInfo) -> Option<LaneNotify> {
        if !self.lanes {
            return None;
        }
        let (server, id) = (self.id, conn.id);
        let due = Arc::new(AtomicBool::new(false));
        Some(Box::new(move |result| match result {
            // AcqRel: pairs with the Release clear in `hub_next`; one event at a time.
            Ok(()) => {
                if !due.swap(true, Ordering::AcqRel) {
                    HUB.push(Event::Lane {
                        owner: server,
                        conn: id,
                        result: Ok(due.clone()),
                    });
                }
            }
            Err(e) => HUB.push(Event::Lane {
                owner: server,
                conn: id,
                result: Err(e),
            }),
        }))
    }

    fn takes_commands(&self) -> bool {
        // JavaScript takes each command when it is about to run it (`command_take`), so that
        // one waiting in the hub or for a worker can still be withdrawn.
        true
    }

    fn close(&self, conn: &ConnInfo, _: &()) {
        HUB.push(Event::Close {
            server: self.id,
            conn: conn.id,
        });
    }
}

/// A server; `id` is JavaScript's name for it in hub events.
#[derive(Debug)]
pub struct ServerHandle {
    server: Mutex<Server>,
    openings: Arc<Openings>,
    quiescing: Arc<AtomicBool>,
    pool: Option<Arc<PoolOwner>>,
}

impl std::fmt::Debug for Queueing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queueing").field("id", &self.id).finish()
    }
}

/// A serve flag: a client is welcome only once JavaScript answered its open event (else at
/// once, and the open event needs no answer).
pub const SERVE_ASKS_OPEN: u32 = 1;
/// A serve flag: every connection is lent to JavaScript as it opens, which takes its slot
/// commands itself (`src/lane.ts`; lane events name the connection).
pub const SERVE_LANES: u32 = 2;
/// A serve flag, with [`SERVE_POOL`]: commands with no mode flag run on the server's thread.
pub const SERVE_INLINE: u32 = 4;
/// A serve flag (not with [`SERVE_LANES`]): a worker pool owns the connections and takes their
/// commands (`pool.rs`, [`server_pool`]), but for those flagged `INLINE` (and with
/// [`SERVE_INLINE`] those with no mode flag), which reach the hub.
pub const SERVE_POOL: u32 = 8;

/// The server behind `handle`.
pub fn server(handle: u32) -> Result<Arc<ServerHandle>, Error> {
    SERVERS.with(handle, |s| s.clone())
}

/// Serves `ic_id` (`dir` and `spin` as for [`client_connect`]); its opens, commands and closes
/// reach the hub, named by `id`, served as `flags` say ([`SERVE_ASKS_OPEN`] and the others).
/// Returns the server's handle.
pub fn server_serve(
    ic_id: &str,
    dir: &str,
    spin: Option<Duration>,
    id: u64,
    flags: u32,
) -> Result<u32, Error> {
    let asks_open = flags & SERVE_ASKS_OPEN != 0;
    let lanes = flags & SERVE_LANES != 0;
    let pool = flags & SERVE_POOL != 0;
    let inline_default = flags & SERVE_INLINE != 0;
    guard(|| {
        let openings: Arc<Openings> = Arc::new(Mutex::new(Some(HashMap::new())));
        let quiescing = Arc::new(AtomicBool::new(false));
        let defaults = ServeOptions::default();
        // A server with a pool: its workers own its connections.
        let pool = (pool && !lanes).then(|| PoolOwner::new(id, quiescing.clone()));
        let owner: Arc<dyn Owner> = match &pool {
            Some(p) => p.clone(),
            None => hub::owner(),
        };
        let options = ServeOptions {
            socket_dir: endpoint_dir(dir),
            spin: spin.unwrap_or(defaults.spin),
            owner: Some(owner),
            ..defaults
        };
        let handler = Queueing {
            id,
            asks_open,
            openings: openings.clone(),
            quiescing: quiescing.clone(),
            lanes,
            pool: pool.clone(),
            inline_default,
        };
        let server = Server::serve(ic_id, handler, options)?;
        let h = Arc::new(ServerHandle {
            server: Mutex::new(server),
            openings,
            quiescing,
            pool,
        });
        SERVERS.insert(h.clone()).inspect_err(|_| h.close())
    })
}

/// Words of an event queue's counters ([`queue_stats`]): posted, delivered, dropped,
/// connections, consumers.
pub const QUEUE_STATS_LEN: usize = 5;

/// Hosts the event queue `queue_id` in `dir` (empty: the default directory). Its operations run
/// on the core's own thread, never in JavaScript.
pub fn queue_serve(queue_id: &str, dir: &str) -> Result<u32, Error> {
    guard(|| {
        let options = ServeOptions {
            socket_dir: endpoint_dir(dir),
            // Run by the I/O thread that reads the producers' WAKE frames, with no spin
            // (docs/events.md): a host that spun after each post (it counts as a pair, which
            // never yields) kept a CPU of 2 from the consumer it had just rung, and the runner
            // thread cost a wake of its own. Post → next() p50 (bench/events.ts): 100–130 µs
            // with both, 86–115 µs without the spin, 70–80 µs run by the I/O thread; the 1 → 4
            // fan-out unchanged.
            spin: std::time::Duration::ZERO,
            owner: Some(shmcall_core::owner::Inline::new()?),
            ..ServeOptions::default()
        };
        let queue = Arc::new(Mutex::new(EventQueue::serve(queue_id, options)?));
        QUEUES
            .insert(queue.clone())
            .inspect_err(|_| lock(&queue).close())
    })
}

/// An event queue's counters.
pub fn queue_stats(handle: u32) -> Result<[f64; QUEUE_STATS_LEN], Error> {
    guard(|| {
        let s = QUEUES.with(handle, |q| lock(q).stats())?;
        Ok([s.posted, s.delivered, s.dropped, s.connections, s.consumers].map(|n| n as f64))
    })
}

/// Stops hosting an event queue and frees its handle: every producer's and consumer's
/// connection ends.
pub fn queue_free(handle: u32) -> Result<(), Error> {
    guard(|| {
        let queue = QUEUES.remove(handle)?;
        lock(&queue).close();
        Ok(())
    })
}

/// Stops a server and frees its handle: no new clients; connections end, their commands still
/// in the hub are answered when JavaScript finishes them (or HANDLER_FAILED if it drops them).
pub fn server_free(handle: u32) -> Result<(), Error> {
    guard(|| {
        let s = SERVERS.remove(handle)?;
        s.close();
        Ok(())
    })
}

impl ServerHandle {
    /// Answers an open: `status` 0 accepts the client; a negative library status refuses it
    /// with that status.
    pub fn opened(&self, connection: u64, status: i32, reason: &str) {
        let opening = lock(&self.openings)
            .as_mut()
            .and_then(|w| w.remove(&connection));
        let Some(opening) = opening else { return };
        opening.answer(match status {
            0 => Ok(()),
            s => Err(Error::new(
                Status::from_code(s).unwrap_or(Status::HandlerFailed),
                if reason.is_empty() {
                    "the server's open handler refused the connection".to_string()
                } else {
                    format!("the server's open handler refused the connection: {reason}")
                },
            )),
        });
    }

    /// The layout and ring positions of lent connection `conn` (the `LANE_*` words).
    pub fn lane_layout(&self, conn: u64) -> Result<[u32; LANE_WORDS], Error> {
        let (layout, lent) = lock(&self.server).lane_layout(conn)?;
        Ok(lane_words(&layout, lent))
    }

    /// Lent connection `conn`'s segment, for JavaScript's view.
    pub fn lane_segment(&self, conn: u64) -> Result<Arc<Segment>, Error> {
        lock(&self.server).lane_segment(conn)
    }

    /// Wakes the client of lent connection `conn` after JavaScript's push.
    pub fn lane_wake(&self, conn: u64) {
        lock(&self.server).lane_wake(conn);
    }

    /// JavaScript found the client of lent connection `conn` breaking the protocol.
    pub fn lane_violation(&self, conn: u64, why: &str) {
        lock(&self.server).lane_violation(conn, why);
    }

    /// JavaScript keeps a command of lent connection `conn` past its turn (an async `exec`).
    pub fn lane_hold(&self, conn: u64) -> Result<(), Error> {
        lock(&self.server).lane_hold(conn)
    }

    /// JavaScript answered a command of lent connection `conn` that it kept.
    pub fn lane_release(&self, conn: u64) -> Result<(), Error> {
        lock(&self.server).lane_release(conn)
    }

    /// JavaScript took what lent connection `conn` had left after its end.
    pub fn lane_drained(&self, conn: u64) {
        lock(&self.server).lane_drained(conn);
    }

    /// Adds what JavaScript's lanes counted to the server's counters.
    pub fn lane_count(&self, report: &[f64; stats::lane::LEN]) {
        lock(&self.server).stats().add(report);
    }

    /// Records the pool's size and whether the server quiesces, for its counters' readers and
    /// for the clients that connect from now on.
    pub fn note(&self, workers: u32, quiescing: bool) {
        self.quiescing.store(quiescing, Ordering::SeqCst);
        lock(&self.server).stats().note(workers, quiescing);
    }

    /// This server's counters, at the [`stats::word`] positions.
    pub fn stats(&self) -> [f64; stats::word::LEN] {
        let mut out = [0.0; stats::word::LEN];
        let server = lock(&self.server);
        server.stats().snapshot(server.connections(), &mut out);
        out
    }

    /// Stops the server: opens still waiting for JavaScript are refused, connections end.
    /// Idempotent.
    fn close(&self) {
        let waiting = lock(&self.openings).take();
        for (_, opening) in waiting.into_iter().flatten() {
            opening.answer(Err(Error::new(
                Status::PeerTerminated,
                "the server closed while this client connected",
            )));
        }
        // The pool's workers stop polling: the connections are this thread's to poll as they
        // end (the pool is the server's owner, and says so to this thread).
        if let Some(pool) = &self.pool {
            pool.close();
        }
        lock(&self.server).close();
        if let Some(pool) = &self.pool {
            pool.closed();
        }
    }
}

/// The pool of server `handle` (one made with `lanes` false), as a handle of its own: it
/// outlives the server until [`pool_free`], so that its workers' commands are accounted for
/// after the server closed.
pub fn server_pool(handle: u32) -> Result<u32, Error> {
    guard(|| {
        let s = server(handle)?;
        let Some(pool) = s.pool.clone() else {
            return Err(Error::new(
                Status::InvalidArgument,
                "the server has no pool",
            ));
        };
        POOLS.insert(pool)
    })
}

/// Frees a pool's handle (its workers stopped).
pub fn pool_free(pool: u32) -> Result<(), Error> {
    guard(|| POOLS.remove(pool).map(drop))
}

/// Worker `worker` of `pool` waits for its next command (`pool.rs`): the command as an exec
/// event, `None` when none came within `wait`; fails `CLOSED` once the server closed.
pub fn pool_take(
    pool: u32,
    worker: u32,
    spin: Duration,
    wait: Duration,
) -> Result<Option<HubEvent>, Error> {
    guard(|| {
        let p = POOLS.with(pool, |p| p.clone())?;
        match p.take(worker, spin, wait) {
            Taken::Job(e) => {
                let out = event_out(e).inspect_err(|_| p.dropped())?;
                let handle = out.handle as u32;
                if !p.hold(handle, worker) {
                    // The worker was buried while this call ran (terminating it does not
                    // interrupt a native call): no one else will answer what it took.
                    if let Ok(c) = COMMANDS.remove(handle) {
                        c.command.finish(Status::HandlerFailed.code(), 0);
                    }
                    p.dropped();
                    return Err(Error::new(Status::Closed, "this worker was stopped"));
                }
                COMMANDS.with(handle, |c| c.pool = Some(p.clone()))?;
                Ok(Some(out))
            }
            Taken::Nothing => Ok(None),
            Taken::Closed => Err(Error::new(Status::Closed, "the server closed")),
        }
    })
}

/// Answers with `status` the commands worker `worker` of `pool` held (it is gone); returns how
/// many.
pub fn pool_bury(pool: u32, worker: u32, status: i32) -> Result<u32, Error> {
    guard(|| {
        let p = POOLS.with(pool, |p| p.clone())?;
        let mut n = 0;
        for handle in p.bury(worker) {
            // Answered by the worker just before it went: the handle is gone.
            if let Ok(c) = COMMANDS.remove(handle) {
                c.command.finish(status, 0);
                n += 1;
            }
        }
        Ok(n)
    })
}

/// JavaScript takes the pool's poke (`PoolOwner::poked`).
pub fn pool_poked(pool: u32) -> Result<(), Error> {
    guard(|| POOLS.with(pool, |p| p.poked()))
}

/// The commands `pool` has queued or held.
pub fn pool_in_progress(pool: u32) -> Result<u32, Error> {
    guard(|| POOLS.with(pool, |p| p.in_progress() as u32))
}

/// Answers a command with `status` and the output `length`, and frees its handle. `output`,
/// when given, is copied into the command's output area first (JavaScript answers
/// backup-path commands from its own buffer); it must fit the area.
pub fn command_finish(
    command: u32,
    status: i32,
    length: u32,
    output: Option<&[u8]>,
) -> Result<(), Error> {
    guard(|| {
        let HeldCommand {
            command: mut c,
            pool,
        } = COMMANDS.remove(command)?;
        if let Some(src) = output {
            let mut area = c.output();
            let n = (length as usize).min(src.len()).min(area.len());
            area.write(&src[..n]);
        }
        c.finish(status, length as usize);
        if let Some(pool) = pool {
            pool.release(command);
        }
        Ok(())
    })
}

/// Takes a command to run it; returns false, and frees its handle, when its client withdrew it
/// first (it is then answered `CANCELLED` and must not run).
pub fn command_take(command: u32) -> Result<bool, Error> {
    guard(|| {
        if COMMANDS.with(command, |c| c.command.take())? {
            return Ok(true);
        }
        if let Some(pool) = COMMANDS.remove(command)?.pool {
            pool.release(command);
        }
        Ok(false)
    })
}

/// The segment of an exec event's command (for a view JavaScript keeps per connection);
/// `None` for backup-path commands.
pub fn command_segment(command: u32) -> Result<Option<Arc<Segment>>, Error> {
    COMMANDS.with(command, |c| c.command.segment())
}

/// Copies a command's input into the start of `dst` (the backup path's way out); returns the
/// bytes copied: the input's length, or `dst`'s when shorter.
pub fn command_read_input(command: u32, dst: &mut [u8]) -> Result<usize, Error> {
    COMMANDS.with(command, |c| read_into(&c.command.input(), dst))
}

// ---------------------------------------------------------------------------------------------
// Hub

/// A client's asynchronous command finished: `handle` is its ticket.
pub const EVENT_COMPLETION: u32 = 1;
/// A client connected: answer with [`ServerHandle::opened`].
pub const EVENT_OPEN: u32 = 2;
/// A command arrived: `handle` is the command, to finish with [`command_finish`].
pub const EVENT_EXEC: u32 = 3;
/// A connection ended after its commands drained.
pub const EVENT_CLOSE: u32 = 4;
/// A connect ended: `handle` is the client's (`code` 0), or `code` the failure's status.
pub const EVENT_CONNECTED: u32 = 5;
/// A lent client's answers are there to pop (`code` 0), or its connection ended (`code` the
/// failure's status).
pub const EVENT_LANE: u32 = 6;
/// The server's pool says something (`code`: [`PoolNote`]).
pub const EVENT_POOL: u32 = 7;

/// A lent connection's layout and ring positions as JavaScript reads them (the `LANE_*` words).
fn lane_words(layout: &Layout, lent: Lent) -> [u32; LANE_WORDS] {
    let mut w = [0u32; LANE_WORDS];
    w[LANE_CS_RING] = layout.cs_ring;
    w[LANE_SC_RING] = layout.sc_ring;
    w[LANE_RING_CAPACITY] = layout.geometry.ring_capacity;
    w[LANE_CS_POSITION] = lent.cs_position;
    w[LANE_SC_POSITION] = lent.sc_position;
    for (c, cl) in layout.classes.iter().enumerate() {
        let at = LANE_CLASSES + c * LANE_CLASS_WORDS;
        w[at] = cl.base;
        w[at + 1] = cl.stride;
        w[at + 2] = cl.class.count;
        w[at + 3] = cl.class.input_capacity;
        w[at + 4] = cl.class.output_capacity;
        w[at + 5] = cl.first_index;
    }
    w
}

/// Where a lent connection's layout sits in [`ClientHandle::lend`]'s words: the CS ring header's
/// offset in the segment (its cells follow it).
pub const LANE_CS_RING: usize = 0;
/// The SC ring header's offset.
pub const LANE_SC_RING: usize = 1;
/// Cells per ring.
pub const LANE_RING_CAPACITY: usize = 2;
/// The CS ring's next position to push.
pub const LANE_CS_POSITION: usize = 3;
/// The SC ring's next position to pop.
pub const LANE_SC_POSITION: usize = 4;
/// The first slot class: its first slot's offset, the stride between slots, the count, the
/// input and output capacities, and its first slot's index; then the next class.
pub const LANE_CLASSES: usize = 5;
/// Words per slot class.
pub const LANE_CLASS_WORDS: usize = 6;
/// Words in all.
pub const LANE_WORDS: usize = LANE_CLASSES + CLASSES * LANE_CLASS_WORDS;

/// One hub event as JavaScript reads it. `#[repr(C)]`, 80 bytes, read as 20 `u32` words (the
/// `EVENT_WORD_*` entries of [`CONSTANTS`]); fields a kind does not use are zero.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HubEvent {
    /// One of the `EVENT_*` kinds.
    pub kind: u32,
    /// Exec: the operation code. Completion and connected: the status (negative: a library
    /// failure, whose sentence [`last_error`] returns).
    pub code: i32,
    /// The client's id (completion, connected) or the server's (open, exec, close).
    pub owner: u64,
    /// Completion: JavaScript's token. Open, exec, close: the connection.
    pub token: u64,
    /// Completion: the ticket's handle. Exec: the command's handle. Connected: the client's.
    pub handle: u64,
    /// The input area.
    pub input: *mut u8,
    /// The output area (completion: cut to the output length).
    pub output: *mut u8,
    /// Exec: 1 when the areas lie in the connection's segment (at `input_offset` and
    /// `output_offset` from its first byte), 0 on the backup path.
    pub in_segment: u32,
    /// Exec: the input area's offset in the segment.
    pub input_offset: u32,
    /// Exec: the output area's offset in the segment.
    pub output_offset: u32,
    /// Zero.
    pub reserved: u32,
    /// Bytes of input.
    pub input_len: u32,
    /// Exec: output capacity. Completion: output length.
    pub output_len: u32,
    /// Open: the client's pid. Exec: the mode flags.
    pub pid: i32,
    /// Open: the client's uid.
    pub uid: u32,
}

const _: () = assert!(std::mem::size_of::<HubEvent>() == 80);

impl HubEvent {
    const EMPTY: HubEvent = HubEvent {
        kind: 0,
        code: 0,
        owner: 0,
        token: 0,
        handle: 0,
        input: std::ptr::null_mut(),
        output: std::ptr::null_mut(),
        in_segment: 0,
        input_offset: 0,
        output_offset: 0,
        reserved: 0,
        input_len: 0,
        output_len: 0,
        pid: 0,
        uid: 0,
    };
}

/// Takes the next event off the hub, if any. A completion's or a connect's library failure is
/// recorded as this thread's last failure (its code is the event's `code`).
pub fn hub_next() -> Result<Option<HubEvent>, Error> {
    guard(|| {
        match HUB.next() {
            None => Ok(None),
            // An event of kind 0 for JavaScript, which means nothing to it: its drain counts
            // it against its budget, so polls asked again and again still let the event loop
            // have its turns.
            Some(Event::PoolPoll(pool)) => {
                pool.hub_poll();
                Ok(Some(HubEvent::EMPTY))
            }
            Some(next) => event_out(next).map(Some),
        }
    })
}

/// An event as JavaScript reads it, its objects (tickets, commands, clients) put in their
/// tables.
fn event_out(next: Event) -> Result<HubEvent, Error> {
    let mut e = HubEvent::EMPTY;
    match next {
        Event::Completion {
            client,
            token,
            mut ticket,
        } => {
            e.kind = EVENT_COMPLETION;
            e.owner = client;
            e.token = token;
            let input = ticket.input();
            e.input = input.as_ptr();
            e.input_len = input.len() as u32;
            match ticket.answer() {
                Ok(a) => {
                    e.code = a.status;
                    let output = ticket.output();
                    e.output = output.as_ptr();
                    e.output_len = output.len() as u32;
                }
                Err(err) => e.code = fail(err),
            }
            e.handle = u64::from(TICKETS.insert(*ticket)?);
        }
        Event::Connected { client, result } => {
            e.kind = EVENT_CONNECTED;
            e.owner = client;
            let held = result.and_then(|c| hold_client(*c, client));
            match held {
                Ok(handle) => e.handle = u64::from(handle),
                Err(err) => e.code = fail(err),
            }
        }
        Event::Open { server, conn } => {
            e.kind = EVENT_OPEN;
            e.owner = server;
            e.token = conn.id;
            e.pid = conn.pid;
            e.uid = conn.uid;
        }
        Event::Exec {
            server,
            conn,
            mut command,
        } => {
            e.kind = EVENT_EXEC;
            e.owner = server;
            e.token = conn;
            e.code = command.code() as i32;
            e.pid = command.mode().flags() as i32;
            let base = command.segment().map(|seg| seg.mapping().0 as usize);
            let (input, output) = command.areas();
            e.input = input.as_ptr();
            e.input_len = input.len() as u32;
            e.output = output.as_ptr();
            e.output_len = output.len() as u32;
            if let Some(base) = base {
                // Segments are smaller than 4 GiB (`Geometry::layout`), so offsets fit.
                e.in_segment = 1;
                e.input_offset = (e.input as usize - base) as u32;
                e.output_offset = (e.output as usize - base) as u32;
            }
            e.handle = u64::from(COMMANDS.insert(HeldCommand {
                command,
                pool: None,
            })?);
        }
        Event::Lane {
            owner,
            conn,
            result,
        } => {
            e.kind = EVENT_LANE;
            e.owner = owner;
            e.token = conn;
            match result {
                // Release: pairs with the AcqRel swap in `ClientHandle::lend`'s notify:
                // answers that come after JavaScript took this event bring another.
                Ok(due) => due.store(false, Ordering::Release),
                Err(err) => e.code = fail(err),
            }
        }
        Event::Close { server, conn } => {
            e.kind = EVENT_CLOSE;
            e.owner = server;
            e.token = conn;
        }
        Event::Pool { server, note } => {
            e.kind = EVENT_POOL;
            e.owner = server;
            e.code = note as i32;
        }
        // Taken care of by `hub_next`; were one to come here, it polls all the same (the
        // event stays of kind 0).
        Event::PoolPoll(pool) => pool.hub_poll(),
    }
    Ok(e)
}

/// Makes the calling thread the one JavaScript thread that drains the hub; refuses while
/// another thread has clients or servers open. Returns how many doorbells were installed so
/// far (below 2^31; see [`hub::Hub::bells`]).
pub fn hub_claim() -> Result<i32, Error> {
    HUB.claim().map_err(|_| {
        Error::new(
            Status::InvalidArgument,
            "shmcall serves one JavaScript thread per process at a time: another thread (a Worker?) has clients or servers open",
        )
    })?;
    Ok(hub_bells())
}

/// How many doorbells were installed so far, below 2^31 (see [`hub::Hub::bells`]).
pub fn hub_bells() -> i32 {
    (HUB.bells() & 0x7fff_ffff) as i32
}

// ---------------------------------------------------------------------------------------------
// The numbers both sides agree on

/// Words of Node's scratch: the hub event (20 words), then the results of the other calls.
pub const SCRATCH_WORDS: usize = 32;
/// Node's scratch: `clientBeginAt` writes the ticket, then the input and output offsets and
/// the slot, from this word; `serverServe` the server's handle.
pub const SCRATCH_BEGUN: usize = 20;
/// Node's scratch: `clientCall` writes the server's status, then the output length, here.
pub const SCRATCH_ANSWER: usize = 24;

/// Every number JavaScript must agree on with the library, by name: `src/native.ts` and
/// `node/addon.ts` hold their own copies for speed, and a test compares them with these
/// (through `shmcall_constant` and Node's `constant`).
pub const CONSTANTS: &[(&str, i64)] = &[
    ("EVENT_COMPLETION", EVENT_COMPLETION as i64),
    ("EVENT_OPEN", EVENT_OPEN as i64),
    ("EVENT_EXEC", EVENT_EXEC as i64),
    ("EVENT_CLOSE", EVENT_CLOSE as i64),
    ("EVENT_CONNECTED", EVENT_CONNECTED as i64),
    ("EVENT_LANE", EVENT_LANE as i64),
    ("EVENT_POOL", EVENT_POOL as i64),
    ("SERVE_ASKS_OPEN", SERVE_ASKS_OPEN as i64),
    ("SERVE_LANES", SERVE_LANES as i64),
    ("SERVE_INLINE", SERVE_INLINE as i64),
    ("SERVE_POOL", SERVE_POOL as i64),
    ("POOL_POKE", PoolNote::Poke as i64),
    ("POOL_DRAINED", PoolNote::Drained as i64),
    ("LANE_CS_RING", LANE_CS_RING as i64),
    ("LANE_SC_RING", LANE_SC_RING as i64),
    ("LANE_RING_CAPACITY", LANE_RING_CAPACITY as i64),
    ("LANE_CS_POSITION", LANE_CS_POSITION as i64),
    ("LANE_SC_POSITION", LANE_SC_POSITION as i64),
    ("LANE_CLASSES", LANE_CLASSES as i64),
    ("LANE_CLASS_WORDS", LANE_CLASS_WORDS as i64),
    ("LANE_WORDS", LANE_WORDS as i64),
    ("LANE_COUNT_COMMANDS", stats::lane::COMMANDS as i64),
    ("LANE_COUNT_FINISHED", stats::lane::FINISHED as i64),
    ("LANE_COUNT_BYTES_IN", stats::lane::BYTES_IN as i64),
    ("LANE_COUNT_BYTES_OUT", stats::lane::BYTES_OUT as i64),
    ("LANE_COUNT_FAILURES", stats::lane::FAILURES as i64),
    ("LANE_COUNT_SAMPLES", stats::lane::SAMPLES as i64),
    ("LANE_COUNT_FIRST_SAMPLE", stats::lane::FIRST_SAMPLE as i64),
    ("LANE_COUNT_MAX_SAMPLES", stats::lane::MAX_SAMPLES as i64),
    ("LANE_COUNT_LEN", stats::lane::LEN as i64),
    ("SLOT_HEADER_SIZE", HEADER_SIZE as i64),
    ("SLOT_CODE", slot::field::CODE as i64),
    ("SLOT_FLAGS", slot::field::FLAGS as i64),
    ("SLOT_INPUT_LEN", slot::field::INPUT_LEN as i64),
    ("SLOT_OUTPUT_CAP", slot::field::OUTPUT_CAP as i64),
    ("SLOT_GENERATION", slot::field::GENERATION as i64),
    ("SLOT_STATUS", slot::field::STATUS as i64),
    ("SLOT_OUTPUT_LEN", slot::field::OUTPUT_LEN as i64),
    (
        "SLOT_REPLY_GENERATION",
        slot::field::REPLY_GENERATION as i64,
    ),
    ("SLOT_CLAIM", slot::field::CLAIM as i64),
    ("CLAIM_PENDING", slot::CLAIM_PENDING as i64),
    ("CLAIM_CANCELLED", slot::CLAIM_CANCELLED as i64),
    ("CLAIM_TAKEN", slot::CLAIM_TAKEN as i64),
    ("RING_HEADER_SIZE", RingHeader::SIZE as i64),
    ("RING_READ", RingHeader::READ as i64),
    ("RING_FLAG", RingHeader::FLAG as i64),
    ("RING_AWAKE", ring::AWAKE as i64),
    ("RING_WATCHED", ring::WATCHED as i64),
    // The 32-bit words of a `HubEvent`.
    ("EVENT_WORDS", (std::mem::size_of::<HubEvent>() / 4) as i64),
    (
        "EVENT_WORD_KIND",
        (std::mem::offset_of!(HubEvent, kind) / 4) as i64,
    ),
    (
        "EVENT_WORD_CODE",
        (std::mem::offset_of!(HubEvent, code) / 4) as i64,
    ),
    (
        "EVENT_WORD_OWNER",
        (std::mem::offset_of!(HubEvent, owner) / 4) as i64,
    ),
    (
        "EVENT_WORD_TOKEN",
        (std::mem::offset_of!(HubEvent, token) / 4) as i64,
    ),
    (
        "EVENT_WORD_HANDLE",
        (std::mem::offset_of!(HubEvent, handle) / 4) as i64,
    ),
    (
        "EVENT_WORD_IN_SEGMENT",
        (std::mem::offset_of!(HubEvent, in_segment) / 4) as i64,
    ),
    (
        "EVENT_WORD_INPUT_OFFSET",
        (std::mem::offset_of!(HubEvent, input_offset) / 4) as i64,
    ),
    (
        "EVENT_WORD_OUTPUT_OFFSET",
        (std::mem::offset_of!(HubEvent, output_offset) / 4) as i64,
    ),
    (
        "EVENT_WORD_INPUT_LEN",
        (std::mem::offset_of!(HubEvent, input_len) / 4) as i64,
    ),
    (
        "EVENT_WORD_OUTPUT_LEN",
        (std::mem::offset_of!(HubEvent, output_len) / 4) as i64,
    ),
    (
        "EVENT_WORD_PID",
        (std::mem::offset_of!(HubEvent, pid) / 4) as i64,
    ),
    (
        "EVENT_WORD_UID",
        (std::mem::offset_of!(HubEvent, uid) / 4) as i64,
    ),
    ("SCRATCH_WORDS", SCRATCH_WORDS as i64),
    ("SCRATCH_BEGUN", SCRATCH_BEGUN as i64),
    ("SCRATCH_ANSWER", SCRATCH_ANSWER as i64),
    ("IDLE_EVENTS", 0),
    ("IDLE_IDLE", 1),
    ("IDLE_SPENT", 2),
    ("FLAG_INLINE", FLAG_INLINE as i64),
    ("FLAG_WORKER", FLAG_WORKER as i64),
    ("FLAG_STATS", FLAG_STATS as i64),
    ("FLAG_QUEUE", slot::FLAG_QUEUE as i64),
    ("QUEUE_POST", queue::OP_POST as i64),
    ("QUEUE_LIST", queue::OP_LIST as i64),
    ("QUEUE_BELL", queue::OP_BELL as i64),
    ("QUEUE_REGISTER", queue::OP_REGISTER as i64),
    ("QUEUE_UNREGISTER", queue::OP_UNREGISTER as i64),
    ("QUEUE_POSTS", queue::OP_POSTS as i64),
    (
        "QUEUE_POSTS_RECORD_HEADER",
        queue::POSTS_RECORD_HEADER as i64,
    ),
    ("QUEUE_POSTS_SINCE_MINOR", queue::POSTS_SINCE_MINOR as i64),
    ("QUEUE_MAX_POSTS_INPUT", queue::MAX_POSTS_INPUT as i64),
    ("QUEUE_EVENTS_LISTED", queue::EVENTS_LISTED as i64),
    ("QUEUE_EVENTS_ALL", queue::EVENTS_ALL as i64),
    ("QUEUE_MAX_DATA", queue::MAX_DATA as i64),
    ("QUEUE_MAX_CAPACITY", queue::MAX_CAPACITY as i64),
    ("QUEUE_STATS_LEN", QUEUE_STATS_LEN as i64),
    ("QUEUE_LIST_MAGIC", queue::list::MAGIC as i64),
    ("QUEUE_LIST_CAPACITY_AT", queue::list::CAPACITY_AT as i64),
    ("QUEUE_LIST_FLAG_AT", queue::list::FLAG_AT as i64),
    ("QUEUE_LIST_WRITE_AT", queue::list::WRITE_AT as i64),
    ("QUEUE_LIST_DROPPED_AT", queue::list::DROPPED_AT as i64),
    ("QUEUE_LIST_READ_AT", queue::list::READ_AT as i64),
    ("QUEUE_LIST_ENTRIES_AT", queue::list::ENTRIES_AT as i64),
    ("QUEUE_LIST_ENTRY_HEADER", queue::list::ENTRY_HEADER as i64),
    ("QUEUE_LIST_ENTRY_SIZE", queue::list::ENTRY_SIZE as i64),
    ("QUEUE_LIST_SLEEPING", queue::list::SLEEPING as i64),
    ("QUEUE_LIST_AWAKE", queue::list::AWAKE as i64),
    ("NOWHERE", u32::MAX as i64),
    ("MAX_AREA", MAX_AREA as i64),
    ("MAX_SPIN_NS", MAX_SPIN_NS as i64),
    ("STATS_COMMANDS", stats::word::COMMANDS as i64),
    ("STATS_FINISHED", stats::word::FINISHED as i64),
    ("STATS_BYTES_IN", stats::word::BYTES_IN as i64),
    ("STATS_BYTES_OUT", stats::word::BYTES_OUT as i64),
    ("STATS_BACKUP", stats::word::BACKUP as i64),
    ("STATS_TIMED", stats::word::TIMED as i64),
    ("STATS_P50", stats::word::P50 as i64),
    ("STATS_P90", stats::word::P90 as i64),
    ("STATS_P99", stats::word::P99 as i64),
    ("STATS_MAX", stats::word::MAX as i64),
    ("STATS_CONNECTIONS", stats::word::CONNECTIONS as i64),
    ("STATS_WORKERS", stats::word::WORKERS as i64),
    ("STATS_QUIESCING", stats::word::QUIESCING as i64),
    ("STATS_FAILURES", stats::word::FAILURES as i64),
    ("STATS_LEN", stats::word::LEN as i64),
];

/// The value of the constant `name` (see [`CONSTANTS`]), if there is one.
pub fn constant(name: &str) -> Option<i64> {
    CONSTANTS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_codes_of_the_table_are_the_hubs() {
        use crate::hub::Idle;
        assert_eq!(
            constant("IDLE_EVENTS"),
            Some(i64::from(Idle::Events.code()))
        );
        assert_eq!(constant("IDLE_IDLE"), Some(i64::from(Idle::Idle.code())));
        assert_eq!(constant("IDLE_SPENT"), Some(i64::from(Idle::Spent.code())));
        assert_eq!(constant("no such constant"), None);
    }

    #[test]
    fn every_constant_has_one_name() {
        let mut names: Vec<_> = CONSTANTS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CONSTANTS.len());
    }
}
