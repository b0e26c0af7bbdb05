//! The Node-API surface: the same library, loaded by Node's (or Deno's) `process.dlopen`.
//!
//! In Node.js it is the whole binding (`node/native.ts` is its one caller): each function
//! converts its arguments and results and calls the operation of [`crate::surface`] that the
//! C surface of Deno ([`crate::ffi`]) calls too, so Node and Deno peers behave the same. In a
//! Deno process only the doorbell is used.
//!
//! Conventions, chosen for a hot path of plain numbers:
//! - Functions return an `i32` like the C surface: 0 (OK), 1 (EMPTY) or a negative status,
//!   whose sentence [`last_error`] returns. The few that return an object return `null` on
//!   failure, with the status in [`last_status`].
//! - Results beyond the return value go to this thread's **scratch**: a small array shared
//!   with JavaScript once ([`scratch`]), so that no call allocates or passes an out-buffer.
//! - Clients and servers are `u32` handles of [`crate::surface`]'s tables, like tickets and
//!   commands, the same as the C surface's: a closed, stale or forged handle is refused with a
//!   sentence naming it, never dereferenced.
//!
//! The doorbell: JavaScript registers a function, which becomes a Node-API threadsafe
//! function; a library thread that queues an event while JavaScript is idle calls it, which
//! queues one call of that function on the event loop without waiting for it (measured as
//! the fast way to wake an event loop). The threadsafe function is weak (unreferenced): it never
//! keeps the process alive by itself.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::{Float64Array, Function, Uint8ArraySlice, Uint32Array, Unknown};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::{Env, JsValue, sys};
use napi_derive::napi;

use crate::hub::HUB;
use crate::surface::{
    self, SCRATCH_ANSWER as ANSWER, SCRATCH_BEGUN as BEGUN, SCRATCH_WORDS, client, count, fail,
    server,
};
use shmcall_core::segment::{PROTOCOL_MAJOR, PROTOCOL_MINOR, Segment};
use shmcall_core::stats;
use shmcall_core::status::{Error, Status};

/// The words of the hub event, at the start of the scratch.
const RESULTS: usize = BEGUN;

thread_local! {
    /// This thread's scratch, once [`scratch`] made it (null before, and after its finalizer).
    static SCRATCH: Cell<*mut [u32; SCRATCH_WORDS]> = const { Cell::new(std::ptr::null_mut()) };
}

fn with_scratch(f: impl FnOnce(&mut [u32; SCRATCH_WORDS])) -> Result<(), Error> {
    let p = SCRATCH.get();
    if p.is_null() {
        return Err(Error::new(
            Status::InvalidArgument,
            "this thread has no scratch: call scratch() first",
        ));
    }
    // SAFETY: the pointer came from `Box::into_raw` in `scratch` and is nulled by the
    // finalizer before the box is freed; it is used only on this thread, and JavaScript (the
    // only other reader, on this same thread) is not running while a native call runs.
    f(unsafe { &mut *p });
    Ok(())
}

/// 0, or the failure's code (recorded for [`last_error`]).
fn done(r: Result<(), Error>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// A spin budget from JavaScript: negative (or not a finite number) means "the default";
/// JavaScript checked it already (at most one second), and it is capped here again.
fn spin(spin_ns: f64) -> Option<Duration> {
    (spin_ns.is_finite() && spin_ns >= 0.0)
        .then(|| Duration::from_nanos((spin_ns as u64).min(surface::MAX_SPIN_NS)))
}

/// An id JavaScript made with `hubNewId` (below 2^53, so exact as a number).
fn id(value: f64) -> u64 {
    value as u64
}

/// An `ArrayBuffer` over `len` bytes at `data`, which Node must not copy (a copy would lose
/// every write the peer makes); `release` runs when it is collected.
///
/// # Safety
/// `data` is valid for reads and writes of `len` bytes until `release` runs, and no other
/// `ArrayBuffer` over it exists (V8 refuses two over the same bytes).
unsafe fn external_buffer<T: 'static>(
    env: &Env,
    data: *mut u8,
    len: usize,
    hint: T,
    release: fn(T),
) -> Result<Unknown<'static>, Error> {
    unsafe extern "C" fn finalize<T>(
        _env: sys::napi_env,
        _data: *mut std::ffi::c_void,
        hint: *mut std::ffi::c_void,
    ) {
        // SAFETY: `hint` is the box made below, given to this finalizer alone, which runs once.
        let (value, release) = *unsafe { Box::from_raw(hint.cast::<(T, fn(T))>()) };
        release(value);
    }
    let hint = Box::into_raw(Box::new((hint, release)));
    let mut value = std::ptr::null_mut();
    // SAFETY: `env` is this call's environment; `data` is valid for `len` bytes until the
    // finalizer runs (caller's contract); `hint` is a live box the finalizer takes.
    let status = unsafe {
        sys::napi_create_external_arraybuffer(
            env.raw(),
            data.cast(),
            len,
            Some(finalize::<T>),
            hint.cast(),
            &mut value,
        )
    };
    if status != sys::Status::napi_ok {
        // SAFETY: the finalizer was not registered, so the box is still ours.
        let (v, release) = *unsafe { Box::from_raw(hint) };
        release(v);
        return Err(Error::new(
            Status::Io,
            format!(
                "this runtime refused an external ArrayBuffer (napi status {status}): shared memory cannot be viewed without copies here"
            ),
        ));
    }
    // SAFETY: `value` is the valid ArrayBuffer just created in `env`.
    Ok(unsafe { Unknown::from_raw_unchecked(env.raw(), value) })
}

/// This thread's scratch (see the module doc), made on the first call; one per thread.
#[napi]
pub fn scratch(env: Env) -> Option<Unknown<'static>> {
    if !SCRATCH.get().is_null() {
        fail(Error::new(
            Status::InvalidArgument,
            "this thread already has its scratch",
        ));
        return None;
    }
    let words = Box::into_raw(Box::new([0u32; SCRATCH_WORDS]));
    let release = |words: usize| {
        let p = words as *mut [u32; SCRATCH_WORDS];
        if SCRATCH.get() == p {
            SCRATCH.set(std::ptr::null_mut());
        }
        // SAFETY: the box made above, freed once, by the buffer's finalizer.
        drop(unsafe { Box::from_raw(p) });
    };
    // SAFETY: the box is valid until the finalizer frees it, and only this buffer views it.
    match unsafe {
        external_buffer(
            &env,
            words.cast(),
            SCRATCH_WORDS * 4,
            words as usize,
            release,
        )
    } {
        Ok(buffer) => {
            SCRATCH.set(words);
            Some(buffer)
        }
        Err(e) => {
            fail(e);
            None
        }
    }
}

/// The sentence of this thread's last failure.
#[napi]
pub fn last_error() -> String {
    surface::last_error()
}

/// The status code of this thread's last failure.
#[napi]
pub fn last_status() -> i32 {
    surface::last_status()
}

/// The protocol version this library speaks, as "major.minor".
#[napi]
pub fn protocol_version() -> String {
    format!("{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}")
}

/// The value of the constant `name` (`surface::CONSTANTS`), or nothing.
#[napi]
pub fn constant(name: String) -> Option<f64> {
    surface::constant(&name).map(|v| v as f64)
}

/// The name of library status `code` (e.g. `PEER_TERMINATED`), or nothing.
#[napi]
pub fn status_name(code: i32) -> Option<&'static str> {
    Status::from_code(code).map(Status::name)
}

/// The socket directory `dir` names (empty: the default one), as the core resolves it; null
/// on failure (`lastError` says why).
#[napi]
pub fn socket_dir(dir: String) -> Option<String> {
    surface::socket_dir(&dir).map_err(fail).ok()
}

/// Detaches `buffer`, a view [`client_segment`] or [`command_segment`] made: every array over it
/// becomes empty, and the runtime runs its finalizer — which lets go of the segment — as soon
/// as no other buffer shares its memory, rather than at a garbage collection. False if it
/// could not (it is not an `ArrayBuffer`, or was detached already).
#[napi]
pub fn detach(env: Env, buffer: Unknown<'_>) -> bool {
    // SAFETY: `env` is this call's environment and `buffer` a value of it; Node-API checks
    // that it is a detachable ArrayBuffer and fails otherwise.
    unsafe { sys::napi_detach_arraybuffer(env.raw(), buffer.raw()) == sys::Status::napi_ok }
}

/// A view of `segment`, which keeps it mapped until the view is collected or detached.
fn segment_view(env: &Env, segment: Arc<Segment>) -> Option<Unknown<'static>> {
    let (base, len) = segment.mapping();
    // SAFETY: the mapping stays valid while the `Arc` lives, which the finalizer drops; each
    // segment is viewed once per side (a client per connection, a server per connection).
    match unsafe { external_buffer(env, base, len, segment, drop) } {
        Ok(view) => Some(view),
        Err(e) => {
            fail(e);
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client

/// Connects to `ic_id` (`dir` empty: the default; `spin_ns` negative: the default); `id` names
/// the client in hub events. 0 with the client's handle in the scratch (`BEGUN`) when the
/// server answered at once; 1 when the connect goes on, and its end arrives as a connected
/// event; or the failure of a connect that could not start or was refused at once.
#[napi]
pub fn client_connect(
    ic_id: String,
    dir: String,
    spin_ns: f64,
    large_output: u32,
    id_: f64,
) -> i32 {
    match surface::client_connect(&ic_id, &dir, spin(spin_ns), large_output, id(id_)) {
        Ok(Some(handle)) => done(with_scratch(|s| s[BEGUN] = handle)),
        Ok(None) => 1,
        Err(e) => fail(e),
    }
}

/// A view of the client's segment, which stays mapped while the view is reachable.
#[napi]
pub fn client_segment(env: Env, client_: u32) -> Option<Unknown<'static>> {
    match client(client_) {
        Ok(c) => segment_view(&env, c.segment()),
        Err(e) => {
            fail(e);
            None
        }
    }
}

/// Takes a slot (or backup buffers) for a command: the ticket, then the areas' offsets in the
/// segment (`u32::MAX` on the backup path) go to the scratch.
#[napi]
pub fn client_begin_at(client_: u32, code: u32, input_len: u32, output_cap: u32, mode: u32) -> i32 {
    done(client(client_).and_then(|c| {
        let (ticket, begun) = c.begin_at(code, input_len, output_cap, mode)?;
        with_scratch(|s| {
            s[BEGUN] = ticket;
            s[BEGUN + 1] = begun.input;
            s[BEGUN + 2] = begun.output;
            s[BEGUN + 3] = begun.slot;
        })
    }))
}

/// Copies `input` into a ticket's input area (the backup path).
#[napi]
pub fn ticket_write_input(ticket: u32, input: &[u8]) -> i32 {
    done(surface::ticket_write_input(ticket, input))
}

/// Copies a finished ticket's output into `output` (at most its length).
#[napi]
pub fn ticket_read_output(ticket: u32, mut output: Uint8ArraySlice<'_>) -> i32 {
    // SAFETY: JavaScript does not run during this call, and `node/native.ts` passes an array
    // of its own (never a view of shared memory), so nothing else writes the bytes meanwhile.
    done(surface::ticket_read_output(ticket, unsafe { output.as_mut() }).map(drop))
}

/// Sends and waits on this thread; the server's status and the output length go to the
/// scratch.
#[napi]
pub fn client_call(client_: u32, ticket: u32, timeout_ms: f64) -> i32 {
    done(client(client_).and_then(|c| {
        let a = c.call(ticket, timeout_ms)?;
        with_scratch(|s| {
            s[ANSWER] = a.status as u32;
            s[ANSWER + 1] = a.length;
        })
    }))
}

/// Sends and returns at once; the finished ticket comes back as a hub completion with `token`.
#[napi]
pub fn client_submit(client_: u32, ticket: u32, token: f64) -> i32 {
    done(client(client_).and_then(|c| c.submit(ticket, token as u64)))
}

/// Withdraws the asynchronous command in `slot` if the server has not taken it: 1 if it did,
/// 0 if not, or a library failure.
#[napi]
pub fn client_withdraw(client_: u32, slot: u32) -> i32 {
    match client(client_) {
        Ok(c) => i32::from(c.withdraw(slot)),
        Err(e) => fail(e),
    }
}

/// Lends the client's rings and slots to JavaScript: the layout and ring positions go to `out`
/// (`LANE_WORDS` words at least).
#[napi]
pub fn client_lend(client_: u32, mut out: Uint32Array) -> i32 {
    done(put_lane_words(&mut out, || client(client_)?.lend()))
}

/// The library's monotonic clock in nanoseconds (see `shmcall_now_ns`).
#[napi]
pub fn now_ns() -> f64 {
    stats::now_ns() as f64
}

/// Wakes the server after JavaScript's push onto a lent client's CS ring.
#[napi]
pub fn client_lane_wake(client_: u32) -> i32 {
    done(client(client_).map(|c| c.lane_wake()))
}

/// The protocol minor a client's connection speaks, or the failure.
#[napi]
pub fn client_protocol_minor(client_: u32) -> i32 {
    match client(client_) {
        Ok(c) => i32::from(c.protocol_minor()),
        Err(e) => fail(e),
    }
}

/// A lent client takes its answers itself, unprompted: they wake nobody.
#[napi]
pub fn client_lane_quiet(client_: u32) -> i32 {
    done(client(client_).map(|c| c.lane_quiet()))
}

/// A lent client sent an asynchronous command while its SC ring was armed: the owner polls it.
#[napi]
pub fn client_lane_activate(client_: u32) -> i32 {
    done(client(client_).map(|c| c.lane_activate()))
}

/// Waits for an answer to pop: 1 there, 0 the time ran out, or the end's failure.
#[napi]
pub fn client_lane_wait(client_: u32, timeout_ms: f64) -> i32 {
    match client(client_).and_then(|c| c.lane_wait(timeout_ms)) {
        Ok(found) => i32::from(found),
        Err(e) => fail(e),
    }
}

/// JavaScript found the server breaking the protocol: ends the connection with `why`.
#[napi]
pub fn client_lane_violation(client_: u32, why: String) -> i32 {
    done(client(client_).map(|c| c.lane_violation(&why)))
}

/// Adds what JavaScript counted (`LANE_COUNT_LEN` doubles).
#[napi]
pub fn client_lane_count(client_: u32, report: Float64Array) -> i32 {
    done(lane_report(&report).and_then(|copy| client(client_).map(|c| c.lane_count(&copy))))
}

/// Writes a client's counters into `out` (at most its length; positions of `stats::word`).
#[napi]
pub fn client_stats(client_: u32, out: Float64Array) -> i32 {
    done(client(client_).map(|c| copy_words(&c.stats(), out)))
}

/// Copies the lane layout words `words` makes into `out`: checked first, as a lend happens once
/// and its words must not be lost.
fn put_lane_words(
    out: &mut Uint32Array,
    words: impl FnOnce() -> Result<[u32; surface::LANE_WORDS], Error>,
) -> Result<(), Error> {
    // SAFETY: JavaScript does not run during this call, and `out` is an array of
    // `node/native.ts`'s own, so nothing else reads or writes it meanwhile.
    let out = unsafe { out.as_mut() };
    if out.len() < surface::LANE_WORDS {
        return Err(Error::new(
            Status::InvalidArgument,
            "out is shorter than LANE_WORDS",
        ));
    }
    out[..surface::LANE_WORDS].copy_from_slice(&words()?);
    Ok(())
}

/// A copy of what a lane counted: `LANE_COUNT_LEN` doubles.
fn lane_report(report: &Float64Array) -> Result<[f64; stats::lane::LEN], Error> {
    <[f64; stats::lane::LEN]>::try_from(&report[..]).map_err(|_| {
        Error::new(
            Status::InvalidArgument,
            "report is not LANE_COUNT_LEN doubles long",
        )
    })
}

/// Copies a snapshot into a JavaScript array, at most its length.
fn copy_words(words: &[f64], mut out: Float64Array) {
    // SAFETY: JavaScript does not run during this call, and `out` is an array of
    // `node/native.ts`'s own, so nothing else reads or writes it meanwhile.
    let out = unsafe { out.as_mut() };
    let n = out.len().min(words.len());
    out[..n].copy_from_slice(&words[..n]);
}

/// Frees a ticket and gives its slot back.
#[napi]
pub fn ticket_free(ticket: u32) -> i32 {
    done(surface::ticket_free(ticket))
}

/// Closes the client and frees its handle.
#[napi]
pub fn client_free(client_: u32) -> i32 {
    done(surface::client_free(client_))
}

// ---------------------------------------------------------------------------------------------
// Server

/// Serves `ic_id` (arguments as for [`client_connect`], `flags` the `SERVE_*` ones of
/// surface.rs); the handle goes to the scratch.
#[napi]
pub fn server_serve(ic_id: String, dir: String, spin_ns: f64, id_: f64, flags: u32) -> i32 {
    done(
        surface::server_serve(&ic_id, &dir, spin(spin_ns), id(id_), flags)
            .and_then(|handle| with_scratch(|w| w[BEGUN] = handle)),
    )
}

/// The layout and ring positions of a server's lent connection, into `out` (`LANE_WORDS` at
/// least).
#[napi]
pub fn server_lane_layout(server_: u32, connection: f64, mut out: Uint32Array) -> i32 {
    done(put_lane_words(&mut out, || {
        server(server_)?.lane_layout(connection as u64)
    }))
}

/// A view of a server's lent connection's segment, kept mapped while the view is reachable.
#[napi]
pub fn server_lane_segment(env: Env, server_: u32, connection: f64) -> Option<Unknown<'static>> {
    match server(server_).and_then(|s| s.lane_segment(connection as u64)) {
        Ok(segment) => segment_view(&env, segment),
        Err(e) => {
            fail(e);
            None
        }
    }
}

/// Wakes the client of a lent connection after JavaScript's push onto its SC ring.
#[napi]
pub fn server_lane_wake(server_: u32, connection: f64) -> i32 {
    done(server(server_).map(|s| s.lane_wake(connection as u64)))
}

/// JavaScript found the client of a lent connection breaking the protocol.
#[napi]
pub fn server_lane_violation(server_: u32, connection: f64, why: String) -> i32 {
    done(server(server_).map(|s| s.lane_violation(connection as u64, &why)))
}

/// JavaScript keeps a command of a lent connection past its turn (an async `exec`).
#[napi]
pub fn server_lane_hold(server_: u32, connection: f64) -> i32 {
    done(server(server_).and_then(|s| s.lane_hold(connection as u64)))
}

/// JavaScript answered a command of a lent connection that it kept.
#[napi]
pub fn server_lane_release(server_: u32, connection: f64) -> i32 {
    done(server(server_).and_then(|s| s.lane_release(connection as u64)))
}

/// JavaScript, told that a lent connection ended, took what it had left.
#[napi]
pub fn server_lane_drained(server_: u32, connection: f64) -> i32 {
    done(server(server_).map(|s| s.lane_drained(connection as u64)))
}

/// Adds what a server's lanes counted (`LANE_COUNT_LEN` doubles).
#[napi]
pub fn server_lane_count(server_: u32, report: Float64Array) -> i32 {
    done(lane_report(&report).and_then(|copy| server(server_).map(|s| s.lane_count(&copy))))
}

/// Answers an open: 0 accepts, a negative status refuses.
#[napi]
pub fn server_opened(server_: u32, connection: f64, status: i32, reason: String) -> i32 {
    done(server(server_).map(|s| s.opened(connection as u64, status, &reason)))
}

/// Writes a server's counters into `out`, as `clientStats` does.
#[napi]
pub fn server_stats(server_: u32, out: Float64Array) -> i32 {
    done(server(server_).map(|s| copy_words(&s.stats(), out)))
}

/// Records the pool's size and whether the server quiesces, which its counters report.
#[napi]
pub fn server_note(server_: u32, workers: u32, quiescing: bool) -> i32 {
    done(server(server_).map(|s| s.note(workers, quiescing)))
}

/// Takes a command to run it: 1, or 0 when its client withdrew it first (it is then answered
/// CANCELLED and freed: it must not run), or a library failure.
#[napi]
pub fn command_take(command: u32) -> i32 {
    match surface::command_take(command) {
        Ok(taken) => i32::from(taken),
        Err(e) => fail(e),
    }
}

/// Answers a command (copying `output` into its area first, when given) and frees it.
#[napi]
pub fn command_finish(command: u32, status: i32, length: u32, output: Option<&[u8]>) -> i32 {
    done(surface::command_finish(command, status, length, output))
}

/// A view of a command's segment, kept mapped while the view is reachable; nothing (and a
/// failure) for a command on the backup path.
#[napi]
pub fn command_segment(env: Env, command: u32) -> Option<Unknown<'static>> {
    match surface::command_segment(command) {
        Ok(Some(segment)) => segment_view(&env, segment),
        Ok(None) => {
            fail(Error::new(
                Status::InvalidArgument,
                format!("command {command} travels the backup path: it has no segment"),
            ));
            None
        }
        Err(e) => {
            fail(e);
            None
        }
    }
}

/// Copies a command's input into `input` (at most its length).
#[napi]
pub fn command_read_input(command: u32, mut input: Uint8ArraySlice<'_>) -> i32 {
    // SAFETY: as for `ticket_read_output`: an array of `node/native.ts`'s own, and JavaScript
    // does not run during this call.
    done(surface::command_read_input(command, unsafe { input.as_mut() }).map(drop))
}

/// Stops the server and frees its handle.
#[napi]
pub fn server_free(server_: u32) -> i32 {
    done(surface::server_free(server_))
}

/// Hosts the event queue `queue_id` in `dir`; the handle goes to the scratch.
#[napi]
pub fn queue_serve(queue_id: String, dir: String) -> i32 {
    done(
        surface::queue_serve(&queue_id, &dir)
            .and_then(|handle| with_scratch(|w| w[BEGUN] = handle)),
    )
}

/// Writes an event queue's counters into `out`.
#[napi]
pub fn queue_stats(queue: u32, out: Float64Array) -> i32 {
    done(surface::queue_stats(queue).map(|words| copy_words(&words, out)))
}

/// Stops hosting an event queue and frees its handle.
#[napi]
pub fn queue_free(queue: u32) -> i32 {
    done(surface::queue_free(queue))
}

// ---------------------------------------------------------------------------------------------
// Hub

/// Takes the next event into the scratch: 0, or 1 (EMPTY) when there is none.
#[napi]
pub fn hub_next() -> i32 {
    event_to_scratch(surface::hub_next())
}

/// An event, when there is one, into the scratch: 0, or 1 (EMPTY) when there is none, or the
/// failure's code.
fn event_to_scratch(event: Result<Option<surface::HubEvent>, Error>) -> i32 {
    match event {
        Ok(Some(e)) => done(with_scratch(|s| {
            // SAFETY: `HubEvent` is `repr(C)`, 80 bytes of plain integers and pointers with
            // no padding (asserted in surface.rs), so its bytes are 20 `u32` words.
            let words: [u32; RESULTS] = unsafe { std::mem::transmute(e) };
            s[..RESULTS].copy_from_slice(&words);
        })),
        Ok(None) => 1,
        Err(e) => fail(e),
    }
}

/// The pool of a server served without lanes, as a handle of its own (to the scratch's
/// `BEGUN`), which outlives the server until [`pool_free`].
#[napi]
pub fn server_pool(server_: u32) -> i32 {
    done(surface::server_pool(server_).and_then(|pool| with_scratch(|w| w[BEGUN] = pool)))
}

/// Frees a pool's handle, once its workers stopped.
#[napi]
pub fn pool_free(pool: u32) -> i32 {
    done(surface::pool_free(pool))
}

/// Worker `worker` of `pool` waits for its next command (spinning `spin_ns`, for at most
/// `wait_ns`): 0 with it in the scratch as an exec event, 1 when none came, or a failure
/// (`CLOSED` once the server closed).
#[napi]
pub fn pool_take(pool: u32, worker: u32, spin_ns: f64, wait_ns: f64) -> i32 {
    let nanos = |ns: f64| {
        Duration::from_nanos(if ns.is_finite() && ns > 0.0 {
            ns as u64
        } else {
            0
        })
    };
    event_to_scratch(surface::pool_take(
        pool,
        worker,
        nanos(spin_ns),
        nanos(wait_ns),
    ))
}

/// Answers with `status` the commands that worker `worker` of `pool` held (it is gone);
/// returns how many (>= 0).
#[napi]
pub fn pool_bury(pool: u32, worker: u32, status: i32) -> i32 {
    count(surface::pool_bury(pool, worker, status))
}

/// JavaScript takes the pool's poke, before it posts the workers their messages.
#[napi]
pub fn pool_poked(pool: u32) -> i32 {
    done(surface::pool_poked(pool))
}

/// The commands `pool` has queued or held (>= 0).
#[napi]
pub fn pool_in_progress(pool: u32) -> i32 {
    count(surface::pool_in_progress(pool))
}

/// Makes this thread the one that drains the hub; refuses while another has objects. Returns
/// how many doorbells were installed so far (>= 0).
#[napi]
pub fn hub_claim() -> i32 {
    surface::hub_claim().unwrap_or_else(fail)
}

/// How many doorbells were installed so far (>= 0).
#[napi]
pub fn hub_bells() -> i32 {
    surface::hub_bells()
}

/// This thread has no client or server left.
#[napi]
pub fn hub_unclaim() {
    HUB.unclaim();
}

/// An id unique in the process (below 2^53).
#[napi]
pub fn hub_new_id() -> f64 {
    HUB.new_id() as f64
}

/// A drain begins, which hands the event loop back after `budget_ns`.
#[napi]
pub fn hub_drain(budget_ns: u32) {
    HUB.drain_begin(Duration::from_nanos(budget_ns.into()));
}

/// 1 once the current drain's budget is spent, else 0.
#[napi]
pub fn hub_spent() -> i32 {
    i32::from(HUB.spent())
}

/// Polls the connections up to `wait_ns` for events, then arms them and the doorbell:
/// 1 idle, 0 events, 2 spent.
#[napi]
pub fn hub_idle(wait_ns: u32) -> i32 {
    HUB.idle(Duration::from_nanos(wait_ns.into())).code()
}

/// Makes `ring` the hub's doorbell: it is called (on the event loop, with no arguments) when
/// an event is queued while JavaScript is idle. Replaces any previous doorbell.
#[napi]
pub fn set_doorbell(ring: Function<(), ()>) -> napi::Result<()> {
    let tsfn = ring
        .build_threadsafe_function::<()>()
        .weak::<true>()
        .callee_handled::<false>()
        .build()?;
    HUB.set_bell(Some(Box::new(move || {
        // NonBlocking: the ringing thread never waits for JavaScript; the queue is unbounded
        // and a ring only happens on an idle → busy transition, so it stays short.
        tsfn.call((), ThreadsafeFunctionCallMode::NonBlocking);
    })));
    Ok(())
}

/// Removes the doorbell (the hub then only wakes a pending fallback wait).
#[napi]
pub fn clear_doorbell() {
    HUB.set_bell(None);
}
