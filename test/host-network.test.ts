/**
 * LinuxHostNetwork against real namespaces, real `ip`/`iptables` and real TCP/UDP traffic (LAB.md). Namespace "a" is
 * the node (VIPs on its lo, NAT, servers on local_ip:8053), namespace "b" a client elsewhere in the network.
 */
import t, { type Test } from 'tap';
import type { ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createLab, labSkip, nsRun, nsSpawn, type Lab } from './lab/netns.js';
import { loAddrs, natRules, probe, startServer } from './lab/traffic.js';
import { LinuxHostNetwork, loopbackLabel, splitRule, type LinuxHostNetworkOptions } from '../src/core/host/linux.js';
import { LoggingHostNetwork } from '../src/core/host/dry-run.js';
import { VipcastError } from '../src/core/errors.js';
import { createLogger, silentLogger } from '../src/core/logger.js';
import { parseNat, parsePrefix } from '../src/core/values.js';
import type { NatBinding, VipBinding } from '../src/plugin-api.js';

const skip = labSkip(['iptables', 'iptables-restore']);

interface Vips {
  v4: string;
  v6: string;
}

/** VIPs outside the lab's veth subnets, derived from the lab's subnet so parallel labs never share one. */
function vipsOf(lab: Lab, host = 10): Vips {
  const s = Number(lab.ipA.split('.')[2]);
  return { v4: `198.19.${s}.${host}/32`, v6: parsePrefix(`2001:db8:ffff:${s.toString(16)}::${host.toString(16)}/128`, 't').text };
}

const vip = (app: string, text: string): VipBinding => ({ app, prefix: parsePrefix(text, 't') });
const nat = (app: string, vipText: string, spec: string): NatBinding => ({ app, vip: parsePrefix(vipText, 't'), rule: parseNat(spec, 't') });

async function newHost(dir: string, lab: Lab, extra: Partial<LinuxHostNetworkOptions> = {}): Promise<LinuxHostNetwork> {
  const h = new LinuxHostNetwork({
    log: silentLogger(),
    netns: lab.a,
    localIp: () => lab.ipA,
    localIp6: () => lab.ip6A,
    stateFile: join(dir, 'host-state.json'),
    ...extra,
  });
  await h.start();
  return h;
}


async function withLab(t: Test): Promise<Lab> {
  const lab = await createLab({ prefix: 'vh' });
  t.teardown(() => lab.destroy());
  return lab;
}

const codeOf = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
    return 'resolved';
  } catch (err) {
    return (err as VipcastError).code ?? String(err);
  }
};

t.test('loopback VIPs: IPv4 with the gocast label (15 chars), IPv6 with nodad; double add and double remove are harmless', { skip }, async (t) => {
  const dir = t.testdir({});
  const lab = await withLab(t);
  const host = await newHost(dir, lab);
  const { v4, v6 } = vipsOf(lab);
  const app = 'web-frontend-long';
  t.equal(loopbackLabel(app), 'lo:web-frontend', 'label is lo: + name cut to 15 characters');

  await host.addVip(vip(app, v4));
  await host.addVip(vip(app, v4));
  await host.addVip(vip(app, v6));
  await host.addVip(vip(app, v6));
  const addrs = await loAddrs(lab.a);
  t.same(addrs.filter((a) => a.local === v4.split('/')[0]), [{ local: v4.split('/')[0], prefixlen: 32, label: 'lo:web-frontend' }], 'IPv4 VIP on lo once, with its label');
  t.same(addrs.filter((a) => a.local === v6.split('/')[0]), [{ local: v6.split('/')[0], prefixlen: 128 }], 'IPv6 VIP on lo once');
  t.same((await host.listVips()).map((b) => [b.app, b.prefix.text]).sort(), [[app, v4], [app, v6]].sort(), 'listVips shows both');

  await host.removeVip(vip(app, v4));
  await host.removeVip(vip(app, v4));
  await host.removeVip(vip(app, v6));
  await host.removeVip(vip(app, v6));
  const after = await loAddrs(lab.a);
  t.notOk(after.some((a) => a.local === v4.split('/')[0] || a.local === v6.split('/')[0]), 'both removed');
  t.same(await host.listVips(), [], 'listVips is empty');
});

t.test("the host's own loopback addresses are never listed nor removed (even with an app's lo: label or a VIP's address)", { skip }, async (t) => {
  const dir = t.testdir({});
  const lab = await withLab(t);
  const host = await newHost(dir, lab);
  const mine = vipsOf(lab, 10);
  const hostOwn = vipsOf(lab, 99);
  const shared = vipsOf(lab, 20);
  // The host's addresses: one labelled exactly like vipcast would label app "web", one IPv6, one equal to a VIP.
  await nsRun(lab.a, 'ip', ['addr', 'add', hostOwn.v4, 'dev', 'lo', 'label', 'lo:web']);
  await nsRun(lab.a, 'ip', ['-6', 'addr', 'add', hostOwn.v6, 'dev', 'lo', 'nodad']);
  await nsRun(lab.a, 'ip', ['addr', 'add', shared.v4, 'dev', 'lo', 'label', 'lo:dns']);
  const before = await loAddrs(lab.a);

  await host.addVip(vip('web', mine.v4));
  t.same((await host.listVips()).map((b) => b.prefix.text), [mine.v4], 'only the address vipcast added is listed');
  await host.removeVip(vip('web', hostOwn.v4));
  await host.removeVip(vip('web', hostOwn.v6));
  const byLocal = (l: { local: string }[]): { local: string }[] => [...l].sort((x, y) => x.local.localeCompare(y.local));
  t.same(byLocal(await loAddrs(lab.a)), byLocal([...before, { local: mine.v4.split('/')[0]!, prefixlen: 32, label: 'lo:web' }]), 'removeVip of a host address does nothing');

  // An app whose VIP the host already has: served (listed for the app) but adopted, never deleted.
  await host.addVip(vip('dns', shared.v4));
  t.same((await host.listVips()).map((b) => `${b.app} ${b.prefix.text}`).sort(), [`dns ${shared.v4}`, `web ${mine.v4}`], 'adopted address listed for its app');
  await host.removeVip(vip('dns', shared.v4));
  t.ok((await loAddrs(lab.a)).some((a) => a.local === shared.v4.split('/')[0]), 'adopted address stays after removeVip');
  await host.addVip(vip('dns', shared.v4));
  await host.cleanup();
  t.same(await loAddrs(lab.a), before, 'cleanup removed exactly what vipcast added');
  t.same(await host.listVips(), [], 'nothing listed after cleanup');
});

t.test('NAT: clients in another namespace and on the node reach VIP:53 over TCP and UDP (IPv4, IPv6) and land on local_ip:8053', { skip }, async (t) => {
  const dir = t.testdir({});
  const lab = await withLab(t);
  const host = await newHost(dir, lab);
  const { v4, v6 } = vipsOf(lab);
  const [ip4, ip6] = [v4.split('/')[0]!, v6.split('/')[0]!];
  await nsRun(lab.b, 'ip', ['route', 'add', v4, 'via', lab.ipA]);
  await nsRun(lab.b, 'ip', ['-6', 'route', 'add', v6, 'via', lab.ip6A]);
  const servers = [await startServer(lab.a, lab.ipA, 8053), await startServer(lab.a, lab.ip6A, 8053)];
  t.teardown(() => servers.forEach((s) => s.kill()));

  await host.addVip(vip('dns', v4));
  await host.addVip(vip('dns', v6));
  t.match(await probe(lab.b, 'tcp', ip4, 53), /^ERR/, 'before setNat nothing answers on VIP:53');

  const rules = [nat('dns', v4, 'tcp:53:8053'), nat('dns', v4, 'udp:53:8053'), nat('dns', v6, 'tcp:53:8053'), nat('dns', v6, 'udp:53:8053')];
  await host.setNat(rules);
  t.same(await host.listNat(), rules, 'listNat maps the rules back to their app');

  t.equal(await probe(lab.b, 'tcp', ip4, 53), `srv tcp ${lab.ipA}:8053 from ${lab.ipB}`, 'remote IPv4 TCP client lands on local_ip:8053');
  t.equal(await probe(lab.b, 'udp', ip4, 53), `srv udp ${lab.ipA}:8053 from ${lab.ipB}`, 'remote IPv4 UDP client lands on local_ip:8053');
  t.equal(await probe(lab.b, 'tcp', ip6, 53), `srv tcp ${lab.ip6A}:8053 from ${lab.ip6B}`, 'remote IPv6 TCP client lands on [local_ip6]:8053');
  t.equal(await probe(lab.b, 'udp', ip6, 53), `srv udp ${lab.ip6A}:8053 from ${lab.ip6B}`, 'remote IPv6 UDP client lands on [local_ip6]:8053');
  t.match(await probe(lab.a, 'tcp', ip4, 53), new RegExp(`^srv tcp ${lab.ipA}:8053 from `), 'a client on the node itself reaches VIP:53 over TCP (OUTPUT)');
  t.match(await probe(lab.a, 'udp', ip4, 53), new RegExp(`^srv udp ${lab.ipA}:8053 from `), 'a client on the node itself reaches VIP:53 over UDP (OUTPUT)');
  t.match(await probe(lab.a, 'tcp', ip6, 53), new RegExp(`^srv tcp ${lab.ip6A}:8053 from `), 'a client on the node itself reaches [VIP6]:53 (OUTPUT)');

  await host.setNat([]);
  t.match(await probe(lab.b, 'tcp', ip4, 53), /^ERR/, 'after setNat([]) VIP:53 is closed again (TCP)');
  t.match(await probe(lab.b, 'udp', ip4, 53), /^ERR/, 'after setNat([]) VIP:53 is closed again (UDP)');
  t.same(await host.listNat(), [], 'no rules listed');
});

t.test('a changed UDP NAT target reaches a client that keeps its source port (stale conntrack entries cleared); TCP flows are left alone', { skip: skip || labSkip(['conntrack']) }, async (t) => {
  const dir = t.testdir({});
  const lab = await withLab(t);
  const host = await newHost(dir, lab);
  const { v4, v6 } = vipsOf(lab, 11);
  const [ip4, ip6] = [v4.split('/')[0]!, v6.split('/')[0]!];
  await nsRun(lab.b, 'ip', ['route', 'add', v4, 'via', lab.ipA]);
  await nsRun(lab.b, 'ip', ['-6', 'route', 'add', v6, 'via', lab.ip6A]);
  const servers: ChildProcess[] = [];
  for (const port of [8053, 9053]) servers.push(await startServer(lab.a, lab.ipA, port), await startServer(lab.a, lab.ip6A, port));
  t.teardown(() => servers.forEach((s) => s.kill()));
  await host.addVip(vip('dns', v4));
  await host.addVip(vip('dns', v6));
  const rules = (target: number) => [nat('dns', v4, `udp:53:${target}`), nat('dns', v6, `udp:53:${target}`), nat('dns', v4, `tcp:53:${target}`)];

  await host.setNat(rules(8053));
  t.equal(await probe(lab.b, 'tcp', ip4, 53), `srv tcp ${lab.ipA}:8053 from ${lab.ipB}`);
  t.equal(await probe(lab.b, 'udp', ip4, 53, 40053), `srv udp ${lab.ipA}:8053 from ${lab.ipB}`);
  t.equal(await probe(lab.b, 'udp', ip6, 53, 40053), `srv udp ${lab.ip6A}:8053 from ${lab.ip6B}`);
  const entries = async () => nsRun(lab.a, 'conntrack', ['-L', '-p', 'udp', '--orig-port-dst', '53']);
  t.match(await entries(), /sport=8053/, 'the kernel tracks the flow with the 8053 translation');

  await host.setNat(rules(9053));
  t.notMatch(await entries(), /sport=8053/, 'the entries translated to the old target are gone');
  t.match(await nsRun(lab.a, 'conntrack', ['-L', '-p', 'tcp', '--orig-port-dst', '53']), /sport=8053/, 'the TCP connection\'s entry is left alone');
  t.equal(await probe(lab.b, 'udp', ip4, 53, 40053), `srv udp ${lab.ipA}:9053 from ${lab.ipB}`, 'the same client (same source port) now lands on the new target');
  t.equal(await probe(lab.b, 'udp', ip6, 53, 40053), `srv udp ${lab.ip6A}:9053 from ${lab.ip6B}`, 'IPv6 too');

  // An unchanged rule set clears nothing: the flow keeps its entry.
  await host.setNat(rules(9053));
  t.match(await entries(), /sport=9053/, 'entries for the rules in force are kept');

  // Without the conntrack tool: setNat still succeeds (new flows get the new rules), one warning says what is lost.
  const lines: Array<{ level: number; msg: string }> = [];
  const { Writable } = await import('node:stream');
  const destination = new Writable({ write(chunk, _enc, cb) { lines.push(JSON.parse(String(chunk)) as { level: number; msg: string }); cb(); } });
  const bare = await newHost(dir, lab, { conntrackBinary: '/nonexistent/conntrack', log: createLogger({ destination, pretty: false }) });
  await bare.setNat(rules(8053));
  await bare.setNat(rules(9053));
  t.equal(await probe(lab.b, 'udp', ip4, 53, 40054), `srv udp ${lab.ipA}:9053 from ${lab.ipB}`, 'a new flow gets the rules in force');
  const warnings = lines.filter((l) => l.level === 40 && /conntrack is not installed/.test(l.msg));
  t.equal(warnings.length, 1, 'one warning, not one per rule or per change');
});

t.test('setNat replaces the whole set atomically, keeps exactly one jump each, and rewrites rules aimed at an old local_ip', { skip }, async (t) => {
  const dir = t.testdir({});
  const lab = await withLab(t);
  let localIp = lab.ipA;
  const host = await newHost(dir, lab, { localIp: () => localIp });
  const { v4 } = vipsOf(lab);
  const jumps = async (): Promise<Record<string, number>> => {
    const lines = await natRules(lab.a);
    return { PREROUTING: lines.filter((l) => /^-A PREROUTING .*-j VIPCAST$/.test(l)).length, OUTPUT: lines.filter((l) => /^-A OUTPUT .*-j VIPCAST$/.test(l)).length };
  };

  const setX = [nat('a', v4, 'tcp:53:8053'), nat('a', v4, 'udp:53:8053'), nat('b', v4, 'tcp:80:8080')];
  const setY = [nat('c', v4, 'tcp:443:8443'), nat('c', v4, 'udp:5353'), nat('d', v4, 'tcp:25:2525')];
  await host.setNat(setX);
  await host.setNat(setY);
  t.same(await host.listNat(), setY, 'the old set is gone, the new one present, in order');
  const once = await natRules(lab.a);
  await host.setNat(setY);
  t.same(await natRules(lab.a), once, 'setNat twice with the same set changes nothing');
  t.same(await jumps(), { PREROUTING: 1, OUTPUT: 1 }, 'exactly one jump from PREROUTING and one from OUTPUT');

  // A duplicate jump (a crash between -C and -I of two racing instances) is cleaned up by the next setNat.
  await nsRun(lab.a, 'iptables', ['-t', 'nat', '-A', 'OUTPUT', ...splitRule('-m addrtype --dst-type LOCAL -m comment --comment vipcast -j VIPCAST')]);
  t.same(await jumps(), { PREROUTING: 1, OUTPUT: 2 }, 'duplicate jump planted');
  await host.setNat(setY);
  t.same(await jumps(), { PREROUTING: 1, OUTPUT: 1 }, 'duplicate jump removed');
  await nsRun(lab.a, 'iptables', ['-t', 'nat', '-I', 'PREROUTING', '-j', 'VIPCAST']);
  await host.setNat(setY);
  t.same(await jumps(), { PREROUTING: 1, OUTPUT: 1 }, 'a jump of another shape (older version) is replaced, not kept beside');
  t.ok((await natRules(lab.a)).includes('-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment vipcast -j VIPCAST'), 'the canonical jump is the one left');

  // Atomicity: a concurrent reader sees the whole old set or the whole new set, never a mixture or an empty chain.
  const textOf = (set: NatBinding[]): string => set.map((r) => `${r.app}|${r.rule.text}`).join(',');
  const allowed = new Set([textOf(setX), textOf(setY)]);
  const seen = new Set<string>();
  let stop = false;
  const reader = (async () => {
    let reads = 0;
    while (!stop) {
      const lines = (await nsRun(lab.a, 'iptables', ['-w', '10', '-t', 'nat', '-S', 'VIPCAST'])).split('\n').filter((l) => l.startsWith('-A'));
      seen.add(lines.map((l) => {
        const a = splitRule(l);
        const arg = (n: string): string => a[a.indexOf(n) + 1]!;
        return `${arg('--comment').slice('vipcast:'.length)}|${arg('-p')}:${arg('--dport')}:${arg('--to-destination').split(':')[1]}`;
      }).join(','));
      reads++;
    }
    return reads;
  })();
  for (let i = 0; i < 10; i++) {
    await host.setNat(setX);
    await host.setNat(setY);
  }
  stop = true;
  const reads = await reader;
  t.ok(reads > 0, `the reader looked ${reads} times`);
  t.same([...seen].filter((s) => !allowed.has(s)), [], 'no reader ever saw a partial set');

  // local_ip changed: the rules still point at the old address, so they are not "vipcast's rules" any more.
  await nsRun(lab.a, 'ip', ['addr', 'add', '198.18.254.1/32', 'dev', 'lo']);
  localIp = '198.18.254.1';
  t.same(await host.listNat(), [], 'rules aimed at the old local_ip are not listed');
  await host.setNat(setY);
  t.same(await host.listNat(), setY, 'rewritten towards the new local_ip');
  t.ok((await natRules(lab.a)).filter((l) => l.startsWith('-A VIPCAST')).every((l) => l.includes('--to-destination 198.18.254.1:')), 'every rule targets the new address');
});

t.test('crash recovery and cleanup: a new instance lists what the previous one left; cleanup removes all of it and nothing else', { skip }, async (t) => {
  const dir = t.testdir({});
  const lab = await withLab(t);
  const { v4, v6 } = vipsOf(lab);
  const other = vipsOf(lab, 11);
  // What the host had before vipcast ever ran: its own NAT rules (with their own comments) and a labelled address.
  await nsRun(lab.a, 'iptables', ['-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', '9999', '-m', 'comment', '--comment', 'host-rule', '-j', 'REDIRECT', '--to-ports', '9998']);
  await nsRun(lab.a, 'iptables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'udp', '--dport', '9999', '-m', 'comment', '--comment', 'vipcast-lookalike', '-j', 'RETURN']);
  await nsRun(lab.a, 'iptables', ['-t', 'nat', '-N', 'HOSTCHAIN']);
  await nsRun(lab.a, 'iptables', ['-t', 'nat', '-A', 'HOSTCHAIN', '-p', 'tcp', '--dport', '53', '-m', 'comment', '--comment', 'vipcast:fake', '-j', 'RETURN']);
  await nsRun(lab.a, 'ip6tables', ['-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '--dport', '9999', '-j', 'RETURN']);
  await nsRun(lab.a, 'ip', ['addr', 'add', '198.19.250.250/32', 'dev', 'lo', 'label', 'lo:hostsvc']);
  const before = { v4: await natRules(lab.a), v6: await natRules(lab.a, 'ip6tables'), lo: await loAddrs(lab.a) };

  const first = await newHost(dir, lab);
  const vipsSet = [vip('dns', v4), vip('dns', v6), vip('web', other.v4)];
  const natSet = [nat('dns', v4, 'udp:53:8053'), nat('dns', v6, 'udp:53:8053'), nat('web', other.v4, 'tcp:80:8080')];
  for (const b of vipsSet) await first.addVip(b);
  await first.setNat(natSet);
  // "SIGKILL": the first instance is simply abandoned, nothing closed.

  const second = await newHost(dir, lab);
  const key = (b: VipBinding): string => `${b.app} ${b.prefix.text}`;
  t.same((await second.listVips()).map(key).sort(), vipsSet.map(key).sort(), 'the new instance lists the addresses left behind');
  const natKey = (b: NatBinding): string => `${b.app} ${b.vip.text} ${b.rule.text}`;
  t.same((await second.listNat()).map(natKey).sort(), natSet.map(natKey).sort(), 'and the NAT rules left behind');
  t.ok((await natRules(lab.a)).includes('-A PREROUTING -p tcp -m tcp --dport 9999 -m comment --comment host-rule -j REDIRECT --to-ports 9998'), 'host rule still there while vipcast runs');

  // The reconciler's recovery: keep what is still desired, remove what is not.
  await second.removeVip(vip('web', other.v4));
  await second.setNat(natSet.filter((r) => r.app === 'dns'));
  t.same((await second.listVips()).map(key).sort(), vipsSet.filter((b) => b.app === 'dns').map(key).sort(), 'stale address gone, desired ones kept');
  t.same((await second.listNat()).map(natKey).sort(), natSet.filter((r) => r.app === 'dns').map(natKey).sort(), 'stale rule gone, desired ones kept');

  await second.setNat([]);
  t.same((await natRules(lab.a)).filter((l) => !l.includes('VIPCAST')), before.v4, "setNat([]) leaves the host's rules as they were");

  await second.cleanup();
  await second.cleanup();
  t.same(await natRules(lab.a), before.v4, 'after cleanup the IPv4 nat table is exactly what the host had');
  t.same(await natRules(lab.a, 'ip6tables'), before.v6, 'after cleanup the IPv6 nat table is exactly what the host had');
  t.same(await loAddrs(lab.a), before.lo, 'after cleanup lo has exactly the host addresses');
  t.notOk(existsSync(second.stateFile), 'state file removed');
});

t.test('iptables_binary = iptables-legacy: NAT traffic, listing and cleanup work on the legacy backend', { skip }, async (t) => {
  const dir = t.testdir({});
  const lab = await withLab(t);
  const usable = await nsRun(lab.a, 'iptables-legacy', ['-w', '10', '-t', 'nat', '-S']).then(() => true, (err: Error) => err.message);
  if (usable !== true) {
    t.skip(`iptables-legacy unusable in a namespace here (kernel without the legacy ip_tables nat table?): ${usable}`, () => {});
    return;
  }
  const host = await newHost(dir, lab, { iptablesBinary: 'iptables-legacy' });
  const { v4 } = vipsOf(lab);
  await nsRun(lab.b, 'ip', ['route', 'add', v4, 'via', lab.ipA]);
  const server = await startServer(lab.a, lab.ipA, 8053);
  t.teardown(() => server.kill());
  const before = await natRules(lab.a, 'iptables-legacy');

  await host.addVip(vip('dns', v4));
  await host.setNat([nat('dns', v4, 'tcp:53:8053'), nat('dns', v4, 'udp:53:8053')]);
  t.ok((await natRules(lab.a, 'iptables-legacy')).some((l) => l.startsWith('-A VIPCAST')), 'rules are in the legacy tables');
  t.notOk((await natRules(lab.a, 'iptables-nft')).some((l) => l.includes('VIPCAST')), 'and not in the nft tables');
  t.equal(await probe(lab.b, 'tcp', v4.split('/')[0]!, 53), `srv tcp ${lab.ipA}:8053 from ${lab.ipB}`, 'TCP via the legacy backend');
  t.equal(await probe(lab.b, 'udp', v4.split('/')[0]!, 53), `srv udp ${lab.ipA}:8053 from ${lab.ipB}`, 'UDP via the legacy backend');
  t.equal((await host.listNat()).length, 2, 'listNat reads the legacy tables');
  await host.setNat([nat('dns', v4, 'tcp:53:8053'), nat('dns', v4, 'udp:53:8053')]);
  t.same((await natRules(lab.a, 'iptables-legacy')).filter((l) => l.endsWith('-j VIPCAST')), [
    '-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment vipcast -j VIPCAST',
    '-A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment vipcast -j VIPCAST',
  ], 'exactly one jump each after setNat twice');
  await host.cleanup();
  t.same(await natRules(lab.a, 'iptables-legacy'), before, 'cleanup leaves the legacy nat table as it was');
});

t.test('errors are coded: missing binary, no privileges, bad bindings, bad iptables_binary', { skip }, async (t) => {
  const dir = t.testdir({});
  const lab = await withLab(t);

  const viaNetns = await newHost(dir, lab, { iptablesBinary: 'iptables-nonexistent' });
  const err = await viaNetns.listNat().catch((e: VipcastError) => e);
  t.equal((err as VipcastError).code, 'VIPCAST_ERR_HOST_BINARY', 'missing iptables (through ip netns exec) -> VIPCAST_ERR_HOST_BINARY');
  t.match((err as Error).message, /iptables-nonexistent is not installed \(Debian package: iptables\)/, 'names the binary and the package');
  // Without netns the spawn itself fails with ENOENT (and nothing runs in the root namespace).
  const direct = new LinuxHostNetwork({ log: silentLogger(), iptablesBinary: '/nonexistent/iptables', localIp: () => undefined, stateFile: join(dir, 's.json') });
  const err2 = await direct.listNat().catch((e: VipcastError) => e);
  t.equal((err2 as VipcastError).code, 'VIPCAST_ERR_HOST_BINARY', 'ENOENT -> VIPCAST_ERR_HOST_BINARY');
  t.match((err2 as Error).message, /\/nonexistent\/iptables is not installed/, 'names the path');
  t.throws(() => new LinuxHostNetwork({ log: silentLogger(), iptablesBinary: 'nft', localIp: () => undefined }), { code: 'VIPCAST_ERR_VALUE' }, 'iptables_binary must be an iptables binary');

  const host = await newHost(dir, lab);
  const good = parsePrefix(vipsOf(lab).v4, 't');
  t.equal(await codeOf(host.addVip({ app: 'bad name;reboot', prefix: good })), 'VIPCAST_ERR_VALUE', 'app name checked again');
  t.equal(await codeOf(host.addVip({ app: 'web', prefix: { ...good, length: 33, text: `${good.address}/33` } })), 'VIPCAST_ERR_VALUE', 'forged prefix (length 33) refused');
  t.equal(await codeOf(host.addVip({ app: 'web', prefix: { ...good, text: '198.19.0.0/16' } })), 'VIPCAST_ERR_VALUE', 'prefix whose fields disagree refused');
  t.equal(await codeOf(host.setNat([{ ...nat('web', good.text, 'tcp:53:8053'), rule: { protocol: 'tcp', listenPort: 53, targetPort: 70000, text: 'tcp:53:8053' } }])), 'VIPCAST_ERR_VALUE', 'forged NAT rule refused');
  const noTarget = await new LinuxHostNetwork({ log: silentLogger(), netns: lab.a, localIp: () => undefined, stateFile: join(dir, 'n.json') }).setNat([nat('web', good.text, 'tcp:53')]);
  t.equal((noTarget.get('web') as VipcastError | undefined)?.code, 'VIPCAST_ERR_HOST', 'IPv4 NAT without local_ip: the app fails (VIPCAST_ERR_HOST)');
  t.same(await natRules(lab.a), ['-P PREROUTING ACCEPT', '-P INPUT ACCEPT', '-P OUTPUT ACCEPT', '-P POSTROUTING ACCEPT'], 'nothing was written by the refused calls');
  t.same((await loAddrs(lab.a)).map((a) => a.local), ['127.0.0.1', '::1'], 'no address was added by the refused calls');

  // No privileges: the same code run as nobody inside the node namespace.
  const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
  if (!setpriv) {
    t.skip('setpriv (util-linux) not installed: permission mapping not exercised', () => {});
    return;
  }
  const unpriv = await mkdtemp(join(tmpdir(), 'vipcast-unpriv-'));
  t.teardown(() => rm(unpriv, { recursive: true, force: true }));
  await chmod(unpriv, 0o777);
  const linuxUrl = pathToFileURL(fileURLToPath(new URL('../src/core/host/linux.js', import.meta.url))).href;
  const loggerUrl = pathToFileURL(fileURLToPath(new URL('../src/core/logger.js', import.meta.url))).href;
  const script = `
    const { LinuxHostNetwork } = await import(${JSON.stringify(linuxUrl)});
    const { silentLogger } = await import(${JSON.stringify(loggerUrl)});
    const { parsePrefix, parseNat } = await import(${JSON.stringify(linuxUrl.replace(/host\/linux\.js$/, 'values.js'))});
    const h = new LinuxHostNetwork({ log: silentLogger(), localIp: () => ${JSON.stringify(lab.ipA)}, stateFile: ${JSON.stringify(join(unpriv, 'state.json'))} });
    const code = (p) => p.then(() => 'resolved', (e) => e.code + ' ' + e.message);
    const prefix = parsePrefix(${JSON.stringify(vipsOf(lab).v4)}, 'x');
    console.log(JSON.stringify({
      addVip: await code(h.addVip({ app: 'web', prefix })),
      listNat: await code(h.listNat()),
      setNat: await code(h.setNat([{ app: 'web', vip: prefix, rule: parseNat('tcp:53:8053', 'x') }])),
    }));`;
  const out = await nsRun(lab.a, setpriv, ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', process.execPath, '--input-type=module', '-e', script]);
  const res = JSON.parse(out) as Record<string, string>;
  t.match(res.addVip, /^VIPCAST_ERR_HOST_PERMISSION .*run as root or with CAP_NET_ADMIN/, `ip addr add as nobody -> VIPCAST_ERR_HOST_PERMISSION (${res.addVip})`);
  t.match(res.listNat, /^VIPCAST_ERR_HOST_PERMISSION /, `iptables -S as nobody -> VIPCAST_ERR_HOST_PERMISSION (${res.listNat})`);
  t.match(res.setNat, /^VIPCAST_ERR_HOST_PERMISSION /, `iptables-restore as nobody -> VIPCAST_ERR_HOST_PERMISSION (${res.setNat})`);
  t.same((await loAddrs(lab.a)).map((a) => a.local), ['127.0.0.1', '::1'], 'nothing was added');
  t.same(JSON.parse(await readFile(join(unpriv, 'state.json'), 'utf8').catch(() => '{"vips":[]}')).vips, [], 'the failed add left no ownership record');
});

t.test('dry-run: every intended change is one JSON log line, state is kept in memory, nothing is touched', async (t) => {
  const lines: Record<string, unknown>[] = [];
  const { Writable } = await import('node:stream');
  const destination = new Writable({ write(chunk, _enc, cb) { lines.push(JSON.parse(String(chunk))); cb(); } });
  const host = new LoggingHostNetwork({ log: createLogger({ destination, pretty: false }), localIp: () => '198.18.0.1' });
  await host.start();
  await host.addVip(vip('web-frontend-long', '198.19.1.1/32'));
  await host.addVip(vip('web-frontend-long', '198.19.1.1/32'));
  await host.setNat([nat('web-frontend-long', '198.19.1.1/32', 'tcp:53:8053')]);
  await host.setNat([nat('web-frontend-long', '198.19.1.1/32', 'tcp:53:8053')]);
  t.same((await host.listVips()).map((b) => b.prefix.text), ['198.19.1.1/32'], 'listVips reflects addVip');
  t.same((await host.listNat()).map((b) => b.rule.text), ['tcp:53:8053'], 'listNat reflects setNat');
  await host.cleanup();
  t.same(await host.listVips(), [], 'cleanup empties the VIPs');
  t.same(await host.listNat(), [], 'cleanup empties the NAT rules');
  t.equal(await codeOf(host.addVip({ app: 'x y', prefix: parsePrefix('198.19.1.1/32', 't') })), 'VIPCAST_ERR_VALUE', 'validates like the real one');
  const actions = lines.filter((l) => l.event === 'host').map((l) => l.action);
  t.same(actions, ['add-vip', 'add-nat', 'remove-nat', 'remove-chain', 'remove-vip'], 'one line per change, repeats are silent; rules before addresses');
  t.match(lines.find((l) => l.action === 'add-vip'), { component: 'host', app: 'web-frontend-long', prefix: '198.19.1.1/32', label: 'lo:web-frontend' }, 'add-vip line has app, prefix and label');
  t.match(lines.find((l) => l.action === 'add-nat'), { vip: '198.19.1.1/32', nat: 'tcp:53:8053', to: '198.18.0.1' }, 'add-nat line has the rule and target');
});

t.test('bulk addVips: many addresses in one batch, each with its label; a crash-safe record for each; failures reported per prefix', { skip }, async (t) => {
  const dir = t.testdir({});
  const lab = await withLab(t);
  const host = await newHost(dir, lab);
  const S = Number(lab.ipA.split('.')[2]);
  const many = Array.from({ length: 40 }, (_, i) => vip(`bulk${i}`, `198.19.${S}.${i + 1}/32`));
  many.push(vip('bulk6', `2001:db8:${S.toString(16)}:ffff::1/128`));
  const failures = await host.addVips(many);
  t.same([...failures.keys()], [], 'no failure');
  const lo = await loAddrs(lab.a);
  for (const [i, b] of many.entries()) {
    const a = lo.find((x) => x.local === b.prefix.address);
    t.ok(a, `${b.prefix.text} on lo`);
    if (b.prefix.family === 'ipv4') t.equal(a?.label, `lo:bulk${i}`);
  }
  t.equal((await host.listVips()).length, 41, 'all listed as vipcast-owned');
  const again = await host.addVips(many);
  t.equal(again.size, 0, 'adding them again is harmless');
  const fresh = await newHost(dir, lab);
  t.equal((await fresh.listVips()).length, 41, 'a new instance (after a crash) knows them from the state file');
  await fresh.cleanup();
  t.notOk((await loAddrs(lab.a)).some((a) => a.local.startsWith(`198.19.${S}.`)), 'cleanup removed them all in one batch');
  t.equal(await codeOf(host.addVips([vip('ok', `198.19.${S}.200/32`), { app: 'bad name', prefix: many[0]!.prefix }])), 'VIPCAST_ERR_VALUE', 'a forged binding refuses the whole call before anything runs');
  t.notOk((await loAddrs(lab.a)).some((a) => a.local === `198.19.${S}.200`));
});

t.test('NAT per app: an app whose rules can\'t be made (no local IPv6 address, a local_ip of the wrong family) fails alone with the reason; the other apps\' rules are written and carry traffic', { skip }, async (t) => {
  const dir = t.testdir({});
  const lab = await withLab(t);
  let localIp6: string | undefined;
  const host = await newHost(dir, lab, { localIp6: () => localIp6 });
  const { v4, v6 } = vipsOf(lab, 12);
  const other = vipsOf(lab, 13);
  await nsRun(lab.b, 'ip', ['route', 'add', v4, 'via', lab.ipA]);
  await nsRun(lab.b, 'ip', ['-6', 'route', 'add', v6, 'via', lab.ip6A]);
  const servers = [await startServer(lab.a, lab.ipA, 8053), await startServer(lab.a, lab.ip6A, 8053)];
  t.teardown(() => servers.forEach((s) => s.kill()));
  for (const b of [vip('dns4', v4), vip('dns6', v6), vip('both', other.v4), vip('both', other.v6)]) await host.addVip(b);
  const rules = [nat('dns4', v4, 'tcp:53:8053'), nat('dns4', v4, 'udp:53:8053'), nat('dns6', v6, 'tcp:53:8053'), nat('both', other.v4, 'tcp:80:8080'), nat('both', other.v6, 'tcp:80:8080')];

  const failures = await host.setNat(rules);
  t.same([...failures.keys()].sort(), ['both', 'dns6'], 'the apps with an IPv6 rule fail, the IPv4-only app does not');
  t.match(failures.get('dns6')?.message, new RegExp(`NAT ${v6.replace(/\//g, '\\/')} tcp:53:8053 needs a local ipv6 address to DNAT to`), `the reason names the rule and what is missing (${failures.get('dns6')?.message})`);
  t.equal((failures.get('dns6') as VipcastError).code, 'VIPCAST_ERR_HOST');
  t.same(await host.listNat(), rules.filter((r) => r.app === 'dns4'), 'only the IPv4-only app\'s rules are in the chain: none of a failed app\'s rules, not even its IPv4 ones');
  t.equal(await probe(lab.b, 'tcp', v4.split('/')[0]!, 53), `srv tcp ${lab.ipA}:8053 from ${lab.ipB}`, 'the IPv4 app\'s DNAT carries TCP');
  t.equal(await probe(lab.b, 'udp', v4.split('/')[0]!, 53), `srv udp ${lab.ipA}:8053 from ${lab.ipB}`, 'and UDP');
  t.notOk((await natRules(lab.a, 'ip6tables')).some((l) => l.includes('VIPCAST')), 'the IPv6 nat table was not touched');

  // A bad target (an IPv4 address where the IPv6 one belongs) fails the same apps, with that reason.
  localIp6 = lab.ipA;
  const bad = await host.setNat(rules);
  t.same([...bad.keys()].sort(), ['both', 'dns6']);
  t.match(bad.get('dns6')?.message, /can't be made: .*local_ip6.*is not an ipv6 address/, `bad target named (${bad.get('dns6')?.message})`);

  // With a target every app's rules are written, in one write per family.
  localIp6 = lab.ip6A;
  t.same([...(await host.setNat(rules)).keys()], [], 'no failure once the host has an IPv6 target');
  t.same((await host.listNat()).length, rules.length, 'every rule listed');
  t.equal(await probe(lab.b, 'tcp', v6.split('/')[0]!, 53), `srv tcp ${lab.ip6A}:8053 from ${lab.ip6B}`, 'the IPv6 app\'s DNAT carries traffic now');
  await host.cleanup();
});

t.test('state file: garbage or a wrong shape is kept aside (.corrupt-<time>) and reported with both paths; the addresses added afterwards are recorded and removed by cleanup', { skip }, async (t) => {
  const lab = await withLab(t);
  const { v4 } = vipsOf(lab, 14);
  for (const [what, content] of [['garbage', '\u0000{"vips": [tru'], ['a JSON array', '[]'], ['vips not a list', '{"version":1,"vips":{"web":"198.18.0.1/32"}}'], ['null', 'null']] as const) {
    const dir = t.testdir({ 'host-state.json': content });
    const lines: Array<{ level: number; msg: string; stateFile?: string; keptAs?: string }> = [];
    const { Writable } = await import('node:stream');
    const destination = new Writable({ write(chunk, _enc, cb) { lines.push(JSON.parse(String(chunk)) as { level: number; msg: string }); cb(); } });
    const host = await newHost(dir, lab, { log: createLogger({ destination, pretty: false }) });
    await Promise.all([host.listVips(), host.listVips()]);
    const { readdirSync } = await import('node:fs');
    const aside = readdirSync(dir).filter((f) => f.startsWith('host-state.json.corrupt-'));
    t.equal(aside.length, 1, `${what}: kept aside once (${aside.join(', ')})`);
    t.equal(aside[0] && await readFile(join(dir, aside[0]), 'utf8'), content, `${what}: unchanged`);
    t.notOk(existsSync(host.stateFile), `${what}: not left in place`);
    const err = lines.find((l) => l.level === 50 && /state file is corrupt/.test(l.msg));
    t.match(err, { stateFile: host.stateFile, keptAs: join(dir, aside[0] ?? 'none') }, `${what}: an error names both paths`);
    await host.addVip(vip('web', v4));
    t.match(JSON.parse(await readFile(host.stateFile, 'utf8')), { vips: [{ app: 'web', prefix: v4, owned: true }] }, `${what}: a fresh file records the address added`);
    await host.cleanup();
    t.notOk((await loAddrs(lab.a)).some((a) => a.local === v4.split('/')[0]), `${what}: cleanup removed the address vipcast added`);
  }
});
