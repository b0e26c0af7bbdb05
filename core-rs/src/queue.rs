//! Event queues: consumers register for the events they care about, producers post
//! notifications of events, and each consumer retrieves the notifications of its events from a
//! list in shared memory, with no system call while notifications are there.
//!
//! # Design
//!
//! A queue's host is a [`Server`] whose handler ([`Handler::hosts_queue`]) takes only queue
//! operations: commands flagged [`crate::slot::FLAG_QUEUE`] whose code names the operation
//! ([`OP_POST`], [`OP_LIST`], [`OP_BELL`], [`OP_REGISTER`], [`OP_UNREGISTER`]). Producers and
//! consumers are clients of it, so the handshake, credentials, versions, the rings, the deaths
//! and the hostile-peer stance are those of commands (docs/events.md).
//!
//! - A **post** is a command whose input is the event and the data; the host answers it at
//!   once, after numbering it (the queue's `sequence`, in the order the host accepted posts) and
//!   copying it into the list of every consumer registered for its event. It never waits on a
//!   consumer: a full list drops that consumer's copy and counts it.
//! - A consumer's **list** lives in the output area of its [`OP_LIST`] command, which the host
//!   keeps for the connection's life: a single-producer, single-consumer ring of fixed-size
//!   entries ([`list`]). The host writes entries and publishes its write count; the consumer
//!   reads them and publishes its read count. Neither side enters the kernel for it.
//! - A consumer that finds its list empty and wants to wait keeps an [`OP_BELL`] command out,
//!   raises its list's sleep flag, and looks once more (the `IORING_SQ_NEED_WAKEUP` handshake,
//!   as the rings do: each side stores, issues a full fence, then loads). A host that writes
//!   into a list whose flag is raised lowers it and answers the bell, which wakes the consumer
//!   through the ordinary path of an answer.
//!
//! Everything the host reads from a list (the consumer's read count) or a command is checked:
//! a consumer that lies only loses its own notifications.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::client::{Client, ConnectOptions, Ticket};
use crate::segment::{Geometry, SlotClass};
use crate::server::{Command, ConnInfo, Handler, ServeOptions, Server};
use crate::slot::{Area, Mode};
use crate::status::{Error, Status};

/// Posts a notification: input `[event u32][data]`; answered at once, status 0.
pub const OP_POST: u32 = 1;
/// A consumer's list: input `[capacity u32]`, output the list ([`list`]); kept by the host until
/// the connection ends.
pub const OP_LIST: u32 = 2;
/// A consumer's bell: answered when the host writes into a list whose sleep flag is raised.
pub const OP_BELL: u32 = 3;
/// Registers events: input `[mode u32][event u32 …]`, mode 0 the events listed, 1 every event.
pub const OP_REGISTER: u32 = 4;
/// Unregisters events: input as for [`OP_REGISTER`]; mode 1 unregisters everything.
pub const OP_UNREGISTER: u32 = 5;
/// Posts several notifications in one command (protocol 2.5): input one record or more, each
/// `[event u32][length u32][length data bytes]`, back to back; answered at once, status 0, after
/// the host accepted them in order (each its own sequence number), or `INVALID_ARGUMENT`, with
/// none accepted, unless every record is whole and at most [`MAX_DATA`] bytes of data.
pub const OP_POSTS: u32 = 6;
/// The bytes of a [`OP_POSTS`] record before its data.
pub const POSTS_RECORD_HEADER: usize = 8;
/// The most input one [`OP_POSTS`] carries: its posts run under the host's lock, on the thread
/// that serves every connection of the host, so one command holds them for a bounded time (8,192
/// records at most).
pub const MAX_POSTS_INPUT: usize = 64 << 10;
/// The protocol minor from which a host takes [`OP_POSTS`] (an older one answers it
/// `INVALID_COMMAND`).
pub const POSTS_SINCE_MINOR: u16 = 5;

/// Registration mode: the events listed after it.
pub const EVENTS_LISTED: u32 = 0;
/// Registration mode: every event.
pub const EVENTS_ALL: u32 = 1;

/// The most data bytes a notification carries.
pub const MAX_DATA: usize = list::ENTRY_SIZE - list::ENTRY_HEADER;

/// The largest list a consumer may ask for, in notifications.
pub const MAX_CAPACITY: u32 = 1 << 16;

/// The layout of a consumer's list, in its [`OP_LIST`] command's output area. Offsets in bytes
/// from the area's start; every word little-endian.
///
/// ```text
/// 0    magic u32 "SHQL"   host, stored last (Release) once the header is valid
/// 4    entry size u32     host: ENTRY_SIZE
/// 8    capacity u32       host: entries, a power of two
/// 12   flag u32           consumer raises SLEEPING; the host swaps it back to AWAKE to ring
/// 16   write u32          host: entries written (wrapping), Release after each entry
/// 20   dropped u32        host: notifications dropped for this consumer (wrapping)
/// 64   read u32           consumer: entries read (wrapping), Release after reading them
/// 128  entries            capacity × ENTRY_SIZE
/// ```
///
/// An entry: `sequence u64`, `event u32`, `length u32`, then `length` bytes of data.
pub mod list {
    /// The first word of a valid list: `SHQL`.
    pub const MAGIC: u32 = u32::from_le_bytes(*b"SHQL");
    /// Offset of the magic.
    pub const MAGIC_AT: usize = 0;
    /// Offset of the entry size.
    pub const ENTRY_SIZE_AT: usize = 4;
    /// Offset of the capacity.
    pub const CAPACITY_AT: usize = 8;
    /// Offset of the sleep flag.
    pub const FLAG_AT: usize = 12;
    /// Offset of the host's write count.
    pub const WRITE_AT: usize = 16;
    /// Offset of the host's count of dropped notifications.
    pub const DROPPED_AT: usize = 20;
    /// Offset of the consumer's read count (a cache line of its own).
    pub const READ_AT: usize = 64;
    /// Offset of the first entry.
    pub const ENTRIES_AT: usize = 128;
    /// Bytes of an entry's header: sequence, event, length.
    pub const ENTRY_HEADER: usize = 16;
    /// Bytes of an entry.
    pub const ENTRY_SIZE: usize = 256;
    /// The consumer reads its list, or will before it sleeps: the host rings no one.
    pub const AWAKE: u32 = 0;
    /// The consumer waits for its bell.
    pub const SLEEPING: u32 = 1;

    /// Bytes of a list of `capacity` entries.
    pub const fn area_size(capacity: u32) -> usize {
        ENTRIES_AT + capacity as usize * ENTRY_SIZE
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A 32-bit word of a list at `offset` bytes from `base`.
///
/// # Safety
///
/// `base + offset` lies in a live mapping, 4-byte aligned, for as long as the reference is used.
unsafe fn word<'a>(base: *mut u8, offset: usize) -> &'a AtomicU32 {
    // SAFETY: the caller's contract; an `AtomicU32` has the size and alignment of a `u32`, and a
    // peer writing the word concurrently is an atomic access, never a data race.
    unsafe { &*(base.add(offset) as *const AtomicU32) }
}

/// Reads a little-endian `u32` at `at` in `bytes` (callers check the length).
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// The event and data of a [`OP_POST`] input; `INVALID_ARGUMENT` unless it holds an event and at
/// most [`MAX_DATA`] bytes of data.
pub fn parse_post(input: &[u8]) -> Result<(u32, &[u8]), Status> {
    if input.len() < 4 || input.len() - 4 > MAX_DATA {
        return Err(Status::InvalidArgument);
    }
    Ok((u32_at(input, 0), &input[4..]))
}

/// The records of a [`OP_POSTS`] input, as `(event, data)`, in order; `INVALID_ARGUMENT` unless
/// the input is one record or more, each whole (its header, then as many data bytes as its length
/// says, at most [`MAX_DATA`]), with nothing after the last, and at most [`MAX_POSTS_INPUT`]
/// bytes in all.
pub fn parse_posts(input: &[u8]) -> Result<Vec<(u32, &[u8])>, Status> {
    if input.len() > MAX_POSTS_INPUT {
        return Err(Status::InvalidArgument);
    }
    let mut records = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        if rest.len() < POSTS_RECORD_HEADER {
            return Err(Status::InvalidArgument);
        }
        let len = u32_at(rest, 4) as usize;
        if len > MAX_DATA || rest.len() - POSTS_RECORD_HEADER < len {
            return Err(Status::InvalidArgument);
        }
        let end = POSTS_RECORD_HEADER + len;
        records.push((u32_at(rest, 0), &rest[POSTS_RECORD_HEADER..end]));
        rest = &rest[end..];
    }
    if records.is_empty() {
        return Err(Status::InvalidArgument);
    }
    Ok(records)
}

/// The events of a [`OP_REGISTER`] or [`OP_UNREGISTER`] input: `None` for every event
/// ([`EVENTS_ALL`]), else the events listed; `INVALID_ARGUMENT` unless it is a known mode and whole
/// 4-byte words.
pub fn parse_registration(input: &[u8]) -> Result<Option<Vec<u32>>, Status> {
    if input.len() < 4 || !input.len().is_multiple_of(4) {
        return Err(Status::InvalidArgument);
    }
    match u32_at(input, 0) {
        EVENTS_ALL => Ok(None),
        EVENTS_LISTED => Ok(Some(
            (4..input.len())
                .step_by(4)
                .map(|at| u32_at(input, at))
                .collect(),
        )),
        _ => Err(Status::InvalidArgument),
    }
}

/// Reads up to `max` notifications from a list of `capacity` entries (a power of two) in `area`,
/// the list's whole area, from the consumer's read count `read`, given the host's write count
/// `written`. A count that claims more than the capacity, or an entry longer than
/// [`MAX_DATA`], is the host breaking the protocol.
pub fn read_entries(
    area: &Area<'_>,
    capacity: u32,
    read: u32,
    written: u32,
    max: usize,
) -> Result<Vec<Notification>, Error> {
    let waiting = written.wrapping_sub(read);
    if waiting > capacity || area.len() < list::area_size(capacity) {
        return Err(Error::new(
            Status::ProtocolViolation,
            format!("the queue says {waiting} notifications wait in a list of {capacity}"),
        ));
    }
    let take = (waiting as usize).min(max);
    let mut out = Vec::with_capacity(take);
    for i in 0..take as u32 {
        let at =
            list::ENTRIES_AT + (read.wrapping_add(i) & (capacity - 1)) as usize * list::ENTRY_SIZE;
        let mut entry = [0u8; list::ENTRY_SIZE];
        area.read_at(at, &mut entry);
        let len = u32_at(&entry, 12) as usize;
        if len > MAX_DATA {
            return Err(Error::new(
                Status::ProtocolViolation,
                format!("a notification says it holds {len} bytes, more than {MAX_DATA}"),
            ));
        }
        out.push(Notification {
            sequence: u64::from_le_bytes(entry[0..8].try_into().expect("8 bytes")),
            event: u32_at(&entry, 8),
            data: entry[16..16 + len].to_vec(),
        });
    }
    Ok(out)
}

/// A consumer's list as the host writes it: the kept [`OP_LIST`] command and where its area is.
struct HostList {
    /// Keeps the area (and its segment) alive; dropped when the connection ends.
    _command: Command,
    base: *mut u8,
    capacity: u32,
    /// The host's own write count: what it publishes, never read back from shared memory.
    write: u32,
    dropped: u32,
}

// SAFETY: `base` points into the segment that `command` keeps mapped; the host touches it only
// under its state's lock.
unsafe impl Send for HostList {}

impl HostList {
    /// Writes one notification if the list has room; returns whether it did.
    fn push(&mut self, sequence: u64, event: u32, data: &[u8]) -> bool {
        // SAFETY: `base` is the checked, aligned start of an area of `area_size(capacity)`
        // bytes, mapped while `command` lives.
        let read = unsafe { word(self.base, list::READ_AT) };
        // Acquire, paired with the consumer's Release store of its read count: the entries it
        // read are free for writing once this load sees the count.
        let used = self.write.wrapping_sub(read.load(Ordering::Acquire));
        // A count beyond the capacity is a lie: the list is treated as full, which only costs
        // the liar its own notifications.
        if used >= self.capacity {
            self.dropped = self.dropped.wrapping_add(1);
            // SAFETY: as above.
            unsafe { word(self.base, list::DROPPED_AT) }.store(self.dropped, Ordering::Relaxed);
            return false;
        }
        let at = list::ENTRIES_AT + (self.write & (self.capacity - 1)) as usize * list::ENTRY_SIZE;
        let mut entry = [0u8; list::ENTRY_SIZE];
        entry[0..8].copy_from_slice(&sequence.to_le_bytes());
        entry[8..12].copy_from_slice(&event.to_le_bytes());
        entry[12..16].copy_from_slice(&(data.len() as u32).to_le_bytes());
        entry[16..16 + data.len()].copy_from_slice(data);
        // SAFETY: `at + ENTRY_SIZE <= area_size(capacity)`; the area is valid for writes.
        let mut area = unsafe { Area::from_raw(self.base.add(at), list::ENTRY_SIZE) };
        area.write(&entry[..list::ENTRY_HEADER + data.len()]);
        self.write = self.write.wrapping_add(1);
        // Release, paired with the consumer's Acquire load of the count: the entry's bytes are
        // visible before the count that covers them.
        // SAFETY: as above.
        unsafe { word(self.base, list::WRITE_AT) }.store(self.write, Ordering::Release);
        true
    }

    /// Whether the consumer raised its sleep flag; lowers it. Called after a write: the fence
    /// pairs with the consumer's between raising the flag and looking at the write count once
    /// more, so that either the consumer sees the entry or this sees the flag.
    fn take_sleeper(&self) -> bool {
        fence(Ordering::SeqCst);
        // SAFETY: as in `push`.
        let flag = unsafe { word(self.base, list::FLAG_AT) };
        flag.load(Ordering::Relaxed) == list::SLEEPING
            && flag.swap(list::AWAKE, Ordering::AcqRel) == list::SLEEPING
    }
}

/// What the host knows of one consumer connection.
#[derive(Default)]
struct Member {
    list: Option<HostList>,
    bell: Option<Command>,
    /// The consumer was found asleep when no bell was kept: the next bell is answered at once.
    bell_owed: bool,
    all: bool,
    events: HashSet<u32>,
}

impl Member {
    fn wants(&self, event: u32) -> bool {
        self.all || self.events.contains(&event)
    }
}

/// The host's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Posts accepted (each got a sequence number).
    pub posted: u64,
    /// Notifications written into consumers' lists.
    pub delivered: u64,
    /// Notifications dropped because a consumer's list was full.
    pub dropped: u64,
    /// Connections open now (producers and consumers).
    pub connections: u64,
    /// Consumers with a list now.
    pub consumers: u64,
}

#[derive(Default)]
struct State {
    sequence: u64,
    members: HashMap<u64, Member>,
    stats: QueueStats,
}

/// The queue's handler: everything runs on the server's owner, under one lock.
struct Host {
    state: Mutex<State>,
}

/// Commands to answer once the host's lock is let go (an answer may run a connection's
/// `close`, which takes the lock).
#[derive(Default)]
struct Answers(Vec<(Command, Result<usize, Status>)>);

impl Answers {
    fn finish(self) {
        for (command, result) in self.0 {
            match result {
                Ok(len) => command.finish(0, len),
                Err(status) => command.fail(status),
            }
        }
    }
}

impl Host {
    /// Accepts one post: numbers it and copies it into the lists registered for its event.
    fn post(state: &mut State, event: u32, data: &[u8], answers: &mut Answers) {
        state.sequence += 1;
        state.stats.posted += 1;
        let sequence = state.sequence;
        for member in state.members.values_mut() {
            if !member.wants(event) {
                continue;
            }
            let Some(list) = member.list.as_mut() else {
                continue;
            };
            if !list.push(sequence, event, data) {
                state.stats.dropped += 1;
                continue;
            }
            state.stats.delivered += 1;
            if list.take_sleeper() {
                match member.bell.take() {
                    Some(bell) => answers.0.push((bell, Ok(0))),
                    None => member.bell_owed = true,
                }
            }
        }
    }

    fn list(&self, member: &mut Member, mut command: Command) -> Result<(), (Command, Status)> {
        if member.list.is_some() || command.is_backup() || command.input_len() != 4 {
            return Err((command, Status::InvalidArgument));
        }
        let mut asked = [0u8; 4];
        command.input().read_at(0, &mut asked);
        let asked = u32::from_le_bytes(asked);
        let room = command.output_capacity().saturating_sub(list::ENTRIES_AT) / list::ENTRY_SIZE;
        let capacity = asked
            .min(MAX_CAPACITY)
            .min(u32::try_from(room).unwrap_or(u32::MAX));
        if capacity == 0 || !capacity.is_power_of_two() {
            return Err((command, Status::InvalidArgument));
        }
        let base = command.output().as_ptr();
        if !(base as usize).is_multiple_of(8) {
            return Err((command, Status::InvalidArgument));
        }
        // SAFETY: `base` starts an output area of at least `area_size(capacity)` bytes (from
        // `room`), 8-aligned (checked), which `command` keeps mapped.
        unsafe {
            word(base, list::ENTRY_SIZE_AT).store(list::ENTRY_SIZE as u32, Ordering::Relaxed);
            word(base, list::CAPACITY_AT).store(capacity, Ordering::Relaxed);
            word(base, list::WRITE_AT).store(0, Ordering::Relaxed);
            word(base, list::DROPPED_AT).store(0, Ordering::Relaxed);
            // Release, paired with the consumer's Acquire load of the magic: the header is
            // whole before the magic says so.
            word(base, list::MAGIC_AT).store(list::MAGIC, Ordering::Release);
        }
        member.list = Some(HostList {
            _command: command,
            base,
            capacity,
            write: 0,
            dropped: 0,
        });
        Ok(())
    }

    fn register(member: &mut Member, input: &[u8], on: bool) -> Result<(), Status> {
        match (parse_registration(input)?, on) {
            (None, true) => member.all = true,
            (None, false) => {
                member.all = false;
                member.events.clear();
            }
            (Some(events), true) => member.events.extend(events),
            (Some(events), false) => {
                for e in events {
                    member.events.remove(&e);
                }
            }
        }
        Ok(())
    }

    fn exec(&self, mut command: Command, conn: &ConnInfo) {
        let mut answers = Answers::default();
        {
            let mut state = lock(&self.state);
            let state = &mut *state;
            let code = command.code();
            let result = match code {
                OP_POST => {
                    let input = command.input().to_vec();
                    let result = parse_post(&input)
                        .map(|(event, data)| Host::post(state, event, data, &mut answers));
                    answers.0.push((command, result.map(|()| 0)));
                    None
                }
                // As a host of protocol 2.4 would: the client spoke that.
                OP_POSTS if conn.minor < POSTS_SINCE_MINOR => {
                    Some((command, Status::InvalidCommand))
                }
                OP_POSTS if command.input_len() > MAX_POSTS_INPUT => {
                    Some((command, Status::InvalidArgument))
                }
                OP_POSTS => {
                    let input = command.input().to_vec();
                    // Every record is checked before the first is accepted: a bad batch posts
                    // nothing.
                    let result = parse_posts(&input).map(|records| {
                        for (event, data) in records {
                            Host::post(state, event, data, &mut answers);
                        }
                    });
                    answers.0.push((command, result.map(|()| 0)));
                    None
                }
                OP_REGISTER | OP_UNREGISTER => {
                    let input = command.input().to_vec();
                    let member = state.members.entry(conn.id).or_default();
                    let result = Host::register(member, &input, code == OP_REGISTER);
                    answers.0.push((command, result.map(|()| 0)));
                    None
                }
                OP_LIST => {
                    let member = state.members.entry(conn.id).or_default();
                    match self.list(member, command) {
                        Ok(()) => {
                            state.stats.consumers += 1;
                            None
                        }
                        Err((command, status)) => Some((command, status)),
                    }
                }
                OP_BELL => {
                    let member = state.members.entry(conn.id).or_default();
                    if member.list.is_none() || member.bell.is_some() {
                        Some((command, Status::InvalidArgument))
                    } else if std::mem::take(&mut member.bell_owed) {
                        answers.0.push((command, Ok(0)));
                        None
                    } else {
                        member.bell = Some(command);
                        None
                    }
                }
                _ => Some((command, Status::InvalidCommand)),
            };
            if let Some((command, status)) = result {
                answers.0.push((command, Err(status)));
            }
        }
        answers.finish();
    }

    /// Forgets a connection: its list and bell go (answered to no one), with its registrations.
    fn forget(&self, conn: &ConnInfo) {
        let gone = {
            let mut state = lock(&self.state);
            let gone = state.members.remove(&conn.id);
            if gone.as_ref().is_some_and(|m| m.list.is_some()) {
                state.stats.consumers -= 1;
            }
            gone
        };
        // Dropped outside the lock: a dropped command may run the connection's `close`.
        drop(gone);
    }
}

/// The [`Handler`] of a queue's server.
struct QueueHandler(Arc<Host>);

impl Handler for QueueHandler {
    type Context = ();

    fn open(&self, _conn: &ConnInfo) -> Result<(), Error> {
        lock(&self.0.state).stats.connections += 1;
        Ok(())
    }

    fn exec(&self, command: Command, conn: &ConnInfo, _context: &()) {
        self.0.exec(command, conn);
    }

    fn ended(&self, conn: &ConnInfo, _context: &()) {
        self.0.forget(conn);
    }

    fn close(&self, conn: &ConnInfo, _context: &()) {
        self.0.forget(conn);
        lock(&self.0.state).stats.connections -= 1;
    }

    fn hosts_queue(&self) -> bool {
        true
    }
}

/// A hosted event queue. Closing it (or dropping it) ends every producer's and consumer's
/// connection.
pub struct EventQueue {
    server: Server,
    host: Arc<Host>,
}

impl fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventQueue")
            .field("socket", self.server.socket_path())
            .finish()
    }
}

impl EventQueue {
    /// Hosts the queue `queue_id` (an ic id: it shares their namespace in the socket
    /// directory), on the options of a server.
    pub fn serve(queue_id: &str, options: ServeOptions) -> Result<EventQueue, Error> {
        let host = Arc::new(Host {
            state: Mutex::new(State::default()),
        });
        let server = Server::serve(
            queue_id,
            QueueHandler(host.clone()),
            ServeOptions {
                default_mode: Mode::Inline,
                ..options
            },
        )?;
        Ok(EventQueue { server, host })
    }

    /// The host's counters.
    pub fn stats(&self) -> QueueStats {
        lock(&self.host.state).stats
    }

    /// The server the queue runs on.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Stops hosting: every connection ends, its consumer's notifications already listed stay
    /// readable.
    pub fn close(&mut self) {
        self.server.close();
    }
}

/// Builds the input of a registration.
fn registration(events: &Events) -> Vec<u8> {
    let mut input = Vec::new();
    match events {
        Events::All => input.extend_from_slice(&EVENTS_ALL.to_le_bytes()),
        Events::List(list) => {
            input.extend_from_slice(&EVENTS_LISTED.to_le_bytes());
            for e in list {
                input.extend_from_slice(&e.to_le_bytes());
            }
        }
    }
    input
}

/// Runs one synchronous queue operation; the server's status, or the library failure.
fn operate(client: &Client, code: u32, input: &[u8]) -> Result<(), Error> {
    let mut ticket = client.begin(code, input.len(), 0, Mode::Queue)?;
    ticket.input().write(input);
    let answer = client.call(&mut ticket)?;
    if answer.status != 0 {
        return Err(Error::new(
            Status::InvalidCommand,
            format!(
                "the queue answered operation {code} with status {}",
                answer.status
            ),
        ));
    }
    Ok(())
}

/// Which events a consumer registers for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Events {
    /// Every event.
    All,
    /// These events.
    List(Vec<u32>),
}

/// A producer: posts notifications to a queue.
#[derive(Debug)]
pub struct Producer {
    client: Client,
}

impl Producer {
    /// Connects to the queue `queue_id`.
    pub fn open(queue_id: &str, options: &ConnectOptions) -> Result<Producer, Error> {
        Ok(Producer {
            client: Client::connect(queue_id, options)?,
        })
    }

    /// Posts a notification of `event` with `data` (at most [`MAX_DATA`] bytes). Returns once
    /// the host accepted it, which never waits on a consumer.
    pub fn post(&self, event: u32, data: &[u8]) -> Result<(), Error> {
        check_data(data)?;
        let mut input = Vec::with_capacity(4 + data.len());
        input.extend_from_slice(&event.to_le_bytes());
        input.extend_from_slice(data);
        operate(&self.client, OP_POST, &input)
    }

    /// Posts `posts`, each an event and its data, in order: as [`OP_POSTS`] commands of at most
    /// [`MAX_POSTS_INPUT`] bytes when the host speaks protocol 2.5, one command each before.
    /// Returns once the host accepted them all; a bad one (data over [`MAX_DATA`]) fails the call
    /// before anything is sent.
    pub fn post_all(&self, posts: &[(u32, &[u8])]) -> Result<(), Error> {
        for (_, data) in posts {
            check_data(data)?;
        }
        if self.client.protocol_minor() < POSTS_SINCE_MINOR {
            return posts
                .iter()
                .try_for_each(|(event, data)| self.post(*event, data));
        }
        let mut input = Vec::with_capacity(MAX_POSTS_INPUT);
        for (event, data) in posts {
            if input.len() + POSTS_RECORD_HEADER + data.len() > MAX_POSTS_INPUT {
                operate(&self.client, OP_POSTS, &input)?;
                input.clear();
            }
            input.extend_from_slice(&event.to_le_bytes());
            // At most MAX_DATA (checked): it fits.
            input.extend_from_slice(&(data.len() as u32).to_le_bytes());
            input.extend_from_slice(data);
        }
        if input.is_empty() {
            return Ok(());
        }
        operate(&self.client, OP_POSTS, &input)
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.client.close();
    }
}

/// `INVALID_ARGUMENT` for data over [`MAX_DATA`] bytes.
fn check_data(data: &[u8]) -> Result<(), Error> {
    if data.len() > MAX_DATA {
        return Err(Error::new(
            Status::InvalidArgument,
            format!(
                "a notification carries at most {MAX_DATA} bytes of data, not {}",
                data.len()
            ),
        ));
    }
    Ok(())
}

/// One notification: its event, its number among the queue's posts, and its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The event posted.
    pub event: u32,
    /// The post's number in the order the host accepted posts, from 1: a gap is a notification
    /// this consumer did not get (dropped, or of an event it did not register for).
    pub sequence: u64,
    /// The data posted.
    pub data: Vec<u8>,
}

/// The consumer's view of its bell and its list's end, shared with the completions.
#[derive(Default)]
struct Signals {
    /// A bell is out (sent, not answered).
    bell_out: bool,
    /// The list's command ended: the connection is over.
    ended: Option<Error>,
}

/// A consumer: retrieves the notifications of the events it registered for.
pub struct Consumer {
    client: Client,
    base: *mut u8,
    capacity: u32,
    /// The consumer's own read count: what it publishes, never read back from shared memory.
    read: Mutex<u32>,
    signals: Arc<(Mutex<Signals>, Condvar)>,
}

// SAFETY: `base` points into the client's own segment, mapped while `client` lives; the read
// count is behind a lock.
unsafe impl Send for Consumer {}
// SAFETY: as above; every access to the list goes through atomics or the `read` lock.
unsafe impl Sync for Consumer {}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Consumer {
    /// Connects to the queue `queue_id` with a list of `capacity` notifications (rounded up to
    /// a power of two) and registers `events`. `options.geometry` is replaced by one that holds
    /// the list.
    pub fn open(
        queue_id: &str,
        events: &Events,
        capacity: u32,
        options: &ConnectOptions,
    ) -> Result<Consumer, Error> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("a list holds 1 to {MAX_CAPACITY} notifications, not {capacity}"),
            ));
        }
        let capacity = capacity.next_power_of_two();
        let area = list::area_size(capacity);
        let geometry = Geometry {
            classes: [
                SlotClass {
                    count: 16,
                    input_capacity: 4096,
                    output_capacity: 64,
                },
                SlotClass {
                    count: 1,
                    input_capacity: 64,
                    output_capacity: u32::try_from(area).expect("at most 16 MiB"),
                },
            ],
            ring_capacity: 32,
        };
        let client = Client::connect(
            queue_id,
            &ConnectOptions {
                geometry,
                ..options.clone()
            },
        )?;
        let mut ticket = client.begin(OP_LIST, 4, area, Mode::Queue)?;
        if ticket.is_backup() {
            return Err(Error::new(
                Status::InvalidArgument,
                "the list did not get a slot of shared memory",
            ));
        }
        ticket.input().write(&capacity.to_le_bytes());
        let base = ticket.output().as_ptr();
        // SAFETY: `base` starts the ticket's output area of `area` bytes in the client's
        // segment; slot areas are 64-byte aligned here (header 64, input 64).
        unsafe {
            word(base, list::MAGIC_AT).store(0, Ordering::Relaxed);
            word(base, list::READ_AT).store(0, Ordering::Relaxed);
            word(base, list::FLAG_AT).store(list::AWAKE, Ordering::Relaxed);
        }
        let signals: Arc<(Mutex<Signals>, Condvar)> = Arc::default();
        let on_end = signals.clone();
        client.call_async(ticket, move |ticket| {
            let why = ticket.answer().err().unwrap_or_else(|| {
                Error::new(Status::PeerTerminated, "the queue answered the list")
            });
            lock(&on_end.0).ended = Some(why);
            on_end.1.notify_all();
        })?;
        // The registration is answered after the list was taken (one connection's operations
        // run in order): once it returns, posts accepted later reach this list.
        operate(&client, OP_REGISTER, &registration(events))?;
        // SAFETY: as above.
        let magic = unsafe { word(base, list::MAGIC_AT) }.load(Ordering::Acquire);
        // SAFETY: as above.
        let given = unsafe { word(base, list::CAPACITY_AT) }.load(Ordering::Relaxed);
        if magic != list::MAGIC || given != capacity {
            return Err(Error::new(
                Status::ProtocolViolation,
                format!("the queue's list header says magic {magic:#x} capacity {given}"),
            ));
        }
        Ok(Consumer {
            client,
            base,
            capacity,
            read: Mutex::new(0),
            signals,
        })
    }

    /// Registers more events (for posts the host accepts after this returns).
    pub fn register(&self, events: &Events) -> Result<(), Error> {
        operate(&self.client, OP_REGISTER, &registration(events))
    }

    /// Unregisters events; [`Events::All`] unregisters every one.
    pub fn unregister(&self, events: &Events) -> Result<(), Error> {
        operate(&self.client, OP_UNREGISTER, &registration(events))
    }

    /// Notifications dropped because this consumer's list was full.
    pub fn dropped(&self) -> u32 {
        // SAFETY: the list's header lies in the client's mapped segment.
        unsafe { word(self.base, list::DROPPED_AT) }.load(Ordering::Relaxed)
    }

    /// The notifications listed so far, at most `max`: no system call.
    pub fn retrieve(&self, max: usize) -> Result<Vec<Notification>, Error> {
        let mut read = lock(&self.read);
        // SAFETY: as in `dropped`.
        let written = unsafe { word(self.base, list::WRITE_AT) }.load(Ordering::Acquire);
        // SAFETY: the list's area lies in the client's mapped segment, `area_size(capacity)`
        // bytes from `base`.
        let area = unsafe { Area::from_raw(self.base, list::area_size(self.capacity)) };
        let out = read_entries(&area, self.capacity, *read, written, max)?;
        if !out.is_empty() {
            *read = read.wrapping_add(out.len() as u32);
            // Release, paired with the host's Acquire load: the entries were copied out before
            // the host may write over them.
            // SAFETY: as in `dropped`.
            unsafe { word(self.base, list::READ_AT) }.store(*read, Ordering::Release);
        }
        Ok(out)
    }

    /// The next notification, waiting up to `timeout` (`None`: no limit) when none is listed.
    /// Fails [`Status::TimedOut`] when the time passes, and [`Status::PeerTerminated`] once the
    /// host is gone and every notification it listed was retrieved.
    pub fn next(&self, timeout: Option<Duration>) -> Result<Notification, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(n) = self.retrieve(1)?.pop() {
                return Ok(n);
            }
            let (signals, rung) = &*self.signals;
            let mut s = lock(signals);
            if let Some(why) = &s.ended {
                return Err(why.clone());
            }
            if !s.bell_out {
                s.bell_out = true;
                drop(s);
                self.send_bell()?;
                s = lock(signals);
            }
            // SAFETY: as in `dropped`.
            let flag = unsafe { word(self.base, list::FLAG_AT) };
            flag.store(list::SLEEPING, Ordering::Relaxed);
            // Paired with the host's fence between its write and its look at the flag.
            fence(Ordering::SeqCst);
            // SAFETY: as in `dropped`.
            let written = unsafe { word(self.base, list::WRITE_AT) }.load(Ordering::Acquire);
            if written != *lock(&self.read) {
                flag.store(list::AWAKE, Ordering::Relaxed);
                continue;
            }
            while s.bell_out && s.ended.is_none() {
                let left = match deadline {
                    Some(d) => match d.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => Some(left),
                        _ => {
                            flag.store(list::AWAKE, Ordering::Relaxed);
                            return Err(Error::new(
                                Status::TimedOut,
                                "no notification came within the timeout",
                            ));
                        }
                    },
                    None => None,
                };
                s = match left {
                    Some(left) => {
                        rung.wait_timeout(s, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                    None => rung.wait(s).unwrap_or_else(|e| e.into_inner()),
                };
            }
        }
    }

    fn send_bell(&self) -> Result<(), Error> {
        let ticket: Ticket = self.client.begin(OP_BELL, 0, 0, Mode::Queue)?;
        let signals = self.signals.clone();
        self.client.call_async(ticket, move |ticket| {
            let mut s = lock(&signals.0);
            s.bell_out = false;
            if let Err(e) = ticket.answer() {
                s.ended.get_or_insert(e);
            }
            signals.1.notify_all();
        })
    }

    /// Closes the connection; the host frees the list and the registrations.
    pub fn close(&self) {
        self.client.close();
    }
}
