/**
 * What /status shows of the daemon: apps with health and routes, peers, the last reload. Works on the small
 * StatusSources view of the daemon (no import of daemon.ts: no cycle).
 */
import type { AppRegistry } from './registry.js';
import type { HealthTracker } from './health.js';
import type { Reconciler } from './reconciler.js';
import type { Generation } from './container.js';
import type { VipcastConfig } from './config-types.js';
import type { ReloadResult } from './daemon-api.js';
import type { Maintenance } from './maintenance.js';
import type { DampingInfo, FlapDamping } from './flap-damping.js';
import type { ManagedSpeaker } from '../plugins/routing/index.js';
import type { RegistrationStore } from './registration-store.js';
import type { CheckPool } from './check-pool.js';
import type { PluginRegistry } from './plugin-registry.js';
import type { PluginInfo } from './metrics.js';
import type { PluginKind } from '../plugin-api.js';

/** The daemon's parts /status reads, each read when used (a reload may swap the generation or the pool meanwhile). */
export interface StatusSources {
  readonly registry: AppRegistry;
  readonly health: HealthTracker;
  readonly reconciler: Reconciler;
  readonly damping: FlapDamping;
  readonly maintenance: Maintenance;
  readonly registrations: RegistrationStore;
  readonly generation: Generation;
  readonly config: VipcastConfig;
  readonly startedAt: number;
  readonly speaker: ManagedSpeaker | undefined;
  readonly pool: CheckPool;
  /** agent.check_workers of the pool in use. */
  readonly checkWorkers: number;
  readonly lastReload: ReloadResult | undefined;
}

/** Everything /status shows: apps with health and routes, peers, the last reload. Never a secret. */
export async function daemonStatus(d: StatusSources): Promise<Record<string, unknown>> {
  const apps = d.reconciler.status().map((s) => {
    const spec = d.registry.get(s.app)!;
    const h = d.health.get(s.app);
    return {
      name: s.app, source: s.source, vips: spec.vips.map((v) => v.text), state: h?.state ?? 'unknown', reason: h?.reason ?? '',
      since: h ? new Date(h.since).toISOString() : undefined, monitors: h?.monitors ?? [], announced: s.announced,
      host_held: s.hostHeld, cleanup_at: s.cleanupAt ? new Date(s.cleanupAt).toISOString() : undefined, error: s.error,
      ...(s.held ? { held: { reason: s.held.reason, ...(s.held.drainingUntil ? { draining_until: new Date(s.held.drainingUntil).toISOString() } : {}) } } : {}),
      ...dampingStatus(d.damping.info(s.app)),
      ...(d.registrations.isRestored(s.app) ? { restored: true } : {}),
      ...maintenanceStatus(d.maintenance.view(s.app)),
    };
  });
  const peers = await d.generation.router.peerStates().catch((err: Error) => ({ error: err.message }));
  return {
    version: 1, started_at: new Date(d.startedAt).toISOString(), config_file: d.config.file,
    routing: d.generation.dryRun ? 'dry-run' : d.generation.router.name,
    ...(d.speaker ? { gobgpd: { managed: true, pid: d.speaker.pid ?? null, restarts: d.speaker.restarts, address: d.speaker.address } } : {}),
    maintenance: { host: d.maintenance.host ?? null },
    plugins: pluginList(d.config.registry),
    apps, peers, registrations: d.registrations.status(), reconciler: d.reconciler.stats, check_pool: { check_workers: d.checkWorkers, ...d.pool.stats }, last_reload: d.lastReload,
  };
}

/**
 * Every plugin of the config in force, by kind (monitor, discovery, router) then name: its version, the package it came
 * from (null for a built-in) and, for a package upgraded on disk since it was imported, the version installed now.
 */
export function pluginList(registry: PluginRegistry): PluginInfo[] {
  const installed = new Map(registry.stale().map((s) => [s.pkg, s.installed]));
  const kinds: readonly PluginKind[] = ['monitor', 'discovery', 'router'];
  return kinds.flatMap((kind) => registry.names(kind).flatMap((name): PluginInfo[] => {
    const plugin = kind === 'monitor' ? registry.monitors.get(name) : kind === 'router' ? registry.router(name) : registry.discovery(name);
    if (!plugin) return [];
    const origin = registry.origin(kind, name);
    const pkg = origin === undefined || origin === 'built-in' ? null : origin;
    const newer = pkg === null ? undefined : installed.get(pkg);
    return [{ kind, name, version: plugin.version, package: pkg, source: pkg === null ? 'built-in' : 'package', ...(newer !== undefined ? { installed: newer } : {}) }];
  }));
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
