/**
 * `port` check (runs inside a check-pool worker).
 *
 * - `listen` (`port:tcp:N`, `port:udp:N`): reads the kernel's socket tables (/proc/net/tcp, tcp6, udp, udp6) of the
 *   current network namespace. Up while a TCP socket LISTENs on port N, or a UDP socket is bound to N, on any local
 *   address. The port is never bound or connected, so a service that starts during a check is never refused.
 * - `connect` (`{ type: port, host, port }`): a real TCP connect within the timeout; the socket is always destroyed.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import net from 'node:net';
import ipaddr from 'ipaddr.js';
import type { CheckContext, CheckFunction, CheckResult } from '../../../plugin-api.js';
import type { PortParams } from './index.js';

/** TCP_LISTEN in include/net/tcp_states.h, as /proc/net/tcp prints it. */
const TCP_LISTEN = '0A';
/** Addresses named in a reason at most. */
const MAX_ADDRESSES = 8;
const IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** /proc prints an IPv4 address as one 32-bit word in host byte order (little-endian on every Linux target we run on). */
function ipv4FromProc(hex: string): string {
  const bytes = Buffer.from(hex, 'hex');
  if (IS_LITTLE_ENDIAN) bytes.reverse();
  return Array.from(bytes).join('.');
}

/** /proc prints an IPv6 address as four 32-bit words, each in host byte order. */
function ipv6FromProc(hex: string): string {
  const bytes = Buffer.from(hex, 'hex');
  if (IS_LITTLE_ENDIAN) {
    for (let i = 0; i < 16; i += 4) bytes.subarray(i, i + 4).reverse();
  }
  if (bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return `::ffff:${Array.from(bytes.subarray(12)).join('.')}`;
  }
  return (ipaddr.fromByteArray([...bytes]) as ipaddr.IPv6).toRFC5952String();
}

/**
 * One read of a /proc/net table, indexed by local port: port -> local addresses as /proc prints them (hex; TCP: LISTEN
 * sockets only), turned into text only for the port a check asks about.
 *
 * Reading a table is costly: the kernel walks its whole established-connections hash (262,144 buckets on a 4 GB
 * host: ~2 ms even for an empty tcp6 table) on every read() call, and formats every socket (1,000 listeners: 155 kB,
 * ~4.5 ms more). So a table is read with one read() into a buffer big enough for it (not in 64 kB chunks, each of which
 * walks the hash again), a table the kernel counts no socket in (/proc/net/sockstat, sockstat6: a few lines, no walk)
 * is not read at all, and checks in this worker share a snapshot that is at most SNAPSHOT_MAX_AGE_MS old (taken after
 * the check started minus that age). Health rounds of apps in one phase slot start together (health.ts), so one read
 * serves the slot.
 */
type PortIndex = Map<number, string[]>;
interface Snapshot {
  readonly startedAt: number;
  readonly index: PortIndex;
}
export const SNAPSHOT_MAX_AGE_MS = 50;
const snapshots = new Map<string, Snapshot>();
/** Grown to the largest table read so far (twice its size), so a table is read with one read() call. */
let buffer = Buffer.alloc(256 * 1024);

/** The whole of a /proc file in one read() where it fits; undefined when it does not exist (no IPv6 in the kernel). */
function readProc(file: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    let length = 0;
    for (;;) {
      if (length === buffer.length) {
        const bigger = Buffer.alloc(buffer.length * 2);
        buffer.copy(bigger, 0, 0, length);
        buffer = bigger;
      }
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
    }
    const text = buffer.toString('latin1', 0, length);
    // Room for the table to double before the next read needs a second call.
    if (length * 2 > buffer.length) buffer = Buffer.alloc(length * 2);
    return text;
  } finally {
    closeSync(fd);
  }
}

/** Sockets the kernel counts in use per table ("TCP6: inuse 3"), from /proc/net/sockstat and sockstat6. */
function socketsInUse(file: string): number | undefined {
  const m = /\/proc\/net\/(tcp|udp)(6?)$/.exec(file);
  if (!m) return undefined;
  const stat = readProc(`/proc/net/sockstat${m[2]}`);
  if (stat === undefined) return m[2] ? 0 : undefined;
  const found = new RegExp(`^${m[1]!.toUpperCase()}${m[2]}: inuse (\\d+)`, 'm').exec(stat);
  return found ? Number(found[1]) : undefined;
}

function readIndex(file: string, listenOnly: boolean): PortIndex {
  const index: PortIndex = new Map();
  if (socketsInUse(file) === 0) return index;
  const text = readProc(file);
  if (text === undefined) return index;
  // Line format: "  sl  local_address rem_address   st ..."; the first line is the header. Fields are split by
  // spaces; the local address is the second, the state the fourth.
  let at = text.indexOf('\n') + 1;
  while (at > 0 && at < text.length) {
    const end = text.indexOf('\n', at);
    const stop = end === -1 ? text.length : end;
    const colon1 = text.indexOf(': ', at);
    if (colon1 !== -1 && colon1 < stop) {
      let i = colon1 + 1;
      while (text.charCodeAt(i) === 32) i++;
      const localEnd = text.indexOf(' ', i);
      let j = localEnd;
      while (text.charCodeAt(j) === 32) j++;
      const remoteEnd = text.indexOf(' ', j);
      const state = text.slice(remoteEnd + 1, remoteEnd + 3);
      if (localEnd !== -1 && localEnd < stop && (!listenOnly || state === TCP_LISTEN)) {
        const colon = text.lastIndexOf(':', localEnd);
        const port = parseInt(text.slice(colon + 1, localEnd), 16);
        if (colon > i && Number.isInteger(port)) {
          const hex = text.slice(i, colon);
          const list = index.get(port);
          if (list) list.push(hex);
          else index.set(port, [hex]);
        }
      }
    }
    at = end + 1;
  }
  return index;
}

/** Local addresses of the sockets in one /proc/net table that use `port` (TCP: in LISTEN state only). */
function scanTable(file: string, port: number, listenOnly: boolean, v6: boolean, signal: AbortSignal): string[] {
  const now = performance.now();
  let snap = snapshots.get(file);
  if (!snap || now - snap.startedAt > SNAPSHOT_MAX_AGE_MS) {
    // A failed read throws here (the check fails with its reason) and is not kept for the next checks.
    snap = { startedAt: now, index: readIndex(file, listenOnly) };
    snapshots.set(file, snap);
  }
  signal.throwIfAborted();
  return (snap.index.get(port) ?? []).map((hex) => (v6 ? ipv6FromProc(hex) : ipv4FromProc(hex)));
}

function checkListen(protocol: 'tcp' | 'udp', port: number, ctx: CheckContext): CheckResult {
  const tcp = protocol === 'tcp';
  const v4 = scanTable(`/proc/net/${protocol}`, port, tcp, false, ctx.signal);
  const v6 = scanTable(`/proc/net/${protocol}6`, port, tcp, true, ctx.signal);
  const addresses = [...new Set([...v4, ...v6])];
  if (addresses.length === 0) {
    return { ok: false, reason: tcp ? `no socket listens on tcp port ${port}` : `no socket is bound to udp port ${port}` };
  }
  const shown = addresses.slice(0, MAX_ADDRESSES).join(', ') + (addresses.length > MAX_ADDRESSES ? `, +${addresses.length - MAX_ADDRESSES} more` : '');
  return { ok: true, reason: tcp ? `tcp port ${port} listening on ${shown}` : `udp port ${port} bound on ${shown}` };
}

function checkConnect(host: string, port: number, ctx: CheckContext): Promise<CheckResult> {
  const target = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  return new Promise<CheckResult>((resolve) => {
    if (ctx.signal.aborted) {
      resolve({ ok: false, reason: `connect to ${target} timed out after ${ctx.timeoutMs} ms` });
      return;
    }
    const socket = net.connect({ host, port });
    const finish = (result: CheckResult): void => {
      ctx.signal.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve(result);
    };
    const onAbort = (): void => finish({ ok: false, reason: `connect to ${target} timed out after ${ctx.timeoutMs} ms` });
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => finish({ ok: true, reason: `connected to ${target}` }));
    socket.once('error', (err: NodeJS.ErrnoException) => finish({ ok: false, reason: `connect to ${target} failed: ${err.code ?? err.message}` }));
  });
}

export const check: CheckFunction = async (params, ctx) => {
  const p = params as PortParams;
  if (p.mode === 'listen') return checkListen(p.protocol, p.port, ctx);
  return checkConnect(p.host, p.port, ctx);
};

export default check;
