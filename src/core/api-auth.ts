/**
 * Who may call the HTTP API's mutating endpoints (/register, /unregister, POST /reload, POST /maintenance): vipcast
 * runs as root and announces routes, so an unprivileged local user must not be able to (DESIGN.md invariant 9).
 *
 * A caller is authorized by one of:
 * - the unix socket (`agent.listen_addr: unix:/path`): whoever can open the socket file; its mode and group
 *   (`agent.api_socket_mode`, `agent.api_socket_group`) are the access control, as with docker.sock;
 * - a bearer token (`Authorization: Bearer <token>`, from `agent.api_token_file` or `agent.api_token_env`),
 *   compared in constant time and never logged; a wrong one is 401 even from root, but only when a token is
 *   configured (with none, a well-formed bearer header is ignored and the caller is judged by the rules below);
 * - for TCP from this host (the client's socket is in this network namespace's socket table, /proc/net/tcp{,6}):
 *   the owner uid of the client's socket, as the kernel records it: root, the user vipcast runs as,
 *   `agent.api_allowed_users` and members of `agent.api_allowed_groups`. gocast's registration scripts run as root
 *   on the host keep working without a token;
 * - `agent.api_insecure_open: true`: anyone who reaches the port (gocast's behaviour; an explicit opt-in).
 * Everything else is refused: 401 (a token is needed, or the one sent is wrong) or 403 (a local user who is not
 * allowed), each with a body that says why.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { endianness } from 'node:os';
import ipaddr from 'ipaddr.js';
import type { AgentConfig } from './config-types.js';

/** The connection's two ends as the server sees them. */
export interface Endpoints {
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
}

const LE = endianness() === 'LE';

/** How /proc/net/tcp{,6} prints an address: each 32-bit word of the network-order bytes read in host byte order. */
export function procHex(bytes: readonly number[]): string {
  const buf = Buffer.from(bytes);
  let out = '';
  for (let i = 0; i < buf.length; i += 4) out += (LE ? buf.readUInt32LE(i) : buf.readUInt32BE(i)).toString(16).toUpperCase().padStart(8, '0');
  return out;
}

const portHex = (port: number): string => port.toString(16).toUpperCase().padStart(4, '0');

/** The forms an address can have in /proc/net/tcp (IPv4) and /proc/net/tcp6 (IPv6 and v4-mapped). */
function procForms(address: string): { tcp?: string; tcp6?: string } {
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    addr = ipaddr.parse(address.replace(/%.*$/, ''));
  } catch {
    return {};
  }
  if (addr.kind() === 'ipv4') {
    const v4 = addr as ipaddr.IPv4;
    return { tcp: procHex(v4.toByteArray()), tcp6: procHex(v4.toIPv4MappedAddress().toByteArray()) };
  }
  const v6 = addr as ipaddr.IPv6;
  if (v6.isIPv4MappedAddress()) return { tcp: procHex(v6.toIPv4Address().toByteArray()), tcp6: procHex(v6.toByteArray()) };
  return { tcp6: procHex(v6.toByteArray()) };
}

/** TCP_ESTABLISHED in /proc/net/tcp's `st` column. */
const ESTABLISHED = '01';

/**
 * The uid owning the client end of a TCP connection made from this host, from one /proc/net/tcp{,6} text:
 * the line whose local end is the client's address:port and whose remote end is ours. Only an ESTABLISHED socket
 * with an inode counts: a closed (orphaned) client socket, or one in TIME_WAIT, is listed with uid 0, and a caller
 * must not become root by closing its end before vipcast looks. Undefined: no such socket (the caller is elsewhere).
 */
export function findPeerUid(table: string, ends: { clientHex: string; clientPort: number; serverHex: string; serverPort: number }): number | undefined {
  const local = `${ends.clientHex}:${portHex(ends.clientPort)}`;
  const remote = `${ends.serverHex}:${portHex(ends.serverPort)}`;
  let at = table.indexOf(` ${local} ${remote} `);
  while (at >= 0) {
    const end = table.indexOf('\n', at);
    const f = table.slice(at, end < 0 ? undefined : end).trim().split(/\s+/);
    // local rem st tx:rx tr:when retrnsmt uid timeout inode
    if (f[0] === local && f[1] === remote && f[2] === ESTABLISHED && f[8] !== undefined && f[8] !== '0' && /^\d+$/.test(f[6] ?? '')) return Number(f[6]);
    at = table.indexOf(` ${local} ${remote} `, at + 1);
  }
  return undefined;
}

/** Read a /proc/net table in chunks, stopping at the first chunk boundary after a match (the tables can be large). */
async function scanTable(file: string, match: (text: string) => number | undefined): Promise<number | undefined> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch {
    return undefined; // no IPv6 in this kernel/namespace
  }
  try {
    const buf = Buffer.alloc(256 * 1024);
    let carry = '';
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) return carry ? match(`${carry}\n`) : undefined;
      const text = carry + buf.toString('latin1', 0, bytesRead);
      const cut = text.lastIndexOf('\n');
      const found = match(text.slice(0, cut + 1));
      if (found !== undefined) return found;
      carry = text.slice(cut + 1);
    }
  } finally {
    await fh.close();
  }
}

/**
 * The uid of the local process that made this TCP connection, read from this process's network namespace (/proc/net
 * follows the reading process's namespace); undefined when the client is not on this host (or in another namespace).
 */
export async function localPeerUid(ends: Endpoints, procNet = '/proc/net'): Promise<number | undefined> {
  const client = procForms(ends.remoteAddress);
  const server = procForms(ends.localAddress);
  for (const family of ['tcp', 'tcp6'] as const) {
    const clientHex = client[family];
    const serverHex = server[family];
    if (!clientHex || !serverHex) continue;
    const uid = await scanTable(`${procNet}/${family}`, (text) => findPeerUid(text, { clientHex, clientPort: ends.remotePort, serverHex, serverPort: ends.localPort }));
    if (uid !== undefined) return uid;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------------------
// Users and groups (/etc/passwd, /etc/group; re-read when they change)

interface UserDb {
  readonly users: Map<number, { name: string; gid: number }>;
  readonly groups: Map<number, { name: string; members: string[] }>;
}

export class Accounts {
  private db: UserDb | undefined;
  private stamp = '';

  constructor(private readonly passwd = '/etc/passwd', private readonly group = '/etc/group') {}

  private async load(): Promise<UserDb> {
    const stamps = await Promise.all([this.passwd, this.group].map((f) => stat(f).then((s) => `${s.mtimeMs}:${s.size}:${s.ino}`, () => '-')));
    const stamp = stamps.join('|');
    if (this.db && stamp === this.stamp) return this.db;
    const read = (f: string): string[] => {
      try {
        return readFileSync(f, 'utf8').split('\n');
      } catch {
        return [];
      }
    };
    const users = new Map<number, { name: string; gid: number }>();
    for (const line of read(this.passwd)) {
      const f = line.split(':');
      if (f.length >= 4 && /^\d+$/.test(f[2]!) && /^\d+$/.test(f[3]!) && !users.has(Number(f[2]))) users.set(Number(f[2]), { name: f[0]!, gid: Number(f[3]) });
    }
    const groups = new Map<number, { name: string; members: string[] }>();
    for (const line of read(this.group)) {
      const f = line.split(':');
      if (f.length >= 4 && /^\d+$/.test(f[2]!) && !groups.has(Number(f[2]))) groups.set(Number(f[2]), { name: f[0]!, members: f[3]!.split(',').filter(Boolean) });
    }
    this.db = { users, groups };
    this.stamp = stamp;
    return this.db;
  }

  /** The uid's name (undefined: not in /etc/passwd) and the gids and group names it belongs to (primary + supplementary). */
  async describe(uid: number): Promise<{ name?: string; groups: Set<string> }> {
    const db = await this.load();
    const user = db.users.get(uid);
    const groups = new Set<string>();
    const addGroup = (gid: number): void => {
      groups.add(String(gid));
      const g = db.groups.get(gid);
      if (g) groups.add(g.name);
    };
    if (user) {
      addGroup(user.gid);
      for (const [gid, g] of db.groups) if (g.members.includes(user.name)) addGroup(gid);
    }
    return { ...(user ? { name: user.name } : {}), groups };
  }
}

/** Whether a local uid may call mutating endpoints without a token. */
export async function uidAllowed(uid: number, agent: Pick<AgentConfig, 'apiAllowedUsers' | 'apiAllowedGroups'>, accounts: Accounts): Promise<boolean> {
  if (uid === 0 || uid === process.geteuid?.()) return true;
  if (agent.apiAllowedUsers.length === 0 && agent.apiAllowedGroups.length === 0) return false;
  if (agent.apiAllowedUsers.includes(String(uid))) return true;
  const who = await accounts.describe(uid);
  if (who.name !== undefined && agent.apiAllowedUsers.includes(who.name)) return true;
  return agent.apiAllowedGroups.some((g) => who.groups.has(g));
}

// ---------------------------------------------------------------------------------------------------------------------
// Token

/** Constant-time comparison of a presented token with the configured one (hashed first: equal lengths, no length leak). */
export function tokenMatches(presented: string, configured: string): boolean {
  if (configured === '') return false;
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(configured).digest();
  return timingSafeEqual(a, b);
}

/** The token of an `Authorization: Bearer <token>` header; '' when absent, undefined when the header is malformed. */
export function bearer(header: string | undefined): string | undefined {
  if (header === undefined || header === '') return '';
  const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
  return m ? m[1] : undefined;
}

// ---------------------------------------------------------------------------------------------------------------------
// Rate limit and refusal log

/** Token buckets per client key: `burst` requests at once, then `perSecond`. */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(readonly burst: number, readonly perSecond: number, private readonly now: () => number = () => performance.now()) {}

  /** 0 when the request may go; else the seconds until it may. */
  take(key: string): number {
    const t = this.now();
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= 10_000) this.sweep(t);
      b = { tokens: this.burst, at: t };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.perSecond);
    b.at = t;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / this.perSecond));
  }

  private sweep(t: number): void {
    for (const [k, b] of this.buckets) if (b.tokens + ((t - b.at) / 1000) * this.perSecond >= this.burst) this.buckets.delete(k);
    // Still full of active clients: start over rather than grow without bound.
    if (this.buckets.size >= 10_000) this.buckets.clear();
  }
}

/** Once per key per interval: a flood of refused requests is one log line a minute, with the count suppressed. */
export class OncePer {
  private readonly seen = new Map<string, { at: number; suppressed: number }>();

  constructor(private readonly intervalMs: number, private readonly now: () => number = () => performance.now()) {}

  /** undefined: stay quiet; else how many were suppressed since the last time this key was let through. */
  pass(key: string): number | undefined {
    const t = this.now();
    const s = this.seen.get(key);
    if (s && t - s.at < this.intervalMs) {
      s.suppressed += 1;
      return undefined;
    }
    if (this.seen.size >= 1000) this.seen.clear();
    this.seen.set(key, { at: t, suppressed: 0 });
    return s?.suppressed ?? 0;
  }
}

/** Loopback or unspecified: the hosts a listen address can be reached from without leaving this host. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  try {
    const a = ipaddr.process(host);
    return a.range() === 'loopback';
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// The decision

/** Mutating requests per client: this many at once (a boot-time script registering every app), then this many a second. */
export const RATE_BURST = 100;
export const RATE_PER_SECOND = 20;

export type Decision =
  | { readonly ok: true; readonly who: string }
  | { readonly ok: false; readonly status: 401 | 403 | 429; readonly who: string; readonly reason: string; readonly retryAfter?: number; readonly invalidToken?: boolean };

export interface CallerInfo extends Partial<Endpoints> {
  /** Over the unix socket (`agent.listen_addr: unix:...`). */
  readonly unix: boolean;
  readonly authorization: string | undefined;
  /** What is being called, for the messages: "/register". */
  readonly action: string;
}

type AuthSettings = Pick<AgentConfig, 'apiToken' | 'apiAllowedUsers' | 'apiAllowedGroups' | 'apiInsecureOpen'>;

export class ApiGuard {
  readonly limiter = new RateLimiter(RATE_BURST, RATE_PER_SECOND);
  private readonly accounts: Accounts;
  private readonly procNet: string;

  constructor(opts: { accounts?: Accounts; procNet?: string } = {}) {
    this.accounts = opts.accounts ?? new Accounts();
    this.procNet = opts.procNet ?? '/proc/net';
  }

  /** May this caller call a mutating endpoint? `peerUid` caches the uid lookup per connection. */
  async decide(c: CallerInfo, agent: AuthSettings, peerUid: () => Promise<number | undefined> = () => this.lookup(c)): Promise<Decision> {
    const limited = (who: string): Decision | undefined => {
      const wait = this.limiter.take(who);
      return wait > 0 ? { ok: false, status: 429, who, reason: `too many requests from ${who} (at most ${RATE_BURST} at once, then ${RATE_PER_SECOND} a second); retry in ${wait} s`, retryAfter: wait } : undefined;
    };
    if (c.unix) return limited('the unix socket') ?? { ok: true, who: 'the unix socket' };
    // ::ffff:198.18.0.2 (a v4 client of a dual-stack listener) is shown and limited as 198.18.0.2.
    const remote = (c.remoteAddress ?? 'unknown').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
    const token = bearer(c.authorization);
    // A caller from another host is limited before anything is looked up for it.
    const loopback = isLoopbackHost(remote);
    if (!loopback) {
      const l = limited(remote);
      if (l) return l;
    }
    if (token === undefined) {
      return { ok: false, status: 401, who: remote, invalidToken: true, reason: `${c.action}: the Authorization header is not "Bearer <token>"` };
    }
    if (token !== '' && agent.apiToken !== '') {
      if (!tokenMatches(token, agent.apiToken)) return { ok: false, status: 401, who: remote, invalidToken: true, reason: `${c.action}: the bearer token is wrong` };
      return (loopback ? limited(`token@${remote}`) : undefined) ?? { ok: true, who: `token@${remote}` };
    }
    if (agent.apiInsecureOpen) return (loopback ? limited(remote) : undefined) ?? { ok: true, who: remote };
    const uid = await peerUid();
    if (uid === undefined) {
      const how = agent.apiToken === '' ? 'none is configured (agent.api_token_file or agent.api_token_env)' : 'send "Authorization: Bearer <token>"';
      return { ok: false, status: 401, who: remote, reason: `${c.action} from ${remote} needs a bearer token (the caller is not a local user of this host): ${how}` };
    }
    const who = `uid ${uid}`;
    const l = limited(who);
    if (l) return l;
    if (await uidAllowed(uid, agent, this.accounts)) return { ok: true, who };
    return {
      ok: false, status: 403, who,
      reason: `uid ${uid} may not call ${c.action}: only root, the user vipcast runs as, agent.api_allowed_users, members of agent.api_allowed_groups, or a caller with the bearer token may`,
    };
  }

  lookup(c: Partial<Endpoints>): Promise<number | undefined> {
    if (!c.localAddress || !c.remoteAddress || !c.localPort || !c.remotePort) return Promise.resolve(undefined);
    return localPeerUid(c as Endpoints, this.procNet);
  }
}
