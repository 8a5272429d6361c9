/**
 * The check pool: every health check runs in a piscina worker thread (`check-worker.ts`), never on the main thread.
 *
 * Checks are mostly waiting on I/O (a socket, a child process, /proc), so each worker runs many at once
 * (`concurrentTasksPerWorker`): fifty hung exec checks occupy fifty slots, not fifty threads, and a port check still
 * gets through at once. `run` never rejects; every failure is an `ok: false` result.
 *
 * The pool's concerns live apart: overload (a bounded queue in front of piscina, deadlines, the overload episode's log
 * lines) in check-pool-queue.ts; the backstop (heartbeats, terminating a blocked worker) in check-pool-watchdog.ts; the
 * processes of checks (process groups, cgroups, reaping those of a dead worker) in check-pool-processes.ts. This file
 * runs checks through them. After `stopCommands()` (first thing at shutdown, and on process exit) no command starts,
 * and answers are held until `close()`.
 *
 * A worker that dies (terminated, or ended by an exception a check threw from a callback) takes every check on it
 * along. The culprit is reported down; the others are run again (with a fresh deadline, up to 3 runs in all) on a
 * fresh worker instead of being reported down for something they did not do. Process groups of checks on a dead
 * worker are killed, since the worker could not do it.
 */
import { performance } from 'node:perf_hooks';
import { Piscina } from 'piscina';
import type { CheckResult, MonitorSpec } from '../plugin-api.js';
import { silentLogger, type Logger } from './logger.js';
import { isWorkerEvent, type CheckTask, type WorkerEvent, type WorkerResult } from './check-worker.js';
import type { Containment } from './check-cgroups.js';
import type { Attempt, CheckPoolMetrics, CheckPoolOptions, CheckPoolStats, InFlight, Queued, TimedCheckResult } from './check-pool-types.js';
import { CheckQueue } from './check-pool-queue.js';
import { WorkerWatchdog } from './check-pool-watchdog.js';
import { CheckProcesses } from './check-pool-processes.js';


/** How often a check whose worker died under it (not by its own doing) is run in all before it is answered down. */
const MAX_ATTEMPTS = 3;

export type { CheckPoolMetrics, CheckPoolOptions, CheckPoolStats, OverloadReason, TimedCheckResult } from './check-pool-types.js';

const WATCHDOG_MS = 100;
/** A watchdog tick this late means the main thread itself was stalled: worker messages are still queued behind it. */
const STALLED_MS = 500;
const CLOSED_REASON = 'the check pool is closed';
/** Reason of a check whose worker was terminated because the check blocked it. */
const BLOCKED_REASON = 'check blocked its worker; worker restarted';
/** Reason of the checks on a worker that ended over its memory limits (resourceLimits). */
export const OUT_OF_MEMORY_REASON = 'check worker ran out of memory';

/** Pools not closed yet: their process groups are killed when the process exits, however it exits. */
const livePools = new Set<CheckPool>();
let exitHook = false;

export class CheckPool {
  private readonly pool: Piscina<CheckTask, WorkerResult>;
  private readonly log: Logger;
  private readonly metrics: CheckPoolMetrics | undefined;
  private readonly startMs: number;
  /** Tasks piscina may hold at once: workers x concurrentTasksPerWorker. */
  private readonly capacity: number;
  private readonly queue: CheckQueue;
  private readonly watch: WorkerWatchdog;
  private readonly processes: CheckProcesses;
  private readonly inFlight = new Map<number, InFlight>();
  /** Tasks handed to piscina whose promise has not settled (their slot is still taken). */
  private dispatched = 0;
  private readonly watchdog: NodeJS.Timeout;
  private lastTick = performance.now();
  private nextId = 1;
  /** Set by stopCommands(): no command starts, answers wait for close(). */
  private stopped = false;
  private release!: () => void;
  /** Resolves when close() begins: held answers go out then. */
  private readonly released = new Promise<void>((resolve) => (this.release = resolve));
  private closing: Promise<void> | undefined;
  private counters = { completed: 0, failed: 0, retried: 0, outOfMemory: 0, recycledWorkers: 0 };
  /** The package whose checks run here, for the log lines about its workers. */
  private readonly plugin: string | undefined;
  private readonly maxStuckChecks: number;
  /** Out-of-memory errors already logged: piscina fails every task of the worker with the same one. */
  private readonly oomLogged = new WeakSet<object>();

  constructor(opts: CheckPoolOptions = {}) {
    const workers = Math.max(1, Math.floor(opts.workers ?? 2));
    const perWorker = Math.max(1, Math.floor(opts.concurrentTasksPerWorker ?? 128));
    // The caller names the component (`log.child({ component: 'check-pool' })`); adding it again would duplicate the key.
    this.log = opts.log ?? silentLogger();
    this.metrics = opts.metrics;
    this.startMs = opts.startTimeoutMs ?? 15_000;
    this.plugin = opts.plugin;
    this.maxStuckChecks = opts.maxStuckChecks ?? Infinity;
    this.capacity = workers * perWorker;
    const maxQueue = Math.max(0, Math.floor(opts.maxQueue ?? 4 * this.capacity));
    this.queue = new CheckQueue(maxQueue, this.capacity, this.log, this.metrics, () => this.stopped);
    this.processes = new CheckProcesses(this.capacity, opts.cgroups, this.log);
    this.pool = new Piscina<CheckTask, WorkerResult>({
      filename: new URL('./check-worker.js', import.meta.url).href,
      minThreads: workers,
      maxThreads: workers,
      idleTimeout: Infinity,
      concurrentTasksPerWorker: perWorker,
      workerData: this.processes.workerData(),
      ...(opts.resourceLimits === undefined ? {} : { resourceLimits: opts.resourceLimits }),
      // With atomics, an idle worker sleeps in Atomics.wait and freezes its event loop: the cleanup a check does
      // after answering (killing a process group, closing a socket) and the heartbeat would stall.
      atomics: 'disabled',
    });
    this.watch = new WorkerWatchdog({
      backstopMs: opts.backstopMs ?? 2000,
      startMs: this.startMs,
      log: this.log,
      inFlight: this.inFlight,
      threads: () => this.pool.threads,
      reap: (threadId) => this.reap(threadId),
    });
    this.pool.on('message', (message: unknown) => {
      if (isWorkerEvent(message)) this.onWorkerEvent(message);
    });
    // piscina emits 'error' for a worker that fails with no task on it; unhandled, that would crash vipcast.
    this.pool.on('error', (err: unknown) => {
      if (!this.outOfMemory(err)) this.log.error({ err }, 'check worker failed');
    });
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

  /** Where the processes of this pool's checks are held: the pool's cgroup, or their process groups only. */
  get containment(): Containment {
    return this.processes.containment;
  }

  /** Run one check with a time budget. Never rejects. */
  async run(spec: MonitorSpec, timeoutMs: number): Promise<TimedCheckResult> {
    const started = performance.now();
    const answer = (result: CheckResult, crashedWorker?: true): TimedCheckResult => {
      this.counters.completed++;
      if (!result.ok) this.counters.failed++;
      const durationMs = Math.round((performance.now() - started) * 10) / 10;
      return crashedWorker ? { ok: result.ok, reason: result.reason, durationMs, crashedWorker } : { ok: result.ok, reason: result.reason, durationMs };
    };
    const held = (): Promise<TimedCheckResult> => this.released.then(() => answer({ ok: false, reason: CLOSED_REASON }));
    if (this.stopped) return held();
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) return answer({ ok: false, reason: `invalid check timeout ${timeoutMs}` });
    let attempt = await this.attempt(spec, timeoutMs);
    // A check whose worker another check ended is run again on a fresh worker, up to MAX_ATTEMPTS in all: a check
    // that crashes its worker every round (it is answered down itself) often ends the fresh one too, and its
    // neighbours (a plugin's other checks share its worker) must not be counted down for it.
    for (let tries = 1; attempt.kind === 'worker-lost' && !this.stopped && tries < MAX_ATTEMPTS; tries++) {
      this.counters.retried++;
      this.log.warn({ monitor: spec.text, reason: attempt.reason, attempt: tries + 1 }, 'check worker died during a check; running the check again');
      attempt = await this.attempt(spec, timeoutMs);
    }
    // After stopCommands, what a check says is about the shutdown (its command was killed), not about the service.
    if (this.stopped) return held();
    if (attempt.kind === 'result') return answer(attempt.result);
    return answer({ ok: false, reason: attempt.reason }, attempt.kind === 'final' ? attempt.crashedWorker : undefined);
  }

  get stats(): CheckPoolStats {
    return {
      workers: this.pool.threads.length,
      inFlight: this.inFlight.size + this.queue.length,
      queued: this.queue.length + this.pool.queueSize,
      processGroups: this.processes.count,
      expired: this.queue.expired,
      rejected: this.queue.rejected,
      blockedWorkers: this.watch.blockedWorkers,
      reapedProcessGroups: this.processes.reapedProcessGroups,
      ...this.counters,
    };
  }

  /** Checks that may wait for a slot (`maxQueue`). */
  get queueLimit(): number {
    return this.queue.maxQueue;
  }

  /**
   * Synchronously kill the process group of every check and start no command any more (first step of a shutdown;
   * also run when the process exits). Checks in flight or asked for later are answered "the check pool is closed"
   * when `close()` begins, so a shutdown never shows up as failing checks. Safe to call any number of times.
   */
  stopCommands(): void {
    if (!this.stopped) {
      this.stopped = true;
      for (const q of this.queue.clear()) q.resolve({ kind: 'final', reason: CLOSED_REASON });
    }
    // Every time, not only the first: a check of a worker that was busy forking may have registered since.
    this.processes.stopCommands();
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
      for (const threadId of this.watch.deadThreads) this.reap(threadId);
      livePools.delete(this);
      await this.processes.close(() => livePools.size === 0);
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
      if (this.queue.full) {
        this.queue.drop('queue_full', spec.text);
        return resolve({ kind: 'final', reason: `check not run: check workers overloaded (${this.queue.length} checks already waiting)` });
      }
      this.queue.push(queued);
    });
  }

  /** Hand queued checks to piscina while it has free slots; a check whose deadline has passed is answered instead. */
  private pump(): void {
    while (!this.stopped && this.dispatched < this.capacity && this.queue.length > 0) {
      const next = this.queue.shift()!;
      if (Date.now() >= next.task.deadline) this.queue.expire(next);
      else this.dispatch(next);
    }
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
        if (result.expired === true) this.queue.drop('deadline', text);
        entry.finish({ kind: 'result', result: { ok: result.ok, reason: result.reason } });
      },
      (err: unknown) => {
        settled();
        const message = err instanceof Error ? err.message : String(err);
        const oom = this.outOfMemory(err);
        // The worker never rejects a task, so a rejection means the worker died (or the pool is closing). The
        // worker's last events (which task crashed it) may still be on their way: look one turn later.
        setImmediate(() => {
          if (entry.threadId !== undefined) this.reap(entry.threadId);
          if (this.closing !== undefined) entry.finish({ kind: 'final', reason: CLOSED_REASON });
          // Its checks filled the worker's heap (a leak, usually): running them again would only do it again.
          else if (oom) entry.finish({ kind: 'final', reason: OUT_OF_MEMORY_REASON });
          else if (entry.blocked === true) entry.finish({ kind: 'final', reason: BLOCKED_REASON });
          else if (entry.crashed !== undefined) entry.finish({ kind: 'final', reason: `check crashed its worker: ${entry.crashed}`, crashedWorker: true });
          else entry.finish({ kind: 'worker-lost', reason: `check worker died: ${message}` });
        });
      },
    );
  }

  private onWorkerEvent(event: WorkerEvent): void {
    const threadId = event.threadId;
    this.watch.heard(threadId, performance.now(), event.vipcastCheckEvent === 'hello' ? event.running : undefined);
    switch (event.vipcastCheckEvent) {
      case 'hello':
      case 'alive':
        return;
      case 'check-start': {
        const entry = this.inFlight.get(event.id);
        if (entry !== undefined) this.watch.started(entry, threadId, performance.now());
        return;
      }
      case 'stuck':
        if (event.stuck >= this.maxStuckChecks && !this.watch.deadThreads.has(threadId)) {
          this.counters.recycledWorkers++;
          this.log.warn(
            { threadId, stuck: event.stuck, ...(this.plugin === undefined ? {} : { plugin: this.plugin }) },
            `${this.plugin === undefined ? 'checks' : `checks of plugin ${this.plugin}`} ignore their abort signal (${event.stuck} still running past their timeout): recycling their worker`,
          );
          // What the stuck checks hold (sockets, timers) ends with the thread; the checks still running on it are
          // rejected by piscina and run again on the fresh worker.
          this.watch.terminate(threadId);
        }
        return;
      case 'cgroup-error':
        this.processes.cgroupError(threadId, event.error);
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
    this.queue.tick(now);
    // After a stall of the main thread, heartbeats are still waiting to be read: judge nobody this turn.
    if (gap > STALLED_MS) return;
    this.watch.judge(now);
  }

  /** Whether `err` says a worker ran over its memory limits; the first report of each such end is logged. */
  private outOfMemory(err: unknown): boolean {
    if ((err as NodeJS.ErrnoException | undefined)?.code !== 'ERR_WORKER_OUT_OF_MEMORY') return false;
    if (typeof err === 'object' && err !== null && !this.oomLogged.has(err)) {
      this.oomLogged.add(err);
      this.counters.outOfMemory++;
      this.log.error(
        { err, ...(this.plugin === undefined ? {} : { plugin: this.plugin }) },
        `${OUT_OF_MEMORY_REASON}${this.plugin === undefined ? '' : ` (plugin ${this.plugin})`}: its checks are answered down and a fresh worker takes over`,
      );
    }
    return true;
  }

  /** Forget a dead worker and kill the process groups its checks left behind. */
  private reap(threadId: number): void {
    this.watch.forget(threadId);
    this.processes.reap(threadId);
  }
}
