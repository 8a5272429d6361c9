/**
 * Lab benchmarks (root, gobgpd, BIRD): vipcast as a child process in namespace "node", BIRD in "tor".
 * - start of vipcast -> first route at BIRD;
 * - health flip -> route change seen at BIRD, p50/p99 over BENCH_FLIPS flips (default 200), with 1 app and with 1,000
 *   apps announced;
 * - reload with 1,000 apps and an unchanged file: duration and the UPDATEs BIRD received (expect 0).
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createStack, type Stack } from '../test/lab/stack.js';
import { waitFor } from '../test/lab/netns.js';
import { percentile } from './stats.js';
import { record } from './report.js';

/** BIRD's import counters for a protocol: received updates and withdraws. */
async function importStats(s: Stack): Promise<{ updates: number; withdraws: number }> {
  const text = await s.bird.birdc(['show', 'protocols', 'all', s.protocol]);
  const num = (label: string) => Number(new RegExp(`${label}:\\s+(\\d+)`).exec(text)?.[1] ?? NaN);
  return { updates: num('Import updates'), withdraws: num('Import withdraws') };
}

function appsYaml(n: number, flagFile: string): string {
  const lines = [`  - { name: flip, vip: 198.18.250.1/32, monitors: ["exec:test -e ${flagFile}"] }`];
  for (let i = 0; i < n; i++) lines.push(`  - { name: app${i}, vip: 198.19.${200 + Math.floor(i / 250)}.${(i % 250) + 1}/32 }`);
  return `apps:\n${lines.join('\n')}\n`;
}

async function flips(s: Stack, flag: string, count: number): Promise<number[]> {
  const lat: number[] = [];
  const present = async () => (await s.routes('198.18.250.1/32')).length === 1;
  for (let i = 0; i < count; i++) {
    const up = !(await present());
    // A random pause first: flipping right after the last change would always land just after a check round.
    await new Promise((r) => setTimeout(r, Math.random() * 200));
    const t0 = performance.now();
    if (up) writeFileSync(flag, '');
    else rmSync(flag, { force: true });
    await waitFor(async () => (await present()) === up, 10_000, `flip ${i}`, 5);
    lat.push(performance.now() - t0);
  }
  return lat;
}

/** 10,000 VIPs through the daemon: gobgpd killed and restarted; time until BIRD has them all again. */
async function reinject(): Promise<void> {
  const n = Number(process.env.BENCH_VIPS ?? 10_000);
  const s = await createStack();
  try {
    const lines: string[] = [];
    for (let i = 0; i < n; i++) lines.push(`  - { name: v${i}, vip: 198.19.${Math.floor(i / 250)}.${(i % 250) + 1}/32 }`);
    const file = s.writeConfig(`${s.baseConfig()}apps:\n${lines.join('\n')}\n`);
    const d = s.startVipcast(file, ['--log-level', 'warn']);
    const t0 = performance.now();
    const count = async () => Number(/(\d+) imported/.exec(await s.bird.birdc(['show', 'protocols', 'all', s.protocol]))?.[1] ?? 0);
    await waitFor(async () => (await count()) === n, 300_000, `${n} routes at BIRD`, 200);
    record('lab', `${n} VIPs: start -> all at BIRD`, 'ms', 'vipcast', [performance.now() - t0]);
    console.log(`${n} VIPs: start of vipcast -> all at BIRD ${(performance.now() - t0).toFixed(0)} ms`);
    await s.gobgpd.kill('SIGKILL');
    await waitFor(async () => (await count()) === 0, 30_000, 'routes gone with gobgpd', 100);
    await s.gobgpd.restart();
    const answered = await s.gobgpd.waitAnswering();
    await waitFor(async () => (await count()) === n, 300_000, `${n} routes back at BIRD`, 100);
    console.log(`${n} VIPs: gobgpd restarted -> all back at BIRD ${(Date.now() - answered).toFixed(0)} ms after gobgpd answered (BIRD session re-forms in ~1 s of that)`);
    d.kill('SIGTERM');
    await d.exited;
  } finally {
    await s.destroy();
  }
}

export async function benchLab(): Promise<void> {
  const count = Number(process.env.BENCH_FLIPS ?? 60);
  console.log('\n## lab: vipcast + gobgpd (node) -> BIRD (tor)');
  for (const apps of [1, 1000]) {
    const s = await createStack();
    try {
      const flag = join(s.dir, 'flip-up');
      writeFileSync(flag, '');
      const others = apps - 1;
      const file = s.writeConfig(`${s.baseConfig('  check_timeout: 150ms')}${appsYaml(others, flag)}`);
      const t0 = performance.now();
      const d = s.startVipcast(file);
      await waitFor(async () => (await s.routes()).length > 0, 60_000, 'first route', 5);
      const first = performance.now() - t0;
      await waitFor(async () => (await s.routes()).length === apps, 120_000, 'all routes', 50);
      const all = performance.now() - t0;
      console.log(`${apps} apps: start of vipcast -> first route at BIRD ${first.toFixed(0)} ms; all ${apps} routes at BIRD after ${all.toFixed(0)} ms`);
      const lat = await flips(s, flag, count);
      record('lab', `start -> first route at BIRD, ${apps} apps`, 'ms', 'vipcast', [first]);
      record('lab', `start -> all ${apps} routes at BIRD`, 'ms', 'vipcast', [all]);
      record('lab', `health flip -> route change at BIRD (birdc polling), ${apps} apps`, 'ms', 'vipcast', lat);
      console.log(`${apps} apps: health flip -> route change at BIRD over ${count} flips: p50 ${percentile(lat, 50).toFixed(0)} ms, p99 ${percentile(lat, 99).toFixed(0)} ms (monitor_interval 200 ms, rise 1, fall 1: includes up to one interval of phase)`);
      if (apps === 1000) {
        writeFileSync(flag, '');
        await waitFor(async () => (await s.routes()).length === apps, 10_000, 'all routes again', 50);
        const before = await importStats(s);
        const from = d.lines.length;
        d.kill('SIGHUP');
        const line = await d.waitLine((l) => l.component === 'reload' && /^reload: /.test(l.msg), 30_000, 'reload outcome', from);
        await new Promise((r) => setTimeout(r, 1000)); // let any UPDATE reach BIRD
        const after = await importStats(s);
        record('lab', `reload, ${apps} apps, unchanged file`, 'ms', 'vipcast', [Number(line.duration_ms)]);
        console.log(`reload with ${apps} apps and an unchanged file: ${line.msg} in ${String(line.duration_ms)} ms; UPDATEs received by BIRD ${after.updates - before.updates}, withdraws ${after.withdraws - before.withdraws}`);
      }
      d.kill('SIGTERM');
      await d.exited;
    } finally {
      await s.destroy();
    }
  }
  await reinject();
}
