//! The C surface, driven the way the Deno layer drives it: from the thread that claimed the
//! hub, which owns the connections it makes and pops their rings in `shmcall_hub_idle`.

#[path = "../../core-rs/tests/common/mod.rs"]
mod common;

use std::ptr::null_mut;

use common::{Peer, TempDir, WAIT};
use shmcall::ffi::*;
use shmcall_core::{Call, Client, Copying, Status};

const ECHO: u32 = 1;

/// The hub is one per process and tests run in parallel threads: they take turns, each
/// claiming it for its thread, as a JavaScript thread does.
static HUB_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the hub for the calling thread until dropped.
struct Turn(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

fn turn() -> Turn {
    let guard = HUB_TURN.lock().unwrap_or_else(|p| p.into_inner());
    assert!(shmcall_hub_claim() >= OK);
    Turn(guard)
}

impl Drop for Turn {
    fn drop(&mut self) {
        shmcall_hub_unclaim();
    }
}

/// Waits (bounded) for the next hub event, polling the hub's connections meanwhile as a
/// JavaScript thread does when it goes idle.
fn next_event() -> HubEvent {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut e = std::mem::MaybeUninit::<HubEvent>::uninit();
        // SAFETY: `e` is valid for a write of a HubEvent.
        if unsafe { shmcall_hub_next(e.as_mut_ptr()) } == OK {
            // SAFETY: `next` returned OK, so it wrote the event.
            return unsafe { e.assume_init() };
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no hub event within {WAIT:?}"
        );
        if shmcall_hub_idle(200_000) == 1 {
            shmcall_hub_wait(100_000_000);
        }
    }
}

fn last_error() -> String {
    let mut buf = vec![0u8; 512];
    // SAFETY: `buf` is valid for its length.
    let n = unsafe { shmcall_last_error(buf.as_mut_ptr(), buf.len()) } as usize;
    buf.truncate(n.min(512));
    String::from_utf8(buf).unwrap()
}

/// Connects through the C surface, waiting for the connected event when the answer did not come
/// at once; the client's handle, or the failure's status (at once, or from the event).
fn connect(dir: &TempDir, ic_id: &str, id: u64) -> Result<u32, i32> {
    let d = dir.path().to_str().unwrap();
    let mut handle = 0u32;
    // SAFETY: the strings are valid for their lengths, `handle` for a write.
    let rc = unsafe {
        shmcall_client_connect(
            ic_id.as_ptr(),
            ic_id.len(),
            d.as_ptr(),
            d.len(),
            u64::MAX,
            0,
            id,
            &mut handle,
        )
    };
    match rc {
        OK => return Ok(handle),
        EMPTY => {}
        failed => return Err(failed),
    }
    let e = next_event();
    assert_eq!((e.kind, e.owner), (EVENT_CONNECTED, id));
    if e.code < 0 {
        Err(e.code)
    } else {
        Ok(e.handle as u32)
    }
}

#[test]
fn a_c_client_makes_sync_and_async_round_trips() {
    let _turn = turn();
    let dir = TempDir::new("c-client");
    let _server = Peer::server(&dir, "c-client", &[]);
    let client = connect(&dir, "c-client", 11).unwrap();
    // SAFETY: every pointer below comes from the library or is a live local.
    unsafe {
        let (mut ticket, mut input, mut output) = (0u32, null_mut(), null_mut());
        assert_eq!(
            shmcall_client_begin(client, ECHO, 5, 16, 0, &mut ticket, &mut input, &mut output),
            OK
        );
        assert!(!output.is_null());
        std::ptr::copy_nonoverlapping(b"hello".as_ptr(), input, 5);
        let (mut status, mut length) = (-99, 0);
        assert_eq!(
            shmcall_client_call(client, ticket, 0.0, &mut status, &mut length),
            OK
        );
        assert_eq!((status, length), (0, 5));
        let mut out = null_mut();
        assert_eq!(
            shmcall_ticket_answer(ticket, &mut status, &mut length, &mut out),
            OK
        );
        assert_eq!(std::slice::from_raw_parts(out, length as usize), b"hello");
        assert_eq!(shmcall_ticket_free(ticket), OK);
        assert_eq!(
            shmcall_ticket_free(ticket),
            Status::InvalidArgument.code(),
            "a ticket freed twice is refused"
        );
        assert_eq!(
            shmcall_ticket_answer(ticket, &mut status, &mut length, &mut out),
            Status::InvalidArgument.code(),
            "a freed ticket is not read"
        );

        // The segment handle maps what the areas point into.
        let (mut base, mut len, mut seg) = (null_mut(), 0usize, 0u32);
        assert_eq!(
            shmcall_client_segment(client, &mut base, &mut len, &mut seg),
            OK
        );
        assert_eq!(
            shmcall_client_begin(client, ECHO, 3, 8, 2, &mut ticket, &mut input, &mut output),
            OK
        );
        assert!(
            input >= base && input.add(3) <= base.add(len),
            "a slot area lies in the segment"
        );
        std::ptr::copy_nonoverlapping(b"abc".as_ptr(), input, 3);
        assert_eq!(shmcall_client_submit(client, ticket, 42), OK);
        let e = next_event();
        assert_eq!(
            (e.kind, e.owner, e.token, e.code),
            (EVENT_COMPLETION, 11, 42, 0)
        );
        assert_eq!(
            std::slice::from_raw_parts(e.input, e.input_len as usize),
            b"abc"
        );
        assert_eq!(
            std::slice::from_raw_parts(e.output, e.output_len as usize),
            b"abc"
        );
        assert_eq!(shmcall_ticket_free(e.handle as u32), OK);
        let mut none = std::mem::MaybeUninit::<HubEvent>::uninit();
        assert_eq!(
            shmcall_hub_next(none.as_mut_ptr()),
            EMPTY,
            "nothing else arrived"
        );
        assert_eq!(shmcall_client_free(client), OK);
        assert_eq!(
            shmcall_client_free(client),
            Status::InvalidArgument.code(),
            "a client freed twice is refused"
        );
        // The segment outlives the client while held.
        assert_eq!(std::slice::from_raw_parts(base, 8), b"SHMCALL\0");
        assert_eq!(shmcall_segment_release(seg), OK);
        assert_eq!(
            shmcall_segment_release(seg),
            Status::InvalidArgument.code(),
            "a segment released twice is refused"
        );
    }
}

#[test]
fn a_backup_commands_output_stays_where_begin_put_it() {
    let _turn = turn();
    let dir = TempDir::new("c-backup");
    let _server = Peer::server(&dir, "c-backup", &[]);
    let client = connect(&dir, "c-backup", 12).unwrap();
    // Larger than any slot of the default geometry: the backup path, with heap areas.
    let input: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let n = input.len() as u32;
    // SAFETY: every pointer below comes from the library or is a live local.
    unsafe {
        let (mut ticket, mut in_area, mut out_area) = (0u32, null_mut(), null_mut());
        assert_eq!(
            shmcall_client_begin(
                client,
                ECHO,
                n,
                n,
                0,
                &mut ticket,
                &mut in_area,
                &mut out_area
            ),
            OK
        );
        std::ptr::copy_nonoverlapping(input.as_ptr(), in_area, input.len());
        let (mut status, mut length, mut answered) = (0, 0, null_mut());
        assert_eq!(
            shmcall_client_call(client, ticket, 0.0, &mut status, &mut length),
            OK
        );
        assert_eq!(
            shmcall_ticket_answer(ticket, &mut status, &mut length, &mut answered),
            OK
        );
        // A caller that kept the pointer from `begin` (as a JavaScript view does) reads the
        // answer there: the buffer did not move.
        assert_eq!(answered, out_area);
        assert_eq!(
            std::slice::from_raw_parts(out_area, length as usize),
            &input[..]
        );
        assert_eq!(shmcall_ticket_free(ticket), OK);
        assert_eq!(shmcall_client_free(client), OK);
    }
}

#[test]
fn backup_path_areas_are_reached_by_copies_that_never_overrun() {
    let _turn = turn();
    let dir = TempDir::new("c-copies");
    let _server = Peer::server(&dir, "c-copies", &[]);
    let client = connect(&dir, "c-copies", 13).unwrap();
    let input: Vec<u8> = (0..3u32 << 20).map(|i| (i % 253) as u8).collect();
    let n = input.len() as u32;
    // SAFETY: every pointer below comes from the library or is a live local of the length given.
    unsafe {
        let (mut ticket, mut offsets) = (0u32, [0u32; 2]);
        assert_eq!(
            shmcall_client_begin_at(client, ECHO, n, n, 0, &mut ticket, offsets.as_mut_ptr()),
            OK
        );
        assert_eq!(
            offsets,
            [u32::MAX; 2],
            "larger than any slot: the backup path"
        );
        // An input longer than the area is refused, naming both sizes; nothing is written.
        let longer = vec![0u8; input.len() + 1];
        assert_eq!(
            shmcall_ticket_write_input(ticket, longer.as_ptr(), longer.len()),
            Status::InvalidArgument.code()
        );
        assert!(
            last_error().contains(&format!("{} bytes", longer.len()))
                && last_error().contains(&format!("{n} bytes")),
            "{}",
            last_error()
        );
        // The output of a command not yet answered cannot be read.
        let mut early = [0u8; 4];
        assert_eq!(
            shmcall_ticket_read_output(ticket, early.as_mut_ptr(), early.len()),
            Status::InvalidArgument.code()
        );
        assert_eq!(
            shmcall_ticket_write_input(ticket, input.as_ptr(), input.len()),
            OK
        );
        let (mut status, mut length) = (0, 0);
        assert_eq!(
            shmcall_client_call(client, ticket, 0.0, &mut status, &mut length),
            OK
        );
        assert_eq!(length, n);
        // A shorter buffer gets the first bytes only; a whole one gets them all.
        let mut head = vec![0u8; 1000];
        assert_eq!(
            shmcall_ticket_read_output(ticket, head.as_mut_ptr(), head.len()),
            OK
        );
        assert_eq!(head, input[..1000]);
        let mut whole = vec![0u8; input.len()];
        assert_eq!(
            shmcall_ticket_read_output(ticket, whole.as_mut_ptr(), whole.len()),
            OK
        );
        assert_eq!(whole, input);
        assert_eq!(shmcall_ticket_free(ticket), OK);
        // A freed ticket is refused by number.
        assert_eq!(
            shmcall_ticket_write_input(ticket, input.as_ptr(), 1),
            Status::InvalidArgument.code()
        );
        assert_eq!(shmcall_client_free(client), OK);
    }
}

#[test]
fn c_failures_return_negative_statuses_and_a_sentence() {
    let _turn = turn();
    let dir = TempDir::new("c-errors");
    assert_eq!(
        connect(&dir, "nobody", 14).unwrap_err(),
        Status::NotFound.code()
    );
    assert!(last_error().contains("'nobody'"), "{}", last_error());
    assert_eq!(
        connect(&dir, "bad id", 14).unwrap_err(),
        Status::InvalidArgument.code()
    );
    assert!(last_error().contains("\"bad id\""), "{}", last_error());
    // Handles that were never given out (or were freed) are refused by number, never
    // dereferenced: clients and servers as tickets and commands.
    for forged in [0, 1, 0x0100_0000, u32::MAX] {
        assert_eq!(shmcall_client_free(forged), Status::InvalidArgument.code());
        assert!(
            last_error().contains(&format!("client handle {forged} is not live")),
            "{}",
            last_error()
        );
        assert_eq!(shmcall_server_free(forged), Status::InvalidArgument.code());
        assert_eq!(
            shmcall_client_withdraw(forged, 0),
            Status::InvalidArgument.code()
        );
        assert_eq!(
            shmcall_segment_release(forged),
            Status::InvalidArgument.code()
        );
        assert_eq!(shmcall_ticket_free(forged), Status::InvalidArgument.code());
        assert!(
            last_error().contains(&format!("ticket handle {forged} is not live")),
            "{}",
            last_error()
        );
        assert_eq!(
            // SAFETY: a null output is allowed.
            unsafe { shmcall_command_finish(forged, 0, 0, std::ptr::null(), 0) },
            Status::InvalidArgument.code()
        );
        assert!(last_error().contains("command handle"), "{}", last_error());
    }
    assert_eq!(
        shmcall_protocol_version(),
        i32::from(shmcall_core::PROTOCOL_MAJOR) << 16 | i32::from(shmcall_core::PROTOCOL_MINOR)
    );
}

#[test]
fn a_c_server_hands_out_open_exec_and_close_in_order() {
    let _guard = HUB_TURN.lock().unwrap_or_else(|p| p.into_inner());
    let dir = TempDir::new("c-server");
    let d = dir.path().to_str().unwrap().to_string();
    let id = "c-server";
    let mut server = 0u32;
    assert_eq!(
        // SAFETY: the strings are valid for their lengths and `server` for a write.
        unsafe {
            shmcall_server_serve(
                id.as_ptr(),
                id.len(),
                d.as_ptr(),
                d.len(),
                u64::MAX,
                21,
                1,
                &mut server,
            )
        },
        OK
    );
    // The event loop a JavaScript server runs, on its own thread here, which claims the hub.
    let events = std::thread::spawn(move || {
        assert!(shmcall_hub_claim() >= OK);
        let mut seen = Vec::new();
        loop {
            let e = next_event();
            assert_eq!(e.owner, 21);
            match e.kind {
                EVENT_OPEN => {
                    seen.push(format!("open {}", e.token));
                    // SAFETY: no reason: a null pointer with length 0.
                    let opened =
                        unsafe { shmcall_server_opened(server, e.token, 0, std::ptr::null(), 0) };
                    assert_eq!(opened, OK);
                }
                EVENT_EXEC => {
                    seen.push(format!("exec {}", e.code));
                    assert_eq!(e.in_segment, 1, "a slot command lies in its segment");
                    // SAFETY: the event's areas are valid for their lengths until finish.
                    unsafe {
                        let input = std::slice::from_raw_parts(e.input, e.input_len as usize);
                        let reversed: Vec<u8> = input.iter().rev().copied().collect();
                        std::ptr::copy_nonoverlapping(reversed.as_ptr(), e.output, reversed.len());
                        shmcall_command_finish(
                            e.handle as u32,
                            3,
                            reversed.len() as u32,
                            std::ptr::null(),
                            0,
                        );
                    }
                }
                EVENT_CLOSE => {
                    seen.push(format!("close {}", e.token));
                    shmcall_hub_unclaim();
                    return seen;
                }
                other => panic!("unexpected event kind {other}"),
            }
        }
    });
    let client = Client::connect(id, &dir.connect_options()).unwrap();
    let out = client
        .execute(
            &Call {
                code: 9,
                input: b"stressed",
                output_len: 8,
                ..Call::default()
            },
            &mut Copying,
        )
        .unwrap();
    assert_eq!((out.status, out.output.as_slice()), (3, &b"desserts"[..]));
    client.close();
    let seen = common::within("the event loop", move || events.join().unwrap());
    assert_eq!(seen, ["open 1", "exec 9", "close 1"]);
    assert_eq!(shmcall_server_free(server), OK);
    assert!(
        dir.entries().is_empty(),
        "the freed server left {:?}",
        dir.entries()
    );
}

#[test]
fn a_drain_hands_the_event_loop_back_once_its_budget_is_spent() {
    let _turn = turn();
    use shmcall::hub::{Event, HUB};
    use std::time::{Duration, Instant};

    // A close for a server nobody registered: JavaScript would drop it.
    let push = || {
        HUB.push(Event::Close {
            server: 0xdead,
            conn: 1,
        })
    };
    let take_all = || {
        let mut e = std::mem::MaybeUninit::<HubEvent>::uninit();
        // SAFETY: `e` is valid for a write of a HubEvent.
        while unsafe { shmcall_hub_next(e.as_mut_ptr()) } == OK {}
    };
    const EVENTS: i32 = 0;
    const IDLE: i32 = 1;
    const SPENT: i32 = 2;

    let budget = Duration::from_millis(20);
    let began = Instant::now();
    shmcall_hub_drain(budget.as_nanos() as u32);
    push();
    let within_budget = (shmcall_hub_spent(), shmcall_hub_idle(200_000));
    let checked = began.elapsed();
    take_all();
    // Let the budget pass (the passage of time is what is tested), with an event waiting.
    std::thread::sleep(budget.saturating_sub(began.elapsed()) + Duration::from_millis(1));
    push();
    let spent = (shmcall_hub_spent(), shmcall_hub_idle(200_000));
    take_all();
    // Spent with nothing waiting: still a turn of the event loop, not idleness (the stream
    // may go on); going idle is for a wait that found nothing within the budget.
    let nothing_left = shmcall_hub_idle(200_000);
    shmcall_hub_drain(10_000_000);
    let quiet = shmcall_hub_idle(200_000);
    // Leave the hub idle and without a budget for the other tests.
    shmcall_hub_drain(0);
    take_all();
    shmcall_hub_idle(0);

    if checked < budget {
        assert_eq!(
            within_budget,
            (0, EVENTS),
            "within its budget, a drain goes on"
        );
    }
    assert_eq!(spent, (1, SPENT), "past its budget, with events waiting");
    assert_eq!(nothing_left, SPENT, "past its budget, with nothing waiting");
    assert_eq!(quiet, IDLE, "nothing within the wait, the budget not spent");
}
