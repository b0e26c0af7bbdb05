//! Statuses and errors: the one place where library outcomes get their numbers and names.
//!
//! User statuses are the server's own and are never negative. Library statuses are negative,
//! fixed for a protocol major version, and shared by the C surface, the wire and the TypeScript
//! layer (`src/status.ts` mirrors this table).

use std::fmt;

/// A library status: why a command or an operation did not produce a user status.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// The peer process ended or closed the connection before the command finished.
    PeerTerminated = -1,
    /// The server's handler panicked, threw, or dropped the command without an answer.
    HandlerFailed = -2,
    /// The command was malformed: an area larger than the protocol allows, a bad flag.
    InvalidCommand = -3,
    /// The server reported an output length larger than the output capacity.
    OutputOverflow = -4,
    /// The command was cancelled before the server took it.
    Cancelled = -5,
    /// The server is quiescing and takes no new commands.
    ServerQuiescing = -6,
    /// The local side closed the client or server while the command was outstanding.
    Closed = -7,
    /// The peer broke the protocol (bad offset, bad length, bad frame); the connection is dropped.
    ProtocolViolation = -8,
    /// The peers speak different protocol major versions.
    VersionMismatch = -9,
    /// No server is listening on that ic id.
    NotFound = -10,
    /// A live server already serves that ic id.
    AlreadyServed = -11,
    /// The peer's credentials are not allowed, or the socket directory is unsafe.
    PermissionDenied = -12,
    /// An argument was out of range or of the wrong form.
    InvalidArgument = -13,
    /// An operating-system call failed.
    Io = -14,
    /// The command's deadline passed after the server took it: it may have run. Its answer,
    /// when it comes, is discarded. Local to the client: no server sends it.
    TimedOut = -15,
}

impl Status {
    /// Every library status, in code order.
    pub const ALL: [Status; 15] = [
        Status::PeerTerminated,
        Status::HandlerFailed,
        Status::InvalidCommand,
        Status::OutputOverflow,
        Status::Cancelled,
        Status::ServerQuiescing,
        Status::Closed,
        Status::ProtocolViolation,
        Status::VersionMismatch,
        Status::NotFound,
        Status::AlreadyServed,
        Status::PermissionDenied,
        Status::InvalidArgument,
        Status::Io,
        Status::TimedOut,
    ];

    /// The status's code, as carried in slot headers, frames and C return values.
    #[inline]
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The status whose code this is, if any.
    pub fn from_code(code: i32) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The name the TypeScript layer and messages use, e.g. `PEER_TERMINATED`.
    pub const fn name(self) -> &'static str {
        match self {
            Status::PeerTerminated => "PEER_TERMINATED",
            Status::HandlerFailed => "HANDLER_FAILED",
            Status::InvalidCommand => "INVALID_COMMAND",
            Status::OutputOverflow => "OUTPUT_OVERFLOW",
            Status::Cancelled => "CANCELLED",
            Status::ServerQuiescing => "SERVER_QUIESCING",
            Status::Closed => "CLOSED",
            Status::ProtocolViolation => "PROTOCOL_VIOLATION",
            Status::VersionMismatch => "VERSION_MISMATCH",
            Status::NotFound => "NOT_FOUND",
            Status::AlreadyServed => "ALREADY_SERVED",
            Status::PermissionDenied => "PERMISSION_DENIED",
            Status::InvalidArgument => "INVALID_ARGUMENT",
            Status::Io => "IO_ERROR",
            Status::TimedOut => "TIMED_OUT",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A library failure: a status and a sentence that names what went wrong and the value involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    /// An error with this status and message.
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        Error {
            status,
            message: message.into(),
        }
    }

    /// An I/O failure, with what was being done when it happened.
    pub fn io(doing: &str, err: impl fmt::Display) -> Error {
        Error::new(Status::Io, format!("{doing}: {err}"))
    }

    /// The status of this failure.
    #[inline]
    pub fn status(&self) -> Status {
        self.status
    }

    /// The human-readable reason.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status.name())
    }
}

impl std::error::Error for Error {}

impl From<nix::Error> for Error {
    fn from(err: nix::Error) -> Error {
        Error::new(Status::Io, err.to_string())
    }
}

/// Results of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_code() {
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), Some(s));
            assert!(s.code() < 0, "{s} must be negative");
        }
        assert_eq!(Status::from_code(0), None);
        assert_eq!(Status::from_code(-100), None);
    }
}
