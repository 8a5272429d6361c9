/**
 * The gobgp router's paths: announce and withdraw (one at a time or streamed in batches) and the locally originated
 * paths read back from gobgpd's global RIB. Every route is checked again and its wire path built at the last step.
 */
import type { Community, Prefix, Route } from '../../../plugin-api.js';
import type { BgpConfig } from '../../../core/config-types.js';
import type { Logger } from '../../../core/logger.js';
import { VipcastError } from '../../../core/errors.js';
import { nextHopOf } from '../route-attributes.js';
import type { GobgpConnection } from './connection.js';
import { FAMILIES, checkRoute, isLocalPath, pathFor, readPath, type ApiPath } from './wire.js';

export interface GobgpPathsOptions {
  bgp: BgpConfig;
  /** The router's logger (component gobgp). */
  log: Logger;
  connection: GobgpConnection;
}

export class GobgpPaths {
  private readonly bgp: BgpConfig;
  private readonly log: Logger;
  private readonly connection: GobgpConnection;
  /**
   * The last route this process announced per prefix: gobgpd stores no app names, and this reports communities back
   * in the caller's order.
   */
  private readonly announced = new Map<string, Route>();

  constructor(opts: GobgpPathsOptions) {
    this.bgp = opts.bgp;
    this.log = opts.log;
    this.connection = opts.connection;
  }

  /**
   * Invariant 4 at the last step: the route is checked again and its wire path built (a withdrawal carries no
   * communities); a refusal is logged here, naming the RPC it never reached, and thrown.
   */
  private wirePath(route: Route, withdraw: boolean, rpc: string): { prefix: Prefix; path: ApiPath; nextHop: string } {
    const nextHop = nextHopOf(route.prefix.family, this.bgp);
    const r = withdraw ? { ...route, communities: [] } : route;
    try {
      const prefix = checkRoute(r, nextHop);
      return { prefix, path: pathFor(r, prefix, nextHop), nextHop };
    } catch (err) {
      this.log.error({ err, app: route.app }, `refused an invalid route before ${rpc}`);
      throw err;
    }
  }

  async announce(route: Route, reason: string): Promise<void> {
    const calls = this.connection.calls();
    const { prefix, path, nextHop } = this.wirePath(route, false, 'AddPath');
    await calls.call('AddPath', { table_type: 'GLOBAL', path });
    this.announced.set(prefix.text, route);
    this.log.info({ event: 'route', action: 'announce', prefix: prefix.text, app: route.app, reason, next_hop: nextHop, origin: route.origin, communities: route.communities.map((c) => c.text) }, `announce ${prefix.text}`);
  }

  async withdraw(route: Route, reason: string): Promise<void> {
    const calls = this.connection.calls();
    const { prefix, path } = this.wirePath(route, true, 'DeletePath');
    await calls.call('DeletePath', { table_type: 'GLOBAL', family: FAMILIES[prefix.family], path });
    this.announced.delete(prefix.text);
    this.log.info({ event: 'route', action: 'withdraw', prefix: prefix.text, app: route.app, reason }, `withdraw ${prefix.text}`);
  }

  /** See GobgpRouter.announceMany / withdrawMany. */
  async streamPaths(routes: readonly Route[], reason: string, withdraw: boolean): Promise<void> {
    const calls = this.connection.calls();
    const ok: Array<{ route: Route; prefix: Prefix; path: ApiPath }> = [];
    const refused: VipcastError[] = [];
    for (const route of routes) {
      try {
        const { prefix, path } = this.wirePath(route, withdraw, 'AddPathStream');
        ok.push({ route, prefix, path: withdraw ? { ...path, is_withdraw: true } : path });
      } catch (err) {
        refused.push(err as VipcastError);
      }
    }
    const BATCH = 500;
    const reqs: object[] = [];
    for (let i = 0; i < ok.length; i += BATCH) reqs.push({ table_type: 'GLOBAL', paths: ok.slice(i, i + BATCH).map((x) => x.path) });
    if (reqs.length > 0) await calls.clientStream('AddPathStream', reqs);
    for (const { route, prefix } of ok) {
      if (withdraw) this.announced.delete(prefix.text);
      else this.announced.set(prefix.text, route);
    }
    if (ok.length > 0) {
      const prefixes = ok.map((x) => x.prefix.text);
      this.log.info({ event: 'route', action: withdraw ? 'withdraw' : 'announce', count: ok.length, prefixes: prefixes.length > 20 ? [...prefixes.slice(0, 20), '...'] : prefixes, reason }, `${withdraw ? 'withdraw' : 'announce'} ${ok.length} routes`);
    }
    if (refused.length > 0) {
      throw new VipcastError('VIPCAST_ERR_VALUE', `${refused.length} of ${routes.length} routes refused: ${refused.map((e) => e.message).join('; ')}`, { cause: refused[0] });
    }
  }

  /** See GobgpRouter.listRoutes. */
  async listRoutes(): Promise<Route[]> {
    const calls = this.connection.calls();
    const out: Route[] = [];
    const seen = new Set<string>();
    for (const family of ['ipv4', 'ipv6'] as const) {
      const dests = await calls.stream<{ destination: { prefix: string; paths: ApiPath[] } | null }>('ListPath', { table_type: 'GLOBAL', family: FAMILIES[family] });
      for (const d of dests) {
        for (const p of d.destination?.paths ?? []) {
          if (!isLocalPath(p)) continue;
          const read = readPath(p);
          if (typeof read === 'string') {
            this.log.warn({ prefix: d.destination?.prefix, reason: read }, 'gobgpd holds a path vipcast cannot read; ignoring it');
            continue;
          }
          if (seen.has(read.prefix.text)) continue;
          seen.add(read.prefix.text);
          const mine = this.announced.get(read.prefix.text);
          out.push({
            prefix: read.prefix,
            app: mine?.app ?? '',
            origin: read.origin,
            communities: mine && sameCommunities(mine.communities, read.communities) ? mine.communities : read.communities,
          });
        }
      }
    }
    // Forget names of paths gobgpd no longer has (it restarted): a later stray must not inherit a stale name.
    for (const prefix of this.announced.keys()) {
      if (!seen.has(prefix)) this.announced.delete(prefix);
    }
    return out;
  }
}

function sameCommunities(a: readonly Community[], b: readonly Community[]): boolean {
  if (a.length !== b.length) return false;
  const key = (cs: readonly Community[]) => cs.map((c) => `${c.type}:${c.text}`).sort().join(',');
  return key(a) === key(b);
}
