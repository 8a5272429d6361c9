/** apps: the list of apps, checked by hand (names, VIPs against the prefix policy, monitors, NAT rules, timings). */
import type { AppSpec, Community, ConsulSettings, MonitorSpec, NatRule, Prefix } from '../../plugin-api.js';
import type { AgentConfig } from '../config-types.js';
import type { MonitorRegistry } from '../monitor-registry.js';
import type { PluginRegistry } from '../plugin-registry.js';
import { parseAppName, parseNat, parsePrefix } from '../values.js';
import { checkVip, vipRefusal, type HostAddresses, type PrefixPolicy } from '../prefix-policy.js';
import { Problems } from './problems.js';
import { communities, describe, duration, formatMs, integer } from './value-checks.js';
import { mapping } from './schema.js';

interface Parsed<T> {
  readonly value: T;
  readonly path: string;
}

interface AppDefaults {
  readonly rise: number;
  readonly fall: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
}

export interface AppContext {
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

/** True for a monitor whose type is unknown and may come from a package of `plugins:` that failed to load. */
function unknownFromFailedPlugin(input: unknown, ctx: AppContext): boolean {
  if (ctx.registry.failures().length === 0) return false;
  const type = typeof input === 'string' ? input.split(':', 1)[0]!.trim()
    : input && typeof input === 'object' && typeof (input as Record<string, unknown>).type === 'string' ? (input as Record<string, string>).type : undefined;
  return type !== undefined && !ctx.monitors.names().includes(type) && ctx.registry.failedSource('monitor', type) !== undefined;
}

export function buildApps(value: unknown, agent: AgentConfig, ctx: Omit<AppContext, 'defaults'>): readonly AppSpec[] {
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
