/**
 * GoBGP v3 wire shapes (package `apipb`, snake_case as loaded with keepCase) and the conversions between them and
 * vipcast's Route / peer types. Everything v3-specific about messages lives here: a v4 adapter (package `api`, typed
 * NLRI and attributes instead of `Any`) would replace this file and keep the logic of router.ts and its parts
 * (connection.ts, paths.ts, peers.ts).
 */
import type { Community, Family, Origin, Prefix, Route } from '../../../plugin-api.js';
import { parseAddress, parsePrefix } from '../../../core/values.js';
import { VipcastError } from '../../../core/errors.js';

const TYPE = 'type.googleapis.com/apipb.';

export interface ApiFamily { afi: 'AFI_IP' | 'AFI_IP6'; safi: 'SAFI_UNICAST' }
/** A packed google.protobuf.Any as proto-loader's `json: true` reads and writes it. */
export interface ApiAny { '@type': string; [field: string]: unknown }

export interface ApiPath {
  nlri: ApiAny | null;
  pattrs: ApiAny[];
  family: ApiFamily | null;
  is_withdraw?: boolean;
  is_from_external?: boolean;
  neighbor_ip?: string;
  best?: boolean;
}

export interface ApiGlobal { asn: number; router_id: string; listen_port: number; listen_addresses: string[] }

export interface ApiPeer {
  conf: { neighbor_address: string; peer_asn: number; auth_password: string; local_asn?: number; admin_down?: boolean; description?: string } | null;
  ebgp_multihop: { enabled: boolean; multihop_ttl: number } | null;
  transport: { local_address: string; passive_mode?: boolean } | null;
  afi_safis: Array<{ config: { family: ApiFamily | null; enabled: boolean } | null; state?: { received: number; accepted: number; advertised: number } | null }>;
  state?: { session_state: string; neighbor_address: string; peer_asn: number; admin_state: string } | null;
  timers?: { state: { uptime: { seconds: number } | null } | null } | null;
}

export interface ApiStatement {
  name: string;
  conditions: { neighbor_set: { type: string; name: string } | null } | null;
  actions: { route_action: string; community: { type: string; communities: string[] } | null; large_community: { type: string; communities: string[] } | null } | null;
}
export interface ApiPolicy { name: string; statements: ApiStatement[] }
export interface ApiDefinedSet { defined_type: string; name: string; list: string[] }
export interface ApiPolicyAssignment { name: string; direction: string; policies: ApiPolicy[]; default_action: string }

export const FAMILIES: Record<Family, ApiFamily> = {
  ipv4: { afi: 'AFI_IP', safi: 'SAFI_UNICAST' },
  ipv6: { afi: 'AFI_IP6', safi: 'SAFI_UNICAST' },
};

const ORIGIN_CODE: Record<Origin, number> = { igp: 0, egp: 1, incomplete: 2 };
const ORIGIN_NAME: Origin[] = ['igp', 'egp', 'incomplete'];

const U32_MAX = 4294967295;
const isU32 = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= U32_MAX;

/**
 * Defense in depth (invariant 4): re-validate everything that goes into a path right before it is sent, whatever
 * the caller promised. gobgpd checks nothing: prefix_len 33 becomes a malformed UPDATE that makes the peer router
 * drop every session, a bad address announces 0.0.0.0/x. Returns the re-parsed prefix.
 */
export function checkRoute(route: Route, nextHop: string): Prefix {
  const p = route.prefix as Partial<Prefix> | undefined;
  const shown = JSON.stringify(p === undefined ? p : { address: p.address, length: p.length, family: p.family, text: p.text });
  const refuse = (why: string) => new VipcastError('VIPCAST_ERR_VALUE', `gobgp: refusing to send route ${shown} (app ${JSON.stringify(route.app)}): ${why}`);
  if (!p || typeof p.address !== 'string' || !Number.isInteger(p.length)) throw refuse('not a prefix');
  let parsed: Prefix;
  try {
    parsed = parsePrefix(`${p.address}/${p.length}`, 'route.prefix', false);
  } catch (err) {
    throw refuse((err as Error).message);
  }
  if (parsed.address !== p.address || parsed.length !== p.length || parsed.family !== p.family || parsed.text !== p.text) {
    throw refuse(`fields disagree with the canonical form ${parsed.text} (${parsed.family})`);
  }
  if (!(route.origin in ORIGIN_CODE)) throw refuse(`origin ${JSON.stringify(route.origin)} is not igp, egp or incomplete`);
  for (const c of route.communities) {
    if (c.type === 'standard' ? !isU32(c.value) : !(c.type === 'large' && isU32(c.global) && isU32(c.local1) && isU32(c.local2))) {
      throw refuse(`community ${JSON.stringify(c)} is out of range`);
    }
  }
  let nh;
  try {
    nh = parseAddress(nextHop, 'next hop');
  } catch (err) {
    throw refuse((err as Error).message);
  }
  if (nh.family !== parsed.family) throw refuse(`next hop ${nextHop} is not ${parsed.family}`);
  return parsed;
}

function nlriOf(prefix: Prefix): ApiAny {
  return { '@type': `${TYPE}IPAddressPrefix`, prefix: prefix.address, prefix_len: prefix.length };
}

/**
 * The path for a route. IPv4: NEXT_HOP; IPv6: MP_REACH_NLRI carrying the next hop and the NLRI. Communities
 * attributes only when there are communities: gocast always attached one, empty ones included.
 */
export function pathFor(route: Route, prefix: Prefix, nextHop: string): ApiPath {
  const family = FAMILIES[prefix.family];
  const nlri = nlriOf(prefix);
  const pattrs: ApiAny[] = [{ '@type': `${TYPE}OriginAttribute`, origin: ORIGIN_CODE[route.origin] }];
  if (prefix.family === 'ipv4') pattrs.push({ '@type': `${TYPE}NextHopAttribute`, next_hop: nextHop });
  else pattrs.push({ '@type': `${TYPE}MpReachNLRIAttribute`, family, next_hops: [nextHop], nlris: [nlri] });
  const standard = route.communities.filter((c) => c.type === 'standard').map((c) => (c as { value: number }).value);
  if (standard.length > 0) pattrs.push({ '@type': `${TYPE}CommunitiesAttribute`, communities: standard });
  const large = route.communities.flatMap((c) => (c.type === 'large' ? [{ global_admin: c.global, local_data1: c.local1, local_data2: c.local2 }] : []));
  if (large.length > 0) pattrs.push({ '@type': `${TYPE}LargeCommunitiesAttribute`, communities: large });
  return { family, nlri, pattrs };
}

/** A path read back from ListPath, in vipcast's terms (without the app name, which gobgpd does not store). */
export interface ReadPath {
  prefix: Prefix;
  origin: Origin;
  communities: Community[];
  nextHop: string;
}

export function standardCommunity(value: number): Community {
  return { type: 'standard', value, text: `${Math.floor(value / 65536)}:${value % 65536}` };
}

export function largeCommunity(global: number, local1: number, local2: number): Community {
  return { type: 'large', global, local1, local2, text: `${global}:${local1}:${local2}` };
}

/** True for a path vipcast (or anyone using AddPath) originated, as opposed to one learned from a peer. */
export function isLocalPath(p: ApiPath): boolean {
  return !p.is_from_external && (p.neighbor_ip === undefined || p.neighbor_ip === '' || p.neighbor_ip === '<nil>');
}

/** Parse a ListPath path; returns undefined (with the reason) when it is not an IPv4/IPv6 unicast prefix. */
export function readPath(p: ApiPath): ReadPath | string {
  const nlri = p.nlri;
  if (!nlri || nlri['@type'] !== `${TYPE}IPAddressPrefix`) return `unexpected NLRI ${JSON.stringify(nlri?.['@type'])}`;
  let prefix: Prefix;
  try {
    prefix = parsePrefix(`${String(nlri.prefix)}/${String(nlri.prefix_len)}`, 'gobgpd path', false);
  } catch (err) {
    return (err as Error).message;
  }
  let origin: Origin = 'incomplete';
  let nextHop = '';
  const communities: Community[] = [];
  for (const a of p.pattrs) {
    switch (a['@type']) {
      case `${TYPE}OriginAttribute`:
        origin = ORIGIN_NAME[Number(a.origin)] ?? 'incomplete';
        break;
      case `${TYPE}NextHopAttribute`:
        nextHop = String(a.next_hop);
        break;
      case `${TYPE}MpReachNLRIAttribute`:
        nextHop = String((a.next_hops as string[] | undefined)?.[0] ?? '');
        break;
      case `${TYPE}CommunitiesAttribute`:
        for (const v of (a.communities as number[]) ?? []) communities.push(standardCommunity(Number(v)));
        break;
      case `${TYPE}LargeCommunitiesAttribute`:
        for (const c of (a.communities as Array<{ global_admin: number; local_data1: number; local_data2: number }>) ?? []) {
          communities.push(largeCommunity(Number(c.global_admin), Number(c.local_data1), Number(c.local_data2)));
        }
        break;
      default:
        break;
    }
  }
  return { prefix, origin, communities, nextHop };
}

// ---- peers ----------------------------------------------------------------------------------------------------

/** A peer as vipcast wants it in gobgpd: every field resolved (address, local address, password). */
export interface DesiredPeer {
  address: string;
  asn: number;
  localAddress: string;
  /** eBGP multihop with TTL 255 (gocast: whenever the AS differ). */
  multihop: boolean;
  /** '' = no MD5. Secret: never logged. */
  password: string;
  /** Extra communities for this peer only (export policy). */
  communities: readonly Community[];
}

export function peerFor(d: DesiredPeer): ApiPeer {
  return {
    conf: { neighbor_address: d.address, peer_asn: d.asn, auth_password: d.password },
    ebgp_multihop: d.multihop ? { enabled: true, multihop_ttl: 255 } : { enabled: false, multihop_ttl: 0 },
    transport: { local_address: d.localAddress },
    afi_safis: [FAMILIES.ipv4, FAMILIES.ipv6].map((family) => ({ config: { family, enabled: true } })),
  };
}

/** Why gobgpd's copy of a peer differs from the desired one ('' when it does not). Never includes the password. */
export function peerDiff(have: ApiPeer, want: DesiredPeer): string {
  const diffs: string[] = [];
  if ((have.conf?.peer_asn ?? 0) !== want.asn) diffs.push(`peer_as ${have.conf?.peer_asn} -> ${want.asn}`);
  if ((have.conf?.auth_password ?? '') !== want.password) diffs.push('md5 password');
  if (have.conf?.admin_down) diffs.push('admin down');
  const mh = have.ebgp_multihop;
  const haveMh = mh?.enabled === true ? mh.multihop_ttl : 0;
  const wantMh = want.multihop ? 255 : 0;
  if (haveMh !== wantMh) diffs.push(`multihop ttl ${haveMh} -> ${wantMh}`);
  if ((have.transport?.local_address ?? '') !== want.localAddress) diffs.push(`local address ${have.transport?.local_address} -> ${want.localAddress}`);
  const fams = new Set(have.afi_safis.filter((a) => a.config?.enabled).map((a) => `${a.config?.family?.afi}/${a.config?.family?.safi}`));
  if (fams.size !== 2 || !fams.has('AFI_IP/SAFI_UNICAST') || !fams.has('AFI_IP6/SAFI_UNICAST')) diffs.push('address families');
  return diffs.join(', ');
}

// ---- per-peer export policy -----------------------------------------------------------------------------------

/** gobgpd's only export assignment that applies to ordinary (non route-server) peers. */
export const GLOBAL_ASSIGNMENT = 'global';
/** Prefix of every policy object vipcast owns; others are left alone. */
export const POLICY_PREFIX = 'vipcast-peer-';

export function policyNames(address: string): { policy: string; statement: string; neighborSet: string } {
  const base = `${POLICY_PREFIX}${address}`;
  return { policy: base, statement: `${base}-stmt`, neighborSet: `${base}-nbr` };
}

export function neighborSetFor(address: string): ApiDefinedSet {
  const { neighborSet } = policyNames(address);
  return { defined_type: 'NEIGHBOR', name: neighborSet, list: [`${address}/${address.includes(':') ? 128 : 32}`] };
}

/**
 * One policy per peer with extra communities: if the destination neighbor is in the peer's set, add its standard
 * and large communities; route action NONE so evaluation continues and the assignment's default (ACCEPT) applies.
 */
export function policyFor(address: string, communities: readonly Community[]): ApiPolicy {
  const names = policyNames(address);
  const std = communities.filter((c) => c.type === 'standard').map((c) => c.text);
  const large = communities.filter((c) => c.type === 'large').map((c) => c.text);
  return {
    name: names.policy,
    statements: [{
      name: names.statement,
      conditions: { neighbor_set: { type: 'ANY', name: names.neighborSet } },
      actions: {
        route_action: 'NONE',
        community: std.length > 0 ? { type: 'ADD', communities: std } : null,
        large_community: large.length > 0 ? { type: 'ADD', communities: large } : null,
      },
    }],
  };
}

/** A comparable fingerprint of a vipcast policy as gobgpd reports it (or as policyFor builds it). */
export function policyKey(p: ApiPolicy, set: ApiDefinedSet | undefined): string {
  const s = p.statements[0];
  return JSON.stringify({
    n: p.statements.length,
    set: s?.conditions?.neighbor_set?.name,
    match: s?.conditions?.neighbor_set?.type,
    list: set?.list ?? [],
    action: s?.actions?.route_action,
    std: s?.actions?.community?.type === 'ADD' ? [...s.actions.community.communities].sort() : [],
    large: s?.actions?.large_community?.type === 'ADD' ? [...s.actions.large_community.communities].sort() : [],
  });
}
