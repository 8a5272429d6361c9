/**
 * In-memory Router and HostNetwork that write every effect to one shared journal, so tests can assert the order of
 * effects across both (address -> NAT -> announce; withdraw -> NAT -> address), plus a "broken" variant that fails
 * on demand.
 */
import type { HostNetwork, NatBinding, PeerSpec, PeerState, Route, Router, VipBinding } from '../../src/plugin-api.js';

export type Entry = string;

export class Journal {
  readonly entries: Entry[] = [];
  push(e: Entry): void {
    this.entries.push(e);
  }
  clear(): void {
    this.entries.length = 0;
  }
  indexOf(e: Entry): number {
    return this.entries.indexOf(e);
  }
}

export class JournalRouter implements Router {
  readonly name = 'journal';
  readonly rib = new Map<string, Route>();
  peers: readonly PeerSpec[] = [];
  /** Prefixes whose announce fails. */
  readonly failAnnounce = new Set<string>();
  failAll = false;

  constructor(private readonly journal: Journal) {}

  async start(): Promise<void> {}
  async announce(route: Route): Promise<void> {
    if (this.failAll || this.failAnnounce.has(route.prefix.text)) throw new Error(`announce ${route.prefix.text} refused`);
    this.rib.set(route.prefix.text, route);
    this.journal.push(`announce ${route.prefix.text} ${route.communities.map((c) => c.text).join(',')}`.trim());
  }
  /** Set to enable the bulk forms; `failBulk` makes them reject (the caller must fall back). */
  bulk = false;
  failBulk = false;
  bulkCalls = 0;
  get announceMany(): ((routes: readonly Route[]) => Promise<void>) | undefined {
    if (!this.bulk) return undefined;
    return async (routes) => {
      this.bulkCalls++;
      if (this.failBulk) throw new Error('AddPathStream failed');
      for (const r of routes) this.rib.set(r.prefix.text, r);
      this.journal.push(`announce-many ${routes.length}`);
    };
  }
  async withdraw(route: Route): Promise<void> {
    if (this.failAll) throw new Error('speaker down');
    this.rib.delete(route.prefix.text);
    this.journal.push(`withdraw ${route.prefix.text}`);
  }
  async listRoutes(): Promise<Route[]> {
    if (this.failAll) throw new Error('speaker down');
    return [...this.rib.values()];
  }
  async applyPeers(peers: readonly PeerSpec[]): Promise<void> {
    this.peers = peers;
    this.journal.push(`peers ${peers.map((p) => p.address).join(',')}`);
  }
  async peerStates(): Promise<PeerState[]> {
    return [];
  }
  async close(): Promise<void> {}
}

export class JournalHost implements HostNetwork {
  readonly name = 'journal';
  readonly vips = new Map<string, VipBinding>();
  nat: NatBinding[] = [];
  readonly failAdd = new Set<string>();

  constructor(private readonly journal: Journal) {}

  async start(): Promise<void> {}
  async listVips(): Promise<VipBinding[]> {
    return [...this.vips.values()];
  }
  async addVip(b: VipBinding): Promise<void> {
    if (this.failAdd.has(b.prefix.text)) throw new Error(`RTNETLINK answers: Operation not permitted (${b.prefix.text})`);
    this.vips.set(b.prefix.text, b);
    this.journal.push(`add-vip ${b.prefix.text}`);
  }
  async removeVip(b: VipBinding): Promise<void> {
    this.vips.delete(b.prefix.text);
    this.journal.push(`remove-vip ${b.prefix.text}`);
  }
  async listNat(): Promise<NatBinding[]> {
    return this.nat;
  }
  /** Apps whose NAT rules "can't be made" (as the real host without a local address of the family), with the reason. */
  readonly failNat = new Map<string, string>();
  setNatCalls = 0;
  async setNat(rules: readonly NatBinding[]): Promise<Map<string, Error> | void> {
    this.setNatCalls++;
    const failures = new Map<string, Error>();
    for (const r of rules) if (this.failNat.has(r.app)) failures.set(r.app, new Error(this.failNat.get(r.app)));
    const made = rules.filter((r) => !failures.has(r.app));
    this.nat = made;
    this.journal.push(`nat ${made.map((r) => `${r.vip.text}:${r.rule.text}`).sort().join(',')}`.trim());
    return failures;
  }
  async cleanup(): Promise<void> {
    await this.setNat([]);
    for (const v of [...this.vips.values()]) await this.removeVip(v);
  }
  async close(): Promise<void> {}
}
