/**
 * Shutdown under a stuck speaker: gobgpd frozen with SIGSTOP, so every withdraw hangs. One SIGTERM still ends the
 * daemon within 10 s; a second signal during the shutdown exits at once.
 */
import t, { type Test } from 'tap';
import { labSkip, waitFor } from './lab/netns.js';
import { createStack, type Stack } from './lab/stack.js';

const skip = labSkip(['gobgpd', 'bird', 'birdc', 'iptables']);

async function frozenSpeaker(t: Test): Promise<{ s: Stack; d: ReturnType<Stack['startVipcast']> }> {
  const s = await createStack();
  t.teardown(async () => {
    try { process.kill(s.gobgpd.pid, 'SIGCONT'); } catch { /* gone */ }
    await s.destroy();
  });
  const d = s.startVipcast(s.writeConfig(`${s.baseConfig()}apps:\n  - { name: a, vip: 198.18.218.1/32 }\n`));
  await waitFor(async () => (await s.routes()).length === 1, 15_000, 'route');
  process.kill(s.gobgpd.pid, 'SIGSTOP');
  return { s, d };
}

t.test('one SIGTERM with a frozen gobgpd: the daemon still exits within 10 s', { skip }, async (t) => {
  const { d } = await frozenSpeaker(t);
  const t0 = performance.now();
  d.kill('SIGTERM');
  const { code } = await d.exited;
  const took = performance.now() - t0;
  t.ok(took < 10_500, `exited ${Math.round(took)} ms after SIGTERM`);
  t.ok(code === 0 || code === 1, `exit code ${code}`);
  t.ok(d.lines.some((l) => /timed out/.test(l.msg) || /failed/.test(l.msg)), 'the stuck withdraw was reported');
});

t.test('a second signal during a stuck shutdown exits at once with code 1', { skip }, async (t) => {
  const { d } = await frozenSpeaker(t);
  d.kill('SIGTERM');
  await d.waitLine((l) => l.msg === 'stopping: withdrawing every route', 5000, 'shutdown started');
  await new Promise((r) => setTimeout(r, 300));
  const t0 = performance.now();
  d.kill('SIGINT');
  const { code } = await d.exited;
  t.equal(code, 1);
  t.ok(performance.now() - t0 < 1000, `exited ${Math.round(performance.now() - t0)} ms after the second signal`);
  t.ok(d.lines.some((l) => l.msg === 'second signal: exiting now'));
});
