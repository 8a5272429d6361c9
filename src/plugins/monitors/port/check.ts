/**
 * `port` check (runs inside a check-pool worker).
 *
 * - `listen` (`port:tcp:N`, `port:udp:N`): reads the kernel's socket tables (/proc/net/tcp, tcp6, udp, udp6) of the
 *   current network namespace. Up while a TCP socket LISTENs on port N, or a UDP socket is bound to N, on any local
 *   address. The port is never bound or connected, so a service that starts during a check is never refused.
 * - `connect` (`{ type: port, host, port }`): a real TCP connect within the timeout; the socket is always destroyed.
 */
import { readFile } from 'node:fs/promises';
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
 * One read of a /proc/net table, indexed by local port: port -> local addresses (TCP: LISTEN sockets only).
 * Reading a table costs milliseconds with many sockets (the kernel formats every line), and a host with a thousand
 * apps checks a thousand ports a second: so checks in this worker share a snapshot that is at most SNAPSHOT_MAX_AGE_MS
 * old (taken after the check started minus that age), and concurrent checks share one read in flight.
 */
type PortIndex = Map<number, string[]>;
interface Snapshot {
  readonly startedAt: number;
  readonly index: Promise<PortIndex>;
}
export const SNAPSHOT_MAX_AGE_MS = 50;
const snapshots = new Map<string, Snapshot>();

async function readIndex(file: string, listenOnly: boolean, v6: boolean): Promise<PortIndex> {
  let text: string;
  try {
    text = await readFile(file, { encoding: 'latin1' });
  } catch (err) {
    // No tcp6/udp6 table when IPv6 is disabled in the kernel: nothing listens there.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw err;
  }
  const index: PortIndex = new Map();
  // Line format: "  sl  local_address rem_address   st ..."; the first line is the header.
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/, 4);
    if (fields.length < 4) continue;
    const local = fields[1]!;
    if (listenOnly && fields[3] !== TCP_LISTEN) continue;
    const colon = local.lastIndexOf(':');
    if (colon === -1) continue;
    const port = parseInt(local.slice(colon + 1), 16);
    if (!Number.isInteger(port)) continue;
    const hex = local.slice(0, colon);
    const list = index.get(port) ?? [];
    list.push(v6 ? ipv6FromProc(hex) : ipv4FromProc(hex));
    index.set(port, list);
  }
  return index;
}

/** Local addresses of the sockets in one /proc/net table that use `port` (TCP: in LISTEN state only). */
async function scanTable(file: string, port: number, listenOnly: boolean, v6: boolean, signal: AbortSignal): Promise<string[]> {
  const now = performance.now();
  let snap = snapshots.get(file);
  if (!snap || now - snap.startedAt > SNAPSHOT_MAX_AGE_MS) {
    snap = { startedAt: now, index: readIndex(file, listenOnly, v6) };
    snapshots.set(file, snap);
    // A failed read must not be served to the next checks.
    snap.index.catch(() => { if (snapshots.get(file) === snap) snapshots.delete(file); });
  }
  signal.throwIfAborted();
  return (await snap.index).get(port) ?? [];
}

async function checkListen(protocol: 'tcp' | 'udp', port: number, ctx: CheckContext): Promise<CheckResult> {
  const tcp = protocol === 'tcp';
  const [v4, v6] = await Promise.all([
    scanTable(`/proc/net/${protocol}`, port, tcp, false, ctx.signal),
    scanTable(`/proc/net/${protocol}6`, port, tcp, true, ctx.signal),
  ]);
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
