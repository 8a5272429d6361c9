/** routing (the router plugin and the gobgp block), the prefix policy, plugins and discovery sections. */
import type { Prefix } from '../../plugin-api.js';
import type { BgpConfig, DiscoveryEntry, RoutingConfig } from '../config-types.js';
import { RESERVED_SOURCE_NAMES } from '../../plugins/discovery/index.js';
import type { PluginRegistry } from '../plugin-registry.js';
import { DEFAULT_POLICY, type CommunityPattern, type PrefixPolicy } from '../prefix-policy.js';
import { Problems } from './problems.js';
import { describe } from './value-checks.js';
import { mapping } from './schema.js';
import { gobgpSettingsWarnings, parseGobgpSettings } from '../../plugins/routing/gobgp/settings.js';
import { suggest } from './suggest.js';
import type { Get } from './scalars.js';

/** npm package names, scoped or not. */
export const PLUGIN_NAME = /^(@[a-z0-9][a-z0-9._-]*\/)?[a-z0-9][a-z0-9._-]*$/;
/**
 * routing: the router plugin and its settings. gocast's routing.gobgp block is parsed by the gobgp plugin's own parser
 * (src/plugins/routing/gobgp/settings.ts) for every config: its rules live there; unknown keys are reported here as
 * in every section (with suggestions). A router other than gobgp (dry-run) never manages gobgpd.
 */
export function buildRouting(get: Get, raw: Record<string, unknown>, ctx: { env: NodeJS.ProcessEnv; baseDir: string; registry: PluginRegistry; forced: boolean }, problems: Problems): RoutingConfig {
  const plugin = get<RoutingConfig['plugin']>('routing.plugin');
  const block = mapping(raw.gobgp, 'routing.gobgp', 'routing.gobgp', problems) ?? {};
  const settingsCtx = { path: 'routing.gobgp', baseDir: ctx.baseDir, env: ctx.env };
  const unmanaged = plugin !== 'gobgp';
  // A block with problems (the config fails): its defaults stand in so the rest of the config is still checked.
  const gobgp = problems.try('routing.gobgp', () => parseGobgpSettings(block, settingsCtx, { unmanaged })) ?? parseGobgpSettings({}, { ...settingsCtx, env: {} }, { unmanaged: true });
  if (plugin === 'gobgp') problems.warnings.push(...gobgpSettingsWarnings(block, gobgp, 'routing.gobgp'));
  return Object.freeze({ plugin, settings: routerSettings(plugin, raw, gobgp, ctx, problems), gobgp });
}

/**
 * routing.settings parsed by the router plugin routing.plugin names (any router of the registry). The built-in gobgp
 * keeps gocast's routing.gobgp block as its settings: routing.settings beside it is an error (one place per setting).
 * With --dry-run (the plugin forced) routing.settings belongs to the router the file names and is not parsed.
 */
function routerSettings(plugin: string | undefined, raw: Record<string, unknown>, gobgp: RoutingConfig['gobgp'], ctx: { env: NodeJS.ProcessEnv; baseDir: string; registry: PluginRegistry; forced: boolean }, problems: Problems): unknown {
  if (plugin === undefined) return undefined;
  const router = ctx.registry.router(plugin);
  if (!router) {
    // A router a failed package may provide: that package's error (plugins[i]) is the one reported.
    if (!ctx.registry.failedSource('router', plugin)) {
      const close = suggest(plugin, ctx.registry.names('router'));
      problems.add('routing.plugin', `unknown router "${plugin}" (known: ${ctx.registry.names('router').join(', ')}${close.length ? `; did you mean "${close[0]}"?` : ''})`);
    }
    return undefined;
  }
  const given = raw.settings !== undefined && raw.settings !== null;
  if (plugin === 'gobgp') {
    if (given) problems.add('routing.settings', 'not used by routing.plugin gobgp: its settings are the routing.gobgp block (address, managed, binary, socket_dir)');
    return gobgp;
  }
  if (ctx.forced) return router.parseSettings(undefined, { path: 'routing.settings', baseDir: ctx.baseDir, env: ctx.env });
  return problems.try('routing.settings', () => router.parseSettings(given ? raw.settings : {}, { path: 'routing.settings', baseDir: ctx.baseDir, env: ctx.env }));
}

/** The prefix policy of this config: the agent's policy keys plus the BGP peers' addresses and bgp.local_ip. */
export function buildPrefixPolicy(get: Get, bgp: BgpConfig): PrefixPolicy {
  const peers = bgp.peers.map((p) => p.address).filter((a): a is string => a !== undefined).sort();
  const communities = get<CommunityPattern[] | undefined>('agent.allowed_communities');
  return Object.freeze({
    allowedPrefixes: Object.freeze(get<Prefix[] | undefined>('agent.allowed_prefixes') ?? []),
    registrationAllowedPrefixes: Object.freeze(get<Prefix[] | undefined>('agent.registration_allowed_prefixes') ?? []),
    minLengthV4: get<number | undefined>('agent.min_prefix_length_v4') ?? DEFAULT_POLICY.minLengthV4,
    minLengthV6: get<number | undefined>('agent.min_prefix_length_v6') ?? DEFAULT_POLICY.minLengthV6,
    ...(communities === undefined ? {} : { allowedCommunities: Object.freeze(communities) }),
    peers: Object.freeze(peers),
    defaultGatewayPeer: bgp.peers.some((p) => p.address === undefined),
    ...(bgp.localIp === undefined ? {} : { localIp: bgp.localIp }),
  });
}

export function buildPlugins(value: unknown, problems: Problems): readonly string[] {
  if (value === undefined || value === null) return Object.freeze([]);
  if (!Array.isArray(value)) {
    problems.add('plugins', `${describe(value)} is not a list of npm package names`);
    return Object.freeze([]);
  }
  value.forEach((v, i) => {
    if (typeof v !== 'string' || !PLUGIN_NAME.test(v)) problems.add(`plugins[${i}]`, `${describe(v)} is not an npm package name (e.g. vipcast-monitor-redis or @acme/vipcast-monitor-x)`);
  });
  return Object.freeze(value.filter((v): v is string => typeof v === 'string'));
}

/**
 * `discovery: [{ plugin: NAME, name?: SOURCE, ...settings }]`: discovery sources beside the config file's apps and
 * Consul. Settings (the entry without `plugin` and `name`) are parsed by the plugin's parseSettings with path
 * `discovery[i]`. `name` (default: the plugin's name) is the source of its apps: unique, and none of config, consul,
 * http, so one plugin can run twice under two names. The built-ins `config` and `consul` are configured by `apps` and
 * the agent's consul keys, not here.
 */
export function buildDiscovery(value: unknown, registry: PluginRegistry, ctx: { baseDir: string; env: NodeJS.ProcessEnv; problems: Problems }): readonly DiscoveryEntry[] {
  const { problems } = ctx;
  if (value === undefined || value === null) return Object.freeze([]);
  if (!Array.isArray(value)) {
    problems.add('discovery', `${describe(value)} is not a list of discovery sources (write "- plugin: NAME")`);
    return Object.freeze([]);
  }
  const out: DiscoveryEntry[] = [];
  const names = new Map<string, string>();
  value.forEach((raw, i) => {
    const path = `discovery[${i}]`;
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
      problems.add(path, `${describe(raw)} is not a mapping (write "- plugin: NAME")`);
      return;
    }
    const { plugin, name, ...settings } = raw as Record<string, unknown>;
    if (typeof plugin !== 'string' || plugin === '') {
      problems.add(`${path}.plugin`, plugin === undefined ? 'missing (the discovery plugin\'s name)' : `${describe(plugin)} is not a plugin name`);
      return;
    }
    if (plugin === 'config' || plugin === 'consul') {
      problems.add(`${path}.plugin`, `"${plugin}" is built in and configured by ${plugin === 'config' ? 'the apps list' : 'agent.consul_addr and the CONSUL_NODE environment variable'}, not by a discovery entry`);
      return;
    }
    const descriptor = registry.discovery(plugin);
    if (!descriptor) {
      // A package of plugins: that failed has its own error; don't pile up.
      if (!registry.failedSource('discovery', plugin)) {
        const known = registry.names('discovery').filter((n) => n !== 'config' && n !== 'consul');
        problems.add(`${path}.plugin`, `unknown discovery plugin "${plugin}" (known: ${known.length ? known.join(', ') : 'none; add its package to plugins:'})`);
      }
      return;
    }
    let source = plugin;
    if (name !== undefined) {
      if (typeof name !== 'string' || !/^[a-z][a-z0-9_-]{0,31}$/.test(name)) {
        problems.add(`${path}.name`, `${describe(name)} is not a source name ([a-z][a-z0-9_-]{0,31})`);
        return;
      }
      source = name;
    }
    if (RESERVED_SOURCE_NAMES.includes(source)) {
      problems.add(name === undefined ? `${path}.plugin` : `${path}.name`, `"${source}" is the name of a built-in source (${RESERVED_SOURCE_NAMES.join(', ')}); give this entry another name`);
      return;
    }
    const clash = names.get(source);
    if (clash !== undefined) {
      problems.add(name === undefined ? path : `${path}.name`, `${clash} already is the source named "${source}": give each entry of the same plugin its own name`);
      return;
    }
    names.set(source, path);
    const parsed = problems.try(path, () => ({ v: descriptor.parseSettings(settings, { path, baseDir: ctx.baseDir, env: ctx.env }) }));
    if (parsed) out.push(Object.freeze({ name: source, plugin, settings: parsed.v, path }));
  });
  return Object.freeze(out);
}
