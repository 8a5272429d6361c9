/**
 * Benchmark: 1,000 apps with 1 s port checks in dry-run for 30 s (BENCH_SECONDS to change).
 * Prints the daemon's CPU %, RSS, and latencies: listener flip -> route line (what an operator sees, includes up to
 * one interval of phase) and check round start -> route change (the daemon's own decision latency, from its
 * Prometheus histogram).
 */
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:net';
import { DaemonProcess, freePort } from '../test/helpers/daemon.js';
import { histogramQuantile, percentile, procStats } from './stats.js';

export async function benchDryRun(): Promise<void> {
  const apps = Number(process.env.BENCH_APPS ?? 1000);
  const seconds = Number(process.env.BENCH_SECONDS ?? 30);
  const dir = mkdtempSync(join(tmpdir(), 'vipcast-bench-'));
  const basePort = 20000;
  const apiPort = await freePort();
  const lines = [`agent:\n  listen_addr: 127.0.0.1:${apiPort}\n  monitor_interval: 1s\n  check_timeout: 500ms\nrouting: { plugin: dry-run }\nbgp: { local_as: 65001, local_ip: 198.18.0.2, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }\napps:`];
  for (let i = 0; i < apps; i++) {
    lines.push(`  - { name: app${i}, vip: 198.18.${128 + Math.floor(i / 250)}.${(i % 250) + 1}/32, monitors: ["port:tcp:${basePort + i}"] }`);
  }
  const file = join(dir, 'bench.yaml');
  writeFileSync(file, lines.join('\n') + '\n');

  // Half the services are up from the start.
  const servers = new Map<number, Server>();
  const open = async (i: number) => {
    const s = createServer((c) => c.destroy());
    await new Promise<void>((r) => s.listen(basePort + i, '127.0.0.1', () => r()));
    servers.set(i, s);
  };
  const close = async (i: number) => {
    const s = servers.get(i);
    servers.delete(i);
    if (s) await new Promise<void>((r) => s.close(() => r()));
  };
  for (let i = 0; i < apps; i += 2) await open(i);

  const d = new DaemonProcess(['run', '-c', file, '--log-level', 'info']);
  const t0 = performance.now();
  await d.waitLine((l) => l.event === 'route' && l.action === 'announce', 60_000, 'first announce');
  const firstRoute = performance.now() - t0;
  // Wait for the initial convergence: every listening app announced.
  const announced = () => new Set(d.lines.filter((l) => l.event === 'route' && l.action === 'announce').map((l) => l.app)).size;
  while (announced() < apps / 2 && performance.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 100));
  const converged = performance.now() - t0;

  const pid = d.child.pid!;
  const before = procStats(pid);
  const metricsBefore = await (await fetch(`http://127.0.0.1:${apiPort}/metrics`)).text();
  const wallStart = performance.now();
  const flipLatency: number[] = [];
  // Flip 10 random apps every second, and measure flip -> route line.
  const end = wallStart + seconds * 1000;
  const pending: Array<Promise<void>> = [];
  while (performance.now() < end) {
    for (let k = 0; k < 10; k++) {
      const i = Math.floor(Math.random() * apps);
      const wasUp = servers.has(i);
      const from = d.lines.length;
      const at = performance.now();
      await (wasUp ? close(i) : open(i));
      const action = wasUp ? 'withdraw' : 'announce';
      pending.push(d.waitLine((l) => l.event === 'route' && l.action === action && l.app === `app${i}`, 10_000, `${action} app${i}`, from)
        .then((l) => { flipLatency.push(l.at - at); }, () => undefined));
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  await Promise.all(pending);
  const after = procStats(pid);
  const wall = (performance.now() - wallStart) / 1000;
  const metrics = await (await fetch(`http://127.0.0.1:${apiPort}/metrics`)).text();
  d.kill('SIGTERM');
  await d.exited;
  for (const i of [...servers.keys()]) await close(i);

  const cpu = ((after.cpuTicks - before.cpuTicks) / after.ticksPerSecond / wall) * 100;
  console.log(`\n## dry-run: ${apps} apps, 1 s port checks, ${seconds} s`);
  console.log(`start -> first route line: ${firstRoute.toFixed(0)} ms; all ${apps / 2} initially healthy apps announced after ${converged.toFixed(0)} ms`);
  console.log(`daemon CPU: ${cpu.toFixed(1)} % of one core (main thread + check workers); RSS ${(after.rssKb / 1024).toFixed(0)} MiB (peak ${(after.hwmKb / 1024).toFixed(0)} MiB)`);
  console.log(`listener flip -> route line (${flipLatency.length} flips): p50 ${percentile(flipLatency, 50).toFixed(0)} ms, p99 ${percentile(flipLatency, 99).toFixed(0)} ms (includes up to one 1 s interval of phase)`);
  for (const action of ['announce', 'withdraw']) {
    const p50 = histogramQuantile(metrics, 'vipcast_decision_latency_seconds', { action }, 0.5, metricsBefore);
    const p99 = histogramQuantile(metrics, 'vipcast_decision_latency_seconds', { action }, 0.99, metricsBefore);
    console.log(`check round start -> ${action} at the router: p50 ${(p50 * 1000).toFixed(1)} ms, p99 ${(p99 * 1000).toFixed(1)} ms (during the window; from the histogram, interpolated)`);
  }
  const checkP50 = histogramQuantile(metrics, 'vipcast_check_duration_seconds', { type: 'port' }, 0.5, metricsBefore);
  const checkP99 = histogramQuantile(metrics, 'vipcast_check_duration_seconds', { type: 'port' }, 0.99, metricsBefore);
  console.log(`port check duration (in the pool, incl. queueing): p50 ${(checkP50 * 1000).toFixed(1)} ms, p99 ${(checkP99 * 1000).toFixed(1)} ms`);
}
