/**
 * Invalid prefixes never reach gobgpd (issue 3): through the HTTP API of a daemon driving a real gobgpd, every
 * malformed VIP is refused with the parameter named, nothing reaches BIRD, and BIRD's session is never reset (a bad
 * prefix length in an UPDATE would make BIRD tear the session down).
 */
import t from 'tap';
import { labSkip, waitFor } from './lab/netns.js';
import { createStack, nsFetch } from './lab/stack.js';
import { sameInstant } from './lab/bird.js';

const skip = labSkip(['gobgpd', 'bird', 'birdc', 'iptables']);

t.test('malformed VIPs in registrations are refused before gobgpd; BIRD keeps its session and sees only valid routes', { skip }, async (t) => {
  const s = await createStack();
  t.teardown(() => s.destroy());
  const d = s.startVipcast(s.writeConfig(`${s.baseConfig('', { listenAddr: '127.0.0.1:9180' })}apps:\n  - { name: a, vip: 198.18.217.1/32 }\n`));
  await waitFor(async () => (await s.routes()).length === 1, 15_000, 'route');
  const session = (await s.bird.protocol(s.protocol)).since;
  const bad = ['198.18.217.2/33', '198.18.217.2/', 'x/32', '', '198.18.217.0/24x', '198.18.217.3/31', '2001:db8::1/129', '198.18.217.256/32', '0x0a.0.0.1/32', '198.18.217.2/32/32', '::ffff:198.18.217.2/128'];
  for (const vip of bad) {
    const r = await nsFetch(s.node, `http://127.0.0.1:9180/register?name=bad&vip=${encodeURIComponent(vip)}`);
    t.equal(r.status, 400, `"${vip}" refused`);
    t.match(r.body, /Invalid request: vip/, 'the parameter is named');
  }
  const ok = await nsFetch(s.node, 'http://127.0.0.1:9180/register?name=good&vip=198.18.217.9/32');
  t.equal(ok.status, 200);
  await waitFor(async () => (await s.routes()).length === 2, 10_000, 'the valid registration announced');
  await new Promise((r) => setTimeout(r, 500));
  t.same((await s.routes()).map((r) => r.prefix).sort(), ['198.18.217.1/32', '198.18.217.9/32'], 'nothing else reached BIRD (no 0.0.0.0/x, no default route)');
  const p = await s.bird.protocol(s.protocol);
  t.equal(p.bgpState, 'Established');
  t.ok(sameInstant(p.since, session), 'BIRD never reset the session');
  t.notOk(d.lines.some((l) => l.component === 'gobgp' && l.level >= 50), 'gobgpd never saw (and refused) anything');
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
});
