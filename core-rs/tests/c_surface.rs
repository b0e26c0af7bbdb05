//! The C surface, driven the way the Deno layer drives it.

mod common;

use std::ptr::null_mut;

use common::{Peer, TempDir, WAIT};
use shmcall::ffi::*;
use shmcall::{Call, Client, Copying, Status};

const ECHO: u32 = 1;

fn last_error() -> String {
    let mut buf = vec![0u8; 512];
    // SAFETY: `buf` is valid for its length.
    let n = unsafe { shmcall_last_error(buf.as_mut_ptr(), buf.len()) } as usize;
    buf.truncate(n.min(512));
    String::from_utf8(buf).unwrap()
}

fn connect(dir: &TempDir, ic_id: &str) -> Result<*mut ClientHandle, i32> {
    let d = dir.path().to_str().unwrap();
    let mut client = null_mut();
    // SAFETY: the strings are valid for their lengths and `client` for a write.
    let rc = unsafe {
        shmcall_client_connect(
            ic_id.as_ptr(),
            ic_id.len(),
            d.as_ptr(),
            d.len(),
            u64::MAX,
            &mut client,
        )
    };
    if rc == OK { Ok(client) } else { Err(rc) }
}

#[test]
fn a_c_client_makes_sync_and_async_round_trips() {
    let dir = TempDir::new("c-client");
    let _server = Peer::server(&dir, "c-client", &[]);
    let client = connect(&dir, "c-client").unwrap();
    // SAFETY: every pointer below comes from the library or is a live local.
    unsafe {
        let (mut ticket, mut input, mut output) = (null_mut(), null_mut(), null_mut());
        assert_eq!(
            shmcall_client_begin(client, ECHO, 5, 16, 0, &mut ticket, &mut input, &mut output),
            OK
        );
        assert!(!output.is_null());
        std::ptr::copy_nonoverlapping(b"hello".as_ptr(), input, 5);
        let (mut status, mut length) = (-99, 0);
        assert_eq!(
            shmcall_client_call(client, ticket, &mut status, &mut length),
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
            shmcall_client_begin(client, ECHO, 3, 8, 2, &mut ticket, &mut input, &mut output),
            OK
        );
        std::ptr::copy_nonoverlapping(b"abc".as_ptr(), input, 3);
        assert_eq!(shmcall_client_submit(client, ticket, 42), OK);
        let (mut token, mut done) = (0u64, null_mut());
        assert_eq!(
            shmcall_client_poll(client, WAIT.as_nanos() as u64, &mut token, &mut done),
            OK
        );
        assert_eq!(token, 42);
        assert_eq!(
            shmcall_ticket_answer(done, &mut status, &mut length, &mut out),
            OK
        );
        assert_eq!(std::slice::from_raw_parts(out, length as usize), b"abc");
        assert_eq!(shmcall_ticket_free(done), OK);
        // Nothing else is pending: a short poll says so.
        assert_eq!(
            shmcall_client_poll(client, 1_000_000, &mut token, &mut done),
            EMPTY
        );
        assert_eq!(shmcall_client_close(client), OK);
        assert_eq!(shmcall_client_close(client), OK, "close is idempotent");
        assert_eq!(shmcall_client_free(client), OK);
    }
}

#[test]
fn a_backup_commands_output_stays_where_begin_put_it() {
    let dir = TempDir::new("c-backup");
    let _server = Peer::server(&dir, "c-backup", &[]);
    let client = connect(&dir, "c-backup").unwrap();
    // Larger than any slot of the default geometry: the backup path, with heap areas.
    let input: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let n = input.len() as u32;
    // SAFETY: every pointer below comes from the library or is a live local.
    unsafe {
        let (mut ticket, mut in_area, mut out_area) = (null_mut(), null_mut(), null_mut());
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
            shmcall_client_call(client, ticket, &mut status, &mut length),
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
fn c_failures_return_negative_statuses_and_a_sentence() {
    let dir = TempDir::new("c-errors");
    assert_eq!(
        connect(&dir, "nobody").unwrap_err(),
        Status::NotFound.code()
    );
    assert!(last_error().contains("'nobody'"), "{}", last_error());
    assert_eq!(
        connect(&dir, "bad id").unwrap_err(),
        Status::InvalidArgument.code()
    );
    assert!(last_error().contains("\"bad id\""), "{}", last_error());
    // SAFETY: null handles are checked before use.
    unsafe {
        assert_eq!(
            shmcall_client_close(null_mut()),
            Status::InvalidArgument.code()
        );
        assert_eq!(
            shmcall_ticket_free(null_mut()),
            Status::InvalidArgument.code()
        );
        assert_eq!(
            shmcall_command_finish(null_mut(), 0, 0),
            Status::InvalidArgument.code()
        );
    }
    assert_eq!(
        shmcall_protocol_version(),
        i32::from(shmcall::PROTOCOL_MAJOR) << 16 | i32::from(shmcall::PROTOCOL_MINOR)
    );
}

#[test]
fn a_c_server_hands_out_open_exec_and_close_in_order() {
    let dir = TempDir::new("c-server");
    let d = dir.path().to_str().unwrap().to_string();
    let id = "c-server";
    let mut server = null_mut();
    assert_eq!(
        // SAFETY: the strings are valid for their lengths and `server` for a write.
        unsafe {
            shmcall_server_serve(
                id.as_ptr(),
                id.len(),
                d.as_ptr(),
                d.len(),
                u64::MAX,
                &mut server,
            )
        },
        OK
    );
    let server_addr = server as usize;
    // The event loop a JavaScript server would run, on its own thread here.
    let events = std::thread::spawn(move || {
        let server = server_addr as *mut ServerHandle;
        let mut seen = Vec::new();
        loop {
            let mut e = std::mem::MaybeUninit::<ServerEvent>::uninit();
            // SAFETY: the server lives until this thread is joined; `e` is valid for a write.
            let rc = unsafe { shmcall_server_next(server, WAIT.as_nanos() as u64, e.as_mut_ptr()) };
            assert_eq!(rc, OK, "an event within {WAIT:?}");
            // SAFETY: `next` returned OK, so it wrote the event.
            let e = unsafe { e.assume_init() };
            match e.kind {
                EVENT_OPEN => {
                    seen.push(format!("open {}", e.connection));
                    // SAFETY: live server.
                    unsafe { shmcall_server_opened(server, e.connection, 0) };
                }
                EVENT_EXEC => {
                    seen.push(format!("exec {}", e.code));
                    // SAFETY: the event's areas are valid for their lengths until finish.
                    unsafe {
                        let input = std::slice::from_raw_parts(e.input, e.input_len as usize);
                        let reversed: Vec<u8> = input.iter().rev().copied().collect();
                        std::ptr::copy_nonoverlapping(reversed.as_ptr(), e.output, reversed.len());
                        shmcall_command_finish(e.command, 3, reversed.len() as u32);
                    }
                }
                EVENT_CLOSE => {
                    seen.push(format!("close {}", e.connection));
                    return seen;
                }
                other => panic!("unknown event kind {other}"),
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
    // SAFETY: the event thread is done with the handle.
    assert_eq!(unsafe { shmcall_server_free(server) }, OK);
    assert!(
        dir.entries().is_empty(),
        "the freed server left {:?}",
        dir.entries()
    );
}
