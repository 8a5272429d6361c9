/**
 * Test lab: BIRD 2 as the top-of-rack router, inside a lab namespace, with its own control socket in a temp dir.
 * Each BGP protocol imports into its own table (`t_<name>`), so a test reads exactly what one session received.
 * Timers are LAB.md's fast ones: BIRD opens the session about 1 s after gobgpd can accept it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { nsSpawn, stopChild, waitFor } from './netns.js';

/** birdc exits 1 for "Network not found" too: return its output and let the caller decide. */
function birdcRaw(sock: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    execFile('birdc', ['-s', sock, ...args], { maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ ok: !err, out: `${stdout}${stderr}` });
    });
  });
}

export interface BirdBgp {
  name: string;
  family: 'ipv4' | 'ipv6';
  /** BIRD's own address for the session. */
  local: string;
  localAs: number;
  /** gobgpd's address. */
  neighbor: string;
  /** The peer's AS, or 'external' (any AS but BIRD's own: a test that changes vipcast's AS). */
  neighborAs: number | 'external';
  password?: string;
  multihop?: boolean;
  /** Start disabled (`birdc enable NAME` later), so BIRD does not pile up error backoff before the peer exists. */
  disabled?: boolean;
}

export function birdConfig(opts: { routerId: string; protocols: BirdBgp[]; extra?: string; logFile?: string }): string {
  const lines = [
    `router id ${opts.routerId};`,
    'timeformat route iso long ms;',
    'timeformat protocol iso long ms;',
    opts.logFile ? `log "${opts.logFile}" all;` : '',
    'protocol device { scan time 1; }',
  ];
  for (const p of opts.protocols) {
    lines.push(`${p.family} table t_${p.name};`);
    lines.push(`protocol bgp ${p.name} {`);
    if (p.disabled) lines.push('  disabled;');
    lines.push(`  local ${p.local} as ${p.localAs};`);
    lines.push(`  neighbor ${p.neighbor} ${p.neighborAs === 'external' ? 'external' : `as ${p.neighborAs}`};`);
    if (p.multihop) lines.push('  multihop;');
    if (p.password !== undefined) lines.push(`  password "${p.password}";`);
    lines.push('  connect delay time 1; connect retry time 1; error wait time 1,5; error forget time 10;');
    lines.push(`  ${p.family} { table t_${p.name}; import all; export none; };`);
    lines.push('}');
  }
  if (opts.extra) lines.push(opts.extra);
  return lines.filter(Boolean).join('\n') + '\n';
}

/** One route from `show route all`. Communities as `a:b`, large ones as `a:b:c`. */
export interface BirdRoute {
  prefix: string;
  protocol: string;
  origin: string;
  nextHop: string;
  asPath: number[];
  communities: string[];
  largeCommunities: string[];
  /** When BIRD last received this route (`2026-11-25 22:02:58.880`): unchanged = no UPDATE for it since. */
  since: string;
  /** Names of the BGP attributes present (`origin`, `as_path`, `next_hop`, `community`...), empty ones included. */
  attributes: string[];
}

export interface BirdProtocolState {
  name: string;
  /** up, start, down... */
  state: string;
  /** When the protocol last changed state (`2026-11-25 22:02:58.880`): unchanged = the session was not reset. */
  since: string;
  info: string;
  bgpState: string;
  lastError: string;
}

export function parseRoutes(text: string): BirdRoute[] {
  const out: BirdRoute[] = [];
  let prefix = '';
  let cur: BirdRoute | undefined;
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('BIRD ') || line.startsWith('Table ')) continue;
    const head = /^(\S+)?\s+\S+\s+\[(\S+)\s*([^\]]*)\]/.exec(line);
    if (!line.startsWith('\t') && head) {
      if (head[1]) prefix = head[1];
      cur = { prefix, protocol: head[2]!, origin: '', nextHop: '', asPath: [], communities: [], largeCommunities: [], since: (head[3] ?? '').trim(), attributes: [] };
      out.push(cur);
      continue;
    }
    if (!cur) continue;
    const attr = /^\s+BGP\.(\w+):\s*(.*)$/.exec(line);
    if (!attr) continue;
    const [, key, value] = attr as unknown as [string, string, string];
    cur.attributes.push(key);
    switch (key) {
      case 'origin':
        cur.origin = value.trim();
        break;
      case 'next_hop':
        cur.nextHop = value.trim().split(/\s+/)[0] ?? '';
        break;
      case 'as_path':
        cur.asPath = value.trim() === '' ? [] : value.trim().split(/\s+/).map(Number);
        break;
      case 'community':
        cur.communities = [...value.matchAll(/\((\d+),\s*(\d+)\)/g)].map((m) => `${m[1]}:${m[2]}`);
        break;
      case 'large_community':
        cur.largeCommunities = [...value.matchAll(/\((\d+),\s*(\d+),\s*(\d+)\)/g)].map((m) => `${m[1]}:${m[2]}:${m[3]}`);
        break;
      default:
        break;
    }
  }
  return out;
}

export function parseProtocol(text: string): BirdProtocolState | undefined {
  const lines = text.split('\n');
  const hi = lines.findIndex((l) => l.startsWith('Name'));
  const row = hi >= 0 ? lines[hi + 1] : undefined;
  if (!row) return undefined;
  const f = row.trim().split(/\s+/);
  // Name Proto Table State Since(date time) Info...
  const since = /^\d{4}-\d\d-\d\d$/.test(f[4] ?? '') ? `${f[4]} ${f[5]}` : (f[4] ?? '');
  const infoStart = since.includes(' ') ? 6 : 5;
  const find = (re: RegExp) => lines.map((l) => re.exec(l)?.[1]?.trim()).find((v) => v !== undefined) ?? '';
  return {
    name: f[0]!,
    state: f[3] ?? '',
    since,
    info: f.slice(infoStart).join(' '),
    bgpState: find(/^\s+BGP state:\s+(.*)$/),
    lastError: find(/^\s+Last error:\s+(.*)$/),
  };
}

export interface Bird {
  readonly ns: string;
  readonly sock: string;
  readonly pid: number;
  /** BIRD's temp dir (config, socket; a `log` file there if the config names one). */
  readonly dir: string;
  /** What BIRD printed (config errors). */
  output(): string;
  birdc(args: string[]): Promise<string>;
  /** Routes a protocol's session brought in (its own table), optionally only one prefix. */
  routes(protocol: string, prefix?: string): Promise<BirdRoute[]>;
  protocol(name: string): Promise<BirdProtocolState>;
  /** How many routes a protocol's session brought in (`show route count table t_NAME`). */
  count(protocol: string): Promise<number>;
  enable(name: string): Promise<void>;
  disable(name: string): Promise<void>;
  /** Wait until the protocol's BGP session is Established; returns its state. */
  waitEstablished(name: string, timeoutMs?: number): Promise<BirdProtocolState>;
  stop(): Promise<void>;
}

export async function startBird(opts: { ns: string; config: (dir: string) => string }): Promise<Bird> {
  const dir = mkdtempSync(join(tmpdir(), 'vc-bird-'));
  const sock = join(dir, 'bird.ctl');
  const conf = join(dir, 'bird.conf');
  writeFileSync(conf, opts.config(dir));
  let out = '';
  const child: ChildProcess = nsSpawn(opts.ns, 'bird', ['-f', '-c', conf, '-s', sock]);
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // If the test process dies before its teardown (a test-level timeout), do not leave BIRD running.
  const onExit = () => child.kill('SIGKILL');
  process.once('exit', onExit);
  void exited.then(() => process.removeListener('exit', onExit));
  const birdc = async (args: string[]) => {
    const r = await birdcRaw(sock, args);
    if (!r.ok) throw new Error(`birdc ${args.join(' ')} failed: ${r.out.trim()}`);
    return r.out;
  };
  // The socket appears before the config is parsed: wait until BIRD answers (or exits on a config error).
  await waitFor(async () => child.exitCode !== null || (existsSync(sock) && (await birdc(['show', 'status'])).includes('Daemon is up')), 5000, `BIRD to answer on ${sock}`, 20)
    .catch((err: Error) => {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`${err.message}; bird said: ${out}`);
    });
  if (child.exitCode !== null) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`bird exited at start: ${out}`);
  }
  let stopped = false;
  const bird: Bird = {
    ns: opts.ns,
    sock,
    dir,
    pid: child.pid ?? -1,
    output: () => out,
    birdc,
    async routes(protocol, prefix) {
      const args = ['show', 'route', 'all', ...(prefix ? [prefix] : []), 'table', `t_${protocol}`];
      const r = await birdcRaw(sock, args);
      if (!r.ok && /Network not found/.test(r.out)) return [];
      if (!r.ok) throw new Error(`birdc ${args.join(' ')} failed: ${r.out.trim()}`);
      return parseRoutes(r.out);
    },
    async protocol(name) {
      const p = parseProtocol(await birdc(['show', 'protocols', 'all', name]));
      if (!p) throw new Error(`BIRD has no protocol ${name}`);
      return p;
    },
    async count(protocol) {
      const out = await birdc(['show', 'route', 'count', 'table', `t_${protocol}`]);
      const m = /(\d+) of \d+ routes/.exec(out);
      if (!m) throw new Error(`cannot read a route count from: ${out}`);
      return Number(m[1]);
    },
    async enable(name) {
      await birdc(['enable', name]);
    },
    async disable(name) {
      await birdc(['disable', name]);
    },
    async waitEstablished(name, timeoutMs = 10_000) {
      return waitFor(async () => {
        const p = await bird.protocol(name);
        return p.bgpState === 'Established' ? p : undefined;
      }, timeoutMs, `BIRD session ${name} to be Established`, 50) as Promise<BirdProtocolState>;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopChild(child, exited);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return bird;
}

/**
 * BIRD prints `since` (sessions and routes) as wall time computed from its monotonic clock at display time: the same
 * instant can read 1 ms apart on two calls. A reset or a re-sent route moves it by far more (the tests wait hundreds
 * of ms before they act), so two readings within `slackMs` are the same instant.
 */
export function sameInstant(a: string, b: string, slackMs = 50): boolean {
  const ms = (s: string) => Date.parse(s.replace(' ', 'T'));
  return Number.isFinite(ms(a)) && Math.abs(ms(a) - ms(b)) <= slackMs;
}
