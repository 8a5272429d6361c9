/**
 * The `dry-run` router: logs every UPDATE production would send as one JSON line and keeps an in-memory RIB, so
 * staging shows exactly what production would announce, with no gobgpd and no privileges.
 */
import type { PeerSpec, PeerState, Route, Router } from '../../../plugin-api.js';
import type { BgpConfig } from '../../../core/config-types.js';
import type { Logger } from '../../../core/logger.js';
import { routeAttributes } from '../route-attributes.js';

export class DryRunRouter implements Router {
  readonly name = 'dry-run';
  private readonly rib = new Map<string, Route>();
  private peers: readonly PeerSpec[] = [];

  constructor(private readonly bgp: BgpConfig, private readonly log: Logger) {}

  async start(): Promise<void> {
    this.log.info({ event: 'router', action: 'start', local_as: this.bgp.localAs, router_id: this.bgp.localIp ?? 'auto', listen_port: this.bgp.listenPort }, 'dry-run router: no BGP session is made');
  }

  async announce(route: Route, reason: string): Promise<void> {
    const replaced = this.rib.has(route.prefix.text);
    this.rib.set(route.prefix.text, route);
    this.log.info({ event: 'route', action: 'announce', ...routeAttributes(route, this.bgp), replaces: replaced, app: route.app, reason, per_peer: this.perPeer() }, `announce ${route.prefix.text}`);
  }

  async withdraw(route: Route, reason: string): Promise<void> {
    this.rib.delete(route.prefix.text);
    this.log.info({ event: 'route', action: 'withdraw', prefix: route.prefix.text, app: route.app, reason }, `withdraw ${route.prefix.text}`);
  }

  async listRoutes(): Promise<Route[]> {
    return [...this.rib.values()];
  }

  async applyPeers(peers: readonly PeerSpec[]): Promise<void> {
    const key = (p: PeerSpec) => p.address ?? 'default-gateway';
    const before = new Map(this.peers.map((p) => [key(p), p]));
    const after = new Map(peers.map((p) => [key(p), p]));
    for (const [addr, p] of after) {
      const old = before.get(addr);
      if (!old) this.log.info({ event: 'peer', action: 'add', peer: addr, peer_as: p.asn, md5: p.md5Password !== undefined }, `add peer ${addr}`);
      else if (!samePeer(old, p)) this.log.info({ event: 'peer', action: 'update', peer: addr, peer_as: p.asn, md5: p.md5Password !== undefined }, `update peer ${addr}`);
    }
    for (const addr of before.keys()) {
      if (!after.has(addr)) this.log.info({ event: 'peer', action: 'delete', peer: addr }, `delete peer ${addr}`);
    }
    this.peers = peers;
  }

  async peerStates(): Promise<PeerState[]> {
    return this.peers.map((p) => ({ address: p.address ?? 'default-gateway', asn: p.asn, state: 'dry-run', uptimeSeconds: 0, prefixesSent: this.rib.size, prefixesReceived: 0 }));
  }

  async close(): Promise<void> {
    this.rib.clear();
  }

  private perPeer(): Array<{ peer: string; extra_communities: string[] }> | undefined {
    const withExtra = this.peers.filter((p) => p.communities.length > 0);
    if (withExtra.length === 0) return undefined;
    return withExtra.map((p) => ({ peer: p.address ?? 'default-gateway', extra_communities: p.communities.map((c) => c.text) }));
  }
}

function samePeer(a: PeerSpec, b: PeerSpec): boolean {
  return a.asn === b.asn && a.multiHop === b.multiHop && a.md5Password === b.md5Password &&
    a.communities.map((c) => c.text).join() === b.communities.map((c) => c.text).join();
}
