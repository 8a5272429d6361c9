/**
 * The check pool: every health check runs in a piscina worker thread (`check-worker.ts`), never on the main thread.
 *
 * Checks are mostly waiting on I/O (a socket, a child process, /proc), so each worker runs many at once
 * (`concurrentTasksPerWorker`): fifty hung exec checks occupy fifty slots, not fifty threads, and a port check still
 * gets through at once. `run` never rejects; every failure is an `ok: false` result.
 *
 * Overload. piscina is never handed more tasks than it has slots (workers x concurrentTasksPerWorker); the rest wait
 * here, in a bounded queue (`maxQueue`, default 4 x the slots). Every check has a deadline: its timeout, counted from
 * when it was asked for. A queued check whose deadline passes is taken out and answered down; one asked for while the
 * queue is full is answered down at once; a worker never starts a task past its deadline and gives a late starter only
 * what is left. So under overload memory stays bounded and no command runs for an answer nobody waits for. Drops are
 * counted (`metrics.overload`); one warning is logged when overload starts and one when it has ended, with the counts.
 * (piscina's own queue can't do this: its `maxQueue` rejects with an error, and only an abortable task leaves it, but
 * its balancer gives a worker that runs an abortable task no other task, which would turn 128 concurrent checks per
 * worker back into one per thread.)
 *
 * Processes. Every process group a check creates is registered in a table shared with the workers (process-groups.ts)
 * before its command may run, and put into a cgroup of its own below the pool's (check-cgroups.ts; where cgroups are
 * not writable, the process group is all there is, and the pool logs so at start). `stopCommands()` (first thing at
 * shutdown, and on process exit) closes the table, kills every group in it and the pool's whole cgroup (also what a
 * command detached with setsid), synchronously; afterwards no command starts, and answers are held until `close()`.
 *
 * Backstop. The worker enforces each check's timeout itself, which works as long as its event loop turns. A check that
 * blocks its thread synchronously stops that, so the main thread watches too: every worker posts a heartbeat every
 * 200 ms, and a watchdog terminates a worker (piscina starts a replacement) when a check on it is still out
 * `backstopMs` (2 s) after its timeout and the worker has gone silent. The check that blocked it (the worker marks,
 * in a shared slot, which check's code is on its stack) answers "check blocked its worker; worker restarted". A
 * worker that is merely slow (forking fifty shells on a starved CPU) keeps beating and is left alone: killing it
 * would take its healthy checks along. A worker silent for `5 * backstopMs` is terminated even with no check overdue
 * (a check that blocks after it has answered would otherwise hold the checks queued behind it forever).
 *
 * A worker that dies (terminated, or ended by an exception a check threw from a callback) takes every check on it
 * along. The culprit is reported down; the others are run once more (with a fresh deadline) on a fresh worker instead
 * of being reported down for something they did not do. Process groups of checks on a dead worker are killed here,
 * since the worker could not do it.
 */
import { performance } from 'node:perf_hooks';
import { Piscina } from 'piscina';
import type { CheckResult, MonitorSpec } from '../plugin-api.js';
import { silentLogger, type Logger } from './logger.js';
import { EXPIRED_REASON, isWorkerEvent, type CheckTask, type CheckWorkerData, type WorkerEvent, type WorkerResult } from './check-worker.js';
import { closeTable, createGroupTable, reapOwner, registeredGroups } from './process-groups.js';
import { checkCgroupDir, createPoolCgroup, killCgroup, removeCgroup, removeChecksBaseIfEmpty, type Containment } from './check-cgroups.js';

/** Why a check was answered down without running. */
export type OverloadReason = 'deadline' | 'queue_full';

/** Where a pool reports overload (the daemon's Prometheus metrics). */
export interface CheckPoolMetrics {
  /** A check was answered down without running. */
  overload(reason: OverloadReason): void;
  /** Called once: how to read the queue length at scrape time. */
  queueLength(read: () => number): void;
}

export interface CheckPoolOptions {
  /** Worker threads (default 2). All are started at once and kept, so load spreads over them from the start. */
  workers?: number;
  /** Checks one worker runs concurrently (default 128). */
  concurrentTasksPerWorker?: number;
  /**
   * Checks that may wait for a free slot (default 4 x workers x concurrentTasksPerWorker). Beyond it a check is
   * answered down at once: with every slot busy for a whole timeout, a check further back could not start in time.
   */
  maxQueue?: number;
  /**
   * How long past its timeout a check may stay out before its worker, if silent, is terminated (default 2000 ms).
   * A worker is silent when no heartbeat came for half of that (at least 500 ms).
   */
  backstopMs?: number;
  /** How long a check handed to a worker may wait for it to start (worker booting or blocked) before it is reported
   * down (default 15000 ms). A check waiting in the pool's own queue is dropped at its deadline instead. */
  startTimeoutMs?: number;
  /** Logger for worker failures, backstop terminations and overload (already a child for this component). */
  log?: Logger;
  /** Overload counters and the queue-length gauge. */
  metrics?: CheckPoolMetrics;
  /**
   * false: hold checks' processes by process group only, even where cgroups could be made (tests of the fallback).
   * By default each check gets a cgroup when vipcast may make them (see check-cgroups.ts).
   */
  cgroups?: boolean;
}

export type TimedCheckResult = CheckResult & { readonly durationMs: number };

export interface CheckPoolStats {
  /** Live worker threads. */
  readonly workers: number;
  /** Checks asked for and not yet answered (queued ones included). */
  readonly inFlight: number;
  /** Checks waiting for a free slot in a worker (the pool's queue plus any piscina holds for a booting worker). */
  readonly queued: number;
  /** Checks answered down without running: their deadline passed before they could start. */
  readonly expired: number;
  /** Checks answered down at once because the queue was full. */
  readonly rejected: number;
  /** Checks answered (up or down). */
  readonly completed: number;
  /** Of those, answered down. */
  readonly failed: number;
  /** Workers terminated because they stopped beating (a check blocked them). */
  readonly blockedWorkers: number;
  /** Checks run a second time because their worker died under them. */
  readonly retried: number;
  /** Process groups killed because their worker died before it could. */
  readonly reapedProcessGroups: number;
  /** Process groups that checks own right now. */
  readonly processGroups: number;
}

type Attempt = { kind: 'result'; result: CheckResult } | { kind: 'worker-lost'; reason: string } | { kind: 'final'; reason: string };

interface InFlight {
  readonly id: number;
  readonly text: string;
  readonly timeoutMs: number;
  readonly sent: number;
  /** Thread the task started on, once the worker said so. */
  threadId?: number;
  /** When the backstop is due: start + timeoutMs + backstopMs. */
  due?: number;
  /** Set when the worker reported that this task's code threw the exception that ended it. */
  crashed?: string;
  finish(attempt: Attempt): void;
}

/** A check waiting in the pool's queue for a free slot. */
interface Queued {
  readonly task: CheckTask & { readonly id: number; readonly deadline: number };
  readonly text: string;
  readonly resolve: (attempt: Attempt) => void;
}

/** What the main thread knows of a live worker. */
interface WorkerState {
  lastHeard: number;
  /** Shared with the worker: id of the task whose check code is on its stack (0: none). */
  running?: Int32Array;
}

/** An overload episode: from the first check dropped to OVERLOAD_QUIET_MS without a drop and with an empty queue. */
interface Overload {
  readonly since: number;
  lastDrop: number;
  deadline: number;
  queueFull: number;
}

const WATCHDOG_MS = 100;
/** A watchdog tick this late means the main thread itself was stalled: worker messages are still queued behind it. */
const STALLED_MS = 500;
/** An overload has ended when no check was dropped for this long and nothing is queued. */
const OVERLOAD_QUIET_MS = 5000;
const CLOSED_REASON = 'the check pool is closed';

/** Pools not closed yet: their process groups are killed when the process exits, however it exits. */
const livePools = new Set<CheckPool>();
let exitHook = false;

export class CheckPool {
  private readonly pool: Piscina<CheckTask, WorkerResult>;
  private readonly log: Logger;
  private readonly metrics: CheckPoolMetrics | undefined;
  private readonly backstopMs: number;
  private readonly silentMs: number;
  private readonly startMs: number;
  /** Tasks piscina may hold at once: workers x concurrentTasksPerWorker. */
  private readonly capacity: number;
  private readonly maxQueue: number;
  /** Process groups of checks, shared with every worker (process-groups.ts). */
  private readonly groups: Int32Array;
  /** Where the processes of this pool's checks are held: the pool's cgroup, or their process groups only. */
  readonly containment: Containment;
  private cgroupErrorLogged = false;
  private readonly inFlight = new Map<number, InFlight>();
  private queue: Queued[] = [];
  /** Tasks handed to piscina whose promise has not settled (their slot is still taken). */
  private dispatched = 0;
  private readonly workers = new Map<number, WorkerState>();
  /** Threads known to be gone. */
  private readonly deadThreads = new Set<number>();
  private readonly watchdog: NodeJS.Timeout;
  private lastTick = performance.now();
  private nextId = 1;
  private overload: Overload | undefined;
  /** Set by stopCommands(): no command starts, answers wait for close(). */
  private stopped = false;
  private release!: () => void;
  /** Resolves when close() begins: held answers go out then. */
  private readonly released = new Promise<void>((resolve) => (this.release = resolve));
  private closing: Promise<void> | undefined;
  private counters = { completed: 0, failed: 0, expired: 0, rejected: 0, blockedWorkers: 0, retried: 0, reapedProcessGroups: 0 };

  constructor(opts: CheckPoolOptions = {}) {
    const workers = Math.max(1, Math.floor(opts.workers ?? 2));
    const perWorker = Math.max(1, Math.floor(opts.concurrentTasksPerWorker ?? 128));
    // The caller names the component (`log.child({ component: 'check-pool' })`); adding it again would duplicate the key.
    this.log = opts.log ?? silentLogger();
    this.metrics = opts.metrics;
    this.backstopMs = opts.backstopMs ?? 2000;
    this.silentMs = Math.max(500, this.backstopMs / 2);
    this.startMs = opts.startTimeoutMs ?? 15_000;
    this.capacity = workers * perWorker;
    this.maxQueue = Math.max(0, Math.floor(opts.maxQueue ?? 4 * this.capacity));
    // Room for two groups per slot, and for the slots of a worker that died but is not reaped yet.
    this.groups = createGroupTable(Math.max(256, 2 * this.capacity));
    this.containment = opts.cgroups === false ? { mode: 'process-group', reason: 'cgroups turned off for this pool' } : createPoolCgroup();
    if (this.containment.mode === 'cgroup') {
      this.log.info({ cgroup: this.containment.dir }, 'exec checks are contained in a cgroup each, killed as a whole (also what they detach with setsid)');
    } else {
      this.log.warn({ reason: this.containment.reason }, 'cgroups not writable: exec checks are killed by process group; a check that calls setsid can escape');
    }
    const workerData: CheckWorkerData = {
      vipcastGroups: this.groups,
      ...(this.containment.mode === 'cgroup' ? { vipcastCgroup: this.containment.dir } : {}),
    };
    this.pool = new Piscina<CheckTask, WorkerResult>({
      filename: new URL('./check-worker.js', import.meta.url).href,
      minThreads: workers,
      maxThreads: workers,
      idleTimeout: Infinity,
      concurrentTasksPerWorker: perWorker,
      workerData,
      // With atomics, an idle worker sleeps in Atomics.wait and freezes its event loop: the cleanup a check does
      // after answering (killing a process group, closing a socket) and the heartbeat would stall.
      atomics: 'disabled',
    });
    this.pool.on('message', (message: unknown) => {
      if (isWorkerEvent(message)) this.onWorkerEvent(message);
    });
    // piscina emits 'error' for a worker that fails with no task on it; unhandled, that would crash vipcast.
    this.pool.on('error', (err: unknown) => this.log.error({ err }, 'check worker failed'));
    // Any worker that ends (terminated, crashed, destroyed): its process groups die with it.
    this.pool.on('workerDestroy', (worker: { threadId: number }) => this.reap(worker.threadId));
    this.metrics?.queueLength(() => this.queue.length);
    this.watchdog = setInterval(() => this.tick(), WATCHDOG_MS).unref();
    livePools.add(this);
    if (!exitHook) {
      exitHook = true;
      // However vipcast ends (process.exit after a stop, a forced exit, an uncaught exception), no command it started
      // outlives it: 'exit' listeners run synchronously before the threads are torn down.
      process.on('exit', () => {
        for (const pool of livePools) pool.stopCommands();
      });
    }
  }

  /** Run one check with a time budget. Never rejects. */
  async run(spec: MonitorSpec, timeoutMs: number): Promise<TimedCheckResult> {
    const started = performance.now();
    const answer = (result: CheckResult): TimedCheckResult => {
      this.counters.completed++;
      if (!result.ok) this.counters.failed++;
      return { ok: result.ok, reason: result.reason, durationMs: Math.round((performance.now() - started) * 10) / 10 };
    };
    const held = (): Promise<TimedCheckResult> => this.released.then(() => answer({ ok: false, reason: CLOSED_REASON }));
    if (this.stopped) return held();
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) return answer({ ok: false, reason: `invalid check timeout ${timeoutMs}` });
    let attempt = await this.attempt(spec, timeoutMs);
    if (attempt.kind === 'worker-lost' && !this.stopped) {
      this.counters.retried++;
      this.log.warn({ monitor: spec.text, reason: attempt.reason }, 'check worker died during a check; running the check again');
      attempt = await this.attempt(spec, timeoutMs);
    }
    // After stopCommands, what a check says is about the shutdown (its command was killed), not about the service.
    if (this.stopped) return held();
    if (attempt.kind === 'result') return answer(attempt.result);
    return answer({ ok: false, reason: attempt.reason });
  }

  get stats(): CheckPoolStats {
    return {
      workers: this.pool.threads.length,
      inFlight: this.inFlight.size + this.queue.length,
      queued: this.queue.length + this.pool.queueSize,
      processGroups: registeredGroups(this.groups),
      ...this.counters,
    };
  }

  /** Checks that may wait for a slot (`maxQueue`). */
  get queueLimit(): number {
    return this.maxQueue;
  }

  /**
   * Synchronously kill the process group of every check and start no command any more (first step of a shutdown;
   * also run when the process exits). Checks in flight or asked for later are answered "the check pool is closed"
   * when `close()` begins, so a shutdown never shows up as failing checks. Safe to call any number of times.
   */
  stopCommands(): void {
    if (!this.stopped) {
      this.stopped = true;
      for (const q of this.queue.splice(0)) q.resolve({ kind: 'final', reason: CLOSED_REASON });
    }
    // Every time, not only the first: a check of a worker that was busy forking may have registered since.
    closeTable(this.groups);
    // After the table is closed: a check that moved its process into its cgroup after this kill sees `closing` and
    // never releases its command (check-worker.ts).
    if (this.containment.mode === 'cgroup') killCgroup(this.containment.dir);
  }

  /** Stop every worker (checks still running answer "pool closed") and kill their process groups. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopCommands();
      this.release();
      clearInterval(this.watchdog);
      try {
        await this.pool.destroy();
      } catch (err) {
        this.log.warn({ err }, 'check pool did not stop cleanly');
      }
      for (const threadId of this.deadThreads) this.reap(threadId);
      closeTable(this.groups);
      livePools.delete(this);
      if (this.containment.mode === 'cgroup') {
        // Killed and empty within moments; the daemon bounds close() at 1 s, and the next start removes what is left.
        if (!(await removeCgroup(this.containment.dir, 500))) this.log.warn({ cgroup: this.containment.dir }, 'check cgroup not removed: still exiting');
        if (livePools.size === 0) removeChecksBaseIfEmpty();
      }
    })();
    return this.closing;
  }

  private attempt(spec: MonitorSpec, timeoutMs: number): Promise<Attempt> {
    if (this.stopped) return Promise.resolve({ kind: 'final', reason: CLOSED_REASON });
    const askedAt = Date.now();
    const task = { id: this.nextId++, workerModule: spec.workerModule, params: spec.params, timeoutMs, askedAt, deadline: askedAt + timeoutMs };
    return new Promise<Attempt>((resolve) => {
      const queued: Queued = { task, text: spec.text, resolve };
      if (this.queue.length === 0 && this.dispatched < this.capacity) {
        // A free slot at once: no overload, and the check gets its whole timeout from when it starts. A worker that
        // is booting or busy may delay that start (the backstop watches it); it must only not start the check after
        // the pool has given up on it (startTimeoutMs), nor release a command past its deadline (see askedAt).
        return this.dispatch({ ...queued, task: { ...task, deadline: askedAt + Math.max(this.startMs, timeoutMs) } });
      }
      if (this.queue.length >= this.maxQueue) {
        this.drop('queue_full', spec.text);
        return resolve({ kind: 'final', reason: `check not run: check workers overloaded (${this.queue.length} checks already waiting)` });
      }
      this.queue.push(queued);
    });
  }

  /** Hand queued checks to piscina while it has free slots; a check whose deadline has passed is answered instead. */
  private pump(): void {
    while (!this.stopped && this.dispatched < this.capacity && this.queue.length > 0) {
      const next = this.queue.shift()!;
      if (Date.now() >= next.task.deadline) this.expire(next);
      else this.dispatch(next);
    }
  }

  private expire(queued: Queued): void {
    this.drop('deadline', queued.text);
    queued.resolve({ kind: 'final', reason: EXPIRED_REASON });
  }

  private dispatch({ task, text, resolve }: Queued): void {
    const id = task.id;
    const entry: InFlight = {
      id,
      text,
      timeoutMs: task.timeoutMs,
      sent: performance.now(),
      finish: (attempt) => {
        if (!this.inFlight.delete(id)) return;
        resolve(attempt);
      },
    };
    this.inFlight.set(id, entry);
    this.dispatched++;
    const settled = (): void => {
      this.dispatched--;
      this.pump();
    };
    this.pool.run(task).then(
      (result) => {
        settled();
        if (result.expired === true) this.drop('deadline', text);
        entry.finish({ kind: 'result', result: { ok: result.ok, reason: result.reason } });
      },
      (err: unknown) => {
        settled();
        const message = err instanceof Error ? err.message : String(err);
        // The worker never rejects a task, so a rejection means the worker died (or the pool is closing). The
        // worker's last events (which task crashed it) may still be on their way: look one turn later.
        setImmediate(() => {
          if (entry.threadId !== undefined) this.reap(entry.threadId);
          if (this.closing !== undefined) entry.finish({ kind: 'final', reason: CLOSED_REASON });
          else if (entry.crashed !== undefined) entry.finish({ kind: 'final', reason: `check crashed its worker: ${entry.crashed}` });
          else entry.finish({ kind: 'worker-lost', reason: `check worker died: ${message}` });
        });
      },
    );
  }

  /** Count a check answered down without running; the first of an overload episode is logged. */
  private drop(reason: OverloadReason, monitor: string): void {
    if (this.stopped) return;
    if (reason === 'deadline') this.counters.expired++;
    else this.counters.rejected++;
    this.metrics?.overload(reason);
    const now = performance.now();
    if (this.overload === undefined) {
      this.overload = { since: now, lastDrop: now, deadline: 0, queueFull: 0 };
      this.log.warn(
        { reason, monitor, queued: this.queue.length, slots: this.capacity, maxQueue: this.maxQueue },
        'check workers overloaded: checks are answered down without running',
      );
    }
    this.overload.lastDrop = now;
    if (reason === 'deadline') this.overload.deadline++;
    else this.overload.queueFull++;
  }

  private onWorkerEvent(event: WorkerEvent): void {
    const threadId = event.threadId;
    if (!this.deadThreads.has(threadId)) {
      let state = this.workers.get(threadId);
      if (state === undefined) this.workers.set(threadId, (state = { lastHeard: 0 }));
      state.lastHeard = performance.now();
      if (event.vipcastCheckEvent === 'hello') state.running = event.running;
    }
    switch (event.vipcastCheckEvent) {
      case 'hello':
      case 'alive':
        return;
      case 'check-start': {
        const entry = this.inFlight.get(event.id);
        if (entry !== undefined) {
          entry.threadId = threadId;
          entry.due = performance.now() + entry.timeoutMs + this.backstopMs;
        }
        return;
      }
      case 'cgroup-error':
        if (!this.cgroupErrorLogged) {
          this.cgroupErrorLogged = true;
          this.log.warn({ threadId, error: event.error }, 'a check could not be put into its cgroup: it is held by its process group only');
        }
        return;
      case 'check-crash': {
        const entry = this.inFlight.get(event.id);
        if (entry !== undefined) entry.crashed = event.error;
        this.log.error({ monitor: entry?.text, threadId, error: event.error }, 'a check crashed its worker');
        return;
      }
    }
  }

  private tick(): void {
    const now = performance.now();
    const gap = now - this.lastTick;
    this.lastTick = now;

    // Queued checks whose deadline passed: answer them now rather than when a slot frees (that may be much later).
    if (this.queue.length > 0) {
      const wall = Date.now();
      const keep: Queued[] = [];
      for (const q of this.queue) {
        if (wall >= q.task.deadline) this.expire(q);
        else keep.push(q);
      }
      this.queue = keep;
    }
    if (this.overload !== undefined && this.queue.length === 0 && now - this.overload.lastDrop >= OVERLOAD_QUIET_MS) {
      const { since, deadline, queueFull } = this.overload;
      this.overload = undefined;
      this.log.warn(
        { durationMs: Math.round(now - since), droppedDeadline: deadline, droppedQueueFull: queueFull },
        'check workers no longer overloaded',
      );
    }

    // After a stall of the main thread, heartbeats are still waiting to be read: judge nobody this turn.
    if (gap > STALLED_MS) return;

    for (const entry of this.inFlight.values()) {
      if (entry.threadId === undefined && now - entry.sent >= this.startMs) {
        // Handed to a worker that never started it (booting, or blocked). Report it; its late answer, if any, is
        // ignored, and the worker will not start it past its deadline.
        entry.finish({ kind: 'final', reason: `check did not start within ${this.startMs} ms (check workers busy or blocked)` });
      } else if (entry.due !== undefined && now - entry.due >= 4 * this.backstopMs) {
        // Its worker still beats, yet the answer (always sent at the timeout while the loop turns) never came: give up
        // on it without taking the worker's other checks down.
        entry.finish({ kind: 'final', reason: `check did not come back within ${entry.timeoutMs + 5 * this.backstopMs} ms` });
      }
    }

    for (const [threadId, state] of this.workers) {
      const silentFor = now - state.lastHeard;
      if (silentFor < this.silentMs) continue;
      if (!this.pool.threads.some((w) => w.threadId === threadId)) {
        // Silent because it is gone (crashed, or piscina replaced it).
        this.reap(threadId);
        continue;
      }
      const onThread = [...this.inFlight.values()].filter((e) => e.threadId === threadId);
      const overdue = onThread.filter((e) => e.due !== undefined && now >= e.due);
      if (overdue.length === 0 && silentFor < 5 * this.backstopMs) continue;
      // Blocked. The culprit is the check whose code is on the worker's stack; when the block is in a later callback
      // that is unknown, and the checks that are overdue take the blame.
      const runningId = state.running === undefined ? 0 : Atomics.load(state.running, 0);
      const culprits = runningId !== 0 ? onThread.filter((e) => e.id === runningId) : overdue;
      this.counters.blockedWorkers++;
      this.log.error(
        { threadId, silentMs: Math.round(silentFor), monitors: culprits.map((e) => e.text) },
        'a check blocked its worker; terminating the worker',
      );
      this.terminate(threadId);
      // The other checks on it are rejected by piscina when the worker exits, and run again.
      for (const entry of culprits) entry.finish({ kind: 'final', reason: 'check blocked its worker; worker restarted' });
    }
  }

  private terminate(threadId: number): void {
    if (this.deadThreads.has(threadId)) return;
    this.deadThreads.add(threadId);
    this.workers.delete(threadId);
    const worker = this.pool.threads.find((w) => w.threadId === threadId);
    // piscina sees the exit, fails the tasks still on that worker and starts a replacement.
    worker?.terminate().then(
      () => this.reap(threadId),
      (err: unknown) => this.log.error({ err, threadId }, 'could not terminate a blocked check worker'),
    );
  }

  /** Forget a dead worker and kill the process groups its checks left behind. */
  private reap(threadId: number): void {
    this.deadThreads.add(threadId);
    this.workers.delete(threadId);
    const poolCgroup = this.containment.mode === 'cgroup' ? this.containment.dir : undefined;
    const alsoKill = poolCgroup === undefined ? undefined : (pgid: number): void => void removeCgroup(checkCgroupDir(poolCgroup, pgid), 5000);
    for (const pgid of reapOwner(this.groups, threadId, alsoKill)) {
      this.counters.reapedProcessGroups++;
      this.log.warn({ pgid, threadId }, 'killed the process group of a check whose worker died');
    }
  }
}
