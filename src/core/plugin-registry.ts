/**
 * Every plugin vipcast knows, by family and name: the built-ins and those loaded from the config's `plugins:` list.
 * The daemon asks this registry for a router or a discovery source by name and knows no concrete plugin class.
 */
import type { DiscoveryPlugin, MonitorPlugin, PluginKind, RouterPlugin, VipcastPlugin } from '../plugin-api.js';
import { MonitorRegistry } from './monitor-registry.js';
import { valueError } from './errors.js';

/**
 * A package of `plugins:` that failed to load. What it would have provided is known only when its descriptor could be
 * read (a version mismatch, a member missing): then `kind` and `name` are set.
 */
export interface PluginFailure {
  /** Key path of the package in the config (`plugins[2]`). */
  readonly path: string;
  /** The package name. */
  readonly pkg: string;
  readonly kind?: PluginKind;
  readonly name?: string;
}

export class PluginRegistry {
  /** Monitors keep their own registry: it parses monitor specs (invariant 4). */
  readonly monitors: MonitorRegistry;
  private readonly routers = new Map<string, RouterPlugin>();
  private readonly discoveries = new Map<string, DiscoveryPlugin>();
  /** Where each plugin came from ('built-in' or the package name), for errors, /status and the logs. */
  private readonly origins = new Map<string, string>();
  private readonly failed: PluginFailure[] = [];
  private readonly staleList: StalePlugin[] = [];

  /**
   * `monitors`: the monitor registry (default: the built-in monitors); `builtins` (e.g. builtinPlugins() of
   * src/plugins/builtins.ts), `routers` and `discoveries` join with origin 'built-in'.
   */
  constructor(opts: { monitors?: MonitorRegistry; builtins?: ReadonlyArray<RouterPlugin | DiscoveryPlugin>; routers?: readonly RouterPlugin[]; discoveries?: readonly DiscoveryPlugin[] } = {}) {
    this.monitors = opts.monitors ?? new MonitorRegistry();
    for (const m of this.monitors.names()) this.origins.set(`monitor:${m}`, 'built-in');
    for (const p of [...opts.builtins ?? [], ...opts.routers ?? [], ...opts.discoveries ?? []]) this.add(p, 'built-in', 'plugins');
  }

  /** Add a descriptor to its family; a second plugin of the same family and name is an error naming `path`. */
  add(plugin: VipcastPlugin, origin: string, path: string): void {
    const key = `${plugin.kind}:${plugin.name}`;
    const clash = this.origins.get(key);
    if (clash !== undefined) {
      throw valueError(path, `${origin === 'built-in' ? 'a built-in' : `plugin "${origin}"`} is a ${plugin.kind} plugin named "${plugin.name}", ` +
        `a name ${clash === 'built-in' ? `the built-in ${plugin.kind} already has` : `plugin "${clash}" already took`}: two ${plugin.kind} plugins can't share a name`);
    }
    if (plugin.kind === 'monitor') this.monitors.add(plugin as MonitorPlugin, origin === 'built-in' ? undefined : origin);
    else if (plugin.kind === 'router') this.routers.set(plugin.name, plugin);
    else this.discoveries.set(plugin.name, plugin);
    this.origins.set(key, origin);
  }

  router(name: string): RouterPlugin | undefined {
    return this.routers.get(name);
  }

  discovery(name: string): DiscoveryPlugin | undefined {
    return this.discoveries.get(name);
  }

  /** Names of a family, sorted (for "unknown router X (known: ...)"). */
  names(kind: PluginKind): string[] {
    if (kind === 'monitor') return this.monitors.names();
    return [...(kind === 'router' ? this.routers : this.discoveries).keys()].sort();
  }

  /** Where a plugin came from: 'built-in' or its package name; undefined when unknown. */
  origin(kind: PluginKind, name: string): string | undefined {
    return this.origins.get(`${kind}:${name}`);
  }

  /** Record a package of `plugins:` that failed to load (its error is reported on its own, at `failure.path`). */
  addFailure(failure: PluginFailure): void {
    this.failed.push(Object.freeze({ ...failure }));
  }

  /**
   * Record a package whose installed version changed on disk since this process imported it: Node keeps the first
   * import, so the version in memory goes on running until a restart (reload reports it in `restartNeeded`).
   */
  addStale(stale: StalePlugin): void {
    this.staleList.push(Object.freeze({ ...stale }));
  }

  /** Packages running an older version than the one installed now, in config order. */
  stale(): readonly StalePlugin[] {
    return this.staleList;
  }

  /** The packages of `plugins:` that failed to load, in config order. */
  failures(): readonly PluginFailure[] {
    return this.failed;
  }

  /**
   * For an unknown name of a family: the failed package it may come from, so a config error about the name can say
   * so (or be left out) instead of piling up on the package's own error. A failure whose descriptor was read matches
   * only its kind and name; one that never got that far (not installed, failed to load) may provide anything.
   */
  failedSource(kind: PluginKind, name: string): PluginFailure | undefined {
    return this.failed.find((f) => f.kind === kind && f.name === name) ?? this.failed.find((f) => f.kind === undefined);
  }
}

/** A `plugins:` package whose installed version is not the one running (see PluginRegistry.addStale). */
export interface StalePlugin {
  /** Key path of the package in the config (`plugins[1]`). */
  readonly path: string;
  readonly pkg: string;
  /** The version imported by this process, which keeps running. */
  readonly running: string;
  /** The version installed on disk now. */
  readonly installed: string;
}
