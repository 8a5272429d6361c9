/**
 * Soak benchmark: does the daemon's steady cost stay flat with uptime? 1,000 apps with 1 s port checks in dry-run, all
 * listeners up on loopback, and 100 of them toggling (listener closed, then opened again) every 5 s, for several
 * minutes. Prints, per 30 s window, the daemon's CPU seconds (main thread and check workers, from /proc), RSS, route
 * changes and checks run, then the slope: the last windows against the first ones.
 *
 *   npm run bench -- soak --minutes=5 --apps=1000 --toggle=100 --toggle-every=5 --window=30 [--cpu-prof=DIR]
 *
 * `--cpu-prof=DIR` runs the daemon under `node --cpu-prof` (main thread and workers; written at SIGTERM).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:net';
import { BIN, freePort } from '../test/helpers/daemon.js';
import { procStats } from './stats.js';

/** `--name=value` or `--name value` from the command line, else the environment (`SOAK_NAME`), else `fallback`. */
function option(name: string, fallback: string): string {
  const argv = process.argv;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === `--${name}` && argv[i + 1] !== undefined) return argv[i + 1]!;
    if (argv[i]!.startsWith(`--${name}=`)) return argv[i]!.slice(name.length + 3);
  }
  return process.env[`SOAK_${name.toUpperCase().replace(/-/g, '_')}`] ?? fallback;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function benchSoak(): Promise<void> {
  const minutes = Number(option('minutes', '5'));
  const apps = Number(option('apps', '1000'));
  const toggling = Number(option('toggle', '100'));
  const toggleMs = Number(option('toggle-every', '5')) * 1000;
  const windowMs = Number(option('window', '30')) * 1000;
  const basePort = Number(option('base-port', '33000'));
  const cpuProf = option('cpu-prof', '');
  const dir = mkdtempSync(join(tmpdir(), 'vipcast-soak-'));
  const apiPort = await freePort();
  const lines = [`agent:\n  listen_addr: 127.0.0.1:${apiPort}\n  monitor_interval: 1s\n  check_timeout: 500ms\nrouting: { plugin: dry-run }\nbgp: { local_as: 65001, local_ip: 198.18.0.2, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }\napps:`];
  for (let i = 0; i < apps; i++) {
    lines.push(`  - { name: app${i}, vip: 198.18.${128 + Math.floor(i / 250)}.${(i % 250) + 1}/32, monitors: ["port:tcp:${basePort + i}"] }`);
  }
  const file = join(dir, 'soak.yaml');
  writeFileSync(file, lines.join('\n') + '\n');

  const servers = new Map<number, Server>();
  const open = async (i: number) => {
    const s = createServer((c) => c.destroy());
    // A port taken by someone else would make the app's state meaningless: fail loudly.
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(basePort + i, '127.0.0.1', () => resolve());
    });
    servers.set(i, s);
  };
  const close = async (i: number) => {
    const s = servers.get(i);
    servers.delete(i);
    if (s) await new Promise<void>((r) => s.close(() => r()));
  };
  for (let i = 0; i < apps; i++) await open(i);

  const nodeArgs = cpuProf ? ['--cpu-prof', '--cpu-prof-dir', cpuProf] : [];
  const child = spawn(process.execPath, [...nodeArgs, BIN, 'run', '-c', file, '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  // Only route lines are counted; the daemon's log is otherwise dropped (as a log shipper would read it).
  let announces = 0;
  let withdraws = 0;
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    for (let at = chunk.indexOf('"event":"route"'); at !== -1; at = chunk.indexOf('"event":"route"', at + 1)) {
      if (chunk.startsWith('"action":"announce"', at + 16)) announces++;
      else if (chunk.startsWith('"action":"withdraw"', at + 16)) withdraws++;
    }
  });
  const t0 = performance.now();
  while (announces < apps) {
    if (performance.now() - t0 > 120_000) throw new Error(`only ${announces} of ${apps} apps announced after 120 s`);
    await sleep(200);
  }
  const pid = child.pid!;
  const checksRun = async (): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${apiPort}/metrics`)).text();
    let n = 0;
    for (const m of text.matchAll(/^vipcast_checks_total\{[^}]*\} (\d+)/gm)) n += Number(m[1]);
    return n;
  };

  console.log(`\n## soak: ${apps} apps, 1 s port checks, ${toggling} toggling every ${toggleMs / 1000} s, ${minutes} min, ${windowMs / 1000} s windows`);
  console.log(`all ${apps} apps announced ${((performance.now() - t0) / 1000).toFixed(1)} s after start${cpuProf ? `; CPU profiles in ${cpuProf}` : ''}`);
  console.log('window  uptime  CPU s/window  CPU %  RSS MiB  route changes  checks');

  const flipping = Array.from({ length: Math.min(toggling, apps) }, (_, i) => i);
  let toggler: Promise<void> = Promise.resolve();
  const toggle = setInterval(() => {
    toggler = toggler.then(() => Promise.all(flipping.map((i) => (servers.has(i) ? close(i) : open(i))))).then(() => undefined);
  }, toggleMs);

  const cpu: number[] = [];
  const end = performance.now() + minutes * 60_000;
  let prev = { stats: procStats(pid), at: performance.now(), routes: announces + withdraws, checks: await checksRun() };
  for (let w = 1; performance.now() + windowMs <= end + 1000; w++) {
    await sleep(prev.at + windowMs - performance.now());
    const now = { stats: procStats(pid), at: performance.now(), routes: announces + withdraws, checks: await checksRun() };
    const seconds = (now.stats.cpuTicks - prev.stats.cpuTicks) / now.stats.ticksPerSecond;
    const wall = (now.at - prev.at) / 1000;
    cpu.push(seconds);
    console.log(`${String(w).padStart(6)}  ${((now.at - t0) / 60_000).toFixed(1).padStart(5)}m  ${seconds.toFixed(2).padStart(12)}  ${((seconds / wall) * 100).toFixed(1).padStart(5)}  ${(now.stats.rssKb / 1024).toFixed(0).padStart(7)}  ${String(now.routes - prev.routes).padStart(13)}  ${String(now.checks - prev.checks).padStart(6)}`);
    prev = now;
  }
  clearInterval(toggle);
  await toggler;
  child.kill('SIGTERM');
  await exited;
  for (const i of [...servers.keys()]) await close(i);

  const n = Math.max(1, Math.min(3, Math.floor(cpu.length / 3)));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const first = mean(cpu.slice(0, n));
  const last = mean(cpu.slice(-n));
  // Least-squares slope, in CPU seconds per window gained per 10 minutes of uptime.
  const xs = cpu.map((_, i) => i);
  const mx = mean(xs);
  const my = mean(cpu);
  const slope = xs.reduce((a, x, i) => a + (x - mx) * (cpu[i]! - my), 0) / Math.max(1e-9, xs.reduce((a, x) => a + (x - mx) ** 2, 0));
  console.log(`CPU per ${windowMs / 1000} s window: first ${n} ${first.toFixed(2)} s, last ${n} ${last.toFixed(2)} s (${(((last - first) / first) * 100).toFixed(0)} %); ` +
    `slope ${((slope * 600_000) / windowMs).toFixed(2)} s per window per 10 min of uptime; ${announces + withdraws} route changes in all`);
}
