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
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Family, HostNetwork, NatBinding, Prefix, VipBinding } from '../../plugin-api.js';
import { VipcastError, valueError } from '../errors.js';
import type { Logger } from '../logger.js';
import { APP_NAME, parseAddress, parseNat, parsePrefix } from '../values.js';
import { DEFAULT_STATE_FILE } from '../config-schema.js';

/** vipcast's chain in the nat table (IPv4 and IPv6). */
export const NAT_CHAIN = 'VIPCAST';
/** Comment on each jump into NAT_CHAIN; rules inside carry `vipcast:<app>`. */
const JUMP_COMMENT = 'vipcast';
const JUMP_FROM = ['PREROUTING', 'OUTPUT'] as const;
/** The jump: only packets addressed to this host (a VIP on lo is local) enter the chain. */
const JUMP_SPEC = ['-m', 'addrtype', '--dst-type', 'LOCAL', '-m', 'comment', '--comment', JUMP_COMMENT, '-j', NAT_CHAIN];
/** Seconds to wait for the xtables lock; a command is killed after COMMAND_TIMEOUT_MS. */
const XT_WAIT = ['-w', '10'];
const COMMAND_TIMEOUT_MS = 30_000;
/** cleanup(): how long removing the NAT chains may take before the addresses go anyway. */
const CLEANUP_NAT_MS = 3000;

/** The loopback label gocast uses: `lo:` + the app name, cut to 15 characters (IFNAMSIZ - 1). */
export function loopbackLabel(app: string): string {
  return `lo:${app}`.slice(0, 15);
}

function samePrefix(a: Prefix, b: Prefix): boolean {
  return a.address === b.address && a.length === b.length && a.family === b.family && a.text === b.text;
}

/** Defense in depth (invariant 4): nothing reaches `ip` that didn't come out of parsePrefix, with a safe app name. */
export function checkVipBinding(binding: VipBinding, path = 'vip'): void {
  if (typeof binding?.app !== 'string' || !APP_NAME.test(binding.app)) {
    throw valueError(`${path}.app`, `${JSON.stringify(binding?.app)} is not a valid app name`);
  }
  const p = binding.prefix;
  if (typeof p?.text !== 'string' || !samePrefix(parsePrefix(p.text, `${path}.prefix`, false), p)) {
    throw valueError(`${path}.prefix`, `${JSON.stringify(p)} is not a validated prefix`);
  }
}

export function checkNatBinding(binding: NatBinding, path = 'nat'): void {
  checkVipBinding({ app: binding?.app, prefix: binding?.vip }, path);
  const r = binding.rule;
  const parsed = parseNat(r?.text, `${path}.rule`);
  if (parsed.protocol !== r.protocol || parsed.listenPort !== r.listenPort || parsed.targetPort !== r.targetPort) {
    throw valueError(`${path}.rule`, `${JSON.stringify(r)} is not a validated NAT rule`);
  }
}

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

const PACKAGE_OF: Record<string, string> = { ip: 'iproute2', conntrack: 'conntrack' };

function packageOf(bin: string): string {
  const base = basename(bin);
  return PACKAGE_OF[base] ?? (/^ip6?tables/.test(base) ? 'iptables' : 'unknown');
}

/**
 * Map a failed command to a coded error. `file` is what was spawned (`ip` when running through `ip netns exec`),
 * `cmd` + `args` what the user should see.
 */
function commandError(file: string, cmd: string, args: readonly string[], stderr: string, cause: unknown): VipcastError {
  const display = [cmd, ...args].join(' ');
  const missing = (cause as NodeJS.ErrnoException)?.code === 'ENOENT'
    ? file
    : /exec of "([^"]+)" failed: No such file or directory/.exec(stderr)?.[1];
  if (missing !== undefined) {
    return new VipcastError('VIPCAST_ERR_HOST_BINARY', `${missing} is not installed (Debian package: ${packageOf(missing)}); command: ${display}`, { cause });
  }
  if ((cause as NodeJS.ErrnoException)?.code === 'EACCES' || /Operation not permitted|Permission denied|you must be root/i.test(stderr)) {
    return new VipcastError('VIPCAST_ERR_HOST_PERMISSION', `${display}: permission denied (run as root or with CAP_NET_ADMIN): ${stderr.trim()}`, { cause });
  }
  return new VipcastError('VIPCAST_ERR_HOST', `${display} failed: ${stderr.trim() || String((cause as Error)?.message ?? cause)}`, { cause });
}

interface Addr {
  readonly family: Family;
  readonly address: string;
  readonly length: number;
  readonly label?: string;
}
type LoAddrs = Map<string, Addr>;

/** One address the state file records: `owned` addresses were added by vipcast, the others were adopted. */
interface VipRecord {
  app: string;
  prefix: string;
  label?: string;
  owned: boolean;
}

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
  private readonly bins: IptablesBinaries;
  private records: VipRecord[] | undefined;
  private warnedNoV6 = false;
  /** Why the IPv6 nat table could not be read at the last look (no ip6table_nat), if it couldn't. */
  private v6Unavailable: Error | undefined;
  private loading: Promise<VipRecord[]> | undefined;
  /** Where a corrupt state file found at start was kept (set when there was one). */
  private corruptKeptAs: string | undefined;
  private warnedNoConntrack = false;
  private readonly conntrack: string;

  constructor(private readonly opts: LinuxHostNetworkOptions) {
    this.log = opts.log.child({ component: 'host' });
    this.bins = iptablesBinaries(opts.iptablesBinary);
    this.conntrack = opts.conntrackBinary ?? 'conntrack';
    this.stateFile = opts.stateFile ?? (opts.netns ? join(dirname(DEFAULT_STATE_FILE), `host-state-${opts.netns}.json`) : DEFAULT_STATE_FILE);
  }

  async start(): Promise<void> {
    await this.load();
  }

  /** Non-destructive: addresses and rules stay (the reconciler tears down in order). `removeAll` runs cleanup(). */
  async close(opts: { removeAll?: boolean } = {}): Promise<void> {
    if (opts.removeAll) await this.cleanup();
  }

  // ---- commands ----------------------------------------------------------------------------------------------

  private exec(cmd: string, args: readonly string[], input?: string): Promise<{ stdout: string; stderr: string }> {
    const [file, argv] = this.opts.netns ? ['ip', ['netns', 'exec', this.opts.netns, cmd, ...args]] : [cmd, [...args]];
    return new Promise((resolve, reject) => {
      const child = spawn(file, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      // Our own timer, not spawn's `timeout`: that one is never cleared when the spawn itself fails (ENOENT) and
      // would keep the process alive for its whole duration.
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, COMMAND_TIMEOUT_MS);
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.stdin.on('error', () => {}); // EPIPE when the command exits without reading: its exit status tells.
      child.stdin.end(input ?? '');
      child.on('error', (err) => {
        clearTimeout(timer);
        reject(commandError(file, cmd, args, stderr, err));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) return resolve({ stdout, stderr });
        const why = timedOut ? `no answer within ${COMMAND_TIMEOUT_MS} ms (xtables lock held?)` : signal ? `killed by ${signal}` : `exit ${code}`;
        reject(commandError(file, cmd, args, stderr ? `${stderr.trim()} (${why})` : why, new Error(`${cmd}: ${why}`)));
      });
    });
  }

  /** The addresses on lo, by their canonical prefix text ("198.18.0.1/32"), as Prefix.text and the records spell it. */
  private async loopbackAddrs(): Promise<LoAddrs> {
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

  // ---- state file --------------------------------------------------------------------------------------------

  private load(): Promise<VipRecord[]> {
    if (this.records) return Promise.resolve(this.records);
    // One read, however many callers: a corrupt file is set aside once.
    this.loading ??= this.read().then((records) => {
      this.records = records;
      this.loading = undefined;
      return records;
    });
    return this.loading;
  }

  private async read(): Promise<VipRecord[]> {
    let text: string;
    try {
      text = await readFile(this.stateFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.log.error({ err, stateFile: this.stateFile }, 'host state file unreadable: vipcast owns no loopback address until it adds one');
      }
      return [];
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (err) {
      return this.setAside(`not JSON (${(err as Error).message})`);
    }
    const vips = (data as { vips?: unknown } | null)?.vips;
    if (typeof data !== 'object' || data === null || Array.isArray(data) || !Array.isArray(vips)) {
      return this.setAside('not a vipcast state file ({"version":1,"vips":[...]})');
    }
    // Only well-formed records are trusted: a hand-edited file must not make vipcast delete arbitrary addresses.
    // Prefixes are kept in their canonical text, the key of the addresses on lo (see loopbackAddrs).
    let malformed = 0;
    const records = (vips as VipRecord[]).flatMap((r) => {
      try {
        const prefix = parsePrefix(r.prefix, 'state', false);
        checkVipBinding({ app: r.app, prefix });
        if (typeof r.owned !== 'boolean' || (r.label !== undefined && typeof r.label !== 'string')) throw new Error('owned/label');
        return [{ app: r.app, prefix: prefix.text, owned: r.owned, ...(r.label !== undefined ? { label: r.label } : {}) }];
      } catch {
        malformed++;
        this.log.warn({ record: r, stateFile: this.stateFile }, 'ignoring a malformed record in the host state file');
        return [];
      }
    });
    if (malformed > 0) {
      // The next write drops them: keep the file as it was for whoever looks into it.
      const keptAs = this.asidePath();
      await copyFile(this.stateFile, keptAs).then(
        () => this.log.error({ stateFile: this.stateFile, keptAs, malformed }, 'host state file has malformed records: ignored; the file as it was is kept aside'),
        (err: unknown) => this.log.error({ err, stateFile: this.stateFile, malformed }, 'host state file has malformed records: ignored (could not keep a copy)'),
      );
    }
    return records;
  }

  private asidePath(): string {
    return `${this.stateFile}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  }

  /**
   * A state file that is not one (garbage, a truncated write by something else, a hand edit gone wrong) is renamed
   * aside and reported with both paths, never rewritten in place: it is the only evidence of which addresses an
   * earlier run added. vipcast starts with no records: what it adds now is recorded in a fresh file and removed at
   * exit; an address already on lo is served but never removed (nobody can tell whose it is), and said so.
   */
  private async setAside(reason: string): Promise<VipRecord[]> {
    const keptAs = this.asidePath();
    try {
      await rename(this.stateFile, keptAs);
      this.corruptKeptAs = keptAs;
      this.log.error({ stateFile: this.stateFile, keptAs, reason }, `host state file is corrupt (${reason}): kept aside as ${keptAs}; vipcast starts a new one and can't tell which addresses already on lo an earlier run added (they are served, never removed: check ${keptAs} and remove leftovers with ip addr del)`);
    } catch (err) {
      this.corruptKeptAs = this.stateFile;
      this.log.error({ err, stateFile: this.stateFile, reason }, `host state file is corrupt (${reason}) and could not be kept aside: vipcast starts a new one`);
    }
    return [];
  }

  /** Write the state file atomically (temp file + rename): a crash leaves the old or the new file, never half. */
  private async save(): Promise<void> {
    const records = await this.load();
    const tmp = `${this.stateFile}.${process.pid}.tmp`;
    try {
      await mkdir(dirname(this.stateFile), { recursive: true, mode: 0o755 });
      await writeFile(tmp, JSON.stringify({ version: 1, vips: records }, null, 1) + '\n', { mode: 0o644 });
      await rename(tmp, this.stateFile);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        throw new VipcastError('VIPCAST_ERR_HOST_PERMISSION', `cannot write the host state file ${this.stateFile} (run as root): ${String(err)}`, { cause: err });
      }
      throw new VipcastError('VIPCAST_ERR_HOST', `cannot write the host state file ${this.stateFile}: ${String(err)}`, { cause: err });
    }
  }

  /** Present on lo, and (for an owned IPv4 address) still carrying the label vipcast gave it. */
  private static present(r: VipRecord, lo: LoAddrs): boolean {
    const a = lo.get(r.prefix);
    return a !== undefined && (!r.owned || r.label === undefined || a.label === r.label);
  }

  // ---- addresses ---------------------------------------------------------------------------------------------

  async listVips(): Promise<VipBinding[]> {
    const records = await this.load();
    const addrs = await this.loopbackAddrs();
    // Level-triggered: a record whose address is gone (deleted by hand) is forgotten, so it can never claim an
    // address someone adds later.
    const kept = records.filter((r) => LinuxHostNetwork.present(r, addrs));
    if (kept.length !== records.length) {
      this.records = kept;
      await this.save();
    }
    return kept.map((r) => ({ app: r.app, prefix: parsePrefix(r.prefix, 'state', false) }));
  }

  async addVip(binding: VipBinding): Promise<void> {
    const failed = (await this.addVips([binding])).get(binding.prefix.text);
    if (failed) throw failed;
  }

  /**
   * Add many addresses with one listing of lo, one state-file write and one `ip -force -batch -` (a start or a resync
   * with a thousand apps would otherwise run two thousand commands). Returns the failures by prefix; the rest are on lo.
   */
  async addVips(bindings: readonly VipBinding[]): Promise<Map<string, Error>> {
    for (const b of bindings) checkVipBinding(b);
    const failures = new Map<string, Error>();
    const records = await this.load();
    const addrs = await this.loopbackAddrs();
    const onLo = (p: Prefix, lo: LoAddrs) => lo.has(p.text);
    const toAdd: VipBinding[] = [];
    for (const { app, prefix } of bindings) {
      const same = records.filter((r) => r.prefix === prefix.text && LinuxHostNetwork.present(r, addrs));
      const mine = records.find((r) => r.app === app && r.prefix === prefix.text);
      if (mine && same.includes(mine)) continue;
      const label = prefix.family === 'ipv4' ? loopbackLabel(app) : undefined;
      if (onLo(prefix, addrs) && !same.some((r) => r.owned)) {
        // The host (or an operator, or an old gocast) put it there: serve it, never delete it.
        this.upsert({ app, prefix: prefix.text, owned: false });
        if (this.corruptKeptAs === undefined) this.log.warn({ app, prefix: prefix.text }, 'address already on lo and not added by vipcast: adopted, it will not be removed');
        else this.log.error({ app, prefix: prefix.text, stateFile: this.stateFile, keptAs: this.corruptKeptAs }, `address already on lo while the state file was corrupt: adopted, it will not be removed (if an earlier vipcast added it, remove it by hand: ip addr del ${prefix.text} dev lo)`);
        continue;
      }
      if (onLo(prefix, addrs)) {
        // Another app of vipcast's holds the same address: share it.
        const holder = same.find((r) => r.owned);
        this.upsert({ app, prefix: prefix.text, owned: true, ...(holder?.label ? { label: holder.label } : {}) });
        continue;
      }
      // Record first: a crash right after `ip addr add` must not leave an address nobody owns.
      this.upsert({ app, prefix: prefix.text, owned: true, ...(label ? { label } : {}) });
      toAdd.push({ app, prefix });
    }
    await this.save();
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
    const after = batchError ? await this.loopbackAddrs() : undefined;
    for (const { app, prefix } of toAdd) {
      if (after && !onLo(prefix, after)) {
        failures.set(prefix.text, batchError!);
        this.records = this.records!.filter((r) => !(r.app === app && r.prefix === prefix.text));
        continue;
      }
      this.log.info({ app, prefix: prefix.text, label: prefix.family === 'ipv4' ? loopbackLabel(app) : undefined }, 'address added to lo');
    }
    if (failures.size > 0) await this.save().catch(() => {}); // the command's error is the one to report
    return failures;
  }

  async removeVip(binding: VipBinding): Promise<void> {
    checkVipBinding(binding);
    const { app, prefix } = binding;
    const records = await this.load();
    const mine = records.find((r) => r.app === app && r.prefix === prefix.text);
    if (!mine) return; // Not vipcast's (or already gone): never touch it.
    const others = records.filter((r) => r !== mine && r.prefix === prefix.text);
    if (mine.owned && others.length === 0) await this.deleteAddr(prefix);
    else if (mine.owned) {
      for (const r of others) Object.assign(r, { owned: true }, mine.label ? { label: mine.label } : {});
    }
    this.records = records.filter((r) => r !== mine);
    await this.save();
    if (mine.owned && others.length === 0) this.log.info({ app, prefix: prefix.text }, 'address removed from lo');
  }

  private async deleteAddr(prefix: Prefix): Promise<void> {
    const args = prefix.family === 'ipv4' ? ['addr', 'del', prefix.text, 'dev', 'lo'] : ['-6', 'addr', 'del', prefix.text, 'dev', 'lo'];
    try {
      await this.exec('ip', args);
    } catch (err) {
      if (!/Cannot assign requested address|not found/i.test((err as Error).message)) throw err;
    }
  }

  private upsert(rec: VipRecord): void {
    const records = this.records!;
    const i = records.findIndex((r) => r.app === rec.app && r.prefix === rec.prefix);
    if (i === -1) records.push(rec);
    else records[i] = rec;
  }

  // ---- NAT ---------------------------------------------------------------------------------------------------

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

  /**
   * Shutdown: remove the jumps and vipcast's chains, then every address vipcast added (adopted ones stay), in the
   * tear-down order of invariant 2 (NAT before address). Touches nothing else. Safe to call twice.
   */
  async cleanup(): Promise<void> {
    // Rules before addresses (invariant 2), but the rules get CLEANUP_NAT_MS: with the xtables lock held elsewhere
    // every iptables call waits, and the addresses must still go within the daemon's 10 s exit bound. Without its
    // address a VIP is no longer a local destination, so a rule left behind matches nothing (its jump requires
    // --dst-type LOCAL); the next start removes it.
    const nat = this.removeNatChains();
    let timer: NodeJS.Timeout | undefined;
    const natError = await Promise.race([
      nat.then(() => undefined, (err: unknown) => err ?? new Error('NAT cleanup failed')),
      new Promise<Error>((resolve) => { timer = setTimeout(resolve, CLEANUP_NAT_MS, new Error(`NAT rules not removed within ${CLEANUP_NAT_MS} ms (xtables lock held?)`)); }),
    ]);
    clearTimeout(timer);
    if (natError) this.log.error({ err: natError }, 'could not remove the NAT rules; removing the addresses anyway');
    const records = await this.load();
    const addrs = await this.loopbackAddrs();
    const gone = [...new Set(records.filter((r) => r.owned && LinuxHostNetwork.present(r, addrs)).map((r) => r.prefix))];
    if (gone.length > 0) {
      // One `ip -force -batch -` for all of them; an address already gone is not an error.
      await this.exec('ip', ['-force', '-batch', '-'], gone.map((p) => `address del ${p} dev lo`).join('\n') + '\n')
        .catch((err: Error) => { if (!/Cannot assign requested address|not found/i.test(err.message)) throw err; });
      for (const p of gone) this.log.info({ app: records.find((r) => r.prefix === p)?.app, prefix: p }, 'address removed from lo');
    }
    this.records = [];
    await rm(this.stateFile, { force: true });
    if (natError) throw natError;
  }

  private async removeNatChains(): Promise<void> {
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
