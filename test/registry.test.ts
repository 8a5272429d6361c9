/** AppRegistry: one owner per VIP, sources kept apart, change events only on real changes. */
import t from 'tap';
import { AppRegistry, type RegistryEvent } from '../src/core/registry.js';
import { VipcastError } from '../src/core/errors.js';
import { makeApp } from './helpers/apps.js';

function registry() {
  const r = new AppRegistry();
  const events: string[] = [];
  r.onChange((e: RegistryEvent) => events.push(`${e.type} ${e.app.name}`));
  return { r, events };
}

t.test('a VIP belongs to one app: a second app with it is refused, naming the owner', async (t) => {
  const { r } = registry();
  r.upsert(makeApp('a', { vips: ['198.18.20.1/32'] }));
  t.throws(() => r.upsert(makeApp('b', { vips: ['198.18.20.2/32', '198.18.20.1/32'], source: 'config' })), { code: 'VIPCAST_ERR_REGISTRATION', message: /VIP 198\.18\.20\.1\/32 already belongs to app "a" \(config\)/ });
  t.equal(r.get('b'), undefined);
  r.remove('a');
  r.upsert(makeApp('b', { vips: ['198.18.20.1/32'] }));
  t.ok(r.get('b'), 'the VIP is free once its app is removed');
});

t.test('an app name of another source cannot be taken over', async (t) => {
  const { r } = registry();
  r.upsert(makeApp('a', { vips: ['198.18.20.1/32'], source: 'config' }));
  const err = t.throws(() => r.upsert(makeApp('a', { vips: ['198.18.20.9/32'], source: 'http' }))) as unknown as VipcastError;
  t.match(err.message, /already registered by config/);
});

t.test('replaceSource: VIPs may move between apps of the same source in one go; other sources untouched', async (t) => {
  const { r, events } = registry();
  r.upsert(makeApp('a', { vips: ['198.18.20.1/32'] }));
  r.upsert(makeApp('b', { vips: ['198.18.20.2/32'] }));
  r.upsert(makeApp('h', { vips: ['198.18.20.3/32'], source: 'http' }));
  events.length = 0;
  const refused = r.replaceSource('config', [makeApp('a', { vips: ['198.18.20.2/32'] }), makeApp('b', { vips: ['198.18.20.1/32'] })]);
  t.same(refused, []);
  t.same(r.get('a')!.vips.map((v) => v.text), ['198.18.20.2/32']);
  t.same(r.get('b')!.vips.map((v) => v.text), ['198.18.20.1/32']);
  t.same(events, ['changed a', 'changed b']);
  t.ok(r.get('h'), 'the HTTP app survives');
  // The index follows: a new app can't take a moved VIP, but can take a freed one.
  t.throws(() => r.upsert(makeApp('c', { vips: ['198.18.20.1/32'] })), /belongs to app "b"/);
  const refused2 = r.replaceSource('config', [makeApp('a', { vips: ['198.18.20.2/32'] }), makeApp('c', { vips: ['198.18.20.3/32'] })]);
  t.same(refused2, ['c: VIP 198.18.20.3/32 already belongs to app "h" (http)'], 'a VIP of another source is refused per app');
  t.equal(r.get('b'), undefined, 'b removed');
  r.upsert(makeApp('d', { vips: ['198.18.20.1/32'] }));
  t.ok(r.get('d'), "b's VIP was freed");
});

t.test('upserting an identical spec emits nothing', async (t) => {
  const { r, events } = registry();
  r.upsert(makeApp('a', { vips: ['198.18.20.1/32'], monitors: ['port:tcp:80'] }));
  r.upsert(makeApp('a', { vips: ['198.18.20.1/32'], monitors: ['port:tcp:80'] }));
  t.same(events, ['added a']);
});
