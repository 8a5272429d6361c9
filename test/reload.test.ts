/**
 * SIGHUP reload as a transaction, end to end (issue 5): vipcast + gobgpd in "node", BIRD in "tor"; BIRD's route
 * timestamps and session "since" show whether anything was re-sent or reset.
 */
import t from 'tap';
import { sameInstant } from './lab/bird.js';
import { labSkip, waitFor } from './lab/netns.js';
import { nsFetch, stackFor, TOR_AS, type Stack } from './lab/stack.js';
import { BIN, DaemonProcess, freePort } from './helpers/daemon.js';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { ReloadResult } from '../src/core/reload.js';

const pexec = promisify(execFile);

const skip = labSkip(['gobgpd', 'bird', 'birdc', 'iptables']);

const prefixes = async (s: Stack, protocol?: string) =>
  (protocol ? await s.bird.routes(protocol) : await s.routes()).map((r) => r.prefix).sort();

/** Send SIGHUP and wait for the reload's outcome line; returns it. */
async function hup(d: DaemonProcess): Promise<{ msg: string; [k: string]: unknown }> {
  const from = d.lines.length;
  d.kill('SIGHUP');
  return d.waitLine((l) => l.component === 'reload' && /^reload(: (done|nothing changed)| refused: the config in force| failed)/.test(l.msg), 20_000, 'reload outcome', from);
}

const apps = (list: string) => `apps:\n${list}`;

t.test('reload with an unchanged file: no route re-sent, no session reset', { skip }, async (t) => {
  const s = await stackFor(t);
  const body = `${s.baseConfig()}${apps('  - { name: a, vip: 198.18.210.1/32 }\n  - { name: b, vip: 198.18.210.2/32 }\n')}`;
  const file = s.writeConfig(body);
  const d = s.startVipcast(file);
  await waitFor(async () => (await s.routes()).length === 2, 15_000, 'routes at BIRD');
  const before = (await s.routes()).map((r) => [r.prefix, r.since]);
  const session = (await s.bird.protocol(s.protocol)).since;
  await new Promise((r) => setTimeout(r, 50)); // BIRD's timestamps have ms resolution
  const outcome = await hup(d);
  t.equal(outcome.msg, 'reload: nothing changed');
  await new Promise((r) => setTimeout(r, 500));
  const after = (await s.routes()).map((r) => [r.prefix, r.since]);
  t.same(after.map((r) => r[0]), before.map((r) => r[0]), 'same routes');
  t.ok(after.every((r, i) => sameInstant(r[1]!, before[i]![1]!)), 'route timestamps unchanged (no UPDATE re-sent)');
  t.ok(sameInstant((await s.bird.protocol(s.protocol)).since, session), 'session not reset');
});

t.test('apps added, removed, VIP changed, communities changed: BIRD shows exactly the new state, others untouched', { skip }, async (t) => {
  const s = await stackFor(t);
  const v1 = s.writeConfig(`${s.baseConfig()}${apps(`  - { name: keep, vip: 198.18.211.1/32 }
  - { name: gone, vip: 198.18.211.2/32 }
  - { name: recolor, vip: 198.18.211.3/32, vip_config: { bgp_communities: ["65001:1"] } }
  - { name: move, vip: 198.18.211.4/32 }
`)}`);
  const d = s.startVipcast(v1);
  await waitFor(async () => (await s.routes()).length === 4, 15_000, 'four routes');
  const keepSince = (await s.routes('198.18.211.1/32'))[0]!.since;
  const session = (await s.bird.protocol(s.protocol)).since;
  s.writeConfig(`${s.baseConfig()}${apps(`  - { name: keep, vip: 198.18.211.1/32 }
  - { name: recolor, vip: 198.18.211.3/32, vip_config: { bgp_communities: ["65001:2", "65001:7:7"] } }
  - { name: move, vip: 198.18.211.5/32 }
  - { name: added, vip: 198.18.211.6/32 }
`)}`);
  const outcome = await hup(d);
  t.equal(outcome.msg, 'reload: done');
  t.same([...(outcome.changes as string[])].sort(), ['app added: added', 'app gone: removed', 'app move: changed', 'app recolor: changed'], 'changes listed');
  await waitFor(async () => JSON.stringify(await prefixes(s)) === JSON.stringify(['198.18.211.1/32', '198.18.211.3/32', '198.18.211.5/32', '198.18.211.6/32']), 10_000, 'the new set at BIRD');
  const recolor = (await s.routes('198.18.211.3/32'))[0]!;
  t.same(recolor.communities, ['65001:2'], 'new communities on the same prefix');
  t.same(recolor.largeCommunities, ['65001:7:7']);
  t.ok(sameInstant((await s.routes('198.18.211.1/32'))[0]!.since, keepSince), 'the unchanged app was not re-announced');
  t.ok(sameInstant((await s.bird.protocol(s.protocol)).since, session), 'session kept');
  // Make-before-break on the VIP change: the daemon announced .5 before it withdrew .4.
  const ann = d.lines.findIndex((l) => l.event === 'route' && l.action === 'announce' && l.prefix === '198.18.211.5/32');
  const wd = d.lines.findIndex((l) => l.event === 'route' && l.action === 'withdraw' && l.prefix === '198.18.211.4/32');
  t.ok(ann >= 0 && wd > ann, 'new VIP announced before the old one was withdrawn');
  t.notOk(d.lines.some((l) => l.event === 'route' && l.action === 'withdraw' && l.prefix === '198.18.211.3/32'), 'a community change is a replace, never a withdraw');
});

t.test('peer added: the existing session is not reset; MD5 password changed: that session comes back with it', { skip }, async (t) => {
  const s = await stackFor(t, { second: { password: 'pw-new' } });
  // No bgp.local_ip: each session uses the address facing its peer (BIRD expects the second one from 198.19.S.1).
  const body = (peers: string) => `${s.baseConfig('', { peers, localIp: false })}${apps('  - { name: a, vip: 198.18.212.1/32 }\n')}`;
  const d = s.startVipcast(s.writeConfig(body('')));
  await waitFor(async () => (await s.routes()).length === 1, 15_000, 'route at the first peer');
  const session = (await s.bird.protocol(s.protocol)).since;
  s.writeConfig(body(`    - { peer_ip: ${s.second.tor}, peer_as: ${TOR_AS}, md5_password: "pw-old" }\n`));
  t.equal((await hup(d)).msg, 'reload: done');
  await new Promise((r) => setTimeout(r, 3000));
  t.not((await s.bird.protocol('second')).bgpState, 'Established', 'wrong password: no session');
  t.same(await prefixes(s, 'second'), []);
  s.writeConfig(body(`    - { peer_ip: ${s.second.tor}, peer_as: ${TOR_AS}, md5_password: "pw-new" }\n`));
  t.equal((await hup(d)).msg, 'reload: done');
  await s.bird.waitEstablished('second', 15_000);
  await waitFor(async () => (await prefixes(s, 'second')).length === 1, 10_000, 'route over the MD5 session');
  t.ok(sameInstant((await s.bird.protocol(s.protocol)).since, session), 'the first session was never reset');
  t.notOk(d.lines.some((l) => JSON.stringify(l).includes('pw-new') || JSON.stringify(l).includes('pw-old')), 'no log line shows a password');
});

t.test('local AS changed: the sessions re-form with the new AS and the routes come back', { skip }, async (t) => {
  const s = await stackFor(t, { anyPeerAs: true });
  const body = (asn: number) => `${s.baseConfig('', { localAs: asn })}${apps('  - { name: a, vip: 198.18.213.1/32 }\n')}`;
  const d = s.startVipcast(s.writeConfig(body(65001)));
  await waitFor(async () => (await s.routes()).length === 1, 15_000, 'route');
  t.same((await s.routes())[0]!.asPath, [65001]);
  s.writeConfig(body(65077));
  t.equal((await hup(d)).msg, 'reload: done');
  const r = await waitFor(async () => (await s.routes()).find((x) => x.asPath[0] === 65077), 20_000, 'route from AS 65077');
  t.equal(r!.prefix, '198.18.213.1/32');
});

t.test('an invalid file changes nothing: the daemon keeps running and /status shows the errors', { skip }, async (t) => {
  const s = await stackFor(t);
  const good = `${s.baseConfig('', { listenAddr: '127.0.0.1:9180' })}${apps('  - { name: a, vip: 198.18.214.1/32 }\n')}`;
  const file = s.writeConfig(good);
  const d = s.startVipcast(file);
  await waitFor(async () => (await s.routes()).length === 1, 15_000, 'route');
  const since = (await s.routes())[0]!.since;
  s.writeConfig(`${s.baseConfig('', { listenAddr: '127.0.0.1:9180' })}${apps('  - { name: a, vip: 198.18.214.1/33, monitor: [] }\n  - { name: b, vip: 198.18.214.2/32 }\n')}`);
  const outcome = await hup(d);
  t.match(outcome.msg, /^reload refused/);
  const status = JSON.parse((await nsFetch(s.node, 'http://127.0.0.1:9180/status')).body) as { last_reload: { ok: boolean; errors: string[]; configInForce: string } };
  t.equal(status.last_reload.ok, false);
  t.match(status.last_reload.errors.join('\n'), /apps\[0\]\.vip: .*198\.18\.214\.1\/33/);
  t.match(status.last_reload.errors.join('\n'), /apps\[0\]\.monitor: unknown key/);
  t.same(await prefixes(s), ['198.18.214.1/32'], 'BIRD unchanged (b not added)');
  t.ok(sameInstant((await s.routes())[0]!.since, since), 'route not re-sent');
  t.equal(d.child.exitCode, null, 'still running');
  // POST /reload with the bad file answers 422 with the errors.
  const api = await nsFetch(s.node, 'http://127.0.0.1:9180/reload', 'POST');
  t.equal(api.status, 422);
  t.match(api.body, /apps\[0\]\.vip/);
  s.writeConfig(good.replace('  - { name: a, vip: 198.18.214.1/32 }\n', '  - { name: a, vip: 198.18.214.1/32 }\n  - { name: b, vip: 198.18.214.2/32 }\n'));
  t.equal((await hup(d)).msg, 'reload: done', 'a fixed file reloads');
  await waitFor(async () => (await prefixes(s)).length === 2, 10_000, 'b added after the fix');
});

t.test('a reload whose apply step fails: the previous state is back at BIRD', { skip }, async (t) => {
  const s = await stackFor(t);
  const v1 = `${s.baseConfig()}${apps('  - { name: a, vip: 198.18.215.1/32 }\n')}`;
  const d = s.startVipcast(s.writeConfig(v1));
  await waitFor(async () => (await s.routes()).length === 1, 15_000, 'route');
  const since = (await s.routes())[0]!.since;
  const session = (await s.bird.protocol(s.protocol)).since;
  // A peer gobgpd can't be given: gocast's "default gateway" peer, and this namespace has no default route.
  s.writeConfig(v1.replace('bgp:\n', 'bgp:\n  peer_as: 65000\n').replace('  - { name: a, vip: 198.18.215.1/32 }\n', '  - { name: a, vip: 198.18.215.1/32 }\n  - { name: b, vip: 198.18.215.2/32 }\n'));
  const outcome = await hup(d);
  t.equal(outcome.msg, 'reload failed while applying: restoring the previous config');
  await new Promise((r) => setTimeout(r, 1500));
  t.same(await prefixes(s), ['198.18.215.1/32'], 'b was never announced');
  t.ok(sameInstant((await s.routes())[0]!.since, since), 'a was not re-sent');
  t.ok(sameInstant((await s.bird.protocol(s.protocol)).since, session), 'the session was not reset');
  t.equal(d.child.exitCode, null, 'still running');
});

t.test('20 SIGHUPs in a burst: at most two reloads run, nothing is re-sent, no errors', { skip }, async (t) => {
  const s = await stackFor(t);
  const d = s.startVipcast(s.writeConfig(`${s.baseConfig()}${apps('  - { name: a, vip: 198.18.216.1/32 }\n')}`));
  await waitFor(async () => (await s.routes()).length === 1, 15_000, 'route');
  const since = (await s.routes())[0]!.since;
  const session = (await s.bird.protocol(s.protocol)).since;
  await new Promise((r) => setTimeout(r, 50)); // BIRD's timestamps have ms resolution
  const from = d.lines.length;
  for (let i = 0; i < 20; i++) d.kill('SIGHUP');
  await new Promise((r) => setTimeout(r, 3000));
  // The kernel merges a SIGHUP still pending, so up to 20 requests reach the daemon; the runs say how many they answered.
  const outcomes = d.lines.slice(from).filter((l) => l.component === 'reload');
  const answered = outcomes.reduce((n, l) => n + Number(l.requests), 0);
  t.ok(outcomes.length >= 1 && outcomes.length <= 2, `${outcomes.length} reloads ran for 20 signals (${answered} delivered)`);
  t.ok(answered >= outcomes.length && answered <= 20, 'each delivered signal was answered by one run');
  t.ok(outcomes.every((l) => l.msg === 'reload: nothing changed'), 'each run found nothing to change');
  t.ok(sameInstant((await s.routes())[0]!.since, since), 'the route was not re-sent');
  t.ok(sameInstant((await s.bird.protocol(s.protocol)).since, session), 'the session was not reset');
  t.same(d.lines.slice(from).filter((l) => l.level >= 50), [], 'no error logged');
  t.equal(d.child.exitCode, null, 'still running');
});

// Agent settings that need more than new values (issue 8, item 9): the real CLI in dry-run, no lab needed.

interface Status { check_pool: { check_workers: number; workers: number; completed: number }; last_reload?: ReloadResult }
const dryRunConfig = (dir: string, agent: string, port: number) => {
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `agent:\n  listen_addr: "127.0.0.1:${port}"\n  monitor_interval: 200ms\n${agent}routing: { plugin: dry-run }\nbgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }\napps:\n  - { name: a, vip: 198.18.125.1/32, monitors: ["port:tcp:${port}"] }\n`);
  return file;
};
const getStatus = async (port: number) => (await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as Status;
const postReload = async (port: number) => {
  const res = await fetch(`http://127.0.0.1:${port}/reload`, { method: 'POST' });
  return { code: res.status, result: (await res.json()) as ReloadResult };
};

t.test('reload of agent.check_workers: a pool of the new size runs the checks from then on, the app stays up', async (t) => {
  const dir = t.testdir();
  const port = await freePort();
  const file = dryRunConfig(dir, '  check_workers: 1\n', port);
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine((l) => l.event === 'route' && l.action === 'announce', 15_000, 'a announced (its port check passes: the API listens there)');
  await waitFor(async () => (await getStatus(port)).check_pool.workers === 1, 5000, 'one worker');
  t.equal((await getStatus(port)).check_pool.check_workers, 1);
  dryRunConfig(dir, '  check_workers: 3\n', port);
  const { code, result } = await postReload(port);
  t.equal(code, 200);
  t.same(result.changes, ['agent.checkWorkers: changed']);
  t.same(result.restartNeeded, []);
  const resized = await d.waitLine((l) => l.msg.startsWith('check pool resized'), 5000, 'resize logged');
  t.match(resized, { workers: 3, previous: 1 });
  // The new pool's own counters: three live worker threads, and checks answered by it after the swap.
  const s = await waitFor(async () => {
    const st = await getStatus(port);
    return st.check_pool.workers === 3 && st.check_pool.completed >= 3 ? st : undefined;
  }, 10_000, 'three workers answering checks');
  t.equal(s!.check_pool.check_workers, 3);
  t.same(s!.last_reload?.changes, ['agent.checkWorkers: changed'], '/status shows the reload');
  t.notOk(d.lines.some((l) => l.event === 'route' && l.action === 'withdraw'), 'the app was never withdrawn');
  t.notOk(d.lines.some((l) => l.level >= 50), 'no error logged');
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
});

t.test('reload of agent.pid_file moves the pid file; a path that cannot be written fails the reload and the old file stays', async (t) => {
  const dir = t.testdir();
  const port = await freePort();
  const file = dryRunConfig(dir, '  pid_file: first.pid\n', port);
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine((l) => l.msg === 'vipcast running', 15_000, 'running');
  const pid = `${d.child.pid}\n`;
  t.equal(readFileSync(join(dir, 'first.pid'), 'utf8'), pid, 'written at start');
  dryRunConfig(dir, '  pid_file: second.pid\n', port);
  let r = await postReload(port);
  t.equal(r.code, 200);
  t.same(r.result.changes, ['agent.pidFile: changed']);
  t.equal(readFileSync(join(dir, 'second.pid'), 'utf8'), pid, 'the new file holds the pid');
  t.notOk(existsSync(join(dir, 'first.pid')), 'the old file is gone');

  dryRunConfig(dir, '  pid_file: no-such-dir/third.pid\n', port);
  r = await postReload(port);
  t.equal(r.code, 422, 'the reload failed');
  t.match(r.result.errors.join(), /agent\.pid_file: cannot write ".*no-such-dir\/third\.pid"/);
  t.equal(readFileSync(join(dir, 'second.pid'), 'utf8'), pid, 'the old file stays');
  // `vipcast reload` through the file in force still reaches the daemon.
  dryRunConfig(dir, '  pid_file: second.pid\n', port);
  const from = d.lines.length;
  const out = await pexec(process.execPath, [BIN, 'reload', '--pid-file', join(dir, 'second.pid')]);
  t.match(out.stdout, /sent SIGHUP/);
  t.equal((await d.waitLine((l) => l.component === 'reload' && /^reload/.test(l.msg), 5000, 'reload', from)).msg, 'reload: nothing changed', 'the failed reload changed nothing');
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
  t.notOk(existsSync(join(dir, 'second.pid')), 'removed at exit');
});

t.test('reload of agent.state_file: reported as needing a restart (result and /status), not claimed as applied, reported again by the next reload', async (t) => {
  const dir = t.testdir();
  const port = await freePort();
  const file = dryRunConfig(dir, '  state_file: a.json\n', port);
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine((l) => l.msg === 'vipcast running', 15_000, 'running');
  dryRunConfig(dir, '  state_file: b.json\n', port);
  const first = await postReload(port);
  t.equal(first.code, 200, 'the rest of the reload applies');
  t.same(first.result.restartNeeded, ['agent.stateFile']);
  t.same(first.result.changes, ['agent.stateFile: changed in the file, not applied: needs a restart']);
  t.same((await getStatus(port)).last_reload?.restartNeeded, ['agent.stateFile'], '/status shows it');
  t.ok(d.lines.some((l) => l.level === 40 && /take effect only at the next start/.test(l.msg)), 'a warning says so');
  const second = await postReload(port);
  t.same(second.result.restartNeeded, ['agent.stateFile'], 'still not in force: the next reload says so again');
  t.equal(second.result.configInForce, first.result.configInForce, 'the config in force is the same');
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
});
