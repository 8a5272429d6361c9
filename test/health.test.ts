import t from 'tap';
import { HealthTracker, type CheckRunner, type HealthChange } from '../src/core/health.js';
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
  // How far past its slot (a multiple of the interval after tracking) each round started. Drifting by 25+ ms a round,
  // rounds 4 to 7 would start 100-199 ms past theirs.
  const late = starts.slice(0, 9).map((s) => (s - tracked) % INTERVAL_MS);
  t.ok(Math.max(...late) < INTERVAL_MS / 2, `rounds started ${late.map((l) => l.toFixed(0)).join(', ')} ms past their slots`);
});
