/**
 * Loads third-party plugins of every family (monitor, discovery, router): npm packages named in the config's
 * `plugins:` list, resolved from the config file's folder (so they are installed next to the config, or globally on
 * NODE_PATH), checked for shape and plugin API version before anything uses them. The descriptor's `kind` decides the
 * family and so the members it must have. Every problem is a coded VipcastError whose message starts with the key
 * path (`plugins[2]`) and names the package:
 *
 * - VIPCAST_ERR_PLUGIN_NOT_FOUND: the package is not installed where the config looks;
 * - VIPCAST_ERR_PLUGIN_LOAD: it is installed but importing it threw (its own code, or a missing dependency);
 * - VIPCAST_ERR_PLUGIN_VERSION: its `apiVersion` range is not satisfied by PLUGIN_API_VERSION (checked before the
 *   family's members: a plugin written for another API version is told so, not that its members look wrong);
 * - VIPCAST_ERR_PLUGIN_SHAPE: its export is not a descriptor (no object, a `kind` that is not a family, a bad name,
 *   missing or mistyped members), or a monitor's `workerModule` does not exist or exports no check function.
 *
 * A monitor's `workerModule` is checked when the plugin loads (start, reload, `vipcast validate`), not at its first
 * check: the file must exist, and importing it must give a check function. That import runs the plugin's worker code,
 * so it happens in a short-lived worker thread with a memory limit and a time limit (probeWorkerModule), the way the
 * check pool's workers will import it (same flags), never on the main thread; an unchanged module that passed is not
 * probed again at the next load. Parsing the module's exports without running it (cjs-module-lexer, es-module-lexer)
 * was the other way: it runs nothing, but it can't follow `module.exports = require(...)`, re-exports or exports
 * computed at run time, so it would refuse working plugins or pass broken ones.
 * A module whose import throws is VIPCAST_ERR_PLUGIN_LOAD.
 */
import { createRequire } from 'node:module';
import { readFileSync, existsSync, statSync } from 'node:fs';
import { dirname, join, isAbsolute } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { PLUGIN_API_VERSION, type DiscoveryPlugin, type MonitorPlugin, type PluginKind, type RouterPlugin, type VipcastPlugin } from '../plugin-api.js';
import { VipcastError } from './errors.js';
import type { ProbeAnswer } from './plugin-probe-worker.js';

/** Resolve a package's entry file from `baseDir`: CommonJS resolution first, then an ESM-only package's exports. */
export function resolvePlugin(name: string, baseDir: string, path = 'plugins'): string {
  const req = createRequire(join(baseDir, '__vipcast__.js'));
  try {
    return req.resolve(name);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ERR_PACKAGE_PATH_NOT_EXPORTED' && code !== 'MODULE_NOT_FOUND') throw err;
    // An ESM-only package ("exports": { "import": ... }) can't be require.resolve'd: read its package.json.
    for (const dir of req.resolve.paths(name) ?? []) {
      const pkgFile = join(dir, name, 'package.json');
      if (!existsSync(pkgFile)) continue;
      let pkg: { exports?: unknown; main?: string; module?: string };
      try {
        pkg = JSON.parse(readFileSync(pkgFile, 'utf8')) as typeof pkg;
      } catch (e) {
        throw new PluginLoadError('VIPCAST_ERR_PLUGIN_LOAD', `${path}: plugin "${name}" is installed but its package.json can't be read: ${(e as Error).message}`, name, undefined, undefined, { cause: e });
      }
      const entry = esmEntry(pkg.exports) ?? pkg.module ?? pkg.main ?? 'index.js';
      return join(dir, name, entry);
    }
    throw new PluginLoadError('VIPCAST_ERR_PLUGIN_NOT_FOUND',
      `${path}: plugin "${name}" is not installed (looked from ${baseDir}); install it there: cd ${baseDir} && npm install ${name}`, name, undefined, undefined, { cause: err });
  }
}

function esmEntry(exports: unknown): string | undefined {
  if (typeof exports === 'string') return exports;
  if (!exports || typeof exports !== 'object') return undefined;
  const root = (exports as Record<string, unknown>)['.'] ?? exports;
  if (typeof root === 'string') return root;
  if (root && typeof root === 'object') {
    const r = root as Record<string, unknown>;
    for (const cond of ['import', 'node', 'default']) {
      const v = r[cond];
      if (typeof v === 'string') return v;
      const nested = esmEntry(v);
      if (nested) return nested;
    }
  }
  return undefined;
}

/** The plugin families, in the order error messages list them. */
export const PLUGIN_KINDS: readonly PluginKind[] = ['monitor', 'discovery', 'router'];

/**
 * What a plugin's `name` must look like, the same in every family: what the config names it by (`port:tcp:53`,
 * `routing.plugin: gobgp`, `discovery: [{ plugin: consul }]`), so no colon, no space, no capitals.
 */
export const PLUGIN_NAME_RULE = /^[a-z][a-z0-9_-]{0,31}$/;

/** The members each family adds to the base, and the type each must have. */
const FAMILY_MEMBERS: Readonly<Record<PluginKind, ReadonlyArray<readonly [string, 'string' | 'function']>>> = {
  monitor: [['workerModule', 'string'], ['parse', 'function']],
  discovery: [['parseSettings', 'function'], ['sameSettings', 'function'], ['create', 'function']],
  router: [['parseSettings', 'function'], ['sameSettings', 'function'], ['create', 'function']],
};

/**
 * A plugin that could not be loaded: a VipcastError with what the descriptor said it is, when that much could be read
 * (so the config can tell which monitor types or router names were to come from it).
 */
export class PluginLoadError extends VipcastError {
  constructor(code: 'VIPCAST_ERR_PLUGIN_NOT_FOUND' | 'VIPCAST_ERR_PLUGIN_LOAD' | 'VIPCAST_ERR_PLUGIN_SHAPE' | 'VIPCAST_ERR_PLUGIN_VERSION' | 'VIPCAST_ERR_PLUGIN_NAME', message: string,
    readonly pkg: string, readonly kind?: PluginKind, readonly pluginName?: string, options: { cause?: unknown } = {}) {
    super(code, message, options);
  }
}

export interface LoadOptions {
  /** Key path of the package's name in the config, first in every message (default `plugins`). */
  readonly path?: string;
}

/**
 * Load and check one plugin package of any family: resolve it from `baseDir`, import it (CommonJS or ESM; the default
 * export, or `module.exports`), check the descriptor's base fields, its `apiVersion`, then its family's members.
 * Returns a frozen copy whose functions stay bound to the package's own object. Throws a coded VipcastError (see the
 * file comment) whose message starts with `opts.path` and names the package.
 */
export async function loadPlugin(name: string, baseDir: string, opts: LoadOptions = {}): Promise<VipcastPlugin> {
  const path = opts.path ?? 'plugins';
  const file = resolvePlugin(name, baseDir, path);
  if (!importedVersions.has(file)) importedVersions.set(file, installedVersion(file, name));
  let mod: unknown;
  // semver only here: a config without `plugins:` (and `vipcast validate` of one) never loads it.
  const { default: semver } = await import('semver');
  try {
    mod = await import(pathToFileURL(file).href);
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' || (err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND';
    // vipcast itself (an optional peer dependency) resolves from the plugin's folder only: name the link to make.
    const linkHint = missing && /Cannot find (package|module) 'vipcast(\/[^']*)?'/.test((err as Error).message)
      ? `; link this vipcast there: cd ${baseDir} && npm install ${fileURLToPath(new URL('../../../', import.meta.url)).replace(/\/$/, '')}` : '';
    throw new PluginLoadError('VIPCAST_ERR_PLUGIN_LOAD',
      `${path}: plugin "${name}" is installed but failed to load${missing ? ' (one of its own dependencies is missing)' : ''}: ${(err as Error).message}${linkHint}`, name, undefined, undefined, { cause: err });
  }
  // ESM default, or a transpiled ESM module seen through CommonJS: `default.default`.
  let desc = mod as Record<string, unknown>;
  for (let i = 0; i < 2 && desc && typeof desc === 'object' && 'default' in desc && desc.default; i++) desc = desc.default as Record<string, unknown>;
  const said = (d: Record<string, unknown>): [PluginKind | undefined, string | undefined] => [
    PLUGIN_KINDS.includes(d.kind as PluginKind) ? d.kind as PluginKind : undefined,
    typeof d.name === 'string' && PLUGIN_NAME_RULE.test(d.name) ? d.name : undefined,
  ];
  const shape = (problems: readonly string[], what = 'a vipcast plugin'): PluginLoadError => {
    const [k, n] = desc && typeof desc === 'object' ? said(desc) : [undefined, undefined];
    return new PluginLoadError('VIPCAST_ERR_PLUGIN_SHAPE', `${path}: plugin "${name}" does not export ${what}: ${problems.join('; ')}`, name, k, n);
  };
  if (!desc || typeof desc !== 'object') throw shape([`its default export is ${desc === null ? 'null' : typeof desc}, not a descriptor object`]);

  // The base: every family has it.
  const problems: string[] = [];
  const kind = PLUGIN_KINDS.includes(desc.kind as PluginKind) ? desc.kind as PluginKind : undefined;
  if (!kind) problems.push(`kind is ${JSON.stringify(desc.kind) ?? 'missing'}, want ${PLUGIN_KINDS.map((k) => `"${k}"`).join(', ')}`);
  for (const key of ['name', 'version', 'apiVersion'] as const) {
    if (typeof desc[key] !== 'string' || desc[key] === '') problems.push(`"${key}" must be a non-empty string`);
  }
  if (typeof desc.name === 'string' && desc.name !== '' && !PLUGIN_NAME_RULE.test(desc.name)) problems.push(`name ${JSON.stringify(desc.name)} must match ${PLUGIN_NAME_RULE.source.slice(1, -1)}`);
  if (typeof desc.apiVersion === 'string' && desc.apiVersion !== '' && !semver.validRange(desc.apiVersion)) problems.push(`apiVersion ${JSON.stringify(desc.apiVersion)} is not a semver range (e.g. "^1.0.0")`);
  if (problems.length > 0 || !kind) throw shape(problems);
  const apiVersion = desc.apiVersion as string;
  const version = desc.version as string;

  // The API version before the family's members: a plugin for another API is told that, not that its members look wrong.
  if (!semver.satisfies(PLUGIN_API_VERSION, apiVersion)) {
    throw new PluginLoadError('VIPCAST_ERR_PLUGIN_VERSION',
      `${path}: plugin "${name}" ${version} needs plugin API ${apiVersion}; this vipcast provides ${PLUGIN_API_VERSION}`, name, ...said(desc));
  }

  for (const [key, type] of FAMILY_MEMBERS[kind]) {
    if (typeof desc[key] !== type || desc[key] === '') problems.push(`"${key}" must be a ${type === 'string' ? 'non-empty string' : 'function'}`);
  }
  if (kind === 'monitor' && desc.runsCommands !== undefined && typeof desc.runsCommands !== 'boolean') problems.push('"runsCommands" must be true or false');
  if (problems.length > 0) throw shape(problems, `a vipcast ${kind} plugin`);

  const base = { kind, name: desc.name as string, version, apiVersion };
  if (kind === 'monitor') {
    const m = desc as unknown as MonitorPlugin;
    // A relative workerModule is relative to the plugin's entry file.
    const worker = /^[a-z]+:/.test(m.workerModule) ? m.workerModule
      : pathToFileURL(isAbsolute(m.workerModule) ? m.workerModule : join(dirname(file), m.workerModule)).href;
    await checkWorkerModule(worker, m.workerModule, `${path}: plugin "${name}"`, name, m.name);
    return Object.freeze<MonitorPlugin>({ ...base, kind, ...(m.runsCommands === undefined ? {} : { runsCommands: m.runsCommands }), workerModule: worker, parse: m.parse.bind(m) });
  }
  const s = desc as unknown as RouterPlugin | DiscoveryPlugin;
  const settings = { parseSettings: s.parseSettings.bind(s), sameSettings: s.sameSettings.bind(s) };
  if (kind === 'router') return Object.freeze<RouterPlugin>({ ...base, kind, ...settings, create: (s as RouterPlugin).create.bind(s) });
  return Object.freeze<DiscoveryPlugin>({ ...base, kind, ...settings, create: (s as DiscoveryPlugin).create.bind(s) });
}

/**
 * How long the load-time import of a monitor's workerModule may take. Generous: a module may load slowly, and a worker
 * thread inherits the process's flags and preloads (`--import` hooks), which can cost seconds on a loaded host.
 */
export const PROBE_TIMEOUT_MS = 30_000;
/** Old-generation heap of the probe's thread: a module that allocates without bound at import ends the probe only. */
const PROBE_HEAP_MB = 256;

/**
 * Check a monitor plugin's worker module at load time: a `file:` URL must name an existing file, and the module,
 * imported in a short-lived worker thread (probeWorkerModule), must have a check function. Throws a PluginLoadError
 * whose message starts with `at` (`plugins[0]: plugin "pkg"`) and names the module as written and as resolved.
 */
async function checkWorkerModule(url: string, declared: string, at: string, pkg: string, pluginName: string): Promise<void> {
  const where = url.startsWith('file:') ? fileURLToPath(url) : url;
  const what = `its workerModule ${JSON.stringify(declared)}${where === declared ? '' : ` (${where})`}`;
  const fail = (code: 'VIPCAST_ERR_PLUGIN_SHAPE' | 'VIPCAST_ERR_PLUGIN_LOAD', message: string): PluginLoadError =>
    new PluginLoadError(code, `${at}: ${what} ${message}`, pkg, 'monitor', pluginName);
  if (url.startsWith('file:') && !existsSync(where)) throw fail('VIPCAST_ERR_PLUGIN_SHAPE', 'does not exist');
  const stamp = fileStamp(url);
  if (stamp !== undefined && probedOk.get(url) === stamp) return;
  const answer = await probeWorkerModule(url);
  if (!answer.loaded) throw fail('VIPCAST_ERR_PLUGIN_LOAD', `failed to load in a worker thread: ${answer.error}`);
  if (!answer.check) {
    throw fail('VIPCAST_ERR_PLUGIN_SHAPE', 'exports no check function (want `export async function check`, `exports.check`, ' +
      `or a default export that is the function or has a check function; it exports ${answer.exports.length ? answer.exports.join(', ') : 'nothing'})`);
  }
  if (stamp !== undefined) probedOk.set(url, stamp);
}

/**
 * Worker modules that passed the probe, with the size and modification time of their file then: a reload does not
 * import an unchanged module again (a probe costs a thread start); a changed file is probed again. Failures are not
 * remembered, so a fixed file passes at the next load.
 */
const probedOk = new Map<string, string>();

function fileStamp(url: string): string | undefined {
  if (!url.startsWith('file:')) return undefined;
  try {
    const st = statSync(fileURLToPath(url));
    return `${st.size}:${st.mtimeMs}`;
  } catch {
    return undefined;
  }
}

/**
 * Import a worker module in a worker thread of its own and report whether it has a check function (plugin-probe-
 * worker.ts). The thread is terminated after the answer, or after `timeoutMs`; a module that exhausts its heap, or
 * whose import never settles (the thread exits without an answer), is reported as not loaded.
 */
export function probeWorkerModule(url: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<ProbeAnswer> {
  return new Promise((resolve) => {
    const worker = new Worker(new URL('./plugin-probe-worker.js', import.meta.url), {
      workerData: { url }, resourceLimits: { maxOldGenerationSizeMb: PROBE_HEAP_MB }, name: 'vipcast plugin probe',
    });
    let done = false;
    const finish = (answer: ProbeAnswer): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(answer);
      void worker.terminate();
    };
    const timer = setTimeout(() => finish({ loaded: false, error: `its import did not finish within ${timeoutMs / 1000} s` }), timeoutMs);
    worker.once('message', (answer: ProbeAnswer) => finish(answer));
    worker.once('error', (err: Error) => finish({ loaded: false, error: err.message, ...((err as NodeJS.ErrnoException).code ? { code: (err as NodeJS.ErrnoException).code! } : {}) }));
    worker.once('exit', (code) => finish({ loaded: false, error: `its import never finished (the thread exited with code ${code}: a top-level await that never settles?)` }));
  });
}

/** The installed version (package.json) of each plugin entry file when this process first imported it. */
const importedVersions = new Map<string, string>();

/** The `version` of the package.json of package `name` that holds `file` ('' when it can't be read). */
function installedVersion(file: string, name: string): string {
  for (let dir = dirname(file); dir !== dirname(dir); dir = dirname(dir)) {
    const pkgFile = join(dir, 'package.json');
    if (!existsSync(pkgFile)) continue;
    try {
      const pkg = JSON.parse(readFileSync(pkgFile, 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === name) return typeof pkg.version === 'string' ? pkg.version : '';
    } catch {
      return '';
    }
  }
  return '';
}

/**
 * After `loadPlugin(name, baseDir)`: when the package installed on disk is not the version this process imported
 * first (an `npm install` of a new version after the start), the versions `{ running, installed }`. Node's module cache
 * keeps the first import, so the running version goes on until a restart; undefined when they are the same.
 */
export function pluginVersionChange(name: string, baseDir: string): { running: string; installed: string } | undefined {
  let file: string;
  try {
    file = resolvePlugin(name, baseDir);
  } catch {
    return undefined;
  }
  const running = importedVersions.get(file);
  if (running === undefined) return undefined;
  const installed = installedVersion(file, name);
  return installed !== running ? { running, installed } : undefined;
}
