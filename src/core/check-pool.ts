/**
 * The check pool: every health check runs in a piscina worker thread (`check-worker.ts`), never on the main thread.
 *
 * Checks are mostly waiting on I/O (a socket, a child process, /proc), so each worker runs many at once
 * (`concurrentTasksPerWorker`): fifty hung exec checks occupy fifty slots, not fifty threads, and a port check still
 * gets through at once. `run` never rejects; every failure is an `ok: false` result.
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
 * Why not piscina's own `run(task, { signal })`: piscina's balancer gives a worker that runs an abortable task no
 * other task, which would turn 128 concurrent checks per worker back into one per thread.
 *
 * A worker that dies (terminated, or ended by an exception a check threw from a callback) takes every check on it
 * along. The culprit is reported down; the others are run once more on a fresh worker instead of being reported down
 * for something they did not do. Process groups of exec checks on a dead worker are killed here, since the worker
 * could not do it.
 */
import { performance } from 'node:perf_hooks';
import { Piscina } from 'piscina';
import type { CheckResult, MonitorSpec } from '../plugin-api.js';
import { silentLogger, type Logger } from './logger.js';
import { isWorkerEvent, type CheckTask, type WorkerEvent } from './check-worker.js';

export interface CheckPoolOptions {
  /** Worker threads (default 2). All are started at once and kept, so load spreads over them from the start. */
  workers?: number;
  /** Checks one worker runs concurrently (default 128). */
  concurrentTasksPerWorker?: number;
  /**
   * How long past its timeout a check may stay out before its worker, if silent, is terminated (default 2000 ms).
   * A worker is silent when no heartbeat came for half of that (at least 500 ms).
   */
  backstopMs?: number;
  /** How long a check may wait for a worker to start it (pool saturated, worker booting) before it is reported down
   * (default 15000 ms). */
  startTimeoutMs?: number;
  /** Logger for worker failures and backstop terminations (already a child for this component). */
  log?: Logger;
}

export type TimedCheckResult = CheckResult & { readonly durationMs: number };

export interface CheckPoolStats {
  /** Live worker threads. */
  readonly workers: number;
  /** Checks sent and not yet answered. */
  readonly inFlight: number;
  /** Checks waiting for a free slot in a worker. */
  readonly queued: number;
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

/** What the main thread knows of a live worker. */
interface WorkerState {
  lastHeard: number;
  /** Shared with the worker: id of the task whose check code is on its stack (0: none). */
  running?: Int32Array;
}

const WATCHDOG_MS = 100;
/** A watchdog tick this late means the main thread itself was stalled: worker messages are still queued behind it. */
const STALLED_MS = 500;

export class CheckPool {
  private readonly pool: Piscina<CheckTask, CheckResult>;
  private readonly log: Logger;
  private readonly backstopMs: number;
  private readonly silentMs: number;
  private readonly startMs: number;
  private readonly inFlight = new Map<number, InFlight>();
  private readonly workers = new Map<number, WorkerState>();
  /** Process groups owned by checks, by worker thread id. */
  private readonly groups = new Map<number, Set<number>>();
  /** Threads known to be gone: a group reported by one of them afterwards is killed at once. */
  private readonly deadThreads = new Set<number>();
  private readonly watchdog: NodeJS.Timeout;
  private lastTick = performance.now();
  private nextId = 1;
  private closing: Promise<void> | undefined;
  private counters = { completed: 0, failed: 0, blockedWorkers: 0, retried: 0, reapedProcessGroups: 0 };

  constructor(opts: CheckPoolOptions = {}) {
    const workers = Math.max(1, Math.floor(opts.workers ?? 2));
    // The caller names the component (`log.child({ component: 'check-pool' })`); adding it again would duplicate the key.
    this.log = opts.log ?? silentLogger();
    this.backstopMs = opts.backstopMs ?? 2000;
    this.silentMs = Math.max(500, this.backstopMs / 2);
    this.startMs = opts.startTimeoutMs ?? 15_000;
    this.pool = new Piscina<CheckTask, CheckResult>({
      filename: new URL('./check-worker.js', import.meta.url).href,
      minThreads: workers,
      maxThreads: workers,
      idleTimeout: Infinity,
      concurrentTasksPerWorker: opts.concurrentTasksPerWorker ?? 128,
      // With atomics, an idle worker sleeps in Atomics.wait and freezes its event loop: the cleanup a check does
      // after answering (killing a process group, closing a socket) and the heartbeat would stall.
      atomics: 'disabled',
    });
    this.pool.on('message', (message: unknown) => {
      if (isWorkerEvent(message)) this.onWorkerEvent(message);
    });
    // piscina emits 'error' for a worker that fails with no task on it; unhandled, that would crash vipcast.
    this.pool.on('error', (err: unknown) => this.log.error({ err }, 'check worker failed'));
    this.watchdog = setInterval(() => this.tick(), WATCHDOG_MS).unref();
  }

  /** Run one check with a time budget. Never rejects. */
  async run(spec: MonitorSpec, timeoutMs: number): Promise<TimedCheckResult> {
    const started = performance.now();
    const answer = (result: CheckResult): TimedCheckResult => {
      this.counters.completed++;
      if (!result.ok) this.counters.failed++;
      return { ok: result.ok, reason: result.reason, durationMs: Math.round((performance.now() - started) * 10) / 10 };
    };
    if (this.closing !== undefined) return answer({ ok: false, reason: 'the check pool is closed' });
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) return answer({ ok: false, reason: `invalid check timeout ${timeoutMs}` });
    let attempt = await this.attempt(spec, timeoutMs);
    if (attempt.kind === 'worker-lost' && this.closing === undefined) {
      this.counters.retried++;
      this.log.warn({ monitor: spec.text, reason: attempt.reason }, 'check worker died during a check; running the check again');
      attempt = await this.attempt(spec, timeoutMs);
    }
    if (attempt.kind === 'result') return answer(attempt.result);
    return answer({ ok: false, reason: attempt.reason });
  }

  get stats(): CheckPoolStats {
    return {
      workers: this.pool.threads.length,
      inFlight: this.inFlight.size,
      queued: this.pool.queueSize,
      ...this.counters,
    };
  }

  /** Stop every worker (checks still running answer "pool closed") and kill their process groups. Safe to call twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      clearInterval(this.watchdog);
      try {
        await this.pool.destroy();
      } catch (err) {
        this.log.warn({ err }, 'check pool did not stop cleanly');
      }
      for (const threadId of [...this.groups.keys()]) this.reap(threadId);
    })();
    return this.closing;
  }

  private attempt(spec: MonitorSpec, timeoutMs: number): Promise<Attempt> {
    const id = this.nextId++;
    const task: CheckTask = { id, workerModule: spec.workerModule, params: spec.params, timeoutMs };
    return new Promise<Attempt>((resolve) => {
      const entry: InFlight = {
        id,
        text: spec.text,
        timeoutMs,
        sent: performance.now(),
        finish: (attempt) => {
          if (!this.inFlight.delete(id)) return;
          resolve(attempt);
        },
      };
      this.inFlight.set(id, entry);
      this.pool.run(task).then(
        (result) => entry.finish({ kind: 'result', result }),
        (err: unknown) => {
          const message = err instanceof Error ? err.message : String(err);
          // The worker never rejects a task, so a rejection means the worker died (or the pool is closing). The
          // worker's last events (which task crashed it) may still be on their way: look one turn later.
          setImmediate(() => {
            if (entry.threadId !== undefined) this.reap(entry.threadId);
            if (this.closing !== undefined) entry.finish({ kind: 'final', reason: 'the check pool is closed' });
            else if (entry.crashed !== undefined) entry.finish({ kind: 'final', reason: `check crashed its worker: ${entry.crashed}` });
            else entry.finish({ kind: 'worker-lost', reason: `check worker died: ${message}` });
          });
        },
      );
    });
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
      case 'check-crash': {
        const entry = this.inFlight.get(event.id);
        if (entry !== undefined) entry.crashed = event.error;
        this.log.error({ monitor: entry?.text, threadId, error: event.error }, 'a check crashed its worker');
        return;
      }
      case 'process-group': {
        if (!event.alive) {
          this.groups.get(threadId)?.delete(event.pgid);
        } else if (this.deadThreads.has(threadId) || this.closing !== undefined) {
          this.killGroup(event.pgid);
        } else {
          let set = this.groups.get(threadId);
          if (set === undefined) this.groups.set(threadId, (set = new Set()));
          set.add(event.pgid);
        }
        return;
      }
    }
  }

  private tick(): void {
    const now = performance.now();
    const gap = now - this.lastTick;
    this.lastTick = now;
    // After a stall of the main thread, heartbeats are still waiting to be read: judge nobody this turn.
    if (gap > STALLED_MS) return;

    for (const entry of this.inFlight.values()) {
      if (entry.threadId === undefined && now - entry.sent >= this.startMs) {
        // Never started: it sits behind a full pool. Report it; its late answer, if any, is ignored.
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
    const set = this.groups.get(threadId);
    this.groups.delete(threadId);
    for (const pgid of set ?? []) this.killGroup(pgid);
  }

  private killGroup(pgid: number): void {
    try {
      process.kill(-pgid, 'SIGKILL');
      this.counters.reapedProcessGroups++;
      this.log.warn({ pgid }, 'killed the process group of a check whose worker died');
    } catch {
      // Already gone.
    }
  }
}
