/**
 * The check pool's backstop. The worker enforces each check's timeout itself, which works as long as its event loop
 * turns. A check that blocks its thread synchronously stops that, so the main thread watches too: every worker posts a
 * heartbeat every 200 ms, and this watchdog terminates a worker (piscina starts a replacement) when a check on it is
 * still out `backstopMs` (2 s) after its timeout and the worker has gone silent. The check that blocked it (the worker
 * marks, in a shared slot, which check's code is on its stack) answers "check blocked its worker; worker restarted". A
 * worker that is merely slow (forking fifty shells on a starved CPU) keeps beating and is left alone: killing it would
 * take its healthy checks along. A worker silent for `5 * backstopMs` is terminated even with no check overdue (a check
 * that blocks after it has answered would otherwise hold the checks queued behind it forever).
 */
import type { Logger } from './logger.js';
import type { InFlight } from './check-pool-types.js';

/** What the main thread knows of a live worker. */
interface WorkerState {
  lastHeard: number;
  /** Shared with the worker: id of the task whose check code is on its stack (0: none). */
  running?: Int32Array;
}

/** A piscina worker, as far as the watchdog needs it. */
export interface WatchedThread {
  readonly threadId: number;
  terminate(): Promise<unknown>;
}

export interface WatchdogOptions {
  readonly backstopMs: number;
  readonly startMs: number;
  readonly log: Logger;
  /** The pool's checks handed to piscina and not answered yet. */
  readonly inFlight: ReadonlyMap<number, InFlight>;
  /** piscina's live workers. */
  readonly threads: () => readonly WatchedThread[];
  /** A worker is gone: forget it and kill what its checks left behind. */
  readonly reap: (threadId: number) => void;
}

export class WorkerWatchdog {
  private readonly workers = new Map<number, WorkerState>();
  /** Threads known to be gone. */
  readonly deadThreads = new Set<number>();
  private readonly silentMs: number;
  /** Workers terminated because they stopped beating (a check blocked them). */
  blockedWorkers = 0;

  constructor(private readonly opts: WatchdogOptions) {
    this.silentMs = Math.max(500, opts.backstopMs / 2);
  }

  /** Any event from a live worker is a heartbeat; its first (`running`) names the slot of the check on its stack. */
  heard(threadId: number, now: number, running?: Int32Array): void {
    if (this.deadThreads.has(threadId)) return;
    let state = this.workers.get(threadId);
    if (state === undefined) this.workers.set(threadId, (state = { lastHeard: 0 }));
    state.lastHeard = now;
    if (running !== undefined) state.running = running;
  }

  /** A check started on `threadId`: its backstop is due `backstopMs` after its timeout. */
  started(entry: InFlight, threadId: number, now: number): void {
    entry.threadId = threadId;
    entry.due = now + entry.timeoutMs + this.opts.backstopMs;
  }

  /** Forget a worker that is gone. */
  forget(threadId: number): void {
    this.deadThreads.add(threadId);
    this.workers.delete(threadId);
  }

  /** Judge checks that never started or never came back, and workers that went silent. */
  judge(now: number): void {
    const { backstopMs, startMs, inFlight, log } = this.opts;
    for (const entry of inFlight.values()) {
      if (entry.threadId === undefined && now - entry.sent >= startMs) {
        // Handed to a worker that never started it (booting, or blocked). Report it; its late answer, if any, is
        // ignored, and the worker will not start it past its deadline.
        entry.finish({ kind: 'final', reason: `check did not start within ${startMs} ms (check workers busy or blocked)` });
      } else if (entry.due !== undefined && now - entry.due >= 4 * backstopMs) {
        // Its worker still beats, yet the answer (always sent at the timeout while the loop turns) never came: give up
        // on it without taking the worker's other checks down.
        entry.finish({ kind: 'final', reason: `check did not come back within ${entry.timeoutMs + 5 * backstopMs} ms` });
      }
    }

    for (const [threadId, state] of this.workers) {
      const silentFor = now - state.lastHeard;
      if (silentFor < this.silentMs) continue;
      if (!this.opts.threads().some((w) => w.threadId === threadId)) {
        // Silent because it is gone (crashed, or piscina replaced it).
        this.opts.reap(threadId);
        continue;
      }
      const onThread = [...inFlight.values()].filter((e) => e.threadId === threadId);
      const overdue = onThread.filter((e) => e.due !== undefined && now >= e.due);
      if (overdue.length === 0 && silentFor < 5 * backstopMs) continue;
      // Blocked. The culprit is the check whose code is on the worker's stack; when the block is in a later callback
      // that is unknown, and the checks that are overdue take the blame.
      const runningId = state.running === undefined ? 0 : Atomics.load(state.running, 0);
      const culprits = runningId !== 0 ? onThread.filter((e) => e.id === runningId) : overdue;
      this.blockedWorkers++;
      log.error(
        { threadId, silentMs: Math.round(silentFor), monitors: culprits.map((e) => e.text) },
        'a check blocked its worker; terminating the worker',
      );
      // Every check on it is rejected by piscina when the worker exits: the culprits are answered down then (or as
      // out of memory, when that is what the worker was busy with), the others run again.
      for (const entry of culprits) entry.blocked = true;
      this.terminate(threadId);
    }
  }

  /** Terminate a worker: piscina sees the exit, fails the tasks still on it and starts a replacement. */
  terminate(threadId: number): void {
    if (this.deadThreads.has(threadId)) return;
    this.forget(threadId);
    const worker = this.opts.threads().find((w) => w.threadId === threadId);
    worker?.terminate().then(
      () => this.opts.reap(threadId),
      (err: unknown) => this.opts.log.error({ err, threadId }, 'could not terminate a blocked check worker'),
    );
  }
}
