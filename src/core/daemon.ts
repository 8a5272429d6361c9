/**
 * The daemon: owns one config generation at a time and the long-lived parts (check pool, registry, health tracker,
 * reconciler). Lifecycle: start() in order, stop() in reverse order, each close with a timeout; stop is idempotent.
 */
import type { AppSpec, Discovery, DiscoveryPlugin, Router } from '../plugin-api.js';
import type { DiscoveryEntry, VipcastConfig } from './config-types.js';
import type { Logger } from './logger.js';
import { loadConfig } from './config.js';
import { CheckPool } from './check-pool.js';
import { AppRegistry, sameChecks } from './registry.js';
import { HealthTracker, type CheckRunner } from './health.js';
import { Reconciler } from './reconciler.js';
import { buildGeneration, closeGeneration, startGeneration, type Generation } from './container.js';
import { Metrics } from './metrics.js';
import { Coalescer } from './serial-queue.js';
import { exposureWarnings, startApi, type ApiServer } from './api.js';
import { configHash, reloadConfig } from './reload.js';
import { reconcilerOptions, type DaemonForApi, type DaemonForReload, type ReloadResult } from './daemon-api.js';
import { consulSettings } from './config.js';
import { discoverySources, FIRST_DELIVERY_HOLD_MS } from '../plugins/discovery/index.js';
import { VipcastError } from './errors.js';
import { PidFile } from './pid-file.js';
import { Maintenance } from './maintenance.js';
import { FlapDamping, type DampingInfo } from './flap-damping.js';
import { createManagedSpeaker, type ManagedSpeaker } from '../plugins/routing/index.js';
import { RegistrationStore } from './registration-store.js';
import { appFromRegistration } from './registration.js';

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

/**
 * At start, how long paths, addresses and rules of unknown apps are left alone while Consul (any discovery source but
 * `config`) has not delivered its first apps (they may be its apps from before a restart). After that they are
 * withdrawn as strays.
 */
export const CONSUL_FIRST_READ_HOLD_MS = FIRST_DELIVERY_HOLD_MS;

/** A discovery source the daemon runs: its entry (name, plugin, settings) and the instance its plugin created. */
interface RunningDiscovery {
  entry: DiscoveryEntry;
  plugin: DiscoveryPlugin;
  instance: Discovery;
  /** Replaced or removed: its deliveries are ignored from then on. */
  retired: boolean;
}

export class Daemon implements DaemonForApi, DaemonForReload {
  /** The prefix policy of the config in force guards its door (invariant 9). */
  readonly registry = new AppRegistry({ policy: () => this.generation?.config.agent.prefixPolicy });
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
  /** Apps in maintenance (API, CLI, files): by name, daemon state kept across reloads and, saved, across restarts. */
  maintenance!: Maintenance;
  /** Flap damping (agent.flap_damping): its penalties are daemon state, kept across reloads (not across restarts). */
  damping!: FlapDamping;
  generation!: Generation;
  private stopping: Promise<void> | undefined;
  private api: ApiServer | undefined;
  /** Keeps the process alive when nothing else does (no API, no app, or every HTTP app removed by cleanup_timer). */
  private keepAlive: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  /**
   * The discovery sources running, by name (their apps' source): `config`, `consul` when agent.consul_addr and
   * CONSUL_NODE are set, and the `discovery:` entries. Created by name from the config's PluginRegistry.
   */
  readonly discoveries = new Map<string, RunningDiscovery>();
  /**
   * The gobgpd vipcast runs itself (routing.gobgp.managed): started before the first generation, kept across reloads
   * (a reload that changes its settings needs a restart), stopped last.
   */
  speaker: ManagedSpeaker | undefined;
  /** HTTP registrations kept across restarts (agent.registrations_file of the config in force). */
  readonly registrations: RegistrationStore;

  /** The pid file `vipcast run` writes once the daemon runs; a reload that changes agent.pid_file moves it. */
  readonly pidFile = new PidFile();
  /** True once start() has finished: before that there is no config in force, and reload requests wait for it. */
  private running = false;
  private starting: Promise<void> | undefined;
  /** Resolves true when start() has finished, false when it failed. */
  private readonly started: Promise<boolean>;
  private markStarted!: (ok: boolean) => void;
  /**
   * Resolves once a stop no longer races the start: the speaker and host network are started (what is left of the
   * start is apps and passes, which a stop halts at their next step), or the start ended.
   */
  readonly stoppable: Promise<void>;
  private markStoppable!: () => void;
  /** agent.check_workers of the pool in use. */
  private poolWorkers = 0;
  /** Replaced pools still answering their in-flight checks (agent.check_workers changed by a reload). */
  private readonly retiringPools = new Map<CheckPool, Promise<void>>();

  constructor(private readonly opts: DaemonOptions) {
    this.log = opts.log;
    this.registrations = new RegistrationStore({ file: () => this.generation?.config.agent.registrationsFile ?? '', log: opts.log.child({ component: 'registrations' }) });
    this.started = new Promise<boolean>((resolve) => (this.markStarted = resolve));
    this.stoppable = new Promise<void>((resolve) => (this.markStoppable = resolve));
    void this.started.then(() => this.markStoppable());
  }

  get config(): VipcastConfig {
    if (!this.generation) throw new VipcastError('VIPCAST_ERR_INTERNAL', 'no config in force yet: the daemon has not started');
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

  /** Start once (a second call gets the same promise). Reload requests made before it finished run right after it. */
  start(): Promise<void> {
    this.starting ??= this.doStart().then(
      () => {
        this.running = true;
        this.markStarted(true);
      },
      (err: unknown) => {
        this.markStarted(false);
        throw err;
      },
    );
    return this.starting;
  }

  private async doStart(): Promise<void> {
    this.keepAlive = setInterval(() => undefined, 2 ** 31 - 1);
    const config = await this.loadConfig();
    // The managed gobgpd first: the first generation's router connects to its socket.
    this.speaker = await createManagedSpeaker(config.routing, this.opts.dryRun, this.log, () => this.metrics.gobgpdRestarts.inc());
    await this.speaker?.start();
    this.generation = await buildGeneration(config, { log: this.log });
    const { router, host } = this.generation;
    this.log.info({ file: config.file, apps: config.apps.length, routing: config.routing.plugin }, 'config loaded');
    for (const w of config.warnings ?? []) this.log.warn({ file: config.file }, w);
    for (const w of exposureWarnings(config, this.generation.dryRun)) this.log.warn({ component: 'security' }, w);

    this.pool = this.newCheckPool(config.agent.checkWorkers);
    this.commandPool = new CheckPool({ workers: 1, log: this.log.child({ component: 'check-pool', pool: 'commands' }), metrics: this.metrics.checkPool('commands') });
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
    // Maintenance is the operator's word: its hold comes first. Restored (and its files looked at) before any app is
    // tracked, so a restart never announces an app in maintenance, not even for a moment.
    this.maintenance = new Maintenance({
      stateFile: () => this.config.agent.maintenanceStateFile, hostFile: () => this.config.agent.maintenanceFile, dir: () => this.config.agent.maintenanceDir,
      drainMs: () => this.config.agent.shutdownDrainMs,
      announced: () => this.reconciler.status().filter((s) => s.announced.length > 0).map((s) => s.app),
      onChange: () => void this.reconciler.trigger(), log: this.log.child({ component: 'maintenance' }),
    });
    this.reconciler.addHoldSource(this.maintenance.hold);
    await this.maintenance.start();
    this.metrics.observeMaintenance(() => ({ apps: this.registry.all().filter((a) => this.maintenance.entryOf(a.name)).length, host: this.maintenance.host !== undefined }));

    this.metrics.observe({
      appStates: () => this.health.all().map((h) => h.state),
      routeCount: () => this.reconciler.routeCount(),
      reconcileErrors: () => this.reconciler.stats.errors,
      appsDamped: () => this.damping.suppressedApps().length,
    });
    this.damping = new FlapDamping(config.agent.flapDamping, {
      log: this.log.child({ component: 'flap-damping' }),
      onSuppress: () => this.metrics.dampingSuppressions.inc(),
      onRelease: () => void this.reconciler.trigger(),
    });
    this.reconciler.addHoldSource((app) => this.damping.hold(app.name));
    const roundStart = new Map<string, number>();
    this.health.onChange((c) => {
      this.damping.transition(c.app, c.previous, c.state);
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
        this.damping.forget(ev.app.name);
      }
      if (ev.type === 'changed') void this.reconciler.trigger();
    });

    await startGeneration(this.generation);
    this.markStoppable();
    this.watchRouter(router);
    // Paths an earlier run left for HTTP registrations or a discovery source's apps (Consul's...) must not look stale
    // before they are back (a restart would flap them): held from before the first app is tracked, since a config
    // app's first verdict triggers a pass at once.
    this.reconciler.holdForSource('http', FIRST_DELIVERY_HOLD_MS);
    for (const s of discoverySources(config, consulSettings(config.agent, this.env)).sources) {
      if (s.name !== 'config') this.reconciler.holdForSource(s.name, FIRST_DELIVERY_HOLD_MS);
    }
    // Apps first, then the first (full) pass: it reads the speaker and the host; what an earlier run left for apps
    // still configured stays until their first check says otherwise, strays go at once.
    await this.configureDiscovery(config, (s) => s.name === 'config');
    // HTTP registrations of the previous run, validated again as /register would now; config apps win. They start
    // 'unknown' like every app after a restart: their paths are left alone until their first check, then adopted.
    try {
      await this.registrations.restore(this.registry, (p) => appFromRegistration(p, 'http', config.agent, config.monitors, consulSettings(config.agent, this.env)));
    } finally {
      this.reconciler.sourceDelivered('http');
    }
    await this.configureDiscovery(config);
    this.reconciler.start();
    await this.reconciler.trigger(true);
    await this.listen(config.agent.listenAddr).catch((err: unknown) => {
      this.log.error({ err, listen_addr: config.agent.listenAddr }, 'HTTP API could not start; running without it');
    });
  }

  /** Start the HTTP API on `listenAddr` ('' = none), then close the previous one (a reload that moves it). */
  async listen(listenAddr: string): Promise<void> {
    // A reload that finishes during shutdown must not open the API again.
    if (this.stopping) return;
    const old = this.api;
    if (old && old.listenAddr === listenAddr) return;
    this.api = listenAddr ? await startApi(this, listenAddr, this.log.child({ component: 'api' })) : undefined;
    await old?.close();
  }

  /** The listen address the API runs on now ('' = none). */
  get apiAddress(): string {
    return this.api?.listenAddr ?? '';
  }

  /**
   * HTTP-registered apps take the agent's defaults: a reload that changes them applies them to those apps too. An app
   * the prefix policy in force no longer allows (a narrower agent.allowed_prefixes, a new peer) is removed.
   */
  refreshRegisteredApps(agent: VipcastConfig['agent']): void {
    for (const app of this.registry.all()) {
      if (app.source !== 'http') continue;
      const refused = this.registry.policyProblems(app);
      if (refused.length > 0) {
        this.log.error({ app: app.name, problems: refused }, `HTTP app removed: the prefix policy now refuses it: ${refused.join('; ')}`);
        this.registry.remove(app.name);
        continue;
      }
      this.registry.upsert({ ...app, rise: agent.rise, fall: agent.fall, intervalMs: agent.monitorIntervalMs, timeoutMs: agent.checkTimeoutMs });
    }
    this.registrations.configChanged();
  }

  /**
   * Start, keep, replace or close the discovery sources of `config` (start, reload), each created by name from the
   * config's PluginRegistry. Same plugin and sameSettings: the running instance stays (refresh(): it rebuilds its apps
   * with the config in force). Changed: the new instance starts before the old one closes, and its apps replace the
   * old ones by name (unchanged apps are not withdrawn). Removed: closed and its apps removed. `only`: just those
   * sources (the start adds the config apps first). Returns the apps the registry refused, by source (the `config`
   * source's fail a reload). A source that cannot be created or started throws an error naming its key path; the
   * sources done before it stay (a reload's undo configures the previous config again).
   */
  async configureDiscovery(config: VipcastConfig, only?: (s: DiscoveryEntry) => boolean): Promise<Map<string, string[]>> {
    const refusedBy = new Map<string, string[]>();
    if (this.stopping) return refusedBy;
    const { sources, consulOff } = discoverySources(config, consulSettings(config.agent, this.env));
    const wanted = only ? sources.filter(only) : sources;
    if (!only && consulOff) {
      const addr = config.agent.consulAddr ?? '';
      if (addr) this.log.warn({ consul_addr: addr }, `Consul discovery is off: ${consulOff}`);
      else this.log.info(`Consul discovery is off: ${consulOff}`);
    }
    for (const entry of wanted) {
      const plugin = config.registry.discovery(entry.plugin);
      if (!plugin) throw new VipcastError('VIPCAST_ERR_CONFIG', `${entry.path}: unknown discovery plugin "${entry.plugin}"`);
      const old = this.discoveries.get(entry.name);
      // A reload loads plugin packages afresh (another descriptor object): the same plugin is the same name and version.
      if (old && old.entry.plugin === entry.plugin && old.plugin.version === plugin.version && plugin.sameSettings(old.entry.settings, entry.settings)) {
        old.plugin = plugin;
        old.entry = entry;
        old.instance.refresh?.();
        continue;
      }
      if (old) old.retired = true;
      let rec: RunningDiscovery | undefined;
      try {
        const log = this.log.child({ component: 'discovery', discovery: entry.name });
        const instance = await plugin.create({ log, settings: entry.settings, services: { appFrom: (params, path) => this.appFrom(entry.name, params, path) } });
        rec = { entry, plugin, instance, retired: false };
        const self = rec;
        await instance.start((apps) => {
          if (self.retired || this.stopping) return;
          refusedBy.set(entry.name, this.deliver(entry.name, apps));
          this.reconciler.sourceDelivered(entry.name);
        });
      } catch (err) {
        if (old) old.retired = false;
        if (rec) await rec.instance.close().catch(() => undefined);
        throw new VipcastError('VIPCAST_ERR_CONFIG', `${entry.path}: discovery "${entry.name}" (plugin ${entry.plugin}) could not start: ${(err as Error).message}`, { cause: err });
      }
      if (this.stopping) {
        rec.retired = true;
        await rec.instance.close();
        return refusedBy;
      }
      this.discoveries.set(entry.name, rec);
      if (old) {
        // The config source is replaced on every reload (its settings are the file's apps); only others are news.
        if (entry.name !== 'config') this.log.info({ discovery: entry.name, plugin: entry.plugin }, `discovery ${entry.name}: settings changed; the new instance started, closing the old one`);
        await old.instance.close();
      }
    }
    if (only) return refusedBy;
    const names = new Set(sources.map((s) => s.name));
    for (const [name, rec] of [...this.discoveries]) {
      if (names.has(name)) continue;
      rec.retired = true;
      this.discoveries.delete(name);
      await rec.instance.close();
      this.deliver(name, []);
      this.log.info({ discovery: name }, `discovery ${name}: removed from the config; its apps are removed`);
    }
    return refusedBy;
  }

  /** A discovery source's whole set of apps: they replace the source's apps in the registry. Returns the refused. */
  private deliver(source: string, apps: readonly AppSpec[]): string[] {
    const refused = this.registry.replaceSource(source, apps);
    if (source === 'config') {
      for (const r of refused) this.log.error({ app: r }, 'config app refused');
      return refused;
    }
    const label = source === 'consul' ? 'Consul' : `discovery ${source}:`;
    for (const r of refused) this.log.error({ app: r.slice(0, r.indexOf(':')), discovery: source }, `${label} app refused: ${r}`);
    this.log.info({ apps: apps.map((a) => a.name), discovery: source }, source === 'consul' ? 'Consul apps updated' : `discovery ${source}: apps updated`);
    return refused;
  }

  /** DiscoveryServices.appFrom: gocast's parameters under the config in force, `source` = the discovery's name. */
  private appFrom(source: string, params: Parameters<typeof appFromRegistration>[0], path: string): AppSpec {
    const config = this.config;
    try {
      return appFromRegistration(params, source, config.agent, config.monitors, consulSettings(config.agent, this.env));
    } catch (err) {
      if (!path || !(err instanceof VipcastError)) throw err;
      const details = err.details.length > 0 ? err.details.map((d) => `${path}.${d}`) : [`${path}: ${err.message}`];
      throw new VipcastError(err.code, details.join('; '), { details });
    }
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
        ...(s.held ? { held: { reason: s.held.reason, ...(s.held.drainingUntil ? { draining_until: new Date(s.held.drainingUntil).toISOString() } : {}) } } : {}),
        ...dampingStatus(this.damping.info(s.app)),
        ...(this.registrations.isRestored(s.app) ? { restored: true } : {}),
        ...maintenanceStatus(this.maintenance.view(s.app)),
      };
    });
    const peers = await this.generation.router.peerStates().catch((err: Error) => ({ error: err.message }));
    return {
      version: 1, started_at: new Date(this.startedAt).toISOString(), config_file: this.config.file,
      routing: this.generation.dryRun ? 'dry-run' : this.generation.router.name,
      ...(this.speaker ? { gobgpd: { managed: true, pid: this.speaker.pid ?? null, restarts: this.speaker.restarts, address: this.speaker.address } } : {}),
      maintenance: { host: this.maintenance.host ?? null },
      apps, peers, registrations: this.registrations.status(), reconciler: this.reconciler.stats, check_pool: { check_workers: this.poolWorkers, ...this.pool.stats }, last_reload: this.lastReload,
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
    if (!this.running) {
      // No config in force yet (a SIGHUP while vipcast starts): the request waits for the start and is answered by
      // the reload that runs right after it (requests waiting together are one run). A failed start refuses it.
      this.log.info({ component: 'reload', trigger }, 'reload requested while vipcast is starting: it runs once the daemon runs');
      return this.started.then((ok) => (ok ? this.requestReload(trigger) : this.refusedReload(trigger, 'the daemon did not start')));
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
    const configInForce = this.generation ? configHash(this.generation.config) : '';
    return { ok: false, trigger, at: new Date().toISOString(), durationMs: 0, errors: [error], changes: [], configInForce, restartNeeded: [] };
  }

  private newCheckPool(workers: number): CheckPool {
    this.poolWorkers = workers;
    return new CheckPool({ workers, log: this.log.child({ component: 'check-pool' }), metrics: this.metrics.checkPool('checks') });
  }

  /**
   * agent.check_workers changed by a reload: a pool of the new size takes every check from now on; the old one is
   * closed once the checks it holds have answered (each within its timeout plus the pool's backstop), at the latest
   * after the longest check timeout plus 20 s, or at once when the daemon stops.
   */
  resizeCheckPool(workers: number): void {
    if (workers === this.poolWorkers) return;
    const old = this.pool;
    const previous = this.poolWorkers;
    this.pool = this.newCheckPool(workers);
    this.log.info({ component: 'check-pool', workers, previous }, 'check pool resized: new checks run on the new pool, the old one closes once its checks have answered');
    const boundMs = Math.max(this.config.agent.checkTimeoutMs, ...this.registry.all().map((a) => a.timeoutMs)) + 20_000;
    const retiring = (async () => {
      const deadline = performance.now() + boundMs;
      while (old.stats.inFlight > 0 && performance.now() < deadline && !this.stopping) await new Promise((r) => setTimeout(r, 50));
      await withTimeout(old.close(), 1000, 'replaced check pool close', this.log);
    })();
    this.retiringPools.set(old, retiring);
    void retiring.finally(() => this.retiringPools.delete(old));
  }

  /** agent.check_workers of the pool that runs checks now. */
  get checkWorkers(): number {
    return this.poolWorkers;
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

  discoverySources(config: VipcastConfig): readonly DiscoveryEntry[] {
    return discoverySources(config, consulSettings(config.agent, this.env)).sources;
  }

  /** Withdraw everything, remove addresses and rules, close components in reverse order. Idempotent. */
  stop(reason = 'shutdown'): Promise<void> {
    this.stopping ??= this.doStop(reason);
    return this.stopping;
  }

  /**
   * Withdraw first: up to the withdraw nothing waits on anything slow. No more verdicts (health closed), no more passes
   * (the reconciler stops at its next step) and no more Consul apps, all in this turn of the event loop; then the
   * withdraw and cleanup, which waits for an effect in flight at most SHUTDOWN_WAIT_IN_FLIGHT_MS. A reload in progress,
   * requests in flight on the API and the Consul read are waited for only afterwards, each with a bound.
   */
  private async doStop(reason: string): Promise<void> {
    // No exec check command runs after this line, and none that ran is left (invariant 6).
    for (const pool of [this.pool, this.commandPool, ...this.retiringPools.keys()]) pool?.stopCommands();
    this.log.info({ reason }, 'stopping: withdrawing every route');
    clearInterval(this.keepAlive);
    this.health?.close();
    this.maintenance?.close();
    this.damping?.close();
    const discoveries = [...this.discoveries.values()];
    this.discoveries.clear();
    for (const rec of discoveries) rec.retired = true;
    const drainMs = this.generation?.config.agent.shutdownDrainMs ?? 0;
    if (this.reconciler) await withTimeout(this.reconciler.shutdown(reason, drainMs), drainMs + 7000, 'withdraw and cleanup', this.log);
    await withTimeout(this.reloads.idle(), 1000, 'reload in progress', this.log);
    if (this.api) await withTimeout(this.api.close(), 1000, 'HTTP API close', this.log);
    // Nothing below changes what is announced or on the host: the closes run side by side, each within its bound, so
    // a few slow ones don't add up past the exit bound. The registrations file is written after the API closed: a
    // registration answered during the withdraw is in it too.
    await Promise.all([
      withTimeout(this.registrations.close(), 1000, 'registrations file write', this.log),
      ...discoveries.map((rec) => withTimeout(rec.instance.close(), 1000, `${rec.entry.name === 'consul' ? 'consul' : rec.entry.name} discovery close`, this.log)),
      this.generation ? closeGeneration(this.generation, (what, p) => withTimeout(p, 1000, what, this.log)) : undefined,
      this.pool ? withTimeout(this.pool.close(), 1000, 'check pool close', this.log) : undefined,
      this.commandPool ? withTimeout(this.commandPool.close(), 1000, 'command check pool close', this.log) : undefined,
      this.retiringPools.size > 0 ? withTimeout(Promise.all(this.retiringPools.values()), 1000, 'replaced check pools close', this.log) : undefined,
    ]);
    // Last: the sessions drop only after the withdraw (SIGTERM, SIGKILL after 1 s, also when gobgpd is SIGSTOPped).
    if (this.speaker) await withTimeout(this.speaker.stop(), 3000, 'managed gobgpd stop', this.log);
    this.log.info('stopped');
  }
}

/** /status's `damping` of an app: while damping is on and the app has a penalty. */
function dampingStatus(info: DampingInfo | undefined): Record<string, unknown> {
  if (!info) return {};
  return { damping: { penalty: info.penalty, flaps: info.flaps, suppressed: info.suppressed, ...(info.reuseAt ? { reuse_at: new Date(info.reuseAt).toISOString() } : {}) } };
}

/** /status's `maintenance` of an app: while it is in maintenance, since when and by whom (api, cli, file). */
function maintenanceStatus(view: ReturnType<Maintenance['view']>): Record<string, unknown> {
  return view ? { maintenance: view } : {};
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
