//! One command the server took: its areas, and its answer — written into its slot and pushed
//! on the SC ring, or sent back over the backup path — exactly once.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::connection::Connection;
use crate::segment::{Segment, SlotRef};
use crate::slot::{Area, Mode, Reply, Request};
use crate::status::Status;
use crate::wire;

/// One command, taken by the server. Answer it with [`Command::finish`].
pub struct Command {
    pub(crate) conn: Arc<Connection>,
    pub(crate) code: u32,
    pub(crate) mode: Mode,
    pub(crate) body: Body,
    pub(crate) answered: bool,
    /// When the server received it ([`crate::stats::now_ns`]).
    pub(crate) started: u64,
    /// Whether it counts in the server's statistics (a request for them does not).
    pub(crate) counted: bool,
}

pub(crate) enum Body {
    Slot {
        slot: SlotRef,
        request: Request,
    },
    Backup {
        token: u64,
        input: Vec<u8>,
        output: Vec<u8>,
    },
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("connection", &self.conn.info.id)
            .field("code", &self.code)
            .field("input_len", &self.input_len())
            .field("output_capacity", &self.output_capacity())
            .finish()
    }
}

impl Command {
    /// The operation code.
    #[inline]
    pub fn code(&self) -> u32 {
        self.code
    }

    /// Where the command asked to run.
    #[inline]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The segment its areas lie in, for a caller that must keep the mapping alive after the
    /// command (views of it handed to JavaScript); `None` on the backup path.
    pub fn segment(&self) -> Option<Arc<Segment>> {
        match self.body {
            Body::Slot { .. } => Some(self.conn.segment.clone()),
            Body::Backup { .. } => None,
        }
    }

    /// Whether its connection ended — the client closed, died or broke the protocol — so that
    /// no one waits for the answer any more: a long handler may stop early (it still answers,
    /// or drops the command, and the answer is discarded).
    pub fn client_gone(&self) -> bool {
        self.conn.ended()
    }

    /// Whether it came over the backup path rather than shared memory.
    pub fn is_backup(&self) -> bool {
        matches!(self.body, Body::Backup { .. })
    }

    /// Bytes of input.
    pub fn input_len(&self) -> usize {
        match &self.body {
            Body::Slot { request, .. } => request.input_len as usize,
            Body::Backup { input, .. } => input.len(),
        }
    }

    /// Bytes of output the client made room for.
    pub fn output_capacity(&self) -> usize {
        match &self.body {
            Body::Slot { request, .. } => request.output_cap as usize,
            Body::Backup { output, .. } => output.len(),
        }
    }

    /// The input area (in shared memory unless [`Command::is_backup`]).
    pub fn input(&mut self) -> Area<'_> {
        match &mut self.body {
            Body::Slot { slot, request } => self.conn.segment.input(*slot, request.input_len),
            Body::Backup { input, .. } => Area::from_slice(input),
        }
    }

    /// The output area, as long as its capacity.
    pub fn output(&mut self) -> Area<'_> {
        match &mut self.body {
            Body::Slot { slot, request } => self.conn.segment.output(*slot, request.output_cap),
            Body::Backup { output, .. } => Area::from_slice(output),
        }
    }

    /// Both areas at once, for handlers that read the input while writing the output.
    pub fn areas(&mut self) -> (Area<'_>, Area<'_>) {
        match &mut self.body {
            Body::Slot { slot, request } => (
                self.conn.segment.input(*slot, request.input_len),
                self.conn.segment.output(*slot, request.output_cap),
            ),
            Body::Backup { input, output, .. } => {
                (Area::from_slice(input), Area::from_slice(output))
            }
        }
    }

    /// Answers the command: `status` (the server's own, >= 0, or a library status) and the
    /// number of output bytes written. A length beyond the capacity answers
    /// [`Status::OutputOverflow`] instead, telling the client that length.
    pub fn finish(mut self, status: i32, len: usize) {
        self.answer(status, len);
    }

    /// Answers the command with a library failure.
    pub fn fail(mut self, status: Status) {
        self.answer(status.code(), 0);
    }

    /// Takes the command to run it, unless its client withdrew it first: then it is answered
    /// `CANCELLED` here, `false` is returned, and the caller drops it without running it.
    /// Commands on the backup path cannot be withdrawn: always taken.
    pub fn take(&mut self) -> bool {
        let taken = match &self.body {
            Body::Slot { slot, .. } => self.conn.segment.header(*slot).take(),
            Body::Backup { .. } => true,
        };
        if !taken {
            self.answer(Status::Cancelled.code(), 0);
        }
        taken
    }

    /// Whether the command has been answered (by [`Command::take`] finding it withdrawn).
    pub fn is_answered(&self) -> bool {
        self.answered
    }

    fn answer(&mut self, status: i32, len: usize) {
        if self.answered {
            return;
        }
        self.answered = true;
        // An overflow's length is how many bytes were wanted (protocol 2.1); no output goes.
        let mut wanted = 0;
        let (status, len) = if len > self.output_capacity() {
            wanted = len;
            (Status::OutputOverflow.code(), 0)
        } else if status < 0 && Status::from_code(status).is_none() {
            // The client would take an unknown library status for a broken protocol and drop
            // the whole connection; it is this handler's failure, and only this command's.
            (Status::HandlerFailed.code(), 0)
        } else {
            (status, len as u32)
        };
        let conn = &self.conn;
        if self.counted {
            conn.stats.finish(self.started, status, len);
        }
        match &mut self.body {
            Body::Slot { slot, request } => {
                let output_len = if wanted > 0 && conn.info.minor >= 1 {
                    u32::try_from(wanted).unwrap_or(u32::MAX)
                } else {
                    len
                };
                conn.segment.header(*slot).write_reply(&Reply {
                    status,
                    output_len,
                    generation: request.generation,
                });
                // The client may push this slot again only after it pops our answer, so the
                // slot must read as "not ours" before the push that returns it.
                conn.held[slot.index as usize].store(false, Ordering::Release);
                conn.push_answer(slot.offset);
            }
            Body::Backup { token, output, .. } => {
                if !conn.ended() {
                    let frame = if wanted > 0 {
                        wire::encode_reply(*token, status, &conn.overflow_body(wanted))
                    } else {
                        wire::encode_reply(*token, status, &output[..len as usize])
                    };
                    if let Err(e) = conn.link.send(frame) {
                        conn.violation(format!("cannot send an answer: {}", e.message()), false);
                    }
                }
            }
        }
    }
}

impl Drop for Command {
    fn drop(&mut self) {
        if !self.answered {
            self.answer(Status::HandlerFailed.code(), 0);
        }
        if let Body::Backup { input, output, .. } = &self.body {
            self.conn.backup_done(input.len() + output.len());
        }
        self.conn.release();
    }
}
