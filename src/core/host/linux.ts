/**
 * The real HostNetwork: VIPs on the loopback interface (`ip`) and DNAT rules in vipcast's own nat chain
 * (`iptables-restore --noflush`, `ip6tables-restore`). Every command runs from an argument array, never a shell.
 *
 * Ownership (docs/HOST.md): iproute2 6.1 (Debian 12) cannot tag an address (`ip addr add ... proto N` needs
 * iproute2 >= 6.2), and a `lo:<name>` label proves nothing (hosts label their own loopback addresses, IPv6 has no
 * labels at all). So vipcast records every address it adds in a state file (default under /run, which a reboot
 * empties together with the addresses themselves), written *before* the address is added, so a crash between the
 * two leaves nothing unrecorded. An address is vipcast's when the state file says so and it is on lo (for IPv4 with
 * the label vipcast gave it). An address that was already on lo when an app asked for it is "adopted": listed for that
 * app, never deleted. NAT rules need no state: they live only in the `VIPCAST` chains, each tagged `vipcast:<app>`.
 *
 * This class only puts the parts together: `runner.ts` (spawning the commands), `ownership.ts` (the state file),
 * `loopback.ts` (the addresses) and `nat.ts` (the rules); and orders the shutdown (NAT before addresses).
 */
import { dirname, join } from 'node:path';
import type { HostNetwork, NatBinding, VipBinding } from '../../plugin-api.js';
import type { Logger } from '../logger.js';
import { DEFAULT_STATE_FILE } from '../config-schema.js';
import { Loopback } from './loopback.js';
import { Nat, iptablesBinaries } from './nat.js';
import { OwnershipState } from './ownership.js';
import { commandRunner } from './runner.js';

export { checkNatBinding, checkVipBinding } from './checks.js';
export { loopbackLabel } from './loopback.js';
export { NAT_CHAIN, iptablesBinaries, splitRule, type IptablesBinaries } from './nat.js';

/** cleanup(): how long removing the NAT chains may take before the addresses go anyway. */
const CLEANUP_NAT_MS = 3000;

export interface LinuxHostNetworkOptions {
  log: Logger;
  /** `agent.iptables_binary`: iptables (default), iptables-nft or iptables-legacy; the -restore and ip6tables names follow. */
  iptablesBinary?: string;
  /** NAT target for IPv4 rules (the node's local_ip). */
  localIp: () => string | undefined;
  /** NAT target for IPv6 rules. */
  localIp6?: () => string | undefined;
  /** Run every command through `ip netns exec NS` (tests); production leaves it unset. */
  netns?: string;
  /** Where vipcast records the addresses it added. Default /run/vipcast/host-state.json (`host-state-<netns>.json`). */
  stateFile?: string;
  /** The conntrack tool that clears stale UDP translations after a NAT change (default `conntrack`; tests). */
  conntrackBinary?: string;
}

export class LinuxHostNetwork implements HostNetwork {
  readonly name = 'linux';
  readonly stateFile: string;
  private readonly log: Logger;
  private readonly state: OwnershipState;
  private readonly loopback: Loopback;
  private readonly nat: Nat;

  constructor(opts: LinuxHostNetworkOptions) {
    this.log = opts.log.child({ component: 'host' });
    const bins = iptablesBinaries(opts.iptablesBinary);
    const exec = commandRunner(opts.netns);
    this.stateFile = opts.stateFile ?? (opts.netns ? join(dirname(DEFAULT_STATE_FILE), `host-state-${opts.netns}.json`) : DEFAULT_STATE_FILE);
    this.state = new OwnershipState(this.stateFile, this.log);
    this.loopback = new Loopback(exec, this.state, this.log);
    this.nat = new Nat({ exec, bins, log: this.log, localIp: opts.localIp, localIp6: opts.localIp6, conntrack: opts.conntrackBinary ?? 'conntrack' });
  }

  async start(): Promise<void> {
    await this.state.load();
  }

  /** Non-destructive: addresses and rules stay (the reconciler tears down in order). `removeAll` runs cleanup(). */
  async close(opts: { removeAll?: boolean } = {}): Promise<void> {
    if (opts.removeAll) await this.cleanup();
  }

  listVips(): Promise<VipBinding[]> {
    return this.loopback.listVips();
  }

  async addVip(binding: VipBinding): Promise<void> {
    const failed = (await this.addVips([binding])).get(binding.prefix.text);
    if (failed) throw failed;
  }

  /**
   * Add many addresses with one listing of lo, one state-file write and one `ip -force -batch -` (a start or a resync
   * with a thousand apps would otherwise run two thousand commands). Returns the failures by prefix; the rest are on lo.
   */
  addVips(bindings: readonly VipBinding[]): Promise<Map<string, Error>> {
    return this.loopback.addVips(bindings);
  }

  removeVip(binding: VipBinding): Promise<void> {
    return this.loopback.removeVip(binding);
  }

  listNat(): Promise<NatBinding[]> {
    return this.nat.listNat();
  }

  /**
   * Build each app's rules first, without touching the kernel: an app with a rule that can't be made (no local address
   * of its VIP's family to DNAT to, a local address that is not of that family) fails alone, with none of its rules
   * written, and is returned with the reason. Every other app's rules are written, each family's chain in one
   * `iptables-restore` as before; a refused write rejects (a whole-write failure, as before).
   */
  setNat(rules: readonly NatBinding[]): Promise<Map<string, Error>> {
    return this.nat.setNat(rules);
  }

  /**
   * Shutdown: remove the jumps and vipcast's chains, then every address vipcast added (adopted ones stay), in the
   * tear-down order of invariant 2 (NAT before address). Touches nothing else. Safe to call twice.
   */
  async cleanup(): Promise<void> {
    // Rules before addresses (invariant 2), but the rules get CLEANUP_NAT_MS: with the xtables lock held elsewhere
    // every iptables call waits, and the addresses must still go within the daemon's 10 s exit bound. Without its
    // address a VIP is no longer a local destination, so a rule left behind matches nothing (its jump requires
    // --dst-type LOCAL); the next start removes it.
    const nat = this.nat.removeChains();
    let timer: NodeJS.Timeout | undefined;
    const natError = await Promise.race([
      nat.then(() => undefined, (err: unknown) => err ?? new Error('NAT cleanup failed')),
      new Promise<Error>((resolve) => { timer = setTimeout(resolve, CLEANUP_NAT_MS, new Error(`NAT rules not removed within ${CLEANUP_NAT_MS} ms (xtables lock held?)`)); }),
    ]);
    clearTimeout(timer);
    if (natError) this.log.error({ err: natError }, 'could not remove the NAT rules; removing the addresses anyway');
    await this.loopback.removeOwned();
    if (natError) throw natError;
  }
}
