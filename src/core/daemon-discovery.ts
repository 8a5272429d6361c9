/**
 * The daemon's discovery sources: starting, keeping, replacing and closing them (start, reload), and their deliveries
 * into the registry. Works on the small DiscoveryHost view of the daemon (no import of daemon.ts: no cycle).
 */
import type { AppSpec, Discovery, DiscoveryPlugin } from '../plugin-api.js';
import type { DiscoveryEntry, VipcastConfig } from './config-types.js';
import type { Logger } from './logger.js';
import type { AppRegistry } from './registry.js';
import type { Reconciler } from './reconciler.js';
import { consulSettings } from './config.js';
import { discoverySources, FIRST_DELIVERY_HOLD_MS } from '../plugins/discovery/index.js';
import { VipcastError } from './errors.js';
import { appFromRegistration } from './registration.js';

/** A discovery source the daemon runs: its entry (name, plugin, settings) and the instance its plugin created. */
export interface RunningDiscovery {
  entry: DiscoveryEntry;
  plugin: DiscoveryPlugin;
  instance: Discovery;
  /** Replaced or removed: its deliveries are ignored from then on. */
  retired: boolean;
}

/** What the discovery code needs of the daemon, read when used (the config in force, the reconciler...). */
export interface DiscoveryHost {
  readonly log: Logger;
  readonly env: NodeJS.ProcessEnv;
  /** The discovery sources running, by name. */
  readonly discoveries: Map<string, RunningDiscovery>;
  readonly registry: AppRegistry;
  readonly reconciler: Reconciler;
  /** The config in force. */
  readonly config: VipcastConfig;
  /** True once the daemon stops. */
  readonly stopping: boolean;
}

/** The discovery sources of `config`: `config`, `consul` when it is on, and the `discovery:` entries. */
export function daemonDiscoverySources(config: VipcastConfig, env: NodeJS.ProcessEnv): readonly DiscoveryEntry[] {
  return discoverySources(config, consulSettings(config.agent, env)).sources;
}

/**
 * Start, keep, replace or close the discovery sources of `config` (start, reload), each created by name from the
 * config's PluginRegistry. Same plugin and sameSettings: the running instance stays (refresh(): it rebuilds its apps
 * with the config in force). Changed: the new instance starts before the old one closes, and its apps replace the
 * old ones by name (unchanged apps are not withdrawn). Removed: closed and its apps removed. `only`: just those
 * sources (the start adds the config apps first). Returns the apps the registry refused, by source (the `config`
 * source's fail a reload). A source that cannot be created or started throws an error naming its key path; the
 * sources done before it stay (a reload's undo configures the previous config again).
 *
 * Every source but `config` that gets a new instance here is held (Reconciler.holdForSource) from before the first
 * change until it delivers: as at start, paths of no known app may be its apps (one moved to it from the config file
 * by this reload), so they are not withdrawn as strays meanwhile. A source that fails, or is removed, is released.
 */
export async function configureDiscovery(d: DiscoveryHost, config: VipcastConfig, only?: (s: DiscoveryEntry) => boolean): Promise<Map<string, string[]>> {
  const refusedBy = new Map<string, string[]>();
  if (d.stopping) return refusedBy;
  const { sources, consulOff } = discoverySources(config, consulSettings(config.agent, d.env));
  const wanted = only ? sources.filter(only) : sources;
  if (!only && consulOff) {
    const addr = config.agent.consulAddr ?? '';
    if (addr) d.log.warn({ consul_addr: addr }, `Consul discovery is off: ${consulOff}`);
    else d.log.info(`Consul discovery is off: ${consulOff}`);
  }
  // Held before the config source replaces the file's apps: an app it drops may be a new source's.
  const held = wanted.filter((e) => e.name !== 'config' && !keeps(d.discoveries.get(e.name), e, config.registry.discovery(e.plugin))).map((e) => e.name);
  for (const name of held) d.reconciler.holdForSource(name, FIRST_DELIVERY_HOLD_MS);
  const started = new Set<string>();
  try {
    await configureEach(d, config, wanted, refusedBy, started);
  } catch (err) {
    // Sources that will not deliver (failed, or not reached): their hold ends now, not after FIRST_DELIVERY_HOLD_MS.
    for (const name of held) if (!started.has(name)) d.reconciler.sourceDelivered(name);
    throw err;
  }
  if (only || d.stopping) return refusedBy;
  const names = new Set(sources.map((s) => s.name));
  for (const [name, rec] of [...d.discoveries]) {
    if (names.has(name)) continue;
    rec.retired = true;
    d.discoveries.delete(name);
    await rec.instance.close();
    deliver(d, name, []);
    d.reconciler.sourceDelivered(name);
    d.log.info({ discovery: name }, `discovery ${name}: removed from the config; its apps are removed`);
  }
  return refusedBy;
}

/** Same plugin (name and version: a reload loads packages afresh, another descriptor object) and sameSettings. */
function keeps(old: RunningDiscovery | undefined, entry: DiscoveryEntry, plugin: DiscoveryPlugin | undefined): boolean {
  return old !== undefined && plugin !== undefined && old.entry.plugin === entry.plugin && old.plugin.version === plugin.version && plugin.sameSettings(old.entry.settings, entry.settings);
}

/** Keep, replace or start each of `wanted` in order; `started` gets the names of the new instances started. */
async function configureEach(d: DiscoveryHost, config: VipcastConfig, wanted: readonly DiscoveryEntry[], refusedBy: Map<string, string[]>, started: Set<string>): Promise<void> {
  for (const entry of wanted) {
    const plugin = config.registry.discovery(entry.plugin);
    if (!plugin) throw new VipcastError('VIPCAST_ERR_CONFIG', `${entry.path}: unknown discovery plugin "${entry.plugin}"`);
    const old = d.discoveries.get(entry.name);
    if (old && keeps(old, entry, plugin)) {
      old.plugin = plugin;
      old.entry = entry;
      old.instance.refresh?.();
      continue;
    }
    if (old) old.retired = true;
    let rec: RunningDiscovery | undefined;
    try {
      const log = d.log.child({ component: 'discovery', discovery: entry.name });
      const instance = await plugin.create({ log, settings: entry.settings, services: { appFrom: (params, path) => appFrom(d, entry.name, params, path) } });
      rec = { entry, plugin, instance, retired: false };
      const self = rec;
      await instance.start((apps) => {
        if (self.retired || d.stopping) return;
        refusedBy.set(entry.name, deliver(d, entry.name, apps));
        d.reconciler.sourceDelivered(entry.name);
      });
    } catch (err) {
      if (old) old.retired = false;
      if (rec) await rec.instance.close().catch(() => undefined);
      throw new VipcastError('VIPCAST_ERR_CONFIG', `${entry.path}: discovery "${entry.name}" (plugin ${entry.plugin}) could not start: ${(err as Error).message}`, { cause: err });
    }
    started.add(entry.name);
    if (d.stopping) {
      rec.retired = true;
      await rec.instance.close();
      return;
    }
    d.discoveries.set(entry.name, rec);
    if (old) {
      // The config source is replaced on every reload (its settings are the file's apps); only others are news.
      if (entry.name !== 'config') d.log.info({ discovery: entry.name, plugin: entry.plugin }, `discovery ${entry.name}: settings changed; the new instance started, closing the old one`);
      await old.instance.close();
    }
  }
}

/** A discovery source's whole set of apps: they replace the source's apps in the registry. Returns the refused. */
function deliver(d: DiscoveryHost, source: string, apps: readonly AppSpec[]): string[] {
  const refused = d.registry.replaceSource(source, apps);
  if (source === 'config') {
    for (const r of refused) d.log.error({ app: r }, 'config app refused');
    return refused;
  }
  const label = source === 'consul' ? 'Consul' : `discovery ${source}:`;
  for (const r of refused) d.log.error({ app: r.slice(0, r.indexOf(':')), discovery: source }, `${label} app refused: ${r}`);
  d.log.info({ apps: apps.map((a) => a.name), discovery: source }, source === 'consul' ? 'Consul apps updated' : `discovery ${source}: apps updated`);
  return refused;
}

/** DiscoveryServices.appFrom: gocast's parameters under the config in force, `source` = the discovery's name. */
function appFrom(d: DiscoveryHost, source: string, params: Parameters<typeof appFromRegistration>[0], path: string): AppSpec {
  const config = d.config;
  try {
    return appFromRegistration(params, source, config.agent, config.monitors, consulSettings(config.agent, d.env));
  } catch (err) {
    if (!path || !(err instanceof VipcastError)) throw err;
    const details = err.details.length > 0 ? err.details.map((d) => `${path}.${d}`) : [`${path}: ${err.message}`];
    throw new VipcastError(err.code, details.join('; '), { details });
  }
}
