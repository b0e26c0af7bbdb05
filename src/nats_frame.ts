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
