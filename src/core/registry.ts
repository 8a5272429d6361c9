/**
 * AppRegistry: every app vipcast knows, by name, with the source it came from (config file, HTTP registration,
 * Consul, plugins). A VIP belongs to one app only: a registration that would share one is refused.
 *
 * It is also the one door of the prefix policy (invariant 9): `upsert` and `replaceSource` are the only ways in, and
 * both refuse an app whose VIPs (or, from a source other than the config file, communities) the policy in force
 * does not allow, whatever built the app. The sources check first with their own key paths and parameter names.
 */
import type { AppSource, AppSpec } from '../plugin-api.js';
import { VipcastError } from './errors.js';
import { DEFAULT_POLICY, appPolicyProblems, type HostAddresses, type PrefixPolicy } from './prefix-policy.js';
import { readHostAddresses } from './host-addresses.js';

export interface AppRegistryOptions {
  /** The policy in force (the daemon's config); undefined = DEFAULT_POLICY. */
  readonly policy?: () => PrefixPolicy | undefined;
  /** The host's own addresses (default: read from the interfaces). */
  readonly hostAddresses?: () => HostAddresses;
}

export type RegistryEvent =
  | { readonly type: 'added'; readonly app: AppSpec }
  | { readonly type: 'changed'; readonly app: AppSpec; readonly previous: AppSpec }
  | { readonly type: 'removed'; readonly app: AppSpec };

export class AppRegistry {
  private readonly apps = new Map<string, AppSpec>();
  /** VIP text -> name of the app that holds it: conflict checks stay O(VIPs of the app), not O(all apps). */
  private readonly vipOwner = new Map<string, string>();
  private readonly listeners: Array<(event: RegistryEvent) => void> = [];

  constructor(private readonly opts: AppRegistryOptions = {}) {}

  /** Why the prefix policy in force refuses `spec` (one message per VIP or community), or []. */
  policyProblems(spec: AppSpec): string[] {
    const host = this.opts.hostAddresses ? this.opts.hostAddresses() : readHostAddresses();
    return appPolicyProblems(spec, this.opts.policy?.() ?? DEFAULT_POLICY, host);
  }

  onChange(listener: (event: RegistryEvent) => void): void {
    this.listeners.push(listener);
  }

  get(name: string): AppSpec | undefined {
    return this.apps.get(name);
  }

  all(): AppSpec[] {
    return [...this.apps.values()];
  }

  /** Why `spec` can't be added next to the apps there now (ignoring apps named in `replacing`), or undefined. */
  conflict(spec: AppSpec, replacing: ReadonlySet<string> = new Set([spec.name])): string | undefined {
    const existing = this.apps.get(spec.name);
    if (existing && existing.source !== spec.source) {
      return `app "${spec.name}" is already registered by ${existing.source}`;
    }
    for (const vip of spec.vips) {
      const owner = this.vipOwner.get(vip.text);
      if (owner === undefined || owner === spec.name || replacing.has(owner)) continue;
      return `VIP ${vip.text} already belongs to app "${owner}" (${this.apps.get(owner)?.source})`;
    }
    return undefined;
  }

  /**
   * Add or replace one app; refused with VIPCAST_ERR_PREFIX_POLICY (details: one per VIP or community) when the
   * prefix policy does not allow it, with VIPCAST_ERR_REGISTRATION on a name or VIP conflict.
   */
  upsert(spec: AppSpec): void {
    const refused = this.policyProblems(spec);
    if (refused.length > 0) throw new VipcastError('VIPCAST_ERR_PREFIX_POLICY', `app "${spec.name}": ${refused.join('; ')}`, { details: refused });
    const why = this.conflict(spec);
    if (why) throw new VipcastError('VIPCAST_ERR_REGISTRATION', why);
    this.put(spec);
  }

  remove(name: string): AppSpec | undefined {
    const app = this.apps.get(name);
    if (!app) return undefined;
    this.apps.delete(name);
    for (const v of app.vips) if (this.vipOwner.get(v.text) === name) this.vipOwner.delete(v.text);
    this.emit({ type: 'removed', app });
    return app;
  }

  /**
   * Make the apps of `source` exactly `specs`: removed ones go first (freeing their VIPs), then changes and additions.
   * Apps of other sources are untouched. Returns the per-app refusals (VIP taken by another source's app, or not
   * allowed by the prefix policy), each `name: why`.
   */
  replaceSource(source: AppSource, specs: readonly AppSpec[]): string[] {
    const wanted = new Map(specs.map((s) => [s.name, s]));
    for (const app of this.all()) {
      if (app.source === source && !wanted.has(app.name)) this.remove(app.name);
    }
    // VIPs may move between apps of this source in one go: those apps don't conflict with each other.
    const ours = new Set(specs.map((s) => s.name).filter((n) => this.apps.get(n)?.source === source));
    const refused: string[] = [];
    for (const spec of specs) {
      const refusedByPolicy = this.policyProblems(spec);
      if (refusedByPolicy.length > 0) {
        refused.push(`${spec.name}: ${refusedByPolicy.join('; ')}`);
        continue;
      }
      const why = this.conflict(spec, ours);
      if (why) {
        refused.push(`${spec.name}: ${why}`);
        continue;
      }
      this.put(spec);
    }
    return refused;
  }

  private put(spec: AppSpec): void {
    const previous = this.apps.get(spec.name);
    this.apps.set(spec.name, spec);
    if (previous) for (const v of previous.vips) if (this.vipOwner.get(v.text) === spec.name) this.vipOwner.delete(v.text);
    for (const v of spec.vips) this.vipOwner.set(v.text, spec.name);
    if (!previous) this.emit({ type: 'added', app: spec });
    else if (!sameApp(previous, spec)) this.emit({ type: 'changed', app: spec, previous });
  }

  private emit(event: RegistryEvent): void {
    for (const l of this.listeners) l(event);
  }
}

/** Deep equality of two app specs, by canonical texts. */
export function sameApp(a: AppSpec, b: AppSpec): boolean {
  return appKey(a) === appKey(b);
}

export function appKey(a: AppSpec): string {
  return JSON.stringify([
    a.name, a.source, a.vips.map((v) => v.text), a.communities.map((c) => c.text), a.monitors.map((m) => [m.text, m.params]),
    a.nats.map((n) => n.text), a.rise, a.fall, a.intervalMs, a.timeoutMs,
  ]);
}

/** True when only attributes changed that don't need the health state reset (communities, NAT, VIPs). */
export function sameChecks(a: AppSpec, b: AppSpec): boolean {
  return JSON.stringify([a.monitors.map((m) => [m.text, m.params]), a.rise, a.fall]) ===
    JSON.stringify([b.monitors.map((m) => [m.text, m.params]), b.rise, b.fall]);
}
