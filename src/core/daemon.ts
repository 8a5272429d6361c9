/**
 * The daemon: owns one config generation at a time and the long-lived parts (check pool, registry, health tracker,
 * reconciler). Lifecycle: start() in order, stop() in reverse order, each close with a timeout; stop is idempotent.
 */
import type { AppSpec, Router } from '../plugin-api.js';
import type { VipcastConfig } from './config-types.js';
import type { Logger } from './logger.js';
import { loadConfig } from './config.js';
import { CheckPool } from './check-pool.js';
import { AppRegistry, sameChecks } from './registry.js';
import { HealthTracker, type CheckRunner } from './health.js';
import { Reconciler, type ReconcilerOptions } from './reconciler.js';
import { buildGeneration, closeGeneration, startGeneration, type Generation } from './container.js';
import { Metrics } from './metrics.js';
import { Coalescer } from './serial-queue.js';
import { startApi, type ApiServer } from './api.js';
import { configHash, reloadConfig, type ReloadResult } from './reload.js';
import { consulSettings } from './config.js';
import { ConsulDiscovery } from '../plugins/discovery/consul/index.js';

export interface DaemonOptions {
  readonly configFile: string;
  readonly dryRun: boolean;
  readonly log: Logger;
  readonly env?: NodeJS.ProcessEnv;
}

/**
 * A reload waits this long before reading the file, and requests in that window join it: a config-management run
 * that rewrites the file and signals several times is one reload, not one per signal.
 */
export const RELOAD_SETTLE_MS = 100;

export class Daemon {
  readonly registry = new AppRegistry();
  readonly startedAt = Date.now();
  readonly metrics = new Metrics();
  /** The outcome of the last reload, for /status. */
  lastReload: ReloadResult | undefined;
  private readonly reloads = new Coalescer<string, ReloadResult>((trigger, requests) => this.doReload(trigger, requests), RELOAD_SETTLE_MS);
  pool!: CheckPool;
  /** Checks that start processes (exec) get their own worker: spawning 50 shells never holds up a port check. */
  commandPool!: CheckPool;
  health!: HealthTracker;
  reconciler!: Reconciler;
  generation!: Generation;
  private stopping: Promise<void> | undefined;
  private api: ApiServer | undefined;
  /** Keeps the process alive when nothing else does (no API, every app removed by cleanup_timer). */
  private keepAlive: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  /** Consul discovery, when agent.consul_addr and CONSUL_NODE are set. */
  consul: ConsulDiscovery | undefined;

  constructor(private readonly opts: DaemonOptions) {
    this.log = opts.log;
  }

  get config(): VipcastConfig {
    return this.generation.config;
  }

  /** The environment the config reads (CONSUL_TOKEN, CONSUL_NODE, md5_env_var...): the process's unless a test set one. */
  get env(): NodeJS.ProcessEnv {
    return this.opts.env ?? process.env;
  }

  /** Load and validate the config; throws VIPCAST_ERR_CONFIG with every problem. */
  async loadConfig(): Promise<VipcastConfig> {
    return loadConfig(this.opts.configFile, { env: this.env, ...(this.opts.dryRun ? { routingPlugin: 'dry-run' as const } : {}) });
  }

  async start(): Promise<void> {
    this.keepAlive = setInterval(() => undefined, 2 ** 31 - 1);
    const config = await this.loadConfig();
    this.generation = await buildGeneration(config, { dryRun: this.opts.dryRun, log: this.log });
    const { router, host } = this.generation;
    this.log.info({ file: config.file, apps: config.apps.length, routing: this.generation.dryRun ? 'dry-run' : 'gobgp' }, 'config loaded');
    for (const w of config.warnings ?? []) this.log.warn({ file: config.file }, w);

    this.pool = new CheckPool({ workers: config.agent.checkWorkers, log: this.log.child({ component: 'check-pool' }) });
    this.commandPool = new CheckPool({ workers: 1, log: this.log.child({ component: 'check-pool', pool: 'commands' }) });
    const runner: CheckRunner = {
      run: async (spec, timeoutMs) => {
        const r = await (spec.runsCommands ? this.commandPool : this.pool).run(spec, timeoutMs);
        this.metrics.checks.inc({ type: spec.type, result: r.ok ? 'pass' : 'fail' });
        this.metrics.checkDuration.observe({ type: spec.type }, r.durationMs / 1000);
        return r;
      },
    };
    this.health = new HealthTracker(runner, this.log.child({ component: 'health' }));
    this.reconciler = new Reconciler(this.registry, this.health, router, host, reconcilerOptions(config), this.log.child({ component: 'reconciler' }));

    this.metrics.observe({
      appStates: () => this.health.all().map((h) => h.state),
      routeCount: () => this.reconciler.routeCount(),
      reconcileErrors: () => this.reconciler.stats.errors,
    });
    const roundStart = new Map<string, number>();
    this.health.onChange((c) => {
      roundStart.set(c.app, c.roundStartedAt);
      this.metrics.transitions.inc({ state: c.state });
      this.reconciler.healthChanged(c.app, c.state);
    });
    this.reconciler.onRoute((ev) => {
      this.metrics.routeUpdates.inc({ action: ev.action });
      const started = roundStart.get(ev.route.app);
      if (started !== undefined) this.metrics.decisionLatency.observe({ action: ev.action }, (performance.now() - started) / 1000);
    });
    this.registry.onChange((ev) => {
      if (ev.type === 'added') this.health.track(ev.app);
      else if (ev.type === 'changed') this.health.track(ev.app, { keepState: sameChecks(ev.previous, ev.app) });
      else {
        this.health.untrack(ev.app.name);
        this.reconciler.appRemoved(ev.app.name);
      }
      if (ev.type === 'changed') void this.reconciler.trigger();
    });

    await startGeneration(this.generation);
    this.watchRouter(router);
    // Apps first, then the first (full) pass: it reads the speaker and the host; what an earlier run left for apps
    // still configured stays until their first check says otherwise, strays go at once.
    this.addConfigApps(config.apps);
    await this.configureConsul(config);
    this.reconciler.start();
    await this.reconciler.trigger(true);
    await this.listen(config.agent.listenAddr).catch((err: unknown) => {
      this.log.error({ err, listen_addr: config.agent.listenAddr }, 'HTTP API could not start; running without it');
    });
  }

  /** Start the HTTP API on `listenAddr` ('' = none), then close the previous one (a reload that moves it). */
  async listen(listenAddr: string): Promise<void> {
    const old = this.api;
    if (old && old.listenAddr === listenAddr) return;
    this.api = listenAddr ? await startApi(this, listenAddr, this.log.child({ component: 'api' })) : undefined;
    await old?.close();
  }

  /** The listen address the API runs on now ('' = none). */
  get apiAddress(): string {
    return this.api?.listenAddr ?? '';
  }

  /** HTTP-registered apps take the agent's defaults: a reload that changes them applies them to those apps too. */
  refreshRegisteredApps(agent: VipcastConfig['agent']): void {
    for (const app of this.registry.all()) {
      if (app.source !== 'http') continue;
      this.registry.upsert({ ...app, rise: agent.rise, fall: agent.fall, intervalMs: agent.monitorIntervalMs, timeoutMs: agent.checkTimeoutMs });
    }
  }

  /**
   * Start, keep or replace the Consul discovery for `config` (start, reload). Unchanged consul_addr, token, node, stale
   * and query interval: the running one stays (and rebuilds its apps with the new agent defaults). Changed: a new one
   * starts, then the old one closes; the Consul apps stay in the registry until the new one's first read replaces them.
   */
  async configureConsul(config: VipcastConfig): Promise<void> {
    const settings = consulSettings(config.agent, this.env);
    const old = this.consul;
    if (old && ConsulDiscovery.sameSettings(old.settings, settings) && old.queryIntervalMs === config.agent.consulQueryIntervalMs) {
      old.update(config.agent, config.monitors);
      return;
    }
    const why = ConsulDiscovery.disabledReason(settings);
    if (why) {
      this.consul = undefined;
      await old?.close();
      if (settings.addr) this.log.warn({ consul_addr: settings.addr }, `Consul discovery is off: ${why}`);
      else this.log.info(`Consul discovery is off: ${why}`);
      if (old) this.applyConsulApps([]);
      return;
    }
    const next = new ConsulDiscovery({ agent: config.agent, monitors: config.monitors, consul: settings, log: this.log.child({ component: 'consul' }) });
    await next.start((apps) => {
      if (this.consul === next) this.applyConsulApps(apps);
    });
    this.consul = next;
    await old?.close();
  }

  private applyConsulApps(apps: readonly AppSpec[]): void {
    const refused = this.registry.replaceSource('consul', apps);
    for (const r of refused) this.log.error({ app: r.slice(0, r.indexOf(':')) }, `Consul app refused: ${r}`);
    this.log.info({ apps: apps.map((a) => a.name) }, 'Consul apps updated');
  }

  private addConfigApps(apps: readonly AppSpec[]): void {
    const refused = this.replaceConfigApps(apps);
    for (const r of refused) this.log.error({ app: r }, 'config app refused');
  }

  /** Everything /status shows: apps with health and routes, peers, the last reload. Never a secret. */
  async status(): Promise<Record<string, unknown>> {
    const apps = this.reconciler.status().map((s) => {
      const spec = this.registry.get(s.app)!;
      const h = this.health.get(s.app);
      return {
        name: s.app, source: s.source, vips: spec.vips.map((v) => v.text), state: h?.state ?? 'unknown', reason: h?.reason ?? '',
        since: h ? new Date(h.since).toISOString() : undefined, monitors: h?.monitors ?? [], announced: s.announced,
        host_held: s.hostHeld, cleanup_at: s.cleanupAt ? new Date(s.cleanupAt).toISOString() : undefined, error: s.error,
      };
    });
    const peers = await this.generation.router.peerStates().catch((err: Error) => ({ error: err.message }));
    return {
      version: 1, started_at: new Date(this.startedAt).toISOString(), config_file: this.config.file,
      routing: this.generation.dryRun ? 'dry-run' : this.generation.router.name,
      apps, peers, reconciler: this.reconciler.stats, last_reload: this.lastReload,
    };
  }

  /**
   * Reload the config file as a transaction (SIGHUP, `vipcast reload`, POST /reload). One runs at a time; requests
   * during a reload coalesce into one more reload, whose result they all get.
   */
  requestReload(trigger: string): Promise<ReloadResult> {
    if (this.stopping) {
      this.log.warn({ component: 'reload', trigger }, 'reload refused: the daemon is stopping');
      return Promise.resolve(this.refusedReload(trigger, 'the daemon is stopping'));
    }
    return this.reloads.request(trigger);
  }

  /** `requests`: how many reload requests this run answers (more than one when they arrived during a reload). */
  private async doReload(trigger: string, requests: number): Promise<ReloadResult> {
    const log = this.log.child({ component: 'reload', requests });
    // reloadConfig reports every expected failure in its result; anything else (a bug) must not reach a SIGHUP
    // handler as an unhandled rejection, which would end the process.
    const result = await reloadConfig(this, trigger, log).catch((err: unknown) => {
      log.error({ err, trigger }, 'reload failed unexpectedly: the config in force is unchanged');
      return this.refusedReload(trigger, `unexpected: ${(err as Error)?.message ?? String(err)}`);
    });
    this.lastReload = result;
    this.metrics.reloads.inc({ result: result.ok ? 'ok' : 'failed' });
    return result;
  }

  private refusedReload(trigger: string, error: string): ReloadResult {
    return { ok: false, trigger, at: new Date().toISOString(), durationMs: 0, errors: [error], changes: [], configInForce: configHash(this.config) };
  }

  /** Swap in a new generation (reload); returns the old one for the caller to close. */
  swapGeneration(gen: Generation): Generation {
    const old = this.generation;
    this.generation = gen;
    this.reconciler.swap({ router: gen.router, host: gen.host });
    this.watchRouter(gen.router);
    return old;
  }

  /** A speaker that comes back (gobgpd restarted, reconnected) gets a full resync at once. */
  private watchRouter(router: Router): void {
    router.onReconnect?.(() => void this.reconciler.trigger(true));
  }

  replaceConfigApps(apps: readonly AppSpec[]): string[] {
    return this.registry.replaceSource('config', apps);
  }

  /** Withdraw everything, remove addresses and rules, close components in reverse order. Idempotent. */
  stop(reason = 'shutdown'): Promise<void> {
    this.stopping ??= this.doStop(reason);
    return this.stopping;
  }

  private async doStop(reason: string): Promise<void> {
    this.log.info({ reason }, 'stopping: withdrawing every route');
    await this.reloads.idle();
    clearInterval(this.keepAlive);
    await this.api?.close().catch(() => undefined);
    const consul = this.consul;
    this.consul = undefined;
    if (consul) await withTimeout(consul.close(), 1000, 'consul discovery close', this.log);
    this.health?.close();
    const drainMs = this.generation?.config.agent.shutdownDrainMs ?? 0;
    if (this.reconciler) await withTimeout(this.reconciler.shutdown(reason, drainMs), drainMs + 7000, 'withdraw and cleanup', this.log);
    if (this.generation) await closeGeneration(this.generation, (what, p) => withTimeout(p, 1000, what, this.log));
    if (this.pool) await withTimeout(this.pool.close(), 1000, 'check pool close', this.log);
    if (this.commandPool) await withTimeout(this.commandPool.close(), 1000, 'command check pool close', this.log);
    this.log.info('stopped');
  }
}

export function reconcilerOptions(config: VipcastConfig): ReconcilerOptions {
  return {
    bgp: config.bgp,
    cleanupTimerMs: config.agent.cleanupTimerMs,
    removeVipOnWithdraw: config.agent.removeVipOnWithdraw,
  };
}

async function withTimeout(p: Promise<unknown>, ms: number, what: string, log: Logger): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      log.error({ what, ms }, 'close timed out');
      resolve();
    }, ms);
  });
  try {
    await Promise.race([p.then(() => undefined, (err) => log.error({ err, what }, 'close failed')), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
