/**
 * The daemon's check pools: one for checks, one for checks that start processes, and the pools a resize
 * (agent.check_workers changed by a reload) replaced while they still answer their in-flight checks.
 */
import { CheckPool } from './check-pool.js';
import type { MonitorSpec } from '../plugin-api.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { withTimeout } from './daemon-stop.js';

export class DaemonCheckPools {
  /** The pool every check runs on but those that start processes. */
  pool: CheckPool;
  /** Checks that start processes (exec) get their own worker: spawning 50 shells never holds up a port check. */
  readonly commandPool: CheckPool;
  /** agent.check_workers of the pool in use. */
  workers = 0;
  /** Replaced pools still answering their in-flight checks (agent.check_workers changed by a reload). */
  private readonly retiring = new Map<CheckPool, Promise<void>>();

  /** `log`: the daemon's. */
  constructor(workers: number, private readonly log: Logger, private readonly metrics: Metrics) {
    this.pool = this.newPool(workers);
    this.commandPool = new CheckPool({ workers: 1, log: log.child({ component: 'check-pool', pool: 'commands' }), metrics: metrics.checkPool('commands') });
  }

  /** The pool `spec` runs on. */
  poolFor(spec: MonitorSpec): CheckPool {
    return spec.runsCommands ? this.commandPool : this.pool;
  }

  private newPool(workers: number): CheckPool {
    this.workers = workers;
    return new CheckPool({ workers, log: this.log.child({ component: 'check-pool' }), metrics: this.metrics.checkPool('checks') });
  }

  /**
   * A pool of `workers` takes every check from now on; the old one is closed once the checks it holds have answered,
   * at the latest after `boundMs()`, or at once when `stopping()`.
   */
  resize(workers: number, boundMs: () => number, stopping: () => boolean): void {
    if (workers === this.workers) return;
    const old = this.pool;
    const previous = this.workers;
    this.pool = this.newPool(workers);
    this.log.info({ component: 'check-pool', workers, previous }, 'check pool resized: new checks run on the new pool, the old one closes once its checks have answered');
    const bound = boundMs();
    const retiring = (async () => {
      const deadline = performance.now() + bound;
      while (old.stats.inFlight > 0 && performance.now() < deadline && !stopping()) await new Promise((r) => setTimeout(r, 50));
      await withTimeout(old.close(), 1000, 'replaced check pool close', this.log);
    })();
    this.retiring.set(old, retiring);
    void retiring.finally(() => this.retiring.delete(old));
  }

  /** No exec check command runs after this, and none that ran is left (invariant 6). */
  stopCommands(): void {
    for (const pool of [this.pool, this.commandPool, ...this.retiring.keys()]) pool.stopCommands();
  }

  /** The closes of every pool, each within its bound (a stop runs them side by side with the other closes). */
  closes(): Promise<void>[] {
    return [
      withTimeout(this.pool.close(), 1000, 'check pool close', this.log),
      withTimeout(this.commandPool.close(), 1000, 'command check pool close', this.log),
      ...(this.retiring.size > 0 ? [withTimeout(Promise.all(this.retiring.values()), 1000, 'replaced check pools close', this.log)] : []),
    ];
  }
}
