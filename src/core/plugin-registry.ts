/**
 * Every plugin vipcast knows, by family and name: the built-ins and those loaded from the config's `plugins:` list.
 * The daemon asks this registry for a router or a discovery source by name and knows no concrete plugin class.
 */
import type { DiscoveryPlugin, MonitorPlugin, PluginKind, RouterPlugin, VipcastPlugin } from '../plugin-api.js';
import { MonitorRegistry } from './monitor-registry.js';
import { valueError } from './errors.js';

export class PluginRegistry {
  /** Monitors keep their own registry: it parses monitor specs (invariant 4). */
  readonly monitors: MonitorRegistry;
  private readonly routers = new Map<string, RouterPlugin>();
  private readonly discoveries = new Map<string, DiscoveryPlugin>();
  /** Where each plugin came from ('built-in' or the package name), for errors, /status and the logs. */
  private readonly origins = new Map<string, string>();

  constructor(opts: { monitors?: MonitorRegistry; routers?: readonly RouterPlugin[]; discoveries?: readonly DiscoveryPlugin[] } = {}) {
    this.monitors = opts.monitors ?? new MonitorRegistry();
    for (const m of this.monitors.names()) this.origins.set(`monitor:${m}`, 'built-in');
    for (const r of opts.routers ?? []) this.add(r, 'built-in', 'plugins');
    for (const d of opts.discoveries ?? []) this.add(d, 'built-in', 'plugins');
  }

  /** Add a descriptor to its family; a second plugin of the same family and name is an error naming `path`. */
  add(plugin: VipcastPlugin, origin: string, path: string): void {
    const key = `${plugin.kind}:${plugin.name}`;
    const clash = this.origins.get(key);
    if (clash !== undefined) {
      throw valueError(path, `${origin} is a ${plugin.kind} plugin named "${plugin.name}", a name ${clash === 'built-in' ? 'a built-in' : `${clash}`} already has`);
    }
    if (plugin.kind === 'monitor') this.monitors.add(plugin as MonitorPlugin);
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
}
