/**
 * DNAT rules in vipcast's own nat chain `VIPCAST` (IPv4 and IPv6), written with `iptables-restore --noflush` (one
 * restore per family), reached through one jump from PREROUTING and OUTPUT each. NAT rules need no state: they live
 * only in those chains, each tagged `vipcast:<app>`, and are read back from `iptables -S`.
 */
import { basename, dirname, join } from 'node:path';
import type { Family, NatBinding } from '../../plugin-api.js';
import { VipcastError, valueError } from '../errors.js';
import type { Logger } from '../logger.js';
import { APP_NAME, parseAddress, parseNat, parsePrefix } from '../values.js';
import { checkNatBinding } from './checks.js';
import type { RunCommand } from './runner.js';

/** vipcast's chain in the nat table (IPv4 and IPv6). */
export const NAT_CHAIN = 'VIPCAST';
/** Comment on each jump into NAT_CHAIN; rules inside carry `vipcast:<app>`. */
const JUMP_COMMENT = 'vipcast';
const JUMP_FROM = ['PREROUTING', 'OUTPUT'] as const;
/** The jump: only packets addressed to this host (a VIP on lo is local) enter the chain. */
const JUMP_SPEC = ['-m', 'addrtype', '--dst-type', 'LOCAL', '-m', 'comment', '--comment', JUMP_COMMENT, '-j', NAT_CHAIN];
/** Seconds to wait for the xtables lock (the runner kills a command after 30 s). */
const XT_WAIT = ['-w', '10'];

/** iptables names derived from `agent.iptables_binary` (a name or a path whose basename starts with `iptables`). */
export interface IptablesBinaries {
  readonly v4: string;
  readonly v4Restore: string;
  readonly v6: string;
  readonly v6Restore: string;
}

export function iptablesBinaries(binary = 'iptables'): IptablesBinaries {
  const base = basename(binary);
  if (!/^iptables(-[a-z]+)?$/.test(base)) {
    throw valueError('agent.iptables_binary', `"${binary}" is not an iptables binary (iptables, iptables-nft or iptables-legacy)`);
  }
  const dir = base === binary ? '' : dirname(binary);
  const v6 = `ip6${base.slice(2)}`;
  const at = (name: string): string => (dir ? join(dir, name) : name);
  return { v4: at(base), v4Restore: at(`${base}-restore`), v6: at(v6), v6Restore: at(`${v6}-restore`) };
}

export interface NatOptions {
  exec: RunCommand;
  bins: IptablesBinaries;
  /** The host network's logger (component host). */
  log: Logger;
  /** NAT target for IPv4 rules (the node's local_ip). */
  localIp: () => string | undefined;
  /** NAT target for IPv6 rules. */
  localIp6?: () => string | undefined;
  /** The conntrack tool that clears stale UDP translations after a NAT change. */
  conntrack: string;
}

export class Nat {
  private readonly exec: RunCommand;
  private readonly bins: IptablesBinaries;
  private readonly log: Logger;
  private readonly conntrack: string;
  private warnedNoV6 = false;
  /** Why the IPv6 nat table could not be read at the last look (no ip6table_nat), if it couldn't. */
  private v6Unavailable: Error | undefined;
  private warnedNoConntrack = false;

  constructor(private readonly opts: NatOptions) {
    this.exec = opts.exec;
    this.bins = opts.bins;
    this.log = opts.log;
    this.conntrack = opts.conntrack;
  }

  private familyBins(family: Family): { list: string; restore: string } {
    return family === 'ipv4' ? { list: this.bins.v4, restore: this.bins.v4Restore } : { list: this.bins.v6, restore: this.bins.v6Restore };
  }

  private target(family: Family): string | undefined {
    const raw = family === 'ipv4' ? this.opts.localIp() : this.opts.localIp6?.();
    if (raw === undefined || raw === '') return undefined;
    const { address, family: f } = parseAddress(raw, family === 'ipv4' ? 'bgp.local_ip' : 'local_ip6');
    if (f !== family) throw valueError(family === 'ipv4' ? 'bgp.local_ip' : 'local_ip6', `"${raw}" is not an ${family} address`);
    return address;
  }

  /** `iptables -t nat -S`: one listing shows both the chain's rules and the jumps into it. */
  private async natTable(family: Family): Promise<string[]> {
    try {
      const { stdout } = await this.exec(this.familyBins(family).list, [...XT_WAIT, '-t', 'nat', '-S']);
      if (family === 'ipv6') this.v6Unavailable = undefined;
      return stdout.split('\n').filter((l) => l.startsWith('-'));
    } catch (err) {
      // A host without IPv6 NAT (no ip6table_nat) still gets IPv4 NAT; the apps with IPv6 rules fail in setNat.
      if (family !== 'ipv6' || (err as VipcastError).code !== 'VIPCAST_ERR_HOST') throw err;
      this.v6Unavailable = err as Error;
      if (!this.warnedNoV6) this.log.warn({ err }, 'IPv6 nat table unavailable: IPv6 NAT disabled');
      this.warnedNoV6 = true;
      return [];
    }
  }

  async listNat(): Promise<NatBinding[]> {
    const out: NatBinding[] = [];
    for (const family of ['ipv4', 'ipv6'] as const) {
      const lines = await this.natTable(family);
      const target = this.target(family);
      for (const line of lines) {
        if (!line.startsWith(`-A ${NAT_CHAIN} `)) continue;
        const b = parseRule(line, family);
        if (!b) {
          this.log.debug({ line }, `unrecognised rule in ${NAT_CHAIN}: not listed (the next setNat rewrites the chain)`);
          continue;
        }
        // A rule pointing at an old local address is not the rule vipcast wants: leave it out so the reconciler
        // rewrites the chain.
        if (target !== undefined && b.to !== target) continue;
        out.push(b.binding);
      }
    }
    return out;
  }

  /**
   * Build each app's rules first, without touching the kernel: an app with a rule that can't be made (no local address
   * of its VIP's family to DNAT to, a local address that is not of that family) fails alone, with none of its rules
   * written, and is returned with the reason. Every other app's rules are written, each family's chain in one
   * `iptables-restore` as before; a refused write rejects (a whole-write failure, as before).
   */
  async setNat(rules: readonly NatBinding[]): Promise<Map<string, Error>> {
    rules.forEach((r, i) => checkNatBinding(r, `nat[${i}]`));
    const failures = new Map<string, Error>();
    const targets = new Map<Family, string>();
    for (const family of ['ipv4', 'ipv6'] as const) {
      const mine = rules.filter((r) => r.vip.family === family);
      if (mine.length === 0) continue;
      let to: string | undefined;
      let why: Error | undefined;
      try {
        to = this.target(family);
      } catch (err) {
        why = err as Error;
      }
      if (to !== undefined) {
        targets.set(family, to);
        continue;
      }
      for (const app of new Set(mine.map((r) => r.app))) {
        if (failures.has(app)) continue;
        const its = mine.filter((r) => r.app === app).map((r) => `${r.vip.text} ${r.rule.text}`).join(', ');
        failures.set(app, new VipcastError('VIPCAST_ERR_HOST', why
          ? `NAT ${its} can't be made: ${why.message}`
          : `NAT ${its} needs a local ${family} address to DNAT to, and there is none (bgp.local_ip of that family, or an address facing a peer or the default gateway of that family)`, why ? { cause: why } : undefined));
      }
    }
    // Both listings before any write: an IPv6 nat table that can't be read (no ip6table_nat) fails the apps with
    // IPv6 rules, and only those, before their IPv4 rules are written.
    const tables = new Map<Family, string[]>();
    for (const family of ['ipv4', 'ipv6'] as const) tables.set(family, await this.natTable(family));
    const v6Down = this.v6Unavailable;
    if (v6Down) {
      for (const r of rules) {
        if (r.vip.family !== 'ipv6' || failures.has(r.app)) continue;
        failures.set(r.app, new VipcastError('VIPCAST_ERR_HOST', `NAT ${r.vip.text} ${r.rule.text} can't be made: the IPv6 nat table is unavailable (ip6table_nat not loaded?): ${v6Down.message}`, { cause: v6Down }));
      }
    }
    const plans = (['ipv4', 'ipv6'] as const).map((family) => ({
      family,
      mine: rules.filter((r) => r.vip.family === family && !failures.has(r.app)),
      to: targets.get(family),
    }));
    for (const { family, mine, to } of plans) {
      const table = tables.get(family)!;
      const chainExists = table.includes(`-N ${NAT_CHAIN}`);
      const before = table.filter((l) => l.startsWith(`-A ${NAT_CHAIN} `)).map((l) => parseRule(l, family)).filter((b) => b !== undefined);
      // A family never used stays untouched (a host without ip6table_nat keeps working for IPv4).
      if (mine.length === 0 && !chainExists) continue;
      const lines = ['*nat', `:${NAT_CHAIN} - [0:0]`]; // declaring the chain under --noflush flushes it (nft and legacy)
      for (const r of mine) lines.push(ruleLine(r, to!));
      lines.push('COMMIT', '');
      const { restore } = this.familyBins(family);
      await this.exec(restore, [...XT_WAIT, '--noflush'], lines.join('\n'));
      await this.ensureJumps(family, table);
      this.log.info({ family, rules: mine.map((r) => ({ app: r.app, vip: r.vip.text, nat: r.rule.text, to })) }, 'NAT chain written');
      const kept = new Set(mine.map((r) => natKey(r.vip.address, r.rule.protocol, r.rule.listenPort, to!, r.rule.targetPort)));
      for (const b of before) {
        const { vip, rule } = b.binding;
        if (rule.protocol === 'udp' && !kept.has(natKey(vip.address, 'udp', rule.listenPort, b.to, rule.targetPort))) {
          await this.forgetUdpFlows(family, vip.address, rule.listenPort, b.to, rule.targetPort);
        }
      }
    }
    return failures;
  }

  /**
   * A UDP "flow" that keeps its source port (a resolver, a syslog sender) would keep the translation of a rule that is
   * gone for as long as it keeps sending: conntrack entries outlive rule changes. Delete the entries that rule made
   * (VIP:port translated to the old target), so the next packet is translated by the rules in force. TCP entries
   * are left alone: an established connection belongs to the service it reached. Best effort: a missing `conntrack`
   * (Debian package conntrack) is reported once and the rules still apply to every new flow.
   */
  private async forgetUdpFlows(family: Family, vip: string, port: number, oldTo: string, oldPort: number): Promise<void> {
    const args = ['-D', '-f', family, '-p', 'udp', '--orig-dst', vip, '--orig-port-dst', String(port), '--reply-src', oldTo, '--reply-port-src', String(oldPort)];
    try {
      const { stderr } = await this.exec(this.conntrack, args);
      this.log.info({ family, vip, port, old_target: `${oldTo}:${oldPort}`, deleted: /(\d+) flow entr/.exec(stderr)?.[1] }, 'stale UDP conntrack entries deleted');
    } catch (err) {
      const e = err as VipcastError;
      // conntrack exits 1 when no entry matched: nothing to do.
      if (e.code === 'VIPCAST_ERR_HOST' && /0 flow entries have been deleted/.test(e.message)) return;
      if (e.code === 'VIPCAST_ERR_HOST_BINARY') {
        if (!this.warnedNoConntrack) this.log.warn({ err }, 'conntrack is not installed: UDP clients that keep their source port keep a changed NAT rule\'s old target until their entry expires');
        this.warnedNoConntrack = true;
        return;
      }
      this.log.warn({ err, vip, port }, 'could not delete stale UDP conntrack entries');
    }
  }

  /**
   * Exactly one jump from PREROUTING and from OUTPUT: `-C` then `-I`. Duplicates (a crash mid-way, racing instances)
   * and jumps of another shape (an older vipcast) are deleted: any jump into vipcast's chain is vipcast's.
   */
  private async ensureJumps(family: Family, table: readonly string[]): Promise<void> {
    const bin = this.familyBins(family).list;
    const jumps = jumpsInto(table);
    // Compared as parsed arguments: backends differ in quoting.
    const isCanonical = (j: { chain: string; args: string[] }): boolean =>
      (JUMP_FROM as readonly string[]).includes(j.chain) && j.args.join('\0') === JUMP_SPEC.join('\0');
    for (const j of jumps) {
      if (!isCanonical(j)) await this.exec(bin, [...XT_WAIT, '-t', 'nat', '-D', j.chain, ...j.args]);
    }
    for (const chain of JUMP_FROM) {
      const count = jumps.filter((j) => j.chain === chain && isCanonical(j)).length;
      for (let i = 1; i < count; i++) await this.exec(bin, [...XT_WAIT, '-t', 'nat', '-D', chain, ...JUMP_SPEC]);
      if (count >= 1) continue; // the listing already shows it; -C below is for when it doesn't (or prints it differently)
      try {
        await this.exec(bin, [...XT_WAIT, '-t', 'nat', '-C', chain, ...JUMP_SPEC]);
      } catch (err) {
        if ((err as VipcastError).code !== 'VIPCAST_ERR_HOST') throw err;
        await this.exec(bin, [...XT_WAIT, '-t', 'nat', '-I', chain, '1', ...JUMP_SPEC]);
      }
    }
  }

  /** Shutdown: every jump into vipcast's chains, then the chains themselves (both families). */
  async removeChains(): Promise<void> {
    for (const family of ['ipv4', 'ipv6'] as const) {
      const table = await this.natTable(family);
      const bin = this.familyBins(family).list;
      // Every jump into the chain, whatever its shape, must go before the chain can be deleted.
      for (const j of jumpsInto(table)) await this.exec(bin, [...XT_WAIT, '-t', 'nat', '-D', j.chain, ...j.args]);
      if (table.includes(`-N ${NAT_CHAIN}`)) {
        await this.exec(bin, [...XT_WAIT, '-t', 'nat', '-F', NAT_CHAIN]);
        await this.exec(bin, [...XT_WAIT, '-t', 'nat', '-X', NAT_CHAIN]);
        this.log.info({ family }, 'NAT chain removed');
      }
    }
  }
}

/** The rules (from `-S`) that jump into vipcast's chain, as arguments for `-D <chain> ...`. */
function jumpsInto(table: readonly string[]): { chain: string; args: string[] }[] {
  const out: { chain: string; args: string[] }[] = [];
  for (const line of table) {
    const args = splitRule(line);
    if (args[0] !== '-A' || args[1] === NAT_CHAIN || args.at(-2) !== '-j' || args.at(-1) !== NAT_CHAIN) continue;
    out.push({ chain: args[1]!, args: args.slice(2) });
  }
  return out;
}

/**
 * One DNAT rule. Target is the node's own address (not 127.0.0.1, which from another host would need
 * net.ipv4.conf.<if>.route_localnet=1).
 */
function natKey(vip: string, protocol: string, port: number, to: string, targetPort: number): string {
  return `${vip} ${protocol} ${port} ${to} ${targetPort}`;
}

function ruleLine(r: NatBinding, to: string): string {
  const dest = r.vip.family === 'ipv6' ? `[${to}]:${r.rule.targetPort}` : `${to}:${r.rule.targetPort}`;
  return [
    '-A', NAT_CHAIN, '-d', r.vip.text, '-p', r.rule.protocol, '-m', r.rule.protocol, '--dport', String(r.rule.listenPort),
    '-m', 'comment', '--comment', `vipcast:${r.app}`, '-j', 'DNAT', '--to-destination', dest,
  ].join(' ');
}

/** Split an `iptables -S` line into arguments (double quotes, backslash escapes). */
export function splitRule(line: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return out;
}

/** Read back a rule vipcast wrote; undefined for anything else. */
function parseRule(line: string, family: Family): { binding: NatBinding; to: string } | undefined {
  const args = splitRule(line);
  const opt = (name: string): string | undefined => {
    const i = args.indexOf(name);
    return i === -1 ? undefined : args[i + 1];
  };
  const comment = opt('--comment');
  const d = opt('-d');
  const proto = opt('-p');
  const dport = opt('--dport');
  const dest = opt('--to-destination');
  if (!comment?.startsWith('vipcast:') || !d || !proto || !dport || !dest || opt('-j') !== 'DNAT') return undefined;
  const m = family === 'ipv6' ? /^\[([^\]]+)\]:(\d+)$/.exec(dest) : /^([^:]+):(\d+)$/.exec(dest);
  if (!m) return undefined;
  try {
    // vip and rule come out of the parsers themselves; only the app name is left to check.
    const app = comment.slice('vipcast:'.length);
    if (!APP_NAME.test(app)) return undefined;
    const vip = parsePrefix(d, 'iptables', true);
    const rule = parseNat(`${proto}:${dport}:${m[2]}`, 'iptables');
    const binding: NatBinding = { app, vip, rule };
    if (vip.family !== family) return undefined;
    return { binding, to: parseAddress(m[1], 'iptables').address };
  } catch {
    return undefined;
  }
}
