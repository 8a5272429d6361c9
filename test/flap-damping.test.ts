/**
 * Flap damping (issue 10, item 5) on a fake clock: the RFC 2439 decay, the suppress and reuse thresholds, the
 * max_suppress ceiling, what counts as a flap, one timer for the earliest release, reconfiguration, and the config keys
 * (defaults off, every error naming its key path).
 */
import t from 'tap';
import { FLAP_DAMPING_DEFAULTS, FlapDamping, formatSpan, type DampingClock } from '../src/core/flap-damping.js';
import type { FlapDampingConfig } from '../src/core/config-types.js';
import { parseConfigText } from '../src/core/config.js';
import { VipcastError } from '../src/core/errors.js';

const MIN = 60_000;

/** A clock that moves only when told; timers fire in order as it passes them. */
class FakeClock implements DampingClock {
  t = 1_700_000_000_000;
  timers: Array<{ at: number; fn: () => void; cancelled: boolean }> = [];
  now = (): number => this.t;
  setTimer(fn: () => void, ms: number): { cancel(): void } {
    const timer = { at: this.t + ms, fn, cancelled: false };
    this.timers.push(timer);
    return { cancel: () => { timer.cancelled = true; } };
  }
  get pending(): number[] {
    return this.timers.filter((x) => !x.cancelled).map((x) => x.at);
  }
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const next = this.timers.filter((x) => !x.cancelled && x.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!next) break;
      this.t = next.at;
      next.cancelled = true;
      next.fn();
    }
    this.t = end;
  }
}

const ON: FlapDampingConfig = { ...FLAP_DAMPING_DEFAULTS, enabled: true };

function setup(settings: Partial<FlapDampingConfig> = {}) {
  const clock = new FakeClock();
  const released: string[][] = [];
  const suppressed: string[] = [];
  const d = new FlapDamping({ ...ON, ...settings }, { clock, onRelease: (apps) => released.push([...apps]), onSuppress: (app) => suppressed.push(app) });
  const flap = (app = 'web') => {
    d.transition(app, 'up', 'down');
    d.transition(app, 'down', 'up');
  };
  return { clock, d, released, suppressed, flap };
}

t.test('the penalty decays as RFC 2439: p(t) = p(t0) * 2^(-(t - t0)/half_life)', async (t) => {
  const { clock, d, flap } = setup({ halfLifeMs: 2 * MIN });
  flap();
  t.equal(d.info('web')?.penalty, 1000, 'one flap adds penalty');
  clock.advance(MIN);
  t.equal(d.info('web')?.penalty, Math.round(1000 * 2 ** -0.5), 'half a half-life: 1000 / sqrt(2)');
  clock.advance(MIN);
  t.equal(d.info('web')?.penalty, 500, 'one half-life: half');
  flap();
  t.equal(d.info('web')?.penalty, 1500, 'a flap adds to what is left');
  clock.advance(4 * MIN);
  t.equal(d.info('web')?.penalty, 375, 'two more half-lives: a quarter');
  clock.advance(1000);
  t.equal(d.info('web'), undefined, 'below half the reuse threshold the history is forgotten');
  flap();
  t.same(d.info('web'), { penalty: 1000, suppressed: false, flaps: 1 }, 'and the next flap starts afresh');
});

t.test('suppressed only above suppress_threshold, held until the penalty is below reuse_threshold, released by one timer', async (t) => {
  const { clock, d, released, suppressed, flap } = setup({ halfLifeMs: 2 * MIN });
  flap();
  flap();
  t.equal(d.info('web')?.penalty, 2000);
  t.equal(d.hold('web'), undefined, 'exactly suppress_threshold does not suppress (it must exceed it)');
  t.same(clock.pending, [], 'no timer while nothing is suppressed');
  clock.advance(10_000);
  flap();
  const p = 1000 + 2000 * 2 ** (-10_000 / (2 * MIN));
  t.equal(d.info('web')?.penalty, Math.round(p));
  t.same(suppressed, ['web'], 'the third flap suppresses');
  const reuseAt = clock.t + 2 * MIN * Math.log2(p / 750);
  const hold = d.hold('web');
  t.match(hold?.reason, /^flap damping: penalty 2\d{3} \(suppress above 2000\) after 3 flaps in 10s; announced again once below 750, in ~3m5\ds$/);
  t.same(d.info('web'), { penalty: Math.round(p), suppressed: true, reuseAt: Math.ceil(reuseAt), flaps: 3 });
  t.same(clock.pending.length, 1, 'one timer');
  t.ok(Math.abs(clock.pending[0]! - reuseAt) <= 10, 'at the end of the suppression');

  d.transition('web', 'down', 'up');
  t.ok(d.hold('web'), 'coming back up while suppressed does not lift it');
  clock.advance(reuseAt - clock.t - 1000);
  t.ok(d.hold('web'), 'still held a second before the penalty reaches reuse_threshold');
  t.same(released, []);
  clock.advance(2000);
  t.equal(d.hold('web'), undefined, 'released once below reuse_threshold');
  t.same(released, [['web']], 'the timer told the owner, with no other event');
  t.equal(d.info('web')?.suppressed, false);
  t.ok(d.info('web')!.penalty < 750 && d.info('web')!.penalty > 740);
  t.same(clock.pending, [], 'no timer left');
});

t.test('max_suppress: the penalty is capped at reuse * 2^(max_suppress/half_life), so a hold ends max_suppress after the last flap', async (t) => {
  const { clock, d, released, flap } = setup({ halfLifeMs: MIN, maxSuppressMs: 5 * MIN });
  const ceiling = 750 * 2 ** 5;
  t.equal(FlapDamping.ceiling(d['settings']), ceiling);
  for (let i = 0; i < 100; i++) {
    flap();
    clock.advance(1000);
  }
  t.ok(d.info('web')!.penalty <= ceiling, 'never above the ceiling');
  flap();
  const last = clock.t;
  t.equal(d.info('web')?.penalty, ceiling, 'a flap at the ceiling stays at the ceiling');
  t.equal(d.info('web')?.reuseAt, last + 5 * MIN);
  clock.advance(5 * MIN - 100);
  t.ok(d.hold('web'), 'held until max_suppress after the last flap');
  clock.advance(200);
  t.equal(d.hold('web'), undefined, 'and not a moment longer, after 100 flaps');
  t.same(released, [['web']]);
});

t.test('only up -> down is a flap: a first verdict, down -> up and unknown do not count', async (t) => {
  const { d } = setup();
  d.transition('web', 'unknown', 'down');
  d.transition('web', 'down', 'up');
  d.transition('web', 'unknown', 'up');
  t.equal(d.info('web'), undefined, 'no penalty');
  d.transition('web', 'up', 'down');
  t.equal(d.info('web')?.penalty, 1000);
  t.equal(d.info('other'), undefined, 'per app');
});

t.test('one timer for the earliest release, whatever the number of suppressed apps', async (t) => {
  const { clock, d, released, flap } = setup({ halfLifeMs: MIN });
  for (let i = 0; i < 3; i++) flap('a');
  clock.advance(5000);
  for (let i = 0; i < 4; i++) flap('b');
  t.same(d.suppressedApps().sort(), ['a', 'b']);
  t.equal(clock.pending.length, 1, 'one timer');
  const reuseA = d.info('a')!.reuseAt!;
  t.ok(reuseA < d.info('b')!.reuseAt!);
  t.ok(Math.abs(clock.pending[0]! - reuseA) <= 10, 'for the app released first');
  clock.advance(reuseA - clock.t + 50);
  t.same(released, [['a']]);
  t.same(d.suppressedApps(), ['b']);
  t.equal(clock.pending.length, 1, 'then one for the next');
  clock.advance(10 * MIN);
  t.same(released, [['a'], ['b']]);
  t.same(clock.pending, []);
});

t.test('an app that leaves forgets its penalty; close() stops the timer', async (t) => {
  const { clock, d, flap } = setup();
  for (let i = 0; i < 3; i++) flap();
  t.ok(d.hold('web'));
  d.forget('web');
  t.equal(d.hold('web'), undefined);
  t.equal(d.info('web'), undefined);
  t.same(clock.pending, []);
  for (let i = 0; i < 3; i++) flap('x');
  t.equal(clock.pending.length, 1);
  d.close();
  t.same(clock.pending, []);
});

t.test('reconfigure: penalties are kept; a shorter max_suppress applies at once; turning it off releases every held app', async (t) => {
  const { clock, d, released, flap } = setup({ halfLifeMs: MIN, maxSuppressMs: 60 * MIN });
  for (let i = 0; i < 5; i++) flap();
  t.equal(d.info('web')?.penalty, 5000);
  clock.advance(MIN);
  d.configure({ ...ON, halfLifeMs: 2 * MIN, maxSuppressMs: 60 * MIN });
  t.equal(d.info('web')?.penalty, 2500, 'decayed under the old half-life up to the reload, kept');
  clock.advance(2 * MIN);
  t.equal(d.info('web')?.penalty, 1250, 'then decays under the new one');
  t.ok(d.hold('web'), 'still held');
  t.same(released, []);

  d.configure({ ...ON, halfLifeMs: 2 * MIN, maxSuppressMs: 2 * MIN });
  t.equal(d.info('web')?.penalty, 1250, 'the new ceiling (1500) is above the penalty');
  d.configure({ ...ON, reuseThreshold: 1300, suppressThreshold: 2000, halfLifeMs: 2 * MIN, maxSuppressMs: 2 * MIN });
  t.equal(d.hold('web'), undefined, 'a reuse threshold raised above the penalty releases at once');
  t.same(released, [['web']]);

  for (let i = 0; i < 3; i++) flap('other');
  t.ok(d.hold('other'));
  d.configure({ ...ON, enabled: false });
  t.equal(d.hold('other'), undefined, 'off: nothing is held');
  t.same(released, [['web'], ['other']], 'and the owner is told');
  t.same(clock.pending, [], 'no timer');
  flap('other');
  t.equal(d.info('other'), undefined, 'off: flaps are not counted');
  d.configure({ ...ON });
  t.equal(d.info('other'), undefined, 'turned on again: from zero');
});

t.test('off: nothing is recorded or held', async (t) => {
  const clock = new FakeClock();
  const d = new FlapDamping(FLAP_DAMPING_DEFAULTS, { clock });
  t.equal(d.enabled, false);
  for (let i = 0; i < 10; i++) d.transition('web', 'up', 'down');
  t.equal(d.hold('web'), undefined);
  t.equal(d.info('web'), undefined);
  t.same(clock.pending, []);
});

t.test('spans in reasons', async (t) => {
  t.equal(formatSpan(0), '0s');
  t.equal(formatSpan(400), '<1s');
  t.equal(formatSpan(45_000), '45s');
  t.equal(formatSpan(130_000), '2m10s');
  t.equal(formatSpan(120_000), '2m');
  t.equal(formatSpan(3_900_000), '1h5m');
});

// ---------------------------------------------------------------------------------------------------------------------
// Config

const parse = (agent: string) => parseConfigText(`agent:\n${agent}\n`, 'x.yaml', { env: {}, routingPlugin: 'dry-run' });

function problems(agent: string): string[] {
  try {
    parse(agent);
  } catch (err) {
    if (err instanceof VipcastError) return [...err.details];
    throw err;
  }
  return [];
}

t.test('config: off by default, with the documented defaults', async (t) => {
  const config = parseConfigText('', '', { env: {}, routingPlugin: 'dry-run' });
  t.same(config.agent.flapDamping, { enabled: false, penalty: 1000, suppressThreshold: 2000, reuseThreshold: 750, halfLifeMs: 120_000, maxSuppressMs: 600_000 });
  t.same(parse('  flap_damping: { enabled: true }').agent.flapDamping, { ...FLAP_DAMPING_DEFAULTS, enabled: true }, 'enabled alone takes the defaults');
  t.same(parse('  flap_damping:').agent.flapDamping, FLAP_DAMPING_DEFAULTS, 'an empty block is the defaults');
});

t.test('config: every key parsed (durations as the other duration keys)', async (t) => {
  const fd = parse('  flap_damping: { enabled: true, penalty: 500, suppress_threshold: 3000, reuse_threshold: 1000, half_life: 1m30s, max_suppress: 20m }').agent.flapDamping;
  t.same(fd, { enabled: true, penalty: 500, suppressThreshold: 3000, reuseThreshold: 1000, halfLifeMs: 90_000, maxSuppressMs: 1_200_000 });
});

t.test('config: bad values are refused, each naming its key path', async (t) => {
  t.same(problems('  flap_damping: { reuse_threshold: 2000, suppress_threshold: 2000 }'),
    ['agent.flap_damping.reuse_threshold: 2000 is not below agent.flap_damping.suppress_threshold 2000 (an app is held down above suppress_threshold and announced again below reuse_threshold)']);
  const short = problems('  flap_damping: { half_life: 2m, max_suppress: 1m }');
  t.equal(short.length, 1);
  t.match(short[0], /^agent\.flap_damping\.max_suppress: 1m is too short for half_life 2m: the penalty is capped at .* = 1061, not above suppress_threshold 2000, so no app would ever be held down \(at least \d+s\)$/);
  t.same(problems('  flap_damping: { half_life: 2m, max_suppress: 3m }'), [], 'long enough: 750 x 2^1.5 = 2121 > 2000');
  t.match(problems('  flap_damping: { half_life: 30 }'), [/^agent\.flap_damping\.half_life: 30 has no unit/]);
  t.match(problems('  flap_damping: { max_suppress: 500ms }'), [/^agent\.flap_damping\.max_suppress: "500ms" is too short \(minimum 1s\)/]);
  t.match(problems('  flap_damping: { penalty: 0 }'), [/^agent\.flap_damping\.penalty: 0 is not an integer in 1\.\.1000000/]);
  t.match(problems('  flap_damping: { suppress_threshold: "high" }'), [/^agent\.flap_damping\.suppress_threshold: "high" is not an integer/]);
  t.match(problems('  flap_damping: { enabled: yes }'), [/^agent\.flap_damping\.enabled: "yes" is not true or false/]);
  t.match(problems('  flap_damping: { suppress: 3000 }'), [/^agent\.flap_damping\.suppress: unknown key \(did you mean "suppress_threshold"/]);
  t.match(problems('  flap_damping: true'), [/^agent\.flap_damping: true is not a mapping/]);
  t.match(problems('  dampening: { enabled: true }'), [/^agent\.dampening: unknown key \(did you mean "flap_damping"/]);
});
