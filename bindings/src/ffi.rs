//! The C surface that Deno's FFI binds (`ffi/symbols.ts` is its one symbol table).
//!
//! Conventions (after iceoryx2-ffi): one prefix, `shmcall_`; every object is a `u32` handle
//! from the tables of [`crate::surface`] — a stale or forged one is refused, never
//! dereferenced; every function returns an `i32`: [`OK`], [`EMPTY`] ("nothing ready yet"), or a
//! negative [`Status`] code, with the sentence of the last failure on this thread available
//! from [`shmcall_last_error`]. Null out-pointers are checked first and answer
//! [`Status::InvalidArgument`]. Functions never unwind into the caller: a panic becomes
//! [`Status::HandlerFailed`].
//!
//! Each function converts its arguments and results and calls the operation of the same name
//! in [`crate::surface`], which the Node-API surface ([`crate::napi`]) wraps too. Areas are
//! handed out as offsets in a segment, which stays mapped while any ticket, command or segment
//! handle of it exists: JavaScript holds a segment handle for as long as a view over the
//! segment is reachable. Backup-path areas are reached by copies
//! ([`shmcall_ticket_write_input`], [`shmcall_ticket_read_output`],
//! [`shmcall_command_read_input`]).

use std::time::Duration;

use crate::hub::HUB;
use crate::surface::{self, count, fail};
use shmcall_core::segment::{PROTOCOL_MAJOR, PROTOCOL_MINOR, Segment};
use shmcall_core::stats;
use shmcall_core::status::{Error, Status};

pub use crate::surface::{
    EVENT_CLOSE, EVENT_COMPLETION, EVENT_CONNECTED, EVENT_EXEC, EVENT_OPEN, HubEvent,
};

/// Success.
pub const OK: i32 = 0;
/// Nothing is ready yet (a poll found no completion or event).
pub const EMPTY: i32 = 1;

fn invalid(what: &str) -> i32 {
    fail(Error::new(Status::InvalidArgument, what.to_string()))
}

/// [`OK`], or the failure's code (recorded for [`shmcall_last_error`]).
fn done(r: Result<(), Error>) -> i32 {
    match r {
        Ok(()) => OK,
        Err(e) => fail(e),
    }
}

/// # Safety
/// `ptr` is null with `len` 0, or valid for reads of `len` bytes.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 || ptr.is_null() {
        return &[];
    }
    // SAFETY: the caller promised `ptr` is valid for `len` bytes.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// # Safety
/// `ptr` is null with `len` 0, or valid for writes of `len` bytes, which no Rust reference
/// points to.
unsafe fn bytes_mut<'a>(ptr: *mut u8, len: usize) -> &'a mut [u8] {
    if len == 0 || ptr.is_null() {
        return &mut [];
    }
    // SAFETY: the caller promised `ptr` is valid and unaliased for `len` bytes.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
}

/// # Safety
/// As for [`bytes`].
unsafe fn text<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a str, Error> {
    // SAFETY: forwarded contract.
    let b = unsafe { bytes(ptr, len) };
    std::str::from_utf8(b)
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

/// Copies `s` into `buf` (at most `cap` bytes) and returns its full length, which may exceed
/// `cap`.
///
/// # Safety
/// `buf` is null with `cap` 0, or valid for writes of `cap` bytes.
unsafe fn copy_out(s: &str, buf: *mut u8, cap: usize) -> i32 {
    // SAFETY: forwarded contract.
    let dst = unsafe { bytes_mut(buf, cap) };
    let n = s.len().min(dst.len());
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
    s.len().min(i32::MAX as usize) as i32
}

/// Reads the ic id and socket directory of `connect` or `serve`, then calls `make` with them
/// and the spin budget.
///
/// # Safety
/// As for [`bytes`], for both strings.
unsafe fn endpoint<H>(
    (ic_id, ic_id_len): (*const u8, usize),
    (dir, dir_len): (*const u8, usize),
    spin_ns: u64,
    make: impl FnOnce(&str, &str, Option<Duration>) -> Result<H, Error>,
) -> Result<H, Error> {
    // SAFETY: forwarded contract.
    let (ic, dir) = unsafe { (text(ic_id, ic_id_len, "ic id")?, text(dir, dir_len, "dir")?) };
    make(ic, dir, spin(spin_ns))
}

/// The spin budget `u64::MAX` means "the default"; any other is capped at one second.
fn spin(spin_ns: u64) -> Option<Duration> {
    (spin_ns != u64::MAX).then(|| Duration::from_nanos(spin_ns.min(surface::MAX_SPIN_NS)))
}

/// Copies the last failure's sentence on this thread into `buf` (UTF-8, not terminated) and
/// returns its full length in bytes, which may exceed `cap`.
///
/// # Safety
/// `buf` is null with `cap` 0, or valid for writes of `cap` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_last_error(buf: *mut u8, cap: usize) -> i32 {
    // SAFETY: forwarded contract.
    surface::with_last_error(|l| unsafe { copy_out(l, buf, cap) })
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
    // SAFETY: forwarded contract.
    unsafe { copy_out(s.name(), buf, cap) }
}

/// The value of the constant named by `name` (see `surface::CONSTANTS`) in `out`; returns
/// INVALID_ARGUMENT when there is none.
///
/// # Safety
/// `name` is valid for `name_len` bytes; `out` is null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_constant(name: *const u8, name_len: usize, out: *mut i64) -> i32 {
    // SAFETY: forwarded contract.
    let name = match unsafe { text(name, name_len, "name") } {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    match surface::constant(name) {
        Some(v) => {
            // SAFETY: `out` is null or valid for a write.
            unsafe { put(out, v) };
            OK
        }
        None => invalid(&format!("no constant is named {name:?}")),
    }
}

/// Writes the socket directory `dir` names (empty: the default one) to `buf`, as the core
/// resolves it for clients and servers; returns its length in bytes (which may exceed `cap`:
/// then only `cap` bytes were written), or a library failure.
///
/// # Safety
/// `dir` is valid for `dir_len` bytes; `buf` for writes of `cap` bytes (or null with 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_socket_dir(
    dir: *const u8,
    dir_len: usize,
    buf: *mut u8,
    cap: usize,
) -> i32 {
    // SAFETY: forwarded contract.
    let resolved = unsafe { text(dir, dir_len, "dir") }.and_then(surface::socket_dir);
    match resolved {
        // SAFETY: forwarded contract.
        Ok(path) => unsafe { copy_out(&path, buf, cap) },
        Err(e) => fail(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Segments

/// Holds `segment` mapped and describes it: its first byte, length and handle.
///
/// # Safety
/// The out pointers are null or valid for writes.
unsafe fn hold_segment(
    segment: std::sync::Arc<Segment>,
    base: *mut *mut u8,
    len: *mut usize,
    out: *mut u32,
) -> i32 {
    let (b, l) = segment.mapping();
    match surface::segment_hold(segment) {
        Ok(handle) => {
            // SAFETY: out pointers are null or valid for writes (caller's contract).
            unsafe {
                put(base, b);
                put(len, l);
                put(out, handle);
            }
            OK
        }
        Err(e) => fail(e),
    }
}

/// Lets go of a segment: it is unmapped once nothing else holds it. No view over it may be
/// used afterwards.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_segment_release(segment: u32) -> i32 {
    done(surface::segment_release(segment))
}

// ---------------------------------------------------------------------------------------------
// Client

/// Connects to `ic_id`. `dir` (may be empty) overrides the socket directory; `spin_ns` is the
/// spin budget before sleeping (`u64::MAX` keeps the default); `large_output`, when above 0,
/// makes the segment's large slot class one slot of that much output (an event-queue
/// consumer's long list); `id` names the client in hub events. Returns [`OK`] with the client's
/// handle in `out` when the server answered within `surface::CONNECT_WAIT`; or [`EMPTY`], and
/// the connect's end arrives as an [`EVENT_CONNECTED`] with the client's handle (or the
/// failure); or a failure at once (no server listens, a bad ic id, a refusal...).
///
/// # Safety
/// `ic_id` and `dir` are valid for their lengths (or null with length 0); `out` is null or
/// valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_connect(
    ic_id: *const u8,
    ic_id_len: usize,
    dir: *const u8,
    dir_len: usize,
    spin_ns: u64,
    large_output: u32,
    id: u64,
    out: *mut u32,
) -> i32 {
    // SAFETY: forwarded contract.
    let connected = unsafe {
        endpoint(
            (ic_id, ic_id_len),
            (dir, dir_len),
            spin_ns,
            |ic, dir, spin| surface::client_connect(ic, dir, spin, large_output, id),
        )
    };
    match connected {
        Ok(Some(handle)) => {
            // SAFETY: `out` is null or valid for a write.
            unsafe { put(out, handle) };
            OK
        }
        Ok(None) => EMPTY,
        Err(e) => fail(e),
    }
}

/// Holds the client's segment mapped (until [`shmcall_segment_release`] of `out`), with its
/// first byte and length. Areas of slot tickets lie inside it.
///
/// # Safety
/// The out pointers are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_segment(
    client: u32,
    base: *mut *mut u8,
    len: *mut usize,
    out: *mut u32,
) -> i32 {
    match surface::client(client) {
        // SAFETY: forwarded contract.
        Ok(c) => unsafe { hold_segment(c.segment(), base, len, out) },
        Err(e) => fail(e),
    }
}

/// Closes the client and frees its handle: outstanding commands fail with CLOSED (their
/// completions still reach the hub). Tickets and segments still held stay usable.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_client_free(client: u32) -> i32 {
    done(surface::client_free(client))
}

/// Takes a slot (or backup buffers) for a command: `out` receives the ticket's handle, `input`
/// and `output` its areas (`input_len` and `output_cap` bytes). `mode`: 0 server default,
/// 1 inline, 2 worker, 4 a request for the server's counters.
///
/// # Safety
/// The out pointers are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_begin(
    client: u32,
    code: u32,
    input_len: u32,
    output_cap: u32,
    mode_flags: u32,
    out: *mut u32,
    input: *mut *mut u8,
    output: *mut *mut u8,
) -> i32 {
    if out.is_null() {
        return invalid("out is null");
    }
    let begun = surface::client(client).and_then(|c| {
        c.begin_with(code, input_len, output_cap, mode_flags, |_, t| {
            (t.input().as_ptr(), t.output().as_ptr())
        })
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
}

/// [`shmcall_client_begin`] for callers that keep one view of the whole segment (JavaScript):
/// writes the areas' offsets in the segment to `offsets[0]` (input) and `offsets[1]`
/// (output), and the slot's index to `offsets[2]` (for [`shmcall_client_withdraw`]); or
/// `u32::MAX` to all three on the backup path, whose buffers [`shmcall_ticket_write_input`]
/// and [`shmcall_ticket_read_output`] reach.
///
/// # Safety
/// `out` is valid for a write; `offsets` for writes of three `u32`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_begin_at(
    client: u32,
    code: u32,
    input_len: u32,
    output_cap: u32,
    mode_flags: u32,
    out: *mut u32,
    offsets: *mut u32,
) -> i32 {
    if out.is_null() || offsets.is_null() {
        return invalid("out or offsets is null");
    }
    match surface::client(client).and_then(|c| c.begin_at(code, input_len, output_cap, mode_flags))
    {
        Ok((handle, begun)) => {
            // SAFETY: `out` is valid for a write and `offsets` for three (caller's contract).
            unsafe {
                offsets.write(begun.input);
                offsets.add(1).write(begun.output);
                offsets.add(2).write(begun.slot);
                out.write(handle);
            }
            OK
        }
        Err(e) => fail(e),
    }
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
    match surface::ticket_areas(ticket) {
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

/// Copies `len` bytes from `src` into the start of a ticket's input area; refuses input
/// longer than the area.
///
/// # Safety
/// `src` is null with `len` 0, or valid for reads of `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_ticket_write_input(
    ticket: u32,
    src: *const u8,
    len: usize,
) -> i32 {
    // SAFETY: forwarded contract.
    done(surface::ticket_write_input(ticket, unsafe {
        bytes(src, len)
    }))
}

/// Copies a finished ticket's output (cut to the reported length) into `dst`, at most `cap`
/// bytes.
///
/// # Safety
/// `dst` is null with `cap` 0, or valid for writes of `cap` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_ticket_read_output(ticket: u32, dst: *mut u8, cap: usize) -> i32 {
    // SAFETY: forwarded contract.
    done(surface::ticket_read_output(ticket, unsafe { bytes_mut(dst, cap) }).map(drop))
}

/// Sends the command and waits on this thread for the answer, for at most `timeout_ms` when it
/// is positive (then `CANCELLED` if the server had not taken it, else `TIMED_OUT`): `status`
/// and `length` are the server's; a library failure is the return value.
///
/// # Safety
/// The out pointers are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_call(
    client: u32,
    ticket: u32,
    timeout_ms: f64,
    status: *mut i32,
    length: *mut u32,
) -> i32 {
    match surface::client(client).and_then(|c| c.call(ticket, timeout_ms)) {
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
}

/// Sends the command and returns at once. The finished ticket reaches the hub as a
/// completion event with `token` and a new handle. The ticket's handle is freed here.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_client_submit(client: u32, ticket: u32, token: u64) -> i32 {
    done(surface::client(client).and_then(|c| c.submit(ticket, token)))
}

/// Withdraws the asynchronous command in slot `slot` (from [`shmcall_client_begin_at`]) if
/// the server has not taken it: returns 1 if it did (the command never runs; its completion,
/// `CANCELLED`, arrives when the server answers it), 0 if not (taken, finished, or on the
/// backup path), or a library failure.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_client_withdraw(client: u32, slot: u32) -> i32 {
    match surface::client(client) {
        Ok(c) => i32::from(c.withdraw(slot)),
        Err(e) => fail(e),
    }
}

/// Lends the client's rings and slots to the caller, which pushes and pops them itself through
/// its view of the segment: writes the segment's layout and where the rings stand to `out` as
/// `len` words (the `LANE_*` positions of [`surface::CONSTANTS`]; `len` at least `LANE_WORDS`).
/// From then on answers to pop reach the hub as lane events. Fails when a command is out.
///
/// # Safety
/// `out` is null or valid for writes of `len` words.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_lend(client: u32, out: *mut u32, len: usize) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { put_lane_words(out, len, || surface::client(client).and_then(|c| c.lend())) }
}

/// The library's monotonic clock, in nanoseconds since its first reading in this process: for
/// JavaScript's lanes, which time commands with it (cheaper than `performance.now()` in Deno).
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_now_ns() -> f64 {
    stats::now_ns() as f64
}

/// After a push onto a lent client's CS ring (and a full fence), wakes the server as its sleep
/// flag asks.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_client_lane_wake(client: u32) -> i32 {
    done(surface::client(client).map(|c| c.lane_wake()))
}

/// The protocol minor a client's connection speaks (the lower of its server's and this
/// library's), or the failure.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_client_protocol_minor(client: u32) -> i32 {
    match surface::client(client) {
        Ok(c) => i32::from(c.protocol_minor()),
        Err(e) => fail(e),
    }
}

/// A lent client takes its answers itself, unprompted: they wake nobody (its one-way sends).
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_client_lane_quiet(client: u32) -> i32 {
    done(surface::client(client).map(|c| c.lane_quiet()))
}

/// A lent client sent an asynchronous command while its SC ring was armed (`WATCHED`): its owner
/// polls it again, so that the answer needs no WAKE frame.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_client_lane_activate(client: u32) -> i32 {
    done(surface::client(client).map(|c| c.lane_activate()))
}

/// Waits until a lent client's SC ring has an answer to pop, for at most `timeout_ms` when
/// positive: 1 when one is there, 0 when the time ran out, or the failure of the connection's
/// end.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_client_lane_wait(client: u32, timeout_ms: f64) -> i32 {
    match surface::client(client).and_then(|c| c.lane_wait(timeout_ms)) {
        Ok(found) => i32::from(found),
        Err(e) => fail(e),
    }
}

/// A lent client's caller found the server breaking the protocol: ends the connection with
/// `why` (UTF-8).
///
/// # Safety
/// `why` is valid for `why_len` bytes (or null with length 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_lane_violation(
    client: u32,
    why: *const u8,
    why_len: usize,
) -> i32 {
    // SAFETY: forwarded contract.
    let why = unsafe { text(why, why_len, "why") };
    done(why.and_then(|w| surface::client(client).map(|c| c.lane_violation(w))))
}

/// Adds what a lent client's caller counted: `len` doubles at the `LANE_COUNT_*` positions
/// (`len` exactly `LANE_COUNT_LEN`).
///
/// # Safety
/// `report` is null or valid for reads of `len` doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_lane_count(
    client: u32,
    report: *const f64,
    len: usize,
) -> i32 {
    // SAFETY: forwarded contract.
    match unsafe { lane_report(report, len) } {
        Ok(copy) => done(surface::client(client).map(|c| c.lane_count(&copy))),
        Err(rc) => rc,
    }
}

/// Writes a client's counters to `out` as `len` doubles (at most [`stats::word::LEN`]; the
/// positions are [`stats::word`]'s).
///
/// # Safety
/// `out` is null or valid for writes of `len` doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_stats(client: u32, out: *mut f64, len: usize) -> i32 {
    match surface::client(client) {
        // SAFETY: `out` is null or valid for `len` doubles (caller's contract).
        Ok(c) => unsafe { copy_words(&c.stats(), out, len) },
        Err(e) => fail(e),
    }
}

/// Writes a server's counters to `out`, as [`shmcall_client_stats`] does.
///
/// # Safety
/// `out` is null or valid for writes of `len` doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_server_stats(server: u32, out: *mut f64, len: usize) -> i32 {
    match surface::server(server) {
        // SAFETY: `out` is null or valid for `len` doubles (caller's contract).
        Ok(s) => unsafe { copy_words(&s.stats(), out, len) },
        Err(e) => fail(e),
    }
}

/// Records the pool's size and whether the server quiesces (`quiescing` 0 or 1), which its
/// counters report.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_server_note(server: u32, workers: u32, quiescing: u32) -> i32 {
    done(surface::server(server).map(|s| s.note(workers, quiescing != 0)))
}

/// A copy of what a lane counted, `len` doubles at `report`; the failure's code when they are
/// not `LANE_COUNT_LEN` of them.
///
/// # Safety
/// `report` is null or valid for reads of `len` doubles.
unsafe fn lane_report(report: *const f64, len: usize) -> Result<[f64; stats::lane::LEN], i32> {
    if report.is_null() || len != stats::lane::LEN {
        return Err(invalid("report is null or not LANE_COUNT_LEN doubles long"));
    }
    // SAFETY: `report` is valid for `len == LEN` doubles (caller's contract); the copy leaves
    // the caller's memory alone after it.
    Ok(unsafe { std::ptr::read_unaligned(report.cast()) })
}

/// Copies the lane layout words that `words` makes to `out`, `len` words long; the failure's
/// code when `out` is shorter than `LANE_WORDS` (then `words` does not run) or `words` failed.
///
/// # Safety
/// `out` is null or valid for writes of `len` words.
unsafe fn put_lane_words(
    out: *mut u32,
    len: usize,
    words: impl FnOnce() -> Result<[u32; surface::LANE_WORDS], Error>,
) -> i32 {
    // Checked before `words` runs: a lend happens once, and its words must not be lost.
    if out.is_null() || len < surface::LANE_WORDS {
        return invalid("out is null or shorter than LANE_WORDS");
    }
    match words() {
        Ok(words) => {
            // SAFETY: `out` is valid for `len >= LANE_WORDS` words (caller's contract) and cannot
            // overlap our local array.
            unsafe { std::ptr::copy_nonoverlapping(words.as_ptr(), out, words.len()) };
            OK
        }
        Err(e) => fail(e),
    }
}

/// Copies a snapshot's first `len` words to `out`.
///
/// # Safety
/// `out` is null or valid for writes of `len` doubles.
unsafe fn copy_words(words: &[f64; stats::word::LEN], out: *mut f64, len: usize) -> i32 {
    if out.is_null() {
        return invalid("out is null");
    }
    let n = len.min(words.len());
    // SAFETY: `out` is valid for `len >= n` doubles, and cannot overlap our local array.
    unsafe { std::ptr::copy_nonoverlapping(words.as_ptr(), out, n) };
    OK
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
    match surface::ticket_answer(ticket) {
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
    done(surface::ticket_free(ticket))
}

// ---------------------------------------------------------------------------------------------
// Server

/// Serves `ic_id`; its opens, commands and closes reach the hub, named by `id`; `out` receives
/// the server's handle. `asks_open` bit 0 set: a client is welcome only once JavaScript answered
/// its open event ([`shmcall_server_opened`]); clear: at once (the open event needs no answer).
/// Bit 1 set: every connection is lent to the caller as it opens, which takes its slot commands
/// itself (`shmcall_server_lane_*`; lane events name the connection). Bit 3 set (not with bit 1):
/// the server has a worker pool, which owns its connections and takes its commands
/// ([`shmcall_server_pool`]), but for those flagged `INLINE` — and, with bit 2 set, those with no
/// mode flag — which reach the hub.
///
/// # Safety
/// `ic_id` and `dir` are valid for their lengths (or null with length 0); `out` is valid for a
/// write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_server_serve(
    ic_id: *const u8,
    ic_id_len: usize,
    dir: *const u8,
    dir_len: usize,
    spin_ns: u64,
    id: u64,
    asks_open: u32,
    out: *mut u32,
) -> i32 {
    if out.is_null() {
        return invalid("out is null");
    }
    // SAFETY: forwarded contract.
    let served = unsafe {
        endpoint(
            (ic_id, ic_id_len),
            (dir, dir_len),
            spin_ns,
            |ic, dir, spin| surface::server_serve(ic, dir, spin, id, asks_open),
        )
    };
    match served {
        Ok(h) => {
            // SAFETY: `out` is non-null and valid for a write.
            unsafe { put(out, h) };
            OK
        }
        Err(e) => fail(e),
    }
}

/// Writes the layout and ring positions of a server's lent connection to `out` as `len` words
/// (`LANE_WORDS` at least; see [`shmcall_client_lend`]).
///
/// # Safety
/// `out` is null or valid for writes of `len` words.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_server_lane_layout(
    server: u32,
    connection: u64,
    out: *mut u32,
    len: usize,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        put_lane_words(out, len, || {
            surface::server(server).and_then(|s| s.lane_layout(connection))
        })
    }
}

/// Maps a server's lent connection's segment for the caller, as [`shmcall_command_segment`].
///
/// # Safety
/// The out pointers are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_server_lane_segment(
    server: u32,
    connection: u64,
    base: *mut *mut u8,
    len: *mut usize,
    out: *mut u32,
) -> i32 {
    match surface::server(server).and_then(|s| s.lane_segment(connection)) {
        // SAFETY: forwarded contract.
        Ok(segment) => unsafe { hold_segment(segment, base, len, out) },
        Err(e) => fail(e),
    }
}

/// After a push onto a lent connection's SC ring (and a full fence), wakes its client as its
/// sleep flag asks.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_server_lane_wake(server: u32, connection: u64) -> i32 {
    done(surface::server(server).map(|s| s.lane_wake(connection)))
}

/// The caller found the client of a lent connection breaking the protocol: drops the
/// connection, telling the client `why` (UTF-8).
///
/// # Safety
/// `why` is valid for `why_len` bytes (or null with length 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_server_lane_violation(
    server: u32,
    connection: u64,
    why: *const u8,
    why_len: usize,
) -> i32 {
    // SAFETY: forwarded contract.
    let why = unsafe { text(why, why_len, "why") };
    done(why.and_then(|w| surface::server(server).map(|s| s.lane_violation(connection, w))))
}

/// The caller keeps a command of a lent connection past its turn (an `exec` that answers
/// later): the connection and its segment stay until [`shmcall_server_lane_release`].
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_server_lane_hold(server: u32, connection: u64) -> i32 {
    done(surface::server(server).and_then(|s| s.lane_hold(connection)))
}

/// The caller answered a command of a lent connection that it kept.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_server_lane_release(server: u32, connection: u64) -> i32 {
    done(surface::server(server).and_then(|s| s.lane_release(connection)))
}

/// The caller, told that a lent connection ended, took what it had left.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_server_lane_drained(server: u32, connection: u64) -> i32 {
    done(surface::server(server).map(|s| s.lane_drained(connection)))
}

/// Adds what a server's lanes counted, as [`shmcall_client_lane_count`].
///
/// # Safety
/// `report` is null or valid for reads of `len` doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_server_lane_count(
    server: u32,
    report: *const f64,
    len: usize,
) -> i32 {
    // SAFETY: forwarded contract.
    match unsafe { lane_report(report, len) } {
        Ok(copy) => done(surface::server(server).map(|s| s.lane_count(&copy))),
        Err(rc) => rc,
    }
}

/// Answers an open: `status` 0 accepts the client; a negative library status refuses it with
/// that status, and `reason` (UTF-8, may be empty) for the client's error.
///
/// # Safety
/// `reason` is valid for `reason_len` bytes (or null with length 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_server_opened(
    server: u32,
    connection: u64,
    status: i32,
    reason: *const u8,
    reason_len: usize,
) -> i32 {
    // SAFETY: forwarded contract.
    let reason = unsafe { text(reason, reason_len, "reason") };
    done(reason.and_then(|r| surface::server(server).map(|s| s.opened(connection, status, r))))
}

/// Takes a command to run it: returns 1, or 0 when its client withdrew it first (it is then
/// answered `CANCELLED` and its handle freed: it must not run), or a library failure.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_command_take(command: u32) -> i32 {
    match surface::command_take(command) {
        Ok(taken) => i32::from(taken),
        Err(e) => fail(e),
    }
}

/// Answers a command with `status` and the output `length`, and frees the command handle.
/// `output`, when not null, is copied into the command's output area first, at most
/// `output_len` bytes (JavaScript answers backup-path commands from its own buffer, whose
/// length may differ from the `length` its handler reported).
///
/// # Safety
/// `output` is null or valid for reads of `output_len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_command_finish(
    command: u32,
    status: i32,
    length: u32,
    output: *const u8,
    output_len: u32,
) -> i32 {
    // SAFETY: forwarded contract (`output` valid for `output_len` bytes when not null).
    let from = (!output.is_null()).then(|| unsafe { bytes(output, output_len as usize) });
    done(surface::command_finish(command, status, length, from))
}

/// Holds an exec event's segment mapped (for a view JavaScript keeps per connection) until
/// [`shmcall_segment_release`] of `out`, with its first byte and length; `out` receives 0 for
/// backup-path commands.
///
/// # Safety
/// The out pointers are null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_command_segment(
    command: u32,
    base: *mut *mut u8,
    len: *mut usize,
    out: *mut u32,
) -> i32 {
    match surface::command_segment(command) {
        // SAFETY: forwarded contract.
        Ok(Some(segment)) => unsafe { hold_segment(segment, base, len, out) },
        Ok(None) => {
            // SAFETY: `out` is null or valid for a write.
            unsafe { put(out, 0) };
            OK
        }
        Err(e) => fail(e),
    }
}

/// Copies a command's input into `dst`, at most `cap` bytes.
///
/// # Safety
/// `dst` is null with `cap` 0, or valid for writes of `cap` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_command_read_input(command: u32, dst: *mut u8, cap: usize) -> i32 {
    // SAFETY: forwarded contract.
    done(surface::command_read_input(command, unsafe { bytes_mut(dst, cap) }).map(drop))
}

/// Stops the server and frees its handle: connections end, their commands still in the hub
/// are answered when JavaScript finishes them (or HANDLER_FAILED if it drops them).
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_server_free(server: u32) -> i32 {
    done(surface::server_free(server))
}

// ---------------------------------------------------------------------------------------------
// Event queues

/// Hosts the event queue `queue_id` in `dir` (empty: the default directory); the handle goes
/// to `out`.
///
/// # Safety
/// `queue_id` and `dir` are valid for their lengths (or null with length 0); `out` is valid for
/// a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_queue_serve(
    queue_id: *const u8,
    queue_id_len: usize,
    dir: *const u8,
    dir_len: usize,
    out: *mut u32,
) -> i32 {
    if out.is_null() {
        return invalid("out is null");
    }
    // SAFETY: forwarded contract.
    let served = unsafe {
        endpoint((queue_id, queue_id_len), (dir, dir_len), 0, |id, dir, _| {
            surface::queue_serve(id, dir)
        })
    };
    match served {
        Ok(h) => {
            // SAFETY: `out` is non-null and valid for a write.
            unsafe { put(out, h) };
            OK
        }
        Err(e) => fail(e),
    }
}

/// An event queue's counters, `QUEUE_STATS_LEN` doubles into `out` (fewer when `len` is
/// smaller).
///
/// # Safety
/// `out` is null or valid for writes of `len` doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_queue_stats(queue: u32, out: *mut f64, len: usize) -> i32 {
    if out.is_null() {
        return invalid("out is null");
    }
    match surface::queue_stats(queue) {
        Ok(words) => {
            let n = len.min(words.len());
            // SAFETY: `out` is valid for `len >= n` doubles, and cannot overlap a local array.
            unsafe { std::ptr::copy_nonoverlapping(words.as_ptr(), out, n) };
            OK
        }
        Err(e) => fail(e),
    }
}

/// Stops hosting an event queue and frees its handle.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_queue_free(queue: u32) -> i32 {
    done(surface::queue_free(queue))
}

// ---------------------------------------------------------------------------------------------
// Hub

/// Takes the next event; [`EMPTY`] when there is none.
///
/// # Safety
/// `event` is valid for a write of a [`HubEvent`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_hub_next(event: *mut HubEvent) -> i32 {
    if event.is_null() {
        return invalid("event is null");
    }
    match surface::hub_next() {
        Ok(Some(e)) => {
            // SAFETY: `event` is non-null and valid for a write.
            unsafe { event.write(e) };
            OK
        }
        Ok(None) => EMPTY,
        Err(e) => fail(e),
    }
}

/// Writes to `out` a handle of the pool of `server` (one served without lanes), which outlives
/// the server until [`shmcall_pool_free`].
///
/// # Safety
/// `out` is valid for a write of a `u32`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_server_pool(server: u32, out: *mut u32) -> i32 {
    if out.is_null() {
        return invalid("out is null");
    }
    match surface::server_pool(server) {
        Ok(pool) => {
            // SAFETY: `out` is non-null and valid for a write.
            unsafe { out.write(pool) };
            OK
        }
        Err(e) => fail(e),
    }
}

/// Frees a pool's handle, once its workers stopped.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_pool_free(pool: u32) -> i32 {
    done(surface::pool_free(pool))
}

/// Worker `worker` of `pool` waits for its next command, spinning `spin_ns` then sleeping, for
/// at most `wait_ns`: writes it to `event` as an exec event and returns [`OK`]; [`EMPTY`] when
/// none came; fails `CLOSED` once the server closed.
///
/// # Safety
/// `event` is valid for a write of a [`HubEvent`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_pool_take(
    pool: u32,
    worker: u32,
    spin_ns: u64,
    wait_ns: u64,
    event: *mut HubEvent,
) -> i32 {
    if event.is_null() {
        return invalid("event is null");
    }
    let (spin, wait) = (Duration::from_nanos(spin_ns), Duration::from_nanos(wait_ns));
    match surface::pool_take(pool, worker, spin, wait) {
        Ok(Some(e)) => {
            // SAFETY: `event` is non-null and valid for a write.
            unsafe { event.write(e) };
            OK
        }
        Ok(None) => EMPTY,
        Err(e) => fail(e),
    }
}

/// Answers with `status` the commands that worker `worker` of `pool` held (it is gone);
/// returns how many (>= 0).
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_pool_bury(pool: u32, worker: u32, status: i32) -> i32 {
    count(surface::pool_bury(pool, worker, status))
}

/// JavaScript takes the pool's poke, before it posts the workers their messages.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_pool_poked(pool: u32) -> i32 {
    done(surface::pool_poked(pool))
}

/// The commands `pool` has queued or held (>= 0).
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_pool_in_progress(pool: u32) -> i32 {
    count(surface::pool_in_progress(pool))
}

/// Makes the calling thread the one JavaScript thread that drains the hub; refuses, with
/// INVALID_ARGUMENT, while another thread has clients or servers open. Returns how many
/// doorbells were installed so far (>= 0), as [`shmcall_hub_bells`].
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_claim() -> i32 {
    surface::hub_claim().unwrap_or_else(fail)
}

/// How many doorbells were installed so far (>= 0): a thread that installed one sees whether
/// it is still the hub's.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_bells() -> i32 {
    surface::hub_bells()
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

/// JavaScript begins draining the hub, for at most `budget_ns` before it hands the event loop
/// back (see [`shmcall_hub_idle`]); 0 for no limit.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_drain(budget_ns: u32) -> i32 {
    HUB.drain_begin(Duration::from_nanos(budget_ns.into()));
    OK
}

/// Returns 1 when the current drain's budget is spent, else 0.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_spent() -> i32 {
    i32::from(HUB.spent())
}

/// JavaScript drained the hub and is about to go idle: first polls its connections for up to
/// `wait_ns` (no later than the drain's budget allows), then arms them and the doorbell.
/// Returns 1 when it may go idle, 0 when events arrived (drain again), 2 when the drain's
/// budget ran out (drain again in a task of its own; nothing is armed).
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_idle(wait_ns: u32) -> i32 {
    HUB.idle(Duration::from_nanos(wait_ns.into())).code()
}

/// The fallback doorbell, for a `nonblocking` call: sleeps until an event is queued,
/// [`shmcall_hub_interrupt`] is called, or `timeout_ns` passes. Returns 1 when events are
/// queued, else 0.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_wait(timeout_ns: u32) -> i32 {
    i32::from(HUB.wait(Duration::from_nanos(timeout_ns.into())))
}

/// Ends a pending [`shmcall_hub_wait`] at once.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_interrupt() -> i32 {
    HUB.interrupt();
    OK
}
