/**
 * The frame that carries a command and its answer over NATS (docs/protocol.md, "Over NATS"):
 * a 24-byte header, then the areas. Every frame read here came from the network: nothing in
 * it is trusted, and a decoder returns a status saying why rather than throw.
 *
 * @module
 */

import { Status } from "./status.ts";

/** The frame's constants (docs/protocol.md, "Over NATS"). */
export const NATS_FRAME = {
  /** The first two bytes of every frame: "SC". */
  MAGIC_0: 0x53,
  MAGIC_1: 0x43,
  /** The frame's version: a major this side does not speak is refused whole. */
  MAJOR: 1,
  MINOR: 0,
  /** Bytes of the header. */
  HEADER: 24,
  /** Kinds. */
  COMMAND: 1,
  ANSWER: 2,
  GOODBYE: 3,
  /** A command's flags. */
  INLINE_CHOSEN: 1,
  INLINE: 2,
  OUTPUT_PREPARED: 4,
  /** Bytes of a client's session id. */
  SESSION: 8,
  /** The event queue's kinds (docs/protocol.md, "Event queues over NATS"). */
  QUEUE_OPEN: 4,
  QUEUE_REGISTER: 5,
  QUEUE_GOODBYE: 6,
  QUEUE_POSTS: 7,
  QUEUE_NOTES: 8,
  QUEUE_PING: 9,
  /** `QUEUE_REGISTER`'s flag: unregister the events. */
  UNREGISTER: 1,
  /** `QUEUE_NOTES`'s flag: the queue's last notes (its host closed). */
  END: 1,
  /** Bytes before a post's data: its event and its length. */
  POST_RECORD: 8,
  /** Bytes before a note's data: its sequence (two words, low first), event and length. */
  NOTE_RECORD: 16,
  /** Bytes before a notes frame's records: the host's count of this consumer's drops. */
  NOTES_DROPPED: 4,
} as const;

const KNOWN_FLAGS = NATS_FRAME.INLINE_CHOSEN | NATS_FRAME.INLINE | NATS_FRAME.OUTPUT_PREPARED;

/** The library statuses an answer may carry: every one the library names. */
const LIBRARY_STATUSES = new Set<number>(
  Object.values(Status).filter((s) => s < 0),
);

/** A command as a server reads it off NATS. */
export interface CommandFrame {
  code: number;
  /** The client's choice of where it runs: undefined for the server's default. */
  inline: boolean | undefined;
  /** The client's session, as 16 hexadecimal digits. */
  session: string;
  /** The input area (a view of the message). */
  input: Uint8Array;
  /** The output area's capacity. */
  outputLength: number;
  /** What the client prepared in its output area, when it did (a view of the message). */
  output: Uint8Array | undefined;
}

/** A frame that could not be read: the status to answer with, and why. */
export interface Refusal {
  status: number;
  why: string;
}

/** An answer as a client reads it off NATS. */
export interface AnswerFrame {
  status: number;
  length: number;
  /** The output bytes (a view of the message). */
  output: Uint8Array;
}

/** Writes a header's fixed fields; returns the frame's view for the rest. */
function header(frame: Uint8Array, kind: number, flags: number): DataView {
  frame[0] = NATS_FRAME.MAGIC_0;
  frame[1] = NATS_FRAME.MAGIC_1;
  frame[2] = NATS_FRAME.MAJOR;
  frame[3] = NATS_FRAME.MINOR;
  frame[4] = kind;
  frame[5] = flags;
  return new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
}

/** Reads the header's version; a refusal when it is not a frame this side speaks. */
function checkHeader(frame: Uint8Array, kind: number): Refusal | undefined {
  if (frame.length < NATS_FRAME.HEADER) {
    return {
      status: Status.PROTOCOL_VIOLATION,
      why: `a frame of ${frame.length} bytes, shorter than its ${NATS_FRAME.HEADER}-byte header`,
    };
  }
  if (frame[0] !== NATS_FRAME.MAGIC_0 || frame[1] !== NATS_FRAME.MAGIC_1) {
    return {
      status: Status.PROTOCOL_VIOLATION,
      why: `not a shmcall frame (it begins ${frame[0]}, ${frame[1]})`,
    };
  }
  if (frame[2] !== NATS_FRAME.MAJOR) {
    return {
      status: Status.VERSION_MISMATCH,
      why: `a frame of version ${frame[2]}.${
        frame[3]
      }; this side speaks ${NATS_FRAME.MAJOR}.${NATS_FRAME.MINOR}`,
    };
  }
  if (frame[4] !== kind) {
    return { status: Status.PROTOCOL_VIOLATION, why: `a frame of kind ${frame[4]}, not ${kind}` };
  }
  return undefined;
}

/** The session's 16 hexadecimal digits from its 8 bytes at `at`. */
function sessionOf(frame: Uint8Array, at: number): string {
  let s = "";
  for (let i = at; i < at + NATS_FRAME.SESSION; i++) s += frame[i]!.toString(16).padStart(2, "0");
  return s;
}

/** A session's name: its 8 bytes as 16 hexadecimal digits, as servers see it. */
export function sessionName(session: Uint8Array): string {
  return sessionOf(session, 0);
}

/** A fresh session id: 8 random bytes. */
export function newSession(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(NATS_FRAME.SESSION));
}

/**
 * A command's frame: the header, the input area (`inputLength` bytes, filled by `fill`), and,
 * when `output` is given, the output area the client prepared.
 */
export function encodeCommand(
  code: number,
  inline: boolean | undefined,
  session: Uint8Array,
  input: Uint8Array,
  outputLength: number,
  output: Uint8Array | undefined,
): Uint8Array {
  const frame = new Uint8Array(
    NATS_FRAME.HEADER + input.length + (output === undefined ? 0 : outputLength),
  );
  const flags = (inline === undefined ? 0 : NATS_FRAME.INLINE_CHOSEN) |
    (inline === true ? NATS_FRAME.INLINE : 0) |
    (output === undefined ? 0 : NATS_FRAME.OUTPUT_PREPARED);
  const view = header(frame, NATS_FRAME.COMMAND, flags);
  view.setUint32(8, code, true);
  view.setUint32(12, outputLength, true);
  frame.set(session, 16);
  frame.set(input, NATS_FRAME.HEADER);
  if (output !== undefined) frame.set(output, NATS_FRAME.HEADER + input.length);
  return frame;
}

/**
 * Reads a command; `maxOutput` is the largest output area this server can send back. A
 * refusal (`INVALID_COMMAND`, `VERSION_MISMATCH`, `PROTOCOL_VIOLATION`) otherwise.
 */
export function decodeCommand(frame: Uint8Array, maxOutput: number): CommandFrame | Refusal {
  const bad = checkHeader(frame, NATS_FRAME.COMMAND);
  if (bad !== undefined) {
    // A well-formed frame of another kind is a malformed command.
    return bad.status === Status.PROTOCOL_VIOLATION
      ? { status: Status.INVALID_COMMAND, why: bad.why }
      : bad;
  }
  const flags = frame[5]!;
  if ((flags & ~KNOWN_FLAGS) !== 0 || frame[6] !== 0 || frame[7] !== 0) {
    return {
      status: Status.INVALID_COMMAND,
      why: `a command with flags ${flags} and reserved bytes ${frame[6]}, ${frame[7]}`,
    };
  }
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const code = view.getUint32(8, true);
  const outputLength = view.getUint32(12, true);
  if (outputLength > maxOutput) {
    return {
      status: Status.INVALID_COMMAND,
      why: `an output area of ${outputLength} bytes, more than an answer can carry (${maxOutput})`,
    };
  }
  const prepared = (flags & NATS_FRAME.OUTPUT_PREPARED) !== 0;
  const areas = frame.length - NATS_FRAME.HEADER;
  const inputLength = areas - (prepared ? outputLength : 0);
  if (inputLength < 0) {
    return {
      status: Status.INVALID_COMMAND,
      why: `a prepared output area of ${outputLength} bytes in ${areas} bytes of areas`,
    };
  }
  const at = NATS_FRAME.HEADER;
  return {
    code,
    inline: (flags & NATS_FRAME.INLINE_CHOSEN) === 0
      ? undefined
      : (flags & NATS_FRAME.INLINE) !== 0,
    session: sessionOf(frame, 16),
    input: frame.subarray(at, at + inputLength),
    outputLength,
    output: prepared ? frame.subarray(at + inputLength) : undefined,
  };
}

/** An answer's frame: `status`, `length`, and the output bytes (none for a refusal). */
export function encodeAnswer(status: number, length: number, output: Uint8Array): Uint8Array {
  const frame = new Uint8Array(NATS_FRAME.HEADER + output.length);
  const view = header(frame, NATS_FRAME.ANSWER, 0);
  view.setInt32(8, status, true);
  view.setUint32(12, length, true);
  frame.set(output, NATS_FRAME.HEADER);
  return frame;
}

/**
 * Reads the answer to a command whose output area holds `capacity` bytes. A refusal
 * (`PROTOCOL_VIOLATION`, `VERSION_MISMATCH`) for what no server of this frame may answer.
 */
export function decodeAnswer(frame: Uint8Array, capacity: number): AnswerFrame | Refusal {
  const bad = checkHeader(frame, NATS_FRAME.ANSWER);
  if (bad !== undefined) return bad;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const status = view.getInt32(8, true);
  const length = view.getUint32(12, true);
  const output = frame.subarray(NATS_FRAME.HEADER);
  if (status < 0 && !LIBRARY_STATUSES.has(status)) {
    return { status: Status.PROTOCOL_VIOLATION, why: `an answer of unknown status ${status}` };
  }
  // An overflow says how many bytes the handler wanted, and carries none of them.
  const carried = status === Status.OUTPUT_OVERFLOW ? 0 : length;
  if (output.length !== carried || carried > capacity) {
    return {
      status: Status.PROTOCOL_VIOLATION,
      why:
        `an answer of status ${status} and length ${length} carrying ${output.length} bytes, for an output area of ${capacity}`,
    };
  }
  return { status, length, output };
}

/**
 * Reads the answer to a queue's request: a status and a word (an open's granted capacity), no
 * output. A refusal for what no host of this frame may answer.
 */
export function decodeReply(frame: Uint8Array): { status: number; word: number } | Refusal {
  const bad = checkHeader(frame, NATS_FRAME.ANSWER);
  if (bad !== undefined) return bad;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const status = view.getInt32(8, true);
  if ((status < 0 && !LIBRARY_STATUSES.has(status)) || frame.length !== NATS_FRAME.HEADER) {
    return {
      status: Status.PROTOCOL_VIOLATION,
      why: `a reply of status ${status} and ${frame.length - NATS_FRAME.HEADER} bytes of output`,
    };
  }
  return { status, word: view.getUint32(12, true) };
}

/** A goodbye: the client of `session` closed. */
export function encodeGoodbye(session: Uint8Array): Uint8Array {
  const frame = new Uint8Array(NATS_FRAME.HEADER);
  header(frame, NATS_FRAME.GOODBYE, 0);
  frame.set(session, 16);
  return frame;
}

/** The session a goodbye names, or undefined for anything else. */
export function decodeGoodbye(frame: Uint8Array): string | undefined {
  if (checkHeader(frame, NATS_FRAME.GOODBYE) !== undefined) return undefined;
  if (frame.length !== NATS_FRAME.HEADER) return undefined;
  return sessionOf(frame, 16);
}

/** A queue frame's fields past the header's version and kind. */
export interface QueueFrame {
  flags: number;
  /** The header's two words (what they hold depends on the kind). */
  a: number;
  b: number;
  session: string;
  /** What follows the header (a view of the message). */
  payload: Uint8Array;
}

/** A queue frame of `kind`: the header's words, the session, then `payload`. */
export function encodeQueue(
  kind: number,
  flags: number,
  a: number,
  b: number,
  session: Uint8Array,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const frame = new Uint8Array(NATS_FRAME.HEADER + payload.length);
  const view = header(frame, kind, flags);
  view.setUint32(8, a, true);
  view.setUint32(12, b, true);
  frame.set(session, 16);
  frame.set(payload, NATS_FRAME.HEADER);
  return frame;
}

/** Reads a queue frame of `kind` whose flags are among `flags`; a refusal otherwise. */
export function decodeQueue(frame: Uint8Array, kind: number, flags = 0): QueueFrame | Refusal {
  const bad = checkHeader(frame, kind);
  if (bad !== undefined) return bad;
  if ((frame[5]! & ~flags) !== 0 || frame[6] !== 0 || frame[7] !== 0) {
    return {
      status: Status.PROTOCOL_VIOLATION,
      why: `a frame of kind ${kind} with flags ${frame[5]} and reserved bytes ${frame[6]}, ${
        frame[7]
      }`,
    };
  }
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  return {
    flags: frame[5]!,
    a: view.getUint32(8, true),
    b: view.getUint32(12, true),
    session: sessionOf(frame, 16),
    payload: frame.subarray(NATS_FRAME.HEADER),
  };
}

/** The events a registration's payload names (the words a local registration sends). */
export function parseRegistration(payload: Uint8Array): "all" | number[] | Refusal {
  if (payload.length < 4 || payload.length % 4 !== 0) {
    return {
      status: Status.INVALID_ARGUMENT,
      why: `a registration of ${payload.length} bytes, not a mode and whole events`,
    };
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const mode = view.getUint32(0, true);
  if (mode === 1 && payload.length === 4) return "all";
  if (mode !== 0) {
    return { status: Status.INVALID_ARGUMENT, why: `a registration of mode ${mode}` };
  }
  const events: number[] = [];
  for (let at = 4; at < payload.length; at += 4) events.push(view.getUint32(at, true));
  return events;
}

/** A post, as a host reads it off NATS. */
export interface PostRecord {
  event: number;
  /** A view of the message. */
  data: Uint8Array;
}

/** Appends a post's record (event, length, data) to `out` at `at`; returns where it ends. */
export function writePost(out: Uint8Array, at: number, event: number, data: Uint8Array): number {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  view.setUint32(at, event, true);
  view.setUint32(at + 4, data.length, true);
  out.set(data, at + NATS_FRAME.POST_RECORD);
  return at + NATS_FRAME.POST_RECORD + data.length;
}

/** The `count` posts of a posts frame's payload, each of at most `maxData` bytes, or a refusal. */
export function parsePosts(
  payload: Uint8Array,
  count: number,
  maxData: number,
): PostRecord[] | Refusal {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const posts: PostRecord[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    if (payload.length - at < NATS_FRAME.POST_RECORD) {
      return { status: Status.PROTOCOL_VIOLATION, why: `post ${i} of ${count} is cut short` };
    }
    const event = view.getUint32(at, true);
    const length = view.getUint32(at + 4, true);
    const start = at + NATS_FRAME.POST_RECORD;
    if (length > maxData || length > payload.length - start) {
      return {
        status: Status.PROTOCOL_VIOLATION,
        why: `post ${i} says it holds ${length} bytes (at most ${maxData}; ${
          payload.length - start
        } left)`,
      };
    }
    posts.push({ event, data: payload.subarray(start, start + length) });
    at = start + length;
  }
  if (at !== payload.length) {
    return {
      status: Status.PROTOCOL_VIOLATION,
      why: `${payload.length - at} bytes after the ${count} posts`,
    };
  }
  return posts;
}

/** A notification as a notes frame carries it. */
export interface NoteRecord {
  sequence: number;
  event: number;
  data: Uint8Array;
}

/** A notes frame's payload: the host's drops for this consumer, then the notes. */
export function encodeNotes(dropped: number, notes: readonly NoteRecord[]): Uint8Array {
  let size = NATS_FRAME.NOTES_DROPPED;
  for (const n of notes) size += NATS_FRAME.NOTE_RECORD + n.data.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, dropped, true);
  let at = NATS_FRAME.NOTES_DROPPED;
  for (const n of notes) {
    view.setUint32(at, n.sequence % 2 ** 32, true);
    view.setUint32(at + 4, Math.floor(n.sequence / 2 ** 32), true);
    view.setUint32(at + 8, n.event, true);
    view.setUint32(at + 12, n.data.length, true);
    out.set(n.data, at + NATS_FRAME.NOTE_RECORD);
    at += NATS_FRAME.NOTE_RECORD + n.data.length;
  }
  return out;
}

/**
 * The drops and `count` notes of a notes frame's payload (their data copied into one buffer of
 * this side's own), each of at most `maxData` bytes, or a refusal.
 */
export function parseNotes(
  payload: Uint8Array,
  count: number,
  maxData: number,
): { dropped: number; notes: NoteRecord[] } | Refusal {
  if (payload.length < NATS_FRAME.NOTES_DROPPED) {
    return { status: Status.PROTOCOL_VIOLATION, why: "notes without their count of drops" };
  }
  // A copy: the message's bytes belong to the NATS client (its arrays are Buffers).
  const own = new Uint8Array(payload);
  const view = new DataView(own.buffer);
  const notes: NoteRecord[] = [];
  let at = NATS_FRAME.NOTES_DROPPED;
  for (let i = 0; i < count; i++) {
    if (own.length - at < NATS_FRAME.NOTE_RECORD) {
      return { status: Status.PROTOCOL_VIOLATION, why: `note ${i} of ${count} is cut short` };
    }
    const high = view.getUint32(at + 4, true);
    if (high >= 2 ** 21) {
      // Past 2^53: no number holds it exactly (a host takes centuries to post that many).
      return {
        status: Status.PROTOCOL_VIOLATION,
        why: `note ${i} has sequence ${high} * 2^32 + …, past 2^53`,
      };
    }
    const sequence = high * 2 ** 32 + view.getUint32(at, true);
    const event = view.getUint32(at + 8, true);
    const length = view.getUint32(at + 12, true);
    const start = at + NATS_FRAME.NOTE_RECORD;
    if (length > maxData || length > own.length - start) {
      return {
        status: Status.PROTOCOL_VIOLATION,
        why: `note ${i} says it holds ${length} bytes (at most ${maxData}; ${
          own.length - start
        } left)`,
      };
    }
    notes.push({ sequence, event, data: own.subarray(start, start + length) });
    at = start + length;
  }
  if (at !== own.length) {
    return {
      status: Status.PROTOCOL_VIOLATION,
      why: `${own.length - at} bytes after the ${count} notes`,
    };
  }
  return { dropped: view.getUint32(0, true), notes };
}
