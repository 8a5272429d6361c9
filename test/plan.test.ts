/**
 * The pure desired state and plan (desired-state.ts, plan.ts): table tests of the ordering invariants, no fakes, no
 * I/O. Each row is an actual state (model), the apps as the reconciler sees them, and the steps a pass takes.
 */
import t from 'tap';
import type { NatBinding, Route, VipBinding } from '../src/plugin-api.js';
import { appRoutes, desiredState, holdUnknown, type AppView } from '../src/core/desired-state.js';
import { plan, type Model, type Step } from '../src/core/plan.js';
import { parseCommunity } from '../src/core/values.js';
import { makeApp } from './helpers/apps.js';

const bgp = { communities: [parseCommunity('65000:1', 'c')], origin: 'igp' as const };
const NOW = 1_000_000;

type AppRow = { name: string; vips: string[]; nats?: string[]; state: AppView['state']; hostHeld?: boolean; hold?: AppView['hold']; communities?: string[] };

function views(rows: AppRow[]): AppView[] {
  return rows.map((r) => ({
    spec: makeApp(r.name, { vips: r.vips, nats: r.nats ?? [], communities: r.communities ?? [] }),
    state: r.state,
    hostHeld: r.hostHeld ?? r.state === 'up',
    ...(r.hold ? { hold: r.hold } : {}),
  }));
}

/** The model of a world where `rows` are exactly in place (announced if announced, addresses and rules if held). */
function world(rows: Array<AppRow & { announced?: boolean; onHost?: boolean }>): Model {
  const model: Model = { routes: new Map<string, Route>(), vips: new Map<string, VipBinding>(), nat: [] as NatBinding[] };
  for (const v of views(rows)) {
    const row = rows.find((r) => r.name === v.spec.name)!;
    if (row.announced) for (const r of appRoutes(v.spec, bgp)) model.routes.set(r.prefix.text, r);
    if (row.onHost) {
      for (const vip of v.spec.vips) {
        model.vips.set(vip.text, { app: v.spec.name, prefix: vip });
        for (const rule of v.spec.nats) model.nat.push({ app: v.spec.name, vip, rule });
      }
    }
  }
  return model;
}

const show = (s: Step): string => {
  switch (s.op) {
    case 'withdraw': return `withdraw ${s.prefix}${s.stage === 'after' ? ' (after)' : ''}`;
    case 'nat': return `nat [${s.rules.join(' ')}]`;
    case 'announce': return `announce ${s.prefix}${s.replaces ? ' (replace)' : ''}`;
    default: return `${s.op} ${s.prefix}`;
  }
};

const rows: Array<{ name: string; before: Array<AppRow & { announced?: boolean; onHost?: boolean }>; now: AppRow[]; steps: string[] }> = [
  {
    name: 'bring-up: address, then NAT, then announce',
    before: [],
    now: [{ name: 'web', vips: ['198.18.1.1/32'], nats: ['tcp:80:8080'], state: 'up' }],
    steps: ['add-vip 198.18.1.1/32', 'nat [198.18.1.1/32|tcp:80:8080]', 'announce 198.18.1.1/32'],
  },
  {
    name: 'tear-down: withdraw, then NAT, then address',
    before: [{ name: 'web', vips: ['198.18.1.1/32'], nats: ['tcp:80:8080'], state: 'up', announced: true, onHost: true }],
    now: [{ name: 'web', vips: ['198.18.1.1/32'], nats: ['tcp:80:8080'], state: 'down', hostHeld: false }],
    steps: ['withdraw 198.18.1.1/32', 'nat []', 'remove-vip 198.18.1.1/32'],
  },
  {
    name: 'down with the cleanup timer running: only the withdraw',
    before: [{ name: 'web', vips: ['198.18.1.1/32'], nats: ['tcp:80:8080'], state: 'up', announced: true, onHost: true }],
    now: [{ name: 'web', vips: ['198.18.1.1/32'], nats: ['tcp:80:8080'], state: 'down', hostHeld: true }],
    steps: ['withdraw 198.18.1.1/32'],
  },
  {
    name: 'make-before-break: a VIP change announces the new VIP before the old one is withdrawn, then its NAT and address go',
    before: [{ name: 'web', vips: ['198.18.1.1/32'], nats: ['tcp:80:8080'], state: 'up', announced: true, onHost: true }],
    now: [{ name: 'web', vips: ['198.18.1.2/32'], nats: ['tcp:80:8080'], state: 'up' }],
    steps: [
      'add-vip 198.18.1.2/32', 'nat [198.18.1.1/32|tcp:80:8080 198.18.1.2/32|tcp:80:8080]', 'announce 198.18.1.2/32',
      'withdraw 198.18.1.1/32 (after)', 'nat [198.18.1.2/32|tcp:80:8080]', 'remove-vip 198.18.1.1/32',
    ],
  },
  {
    name: 'a VIP moves to another app: the old owner\'s route goes first, then the new owner\'s address and route',
    before: [{ name: 'old', vips: ['198.18.1.1/32'], state: 'up', announced: true, onHost: true }],
    now: [{ name: 'new', vips: ['198.18.1.1/32'], state: 'up' }],
    steps: ['withdraw 198.18.1.1/32', 'add-vip 198.18.1.1/32', 'announce 198.18.1.1/32'],
  },
  {
    name: 'a community change is an implicit replace, no withdraw',
    before: [{ name: 'web', vips: ['198.18.1.1/32'], state: 'up', announced: true, onHost: true }],
    now: [{ name: 'web', vips: ['198.18.1.1/32'], state: 'up', communities: ['65000:7'] }],
    steps: ['announce 198.18.1.1/32 (replace)'],
  },
  {
    name: 'nothing changed: no step',
    before: [{ name: 'web', vips: ['198.18.1.1/32'], nats: ['udp:53:8053'], state: 'up', announced: true, onHost: true }],
    now: [{ name: 'web', vips: ['198.18.1.1/32'], nats: ['udp:53:8053'], state: 'up' }],
    steps: [],
  },
  {
    name: 'not checked yet after a restart: what an earlier run left stays untouched',
    before: [{ name: 'web', vips: ['198.18.1.1/32'], nats: ['udp:53:8053'], state: 'up', announced: true, onHost: true }],
    now: [{ name: 'web', vips: ['198.18.1.1/32'], nats: ['udp:53:8053'], state: 'unknown', hostHeld: false }],
    steps: [],
  },
  {
    name: 'held (maintenance): the route goes, address and NAT stay',
    before: [{ name: 'web', vips: ['198.18.1.1/32'], nats: ['udp:53:8053'], state: 'up', announced: true, onHost: true }],
    now: [{ name: 'web', vips: ['198.18.1.1/32'], nats: ['udp:53:8053'], state: 'up', hold: { reason: 'maintenance' } }],
    steps: ['withdraw 198.18.1.1/32'],
  },
  {
    name: 'held with a drain: re-announced with 65535:0 (no withdraw) until the drain ends',
    before: [{ name: 'web', vips: ['198.18.1.1/32'], state: 'up', announced: true, onHost: true }],
    now: [{ name: 'web', vips: ['198.18.1.1/32'], state: 'up', hold: { reason: 'maintenance', drainUntil: NOW + 1000 } }],
    steps: ['announce 198.18.1.1/32 (replace)'],
  },
  {
    name: 'the app is gone: withdraw, NAT, address',
    before: [{ name: 'gone', vips: ['198.18.1.9/32'], nats: ['tcp:443:8443'], state: 'up', announced: true, onHost: true }],
    now: [],
    steps: ['withdraw 198.18.1.9/32', 'nat []', 'remove-vip 198.18.1.9/32'],
  },
];

for (const row of rows) {
  t.test(row.name, async (t) => {
    const desired = desiredState(views(row.now), bgp, NOW);
    t.same(plan(world(row.before), desired).map(show), row.steps);
  });
}

t.test('ordering invariants hold for every pair of states of two apps sharing nothing', async (t) => {
  const states: Array<{ state: AppView['state']; hostHeld: boolean }> = [
    { state: 'unknown', hostHeld: false }, { state: 'up', hostHeld: true }, { state: 'down', hostHeld: true }, { state: 'down', hostHeld: false },
  ];
  const befores = [{ announced: false, onHost: false }, { announced: false, onHost: true }, { announced: true, onHost: true }];
  let checked = 0;
  for (const s of states) {
    for (const b of befores) {
      const app = { name: 'a', vips: ['198.18.2.1/32', '2001:db8:2::1/128'], nats: ['udp:53:8053'] };
      const steps = plan(world([{ ...app, state: 'up', ...b }]), desiredState(views([{ ...app, ...s }]), bgp, NOW)).map(show);
      const at = (re: RegExp) => steps.findIndex((x) => re.test(x));
      const label = `${JSON.stringify(s)} from ${JSON.stringify(b)}: ${steps.join(', ')}`;
      // Never announce before the address and rules; never remove an address or rules before the withdraw.
      if (at(/^announce/) !== -1) t.ok(at(/^add-vip/) < at(/^announce/) && (at(/^nat/) === -1 || at(/^nat/) < at(/^announce/)), `bring-up order: ${label}`);
      if (at(/^remove-vip/) !== -1) t.ok(at(/^withdraw/) === -1 || at(/^withdraw/) < at(/^remove-vip/), `tear-down order: ${label}`);
      if (at(/^remove-vip/) !== -1 && at(/^nat/) !== -1) t.ok(at(/^nat/) < at(/^remove-vip/), `rules before addresses: ${label}`);
      if (s.state === 'unknown') t.same(steps, [], `undecided: untouched: ${label}`);
      checked++;
    }
  }
  t.equal(checked, 12);
});

t.test('holdUnknown: while a source has not delivered, prefixes of no known app are left alone', async (t) => {
  const before = world([{ name: 'consul-app', vips: ['198.18.3.1/32'], state: 'up', announced: true, onHost: true }]);
  const desired = desiredState([], bgp, NOW);
  t.same(plan(before, desired).map(show), ['withdraw 198.18.3.1/32', 'remove-vip 198.18.3.1/32'], 'a stray goes');
  const held = holdUnknown(desired, [], [...before.routes.keys(), ...before.vips.keys()]);
  t.same(plan(before, held).map(show), [], 'held while the source has not delivered');
});

t.test('desiredState: drainEnds is the earliest drain in progress; a past drain is a plain hold', async (t) => {
  const d = desiredState(views([
    { name: 'a', vips: ['198.18.4.1/32'], state: 'up', hold: { reason: 'm', drainUntil: NOW + 500 } },
    { name: 'b', vips: ['198.18.4.2/32'], state: 'up', hold: { reason: 'm', drainUntil: NOW + 200 } },
    { name: 'c', vips: ['198.18.4.3/32'], state: 'up', hold: { reason: 'm', drainUntil: NOW - 1 } },
  ]), bgp, NOW);
  t.equal(d.drainEnds, NOW + 200);
  t.same([...d.routes.keys()].sort(), ['198.18.4.1/32', '198.18.4.2/32']);
  t.ok([...d.routes.values()].every((r) => r.communities.some((c) => c.text === '65535:0')), 'draining routes carry 65535:0');
  t.same([...d.vips.keys()].sort(), ['198.18.4.1/32', '198.18.4.2/32', '198.18.4.3/32'], 'every held app keeps its address');
});
