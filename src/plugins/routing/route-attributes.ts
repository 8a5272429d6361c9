/** The attributes of a route as they go on the wire, in one shape shared by the dry-run log and the status API. */
import type { Family, Route } from '../../plugin-api.js';
import type { BgpConfig } from '../../core/config-types.js';

export interface WireAttributes {
  prefix: string;
  next_hop: string;
  origin: string;
  communities: string[];
  large_communities: string[];
}

/** The next hop of a route of this family: local_ip, or 0.0.0.0 / :: (the session's own address). */
export function nextHopOf(family: Family, bgp: Pick<BgpConfig, 'localIp' | 'nextHop'>): string {
  // With next_hop: local_ip an IPv6 route still needs an IPv6 next hop: the session's own address is what gobgpd uses.
  if (bgp.nextHop === 'self' || bgp.localIp === undefined || (family === 'ipv6') !== bgp.localIp.includes(':')) {
    return family === 'ipv4' ? '0.0.0.0' : '::';
  }
  return bgp.localIp;
}

export function routeAttributes(route: Route, bgp: Pick<BgpConfig, 'localIp' | 'nextHop'>): WireAttributes {
  return {
    prefix: route.prefix.text,
    next_hop: nextHopOf(route.prefix.family, bgp),
    origin: route.origin,
    communities: route.communities.filter((c) => c.type === 'standard').map((c) => c.text),
    large_communities: route.communities.filter((c) => c.type === 'large').map((c) => c.text),
  };
}

/** A stable key of everything that goes on the wire for a route: two routes with the same key need no UPDATE. */
export function routeKey(route: Route): string {
  return `${route.prefix.text}|${route.origin}|${route.communities.map((c) => c.text).join(',')}`;
}
