/**
 * How events reach JavaScript: library threads queue them in the core's hub, and this module
 * drains the hub in one loop of synchronous calls whenever the doorbell rings.
 *
 * The doorbell is a Node-API threadsafe function, which the core rings only when this thread
 * said it is idle (measured on these machines: ~2 µs, against tens for a `nonblocking` call per event); the
 * runtime installs it (`Native.installDoorbell`). Where that is unavailable, a
 * single interruptible `nonblocking` wait stands in.
 *
 * The process stays alive while something is live — an open server, an asynchronous command
 * not yet settled — and not a moment longer: the threadsafe function is weak, and a timer
 * that does nothing is the only thing that holds the event loop, unreferenced when nothing is
 * live and cleared when nothing of this thread is left.
 *
 * @module
 */

import { resolve } from "node:path";
import { clearInterval, setImmediate, setInterval } from "node:timers";
import { type Doorbell, EVENT, type Handle, IDLE, native } from "./native.ts";
import { Status } from "./status.ts";

/** Something that receives hub events: a client (completions) or a server (the rest). */
export interface Owner {
  /** Handles the event the hub took last (`native.event`). */
  onEvent(): void;
}

const owners = new Map<number, Owner>();
/** Ids handed out and not yet unregistered (owners, and ids reserved for a pending connect). */
let registered = 0;
let claimed = false;
let live = 0;
/**
 * The timer that holds the event loop while something is live: made once, then referenced
 * and unreferenced (about 100 ns a pair here, against 4.2 µs to make and clear an interval,
 * which a single command in flight would pay each time).
 */
let keepalive: ReturnType<typeof setInterval> | undefined;
let doorbell: Doorbell | undefined;
/** The process's count of doorbells installed, just after this thread installed its own. */
let bellsAtInstall = -1;
let waiting = false;

/**
 * How long a drain waits for more events before going idle while something is live: a steady
 * stream is then taken without a doorbell (pollers pop the rings meanwhile; without pollers
 * the core sleeps and a push wakes it in microseconds).
 *
 * It must outlast one doorbell wake of a peer's event loop (~100 µs measured here): with a
 * shorter window, two Deno peers that both went idle once keep answering each other through
 * doorbells, each giving up before the other's answer arrives — measured at 140 µs per async
 * round trip with 50 µs, against 6.7 µs with 200 µs, where the first answer re-synchronizes
 * them.
 */
const IDLE_WAIT_NS = 200_000;

/**
 * The share of recent waits for an event that a poll of {@linkcode IDLE_WAIT_NS} caught, or
 * would have caught (an exponential moving average, each wait weighing 1/16: a synchronous
 * client's server misses a few when the client is preempted, and must not stop polling for that).
 *
 * A drain polls for {@linkcode IDLE_WAIT_NS} before it goes idle while this share is at least
 * {@linkcode POLL_WHEN_CAUGHT}, else not at all (the spin-then-block idea of adaptive mutexes,
 * decided on the share of hits rather than on the last gap). A poll sleeps in the core until an
 * event or its end, so a poll that misses costs a wake-up of its own on top of the doorbell's
 * that follows: a client of a CPU-bound pool of 2, whose answers come 0–500 µs apart at random,
 * caught about half of them, and its extra wake-ups took CPU the workers needed on 2 cores. A
 * pair answering each other in microseconds catches every one and keeps polling.
 */
let caught = 1;
/** A doorbell's wake within this long of going idle would have been caught by a poll. */
const CAUGHT_WITHIN_NS = IDLE_WAIT_NS * 1.25;
/** Polls while at least this share of the waits was caught. */
const POLL_WHEN_CAUGHT = 0.6;
/** When this thread went idle with the doorbell armed (`performance.now()`), or 0. */
let idleSince = 0;
/** Whether a poll waited before this thread went idle (its miss was counted then). */
let polled = false;

/** Learns whether a poll caught (or would have caught) the event that ended a wait. */
function learn(hit: boolean): void {
  caught += ((hit ? 1 : 0) - caught) / 16;
}

/** A wake by the doorbell: learns how long the event took to come, when no poll waited for it. */
function woken(): void {
  if (idleSince === 0) return;
  const gapNs = (performance.now() - idleSince) * 1e6;
  idleSince = 0;
  // Without a poll, the gap holds the doorbell's wake of the event loop too (tens of
  // microseconds), so a poll would have caught an event that came within a quarter more than
  // the poll (two peers that both went idle answer each other this way, 140 µs a round trip,
  // until they poll again).
  if (!polled) learn(gapNs < CAUGHT_WITHIN_NS);
}

/**
 * Fences owed by lanes that pushed commands during this run of microtasks (`Lane.fence`), run
 * by a microtask — or before this thread polls or goes idle, should that come first: a peer
 * that sleeps learns of the commands only from the fence's look at its flag.
 */
const fences: (() => void)[] = [];

/** Runs `fence` once the microtasks queued so far ran, or before this thread goes idle. */
export function fenceSoon(fence: () => void): void {
  fences.push(fence);
  if (fences.length === 1) queueMicrotask(runFences);
}

function runFences(): void {
  // A fence is a client's `#fence`, or the send of its one-way batch: none runs user code, and
  // one that queues another (a batch's push, its fence) has it run in this same loop.
  for (let i = 0; i < fences.length; i++) fences[i]!();
  fences.length = 0;
}

/** Polls for events within the budget, then arms the doorbell: one of `IDLE`. */
function goIdle(): number {
  if (fences.length > 0) runFences();
  const wait = live > 0 && caught >= POLL_WHEN_CAUGHT ? IDLE_WAIT_NS : 0;
  const found = native.hubIdle(wait);
  if (found === IDLE.IDLE) {
    idleSince = performance.now();
    polled = wait > 0;
    if (polled) learn(false);
  } else if (wait > 0 && found === IDLE.EVENTS) learn(true);
  return found;
}

/** Set when a dispatch left work for the event loop (a settled Promise, an async handler). */
let turnNeeded = false;

/**
 * Says that the current dispatch left work that only the event loop can run (Promise
 * reactions): the drain then goes idle at once instead of waiting for more events.
 */
export function needTurn(): void {
  turnNeeded = true;
}

/** The endpoints served by this thread, as `socketDir \0 icId`. */
export const served = new Set<string>();

/** The key of an endpoint in {@linkcode served}. */
export function endpointKey(icId: string, socketDir: string | undefined): string {
  // Resolved, so that "/d", "/d/" and "/d/./" name one directory.
  return `${socketDir === undefined ? "" : resolve(socketDir)}\0${icId}`;
}

/**
 * Registers an owner of events (or reserves an id for one that {@linkcode adopt} names
 * later); returns the id the core uses to name it.
 */
export function register(owner: Owner | undefined): number {
  if (!claimed) {
    // Throws while another JavaScript thread has clients or servers open.
    const bells = native.hubClaim();
    claimed = true;
    // The doorbell this thread installed serves again unless another thread installed one
    // since: making one took 1.6% of a Deno client's CPU in a connect → command → close loop
    // (profiled), for nothing.
    if (doorbell === undefined || bells !== bellsAtInstall) {
      doorbell = native.installDoorbell(drain);
      bellsAtInstall = native.hubBells();
    }
  }
  const id = native.hubNewId();
  registered++;
  if (owner !== undefined) owners.set(id, owner);
  return id;
}

/** Names the owner of an id reserved with `register(undefined)`. */
export function adopt(id: number, owner: Owner): void {
  owners.set(id, owner);
}

/** Forgets an owner: its later events are cleaned up without it. */
export function unregister(id: number): void {
  owners.delete(id);
  if (--registered === 0) {
    if (claimed) {
      // Nothing of this thread is left: another thread (the next test file's, a Worker) may
      // take turns at once.
      claimed = false;
      native.hubUnclaim();
    }
    if (live === 0) letGo();
  }
}

/** Something needs the process to stay alive until the matching {@linkcode release}. */
export function hold(): void {
  holds++;
  if (live++ === 0) {
    if (keepalive === undefined) keepalive = setInterval(() => {}, 1 << 30);
    else keepalive.ref();
    if (doorbell === "wait") void waitLoop();
  }
}

/** The matching end of a {@linkcode hold}. */
export function release(): void {
  if (--live === 0) {
    keepalive!.unref();
    if (registered === 0) letGo();
    if (waiting) native.hubInterrupt();
  }
}

/**
 * Microtask ticks for which this thread keeps its keep-alive timer after its last client or
 * server closed. A loop of connect → command → close registers again within a few ticks (each
 * `await` between the close and the next connect is one), and would otherwise make and clear a
 * timer on every cycle. Nothing lingers past them: a test that closed everything leaves no timer
 * behind (and a thread that ends meanwhile takes its timers with it).
 */
const LINGER_TICKS = 16;
let lingering = false;
let lingerTicks = 0;

/** Nothing of this thread is registered or live: drops the timer after {@linkcode LINGER_TICKS}. */
function letGo(): void {
  lingerTicks = 0;
  if (lingering) return;
  lingering = true;
  queueMicrotask(lingerTick);
}

/** One tick of {@linkcode letGo}: one function for every tick, no closure per close. */
function lingerTick(): void {
  if (registered > 0 || live > 0) {
    lingering = false;
    return;
  }
  if (++lingerTicks < LINGER_TICKS) {
    queueMicrotask(lingerTick);
    return;
  }
  lingering = false;
  dropKeepalive();
}

/** Clears the keep-alive timer once nothing of this thread is left (nothing lingers after). */
function dropKeepalive(): void {
  if (keepalive === undefined) return;
  clearInterval(keepalive);
  keepalive = undefined;
}

/** Which doorbell this process uses: the Node-API one, the fallback wait, or none yet. */
export function doorbellMode(): Doorbell | undefined {
  return doorbell;
}

/** The fallback doorbell: one pending `nonblocking` wait while something is live. */
async function waitLoop(): Promise<void> {
  if (waiting) return;
  waiting = true;
  try {
    while (live > 0) {
      await native.hubWait(1_000_000_000);
      drain();
    }
  } finally {
    waiting = false;
  }
}

/**
 * Handles every queued event, then goes idle — after a short wait while something is live
 * and nothing waits for the event loop, so that back-to-back events are taken without a ring.
 * Called from the event loop (the doorbell, the fallback wait, {@linkcode drainLater}), it
 * begins a drain of at most {@linkcode DRAIN_BUDGET_NS}, which the microtask chains of
 * {@linkcode chainAfterTurn} continue; once spent, it continues in a task of its own.
 */
export function drain(): void {
  woken();
  native.hubDrain(DRAIN_BUDGET_NS);
  drainOn();
}

/** The body of {@linkcode drain}, within the current drain's budget. */
function drainOn(): void {
  turnNeeded = false;
  let untilCheck = CHECK_EVERY;
  while (true) {
    while (native.hubNext()) {
      dispatch();
      if (--untilCheck === 0) {
        untilCheck = CHECK_EVERY;
        if (native.hubSpent()) return drainLater();
      }
    }
    if (turnNeeded) {
      // Promise reactions must run before anything else: the chained microtask goes idle
      // (or drains again) after them, so the hub stays un-armed and the rings held till then.
      chainAfterTurn();
      return;
    }
    const found = goIdle();
    if (found === IDLE.IDLE) return;
    if (found === IDLE.SPENT) return drainLater();
  }
}

/**
 * Longest one drain keeps the event loop from its other work (timers, I/O, signals). Handing
 * it back costs about 1.3 µs (`setImmediate`; a `setTimeout` of 0 costs 2 ms here).
 */
const DRAIN_BUDGET_NS = 1_000_000;
/** Dispatches between two looks at the budget during a burst of events. */
const CHECK_EVERY = 32;
let drainScheduled = false;

/**
 * Continues draining in a task of its own, after the event loop's other work: a steady stream
 * of events must not starve timers and I/O. The hub stays un-armed meanwhile (the immediate
 * is what wakes us), and the rings stay held, so nothing is lost or left unpopped.
 */
function drainLater(): void {
  if (drainScheduled) return;
  drainScheduled = true;
  setImmediate(() => {
    drainScheduled = false;
    drain();
  });
}

let chained = false;
/** Calls of {@linkcode hold} so far (commands issued, and the like): only its changes matter. */
let holds = 0;
/** {@linkcode holds} when the current chain began. */
let holdsAtChain = 0;

/**
 * A drain that settled Promises returns without going idle, so that their reactions run;
 * those usually issue the next command, whose answer follows within microseconds. The
 * microtask queued here runs after them and waits briefly for it in the hub, which spares
 * the doorbell's wake of a sleeping event loop; either way it ends in `hubIdle`, which arms
 * the doorbell and gives the rings back when nothing came. The chain runs within the budget
 * of the drain that began it, and continues in a task of its own once that is spent, so
 * timers and I/O still get their turns.
 */
function chainAfterTurn(): void {
  if (chained) return;
  chained = true;
  chainTicks = 0;
  holdsAtChain = holds;
  queueMicrotask(chainTick);
}

/** Steps queued by {@linkcode continueSoon} that have not begun. */
let continuing = 0;

/**
 * Runs `step` in a microtask, after the reactions queued so far, as part of the current drain:
 * the drain's chain does not go idle before it ran (`step` calls {@linkcode continued} first).
 */
export function continueSoon(step: () => void): void {
  continuing++;
  queueMicrotask(step);
}

/** A step queued by {@linkcode continueSoon} began. */
export function continued(): void {
  continuing--;
}

/** Microtask ticks the current chain waited (see {@linkcode chainTick}). */
let chainTicks = 0;

/**
 * One tick of a chain. The reaction that issues the next command is a few microtask ticks away
 * (each `await` in the caller's chain adds one): it looks again on later ticks until a command
 * was issued since the chain began, and then goes idle, polling for its answer. Something live
 * from before does not count: an event-queue consumer's list is a command kept for the
 * connection's life, and going idle at the first tick because of it held the consumer's
 * `next()` behind a poll of up to 200 µs (traced in `bench/events.ts`). One function for every
 * tick, not a closure each: a drain per command would otherwise make garbage per command.
 */
function chainTick(): void {
  if (continuing > 0) {
    // A step of this drain is queued behind reactions: it comes first.
    queueMicrotask(chainTick);
    return;
  }
  if (holds === holdsAtChain && chainTicks < CHAIN_TICKS) {
    chainTicks++;
    queueMicrotask(chainTick);
    return;
  }
  chained = false;
  const found = goIdle();
  if (found === IDLE.SPENT) drainLater();
  else if (found === IDLE.EVENTS) drainOn();
}

/** Microtask ticks a chain waits for the next command to be issued. */
const CHAIN_TICKS = 16;

function dispatch(): void {
  const owner = owners.get(native.event.owner);
  if (owner !== undefined) {
    owner.onEvent();
    return;
  }
  // The owner is gone (closed): answer what must be answered, free what must be freed.
  switch (native.event.kind) {
    case EVENT.COMPLETION:
      native.ticketFree(native.event.handle);
      break;
    case EVENT.CONNECTED:
      if (native.event.code >= 0) native.clientFree(native.event.handle as Handle);
      break;
    case EVENT.EXEC:
      native.commandFinish(native.event.handle, Status.CLOSED, 0, null);
      break;
  }
}
