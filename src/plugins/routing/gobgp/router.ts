/**
 * The `gobgp` router: drives a local gobgpd (GoBGP v3) over gRPC.
 *
 * vipcast owns gobgpd's configuration. On every (re)connection it reads GetBgp: asn 0 means a fresh gobgpd (first
 * start, or a restart that lost everything), so it calls StartBgp and restores the peers and their export policies,
 * then tells its listeners (`onReconnect`) so the reconciler re-announces at once. Another AS is a conflict that
 * vipcast refuses to paper over. While gobgpd does not answer every method rejects at once with a VipcastError and
 * a probe keeps trying (gRPC reconnect backoff capped at 500 ms, plus a GetBgp probe every second).
 *
 * This class only puts the parts together: `connection.ts` (client, probe, link state, global setup), `paths.ts`
 * (announce, withdraw, the RIB read back) and `peers.ts` (peers, their export policies, their states).
 */
import type { PeerSpec, PeerState, Route, Router } from '../../../plugin-api.js';
import type { BgpConfig, RoutingConfig } from '../../../core/config-types.js';
import type { Logger } from '../../../core/logger.js';
import type { VipcastError } from '../../../core/errors.js';
import { GobgpConnection } from './connection.js';
import { runIp, type IpRunner } from './net.js';
import { GobgpPaths } from './paths.js';
import { GobgpPeers } from './peers.js';

export interface GobgpRouterOptions {
  bgp: BgpConfig;
  /** Only the address: whether gobgpd is managed is the daemon's business (a managed one is up before the router starts). */
  gobgp: Pick<RoutingConfig['gobgp'], 'address'>;
  log: Logger;
  /** Runs `ip` for peer discovery (default: the host's `ip`; tests run it inside a namespace). */
  runIp?: IpRunner;
  /** GetBgp probe period while connected: how soon a gobgpd restart the channel missed is noticed. Default 1000. */
  probeIntervalMs?: number;
  /** Deadline of each gRPC call. Default 10000. */
  callTimeoutMs?: number;
}

export class GobgpRouter implements Router {
  readonly name = 'gobgp';
  private readonly connection: GobgpConnection;
  private readonly paths: GobgpPaths;
  private readonly peers: GobgpPeers;

  constructor(opts: GobgpRouterOptions) {
    const log = opts.log.child({ component: 'gobgp' });
    const ip = opts.runIp ?? runIp;
    this.peers = new GobgpPeers({ bgp: opts.bgp, log, runIp: ip });
    this.connection = new GobgpConnection({
      bgp: opts.bgp,
      address: opts.gobgp.address,
      log,
      runIp: ip,
      probeIntervalMs: opts.probeIntervalMs ?? 1000,
      callTimeoutMs: opts.callTimeoutMs ?? 10_000,
      peers: this.peers,
    });
    this.paths = new GobgpPaths({ bgp: opts.bgp, log, connection: this.connection });
  }

  /** True while gobgpd answers and runs with vipcast's global config. */
  get connected(): boolean {
    return this.connection.connected;
  }

  /**
   * Called each time gobgpd becomes usable: first connection, reconnection, or a restarted gobgpd that was just
   * reconfigured (global + peers). The RIB may be empty: resync routes now. Returns an unsubscribe function.
   */
  onReconnect(cb: () => void): () => void {
    return this.connection.onReconnect(cb);
  }

  /** Called when gobgpd stops answering (or turns out to run another AS). Returns an unsubscribe function. */
  onDisconnect(cb: (err: VipcastError) => void): () => void {
    return this.connection.onDisconnect(cb);
  }

  /**
   * Connect and set up global config. Resolves when gobgpd is configured, or right away with a warning when it does
   * not answer yet (the probe keeps trying). Rejects with VIPCAST_ERR_ROUTER_CONFLICT when gobgpd runs another AS
   * or cannot listen on its port.
   */
  start(): Promise<void> {
    return this.connection.start();
  }

  announce(route: Route, reason: string): Promise<void> {
    return this.paths.announce(route, reason);
  }

  withdraw(route: Route, reason: string): Promise<void> {
    return this.paths.withdraw(route, reason);
  }

  /**
   * Announce many routes in one AddPathStream call (batches of 500 paths): about 10x faster than one AddPath per
   * route (10,000 routes: ~1 s instead of ~10 s), for full resyncs after a gobgpd restart. Each route is validated
   * as in `announce`; invalid ones are refused (VIPCAST_ERR_VALUE, listed in one error after the valid ones went in).
   */
  announceMany(routes: readonly Route[], reason: string): Promise<void> {
    return this.paths.streamPaths(routes, reason, false);
  }

  /** Withdraw many routes in one AddPathStream call (paths marked as withdrawals). */
  withdrawMany(routes: readonly Route[], reason: string): Promise<void> {
    return this.paths.streamPaths(routes, reason, true);
  }

  /** The locally originated paths in gobgpd's global RIB. Paths this process did not announce have app ''. */
  listRoutes(): Promise<Route[]> {
    return this.paths.listRoutes();
  }

  /**
   * Level-triggered like the rest: the peers are remembered and restored into every fresh gobgpd. While gobgpd does
   * not answer this resolves after recording them (the probe applies them on reconnection), so vipcast starts and
   * reloads with gobgpd down; a conflict (gobgpd runs another AS) rejects.
   */
  applyPeers(peers: readonly PeerSpec[]): Promise<void> {
    return this.peers.apply(this.connection, peers);
  }

  /**
   * StopBgp: gobgpd drops every peer, path and its global config (listen socket included), so a new router can
   * start it again with another AS, router id or listen port (a reload that changes the speaker). This router stops
   * probing, otherwise it would configure gobgpd again at once; close it next.
   */
  stopSpeaker(): Promise<void> {
    return this.connection.stopSpeaker();
  }

  peerStates(): Promise<PeerState[]> {
    return this.peers.states(this.connection);
  }

  /** Releases the connection; withdraws nothing (gobgpd bound to vipcast's life drops the routes). Safe twice. */
  close(): Promise<void> {
    return this.connection.close();
  }
}
