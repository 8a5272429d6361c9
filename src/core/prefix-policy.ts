/**
 * The prefix policy (invariant 9: only what is allowed is announced): which VIPs and communities may be announced,
 * for every source. Pure functions over data; the host's own addresses come in as a value (host-addresses.ts reads
 * them), so the rules are tested as tables.
 *
 * Where it applies: config validation (`vipcast validate`, start, reload: key paths such as `apps[2].vip`),
 * `appFromRegistration` (HTTP parameter `vip`, Consul tag `gocast_vip=`), and the one door every app passes,
 * `AppRegistry.upsert`/`replaceSource` (any source, discovery plugins included), which checks again.
 *
 * A VIP is refused, in this order, when
 *  1. it is a default route (length 0);
 *  2. it lies inside a special range: unspecified/"this network" (0.0.0.0/8, ::/128), loopback (127.0.0.0/8, ::1),
 *     link-local (169.254.0.0/16, fe80::/10), multicast (224.0.0.0/4, ff00::/8), the broadcast address
 *     (255.255.255.255), reserved 240.0.0.0/4, IPv4-mapped (::ffff:0:0/96);
 *  3. it is shorter than the minimum length of its family (agent.min_prefix_length_v4, default /24;
 *     agent.min_prefix_length_v6, default /48), unless agent.allowed_prefixes lists exactly that prefix;
 *  4. it covers a special range (only reachable with a lowered minimum or an explicit allowance);
 *  5. agent.allowed_prefixes is set and no entry contains it; for sources other than the config file, also
 *     agent.registration_allowed_prefixes when that is set;
 *  6. it contains the address of a BGP peer (bgp.peer_ip, bgp.peers[].peer_ip; the default gateway when a peer's
 *     address is unset), bgp.local_ip (router id and next hop), or an address of one of the host's interfaces,
 *     loopback ones included (an operator's router id on lo), but not the VIPs vipcast put on lo or adopted (its
 *     state file records them) and, for the config file's apps, not an address already on lo: the operator names
 *     it there to have it adopted (docs/HOST.md). lo's 127/8 and ::1 are caught by 2.
 *
 * Communities from sources other than the config file (HTTP, Consul, plugins): with agent.allowed_communities unset,
 * any regular community passes and the well-known/reserved ones (0:*, 65535:*: blackhole, no-export, no-advertise,
 * graceful-shutdown...) are refused; with it set, only communities matching one of its patterns pass. The config
 * file's own communities are the operator's and are not checked.
 */
import ipaddr from 'ipaddr.js';
import type { AppSource, AppSpec, Community, Prefix } from '../plugin-api.js';
import { valueError } from './errors.js';
import { WELL_KNOWN_COMMUNITIES, parsePrefix } from './values.js';

export const DEFAULT_MIN_PREFIX_LENGTH_V4 = 24;
export const DEFAULT_MIN_PREFIX_LENGTH_V6 = 48;

/** One entry of agent.allowed_communities: each part a number or `*` (undefined); `text` as written, canonical. */
export interface CommunityPattern {
  readonly type: 'standard' | 'large';
  readonly parts: readonly (number | undefined)[];
  readonly text: string;
}

/** The policy in force: from the agent keys and the BGP settings of one config (plain data, JSON-comparable). */
export interface PrefixPolicy {
  /** agent.allowed_prefixes; empty = no allowlist (only the fixed rules apply). */
  readonly allowedPrefixes: readonly Prefix[];
  /** agent.registration_allowed_prefixes: for sources other than the config file; empty = none beyond the above. */
  readonly registrationAllowedPrefixes: readonly Prefix[];
  readonly minLengthV4: number;
  readonly minLengthV6: number;
  /** agent.allowed_communities; undefined = regular communities pass, well-known and reserved ones don't. */
  readonly allowedCommunities?: readonly CommunityPattern[];
  /** Addresses of the configured BGP peers. */
  readonly peers: readonly string[];
  /** A peer's address is unset: the default gateway is a peer too. */
  readonly defaultGatewayPeer: boolean;
  /** bgp.local_ip. */
  readonly localIp?: string;
}

/** The host's own addresses at the time of a check (host-addresses.ts). */
export interface HostAddresses {
  /**
   * The host's interface addresses; `loopback`: on a loopback interface (never 127/8 or ::1, nor a VIP vipcast put
   * there or adopted).
   */
  readonly interfaces: readonly { readonly name: string; readonly address: string; readonly loopback?: boolean }[];
  /** Default gateways (IPv4 and IPv6). */
  readonly gateways: readonly string[];
}

export const NO_HOST_ADDRESSES: HostAddresses = Object.freeze({ interfaces: Object.freeze([]), gateways: Object.freeze([]) });

/** The policy of a config that sets none of the policy keys and has no peers: the fixed rules only. */
export const DEFAULT_POLICY: PrefixPolicy = Object.freeze({
  allowedPrefixes: Object.freeze([]),
  registrationAllowedPrefixes: Object.freeze([]),
  minLengthV4: DEFAULT_MIN_PREFIX_LENGTH_V4,
  minLengthV6: DEFAULT_MIN_PREFIX_LENGTH_V6,
  peers: Object.freeze([]),
  defaultGatewayPeer: false,
});

interface Special {
  readonly range: string;
  /** Plural noun phrase: "loopback addresses". */
  readonly what: string;
}

/** Order matters where ranges nest: the broadcast address before 240.0.0.0/4. */
const SPECIAL: readonly Special[] = [
  { range: '0.0.0.0/8', what: 'unspecified ("this network") addresses' },
  { range: '127.0.0.0/8', what: 'loopback addresses' },
  { range: '169.254.0.0/16', what: 'link-local addresses' },
  { range: '224.0.0.0/4', what: 'multicast addresses' },
  { range: '255.255.255.255/32', what: 'the broadcast address' },
  { range: '240.0.0.0/4', what: 'reserved (class E) addresses' },
  { range: '::/128', what: 'the unspecified address' },
  { range: '::1/128', what: 'the loopback address' },
  { range: '::ffff:0:0/96', what: 'IPv4-mapped addresses' },
  { range: 'fe80::/10', what: 'link-local addresses' },
  { range: 'ff00::/8', what: 'multicast addresses' },
];

const SPECIAL_PARSED = SPECIAL.map((s) => {
  const [addr, len] = ipaddr.parseCIDR(s.range);
  return { ...s, addr, len };
});

function addrOf(prefix: Prefix): ipaddr.IPv4 | ipaddr.IPv6 {
  return ipaddr.parse(prefix.address);
}

/** Does `prefix` contain `address` (same family)? */
export function containsAddress(prefix: Prefix, address: string): boolean {
  let a: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    a = ipaddr.parse(address);
  } catch {
    return false;
  }
  if (a.kind() === 'ipv6' && (a as ipaddr.IPv6).isIPv4MappedAddress()) a = (a as ipaddr.IPv6).toIPv4Address();
  const p = addrOf(prefix);
  return a.kind() === p.kind() && a.match(p, prefix.length);
}

/** Does `outer` contain `inner` (same family, outer no longer than inner)? */
export function containsPrefix(outer: Prefix, inner: Prefix): boolean {
  return outer.family === inner.family && outer.length <= inner.length && addrOf(inner).match(addrOf(outer), outer.length);
}

const list = (prefixes: readonly Prefix[]): string => prefixes.map((p) => p.text).join(', ');

/**
 * Why `prefix` may not be announced by an app of `source`, or undefined when it may. The reason is a sentence
 * without the prefix ("a default route is never announced"); `vipRefusal` puts the key path and prefix in front.
 */
export function checkVip(prefix: Prefix, policy: PrefixPolicy, ctx: { readonly source: AppSource; readonly host: HostAddresses }): string | undefined {
  if (prefix.length === 0) return 'a default route is never announced';
  const p = addrOf(prefix);
  const special = SPECIAL_PARSED.filter((s) => s.addr.kind() === p.kind());
  for (const s of special) {
    if (prefix.length >= s.len && p.match(s.addr, s.len)) return `${s.what} (${s.range}) ${s.what.startsWith('the ') ? 'is' : 'are'} never announced`;
  }
  const min = prefix.family === 'ipv4' ? policy.minLengthV4 : policy.minLengthV6;
  const listedExactly = policy.allowedPrefixes.some((a) => a.text === prefix.text);
  if (prefix.length < min && !listedExactly) {
    return `it is shorter than /${min} (agent.min_prefix_length_${prefix.family === 'ipv4' ? 'v4' : 'v6'}); to announce it, list exactly this prefix in agent.allowed_prefixes`;
  }
  for (const s of special) {
    if (s.addr.match(p, prefix.length)) return `it covers ${s.range} (${s.what}), which is never announced`;
  }
  if (policy.allowedPrefixes.length > 0 && !policy.allowedPrefixes.some((a) => containsPrefix(a, prefix))) {
    return `it is not inside agent.allowed_prefixes (${list(policy.allowedPrefixes)})`;
  }
  if (ctx.source !== 'config' && policy.registrationAllowedPrefixes.length > 0 && !policy.registrationAllowedPrefixes.some((a) => containsPrefix(a, prefix))) {
    return `it is not inside agent.registration_allowed_prefixes (${list(policy.registrationAllowedPrefixes)}), the ranges apps from ${ctx.source} may use`;
  }
  const holds = (addr: string): string => (prefix.length === (prefix.family === 'ipv4' ? 32 : 128) ? 'it is' : 'it contains');
  for (const peer of policy.peers) {
    if (containsAddress(prefix, peer)) return `${holds(peer)} the address of BGP peer ${peer}`;
  }
  if (policy.localIp !== undefined && containsAddress(prefix, policy.localIp)) {
    return `${holds(policy.localIp)} bgp.local_ip ${policy.localIp} (the router id and next hop of every route)`;
  }
  if (policy.defaultGatewayPeer) {
    for (const gw of ctx.host.gateways) {
      if (containsAddress(prefix, gw)) return `${holds(gw)} ${gw}, the default gateway, which is a BGP peer (its peer_ip is unset)`;
    }
  }
  for (const own of ctx.host.interfaces) {
    if (!containsAddress(prefix, own.address)) continue;
    if (!own.loopback) return `${holds(own.address)} ${own.address}, an address of this host (interface ${own.name})`;
    // Already on lo and not vipcast's: the operator may adopt it by naming it in the file; nobody else may take it.
    if (ctx.source !== 'config') {
      return `${holds(own.address)} ${own.address}, an address of this host on loopback interface ${own.name} that vipcast did not put there (only an app of the config file may adopt an address already on lo)`;
    }
  }
  return undefined;
}

/** The refusal message of a VIP: `apps[2].vip: 0.0.0.0/0 is refused: a default route is never announced`. */
export function vipRefusal(path: string, prefix: Prefix, reason: string): string {
  return `${path}: ${prefix.text} is refused: ${reason}`;
}

const NAME_OF = new Map(Object.entries(WELL_KNOWN_COMMUNITIES).map(([name, value]) => [value, name]));

/** "blackhole (65535:666)" for a well-known community, else its text. */
export function communityName(c: Community): string {
  const name = c.type === 'standard' ? NAME_OF.get(c.value) : undefined;
  return name ? `${name} (${c.text})` : c.text;
}

function matches(pattern: CommunityPattern, c: Community): boolean {
  const parts = c.type === 'standard' ? [Math.floor(c.value / 65536), c.value % 65536] : [c.global, c.local1, c.local2];
  return pattern.type === c.type && pattern.parts.every((p, i) => p === undefined || p === parts[i]);
}

/** Why a community from a source other than the config file may not be used, or undefined. */
export function checkCommunity(c: Community, policy: PrefixPolicy): string | undefined {
  if (policy.allowedCommunities === undefined) {
    if (c.type === 'standard' && (c.value < 65536 || c.value >= 0xffff0000)) {
      return `${communityName(c)} is a well-known or reserved community (0:*, 65535:*): list it in agent.allowed_communities to allow it from HTTP, Consul and plugins`;
    }
    return undefined;
  }
  if (policy.allowedCommunities.some((p) => matches(p, c))) return undefined;
  const allowed = policy.allowedCommunities.map((p) => p.text).join(', ');
  return `${communityName(c)} is not in agent.allowed_communities (${allowed || 'empty: no community is allowed'})`;
}

/** Parse one agent.allowed_communities entry: `65001:100`, `65001:*`, `65001:*:*`, or a well-known name. */
export function parseCommunityPattern(text: unknown, path: string): CommunityPattern {
  if (typeof text !== 'string') throw valueError(path, `${JSON.stringify(text)} is not a community pattern (want "65001:*", "65001:100", "65001:1:*" or a name such as no-export)`);
  const lower = text.trim().toLowerCase();
  const known = Object.hasOwn(WELL_KNOWN_COMMUNITIES, lower) ? WELL_KNOWN_COMMUNITIES[lower] : undefined;
  if (known !== undefined) return Object.freeze({ type: 'standard', parts: Object.freeze([Math.floor(known / 65536), known % 65536]), text: lower });
  const parts = lower.split(':');
  const max = parts.length === 2 ? 65535 : 4294967295;
  const parsed = parts.map((p) => (p === '*' ? undefined : /^\d{1,10}$/.test(p) && Number(p) <= max ? Number(p) : NaN));
  if ((parts.length !== 2 && parts.length !== 3) || parsed.some((n) => Number.isNaN(n))) {
    throw valueError(path, `"${text}" is not a community pattern (want "a:b" or "a:b:c", each part a number or *, or a well-known name such as no-export)`);
  }
  return Object.freeze({ type: parts.length === 2 ? 'standard' : 'large', parts: Object.freeze(parsed), text: parts.map((p, i) => (parsed[i] === undefined ? '*' : String(parsed[i]))).join(':') });
}

/** Parse one agent.allowed_prefixes entry (any length, /0 included: it allows, it is never announced itself). */
export function parseAllowedPrefix(text: unknown, path: string): Prefix {
  return parsePrefix(text, path);
}

/**
 * Every problem of an app under the policy (the registry's door): VIPs for every source, communities for sources
 * other than the config file. Each message starts with `vip` / `vip_communities` and the value.
 */
export function appPolicyProblems(app: AppSpec, policy: PrefixPolicy, host: HostAddresses): string[] {
  const problems: string[] = [];
  for (const vip of app.vips) {
    const why = checkVip(vip, policy, { source: app.source, host });
    if (why) problems.push(vipRefusal('vip', vip, why));
  }
  if (app.source !== 'config') {
    for (const c of app.communities) {
      const why = checkCommunity(c, policy);
      if (why) problems.push(`vip_communities: ${why}`);
    }
  }
  return problems;
}
