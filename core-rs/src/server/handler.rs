//! What a server does with its clients: the [`Handler`] trait, its closure form
//! ([`handlers`]), who a connection is with ([`ConnInfo`]), and the answer to an `open`
//! ([`Opening`]).

use std::fmt;
use std::sync::Arc;

use super::Command;
use crate::status::{Error, Status};

/// Who a connection is with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// The server's identifier for this connection, unique for the server's life.
    pub id: u64,
    /// The client process's id.
    pub pid: i32,
    /// The client process's effective user id.
    pub uid: u32,
    /// The client process's effective group id.
    pub gid: u32,
    /// The protocol minor the connection speaks, the lower of the client's and the server's (0
    /// while its hello is unread: in a [`Handler::refused`] of the handshake).
    pub minor: u16,
}

/// What a server does with its clients and their commands.
///
/// `open`, `exec` and `close` run on the server's owner ([`crate::owner`]): the process's
/// runner thread for a server of Rust callers, shared by every server and client of the process
/// — so a handler that blocks holds them all. Hand long work to the pool
/// ([`crate::Mode::Worker`]), or keep the [`Command`] and finish it later from a thread of your
/// own. `refused`, and the `close` of a connection whose last command a pool thread finished,
/// may run on other threads of the library.
pub trait Handler: Send + Sync + 'static {
    /// The user context of one connection.
    type Context: Send + Sync + 'static;

    /// A client connected. Runs before the client learns it is connected, so before any of its
    /// commands. The value returned is handed to `exec` and `close` for this connection; an
    /// error refuses the client, whose `connect` fails with it (and `close` does not run).
    fn open(&self, conn: &ConnInfo) -> Result<Self::Context, Error>;

    /// The form of `open` the server calls: by default it calls [`Handler::open`] and answers
    /// at once. A handler that answers later (the JavaScript bindings do) overrides it and
    /// answers through `opening`, from any thread; dropping it unanswered refuses the client.
    fn begin_open(&self, conn: &ConnInfo, opening: Opening<Self::Context>) {
        opening.answer(self.open(conn));
    }

    /// Answers `open` at once, on the library's I/O thread, when it can do so without running
    /// user code (a binding whose user gave no `open`): `Some` accepts or refuses the client
    /// right after its hello, with no wait for the owner; `None` (the default) asks
    /// [`Handler::begin_open`] on the owner. It must not block.
    fn open_at_once(&self, _conn: &ConnInfo) -> Option<Result<Self::Context, Error>> {
        None
    }

    /// Runs one command. Answer it with [`Command::finish`], now or later from any thread; a
    /// command dropped unanswered, or a panic, answers [`Status::HandlerFailed`].
    fn exec(&self, command: Command, conn: &ConnInfo, context: &Self::Context);

    /// The connection ended. Runs exactly once per `open`, after every command of the
    /// connection has been answered or failed.
    fn close(&self, conn: &ConnInfo, context: &Self::Context);

    /// The connection ended (the client closed, died or broke the protocol), as its owner lets
    /// go of it: called once, after `open` accepted it, before `close` — which waits for the
    /// commands still unanswered. A handler that keeps commands past their turn drops or
    /// answers them here, so that `close` runs. The default does nothing.
    fn ended(&self, _conn: &ConnInfo, _context: &Self::Context) {}

    /// Whether this handler hosts an event queue ([`crate::queue`]): it then receives the
    /// queue operations ([`crate::Mode::Queue`]) and no other command; any other handler never
    /// sees one (the server answers them `INVALID_COMMAND`). By default `false`.
    fn hosts_queue(&self) -> bool {
        false
    }

    /// A client was turned away during the handshake, or a connection was dropped for breaking
    /// the protocol. Nothing is required; the default does nothing. It may run on the library's
    /// I/O thread: it must not block.
    fn refused(&self, _peer: Option<&ConnInfo>, _why: &Error) {}

    /// Whether the connection of `conn` is lent to a consumer that pops its CS ring and pushes
    /// its SC ring itself (the JavaScript bindings' lanes): `Some` with how to tell it of
    /// commands to take and of the end. Asked once, as the connection opens, before the client
    /// is welcome. The consumer then takes, runs and answers the connection's slot commands
    /// itself, holding the connection for those it keeps past its turn
    /// ([`crate::server::Server::lane_hold`]); backup-path commands still come to `exec`. By
    /// default `None`.
    fn lane(&self, _conn: &ConnInfo) -> Option<crate::owner::LaneNotify> {
        None
    }

    /// Whether `exec` takes its commands itself ([`Command::take`]), later than it receives
    /// them (a handler that queues them, as the JavaScript bindings do). By default the server
    /// takes each command just before `exec`: a withdrawn one never reaches it.
    fn takes_commands(&self) -> bool {
        false
    }
}

/// The answer to one `open`: accept the client with its context, or refuse it. Given to
/// [`Handler::begin_open`]; answered once (dropping it refuses).
pub struct Opening<C: Send + Sync + 'static> {
    answer: Option<Answer<C>>,
}

/// What answers an `open`.
type Answer<C> = Box<dyn FnOnce(Result<C, Error>) + Send>;

impl<C: Send + Sync + 'static> fmt::Debug for Opening<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opening")
            .field("answered", &self.answer.is_none())
            .finish()
    }
}

impl<C: Send + Sync + 'static> Opening<C> {
    pub(crate) fn new(answer: impl FnOnce(Result<C, Error>) + Send + 'static) -> Opening<C> {
        Opening {
            answer: Some(Box::new(answer)),
        }
    }

    /// Accepts the client with `Ok(context)`, or refuses it with the error, which its
    /// `connect` then fails with.
    pub fn answer(mut self, result: Result<C, Error>) {
        if let Some(answer) = self.answer.take() {
            answer(result);
        }
    }
}

impl<C: Send + Sync + 'static> Drop for Opening<C> {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            answer(Err(Error::new(
                Status::HandlerFailed,
                "the server's open handler gave no answer",
            )));
        }
    }
}

/// A [`Handler`] made of three closures; see [`handlers`].
pub struct Handlers<O, E, C> {
    open: O,
    exec: E,
    close: C,
}

impl<O, E, C> fmt::Debug for Handlers<O, E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handlers")
    }
}

/// A handler from `open`, `exec` and `close` closures; `open`'s value is the user context.
///
/// ```no_run
/// use shmcall_core::{handlers, ServeOptions, Server};
///
/// let echo = handlers(
///     |_conn| Ok(0u64),
///     |mut command, _conn, _count| {
///         let (input, mut output) = command.areas();
///         let mut buf = vec![0; input.len().min(output.len())];
///         input.read_at(0, &mut buf);
///         output.write(&buf);
///         command.finish(0, buf.len());
///     },
///     |_conn, _count| {},
/// );
/// let server = Server::serve("echo", echo, ServeOptions::default())?;
/// # Ok::<(), shmcall_core::Error>(())
/// ```
pub fn handlers<Ctx, O, E, C>(open: O, exec: E, close: C) -> Handlers<O, E, C>
where
    Ctx: Send + Sync + 'static,
    O: Fn(&ConnInfo) -> Result<Ctx, Error> + Send + Sync + 'static,
    E: Fn(Command, &ConnInfo, &Ctx) + Send + Sync + 'static,
    C: Fn(&ConnInfo, &Ctx) + Send + Sync + 'static,
{
    Handlers { open, exec, close }
}

impl<Ctx, O, E, C> Handler for Handlers<O, E, C>
where
    Ctx: Send + Sync + 'static,
    O: Fn(&ConnInfo) -> Result<Ctx, Error> + Send + Sync + 'static,
    E: Fn(Command, &ConnInfo, &Ctx) + Send + Sync + 'static,
    C: Fn(&ConnInfo, &Ctx) + Send + Sync + 'static,
{
    type Context = Ctx;

    fn open(&self, conn: &ConnInfo) -> Result<Ctx, Error> {
        (self.open)(conn)
    }

    fn exec(&self, command: Command, conn: &ConnInfo, context: &Ctx) {
        (self.exec)(command, conn, context)
    }

    fn close(&self, conn: &ConnInfo, context: &Ctx) {
        (self.close)(conn, context)
    }
}

/// Keeps a handler's context shared between the connection and its commands.
pub(crate) type Context<H> = Arc<<H as Handler>::Context>;
