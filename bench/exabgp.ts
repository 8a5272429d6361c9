/**
 * vipcast and ExaBGP's healthcheck side by side (root, gobgpd, BIRD, Debian exabgp), each in its own namespace pair
 * announcing to an identical BIRD whose log gives the route times for both (bench/exabgp-lab.ts). Scenarios:
 * - reaction: one service, exec check of a flag file every 200 ms (rise 1, fall 1); BENCH_FLIPS flips (default 60),
 *   each after a random 0-200 ms pause: flip -> route withdrawn / announced at BIRD. Also start -> first route.
 * - isolation: the same beside 50 services (BENCH_HUNG) whose exec checks hang (1 s interval, 1 s timeout).
 * - scale: BENCH_SCALE_APPS services (default 100) with 1 s TCP port checks, all up: start -> first and all routes at
 *   BIRD, then CPU (% of one core, per 1 s sample) and RSS of the process trees for BENCH_SCALE_SECONDS (default 20).
 * - shutdown: BENCH_SHUTDOWN_APPS services (default 10) announced, SIGTERM -> the last route gone at BIRD, and -> exit.
 * Each scenario runs BENCH_ROUNDS rounds (reaction/isolation 1, scale/shutdown 2 by default), the systems' order
 * alternating (A B, B A), each run in a fresh lab.
 */
import { chmodSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSideLab, SYSTEMS, SYSTEM_LABEL, type Service, type SideLab, type SystemName } from './exabgp-lab.js';
import { waitFor } from '../test/lab/netns.js';
import { percentile, treeStats } from './stats.js';
import { record } from './report.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const FLIP_VIP = '198.18.250.1/32';

/** The systems in alternating order per round: A B, B A, A B... */
function order(round: number): SystemName[] {
  return round % 2 === 0 ? SYSTEMS : [...SYSTEMS].reverse();
}

/** Run `fn` in a fresh lab; a failure is printed and recorded as a failed run, and the other system still runs. */
async function withLab(scenario: string, system: SystemName, fn: (s: SideLab) => Promise<void>): Promise<void> {
  const s = await createSideLab(system);
  try {
    await fn(s);
  } catch (err) {
    console.error(`${scenario} ${SYSTEM_LABEL[system]}: run failed: ${(err as Error).message}`);
    record(scenario, 'runs failed (see the log)', 'count', system, [1], { show: ['n'] });
  } finally {
    await s.destroy();
  }
}

function script(dir: string, name: string, body: string): string {
  const file = join(dir, name);
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

/** A process in the node namespace listening on 127.0.0.1:base..base+n-1 (accept and close). */
async function listeners(s: SideLab, base: number, n: number): Promise<void> {
  const code = `const net=require('net');let k=0;for(let p=${base};p<${base + n};p++){net.createServer(c=>c.destroy()).listen(p,'127.0.0.1',()=>{if(++k===${n})console.log('ready')})}`;
  const c = s.spawnInNode(process.execPath, ['-e', code]);
  await new Promise<void>((resolve, reject) => {
    c.stdout?.on('data', (b: Buffer) => b.toString().includes('ready') && resolve());
    c.once('exit', () => reject(new Error('listener process exited')));
  });
}

const fmt = (v: number[]) => `p50 ${percentile(v, 50).toFixed(0)} / p95 ${percentile(v, 95).toFixed(0)} / p99 ${percentile(v, 99).toFixed(0)} / max ${Math.max(...v).toFixed(0)} ms`;

async function flipRun(scenario: 'reaction' | 'isolation', system: SystemName, hung: number): Promise<void> {
  const flips = num('BENCH_FLIPS', 60);
  await withLab(scenario, system, async (s) => {
    const flag = join(s.dir, 'flip-up');
    writeFileSync(flag, '');
    const services: Service[] = [{ name: 'flip', vip: FLIP_VIP, check: { exec: script(s.dir, 'flip.sh', `test -e ${flag}`) }, intervalMs: 200, timeoutMs: 200 }];
    const hang = script(s.dir, 'hang.sh', 'exec sleep 20');
    for (let i = 0; i < hung; i++) services.push({ name: `hung${i}`, vip: `198.19.${200 + Math.floor(i / 250)}.${(i % 250) + 1}/32`, check: { exec: hang }, intervalMs: 1000, timeoutMs: 1000 });
    const t0 = await s.start(services);
    const first = await s.waitEvent((e) => e.prefix === FLIP_VIP && e.kind === 'added', t0, 60_000, 'first route');
    record(scenario, 'start -> first route at BIRD', 'ms', system, [first.at - t0]);
    if (hung) await sleep(3000); // the hung checks in their steady state
    const down: number[] = [];
    const up: number[] = [];
    let present = true;
    let missed = 0;
    let inARow = 0;
    const flipTimeout = num('BENCH_FLIP_TIMEOUT', 5000);
    for (let i = 0; i < flips; i++) {
      await sleep(Math.random() * 200);
      const t = Date.now();
      if (present) rmSync(flag, { force: true });
      else writeFileSync(flag, '');
      const want = present ? 'removed' : 'added';
      try {
        const e = await s.waitEvent((ev) => ev.prefix === FLIP_VIP && ev.kind === want, t, flipTimeout, `flip ${i}`);
        (present ? down : up).push(e.at - t);
        inARow = 0;
      } catch {
        missed++;
        // The agent no longer follows the flag: say so rather than wait out every flip.
        if (++inARow >= 5) {
          console.log(`${scenario} ${SYSTEM_LABEL[system]}: 5 flips in a row without a route change at BIRD; stopping after ${i + 1} flips`);
          break;
        }
      }
      present = !present;
      await sleep(50); // BIRD's log line first, then the next flip
    }
    record(scenario, 'health flip -> withdrawn at BIRD', 'ms', system, down, { keepSamples: true });
    record(scenario, 'health flip -> announced at BIRD', 'ms', system, up, { keepSamples: true });
    record(scenario, `flips without a route change at BIRD within ${flipTimeout} ms`, 'count', system, [missed]);
    console.log(`${scenario} ${SYSTEM_LABEL[system]}${hung ? ` (+${hung} hung)` : ''}: first route ${first.at - t0} ms; withdraw ${fmt(down)}; announce ${fmt(up)} (${down.length + up.length + missed} flips, ${missed} missed)`);
  });
}

export async function benchReaction(): Promise<void> {
  console.log('\n## reaction: health flip -> route change at BIRD, vipcast vs ExaBGP healthcheck (200 ms interval)');
  for (let r = 0; r < num('BENCH_ROUNDS', 1); r++) for (const sys of order(r)) await flipRun('reaction', sys, 0);
}

export async function benchIsolation(): Promise<void> {
  const hung = num('BENCH_HUNG', 50);
  console.log(`\n## isolation: the same beside ${hung} services whose exec checks hang`);
  for (let r = 0; r < num('BENCH_ROUNDS', 1); r++) for (const sys of order(r)) await flipRun('isolation', sys, hung);
}

function portServices(n: number, base: number): Service[] {
  return Array.from({ length: n }, (_, i) => ({
    name: `svc${i}`, vip: `198.19.${200 + Math.floor(i / 250)}.${(i % 250) + 1}/32`, check: { port: base + i }, intervalMs: 1000, timeoutMs: 1000,
  }));
}

export async function benchScale(): Promise<void> {
  const apps = num('BENCH_SCALE_APPS', 100);
  const seconds = num('BENCH_SCALE_SECONDS', 20);
  console.log(`\n## scale: ${apps} services x 1 s TCP port checks: start -> routes at BIRD, CPU and RSS of the process trees over ${seconds} s`);
  const rounds = num('BENCH_ROUNDS', 2);
  const acc: Record<SystemName, { first: number[]; all: number[]; short: number[]; cpu: number[]; rss: number[]; procs: number[] }> = {
    vipcast: { first: [], all: [], short: [], cpu: [], rss: [], procs: [] },
    exabgp: { first: [], all: [], short: [], cpu: [], rss: [], procs: [] },
  };
  for (let r = 0; r < rounds; r++) {
    for (const sys of order(r)) {
      await withLab('scale', sys, async (s) => {
        await listeners(s, 34000, apps);
        const t0 = await s.start(portServices(apps, 34000));
        const first = await s.waitEvent((e) => e.kind === 'added', t0, 180_000, 'first route');
        const a = acc[sys];
        a.first.push(first.at - t0);
        // An agent that never gets all routes there (ExaBGP's healthchecks die on a loaded box) is still measured.
        const reached = await waitFor(async () => (await s.count()) >= apps, num('BENCH_SCALE_WAIT', 120_000), `${apps} routes at BIRD`, 100).then(() => true, () => false);
        const added = s.events(true).filter((e) => e.kind === 'added');
        const all = Math.max(...added.map((e) => e.at)) - t0;
        if (reached) a.all.push(all);
        else {
          a.short.push(await s.count());
          console.log(`scale ${SYSTEM_LABEL[sys]} round ${r + 1}: only ${a.short.at(-1)} of ${apps} routes at BIRD after ${num('BENCH_SCALE_WAIT', 120_000) / 1000} s`);
        }
        await sleep(2000); // past the start-up burst
        let prev = treeStats(s.pids());
        let prevT = performance.now();
        const cpu: number[] = [];
        for (let i = 0; i < seconds; i++) {
          await sleep(1000);
          const now = treeStats(s.pids());
          const t = performance.now();
          cpu.push(((now.cpuTicks - prev.cpuTicks) / 100 / ((t - prevT) / 1000)) * 100);
          a.rss.push(now.rssKb / 1024);
          a.procs.push(now.processes);
          prev = now;
          prevT = t;
        }
        a.cpu.push(...cpu);
        console.log(`scale ${SYSTEM_LABEL[sys]} round ${r + 1}: first route ${first.at - t0} ms, ${reached ? `all ${apps} ${all} ms` : `${a.short.at(-1)} routes at most`}; CPU ${percentile(cpu, 50).toFixed(1)} % of a core (p50 of ${seconds} 1 s samples), RSS ${(prev.rssKb / 1024).toFixed(0)} MB in ${prev.processes} processes`);
      });
    }
  }
  for (const sys of SYSTEMS) {
    const a = acc[sys];
    record('scale', `start -> first route at BIRD, ${apps} apps`, 'ms', sys, a.first);
    record('scale', `start -> all ${apps} routes at BIRD`, 'ms', sys, a.all);
    record('scale', `routes at BIRD in runs that never had all ${apps}`, 'count', sys, a.short, { show: ['min', 'max'] });
    record('scale', `CPU, ${apps} apps x 1 s port checks (process tree, % of one core, 1 s samples)`, '%', sys, a.cpu, { show: ['p50', 'p95', 'max'] });
    record('scale', `RSS, ${apps} apps (process tree, 1 s samples)`, 'MB', sys, a.rss, { show: ['p50', 'max'] });
    record('scale', `processes in the tree, ${apps} apps`, 'count', sys, a.procs, { show: ['max'] });
  }
}

export async function benchShutdown(): Promise<void> {
  const apps = num('BENCH_SHUTDOWN_APPS', 10);
  const rounds = num('BENCH_ROUNDS', 2);
  console.log(`\n## shutdown: ${apps} services announced, SIGTERM -> every route gone at BIRD`);
  const gone: Record<SystemName, number[]> = { vipcast: [], exabgp: [] };
  const exit: Record<SystemName, number[]> = { vipcast: [], exabgp: [] };
  for (let r = 0; r < rounds; r++) {
    for (const sys of order(r)) {
      await withLab('shutdown', sys, async (s) => {
        await listeners(s, 35000, apps);
        const t0 = await s.start(portServices(apps, 35000));
        await waitFor(async () => (await s.count()) >= apps, 120_000, `${apps} routes at BIRD`, 100);
        await sleep(1500);
        s.events();
        const t = Date.now();
        const exited = s.signal('SIGTERM').then(() => Date.now() - t);
        await waitFor(async () => (await s.count()) === 0, 15_000, 'routes gone', 10);
        const removed = s.events().filter((e) => e.kind === 'removed');
        const last = Math.max(...removed.map((e) => e.at)) - t;
        gone[sys].push(last);
        exit[sys].push(await exited);
        console.log(`shutdown ${SYSTEM_LABEL[sys]} round ${r + 1}: SIGTERM -> all ${apps} routes gone at BIRD ${last} ms, process exit ${exit[sys].at(-1)} ms (start was ${t - t0} ms before)`);
      });
    }
  }
  for (const sys of SYSTEMS) {
    record('shutdown', `SIGTERM -> all ${apps} routes gone at BIRD`, 'ms', sys, gone[sys]);
    record('shutdown', 'SIGTERM -> process exit', 'ms', sys, exit[sys]);
  }
}
