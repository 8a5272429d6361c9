/**
 * Loads third-party monitor plugins: npm packages named in the config's `plugins:` list, resolved from the config
 * file's folder (so they are installed next to the config, or globally on NODE_PATH), checked for shape and plugin
 * API version before anything uses them.
 */
import { createRequire } from 'node:module';
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join, isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import semver from 'semver';
import { PLUGIN_API_VERSION, type MonitorPlugin } from '../plugin-api.js';
import { VipcastError } from './errors.js';

/** Resolve a package's entry file from `baseDir`: CommonJS resolution first, then an ESM-only package's exports. */
export function resolvePlugin(name: string, baseDir: string): string {
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
      const pkg = JSON.parse(readFileSync(pkgFile, 'utf8')) as { exports?: unknown; main?: string; module?: string };
      const entry = esmEntry(pkg.exports) ?? pkg.module ?? pkg.main ?? 'index.js';
      return join(dir, name, entry);
    }
    throw new VipcastError('VIPCAST_ERR_PLUGIN_NOT_FOUND',
      `plugin "${name}" is not installed (looked from ${baseDir}); install it there: cd ${baseDir} && npm install ${name}`, { cause: err });
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

/** Load and check one monitor plugin package. */
export async function loadMonitorPlugin(name: string, baseDir: string): Promise<MonitorPlugin> {
  const file = resolvePlugin(name, baseDir);
  let mod: unknown;
  try {
    mod = await import(pathToFileURL(file).href);
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' || (err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND';
    throw new VipcastError('VIPCAST_ERR_PLUGIN_LOAD',
      `plugin "${name}" is installed but failed to load${missing ? ' (one of its own dependencies is missing)' : ''}: ${(err as Error).message}`, { cause: err });
  }
  // ESM default, or a transpiled ESM module seen through CommonJS: `default.default`.
  let desc = mod as Record<string, unknown>;
  for (let i = 0; i < 2 && desc && typeof desc === 'object' && 'default' in desc && desc.default; i++) desc = desc.default as Record<string, unknown>;
  const problems: string[] = [];
  if (!desc || typeof desc !== 'object') problems.push('its default export is not an object');
  else {
    if (desc.kind !== 'monitor') problems.push(`kind is ${JSON.stringify(desc.kind)}, want "monitor"`);
    for (const key of ['name', 'version', 'apiVersion', 'workerModule'] as const) {
      if (typeof desc[key] !== 'string' || desc[key] === '') problems.push(`"${key}" must be a non-empty string`);
    }
    if (typeof desc.parse !== 'function') problems.push('"parse" must be a function');
    if (typeof desc.name === 'string' && !/^[a-z][a-z0-9_-]{0,31}$/.test(desc.name)) problems.push(`name ${JSON.stringify(desc.name)} must match [a-z][a-z0-9_-]{0,31}`);
  }
  if (problems.length > 0) {
    throw new VipcastError('VIPCAST_ERR_PLUGIN_LOAD', `plugin "${name}" does not export a vipcast monitor plugin: ${problems.join('; ')}`);
  }
  const plugin = desc as unknown as MonitorPlugin;
  if (!semver.validRange(plugin.apiVersion) || !semver.satisfies(PLUGIN_API_VERSION, plugin.apiVersion)) {
    throw new VipcastError('VIPCAST_ERR_PLUGIN_VERSION',
      `plugin "${name}" ${plugin.version} needs plugin API ${plugin.apiVersion}; this vipcast provides ${PLUGIN_API_VERSION}`);
  }
  // A relative workerModule is relative to the plugin's entry file.
  const worker = /^[a-z]+:/.test(plugin.workerModule) ? plugin.workerModule
    : pathToFileURL(isAbsolute(plugin.workerModule) ? plugin.workerModule : join(dirname(file), plugin.workerModule)).href;
  return Object.freeze({ ...plugin, workerModule: worker, parse: plugin.parse.bind(plugin) });
}
