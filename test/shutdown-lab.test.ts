/**
 * Shutdown under a held xtables lock, at a real BIRD: iptables-legacy waits for the lock (`-w 10`), so a NAT change in
 * flight when SIGTERM comes hangs, and so would the NAT cleanup. The route must still be withdrawn at once (after the
 * bounded wait for the effect in flight) and the addresses removed within the 10 s exit bound.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { labSkip, waitFor } from './lab/netns.js';
import { createStack } from './lab/stack.js';
import { loAddrs } from './lab/traffic.js';

const skip = labSkip(['gobgpd', 'bird', 'birdc', 'iptables-legacy', 'flock']);
const LOCK = '/run/xtables.lock';

t.test('SIGTERM while the xtables lock is held and a NAT change hangs on it: withdrawn within 4 s, addresses gone, exit within 10 s', { skip, timeout: 90_000 }, async (t) => {
  const s = await createStack();
  t.teardown(() => s.destroy());
  const flag = join(s.dir, 'b-down');
  writeFileSync(flag, '');
  const file = s.writeConfig(`${s.baseConfig('  iptables_binary: iptables-legacy\n')}apps:
  - { name: a, vip: 198.18.231.1/32, nats: ["tcp:80:8080"] }
  - { name: b, vip: 198.18.231.2/32, monitors: ["exec:test ! -e ${flag}"], nats: ["tcp:81:8081"] }
`);
  const d = s.startVipcast(file);
  await waitFor(async () => (await s.routes('198.18.231.1/32')).length === 1, 15_000, 'a announced at BIRD');
  await d.waitLine((l) => l.app === 'b' && l.state === 'down', 5000, 'b checked (down)');

  // Hold the lock (the holder is its own process group: flock and its sleep are killed together).
  const holder = spawn('flock', [LOCK, 'sleep', '40'], { detached: true, stdio: 'ignore' });
  t.teardown(() => { try { process.kill(-holder.pid!, 'SIGKILL'); } catch { /* gone */ } });
  await waitFor(async () => !(await tryLock()), 3000, 'the lock is held');
  // b comes up: its address is added and its NAT change now waits for the lock.
  rmSync(flag);
  await d.waitLine((l) => l.app === 'b' && l.state === 'up', 5000, 'b up');
  await new Promise((r) => setTimeout(r, 300));
  const term = performance.now();
  d.kill('SIGTERM');
  await waitFor(async () => (await s.routes()).length === 0, 5000, 'every route withdrawn at BIRD', 20);
  const withdrawn = performance.now() - term;
  t.ok(withdrawn < 4000, `withdrawn at BIRD ${Math.round(withdrawn)} ms after SIGTERM (a NAT change hung on the lock; bounded wait 2 s)`);
  const { code } = await d.exited;
  const exited = performance.now() - term;
  t.ok(exited < 10_500, `exited ${Math.round(exited)} ms after SIGTERM (code ${code})`);
  const left = (await loAddrs(s.node)).filter((a) => a.local.startsWith('198.18.231.'));
  t.same(left, [], 'no VIP left on lo');
  t.notOk(d.lines.some((l) => l.event === 'route' && l.action === 'announce' && l.prefix === '198.18.231.2/32'), 'b was never announced (its NAT rule never got in)');
  t.comment(d.lines.filter((l) => l.level >= 40 || /NAT|nat|in flight/.test(l.msg)).map((l) => `${Math.round(l.at - term)} ${l.msg} ${String((l.err as { message?: string } | undefined)?.message ?? "")}`).join("\n"));
});

/** True when the xtables lock can be taken right now (then released at once). */
async function tryLock(): Promise<boolean> {
  if (!existsSync(LOCK)) return true;
  const child = spawn('flock', ['-n', LOCK, 'true'], { stdio: 'ignore' });
  return new Promise((resolve) => child.on('exit', (code) => resolve(code === 0)));
}
