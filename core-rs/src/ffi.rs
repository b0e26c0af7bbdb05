//! The C surface that Deno's FFI binds (`ffi/symbols.ts` is its one symbol table).
//!
//! Conventions (after iceoryx2-ffi): one prefix, `shmcall_`; opaque handles created and freed
//! only here; every function returns an `i32`: [`OK`], [`EMPTY`] ("nothing ready yet"), or a
//! negative [`Status`] code, with the sentence of the last failure on this thread available
//! from [`shmcall_last_error`]. Null handles are checked first and answer
//! [`Status::InvalidArgument`]. Functions never unwind into the caller: a panic becomes
//! [`Status::HandlerFailed`].
//!
//! Areas are handed out as raw pointers into the segment (or into a backup buffer owned by the
//! ticket); they stay valid until the ticket is freed, and the segment stays mapped while any
//! ticket or command of it exists.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::client::{Client, ConnectOptions, Ticket};
use crate::segment::{PROTOCOL_MAJOR, PROTOCOL_MINOR};
use crate::server::{Command, ConnInfo, Handler, ServeOptions, Server};
use crate::slot::Mode;
use crate::status::{Error, Status};

/// Success.
pub const OK: i32 = 0;
/// Nothing is ready yet (a poll found no completion or event).
pub const EMPTY: i32 = 1;

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
// Client

/// Finished asynchronous commands, with their tokens, waiting for a poll.
#[derive(Debug, Default)]
struct Completions {
    queue: Mutex<VecDeque<(u64, Box<Ticket>)>>,
    ready: Condvar,
}

/// A client handle: the client and the completions of its asynchronous commands.
#[derive(Debug)]
pub struct ClientHandle {
    client: Client,
    done: Arc<Completions>,
}

/// Connects to `ic_id`. `dir` (may be empty) overrides the socket directory; `spin_ns` is the
/// spin budget before sleeping (`u64::MAX` keeps the default).
///
/// # Safety
/// `ic_id` and `dir` are valid for their lengths (or null with length 0); `out` is valid for a
/// write of a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_connect(
    ic_id: *const u8,
    ic_id_len: usize,
    dir: *const u8,
    dir_len: usize,
    spin_ns: u64,
    out: *mut *mut ClientHandle,
) -> i32 {
    if out.is_null() {
        return invalid("out is null");
    }
    guard(|| {
        // SAFETY: forwarded contract.
        let (id, socket_dir, spin) =
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
        match Client::connect(&id, &options) {
            Ok(client) => {
                let h = Box::new(ClientHandle {
                    client,
                    done: Arc::new(Completions::default()),
                });
                // SAFETY: `out` is non-null and valid for a write.
                unsafe { put(out, Box::into_raw(h)) };
                OK
            }
            Err(e) => fail(e),
        }
    })
}

/// The client's segment: its first byte and its length. Areas of slot tickets lie inside it;
/// it stays mapped until the client and all its tickets are freed.
///
/// # Safety
/// `client` is a live handle; the out pointers are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_segment(
    client: *mut ClientHandle,
    base: *mut *mut u8,
    len: *mut usize,
) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { client.as_ref() }) else {
        return invalid("client is null");
    };
    let (b, l) = h.client.segment_mapping();
    // SAFETY: out pointers are null or valid for writes.
    unsafe {
        put(base, b);
        put(len, l);
    }
    OK
}

/// Closes the client: outstanding commands fail with CLOSED. Idempotent; the handle stays valid
/// until [`shmcall_client_free`].
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

/// Closes and frees the client. Tickets still held stay usable (they keep the segment alive).
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
        h.client.close();
        let queued = std::mem::take(&mut *lock(&h.done.queue));
        drop(queued);
        OK
    })
}

/// Takes a slot (or backup buffers) for a command and returns its areas: `input` is
/// `input_len` bytes, `output` is `output_cap` bytes. `mode`: 0 server default, 1 inline,
/// 2 worker.
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
    out: *mut *mut Ticket,
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
        let m = match mode(mode_flags) {
            Ok(m) => m,
            Err(e) => return fail(e),
        };
        match h
            .client
            .begin(code, input_len as usize, output_cap as usize, m)
        {
            Ok(t) => {
                let mut t = Box::new(t);
                // SAFETY: out pointers are null or valid for writes (caller's contract).
                unsafe {
                    put(input, t.input().as_ptr());
                    put(output, t.output().as_ptr());
                    put(out, Box::into_raw(t));
                }
                OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Sends the command and waits on this thread for the answer: `status` and `length` are the
/// server's; a library failure is the return value.
///
/// # Safety
/// `client` and `ticket` are live handles, the ticket from this client and not yet sent.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_call(
    client: *mut ClientHandle,
    ticket: *mut Ticket,
    status: *mut i32,
    length: *mut u32,
) -> i32 {
    // SAFETY: the caller promised live handles or null.
    let (Some(h), Some(t)) = (unsafe { client.as_ref() }, unsafe { ticket.as_mut() }) else {
        return invalid("client or ticket is null");
    };
    guard(|| match h.client.call(t) {
        Ok(a) => {
            // SAFETY: out pointers are null or valid for writes.
            unsafe {
                put(status, a.status);
                put(length, a.length);
            }
            OK
        }
        Err(e) => fail(e),
    })
}

/// Sends the command and returns at once. The finished ticket comes back from
/// [`shmcall_client_poll`] with `token`. The ticket handle is given up here.
///
/// # Safety
/// `client` and `ticket` are live handles, the ticket from this client and not yet sent; the
/// caller does not use `ticket` again until it is returned by a poll.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_submit(
    client: *mut ClientHandle,
    ticket: *mut Ticket,
    token: u64,
) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { client.as_ref() }) else {
        return invalid("client is null");
    };
    if ticket.is_null() {
        return invalid("ticket is null");
    }
    // SAFETY: the ticket came from `Box::into_raw` in `shmcall_client_begin`; the caller gives
    // it up until the poll returns it.
    let t = unsafe { Box::from_raw(ticket) };
    let done = h.done.clone();
    guard(move || {
        let r = h.client.call_async(*t, move |t| {
            lock(&done.queue).push_back((token, Box::new(t)));
            done.ready.notify_all();
        });
        match r {
            Ok(()) => OK,
            Err(e) => fail(e),
        }
    })
}

/// Takes the next finished asynchronous command, waiting up to `timeout_ns`. Returns [`EMPTY`]
/// when none finished in time. Read the answer with [`shmcall_ticket_answer`], then free it.
///
/// # Safety
/// `client` is a live handle; the out pointers are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_poll(
    client: *mut ClientHandle,
    timeout_ns: u64,
    token: *mut u64,
    ticket: *mut *mut Ticket,
) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { client.as_ref() }) else {
        return invalid("client is null");
    };
    guard(|| {
        let q = lock(&h.done.queue);
        let (mut q, _) = h
            .done
            .ready
            .wait_timeout_while(q, Duration::from_nanos(timeout_ns), |q| q.is_empty())
            .unwrap_or_else(|p| p.into_inner());
        match q.pop_front() {
            Some((tok, t)) => {
                // SAFETY: out pointers are null or valid for writes.
                unsafe {
                    put(token, tok);
                    put(ticket, Box::into_raw(t));
                }
                OK
            }
            None => EMPTY,
        }
    })
}

/// The answer of a finished command: `status` and `length` from the server, and the output
/// area (cut to `length`); or its library failure as the return value.
///
/// # Safety
/// `ticket` is a live handle; the out pointers are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_ticket_answer(
    ticket: *mut Ticket,
    status: *mut i32,
    length: *mut u32,
    output: *mut *mut u8,
) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(t) = (unsafe { ticket.as_mut() }) else {
        return invalid("ticket is null");
    };
    guard(|| match t.answer() {
        Ok(a) => {
            // SAFETY: out pointers are null or valid for writes.
            unsafe {
                put(status, a.status);
                put(length, a.length);
                put(output, t.output().as_ptr());
            }
            OK
        }
        Err(e) => fail(e),
    })
}

/// Frees a ticket (and gives its slot back).
///
/// # Safety
/// `ticket` is null or a live handle, not used again afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_ticket_free(ticket: *mut Ticket) -> i32 {
    if ticket.is_null() {
        return invalid("ticket is null");
    }
    // SAFETY: the ticket came from `Box::into_raw` and the caller gives it up.
    drop(unsafe { Box::from_raw(ticket) });
    OK
}

// ---------------------------------------------------------------------------------------------
// Server

/// What [`shmcall_server_next`] hands out. `#[repr(C)]`, 64 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ServerEvent {
    /// [`EVENT_OPEN`], [`EVENT_EXEC`] or [`EVENT_CLOSE`].
    pub kind: u32,
    /// Operation code (exec only).
    pub code: u32,
    /// The connection.
    pub connection: u64,
    /// The client's pid (open only).
    pub pid: i32,
    /// The client's uid (open only).
    pub uid: u32,
    /// The command handle to finish (exec only).
    pub command: *mut Command,
    /// Input area (exec only).
    pub input: *mut u8,
    /// Output area (exec only).
    pub output: *mut u8,
    /// Input length (exec only).
    pub input_len: u32,
    /// Output capacity (exec only).
    pub output_cap: u32,
}

/// A client connected; answer with [`shmcall_server_opened`].
pub const EVENT_OPEN: u32 = 1;
/// A command arrived; answer with [`shmcall_command_finish`].
pub const EVENT_EXEC: u32 = 2;
/// A connection ended after its commands drained.
pub const EVENT_CLOSE: u32 = 3;

#[derive(Debug)]
enum Queued {
    Open(ConnInfo),
    Exec(u64, Box<Command>),
    Close(u64),
}

/// What the server's threads hand to the caller of `shmcall_server_next`.
#[derive(Debug, Default)]
struct InboxState {
    events: VecDeque<Queued>,
    /// Answers to opens, by connection, waiting for their `open` call to take them.
    opened: Vec<(u64, Result<(), Error>)>,
    closing: bool,
}

#[derive(Debug, Default)]
struct Inbox {
    queue: Mutex<InboxState>,
    changed: Condvar,
}

/// Hands every handler call to whoever drains the inbox (the JavaScript thread), and makes
/// `open` wait for its answer so the client connects only after `open` ran.
struct Queueing(Arc<Inbox>);

impl Handler for Queueing {
    type Context = ();

    fn open(&self, conn: &ConnInfo) -> Result<(), Error> {
        let inbox = &self.0;
        let mut q = lock(&inbox.queue);
        q.events.push_back(Queued::Open(*conn));
        inbox.changed.notify_all();
        loop {
            if let Some(i) = q.opened.iter().position(|(id, _)| *id == conn.id) {
                return q.opened.swap_remove(i).1;
            }
            if q.closing {
                return Err(Error::new(Status::Closed, "the server is closing"));
            }
            q = inbox.changed.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn exec(&self, command: Command, conn: &ConnInfo, _: &()) {
        let mut q = lock(&self.0.queue);
        q.events.push_back(Queued::Exec(conn.id, Box::new(command)));
        self.0.changed.notify_all();
    }

    fn close(&self, conn: &ConnInfo, _: &()) {
        let mut q = lock(&self.0.queue);
        q.events.push_back(Queued::Close(conn.id));
        self.0.changed.notify_all();
    }
}

/// A server handle.
#[derive(Debug)]
pub struct ServerHandle {
    server: Mutex<Server>,
    inbox: Arc<Inbox>,
}

/// Serves `ic_id`. Every open, command and close is then taken with [`shmcall_server_next`].
/// `workers` is accepted for the command flag's sake; commands are all queued to the caller.
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
    out: *mut *mut ServerHandle,
) -> i32 {
    if out.is_null() {
        return invalid("out is null");
    }
    guard(|| {
        // SAFETY: forwarded contract.
        let (id, socket_dir, spin) =
            match unsafe { endpoint_args(ic_id, ic_id_len, dir, dir_len, spin_ns) } {
                Ok(args) => args,
                Err(e) => return fail(e),
            };
        let inbox = Arc::new(Inbox::default());
        let defaults = ServeOptions::default();
        let options = ServeOptions {
            socket_dir,
            spin: spin.unwrap_or(defaults.spin),
            ..defaults
        };
        match Server::serve(&id, Queueing(inbox.clone()), options) {
            Ok(server) => {
                let h = Box::new(ServerHandle {
                    server: Mutex::new(server),
                    inbox,
                });
                // SAFETY: `out` is non-null and valid for a write.
                unsafe { put(out, Box::into_raw(h)) };
                OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Takes the next open, exec or close, waiting up to `timeout_ns`; [`EMPTY`] if none came.
///
/// # Safety
/// `server` is a live handle; `event` is valid for a write of a [`ServerEvent`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_server_next(
    server: *mut ServerHandle,
    timeout_ns: u64,
    event: *mut ServerEvent,
) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { server.as_ref() }) else {
        return invalid("server is null");
    };
    if event.is_null() {
        return invalid("event is null");
    }
    guard(|| {
        let inbox = &h.inbox;
        let q = lock(&inbox.queue);
        let (mut q, _) = inbox
            .changed
            .wait_timeout_while(q, Duration::from_nanos(timeout_ns), |q| q.events.is_empty())
            .unwrap_or_else(|p| p.into_inner());
        let Some(next) = q.events.pop_front() else {
            return EMPTY;
        };
        let mut e = ServerEvent {
            kind: 0,
            code: 0,
            connection: 0,
            pid: 0,
            uid: 0,
            command: std::ptr::null_mut(),
            input: std::ptr::null_mut(),
            output: std::ptr::null_mut(),
            input_len: 0,
            output_cap: 0,
        };
        match next {
            Queued::Open(info) => {
                e.kind = EVENT_OPEN;
                e.connection = info.id;
                e.pid = info.pid;
                e.uid = info.uid;
            }
            Queued::Exec(conn, mut command) => {
                e.kind = EVENT_EXEC;
                e.connection = conn;
                e.code = command.code();
                e.input_len = command.input_len() as u32;
                e.output_cap = command.output_capacity() as u32;
                let (input, output) = command.areas();
                e.input = input.as_ptr();
                e.output = output.as_ptr();
                e.command = Box::into_raw(command);
            }
            Queued::Close(conn) => {
                e.kind = EVENT_CLOSE;
                e.connection = conn;
            }
        }
        // SAFETY: `event` is non-null and valid for a write.
        unsafe { event.write(e) };
        OK
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
    let mut q = lock(&h.inbox.queue);
    q.opened.push((connection, answer));
    h.inbox.changed.notify_all();
    OK
}

/// Answers a command with `status` and the output `length`, and frees the command handle.
///
/// # Safety
/// `command` is null or a handle from an exec event, not used again afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_command_finish(
    command: *mut Command,
    status: i32,
    length: u32,
) -> i32 {
    if command.is_null() {
        return invalid("command is null");
    }
    // SAFETY: the command came from `Box::into_raw` in `shmcall_server_next`; the caller gives
    // it up.
    let c = unsafe { Box::from_raw(command) };
    guard(move || {
        c.finish(status, length as usize);
        OK
    })
}

/// Stops the server and frees the handle. Commands not yet finished are answered
/// HANDLER_FAILED.
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
        {
            let mut q = lock(&h.inbox.queue);
            q.closing = true;
            h.inbox.changed.notify_all();
        }
        lock(&h.server).close();
        // Commands still queued are dropped here, which answers them.
        let queued = std::mem::take(&mut lock(&h.inbox.queue).events);
        drop(queued);
        OK
    })
}
