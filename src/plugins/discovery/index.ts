/**
 * The discovery family: the built-ins (`config`: the config file's apps; `consul`: gocast's Consul tags) and what the
 * daemon needs to run any discovery source by name.
 *
 * The sources of a config, in order: `config` (always), `consul` (when agent.consul_addr and env CONSUL_NODE are set:
 * gocast's keys configure it, not a `discovery:` entry), then each `discovery:` entry (name = its `name`, default its
 * plugin's name). A source's name is the `source` of its apps.
 */
import type { ConsulSettings, DiscoveryPlugin } from '../../plugin-api.js';
import type { DiscoveryEntry, VipcastConfig } from '../../core/config-types.js';
import configDiscovery from './config/index.js';
import consulDiscovery, { consulDiscoverySettings } from './consul/index.js';

/** The built-in discovery descriptors, for src/plugins/builtins.ts. */
export function builtinDiscoveries(): DiscoveryPlugin[] {
  return [configDiscovery as DiscoveryPlugin, consulDiscovery as DiscoveryPlugin];
}

/**
 * Source names a `discovery:` entry may not take: the built-in sources' (`config`, `consul`) and HTTP registrations'
 * (`http`).
 */
export const RESERVED_SOURCE_NAMES: readonly string[] = ['config', 'consul', 'http'];

/**
 * At start, how long paths, addresses and rules of unknown apps are left alone while a discovery source (other than
 * `config`) has not delivered its first set of apps (they may be its apps from before a restart). After that they are
 * withdrawn as strays.
 */
export const FIRST_DELIVERY_HOLD_MS = 30_000;

/** The discovery sources of `config`, and why Consul discovery is off (undefined when it is on). */
export function discoverySources(config: VipcastConfig, consul: ConsulSettings): { sources: DiscoveryEntry[]; consulOff?: string } {
  const sources: DiscoveryEntry[] = [{ name: 'config', plugin: 'config', settings: Object.freeze({ apps: config.apps }), path: 'apps' }];
  const c = consulDiscoverySettings(consul, config.agent.consulQueryIntervalMs);
  if (c.settings) sources.push({ name: 'consul', plugin: 'consul', settings: c.settings, path: 'agent.consul_addr' });
  sources.push(...config.discovery ?? []);
  return c.off ? { sources, consulOff: c.off } : { sources };
}

/**
 * What a reload from `a` to `b` changes in the discovery sources other than `config` (whose apps the app diff
 * reports): `discovery NAME: added|removed|changed`. The registry of `b` decides sameness for `b`'s plugin.
 */
export function discoveryChanges(a: readonly DiscoveryEntry[], b: readonly DiscoveryEntry[], config: VipcastConfig): string[] {
  const before = new Map(a.filter((s) => s.name !== 'config').map((s) => [s.name, s]));
  const after = new Map(b.filter((s) => s.name !== 'config').map((s) => [s.name, s]));
  const out: string[] = [];
  for (const [name, s] of after) {
    const old = before.get(name);
    if (!old) out.push(`discovery ${name}: added`);
    else if (old.plugin !== s.plugin || !(config.registry.discovery(s.plugin)?.sameSettings(old.settings, s.settings) ?? false)) out.push(`discovery ${name}: changed`);
  }
  for (const name of before.keys()) if (!after.has(name)) out.push(`discovery ${name}: removed`);
  return out;
}
