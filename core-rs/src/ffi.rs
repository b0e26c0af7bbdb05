//! The C surface that Deno's FFI binds (`ffi/symbols.ts` is its one symbol table).
//!
//! Conventions (after iceoryx2-ffi): one prefix, `shmcall_`; opaque handles created and freed
//! only here; every function returns an `i32`: [`OK`], [`EMPTY`] ("nothing ready yet"), or a
//! negative [`Status`] code, with the sentence of the last failure on this thread available
//! from [`shmcall_last_error`]. Null handles are checked first and answer
//! [`Status::InvalidArgument`]. Functions never unwind into the caller: a panic becomes
//! [`Status::HandlerFailed`].
//!
//! Events reach JavaScript through the process-wide [`HUB`]: the completions of asynchronous
//! commands and every open, exec and close of a server. JavaScript takes them one at a time
//! with [`shmcall_hub_next`] into a [`HubEvent`], and tells the hub when it goes idle.
//!
//! Tickets and commands are named by `u32` handles ([`crate::handles`]): a stale or forged one
//! is refused, never dereferenced. Areas are handed out as raw pointers into a segment (or
//! into a backup buffer owned by the ticket or command, valid until it is freed or finished). A segment stays mapped while any
//! ticket, command or [`SegmentRef`] of it exists: JavaScript holds a `SegmentRef` for as long
//! as a view over the segment is reachable.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::client::{Client, ConnectOptions, Ticket};
use crate::handles::Handles;
use crate::hub::{Event, HUB, Idle};
use crate::segment::{PROTOCOL_MAJOR, PROTOCOL_MINOR, Segment};
use crate::server::{Command, ConnInfo, Handler, ServeOptions, Server};
use crate::slot::Mode;
use crate::status::{Error, Status};

/// Success.
pub const OK: i32 = 0;
/// Nothing is ready yet (a poll found no completion or event).
pub const EMPTY: i32 = 1;

/// Tickets given out by `begin` and by completion events, by handle.
static TICKETS: Handles<Ticket> = Handles::new("ticket");
/// Commands given out by exec events, by handle.
static COMMANDS: Handles<Box<Command>> = Handles::new("command");

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fail(e: Error) -> i32 {
    LAST_ERROR.with(|l| *l.borrow_mut() = e.to_string());
    e.status().code()
}

fn invalid(what: &str) -> i32 {
    fail(Error::new(Status::InvalidArgument, what.to_string()))
}

/// Runs `f`, turning a panic into a status so nothing unwinds across the C boundary.
fn guard(f: impl FnOnce() -> i32) -> i32 {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        fail(Error::new(
            Status::HandlerFailed,
            "shmcall panicked inside a C call",
        ))
    })
}

/// # Safety
/// `ptr` is null with `len` 0, or valid for reads of `len` bytes.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the caller promised `ptr` is valid for `len` bytes.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// # Safety
/// As for [`bytes`].
unsafe fn text(ptr: *const u8, len: usize, what: &str) -> Result<String, Error> {
    // SAFETY: forwarded contract.
    let b = unsafe { bytes(ptr, len) };
    String::from_utf8(b.to_vec())
        .map_err(|_| Error::new(Status::InvalidArgument, format!("{what} is not UTF-8")))
}

/// # Safety
/// `p` is null or valid for a write of `T`.
unsafe fn put<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: non-null, and the caller promised it is valid for a write.
        unsafe { p.write(v) }
    }
}

/// The arguments `connect` and `serve` share: the ic id, the socket directory (empty: the
/// default) and the spin budget (`u64::MAX`: the default).
///
/// # Safety
/// As for [`bytes`], for both strings.
unsafe fn endpoint_args(
    ic_id: *const u8,
    ic_id_len: usize,
    dir: *const u8,
    dir_len: usize,
    spin_ns: u64,
) -> Result<(String, Option<PathBuf>, Option<Duration>), Error> {
    // SAFETY: forwarded contract.
    let (id, dir) = unsafe { (text(ic_id, ic_id_len, "ic id")?, text(dir, dir_len, "dir")?) };
    let dir = (!dir.is_empty()).then(|| PathBuf::from(dir));
    let spin = (spin_ns != u64::MAX).then(|| Duration::from_nanos(spin_ns));
    Ok((id, dir, spin))
}

fn mode(m: u32) -> Result<Mode, Error> {
    Mode::from_flags(m).ok_or_else(|| {
        Error::new(
            Status::InvalidArgument,
            format!("mode {m} is not 0, 1 or 2"),
        )
    })
}

/// Copies the last failure's sentence on this thread into `buf` (UTF-8, not terminated) and
/// returns its full length in bytes, which may exceed `cap`.
///
/// # Safety
/// `buf` is null with `cap` 0, or valid for writes of `cap` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_last_error(buf: *mut u8, cap: usize) -> i32 {
    LAST_ERROR.with(|l| {
        let l = l.borrow();
        let n = l.len().min(cap);
        if n > 0 {
            // SAFETY: `buf` is valid for `cap >= n` bytes, and `l` is a distinct Rust string.
            unsafe { std::ptr::copy_nonoverlapping(l.as_ptr(), buf, n) };
        }
        l.len().min(i32::MAX as usize) as i32
    })
}

/// The protocol version this library speaks, as `major << 16 | minor`.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_protocol_version() -> i32 {
    (i32::from(PROTOCOL_MAJOR) << 16) | i32::from(PROTOCOL_MINOR)
}

/// Copies the name of library status `code` (e.g. `PEER_TERMINATED`) into `buf` and returns
/// its length, or returns INVALID_ARGUMENT when `code` is no library status.
///
/// # Safety
/// `buf` is null with `cap` 0, or valid for writes of `cap` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_status_name(code: i32, buf: *mut u8, cap: usize) -> i32 {
    let Some(s) = Status::from_code(code) else {
        return invalid(&format!("{code} is not a library status"));
    };
    let name = s.name().as_bytes();
    let n = name.len().min(cap);
    if n > 0 {
        // SAFETY: `buf` is valid for `cap >= n` bytes; `name` is static and distinct.
        unsafe { std::ptr::copy_nonoverlapping(name.as_ptr(), buf, n) };
    }
    name.len() as i32
}

// ---------------------------------------------------------------------------------------------
// Segments

/// Keeps a segment mapped; see [`shmcall_segment_release`].
#[derive(Debug)]
pub struct SegmentRef {
    _held: Arc<Segment>,
}

fn segment_ref(seg: Arc<Segment>, base: *mut *mut u8, len: *mut usize) -> *mut SegmentRef {
    let (b, l) = seg.mapping();
    // SAFETY: callers pass out pointers that are null or valid for writes.
    unsafe {
        put(base, b);
        put(len, l);
    }
    Box::into_raw(Box::new(SegmentRef { _held: seg }))
}

/// Lets go of a segment: it is unmapped once nothing else holds it.
///
/// # Safety
/// `segment` is null or a live reference, not used again afterwards; no view over the
/// segment is used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_segment_release(segment: *mut SegmentRef) -> i32 {
    if segment.is_null() {
        return invalid("segment is null");
    }
    // SAFETY: the reference came from `Box::into_raw` and the caller gives it up.
    drop(unsafe { Box::from_raw(segment) });
    OK
}

// ---------------------------------------------------------------------------------------------
// Client

/// A client handle; `id` is JavaScript's name for it in hub events.
#[derive(Debug)]
pub struct ClientHandle {
    client: Client,
    id: u64,
}

/// Connects to `ic_id`. `dir` (may be empty) overrides the socket directory; `spin_ns` is the
/// spin budget before sleeping (`u64::MAX` keeps the default); `id` names the client in the
/// completions it delivers to the hub. On failure the sentence is also copied into `error`
/// (up to `error_cap` bytes, NUL-padded), because JavaScript calls this off its own thread
/// (a server of the same process must be able to run `open` meanwhile), where
/// [`shmcall_last_error`] cannot see it.
///
/// # Safety
/// `ic_id` and `dir` are valid for their lengths (or null with length 0); `out` is valid for a
/// write of a pointer; `error` is null or valid for writes of `error_cap` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_connect(
    ic_id: *const u8,
    ic_id_len: usize,
    dir: *const u8,
    dir_len: usize,
    spin_ns: u64,
    id: u64,
    out: *mut *mut ClientHandle,
    error: *mut u8,
    error_cap: usize,
) -> i32 {
    if out.is_null() {
        return invalid("out is null");
    }
    let rc = guard(|| {
        // SAFETY: forwarded contract.
        let (ic, socket_dir, spin) =
            match unsafe { endpoint_args(ic_id, ic_id_len, dir, dir_len, spin_ns) } {
                Ok(args) => args,
                Err(e) => return fail(e),
            };
        let defaults = ConnectOptions::default();
        let options = ConnectOptions {
            socket_dir,
            spin: spin.unwrap_or(defaults.spin),
            ..defaults
        };
        match Client::connect(&ic, &options) {
            Ok(client) => {
                // JavaScript pops this client's answers itself while it waits for events.
                HUB.add_poller(id, client.poller());
                // SAFETY: `out` is non-null and valid for a write.
                unsafe { put(out, Box::into_raw(Box::new(ClientHandle { client, id }))) };
                OK
            }
            Err(e) => fail(e),
        }
    });
    if rc < 0 && !error.is_null() {
        // SAFETY: the caller promised `error` is valid for `error_cap` bytes.
        unsafe { shmcall_last_error(error, error_cap) };
    }
    rc
}

/// A reference that keeps the client's segment mapped, with its first byte and length. Areas
/// of slot tickets lie inside it.
///
/// # Safety
/// `client` is a live handle; the out pointers are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_segment(
    client: *mut ClientHandle,
    base: *mut *mut u8,
    len: *mut usize,
    out: *mut *mut SegmentRef,
) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { client.as_ref() }) else {
        return invalid("client is null");
    };
    let r = segment_ref(h.client.segment(), base, len);
    // SAFETY: `out` is null or valid for a write.
    unsafe { put(out, r) };
    OK
}

/// Closes the client: outstanding commands fail with CLOSED (their completions still reach
/// the hub). Idempotent; the handle stays valid until [`shmcall_client_free`].
///
/// # Safety
/// `client` is null or a handle from [`shmcall_client_connect`] not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_close(client: *mut ClientHandle) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { client.as_ref() }) else {
        return invalid("client is null");
    };
    guard(|| {
        h.client.close();
        OK
    })
}

/// Closes and frees the client. Tickets and segment references still held stay usable.
///
/// # Safety
/// `client` is null or a live handle, not used again afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_free(client: *mut ClientHandle) -> i32 {
    if client.is_null() {
        return invalid("client is null");
    }
    // SAFETY: the handle came from `Box::into_raw` and the caller gives it up.
    let h = unsafe { Box::from_raw(client) };
    guard(move || {
        HUB.remove_poller(h.id);
        h.client.close();
        OK
    })
}

/// Takes a slot (or backup buffers) for a command: `out` receives the ticket's handle, `input`
/// and `output` its areas (`input_len` and `output_cap` bytes). `mode`: 0 server default,
/// 1 inline, 2 worker.
///
/// # Safety
/// `client` is a live handle; the out pointers are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_begin(
    client: *mut ClientHandle,
    code: u32,
    input_len: u32,
    output_cap: u32,
    mode_flags: u32,
    out: *mut u32,
    input: *mut *mut u8,
    output: *mut *mut u8,
) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { client.as_ref() }) else {
        return invalid("client is null");
    };
    if out.is_null() {
        return invalid("out is null");
    }
    guard(|| {
        let begun = begin_held(h, code, input_len, output_cap, mode_flags, |t| {
            (t.input().as_ptr(), t.output().as_ptr())
        });
        match begun {
            Ok((handle, (i, o))) => {
                // SAFETY: out pointers are null or valid for writes (caller's contract).
                unsafe {
                    put(input, i);
                    put(output, o);
                    put(out, handle);
                }
                OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Begins a command and holds its ticket in [`TICKETS`]: returns the handle, and what `areas`
/// makes of the ticket's areas before it goes into the table.
fn begin_held<A>(
    h: &ClientHandle,
    code: u32,
    input_len: u32,
    output_cap: u32,
    mode_flags: u32,
    areas: impl FnOnce(&mut Ticket) -> A,
) -> Result<(u32, A), Error> {
    let mut t = h.client.begin(
        code,
        input_len as usize,
        output_cap as usize,
        mode(mode_flags)?,
    )?;
    let a = areas(&mut t);
    Ok((TICKETS.insert(t)?, a))
}

/// [`shmcall_client_begin`] for callers that keep one view of the whole segment (JavaScript):
/// writes the areas' offsets in the segment to `offsets[0]` (input) and `offsets[1]`
/// (output), or `u32::MAX` to both on the backup path, whose buffers
/// [`shmcall_ticket_areas`] returns.
///
/// # Safety
/// `client` is a live handle; `out` is valid for a write; `offsets` for writes of two `u32`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_begin_at(
    client: *mut ClientHandle,
    code: u32,
    input_len: u32,
    output_cap: u32,
    mode_flags: u32,
    out: *mut u32,
    offsets: *mut u32,
) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { client.as_ref() }) else {
        return invalid("client is null");
    };
    if out.is_null() || offsets.is_null() {
        return invalid("out or offsets is null");
    }
    guard(|| {
        let begun = begin_held(h, code, input_len, output_cap, mode_flags, |t| {
            if t.is_backup() {
                return (u32::MAX, u32::MAX);
            }
            let base = h.client.segment_mapping().0 as usize;
            // Segments are smaller than 4 GiB (`Geometry::layout`), so offsets fit.
            (
                (t.input().as_ptr() as usize - base) as u32,
                (t.output().as_ptr() as usize - base) as u32,
            )
        });
        match begun {
            Ok((handle, (input, output))) => {
                // SAFETY: `out` is valid for a write and `offsets` for two (caller's contract).
                unsafe {
                    offsets.write(input);
                    offsets.add(1).write(output);
                    out.write(handle);
                }
                OK
            }
            Err(e) => fail(e),
        }
    })
}

/// The areas of a ticket: its input (`input_len` bytes) and output (`output_cap` bytes).
///
/// # Safety
/// The out pointers are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_ticket_areas(
    ticket: u32,
    input: *mut *mut u8,
    output: *mut *mut u8,
) -> i32 {
    match TICKETS.with(ticket, |t| (t.input().as_ptr(), t.output().as_ptr())) {
        Ok((i, o)) => {
            // SAFETY: out pointers are null or valid for writes (caller's contract).
            unsafe {
                put(input, i);
                put(output, o);
            }
            OK
        }
        Err(e) => fail(e),
    }
}

/// Sends the command and waits on this thread for the answer: `status` and `length` are the
/// server's; a library failure is the return value.
///
/// # Safety
/// `client` is a live handle; the out pointers are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_call(
    client: *mut ClientHandle,
    ticket: u32,
    status: *mut i32,
    length: *mut u32,
) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { client.as_ref() }) else {
        return invalid("client is null");
    };
    guard(|| {
        // Out of the table while the call waits, so that the table's lock is not held.
        let mut t = match TICKETS.lend(ticket) {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        let answered = h.client.call(&mut t);
        TICKETS.give_back(ticket, t);
        match answered {
            Ok(a) => {
                // SAFETY: out pointers are null or valid for writes.
                unsafe {
                    put(status, a.status);
                    put(length, a.length);
                }
                OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Sends the command and returns at once. The finished ticket reaches the hub as a
/// completion event with `token` and a new handle. The ticket's handle is freed here.
///
/// # Safety
/// `client` is a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_submit(
    client: *mut ClientHandle,
    ticket: u32,
    token: u64,
) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { client.as_ref() }) else {
        return invalid("client is null");
    };
    let client_id = h.id;
    guard(move || {
        let t = match TICKETS.remove(ticket) {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        let r = h.client.call_async(t, move |t| {
            HUB.push(Event::Completion {
                client: client_id,
                token,
                ticket: Box::new(t),
            });
        });
        match r {
            Ok(()) => OK,
            Err(e) => fail(e),
        }
    })
}

/// The answer of a finished command: `status` and `length` from the server, and the output
/// area (cut to `length`); or its library failure as the return value.
///
/// # Safety
/// The out pointers are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_ticket_answer(
    ticket: u32,
    status: *mut i32,
    length: *mut u32,
    output: *mut *mut u8,
) -> i32 {
    let answer = TICKETS.with(ticket, |t| t.answer().map(|a| (a, t.output().as_ptr())));
    match answer.and_then(|a| a) {
        Ok((a, o)) => {
            // SAFETY: out pointers are null or valid for writes.
            unsafe {
                put(status, a.status);
                put(length, a.length);
                put(output, o);
            }
            OK
        }
        Err(e) => fail(e),
    }
}

/// Frees a ticket (and gives its slot back).
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_ticket_free(ticket: u32) -> i32 {
    guard(|| match TICKETS.remove(ticket) {
        Ok(t) => {
            drop(t);
            OK
        }
        Err(e) => fail(e),
    })
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
                return Err(Error::new(Status::Closed, "the server is closing"));
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

    fn close(&self, conn: &ConnInfo, _: &()) {
        HUB.push(Event::Close {
            server: self.id,
            conn: conn.id,
        });
    }
}

/// A server handle.
#[derive(Debug)]
pub struct ServerHandle {
    id: u64,
    server: Mutex<Server>,
    opened: Arc<Opened>,
}

/// Serves `ic_id`; its opens, commands and closes reach the hub, named by `id`.
///
/// # Safety
/// `ic_id` and `dir` are valid for their lengths (or null with length 0); `out` is valid for a
/// write of a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_server_serve(
    ic_id: *const u8,
    ic_id_len: usize,
    dir: *const u8,
    dir_len: usize,
    spin_ns: u64,
    id: u64,
    out: *mut *mut ServerHandle,
) -> i32 {
    if out.is_null() {
        return invalid("out is null");
    }
    guard(|| {
        // SAFETY: forwarded contract.
        let (ic, socket_dir, spin) =
            match unsafe { endpoint_args(ic_id, ic_id_len, dir, dir_len, spin_ns) } {
                Ok(args) => args,
                Err(e) => return fail(e),
            };
        let opened = Arc::new(Opened::default());
        let defaults = ServeOptions::default();
        let options = ServeOptions {
            socket_dir,
            spin: spin.unwrap_or(defaults.spin),
            ..defaults
        };
        let handler = Queueing {
            id,
            opened: opened.clone(),
        };
        match Server::serve(&ic, handler, options) {
            Ok(server) => {
                // JavaScript pops this server's rings itself while it waits for events.
                HUB.add_poller(id, server.poller());
                let h = Box::new(ServerHandle {
                    id,
                    server: Mutex::new(server),
                    opened,
                });
                // SAFETY: `out` is non-null and valid for a write.
                unsafe { put(out, Box::into_raw(h)) };
                OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Answers an open: `status` 0 accepts the client; a negative library status refuses it with
/// that status.
///
/// # Safety
/// `server` is a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_server_opened(
    server: *mut ServerHandle,
    connection: u64,
    status: i32,
) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { server.as_ref() }) else {
        return invalid("server is null");
    };
    let answer = match status {
        0 => Ok(()),
        s => Err(Error::new(
            Status::from_code(s).unwrap_or(Status::HandlerFailed),
            "the server's open handler refused the connection",
        )),
    };
    lock(&h.opened.state).answers.push((connection, answer));
    h.opened.changed.notify_all();
    OK
}

/// Answers a command with `status` and the output `length`, and frees the command handle.
/// `output`, when not null, is copied into the command's output area first (JavaScript answers
/// backup-path commands from its own buffer).
///
/// # Safety
/// `output` is null or valid for reads of `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_command_finish(
    command: u32,
    status: i32,
    length: u32,
    output: *const u8,
) -> i32 {
    guard(move || {
        let mut c = match COMMANDS.remove(command) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        if !output.is_null() {
            let mut area = c.output();
            let n = (length as usize).min(area.len());
            // SAFETY: the caller promised `output` is valid for `length >= n` bytes.
            area.write(unsafe { bytes(output, n) });
        }
        c.finish(status, length as usize);
        OK
    })
}

/// Stops the server and frees the handle: connections end, their commands still in the hub are
/// answered when JavaScript finishes them (or HANDLER_FAILED if it drops them).
///
/// # Safety
/// `server` is null or a live handle, not used again afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_server_free(server: *mut ServerHandle) -> i32 {
    if server.is_null() {
        return invalid("server is null");
    }
    // SAFETY: the handle came from `Box::into_raw` and the caller gives it up.
    let h = unsafe { Box::from_raw(server) };
    guard(move || {
        lock(&h.opened.state).closing = true;
        h.opened.changed.notify_all();
        HUB.remove_poller(h.id);
        lock(&h.server).close();
        OK
    })
}

// ---------------------------------------------------------------------------------------------
// Hub

/// A client's asynchronous command finished: `handle` is its ticket.
pub const EVENT_COMPLETION: u32 = 1;
/// A client connected: answer with [`shmcall_server_opened`].
pub const EVENT_OPEN: u32 = 2;
/// A command arrived: `handle` is the command, to finish with [`shmcall_command_finish`].
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
    /// sentence [`shmcall_last_error`] returns).
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

/// Takes the next event; [`EMPTY`] when there is none.
///
/// # Safety
/// `event` is valid for a write of a [`HubEvent`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_hub_next(event: *mut HubEvent) -> i32 {
    if event.is_null() {
        return invalid("event is null");
    }
    guard(|| {
        let Some(next) = HUB.next() else { return EMPTY };
        let mut e = HubEvent {
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
                match TICKETS.insert(*ticket) {
                    Ok(handle) => e.handle = u64::from(handle),
                    Err(err) => return fail(err),
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
                match COMMANDS.insert(command) {
                    Ok(handle) => e.handle = u64::from(handle),
                    Err(err) => return fail(err),
                }
            }
            Event::Close { server, conn } => {
                e.kind = EVENT_CLOSE;
                e.owner = server;
                e.token = conn;
            }
        }
        // SAFETY: `event` is non-null and valid for a write.
        unsafe { event.write(e) };
        OK
    })
}

/// Makes the calling thread the one JavaScript thread that drains the hub; refuses, with
/// INVALID_ARGUMENT, while another thread has clients or servers open.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_claim() -> i32 {
    match HUB.claim() {
        Ok(()) => OK,
        Err(_) => invalid(
            "shmcall serves one JavaScript thread per process at a time: another thread (a Worker?) has clients or servers open",
        ),
    }
}

/// The calling thread has no client or server left; another thread may claim the hub.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_unclaim() -> i32 {
    HUB.unclaim();
    OK
}

/// A new id for a client or server, unique in the process.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_new_id() -> u64 {
    HUB.new_id()
}

/// A reference that keeps an exec event's segment mapped (for a view JavaScript keeps per
/// connection), with its first byte and length; null for backup-path commands.
///
/// # Safety
/// The out pointers are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_command_segment(
    command: u32,
    base: *mut *mut u8,
    len: *mut usize,
    out: *mut *mut SegmentRef,
) -> i32 {
    let segment = match COMMANDS.with(command, |c| c.segment()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let r = segment.map_or(std::ptr::null_mut(), |s| segment_ref(s, base, len));
    // SAFETY: `out` is null or valid for a write.
    unsafe { put(out, r) };
    OK
}

/// JavaScript begins draining the hub, for at most `budget_ns` before it hands the event loop
/// back (see [`shmcall_hub_idle`]); 0 for no limit.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_drain(budget_ns: u64) -> i32 {
    HUB.drain_begin(Duration::from_nanos(budget_ns));
    OK
}

/// Returns 1 when the current drain's budget is spent, else 0.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_spent() -> i32 {
    i32::from(HUB.spent())
}

/// JavaScript drained the hub and is about to go idle: first waits up to `wait_ns` for more
/// events (no later than the drain's budget allows), then arms the doorbell. Returns 1 when it
/// may go idle, 0 when events arrived (drain again), 2 when the drain's budget ran out (drain
/// again in a task of its own; the doorbell is not armed and the rings stay held).
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_idle(wait_ns: u64) -> i32 {
    match HUB.idle(Duration::from_nanos(wait_ns)) {
        Idle::Events => 0,
        Idle::Idle => 1,
        Idle::Spent => 2,
    }
}

/// The fallback doorbell, for a `nonblocking` call: sleeps until an event is queued,
/// [`shmcall_hub_interrupt`] is called, or `timeout_ns` passes. Returns 1 when events are
/// queued, else 0.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_wait(timeout_ns: u64) -> i32 {
    i32::from(HUB.wait(Duration::from_nanos(timeout_ns)))
}

/// Ends a pending [`shmcall_hub_wait`] at once.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_interrupt() -> i32 {
    HUB.interrupt();
    OK
}
