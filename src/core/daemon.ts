/**
 * The daemon: owns one config generation at a time and the long-lived parts (check pool, registry, health tracker,
 * reconciler). Lifecycle: start() in order, stop() in reverse order, each close with a timeout; stop is idempotent.
 */
import type { Router } from '../plugin-api.js';
import type { DiscoveryEntry, VipcastConfig } from './config-types.js';
import type { Logger } from './logger.js';
import { loadConfig } from './config.js';
import type { CheckPool } from './check-pool.js';
import { DaemonCheckPools } from './daemon-check-pools.js';
import { AppRegistry } from './registry.js';
import { HealthTracker, type CheckRunner } from './health.js';
import { Reconciler } from './reconciler.js';
import { buildGeneration, closeGeneration, startGeneration, type Generation } from './container.js';
import { Metrics } from './metrics.js';
import { Coalescer } from './serial-queue.js';
import type { ApiServer } from './api.js';
import { exposureWarnings } from './exposure.js';
import { configHash, reloadConfig } from './reload.js';
import { reconcilerOptions, type DaemonForApi, type DaemonForReload, type ReloadResult } from './daemon-api.js';
import { consulSettings } from './config.js';
import { FIRST_DELIVERY_HOLD_MS } from '../plugins/discovery/index.js';
import { VipcastError } from './errors.js';
import { PidFile } from './pid-file.js';
import { Maintenance } from './maintenance.js';
import { FlapDamping } from './flap-damping.js';
import { createManagedSpeaker, type ManagedSpeaker } from '../plugins/routing/index.js';
import { RegistrationStore } from './registration-store.js';
import { configureDiscovery, daemonDiscoverySources, type RunningDiscovery } from './daemon-discovery.js';
import { daemonStatus, pluginList } from './daemon-status.js';
import { wireDaemonEvents } from './daemon-events.js';
import { stopBounds, withTimeout } from './daemon-stop.js';
import { SHUTDOWN_WAIT_IN_FLIGHT_MS, ShutdownDeadline } from './shutdown-steps.js';
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

export class Daemon implements DaemonForApi, DaemonForReload {
  /** The prefix policy of the config in force guards its door (invariant 9). */
  readonly registry = new AppRegistry({ policy: () => this.generation?.config.agent.prefixPolicy });
  readonly startedAt = Date.now();
  readonly metrics = new Metrics();
  /** The outcome of the last reload, for /status. */
  lastReload: ReloadResult | undefined;
  private readonly reloads = new Coalescer<string, ReloadResult>((trigger, requests) => this.doReload(trigger, requests), RELOAD_SETTLE_MS);
  /** The check pools (checks, commands, replaced ones still answering): see daemon-check-pools.ts. */
  private pools: DaemonCheckPools | undefined;
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
    // The managed gobgpd first: the router connects to its socket in startGeneration. The generation is built while it
    // boots (gRPC modules, local addresses); a failure of the speaker still comes first.
    this.speaker = await createManagedSpeaker(config.routing, this.opts.dryRun, this.log, () => this.metrics.gobgpdRestarts.inc());
    const speakerUp = this.speaker?.start();
    speakerUp?.catch(() => undefined);
    this.generation = await buildGeneration(config, { log: this.log }).finally(() => speakerUp);
    const { router, host } = this.generation;
    this.log.info({ file: config.file, apps: config.apps.length, routing: config.routing.plugin }, 'config loaded');
    for (const w of config.warnings ?? []) this.log.warn({ file: config.file }, w);
    for (const w of exposureWarnings(config, this.generation.dryRun)) this.log.warn({ component: 'security' }, w);

    const pools = (this.pools = new DaemonCheckPools(config.agent.checkWorkers, this.log, this.metrics, () => this.registry.all()));
    const runner: CheckRunner = {
      run: async (spec, timeoutMs) => {
        const r = await pools.run(spec, timeoutMs);
        this.metrics.countCheck(spec.type, r, timeoutMs);
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
    this.damping = new FlapDamping(config.agent.flapDamping, {
      log: this.log.child({ component: 'flap-damping' }),
      onSuppress: () => this.metrics.dampingSuppressions.inc(),
      onRelease: () => void this.reconciler.trigger(),
    });
    this.reconciler.addHoldSource((app) => this.damping.hold(app.name));
    wireDaemonEvents(this);
    this.metrics.observePlugins(() => pluginList(this.config.registry));

    await startGeneration(this.generation);
    this.markStoppable();
    this.watchRouter(router);
    // Paths an earlier run left for HTTP registrations or a discovery source's apps (Consul's...) must not look stale
    // before they are back (a restart would flap them): held from before the first app is tracked, since a config
    // app's first verdict triggers a pass at once.
    this.reconciler.holdForSource('http', FIRST_DELIVERY_HOLD_MS);
    for (const s of daemonDiscoverySources(config, this.env)) {
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
    if (config.agent.listenAddr) import('./api.js').catch(() => undefined); // fastify loads while the first pass waits on ip/gobgpd
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
    // fastify loads here, after the first pass, not before the first announce.
    this.api = listenAddr ? await (await import('./api.js')).startApi(this, listenAddr, this.log.child({ component: 'api' })) : undefined;
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
   * Start, keep, replace or close the discovery sources of `config` (start, reload): see daemon-discovery.ts. Returns
   * the apps the registry refused, by source; a source that cannot be created or started throws naming its key path.
   */
  configureDiscovery(config: VipcastConfig, only?: (s: DiscoveryEntry) => boolean): Promise<Map<string, string[]>> {
    const d = this;
    return configureDiscovery({
      log: d.log, env: d.env, discoveries: d.discoveries, registry: d.registry,
      get reconciler() { return d.reconciler; }, get config() { return d.config; }, get stopping() { return d.stopping !== undefined; },
    }, config, only);
  }

  /** Everything /status shows: apps with health and routes, peers, the last reload. Never a secret. */
  status(): Promise<Record<string, unknown>> {
    const d = this;
    return daemonStatus({
      registry: d.registry, startedAt: d.startedAt, registrations: d.registrations,
      get health() { return d.health; }, get reconciler() { return d.reconciler; }, get damping() { return d.damping; },
      get maintenance() { return d.maintenance; }, get generation() { return d.generation; }, get config() { return d.config; },
      get speaker() { return d.speaker; }, get pool() { return d.pool; }, get checkWorkers() { return d.checkWorkers; },
      get lastReload() { return d.lastReload; },
    });
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

  /** The pool checks run on now (but those that start processes). */
  get pool(): CheckPool {
    return this.pools!.pool;
  }

  /** Checks that start processes (exec) get their own worker: spawning 50 shells never holds up a port check. */
  get commandPool(): CheckPool {
    return this.pools!.commandPool;
  }

  /**
   * agent.check_workers changed by a reload: a pool of the new size takes every check from now on; the old one is
   * closed once the checks it holds have answered (each within its timeout plus the pool's backstop), at the latest
   * after the longest check timeout plus 20 s, or at once when the daemon stops.
   */
  resizeCheckPool(workers: number): void {
    const boundMs = () => Math.max(this.config.agent.checkTimeoutMs, ...this.registry.all().map((a) => a.timeoutMs)) + 20_000;
    this.pools?.resize(workers, boundMs, () => this.stopping !== undefined);
  }

  /** agent.check_workers of the pool that runs checks now. */
  get checkWorkers(): number {
    return this.pools?.workers ?? 0;
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
    return daemonDiscoverySources(config, this.env);
  }

  /**
   * Withdraw everything, remove addresses and rules, close components in reverse order. Idempotent. `signalAt`
   * (performance.now() of the signal; default now) starts the stop's deadline, SHUTDOWN_DEADLINE_MS later.
   */
  stop(reason = 'shutdown', signalAt = performance.now()): Promise<void> {
    this.stopping ??= this.doStop(reason, ShutdownDeadline.after(signalAt));
    return this.stopping;
  }

  /**
   * Withdraw first: up to the withdraw nothing waits on anything slow. No more verdicts (health closed), no more passes
   * (the reconciler stops at its next step) and no more Consul apps, all in this turn of the event loop; then the
   * withdraw and cleanup, which waits for an effect in flight at most SHUTDOWN_WAIT_IN_FLIGHT_MS. A reload in progress,
   * requests in flight on the API and the Consul read are waited for only afterwards, each with a bound. Every bound
   * is cut to what the deadline leaves (stopBounds), so they cannot add up past the forced exit.
   */
  private async doStop(reason: string, deadline: ShutdownDeadline): Promise<void> {
    // No exec check command runs after this line, and none that ran is left (invariant 6).
    this.pools?.stopCommands();
    this.log.info({ reason }, 'stopping: withdrawing every route');
    clearInterval(this.keepAlive);
    this.health?.close();
    this.maintenance?.close();
    this.damping?.close();
    const discoveries = [...this.discoveries.values()];
    this.discoveries.clear();
    for (const rec of discoveries) rec.retired = true;
    const drainMs = this.generation?.config.agent.shutdownDrainMs ?? 0;
    if (this.reconciler) await withTimeout(this.reconciler.shutdown(reason, drainMs, SHUTDOWN_WAIT_IN_FLIGHT_MS, deadline), stopBounds.withdrawAndCleanup(deadline), 'withdraw and cleanup', this.log);
    await withTimeout(this.reloads.idle(), stopBounds.close(deadline), 'reload in progress', this.log);
    if (this.api) await withTimeout(this.api.close(), stopBounds.close(deadline), 'HTTP API close', this.log);
    // Nothing below changes what is announced or on the host: the closes run side by side, each within its bound, so
    // a few slow ones don't add up past the exit bound. The registrations file is written after the API closed: a
    // registration answered during the withdraw is in it too.
    const closeMs = stopBounds.close(deadline);
    await Promise.all([
      withTimeout(this.registrations.close(), closeMs, 'registrations file write', this.log),
      ...discoveries.map((rec) => withTimeout(rec.instance.close(), closeMs, `${rec.entry.name === 'consul' ? 'consul' : rec.entry.name} discovery close`, this.log)),
      this.generation ? closeGeneration(this.generation, (what, p) => withTimeout(p, closeMs, what, this.log)) : undefined,
      this.pools ? withTimeout(Promise.all(this.pools.closes()), closeMs, 'check pools close', this.log) : undefined,
    ]);
    // Last: the sessions drop only after the withdraw (SIGTERM, SIGKILL after 1 s, also when gobgpd is SIGSTOPped).
    if (this.speaker) await withTimeout(this.speaker.stop(), stopBounds.speakerStop(deadline), 'managed gobgpd stop', this.log);
    this.log.info('stopped');
  }
}

