/**
 * Benchmark `containment` (issue 12, item 2): a control app with a built-in port check at a 200 ms interval, in
 * dry-run, flipped BENCH_FLIPS times (default 20) by closing and reopening its real TCP listener; run twice: alone, and
 * beside the three misbehaving fixture plugins (test/fixtures/plugins/containment-*: a check that spins, one that leaks
 * memory, one that never settles). Prints the flip -> route line latency (p50/p95/max, withdraw and announce) and the
 * daemon's RSS (max sampled, VmHWM). Figures only: nothing is asserted.
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DaemonProcess, freePort, type LogLine } from '../test/helpers/daemon.js';
import { percentile, procStats } from './stats.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/plugins/', import.meta.url));
const BAD = ['containment-spin', 'containment-leak', 'containment-never-settles'] as const;
const CONTROL = '198.18.100.10/32';

interface Run {
  readonly withdrawMs: number[];
  readonly announceMs: number[];
  readonly maxRssMb: number;
  readonly hwmMb: number;
}

async function runOnce(withPlugins: boolean, flips: number): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'vipcast-bench-containment-'));
  const sink = createServer((s) => s.on('error', () => {}));
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', () => r()));
  const sinkPort = (sink.address() as { port: number }).port;
  const port = await freePort();
  let yaml = `agent: { listen_addr: "", monitor_interval: 200ms, cleanup_timer: 1m }
routing: { plugin: dry-run }
bgp: { local_as: 65001, local_ip: 198.18.0.2, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
`;
  if (withPlugins) {
    for (const fixture of BAD) {
      const pkg = `vipcast-monitor-${fixture}`;
      mkdirSync(join(dir, 'node_modules', pkg), { recursive: true });
      cpSync(join(FIXTURES, fixture), join(dir, 'node_modules', pkg), { recursive: true });
    }
    yaml += `plugins: [${BAD.map((f) => `vipcast-monitor-${f}`).join(', ')}]\n`;
  }
  yaml += `apps:\n  - { name: control, vip: ${CONTROL}, monitors: ["port:tcp:${port}"] }\n`;
  if (withPlugins) {
    yaml += `  - { name: spinner, vip: 198.18.101.1/32, monitor_interval: 1s, check_timeout: 500ms, monitors: ["spin"] }
  - { name: leaker, vip: 198.18.101.2/32, monitors: ["leak:8"] }
  - { name: hanger, vip: 198.18.101.3/32, monitors: ["never-settles:${sinkPort}"] }
`;
  }
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, yaml);
  const d = new DaemonProcess(['run', '-c', file]);
  const pid = d.child.pid!;
  let maxRssMb = 0;
  const sampler = setInterval(() => {
    try {
      maxRssMb = Math.max(maxRssMb, procStats(pid).rssKb / 1024);
    } catch {
      // gone
    }
  }, 100);
  const withdrawMs: number[] = [];
  const announceMs: number[] = [];
  let hwmMb = NaN;
  try {
    await d.waitLine((l) => l.app === 'control' && l.state === 'down', 60_000, 'control checked once');
    // Let the bad plugins misbehave for a while (a spin blocks its worker about 3 s in).
    await new Promise((r) => setTimeout(r, 4000));
    const isRoute = (action: string) => (l: LogLine) => l.event === 'route' && l.action === action && l.prefix === CONTROL;
    const took = async (pred: (l: LogLine) => boolean, since: number, from: number): Promise<number> => {
      try {
        return (await d.waitLine(pred, 10_000, 'control route', from)).at - since;
      } catch {
        return Infinity;
      }
    };
    for (let i = 0; i < flips; i++) {
      let from = d.lines.length;
      const server: Server = createServer((c) => c.destroy());
      await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
      announceMs.push(await took(isRoute('announce'), performance.now(), from));
      await new Promise((r) => setTimeout(r, 150 + Math.random() * 300));
      from = d.lines.length;
      await new Promise<void>((r) => server.close(() => r()));
      withdrawMs.push(await took(isRoute('withdraw'), performance.now(), from));
      await new Promise((r) => setTimeout(r, 150 + Math.random() * 300));
    }
    hwmMb = procStats(pid).hwmKb / 1024;
  } finally {
    clearInterval(sampler);
    d.kill('SIGTERM');
    await Promise.race([d.exited, new Promise((r) => setTimeout(r, 5000))]);
    await d.stop();
    await new Promise<void>((r) => sink.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  }
  return { withdrawMs, announceMs, maxRssMb, hwmMb };
}

function line(label: string, values: number[]): string {
  const f = (v: number) => (Number.isFinite(v) ? `${Math.round(v)}` : 'none');
  return `${label}: p50 ${f(percentile(values, 50))} ms, p95 ${f(percentile(values, 95))} ms, max ${f(Math.max(...values))} ms (${values.length} flips)`;
}

export async function benchContainment(): Promise<void> {
  const flips = Number(process.env.BENCH_FLIPS ?? 20);
  const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  console.log(`containment (vipcast ${version}): control app, port check every 200 ms, dry-run; listener flipped ${flips} times`);
  for (const withPlugins of [false, true]) {
    const r = await runOnce(withPlugins, flips);
    const label = withPlugins ? 'beside spin + leak + never-settles plugins' : 'alone';
    console.log(`  ${label}`);
    console.log(`    ${line('listener closed -> withdraw', r.withdrawMs)}`);
    console.log(`    ${line('listener opened -> announce', r.announceMs)}`);
    console.log(`    daemon RSS: max sampled ${Math.round(r.maxRssMb)} MB, VmHWM ${Math.round(r.hwmMb)} MB`);
  }
}
