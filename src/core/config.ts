/**
 * The config file: read it, parse the YAML, validate every key and return the typed `VipcastConfig`, or throw one
 * `VIPCAST_ERR_CONFIG` error that lists every problem, each starting with its key path (invariant 4; reload relies on
 * it to keep the old config on any error, invariant 7). Reference: docs/CONFIG.md.
 *
 * convict holds the schema of the scalar sections (agent, bgp scalars, routing): defaults, docs, env overrides and the
 * per-key checks. The lists (apps, bgp.peers) are checked by hand with the value parsers: convict handles arrays of
 * objects poorly. Unknown keys are found by hand everywhere, before convict sees anything, so each gets a suggestion.
 */
import { readFile } from 'node:fs/promises';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { AppSpec, Community, ConsulSettings, MonitorSpec, NatRule, PeerSpec, Prefix } from '../plugin-api.js';
import type { AgentConfig, BgpConfig, DiscoveryEntry, FlapDampingConfig, RoutingConfig, VipcastConfig } from './config-types.js';
import { RESERVED_SOURCE_NAMES } from '../plugins/discovery/index.js';
import { VipcastError, valueError } from './errors.js';
import { MonitorRegistry } from './monitor-registry.js';
import { PluginLoadError, loadPlugin, pluginVersionChange } from './plugin-loader.js';
import { PluginRegistry } from './plugin-registry.js';
import { builtinPlugins } from '../plugins/builtins.js';
import {
  DEFAULT_MAINTENANCE_STATE_FILE, DEFAULT_REGISTRATIONS_FILE, DEFAULT_STATE_FILE, DEFAULT_TIMEOUT_CAP_MS, DRY_RUN_LOCAL_AS, MAX_MD5_LENGTH, Problems, address, boolean, communities, describe, duration, formatMs, integer,
  MANAGED_SOCKET_NAME, loadScalars, mapping, suggest,
} from './config-schema.js';

export { configKeys, suggest } from './config-schema.js';
import { parseAppName, parseAsn, parseNat, parsePrefix } from './values.js';
import { DEFAULT_POLICY, checkVip, vipRefusal, type CommunityPattern, type HostAddresses, type PrefixPolicy } from './prefix-policy.js';
import { readHostAddresses } from './host-addresses.js';

export interface ConfigOptions {
  /** Monitor plugins that `apps[].monitors` may name (default: the built-in ones). Ignored when `registry` is given. */
  readonly monitors?: MonitorRegistry;
  /** Every plugin the config may name (default: the built-ins; loadConfig adds the packages of `plugins:`). */
  readonly registry?: PluginRegistry;
  /** Environment for CONSUL_TOKEN, VIPCAST_GOBGP_ADDRESS and `md5_env_var` (default: process.env). */
  readonly env?: NodeJS.ProcessEnv;
  /** Force `routing.plugin` (the CLI's --dry-run) before the checks that depend on it run. */
  readonly routingPlugin?: RoutingConfig['plugin'];
  /** The host's own addresses for the prefix policy (default: read from this host's interfaces). */
  readonly hostAddresses?: HostAddresses;
}

// ---------------------------------------------------------------------------------------------------------------------
// Lists checked by hand

interface Parsed<T> {
  readonly value: T;
  readonly path: string;
}

/** Parse one peer; its address is returned even when other keys are bad, so duplicates are still found. */
function parsePeer(raw: Record<string, unknown>, path: string, env: NodeJS.ProcessEnv, problems: Problems): { peer?: PeerSpec; address?: string } {
  const start = problems.list.length;
  const addr = raw.peer_ip === undefined ? undefined : problems.try(`${path}.peer_ip`, () => address(raw.peer_ip, `${path}.peer_ip`));
  const asn = peerAsn(raw, path, problems, `${path}: missing peer_as (every peer needs its AS; gocast also wrote remote_as)`);
  const multiHop = raw.multi_hop === undefined ? undefined : problems.try(`${path}.multi_hop`, () => boolean(raw.multi_hop, `${path}.multi_hop`));
  const comms = raw.communities === undefined ? [] : problems.try(`${path}.communities`, () => communities(raw.communities, `${path}.communities`));
  let md5Password: string | undefined;
  let md5EnvVar: string | undefined;
  if (raw.md5_password !== undefined && raw.md5_env_var !== undefined) {
    problems.add(path, 'set md5_password or md5_env_var, not both');
  } else if (raw.md5_password !== undefined) {
    md5Password = problems.try(`${path}.md5_password`, () => md5(raw.md5_password, `${path}.md5_password`, ''));
  } else if (raw.md5_env_var !== undefined) {
    const name = raw.md5_env_var;
    if (typeof name !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      problems.add(`${path}.md5_env_var`, `${describe(name)} is not an environment variable name`);
    } else if (env[name] === undefined || env[name] === '') {
      problems.add(`${path}.md5_env_var`, `environment variable ${name} is ${env[name] === undefined ? 'not set' : 'empty'}`);
    } else {
      md5EnvVar = name;
      md5Password = problems.try(`${path}.md5_env_var`, () => md5(env[name], `${path}.md5_env_var`, ` (the value of ${name})`));
    }
  }
  if (problems.list.length > start || asn === undefined) return { address: addr };
  const peer: PeerSpec = Object.freeze({
    ...(addr === undefined ? {} : { address: addr }),
    asn,
    ...(multiHop === undefined ? {} : { multiHop }),
    ...(md5Password === undefined ? {} : { md5Password }),
    ...(md5EnvVar === undefined ? {} : { md5EnvVar }),
    communities: Object.freeze(comms ?? []),
  });
  return { peer, address: addr };
}

function md5(value: unknown, path: string, what: string): string {
  // The value is a secret: no message below may include it.
  if (typeof value !== 'string') throw valueError(path, `is not a string${what} (quote it)`);
  if (value === '') throw valueError(path, `is empty${what}`);
  if (value.length > MAX_MD5_LENGTH) throw valueError(path, `is longer than ${MAX_MD5_LENGTH} characters${what} (the kernel's TCP MD5 limit)`);
  if (/[\u0000-\u001f\u007f]/.test(value)) throw valueError(path, `contains control characters${what}`);
  return value;
}

/** peer_as, or gocast's alias remote_as; both set and different is an error. */
function peerAsn(raw: Record<string, unknown>, path: string, problems: Problems, missing: string | undefined): number | undefined {
  const a = raw.peer_as === undefined ? undefined : problems.try(`${path}.peer_as`, () => parseAsn(raw.peer_as, `${path}.peer_as`));
  const b = raw.remote_as === undefined ? undefined : problems.try(`${path}.remote_as`, () => parseAsn(raw.remote_as, `${path}.remote_as`));
  if (a !== undefined && b !== undefined && a !== b) {
    problems.add(`${path}.remote_as`, `${b} differs from ${path}.peer_as ${a} (remote_as is an alias of peer_as: set one)`);
    return undefined;
  }
  if (a === undefined && b === undefined && raw.peer_as === undefined && raw.remote_as === undefined && missing) problems.list.push(missing);
  return a ?? b;
}

interface AppDefaults {
  readonly rise: number;
  readonly fall: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
}

interface AppContext {
  readonly defaults: AppDefaults;
  readonly monitors: MonitorRegistry;
  /** Packages of `plugins:` that failed to load: a monitor type they may provide is not reported unknown. */
  readonly registry: PluginRegistry;
  readonly baseDir: string;
  readonly problems: Problems;
  /** For the `consul` monitor. */
  readonly consul: ConsulSettings;
  /** Every VIP passes it (invariant 9), with the host's addresses read once per load. */
  readonly policy: PrefixPolicy;
  readonly host: HostAddresses;
}

/** Parse one app. `vips` is returned even when other keys are bad, so VIP clashes between apps are still found. */
function parseApp(raw: Record<string, unknown>, path: string, ctx: AppContext): { app?: AppSpec; vips: Parsed<Prefix>[] } {
  const { problems, defaults } = ctx;
  const start = problems.list.length;
  let name: string | undefined;
  if (raw.name === undefined) problems.add(path, 'missing name');
  else name = problems.try(`${path}.name`, () => parseAppName(raw.name, `${path}.name`));

  const vips: Parsed<Prefix>[] = [];
  if (raw.vip === undefined) problems.add(path, 'missing vip (a prefix such as 198.18.0.10/32, or a list of them)');
  else if (Array.isArray(raw.vip) && raw.vip.length === 0) problems.add(`${path}.vip`, 'is an empty list');
  else {
    const items = Array.isArray(raw.vip) ? raw.vip.map((v, i) => [v, `${path}.vip[${i}]`] as const) : [[raw.vip, `${path}.vip`] as const];
    for (const [v, p] of items) {
      const prefix = problems.try(p, () => parsePrefix(v, p));
      if (!prefix) continue;
      const refused = checkVip(prefix, ctx.policy, { source: 'config', host: ctx.host });
      if (refused) problems.list.push(vipRefusal(p, prefix, refused));
      else if (vips.some((x) => x.value.text === prefix.text)) problems.add(p, `${prefix.text} is listed twice`);
      else vips.push({ value: prefix, path: p });
    }
  }

  let comms: Community[] | undefined = [];
  const vipConfig = mapping(raw.vip_config, `${path}.vip_config`, 'apps[].vip_config', problems);
  if (vipConfig?.bgp_communities !== undefined) {
    const p = `${path}.vip_config.bgp_communities`;
    comms = problems.try(p, () => communities(vipConfig.bgp_communities, p));
  }

  const monitors: MonitorSpec[] = [];
  if (raw.monitors !== undefined) {
    if (!Array.isArray(raw.monitors)) problems.add(`${path}.monitors`, `${describe(raw.monitors)} is not a list (write ["port:tcp:8080"])`);
    else {
      raw.monitors.forEach((m, j) => {
        const p = `${path}.monitors[${j}]`;
        // A type that may come from a package that failed to load: that package's error (plugins[i]) is the one the
        // user sees for it, not one more per app.
        if (unknownFromFailedPlugin(m, ctx)) return;
        const spec = problems.try(p, () => ctx.monitors.parse(m, { path: p, baseDir: ctx.baseDir, trusted: true, ...(name !== undefined ? { app: name } : {}), consul: ctx.consul }));
        if (spec && monitors.some((x) => x.text === spec.text)) problems.add(p, `"${spec.text}" is listed twice`);
        else if (spec) monitors.push(spec);
      });
    }
  }

  const nats: NatRule[] = [];
  if (raw.nats !== undefined) {
    if (!Array.isArray(raw.nats)) problems.add(`${path}.nats`, `${describe(raw.nats)} is not a list (write ["tcp:80:8080"])`);
    else {
      raw.nats.forEach((n, j) => {
        const p = `${path}.nats[${j}]`;
        const rule = problems.try(p, () => parseNat(n, p));
        const clash = rule && nats.find((x) => x.protocol === rule.protocol && x.listenPort === rule.listenPort);
        if (clash) problems.add(p, `${rule.protocol} port ${rule.listenPort} is already forwarded by "${clash.text}"`);
        else if (rule) nats.push(rule);
      });
    }
  }

  const rise = raw.rise === undefined ? defaults.rise : problems.try(`${path}.rise`, () => integer(1, 100)(raw.rise, `${path}.rise`));
  const fall = raw.fall === undefined ? defaults.fall : problems.try(`${path}.fall`, () => integer(1, 100)(raw.fall, `${path}.fall`));
  const intervalMs =
    raw.monitor_interval === undefined ? defaults.intervalMs : problems.try(`${path}.monitor_interval`, () => duration(50)(raw.monitor_interval, `${path}.monitor_interval`));
  let timeoutMs: number | undefined;
  if (raw.check_timeout !== undefined) {
    timeoutMs = problems.try(`${path}.check_timeout`, () => duration(10)(raw.check_timeout, `${path}.check_timeout`));
    if (timeoutMs !== undefined && intervalMs !== undefined && timeoutMs > intervalMs) {
      problems.add(`${path}.check_timeout`, `${formatMs(timeoutMs)} is longer than the app's monitor_interval ${formatMs(intervalMs)}`);
    }
  } else if (intervalMs !== undefined) {
    // Inherited timeouts shrink to a shorter per-app interval rather than fail.
    timeoutMs = Math.min(defaults.timeoutMs, intervalMs);
  }

  if (problems.list.length > start) return { vips };
  const app: AppSpec = Object.freeze({
    name: name!,
    source: 'config',
    vips: Object.freeze(vips.map((v) => v.value)),
    communities: Object.freeze(comms!),
    monitors: Object.freeze(monitors),
    nats: Object.freeze(nats),
    rise: rise!,
    fall: fall!,
    intervalMs: intervalMs!,
    timeoutMs: timeoutMs!,
  });
  return { app, vips };
}

// ---------------------------------------------------------------------------------------------------------------------
// Entry points

/** Read and validate a config file. Throws VIPCAST_ERR_CONFIG_READ (unreadable, bad YAML) or VIPCAST_ERR_CONFIG. */
export async function loadConfig(file: string, opts: ConfigOptions = {}): Promise<VipcastConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new VipcastError('VIPCAST_ERR_CONFIG_READ', `cannot read config file ${file}${code ? ` (${code})` : ''}: ${(err as Error).message}`, { cause: err });
  }
  const root = parseYaml(text, file);
  // Plugin packages of every family load before anything is checked, so their monitor types, routers and discovery
  // sources are known. A fresh registry per load: a reload sees plugins added to or removed from the file.
  const names = pluginNames(root);
  const registry = opts.registry ?? newRegistry(opts);
  if (names.length === 0) return buildConfig(root, file, { ...opts, registry });
  const baseDir = file ? path.dirname(path.resolve(file)) : process.cwd();
  const details: string[] = [];
  for (const [i, name] of names) {
    const at = `plugins[${i}]`;
    try {
      registry.add(await loadPlugin(name, baseDir, { path: at }), name, at);
      const changed = pluginVersionChange(name, baseDir);
      if (changed) registry.addStale({ path: at, pkg: name, ...changed });
    } catch (err) {
      // Every loader error starts with its key path and names the package; anything else (a name clash) gets both.
      details.push(err instanceof PluginLoadError ? err.message : `${(err as Error).message.startsWith(at) ? '' : `${at}: `}${(err as Error).message}`);
      registry.addFailure({ path: at, pkg: name, ...(err instanceof PluginLoadError && err.kind ? { kind: err.kind } : {}), ...(err instanceof PluginLoadError && err.pluginName ? { name: err.pluginName } : {}) });
    }
  }
  let config: VipcastConfig | undefined;
  try {
    config = buildConfig(root, file, { ...opts, registry });
  } catch (err) {
    if (!(err instanceof VipcastError && err.code === 'VIPCAST_ERR_CONFIG')) throw err;
    details.push(...err.details);
  }
  if (details.length > 0 || !config) {
    throw new VipcastError('VIPCAST_ERR_CONFIG', `${details.length} problem${details.length === 1 ? '' : 's'} in ${file || '(config)'}`, { details });
  }
  return config;
}

/** The `plugins:` list as [index, package name]; shape errors are reported by buildConfig. */
function pluginNames(root: unknown): Array<[number, string]> {
  if (!root || typeof root !== 'object') return [];
  const list = (root as Record<string, unknown>).plugins;
  if (!Array.isArray(list)) return [];
  return list.flatMap((n, i): Array<[number, string]> => (typeof n === 'string' && PLUGIN_NAME.test(n) ? [[i, n]] : []));
}

/** A registry of the built-in plugins of every family (the monitors of `opts.monitors` when given). */
function newRegistry(opts: ConfigOptions): PluginRegistry {
  return new PluginRegistry({ builtins: builtinPlugins(), ...(opts.monitors ? { monitors: opts.monitors } : {}) });
}

/** True for a monitor whose type is unknown and may come from a package of `plugins:` that failed to load. */
function unknownFromFailedPlugin(input: unknown, ctx: AppContext): boolean {
  if (ctx.registry.failures().length === 0) return false;
  const type = typeof input === 'string' ? input.split(':', 1)[0]!.trim()
    : input && typeof input === 'object' && typeof (input as Record<string, unknown>).type === 'string' ? (input as Record<string, string>).type : undefined;
  return type !== undefined && !ctx.monitors.names().includes(type) && ctx.registry.failedSource('monitor', type) !== undefined;
}

/** npm package names, scoped or not. */
const PLUGIN_NAME = /^(@[a-z0-9][a-z0-9._-]*\/)?[a-z0-9][a-z0-9._-]*$/;

/** Validate config text; `file` names it in messages and anchors relative paths ('' = the current folder). */
export function parseConfigText(text: string, file: string, opts: ConfigOptions = {}): VipcastConfig {
  const root = parseYaml(text, file);
  return buildConfig(root, file, opts);
}

function parseYaml(text: string, file: string): unknown {
  const lineCounter = new YAML.LineCounter();
  // prettyErrors off: its snippet of the offending line could show a secret.
  const doc = YAML.parseDocument(text, { lineCounter, prettyErrors: false, merge: true, uniqueKeys: true, strict: true });
  const bad = [...doc.errors, ...doc.warnings];
  if (bad.length) {
    const details = bad.map((e) => {
      const at = lineCounter.linePos(e.pos[0]);
      return `line ${at.line}, column ${at.col}: ${e.message}`;
    });
    const more = details.length > 1 ? ` (and ${details.length - 1} more)` : '';
    throw new VipcastError('VIPCAST_ERR_CONFIG_READ', `${file || '(config)'} is not valid YAML: ${details[0]}${more}`, { details });
  }
  try {
    return doc.toJS({ maxAliasCount: 1000 });
  } catch (err) {
    throw new VipcastError('VIPCAST_ERR_CONFIG_READ', `${file || '(config)'} is not valid YAML: ${(err as Error).message}`, { cause: err });
  }
}

type Get = <T>(key: string) => T;

/** The agent's Consul settings: consul_addr / consul_token (CONSUL_TOKEN already applied) and CONSUL_NODE / CONSUL_STALE. */
export function consulSettings(agent: Pick<AgentConfig, 'consulAddr' | 'consulToken'>, env: NodeJS.ProcessEnv): ConsulSettings {
  return Object.freeze({
    addr: agent.consulAddr ?? '',
    token: agent.consulToken ?? '',
    node: env.CONSUL_NODE ?? '',
    stale: (env.CONSUL_STALE ?? '').toLowerCase() === 'true',
  });
}

function buildConfig(root: unknown, file: string, opts: ConfigOptions): VipcastConfig {
  const problems = new Problems();
  const env = opts.env ?? process.env;
  const absFile = file ? path.resolve(file) : '';
  const baseDir = absFile ? path.dirname(absFile) : process.cwd();

  const top = mapping(root, '', '', problems) ?? {};
  const sections: Record<string, Record<string, unknown>> = {};
  for (const name of ['agent', 'bgp', 'routing']) sections[name] = mapping(top[name], name, name, problems) ?? {};
  if (opts.routingPlugin) sections.routing = { ...sections.routing, plugin: opts.routingPlugin };
  const { values } = loadScalars(sections, env, problems);
  const get: Get = <T>(key: string) => values.get(key) as T;

  const agent = buildAgent(get, baseDir, problems, env);
  const registry = opts.registry ?? newRegistry(opts);
  const routing = buildRouting(get, sections.routing!, { env, baseDir, registry, forced: opts.routingPlugin !== undefined }, problems);
  const bgp = buildBgp(get, sections.bgp!, routing.plugin, env, problems);
  const prefixPolicy = buildPrefixPolicy(get, bgp);
  const monitors = registry.monitors;
  const plugins = buildPlugins(top.plugins, problems);
  const apps = buildApps(top.apps, agent, { monitors, registry, baseDir, problems, consul: consulSettings(agent, env), policy: prefixPolicy, host: opts.hostAddresses ?? readHostAddresses() });
  const discovery = buildDiscovery(top.discovery, registry, { baseDir, env, problems });

  if (problems.list.length) {
    const n = problems.list.length;
    throw new VipcastError('VIPCAST_ERR_CONFIG', `${n} problem${n === 1 ? '' : 's'} in ${file || '(config)'}`, { details: problems.list });
  }
  return Object.freeze({ file: absFile, agent: Object.freeze({ ...agent, prefixPolicy }), bgp, routing, apps, discovery, plugins, registry, monitors, warnings: Object.freeze(problems.warnings) });
}

/**
 * routing: a managed gobgpd (vipcast starts it) unless a gobgpd of the operator's is named by routing.gobgp.address
 * or $VIPCAST_GOBGP_ADDRESS; managed uses its own socket, so both together are an error. dry-run: never managed.
 */
function buildRouting(get: Get, raw: Record<string, unknown>, ctx: { env: NodeJS.ProcessEnv; baseDir: string; registry: PluginRegistry; forced: boolean }, problems: Problems): RoutingConfig {
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
function buildPrefixPolicy(get: Get, bgp: BgpConfig): PrefixPolicy {
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

function buildPlugins(value: unknown, problems: Problems): readonly string[] {
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
function buildDiscovery(value: unknown, registry: PluginRegistry, ctx: { baseDir: string; env: NodeJS.ProcessEnv; problems: Problems }): readonly DiscoveryEntry[] {
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

function buildAgent(get: Get, baseDir: string, problems: Problems, env: NodeJS.ProcessEnv): AgentConfig {
  const monitorIntervalMs = get<number>('agent.monitor_interval');
  const explicitTimeout = get<number | undefined>('agent.check_timeout');
  if (explicitTimeout !== undefined && monitorIntervalMs !== undefined && explicitTimeout > monitorIntervalMs) {
    problems.add('agent.check_timeout', `${formatMs(explicitTimeout)} is longer than agent.monitor_interval ${formatMs(monitorIntervalMs)}`);
  }
  const consulAddrText = get<string | undefined>('agent.consul_addr') ?? '';
  let consulAddr = consulAddrText;
  if (consulAddr && !consulAddr.endsWith('/v1')) {
    consulAddr += '/v1';
    problems.warnings.push(`agent.consul_addr: "${consulAddrText}" has no /v1; using "${consulAddr}"`);
  }
  const pid = get<string | undefined>('agent.pid_file') ?? '';
  const state = get<string | undefined>('agent.state_file') ?? '';
  // Unset: the persistent default, except for a dry run, which must not share (and overwrite) the file of a real
  // vipcast on the same host; an explicit path is used in a dry run too.
  const registrations = get<string | undefined>('agent.registrations_file');
  // As registrations_file: a dry run never shares the default with a real vipcast.
  const maintenanceState = get<string | undefined>('agent.maintenance_state_file');
  const maintenanceFile = get<string | undefined>('agent.maintenance_file') ?? '';
  const maintenanceDir = get<string | undefined>('agent.maintenance_dir') ?? '';
  const socketMode = get<number | undefined>('agent.api_socket_mode');
  if (socketMode !== undefined && (socketMode & 0o002) !== 0 && get<boolean | undefined>('agent.api_insecure_open') !== true) {
    problems.add('agent.api_socket_mode', `"${socketMode.toString(8).padStart(4, '0')}" lets every local user connect and register (other-writable): drop the o+w bit, or set agent.api_insecure_open: true`);
  }
  return Object.freeze({
    listenAddr: get<string>('agent.listen_addr'),
    monitorIntervalMs,
    cleanupTimerMs: get<number>('agent.cleanup_timer'),
    consulAddr,
    consulQueryIntervalMs: get<number>('agent.consul_query_interval'),
    consulToken: get<string>('agent.consul_token'),
    rise: get<number>('agent.rise'),
    fall: get<number>('agent.fall'),
    checkTimeoutMs: explicitTimeout ?? Math.min(monitorIntervalMs ?? DEFAULT_TIMEOUT_CAP_MS, DEFAULT_TIMEOUT_CAP_MS),
    iptablesBinary: get<string>('agent.iptables_binary'),
    removeVipOnWithdraw: get<boolean>('agent.remove_vip_on_withdraw'),
    checkWorkers: get<number>('agent.check_workers'),
    pidFile: pid === '' ? '' : path.resolve(baseDir, pid),
    stateFile: state === '' ? DEFAULT_STATE_FILE : path.resolve(baseDir, state),
    registrationsFile: registrations === undefined
      ? (get<string>('routing.plugin') === 'dry-run' ? '' : DEFAULT_REGISTRATIONS_FILE)
      : registrations === '' ? '' : path.resolve(baseDir, registrations),
    maintenanceStateFile: maintenanceState === undefined
      ? (get<string>('routing.plugin') === 'dry-run' ? '' : DEFAULT_MAINTENANCE_STATE_FILE)
      : maintenanceState === '' ? '' : path.resolve(baseDir, maintenanceState),
    maintenanceFile: maintenanceFile === '' ? '' : path.resolve(baseDir, maintenanceFile),
    maintenanceDir: maintenanceDir === '' ? '' : path.resolve(baseDir, maintenanceDir),
    shutdownDrainMs: get<number>('agent.shutdown_drain'),
    apiToken: apiToken(get, baseDir, env, problems),
    apiAllowedUsers: Object.freeze(get<string[] | undefined>('agent.api_allowed_users') ?? []),
    apiAllowedGroups: Object.freeze(get<string[] | undefined>('agent.api_allowed_groups') ?? []),
    apiSocketMode: get<number>('agent.api_socket_mode'),
    apiSocketGroup: get<string | undefined>('agent.api_socket_group') ?? '',
    apiInsecureOpen: get<boolean>('agent.api_insecure_open'),
    flapDamping: flapDamping(get, problems),
  });
}

/**
 * agent.flap_damping, with the checks between its keys (made whether or not it is enabled, so a block switched on
 * later is already known to work): reuse below suppress, and a max_suppress long enough that the penalty cap
 * (reuse_threshold x 2^(max_suppress/half_life)) lies above suppress_threshold, or no app could ever be held down.
 */
function flapDamping(get: Get, problems: Problems): FlapDampingConfig {
  const k = (key: string) => `agent.flap_damping.${key}`;
  const fd: FlapDampingConfig = Object.freeze({
    enabled: get<boolean>(k('enabled')),
    penalty: get<number>(k('penalty')),
    suppressThreshold: get<number>(k('suppress_threshold')),
    reuseThreshold: get<number>(k('reuse_threshold')),
    halfLifeMs: get<number>(k('half_life')),
    maxSuppressMs: get<number>(k('max_suppress')),
  });
  const { suppressThreshold: suppress, reuseThreshold: reuse, halfLifeMs: half, maxSuppressMs: max } = fd;
  if (suppress === undefined || reuse === undefined) return fd;
  if (reuse >= suppress) {
    problems.add(k('reuse_threshold'), `${reuse} is not below ${k('suppress_threshold')} ${suppress} (an app is held down above suppress_threshold and announced again below reuse_threshold)`);
  } else if (half !== undefined && max !== undefined && reuse * 2 ** (max / half) <= suppress) {
    const least = Math.ceil(half * Math.log2(suppress / reuse) / 1000) * 1000 + 1000;
    problems.add(k('max_suppress'), `${formatMs(max)} is too short for half_life ${formatMs(half)}: the penalty is capped at reuse_threshold x 2^(max_suppress/half_life) = ${Math.round(reuse * 2 ** (max / half))}, not above suppress_threshold ${suppress}, so no app would ever be held down (at least ${formatMs(least)})`);
  }
  return fd;
}

/** RFC 6750's b64token, 16..4096 characters: what `Authorization: Bearer` can carry. */
const TOKEN = /^[A-Za-z0-9\-._~+/]{16,4096}=*$/;

/**
 * The API's bearer token from agent.api_token_file (a file no other user may read: mode o-rwx) or from the variable
 * agent.api_token_env names; '' for none. Read again on every reload, so a rotated token is picked up. No message
 * below may include the token.
 */
function apiToken(get: Get, baseDir: string, env: NodeJS.ProcessEnv, problems: Problems): string {
  const fileSetting = get<string | undefined>('agent.api_token_file') ?? '';
  const envName = get<string | undefined>('agent.api_token_env') ?? '';
  if (fileSetting !== '' && envName !== '') {
    problems.add('agent.api_token_file', 'set agent.api_token_file or agent.api_token_env, not both');
    return '';
  }
  const check = (value: string, path: string, what: string): string => {
    const token = value.replace(/\r?\n$/, '');
    if (!TOKEN.test(token)) {
      problems.add(path, `${what} is not a usable bearer token (16..4096 characters of A-Z a-z 0-9 - . _ ~ + / and trailing =; e.g. \`openssl rand -hex 32\`)`);
      return '';
    }
    return token;
  };
  if (envName !== '') {
    const value = env[envName];
    if (value === undefined || value === '') {
      problems.add('agent.api_token_env', `environment variable ${envName} is ${value === undefined ? 'not set' : 'empty'}`);
      return '';
    }
    return check(value, 'agent.api_token_env', `the value of ${envName}`);
  }
  if (fileSetting === '') return '';
  const file = path.resolve(baseDir, fileSetting);
  let text: string;
  try {
    const st = statSync(file);
    if (!st.isFile()) {
      problems.add('agent.api_token_file', `${file} is not a regular file`);
      return '';
    }
    if ((st.mode & 0o007) !== 0) {
      problems.add('agent.api_token_file', `${file} is open to every user (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}): chmod o-rwx ${file} (0600 or 0640)`);
      return '';
    }
    text = readFileSync(file, 'utf8');
  } catch (err) {
    problems.add('agent.api_token_file', `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    return '';
  }
  return check(text, 'agent.api_token_file', `the content of ${file}`);
}

/** bgp: scalars from convict, then the legacy single peer (first) and peers[] by hand. */
function buildBgp(get: Get, raw: Record<string, unknown>, plugin: RoutingConfig['plugin'], env: NodeJS.ProcessEnv, problems: Problems): BgpConfig {
  const peers: PeerSpec[] = [];
  // Where each peer address ('' = default gateway) was first seen, to report duplicates.
  const seen = new Map<string, string>();
  const note = (addr: string | undefined, p: string): void => {
    const first = seen.get(addr ?? '');
    if (first) problems.add(p, `${addr ?? 'a second default-gateway peer (peer_ip unset)'} is already configured at ${first}`);
    else seen.set(addr ?? '', p);
  };
  const legacy = raw.peer_ip !== undefined || raw.peer_as !== undefined || raw.remote_as !== undefined;
  if (legacy) {
    const asn = peerAsn(raw, 'bgp', problems, 'bgp.peer_as: missing (bgp.peer_ip is set, so its peer needs an AS; gocast also wrote remote_as)');
    const addr = get<string | undefined>('bgp.peer_ip');
    if (raw.peer_ip === undefined || addr !== undefined) note(addr, addr === undefined ? 'bgp.peer_as' : 'bgp.peer_ip');
    if (asn !== undefined && (raw.peer_ip === undefined || addr !== undefined)) {
      peers.push(Object.freeze({ ...(addr === undefined ? {} : { address: addr }), asn, communities: Object.freeze([]) }));
    }
  }
  if (raw.peers !== undefined && !Array.isArray(raw.peers)) problems.add('bgp.peers', `${describe(raw.peers)} is not a list of peers`);
  const listed: unknown[] = Array.isArray(raw.peers) ? raw.peers : [];
  listed.forEach((item, i) => {
    const p = `bgp.peers[${i}]`;
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
      problems.add(p, `${describe(item)} is not a peer (write "- peer_ip: 198.18.0.1" and "  peer_as: 65000")`);
      return;
    }
    const fields = mapping(item, p, 'bgp.peers[]', problems) ?? {};
    const { peer, address: addr } = parsePeer(fields, p, env, problems);
    if (addr !== undefined || fields.peer_ip === undefined) note(addr, fields.peer_ip === undefined ? p : `${p}.peer_ip`);
    if (peer) peers.push(peer);
  });

  let localAs = get<number | undefined>('bgp.local_as');
  if (plugin === 'gobgp') {
    if (raw.local_as === undefined) problems.add('bgp.local_as', 'missing (required with routing.plugin gobgp)');
    if (!legacy && listed.length === 0) {
      problems.add('bgp', 'no BGP peer: set bgp.peer_as (the peer is the default gateway), bgp.peer_ip with bgp.peer_as, or bgp.peers[] (only routing.plugin dry-run runs without peers)');
    }
  } else if (raw.local_as === undefined) {
    localAs = DRY_RUN_LOCAL_AS;
  }
  const localIp = get<string | undefined>('bgp.local_ip');
  return Object.freeze({
    localAs: localAs!,
    ...(localIp === undefined ? {} : { localIp }),
    communities: Object.freeze(get<Community[] | undefined>('bgp.communities') ?? []),
    origin: get<BgpConfig['origin']>('bgp.origin'),
    listenPort: get<number>('bgp.listen_port'),
    nextHop: get<BgpConfig['nextHop']>('bgp.next_hop'),
    peers: Object.freeze(peers),
  });
}

function buildApps(value: unknown, agent: AgentConfig, ctx: Omit<AppContext, 'defaults'>): readonly AppSpec[] {
  const { problems } = ctx;
  const apps: AppSpec[] = [];
  if (value === undefined) return Object.freeze(apps);
  if (!Array.isArray(value)) {
    problems.add('apps', `${describe(value)} is not a list of apps (write "- name: web")`);
    return Object.freeze(apps);
  }
  // With a bad agent value the file fails anyway; the fallbacks only let the apps be checked too.
  const defaults: AppDefaults = {
    rise: agent.rise ?? 1,
    fall: agent.fall ?? 1,
    intervalMs: agent.monitorIntervalMs ?? 10_000,
    timeoutMs: agent.checkTimeoutMs,
  };
  const names = new Map<string, number>();
  const vipOwners = new Map<string, { app: string; path: string }>();
  value.forEach((item, i) => {
    const p = `apps[${i}]`;
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
      problems.add(p, `${describe(item)} is not an app (write "- name: web" and "  vip: 198.18.0.10/32")`);
      return;
    }
    const raw = mapping(item, p, 'apps[]', problems) ?? {};
    const parsed = parseApp(raw, p, { ...ctx, defaults });
    // Clashes between apps are checked even when an app has other problems, so one run shows them all.
    if (typeof raw.name === 'string') {
      const first = names.get(raw.name);
      if (first !== undefined) problems.add(`${p}.name`, `"${raw.name}" is already the name of apps[${first}]`);
      else names.set(raw.name, i);
    }
    for (const { value: vip, path: vipPath } of parsed.vips) {
      const owner = vipOwners.get(vip.text);
      if (owner) problems.add(vipPath, `${vip.text} is already the VIP of ${owner.app} (${owner.path})`);
      else vipOwners.set(vip.text, { app: typeof raw.name === 'string' ? `app "${raw.name}"` : p, path: vipPath });
    }
    if (parsed.app) apps.push(parsed.app);
  });
  return Object.freeze(apps);
}
