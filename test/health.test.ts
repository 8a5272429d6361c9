import t from 'tap';
import { HealthTracker, PHASE_SLOT_MS, phaseOf, type CheckRunner, type HealthChange } from '../src/core/health.js';
import { silentLogger } from '../src/core/logger.js';
import { makeApp, ScriptedRunner } from './helpers/apps.js';
import { waitFor } from './lab/netns.js';

function tracker() {
  const runner = new ScriptedRunner();
  const health = new HealthTracker(runner, silentLogger());
  const changes: HealthChange[] = [];
  const roundsAtChange: number[] = [];
  health.onChange((c) => {
    changes.push(c);
    const h = health.get(c.app)!;
    roundsAtChange.push(c.state === 'up' ? h.passes : h.failures);
  });
  return { runner, health, changes, roundsAtChange };
}

t.test('UP after rise consecutive passes, DOWN after fall consecutive failures', async (t) => {
  const { runner, health, changes, roundsAtChange } = tracker();
  t.teardown(() => health.close());
  runner.set('port:tcp:2001', true);
  health.track(makeApp('a', { monitors: ['port:tcp:2001'], rise: 3, fall: 2, intervalMs: 10 }));
  await waitFor(() => health.get('a')?.state === 'up', 2000, 'up');
  t.equal(roundsAtChange[0], 3, 'went up at exactly the third consecutive pass');
  t.equal(health.get('a')!.rounds >= 3, true);
  runner.set('port:tcp:2001', false);
  await waitFor(() => health.get('a')?.state === 'down', 2000, 'down');
  t.equal(roundsAtChange[1], 2, 'went down at exactly the second consecutive failure');
  t.same(changes.map((c) => c.state), ['up', 'down']);
  t.match(changes[1]!.reason, /port:tcp:2001: scripted failure/);
});

t.test('an app is DOWN when any one of its monitors fails; all run in the same round', async (t) => {
  const { runner, health } = tracker();
  t.teardown(() => health.close());
  runner.set('port:tcp:2002', true);
  runner.set('port:tcp:2003', false);
  health.track(makeApp('a', { monitors: ['port:tcp:2002', 'port:tcp:2003'], intervalMs: 10 }));
  await waitFor(() => health.get('a')?.state === 'down', 2000, 'down');
  t.same(health.get('a')!.monitors.map((m) => [m.monitor, m.ok]), [['port:tcp:2002', true], ['port:tcp:2003', false]]);
});

t.test('a round never overlaps the previous round of the same app', async (t) => {
  const { runner, health } = tracker();
  t.teardown(() => health.close());
  runner.delayMs = 50; // slower than the interval
  runner.set('port:tcp:2004', true);
  health.track(makeApp('a', { monitors: ['port:tcp:2004'], intervalMs: 5 }));
  await waitFor(() => (health.get('a')?.rounds ?? 0) >= 5, 3000, 'five rounds');
  t.equal(runner.maxOverlap, 1);
});

t.test('each app keeps its own interval', async (t) => {
  const { runner, health } = tracker();
  t.teardown(() => health.close());
  runner.set('port:tcp:2005', true);
  runner.set('port:tcp:2006', true);
  health.track(makeApp('fast', { monitors: ['port:tcp:2005'], intervalMs: 10 }));
  health.track(makeApp('slow', { monitors: ['port:tcp:2006'], intervalMs: 200 }));
  await new Promise((r) => setTimeout(r, 450));
  const fast = health.get('fast')!.rounds;
  const slow = health.get('slow')!.rounds;
  t.ok(slow >= 2 && slow <= 4, `slow app ran ${slow} rounds in 450 ms at 200 ms`);
  t.ok(fast > slow * 4, `fast app ran ${fast} rounds`);
});

t.test('an app with no monitors is UP at once', async (t) => {
  const { health } = tracker();
  t.teardown(() => health.close());
  health.track(makeApp('bare', { monitors: [] }));
  await waitFor(() => health.get('bare')?.state === 'up', 1000, 'up');
  t.equal(health.get('bare')!.reason, 'no monitors');
});

t.test('untrack stops the checks', async (t) => {
  const { runner, health } = tracker();
  t.teardown(() => health.close());
  runner.set('port:tcp:2007', true);
  health.track(makeApp('a', { monitors: ['port:tcp:2007'], intervalMs: 5 }));
  await waitFor(() => (health.get('a')?.rounds ?? 0) >= 2, 1000, 'rounds');
  health.untrack('a');
  const calls = runner.calls;
  await new Promise((r) => setTimeout(r, 60));
  t.ok(runner.calls <= calls + 1, 'at most the round in flight finished');
  t.equal(health.get('a'), undefined);
});

t.test('rounds keep a fixed schedule: late timers do not push every later round back (phase drift made aged daemons slow)', async (t) => {
  // Every timer fires 25 ms late, as on a busy event loop. Scheduled from each round's actual start, round n would
  // start n * 25 ms (and more) behind its slot; on a fixed schedule every round is late by its own timer's lateness only.
  const realSetTimeout = globalThis.setTimeout;
  const LATE_MS = 25;
  const INTERVAL_MS = 200;
  globalThis.setTimeout = ((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => realSetTimeout(fn, (ms ?? 0) + LATE_MS, ...args)) as typeof setTimeout;
  t.teardown(() => { globalThis.setTimeout = realSetTimeout; });
  const starts: number[] = [];
  const runner: CheckRunner = {
    run: async () => {
      starts.push(performance.now());
      return { ok: true, reason: 'pass', durationMs: 0 };
    },
  };
  const health = new HealthTracker(runner, silentLogger());
  t.teardown(() => health.close());
  const tracked = performance.now();
  health.track(makeApp('a', { monitors: ['port:tcp:2008'], intervalMs: INTERVAL_MS }));
  await waitFor(() => starts.length >= 9, 10_000, 'nine rounds');
  globalThis.setTimeout = realSetTimeout;
  // How far past its slot each round started: the first at tracking, the later ones in the app's phase slots (its phase
  // plus a multiple of the interval). Drifting by 25+ ms a round, rounds 4 to 7 would start 100-199 ms past theirs.
  const phase = phaseOf('a', INTERVAL_MS);
  const late = [starts[0]! - tracked, ...starts.slice(1, 9).map((s) => (((s - phase) % INTERVAL_MS) + INTERVAL_MS) % INTERVAL_MS)];
  t.ok(Math.max(...late) < INTERVAL_MS / 2, `rounds started ${late.map((l) => l.toFixed(0)).join(', ')} ms past their slots`);
});

t.test('check phases are spread over the interval: a thousand apps do not check in the same tick (decision latency outliers, issue 14)', async (t) => {
  const names = Array.from({ length: 1000 }, (_, i) => `app${i}`);
  const perSlot = new Map<number, number>();
  for (const n of names) perSlot.set(phaseOf(n, 1000), (perSlot.get(phaseOf(n, 1000)) ?? 0) + 1);
  t.same([...perSlot.keys()].filter((p) => !(p >= 0 && p < 1000 && p % PHASE_SLOT_MS === 0)), [], 'every phase is the start of a slot');
  t.equal(perSlot.size, 1000 / PHASE_SLOT_MS, 'every slot of a 1 s interval is used');
  t.ok(Math.max(...perSlot.values()) <= 150, `at most 150 apps in one slot (${Math.max(...perSlot.values())})`);
  t.same(names.map((n) => phaseOf(n, 1000)), names.map((n) => phaseOf(n, 1000)), 'the phase of a name is stable');
  t.equal(phaseOf('x', 30), 0, 'an interval shorter than a slot has one phase');

  // Tracked at once, the apps' first rounds run together; their later rounds start in their own slots.
  const INTERVAL_MS = 400;
  const starts = new Map<string, number[]>();
  const runner: CheckRunner = {
    run: async (spec) => {
      const list = starts.get(spec.text) ?? [];
      list.push(performance.now());
      starts.set(spec.text, list);
      return { ok: true, reason: 'pass', durationMs: 0 };
    },
  };
  const health = new HealthTracker(runner, silentLogger());
  t.teardown(() => health.close());
  const apps = Array.from({ length: 40 }, (_, i) => makeApp(`spread${i}`, { monitors: [`port:tcp:${3000 + i}`], intervalMs: INTERVAL_MS }));
  for (const a of apps) health.track(a);
  await waitFor(() => apps.every((a) => (health.get(a.name)?.rounds ?? 0) >= 3), 10_000, 'three rounds of every app');
  const firsts = [...starts.values()].map((s) => s[0]!);
  t.ok(Math.max(...firsts) - Math.min(...firsts) < 200, 'every first round ran at once');
  const slotsUsed = new Set(apps.map((a) => phaseOf(a.name, INTERVAL_MS)));
  t.ok(slotsUsed.size >= 3, `40 apps use ${slotsUsed.size} of 4 slots`);
  const off: string[] = [];
  for (const [i, a] of apps.entries()) {
    const s = starts.get(`port:tcp:${3000 + i}`)!;
    const gap = s[1]! - s[0]!;
    const third = s[2]! - s[1]!;
    // Generous bounds (a loaded machine fires timers late); the point is the slot, not the precision.
    if (!(gap >= INTERVAL_MS / 2 - 5 && gap <= INTERVAL_MS * 1.5 + 150)) off.push(`${a.name}: second round ${gap.toFixed(0)} ms after the first`);
    if (!(third >= INTERVAL_MS - 100 && third <= INTERVAL_MS + 150)) off.push(`${a.name}: third round ${third.toFixed(0)} ms after the second`);
    // Offset from the slot's start, in (-20, INTERVAL_MS - 20]: a timer may fire a fraction of a ms before the
    // performance.now() it was set for (seen in CI: 399.6 ms "late" was 0.4 ms early).
    const mod = (((s[1]! - phaseOf(a.name, INTERVAL_MS)) % INTERVAL_MS) + INTERVAL_MS) % INTERVAL_MS;
    const late = mod > INTERVAL_MS - 20 ? mod - INTERVAL_MS : mod;
    if (late > 150) off.push(`${a.name}: second round ${late.toFixed(0)} ms past its phase slot`);
  }
  t.same(off, [], 'the second round 0.5-1.5 intervals after the first, in the app\'s phase slot, the third one interval later');
});
