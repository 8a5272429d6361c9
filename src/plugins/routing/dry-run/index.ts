/**
 * The `dry-run` router: logs every UPDATE production would send as one JSON line and keeps an in-memory RIB, so
 * staging shows exactly what production would announce, with no gobgpd and no privileges.
 */
import { PLUGIN_API_VERSION, type PeerSpec, type PeerState, type Route, type Router, type RouterPlugin } from '../../../plugin-api.js';
import type { BgpConfig } from '../../../core/config-types.js';
import type { Logger } from '../../../core/logger.js';
import { routeAttributes } from '../route-attributes.js';
import { describe } from '../../../core/config-schema.js';
import { valueError } from '../../../core/errors.js';

/** The dry-run router takes no settings. */
export type DryRunSettings = Readonly<Record<string, never>>;

/**
 * The built-in `dry-run` router as a plugin (routing.plugin: dry-run, or --dry-run which forces it). No settings:
 * `routing.settings`, if given, must be empty.
 */
const dryRun: RouterPlugin<DryRunSettings> = {
  kind: 'router',
  name: 'dry-run',
  version: PLUGIN_API_VERSION,
  apiVersion: `^${PLUGIN_API_VERSION}`,
  parseSettings(raw, ctx) {
    if (raw === undefined || raw === null) return Object.freeze({});
    if (typeof raw !== 'object' || Array.isArray(raw)) throw valueError(ctx.path, `${describe(raw)} is not a mapping (routing.plugin dry-run takes no settings)`);
    const keys = Object.keys(raw);
    if (keys.length) throw valueError(`${ctx.path}.${keys[0]}`, 'unknown key: routing.plugin dry-run takes no settings');
    return Object.freeze({});
  },
  sameSettings: () => true,
  // The daemon's PluginLogger is a pino Logger, already bound to component 'router' (container.ts): a second
  // child({ component }) would print the key twice in every line.
  create: (ctx) => new DryRunRouter({ ...ctx.bgp, nextHop: ctx.bgp.nextHop ?? 'local_ip' }, ctx.log as Logger),
};

export default dryRun;

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
