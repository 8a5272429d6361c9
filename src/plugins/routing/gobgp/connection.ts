/**
 * The gobgp router's connection to gobgpd: the gRPC client's lifecycle, the link state (down / up / conflict), the
 * probe that notices a lost or restarted gobgpd, and the global setup (GetBgp, StartBgp) of a fresh one. On every
 * (re)connection it restores the peers through `PeerRestore` (see peers.ts), then tells its listeners.
 */
import type { Family, PeerSpec } from '../../../plugin-api.js';
import type { BgpConfig } from '../../../core/config-types.js';
import type { Logger } from '../../../core/logger.js';
import { VipcastError } from '../../../core/errors.js';
import { ConnectivityState, GobgpCallError, GobgpClient } from './client.js';
import { localIpFor, resolveDefaultGateway, type IpRunner } from './net.js';
import type { ApiGlobal } from './wire.js';

type Link = 'down' | 'up' | 'conflict';

export const familyOf = (address: string): Family => (address.includes(':') ? 'ipv6' : 'ipv4');

/**
 * gRPC calls on the connected client. A failure comes back as a VipcastError (VIPCAST_ERR_ROUTER) and, when gobgpd
 * went away or restarted under us, starts a probe at once.
 */
export interface GobgpCalls {
  call<T = unknown>(method: string, req: object): Promise<T>;
  stream<T>(method: string, req: object): Promise<T[]>;
  clientStream(method: string, reqs: readonly object[]): Promise<void>;
}

/** What the connection needs from the peers part to restore them into a fresh or reconnected gobgpd. */
export interface PeerRestore {
  /** The peers vipcast wants (the router id is chosen facing the first IPv4 one). */
  readonly desired: readonly PeerSpec[];
  /** The last peer sync failed: the probe retries it. */
  readonly dirty: boolean;
  /** Make gobgpd's peers and export policies match `desired`. Called under the connection's lock. */
  sync(calls: GobgpCalls, specs: readonly PeerSpec[]): Promise<void>;
}

export interface GobgpConnectionOptions {
  bgp: BgpConfig;
  address: string;
  /** The router's logger (component gobgp). */
  log: Logger;
  runIp: IpRunner;
  probeIntervalMs: number;
  callTimeoutMs: number;
  peers: PeerRestore;
}

export class GobgpConnection {
  readonly address: string;
  private readonly bgp: BgpConfig;
  private readonly log: Logger;
  private readonly runIp: IpRunner;
  private readonly probeIntervalMs: number;
  private readonly callTimeoutMs: number;
  private readonly peers: PeerRestore;
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
  private lastPeerError = '';
  private starting = true;
  /** The last probe failed because gobgpd did not answer (as opposed to refusing). */
  private unreachable = true;
  private readonly reconnectListeners = new Set<() => void>();
  private readonly disconnectListeners = new Set<(err: VipcastError) => void>();

  constructor(opts: GobgpConnectionOptions) {
    this.bgp = opts.bgp;
    this.address = opts.address;
    this.log = opts.log;
    this.runIp = opts.runIp;
    this.probeIntervalMs = opts.probeIntervalMs;
    this.callTimeoutMs = opts.callTimeoutMs;
    this.peers = opts.peers;
  }

  /** True while gobgpd answers and runs with vipcast's global config. */
  get connected(): boolean {
    return this.link === 'up';
  }

  /** gobgpd does not answer (yet) while the probe keeps trying: peer changes wait for it. */
  get waiting(): boolean {
    return this.link === 'down' && this.client !== undefined && !this.halted;
  }

  onReconnect(cb: () => void): () => void {
    this.reconnectListeners.add(cb);
    return () => this.reconnectListeners.delete(cb);
  }

  onDisconnect(cb: (err: VipcastError) => void): () => void {
    this.disconnectListeners.add(cb);
    return () => this.disconnectListeners.delete(cb);
  }

  /** See GobgpRouter.start. */
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

  /** See GobgpRouter.stopSpeaker. */
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

  /** Releases the connection; withdraws nothing (gobgpd bound to vipcast's life drops the routes). Safe twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.halted = true;
    this.stop();
    this.reconnectListeners.clear();
    this.disconnectListeners.clear();
  }

  /** The calls on the client, or a VipcastError right away when gobgpd is not usable (not answering, conflict, closed). */
  calls(): GobgpCalls {
    return this.bind(this.ensureUp());
  }

  /** Runs `fn` after every global setup or peer change before it (and before the next). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => undefined);
    return run;
  }

  private bind(client: GobgpClient): GobgpCalls {
    return {
      call: async <T>(method: string, req: object): Promise<T> => {
        try {
          return await client.unary<T>(method, req);
        } catch (err) {
          throw this.failed(err);
        }
      },
      stream: async <T>(method: string, req: object): Promise<T[]> => {
        try {
          return await client.stream<T>(method, req);
        } catch (err) {
          throw this.failed(err);
        }
      },
      clientStream: async (method: string, reqs: readonly object[]): Promise<void> => {
        try {
          await client.clientStream(method, reqs);
        } catch (err) {
          throw this.failed(err);
        }
      },
    };
  }

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
      if (this.link !== 'up' || fresh || this.peers.dirty) {
        const wasUp = this.link === 'up';
        try {
          await this.exclusive(() => this.peers.sync(this.bind(client), this.peers.desired));
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
    const v4Peer = this.peers.desired.find((p) => p.address !== undefined && familyOf(p.address) === 'ipv4')?.address;
    try {
      return await localIpFor(v4Peer ?? (await resolveDefaultGateway('ipv4', this.runIp)), this.runIp);
    } catch (err) {
      throw new VipcastError('VIPCAST_ERR_ROUTER', 'cannot choose a BGP router id (an IPv4 address): set bgp.local_ip', { cause: err });
    }
  }
}

function toRouterError(err: unknown, address: string): VipcastError {
  if (err instanceof VipcastError) return err;
  if (err instanceof GobgpCallError) {
    if (err.unreachable) return new VipcastError('VIPCAST_ERR_ROUTER', `gobgpd at ${address} is not answering (${err.method}: ${err.details})`, { cause: err });
    return new VipcastError('VIPCAST_ERR_ROUTER', `gobgpd refused ${err.method}: ${err.details}`, { cause: err });
  }
  return new VipcastError('VIPCAST_ERR_ROUTER', `gobgpd at ${address}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
