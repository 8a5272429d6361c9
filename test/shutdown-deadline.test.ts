/**
 * One deadline for a stop (issue 10, item 2): each wait of a shutdown has its own bound (the effect in flight 2 s, the
 * list 1.5 s, the drain up to 5 s, the withdraw 2 s), and these used to add up past the CLI's forced exit (10 s) before
 * the host was cleaned. Every wait is now cut to what is left of SHUTDOWN_DEADLINE_MS (8 s) after the signal, less a
 * reserve for the host cleanup and the speaker stop.
 *
 * In the lab: the real CLI inside a namespace of its own, with the real host network (addresses on lo, the nat table)
 * and a router plugin written here whose listRoutes answers and whose announce and withdraw hang once told to. An
 * announce hangs in flight when SIGTERM comes, and agent.shutdown_drain is 5 s: the drain's re-announce hangs too.
 * The old code waited 2 s + 7 s, cleaned the host at 9 s, then waited 1.5 s more for the late action and was ended by
 * the forced exit (exit 1). Outside the lab: the reconciler's shutdown with a deadline already partly spent.
 */
import t, { type Test } from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLab, labSkip, waitFor } from './lab/netns.js';
import { hasVip, vipRules } from './lab/traffic.js';
import { DaemonProcess } from './helpers/daemon.js';
import { AppRegistry } from '../src/core/registry.js';
import { HealthTracker } from '../src/core/health.js';
import { Reconciler } from '../src/core/reconciler.js';
import { parseCommunity } from '../src/core/values.js';
import { SHUTDOWN_DEADLINE_MS, SHUTDOWN_HOST_RESERVE_MS, SHUTDOWN_SPEAKER_RESERVE_MS, ShutdownDeadline } from '../src/core/shutdown-steps.js';
import { Journal, JournalHost, JournalRouter } from './helpers/journal.js';
import { makeApp, ScriptedRunner } from './helpers/apps.js';
import { captureLog } from './helpers/log.js';

const skip = labSkip(['iptables']);

/** A router plugin (CommonJS, no dependencies) whose announce and withdraw never return once `settings.flag` exists. */
const HANG_ROUTER = `'use strict';
const fs = require('node:fs');
module.exports = {
  kind: 'router', name: 'hang', version: '1.0.0', apiVersion: '^1.0.0',
  parseSettings(raw, ctx) {
    if (!raw || typeof raw.flag !== 'string') throw new Error(ctx.path + '.flag: missing');
    return Object.freeze({ flag: raw.flag });
  },
  sameSettings: (a, b) => a.flag === b.flag,
  create(ctx) {
    const rib = new Map();
    const hang = (what, route) => {
      if (!fs.existsSync(ctx.settings.flag)) return Promise.resolve();
      ctx.log.warn({ prefix: route.prefix.text }, 'hang router: ' + what + ' hangs');
      return new Promise(() => {});
    };
    return {
      name: 'hang',
      async start() {},
      async announce(route) { ctx.log.info({ prefix: route.prefix.text }, 'hang router: announce'); rib.set(route.prefix.text, route); await hang('announce', route); },
      async withdraw(route) { await hang('withdraw', route); rib.delete(route.prefix.text); },
      async listRoutes() { return [...rib.values()]; },
      async applyPeers() {},
      async peerStates() { return []; },
      async close() {},
    };
  },
};
`;

t.test('SIGTERM with an announce hung in flight, a speaker that lists but hangs on the drain, shutdown_drain 5s: the host is cleaned and vipcast exits 0 well before the forced exit', { skip, timeout: 60_000 }, async (t) => {
  const lab = await createLab({ prefix: 'sdl' });
  t.teardown(() => lab.destroy());
  const dir = t.testdir();
  const pkg = join(dir, 'node_modules', 'vipcast-router-hang');
  mkdirSync(pkg, { recursive: true });
  writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: 'vipcast-router-hang', version: '1.0.0', main: 'index.js' }));
  writeFileSync(join(pkg, 'index.js'), HANG_ROUTER);
  const flag = join(dir, 'hang');
  const file = join(dir, 'vipcast.yaml');
  const config = (apps: string) => writeFileSync(file, `plugins: [vipcast-router-hang]
agent:
  listen_addr: ""
  monitor_interval: 200ms
  shutdown_drain: 5s
  state_file: ${join(dir, 'host-state.json')}
  registrations_file: ${join(dir, 'registrations.json')}
  maintenance_state_file: ${join(dir, 'maintenance.json')}
  pid_file: ${join(dir, 'vipcast.pid')}
routing: { plugin: hang, settings: { flag: ${flag} } }
bgp:
  local_as: 65001
  local_ip: ${lab.ipA}
  peers: [{ peer_ip: ${lab.ipB}, peer_as: 65000 }]
apps:
${apps}`);
  const appA = '  - { name: a, vip: 198.18.229.1/32, nats: ["tcp:80:8080"] }\n';
  config(appA);
  const d = new DaemonProcess(['run', '-c', file], { netns: lab.a });
  t.teardown(() => d.stop());
  await d.waitLine((l) => l.msg === 'hang router: announce' && l.prefix === '198.18.229.1/32', 20_000, 'a announced');

  // From now on the speaker takes announces and withdraws and never answers them; b's announce is the action in
  // flight at SIGTERM (its address and NAT rule are in place by then: they come before the announce).
  writeFileSync(flag, '');
  config(`${appA}  - { name: b, vip: 198.18.229.2/32, nats: ["udp:53:8053"] }\n`);
  d.kill('SIGHUP');
  await d.waitLine((l) => l.msg === 'hang router: announce hangs' && l.prefix === '198.18.229.2/32', 20_000, 'b\'s announce hanging');
  t.ok(await hasVip(lab.a, '198.18.229.1'), 'a VIP on lo');
  t.ok(await hasVip(lab.a, '198.18.229.2'), 'b VIP on lo');
  t.ok((await vipRules(lab.a)).length > 0, 'NAT rules in place');

  const from = d.lines.length;
  const term = performance.now();
  d.kill('SIGTERM');
  const { code } = await d.exited;
  const exitMs = performance.now() - term;
  const after = d.lines.slice(from);
  t.comment(`SIGTERM -> exit after ${Math.round(exitMs)} ms; ${after.filter((l) => l.level >= 40).map((l) => `${Math.round(l.at - term)} ms: ${l.msg}`).join('; ')}`);
  t.equal(code, 0, 'exit 0');
  t.notOk(after.some((l) => /took over 10 s/.test(l.msg)), 'no forced exit');
  // The deadline is 8 s; the forced exit 10 s. Measured about 6.1 s (in-flight wait 2 s, the drain cut at 6 s).
  t.ok(exitMs < 9000, `exited ${Math.round(exitMs)} ms after SIGTERM (deadline ${SHUTDOWN_DEADLINE_MS} ms, forced exit 10 s)`);
  t.ok(after.some((l) => l.msg === 'hang router: announce hangs' && l.prefix === '198.18.229.1/32'), 'the speaker listed its routes and then hung on the drain\'s re-announce');
  const said = after.find((l) => /^could not withdraw \d+ route\(s\) at shutdown/.test(l.msg));
  t.ok(said, 'the log says what could not be withdrawn');
  t.same([...((said?.routes as string[] | undefined) ?? [])].sort(), ['198.18.229.1/32', '198.18.229.2/32'], 'naming both routes');
  t.notOk(await hasVip(lab.a, '198.18.229.1'), 'a VIP gone from lo');
  t.notOk(await hasVip(lab.a, '198.18.229.2'), 'b VIP gone from lo');
  t.same(await vipRules(lab.a), [], 'no VIPCAST rule or jump left in the nat table');
});

function reconcilerSetup(t: Test) {
  const journal = new Journal();
  const router = new JournalRouter(journal);
  const host = new JournalHost(journal);
  const registry = new AppRegistry();
  const runner = new ScriptedRunner();
  const { log, lines } = captureLog();
  const health = new HealthTracker(runner, log);
  const rec = new Reconciler(registry, health, router, host, {
    bgp: { communities: [parseCommunity('65000:1', 'c')], origin: 'igp' },
    cleanupTimerMs: 60_000, removeVipOnWithdraw: false, resyncMs: 60_000, retryMs: 50,
  }, log);
  health.onChange((c) => rec.healthChanged(c.app, c.state));
  registry.onChange((ev) => { if (ev.type !== 'removed') health.track(ev.app); });
  rec.start();
  t.teardown(() => { health.close(); rec.close(); });
  let cleaned = -1;
  host.cleanup = async () => {
    // Not through setNat, which a test makes hang.
    host.nat = [];
    for (const v of [...host.vips.values()]) await host.removeVip(v);
    cleaned = performance.now();
  };
  return { journal, router, host, registry, runner, health, rec, lines, cleanedAt: () => cleaned };
}

t.test('reconciler shutdown with 2 s of its deadline left for the routes: the in-flight wait, the list, the drain (5 s asked) and the hung re-announce fit in them, then the host is cleaned', async (t) => {
  const s = reconcilerSetup(t);
  s.runner.set('port:tcp:1901', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.229.5/32'], monitors: ['port:tcp:1901'], nats: ['tcp:80:8080'] }));
  await waitFor(() => s.router.rib.size === 1, 2000, 'announce');
  // From now on announces and withdraws hang (the list still answers); the next NAT change hangs too: in flight.
  const hang = () => new Promise<void>(() => {});
  s.router.announce = hang;
  s.router.withdraw = hang;
  s.host.setNat = hang;
  s.runner.set('port:tcp:1902', true);
  s.registry.upsert(makeApp('other', { vips: ['198.18.229.6/32'], monitors: ['port:tcp:1902'], nats: ['tcp:81:8081'] }));
  await waitFor(() => s.host.vips.has('198.18.229.6/32'), 2000, 'other\'s address added; its NAT change now hangs');
  s.health.close();

  // The signal came 4 s ago: the route steps have 8 - 2 - 4 = 2 s left.
  const start = performance.now();
  await s.rec.shutdown('SIGTERM', 5000, 2000, ShutdownDeadline.after(start - 4000));
  const took = performance.now() - start;
  const cleaned = s.cleanedAt() - start;
  t.ok(took < 3000, `shutdown returned after ${Math.round(took)} ms (2 s left for the routes; asked: in flight 2 s, list 1.5 s, drain 5 s, withdraw 2 s, late action 1.5 s)`);
  t.ok(cleaned > 0 && cleaned < 2600, `the host was cleaned ${Math.round(cleaned)} ms in`);
  t.equal(s.host.vips.size, 0, 'no address left');
  const inFlight = s.lines.find((l) => /still in flight at shutdown/.test(String(l.msg)));
  t.equal(inFlight?.waited_ms, 0, 'the in-flight wait was cut to nothing: the list and a withdraw need the 2 s');
  const notWithdrawn = s.lines.find((l) => /^could not withdraw \d+ route\(s\) at shutdown/.test(String(l.msg)));
  t.same(notWithdrawn?.routes, ['198.18.229.5/32'], 'the route not withdrawn is named');
  t.ok((notWithdrawn?.waited_ms as number) <= 2000, `after ${String(notWithdrawn?.waited_ms)} ms, not 5 s + 2 s`);
  t.ok(s.lines.some((l) => /still in flight after the shutdown cleanup/.test(String(l.msg))), 'the late action is given up on, not waited for past the deadline');
});

t.test('reconciler shutdown with a working speaker and 2 s left: the 5 s drain is cut so that the withdraw still fits, and said so', async (t) => {
  const s = reconcilerSetup(t);
  s.runner.set('port:tcp:1903', true);
  s.registry.upsert(makeApp('web', { vips: ['198.18.229.7/32'], monitors: ['port:tcp:1903'] }));
  await waitFor(() => s.router.rib.size === 1, 2000, 'announce');
  s.health.close();
  const start = performance.now();
  await s.rec.shutdown('SIGTERM', 5000, 2000, ShutdownDeadline.after(start - 4000));
  const took = performance.now() - start;
  t.ok(took < 2600, `shutdown returned after ${Math.round(took)} ms`);
  const drain = s.lines.find((l) => l.event === 'drain');
  t.ok(drain && (drain.drain_ms as number) <= 1500 && (drain.drain_ms as number) > 1000, `drained ${String(drain?.drain_ms)} ms: 2 s less the withdraw's 500 ms`);
  t.equal(drain?.shutdown_drain_ms, 5000, 'the log gives the configured drain too');
  t.match(String(drain?.msg), /cut to what the shutdown deadline leaves/);
  t.equal(s.router.rib.size, 0, 'withdrawn after the drain');
  t.ok(s.journal.indexOf('withdraw 198.18.229.7/32') > s.journal.indexOf('announce 198.18.229.7/32 65000:1,65535:0'), 'withdrawn after the drain\'s re-announce');
  t.ok(s.cleanedAt() > 0, 'the host was cleaned');
});

t.test('the deadline is SHUTDOWN_DEADLINE_MS after the signal; the route steps keep the host and speaker reserves', async (t) => {
  const now = performance.now();
  const d = ShutdownDeadline.after(now);
  t.equal(d.at, now + SHUTDOWN_DEADLINE_MS);
  t.ok(d.forRoutes() <= SHUTDOWN_DEADLINE_MS - SHUTDOWN_HOST_RESERVE_MS - SHUTDOWN_SPEAKER_RESERVE_MS && d.forRoutes() > 5000, `${d.forRoutes()} ms for the route steps`);
  t.equal(d.forRoutes(1500), 1500, 'a step\'s own bound when it is less');
  t.equal(ShutdownDeadline.after(now - 60_000).left(), 0, 'never negative');
});
