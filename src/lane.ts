/**
 * A client's lane: the connection's rings and slots, pushed and popped by this JavaScript thread
 * through its view of the segment, with no call into the library per command.
 *
 * The core lends a connection once, before its first command (`Native.clientLend`): from then on
 * its slots, their generations and both ring positions are this lane's, and the core keeps the
 * rest — the control socket and the backup path, the connection's end, and waking. Per command:
 *
 * - a slot comes off a free list here (a typed array used as a stack, per slot class);
 * - the request goes into the slot's header, and the slot's offset onto the CS ring with a plain
 *   store; after a batch of pushes, one full fence and a look at the server's sleep flag make
 *   the ring's wake-up handshake (docs/architecture.md, "Sleep flags"). Only a raised flag costs
 *   a call (`Native.clientLaneWake`);
 * - the answer's offset comes off the SC ring with a plain load, and the reply fields are read
 *   once from the slot's header.
 *
 * The core's owner loop looks at the SC ring's next cell, at the read position this lane
 * publishes, and raises a lane event when it holds an answer; before the thread idles it arms
 * the ring, so that the server's next answer wakes it through the reactor. A synchronous command
 * waits in `Native.clientLaneWait`, which spins and then sleeps on the same cell.
 *
 * Everything read from the segment was written by the server, which may write anything at any
 * time: offsets are checked against the layout, the reply against the slot's state, generation
 * and capacity, and statuses against the library's; every index is masked or bounded before
 * use. A check that fails ends the connection as a protocol violation (`clientLaneViolation`),
 * as the core does for what it reads itself.
 *
 * @module
 */

import { CLAIM, LANE, LANE_COUNT, type Mapping, RING, SLOT } from "./native.ts";
import { Status } from "./status.ts";

/** Library statuses run from -1 to this. */
const LOWEST_STATUS = -15;
/**
 * While other commands are out, one command in this many is timed: two clock readings cost
 * about as much as the rest of a pipelined command. A command sent alone is always timed.
 */
const SAMPLE_EVERY = 32;
/**
 * Bits of a server's slot in `out`: 1 held (taken, not answered); counted in its counters (all
 * but requests for them); kept past the turn that took it (an `exec` that answers later).
 */
const COUNTED = 2;
const KEPT = 4;

/**
 * Typed arrays cut from one buffer: making an array with a buffer of its own costs about 2 µs
 * in Deno (measured), so a lane's dozen of them, one buffer each, cost 25 µs per connection.
 */
class Carve {
  readonly #buffer: ArrayBuffer;
  #at = 0;

  constructor(bytes: number) {
    this.#buffer = new ArrayBuffer(bytes);
  }

  /** The bytes `n` arrays of these sizes need, each aligned to 8. */
  static size(...bytes: number[]): number {
    return bytes.reduce((sum, b) => sum + align8(b), 0);
  }

  #take(bytes: number): number {
    const at = this.#at;
    this.#at += align8(bytes);
    return at;
  }

  f64(n: number): Float64Array {
    return new Float64Array(this.#buffer, this.#take(n * 8), n);
  }

  u32(n: number): Uint32Array {
    return new Uint32Array(this.#buffer, this.#take(n * 4), n);
  }

  u16(n: number): Uint16Array {
    return new Uint16Array(this.#buffer, this.#take(n * 2), n);
  }

  u8(n: number): Uint8Array {
    return new Uint8Array(this.#buffer, this.#take(n), n);
  }
}

function align8(bytes: number): number {
  return (bytes + 7) & ~7;
}

const NO_WORDS = new Uint32Array(0);
const NO_INTS = new Int32Array(0);
const NO_BYTES = new Uint8Array(0);

/** Where one slot class sits in the segment. */
interface Class {
  readonly base: number;
  readonly stride: number;
  readonly count: number;
  readonly inputCapacity: number;
  readonly outputCapacity: number;
  readonly first: number;
  /** The free slots' indexes (a client's); `top` of them are free. */
  readonly free: Uint16Array;
  top: number;
}

/**
 * One ring as this side uses it: the word indexes of its cells, of the consumer's published read
 * position and of its sleep flag, and this side's private position on it (the next to push, or
 * to pop).
 */
interface RingWords {
  readonly name: "CS" | "SC";
  readonly cells: number;
  readonly read: number;
  readonly flag: number;
  position: number;
  /** The consumer's read position as the producer last read it (see `Rings.pushSlot`). */
  seenRead: number;
}

/** The words of the ring whose header is at segment offset `at`, this side at `position`. */
function ringWords(name: "CS" | "SC", at: number, position: number): RingWords {
  const header = at / 4;
  return {
    name,
    cells: header + RING.HEADER_SIZE / 4,
    read: header + RING.READ / 4,
    flag: header + RING.FLAG / 4,
    position,
    seenRead: position,
  };
}

/** What a lane found wrong with the peer's writes: ends the connection with `why`. */
export type Violation = (why: string) => void;

/**
 * What a lane counts for the core's counters (positions of `LANE_COUNT`): commands, bytes,
 * failures, and a sample of round-trip times (see {@linkcode SAMPLE_EVERY}).
 */
class Counts {
  /** Failures and samples; the four totals are kept in fields and written in by {@linkcode Counts.words}. */
  readonly #words: Float64Array;
  #commands = 0;
  #finished = 0;
  #bytesIn = 0;
  #bytesOut = 0;
  #untilSample = SAMPLE_EVERY;
  /** Commands out (started, not finished). */
  #out = 0;
  readonly #startedAt: Float64Array;
  readonly #clock: () => number;

  /** The bytes of a {@linkcode Carve} its arrays need, for `slots` slots. */
  static bytes(slots: number): number {
    return Carve.size(LANE_COUNT.LEN * 8, slots * 8);
  }

  constructor(carve: Carve, slots: number, clock: () => number) {
    this.#words = carve.f64(LANE_COUNT.LEN);
    this.#startedAt = carve.f64(slots);
    this.#clock = clock;
  }

  /** What was counted since the last report, as the positions of `LANE_COUNT`. */
  get words(): Float64Array {
    const w = this.#words;
    w[LANE_COUNT.COMMANDS] = this.#commands;
    w[LANE_COUNT.FINISHED] = this.#finished;
    w[LANE_COUNT.BYTES_IN] = this.#bytesIn;
    w[LANE_COUNT.BYTES_OUT] = this.#bytesOut;
    return w;
  }

  /**
   * A command of `inputLength` bytes started in `slot`; `alone` says whether nothing else is
   * going on beside it (timed then), by default whether no other command is out.
   */
  started(slot: number, inputLength: number, alone = this.#out === 0): void {
    // Fields, not the array: a typed array's element costs a bounds check and a conversion
    // each way, twice per command.
    this.#commands++;
    this.#bytesIn += inputLength;
    this.#out++;
    if (alone || --this.#untilSample === 0) {
      this.#untilSample = SAMPLE_EVERY;
      this.#startedAt[slot] = this.#clock();
    }
  }

  /** The command in `slot` ended with `status` and `length` output bytes. */
  finished(slot: number, status: number, length: number): void {
    this.#out--;
    this.#finished++;
    const started = this.#startedAt[slot]!;
    if (started !== 0) this.#startedAt[slot] = 0;
    const w = this.#words;
    if (status < 0) {
      w[LANE_COUNT.FAILURES - status] = w[LANE_COUNT.FAILURES - status]! + 1;
      return;
    }
    this.#bytesOut += length;
    if (started === 0) return;
    const n = w[LANE_COUNT.SAMPLES]!;
    if (n < LANE_COUNT.MAX_SAMPLES) {
      w[LANE_COUNT.FIRST_SAMPLE + n] = this.#clock() - started;
      w[LANE_COUNT.SAMPLES] = n + 1;
    }
  }

  /** Whether the room for samples is full: time to report. */
  get full(): boolean {
    return this.#words[LANE_COUNT.SAMPLES] === LANE_COUNT.MAX_SAMPLES;
  }

  /** Hands what was counted since the last report to `report` (nothing, if nothing), then starts over. */
  report(report: (words: Float64Array) => void): void {
    if (this.#commands === 0 && this.#finished === 0) return;
    report(this.words);
    this.#words.fill(0);
    this.#commands =
      this.#finished =
      this.#bytesIn =
      this.#bytesOut =
        0;
  }
}

/**
 * The rings and slots of one connection as one side sees them through its view of the segment:
 * the layout, the word views, and what both sides check. See the module doc.
 */
abstract class Rings {
  protected u32: Uint32Array = NO_WORDS;
  protected i32: Int32Array = NO_INTS;
  #bytes: Uint8Array = NO_BYTES;
  /** Per slot: the last view of its input and of its output area (made again when too long or short). */
  #inputs: Uint8Array[] = [];
  #outputs: Uint8Array[] = [];
  protected readonly classes: Class[] = [];
  /** The two rings: a client pushes CS and pops SC, a server the other way round. */
  protected readonly cs: RingWords;
  protected readonly sc: RingWords;
  /** The ring this side pushes (the client's CS, the server's SC), and the one it pops. */
  protected readonly pushes: RingWords;
  protected readonly pops: RingWords;
  protected readonly mask: number;
  protected readonly capacity: number;
  /** Per slot: its header's segment offset, and its class's index in `classes` (looked up, not searched, per command). */
  protected readonly headers: Uint32Array;
  protected readonly classIndex: Uint8Array;
  /** Per slot: whether it is out (1; a server adds the bits of `COUNTED` and `KEPT`), its generation and output capacity. */
  protected readonly out: Uint8Array;
  protected readonly generation: Uint32Array;
  protected readonly outputCap: Uint32Array;
  readonly #violation: Violation;
  /** What this side counted since its last report. */
  readonly counts: Counts;
  /** The segment offset of the slot {@linkcode Rings.popSlot} popped last (its header's). */
  protected popped = 0;
  /** Whether the last {@linkcode Rings.popSlot} found the ring empty. */
  protected drained = true;
  /** Set once the peer broke the protocol: the lane pops nothing more. */
  broken = false;
  /** Whether entries were pushed since the last fence ({@linkcode Rings.fence}). */
  unfenced = false;

  /**
   * @param mapping The segment's view.
   * @param words The layout and ring positions (positions of `LANE`).
   * @param violation Ends the connection when the peer broke the protocol.
   * @param clock A monotonic clock in ns, to time commands with.
   * @param freeLists Whether to keep free lists of slots (a client's: it takes them).
   */
  constructor(
    mapping: Mapping,
    words: Uint32Array,
    violation: Violation,
    clock: () => number,
    freeLists: boolean,
  ) {
    this.view(mapping);
    const capacity = words[LANE.RING_CAPACITY]!;
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.cs = ringWords("CS", words[LANE.CS_RING]!, words[LANE.CS_POSITION]!);
    this.sc = ringWords("SC", words[LANE.SC_RING]!, words[LANE.SC_POSITION]!);
    // A client's free lists are what make it the client.
    this.pushes = freeLists ? this.cs : this.sc;
    this.pops = freeLists ? this.sc : this.cs;
    let slots = 0;
    for (let at = LANE.CLASSES; at < LANE.WORDS; at += LANE.CLASS_WORDS) {
      slots = Math.max(slots, words[at + 5]! + words[at + 2]!);
    }
    const carve = new Carve(
      Carve.size(slots, slots * 4, slots * 4, slots * 4, slots, freeLists ? slots * 2 : 0) +
        Counts.bytes(slots),
    );
    this.headers = carve.u32(slots);
    this.classIndex = carve.u8(slots);
    for (let at = LANE.CLASSES; at < LANE.WORDS; at += LANE.CLASS_WORDS) {
      const count = words[at + 2]!;
      const first = words[at + 5]!;
      const free = carve.u16(freeLists ? count : 0);
      // The lowest indexes on top, handed out first.
      for (let i = 0; i < free.length; i++) free[i] = first + count - 1 - i;
      const base = words[at]!;
      const stride = words[at + 1]!;
      for (let i = 0; i < count; i++) {
        this.headers[first + i] = base + i * stride;
        this.classIndex[first + i] = this.classes.length;
      }
      this.classes.push({
        base,
        stride,
        count,
        inputCapacity: words[at + 3]!,
        outputCapacity: words[at + 4]!,
        first,
        free,
        top: free.length,
      });
    }
    this.out = carve.u8(slots);
    this.generation = carve.u32(slots);
    this.outputCap = carve.u32(slots);
    this.counts = new Counts(carve, slots, clock);
    this.#violation = violation;
  }

  /** (Re)makes the word views over the segment's view (after user code detached the last). */
  view(mapping: Mapping): void {
    const { buffer, byteOffset, byteLength } = mapping.view;
    this.u32 = new Uint32Array(buffer, byteOffset, byteLength >>> 2);
    this.i32 = new Int32Array(buffer, byteOffset, byteLength >>> 2);
    this.#bytes = mapping.view;
    this.#inputs = [];
    this.#outputs = [];
  }

  /**
   * A view of slot `slot`'s input area, `length` bytes long: the last one made for the slot
   * when it has that length (a command allocates no view of its own), else a new one.
   */
  input(slot: number, length: number): Uint8Array {
    const made = this.#inputs[slot];
    if (made !== undefined && made.length === length) return made;
    const at = this.inputAt(slot);
    return this.#inputs[slot] = this.#bytes.subarray(at, at + length);
  }

  /** A view of slot `slot`'s output area, `length` bytes long, as {@linkcode Rings.input}. */
  output(slot: number, length: number): Uint8Array {
    const made = this.#outputs[slot];
    if (made !== undefined && made.length === length) return made;
    const at = this.outputAt(slot);
    return this.#outputs[slot] = this.#bytes.subarray(at, at + length);
  }

  /** Whether user code detached the segment's memory under the views. */
  get detached(): boolean {
    return this.u32.length === 0;
  }

  /** The capacity of slot `slot`'s input area. */
  inputCapacity(slot: number): number {
    return this.classOf(slot).inputCapacity;
  }

  /** The class of slot `slot` (one of this lane's: from a free list, or located). */
  protected classOf(slot: number): Class {
    return this.classes[this.classIndex[slot]!]!;
  }

  /** The segment offset of slot `slot`'s header. */
  headerAt(slot: number): number {
    return this.headers[slot]!;
  }

  /** The segment offset of slot `slot`'s input area. */
  inputAt(slot: number): number {
    return this.headerAt(slot) + SLOT.HEADER_SIZE;
  }

  /** The segment offset of slot `slot`'s output area. */
  outputAt(slot: number): number {
    return this.headers[slot]! + SLOT.HEADER_SIZE + this.classOf(slot).inputCapacity;
  }

  /** The slot at segment offset `offset`, or -1. */
  protected locate(offset: number): number {
    const classes = this.classes;
    for (let c = 0; c < classes.length; c++) {
      const cl = classes[c]!;
      const rel = offset - cl.base;
      if (rel < 0 || rel >= cl.count * cl.stride || rel % cl.stride !== 0) continue;
      return cl.first + rel / cl.stride;
    }
    return -1;
  }

  /**
   * Pushes the slot at segment offset `at` onto `ring` (the peer consumes it) with a plain
   * store; {@linkcode Rings.fence} then tells whether the peer must be woken. False, with the
   * connection ended, when the ring is full: a cell per slot, so only a peer that lied about its
   * read position makes it so.
   */
  protected pushSlot(ring: RingWords, at: number): boolean {
    const u32 = this.u32;
    const position = ring.position;
    // The consumer's read position is its own to write: a lie about it is its loss alone. It
    // is read again only when the last value read makes the ring look full — never, with a
    // consumer that follows the protocol (a cell per slot): the word is on a cache line the
    // consumer writes at every pop, and a load of it per push cost a transfer of that line
    // between cores per command. A plain load: a stale value only makes the ring look fuller
    // than it is, and the consumer published it before it could have read the entries it covers.
    if (((position - ring.seenRead) >>> 0) >= this.capacity) {
      ring.seenRead = u32[ring.read]!;
      if (((position - ring.seenRead) >>> 0) >= this.capacity) {
        this.fail(
          `the ${ring.name} ring is full, which a peer that follows the protocol never causes`,
        );
        return false;
      }
    }
    ring.position = (position + 1) >>> 0;
    // A plain store publishes the entry, and what was written before it (the slot's header):
    // x86-64 makes stores visible in program order, and the compiler keeps stores in theirs.
    // Its pair is the consumer's load of the cell (`popSlot`; the core's `Ring::pop`). Not
    // `Atomics.store`: that is an `xchg`, which waits for the cell's cache line — last written
    // by the consumer, on another core — where a plain store waits for nothing.
    u32[ring.cells + (position & this.mask)] = at;
    this.unfenced = true;
    return true;
  }

  /**
   * Whether the consumer of the ring this side pushes looks asleep: its flag, read with a plain
   * load and no fence. A push that sees it raised is fenced at once and wakes it, rather than
   * with the rest of its batch; one that sees it `AWAKE` may be wrong only for a consumer that
   * fell asleep in the last moments (the store of its flag and the push crossed, each unseen by
   * the other), and then its batch's fence wakes it, once this thread ends its turn.
   */
  get peerAsleep(): boolean {
    return this.u32[this.pushes.flag] !== RING.AWAKE;
  }

  /**
   * Ends a batch of pushes with the wake-up handshake (docs/architecture.md, "Sleep flags"): a
   * full fence, then a look at the consumer's sleep flag. Returns whether the consumer must be
   * woken (the caller then calls `Native.clientLaneWake` or `Native.serverLaneWake`). One fence
   * per batch rather than per entry: the consumer sees each entry as soon as it is stored, and
   * only a sleeping consumer waits for the fence.
   *
   * The fence is a sequentially consistent store (an `xchg`) of this side's own read position
   * on the ring it pops, with the value it has (this side alone writes it): the pushes before
   * it are visible before the flag's load after it, as the consumer's store of its flag comes
   * before its last look at the ring.
   */
  fence(): boolean {
    this.unfenced = false;
    if (this.broken) return false;
    const u32 = this.u32;
    Atomics.store(u32, this.pops.read, this.pops.position);
    return u32[this.pushes.flag] !== RING.AWAKE;
  }

  /**
   * Pops `ring` (the peer produces it), publishing the read position: the slot of the entry;
   * -1 when the ring is empty, when the lane stopped, or when the entry is no slot's offset (the
   * connection is then ended).
   */
  protected popSlot(ring: RingWords): number {
    if (this.broken) return -1;
    const u32 = this.u32;
    const position = ring.position;
    const cell = ring.cells + (position & this.mask);
    // A plain load, not `Atomics.load` (a call into a builtin here, about 20 ns against 2:
    // measured): what the producer wrote before the entry — the slot's header — is read only
    // at addresses computed from the entry's value, and neither the processor (x86-64 keeps
    // loads in order; Arm64 keeps loads ordered behind the load their address depends on) nor
    // the compiler reads an address before it is known. Its pair is the producer's store of
    // the entry after the header's (`pushSlot`; the core's `Ring::push`, a release store).
    const offset = u32[cell]!;
    if (offset === 0) {
      this.drained = true;
      return -1;
    }
    ring.position = (position + 1) >>> 0;
    // Publishes the read position after clearing the cell (plain stores, kept in order): the
    // cell is free for the producer again, and the core's owner looks at the next one.
    u32[cell] = 0;
    u32[ring.read] = ring.position;
    const slot = this.locate(offset);
    if (slot < 0) {
      return this.fail(`${ring.name} ring entry ${hex(offset)} is not the offset of a slot`);
    }
    this.popped = offset;
    return slot;
  }

  /** The peer broke the protocol: ends the connection saying `why`; the lane stops. */
  protected fail(why: string): -1 {
    if (!this.broken) {
      this.broken = true;
      this.#violation(why);
    }
    return -1;
  }
}

/** A client's lane: see the module doc. */
export class Lane extends Rings {
  /** The last popped answer's status and output length. */
  status = 0;
  length = 0;

  constructor(mapping: Mapping, words: Uint32Array, violation: Violation, clock: () => number) {
    super(mapping, words, violation, clock, true);
  }

  /**
   * Takes a free slot for a command of these sizes: its index, or -1 when no class fits or
   * none of a fitting class is free (the command then takes the backup path).
   */
  take(inputLength: number, outputCapacity: number): number {
    const classes = this.classes;
    for (let c = 0; c < classes.length; c++) {
      const cl = classes[c]!;
      if (inputLength > cl.inputCapacity || outputCapacity > cl.outputCapacity) continue;
      if (cl.top === 0) continue;
      return cl.free[--cl.top]!;
    }
    return -1;
  }

  /** Gives slot `slot` back (never pushed, or its answer came). */
  free(slot: number): void {
    this.out[slot] = 0;
    const cl = this.classOf(slot);
    cl.free[cl.top++] = slot;
  }

  /**
   * Writes the request into slot `slot`'s header and pushes the slot onto the CS ring; the
   * caller then calls {@linkcode Rings.fence}, at once or after a batch of pushes. False, with
   * the connection ended, when the ring is full, which a server that follows the protocol
   * never causes. A command that may be withdrawn ({@linkcode Lane.withdraw}) goes with its
   * claim word `PENDING`; one that never will, `TAKEN` already, which spares the server its
   * swap (docs/protocol.md, "Withdrawing").
   */
  push(
    slot: number,
    code: number,
    flags: number,
    inputLength: number,
    outputCapacity: number,
    withdrawable: boolean,
  ): boolean {
    const u32 = this.u32;
    const at = this.headerAt(slot);
    const h = at >>> 2;
    const generation = (this.generation[slot]! + 1) >>> 0;
    this.generation[slot] = generation;
    this.outputCap[slot] = outputCapacity;
    this.out[slot] = 1;
    u32[h + SLOT.CODE / 4] = code;
    u32[h + SLOT.FLAGS / 4] = flags;
    u32[h + SLOT.INPUT_LEN / 4] = inputLength;
    u32[h + SLOT.OUTPUT_CAP / 4] = outputCapacity;
    u32[h + SLOT.GENERATION / 4] = generation;
    u32[h + SLOT.CLAIM / 4] = withdrawable ? CLAIM.PENDING : CLAIM.TAKEN;
    this.counts.started(slot, inputLength);
    return this.pushSlot(this.cs, at);
  }

  /**
   * Whether the core's owner armed the SC ring (`WATCHED`): it stopped polling it, and an answer
   * would come through a WAKE frame and the reactor.
   */
  get watched(): boolean {
    return this.u32[this.sc.flag] === RING.WATCHED;
  }

  /**
   * Withdraws the command in slot `slot` unless the server took it already: one compare-and-swap
   * of the claim word, against the server's swap. True when it did: the server then answers it
   * `CANCELLED` without running it, and the slot stays out until that answer comes.
   */
  withdraw(slot: number): boolean {
    if (this.out[slot] !== 1) return false;
    const claim = (this.headerAt(slot) + SLOT.CLAIM) >>> 2;
    return Atomics.compareExchange(this.u32, claim, CLAIM.PENDING, CLAIM.CANCELLED) ===
      CLAIM.PENDING;
  }

  /**
   * Pops the next answer: its slot, with {@linkcode Lane.status} and {@linkcode Lane.length} set
   * and the slot still out (the caller frees it); -1 when the ring is empty, or when the server
   * broke the protocol (the connection is then ended, and the lane pops nothing more).
   */
  pop(): number {
    const slot = this.popSlot(this.sc);
    if (slot < 0) return -1;
    if (this.out[slot] !== 1) {
      return this.fail(`slot ${slot} came back while it was not outstanding`);
    }
    const h = this.popped >>> 2;
    const status = this.i32[h + SLOT.STATUS / 4]!;
    const length = this.u32[h + SLOT.OUTPUT_LEN / 4]!;
    const generation = this.u32[h + SLOT.REPLY_GENERATION / 4]!;
    const expected = this.generation[slot]!;
    if (generation !== expected) {
      return this.fail(
        `slot ${slot} came back with generation ${generation} instead of ${expected}`,
      );
    }
    const cap = this.outputCap[slot]!;
    // An overflow's length is the bytes its handler wanted, beyond the capacity.
    if (length > cap && status !== Status.OUTPUT_OVERFLOW) {
      return this.fail(
        `slot ${slot} reports ${length} output bytes, beyond its capacity of ${cap}`,
      );
    }
    if (status < LOWEST_STATUS) {
      return this.fail(`slot ${slot} carries unknown library status ${status}`);
    }
    this.status = status;
    this.length = length;
    this.counts.finished(slot, status, length);
    return slot;
  }

  /** Counts a command that failed with library status `status` without an answer. */
  failed(slot: number, status: number): void {
    this.counts.finished(slot, status, 0);
  }
}

/**
 * A server's lane on one connection: it pops the CS ring and pushes the SC ring itself, as the
 * client's lane does the other way round (see the module doc).
 */
export class ServerLane extends Rings {
  /** Whether the server is taking a batch of commands: answers are fenced after it. */
  batching = false;
  /** The last taken command's request. */
  code = 0;
  flags = 0;
  inputLength = 0;
  outputCapacity = 0;

  constructor(mapping: Mapping, words: Uint32Array, violation: Violation, clock: () => number) {
    super(mapping, words, violation, clock, false);
  }

  /** The command in `slot` is kept past the turn that took it (its `exec` answers later). */
  keep(slot: number): void {
    this.out[slot] = this.out[slot]! | KEPT;
  }

  /** Whether the command in `slot` was kept ({@linkcode ServerLane.keep}). */
  kept(slot: number): boolean {
    return (this.out[slot]! & KEPT) !== 0;
  }

  /**
   * Takes the next command off the CS ring: its slot, with the request's fields set and the
   * slot held until {@linkcode ServerLane.answer}; -1 when the ring is empty, or when the client
   * broke the protocol (the connection is then dropped, and the lane takes nothing more).
   */
  next(): number {
    const slot = this.popSlot(this.cs);
    if (slot < 0) return -1;
    if (this.out[slot] !== 0) {
      return this.fail(`slot ${slot} was pushed while the server held it`);
    }
    // Read once: the client can change the header at any time from here on.
    const h = this.popped >>> 2;
    const u32 = this.u32;
    const inputLength = u32[h + SLOT.INPUT_LEN / 4]!;
    const outputCapacity = u32[h + SLOT.OUTPUT_CAP / 4]!;
    const cl = this.classOf(slot);
    if (inputLength > cl.inputCapacity || outputCapacity > cl.outputCapacity) {
      return this.fail(
        `slot ${slot} asks for ${inputLength} input and ${outputCapacity} output bytes but holds ${cl.inputCapacity} and ${cl.outputCapacity}`,
      );
    }
    this.out[slot] = 1;
    this.generation[slot] = u32[h + SLOT.GENERATION / 4]!;
    this.outputCap[slot] = outputCapacity;
    this.code = u32[h + SLOT.CODE / 4]!;
    this.flags = u32[h + SLOT.FLAGS / 4]!;
    this.inputLength = inputLength;
    this.outputCapacity = outputCapacity;
    return slot;
  }

  /**
   * Whether a command comes onto the empty CS ring within `looks` looks at its next cell (the
   * server's lane loop looks a little before it ends a batch).
   */
  expect(looks: number): boolean {
    const u32 = this.u32;
    const cell = this.cs.cells + (this.cs.position & this.mask);
    // Atomic: a plain load in this loop could be read once and kept.
    for (let i = 0; i < looks; i++) if (Atomics.load(u32, cell) !== 0) return true;
    return false;
  }

  /**
   * Counts the command in `slot` in the server's counters (all but requests for them). It is
   * timed when it came alone: the first taken since the ring was found empty, with none behind
   * it — or one in `SAMPLE_EVERY` otherwise. (Whether other commands are still held says
   * nothing here: an inline `exec` answers each before the next is taken, so every command
   * would count as alone, and two clock readings per command cost a quarter of a pipelined
   * server's time, profiled.)
   */
  count(slot: number): void {
    this.out[slot] = this.out[slot]! | COUNTED;
    const alone = this.drained && this.u32[this.cs.cells + (this.cs.position & this.mask)] === 0;
    this.drained = false;
    this.counts.started(slot, this.inputLength, alone);
  }

  /**
   * Takes the command in `slot` to run it, unless its client withdrew it first: one swap of the
   * claim word against the client's compare-and-swap. False: answer it `CANCELLED`, unrun.
   */
  claim(slot: number): boolean {
    const claim = (this.headerAt(slot) + SLOT.CLAIM) >>> 2;
    // Pushed `TAKEN`: its client will not withdraw it, and no swap is needed. (A client that
    // withdraws it all the same only confuses itself: its compare-and-swap from `PENDING`
    // fails, and the command runs.)
    if (this.u32[claim] === CLAIM.TAKEN) return true;
    return Atomics.exchange(this.u32, claim, CLAIM.TAKEN) !== CLAIM.CANCELLED;
  }

  /**
   * Answers the command in `slot` (held, not answered yet): writes the reply and pushes the
   * slot onto the SC ring; the caller then calls {@linkcode Rings.fence}, at once or after
   * a batch of answers. `length` is the output's (for `OUTPUT_OVERFLOW`, the bytes wanted).
   */
  answer(slot: number, status: number, length: number): boolean {
    const at = this.headerAt(slot);
    const h = at >>> 2;
    this.i32[h + SLOT.STATUS / 4] = status;
    this.u32[h + SLOT.OUTPUT_LEN / 4] = length;
    this.u32[h + SLOT.REPLY_GENERATION / 4] = this.generation[slot]!;
    this.#finished(slot, status, length);
    if (this.broken) return false;
    return this.pushSlot(this.sc, at);
  }

  /** Lets go of the command in `slot` unanswered (the connection ended: no one is told). */
  drop(slot: number, status: number): void {
    this.#finished(slot, status, 0);
  }

  #finished(slot: number, status: number, length: number): void {
    const counted = (this.out[slot]! & COUNTED) !== 0;
    this.out[slot] = 0;
    if (counted) this.counts.finished(slot, status, status < 0 ? 0 : length);
  }
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
