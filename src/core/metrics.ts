/** Prometheus metrics (prom-client): one registry per daemon, served at GET /metrics. */
import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client';
import type { CheckPoolMetrics, OverloadReason } from './check-pool.js';

/** How `vipcast_checks_total` labels one check's result. */
export type CheckOutcome = 'pass' | 'fail' | 'timeout';

/**
 * A check's label in `vipcast_checks_total`. A failed check is a `timeout` when its result says so (`timedOut`), or
 * when it was answered only once its whole time budget was spent: the check pool answers every check by its deadline,
 * so that covers every wording of a timeout (the worker's generic "timed out after N ms" for a check that ignored its
 * signal, a built-in's "connect to ... timed out after", a plugin that honours its signal with words of its own, a
 * blocked worker's backstop) without matching reasons, which plugins word freely. Durations are measured by the pool
 * from when the check was asked for; the margin covers the millisecond clocks the worker's deadline is counted in.
 */
export function checkOutcome(r: { readonly ok: boolean; readonly durationMs: number; readonly timedOut?: boolean }, timeoutMs: number): CheckOutcome {
  if (r.ok) return 'pass';
  if (r.timedOut === true) return 'timeout';
  return r.durationMs >= timeoutMs - Math.min(2, timeoutMs / 10) ? 'timeout' : 'fail';
}

/** One loaded plugin as /status and `vipcast_plugin_info` show it. */
export interface PluginInfo {
  readonly kind: string;
  readonly name: string;
  readonly version: string;
  /** The npm package it came from; null for a built-in. */
  readonly package: string | null;
  readonly source: 'built-in' | 'package';
  /** A package's version installed on disk now, when it is not the running one (a restart loads it). */
  readonly installed?: string;
}

/** Where the scrape-time metrics come from. */
export interface MetricSource {
  appStates(): string[];
  routeCount(): number;
  reconcileErrors(): number;
  /** Apps flap damping holds down now. */
  appsDamped?(): number;
}

export class Metrics {
  readonly registry = new Registry();
  readonly checks = new Counter({ name: 'vipcast_checks_total', help: 'Health checks run, by monitor type and result (pass, fail, timeout)', labelNames: ['type', 'result'] as const, registers: [this.registry] });
  readonly checkDuration = new Histogram({ name: 'vipcast_check_duration_seconds', help: 'Duration of one health check', labelNames: ['type'] as const, buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5, 10], registers: [this.registry] });
  readonly transitions = new Counter({ name: 'vipcast_app_transitions_total', help: 'App health state changes', labelNames: ['state'] as const, registers: [this.registry] });
  readonly routeUpdates = new Counter({ name: 'vipcast_route_updates_total', help: 'Announces and withdraws sent to the router', labelNames: ['action'] as const, registers: [this.registry] });
  readonly decisionLatency = new Histogram({ name: 'vipcast_decision_latency_seconds', help: 'From the start of the deciding check round to the route change at the router', labelNames: ['action'] as const, buckets: [0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5], registers: [this.registry] });
  private source: MetricSource | undefined;
  private errorsSeen = 0;
  readonly appsUp: Gauge<'state'> = new Gauge({
    name: 'vipcast_apps', help: 'Apps by health state', labelNames: ['state'] as const, registers: [this.registry],
    collect: () => {
      const counts: Record<string, number> = { up: 0, down: 0, unknown: 0 };
      for (const st of this.source?.appStates() ?? []) counts[st] = (counts[st] ?? 0) + 1;
      for (const [state, n] of Object.entries(counts)) this.appsUp.set({ state }, n);
    },
  });
  readonly routesAnnounced: Gauge = new Gauge({
    name: 'vipcast_routes_announced', help: 'Routes vipcast has in the speaker', registers: [this.registry],
    collect: (): void => { this.routesAnnounced.set(this.source?.routeCount() ?? 0); },
  });
  readonly reconcileErrors: Counter = new Counter({
    name: 'vipcast_reconcile_errors_total', help: 'Failed effects (announce, withdraw, address, NAT)', registers: [this.registry],
    collect: () => {
      const now = this.source?.reconcileErrors() ?? 0;
      if (now > this.errorsSeen) this.reconcileErrors.inc(now - this.errorsSeen);
      this.errorsSeen = now;
    },
  });
  readonly gobgpdRestarts = new Counter({ name: 'vipcast_gobgpd_restarts_total', help: 'Unexpected exits of the managed gobgpd, each followed by a restart', registers: [this.registry] });
  readonly appsDamped: Gauge = new Gauge({
    name: 'vipcast_apps_damped', help: 'Apps held down by flap damping now', registers: [this.registry],
    collect: (): void => { this.appsDamped.set(this.source?.appsDamped?.() ?? 0); },
  });
  readonly dampingSuppressions = new Counter({ name: 'vipcast_flap_damping_suppressions_total', help: 'Times flap damping held an app down', registers: [this.registry] });
  readonly reloads = new Counter({ name: 'vipcast_reloads_total', help: 'Config reloads, by result', labelNames: ['result'] as const, registers: [this.registry] });
  readonly checkOverload = new Counter({
    name: 'vipcast_check_overload_total', help: 'Checks answered down without running because the check workers were overloaded, by pool and reason (deadline: could not start before its deadline; queue_full: the queue was full)',
    labelNames: ['pool', 'reason'] as const, registers: [this.registry],
  });
  private readonly queueReaders = new Map<string, () => number>();
  readonly checkQueue: Gauge<'pool'> = new Gauge({
    name: 'vipcast_check_queue_length', help: 'Checks waiting for a free slot in a check worker, by pool', labelNames: ['pool'] as const, registers: [this.registry],
    collect: () => {
      for (const [pool, read] of this.queueReaders) this.checkQueue.set({ pool }, read());
    },
  });

  private pluginSource: (() => readonly PluginInfo[]) | undefined;
  readonly pluginInfo: Gauge<'kind' | 'name' | 'version' | 'package' | 'source'> = new Gauge({
    name: 'vipcast_plugin_info', help: 'Loaded plugins (1 each), by kind, name, version, package ("" for a built-in) and source (built-in, package)',
    labelNames: ['kind', 'name', 'version', 'package', 'source'] as const, registers: [this.registry],
    collect: () => {
      // Read afresh at every scrape: a reload may add, remove or (after a restart) upgrade plugins.
      this.pluginInfo.reset();
      for (const p of this.pluginSource?.() ?? []) this.pluginInfo.set({ kind: p.kind, name: p.name, version: p.version, package: p.package ?? '', source: p.source }, 1);
    },
  });

  private maintenanceSource: (() => { apps: number; host: boolean }) | undefined;
  readonly appsInMaintenance: Gauge = new Gauge({
    name: 'vipcast_apps_in_maintenance', help: 'Registered apps in maintenance now (their own, or host-wide)', registers: [this.registry],
    collect: (): void => { this.appsInMaintenance.set(this.maintenanceSource?.().apps ?? 0); },
  });
  readonly hostMaintenance: Gauge = new Gauge({
    name: 'vipcast_host_maintenance', help: '1 while the whole host is in maintenance (API, CLI or agent.maintenance_file), else 0', registers: [this.registry],
    collect: (): void => { this.hostMaintenance.set(this.maintenanceSource?.().host ? 1 : 0); },
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'vipcast_process_' });
  }

  /**
   * Gauges and the error counter are read from the daemon's own state when /metrics is scraped, so they can't drift
   * from it: app states from the health tracker, routes and failed effects from the reconciler.
   */
  observe(source: MetricSource): void {
    this.source = source;
  }

  /** Count one check: `vipcast_checks_total` by type and outcome (checkOutcome), and its duration. */
  countCheck(type: string, r: { readonly ok: boolean; readonly durationMs: number; readonly timedOut?: boolean }, timeoutMs: number): void {
    this.checks.inc({ type, result: checkOutcome(r, timeoutMs) });
    this.checkDuration.observe({ type }, r.durationMs / 1000);
  }

  /** Where `vipcast_plugin_info` is read from at scrape time (the plugins of the config in force). */
  observePlugins(read: () => readonly PluginInfo[]): void {
    this.pluginSource = read;
  }

  /** Where the maintenance gauges are read from at scrape time (the daemon's Maintenance). */
  observeMaintenance(read: () => { apps: number; host: boolean }): void {
    this.maintenanceSource = read;
  }

  /** What a check pool named `pool` reports into (its overload drops; its queue length, read at scrape time). */
  checkPool(pool: string): CheckPoolMetrics {
    for (const reason of ['deadline', 'queue_full'] as const) this.checkOverload.inc({ pool, reason }, 0);
    return {
      overload: (reason: OverloadReason) => this.checkOverload.inc({ pool, reason }),
      queueLength: (read) => {
        this.queueReaders.set(pool, read);
      },
    };
  }
}
