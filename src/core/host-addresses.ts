/**
 * The host's own addresses for the prefix policy, read in the network namespace vipcast runs in: the addresses of
 * every non-loopback interface (os.networkInterfaces; loopback interfaces are skipped because the VIPs vipcast holds
 * live there, and lo's 127/8 and ::1 are refused as loopback anyway) and the default gateways (/proc/net/route and
 * /proc/net/ipv6_route: the peer of a BGP session whose peer_ip is unset). Read synchronously (no `ip` process) and
 * kept for a second, so a Consul catalog of many services costs one read.
 */
import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import ipaddr from 'ipaddr.js';
import type { HostAddresses } from './prefix-policy.js';

const CACHE_MS = 1000;
let cached: { at: number; value: HostAddresses } | undefined;

export function readHostAddresses(now = Date.now()): HostAddresses {
  if (cached && now - cached.at < CACHE_MS && now >= cached.at) return cached.value;
  const value = Object.freeze({ interfaces: Object.freeze(interfaceAddresses()), gateways: Object.freeze(defaultGateways()) });
  cached = { at: now, value };
  return value;
}

function interfaceAddresses(): Array<{ name: string; address: string }> {
  const out: Array<{ name: string; address: string }> = [];
  for (const [name, addrs] of Object.entries(networkInterfaces())) {
    for (const a of addrs ?? []) if (!a.internal) out.push({ name, address: a.address });
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
