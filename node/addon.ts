/**
 * The Node-API surface of the bindings (`bindings/src/napi.rs`), as the addon exports it.
 * Every function that returns a number returns 0 (OK), 1 (EMPTY) or a negative library
 * status, whose sentence `lastError` returns; results beyond it go to the thread's scratch.
 *
 * @module
 */

/** The addon's exports. */
export interface Addon {
  /** This thread's scratch: 32 words, the hub event then the results of calls; once per thread. */
  scratch(): ArrayBuffer | null;
  lastError(): string;
  lastStatus(): number;
  protocolVersion(): string;
  socketDir(dir: string): string | null;
  statusName(code: number): string | null;
  constant(name: string): number | null;

  clientConnect(
    icId: string,
    dir: string,
    spinNs: number,
    largeOutput: number,
    id: number,
  ): number;
  clientSegment(client: number): ArrayBuffer | null;
  /** Detaches a segment's view, so that its finalizer lets the segment go without a collection. */
  detach(buffer: ArrayBuffer): boolean;
  clientBeginAt(
    client: number,
    code: number,
    inputLength: number,
    outputCapacity: number,
    mode: number,
  ): number;
  ticketWriteInput(ticket: number, input: Uint8Array): number;
  ticketReadOutput(ticket: number, output: Uint8Array): number;
  clientCall(client: number, ticket: number, timeoutMs: number): number;
  clientSubmit(client: number, ticket: number, token: number): number;
  clientWithdraw(client: number, slot: number): number;
  clientStats(client: number, into: Float64Array): number;
  nowNs(): number;
  clientLend(client: number, into: Uint32Array): number;
  clientLaneWake(client: number): number;
  clientProtocolMinor(client: number): number;
  clientLaneQuiet(client: number): number;
  clientLaneActivate(client: number): number;
  clientLaneWait(client: number, timeoutMs: number): number;
  clientLaneViolation(client: number, why: string): number;
  clientLaneCount(client: number, report: Float64Array): number;
  ticketFree(ticket: number): number;
  clientFree(client: number): number;

  serverServe(
    icId: string,
    dir: string,
    spinNs: number,
    id: number,
    flags: number,
  ): number;
  serverPool(server: number): number;
  poolFree(pool: number): number;
  poolTake(pool: number, worker: number, spinNs: number, waitNs: number): number;
  poolBury(pool: number, worker: number, status: number): number;
  poolPoked(pool: number): number;
  poolInProgress(pool: number): number;
  serverLaneLayout(server: number, conn: number, into: Uint32Array): number;
  serverLaneSegment(server: number, conn: number): ArrayBuffer | null;
  serverLaneWake(server: number, conn: number): number;
  serverLaneViolation(server: number, conn: number, why: string): number;
  serverLaneHold(server: number, conn: number): number;
  serverLaneRelease(server: number, conn: number): number;
  serverLaneDrained(server: number, conn: number): number;
  serverLaneCount(server: number, report: Float64Array): number;
  serverOpened(server: number, connection: number, status: number, reason: string): number;
  serverStats(server: number, into: Float64Array): number;
  serverNote(server: number, workers: number, quiescing: boolean): number;
  commandTake(command: number): number;
  commandFinish(
    command: number,
    status: number,
    length: number,
    output: Uint8Array | null,
  ): number;
  commandSegment(command: number): ArrayBuffer | null;
  commandReadInput(command: number, input: Uint8Array): number;
  serverFree(server: number): number;
  queueServe(queueId: string, dir: string): number;
  queueStats(queue: number, into: Float64Array): number;
  queueFree(queue: number): number;

  hubNext(): number;
  hubClaim(): number;
  hubBells(): number;
  hubUnclaim(): void;
  hubNewId(): number;
  hubDrain(budgetNs: number): void;
  hubSpent(): number;
  hubIdle(waitNs: number): number;
  setDoorbell(ring: () => void): void;
  clearDoorbell(): void;
}

/**
 * Words of the scratch: the hub event takes the first 20 (`SCRATCH_*` in
 * bindings/src/surface.rs; `tests/constants_test.ts` checks they agree).
 */
export const SCRATCH = {
  /** `clientBeginAt`: the ticket, then the input and output offsets and the slot; `serverServe`: the handle. */
  BEGUN: 20,
  /** `clientCall`: the server's status, then the output length. */
  ANSWER: 24,
} as const;
