/** The attributes of a route as they go on the wire, in one shape shared by the dry-run log and the status API. */
import type { Route } from '../../plugin-api.js';
import type { BgpConfig } from '../../core/config-types.js';

export interface WireAttributes {
  prefix: string;
  next_hop: string;
  origin: string;
  communities: string[];
  large_communities: string[];
}

export function routeAttributes(route: Route, bgp: Pick<BgpConfig, 'localIp' | 'nextHop'>): WireAttributes {
  const self = route.prefix.family === 'ipv4' ? '0.0.0.0' : '::';
  // With next_hop: local_ip an IPv6 route still needs an IPv6 next hop: the session's own address is what gobgpd uses.
  const nextHop = bgp.nextHop === 'self' || bgp.localIp === undefined || (route.prefix.family === 'ipv6') !== bgp.localIp.includes(':')
    ? self
    : bgp.localIp;
  return {
    prefix: route.prefix.text,
    next_hop: nextHop,
    origin: route.origin,
    communities: route.communities.filter((c) => c.type === 'standard').map((c) => c.text),
    large_communities: route.communities.filter((c) => c.type === 'large').map((c) => c.text),
  };
}

/** A stable key of everything that goes on the wire for a route: two routes with the same key need no UPDATE. */
export function routeKey(route: Route): string {
  return `${route.prefix.text}|${route.origin}|${route.communities.map((c) => c.text).join(',')}`;
}
