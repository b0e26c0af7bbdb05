//! Control-channel messages: the hello/welcome handshake, the backup path's frames, and the
//! WAKE frame that wakes a peer whose process watches the socket instead of a ring (see
//! [`crate::ring`]). `docs/protocol.md` lists every field.
//!
//! Every message is a frame: an 8-byte header (`magic: u16`, `kind: u8`, `reserved: u8`,
//! `length: u32`, little-endian) and `length` bytes of payload. Parsing is validation: a frame
//! is either turned into a [`Message`] whose every field is in range, or refused with a
//! [`WireError`] that names the problem. The length is checked against its kind's maximum before
//! anything is allocated, so a peer cannot make this side allocate more than one frame's worth.

use std::fmt;
use std::io::{self, Read};

use crate::segment::{CLASSES, Geometry, MAGIC, MAX_AREA, SlotClass};
use crate::status::{Error, Status};

/// First two bytes of every frame header.
pub const FRAME_MAGIC: u16 = 0x4353;
/// Size of a frame header.
pub const HEADER_LEN: usize = 8;
/// Largest payload a frame may carry: a backup command of the largest area plus its fields.
pub const MAX_PAYLOAD: u32 = MAX_AREA + 64;
/// Longest ic id.
pub const MAX_IC_ID: usize = 100;
/// Longest refusal message carried.
pub const MAX_REASON: usize = 1024;

const KIND_HELLO: u8 = 1;
const KIND_WELCOME: u8 = 2;
const KIND_REFUSE: u8 = 3;
const KIND_EXEC: u8 = 4;
const KIND_REPLY: u8 = 5;
const KIND_WAKE: u8 = 6;
const KIND_BYE: u8 = 7;

/// A backup-path command: the whole command travels in the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exec {
    /// The client's identifier for this command, echoed in the reply.
    pub token: u64,
    /// Operation code.
    pub code: u32,
    /// Slot-header flags.
    pub flags: u32,
    /// Output capacity the server may fill.
    pub output_cap: u32,
    /// The input area (its length is the input length).
    pub input: Vec<u8>,
}

/// A backup-path answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The token of the command this answers.
    pub token: u64,
    /// User or library status.
    pub status: i32,
    /// The output, exactly as long as the output length reported.
    pub output: Vec<u8>,
}

/// One validated control-channel message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Client → server, first frame; carries the segment's memfd.
    Hello {
        /// Protocol major of the client.
        major: u16,
        /// Protocol minor of the client.
        minor: u16,
        /// The ic id the client means to reach (checked against the server's own).
        ic_id: String,
        /// The segment's geometry.
        geometry: Geometry,
    },
    /// Server → client: the connection is accepted.
    Welcome {
        /// Protocol major of the server.
        major: u16,
        /// The minor both sides speak: the lower of the two.
        minor: u16,
        /// The server's identifier for this connection.
        connection: u64,
    },
    /// Server → client: the connection is refused.
    Refuse {
        /// Why, as a library status code.
        status: i32,
        /// Why, in words.
        reason: String,
    },
    /// A backup-path command.
    Exec(Exec),
    /// A backup-path reply.
    Reply(Reply),
    /// Either way: a ring whose consumer is [`crate::ring::WATCHED`] has an entry.
    Wake,
    /// Client → server (protocol 2.3): the client closed this connection and keeps the socket
    /// for a later hello of its own ([`crate::client`], "warm connections").
    Bye,
}

/// Why a frame was refused. Each malformation has its own variant.
#[derive(Debug)]
pub enum WireError {
    /// The peer closed the channel cleanly between frames.
    Closed,
    /// The channel ended in the middle of a frame.
    Truncated,
    /// The header does not start with [`FRAME_MAGIC`].
    BadMagic(u16),
    /// The header names no known message kind.
    UnknownKind(u8),
    /// The announced payload exceeds its kind's maximum ([`MAX_PAYLOAD`] for backup frames).
    Oversized(u32),
    /// The payload does not have the form its kind requires.
    Malformed(&'static str),
    /// The peer sent nothing for longer than the read's deadline (the handshake's).
    TimedOut,
    /// Reading failed.
    Io(io::Error),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Closed => f.write_str("the peer closed the control channel"),
            WireError::Truncated => f.write_str("the control channel ended inside a frame"),
            WireError::BadMagic(m) => write!(f, "frame magic {m:#06x} is not {FRAME_MAGIC:#06x}"),
            WireError::UnknownKind(k) => write!(f, "frame kind {k} is unknown"),
            WireError::Oversized(n) => {
                write!(
                    f,
                    "frame payload of {n} bytes exceeds the maximum for its kind"
                )
            }
            WireError::Malformed(why) => write!(f, "malformed frame: {why}"),
            WireError::TimedOut => {
                f.write_str("the peer did not finish its frame within the handshake's deadline")
            }
            WireError::Io(e) => write!(f, "control channel failed: {e}"),
        }
    }
}

impl WireError {
    /// Whether the channel ended — between frames, inside one, or with an error — rather than
    /// carrying a bad frame: on a running connection, the peer went away (a peer killed while
    /// it wrote a frame leaves half of it).
    pub fn is_end(&self) -> bool {
        matches!(
            self,
            WireError::Closed | WireError::Truncated | WireError::Io(_)
        )
    }

    /// A read's failure: a timeout (a read deadline ran out: `WouldBlock` from a socket with a
    /// read timeout, or `TimedOut`) is the peer's slowness, anything else the channel's.
    pub fn from_io(e: io::Error) -> WireError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => WireError::TimedOut,
            _ => WireError::Io(e),
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Error {
        let status = match e {
            WireError::Closed | WireError::Io(_) => Status::PeerTerminated,
            _ => Status::ProtocolViolation,
        };
        Error::new(status, e.to_string())
    }
}

/// A frame header, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    kind: u8,
    /// Payload length in bytes.
    pub len: u32,
}

impl FrameHeader {
    /// Checks magic, kind and length.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<FrameHeader, WireError> {
        let magic = u16::from_le_bytes([bytes[0], bytes[1]]);
        if magic != FRAME_MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let kind = bytes[2];
        if !(KIND_HELLO..=KIND_BYE).contains(&kind) {
            return Err(WireError::UnknownKind(kind));
        }
        let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        // Each kind has its own ceiling, so a handshake frame cannot make us allocate (or wait
        // for) megabytes: only backup commands and replies carry areas.
        let max = match kind {
            KIND_HELLO => 8 + 2 + 2 + 1 + MAX_IC_ID as u32 + 4 + 12 * CLASSES as u32,
            KIND_WELCOME => 12,
            KIND_REFUSE => 6 + MAX_REASON as u32,
            KIND_WAKE | KIND_BYE => 0,
            _ => MAX_PAYLOAD,
        };
        if len > max {
            return Err(WireError::Oversized(len));
        }
        Ok(FrameHeader { kind, len })
    }
}

/// Reads exactly `buf.len()` bytes; `Truncated` when the stream ends part-way (or `Closed` when
/// it ends before the first byte and `at_boundary` says that is a clean end).
fn read_full(r: &mut impl Read, buf: &mut [u8], at_boundary: bool) -> Result<(), WireError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 && at_boundary => return Err(WireError::Closed),
            Ok(0) => return Err(WireError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WireError::from_io(e)),
        }
    }
    Ok(())
}

/// Reads and validates one frame.
pub fn read_message(r: &mut impl Read) -> Result<Message, WireError> {
    let mut h = [0u8; HEADER_LEN];
    read_full(r, &mut h, true)?;
    read_payload(r, FrameHeader::parse(&h)?)
}

/// Reads the payload that follows an already parsed header, and validates it.
pub fn read_payload(r: &mut impl Read, header: FrameHeader) -> Result<Message, WireError> {
    let mut payload = vec![0u8; header.len as usize];
    read_full(r, &mut payload, false)?;
    parse(header.kind, payload)
}

/// Reads frames from a non-blocking stream as bytes arrive: [`Reader::read`] returns each
/// message once it is whole, and `Ok(None)` while the stream has no more bytes for now. The same
/// checks as [`read_message`] (the length against its kind's ceiling before the payload is
/// allocated, then the payload's form) in the same order.
#[derive(Debug, Default)]
pub struct Reader {
    head: [u8; HEADER_LEN],
    head_got: usize,
    /// The parsed header and the payload read so far, once the header is whole.
    body: Option<(FrameHeader, Vec<u8>)>,
    body_got: usize,
}

impl Reader {
    /// Whether the reader is between frames (nothing of a next frame read yet).
    pub fn at_boundary(&self) -> bool {
        self.head_got == 0 && self.body.is_none()
    }

    /// Reads at most `budget` bytes from `r` (at least one frame's header when it is there):
    /// `Ok(Some)` for a whole message, `Ok(None)` when `r` would block or the budget is spent
    /// (call again later), or the error that ends the stream: [`WireError::Closed`] at a clean
    /// end between frames, [`WireError::Truncated`] inside one.
    pub fn read(
        &mut self,
        r: &mut impl Read,
        budget: &mut usize,
    ) -> Result<Option<Message>, WireError> {
        loop {
            if let Some((header, payload)) = &mut self.body {
                if self.body_got == payload.len() {
                    let (header, payload) = self.body.take().expect("a body");
                    self.head_got = 0;
                    self.body_got = 0;
                    return parse(header.kind, payload).map(Some);
                }
                let _ = header;
                if *budget == 0 {
                    return Ok(None);
                }
                // Saturating: an unbounded budget is `usize::MAX`, and the body may be half read.
                let end = payload.len().min(self.body_got.saturating_add(*budget));
                match r.read(&mut payload[self.body_got..end]) {
                    Ok(0) => return Err(WireError::Truncated),
                    Ok(n) => {
                        self.body_got += n;
                        *budget = budget.saturating_sub(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                    Err(e) => return Err(WireError::Io(e)),
                }
                continue;
            }
            match r.read(&mut self.head[self.head_got..]) {
                Ok(0) if self.head_got == 0 => return Err(WireError::Closed),
                Ok(0) => return Err(WireError::Truncated),
                Ok(n) => {
                    self.head_got += n;
                    *budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(WireError::Io(e)),
            }
            if self.head_got == HEADER_LEN {
                let header = FrameHeader::parse(&self.head)?;
                self.body = Some((header, vec![0u8; header.len as usize]));
                self.body_got = 0;
            }
        }
    }

    /// Takes bytes already received some other way (the first bytes of a hello, which come
    /// with its descriptors from `recvmsg`), as if read.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Option<Message>, WireError> {
        let mut budget = usize::MAX;
        let m = self.read(&mut bytes, &mut budget);
        match m {
            Err(WireError::Closed | WireError::Truncated) => Ok(None),
            other => other,
        }
    }
}

/// A cursor that takes little-endian integers off the front of a payload.
struct Take {
    buf: Vec<u8>,
    at: usize,
}

impl Take {
    fn bytes(&mut self, n: usize) -> Result<&[u8], WireError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(WireError::Malformed("payload shorter than its fields"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(
            self.bytes(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(
            self.bytes(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(
            self.bytes(8)?.try_into().expect("8 bytes"),
        ))
    }
    /// The rest of the payload, which must be exactly `n` bytes; reuses the buffer.
    fn rest_exactly(mut self, n: u32, why: &'static str) -> Result<Vec<u8>, WireError> {
        if self.buf.len() - self.at != n as usize {
            return Err(WireError::Malformed(why));
        }
        self.buf.drain(..self.at);
        Ok(self.buf)
    }
    fn end(self) -> Result<(), WireError> {
        if self.at != self.buf.len() {
            return Err(WireError::Malformed("payload longer than its fields"));
        }
        Ok(())
    }
}

fn parse(kind: u8, buf: Vec<u8>) -> Result<Message, WireError> {
    let mut t = Take { buf, at: 0 };
    match kind {
        KIND_HELLO => {
            if t.bytes(8)? != MAGIC {
                return Err(WireError::Malformed(
                    "hello does not start with the shmcall magic",
                ));
            }
            let major = t.u16()?;
            let minor = t.u16()?;
            let n = t.u8()? as usize;
            let ic_id = std::str::from_utf8(t.bytes(n)?)
                .map_err(|_| WireError::Malformed("ic id is not UTF-8"))?
                .to_owned();
            let ring_capacity = t.u32()?;
            let mut classes = [SlotClass {
                count: 0,
                input_capacity: 0,
                output_capacity: 0,
            }; CLASSES];
            for c in &mut classes {
                *c = SlotClass {
                    count: t.u32()?,
                    input_capacity: t.u32()?,
                    output_capacity: t.u32()?,
                };
            }
            t.end()?;
            Ok(Message::Hello {
                major,
                minor,
                ic_id,
                geometry: Geometry {
                    classes,
                    ring_capacity,
                },
            })
        }
        KIND_WELCOME => {
            let m = Message::Welcome {
                major: t.u16()?,
                minor: t.u16()?,
                connection: t.u64()?,
            };
            t.end()?;
            Ok(m)
        }
        KIND_REFUSE => {
            let status = t.i32()?;
            let n = t.u16()? as usize;
            if n > MAX_REASON {
                return Err(WireError::Malformed("refusal reason too long"));
            }
            // Not decoded lossily: each bad byte would become a 3-byte U+FFFD, and the reason
            // would outgrow MAX_REASON.
            let reason = std::str::from_utf8(t.bytes(n)?)
                .map_err(|_| WireError::Malformed("refusal reason is not UTF-8"))?
                .to_owned();
            t.end()?;
            Ok(Message::Refuse { status, reason })
        }
        KIND_EXEC => {
            let token = t.u64()?;
            let code = t.u32()?;
            let flags = t.u32()?;
            let input_len = t.u32()?;
            let output_cap = t.u32()?;
            if input_len > MAX_AREA || output_cap > MAX_AREA {
                return Err(WireError::Malformed(
                    "backup command area beyond the maximum",
                ));
            }
            let input =
                t.rest_exactly(input_len, "backup input length disagrees with the frame")?;
            Ok(Message::Exec(Exec {
                token,
                code,
                flags,
                output_cap,
                input,
            }))
        }
        KIND_REPLY => {
            let token = t.u64()?;
            let status = t.i32()?;
            let output_len = t.u32()?;
            let output =
                t.rest_exactly(output_len, "backup output length disagrees with the frame")?;
            Ok(Message::Reply(Reply {
                token,
                status,
                output,
            }))
        }
        KIND_WAKE => {
            t.end()?;
            Ok(Message::Wake)
        }
        KIND_BYE => {
            t.end()?;
            Ok(Message::Bye)
        }
        _ => Err(WireError::UnknownKind(kind)),
    }
}

impl Take {
    fn i32(&mut self) -> Result<i32, WireError> {
        Ok(self.u32()? as i32)
    }
}

/// Builds a frame: header, then the fields pushed, then any trailing bytes.
struct Build(Vec<u8>);

impl Build {
    fn new(kind: u8, capacity: usize) -> Build {
        let mut v = Vec::with_capacity(HEADER_LEN + capacity);
        v.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
        v.extend_from_slice(&[kind, 0, 0, 0, 0, 0]);
        Build(v)
    }
    fn put(mut self, bytes: &[u8]) -> Build {
        self.0.extend_from_slice(bytes);
        self
    }
    fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() - HEADER_LEN) as u32;
        self.0[4..8].copy_from_slice(&len.to_le_bytes());
        self.0
    }
}

/// Encodes a message as one frame. Encoding what `read_message` would refuse is a bug of this
/// side: the callers check lengths first.
pub fn encode(m: &Message) -> Vec<u8> {
    match m {
        Message::Hello {
            major,
            minor,
            ic_id,
            geometry,
        } => {
            assert!(ic_id.len() <= MAX_IC_ID);
            let mut b = Build::new(KIND_HELLO, 64)
                .put(&MAGIC)
                .put(&major.to_le_bytes())
                .put(&minor.to_le_bytes())
                .put(&[ic_id.len() as u8])
                .put(ic_id.as_bytes())
                .put(&geometry.ring_capacity.to_le_bytes());
            for c in &geometry.classes {
                b = b
                    .put(&c.count.to_le_bytes())
                    .put(&c.input_capacity.to_le_bytes())
                    .put(&c.output_capacity.to_le_bytes());
            }
            b.finish()
        }
        Message::Welcome {
            major,
            minor,
            connection,
        } => Build::new(KIND_WELCOME, 12)
            .put(&major.to_le_bytes())
            .put(&minor.to_le_bytes())
            .put(&connection.to_le_bytes())
            .finish(),
        Message::Refuse { status, reason } => {
            let mut cut = reason.len().min(MAX_REASON);
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            Build::new(KIND_REFUSE, 6 + cut)
                .put(&status.to_le_bytes())
                .put(&(cut as u16).to_le_bytes())
                .put(&reason.as_bytes()[..cut])
                .finish()
        }
        Message::Exec(e) => encode_exec(e.token, e.code, e.flags, e.output_cap, &e.input),
        Message::Reply(r) => encode_reply(r.token, r.status, &r.output),
        Message::Wake => WAKE.to_vec(),
        Message::Bye => BYE.to_vec(),
    }
}

/// The BYE frame: a header with no payload.
pub const BYE: [u8; HEADER_LEN] = {
    let m = FRAME_MAGIC.to_le_bytes();
    [m[0], m[1], KIND_BYE, 0, 0, 0, 0, 0]
};

/// The WAKE frame: a header with no payload.
pub const WAKE: [u8; HEADER_LEN] = {
    let m = FRAME_MAGIC.to_le_bytes();
    [m[0], m[1], KIND_WAKE, 0, 0, 0, 0, 0]
};

/// Encodes a backup command without first building an [`Exec`].
pub fn encode_exec(token: u64, code: u32, flags: u32, output_cap: u32, input: &[u8]) -> Vec<u8> {
    Build::new(KIND_EXEC, 24 + input.len())
        .put(&token.to_le_bytes())
        .put(&code.to_le_bytes())
        .put(&flags.to_le_bytes())
        .put(&(input.len() as u32).to_le_bytes())
        .put(&output_cap.to_le_bytes())
        .put(input)
        .finish()
}

/// Encodes a backup reply without first building a [`Reply`].
pub fn encode_reply(token: u64, status: i32, output: &[u8]) -> Vec<u8> {
    Build::new(KIND_REPLY, 16 + output.len())
        .put(&token.to_le_bytes())
        .put(&status.to_le_bytes())
        .put(&(output.len() as u32).to_le_bytes())
        .put(output)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: Message) {
        let bytes = encode(&m);
        assert_eq!(read_message(&mut bytes.as_slice()).unwrap(), m);
    }

    fn refused(bytes: &[u8]) -> WireError {
        read_message(&mut &bytes[..]).unwrap_err()
    }

    fn hello() -> Message {
        Message::Hello {
            major: 1,
            minor: 3,
            ic_id: "kv.store-1".into(),
            geometry: Geometry::default(),
        }
    }

    #[test]
    fn every_message_survives_encoding() {
        round_trip(hello());
        round_trip(Message::Welcome {
            major: 1,
            minor: 0,
            connection: 42,
        });
        round_trip(Message::Refuse {
            status: Status::VersionMismatch.code(),
            reason: "speaks 2.0".into(),
        });
        round_trip(Message::Exec(Exec {
            token: 7,
            code: 9,
            flags: 1,
            output_cap: 100,
            input: vec![1, 2, 3],
        }));
        round_trip(Message::Reply(Reply {
            token: 7,
            status: -2,
            output: vec![4; 10],
        }));
        round_trip(Message::Wake);
        assert_eq!(encode(&Message::Wake), WAKE);
        round_trip(Message::Bye);
        assert_eq!(encode(&Message::Bye), BYE);
    }

    #[test]
    fn a_wake_frame_that_announces_a_payload_is_refused_before_reading_it() {
        let mut frame = WAKE.to_vec();
        frame[4] = 1;
        frame.push(0);
        assert!(matches!(refused(&frame), WireError::Oversized(1)));
    }

    /// A stream that gives one byte per read, then would block.
    struct Trickle<'a>(&'a [u8], bool);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = !self.1;
            if !self.1 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let Some((&b, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = b;
            self.0 = rest;
            Ok(1)
        }
    }

    /// Every message `bytes` holds, read a byte at a time with an unbounded budget.
    fn trickled(bytes: &[u8]) -> (Vec<Message>, Reader) {
        let mut stream = Trickle(bytes, false);
        let mut reader = Reader::default();
        let mut got = Vec::new();
        for _ in 0..4 * bytes.len() {
            let mut budget = usize::MAX;
            match reader.read(&mut stream, &mut budget) {
                Ok(Some(m)) => got.push(m),
                Ok(None) => {}
                Err(WireError::Closed) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        (got, reader)
    }

    #[test]
    fn the_reader_returns_wake_frames_as_their_bytes_trickle_in_and_none_in_between() {
        let (got, reader) = trickled(&[WAKE, WAKE].concat());
        assert_eq!(got, vec![Message::Wake, Message::Wake]);
        assert!(reader.at_boundary());
    }

    #[test]
    fn a_payload_that_trickles_in_is_read_whole_with_an_unbounded_budget() {
        // A body read in several parts once overflowed `body_got + budget` and panicked the
        // reactor's thread, which left every connection of the process unwatched.
        let (got, reader) = trickled(&[encode(&hello()), WAKE.to_vec()].concat());
        assert_eq!(got, vec![hello(), Message::Wake]);
        assert!(reader.at_boundary());
    }

    #[test]
    fn a_clean_end_between_frames_is_closed() {
        assert!(matches!(refused(&[]), WireError::Closed));
    }

    #[test]
    fn a_truncated_header_is_refused() {
        assert!(matches!(
            refused(&encode(&hello())[..5]),
            WireError::Truncated
        ));
    }

    #[test]
    fn a_truncated_payload_is_refused() {
        let b = encode(&hello());
        assert!(matches!(refused(&b[..b.len() - 1]), WireError::Truncated));
    }

    #[test]
    fn a_wrong_frame_magic_is_refused() {
        let mut b = encode(&hello());
        b[0] ^= 0xff;
        assert!(matches!(refused(&b), WireError::BadMagic(_)));
    }

    #[test]
    fn an_unknown_kind_is_refused() {
        let mut b = encode(&hello());
        b[2] = 99;
        assert!(matches!(refused(&b), WireError::UnknownKind(99)));
    }

    #[test]
    fn an_oversized_frame_is_refused_before_its_payload_is_read() {
        let mut b = encode_exec(1, 2, 0, 10, b"");
        b[4..8].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        // No payload follows: refusing must not depend on reading it.
        assert!(
            matches!(refused(&b[..HEADER_LEN]), WireError::Oversized(n) if n == MAX_PAYLOAD + 1)
        );
    }

    #[test]
    fn an_oversized_reply_is_refused_before_its_payload_is_read() {
        let mut b = encode_reply(7, 0, b"");
        b[4..8].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        assert!(
            matches!(refused(&b[..HEADER_LEN]), WireError::Oversized(n) if n == MAX_PAYLOAD + 1)
        );
        // The ceiling itself is allowed: a reply of the largest area and its fields.
        let mut at_ceiling = encode_reply(7, 0, b"");
        at_ceiling[4..8].copy_from_slice(&MAX_PAYLOAD.to_le_bytes());
        assert!(!matches!(
            refused(&at_ceiling[..HEADER_LEN]),
            WireError::Oversized(_)
        ));
    }

    #[test]
    fn a_reply_whose_output_length_disagrees_with_the_frame_is_refused() {
        let mut b = encode_reply(7, 0, b"abcd");
        // Claim 5 bytes of output while the frame carries 4.
        b[HEADER_LEN + 12..HEADER_LEN + 16].copy_from_slice(&5u32.to_le_bytes());
        assert!(matches!(refused(&b), WireError::Malformed(m) if m.contains("output length")));
    }

    #[test]
    fn a_handshake_frame_may_not_announce_a_large_payload() {
        let mut b = encode(&hello());
        b[4..8].copy_from_slice(&4096u32.to_le_bytes());
        assert!(matches!(
            refused(&b[..HEADER_LEN]),
            WireError::Oversized(4096)
        ));
        // The largest legal hello still fits.
        let longest = Message::Hello {
            major: 1,
            minor: 0,
            ic_id: "x".repeat(MAX_IC_ID),
            geometry: Geometry::default(),
        };
        round_trip(longest);
    }

    #[test]
    fn a_hello_without_the_segment_magic_is_refused() {
        let mut b = encode(&hello());
        b[HEADER_LEN] = b'X';
        assert!(matches!(refused(&b), WireError::Malformed(m) if m.contains("magic")));
    }

    #[test]
    fn trailing_bytes_after_the_fields_are_refused() {
        let mut b = encode(&hello());
        b.push(0);
        let len = (b.len() - HEADER_LEN) as u32;
        b[4..8].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(refused(&b), WireError::Malformed(m) if m.contains("longer")));
    }

    #[test]
    fn an_exec_whose_input_length_disagrees_with_the_frame_is_refused() {
        let mut b = encode_exec(1, 2, 0, 10, b"abcd");
        // Claim 5 bytes of input while the frame carries 4.
        b[HEADER_LEN + 16..HEADER_LEN + 20].copy_from_slice(&5u32.to_le_bytes());
        assert!(matches!(refused(&b), WireError::Malformed(m) if m.contains("input length")));
    }

    #[test]
    fn an_exec_beyond_the_maximum_area_is_refused() {
        let mut b = encode_exec(1, 2, 0, 10, b"");
        b[HEADER_LEN + 20..HEADER_LEN + 24].copy_from_slice(&(MAX_AREA + 1).to_le_bytes());
        assert!(matches!(refused(&b), WireError::Malformed(m) if m.contains("maximum")));
    }
}
