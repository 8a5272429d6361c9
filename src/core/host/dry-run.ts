/**
 * Dry-run HostNetwork: every change the real one would make is logged as one JSON line
 * (`{ event: 'host', action: 'add-vip', app, prefix, label }`) and kept in memory, so listVips/listNat reflect it and
 * the reconciler behaves exactly as in production. Needs no root and touches nothing.
 */
import type { HostNetwork, NatBinding, VipBinding } from '../../plugin-api.js';
import type { Logger } from '../logger.js';
import { checkNatBinding, checkVipBinding, loopbackLabel, NAT_CHAIN } from './linux.js';

const vipKey = (b: VipBinding): string => `${b.app}|${b.prefix.text}`;
const natKey = (b: NatBinding): string => `${b.app}|${b.vip.text}|${b.rule.text}`;

export class LoggingHostNetwork implements HostNetwork {
  readonly name = 'dry-run';
  private readonly log: Logger;
  private readonly vips = new Map<string, VipBinding>();
  private nat = new Map<string, NatBinding>();

  /** `localIp`/`localIp6` only fill the `to` field of NAT log lines. */
  constructor(private readonly opts: { log: Logger; localIp?: () => string | undefined; localIp6?: () => string | undefined }) {
    this.log = opts.log.child({ component: 'host' });
  }

  async start(): Promise<void> {}

  async listVips(): Promise<VipBinding[]> {
    return [...this.vips.values()];
  }

  async addVip(binding: VipBinding): Promise<void> {
    checkVipBinding(binding);
    if (this.vips.has(vipKey(binding))) return;
    this.vips.set(vipKey(binding), binding);
    const { app, prefix } = binding;
    const label = prefix.family === 'ipv4' ? loopbackLabel(app) : undefined;
    this.log.info({ event: 'host', action: 'add-vip', app, prefix: prefix.text, label, dryRun: true }, 'would add address to lo');
  }

  async removeVip(binding: VipBinding): Promise<void> {
    checkVipBinding(binding);
    if (!this.vips.delete(vipKey(binding))) return;
    this.log.info({ event: 'host', action: 'remove-vip', app: binding.app, prefix: binding.prefix.text, dryRun: true }, 'would remove address from lo');
  }

  async listNat(): Promise<NatBinding[]> {
    return [...this.nat.values()];
  }

  /** Every rule is "made" (a dry run doesn't discover NAT targets, so it can't tell which app would lack one). */
  async setNat(rules: readonly NatBinding[]): Promise<Map<string, Error>> {
    rules.forEach((r, i) => checkNatBinding(r, `nat[${i}]`));
    const next = new Map(rules.map((r) => [natKey(r), r] as const));
    for (const [k, r] of this.nat) {
      if (!next.has(k)) this.logNat('remove-nat', r);
    }
    for (const [k, r] of next) {
      if (!this.nat.has(k)) this.logNat('add-nat', r);
    }
    this.nat = next;
    return new Map();
  }

  private logNat(action: 'add-nat' | 'remove-nat', r: NatBinding): void {
    const to = r.vip.family === 'ipv4' ? this.opts.localIp?.() : this.opts.localIp6?.();
    this.log.info(
      { event: 'host', action, app: r.app, vip: r.vip.text, nat: r.rule.text, to: to ?? null, chain: NAT_CHAIN, dryRun: true },
      action === 'add-nat' ? 'would add NAT rule' : 'would remove NAT rule',
    );
  }

  /** What the real cleanup() would remove: every address and rule in the in-memory state. */
  async cleanup(): Promise<void> {
    // As the real one: rules, then the chain and its jumps, then addresses (invariant 2).
    await this.setNat([]);
    this.log.info({ event: 'host', action: 'remove-chain', chain: NAT_CHAIN, dryRun: true }, 'would remove the NAT chain and its jumps');
    for (const b of [...this.vips.values()]) await this.removeVip(b);
  }

  async close(opts: { removeAll?: boolean } = {}): Promise<void> {
    if (opts.removeAll) await this.cleanup();
  }
}
