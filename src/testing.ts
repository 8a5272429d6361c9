/**
 * `vipcast/testing`: run a monitor plugin the way vipcast runs it, from a plugin author's own tests (any test runner).
 *
 * `runMonitorOnce(plugin, spec)` loads the plugin (a package folder or name, through vipcast's own plugin loader and
 * its checks; or a descriptor object), parses `spec` as a config file's `apps[].monitors` entry is parsed, checks that
 * the params survive structured clone (they are copied to a worker thread for every check), then runs the check once
 * in a real worker thread of a one-worker check pool (closed before it returns), with the same timeout, abort signal,
 * memory limits and result rules as the daemon gives a plugin package's checks (daemon-check-pools.ts). Problems before the check are thrown as the coded errors vipcast gives for them
 * (`VIPCAST_ERR_PLUGIN_*` for the package, `VIPCAST_ERR_VALUE` for the spec or its params); the check's own failure
 * is a result (`ok: false` and its reason), as in the daemon.
 */
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import semver from 'semver';
import { PLUGIN_API_VERSION, type ConsulSettings, type MonitorPlugin, type MonitorSpec } from './plugin-api.js';
import { VipcastError } from './core/errors.js';
import { messagesOf } from './core/config/problems.js';
import { MonitorRegistry } from './core/monitor-registry.js';
import { loadPlugin } from './core/plugin-loader.js';
import { CheckPool } from './core/check-pool.js';
import { PLUGIN_RESOURCE_LIMITS } from './core/daemon-check-pools.js';

/** Options of `runMonitorOnce`. */
export interface RunMonitorOnceOptions {
  /** The check's time budget in milliseconds, as `agent.check_timeout` (default 5000). */
  readonly timeoutMs?: number;
  /**
   * Folder a package name is resolved from and relative paths in the spec resolve against, as the config file's folder
   * (default: the current directory).
   */
  readonly baseDir?: string;
  /** Key path that starts error messages (default `monitor`; the daemon uses `apps[i].monitors[j]`). */
  readonly path?: string;
  /** App name handed to `parse` in its context (default `test`). */
  readonly app?: string;
  /**
   * false: parse as an HTTP registration or Consul tag is parsed (a monitor that runs commands is refused). Default
   * true, as the config file.
   */
  readonly trusted?: boolean;
  /** Consul settings handed to `parse` (default: Consul off). */
  readonly consul?: ConsulSettings;
}

/** What one run gives: the check's result, how long it took, and the monitor as vipcast parsed it. */
export interface RunMonitorOnceResult {
  readonly ok: boolean;
  readonly reason: string;
  /** From asking the pool to its answer, in milliseconds (worker start-up and module import included). */
  readonly durationMs: number;
  /** The parsed monitor: `type`, canonical `text` (`NAME:...`), `params`, the resolved `workerModule`. */
  readonly monitor: MonitorSpec;
}

const CONSUL_OFF: ConsulSettings = { addr: '', token: '', node: '', stale: false };

/**
 * Parse a monitor spec with `plugin` and run its check once in a real worker thread.
 *
 * @param plugin - the plugin: a path to its package folder (absolute, or starting with `.`, from `baseDir`), a package
 *   name resolved from `baseDir` (both loaded and checked as vipcast loads `plugins:` entries, so `workerModule` may
 *   be relative to the package's entry file), or a descriptor object (its `workerModule` must then be absolute: a
 *   path or a URL such as `new URL('./check.js', import.meta.url).href`).
 * @param spec - the monitor as a config would list it: `NAME:...` or `{ type: NAME, ... }`.
 * @param opts - timeout, folder, key path, trust (see RunMonitorOnceOptions).
 * @returns the check's result and duration, and the parsed monitor.
 * @throws VipcastError `VIPCAST_ERR_PLUGIN_NOT_FOUND`/`_LOAD`/`_SHAPE`/`_VERSION` for the plugin, `VIPCAST_ERR_VALUE` for
 *   a spec `parse` refuses or params that can't be structured-cloned (the message names the key path).
 */
export async function runMonitorOnce(plugin: string | MonitorPlugin, spec: string | Record<string, unknown>, opts: RunMonitorOnceOptions = {}): Promise<RunMonitorOnceResult> {
  const baseDir = resolve(opts.baseDir ?? process.cwd());
  const path = opts.path ?? 'monitor';
  const descriptor = typeof plugin === 'string' ? await loadMonitor(plugin, baseDir) : checkDescriptor(plugin);
  const monitor = parseSpec(new MonitorRegistry([descriptor]), spec, {
    path, baseDir, trusted: opts.trusted ?? true, app: opts.app ?? 'test', consul: opts.consul ?? CONSUL_OFF,
  });
  assertCloneable(monitor.params, path);
  const timeoutMs = opts.timeoutMs ?? 5000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new VipcastError('VIPCAST_ERR_VALUE', `timeoutMs: ${String(timeoutMs)} is not a positive number of milliseconds`);
  // As the daemon runs a package's checks: a worker of its own with memory limits (a leak answers "ran out of memory").
  const pool = new CheckPool({ workers: 1, plugin: typeof plugin === 'string' ? plugin : descriptor.name, resourceLimits: PLUGIN_RESOURCE_LIMITS });
  try {
    const result = await pool.run(monitor, timeoutMs);
    return { ok: result.ok, reason: result.reason, durationMs: result.durationMs, monitor };
  } finally {
    await pool.close();
  }
}

/** Load a monitor package (folder path or name) with vipcast's loader: the same checks and coded errors. */
async function loadMonitor(pkg: string, baseDir: string): Promise<MonitorPlugin> {
  const isPath = isAbsolute(pkg) || pkg.startsWith('.');
  const loaded = await loadPlugin(isPath ? resolve(baseDir, pkg) : pkg, baseDir, { path: 'runMonitorOnce' });
  if (loaded.kind !== 'monitor') {
    throw new VipcastError('VIPCAST_ERR_PLUGIN_SHAPE', `runMonitorOnce: "${pkg}" is a ${loaded.kind} plugin ("${loaded.name}"), not a monitor`);
  }
  return loaded;
}

/** The loader's main checks for a descriptor handed over as an object; a relative workerModule can't be placed. */
function checkDescriptor(d: MonitorPlugin): MonitorPlugin {
  const shape = (problem: string): VipcastError => new VipcastError('VIPCAST_ERR_PLUGIN_SHAPE', `runMonitorOnce: the descriptor is not a vipcast monitor plugin: ${problem}`);
  if (d === null || typeof d !== 'object') throw shape(`it is ${d === null ? 'null' : typeof d}`);
  if (d.kind !== 'monitor') throw shape(`kind is ${JSON.stringify(d.kind)}, want "monitor"`);
  for (const key of ['name', 'version', 'apiVersion', 'workerModule'] as const) {
    if (typeof d[key] !== 'string' || d[key] === '') throw shape(`"${key}" must be a non-empty string`);
  }
  if (typeof d.parse !== 'function') throw shape('"parse" must be a function');
  if (!semver.validRange(d.apiVersion)) throw shape(`apiVersion ${JSON.stringify(d.apiVersion)} is not a semver range (e.g. "^1.0.0")`);
  if (!semver.satisfies(PLUGIN_API_VERSION, d.apiVersion)) {
    throw new VipcastError('VIPCAST_ERR_PLUGIN_VERSION', `runMonitorOnce: plugin "${d.name}" ${d.version} needs plugin API ${d.apiVersion}; this vipcast provides ${PLUGIN_API_VERSION}`);
  }
  const url = /^[a-z]+:/.test(d.workerModule) ? d.workerModule : isAbsolute(d.workerModule) ? pathToFileURL(d.workerModule).href : undefined;
  if (url === undefined) {
    throw shape(`workerModule "${d.workerModule}" is relative, and a descriptor object has no file to be relative to: pass the package folder instead, or an absolute URL (new URL('${d.workerModule}', import.meta.url).href)`);
  }
  return url === d.workerModule ? d : { ...d, workerModule: url, parse: d.parse.bind(d) };
}

function parseSpec(registry: MonitorRegistry, spec: unknown, ctx: Parameters<MonitorRegistry['parse']>[1]): MonitorSpec {
  try {
    return registry.parse(spec, ctx);
  } catch (err) {
    if (err instanceof VipcastError) throw err;
    // A plugin's parse may throw a plain Error: vipcast reports it under the monitor's key path, as VIPCAST_ERR_VALUE.
    throw new VipcastError('VIPCAST_ERR_VALUE', messagesOf(err, ctx.path)[0]!, { cause: err });
  }
}

/**
 * Throw VIPCAST_ERR_VALUE naming the first key of `value` (depth first) that structured clone refuses: the check pool
 * could not hand such params to a worker.
 */
function assertCloneable(value: unknown, path: string): void {
  const bad = uncloneable(value, '');
  if (bad === undefined) return;
  throw new VipcastError('VIPCAST_ERR_VALUE', `${path}: params${bad.key} can't be sent to a check worker (structured clone): ${bad.why}`);
}

function uncloneable(value: unknown, key: string): { key: string; why: string } | undefined {
  try {
    structuredClone(value);
    return undefined;
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    if (value !== null && typeof value === 'object') {
      for (const [k, v] of Object.entries(value)) {
        const inner = uncloneable(v, Array.isArray(value) ? `${key}[${k}]` : `${key}.${k}`);
        if (inner !== undefined) return inner;
      }
    }
    return { key, why };
  }
}
