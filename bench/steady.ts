/**
 * Steady cost and latency (issue 14), in dry-run on loopback (no root needed):
 *
 * - benchSteadyCost: N apps (1,000) with 1 s port checks, all listeners up but 10 flipped every second; prints the
 *   daemon's CPU (% of one core, main thread and check workers) and RSS over the window, and the decision latency
 *   (vipcast_decision_latency_seconds: check round start -> route change handed to the speaker) p50/p99/max bucket.
 *   STEADY_NODE_ARGS adds node flags to the daemon (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof", "--heap-prof").
 * - benchSteadyIsolation: start -> first route line of one port-checked app, alone and beside 50 apps whose exec
 *   checks hang (sleep 3600).
 * - benchSteadyReload: SIGHUP with the file unchanged, N apps: signal -> 'reload: nothing changed' line, and the
 *   duration the daemon logs (its own figure, from the end of the settle window).
 *
 * Env: STEADY_APPS (1000), STEADY_SECONDS (30), STEADY_RUNS (3, reload).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:net';
import { DaemonProcess, freePort } from '../test/helpers/daemon.js';
import { histogramQuantile, percentile, procStats } from './stats.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const env = (name: string, fallback: number) => Number(process.env[name] ?? fallback);

function appsConfig(apiPort: number, apps: number, basePort: number, extra: string[] = []): string {
  const lines = [`agent:\n  listen_addr: 127.0.0.1:${apiPort}\n  monitor_interval: 1s\n  check_timeout: 500ms\nrouting: { plugin: dry-run }\nbgp: { local_as: 65001, local_ip: 198.18.0.2, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }\napps:`];
  for (let i = 0; i < apps; i++) {
    lines.push(`  - { name: app${i}, vip: 198.18.${128 + Math.floor(i / 250)}.${(i % 250) + 1}/32, monitors: ["port:tcp:${basePort + i}"] }`);
  }
  return [...lines, ...extra].join('\n') + '\n';
}

class Listeners {
  readonly servers = new Map<number, Server>();
  constructor(private readonly basePort: number) {}
  async open(i: number): Promise<void> {
    const s = createServer((c) => c.destroy());
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(this.basePort + i, '127.0.0.1', () => resolve());
    });
    this.servers.set(i, s);
  }
  async close(i: number): Promise<void> {
    const s = this.servers.get(i);
    this.servers.delete(i);
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
  async closeAll(): Promise<void> {
    for (const i of [...this.servers.keys()]) await this.close(i);
  }
}

function spawnDaemon(file: string, plain = false): DaemonProcess {
  const args = ['run', '-c', file, '--log-level', 'info'];
  const nodeArgs = process.env.STEADY_NODE_ARGS;
  // Node flags through NODE_OPTIONS (--cpu-prof, --heap-prof are allowed there); run the bench with node, not tap.
  if (nodeArgs) return new DaemonProcess(args, { env: { NODE_OPTIONS: nodeArgs } });
  return new DaemonProcess(args, { plain });
}

/** The largest finite bucket bound with observations during the window (the slowest decision, to a bucket). */
function maxBucket(text: string, baseline: string, action: string): string {
  const read = (t: string) => new Map(t.split('\n').filter((l) => l.startsWith('vipcast_decision_latency_seconds_bucket{') && l.includes(`action="${action}"`))
    .map((l) => [/le="([^"]+)"/.exec(l)![1]!, Number(l.slice(l.lastIndexOf(' ') + 1))] as const));
  const now = read(text);
  const base = read(baseline);
  let prevCount = 0;
  let prevLe = '0';
  let max = '-';
  for (const [le, count] of now) {
    const c = count - (base.get(le) ?? 0);
    if (c > prevCount) max = `${prevLe}-${le} s`;
    prevCount = c;
    prevLe = le;
  }
  return max;
}

export async function benchSteadyCost(): Promise<void> {
  const apps = env('STEADY_APPS', 1000);
  const seconds = env('STEADY_SECONDS', 30);
  const basePort = env('STEADY_BASE_PORT', 24000);
  const dir = mkdtempSync(join(tmpdir(), 'vipcast-steady-'));
  const apiPort = await freePort();
  const file = join(dir, 'steady.yaml');
  writeFileSync(file, appsConfig(apiPort, apps, basePort));
  const l = new Listeners(basePort);
  for (let i = 0; i < apps; i++) await l.open(i);
  const d = spawnDaemon(file);
  try {
    const t0 = performance.now();
    const announced = () => new Set(d.lines.filter((x) => x.event === 'route' && x.action === 'announce').map((x) => x.app)).size;
    while (announced() < apps && performance.now() - t0 < 60_000) await sleep(100);
    const converged = performance.now() - t0;
    await sleep(3000); // past start-up
    const pid = d.child.pid!;
    const metricsBefore = await (await fetch(`http://127.0.0.1:${apiPort}/metrics`)).text();
    const before = procStats(pid);
    const wallStart = performance.now();
    let flips = 0;
    while (performance.now() - wallStart < seconds * 1000) {
      for (let k = 0; k < 10; k++) {
        const i = Math.floor(Math.random() * apps);
        await (l.servers.has(i) ? l.close(i) : l.open(i));
        flips++;
      }
      await sleep(1000);
    }
    const after = procStats(pid);
    const wall = (performance.now() - wallStart) / 1000;
    const metrics = await (await fetch(`http://127.0.0.1:${apiPort}/metrics`)).text();
    const cpu = ((after.cpuTicks - before.cpuTicks) / after.ticksPerSecond / wall) * 100;
    console.log(`\n## steady cost: ${apps} apps, 1 s port checks, ${seconds} s, ${flips} listener flips`);
    console.log(`all ${apps} apps announced ${converged.toFixed(0)} ms after the spawn`);
    console.log(`daemon CPU ${cpu.toFixed(1)} % of one core (target <= 10 %); RSS ${(after.rssKb / 1024).toFixed(0)} MiB at the end, peak ${(after.hwmKb / 1024).toFixed(0)} MiB (target <= 120 MB)`);
    for (const action of ['announce', 'withdraw']) {
      const q = (p: number) => (histogramQuantile(metrics, 'vipcast_decision_latency_seconds', { action }, p, metricsBefore) * 1000).toFixed(1);
      console.log(`decision latency, ${action}: p50 ${q(0.5)} ms, p99 ${q(0.99)} ms (target p99 <= 15 ms), slowest in bucket ${maxBucket(metrics, metricsBefore, action)}`);
    }
  } finally {
    d.kill('SIGTERM');
    await Promise.race([d.exited, sleep(15_000)]);
    await d.stop();
    await l.closeAll();
  }
}

/** Start -> first route line of the port-checked app `probe`, beside `hung` apps whose exec checks never end. */
async function firstRoute(hung: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'vipcast-steady-iso-'));
  const apiPort = await freePort();
  const port = await freePort();
  const extra: string[] = [];
  for (let i = 0; i < hung; i++) {
    extra.push(`  - { name: hung${i}, vip: 198.18.130.${i + 1}/32, monitors: ["exec:sleep 3600"] }`);
  }
  const file = join(dir, 'iso.yaml');
  writeFileSync(file, appsConfig(apiPort, 0, 0, [`  - { name: probe, vip: 198.18.129.1/32, monitors: ["port:tcp:${port}"] }`, ...extra]));
  const s = createServer((c) => c.destroy());
  await new Promise<void>((r) => s.listen(port, '127.0.0.1', () => r()));
  const t0 = performance.now();
  const d = spawnDaemon(file);
  try {
    const line = await d.waitLine((x) => x.event === 'route' && x.action === 'announce' && x.app === 'probe', 30_000, 'probe announce');
    return line.at - t0;
  } finally {
    d.kill('SIGTERM');
    await Promise.race([d.exited, sleep(15_000)]);
    await d.stop();
    await new Promise<void>((r) => s.close(() => r()));
  }
}

export async function benchSteadyIsolation(): Promise<void> {
  const runs = env('STEADY_RUNS', 3);
  const alone: number[] = [];
  const beside: number[] = [];
  for (let r = 0; r < runs; r++) {
    alone.push(await firstRoute(0));
    beside.push(await firstRoute(50));
  }
  const fmt = (v: number[]) => `${v.map((x) => x.toFixed(0)).join(', ')} ms (median ${percentile(v, 50).toFixed(0)})`;
  console.log('\n## isolation from the first check: spawn -> first route line of a port-checked app');
  console.log(`alone: ${fmt(alone)}`);
  console.log(`beside 50 apps whose exec checks hang: ${fmt(beside)}`);
}

export async function benchSteadyReload(): Promise<void> {
  const apps = env('STEADY_APPS', 1000);
  const runs = env('STEADY_RUNS', 5);
  const basePort = env('STEADY_BASE_PORT', 24000);
  const dir = mkdtempSync(join(tmpdir(), 'vipcast-steady-reload-'));
  const apiPort = await freePort();
  const file = join(dir, 'reload.yaml');
  writeFileSync(file, appsConfig(apiPort, apps, basePort));
  const l = new Listeners(basePort);
  for (let i = 0; i < apps; i++) await l.open(i);
  // plain: without tap's preload, which catches SIGHUP itself.
  const d = spawnDaemon(file, true);
  try {
    const t0 = performance.now();
    const announced = () => new Set(d.lines.filter((x) => x.event === 'route' && x.action === 'announce').map((x) => x.app)).size;
    while (announced() < apps && performance.now() - t0 < 60_000) await sleep(100);
    await sleep(2000);
    const total: number[] = [];
    const own: number[] = [];
    for (let r = 0; r < runs; r++) {
      const from = d.lines.length;
      const at = performance.now();
      d.kill('SIGHUP');
      const line = await d.waitLine((x) => typeof x.msg === 'string' && x.msg.startsWith('reload:'), 20_000, 'reload line', from);
      total.push(line.at - at);
      own.push(Number(line.duration_ms));
      if (line.msg !== 'reload: nothing changed') console.log(`unexpected: ${String(line.msg)}`);
      await sleep(1000);
    }
    const fmt = (v: number[]) => `${v.map((x) => x.toFixed(0)).join(', ')} ms (median ${percentile(v, 50).toFixed(0)})`;
    console.log(`\n## unchanged reload, ${apps} apps`);
    console.log(`SIGHUP -> reload line: ${fmt(total)} (includes the 100 ms settle window)`);
    console.log(`reload's own duration_ms: ${fmt(own)} (target <= 100 ms)`);
  } finally {
    d.kill('SIGTERM');
    await Promise.race([d.exited, sleep(15_000)]);
    await d.stop();
    await l.closeAll();
  }
}

// Run alone: node dist/bench/steady.js [cost|isolation|reload]...
if (process.argv[1]?.endsWith('steady.js')) {
  const all: Record<string, () => Promise<void>> = { cost: benchSteadyCost, isolation: benchSteadyIsolation, reload: benchSteadyReload };
  for (const name of process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(all)) await all[name]!();
}
