/**
 * The config file: read it, parse the YAML, validate every key and return the typed `VipcastConfig`, or throw one
 * `VIPCAST_ERR_CONFIG` error that lists every problem, each starting with its key path (invariant 4; reload relies on
 * it to keep the old config on any error, invariant 7). Reference: docs/CONFIG.md.
 *
 * convict holds the schema of the scalar sections (agent, bgp scalars, routing.plugin; config/schema.ts): defaults,
 * docs, env overrides and the per-key checks. The gobgp router's routing.gobgp block is parsed by that plugin's own
 * parser (src/plugins/routing/gobgp/settings.ts). The lists (apps, bgp.peers) are checked by hand with the value
 * parsers: convict handles arrays of objects poorly. Unknown keys are found by hand everywhere, before convict sees
 * anything, so each gets a suggestion.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import type { RoutingConfig, VipcastConfig } from './config-types.js';
import { VipcastError } from './errors.js';
import { MonitorRegistry } from './monitor-registry.js';
import { PluginLoadError, loadPlugin, pluginVersionChange } from './plugin-loader.js';
import { PluginRegistry } from './plugin-registry.js';
import { builtinPlugins } from '../plugins/builtins.js';
import { Problems, loadScalars, mapping, type Get } from './config-schema.js';
import type { HostAddresses } from './prefix-policy.js';
import { readHostAddresses } from './host-addresses.js';
import { buildAgent, consulSettings } from './config/agent.js';
import { buildApps } from './config/apps.js';
import { buildBgp } from './config/peers.js';
import { PLUGIN_NAME, buildDiscovery, buildPlugins, buildPrefixPolicy, buildRouting } from './config/routing.js';

export { configKeys, suggest } from './config-schema.js';
export { consulSettings } from './config/agent.js';

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
  const listed = new Map<string, string>();
  for (const [i, name] of names) {
    const at = `plugins[${i}]`;
    const first = listed.get(name);
    if (first !== undefined) {
      details.push(`${at}: "${name}" is listed twice (first at ${first})`);
      continue;
    }
    listed.set(name, at);
    try {
      const plugin = await loadPlugin(name, baseDir, { path: at });
      const taken = registry.origin(plugin.kind, plugin.name);
      if (taken !== undefined) {
        throw new PluginLoadError('VIPCAST_ERR_PLUGIN_NAME', `${at}: plugin "${name}": ${plugin.kind} name "${plugin.name}" ` +
          (taken === 'built-in' ? `is a built-in; a package can't replace a built-in ${plugin.kind}: give it another name` : `is taken by plugin "${taken}"`), name, plugin.kind, plugin.name);
      }
      registry.add(plugin, name, at);
      const changed = pluginVersionChange(name, baseDir);
      if (changed) registry.addStale({ path: at, pkg: name, ...changed });
    } catch (err) {
      details.push(pluginProblem(err, at));
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

/**
 * One problem line for a package of `plugins:` that failed: its key path, then the plugin error's own code
 * (`plugins[1]: VIPCAST_ERR_PLUGIN_SHAPE: plugin "x" ...`), so the VIPCAST_ERR_CONFIG that lists every problem of the
 * file does not hide which plugin error it was. Every loader error starts with its key path and names the package;
 * anything else gets the key path.
 */
function pluginProblem(err: unknown, at: string): string {
  const message = err instanceof Error ? err.message : String(err);
  const rest = message.startsWith(`${at}: `) ? message.slice(at.length + 2) : message;
  return err instanceof VipcastError && err.code.startsWith('VIPCAST_ERR_PLUGIN_') ? `${at}: ${err.code}: ${rest}` : `${at}: ${rest}`;
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
