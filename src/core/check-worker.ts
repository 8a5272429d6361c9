/**
 * The piscina worker entry of the check pool. Each task names the module of a monitor's check (`workerModule`), its
 * params, its time budget and its deadline; this file imports the module (once per URL), runs the check with an
 * AbortSignal that fires at the deadline, and always answers with a plain `CheckResult`: errors, bad results and
 * timeouts become `{ ok: false, reason }`, never a rejection, so one bad check costs nothing but its own result. A task
 * whose deadline has passed before it starts is not run at all (`expired`): nobody waits for its answer any more.
 *
 * Besides results, a worker posts small events to the pool through `parentPort` (see `WorkerEvent`): a heartbeat (so
 * the pool can tell a blocked worker from a busy one), which thread a task started on, and which task threw the
 * exception that is ending the worker (so the pool re-runs its neighbours but not the culprit). A shared slot, handed
 * over in the `hello` event, names the task whose check function is running synchronously right now: when a worker
 * stops beating, that is the check that blocked it. Process groups that checks own are registered in the pool's
 * shared table (`workerData`, see process-groups.ts) before their command may run.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { isMainThread, parentPort, threadId, workerData } from 'node:worker_threads';
import type { CheckContext, CheckFunction, CheckResult } from '../plugin-api.js';
import { killGroup, registerGroup, tableClosing, unregisterGroup } from './process-groups.js';
import { checkCgroupDir, killCgroup, placeInCgroup, removeCgroup } from './check-cgroups.js';

/** What the pool sends for one check. */
export interface CheckTask {
  /** Pool-assigned task id, echoed in the `check-start` event. */
  readonly id?: number;
  /** Absolute URL of the module exporting the check function. */
  readonly workerModule: string;
  readonly params: unknown;
  readonly timeoutMs: number;
  /**
   * After this the pool no longer waits for the answer (`Date.now()` clock, shared by every thread). Past it the task
   * is not started; before it the check gets what is left, at most `timeoutMs`. For a check that waited in the pool's
   * queue it is its timeout counted from when it was asked for; for one handed to a worker at once, the time the pool
   * gives a worker to start it.
   */
  readonly deadline?: number;
  /**
   * When the check was asked for (`Date.now()`). No command is released (`trackProcessGroup`) after `timeoutMs` from
   * then, or from when this worker came up if that is later: a command started past it runs for an answer that is
   * already overdue. Checks that start nothing run their full timeout once a worker has them.
   */
  readonly askedAt?: number;
}

/** What a worker answers for one task. */
export type WorkerResult = CheckResult & {
  /** Set when the task was not started because its deadline had passed. */
  readonly expired?: boolean;
};

/** What the pool hands every worker in piscina's `workerData`. */
export interface CheckWorkerData {
  /** The pool's process-group table (process-groups.ts). */
  readonly vipcastGroups: Int32Array;
  /** The pool's cgroup (check-cgroups.ts): each check's processes go into a cgroup below it. Absent: none. */
  readonly vipcastCgroup?: string;
}

/** Reason of a check answered down because it could not start before its deadline. */
export const EXPIRED_REASON = 'check did not start before its deadline: check workers overloaded';

/** Marker key of the events a worker posts to the pool (anything else on the channel is not ours). */
export const WORKER_EVENT = 'vipcastCheckEvent';

/** Events a worker posts to the pool besides task results. */
export type WorkerEvent =
  /** First event of a worker. `running[0]` is the id of the task whose check code runs synchronously, else 0. */
  | { readonly [WORKER_EVENT]: 'hello'; readonly threadId: number; readonly running: Int32Array }
  /** Heartbeat: the worker's event loop turns. */
  | { readonly [WORKER_EVENT]: 'alive'; readonly threadId: number }
  | { readonly [WORKER_EVENT]: 'check-start'; readonly id: number; readonly threadId: number }
  /** An exception thrown from the task's own callbacks escaped and is ending the worker. */
  | { readonly [WORKER_EVENT]: 'check-crash'; readonly id: number; readonly threadId: number; readonly error: string }
  /** A check's process could not be put into its cgroup (it is held by its process group only). Sent once per worker. */
  | { readonly [WORKER_EVENT]: 'cgroup-error'; readonly threadId: number; readonly error: string }
  /**
   * The number of this worker's checks that ignore their abort signal (still unsettled `STUCK_AFTER_MS` past their
   * timeout) changed: sent when one becomes stuck and when a stuck one settles after all.
   */
  | { readonly [WORKER_EVENT]: 'stuck'; readonly threadId: number; readonly stuck: number };

export function isWorkerEvent(message: unknown): message is WorkerEvent {
  return typeof message === 'object' && message !== null && WORKER_EVENT in message;
}

/** A process group registered with the pool. */
export interface TrackedGroup {
  /**
   * False when the group may not run anything: the check's time is up (`late`: its abort may not have fired yet when
   * the worker was busy, but the budget is spent), the pool is stopping (vipcast is shutting down) or its table is
   * full. The caller must then kill the group and not start its command; `refusal` says why.
   */
  readonly allowed: boolean;
  readonly refusal?: string;
  readonly late?: boolean;
  /**
   * SIGKILL the group and, where the pool has cgroups, everything in the check's cgroup: what the command started
   * and moved out of the group with setsid too. Call at the timeout, on a refusal and when the check ends.
   */
  kill(): void;
  /** Forget the group (and remove the check's cgroup once empty); call after `kill()`. */
  untrack(): void;
}

const data = workerData as Partial<CheckWorkerData> | null | undefined;
const groups: Int32Array | undefined = data?.vipcastGroups;
const cgroup: string | undefined = data?.vipcastCgroup;
let cgroupErrorSent = false;

function reportCgroupError(err: unknown): void {
  if (cgroupErrorSent || parentPort === null) return;
  cgroupErrorSent = true;
  const event: WorkerEvent = { [WORKER_EVENT]: 'cgroup-error', threadId, error: describeError(err) };
  parentPort.postMessage(event);
}

/**
 * Register a process group that a check has just created, BEFORE anything in it runs (start it stopped or gated, as
 * the exec check does). From then on the pool kills it if the worker dies, and at shutdown; if the pool is already
 * stopping, the answer is `allowed: false`. Outside a pool's worker it allows everything and tracks nothing.
 */
export function trackProcessGroup(pgid: number): TrackedGroup {
  const kill = (): void => void killGroup(pgid);
  const deadline = currentTask.getStore()?.deadline;
  if (deadline !== undefined && Date.now() >= deadline) return { allowed: false, late: true, refusal: 'not run: its time was up', kill, untrack: () => {} };
  if (groups === undefined) return { allowed: true, kill, untrack: () => {} };
  const table = groups;
  const slot = registerGroup(table, threadId, pgid);
  if (slot === 'closing') return { allowed: false, refusal: 'not run: vipcast is stopping', kill, untrack: () => {} };
  if (slot === 'full') return { allowed: false, refusal: 'not run: too many check processes at once', kill, untrack: () => {} };
  // Into the check's cgroup before anything runs in the group (the leader waits at a gate): whatever it forks stays
  // there, setsid or not. A failure leaves the check held by its process group only (reported to the pool).
  let dir: string | undefined;
  if (cgroup !== undefined) {
    try {
      placeInCgroup(checkCgroupDir(cgroup, pgid), pgid);
      dir = checkCgroupDir(cgroup, pgid);
    } catch (err) {
      reportCgroupError(err);
    }
  }
  const killAll = (): void => {
    killGroup(pgid);
    if (dir !== undefined) killCgroup(dir);
  };
  let done = false;
  const untrack = (): void => {
    if (done) return;
    done = true;
    unregisterGroup(table, slot, pgid);
    if (dir !== undefined) void removeCgroup(dir, 5000);
  };
  // The pool may have started to stop while the process was being moved: its kill of the pool's cgroup may have come
  // before the move. Read `closing` again after it (the pool sets it before that kill), so the command never runs
  // outside what the pool kills.
  if (tableClosing(table)) return { allowed: false, refusal: 'not run: vipcast is stopping', kill: killAll, untrack };
  return { allowed: true, kill: killAll, untrack };
}

/** After the signal fires, how long a check gets to return its own (more informative) failure reason. */
const ABORT_GRACE_MS = 100;
/**
 * A check still unsettled this long after its timeout ignores its abort signal: whatever it holds (a socket, a timer)
 * stays with the worker until the check settles or the worker ends (the pool recycles the worker, see maxStuckChecks).
 */
export const STUCK_AFTER_MS = 1000;
/** How often a worker tells the pool that its event loop turns. */
export const HEARTBEAT_MS = 200;
/** Longest reason passed back; exec output and error messages are cut to this. */
const MAX_REASON = 4096;

/** When this worker came up: waiting for a worker to boot does not count against a check. */
const readyAt = Date.now();
const modules = new Map<string, Promise<CheckFunction>>();
/** The task whose code is running: it follows the check through its timers, sockets and callbacks. */
const currentTask = new AsyncLocalStorage<{ readonly id: number; readonly deadline: number }>();
/** Shared with the pool: the task whose check function is on the stack right now (0: none). */
const running = new Int32Array(new SharedArrayBuffer(4));

/** Import a check module once per URL and find its check function (`check`, `default`, or `default.check`). */
function loadCheck(url: string): Promise<CheckFunction> {
  let loading = modules.get(url);
  if (loading === undefined) {
    loading = import(url).then((mod: Record<string, unknown>) => {
      const fn = findCheck(mod) ?? findCheck(mod.default) ?? findCheck((mod.default as Record<string, unknown> | undefined)?.default);
      if (fn === undefined) throw new Error(`${url} exports no check function (want "export const check" or a default export)`);
      return fn;
    });
    // A failed import is not cached: the next run of that monitor tries again (the file may have been fixed).
    loading.catch(() => modules.delete(url));
    modules.set(url, loading);
  }
  return loading;
}

function findCheck(value: unknown): CheckFunction | undefined {
  if (typeof value === 'function') return value as CheckFunction;
  if (typeof value === 'object' && value !== null && typeof (value as { check?: unknown }).check === 'function') {
    return (value as { check: CheckFunction }).check;
  }
  return undefined;
}

function clip(text: string): string {
  return text.length > MAX_REASON ? `${text.slice(0, MAX_REASON - 3)}...` : text;
}

/**
 * An error as a check's reason: its message, prefixed with its code (ECONNREFUSED...) when the message lacks it. Never
 * throws: a check may throw anything (an object without a prototype, one whose `message` getter throws).
 */
export function describeError(err: unknown): string {
  try {
    if (err instanceof Error) {
      const code = (err as NodeJS.ErrnoException).code;
      const message = typeof err.message === 'string' ? err.message : describeValue(err.message);
      return typeof code === 'string' && !message.includes(code) ? `${code}: ${message}` : message;
    }
    return String(err);
  } catch {
    return `${describeValue(err)} that cannot be printed`;
  }
}

/** What a value is, for a reason ("undefined", "a number"...); never its content, which may be huge or hostile. */
function describeValue(value: unknown): string {
  if (value === undefined || value === null) return String(value);
  if (Array.isArray(value)) return 'an array';
  const type = typeof value;
  return `${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type}`;
}

/** Tail of every reason for a result that breaks the contract. */
const WANT_RESULT = 'want { ok: boolean, reason: string }';

/**
 * Copy a check's answer into a plain, cloneable result. Anything that breaks the contract counts as a failure whose
 * reason says what was wrong (never up: a check that answers `{ ok: true, reason: 42 }` is broken); a reason over
 * MAX_REASON is clipped. Never throws: reading a field of the answer may (a getter, a proxy).
 */
function normalize(value: unknown): CheckResult {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, reason: `check returned ${describeValue(value)}, ${WANT_RESULT}` };
  }
  let ok: unknown;
  let reason: unknown;
  try {
    ({ ok, reason } = value as Record<string, unknown>);
  } catch (err) {
    return { ok: false, reason: clip(`check returned a result that cannot be read (${describeError(err)}), ${WANT_RESULT}`) };
  }
  if (typeof ok !== 'boolean') return { ok: false, reason: `check returned ok of type ${ok === null ? 'null' : typeof ok}, ${WANT_RESULT}` };
  if (typeof reason !== 'string') return { ok: false, reason: `check returned reason of type ${reason === null ? 'null' : typeof reason}, ${WANT_RESULT}` };
  return { ok, reason: clip(reason) };
}

type Settled = { returned: true; result: CheckResult } | { returned: false; result: CheckResult };

/** Run one check; resolves, never rejects. */
export async function runCheck(task: CheckTask): Promise<WorkerResult> {
  const timeoutMs = task.timeoutMs;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) return { ok: false, reason: `invalid check timeout ${String(timeoutMs)}` };
  // The budget counts from when the check was asked for: a task that waited in a queue gets what is left, and one
  // whose time is up is not started (a command run now would answer nobody). Reasons still name the configured
  // timeout, which is what the check was given in all.
  let budgetMs = timeoutMs;
  if (task.deadline !== undefined) {
    budgetMs = Math.min(timeoutMs, task.deadline - Date.now());
    if (!(budgetMs > 0)) return { ok: false, reason: EXPIRED_REASON, expired: true };
  }
  if (task.id !== undefined && parentPort !== null) {
    const event: WorkerEvent = { [WORKER_EVENT]: 'check-start', id: task.id, threadId };
    parentPort.postMessage(event);
  }
  const controller = new AbortController();
  const ctx: CheckContext = { signal: controller.signal, timeoutMs };
  // The clock starts before the import: a module that hangs while loading spends the same budget.
  const commandDeadline = task.askedAt === undefined ? Infinity : Math.max(task.askedAt, readyAt) + timeoutMs;
  const releaseBy = Math.min(Date.now() + budgetMs, commandDeadline);
  const settled: Promise<Settled> = currentTask.run({ id: task.id ?? 0, deadline: releaseBy }, async () => {
    const check = await loadCheck(task.workerModule);
    // Loading took the whole budget: the result is already "timed out", so don't start a check nobody waits for.
    if (controller.signal.aborted) throw controller.signal.reason;
    // Only the synchronous part of the call is marked: that is where a check that blocks usually blocks. (A block in
    // a later callback leaves the slot at 0; the pool then blames the checks that are overdue.)
    Atomics.store(running, 0, task.id ?? 0);
    let pending: Promise<CheckResult>;
    try {
      pending = check(task.params, ctx);
    } finally {
      Atomics.store(running, 0, 0);
    }
    return pending;
  }).then(
    (value) => ({ returned: true, result: normalize(value) }),
    (err: unknown) => ({ returned: false, result: { ok: false, reason: clip(`check failed: ${describeError(err)}`) } }),
  );

  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(resolve, budgetMs, 'timeout');
  });
  const first = await Promise.race([settled, deadline]);
  clearTimeout(timer);
  if (first !== 'timeout') return first.result;

  const timedOut: CheckResult = { ok: false, reason: `timed out after ${timeoutMs} ms` };
  controller.abort(new Error(timedOut.reason));
  // A check that honours the signal usually answers within a moment with a better reason (an exec check's output);
  // a check that ignores it gets the generic reason. Whatever it says, a check past its budget is never up.
  let graceTimer: NodeJS.Timeout | undefined;
  const grace = new Promise<'timeout'>((resolve) => {
    graceTimer = setTimeout(resolve, ABORT_GRACE_MS, 'timeout');
  });
  const late = await Promise.race([settled, grace]);
  clearTimeout(graceTimer);
  if (late !== 'timeout' && late.returned && !late.result.ok) return late.result;
  if (late === 'timeout') watchStuck(settled, task.id ?? 0);
  return timedOut;
}

/** Checks of this worker that ignored their abort signal and have not settled (task ids). */
const stuck = new Set<number>();

/** Tell the pool when a check that did not settle at its abort is still out STUCK_AFTER_MS later, and if it settles. */
function watchStuck(settled: Promise<unknown>, id: number): void {
  let done = false;
  const report = (): void => {
    if (parentPort === null) return;
    const event: WorkerEvent = { [WORKER_EVENT]: 'stuck', threadId, stuck: stuck.size };
    parentPort.postMessage(event);
  };
  const timer = setTimeout(() => {
    if (done) return;
    stuck.add(id);
    report();
  }, STUCK_AFTER_MS - ABORT_GRACE_MS);
  timer.unref();
  void settled.then(() => {
    done = true;
    clearTimeout(timer);
    if (stuck.delete(id)) report();
  });
}

export default runCheck;

if (!isMainThread && parentPort !== null) {
  const port = parentPort;
  const hello: WorkerEvent = { [WORKER_EVENT]: 'hello', threadId, running };
  port.postMessage(hello);
  const alive: WorkerEvent = { [WORKER_EVENT]: 'alive', threadId };
  // unref: piscina's own port keeps the worker alive; the heartbeat must not keep it from exiting.
  setInterval(() => port.postMessage(alive), HEARTBEAT_MS).unref();
  // A check that gave up on a promise (or rejected after its timeout) must not take the worker, and with it every
  // other check running there, down. The result of that check has already been reported.
  process.on('unhandledRejection', () => {});
  // An exception thrown from a check's callback ends the worker (resuming after one is unsafe). Name the culprit
  // first, so that the pool reports it and re-runs only the checks that merely shared the thread.
  process.on('uncaughtExceptionMonitor', (err: unknown) => {
    const id = currentTask.getStore()?.id;
    if (id === undefined || id === 0) return;
    const event: WorkerEvent = { [WORKER_EVENT]: 'check-crash', id, threadId, error: clip(describeError(err)) };
    port.postMessage(event);
  });
}
