/**
 * The desired state of the world, a pure function of the apps as the reconciler sees them (spec, health, whether the
 * host holds their address, any hold) and the global route attributes. No I/O, no clock of its own: `now` is given.
 */
import type { AppSpec, Community, NatBinding, Route, VipBinding } from '../plugin-api.js';
import type { BgpConfig } from './config-types.js';
import { parseCommunity } from './values.js';

/** RFC 8326 GRACEFUL_SHUTDOWN, 65535:0. */
export const GRACEFUL_SHUTDOWN: Community = parseCommunity('graceful-shutdown', 'graceful-shutdown');

/**
 * Why a healthy app must not be announced now (maintenance, flap damping). Its address and NAT rules stay (the service
 * is still there); only its routes go.
 */
export interface Hold {
  /** For /status and the withdraw's log line ("maintenance (API)", "flap damping: penalty 3100 > 2000"). */
  readonly reason: string;
  /**
   * Until then (Date.now() ms) the app's routes stay announced with GRACEFUL_SHUTDOWN (65535:0) added, so routers that
   * honour RFC 8326 move traffic away first; withdrawn after it. Absent or past: withdrawn at once.
   */
  readonly drainUntil?: number;
}

/** One app as the desired state needs it. */
export interface AppView {
  readonly spec: AppSpec;
  /** Its health: unknown until the first verdict. */
  readonly state: 'unknown' | 'up' | 'down';
  /** Its address and NAT rules stay on the host (UP, or DOWN while its cleanup timer runs). */
  readonly hostHeld: boolean;
  /** A hold on it, asked only when it is UP. */
  readonly hold?: Hold;
}

export interface Desired {
  /** Routes to announce, by prefix text. */
  readonly routes: ReadonlyMap<string, Route>;
  /** Addresses to keep on the host, by prefix text. */
  readonly vips: ReadonlyMap<string, VipBinding>;
  /** NAT rules of the addresses kept. */
  readonly nat: readonly NatBinding[];
  /**
   * Prefixes whose paths, addresses and rules are left as they are: apps not checked yet (a restart must not withdraw
   * and re-announce healthy routes), and unknown prefixes while a discovery source has not delivered.
   */
  readonly undecided: ReadonlySet<string>;
  /** Apps whose routes are wanted (UP and not held, or draining). */
  readonly upApps: ReadonlySet<string>;
  /** The earliest end of a drain in progress (Date.now() ms), Infinity when none: a pass is due then. */
  readonly drainEnds: number;
}

/**
 * The routes of each app spec for the last route attributes and drain state asked: an event pass (one app changed
 * among a thousand) then builds no route object for the others, and plan.ts sees the very objects the model holds
 * (announces() skips comparing their attributes). Specs and bgp configs are immutable: a changed app or a reload
 * brings new objects, and the entry is built again.
 */
const routesCache = new WeakMap<AppSpec, { bgp: object; draining: boolean; routes: Route[] }>();

/** An UP app's routes: one per VIP, global communities then the app's own, de-duplicated; `draining` adds 65535:0. */
export function appRoutes(app: AppSpec, bgp: Pick<BgpConfig, 'communities' | 'origin'>, draining = false): Route[] {
  const cached = routesCache.get(app);
  if (cached !== undefined && cached.bgp === bgp && cached.draining === draining) return cached.routes;
  const routes = buildRoutes(app, bgp, draining);
  routesCache.set(app, { bgp, draining, routes });
  return routes;
}

function buildRoutes(app: AppSpec, bgp: Pick<BgpConfig, 'communities' | 'origin'>, draining: boolean): Route[] {
  const seen = new Set<string>();
  const communities: Community[] = [];
  for (const c of [...bgp.communities, ...app.communities, ...(draining ? [GRACEFUL_SHUTDOWN] : [])]) {
    if (!seen.has(c.text)) {
      seen.add(c.text);
      communities.push(c);
    }
  }
  return app.vips.map((prefix) => ({ prefix, app: app.name, origin: bgp.origin, communities }));
}

export function desiredState(apps: readonly AppView[], bgp: Pick<BgpConfig, 'communities' | 'origin'>, now: number): Desired {
  const routes = new Map<string, Route>();
  const vips = new Map<string, VipBinding>();
  const nat: NatBinding[] = [];
  const undecided = new Set<string>();
  const upApps = new Set<string>();
  let drainEnds = Infinity;
  for (const { spec: app, state, hostHeld, hold } of apps) {
    const up = state === 'up';
    if (state === 'unknown') for (const v of app.vips) undecided.add(v.text);
    if (hostHeld || up) {
      for (const vip of app.vips) {
        vips.set(vip.text, { app: app.name, prefix: vip });
        // gocast's NAT target is IPv4 local_ip; the host network decides per family.
        for (const rule of app.nats) nat.push({ app: app.name, vip, rule });
      }
    }
    // Held (maintenance, flap damping): announced with 65535:0 while its drain lasts, then not at all.
    const draining = up && hold?.drainUntil !== undefined && hold.drainUntil > now;
    if (draining) drainEnds = Math.min(drainEnds, hold!.drainUntil!);
    if (up && (!hold || draining)) {
      upApps.add(app.name);
      for (const r of appRoutes(app, bgp, draining)) routes.set(r.prefix.text, r);
    }
  }
  return { routes, vips, nat, undecided, upApps, drainEnds };
}

/**
 * While a discovery source has not delivered its apps, paths, addresses and rules of prefixes no known app has may be
 * its apps' from an earlier run: they are undecided too.
 */
export function holdUnknown(desired: Desired, apps: readonly AppSpec[], present: Iterable<string>): Desired {
  const known = new Set(apps.flatMap((a) => a.vips.map((v) => v.text)));
  const undecided = new Set(desired.undecided);
  for (const key of present) if (!known.has(key)) undecided.add(key);
  return { ...desired, undecided };
}
