/**
 * The daemon's check pools: one for checks, one for checks that start processes, one per plugin package for the
 * checks of third-party monitors, and the pools a resize (agent.check_workers changed by a reload) replaced while they
 * still answer their in-flight checks.
 *
 * Containment (issue 12). A package's checks never share a worker with the built-in checks nor with another
 * package's: each package gets a pool of one worker, made when its monitors are first checked, with memory limits
 * (PLUGIN_RESOURCE_LIMITS: a leak ends that worker, not vipcast), the backstop every pool has (a check that blocks its
 * worker gets it terminated and replaced) and a recycle for checks that ignore their abort signal (PLUGIN_MAX_STUCK).
 * A package's pool is closed when no app uses its monitors any more (a reload removed them) and at shutdown.
 */
import { CheckPool, type TimedCheckResult } from './check-pool.js';
import type { AppSpec, MonitorSpec } from '../plugin-api.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { withTimeout } from './daemon-stop.js';

/**
 * Memory limits of a plugin's worker (V8 heap, MB). A check that leaks fills the old generation within a few rounds;
 * the worker then ends with ERR_WORKER_OUT_OF_MEMORY (its checks answer "check worker ran out of memory") and a fresh
 * one takes over. Memory outside the V8 heap (Buffers, native add-ons) is not bounded by these.
 */
export const PLUGIN_RESOURCE_LIMITS = { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16 } as const;
/**
 * The built-in checks' workers: a small young generation (V8 sizes it by the machine's memory otherwise, up to 16 MB a
 * semi-space per thread). Their checks keep little alive (a socket, a result) and answer within their timeout, so
 * scavenges stay short; the old generation is not capped (a cap would end a worker, and a check, for vipcast's sake).
 */
export const BUILTIN_RESOURCE_LIMITS = { maxYoungGenerationSizeMb: 4 } as const;
/** A plugin's worker is recycled once this many of its checks ignore their abort signal (1 s past their timeout). */
export const PLUGIN_MAX_STUCK = 4;
/** How often plugin pools that no app uses any more are looked for. */
const SWEEP_MS = 5000;

export class DaemonCheckPools {
  /** The pool every check runs on but those that start processes and those of plugin packages. */
  pool: CheckPool;
  /**
   * Checks that start processes (exec) get their own worker: spawning 50 shells never holds up a port check. Made when
   * the first such check runs: a host without exec checks does not keep an idle worker (a V8 heap, ~10-20 MB RSS).
   */
  get commandPool(): CheckPool {
    this.commands ??= new CheckPool({ workers: 1, resourceLimits: BUILTIN_RESOURCE_LIMITS, log: this.log.child({ component: 'check-pool', pool: 'commands' }), metrics: this.metrics.checkPool('commands') });
    return this.commands;
  }
  private commands: CheckPool | undefined;
  /** agent.check_workers of the pool in use. */
  workers = 0;
  /** The pool of each plugin package whose monitors were checked, by package name. */
  private readonly plugins = new Map<string, CheckPool>();
  /** Plugin checks (checkKey) that crashed their worker: each package's run on a second worker (quarantinePool). */
  private readonly quarantined = new Set<string>();
  /** Replaced pools still answering their in-flight checks (agent.check_workers changed by a reload, unused plugins). */
  private readonly retiring = new Map<CheckPool, Promise<void>>();
  private readonly sweeper: NodeJS.Timeout | undefined;
  private stopped = false;

  /** `log`: the daemon's; `apps`: the apps tracked now (a plugin pool none of them uses is closed). */
  constructor(workers: number, private readonly log: Logger, private readonly metrics: Metrics, private readonly apps?: () => readonly AppSpec[]) {
    this.pool = this.newPool(workers);
    if (apps !== undefined) this.sweeper = setInterval(() => this.sweep(), SWEEP_MS).unref();
  }

  /** The pool `spec` runs on. */
  poolFor(spec: MonitorSpec): CheckPool {
    if (spec.plugin !== undefined) {
      // A check that crashed its plugin's worker runs apart from the plugin's other checks from then on.
      const key = this.quarantined.has(checkKey(spec)) ? quarantinePool(spec.plugin) : spec.plugin;
      // After stopCommands no new pool is made: the stopped general pool answers "pool closed".
      return this.stopped && !this.plugins.has(key) ? this.pool : this.pluginPool(spec.plugin, key);
    }
    if (!spec.runsCommands) return this.pool;
    // Nor the command pool, if no command check ran before the stop.
    return this.stopped && this.commands === undefined ? this.pool : this.commandPool;
  }

  /**
   * Run `spec` on its pool. A plugin's check that ended its worker (an exception thrown from a callback) is
   * quarantined: it runs on a second worker of the package from then on, so a check that crashes its worker every
   * round no longer takes the package's other checks down with it (they are run again on a fresh worker, but that
   * worker would be the crasher's next victim too).
   */
  async run(spec: MonitorSpec, timeoutMs: number): Promise<TimedCheckResult> {
    const result = await this.poolFor(spec).run(spec, timeoutMs);
    if (result.crashedWorker && spec.plugin !== undefined && !this.quarantined.has(checkKey(spec))) {
      this.quarantined.add(checkKey(spec));
      this.log.warn({ component: 'check-pool', plugin: spec.plugin, monitor: spec.text }, `check ${spec.text} crashed the worker of plugin ${spec.plugin}: it runs on a worker of its own from now on, apart from the plugin's other checks`);
    }
    return result;
  }

  /** Plugin packages that have a pool now. */
  get pluginPools(): ReadonlyMap<string, CheckPool> {
    return this.plugins;
  }

  private pluginPool(pkg: string, key = pkg): CheckPool {
    let pool = this.plugins.get(key);
    if (pool === undefined) {
      pool = new CheckPool({
        workers: 1,
        plugin: pkg,
        resourceLimits: PLUGIN_RESOURCE_LIMITS,
        maxStuckChecks: PLUGIN_MAX_STUCK,
        log: this.log.child({ component: 'check-pool', pool: 'plugin', plugin: pkg }),
        metrics: this.metrics.checkPool(`plugin:${pkg}`),
      });
      this.plugins.set(key, pool);
      if (key === pkg) this.log.info({ component: 'check-pool', plugin: pkg, memoryLimitsMb: PLUGIN_RESOURCE_LIMITS }, `checks of plugin ${pkg} run in a worker of their own`);
    }
    return pool;
  }

  private newPool(workers: number): CheckPool {
    this.workers = workers;
    return new CheckPool({ workers, resourceLimits: BUILTIN_RESOURCE_LIMITS, log: this.log.child({ component: 'check-pool' }), metrics: this.metrics.checkPool('checks') });
  }

  /** Close the pools of plugin packages that no tracked app uses any more (after their checks have answered). */
  private sweep(): void {
    if (this.plugins.size === 0 || this.apps === undefined) return;
    const used = new Set(this.apps().flatMap((a) => a.monitors.flatMap((m) => (m.plugin === undefined ? [] : [m.plugin, quarantinePool(m.plugin)]))));
    for (const key of this.quarantined) if (!used.has(key.slice(0, key.indexOf('\n')))) this.quarantined.delete(key);
    for (const [pkg, pool] of this.plugins) {
      if (used.has(pkg)) continue;
      this.plugins.delete(pkg);
      this.log.info({ component: 'check-pool', plugin: pkg }, `no app uses plugin ${pkg} any more: closing its check worker`);
      this.retire(pool, () => 10_000, () => false);
    }
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
    this.retire(old, boundMs, stopping);
  }

  /** Close `old` once the checks it holds have answered, at the latest after `boundMs()`, or at once when `stopping()`. */
  private retire(old: CheckPool, boundMs: () => number, stopping: () => boolean): void {
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
    this.stopped = true;
    clearInterval(this.sweeper);
    for (const pool of [this.pool, ...(this.commands ? [this.commands] : []), ...this.plugins.values(), ...this.retiring.keys()]) pool.stopCommands();
  }

  /** The closes of every pool, each within its bound (a stop runs them side by side with the other closes). */
  closes(): Promise<void>[] {
    clearInterval(this.sweeper);
    return [
      withTimeout(this.pool.close(), 1000, 'check pool close', this.log),
      ...(this.commands ? [withTimeout(this.commands.close(), 1000, 'command check pool close', this.log)] : []),
      ...[...this.plugins].map(([pkg, pool]) => withTimeout(pool.close(), 1000, `check pool of plugin ${pkg} close`, this.log)),
      ...(this.retiring.size > 0 ? [withTimeout(Promise.all(this.retiring.values()), 1000, 'replaced check pools close', this.log)] : []),
    ];
  }
}

/** The pool key of a package's quarantined checks (one quarantine worker per package). */
function quarantinePool(pkg: string): string {
  return `${pkg} (quarantine)`;
}

/** A plugin check's identity: its package and its text. */
function checkKey(spec: MonitorSpec): string {
  return `${spec.plugin ?? ''}\n${spec.text}`;
}
