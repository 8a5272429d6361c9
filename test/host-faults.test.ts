/**
 * Host faults through the real daemon (issue 9, items 3 and 6): vipcast + gobgpd in namespace "node", BIRD and a
 * client in namespace "tor", real traffic through the NAT rules vipcast writes.
 * - One app whose NAT can't be made (an IPv6 VIP with NAT and no local IPv6 address to DNAT to) fails alone; the
 *   other apps' rules are written and their routes announced.
 * - A corrupted state file is kept aside, reported with both paths, and the addresses vipcast adds are still
 *   removed at exit.
 */
import t from 'tap';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLab, labSkip, nsRun, waitFor } from './lab/netns.js';
import { nsFetch, routeViaNode, stackFor } from './lab/stack.js';
import { BIN, freePort } from './helpers/daemon.js';
import { natRules, probe, startServer, hasVip, vipRules } from './lab/traffic.js';

const skip = labSkip(['gobgpd', 'bird', 'birdc', 'iptables', 'iptables-restore']);


interface AppStatus { name: string; announced: string[]; error?: string }

t.test('an app whose IPv6 NAT has no local IPv6 address to DNAT to fails alone: the IPv4 NAT app is announced and its DNAT carries traffic', { skip }, async (t) => {
  const s = await stackFor(t);
  const { lab } = s;
  // The node has IPv6 on its veth, but no IPv6 peer and no IPv6 default route: vipcast finds no IPv6 NAT target
  // (bgp.local_ip is IPv4), as on a host without a global IPv6 address.
  const dns = await startServer(s.node, lab.ipA, 8053);
  t.teardown(() => { dns.kill('SIGKILL'); });
  const port = await freePort();
  const file = s.writeConfig(`${s.baseConfig('', { listenAddr: `127.0.0.1:${port}` })}
apps:
  - name: dns4
    vip: 198.18.202.53/32
    monitors: ["port:tcp:8053"]
    nats: ["tcp:53:8053", "udp:53:8053"]
  - name: dns6
    vip: 2001:db8:202::53/128
    nats: ["tcp:53:8053"]
`);
  const d = s.startVipcast(file);
  await waitFor(async () => (await s.routes('198.18.202.53/32')).length === 1, 15_000, 'dns4 announced at BIRD');
  t.ok((await vipRules(s.node)).some((l) => l.includes('198.18.202.53/32') && l.includes('-p udp')), 'dns4\'s NAT rules are in the chain');
  await routeViaNode(s, '198.18.202.53/32');
  t.equal(await probe(s.tor, 'tcp', '198.18.202.53', 53), `srv tcp ${lab.ipA}:8053 from ${lab.ipB}`, 'TCP to the IPv4 VIP lands on local_ip:8053');
  t.equal(await probe(s.tor, 'udp', '198.18.202.53', 53), `srv udp ${lab.ipA}:8053 from ${lab.ipB}`, 'UDP too');

  const status = await waitFor(async () => {
    const r = await nsFetch(s.node, `http://127.0.0.1:${port}/status`);
    const apps = (JSON.parse(r.body) as { apps: AppStatus[] }).apps;
    const six = apps.find((a) => a.name === 'dns6');
    return six?.error ? apps : undefined;
  }, 10_000, 'dns6 reported failed in /status');
  const six = status!.find((a) => a.name === 'dns6')!;
  t.match(six.error, /NAT.*2001:db8:202::53\/128.*tcp:53:8053.*local ipv6 address/i, `dns6's /status error names its rule and the reason (${six.error})`);
  t.same(six.announced, [], 'dns6 is not announced: traffic to it would not reach the service');
  t.notOk(status!.find((a) => a.name === 'dns4')?.error, 'dns4 has no error');
  t.notOk(d.lines.some((l) => l.event === 'route' && l.action === 'announce' && l.app === 'dns6'), 'no announce of dns6 was sent to gobgpd');
  t.notOk((await natRules(s.node, 'ip6tables')).some((l) => l.includes('2001:db8:202::53')), 'no rule of dns6 in the IPv6 nat table');

  // It stays that way: every pass writes dns4's rules and fails dns6 alone (no whole-set failure, no flapping).
  await new Promise((r) => setTimeout(r, 1500));
  t.equal((await s.routes('198.18.202.53/32')).length, 1, 'dns4 still announced');
  t.equal(d.lines.filter((l) => l.msg === 'reconcile pass failed').length, 0, 'no pass failed as a whole');

  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
  t.same(await vipRules(s.node), [], 'no vipcast chain or jump left');
  t.notOk(await hasVip(s.node, '198.18.202.53'), 'no VIP left');
});

t.test('a corrupted state file is kept aside and reported with both paths; the addresses vipcast adds in that run are removed at exit', { skip }, async (t) => {
  const s = await stackFor(t);
  const stateFile = join(s.dir, 'host-state.json');
  const garbage = '{"version":1,"vips":[{"app":"web","prefix":"198.18.203.1/32","ow\u0000\u0000garbage';
  writeFileSync(stateFile, garbage);
  // An address that was on lo before this run (vipcast's from a run whose record is lost, or the host's: with the
  // state file corrupt nobody can tell): it is served, never deleted.
  await nsRun(s.node, 'ip', ['addr', 'add', '198.18.203.2/32', 'dev', 'lo', 'label', 'lo:old']);
  const file = s.writeConfig(`${s.baseConfig()}
apps:
  - { name: web, vip: 198.18.203.1/32, nats: ["tcp:80:8080"] }
  - { name: old, vip: 198.18.203.2/32 }
`);
  const d = s.startVipcast(file);
  await waitFor(async () => (await s.routes()).length === 2, 15_000, 'both routes at BIRD');
  const aside = readdirSync(s.dir).filter((f) => f.startsWith('host-state.json.corrupt-'));
  t.equal(aside.length, 1, `the corrupt file is kept aside (${aside.join(', ')})`);
  t.equal(aside[0] && readFileSync(join(s.dir, aside[0]), 'utf8'), garbage, 'with its content unchanged');
  const report = d.lines.find((l) => l.level === 50 && /state file/.test(l.msg));
  t.ok(report, 'an error is logged');
  t.match(report, { stateFile, keptAs: join(s.dir, aside[0] ?? 'none') }, 'naming the state file and where it was kept');
  const state = JSON.parse(readFileSync(stateFile, 'utf8')) as { vips: Array<{ app: string; prefix: string; owned: boolean }> };
  t.match(state.vips.find((v) => v.app === 'web'), { prefix: '198.18.203.1/32', owned: true }, 'a fresh state file records the address vipcast added');
  t.match(state.vips.find((v) => v.app === 'old'), { prefix: '198.18.203.2/32', owned: false }, 'the address that was already there is adopted');

  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
  t.notOk(await hasVip(s.node, '198.18.203.1'), 'the address vipcast added in this run is removed at exit');
  t.ok(await hasVip(s.node, '198.18.203.2'), 'the address that was already on lo stays');
  t.same(await vipRules(s.node), [], 'no vipcast chain left');
  t.ok(existsSync(join(s.dir, aside[0] ?? 'none')), 'the corrupt copy stays for the operator');
});

t.test('vipcast validate warns (exit 0) about an app whose NAT can\'t work on this host, naming apps[i].nats; not about the others', { skip: labSkip([]) }, async (t) => {
  const lab = await createLab({ prefix: 'vv' });
  t.teardown(() => lab.destroy());
  const dir = t.testdir({
    'vipcast.yaml': `bgp:
  local_as: 65001
  local_ip: ${lab.ipA}
  peers:
    - { peer_ip: ${lab.ipB}, peer_as: 65000 }
apps:
  - { name: dns4, vip: 198.18.204.53/32, nats: ["tcp:53:8053"] }
  - { name: dns6, vip: "2001:db8:204::53/128", nats: ["tcp:53:8053"] }
  - { name: plain6, vip: "2001:db8:204::54/128" }
`,
  });
  // Inside the namespace: IPv6 on the veth, but no IPv6 peer and no IPv6 default route (no NAT target for IPv6).
  const { execFile } = await import('node:child_process');
  const validate = () => new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile('ip', ['netns', 'exec', lab.a, 'env', '-u', 'NODE_OPTIONS', process.execPath, BIN, 'validate', '-c', join(dir, 'vipcast.yaml')], (err, stdout, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }));
  });
  const res = await validate();
  t.equal(res.code, 0, 'a warning, not an error: exit 0');
  t.match(res.stdout, /OK: 3 apps/);
  const warnings = res.stderr.split('\n').filter((l) => l.includes('warning:'));
  t.equal(warnings.length, 1, `one warning (${res.stderr})`);
  t.match(warnings[0], /apps\[1\]\.nats: app "dns6" has NAT rules for ipv6 VIP 2001:db8:204::53\/128, but this host has no local ipv6 address to DNAT to/, 'names the setting, the app and the reason');
  t.match(warnings[0], /the target host may differ/, 'says it is about this host');
  // With an IPv6 default route the same config validates without a warning.
  await nsRun(lab.a, 'ip', ['-6', 'route', 'add', 'default', 'via', lab.ip6B]);
  const again = await validate();
  t.equal(again.code, 0);
  t.notMatch(again.stderr, /warning: apps\[/, `no NAT warning once the host has an IPv6 address facing a gateway (${again.stderr})`);
});
