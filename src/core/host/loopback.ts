/**
 * VIPs on the loopback interface: listed, added (recorded in the state file first) and removed with `ip`. An address
 * is vipcast's when the state file says so and it is on lo (for IPv4 with the label vipcast gave it); one that was
 * already on lo when an app asked for it is adopted: listed for that app, never deleted.
 */
import type { Family, Prefix, VipBinding } from '../../plugin-api.js';
import type { Logger } from '../logger.js';
import { parseAddress, parsePrefix } from '../values.js';
import { checkVipBinding } from './checks.js';
import type { OwnershipState, VipRecord } from './ownership.js';
import type { RunCommand } from './runner.js';

/** The loopback label gocast uses: `lo:` + the app name, cut to 15 characters (IFNAMSIZ - 1). */
export function loopbackLabel(app: string): string {
  return `lo:${app}`.slice(0, 15);
}

interface Addr {
  readonly family: Family;
  readonly address: string;
  readonly length: number;
  readonly label?: string;
}
type LoAddrs = Map<string, Addr>;

/** Present on lo, and (for an owned IPv4 address) still carrying the label vipcast gave it. */
function present(r: VipRecord, lo: LoAddrs): boolean {
  const a = lo.get(r.prefix);
  return a !== undefined && (!r.owned || r.label === undefined || a.label === r.label);
}

export class Loopback {
  constructor(private readonly exec: RunCommand, private readonly state: OwnershipState, private readonly log: Logger) {}

  /** The addresses on lo, by their canonical prefix text ("198.18.0.1/32"), as Prefix.text and the records spell it. */
  private async addrs(): Promise<LoAddrs> {
    const { stdout } = await this.exec('ip', ['-j', 'addr', 'show', 'dev', 'lo']);
    const links = JSON.parse(stdout) as { addr_info?: { family: string; local: string; prefixlen: number; label?: string }[] }[];
    const out: LoAddrs = new Map();
    for (const a of links[0]?.addr_info ?? []) {
      if (a.family !== 'inet' && a.family !== 'inet6') continue;
      const { address, family } = parseAddress(a.local, 'ip addr');
      out.set(`${address}/${a.prefixlen}`, { family, address, length: a.prefixlen, ...(a.label !== undefined ? { label: a.label } : {}) });
    }
    return out;
  }

  async listVips(): Promise<VipBinding[]> {
    const records = await this.state.load();
    const addrs = await this.addrs();
    // Level-triggered: a record whose address is gone (deleted by hand) is forgotten, so it can never claim an
    // address someone adds later.
    const kept = records.filter((r) => present(r, addrs));
    if (kept.length !== records.length) {
      this.state.replace(kept);
      await this.state.save();
    }
    return kept.map((r) => ({ app: r.app, prefix: parsePrefix(r.prefix, 'state', false) }));
  }

  /**
   * Add many addresses with one listing of lo, one state-file write and one `ip -force -batch -` (a start or a resync
   * with a thousand apps would otherwise run two thousand commands). Returns the failures by prefix; the rest are on lo.
   */
  async addVips(bindings: readonly VipBinding[]): Promise<Map<string, Error>> {
    for (const b of bindings) checkVipBinding(b);
    const failures = new Map<string, Error>();
    const records = await this.state.load();
    const addrs = await this.addrs();
    const onLo = (p: Prefix, lo: LoAddrs) => lo.has(p.text);
    const toAdd: VipBinding[] = [];
    for (const { app, prefix } of bindings) {
      const same = records.filter((r) => r.prefix === prefix.text && present(r, addrs));
      const mine = records.find((r) => r.app === app && r.prefix === prefix.text);
      if (mine && same.includes(mine)) continue;
      const label = prefix.family === 'ipv4' ? loopbackLabel(app) : undefined;
      if (onLo(prefix, addrs) && !same.some((r) => r.owned)) {
        // The host (or an operator, or an old gocast) put it there: serve it, never delete it.
        this.state.upsert({ app, prefix: prefix.text, owned: false });
        const keptAs = this.state.corruptKeptAs;
        if (keptAs === undefined) this.log.warn({ app, prefix: prefix.text }, 'address already on lo and not added by vipcast: adopted, it will not be removed');
        else this.log.error({ app, prefix: prefix.text, stateFile: this.state.stateFile, keptAs }, `address already on lo while the state file was corrupt: adopted, it will not be removed (if an earlier vipcast added it, remove it by hand: ip addr del ${prefix.text} dev lo)`);
        continue;
      }
      if (onLo(prefix, addrs)) {
        // Another app of vipcast's holds the same address: share it.
        const holder = same.find((r) => r.owned);
        this.state.upsert({ app, prefix: prefix.text, owned: true, ...(holder?.label ? { label: holder.label } : {}) });
        continue;
      }
      // Record first: a crash right after `ip addr add` must not leave an address nobody owns.
      this.state.upsert({ app, prefix: prefix.text, owned: true, ...(label ? { label } : {}) });
      toAdd.push({ app, prefix });
    }
    await this.state.save();
    if (toAdd.length === 0) return failures;
    // Validated values only (canonical prefixes, labels from checked app names): one command per line, no shell.
    const lines = toAdd.map(({ app, prefix }) => prefix.family === 'ipv4'
      ? `address add ${prefix.text} dev lo label ${loopbackLabel(app)}`
      : `address add ${prefix.text} dev lo nodad`);
    let batchError: Error | undefined;
    try {
      await this.exec('ip', ['-force', '-batch', '-'], lines.join('\n') + '\n');
    } catch (err) {
      batchError = err as Error;
    }
    const after = batchError ? await this.addrs() : undefined;
    for (const { app, prefix } of toAdd) {
      if (after && !onLo(prefix, after)) {
        failures.set(prefix.text, batchError!);
        this.state.drop(app, prefix.text);
        continue;
      }
      this.log.info({ app, prefix: prefix.text, label: prefix.family === 'ipv4' ? loopbackLabel(app) : undefined }, 'address added to lo');
    }
    if (failures.size > 0) await this.state.save().catch(() => {}); // the command's error is the one to report
    return failures;
  }

  async removeVip(binding: VipBinding): Promise<void> {
    checkVipBinding(binding);
    const { app, prefix } = binding;
    const records = await this.state.load();
    const mine = records.find((r) => r.app === app && r.prefix === prefix.text);
    if (!mine) return; // Not vipcast's (or already gone): never touch it.
    const others = records.filter((r) => r !== mine && r.prefix === prefix.text);
    if (mine.owned && others.length === 0) await this.deleteAddr(prefix);
    else if (mine.owned) {
      for (const r of others) Object.assign(r, { owned: true }, mine.label ? { label: mine.label } : {});
    }
    this.state.replace(records.filter((r) => r !== mine));
    await this.state.save();
    if (mine.owned && others.length === 0) this.log.info({ app, prefix: prefix.text }, 'address removed from lo');
  }

  /** Shutdown: every address vipcast added goes (adopted ones stay), then the records and the state file. */
  async removeOwned(): Promise<void> {
    const records = await this.state.load();
    const addrs = await this.addrs();
    const gone = [...new Set(records.filter((r) => r.owned && present(r, addrs)).map((r) => r.prefix))];
    if (gone.length > 0) {
      // One `ip -force -batch -` for all of them; an address already gone is not an error.
      await this.exec('ip', ['-force', '-batch', '-'], gone.map((p) => `address del ${p} dev lo`).join('\n') + '\n')
        .catch((err: Error) => { if (!/Cannot assign requested address|not found/i.test(err.message)) throw err; });
      for (const p of gone) this.log.info({ app: records.find((r) => r.prefix === p)?.app, prefix: p }, 'address removed from lo');
    }
    await this.state.forget();
  }

  private async deleteAddr(prefix: Prefix): Promise<void> {
    const args = prefix.family === 'ipv4' ? ['addr', 'del', prefix.text, 'dev', 'lo'] : ['-6', 'addr', 'del', prefix.text, 'dev', 'lo'];
    try {
      await this.exec('ip', args);
    } catch (err) {
      if (!/Cannot assign requested address|not found/i.test((err as Error).message)) throw err;
    }
  }
}
