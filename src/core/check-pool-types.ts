/** Types of the check pool (check-pool.ts) shared with the parts it is split into: queue, watchdog, processes. */
import type { CheckResult } from '../plugin-api.js';
import type { CheckTask } from './check-worker.js';
import type { Logger } from './logger.js';

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
  /**
   * The package whose checks this pool runs (a third-party monitor's pool): its log lines about a worker that ran out
   * of memory or ignored aborts name it.
   */
  plugin?: string;
  /** Memory limits of each worker (piscina `resourceLimits`): a worker over them ends, not vipcast; it is replaced. */
  resourceLimits?: { readonly maxOldGenerationSizeMb?: number; readonly maxYoungGenerationSizeMb?: number; readonly codeRangeSizeMb?: number; readonly stackSizeMb?: number };
  /**
   * Recycle a worker (terminate it, piscina starts a fresh one; its other checks run again there) once this many of
   * its checks ignore their abort signal (still out 1 s past their timeout): whatever they hold goes with it.
   * Default: never.
   */
  maxStuckChecks?: number;
}

export type TimedCheckResult = CheckResult & {
  readonly durationMs: number;
  /** The check itself ended its worker (an exception thrown from a callback): its neighbours paid for it. */
  readonly crashedWorker?: true;
};

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
  /** Workers that ended over their memory limits (resourceLimits). */
  readonly outOfMemory: number;
  /** Workers recycled because their checks ignored their abort signal (maxStuckChecks). */
  readonly recycledWorkers: number;
}

/** How one run of a check on a worker ended. */
export type Attempt = { kind: 'result'; result: CheckResult } | { kind: 'worker-lost'; reason: string } | { kind: 'final'; reason: string; crashedWorker?: true };

/** A check handed to piscina and not answered yet. */
export interface InFlight {
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
  /** Set when the watchdog terminated the worker because this check blocked it (answered once the worker is gone). */
  blocked?: boolean;
  finish(attempt: Attempt): void;
}

/** A check waiting in the pool's queue for a free slot. */
export interface Queued {
  readonly task: CheckTask & { readonly id: number; readonly deadline: number };
  readonly text: string;
  readonly resolve: (attempt: Attempt) => void;
}
