/**
 * The `gobgp` router: drives a local gobgpd (GoBGP v3) over gRPC.
 *
 * vipcast owns gobgpd's configuration. On every (re)connection it reads GetBgp: asn 0 means a fresh gobgpd (first
 * start, or a restart that lost everything), so it calls StartBgp and restores the peers and their export policies,
 * then tells its listeners (`onReconnect`) so the reconciler re-announces at once. Another AS is a conflict that
 * vipcast refuses to paper over. While gobgpd does not answer every method rejects at once with a VipcastError and
 * a probe keeps trying (gRPC reconnect backoff capped at 500 ms, plus a GetBgp probe every second).
 */
import type { Community, Family, PeerSpec, PeerState, Prefix, Route, Router } from '../../../plugin-api.js';
import type { BgpConfig, RoutingConfig } from '../../../core/config-types.js';
import type { Logger } from '../../../core/logger.js';
import { VipcastError } from '../../../core/errors.js';
import { parseAddress } from '../../../core/values.js';
import { nextHopOf } from '../route-attributes.js';
import { ConnectivityState, GobgpCallError, GobgpClient } from './client.js';
import { localIpFor, resolveDefaultGateway, runIp, type IpRunner } from './net.js';
import {
  FAMILIES, GLOBAL_ASSIGNMENT, POLICY_PREFIX, checkRoute, isLocalPath, neighborSetFor, pathFor, peerDiff, peerFor,
  policyFor, policyKey, policyNames, readPath,
  type ApiDefinedSet, type ApiGlobal, type ApiPath, type ApiPeer, type ApiPolicy, type ApiPolicyAssignment, type DesiredPeer,
} from './wire.js';

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

type Link = 'down' | 'up' | 'conflict';

const familyOf = (address: string): Family => (address.includes(':') ? 'ipv6' : 'ipv4');

export class GobgpRouter implements Router {
  readonly name = 'gobgp';
  private readonly bgp: BgpConfig;
  private readonly address: string;
  private readonly log: Logger;
  private readonly runIp: IpRunner;
  private readonly probeIntervalMs: number;
  private readonly callTimeoutMs: number;
  private client: GobgpClient | undefined;
  private link: Link = 'down';
  private lastError: VipcastError | undefined;
  private closed = false;
  /** No more probing: closed, or the speaker was stopped on purpose. */
  private halted = false;
  private probeTimer: NodeJS.Timeout | undefined;
  private probing: Promise<void> | undefined;
  /** Serializes global setup and peer changes (the probe restores peers while the reconciler may apply new ones). */
  private lock: Promise<unknown> = Promise.resolve();
  /** The peers vipcast wants; restored into a fresh gobgpd. Starts as the config's, replaced by applyPeers. */
  private desiredPeers: readonly PeerSpec[];
  /** A peer sync failed (e.g. no default gateway yet): the probe retries it. */
  private peersDirty = false;
  private lastPeerError = '';
  private starting = true;
  /** The last probe failed because gobgpd did not answer (as opposed to refusing). */
  private unreachable = true;
  /**
   * The last route this process announced per prefix: gobgpd stores no app names, and this reports communities back
   * in the caller's order.
   */
  private readonly announced = new Map<string, Route>();
  private readonly reconnectListeners = new Set<() => void>();
  private readonly disconnectListeners = new Set<(err: VipcastError) => void>();

  constructor(opts: GobgpRouterOptions) {
    this.bgp = opts.bgp;
    this.address = opts.gobgp.address;
    this.log = opts.log.child({ component: 'gobgp' });
    this.runIp = opts.runIp ?? runIp;
    this.probeIntervalMs = opts.probeIntervalMs ?? 1000;
    this.callTimeoutMs = opts.callTimeoutMs ?? 10_000;
    this.desiredPeers = opts.bgp.peers;
  }

  /** True while gobgpd answers and runs with vipcast's global config. */
  get connected(): boolean {
    return this.link === 'up';
  }

  /**
   * Called each time gobgpd becomes usable: first connection, reconnection, or a restarted gobgpd that was just
   * reconfigured (global + peers). The RIB may be empty: resync routes now. Returns an unsubscribe function.
   */
  onReconnect(cb: () => void): () => void {
    this.reconnectListeners.add(cb);
    return () => this.reconnectListeners.delete(cb);
  }

  /** Called when gobgpd stops answering (or turns out to run another AS). Returns an unsubscribe function. */
  onDisconnect(cb: (err: VipcastError) => void): () => void {
    this.disconnectListeners.add(cb);
    return () => this.disconnectListeners.delete(cb);
  }

  /**
   * Connect and set up global config. Resolves when gobgpd is configured, or right away with a warning when it does
   * not answer yet (the probe keeps trying). Rejects with VIPCAST_ERR_ROUTER_CONFLICT when gobgpd runs another AS
   * or cannot listen on its port.
   */
  async start(): Promise<void> {
    if (this.closed) throw new VipcastError('VIPCAST_ERR_ROUTER', 'gobgp router is closed');
    if (this.client) return;
    this.client = new GobgpClient(this.address, { timeoutMs: this.callTimeoutMs });
    await this.probe();
    this.starting = false;
    if (this.link === 'conflict') {
      const err = this.lastError!;
      this.stop();
      this.client = undefined;
      throw err;
    }
    if (this.link === 'down') {
      const msg = this.unreachable ? 'gobgpd is not answering yet; vipcast keeps trying and catches up when it does' : 'gobgpd refused vipcast\'s setup; retrying';
      this.log[this.unreachable ? 'warn' : 'error']({ err: this.lastError, address: this.address }, msg);
    }
    void this.watchChannel();
    this.schedule();
  }

  /**
   * Invariant 4 at the last step: the route is checked again and its wire path built (a withdrawal carries no
   * communities); a refusal is logged here, naming the RPC it never reached, and thrown.
   */
  private wirePath(route: Route, withdraw: boolean, rpc: string): { prefix: Prefix; path: ApiPath; nextHop: string } {
    const nextHop = this.nextHopFor(route);
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
    const client = this.ensureUp();
    const { prefix, path, nextHop } = this.wirePath(route, false, 'AddPath');
    await this.call(client, 'AddPath', { table_type: 'GLOBAL', path });
    this.announced.set(prefix.text, route);
    this.log.info({ event: 'route', action: 'announce', prefix: prefix.text, app: route.app, reason, next_hop: nextHop, origin: route.origin, communities: route.communities.map((c) => c.text) }, `announce ${prefix.text}`);
  }

  async withdraw(route: Route, reason: string): Promise<void> {
    const client = this.ensureUp();
    const { prefix, path } = this.wirePath(route, true, 'DeletePath');
    await this.call(client, 'DeletePath', { table_type: 'GLOBAL', family: FAMILIES[prefix.family], path });
    this.announced.delete(prefix.text);
    this.log.info({ event: 'route', action: 'withdraw', prefix: prefix.text, app: route.app, reason }, `withdraw ${prefix.text}`);
  }

  /**
   * Announce many routes in one AddPathStream call (batches of 500 paths): about 10x faster than one AddPath per
   * route (10,000 routes: ~1 s instead of ~10 s), for full resyncs after a gobgpd restart. Each route is validated
   * as in `announce`; invalid ones are refused (VIPCAST_ERR_VALUE, listed in one error after the valid ones went in).
   */
  async announceMany(routes: readonly Route[], reason: string): Promise<void> {
    await this.streamPaths(routes, reason, false);
  }

  /** Withdraw many routes in one AddPathStream call (paths marked as withdrawals). */
  async withdrawMany(routes: readonly Route[], reason: string): Promise<void> {
    await this.streamPaths(routes, reason, true);
  }

  private async streamPaths(routes: readonly Route[], reason: string, withdraw: boolean): Promise<void> {
    const client = this.ensureUp();
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
    if (reqs.length > 0) {
      try {
        await client.clientStream('AddPathStream', reqs);
      } catch (err) {
        throw this.failed(err);
      }
    }
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

  /** The locally originated paths in gobgpd's global RIB. Paths this process did not announce have app ''. */
  async listRoutes(): Promise<Route[]> {
    const client = this.ensureUp();
    const out: Route[] = [];
    const seen = new Set<string>();
    for (const family of ['ipv4', 'ipv6'] as const) {
      const dests = await this.callStream<{ destination: { prefix: string; paths: ApiPath[] } | null }>(client, 'ListPath', { table_type: 'GLOBAL', family: FAMILIES[family] });
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

  /**
   * Level-triggered like the rest: the peers are remembered and restored into every fresh gobgpd. While gobgpd does
   * not answer this resolves after recording them (the probe applies them on reconnection), so vipcast starts and
   * reloads with gobgpd down; a conflict (gobgpd runs another AS) rejects.
   */
  async applyPeers(peers: readonly PeerSpec[]): Promise<void> {
    this.desiredPeers = peers;
    if (this.link === 'down' && this.client && !this.halted) {
      this.peersDirty = true;
      this.log.warn({ peers: peers.length }, 'gobgpd is not answering: the peers will be applied when it does');
      return;
    }
    const client = this.ensureUp();
    await this.exclusive(() => this.syncPeers(client, peers));
  }

  /**
   * StopBgp: gobgpd drops every peer, path and its global config (listen socket included), so a new router can
   * start it again with another AS, router id or listen port (a reload that changes the speaker). This router stops
   * probing, otherwise it would configure gobgpd again at once; close it next.
   */
  async stopSpeaker(): Promise<void> {
    const client = this.ensureUp();
    this.halted = true;
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    this.link = 'down';
    this.lastError = new VipcastError('VIPCAST_ERR_ROUTER', 'BGP was stopped in gobgpd (stopSpeaker); this router is done');
    try {
      await client.unary('StopBgp', {});
      this.log.info({ address: this.address }, 'stopped BGP in gobgpd (peers, paths and global config dropped)');
    } catch (err) {
      throw toRouterError(err, this.address);
    }
  }

  async peerStates(): Promise<PeerState[]> {
    const client = this.ensureUp();
    const res = await this.callStream<{ peer: ApiPeer | null }>(client, 'ListPeer', { enableAdvertised: true });
    const now = Date.now() / 1000;
    return res.flatMap(({ peer }) => {
      if (!peer) return [];
      const state = (peer.state?.session_state || 'UNKNOWN').toLowerCase();
      const up = peer.timers?.state?.uptime?.seconds;
      // Built field by field: gobgpd's Peer carries the MD5 password, which must never reach the API.
      const s: PeerState = {
        address: peer.state?.neighbor_address || peer.conf?.neighbor_address || '',
        asn: peer.conf?.peer_asn ?? 0,
        state,
        uptimeSeconds: state === 'established' && up ? Math.max(0, Math.floor(now - Number(up))) : 0,
        prefixesSent: peer.afi_safis.reduce((n, a) => n + Number(a.state?.advertised ?? 0), 0),
        prefixesReceived: peer.afi_safis.reduce((n, a) => n + Number(a.state?.received ?? 0), 0),
      };
      return [s];
    });
  }

  /** Releases the connection; withdraws nothing (gobgpd bound to vipcast's life drops the routes). Safe twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.halted = true;
    this.stop();
    this.reconnectListeners.clear();
    this.disconnectListeners.clear();
  }

  // ---- connection -------------------------------------------------------------------------------------------

  private stop(): void {
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    this.client?.close();
  }

  private schedule(): void {
    if (this.halted) return;
    clearTimeout(this.probeTimer);
    // Fast while down (the channel's own backoff is capped at 500 ms), relaxed when up, slow on a conflict.
    // gobgpd refusing our setup (not merely absent) gets 2 s: each retry runs `ip route get` and StartBgp again.
    const delay = this.link === 'up' ? this.probeIntervalMs : this.link === 'conflict' ? 5000 : this.unreachable ? 250 : 2000;
    this.probeTimer = setTimeout(() => {
      void this.probe().finally(() => this.schedule());
    }, delay);
    this.probeTimer.unref?.();
  }

  /** Reacts to channel state changes at once instead of waiting for the next probe. */
  private async watchChannel(): Promise<void> {
    const client = this.client!;
    while (!this.halted) {
      const s = client.state(true);
      await client.waitForChange(s, 30_000);
      if (this.halted) return;
      const now = client.state(false);
      if (now === s) continue;
      if (now === ConnectivityState.READY && this.link !== 'up') void this.probe();
      else if (now !== ConnectivityState.READY && now !== ConnectivityState.CONNECTING && this.link === 'up') void this.probe();
    }
  }

  /** One check of gobgpd: reachable, configured with our AS, peers in place. Never throws; single flight. */
  private probe(): Promise<void> {
    if (!this.probing) {
      this.probing = this.doProbe().finally(() => {
        this.probing = undefined;
      });
    }
    return this.probing;
  }

  private async doProbe(): Promise<void> {
    const client = this.client;
    if (!client || this.halted) return;
    try {
      const res = await client.unary<{ global: ApiGlobal | null }>('GetBgp', {}, Math.min(this.callTimeoutMs, 3000));
      const g = res.global;
      let fresh = false;
      if (!g || g.asn === 0) {
        await this.exclusive(() => this.startBgp(client));
        fresh = true;
      } else if (g.asn !== this.bgp.localAs) {
        throw new VipcastError('VIPCAST_ERR_ROUTER_CONFLICT', `gobgpd at ${this.address} already runs with AS ${g.asn} (router id ${g.router_id}), but bgp.local_as is ${this.bgp.localAs}: stop that gobgpd or fix bgp.local_as`);
      }
      if (this.link !== 'up' || fresh || this.peersDirty) {
        const wasUp = this.link === 'up';
        try {
          await this.exclusive(() => this.syncPeers(client, this.desiredPeers));
          this.lastPeerError = '';
        } catch (err) {
          // Routes can still go in; the probe retries the peers (logging only when the reason changes).
          if ((err as Error).message !== this.lastPeerError) this.log.error({ err }, 'could not configure every BGP peer in gobgpd; retrying');
          this.lastPeerError = (err as Error).message;
        }
        this.link = 'up';
        this.lastError = undefined;
        if (!wasUp || fresh) {
          this.log.info({ address: this.address, configured: fresh }, fresh ? 'gobgpd configured (global, peers, policies)' : 'connected to gobgpd');
          for (const cb of this.reconnectListeners) {
            try {
              cb();
            } catch (err) {
              this.log.error({ err }, 'reconnect listener failed');
            }
          }
        }
      }
    } catch (err) {
      const e = toRouterError(err, this.address);
      const was = this.link;
      const before = this.lastError?.message;
      this.link = e.code === 'VIPCAST_ERR_ROUTER_CONFLICT' ? 'conflict' : 'down';
      this.lastError = e;
      this.unreachable = err instanceof GobgpCallError && err.unreachable;
      // Log transitions and changed reasons, not every failed probe.
      if (was === 'up' || e.message !== before) {
        const msg = this.link === 'conflict' ? 'gobgpd conflicts with vipcast\'s config' : was === 'up' ? 'lost gobgpd; retrying' : 'gobgpd is not usable yet; retrying';
        // start() reports its own first failure.
        if (!this.starting) this.log.error({ err: e }, msg);
      }
      if (was === 'up' || (this.link === 'conflict' && was !== 'conflict')) {
        for (const cb of this.disconnectListeners) {
          try {
            cb(e);
          } catch (cbErr) {
            this.log.error({ err: cbErr }, 'disconnect listener failed');
          }
        }
      }
    }
  }

  private ensureUp(): GobgpClient {
    if (this.closed || !this.client) throw new VipcastError('VIPCAST_ERR_ROUTER', this.closed ? 'gobgp router is closed' : 'gobgp router is not started');
    if (this.link === 'up') return this.client;
    if (this.link === 'conflict' && this.lastError) throw this.lastError;
    throw new VipcastError('VIPCAST_ERR_ROUTER', `gobgpd at ${this.address} is not answering${this.lastError ? ` (${this.lastError.message})` : ''}; retrying`, { cause: this.lastError });
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  private async call<T = unknown>(client: GobgpClient, method: string, req: object): Promise<T> {
    try {
      return await client.unary<T>(method, req);
    } catch (err) {
      throw this.failed(err);
    }
  }

  private async callStream<T>(client: GobgpClient, method: string, req: object): Promise<T[]> {
    try {
      return await client.stream<T>(method, req);
    } catch (err) {
      throw this.failed(err);
    }
  }

  private failed(err: unknown): VipcastError {
    const e = toRouterError(err, this.address);
    // gobgpd went away or restarted under us: look now rather than at the next tick.
    if ((err instanceof GobgpCallError && err.unreachable) || /hasn't started/.test(e.message)) void this.probe();
    return e;
  }

  // ---- global -----------------------------------------------------------------------------------------------

  private async startBgp(client: GobgpClient): Promise<void> {
    const routerId = await this.chooseRouterId();
    const listen = this.bgp.listenPort;
    // With local_ip, listen only there; without, gobgpd's default (every address).
    const listenAddresses = listen > 0 && this.bgp.localIp ? [this.bgp.localIp] : [];
    try {
      await client.unary('StartBgp', { global: { asn: this.bgp.localAs, router_id: routerId, listen_port: listen, listen_addresses: listenAddresses } });
    } catch (err) {
      if (err instanceof GobgpCallError && /address already in use|bind/i.test(err.details)) {
        throw new VipcastError('VIPCAST_ERR_ROUTER_CONFLICT', `gobgpd cannot listen for BGP on ${listenAddresses.length ? listenAddresses.join(', ') : 'all addresses'} port ${listen}: ${err.details}. Another BGP speaker holds the port: stop it, or set bgp.listen_port: -1 (outbound only, sessions take 5-10 s longer to come up)`, { cause: err });
      }
      throw err;
    }
    this.log.info({ local_as: this.bgp.localAs, router_id: routerId, listen_port: listen, listen_addresses: listenAddresses }, 'started BGP in gobgpd');
  }

  private async chooseRouterId(): Promise<string> {
    if (this.bgp.localIp && familyOf(this.bgp.localIp) === 'ipv4') return this.bgp.localIp;
    const v4Peer = this.desiredPeers.find((p) => p.address !== undefined && familyOf(p.address) === 'ipv4')?.address;
    try {
      return await localIpFor(v4Peer ?? (await resolveDefaultGateway('ipv4', this.runIp)), this.runIp);
    } catch (err) {
      throw new VipcastError('VIPCAST_ERR_ROUTER', 'cannot choose a BGP router id (an IPv4 address): set bgp.local_ip', { cause: err });
    }
  }

  private nextHopFor(route: Route): string {
    return nextHopOf(route.prefix.family, this.bgp);
  }

  // ---- peers ------------------------------------------------------------------------------------------------

  private async resolvePeer(spec: PeerSpec, index: number): Promise<DesiredPeer> {
    const path = `bgp.peers[${index}]`;
    const localFamily = this.bgp.localIp ? familyOf(this.bgp.localIp) : 'ipv4';
    const address = spec.address !== undefined ? parseAddress(spec.address, `${path}.peer_ip`).address : await resolveDefaultGateway(localFamily, this.runIp);
    const localAddress = this.bgp.localIp && familyOf(this.bgp.localIp) === familyOf(address) ? this.bgp.localIp : await localIpFor(address, this.runIp);
    // config.ts already read md5_env_var into md5Password (a peer whose variable is unset is refused there).
    const password = spec.md5Password ?? '';
    return {
      address,
      asn: spec.asn,
      localAddress,
      multihop: spec.multiHop ?? spec.asn !== this.bgp.localAs,
      password,
      communities: spec.communities,
    };
  }

  /**
   * Make gobgpd's peers and vipcast's export policies match `specs`, one peer at a time. A peer whose config is the
   * same in gobgpd is not touched (its session stays up). A changed peer is deleted and re-added: UpdatePeer only
   * applies OPEN-relevant changes (it ignores ebgp_multihop) and resets the session for those anyway. A change of
   * a peer's communities only replaces its policy and soft-resets the peer's Adj-RIB-Out (no session reset).
   */
  private async syncPeers(client: GobgpClient, specs: readonly PeerSpec[]): Promise<void> {
    const errors: string[] = [];
    const causes: unknown[] = [];
    const fail = (what: string, err: unknown) => {
      errors.push(`${what}: ${(err as Error).message}`);
      causes.push(err);
    };
    const desired = new Map<string, DesiredPeer>();
    let unresolved = false;
    for (const [i, spec] of specs.entries()) {
      try {
        const d = await this.resolvePeer(spec, i);
        if (desired.has(d.address)) this.log.warn({ peer: d.address }, `bgp.peers[${i}] repeats peer ${d.address}; using the first`);
        else desired.set(d.address, d);
      } catch (err) {
        unresolved = true;
        fail(`bgp.peers[${i}]`, err);
      }
    }
    const have = new Map<string, ApiPeer>();
    for (const { peer } of await this.callStream<{ peer: ApiPeer | null }>(client, 'ListPeer', {})) {
      if (peer?.conf?.neighbor_address) have.set(peer.conf.neighbor_address, peer);
    }
    const pol = await this.readPolicies(client);

    // A peer that failed to resolve might be one gobgpd has: delete nothing until every peer resolves.
    if (!unresolved) {
      for (const address of have.keys()) {
        if (desired.has(address)) continue;
        try {
          await this.call(client, 'DeletePeer', { address });
          this.log.info({ event: 'peer', action: 'delete', peer: address }, `deleted peer ${address}`);
        } catch (err) {
          fail(`delete peer ${address}`, err);
        }
      }
    }
    for (const d of desired.values()) {
      const logged = { event: 'peer', peer: d.address, peer_as: d.asn, local_address: d.localAddress, multihop: d.multihop, md5: d.password !== '', communities: d.communities.map((c) => c.text) };
      try {
        const policyChanged = await this.ensurePolicy(client, d, pol);
        const cur = have.get(d.address);
        if (!cur) {
          await this.call(client, 'AddPeer', { peer: peerFor(d) });
          this.log.info({ ...logged, action: 'add' }, `added peer ${d.address}`);
        } else {
          const diff = peerDiff(cur, d);
          if (diff) {
            await this.call(client, 'DeletePeer', { address: d.address });
            await this.call(client, 'AddPeer', { peer: peerFor(d) });
            this.log.info({ ...logged, action: 'update', changed: diff }, `updated peer ${d.address} (${diff}): session reset`);
          } else if (policyChanged) {
            await this.call(client, 'ResetPeer', { address: d.address, soft: true, direction: 'OUT' });
            this.log.info({ ...logged, action: 'update', changed: 'communities' }, `updated communities of peer ${d.address} (soft reset out, session kept)`);
          }
        }
      } catch (err) {
        fail(`peer ${d.address}`, err);
      }
    }
    // Policies of peers that are gone.
    if (!unresolved) {
      const orphans = new Set([...pol.policies.keys(), ...pol.sets.keys()].map((n) => n.slice(POLICY_PREFIX.length).replace(/-(stmt|nbr)$/, '')));
      for (const address of orphans) {
        if (desired.has(address)) continue;
        try {
          await this.removePolicy(client, address, pol);
        } catch (err) {
          fail(`remove policy of ${address}`, err);
        }
      }
    }
    this.peersDirty = errors.length > 0;
    if (errors.length > 0) {
      throw new VipcastError('VIPCAST_ERR_ROUTER', `could not apply every BGP peer: ${errors.join('; ')}`, { cause: causes[0] });
    }
  }

  private async readPolicies(client: GobgpClient): Promise<{ policies: Map<string, ApiPolicy>; sets: Map<string, ApiDefinedSet>; assigned: Set<string> }> {
    const policies = new Map<string, ApiPolicy>();
    for (const { policy } of await this.callStream<{ policy: ApiPolicy | null }>(client, 'ListPolicy', {})) {
      if (policy?.name.startsWith(POLICY_PREFIX)) policies.set(policy.name, policy);
    }
    const sets = new Map<string, ApiDefinedSet>();
    for (const { defined_set: s } of await this.callStream<{ defined_set: ApiDefinedSet | null }>(client, 'ListDefinedSet', { defined_type: 'NEIGHBOR' })) {
      if (s?.name.startsWith(POLICY_PREFIX)) sets.set(s.name, s);
    }
    const assigned = new Set<string>();
    for (const { assignment } of await this.callStream<{ assignment: ApiPolicyAssignment | null }>(client, 'ListPolicyAssignment', { name: GLOBAL_ASSIGNMENT, direction: 'EXPORT' })) {
      for (const p of assignment?.policies ?? []) assigned.add(p.name);
    }
    return { policies, sets, assigned };
  }

  /** Make the peer's export policy match its communities. Returns true when something changed in gobgpd. */
  private async ensurePolicy(client: GobgpClient, d: DesiredPeer, pol: Awaited<ReturnType<GobgpRouter['readPolicies']>>): Promise<boolean> {
    const names = policyNames(d.address);
    const exists = pol.policies.has(names.policy) || pol.sets.has(names.neighborSet) || pol.assigned.has(names.policy);
    if (d.communities.length === 0) {
      if (!exists) return false;
      await this.removePolicy(client, d.address, pol);
      return true;
    }
    const want = policyFor(d.address, d.communities);
    const wantSet = neighborSetFor(d.address);
    const cur = pol.policies.get(names.policy);
    if (cur && pol.assigned.has(names.policy) && policyKey(cur, pol.sets.get(names.neighborSet)) === policyKey(want, wantSet)) return false;
    if (exists) await this.removePolicy(client, d.address, pol);
    await this.call(client, 'AddDefinedSet', { defined_set: wantSet });
    await this.call(client, 'AddPolicy', { policy: want, refer_existing_statements: false });
    await this.call(client, 'AddPolicyAssignment', { assignment: { name: GLOBAL_ASSIGNMENT, direction: 'EXPORT', policies: [{ name: want.name }], default_action: 'ACCEPT' } });
    pol.policies.set(names.policy, want);
    pol.sets.set(names.neighborSet, wantSet);
    pol.assigned.add(names.policy);
    return true;
  }

  private async removePolicy(client: GobgpClient, address: string, pol: Awaited<ReturnType<GobgpRouter['readPolicies']>>): Promise<void> {
    const names = policyNames(address);
    if (pol.assigned.has(names.policy)) {
      await this.call(client, 'DeletePolicyAssignment', { assignment: { name: GLOBAL_ASSIGNMENT, direction: 'EXPORT', policies: [{ name: names.policy }] }, all: false });
      pol.assigned.delete(names.policy);
    }
    if (pol.policies.has(names.policy)) {
      await this.call(client, 'DeletePolicy', { policy: { name: names.policy }, all: true, preserve_statements: false });
      pol.policies.delete(names.policy);
    }
    if (pol.sets.has(names.neighborSet)) {
      await this.call(client, 'DeleteDefinedSet', { defined_set: { defined_type: 'NEIGHBOR', name: names.neighborSet }, all: true });
      pol.sets.delete(names.neighborSet);
    }
    this.log.info({ event: 'policy', action: 'delete', peer: address }, `removed export policy of ${address}`);
  }
}

function sameCommunities(a: readonly Community[], b: readonly Community[]): boolean {
  if (a.length !== b.length) return false;
  const key = (cs: readonly Community[]) => cs.map((c) => `${c.type}:${c.text}`).sort().join(',');
  return key(a) === key(b);
}

function toRouterError(err: unknown, address: string): VipcastError {
  if (err instanceof VipcastError) return err;
  if (err instanceof GobgpCallError) {
    if (err.unreachable) return new VipcastError('VIPCAST_ERR_ROUTER', `gobgpd at ${address} is not answering (${err.method}: ${err.details})`, { cause: err });
    return new VipcastError('VIPCAST_ERR_ROUTER', `gobgpd refused ${err.method}: ${err.details}`, { cause: err });
  }
  return new VipcastError('VIPCAST_ERR_ROUTER', `gobgpd at ${address}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
