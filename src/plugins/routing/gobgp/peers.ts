/**
 * The gobgp router's peers and export policies: the peers vipcast wants (restored into every fresh gobgpd by the
 * connection), the diff against gobgpd's, one export policy per peer with communities, and the peers' states.
 */
import type { PeerSpec, PeerState } from '../../../plugin-api.js';
import type { BgpConfig } from '../../../core/config-types.js';
import type { Logger } from '../../../core/logger.js';
import { VipcastError } from '../../../core/errors.js';
import { parseAddress } from '../../../core/values.js';
import { familyOf, type GobgpCalls, type GobgpConnection, type PeerRestore } from './connection.js';
import { localIpFor, resolveDefaultGateway, type IpRunner } from './net.js';
import {
  GLOBAL_ASSIGNMENT, POLICY_PREFIX, neighborSetFor, peerDiff, peerFor, policyFor, policyKey, policyNames,
  type ApiDefinedSet, type ApiPeer, type ApiPolicy, type ApiPolicyAssignment, type DesiredPeer,
} from './wire.js';

export interface GobgpPeersOptions {
  bgp: BgpConfig;
  /** The router's logger (component gobgp). */
  log: Logger;
  runIp: IpRunner;
}

/** vipcast's export policies in gobgpd, as read before a sync and kept up to date by it. */
interface Policies {
  policies: Map<string, ApiPolicy>;
  sets: Map<string, ApiDefinedSet>;
  assigned: Set<string>;
}

export class GobgpPeers implements PeerRestore {
  private readonly bgp: BgpConfig;
  private readonly log: Logger;
  private readonly runIp: IpRunner;
  /** The peers vipcast wants; restored into a fresh gobgpd. Starts as the config's, replaced by apply. */
  desired: readonly PeerSpec[];
  /** A peer sync failed (e.g. no default gateway yet): the probe retries it. */
  dirty = false;

  constructor(opts: GobgpPeersOptions) {
    this.bgp = opts.bgp;
    this.log = opts.log;
    this.runIp = opts.runIp;
    this.desired = opts.bgp.peers;
  }

  /** See GobgpRouter.applyPeers. */
  async apply(connection: GobgpConnection, peers: readonly PeerSpec[]): Promise<void> {
    this.desired = peers;
    if (connection.waiting) {
      this.dirty = true;
      this.log.warn({ peers: peers.length }, 'gobgpd is not answering: the peers will be applied when it does');
      return;
    }
    const calls = connection.calls();
    await connection.exclusive(() => this.sync(calls, peers));
  }

  async states(connection: GobgpConnection): Promise<PeerState[]> {
    const calls = connection.calls();
    const res = await calls.stream<{ peer: ApiPeer | null }>('ListPeer', { enableAdvertised: true });
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

  private async resolvePeer(spec: PeerSpec, index: number): Promise<DesiredPeer> {
    const path = `bgp.peers[${index}]`;
    const localFamily = this.bgp.localIp ? familyOf(this.bgp.localIp) : 'ipv4';
    const address = spec.address !== undefined ? parseAddress(spec.address, `${path}.peer_ip`).address : await resolveDefaultGateway(localFamily, this.runIp);
    const localAddress = this.bgp.localIp && familyOf(this.bgp.localIp) === familyOf(address) ? this.bgp.localIp : await localIpFor(address, this.runIp);
    // The config (core/config/peers.ts) already read md5_env_var into md5Password (a peer whose variable is unset is
    // refused there).
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
  async sync(calls: GobgpCalls, specs: readonly PeerSpec[]): Promise<void> {
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
    for (const { peer } of await calls.stream<{ peer: ApiPeer | null }>('ListPeer', {})) {
      if (peer?.conf?.neighbor_address) have.set(peer.conf.neighbor_address, peer);
    }
    const pol = await this.readPolicies(calls);

    // A peer that failed to resolve might be one gobgpd has: delete nothing until every peer resolves.
    if (!unresolved) {
      for (const address of have.keys()) {
        if (desired.has(address)) continue;
        try {
          await calls.call('DeletePeer', { address });
          this.log.info({ event: 'peer', action: 'delete', peer: address }, `deleted peer ${address}`);
        } catch (err) {
          fail(`delete peer ${address}`, err);
        }
      }
    }
    for (const d of desired.values()) {
      const logged = { event: 'peer', peer: d.address, peer_as: d.asn, local_address: d.localAddress, multihop: d.multihop, md5: d.password !== '', communities: d.communities.map((c) => c.text) };
      try {
        const policyChanged = await this.ensurePolicy(calls, d, pol);
        const cur = have.get(d.address);
        if (!cur) {
          await calls.call('AddPeer', { peer: peerFor(d) });
          this.log.info({ ...logged, action: 'add' }, `added peer ${d.address}`);
        } else {
          const diff = peerDiff(cur, d);
          if (diff) {
            await calls.call('DeletePeer', { address: d.address });
            await calls.call('AddPeer', { peer: peerFor(d) });
            this.log.info({ ...logged, action: 'update', changed: diff }, `updated peer ${d.address} (${diff}): session reset`);
          } else if (policyChanged) {
            await calls.call('ResetPeer', { address: d.address, soft: true, direction: 'OUT' });
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
          await this.removePolicy(calls, address, pol);
        } catch (err) {
          fail(`remove policy of ${address}`, err);
        }
      }
    }
    this.dirty = errors.length > 0;
    if (errors.length > 0) {
      throw new VipcastError('VIPCAST_ERR_ROUTER', `could not apply every BGP peer: ${errors.join('; ')}`, { cause: causes[0] });
    }
  }

  private async readPolicies(calls: GobgpCalls): Promise<Policies> {
    const policies = new Map<string, ApiPolicy>();
    for (const { policy } of await calls.stream<{ policy: ApiPolicy | null }>('ListPolicy', {})) {
      if (policy?.name.startsWith(POLICY_PREFIX)) policies.set(policy.name, policy);
    }
    const sets = new Map<string, ApiDefinedSet>();
    for (const { defined_set: s } of await calls.stream<{ defined_set: ApiDefinedSet | null }>('ListDefinedSet', { defined_type: 'NEIGHBOR' })) {
      if (s?.name.startsWith(POLICY_PREFIX)) sets.set(s.name, s);
    }
    const assigned = new Set<string>();
    for (const { assignment } of await calls.stream<{ assignment: ApiPolicyAssignment | null }>('ListPolicyAssignment', { name: GLOBAL_ASSIGNMENT, direction: 'EXPORT' })) {
      for (const p of assignment?.policies ?? []) assigned.add(p.name);
    }
    return { policies, sets, assigned };
  }

  /** Make the peer's export policy match its communities. Returns true when something changed in gobgpd. */
  private async ensurePolicy(calls: GobgpCalls, d: DesiredPeer, pol: Policies): Promise<boolean> {
    const names = policyNames(d.address);
    const exists = pol.policies.has(names.policy) || pol.sets.has(names.neighborSet) || pol.assigned.has(names.policy);
    if (d.communities.length === 0) {
      if (!exists) return false;
      await this.removePolicy(calls, d.address, pol);
      return true;
    }
    const want = policyFor(d.address, d.communities);
    const wantSet = neighborSetFor(d.address);
    const cur = pol.policies.get(names.policy);
    if (cur && pol.assigned.has(names.policy) && policyKey(cur, pol.sets.get(names.neighborSet)) === policyKey(want, wantSet)) return false;
    if (exists) await this.removePolicy(calls, d.address, pol);
    await calls.call('AddDefinedSet', { defined_set: wantSet });
    await calls.call('AddPolicy', { policy: want, refer_existing_statements: false });
    await calls.call('AddPolicyAssignment', { assignment: { name: GLOBAL_ASSIGNMENT, direction: 'EXPORT', policies: [{ name: want.name }], default_action: 'ACCEPT' } });
    pol.policies.set(names.policy, want);
    pol.sets.set(names.neighborSet, wantSet);
    pol.assigned.add(names.policy);
    return true;
  }

  private async removePolicy(calls: GobgpCalls, address: string, pol: Policies): Promise<void> {
    const names = policyNames(address);
    if (pol.assigned.has(names.policy)) {
      await calls.call('DeletePolicyAssignment', { assignment: { name: GLOBAL_ASSIGNMENT, direction: 'EXPORT', policies: [{ name: names.policy }] }, all: false });
      pol.assigned.delete(names.policy);
    }
    if (pol.policies.has(names.policy)) {
      await calls.call('DeletePolicy', { policy: { name: names.policy }, all: true, preserve_statements: false });
      pol.policies.delete(names.policy);
    }
    if (pol.sets.has(names.neighborSet)) {
      await calls.call('DeleteDefinedSet', { defined_set: { defined_type: 'NEIGHBOR', name: names.neighborSet }, all: true });
      pol.sets.delete(names.neighborSet);
    }
    this.log.info({ event: 'policy', action: 'delete', peer: address }, `removed export policy of ${address}`);
  }
}
