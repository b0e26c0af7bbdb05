//! The C surface that Deno's FFI binds (`ffi/symbols.ts` is its one symbol table).
//!
//! Conventions (after iceoryx2-ffi): one prefix, `shmcall_`; opaque handles created and freed
//! only here; every function returns an `i32`: [`OK`], [`EMPTY`] ("nothing ready yet"), or a
//! negative [`Status`] code, with the sentence of the last failure on this thread available
//! from [`shmcall_last_error`]. Null handles are checked first and answer
//! [`Status::InvalidArgument`]. Functions never unwind into the caller: a panic becomes
//! [`Status::HandlerFailed`].
//!
//! Each function converts its arguments and results and calls the operation of the same name
//! in [`crate::surface`], which the Node-API surface ([`crate::napi`]) wraps too. Tickets and
//! commands are `u32` handles. Areas are handed out as offsets in a segment, which stays mapped
//! while any ticket, command or [`SegmentRef`] of it exists: JavaScript holds a `SegmentRef`
//! for as long as a view over the segment is reachable. Backup-path areas are reached by copies
//! ([`shmcall_ticket_write_input`], [`shmcall_ticket_read_output`],
//! [`shmcall_command_read_input`]).

use std::sync::Arc;
use std::time::Duration;

use crate::hub::{HUB, Idle};
use crate::segment::{PROTOCOL_MAJOR, PROTOCOL_MINOR, Segment};
use crate::stats;
use crate::status::{Error, Status};
use crate::surface::{self, fail};

pub use crate::surface::{
    ClientHandle, EVENT_CLOSE, EVENT_COMPLETION, EVENT_EXEC, EVENT_OPEN, HubEvent, ServerHandle,
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

/// The spin budget `u64::MAX` means "the default".
fn spin(spin_ns: u64) -> Option<Duration> {
    (spin_ns != u64::MAX).then(|| Duration::from_nanos(spin_ns))
}

/// Copies the last failure's sentence on this thread into `buf` (UTF-8, not terminated) and
/// returns its full length in bytes, which may exceed `cap`.
///
/// # Safety
/// `buf` is null with `cap` 0, or valid for writes of `cap` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_last_error(buf: *mut u8, cap: usize) -> i32 {
    // SAFETY: forwarded contract.
    let dst = unsafe { bytes_mut(buf, cap) };
    surface::with_last_error(|l| {
        let n = l.len().min(dst.len());
        dst[..n].copy_from_slice(&l.as_bytes()[..n]);
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
    // SAFETY: forwarded contract.
    let dst = unsafe { bytes_mut(buf, cap) };
    let n = name.len().min(dst.len());
    dst[..n].copy_from_slice(&name[..n]);
    name.len() as i32
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
        Ok(path) => {
            // SAFETY: forwarded contract.
            let dst = unsafe { bytes_mut(buf, cap) };
            let n = path.len().min(dst.len());
            dst[..n].copy_from_slice(&path.as_bytes()[..n]);
            path.len() as i32
        }
        Err(e) => fail(e),
    }
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
    // SAFETY: forwarded contract.
    let connected = unsafe {
        endpoint(
            (ic_id, ic_id_len),
            (dir, dir_len),
            spin_ns,
            |ic, dir, spin| ClientHandle::connect(ic, dir, spin, id),
        )
    };
    match connected {
        Ok(h) => {
            // SAFETY: `out` is non-null and valid for a write.
            unsafe { put(out, Box::into_raw(Box::new(h))) };
            OK
        }
        Err(e) => {
            let rc = fail(e);
            // SAFETY: the caller promised `error` is valid for `error_cap` bytes.
            unsafe { shmcall_last_error(error, error_cap) };
            rc
        }
    }
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
    let r = segment_ref(h.segment(), base, len);
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
    done(surface::guard(|| {
        h.close();
        Ok(())
    }))
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
    done(surface::guard(move || {
        h.close();
        Ok(())
    }))
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
    let begun = h.begin_with(code, input_len, output_cap, mode_flags, |_, t| {
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
}

/// [`shmcall_client_begin`] for callers that keep one view of the whole segment (JavaScript):
/// writes the areas' offsets in the segment to `offsets[0]` (input) and `offsets[1]`
/// (output), and the slot's index to `offsets[2]` (for [`shmcall_client_withdraw`]); or
/// `u32::MAX` to all three on the backup path, whose buffers [`shmcall_ticket_write_input`]
/// and [`shmcall_ticket_read_output`] reach.
///
/// # Safety
/// `client` is a live handle; `out` is valid for a write; `offsets` for writes of three `u32`.
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
    match h.begin_at(code, input_len, output_cap, mode_flags) {
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
    match h.call(ticket) {
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
    done(h.submit(ticket, token))
}

/// Withdraws the asynchronous command in slot `slot` (from [`shmcall_client_begin_at`]) if
/// the server has not taken it: returns 1 if it did (the command never runs; its completion,
/// `CANCELLED`, arrives when the server answers it), 0 if not (taken, finished, on the backup
/// path, or the server speaks protocol 1.0), or a library failure.
///
/// # Safety
/// `client` is a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_withdraw(client: *mut ClientHandle, slot: u32) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { client.as_ref() }) else {
        return invalid("client is null");
    };
    i32::from(h.withdraw(slot))
}

/// Writes a client's counters to `out` as `len` doubles (at most [`stats::word::LEN`]; the
/// positions are [`stats::word`]'s).
///
/// # Safety
/// `client` is a live handle; `out` is null or valid for writes of `len` doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_client_stats(
    client: *mut ClientHandle,
    out: *mut f64,
    len: usize,
) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { client.as_ref() }) else {
        return invalid("client is null");
    };
    // SAFETY: `out` is null or valid for `len` doubles (caller's contract).
    unsafe { copy_words(&h.stats(), out, len) }
}

/// Writes a server's counters to `out`, as [`shmcall_client_stats`] does.
///
/// # Safety
/// `server` is a live handle; `out` is null or valid for writes of `len` doubles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_server_stats(
    server: *mut ServerHandle,
    out: *mut f64,
    len: usize,
) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { server.as_ref() }) else {
        return invalid("server is null");
    };
    // SAFETY: `out` is null or valid for `len` doubles (caller's contract).
    unsafe { copy_words(&h.stats(), out, len) }
}

/// Records the pool's size and whether the server quiesces (`quiescing` 0 or 1), which its
/// counters report.
///
/// # Safety
/// `server` is a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmcall_server_note(
    server: *mut ServerHandle,
    workers: u32,
    quiescing: u32,
) -> i32 {
    // SAFETY: the caller promised a live handle or null.
    let Some(h) = (unsafe { server.as_ref() }) else {
        return invalid("server is null");
    };
    h.note(workers, quiescing != 0);
    OK
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
    // SAFETY: forwarded contract.
    let served = unsafe {
        endpoint(
            (ic_id, ic_id_len),
            (dir, dir_len),
            spin_ns,
            |ic, dir, spin| ServerHandle::serve(ic, dir, spin, id),
        )
    };
    match served {
        Ok(h) => {
            // SAFETY: `out` is non-null and valid for a write.
            unsafe { put(out, Box::into_raw(Box::new(h))) };
            OK
        }
        Err(e) => fail(e),
    }
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
    h.opened(connection, status);
    OK
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
    let segment = match surface::command_segment(command) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let r = segment.map_or(std::ptr::null_mut(), |s| segment_ref(s, base, len));
    // SAFETY: `out` is null or valid for a write.
    unsafe { put(out, r) };
    OK
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
    done(surface::guard(move || {
        h.close();
        Ok(())
    }))
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

/// Makes the calling thread the one JavaScript thread that drains the hub; refuses, with
/// INVALID_ARGUMENT, while another thread has clients or servers open.
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_claim() -> i32 {
    done(surface::hub_claim())
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

/// JavaScript drained the hub and is about to go idle: first waits up to `wait_ns` for more
/// events (no later than the drain's budget allows), then arms the doorbell. Returns 1 when it
/// may go idle, 0 when events arrived (drain again), 2 when the drain's budget ran out (drain
/// again in a task of its own; the doorbell is not armed and the rings stay held).
#[unsafe(no_mangle)]
pub extern "C" fn shmcall_hub_idle(wait_ns: u32) -> i32 {
    idle_code(HUB.idle(Duration::from_nanos(wait_ns.into())))
}

/// The code of an [`Idle`] for JavaScript (`IDLE` in `src/native.ts`).
pub fn idle_code(idle: Idle) -> i32 {
    match idle {
        Idle::Events => 0,
        Idle::Idle => 1,
        Idle::Spent => 2,
    }
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
