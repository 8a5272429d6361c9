/** routing (the router plugin and the gobgp block), the prefix policy, plugins and discovery sections. */
import type { Prefix } from '../../plugin-api.js';
import type { BgpConfig, DiscoveryEntry, RoutingConfig } from '../config-types.js';
import { RESERVED_SOURCE_NAMES } from '../../plugins/discovery/index.js';
import type { PluginRegistry } from '../plugin-registry.js';
import { DEFAULT_POLICY, type CommunityPattern, type PrefixPolicy } from '../prefix-policy.js';
import { Problems } from './problems.js';
import { MANAGED_SOCKET_NAME, describe } from './value-checks.js';
import { suggest } from './suggest.js';
import type { Get } from './scalars.js';

/** npm package names, scoped or not. */
export const PLUGIN_NAME = /^(@[a-z0-9][a-z0-9._-]*\/)?[a-z0-9][a-z0-9._-]*$/;
/**
 * routing: a managed gobgpd (vipcast starts it) unless a gobgpd of the operator's is named by routing.gobgp.address
 * or $VIPCAST_GOBGP_ADDRESS; managed uses its own socket, so both together are an error. dry-run: never managed.
 */
export function buildRouting(get: Get, raw: Record<string, unknown>, ctx: { env: NodeJS.ProcessEnv; baseDir: string; registry: PluginRegistry; forced: boolean }, problems: Problems): RoutingConfig {
  const { env } = ctx;
  const plugin = get<RoutingConfig['plugin']>('routing.plugin');
  const gobgp = raw.gobgp !== null && typeof raw.gobgp === 'object' && !Array.isArray(raw.gobgp) ? (raw.gobgp as Record<string, unknown>) : {};
  const fromEnv = Boolean(env.VIPCAST_GOBGP_ADDRESS);
  const addressGiven = (gobgp.address !== undefined && gobgp.address !== null) || fromEnv;
  const explicit = get<boolean | undefined>('routing.gobgp.managed');
  if (explicit === true && addressGiven) {
    const where = gobgp.address !== undefined && gobgp.address !== null ? 'routing.gobgp.address' : 'routing.gobgp.address (from $VIPCAST_GOBGP_ADDRESS)';
    problems.add('routing.gobgp.managed', `true together with ${where}: a managed gobgpd serves its API on its own socket in routing.gobgp.socket_dir; remove one of them`);
  }
  const managed = plugin === 'gobgp' && (explicit ?? !addressGiven);
  const socketDir = get<string>('routing.gobgp.socket_dir');
  if (plugin === 'gobgp' && !managed) {
    for (const key of ['binary', 'socket_dir']) {
      if (gobgp[key] !== undefined && gobgp[key] !== null) problems.warnings.push(`routing.gobgp.${key}: ignored: vipcast does not manage gobgpd (${explicit === false ? 'routing.gobgp.managed: false' : 'routing.gobgp.address is set'})`);
    }
  }
  const gobgpSettings = Object.freeze({
    address: managed ? `unix://${socketDir}/${MANAGED_SOCKET_NAME}` : get<string>('routing.gobgp.address'),
    managed,
    binary: get<string>('routing.gobgp.binary'),
    socketDir,
  });
  return Object.freeze({ plugin, settings: routerSettings(plugin, raw, gobgpSettings, ctx, problems), gobgp: gobgpSettings });
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
