/**
 * Test lab: a simulated fleet (issue 13). Namespace "tor" runs BIRD (AS 65000) with one BGP session per host, all
 * importing into the master table, and a kernel protocol that installs the routes with `merge paths yes` (ECMP,
 * L4 hash: net.ipv4.fib_multipath_hash_policy=1). N host namespaces, each joined to tor by its own veth pair
 * (198.19.128.0/17 carved into /30s: tor .1, host .2 of each), each running the real vipcast CLI with a managed
 * gobgpd (AS 65001), CONSUL_NODE=host<i>, and the same small TCP responder that answers with its host's name. One
 * Consul test server process in tor (test/helpers/consul-server-main.ts, driven over its stdin) serves every host's
 * catalog: the same service, tagged with the same VIP and `gocast_monitor=port:tcp:PORT`.
 *
 * Used by test/fleet.test.ts (5 hosts) and bench/fleet.ts (`npm run fleet`, 20 hosts); the scenarios are in
 * fleet-scenarios.ts. Everything is torn down by `destroy()`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nsRun, nsSpawn, run } from './netns.js';
import { parseRoutes, startBird, type Bird, type BirdRoute } from './bird.js';
import { DaemonProcess } from '../helpers/daemon.js';

export const TOR_AS = 65000;
export const HOST_AS = 65001;
/** The responder's port on every host (inside each host namespace). */
export const SERVICE_PORT = 8080;
/** The Consul test server's port in tor. */
export const CONSUL_PORT = 8500;
/** The service's VIP, and the second one a tag change adds. Not an address of any host or of tor. */
export const VIP = '198.18.251.1/32';
export const VIP2 = '198.18.251.2/32';
export const SERVICE = 'web';

const RUNNER = fileURLToPath(new URL('../helpers/consul-server-main.js', import.meta.url));

const RESPONDER = `
const [, name, port] = process.argv;
require('node:net').createServer((s) => { s.on('error', () => {}); s.end(name + '\\n'); })
  .listen(Number(port), '0.0.0.0', () => console.log('ready'));
`;

/** Many TCP connections from tor to VIP:PORT (each its own source port); prints the answers as a JSON array. */
const CLIENTS = `
const net = require('node:net');
const [, host, port, count, parallel] = process.argv;
const out = [];
let next = 0;
const one = () => new Promise((resolve) => {
  const c = net.connect(Number(port), host); let b = '';
  const t = setTimeout(() => { c.destroy(); resolve('ERR timeout'); }, 3000);
  c.on('data', (d) => (b += d)); c.on('end', () => { clearTimeout(t); resolve(b.trim()); });
  c.on('error', (e) => { clearTimeout(t); resolve('ERR ' + e.code); });
});
const worker = async () => { while (next < Number(count)) { next++; out.push(await one()); } };
Promise.all(Array.from({ length: Number(parallel) }, worker)).then(() => process.stdout.write(JSON.stringify(out)));
`;

export interface FleetHost {
  readonly index: number;
  /** host<i>: namespace suffix, CONSUL_NODE and what its responder answers. */
  readonly name: string;
  readonly ns: string;
  /** The host's address and tor's address on their /30. */
  readonly ip: string;
  readonly torIp: string;
  /** BIRD's protocol for this host's session. */
  readonly protocol: string;
  readonly dir: string;
  readonly configFile: string;
  /** The running vipcast (the last one started). */
  agent: DaemonProcess | undefined;
  /** Every vipcast started on this host, in order. */
  readonly agents: DaemonProcess[];
  responder: ChildProcess | undefined;
}

export interface FleetOptions {
  hosts: number;
  /** agent.shutdown_drain of every host (default 2s). */
  shutdownDrain?: string;
  /** agent.monitor_interval (default 1s; the check timeout is the same). */
  monitorInterval?: string;
  /** agent.fall (default 2: one check slowed past its timeout on a loaded box is not a withdraw). */
  fall?: number;
  /** agent.consul_query_interval (default 10s). */
  consulQueryInterval?: string;
  /** Called with progress lines (the bench prints them). */
  log?: (line: string) => void;
  /** At destroy, write every agent's log lines (all its runs) to `<logDir>/host<i>.jsonl`. */
  logDir?: string;
}

export interface ConsulControl {
  /** Send one command to the Consul test server process; resolves with its result. */
  send(cmd: string, args?: Record<string, unknown>): Promise<unknown>;
  readonly pid: number;
}

export interface Fleet {
  readonly hosts: FleetHost[];
  readonly tor: string;
  readonly bird: Bird;
  readonly consul: ConsulControl;
  readonly dir: string;
  /** The tags of the service on every node (`vips`: the gocast_vip tag's VIPs). */
  serviceTags(vips: string[]): string[];
  /** Set the service on every node, announcing these VIPs. */
  setVips(vips: string[]): Promise<void>;
  /** Write host i's config (consul_query_interval may differ per call: a reload that changes something). */
  writeConfig(i: number, opts?: { consulQueryInterval?: string }): void;
  /** Start host i's vipcast; resolves once Consul discovery has started. */
  startAgent(i: number): Promise<DaemonProcess>;
  startResponder(i: number): Promise<void>;
  stopResponder(i: number): Promise<void>;
  /** Every route BIRD holds for a prefix in its master table (one per host session that announced it). */
  routes(prefix?: string): Promise<BirdRoute[]>;
  /** The protocols (hosts) with a path for the prefix, sorted. */
  pathProtocols(prefix?: string): Promise<string[]>;
  /** Next hops of the prefix's route in tor's kernel table (the ECMP route BIRD installed). */
  kernelNextHops(prefix?: string): Promise<string[]>;
  /** `count` TCP connections from tor to the VIP (`parallel` at a time): the answers (host names or "ERR ..."). */
  clients(count: number, parallel?: number, prefix?: string): Promise<string[]>;
  destroy(): Promise<void>;
}

let counter = 0;

export async function createFleet(opts: FleetOptions): Promise<Fleet> {
  const n = opts.hosts;
  if (!Number.isInteger(n) || n < 1 || n > 250) throw new Error(`hosts: ${n} is not 1..250`);
  const log = opts.log ?? (() => undefined);
  const tag = `${process.pid % 10000}${counter++}`;
  const tor = `fl${tag}t`;
  const dir = mkdtempSync(join(tmpdir(), 'vc-fleet-'));
  const cleanups: Array<() => Promise<void>> = [async () => rmSync(dir, { recursive: true, force: true })];
  const namespaces: string[] = [];
  const hosts: FleetHost[] = [];
  let consulChild: ChildProcess | undefined;
  let destroyed = false;

  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    await Promise.all(hosts.map(async (h) => {
      await h.agent?.stop();
      h.responder?.kill('SIGKILL');
    }));
    consulChild?.kill('SIGKILL');
    if (opts.logDir) {
      mkdirSync(opts.logDir, { recursive: true });
      for (const h of hosts) {
        const text = h.agents.map((d) => [...d.lines.map((l) => JSON.stringify(l)), ...d.stderr.map((e) => JSON.stringify({ stderr: e }))].join('\n')).join('\n');
        writeFileSync(join(opts.logDir, `${h.name}.jsonl`), `${text}\n`);
      }
    }
    for (const c of cleanups) await c().catch(() => undefined);
    for (const ns of namespaces) await run('ip', ['netns', 'del', ns], { allowFail: true });
  };
  // A test process that dies before its teardown must not leave daemons behind (namespaces are removed by the next
  // run's `ip netns del` only if someone does it, so they are deleted here synchronously too).
  const onExit = (): void => {
    for (const h of hosts) {
      h.agent?.child.kill('SIGKILL');
      h.responder?.kill('SIGKILL');
    }
    consulChild?.kill('SIGKILL');
  };
  process.once('exit', onExit);
  cleanups.push(async () => void process.removeListener('exit', onExit));

  try {
    await run('ip', ['netns', 'add', tor]);
    namespaces.push(tor);
    await nsRun(tor, 'ip', ['link', 'set', 'lo', 'up']);
    await nsRun(tor, 'sysctl', ['-q', '-w', 'net.ipv4.fib_multipath_hash_policy=1']);
    await nsRun(tor, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
    for (let i = 0; i < n; i++) {
      const third = 128 + Math.floor(i / 64);
      const base = (i % 64) * 4;
      const name = `host${i}`;
      const ns = `fl${tag}h${i}`;
      const hdir = join(dir, `h${i}`);
      mkdirSync(hdir);
      const h: FleetHost = {
        index: i, name, ns, ip: `198.19.${third}.${base + 2}`, torIp: `198.19.${third}.${base + 1}`, protocol: `h${i}`,
        dir: hdir, configFile: join(hdir, 'vipcast.yaml'), agent: undefined, agents: [], responder: undefined,
      };
      await run('ip', ['netns', 'add', ns]);
      namespaces.push(ns);
      const ifTor = `f${tag}t${i}`.slice(0, 15);
      const ifHost = `f${tag}h${i}`.slice(0, 15);
      await run('ip', ['link', 'add', ifTor, 'netns', tor, 'type', 'veth', 'peer', 'name', ifHost, 'netns', ns]);
      await nsRun(tor, 'ip', ['addr', 'add', `${h.torIp}/30`, 'dev', ifTor]);
      await nsRun(tor, 'ip', ['link', 'set', ifTor, 'up']);
      await nsRun(ns, 'ip', ['link', 'set', 'lo', 'up']);
      await nsRun(ns, 'ip', ['addr', 'add', `${h.ip}/30`, 'dev', ifHost]);
      await nsRun(ns, 'ip', ['link', 'set', ifHost, 'up']);
      // Answers to a client in tor whose source address is on another host's link go back through tor.
      await nsRun(ns, 'ip', ['route', 'add', 'default', 'via', h.torIp]);
      hosts.push(h);
    }
    log(`fleet: ${n} host namespaces joined to ${tor}`);

    const protocols = hosts.map((h) => `protocol bgp ${h.protocol} {
  local ${h.torIp} as ${TOR_AS};
  neighbor ${h.ip} as ${HOST_AS};
  connect delay time 1; connect retry time 1; error wait time 1,5; error forget time 10;
  ipv4 { import all; export none; };
}`);
    const bird = await startBird({
      ns: tor,
      config: () => [
        `router id ${hosts[0]!.torIp};`,
        'timeformat route iso long ms;',
        'timeformat protocol iso long ms;',
        'protocol device { scan time 1; }',
        // ECMP: every host's path for the VIP in one kernel route.
        // BIRD merges at most 16 paths unless told (its default limit).
        `protocol kernel { ipv4 { import none; export all; }; merge paths yes limit ${Math.max(16, n)}; }`,
        ...protocols,
      ].join('\n') + '\n',
    });
    cleanups.unshift(() => bird.stop());

    // The Consul test server in tor, reachable from every host at its tor address.
    const child = spawn('ip', ['netns', 'exec', tor, process.execPath, RUNNER, '--control', '--listen', `0.0.0.0:${CONSUL_PORT}`], { stdio: ['pipe', 'pipe', 'pipe'] });
    consulChild = child;
    const consul = await consulControl(child);
    for (const h of hosts) await consul.send('setToken', { token: tokenOf(h) });

    const serviceTags = (vips: string[]): string[] => ['enable_gocast', `gocast_vip=${vips.join(',')}`, `gocast_monitor=port:tcp:${SERVICE_PORT}`];
    const fleet: Fleet = {
      hosts, tor, bird, consul, dir,
      serviceTags,
      async setVips(vips) {
        for (const h of hosts) await consul.send('setServices', { node: h.name, address: h.ip, services: [{ Service: SERVICE, Tags: serviceTags(vips), Port: SERVICE_PORT }] });
      },
      writeConfig(i, o = {}) {
        const h = hosts[i]!;
        writeFileSync(h.configFile, `agent:
  listen_addr: ""
  monitor_interval: ${opts.monitorInterval ?? '1s'}
  fall: ${opts.fall ?? 2}
  shutdown_drain: ${opts.shutdownDrain ?? '2s'}
  consul_addr: http://${h.torIp}:${CONSUL_PORT}/v1
  consul_query_interval: ${o.consulQueryInterval ?? opts.consulQueryInterval ?? '10s'}
  state_file: ${join(h.dir, 'host-state.json')}
  registrations_file: ${join(h.dir, 'registrations.json')}
  maintenance_state_file: ${join(h.dir, 'maintenance.json')}
  pid_file: ${join(h.dir, 'vipcast.pid')}
routing:
  gobgp:
    socket_dir: ${join(h.dir, 'gobgpd')}
bgp:
  local_as: ${HOST_AS}
  local_ip: ${h.ip}
  peers:
    - { peer_ip: ${h.torIp}, peer_as: ${TOR_AS} }
apps: []
`);
      },
      async startAgent(i) {
        const h = hosts[i]!;
        const d = new DaemonProcess(['run', '-c', h.configFile], {
          netns: h.ns,
          // No external gobgpd from the caller's environment: each host runs its own, managed.
          env: { CONSUL_NODE: h.name, CONSUL_TOKEN: tokenOf(h), VIPCAST_GOBGP_ADDRESS: '', CONSUL_STALE: '' },
        });
        h.agent = d;
        h.agents.push(d);
        await d.waitLine((l) => l.msg === 'Consul discovery started', 60_000, `${h.name}: Consul discovery started`);
        return d;
      },
      async startResponder(i) {
        const h = hosts[i]!;
        const child = nsSpawn(h.ns, process.execPath, ['-e', RESPONDER, h.name, String(SERVICE_PORT)]);
        h.responder = child;
        await new Promise<void>((resolve, reject) => {
          let err = '';
          child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
          child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
          child.once('exit', (code) => reject(new Error(`${h.name}: responder exited ${code}: ${err}`)));
        });
      },
      async stopResponder(i) {
        const h = hosts[i]!;
        const child = h.responder;
        h.responder = undefined;
        if (!child || child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await exited;
      },
      async routes(prefix = VIP) {
        const r = await bird.birdc(['show', 'route', 'all', prefix, 'table', 'master4']).catch((err: Error) => {
          if (/Network not found/.test(err.message)) return '';
          throw err;
        });
        return parseRoutes(r).filter((x) => x.prefix === prefix);
      },
      async pathProtocols(prefix = VIP) {
        return (await fleet.routes(prefix)).map((r) => r.protocol).sort(byHost);
      },
      async kernelNextHops(prefix = VIP) {
        const out = await nsRun(tor, 'ip', ['-4', 'route', 'show', prefix.replace(/\/32$/, '')]);
        return [...out.matchAll(/via (\S+)/g)].map((m) => m[1]!);
      },
      async clients(count, parallel = 8, prefix = VIP) {
        const out = await nsRun(tor, process.execPath, ['-e', CLIENTS, prefix.replace(/\/\d+$/, ''), String(SERVICE_PORT), String(count), String(parallel)]);
        return JSON.parse(out) as string[];
      },
      destroy,
    };
    return fleet;
  } catch (err) {
    await destroy();
    throw err;
  }
}

/** Host i's Consul token (ACLs are on; each host has its own, so one host's permissions can change alone). */
export function tokenOf(h: FleetHost): string {
  return `fleet-token-${h.name}`;
}

/** Sort protocol names h0, h1, ... h10 by their number. */
export function byHost(a: string, b: string): number {
  return Number(a.replace(/\D/g, '')) - Number(b.replace(/\D/g, ''));
}

async function consulControl(child: ChildProcess): Promise<ConsulControl> {
  let buf = '';
  let err = '';
  let id = 0;
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  let ready: ((v: unknown) => void) | undefined;
  const started = new Promise((resolve, reject) => {
    ready = resolve;
    child.once('exit', (code) => {
      const e = new Error(`Consul test server exited ${code}: ${err}`);
      reject(e);
      for (const p of pending.values()) p.reject(e);
      pending.clear();
    });
  });
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf('\n')) !== -1) {
      const line = JSON.parse(buf.slice(0, nl)) as { id?: number; ok?: boolean; result?: unknown; error?: string; addr?: string };
      buf = buf.slice(nl + 1);
      if (line.addr !== undefined) ready?.(line.addr);
      const p = line.id !== undefined ? pending.get(line.id) : undefined;
      if (!p) continue;
      pending.delete(line.id!);
      if (line.ok) p.resolve(line.result);
      else p.reject(new Error(`Consul test server: ${line.error}`));
    }
  });
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([started, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`the Consul test server did not listen within 15 s: ${err}`)), 15_000)))])
    .finally(() => clearTimeout(timer));
  return {
    pid: child.pid ?? -1,
    send(cmd, args = {}) {
      const my = ++id;
      return new Promise((resolve, reject) => {
        pending.set(my, { resolve, reject });
        child.stdin!.write(`${JSON.stringify({ id: my, cmd, ...args })}\n`);
      });
    },
  };
}
