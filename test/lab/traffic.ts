/**
 * Test lab traffic helpers: a TCP+UDP echo server and a one-shot client run inside namespaces (node -e, argument
 * arrays), and readers for the addresses on lo and the nat table.
 */
import type { ChildProcess } from 'node:child_process';
import { nsRun, nsSpawn } from './netns.js';

export async function loAddrs(ns: string): Promise<{ local: string; prefixlen: number; label?: string }[]> {
  const out = JSON.parse(await nsRun(ns, 'ip', ['-j', 'addr', 'show', 'dev', 'lo'])) as { addr_info: { local: string; prefixlen: number; label?: string }[] }[];
  return out[0]!.addr_info.map((a) => ({ local: a.local, prefixlen: a.prefixlen, ...(a.label ? { label: a.label } : {}) }));
}

export const natRules = async (ns: string, bin = 'iptables'): Promise<string[]> =>
  (await nsRun(ns, bin, ['-w', '10', '-t', 'nat', '-S'])).split('\n').filter((l) => l.startsWith('-'));

const SERVER = `
const net = require('node:net'), dgram = require('node:dgram');
const [, host, port] = process.argv;
let n = 0; const ready = () => { if (++n === 2) console.log('ready'); };
net.createServer((s) => s.end('srv tcp ' + s.localAddress + ':' + s.localPort + ' from ' + s.remoteAddress)).listen(Number(port), host, ready);
const u = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
u.on('message', (m, r) => u.send('srv udp ' + host + ':' + port + ' from ' + r.address, r.port, r.address));
u.bind(Number(port), host, ready);
`;

const CLIENT = `
const net = require('node:net'), dgram = require('node:dgram');
const [, proto, host, port, srcPort] = process.argv;
const done = (s) => { process.stdout.write(String(s).trim()); process.exit(0); };
setTimeout(() => done('ERR timeout'), 2000);
if (proto === 'tcp') {
  const c = net.connect(Number(port), host); let b = '';
  c.on('data', (d) => (b += d)); c.on('end', () => done(b)); c.on('error', (e) => done('ERR ' + e.code));
} else {
  // A connected UDP socket reports ICMP port unreachable as ECONNREFUSED: negative probes return at once.
  const u = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  u.on('message', (m) => done(m)); u.on('error', (e) => done('ERR ' + e.code));
  const go = () => u.connect(Number(port), host, () => u.send('q'));
  if (srcPort) u.bind(Number(srcPort), go); else go();
}
`;

export async function startServer(ns: string, host: string, port: number): Promise<ChildProcess> {
  const child = nsSpawn(ns, 'node', ['-e', SERVER, host, String(port)]);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => reject(new Error(`server exited ${code}: ${err}`)));
  });
  return child;
}

/** One request, one answer (or "ERR ..."). `srcPort` (UDP): send from this port, as a client that keeps its port. */
export const probe = (ns: string, proto: 'tcp' | 'udp', host: string, port: number, srcPort?: number): Promise<string> =>
  nsRun(ns, 'node', ['-e', CLIENT, proto, host, String(port), ...(srcPort ? [String(srcPort)] : [])]);

/** Whether `vip` (an address, no length) is on lo in namespace `ns`. */
export const hasVip = async (ns: string, vip: string): Promise<boolean> => (await loAddrs(ns)).some((a) => a.local === vip);

/** vipcast's rules and jumps in the nat table of namespace `ns`. */
export const vipRules = async (ns: string): Promise<string[]> => (await natRules(ns)).filter((l) => l.includes('VIPCAST'));
