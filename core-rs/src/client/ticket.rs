//! One command on the client's side, from `begin` to its answer: the [`Ticket`] that owns its
//! slot (or its backup buffers), the parameters of [`crate::Client::execute`] ([`Call`]), its
//! result ([`Output`], [`Answer`]) and the four callbacks around it ([`Callbacks`]).

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

use super::conn::{ABANDONED, COMPLETING, Conn, DONE, FREE, OWNED, SUBMITTED, lock};
use crate::segment::SlotRef;
use crate::slot::Area;
use crate::status::{Error, Status};

/// The most bytes of a server's reason a client shows in its error.
const MAX_REASON: u32 = 1024;

/// A command's answer: the server's status and how many output bytes it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The server's status (always >= 0: library statuses arrive as [`Error`]s).
    pub status: i32,
    /// Output bytes the server wrote.
    pub length: u32,
}

/// What runs when an asynchronous command ends: it gets the finished ticket.
pub(crate) type Completion = Box<dyn FnOnce(Ticket) + Send>;

/// A command on the backup path: its state, and its answer once it came.
pub(crate) struct Backup {
    pub(crate) token: u64,
    pub(crate) output_cap: u32,
    pub(crate) asynchronous: AtomicBool,
    pub(crate) state: AtomicU32,
    pub(crate) status: AtomicI32,
    pub(crate) output_len: AtomicU32,
    pub(crate) output: Mutex<Option<Vec<u8>>>,
    pub(crate) sent_at: AtomicU64,
    pub(crate) pending: Mutex<Option<(Ticket, Completion)>>,
}

impl Backup {
    pub(crate) fn new(token: u64, output_cap: u32) -> Backup {
        Backup {
            token,
            output_cap,
            asynchronous: AtomicBool::new(false),
            state: AtomicU32::new(OWNED),
            status: AtomicI32::new(0),
            output_len: AtomicU32::new(0),
            output: Mutex::new(None),
            sent_at: AtomicU64::new(0),
            pending: Mutex::new(None),
        }
    }
}

/// One command between `begin` and its end: owns a slot (or a backup buffer pair).
pub struct Ticket {
    pub(crate) conn: Arc<Conn>,
    pub(crate) code: u32,
    pub(crate) flags: u32,
    pub(crate) input_len: u32,
    pub(crate) output_cap: u32,
    pub(crate) kind: Kind,
    pub(crate) submitted: bool,
}

pub(crate) enum Kind {
    Slot(SlotRef),
    Backup {
        input: Vec<u8>,
        output: Vec<u8>,
        record: Arc<Backup>,
    },
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("code", &self.code)
            .field("input_len", &self.input_len)
            .field("output_cap", &self.output_cap)
            .field("backup", &self.is_backup())
            .finish()
    }
}

impl Ticket {
    /// Whether the command travels over the backup path.
    pub fn is_backup(&self) -> bool {
        matches!(self.kind, Kind::Backup { .. })
    }

    /// The index of the command's slot, `None` on the backup path (see
    /// [`crate::Client::withdraw`]).
    pub fn slot_index(&self) -> Option<u32> {
        match self.kind {
            Kind::Slot(slot) => Some(slot.index),
            Kind::Backup { .. } => None,
        }
    }

    pub(crate) fn mark_submitted(&mut self) {
        assert!(!self.submitted, "a ticket is submitted once");
        self.submitted = true;
    }

    /// The input area, `input_len` bytes.
    pub fn input(&mut self) -> Area<'_> {
        match &mut self.kind {
            Kind::Slot(slot) => self.conn.segment.input(*slot, self.input_len),
            Kind::Backup { input, .. } => Area::from_slice(input),
        }
    }

    /// The output area: its whole capacity before the answer, the bytes written after it.
    pub fn output(&mut self) -> Area<'_> {
        let len = self.answer().map_or(self.output_cap, |a| a.length);
        match &mut self.kind {
            Kind::Slot(slot) => self.conn.segment.output(*slot, len),
            Kind::Backup { output, record, .. } => {
                // Copy into the buffer handed out at `begin` rather than replace it: its
                // address may be held by a caller (the C surface gives it to JavaScript), so it
                // must not move while the ticket lives. The length was checked against the
                // capacity when the reply arrived.
                if let Some(answer) = lock(&record.output).take() {
                    output[..answer.len()].copy_from_slice(&answer);
                }
                Area::from_slice(&mut output[..len as usize])
            }
        }
    }

    /// The answer, once the command is done: the server's status and output length, or the
    /// library failure.
    pub fn answer(&self) -> Result<Answer, Error> {
        let (state, status, length) = match &self.kind {
            Kind::Slot(slot) => {
                let st = &self.conn.slots[slot.index as usize];
                (st.state.load(Ordering::Acquire), &st.status, &st.output_len)
            }
            Kind::Backup { record, .. } => (
                record.state.load(Ordering::Acquire),
                &record.status,
                &record.output_len,
            ),
        };
        if state != DONE {
            return Err(Error::new(
                Status::InvalidArgument,
                "the command has not finished",
            ));
        }
        // Relaxed: ordered after the result's stores by the Acquire load of DONE above.
        let (status, length) = (
            status.load(Ordering::Relaxed),
            length.load(Ordering::Relaxed),
        );
        if status < 0 {
            if status == Status::OutputOverflow.code() {
                // `length` is how many bytes the handler wanted (protocol 2.1; 0 if unsaid), an
                // untrusted figure shown as it is: only a message is made of it.
                let wanted = if length > 0 {
                    format!("{length} bytes of output")
                } else {
                    "more output".to_string()
                };
                return Err(Error::new(
                    Status::OutputOverflow,
                    format!(
                        "'{}': the server's handler answered {wanted} for an output area of {} bytes",
                        self.conn.ic_id, self.output_cap
                    ),
                ));
            }
            let error = self.conn.error_for(status);
            if status == Status::HandlerFailed.code() && length > 0 {
                // A server that exposes its errors says why in the output area.
                let reason = self.reason(length);
                return Err(Error::new(
                    error.status(),
                    format!("{}: {reason}", error.message()),
                ));
            }
            return Err(error);
        }
        Ok(Answer { status, length })
    }

    /// The reason a failed command's server gave in its output area (`length` bytes, checked
    /// against the capacity when the answer came): text from the peer, shown lossily and cut to
    /// [`MAX_REASON`] bytes, control characters replaced.
    fn reason(&self, length: u32) -> String {
        let n = length.min(MAX_REASON);
        let bytes = match &self.kind {
            Kind::Slot(slot) => self.conn.segment.output(*slot, n).to_vec(),
            Kind::Backup { record, .. } => lock(&record.output)
                .as_ref()
                .map(|o| o[..o.len().min(n as usize)].to_vec())
                .unwrap_or_default(),
        };
        String::from_utf8_lossy(&bytes)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    }

    pub(crate) fn finish(&mut self, answer: Answer, callbacks: &mut dyn Callbacks) -> Output {
        callbacks.input_post(&self.input());
        let output = callbacks.output_post(&self.output());
        Output {
            status: answer.status,
            length: answer.length,
            output,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Kind::Slot(slot) = self.kind else { return };
        let st = &self.conn.slots[slot.index as usize];
        loop {
            match st.state.load(Ordering::Acquire) {
                OWNED | DONE => {
                    st.state.store(FREE, Ordering::Relaxed);
                    lock(&self.conn.free[slot.class]).push(slot.index);
                    return;
                }
                // The server holds it (its caller's deadline passed, or a panic mid-call): its
                // answer frees it (`Conn::dispatch`). AcqRel, racing the answer's
                // `SUBMITTED → COMPLETING`: exactly one of the two wins.
                SUBMITTED => {
                    if st
                        .state
                        .compare_exchange(SUBMITTED, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return;
                    }
                }
                // The answer is being recorded: DONE follows within instructions.
                COMPLETING => std::hint::spin_loop(),
                _ => return,
            }
        }
    }
}

/// One command's parameters for [`crate::Client::execute`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Call<'a> {
    /// Operation code.
    pub code: u32,
    /// The bytes to send.
    pub input: &'a [u8],
    /// The input area's size; `None` means `input.len()`.
    pub input_len: Option<usize>,
    /// The output area's capacity.
    pub output_len: usize,
    /// Where the server runs it.
    pub mode: crate::slot::Mode,
    /// A deadline on the whole wait ([`crate::Client::call_within`]); `None`: none.
    pub timeout: Option<std::time::Duration>,
}

impl Call<'_> {
    pub(crate) fn input_area_len(&self) -> Result<usize, Error> {
        match self.input_len {
            None => Ok(self.input.len()),
            Some(n) if n >= self.input.len() => Ok(n),
            Some(n) => Err(Error::new(
                Status::InvalidArgument,
                format!(
                    "input of {} bytes does not fit input_len {n}",
                    self.input.len()
                ),
            )),
        }
    }
}

/// A command's result for the caller: the server's status, the output length it reported, and
/// what `output_post` returned (by default a copy of the output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The server's status.
    pub status: i32,
    /// Output bytes the server wrote.
    pub length: u32,
    /// The value `output_post` made.
    pub output: Vec<u8>,
}

/// The four client callbacks of a command (the fifth, `completion`, is an argument of
/// [`crate::Client::execute_async`]). Each has the default of the client API: copy the input
/// in, copy the output out.
pub trait Callbacks {
    /// Before sending: fills the input area. Default: copy `input` into it.
    fn input_prepare(&mut self, area: &mut Area<'_>, input: &[u8]) {
        area.write(input);
    }
    /// Before sending: prepares the output area. Default: nothing.
    fn output_prepare(&mut self, _area: &mut Area<'_>) {}
    /// After the server finished: sees the input area. Default: nothing.
    fn input_post(&mut self, _area: &Area<'_>) {}
    /// After the server finished: reads the output area (cut to the reported length). Default:
    /// a copy of it.
    fn output_post(&mut self, area: &Area<'_>) -> Vec<u8> {
        area.to_vec()
    }
}

/// The default callbacks: copy the input in, copy the output out.
#[derive(Clone, Copy, Debug, Default)]
pub struct Copying;

impl Callbacks for Copying {}
