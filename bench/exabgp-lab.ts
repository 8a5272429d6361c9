/**
 * The side-by-side lab: one namespace pair per system, BIRD (AS 65000) in "tor" logging every route it receives to a
 * file with millisecond timestamps, and in "node" either vipcast (the real CLI) with gobgpd, or ExaBGP with one
 * `exabgp healthcheck` process per service. Both systems run the same check scripts on the same schedule, so the only
 * difference is the agent. Route arrival and withdrawal times are BIRD's own (its log), for both.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createLab, nsSpawn, waitFor, type Lab } from '../test/lab/netns.js';
import { birdConfig, startBird, type Bird } from '../test/lab/bird.js';
import { startGobgpd, type Gobgpd } from '../test/lab/gobgpd.js';
import { DaemonProcess } from '../test/helpers/daemon.js';

export type SystemName = 'vipcast' | 'exabgp';
export const SYSTEMS: SystemName[] = ['vipcast', 'exabgp'];
export const SYSTEM_LABEL: Record<SystemName, string> = { vipcast: 'vipcast', exabgp: 'ExaBGP healthcheck' };

const NODE_AS = 65001;
const TOR_AS = 65000;
export const EXABGP_PYTHON = '/usr/bin/python3';

/** One service: a VIP, checked every `intervalMs` by an exec script or a TCP connect to 127.0.0.1:port. */
export interface Service {
  name: string;
  vip: string;
  check: { exec: string } | { port: number };
  intervalMs: number;
  /** vipcast's check_timeout; ExaBGP's --timeout is whole seconds (rounded up, at least 1). */
  timeoutMs: number;
}

/** One BIRD log event: a route added or removed in the session's table, at BIRD's own time (ms since the epoch). */
export interface BirdEvent {
  at: number;
  prefix: string;
  kind: 'added' | 'removed';
}

export interface SideLab {
  readonly system: SystemName;
  readonly lab: Lab;
  readonly bird: Bird;
  readonly dir: string;
  /** Start the agent with these services; resolves at the spawn, returns the spawn time (Date.now()). */
  start(services: Service[]): Promise<number>;
  /** Pids whose process trees are the agent's cost (vipcast + gobgpd; exabgp with its healthcheck processes). */
  pids(): number[];
  /** Send a signal to the agent (vipcast, or exabgp's main process) and wait for it to exit. */
  signal(sig: NodeJS.Signals): Promise<void>;
  /** BIRD's log events since the last call (`all`: every one since BIRD started). */
  events(all?: boolean): BirdEvent[];
  /** Wait until BIRD logged an event matching `pred` at or after `since` (ms); returns it. */
  waitEvent(pred: (e: BirdEvent) => boolean, since: number, timeoutMs: number, what: string): Promise<BirdEvent>;
  /** How many routes BIRD holds from the agent now. */
  count(): Promise<number>;
  /** Run a helper process in the node namespace (a listener), stopped with the lab. */
  spawnInNode(cmd: string, args: string[]): ChildProcess;
  destroy(): Promise<void>;
}

/** `2026-12-02 15:40:01.123 <TRACE> uplink.ipv4 > added [best] 198.18.250.1/32 unicast` (local time). */
export function parseBirdLog(text: string): BirdEvent[] {
  const out: BirdEvent[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?) <TRACE> \S+ [<>] (added|removed)\b.*? (\d+\.\d+\.\d+\.\d+\/\d+)/.exec(line);
    if (!m) continue;
    out.push({ at: new Date(`${m[1]}T${m[2]}`).getTime(), kind: m[3] as 'added' | 'removed', prefix: m[4]! });
  }
  return out;
}

function exabgpEnv(): string {
  return `[exabgp.api]
ack = true
chunk = 1
cli = false
compact = false
encoder = text
respawn = false
terminate = false

[exabgp.bgp]
openwait = 60

[exabgp.daemon]
daemonize = false
drop = false
pid = ''
user = 'root'

[exabgp.log]
all = false
configuration = false
daemon = true
destination = 'stdout'
enable = true
level = WARNING
network = true
processes = true
reactor = false

[exabgp.reactor]
speed = 1.0

[exabgp.tcp]
acl = false
bind = ''
delay = 0
once = false
port = 179
`;
}

function scriptFor(dir: string, s: Service): string {
  if ('exec' in s.check) return s.check.exec;
  const file = join(dir, `port-${s.check.port}.sh`);
  if (!existsSync(file)) {
    writeFileSync(file, `#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.1/${s.check.port}\n`);
    chmodSync(file, 0o755);
  }
  return file;
}

function exabgpConfig(lab: Lab, dir: string, services: Service[]): string {
  const out: string[] = [];
  for (const s of services) {
    const args = [
      '-m', 'exabgp', 'healthcheck', '--no-syslog', '--name', s.name,
      '--interval', String(s.intervalMs / 1000), '--fast-interval', String(s.intervalMs / 1000),
      '--rise', '1', '--fall', '1', '--withdraw-on-down', '--no-ip-setup', '--ip', s.vip,
      '--timeout', String(Math.max(1, Math.ceil(s.timeoutMs / 1000))), '--cmd', scriptFor(dir, s),
    ];
    out.push(`process ${s.name} {\n  run ${EXABGP_PYTHON} ${args.join(' ')};\n  encoder text;\n}`);
  }
  out.push(`neighbor ${lab.ipB} {
  router-id ${lab.ipA};
  local-address ${lab.ipA};
  local-as ${NODE_AS};
  peer-as ${TOR_AS};
  family { ipv4 unicast; }
  api services { processes [ ${services.map((s) => s.name).join(' ')} ]; }
}`);
  return out.join('\n') + '\n';
}

function vipcastConfig(lab: Lab, dir: string, gobgpd: Gobgpd, services: Service[]): string {
  const apps = services.map((s) => {
    const monitor = 'exec' in s.check ? `exec:${s.check.exec}` : `port:tcp:${s.check.port}`;
    return `  - { name: ${s.name}, vip: ${s.vip}, monitors: ["${monitor}"], monitor_interval: ${s.intervalMs}ms, check_timeout: ${Math.min(s.timeoutMs, s.intervalMs)}ms }`;
  });
  return `agent:
  listen_addr: ""
  monitor_interval: 1s
  state_file: ${join(dir, 'host-state.json')}
  registrations_file: ${join(dir, 'registrations.json')}
  maintenance_state_file: ${join(dir, 'maintenance.json')}
  pid_file: ${join(dir, 'vipcast.pid')}
routing:
  plugin: gobgp
  gobgp: { address: "${gobgpd.address}" }
bgp:
  local_as: ${NODE_AS}
  local_ip: ${lab.ipA}
  peers:
    - { peer_ip: ${lab.ipB}, peer_as: ${TOR_AS} }
apps:
${apps.join('\n')}
`;
}

export async function createSideLab(system: SystemName): Promise<SideLab> {
  const lab = await createLab({ prefix: system === 'vipcast' ? 'bv' : 'bx' });
  const dir = mkdtempSync(join(tmpdir(), `vc-side-${system}-`));
  chmodSync(dir, 0o755);
  const logFile = join(dir, 'bird.log');
  const cleanups: Array<() => Promise<void>> = [() => lab.destroy(), async () => rmSync(dir, { recursive: true, force: true })];
  const helpers: ChildProcess[] = [];
  let agent: { pid: number; exited: Promise<unknown>; kill(sig: NodeJS.Signals): void } | undefined;
  let gobgpd: Gobgpd | undefined;
  let logOffset = 0;
  let seen: BirdEvent[] = [];
  try {
    const conf = birdConfig({
      routerId: lab.ipB,
      logFile,
      protocols: [{ name: 'uplink', family: 'ipv4', local: lab.ipB, localAs: TOR_AS, neighbor: lab.ipA, neighborAs: NODE_AS }],
    });
    // Protocol defaults must come before the protocols; BIRD's log timestamps need milliseconds.
    const withDebug = conf.replace('timeformat route', 'timeformat log iso long ms;\ndebug protocols { states, routes, events };\ntimeformat route');
    const bird = await startBird({ ns: lab.b, config: () => withDebug });
    cleanups.unshift(() => bird.stop());
    if (system === 'vipcast') {
      gobgpd = await startGobgpd({ ns: lab.a, dir: mkdtempSync(join(dir, 'gobgpd-')), logLevel: 'warn' });
      const g = gobgpd;
      cleanups.unshift(() => g.stop());
    }
    const readNew = (): BirdEvent[] => {
      let text = '';
      try {
        const buf = readFileSync(logFile);
        const end = buf.lastIndexOf(0x0a) + 1;
        text = buf.subarray(logOffset, end).toString('utf8');
        logOffset = Math.max(logOffset, end);
      } catch {
        return [];
      }
      const fresh = parseBirdLog(text);
      seen = seen.concat(fresh);
      return fresh;
    };
    let cursor = 0;
    const side: SideLab = {
      system, lab, bird, dir,
      async start(services) {
        if (system === 'vipcast') {
          const file = join(dir, 'vipcast.yaml');
          writeFileSync(file, vipcastConfig(lab, dir, gobgpd!, services));
          const t0 = Date.now();
          const d = new DaemonProcess(['run', '-c', file, '--log-level', process.env.BENCH_VIPCAST_LOG ?? 'warn'], { netns: lab.a, plain: true });
          agent = { pid: d.child.pid!, exited: d.exited, kill: (sig) => d.child.kill(sig) };
          cleanups.unshift(async () => {
            await d.stop();
            if (process.env.BENCH_VERBOSE) console.log(`vipcast output (tail):\n${d.stderr.join('').slice(-5000)}\n${d.lines.slice(-20).map((l) => JSON.stringify(l)).join('\n')}`);
          });
          return t0;
        }
        const conf = join(dir, 'exabgp.conf');
        const env = join(dir, 'exabgp.env');
        writeFileSync(conf, exabgpConfig(lab, dir, services));
        writeFileSync(env, exabgpEnv());
        const t0 = Date.now();
        const child = nsSpawn(lab.a, EXABGP_PYTHON, ['-m', 'exabgp', '--env', env, conf]);
        let out = '';
        const keep = (b: Buffer) => {
          out = (out + b.toString()).slice(-20_000);
        };
        child.stdout?.on('data', keep);
        child.stderr?.on('data', keep);
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        const onExit = () => child.kill('SIGKILL');
        process.once('exit', onExit);
        void exited.then(() => process.removeListener('exit', onExit));
        agent = { pid: child.pid!, exited, kill: (sig) => child.kill(sig) };
        cleanups.unshift(async () => {
          if (child.exitCode === null && child.signalCode === null) {
            child.kill('SIGTERM');
            const t = setTimeout(() => child.kill('SIGKILL'), 3000);
            await exited;
            clearTimeout(t);
          }
          if (process.env.BENCH_VERBOSE) console.log(`exabgp output (tail):\n${out}`);
        });
        return t0;
      },
      pids() {
        return [agent?.pid, gobgpd?.pid].filter((p): p is number => p !== undefined);
      },
      async signal(sig) {
        if (!agent) return;
        const a = agent;
        a.kill(sig);
        // Bounded: a run that does not exit is killed (its exit time then shows ~12 s) rather than hanging the bench.
        const t = setTimeout(() => a.kill('SIGKILL'), 12_000);
        await a.exited;
        clearTimeout(t);
      },
      events(all = false) {
        readNew();
        const from = all ? 0 : cursor;
        cursor = seen.length;
        return seen.slice(from);
      },
      async waitEvent(pred, since, timeoutMs, what) {
        const found = await waitFor(() => {
          readNew();
          return seen.find((e) => e.at >= since && pred(e));
        }, timeoutMs, `${what} (${system})`, 5);
        return found!;
      },
      count() {
        return bird.count('uplink');
      },
      spawnInNode(cmd, args) {
        const c = nsSpawn(lab.a, cmd, args);
        c.stdout?.resume();
        c.stderr?.resume();
        helpers.push(c);
        return c;
      },
      async destroy() {
        for (const h of helpers) h.kill('SIGKILL');
        for (const c of cleanups) await c().catch(() => undefined);
      },
    };
    return side;
  } catch (err) {
    for (const c of cleanups) await c().catch(() => undefined);
    throw err;
  }
}
