import t from 'tap';
import { AppRegistry } from '../src/core/registry.js';
import { HealthTracker } from '../src/core/health.js';
import { Reconciler, type ReconcilerOptions } from '../src/core/reconciler.js';
import { silentLogger } from '../src/core/logger.js';
import { parseCommunity, parsePrefix } from '../src/core/values.js';
import { Journal, JournalHost, JournalRouter } from './helpers/journal.js';
import { makeApp, ScriptedRunner } from './helpers/apps.js';
import { waitFor } from './lab/netns.js';

function setup(opts: Partial<ReconcilerOptions> = {}) {
  const journal = new Journal();
  const router = new JournalRouter(journal);
  const host = new JournalHost(journal);
  const registry = new AppRegistry();
  const runner = new ScriptedRunner();
  const log = silentLogger();
  const health = new HealthTracker(runner, log);
  const rec = new Reconciler(registry, health, router, host, {
    bgp: { communities: [parseCommunity('65000:1', 'c')], origin: 'igp' },
    cleanupTimerMs: 60_000, removeVipOnWithdraw: false, resyncMs: 60_000, retryMs: 50, ...opts,
  }, log);
  health.onChange((c) => rec.healthChanged(c.app, c.state));
  registry.onChange((ev) => {
    if (ev.type === 'removed') {
      health.untrack(ev.app.name);
      rec.appRemoved(ev.app.name);
    } else {
      health.track(ev.app, { keepState: ev.type === 'changed' });
      if (ev.type === 'changed') void rec.trigger();
    }
  });
  rec.start();
  const close = () => { health.close(); rec.close(); };
  return { journal, router, host, registry, runner, health, rec, close };
}

t.test('bring-up order is address, then NAT, then announce', async (t) => {
  const s = setup();
  t.teardown(s.close);
  s.runner.set('port:tcp:1001', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.10.1/32'], monitors: ['port:tcp:1001'], nats: ['tcp:80:8080'] }));
  await waitFor(() => s.router.rib.has('198.18.10.1/32'), 2000, 'announce');
  t.same(s.journal.entries, ['add-vip 198.18.10.1/32', 'nat 198.18.10.1/32:tcp:80:8080', 'announce 198.18.10.1/32 65000:1']);
});

t.test('tear-down withdraws first and keeps address and NAT until the cleanup timer, then releases them; the config app stays checked', async (t) => {
  const s = setup({ cleanupTimerMs: 300 });
  t.teardown(s.close);
  s.runner.set('port:tcp:1002', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.10.2/32'], monitors: ['port:tcp:1002'], nats: ['udp:53:8053'] }));
  await waitFor(() => s.router.rib.has('198.18.10.2/32'), 2000, 'announce');
  s.journal.clear();
  s.runner.set('port:tcp:1002', false);
  await waitFor(() => !s.router.rib.has('198.18.10.2/32'), 2000, 'withdraw');
  t.same(s.journal.entries, ['withdraw 198.18.10.2/32'], 'only the withdraw at first');
  t.ok(s.host.vips.has('198.18.10.2/32'), 'address kept while the cleanup timer runs');
  t.ok(s.rec.status()[0]?.cleanupAt, 'status shows when the cleanup fires');
  await waitFor(() => !s.host.vips.has('198.18.10.2/32'), 2000, 'cleanup');
  t.same(s.journal.entries, ['withdraw 198.18.10.2/32', 'nat', 'remove-vip 198.18.10.2/32'], 'NAT goes before the address');
  t.ok(s.registry.get('web'), 'a config app stays registered after cleanup');
  const rounds = s.health.get('web')!.rounds;
  await waitFor(() => s.health.get('web')!.rounds > rounds + 2, 2000, 'checks go on');
});

for (const source of ['config', 'consul']) {
  t.test(`cleanup_timer then recovery: a ${source} app is brought back up (address, NAT, announce) with no change at its source`, async (t) => {
    const s = setup({ cleanupTimerMs: 150 });
    t.teardown(s.close);
    s.runner.set('port:tcp:1020', true);
    s.registry.upsert(makeApp('dns', { source, vips: ['198.18.10.20/32'], monitors: ['port:tcp:1020'], nats: ['udp:53:5353'] }));
    await waitFor(() => s.router.rib.has('198.18.10.20/32'), 2000, 'announce');
    s.runner.set('port:tcp:1020', false);
    await waitFor(() => !s.host.vips.has('198.18.10.20/32'), 2000, 'cleanup');
    s.journal.clear();
    s.runner.set('port:tcp:1020', true);
    await waitFor(() => s.router.rib.has('198.18.10.20/32'), 2000, 're-announce after recovery');
    t.same(s.journal.entries, ['add-vip 198.18.10.20/32', 'nat 198.18.10.20/32:udp:53:5353', 'announce 198.18.10.20/32 65000:1'], 'back in bring-up order');
    t.equal(s.rec.status()[0]?.hostHeld, true);
  });
}

t.test('cleanup_timer drops an HTTP registration (its registrant registers again, as with gocast)', async (t) => {
  const s = setup({ cleanupTimerMs: 150 });
  t.teardown(s.close);
  s.runner.set('port:tcp:1021', true);
  s.registry.upsert(makeApp('reg', { source: 'http', vips: ['198.18.10.21/32'], monitors: ['port:tcp:1021'] }));
  await waitFor(() => s.router.rib.has('198.18.10.21/32'), 2000, 'announce');
  s.runner.set('port:tcp:1021', false);
  await waitFor(() => s.registry.get('reg') === undefined, 2000, 'registration dropped');
  // The address goes in the pass the drop asks for (on the next turn of the event loop), not in the same timer.
  await waitFor(() => !s.host.vips.has('198.18.10.21/32'), 2000, 'address removed');
  t.notOk(s.host.vips.has('198.18.10.21/32'), 'address removed');
  t.equal(s.health.get('reg'), undefined, 'no longer checked');
});

t.test('an app that recovers before the cleanup timer keeps its address and is re-announced', async (t) => {
  const s = setup({ cleanupTimerMs: 5000 });
  t.teardown(s.close);
  s.runner.set('port:tcp:1003', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.10.3/32'], monitors: ['port:tcp:1003'] }));
  await waitFor(() => s.router.rib.has('198.18.10.3/32'), 2000, 'announce');
  s.runner.set('port:tcp:1003', false);
  await waitFor(() => !s.router.rib.has('198.18.10.3/32'), 2000, 'withdraw');
  s.journal.clear();
  s.runner.set('port:tcp:1003', true);
  await waitFor(() => s.router.rib.has('198.18.10.3/32'), 2000, 're-announce');
  t.same(s.journal.entries, ['announce 198.18.10.3/32 65000:1'], 'no address churn');
  t.equal(s.rec.status()[0]?.cleanupAt, undefined, 'cleanup cancelled');
});

t.test('remove_vip_on_withdraw removes NAT and address right after the withdraw', async (t) => {
  const s = setup({ removeVipOnWithdraw: true });
  t.teardown(s.close);
  s.runner.set('port:tcp:1004', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.10.4/32'], monitors: ['port:tcp:1004'], nats: ['tcp:53'] }));
  await waitFor(() => s.router.rib.has('198.18.10.4/32'), 2000, 'announce');
  s.journal.clear();
  s.runner.set('port:tcp:1004', false);
  await waitFor(() => !s.host.vips.has('198.18.10.4/32'), 2000, 'removal');
  t.same(s.journal.entries, ['withdraw 198.18.10.4/32', 'nat', 'remove-vip 198.18.10.4/32']);
});

t.test('an app whose address cannot be added is not announced and the reason is in its status', async (t) => {
  const s = setup();
  t.teardown(s.close);
  s.host.failAdd.add('198.18.10.5/32');
  s.runner.set('port:tcp:1005', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.10.5/32'], monitors: ['port:tcp:1005'] }));
  const st = await waitFor(() => s.rec.status()[0]?.error, 2000, 'error in status');
  t.match(st, /add address 198\.18\.10\.5\/32: .*Operation not permitted/);
  t.notOk(s.router.rib.has('198.18.10.5/32'), 'never announced without its address');
  t.notOk(s.journal.entries.some((e) => e.startsWith('announce')));
  s.host.failAdd.clear();
  await waitFor(() => s.router.rib.has('198.18.10.5/32'), 2000, 'announce after the retry');
  t.equal(s.rec.status()[0]?.error, undefined, 'error cleared once it worked');
});

t.test('level-triggered: a route lost in the speaker comes back at the next full pass; no UPDATE when nothing changed', async (t) => {
  const s = setup();
  t.teardown(s.close);
  s.runner.set('port:tcp:1006', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.10.6/32'], monitors: ['port:tcp:1006'] }));
  await waitFor(() => s.router.rib.has('198.18.10.6/32'), 2000, 'announce');
  s.journal.clear();
  await s.rec.trigger(true);
  await s.rec.trigger(false);
  t.same(s.journal.entries, [], 'nothing sent when nothing changed');
  s.router.rib.clear(); // gobgpd restarted
  s.host.vips.clear(); // and someone deleted the address
  await s.rec.trigger(true);
  t.same(s.journal.entries, ['add-vip 198.18.10.6/32', 'announce 198.18.10.6/32 65000:1'], 'healed in order');
});

t.test('stray and stale paths in the speaker are withdrawn at the first full pass', async (t) => {
  const s = setup();
  t.teardown(s.close);
  const stale = { prefix: parsePrefix('198.18.99.1/32', 'p'), app: '', origin: 'igp' as const, communities: [] };
  s.router.rib.set(stale.prefix.text, stale);
  await s.rec.trigger(true);
  t.same(s.journal.entries, ['withdraw 198.18.99.1/32']);
});

t.test('a community change re-announces the same prefix (implicit replace, no withdraw)', async (t) => {
  const s = setup();
  t.teardown(s.close);
  s.runner.set('port:tcp:1007', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.10.7/32'], monitors: ['port:tcp:1007'], communities: ['65000:7'] }));
  await waitFor(() => s.router.rib.has('198.18.10.7/32'), 2000, 'announce');
  s.journal.clear();
  s.registry.upsert(makeApp('web', { vips: ['198.18.10.7/32'], monitors: ['port:tcp:1007'], communities: ['65000:8'] }));
  await waitFor(() => s.journal.entries.length > 0, 2000, 're-announce');
  t.same(s.journal.entries, ['announce 198.18.10.7/32 65000:1,65000:8']);
  t.equal(s.health.get('web')?.state, 'up', 'health state kept across the change');
});

t.test('a VIP change announces the new VIP before the old one is withdrawn', async (t) => {
  const s = setup();
  t.teardown(s.close);
  s.runner.set('port:tcp:1008', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.10.8/32'], monitors: ['port:tcp:1008'] }));
  await waitFor(() => s.router.rib.has('198.18.10.8/32'), 2000, 'announce');
  s.journal.clear();
  s.registry.upsert(makeApp('web', { vips: ['198.18.10.9/32'], monitors: ['port:tcp:1008'] }));
  await waitFor(() => !s.host.vips.has('198.18.10.8/32'), 2000, 'old address gone');
  t.same(s.journal.entries, ['add-vip 198.18.10.9/32', 'announce 198.18.10.9/32 65000:1', 'withdraw 198.18.10.8/32', 'remove-vip 198.18.10.8/32']);
});

t.test('a failed announce is retried; a failing speaker does not stop other effects', async (t) => {
  const s = setup();
  t.teardown(s.close);
  s.router.failAnnounce.add('198.18.11.1/32');
  s.runner.set('port:tcp:1011', true);
  s.runner.set('port:tcp:1012', true);
  s.registry.upsert(makeApp('a', { vips: ['198.18.11.1/32'], monitors: ['port:tcp:1011'] }));
  s.registry.upsert(makeApp('b', { vips: ['198.18.11.2/32'], monitors: ['port:tcp:1012'] }));
  await waitFor(() => s.router.rib.has('198.18.11.2/32'), 2000, 'b announced');
  t.notOk(s.router.rib.has('198.18.11.1/32'));
  t.match(s.rec.status().find((x) => x.app === 'a')?.error, /announce 198\.18\.11\.1\/32: announce .* refused/);
  s.router.failAnnounce.clear();
  await waitFor(() => s.router.rib.has('198.18.11.1/32'), 2000, 'a announced after retry');
  t.ok(s.rec.stats.errors >= 1);
});

t.test('shutdown withdraws every route, then removes NAT rules, then addresses', async (t) => {
  const s = setup();
  t.teardown(s.close);
  s.runner.set('port:tcp:1013', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.12.1/32', '2001:db8:12::1/128'], monitors: ['port:tcp:1013'], nats: ['tcp:53'] }));
  await waitFor(() => s.router.rib.size === 2, 2000, 'announce');
  s.journal.clear();
  s.health.close();
  await s.rec.shutdown();
  t.same(s.journal.entries.slice(0, 2).sort(), ['withdraw 198.18.12.1/32', 'withdraw 2001:db8:12::1/128']);
  t.equal(s.journal.entries[2], 'nat');
  t.same(s.journal.entries.slice(3).sort(), ['remove-vip 198.18.12.1/32', 'remove-vip 2001:db8:12::1/128']);
  t.equal(s.router.rib.size, 0);
  t.equal(s.host.vips.size, 0);
  await s.rec.trigger(true);
  t.equal(s.journal.entries.length, 5, 'no pass runs after shutdown');
});

t.test('a health change in the same turn as shutdown: nothing is re-added after the cleanup', async (t) => {
  const s = setup();
  t.teardown(s.close);
  s.runner.set('port:tcp:1014', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.12.5/32'], monitors: ['port:tcp:1014'], nats: ['tcp:80:8080'] }));
  await waitFor(() => s.router.rib.size === 1, 2000, 'announce');
  s.runner.set('port:tcp:1015', true);
  s.registry.upsert(makeApp('other', { vips: ['198.18.12.6/32'], monitors: ['port:tcp:1015'], nats: ['tcp:81:8081'] }));
  // 'other' comes up (its pass is queued for the next macrotask) and shutdown starts in the same turn.
  s.health.close();
  s.rec.healthChanged('other', 'up');
  s.journal.clear();
  await s.rec.shutdown();
  await new Promise((r) => setTimeout(r, 100));
  t.same(s.journal.entries.filter((e) => e.startsWith('add-vip') || e.startsWith('announce')), [], 'no address added or route announced after shutdown began');
  t.equal(s.host.vips.size, 0, 'no address left');
  t.same(s.host.nat, [], 'no NAT rule left');
  t.equal(s.router.rib.size, 0, 'no route left');
});

t.test('shutdown does not wait for a hung effect: it withdraws after a bounded wait, and cleans up again once the effect ends', async (t) => {
  const s = setup();
  t.teardown(s.close);
  s.runner.set('port:tcp:1016', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.12.7/32'], monitors: ['port:tcp:1016'], nats: ['tcp:80:8080'] }));
  await waitFor(() => s.router.rib.size === 1, 2000, 'announce');
  // The next NAT change hangs for 1.5 s (an iptables call waiting on the xtables lock) and then lands.
  let release: () => void = () => {};
  const setNat = s.host.setNat.bind(s.host);
  s.host.setNat = async (rules) => {
    await new Promise<void>((r) => { release = r; setTimeout(r, 1500); });
    await setNat(rules);
  };
  s.runner.set('port:tcp:1017', true);
  s.registry.upsert(makeApp('other', { vips: ['198.18.12.8/32'], monitors: ['port:tcp:1017'], nats: ['tcp:81:8081'] }));
  await waitFor(() => s.host.vips.has('198.18.12.8/32'), 2000, 'address of other added; its NAT change now hangs');
  s.health.close();
  s.journal.clear();
  const t0 = performance.now();
  const done = s.rec.shutdown('shutdown', 0, 300);
  await waitFor(() => s.journal.entries.includes('withdraw 198.18.12.7/32'), 1000, 'withdraw while the NAT change hangs');
  const withdrawnAfter = performance.now() - t0;
  t.ok(withdrawnAfter < 1400, `withdrawn ${Math.round(withdrawnAfter)} ms after shutdown began, before the hung effect ended (1.5 s)`);
  await done;
  release();
  t.equal(s.router.rib.size, 0, 'no route left');
  t.equal(s.host.vips.size, 0, 'no address left');
  t.same(s.host.nat, [], 'the rule the late NAT change wrote is gone too');
});

t.test('while a discovery source has not delivered, paths, addresses and rules of unknown apps are held; then strays go and its apps are adopted', async (t) => {
  const s = setup();
  t.teardown(s.close);
  const path = (prefix: string) => ({ prefix: parsePrefix(prefix, 'p'), app: '', origin: 'igp' as const, communities: [parseCommunity('65000:1', 'c')] });
  const known = path('198.18.14.1/32');
  const stray = path('198.18.14.2/32');
  for (const p of [known, stray]) {
    s.router.rib.set(p.prefix.text, p);
    s.host.vips.set(p.prefix.text, { app: p === known ? 'svc' : 'gone', prefix: p.prefix });
  }
  s.rec.holdForSource('consul', 5000);
  await s.rec.trigger(true);
  t.same(s.journal.entries, [], 'nothing withdrawn or removed before the source delivered');
  s.runner.set('port:tcp:1401', true);
  s.registry.upsert(makeApp('svc', { source: 'consul', vips: ['198.18.14.1/32'], monitors: ['port:tcp:1401'] }));
  s.rec.sourceDelivered('consul');
  await waitFor(() => !s.router.rib.has('198.18.14.2/32') && !s.host.vips.has('198.18.14.2/32'), 2000, 'the stray goes once the source delivered');
  await waitFor(() => s.health.get('svc')?.state === 'up', 2000, 'svc up');
  await s.rec.trigger(true);
  t.same(s.journal.entries, ['withdraw 198.18.14.2/32', 'remove-vip 198.18.14.2/32'], 'only the stray changed: the delivered app\'s path was adopted with no UPDATE');
});

t.test('a source that never delivers holds unknown paths only for its bound', async (t) => {
  const s = setup();
  t.teardown(s.close);
  const left = { prefix: parsePrefix('198.18.14.3/32', 'p'), app: '', origin: 'igp' as const, communities: [] };
  s.router.rib.set(left.prefix.text, left);
  s.rec.holdForSource('consul', 300);
  await s.rec.trigger(true);
  t.ok(s.router.rib.has('198.18.14.3/32'), 'held at first');
  await waitFor(() => !s.router.rib.has('198.18.14.3/32'), 2000, 'withdrawn after the bound');
});

t.test('a failed pass is one logged error for every caller who asked for it, never a rejection', async (t) => {
  const s = setup({ retryMs: 60_000 });
  t.teardown(s.close);
  await s.rec.trigger(true);
  s.router.failAll = true; // listRoutes throws: the full pass fails
  const errors = s.rec.stats.errors;
  const first = s.rec.trigger(true);
  const second = s.rec.trigger(true); // joins the queued pass (a resync timer, a reconnect)
  await t.resolves(first);
  await t.resolves(second, 'the second caller does not get the raw rejection');
  t.equal(s.rec.stats.errors, errors + 1, 'one pass, one error');
});

t.test('shutdown with a drain: every route re-announced with 65535:0 (no withdraw), then withdrawn after the drain', async (t) => {
  const s = setup();
  t.teardown(s.close);
  s.runner.set('port:tcp:1014', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.12.2/32', '2001:db8:12::2/128'], monitors: ['port:tcp:1014'], communities: ['65000:7'] }));
  s.registry.upsert(makeApp('gshut', { vips: ['198.18.12.3/32'], monitors: ['port:tcp:1014'], communities: ['graceful-shutdown'] }));
  await waitFor(() => s.router.rib.size === 3, 2000, 'announce');
  s.journal.clear();
  s.health.close();
  const t0 = performance.now();
  const done = s.rec.shutdown('SIGTERM', 300);
  await waitFor(() => s.journal.entries.length === 2, 1000, 'drain announces');
  await new Promise((r) => setTimeout(r, 100));
  t.same(s.journal.entries.slice().sort(), [
    'announce 198.18.12.2/32 65000:1,65000:7,65535:0',
    'announce 2001:db8:12::2/128 65000:1,65000:7,65535:0',
  ], 'each route once more with graceful-shutdown added, before any withdraw; the one that had it already is not re-sent');
  t.equal(s.router.rib.size, 3, 'nothing withdrawn during the drain');
  await done;
  const elapsed = performance.now() - t0;
  t.ok(elapsed >= 290, `the withdraws waited for the drain (${Math.round(elapsed)} ms)`);
  t.same(s.journal.entries.slice(2, 5).sort(), ['withdraw 198.18.12.2/32', 'withdraw 198.18.12.3/32', 'withdraw 2001:db8:12::2/128']);
  t.equal(s.router.rib.size, 0);
});

t.test('shutdown with a drain and nothing announced: no wait', async (t) => {
  const s = setup();
  t.teardown(s.close);
  s.health.close();
  const t0 = performance.now();
  await s.rec.shutdown('SIGTERM', 5000);
  t.ok(performance.now() - t0 < 4000, 'returned without waiting out the drain');
  t.same(s.journal.entries, ['nat'], 'only the host cleanup');
});

t.test('after a restart, a path left by the earlier run is kept until the app is checked, then adopted without an UPDATE', async (t) => {
  const s = setup();
  t.teardown(s.close);
  const left = { prefix: parsePrefix('198.18.13.1/32', 'p'), app: '', origin: 'igp' as const, communities: [parseCommunity('65000:1', 'c')] };
  s.router.rib.set(left.prefix.text, left);
  s.host.vips.set('198.18.13.1/32', { app: 'web', prefix: left.prefix });
  s.runner.delayMs = 150;
  s.runner.set('port:tcp:1301', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.13.1/32'], monitors: ['port:tcp:1301'] }));
  await s.rec.trigger(true);
  t.same(s.journal.entries, [], 'nothing withdrawn or removed while the app is unchecked');
  await waitFor(() => s.health.get('web')?.state === 'up', 2000, 'up');
  await s.rec.trigger(true);
  t.same(s.journal.entries, [], 'adopted: no re-announce');
  t.same(s.rec.status()[0]?.announced, ['198.18.13.1/32']);
});

t.test('after a restart, a path left for an app that turns out DOWN is withdrawn, then its address removed', async (t) => {
  const s = setup();
  t.teardown(s.close);
  const left = { prefix: parsePrefix('198.18.13.2/32', 'p'), app: '', origin: 'igp' as const, communities: [parseCommunity('65000:1', 'c')] };
  s.router.rib.set(left.prefix.text, left);
  s.host.vips.set('198.18.13.2/32', { app: 'web', prefix: left.prefix });
  s.runner.set('port:tcp:1302', false);
  s.registry.upsert(makeApp('web', { vips: ['198.18.13.2/32'], monitors: ['port:tcp:1302'] }));
  await waitFor(() => !s.host.vips.has('198.18.13.2/32'), 2000, 'address removed');
  t.same(s.journal.entries, ['withdraw 198.18.13.2/32', 'remove-vip 198.18.13.2/32']);
});

t.test('many announces in one pass go in one bulk call when the router can; a failed bulk call falls back to one by one', async (t) => {
  const s = setup();
  t.teardown(s.close);
  s.router.bulk = true;
  const apps = Array.from({ length: 20 }, (_, i) => makeApp(`bulk${i}`, { vips: [`198.18.14.${i + 1}/32`], monitors: [] }));
  // Registered while a pass is held on the queue, so that all twenty are decided before the next pass runs.
  await s.rec.queue.run(async () => {
    for (const a of apps) s.registry.upsert(a);
    await waitFor(() => apps.every((a) => s.health.get(a.name)?.state === 'up'), 2000, 'all up');
  });
  await waitFor(() => s.router.rib.size === 20, 2000, 'all announced');
  t.equal(s.router.bulkCalls, 1);
  t.ok(s.journal.entries.includes('announce-many 20'));
  t.equal(s.rec.stats.announces, 20);

  s.router.rib.clear();
  s.router.failBulk = true;
  s.journal.clear();
  await s.rec.trigger(true);
  t.equal(s.router.rib.size, 20, 'every route announced one by one after the bulk call failed');
  t.equal(s.journal.entries.filter((e) => e.startsWith('announce 198.18.14.')).length, 20);
});

t.test('NAT per app: an app whose rules the host can\'t make fails alone (error in status, not announced, withdrawn if it was); the others are written and announced; the same failure is not rewritten every pass', async (t) => {
  const s = setup();
  t.teardown(s.close);
  s.host.failNat.set('six', 'NAT 2001:db8:5::1/128 tcp:53:8053 needs a local ipv6 address to DNAT to, and there is none');
  s.runner.set('port:tcp:1030', true);
  s.registry.upsert(makeApp('four', { vips: ['198.18.15.1/32'], monitors: ['port:tcp:1030'], nats: ['tcp:53:8053'] }));
  s.registry.upsert(makeApp('six', { vips: ['2001:db8:5::1/128'], monitors: ['port:tcp:1030'], nats: ['tcp:53:8053'] }));
  await waitFor(() => s.router.rib.has('198.18.15.1/32'), 2000, 'four announced');
  await waitFor(() => s.rec.status().find((a) => a.app === 'six')?.error, 2000, 'six failed');
  t.notOk(s.router.rib.has('2001:db8:5::1/128'), 'six is not announced');
  t.same(s.host.nat.map((n) => `${n.app} ${n.vip.text} ${n.rule.text}`), ['four 198.18.15.1/32 tcp:53:8053'], 'four\'s rule is written');
  t.match(s.rec.status().find((a) => a.app === 'six')?.error, /^NAT rules: NAT 2001:db8:5::1\/128 tcp:53:8053 needs a local ipv6 address/, 'six\'s error says why');
  t.notOk(s.rec.status().find((a) => a.app === 'four')?.error, 'four has no error');

  // Nothing changed: passes (full ones too) report six's failure again without writing the chain again.
  const calls = s.host.setNatCalls;
  for (let i = 0; i < 3; i++) await s.rec.trigger(true);
  await new Promise((r) => setTimeout(r, 150)); // retryMs is 50: a retry loop would show
  t.equal(s.host.setNatCalls, calls, 'no setNat while the request and the chain are unchanged');
  t.ok(s.rec.status().find((a) => a.app === 'six')?.error, 'six still reported failed');
  t.notOk(s.router.rib.has('2001:db8:5::1/128'), 'six still not announced');

  // four's NAT becomes impossible (a reload whose host has no target for it): withdrawn, its rule gone; six's fixed.
  s.host.failNat.set('four', 'NAT 198.18.15.1/32 tcp:53:8053 needs a local ipv4 address to DNAT to, and there is none');
  s.host.failNat.delete('six');
  s.rec.swap({ host: s.host });
  void s.rec.trigger(true);
  await waitFor(() => !s.router.rib.has('198.18.15.1/32') && s.router.rib.has('2001:db8:5::1/128'), 2000, 'four withdrawn, six announced');
  t.same(s.host.nat.map((n) => n.app), ['six'], 'only six\'s rule is in the chain');
  t.match(s.rec.status().find((a) => a.app === 'four')?.error, /^NAT rules: .*local ipv4 address/);
  t.notOk(s.rec.status().find((a) => a.app === 'six')?.error, 'six has no error any more');
});

t.test('a hold (maintenance, damping) withdraws a healthy app\'s routes, keeps its address and NAT, and says why; lifting it re-announces', async (t) => {
  const s = setup();
  t.teardown(s.close);
  let held: string | undefined;
  s.rec.addHoldSource((app) => (app.name === 'web' && held ? { reason: held } : undefined));
  s.runner.set('port:tcp:1101', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.11.1/32'], monitors: ['port:tcp:1101'], nats: ['tcp:80:8080'] }));
  s.registry.upsert(makeApp('other', { vips: ['198.18.11.2/32'], monitors: ['port:tcp:1101'] }));
  await waitFor(() => s.router.rib.has('198.18.11.1/32') && s.router.rib.has('198.18.11.2/32'), 2000, 'announce');
  s.journal.clear();
  held = 'maintenance (test)';
  await s.rec.trigger();
  t.same(s.journal.entries, ['withdraw 198.18.11.1/32'], 'only its route goes, nothing else');
  t.ok(s.host.vips.has('198.18.11.1/32'), 'address kept');
  t.ok(s.host.nat.some((n) => n.vip.text === '198.18.11.1/32'), 'NAT kept');
  t.ok(s.router.rib.has('198.18.11.2/32'), 'the other app stays announced');
  const st = s.rec.status().find((x) => x.app === 'web')!;
  t.same(st.held, { reason: 'maintenance (test)' });
  t.same(st.announced, []);
  await s.rec.trigger(true);
  t.same(s.journal.entries, ['withdraw 198.18.11.1/32'], 'a full pass changes nothing while held');
  s.journal.clear();
  held = undefined;
  await s.rec.trigger();
  t.same(s.journal.entries, ['announce 198.18.11.1/32 65000:1'], 're-announced, no address or NAT work');
  t.equal(s.rec.status().find((x) => x.app === 'web')!.held, undefined);
});

t.test('a hold with a drain: the route is re-announced with 65535:0 (no withdraw), withdrawn when the drain ends', async (t) => {
  const s = setup();
  t.teardown(s.close);
  let drainUntil: number | undefined;
  s.rec.addHoldSource(() => (drainUntil !== undefined ? { reason: 'maintenance', drainUntil } : undefined));
  s.runner.set('port:tcp:1102', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.11.3/32'], monitors: ['port:tcp:1102'] }));
  await waitFor(() => s.router.rib.has('198.18.11.3/32'), 2000, 'announce');
  s.journal.clear();
  drainUntil = Date.now() + 400;
  await s.rec.trigger();
  t.same(s.journal.entries, ['announce 198.18.11.3/32 65000:1,65535:0'], 'implicit replace with graceful-shutdown');
  t.ok(s.rec.status()[0]!.held!.drainingUntil, 'status says it is draining');
  await waitFor(() => !s.router.rib.has('198.18.11.3/32'), 3000, 'withdrawn after the drain without any other trigger');
  t.same(s.journal.entries, ['announce 198.18.11.3/32 65000:1,65535:0', 'withdraw 198.18.11.3/32']);
  t.equal(s.rec.status()[0]!.held!.drainingUntil, undefined);
});

t.test('a hold on an app that is down changes nothing; when it comes up held, it is not announced', async (t) => {
  const s = setup();
  t.teardown(s.close);
  s.rec.addHoldSource(() => ({ reason: 'flap damping' }));
  s.runner.set('port:tcp:1103', false);
  s.registry.upsert(makeApp('web', { vips: ['198.18.11.4/32'], monitors: ['port:tcp:1103'] }));
  await waitFor(() => s.health.get('web')?.state === 'down', 2000, 'down');
  s.runner.set('port:tcp:1103', true);
  await waitFor(() => s.health.get('web')?.state === 'up', 2000, 'up');
  await s.rec.trigger();
  t.notOk(s.router.rib.has('198.18.11.4/32'), 'not announced while held');
  t.ok(s.host.vips.has('198.18.11.4/32'), 'the address is there, ready');
});
