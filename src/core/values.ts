/**
 * Parsers that turn untrusted text into the typed values of the plugin API (invariant 4: validate at the edge).
 * Each takes the key path or parameter name it reports in errors.
 */
import ipaddr from 'ipaddr.js';
import type { Community, NatRule, Origin, Prefix } from '../plugin-api.js';
import { valueError } from './errors.js';

const IPV4_DOTTED = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Parse an IPv4 or IPv6 address (strict dotted quad for IPv4; no zone ids). Returns the canonical text. */
export function parseAddress(text: unknown, path: string): { address: string; family: 'ipv4' | 'ipv6' } {
  if (typeof text !== 'string' || text.length === 0) throw valueError(path, `${JSON.stringify(text)} is not an IP address`);
  if (IPV4_DOTTED.test(text)) return { address: text.split('.').map(Number).join('.'), family: 'ipv4' };
  if (text.includes(':') && !text.includes('%') && ipaddr.IPv6.isValid(text)) {
    const parsed = ipaddr.IPv6.parse(text);
    if (parsed.isIPv4MappedAddress()) throw valueError(path, `"${text}" is an IPv4-mapped IPv6 address; write the IPv4 address`);
    return { address: parsed.toRFC5952String(), family: 'ipv6' };
  }
  throw valueError(path, `"${text}" is not an IP address`);
}

/**
 * Parse `address/length` (or a bare address, taken as a host route when `allowBare`). Host bits set is an error,
 * as is a length out of range: gobgpd would announce garbage for either.
 */
export function parsePrefix(text: unknown, path: string, allowBare = true): Prefix {
  if (typeof text !== 'string' || text.trim() === '') throw valueError(path, `${JSON.stringify(text)} is not a prefix`);
  const slash = text.indexOf('/');
  const addrText = slash === -1 ? text : text.slice(0, slash);
  let addr;
  try {
    addr = parseAddress(addrText, path);
  } catch {
    throw valueError(path, `"${text}" is not a prefix (bad address "${addrText}")`);
  }
  const max = addr.family === 'ipv4' ? 32 : 128;
  let length = max;
  if (slash === -1) {
    if (!allowBare) throw valueError(path, `"${text}" is not a prefix (missing "/length")`);
  } else {
    const lenText = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > max) {
      throw valueError(path, `"${text}" is not a prefix (length must be 0..${max})`);
    }
    length = Number(lenText);
  }
  const bytes = ipaddr.parse(addr.address).toByteArray();
  for (let bit = length; bit < max; bit++) {
    if (bytes[bit >> 3]! & (0x80 >> (bit & 7))) {
      throw valueError(path, `"${text}" has host bits set (did you mean ${networkOf(bytes, length)}/${length}?)`);
    }
  }
  return Object.freeze({ address: addr.address, length, family: addr.family, text: `${addr.address}/${length}` });
}

function networkOf(bytes: number[], length: number): string {
  const out = bytes.map((b, i) => {
    const keep = Math.max(0, Math.min(8, length - i * 8));
    return b & ((0xff << (8 - keep)) & 0xff);
  });
  return ipaddr.fromByteArray(out).toString();
}

/** Well-known community names and their values (the prefix policy names them in refusals). */
export const WELL_KNOWN_COMMUNITIES: Readonly<Record<string, number>> = {
  'graceful-shutdown': 0xffff0000, // RFC 8326, 65535:0
  'accept-own': 0xffff0001,
  'llgr-stale': 0xffff0006,
  'no-llgr': 0xffff0007,
  blackhole: 0xffff029a, // RFC 7999, 65535:666
  'no-export': 0xffffff01,
  'no-advertise': 0xffffff02,
  'no-export-subconfed': 0xffffff03,
  'no-peer': 0xffffff04,
};

function u(text: string, max: number): number | undefined {
  if (!/^\d{1,10}$/.test(text)) return undefined;
  const n = Number(text);
  return n <= max ? n : undefined;
}

/** Parse a community: `a:b` (0..65535 each), `a:b:c` (large, 0..4294967295 each) or a well-known name. */
export function parseCommunity(text: unknown, path: string): Community {
  if (typeof text !== 'string') throw valueError(path, `${JSON.stringify(text)} is not a community (want "a:b" or "a:b:c")`);
  const lower = text.trim().toLowerCase();
  // hasOwn: 'constructor' or '__proto__' are not community names.
  const known = Object.hasOwn(WELL_KNOWN_COMMUNITIES, lower) ? WELL_KNOWN_COMMUNITIES[lower] : undefined;
  if (known !== undefined) return Object.freeze({ type: 'standard', value: known, text: `${Math.floor(known / 65536)}:${known % 65536}` });
  const parts = lower.split(':');
  if (parts.length === 2) {
    const [a, b] = parts.map((p) => u(p, 65535));
    if (a === undefined || b === undefined) throw valueError(path, `"${text}" is not a community (each part of "a:b" must be 0..65535)`);
    // Multiplication, not <<: 65535 << 16 is negative in JS.
    return Object.freeze({ type: 'standard', value: a * 65536 + b, text: `${a}:${b}` });
  }
  if (parts.length === 3) {
    const [g, l1, l2] = parts.map((p) => u(p, 4294967295));
    if (g === undefined || l1 === undefined || l2 === undefined) {
      throw valueError(path, `"${text}" is not a large community (each part of "a:b:c" must be 0..4294967295)`);
    }
    return Object.freeze({ type: 'large', global: g, local1: l1, local2: l2, text: `${g}:${l1}:${l2}` });
  }
  throw valueError(path, `"${text}" is not a community (want "a:b", "a:b:c" or a well-known name such as no-export)`);
}

/** Parse a TCP/UDP port 1..65535 from a number or a decimal string. */
export function parsePort(value: unknown, path: string): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw valueError(path, `${JSON.stringify(value)} is not a port (1..65535)`);
  return n;
}

/** Parse an AS number 1..4294967295. */
export function parseAsn(value: unknown, path: string): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\d{1,10}$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 4294967295) throw valueError(path, `${JSON.stringify(value)} is not an AS number (1..4294967295)`);
  return n;
}

/** Parse a gocast NAT spec: `proto:port` or `proto:listenPort:targetPort`, proto tcp or udp. */
export function parseNat(text: unknown, path: string): NatRule {
  if (typeof text !== 'string') throw valueError(path, `${JSON.stringify(text)} is not a NAT spec (want "tcp:53" or "udp:53:8053")`);
  const parts = text.trim().toLowerCase().split(':');
  if ((parts.length !== 2 && parts.length !== 3) || (parts[0] !== 'tcp' && parts[0] !== 'udp')) {
    throw valueError(path, `"${text}" is not a NAT spec (want "tcp:53" or "udp:53:8053")`);
  }
  const listenPort = parsePort(parts[1], path);
  const targetPort = parsePort(parts[2] ?? parts[1], path);
  const protocol = parts[0];
  return Object.freeze({ protocol, listenPort, targetPort, text: `${protocol}:${listenPort}:${targetPort}` });
}

export function parseOrigin(value: unknown, path: string): Origin {
  if (value === 'igp' || value === 'egp' || value === 'incomplete') return value;
  // gocast spells incomplete "unknown".
  if (value === 'unknown') return 'incomplete';
  throw valueError(path, `${JSON.stringify(value)} is not a BGP origin (igp, egp or incomplete)`);
}

/** App names end up in interface labels, log lines and iptables comments: keep them to a safe alphabet. */
export const APP_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function parseAppName(value: unknown, path: string): string {
  if (typeof value !== 'string' || !APP_NAME.test(value)) {
    throw valueError(path, `${JSON.stringify(value)} is not a valid app name (1..64 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit)`);
  }
  return value;
}

const DURATION_UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parse a Go duration string ("500ms", "10s", "1m30s") into milliseconds; a bare number is milliseconds. */
export function parseDuration(value: unknown, path: string): number {
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return value;
  if (typeof value !== 'string' || value.trim() === '') throw valueError(path, `${JSON.stringify(value)} is not a duration (e.g. "500ms", "10s", "1m30s")`);
  const text = value.trim();
  if (text === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  while (pos < text.length) {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (!m) throw valueError(path, `"${value}" is not a duration (e.g. "500ms", "10s", "1m30s")`);
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!;
    pos = re.lastIndex;
  }
  return total;
}

/**
 * The structured form of a monitor (`{ type: NAME, ... }`): every key other than `type` must be one the monitor
 * knows. `what` names it in the message ("an http monitor"). `hint` replaces the default "known: a, b" in the message.
 */
export function checkMonitorKeys(input: object, known: readonly string[], path: string, what: string, hint?: string): void {
  for (const key of Object.keys(input)) {
    if (key !== 'type' && !known.includes(key)) {
      throw valueError(`${path}.${key}`, `unknown key for ${what} (${hint ?? `known: ${known.join(', ')}`})`);
    }
  }
}
