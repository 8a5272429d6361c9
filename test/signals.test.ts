/**
 * Shutdown against a real gobgpd and BIRD. Under a stuck speaker (gobgpd frozen with SIGSTOP, so every withdraw
 * hangs) one SIGTERM still ends the daemon within 10 s and a second signal exits at once. With agent.shutdown_drain
 * the route stays at BIRD with GRACEFUL_SHUTDOWN for the drain, then goes.
 */
import t, { type Test } from 'tap';
import { labSkip, waitFor } from './lab/netns.js';
import { sameInstant } from './lab/bird.js';
import { createStack, type Stack } from './lab/stack.js';
import { hasVip } from './lab/traffic.js';

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
  t.comment(d.lines.filter((l) => l.level >= 40 || /stop|withdraw/.test(l.msg)).map((l) => `${Math.round(l.at - (d.lines.find((x) => x.signal === 'SIGTERM')?.at ?? 0))} ms: ${l.msg}`).join('\n'));
  t.ok(took < 10_000, `exited ${Math.round(took)} ms after SIGTERM`);
  t.equal(code, 0, 'exit 0: the speaker not answering is reported, not a failed shutdown');
  t.ok(d.lines.some((l) => /could not withdraw/.test(l.msg) && l.level >= 50), 'the stuck withdraw was reported as an error');
});

t.test('SIGTERM while vipcast starts, gobgpd frozen at random moments of the start: exit 0 within 10 s each time, nothing left on lo', { skip, timeout: 180_000 }, async (t) => {
  const s = await createStack();
  t.teardown(async () => {
    try { process.kill(s.gobgpd.pid, 'SIGCONT'); } catch { /* gone */ }
    await s.destroy();
  });
  const file = s.writeConfig(`${s.baseConfig()}apps:\n  - { name: a, vip: 198.18.218.2/32 }\n`);
  // Frozen from 'config loaded' on: the speaker's setup, the first pass, or a pass after the app came up hangs on
  // its gRPC deadline (10 s) depending on the moment. The stop must not wait for the start to finish.
  for (const delay of [0, 150, 300, 450, 600, 800]) {
    const d = s.startVipcast(file);
    await d.waitLine((l) => l.msg === 'config loaded', 15_000, 'config loaded');
    await new Promise((r) => setTimeout(r, delay));
    process.kill(s.gobgpd.pid, 'SIGSTOP');
    const t0 = performance.now();
    d.kill('SIGTERM');
    const { code } = await d.exited;
    const took = performance.now() - t0;
    process.kill(s.gobgpd.pid, 'SIGCONT');
    const at0 = d.lines.find((x) => x.signal === 'SIGTERM')?.at ?? 0;
    if (code !== 0 || took >= 10_000) t.comment(d.lines.filter((l) => l.level >= 40 || /stop|start|running/.test(l.msg)).map((l) => `${Math.round(l.at - at0)} ms: ${l.msg}`).join('\n'));
    t.ok(took < 10_000, `frozen ${delay} ms after 'config loaded': exited ${Math.round(took)} ms after SIGTERM`);
    t.equal(code, 0, 'exit 0');
    t.notOk(await hasVip(s.node, '198.18.218.2'), 'nothing of vipcast\'s on lo');
    // gobgpd runs again for the next start (which withdraws whatever this one could not).
    await new Promise((r) => setTimeout(r, 200));
  }
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

t.test('SIGTERM with agent.shutdown_drain: BIRD keeps the route, now with (65535,0), for the drain; then it is withdrawn', { skip }, async (t) => {
  const s = await createStack();
  t.teardown(() => s.destroy());
  const d = s.startVipcast(s.writeConfig(`${s.baseConfig('  shutdown_drain: 2s\n')}apps:\n  - { name: a, vip: 198.18.219.1/32, vip_config: { bgp_communities: ["65001:219"] } }\n`));
  await waitFor(async () => (await s.routes()).length === 1, 15_000, 'route');
  t.same((await s.routes())[0]!.communities, ['65001:219']);
  const session = (await s.bird.protocol(s.protocol)).since;
  const t0 = performance.now();
  d.kill('SIGTERM');
  const marked = await waitFor(async () => {
    const r = await s.routes();
    return r.length === 1 && r[0]!.communities.includes('65535:0') ? r[0]! : undefined;
  }, 3000, 'the route with graceful-shutdown at BIRD', 20);
  const seen = performance.now() - t0;
  t.same(marked!.communities.sort(), ['65001:219', '65535:0'], 'the same route, its own community plus GRACEFUL_SHUTDOWN');
  await new Promise((r) => setTimeout(r, 1000));
  t.equal((await s.routes()).length, 1, 'still announced a second into the drain');
  t.ok(sameInstant((await s.bird.protocol(s.protocol)).since, session), 'the session was not reset by the re-announce');
  await waitFor(async () => (await s.routes()).length === 0, 5000, 'withdraw after the drain', 20);
  const gone = performance.now() - t0;
  t.comment(`graceful-shutdown at BIRD ${Math.round(seen)} ms after SIGTERM, withdrawn at ${Math.round(gone)} ms (drain 2 s)`);
  t.ok(gone - seen >= 1500, `the withdraw came about a drain (2 s) after the re-announce, not at once (${Math.round(gone - seen)} ms)`);
  t.equal((await d.exited).code, 0);
});
