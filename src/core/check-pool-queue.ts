/**
 * The check pool's overload queue. piscina is never handed more tasks than it has slots (workers x
 * concurrentTasksPerWorker); the rest wait here, in a bounded queue (`maxQueue`, default 4 x the slots). Every check
 * has a deadline: its timeout, counted from when it was asked for. A queued check whose deadline passes is taken out
 * and answered down; one asked for while the queue is full is answered down at once; a worker never starts a task past
 * its deadline and gives a late starter only what is left. So under overload memory stays bounded and no command runs
 * for an answer nobody waits for. Drops are counted (`metrics.overload`); one warning is logged when overload starts
 * and one when it has ended, with the counts. (piscina's own queue can't do this: its `maxQueue` rejects with an
 * error, and only an abortable task leaves it, but its balancer gives a worker that runs an abortable task no other
 * task, which would turn 128 concurrent checks per worker back into one per thread.)
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from './logger.js';
import { EXPIRED_REASON } from './check-worker.js';
import type { CheckPoolMetrics, OverloadReason, Queued } from './check-pool-types.js';

/** An overload episode: from the first check dropped to OVERLOAD_QUIET_MS without a drop and with an empty queue. */
interface Overload {
  readonly since: number;
  lastDrop: number;
  deadline: number;
  queueFull: number;
}

/** An overload has ended when no check was dropped for this long and nothing is queued. */
const OVERLOAD_QUIET_MS = 5000;

export class CheckQueue {
  private items: Queued[] = [];
  private overload: Overload | undefined;
  /** Checks answered down without running: their deadline passed before they could start. */
  expired = 0;
  /** Checks answered down at once because the queue was full. */
  rejected = 0;

  /**
   * `capacity`: the slots of the pool (for the log); `stopped`: true once the pool stops its commands (drops are then
   * about the shutdown, not counted).
   */
  constructor(
    readonly maxQueue: number,
    private readonly capacity: number,
    private readonly log: Logger,
    private readonly metrics: CheckPoolMetrics | undefined,
    private readonly stopped: () => boolean,
  ) {}

  get length(): number {
    return this.items.length;
  }

  get full(): boolean {
    return this.items.length >= this.maxQueue;
  }

  push(queued: Queued): void {
    this.items.push(queued);
  }

  shift(): Queued | undefined {
    return this.items.shift();
  }

  /** Take every queued check out (the pool is stopping). */
  clear(): Queued[] {
    return this.items.splice(0);
  }

  /** Answer a queued check down: its deadline passed before a slot freed. */
  expire(queued: Queued): void {
    this.drop('deadline', queued.text);
    queued.resolve({ kind: 'final', reason: EXPIRED_REASON });
  }

  /** Count a check answered down without running; the first of an overload episode is logged. */
  drop(reason: OverloadReason, monitor: string): void {
    if (this.stopped()) return;
    if (reason === 'deadline') this.expired++;
    else this.rejected++;
    this.metrics?.overload(reason);
    const now = performance.now();
    if (this.overload === undefined) {
      this.overload = { since: now, lastDrop: now, deadline: 0, queueFull: 0 };
      this.log.warn(
        { reason, monitor, queued: this.items.length, slots: this.capacity, maxQueue: this.maxQueue },
        'check workers overloaded: checks are answered down without running',
      );
    }
    this.overload.lastDrop = now;
    if (reason === 'deadline') this.overload.deadline++;
    else this.overload.queueFull++;
  }

  /**
   * Every watchdog tick: queued checks whose deadline passed are answered now rather than when a slot frees (that may
   * be much later), and the end of an overload episode is logged.
   */
  tick(now: number): void {
    if (this.items.length > 0) {
      const wall = Date.now();
      const keep: Queued[] = [];
      for (const q of this.items) {
        if (wall >= q.task.deadline) this.expire(q);
        else keep.push(q);
      }
      this.items = keep;
    }
    if (this.overload !== undefined && this.items.length === 0 && now - this.overload.lastDrop >= OVERLOAD_QUIET_MS) {
      const { since, deadline, queueFull } = this.overload;
      this.overload = undefined;
      this.log.warn(
        { durationMs: Math.round(now - since), droppedDeadline: deadline, droppedQueueFull: queueFull },
        'check workers no longer overloaded',
      );
    }
  }
}
