/**
 * The host's own addresses for the prefix policy, read in the network namespace vipcast runs in: the addresses of
 * every interface (os.networkInterfaces) and the default gateways (/proc/net/route and /proc/net/ipv6_route: the peer
 * of a BGP session whose peer_ip is unset). Read synchronously (no `ip` process) and kept for a second, so a Consul
 * catalog of many services costs one read.
 *
 * Loopback interfaces count too (an operator's router id /32 on lo is the host's own), except their 127/8 and ::1
 * (refused as loopback anyway) and the VIPs vipcast itself put on lo or adopted there: those the host state file
 * (host/ownership.ts) records, or a VIP would refuse itself at the next registration, reload or restart. Such entries
 * are marked `loopback`: the config file's apps may still name an address already on lo (adoption, docs/HOST.md).
 */
import { readFileSync } from 'node:fs';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import ipaddr from 'ipaddr.js';
import type { HostAddresses } from './prefix-policy.js';

const CACHE_MS = 1000;
let cached: { at: number; value: HostAddresses } | undefined;

/** Host state files of the host networks in this process (normally one: agent.state_file), most recent last. */
const stateFiles: string[] = [];

/** A host network keeps its loopback records in `file`: the addresses recorded there are vipcast's VIPs. */
export function trackVipStateFile(file: string): void {
  const i = stateFiles.indexOf(file);
  if (i !== -1) stateFiles.splice(i, 1);
  stateFiles.push(file);
  if (stateFiles.length > 8) stateFiles.shift();
  cached = undefined;
}

export function readHostAddresses(now = Date.now()): HostAddresses {
  if (cached && now - cached.at < CACHE_MS && now >= cached.at) return cached.value;
  // The interfaces before the state files: vipcast records an address before it adds it, so an address seen on lo
  // here that is vipcast's is in the file read after.
  const interfaces = networkInterfaces();
  const recorded = new Set(stateFiles.flatMap((f) => recordedVips(read(f))));
  const value = Object.freeze({ interfaces: Object.freeze(interfaceAddresses(interfaces, recorded)), gateways: Object.freeze(defaultGateways()) });
  cached = { at: now, value };
  return value;
}

/** "address/length" in one spelling (ipaddr.js's), for the state file's prefixes and lo's addresses alike. */
function key(address: string, length: number | string): string | undefined {
  try {
    return `${ipaddr.parse(address).toString()}/${Number(length)}`;
  } catch {
    return undefined;
  }
}

/** The prefixes a host state file records (owned or adopted); nothing from a missing or unreadable file. */
export function recordedVips(text: string): string[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return [];
  }
  const vips = (data as { vips?: unknown } | null)?.vips;
  if (!Array.isArray(vips)) return [];
  return vips.flatMap((r: unknown) => {
    const prefix = (r as { prefix?: unknown } | null)?.prefix;
    if (typeof prefix !== 'string' || !prefix.includes('/')) return [];
    const [addr, len] = prefix.split('/');
    const k = key(addr!, len!);
    return k ? [k] : [];
  });
}

/**
 * The host's own interface addresses: every non-loopback one; on loopback interfaces (IPv4 labels such as `lo:web` are
 * names of their own) all but 127/8, ::1 and the `recorded` VIPs ("address/length").
 */
export function interfaceAddresses(interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>, recorded: ReadonlySet<string> = new Set()): Array<{ name: string; address: string; loopback?: true }> {
  const out: Array<{ name: string; address: string; loopback?: true }> = [];
  for (const [name, addrs] of Object.entries(interfaces)) {
    for (const a of addrs ?? []) {
      if (!a.internal) {
        out.push({ name, address: a.address });
        continue;
      }
      let parsed: ipaddr.IPv4 | ipaddr.IPv6;
      try {
        parsed = ipaddr.parse(a.address);
      } catch {
        continue;
      }
      if (parsed.range() === 'loopback') continue;
      const k = key(a.address, a.cidr?.split('/')[1] ?? (a.family === 'IPv4' ? 32 : 128));
      if (k !== undefined && recorded.has(k)) continue;
      out.push({ name, address: a.address, loopback: true });
    }
  }
  return out;
}

function read(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
/** Default gateways from the kernel's routing tables (IPv4 hex is little-endian in /proc/net/route). */
export function defaultGateways(v4 = read('/proc/net/route'), v6 = read('/proc/net/ipv6_route')): string[] {
  const out: string[] = [];
  for (const line of v4.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
    if (f.length < 8 || f[1] !== '00000000' || f[7] !== '00000000' || !/^[0-9A-Fa-f]{8}$/.test(f[2]!) || f[2] === '00000000') continue;
    const n = parseInt(f[2]!, 16);
    out.push([n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24].join('.'));
  }
  for (const line of v6.split('\n')) {
    const f = line.trim().split(/\s+/);
    // dest destlen src srclen nexthop metric refcnt use flags iface
    if (f.length < 10 || f[0] !== '0'.repeat(32) || f[1] !== '00' || !/^[0-9a-f]{32}$/i.test(f[4]!) || /^0+$/.test(f[4]!)) continue;
    const bytes = f[4]!.match(/../g)!.map((h) => parseInt(h, 16));
    out.push(ipaddr.fromByteArray(bytes).toString());
  }
  return [...new Set(out)];
}
