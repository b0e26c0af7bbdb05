//! What JavaScript can do with the core, in safe Rust: the operations both foreign surfaces
//! wrap — the C surface of [`crate::ffi`] (Deno's FFI) and the Node-API surface of
//! [`crate::napi`] (Node.js). Each surface only converts arguments and results; the rules live
//! here once, so a Deno peer and a Node peer behave the same.
//!
//! - Clients and servers are [`ClientHandle`]s and [`ServerHandle`]s, whose `id` names them in
//!   hub events.
//! - Tickets and commands are named by `u32` handles ([`crate::handles`]): a stale or forged
//!   one is refused, never dereferenced.
//! - Events reach JavaScript through the process-wide [`HUB`]: the completions of asynchronous
//!   commands and every open, exec and close of a server, one [`HubEvent`] at a time.
//! - A failure is an [`Error`]; a surface records it with [`fail`], which keeps its sentence for
//!   [`last_error`] on this thread and returns its status code.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::client::{Answer, Client, ConnectOptions, Ticket};
use crate::handles::Handles;
use crate::hub::{Event, HUB};
use crate::segment::Segment;
use crate::server::{Command, ConnInfo, Handler, ServeOptions, Server};
use crate::slot::{Area, Mode};
use crate::stats;
use crate::status::{Error, Status};

/// Tickets given out by `begin` and by completion events, by handle.
static TICKETS: Handles<Ticket> = Handles::new("ticket");
/// Commands given out by exec events, by handle.
static COMMANDS: Handles<Box<Command>> = Handles::new("command");

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
            format!("mode {m} is not 0, 1 or 2"),
        )
    })
}

/// The endpoint arguments `connect` and `serve` share: the socket directory (empty: the
/// default) and the spin budget (`None`: the default).
fn endpoint_dir(dir: &str) -> Option<PathBuf> {
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The socket directory `dir` names (empty: the default one), as the core resolves it for
/// clients and servers: created if missing, and checked to be the owner's only.
pub fn socket_dir(dir: &str) -> Result<String, Error> {
    let access = crate::endpoint::Access {
        shared: false,
        owners: &[],
    };
    let path = crate::endpoint::socket_dir(endpoint_dir(dir).as_deref(), access)?;
    path.into_os_string().into_string().map_err(|p| {
        Error::new(
            Status::InvalidArgument,
            format!("the socket directory {} is not UTF-8", p.to_string_lossy()),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Client

/// A client; `id` is JavaScript's name for it in hub events.
#[derive(Debug)]
pub struct ClientHandle {
    client: Client,
    id: u64,
}

impl ClientHandle {
    /// Connects to `ic_id` (`dir` empty: the default socket directory; `spin` `None`: the
    /// default budget). JavaScript pops the client's answers itself while it waits for
    /// events, so the client is also registered as one of the hub's pollers.
    pub fn connect(
        ic_id: &str,
        dir: &str,
        spin: Option<Duration>,
        id: u64,
    ) -> Result<ClientHandle, Error> {
        guard(|| {
            let defaults = ConnectOptions::default();
            let options = ConnectOptions {
                socket_dir: endpoint_dir(dir),
                spin: spin.unwrap_or(defaults.spin),
                ..defaults
            };
            let client = Client::connect(ic_id, &options)?;
            HUB.add_poller(id, client.poller());
            Ok(ClientHandle { client, id })
        })
    }

    /// The client's segment (areas of slot tickets lie inside it).
    pub fn segment(&self) -> Arc<Segment> {
        self.client.segment()
    }

    /// Takes a slot (or backup buffers) for a command; returns the ticket's handle and where
    /// it went ([`Begun`]). `mode_flags`: 0 the server's default, 1 inline, 2 worker.
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

    /// Sends the command of `ticket` and waits on this thread for the server's answer.
    pub fn call(&self, ticket: u32) -> Result<Answer, Error> {
        guard(|| {
            // Out of the table while the call waits, so that the table's lock is not held.
            let mut t = TICKETS.lend(ticket)?;
            let answered = self.client.call(&mut t);
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

    /// This client's counters, at the [`stats::word`] positions.
    pub fn stats(&self) -> [f64; stats::word::LEN] {
        let mut out = [0.0; stats::word::LEN];
        self.client.stats().snapshot(0, &mut out);
        out
    }

    /// Closes the client: outstanding commands fail with CLOSED (their completions still
    /// reach the hub). Idempotent.
    pub fn close(&self) {
        HUB.remove_poller(self.id);
        self.client.close();
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

// ---------------------------------------------------------------------------------------------
// Server

/// Answers to opens, by connection, waiting for their `open` call to take them.
#[derive(Debug, Default)]
struct OpenedState {
    answers: Vec<(u64, Result<(), Error>)>,
    closing: bool,
}

#[derive(Debug, Default)]
struct Opened {
    state: Mutex<OpenedState>,
    changed: Condvar,
}

/// Hands every handler call to the hub (so to JavaScript), and makes `open` wait for its
/// answer so that the client is connected only after `open` ran.
struct Queueing {
    id: u64,
    opened: Arc<Opened>,
}

impl Handler for Queueing {
    type Context = ();

    fn open(&self, conn: &ConnInfo) -> Result<(), Error> {
        HUB.push(Event::Open {
            server: self.id,
            conn: *conn,
        });
        let mut q = lock(&self.opened.state);
        loop {
            if let Some(i) = q.answers.iter().position(|(id, _)| *id == conn.id) {
                return q.answers.swap_remove(i).1;
            }
            if q.closing {
                // Gone for this client, as a server that exited is.
                return Err(Error::new(
                    Status::PeerTerminated,
                    "the server closed while this client connected",
                ));
            }
            q = self
                .opened
                .changed
                .wait(q)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn exec(&self, command: Command, conn: &ConnInfo, _: &()) {
        HUB.push(Event::Exec {
            server: self.id,
            conn: conn.id,
            command: Box::new(command),
        });
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

/// A server; `id` is JavaScript's name for it in hub events.
#[derive(Debug)]
pub struct ServerHandle {
    id: u64,
    server: Mutex<Server>,
    opened: Arc<Opened>,
}

impl ServerHandle {
    /// Serves `ic_id` (`dir` and `spin` as for [`ClientHandle::connect`]); its opens, commands
    /// and closes reach the hub, named by `id`.
    pub fn serve(
        ic_id: &str,
        dir: &str,
        spin: Option<Duration>,
        id: u64,
    ) -> Result<ServerHandle, Error> {
        guard(|| {
            let opened = Arc::new(Opened::default());
            let defaults = ServeOptions::default();
            let options = ServeOptions {
                socket_dir: endpoint_dir(dir),
                spin: spin.unwrap_or(defaults.spin),
                ..defaults
            };
            let handler = Queueing {
                id,
                opened: opened.clone(),
            };
            let server = Server::serve(ic_id, handler, options)?;
            // JavaScript pops this server's rings itself while it waits for events.
            HUB.add_poller(id, server.poller());
            Ok(ServerHandle {
                id,
                server: Mutex::new(server),
                opened,
            })
        })
    }

    /// Answers an open: `status` 0 accepts the client; a negative library status refuses it
    /// with that status.
    pub fn opened(&self, connection: u64, status: i32) {
        let answer = match status {
            0 => Ok(()),
            s => Err(Error::new(
                Status::from_code(s).unwrap_or(Status::HandlerFailed),
                "the server's open handler refused the connection",
            )),
        };
        lock(&self.opened.state).answers.push((connection, answer));
        self.opened.changed.notify_all();
    }

    /// Records the pool's size and whether the server quiesces, for its counters' readers.
    pub fn note(&self, workers: u32, quiescing: bool) {
        lock(&self.server).stats().note(workers, quiescing);
    }

    /// This server's counters, at the [`stats::word`] positions.
    pub fn stats(&self) -> [f64; stats::word::LEN] {
        let mut out = [0.0; stats::word::LEN];
        let server = lock(&self.server);
        server.stats().snapshot(server.connections(), &mut out);
        out
    }

    /// Stops the server: no new clients; connections end, their commands still in the hub are
    /// answered when JavaScript finishes them. Idempotent.
    pub fn close(&self) {
        lock(&self.opened.state).closing = true;
        self.opened.changed.notify_all();
        HUB.remove_poller(self.id);
        lock(&self.server).close();
    }
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
        let mut c = COMMANDS.remove(command)?;
        if let Some(src) = output {
            let mut area = c.output();
            let n = (length as usize).min(src.len()).min(area.len());
            area.write(&src[..n]);
        }
        c.finish(status, length as usize);
        Ok(())
    })
}

/// Takes a command to run it; returns false, and frees its handle, when its client withdrew it
/// first (it is then answered `CANCELLED` and must not run).
pub fn command_take(command: u32) -> Result<bool, Error> {
    guard(|| {
        if COMMANDS.with(command, |c| c.take())? {
            return Ok(true);
        }
        COMMANDS.remove(command)?;
        Ok(false)
    })
}

/// The segment of an exec event's command (for a view JavaScript keeps per connection);
/// `None` for backup-path commands.
pub fn command_segment(command: u32) -> Result<Option<Arc<Segment>>, Error> {
    COMMANDS.with(command, |c| c.segment())
}

/// Copies a command's input into the start of `dst` (the backup path's way out); returns the
/// bytes copied: the input's length, or `dst`'s when shorter.
pub fn command_read_input(command: u32, dst: &mut [u8]) -> Result<usize, Error> {
    COMMANDS.with(command, |c| read_into(&c.input(), dst))
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

/// One hub event as JavaScript reads it. `#[repr(C)]`, 80 bytes (offsets in
/// `src/native.ts`); fields a kind does not use are zero.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HubEvent {
    /// One of the `EVENT_*` kinds.
    pub kind: u32,
    /// Exec: the operation code. Completion: the status (negative: a library failure, whose
    /// sentence [`last_error`] returns).
    pub code: i32,
    /// The client's id (completion) or the server's (open, exec, close).
    pub owner: u64,
    /// Completion: JavaScript's token. Open, exec, close: the connection.
    pub token: u64,
    /// Completion: the ticket's handle. Exec: the command's handle.
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

/// Takes the next event off the hub, if any. A completion's library failure is recorded as
/// this thread's last failure (its code is the event's `code`).
pub fn hub_next() -> Result<Option<HubEvent>, Error> {
    guard(|| {
        let Some(next) = HUB.next() else {
            return Ok(None);
        };
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
                e.handle = u64::from(COMMANDS.insert(command)?);
            }
            Event::Close { server, conn } => {
                e.kind = EVENT_CLOSE;
                e.owner = server;
                e.token = conn;
            }
        }
        Ok(Some(e))
    })
}

/// Makes the calling thread the one JavaScript thread that drains the hub; refuses while
/// another thread has clients or servers open.
pub fn hub_claim() -> Result<(), Error> {
    HUB.claim().map_err(|_| {
        Error::new(
            Status::InvalidArgument,
            "shmcall serves one JavaScript thread per process at a time: another thread (a Worker?) has clients or servers open",
        )
    })
}
