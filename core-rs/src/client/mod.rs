//! The client: connects to an ic id, creates the connection's segment, and issues commands
//! synchronously (the calling thread waits) or asynchronously (a completion runs later, on the
//! connection's owner: see [`crate::owner`]).
//!
//! - [`conn`]: the connection — slots, who pops the SC ring, how a command ends;
//! - [`connect`]: the handshake, driven by the reactor;
//! - [`ticket`]: one command from `begin` to its answer, and the callbacks around it.

mod conn;
mod connect;
mod ticket;
mod warm;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub use crate::owner::Lent;
use conn::{Conn, DONE, OWNED, PushWaker, SUBMITTED, lock};
pub use ticket::{Answer, Call, Callbacks, Copying, Output, Ticket};
use ticket::{Backup, Completion, Kind};
pub use warm::{
    connections_reused as warm_connections_reused, kept as warm_segments_kept,
    release as release_warm_segments, reused as warm_segments_reused,
};

use crate::owner::{Member, Owner, Runner};
use crate::segment::{Geometry, MAX_AREA, PROTOCOL_MAJOR, PROTOCOL_MINOR, Segment, SlotRef};
use crate::slot::{Mode, Request};
use crate::stats::Stats;
use crate::status::{Error, Status};
use crate::wire;

/// How a client connects.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The shape of the connection's segment.
    pub geometry: Geometry,
    /// How long a waiting thread spins before it sleeps.
    pub spin: Duration,
    /// Bound on the handshake.
    pub handshake_timeout: Duration,
    /// Server user ids accepted besides this process's own.
    pub allow_server_uids: Vec<u32>,
    /// The socket directory; `None` means the default (see [`crate::endpoint`]).
    pub socket_dir: Option<std::path::PathBuf>,
    /// The thread that runs the client's completions and pops its answers while asynchronous
    /// commands are out; `None` means the process's [`Runner`].
    pub owner: Option<Arc<dyn Owner>>,
    /// The protocol major announced in the hello. Only tests change it, to provoke a mismatch.
    #[doc(hidden)]
    pub protocol_major: u16,
    /// The protocol minor announced in the hello. Only tests change it, to speak as an older
    /// client does.
    #[doc(hidden)]
    pub protocol_minor: u16,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            geometry: Geometry::default(),
            spin: Duration::from_micros(50),
            handshake_timeout: Duration::from_secs(5),
            allow_server_uids: Vec::new(),
            socket_dir: None,
            owner: None,
            protocol_major: PROTOCOL_MAJOR,
            protocol_minor: PROTOCOL_MINOR,
        }
    }
}

/// A connection to a server.
pub struct Client {
    conn: Arc<Conn>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("ic_id", &self.conn.ic_id)
            .field("ended", &self.conn.ended.load(Ordering::Relaxed))
            .finish()
    }
}

fn owner_of(options: &ConnectOptions) -> Result<Arc<dyn Owner>, Error> {
    match &options.owner {
        Some(o) => Ok(o.clone()),
        None => Ok(Runner::get()?),
    }
}

impl Client {
    /// Connects to the server of `ic_id`: creates the segment, sends it with the hello, and
    /// returns once the server accepted (its `open` has run). The calling thread waits, up to
    /// the handshake's timeout.
    pub fn connect(ic_id: &str, options: &ConnectOptions) -> Result<Client, Error> {
        let done = connect::Connecting::start(
            ic_id,
            options,
            owner_of(options)?,
            options.handshake_timeout,
            true,
            Box::new(drop),
            true,
        )?;
        done.ok_or_else(|| {
            Error::new(
                Status::Io,
                format!(
                    "'{ic_id}' did not answer the hello within {:?}",
                    options.handshake_timeout
                ),
            )
        })
    }

    /// Connects without waiting long: returns the client when the server answers within
    /// `wait` (this thread waits that long at most); otherwise `Ok(None)`, and `done` gets the
    /// client (or the failure) once the server answered, on the library's I/O thread — it must
    /// not block. Fails at once, without calling `done`, when the connect cannot even start (no
    /// server listens, a bad ic id…) or the server refused within `wait`.
    pub fn connect_with(
        ic_id: &str,
        options: &ConnectOptions,
        wait: Duration,
        done: impl FnOnce(Result<Client, Error>) + Send + 'static,
    ) -> Result<Option<Client>, Error> {
        connect::Connecting::start(
            ic_id,
            options,
            owner_of(options)?,
            wait,
            false,
            Box::new(done),
            true,
        )
    }

    /// The ic id this client is connected to.
    pub fn ic_id(&self) -> &str {
        &self.conn.ic_id
    }

    /// The segment's mapping: first byte and length. It stays mapped while this client, any
    /// ticket of it, or a holder of [`Client::segment`] exists.
    pub fn segment_mapping(&self) -> (*mut u8, usize) {
        self.conn.segment.mapping()
    }

    /// The segment, for a caller that must keep it mapped longer than the client (views of it
    /// handed to JavaScript).
    pub fn segment(&self) -> Arc<Segment> {
        self.conn.segment.clone()
    }

    /// This connection's counters (see [`Stats::snapshot`]).
    pub fn stats(&self) -> &Stats {
        &self.conn.stats
    }

    /// Whether the connection ended (closed here, server gone, or protocol broken).
    pub fn is_closed(&self) -> bool {
        self.conn.is_ended()
    }

    /// The server's process id.
    pub fn server_pid(&self) -> i32 {
        self.conn.server_pid
    }

    /// The protocol minor this connection speaks: the lower of the server's and this library's.
    pub fn protocol_minor(&self) -> u16 {
        self.conn.minor
    }

    /// Takes a slot (or, when none fits or is free, prepares the backup path) for a command of
    /// `input_len` input bytes and `output_cap` output bytes.
    pub fn begin(
        &self,
        code: u32,
        input_len: usize,
        output_cap: usize,
        mode: Mode,
    ) -> Result<Ticket, Error> {
        for (name, v) in [("input length", input_len), ("output length", output_cap)] {
            if v > MAX_AREA as usize {
                return Err(Error::new(
                    Status::InvalidArgument,
                    format!("{name} {v} exceeds the maximum of {MAX_AREA} bytes"),
                ));
            }
        }
        let conn = &self.conn;
        if conn.is_ended() {
            return Err(conn.error_for(conn.ended.load(Ordering::SeqCst)));
        }
        let (input_len, output_cap) = (input_len as u32, output_cap as u32);
        let layout = conn.segment.layout();
        // A lent connection's slots are its consumer's: only the backup path is left here.
        let lent = conn.is_lent();
        let taken = layout.classes.iter().enumerate().find_map(|(c, cl)| {
            let fits = !lent
                && input_len <= cl.class.input_capacity
                && output_cap <= cl.class.output_capacity;
            if fits {
                lock(&conn.free[c]).pop()
            } else {
                None
            }
        });
        let kind = match taken {
            Some(index) => {
                let st = &conn.slots[index as usize];
                st.state.store(OWNED, Ordering::Relaxed);
                st.generation.fetch_add(1, Ordering::Relaxed);
                st.output_cap.store(output_cap, Ordering::Relaxed);
                Kind::Slot(layout.slot(index))
            }
            None => Kind::Backup {
                input: vec![0; input_len as usize],
                output: vec![0; output_cap as usize],
                record: Arc::new(Backup::new(
                    conn.next_token.fetch_add(1, Ordering::Relaxed),
                    output_cap,
                )),
            },
        };
        Ok(Ticket {
            conn: conn.clone(),
            code,
            flags: mode.flags(),
            input_len,
            output_cap,
            kind,
            submitted: false,
        })
    }

    /// Publishes a slot's request and pushes it on the CS ring.
    fn submit_slot(&self, slot: SlotRef, request: Request, asynchronous: bool) {
        let conn = &self.conn;
        let st = &conn.slots[slot.index as usize];
        conn.segment.header(slot).write_request(&request);
        st.asynchronous.store(asynchronous, Ordering::Relaxed);
        // Relaxed: read back by `complete_slot` after the SeqCst state store below.
        st.sent_at.store(
            conn.stats.start(request.input_len, false),
            Ordering::Relaxed,
        );
        if asynchronous {
            // SeqCst: see `Conn::give_up_role`.
            conn.async_out.fetch_add(1, Ordering::SeqCst);
        }
        // SeqCst: see `Conn::end`.
        st.state.store(SUBMITTED, Ordering::SeqCst);
        if conn.is_ended() {
            conn.complete_slot(slot.index, st, conn.ended.load(Ordering::SeqCst), 0);
            return;
        }
        if conn
            .cs
            .try_push(slot.offset, &PushWaker(&conn.link))
            .is_err()
        {
            // A cell per slot, and each slot in one ring at a time: only a server that
            // published a read position it never reached leaves no cell.
            let _ = conn.violation(
                "the CS ring is full, which a server that follows the protocol never causes".into(),
            );
        }
    }

    /// Registers a backup command and queues its frame.
    fn submit_backup(&self, record: &Arc<Backup>, frame: Vec<u8>, input_len: u32) {
        let conn = &self.conn;
        record
            .sent_at
            .store(conn.stats.start(input_len, true), Ordering::Relaxed);
        record.state.store(SUBMITTED, Ordering::SeqCst);
        lock(&conn.backups).insert(record.token, record.clone());
        // The same ordering argument as for slots: `end` drains the map after setting `ended`;
        // a frame the link refuses (it ended meanwhile) completes the command here.
        if conn.is_ended() || conn.link.send(frame).is_err() {
            lock(&conn.backups).remove(&record.token);
            let status = match conn.ended.load(Ordering::SeqCst) {
                0 => Status::PeerTerminated.code(),
                s => s,
            };
            conn.complete_backup(record.clone(), status, Vec::new(), 0);
        }
    }

    fn request(ticket: &Ticket, slot: SlotRef, conn: &Conn) -> Request {
        Request {
            code: ticket.code,
            flags: ticket.flags,
            input_len: ticket.input_len,
            output_cap: ticket.output_cap,
            generation: conn.slots[slot.index as usize]
                .generation
                .load(Ordering::Relaxed),
        }
    }

    /// Refuses a synchronous call that would wait for its own thread: one made on the thread
    /// that runs the handlers of its server, a server of this same process (for one served by
    /// another thread of the process, such as a queue's host, the wait is fine).
    fn check_not_waiting_for_itself(&self) -> Result<(), Error> {
        let conn = &self.conn;
        let runs_here = match crate::server::local_owner(&conn.endpoint.socket) {
            Some(owner) => owner.is_current(),
            None => conn.owner.is_current(),
        };
        if conn.in_this_process && runs_here {
            return Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "Cannot call '{}' synchronously from the thread that runs this process's handlers: its server is in this process and would need this thread to answer; call it asynchronously",
                    conn.ic_id
                ),
            ));
        }
        Ok(())
    }

    /// Sends the command and waits on this thread for its answer. The ticket's areas then hold
    /// the input and the output.
    pub fn call(&self, ticket: &mut Ticket) -> Result<Answer, Error> {
        self.call_within(ticket, None)
    }

    /// [`Client::call`] with a deadline on the whole wait, when `timeout` is given. When it
    /// passes, a command the server has not taken is withdrawn — it never runs, and the call
    /// fails [`Status::Cancelled`] — and a taken one fails [`Status::TimedOut`]: it may have
    /// run. Either way the server still holds its slot; dropping the ticket hands the slot to
    /// the answer, which is discarded and frees it when it comes.
    pub fn call_within(
        &self,
        ticket: &mut Ticket,
        timeout: Option<Duration>,
    ) -> Result<Answer, Error> {
        self.check_own(ticket)?;
        self.check_not_waiting_for_itself()?;
        let deadline = timeout.map(|t| Instant::now() + t);
        let left = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
        ticket.mark_submitted();
        let conn = &self.conn;
        match &ticket.kind {
            Kind::Slot(slot) => {
                let slot = *slot;
                self.submit_slot(slot, Self::request(ticket, slot, conn), false);
                let st = &conn.slots[slot.index as usize];
                let done = || st.state.load(Ordering::Acquire) == DONE;
                while !done() {
                    if left().is_some_and(|l| l.is_zero()) {
                        if self.withdraw(slot.index) {
                            return Err(self.late(timeout, false));
                        }
                        if done() {
                            // Answered (or failed by the connection's end) just now.
                            break;
                        }
                        return Err(self.late(timeout, true));
                    }
                    if conn.try_take_role() {
                        conn.consume_until(done, deadline);
                        conn.give_up_role();
                        continue;
                    }
                    conn.waiters
                        .wait_until_for(conn.spin, left(), || done() || conn.role_is_free());
                }
            }
            Kind::Backup { input, record, .. } => {
                let frame = wire::encode_exec(
                    record.token,
                    ticket.code,
                    ticket.flags,
                    ticket.output_cap,
                    input,
                );
                self.submit_backup(record, frame, ticket.input_len);
                let done = || record.state.load(Ordering::Acquire) == DONE;
                // The backup path cannot withdraw: the command is the server's once sent.
                if !conn.waiters.wait_until_for(conn.spin, left(), done) {
                    return Err(self.late(timeout, true));
                }
            }
        }
        ticket.answer()
    }

    /// The failure of a command whose `timeout` passed: taken by the server or withdrawn.
    #[cold]
    fn late(&self, timeout: Option<Duration>, taken: bool) -> Error {
        let ms = timeout.unwrap_or_default().as_secs_f64() * 1e3;
        let ic_id = &self.conn.ic_id;
        if taken {
            Error::new(
                Status::TimedOut,
                format!(
                    "a command to '{ic_id}' had no answer within its timeout of {ms} ms: the server took it, so it may have run; its answer will be discarded"
                ),
            )
        } else {
            Error::new(
                Status::Cancelled,
                format!(
                    "a command to '{ic_id}' was withdrawn before the server took it: the server did not take it within its timeout of {ms} ms"
                ),
            )
        }
    }

    /// Sends the command and returns at once; `completion` runs on the client's owner with the
    /// finished ticket (also when the connection ends first).
    pub fn call_async(
        &self,
        mut ticket: Ticket,
        completion: impl FnOnce(Ticket) + Send + 'static,
    ) -> Result<(), Error> {
        self.check_own(&ticket)?;
        ticket.mark_submitted();
        let conn = self.conn.clone();
        let completion: Completion = Box::new(completion);
        // The completion is parked before the command is sent, so the answer always finds it.
        match &ticket.kind {
            Kind::Slot(slot) => {
                let slot = *slot;
                let request = Self::request(&ticket, slot, &conn);
                *lock(&conn.slots[slot.index as usize].pending) = Some((ticket, completion));
                self.submit_slot(slot, request, true);
                // The owner pops the answers (unless a synchronous caller does).
                conn.wake_owner();
            }
            Kind::Backup { input, record, .. } => {
                let frame = wire::encode_exec(
                    record.token,
                    ticket.code,
                    ticket.flags,
                    ticket.output_cap,
                    input,
                );
                let record = record.clone();
                let input_len = ticket.input_len;
                record.asynchronous.store(true, Ordering::Relaxed);
                conn.async_out.fetch_add(1, Ordering::SeqCst);
                *lock(&record.pending) = Some((ticket, completion));
                self.submit_backup(&record, frame, input_len);
            }
        }
        Ok(())
    }

    /// Withdraws the asynchronous command in slot `index` if the server has not taken it yet;
    /// returns whether it did. The command then never runs: the server answers it
    /// `CANCELLED` when it reaches it, and its completion runs then, as for any answer (the
    /// slot stays the server's until that answer comes back). False when it was taken, has
    /// finished, or travels the backup path (no slot).
    ///
    /// The caller must hold the command's ticket unanswered (the C surface's callers hold its
    /// completion): the slot cannot then be reused meanwhile, so `index` names this command.
    pub fn withdraw(&self, index: u32) -> bool {
        let conn = &self.conn;
        let Some(st) = conn.slots.get(index as usize) else {
            return false;
        };
        if conn.is_ended() || st.state.load(Ordering::Acquire) != SUBMITTED {
            return false;
        }
        let slot = conn.segment.layout().slot(index);
        conn.segment.header(slot).withdraw()
    }

    /// Lends the connection's rings and slots to a consumer that pushes and pops them itself,
    /// through its own view of the segment (the bindings' JavaScript lanes); returns where the
    /// rings stand. From then on:
    ///
    /// - [`Client::begin`] hands out backup tickets only: every slot is the consumer's;
    /// - `notify` runs on the client's owner with `Ok` when the SC ring's next cell (at the read
    ///   position the consumer publishes) holds an entry — possibly again before the consumer
    ///   popped it — and once with the error of the connection's end;
    /// - the consumer wakes the server after its pushes ([`Client::lane_wake`]), may wait for
    ///   an entry ([`Client::lane_wait`]), and reports what it counted ([`Stats::add`]).
    ///
    /// Fails when the connection ended, has a slot in use, or is lent already.
    pub fn lend(
        &self,
        notify: impl Fn(Result<(), Error>) + Send + Sync + 'static,
    ) -> Result<Lent, Error> {
        self.conn.lend(Box::new(notify))
    }

    /// After a push onto a lent connection's CS ring and a full fence, wakes the server as its
    /// sleep flag asks: a futex wake, or a WAKE frame. The consumer may call it only when it saw
    /// the flag raised after its fence; calling it needlessly costs nothing more than a look.
    pub fn lane_wake(&self) {
        let conn = &self.conn;
        conn.cs.wake(&PushWaker(&conn.link));
    }

    /// A lent connection's consumer sent an asynchronous command while the SC ring was armed
    /// ([`crate::ring::WATCHED`]: the owner stopped polling it): the owner polls it again, so
    /// that the answer is taken there rather than through a WAKE frame and the reactor.
    pub fn lane_activate(&self) {
        let conn = &self.conn;
        conn.sc.unwatch();
        conn.wake_owner();
    }

    /// Makes a lent connection quiet: its consumer takes the answers itself when it next sends or
    /// waits ([`Client::lane_wait`]), so the owner no longer arms the SC ring for them and an
    /// answer wakes nobody (the queue's one-way posts, whose answers only free their slots). The
    /// connection's end still reaches the consumer. Irrevocable.
    pub fn lane_quiet(&self) {
        let conn = &self.conn;
        // Relaxed: read by the owner's `arm`, which at worst watches once more.
        conn.quiet.store(true, Ordering::Relaxed);
        conn.sc.unwatch();
    }

    /// Waits on this thread until the next cell of a lent connection's SC ring holds an entry
    /// (at the read position its consumer published), spinning first and then sleeping, for at
    /// most `timeout`. Returns whether an entry is there; fails with the end's error once the
    /// connection ended (entries popped before then are the consumer's to take first).
    pub fn lane_wait(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        let conn = &self.conn;
        if !conn.is_lent() {
            return Err(Error::new(
                Status::InvalidArgument,
                format!("the connection to '{}' is not lent", conn.ic_id),
            ));
        }
        self.check_not_waiting_for_itself()?;
        let deadline = timeout.map(|t| Instant::now() + t);
        let passed = || deadline.is_some_and(|d| Instant::now() >= d);
        conn.sc.follow();
        let waited = conn.wait_lane_entry(deadline, || conn.is_ended() || passed());
        if waited {
            return Ok(true);
        }
        if conn.is_ended() {
            return Err(conn.error_for(conn.ended.load(Ordering::SeqCst)));
        }
        Ok(false)
    }

    /// A lent connection's consumer found the server breaking the protocol (an SC entry that
    /// is no slot's, a reply beyond its capacity…): ends the connection with
    /// [`Status::ProtocolViolation`] and `why`, as this side does for what it finds itself.
    pub fn lane_violation(&self, why: &str) {
        let _ = self.conn.violation(why.to_string());
    }

    fn check_own(&self, ticket: &Ticket) -> Result<(), Error> {
        if !Arc::ptr_eq(&ticket.conn, &self.conn) {
            return Err(Error::new(
                Status::InvalidArgument,
                "the ticket belongs to another client",
            ));
        }
        Ok(())
    }

    /// Issues one command synchronously: the callbacks run on this thread around the call.
    /// Library failures are errors; the server's own statuses are in the [`Output`].
    pub fn execute(&self, call: &Call<'_>, callbacks: &mut dyn Callbacks) -> Result<Output, Error> {
        let input_len = call.input_area_len()?;
        let mut ticket = self.begin(call.code, input_len, call.output_len, call.mode)?;
        callbacks.input_prepare(&mut ticket.input(), call.input);
        callbacks.output_prepare(&mut ticket.output());
        let answer = self.call_within(&mut ticket, call.timeout)?;
        Ok(ticket.finish(answer, callbacks))
    }

    /// Issues one command asynchronously: the prepare callbacks run now, the post callbacks
    /// and `completion` later on the client's owner.
    pub fn execute_async(
        &self,
        call: &Call<'_>,
        mut callbacks: impl Callbacks + Send + 'static,
        completion: impl FnOnce(Result<Output, Error>) + Send + 'static,
    ) -> Result<(), Error> {
        let input_len = call.input_area_len()?;
        let mut ticket = self.begin(call.code, input_len, call.output_len, call.mode)?;
        callbacks.input_prepare(&mut ticket.input(), call.input);
        callbacks.output_prepare(&mut ticket.output());
        self.call_async(ticket, move |mut t| {
            let result = t.answer().map(|a| t.finish(a, &mut callbacks));
            completion(result);
        })
    }

    /// Ends the connection: commands still outstanding fail with [`Status::Closed`], the server
    /// sees the client go. The completions of asynchronous commands have run when it returns
    /// (on the owner; here, when this thread is the owner). Idempotent.
    pub fn close(&self) {
        let conn = &self.conn;
        // A server of protocol 2.3 hears BYE, and the socket stays for this process's next
        // connection to it (`warm`); the end below then leaves the socket alone.
        conn.park();
        conn.end(Error::new(
            Status::Closed,
            format!("the client of '{}' was closed", conn.ic_id),
        ));
        if conn.owner.is_current() {
            conn.run_ready();
            if let Some(me) = conn.me() {
                let me: Arc<dyn Member> = me;
                conn.owner.forget(&me);
            }
            return;
        }
        conn.wake_owner();
        conn.waiters
            .wait_until(crate::ring::Spin(Duration::ZERO), || conn.settled());
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}
