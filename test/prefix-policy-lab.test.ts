/**
 * The attacks of issue 9 against a real daemon at a real BIRD: vipcast with gobgpd in the node namespace, BIRD in
 * the tor namespace. Every attack registered over HTTP (as root over loopback: who may call is another check) is a
 * 400 naming the rule; BIRD gets nothing of them, lo and the NAT chain stay as they were, the session stays up.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { labSkip, nsRun, waitFor } from './lab/netns.js';
import { createStack, nsFetch } from './lab/stack.js';
import { hasVip, loAddrs, natRules } from './lab/traffic.js';
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

t.test("an operator's address on lo (a router id) is the host's own: /register of it is 400; vipcast's own VIPs on lo still pass, re-registered, reloaded and after a SIGKILL restart", { skip, timeout: 120_000 }, async (t) => {
  const s = await createStack();
  t.teardown(() => s.destroy());
  // Put there by the operator before vipcast starts: router ids (one labelled), and one the config file adopts.
  for (const args of [['198.18.219.250/32', 'dev', 'lo'], ['198.18.219.251/32', 'dev', 'lo', 'label', 'lo:rid'], ['198.18.219.252/32', 'dev', 'lo']]) await nsRun(s.node, 'ip', ['addr', 'add', ...args]);
  await nsRun(s.node, 'ip', ['-6', 'addr', 'add', '2001:db8:219::250/128', 'dev', 'lo', 'nodad']);
  const api = 'http://127.0.0.1:18081';
  const file = s.writeConfig(`${s.baseConfig('  allowed_prefixes: [198.18.0.0/15, "2001:db8::/32"]\n', { listenAddr: '127.0.0.1:18081' })}apps:
  - { name: cfg, vip: 198.18.219.1/32 }
  - { name: adopt, vip: 198.18.219.252/32 }
`);
  const d = s.startVipcast(file);
  await d.waitLine((l) => l.msg === 'HTTP API listening', 30_000, 'API up');
  await waitFor(async () => (await s.routes('198.18.219.1/32')).length === 1 && (await s.routes('198.18.219.252/32')).length === 1, 15_000, 'the config apps at BIRD (the adopted one too)');

  for (const [vip, iface] of [['198.18.219.250/32', 'lo'], ['198.18.219.251/32', 'lo:rid'], ['2001:db8:219::250/128', 'lo']]) {
    const r = await nsFetch(s.node, `${api}/register?name=rid&vip=${vip}`);
    t.equal(r.status, 400, `${vip}: 400`);
    t.match(r.body, `Invalid request: vip: ${vip} is refused: it is ${vip.split('/')[0]}, an address of this host on loopback interface ${iface} that vipcast did not put there`, `${vip}: names the rule`);
  }
  t.equal((await nsFetch(s.node, `${api}/register?name=rid&vip=198.18.219.252/32`)).status, 409, "the adopted address is the config app's");

  // vipcast's own VIP on lo: registering again, a reload and a restart after SIGKILL must not refuse it.
  t.equal((await nsFetch(s.node, `${api}/register?name=web&vip=198.18.219.9/32`)).status, 200);
  await waitFor(async () => (await s.routes('198.18.219.9/32')).length === 1 && await hasVip(s.node, '198.18.219.9'), 10_000, 'web on lo and at BIRD');
  await new Promise((res) => setTimeout(res, 1200)); // past the host addresses' 1 s cache: lo now holds web's VIP
  let r = await nsFetch(s.node, `${api}/register?name=web&vip=198.18.219.9/32&vip_communities=65001:9`);
  t.same([r.status, r.body], [200, ''], 'web registers again while its VIP is on lo');
  r = await nsFetch(s.node, `${api}/reload`, 'POST');
  t.equal(r.status, 200, 'a reload');
  t.match(JSON.parse(r.body), { ok: true });
  const status = JSON.parse((await nsFetch(s.node, `${api}/status`)).body) as { apps: Array<{ name: string }> };
  t.same(status.apps.map((a) => a.name).sort(), ['adopt', 'cfg', 'web'], 'web is still registered after the reload');
  await waitFor(() => readFileSync(join(s.dir, 'registrations.json'), 'utf8').includes('"web"'), 5000, 'web in the registrations file');

  d.kill('SIGKILL');
  await d.exited;
  t.ok(await hasVip(s.node, '198.18.219.9'), 'after SIGKILL its VIP is still on lo (recorded in the state file)');
  const d2 = s.startVipcast(file);
  const restored = await d2.waitLine((l) => /^HTTP registrations restored/.test(String(l.msg)), 30_000, 'registrations restored');
  t.match(restored, { restored: ['web'], dropped: 0 }, 'web restored, its VIP on lo not refused');
  await d2.waitLine((l) => l.msg === 'HTTP API listening', 30_000, 'API up again');
  await waitFor(async () => {
    const apps = (JSON.parse((await nsFetch(s.node, `${api}/status`)).body) as { apps: Array<{ name: string; state: string }> }).apps;
    return apps.filter((a) => a.state === 'up').map((a) => a.name).sort().join() === 'adopt,cfg,web';
  }, 15_000, 'adopt, cfg and web up after the restart');
  t.equal((await nsFetch(s.node, `${api}/register?name=web&vip=198.18.219.9/32`)).status, 200, 'and web may register again');
  t.equal((await nsFetch(s.node, `${api}/register?name=rid&vip=198.18.219.250/32`)).status, 400, 'the router id is still refused');
  t.notOk([...d.lines, ...d2.lines].some((l) => /198\.18\.219\.(9|1|252)\/32 is refused/.test(JSON.stringify(l))), 'no own VIP was ever refused');
  t.same((await s.routes()).map((x) => x.prefix).sort(), ['198.18.219.1/32', '198.18.219.252/32', '198.18.219.9/32'], 'BIRD: no router id');
});
