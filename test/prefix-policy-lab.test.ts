/**
 * The attacks of issue 9 against a real daemon at a real BIRD: vipcast with gobgpd in the node namespace, BIRD in
 * the tor namespace. Every attack registered over HTTP (as root over loopback: who may call is another check) is a
 * 400 naming the rule; BIRD gets nothing of them, lo and the NAT chain stay as they were, the session stays up.
 */
import t from 'tap';
import { labSkip, waitFor } from './lab/netns.js';
import { createStack, nsFetch } from './lab/stack.js';
import { loAddrs, natRules } from './lab/traffic.js';
import { ATTACKS } from './helpers/attacks.js';

const skip = labSkip(['gobgpd', 'bird', 'birdc', 'iptables']);

t.test('issue 9 attacks over HTTP at a real BIRD: all 400 with the rule; nothing reaches BIRD, lo or the NAT chain', { skip, timeout: 90_000 }, async (t) => {
  const s = await createStack();
  t.teardown(() => s.destroy());
  const api = 'http://127.0.0.1:18080';
  const file = s.writeConfig(`${s.baseConfig('  allowed_prefixes: [198.18.0.0/15, "2001:db8::/32"]\n', { listenAddr: '127.0.0.1:18080' })}apps:
  - { name: cfg, vip: 198.18.217.1/32, nats: ["tcp:80:8080"] }
`);
  const d = s.startVipcast(file);
  await waitFor(async () => (await s.routes('198.18.217.1/32')).length === 1, 15_000, 'the config app at BIRD');
  await d.waitLine((l) => l.msg === 'HTTP API listening', 30_000, 'API up');
  const lo = (await loAddrs(s.node)).map((a) => `${a.local}/${a.prefixlen}`).sort();
  const nat = (await natRules(s.node)).sort();

  const attacks: Array<[string, RegExp]> = [
    ...ATTACKS,
    [`vip=${s.lab.ipB}/32`, new RegExp(`it is the address of BGP peer ${s.lab.ipB.replace(/\./g, '\\.')}`)],
    [`vip=${s.lab.ipA}/32`, /bgp\.local_ip/],
    [`vip=198.18.${s.lab.ipA.split('.')[2]}.0/24`, /it contains the address of BGP peer/],
    [`vip=${s.lab.ip6A}/128`, /an address of this host \(interface /],
  ];
  // Each attack under its own name: on the old code each stayed registered (and announced) next to the others.
  for (const [i, [query, reason]] of attacks.entries()) {
    const r = await nsFetch(s.node, `${api}/register?name=x${i}&${query}&nat=tcp:81:8081`);
    t.equal(r.status, 400, `${query}: 400`);
    t.match(r.body, reason, `${query}: says why`);
  }
  // A good registration takes the same path to BIRD: the refusals above are the policy, not a broken path.
  t.equal((await nsFetch(s.node, `${api}/register?name=good&vip=198.18.217.9/32`)).status, 200);
  await waitFor(async () => (await s.routes('198.18.217.9/32')).length === 1, 10_000, 'the good registration at BIRD');
  t.same((await s.routes()).map((r) => r.prefix).sort(), ['198.18.217.1/32', '198.18.217.9/32'], 'BIRD has only the config app and the good registration');
  t.same((await loAddrs(s.node)).map((a) => `${a.local}/${a.prefixlen}`).filter((a) => a !== '198.18.217.9/32').sort(), lo, 'lo: nothing from the attacks');
  t.same((await natRules(s.node)).sort(), nat, 'NAT chain: nothing from the attacks');
  t.notOk(d.lines.some((l) => l.level >= 50 && /announce|addVip|setNat/.test(String(l.msg))), 'no failed effect was even attempted');
});
