/**
 * Host networking through the real daemon (issue 4), end to end: vipcast + gobgpd in namespace "node", BIRD and a
 * client in namespace "tor". Real traffic goes through the NAT rules vipcast writes.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { sameInstant } from './lab/bird.js';
import { labSkip, nsRun, waitFor } from './lab/netns.js';
import { routeViaNode, stackFor } from './lab/stack.js';
import { loAddrs, natRules, probe, startServer, hasVip, vipRules } from './lab/traffic.js';

const skip = labSkip(['gobgpd', 'bird', 'birdc', 'iptables']);


t.test('NAT and loopback through the daemon: remote and local clients reach the service, tear-down order, nothing left after SIGTERM', { skip }, async (t) => {
  const s = await stackFor(t);
  const { lab } = s;
  // The host's own things, which vipcast must never touch.
  await nsRun(s.node, 'iptables', ['-w', '10', '-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', '9999', '-m', 'comment', '--comment', 'host-rule', '-j', 'REDIRECT', '--to-ports', '9998']);
  await nsRun(s.node, 'ip', ['addr', 'add', '198.18.250.1/32', 'dev', 'lo', 'label', 'lo:hostown']);
  const dns = await startServer(s.node, lab.ipA, 8053);
  t.teardown(() => { dns.kill('SIGKILL'); });
  const web = await startServer(s.node, lab.ipA, 8080);
  t.teardown(() => { web.kill('SIGKILL'); });
  const file = s.writeConfig(`${s.baseConfig('  cleanup_timer: 1500ms')}
apps:
  - name: dns
    vip: 198.18.200.53/32
    monitors: ["port:tcp:8053"]
    nats: ["tcp:53:8053", "udp:53:8053"]
  - name: web
    vip: 198.18.200.80/32
    monitors: ["port:tcp:8080"]
    nats: ["tcp:80:8080"]
`);
  const d = s.startVipcast(file);
  await waitFor(async () => (await s.routes('198.18.200.53/32')).length === 1 && (await s.routes('198.18.200.80/32')).length === 1, 15_000, 'routes at BIRD');
  const lo = await loAddrs(s.node);
  t.same(lo.find((a) => a.local === '198.18.200.53'), { local: '198.18.200.53', prefixlen: 32, label: 'lo:dns' }, 'VIP on lo with label lo:<name>');

  await routeViaNode(s, '198.18.200.53/32');
  await routeViaNode(s, '198.18.200.80/32');
  t.match(await probe(s.tor, 'tcp', '198.18.200.53', 53), new RegExp(`^srv tcp ${lab.ipA.replace(/\./g, '\\.')}:8053 from ${lab.ipB.replace(/\./g, '\\.')}`), 'TCP from the router side lands on local_ip:8053');
  t.match(await probe(s.tor, 'udp', '198.18.200.53', 53), new RegExp(`^srv udp ${lab.ipA.replace(/\./g, '\\.')}:8053 from`), 'UDP too');
  t.match(await probe(s.node, 'tcp', '198.18.200.53', 53), /^srv tcp .*:8053/, 'a client on the node itself (OUTPUT)');
  t.match(await probe(s.tor, 'tcp', '198.18.200.80', 80), /^srv tcp .*:8080/);

  // web fails: withdrawn at once, address and rule kept until cleanup_timer, then removed (rules before address).
  web.kill('SIGKILL');
  await waitFor(async () => (await s.routes('198.18.200.80/32')).length === 0, 5000, 'web withdrawn at BIRD');
  t.ok(await hasVip(s.node, '198.18.200.80'), 'address kept during cleanup_timer');
  t.ok((await vipRules(s.node)).some((l) => l.includes('198.18.200.80')), 'NAT rule kept during cleanup_timer');
  await waitFor(async () => !(await hasVip(s.node, '198.18.200.80')), 5000, 'web address removed after cleanup_timer');
  t.notOk((await vipRules(s.node)).some((l) => l.includes('198.18.200.80')), 'its NAT rule is gone');
  t.equal((await s.routes('198.18.200.53/32')).length, 1, 'dns untouched');

  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
  t.same(await s.routes(), [], 'no route left at BIRD');
  const after = await loAddrs(s.node);
  t.notOk(after.some((a) => a.local.startsWith('198.18.200.')), 'no VIP left on lo');
  t.ok(after.some((a) => a.local === '198.18.250.1' && a.label === 'lo:hostown'), "the host's own address is still there");
  const rules = await natRules(s.node);
  t.same(rules.filter((l) => l.includes('VIPCAST')), [], 'no vipcast chain or jump left');
  t.ok(rules.some((l) => l.includes('host-rule')), "the host's own rule is still there");
  t.notOk(existsSync(join(s.dir, 'host-state.json')), 'state file removed');
});

t.test('SIGKILL, change the config, start again: stale routes, addresses and rules go, desired ones stay', { skip }, async (t) => {
  const s = await stackFor(t);
  const v1 = s.writeConfig(`${s.baseConfig()}
apps:
  - { name: keep, vip: 198.18.201.10/32, nats: ["tcp:80:8080"] }
  - { name: gone, vip: 198.18.201.11/32, nats: ["tcp:81:8081"] }
`, 'v1.yaml');
  const d1 = s.startVipcast(v1);
  await waitFor(async () => (await s.routes()).length === 2, 15_000, 'both routes at BIRD');
  const keepSince = (await s.routes('198.18.201.10/32'))[0]!.since;
  d1.kill('SIGKILL');
  await d1.exited;
  t.ok(await hasVip(s.node, '198.18.201.11'), 'after SIGKILL the stale address is still there (nothing ran)');

  const v2 = s.writeConfig(`${s.baseConfig()}
apps:
  - { name: keep, vip: 198.18.201.10/32, nats: ["tcp:80:8080"] }
  - { name: added, vip: 198.18.201.12/32, nats: ["udp:53:8053"] }
`, 'v2.yaml');
  const d2 = s.startVipcast(v2);
  await waitFor(async () => {
    const r = (await s.routes()).map((x) => x.prefix).sort();
    return JSON.stringify(r) === JSON.stringify(['198.18.201.10/32', '198.18.201.12/32']);
  }, 15_000, 'BIRD to have exactly keep and added');
  await waitFor(async () => !(await hasVip(s.node, '198.18.201.11')), 5000, 'stale address removed');
  t.ok(await hasVip(s.node, '198.18.201.10'));
  t.ok(await hasVip(s.node, '198.18.201.12'));
  const rules = await vipRules(s.node);
  t.ok(rules.some((l) => l.includes('198.18.201.10/32') && l.includes('--dport 80')), 'desired rule present');
  t.ok(rules.some((l) => l.includes('198.18.201.12/32') && l.includes('-p udp') && l.includes('--dport 53')), 'new rule present');
  t.notOk(rules.some((l) => l.includes('198.18.201.11')), 'stale rule gone');
  t.ok(sameInstant((await s.routes('198.18.201.10/32'))[0]!.since, keepSince), 'the unchanged route was not withdrawn and re-announced');
  d2.kill('SIGTERM');
  t.equal((await d2.exited).code, 0);
  t.same(await vipRules(s.node), []);
});
