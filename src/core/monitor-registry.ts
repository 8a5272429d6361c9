/**
 * Known monitor plugins by name, and the one entry point that turns a monitor spec from any source (config file,
 * HTTP registration, Consul tag) into a validated `MonitorSpec` (invariant 4).
 */
import type { MonitorParseContext, MonitorPlugin, MonitorSpec } from '../plugin-api.js';
import { valueError } from './errors.js';
import portMonitor from '../plugins/monitors/port/index.js';
import execMonitor from '../plugins/monitors/exec/index.js';
import httpMonitor from '../plugins/monitors/http/index.js';
import consulMonitor from '../plugins/monitors/consul/index.js';

export function builtinMonitors(): MonitorPlugin[] {
  return [portMonitor, execMonitor, httpMonitor, consulMonitor];
}

export interface MonitorInputContext extends MonitorParseContext {
  /** False for HTTP registrations and Consul tags: monitors that run commands are refused there. */
  readonly trusted: boolean;
}

export class MonitorRegistry {
  private readonly plugins = new Map<string, MonitorPlugin>();
  /** The package each third-party monitor came from (MonitorSpec.plugin); built-ins have none. */
  private readonly packages = new Map<string, string>();

  constructor(plugins: readonly MonitorPlugin[] = builtinMonitors()) {
    for (const p of plugins) this.add(p);
  }

  /** `pkg`: the package it came from (its checks then run in a worker of their own); none for a built-in. */
  add(plugin: MonitorPlugin, pkg?: string): void {
    if (this.plugins.has(plugin.name)) throw valueError(`plugins`, `two monitor plugins are named "${plugin.name}"`);
    this.plugins.set(plugin.name, plugin);
    if (pkg !== undefined) this.packages.set(plugin.name, pkg);
  }

  names(): string[] {
    return [...this.plugins.keys()].sort();
  }

  /** The monitor plugin named `name` (for /status and /metrics: its version). */
  get(name: string): MonitorPlugin | undefined {
    return this.plugins.get(name);
  }

  /** Parse `type:rest` (gocast string form) or `{ type, ...params }` into a MonitorSpec. */
  parse(input: unknown, ctx: MonitorInputContext): MonitorSpec {
    let type: string;
    let rest: string | Record<string, unknown>;
    if (typeof input === 'string') {
      const colon = input.indexOf(':');
      type = (colon === -1 ? input : input.slice(0, colon)).trim();
      rest = colon === -1 ? '' : input.slice(colon + 1);
    } else if (input !== null && typeof input === 'object' && !Array.isArray(input)) {
      const obj = input as Record<string, unknown>;
      if (typeof obj.type !== 'string') throw valueError(ctx.path, 'a structured monitor needs a "type" (e.g. { type: port, host: 127.0.0.1, port: 53 })');
      type = obj.type;
      // The plugin gets its own keys only: `type` picked it (plugin-api MonitorPlugin.parse).
      const { type: _type, ...own } = obj;
      rest = own;
    } else {
      throw valueError(ctx.path, `${JSON.stringify(input)} is not a monitor (want "port:tcp:53", "exec:CMD", "http:URL" or { type: ... })`);
    }
    const plugin = this.plugins.get(type);
    if (!plugin) {
      throw valueError(ctx.path, `unknown monitor type "${type}" (known: ${this.names().join(', ')})`);
    }
    if (plugin.runsCommands && !ctx.trusted) {
      throw valueError(ctx.path, `"${type}" monitors run commands and are only accepted from the config file`);
    }
    const { params, text } = plugin.parse(rest, ctx);
    assertCloneable(params, ctx.path);
    // `text` is what follows "TYPE:" (plugin-api MonitorPlugin.parse), prefixed here, always.
    const full = text === '' ? type : `${type}:${text}`;
    const pkg = this.packages.get(type);
    return Object.freeze({ type, text: full, params, workerModule: plugin.workerModule, runsCommands: plugin.runsCommands === true, ...(pkg === undefined ? {} : { plugin: pkg }) });
  }
}

/**
 * Params travel to a check worker by structured clone at every check: params that can't be cloned (a function, a
 * symbol, a socket) are refused here, where the spec enters, with its key path, instead of failing every interval as
 * "check worker died". Plain objects and arrays survive a clone; class instances lose their prototype but pass.
 */
export function assertCloneable(params: unknown, path: string): void {
  try {
    structuredClone(params);
  } catch (err) {
    throw valueError(path, `params can't be passed to a worker: ${(err as Error).message.replace(/\.$/, '')} (a monitor's parse must return plain data)`);
  }
}
