/**
 * vipcast end to end in dry-run: the real CLI as a child process, real piscina pool, real TCP listeners; routes and
 * host changes are read from its JSON log lines.
 */
import t from 'tap';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { BIN, DaemonProcess, closeServer, freePort, repeatedTopLevelKey, serve, type LogLine } from './helpers/daemon.js';

const pexec = promisify(execFile);

const isRoute = (action: string, prefix: string) => (l: LogLine) => l.event === 'route' && l.action === action && l.prefix === prefix;

/** Replace `from` (which must be there) everywhere in `text`. */
function swap(text: string, from: string, to: string): string {
  if (!text.includes(from)) throw new Error(`examples/vipcast.yaml no longer contains ${JSON.stringify(from)}`);
  return text.split(from).join(to);
}

function config(dir: string, body: string): string {
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, body);
  return file;
}

t.test('the quick start: examples/vipcast.yaml as `npm start` runs it announces dns at once; the flag file withdraws it; web follows its port', async (t) => {
  // The bundled example, with only its host-wide names moved so the test cannot collide with anything.
  const dir = t.testdir();
  const flag = join(dir, 'dns-down');
  const [webPort, apiPort] = [await freePort(), await freePort()];
  let text = readFileSync(new URL('../../examples/vipcast.yaml', import.meta.url), 'utf8');
  text = swap(text, '/tmp/vipcast-example-dns-down', flag);
  text = swap(text, 'port:tcp:8080', `port:tcp:${webPort}`);
  text = swap(text, '127.0.0.1:9180', `127.0.0.1:${apiPort}`);
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: { start: string } };
  const startArgs = pkg.scripts.start.split('node bin/vipcast.js ')[1]!.split(' ');
  t.same(startArgs, ['run', '-c', 'examples/vipcast.yaml', '--dry-run'], 'npm start runs this');
  const d = new DaemonProcess(startArgs.map((a) => (a === 'examples/vipcast.yaml' ? config(dir, text) : a)));
  t.teardown(() => d.stop());
  const started = performance.now();
  const v4 = await d.waitLine(isRoute('announce', '198.18.100.53/32'), 10_000, 'dns announced (process start, worker boot and the first exec check on a loaded machine)');
  await d.waitLine(isRoute('announce', '2001:db8:100::53/128'), 1000, 'dns IPv6 VIP announced');
  t.comment(`dns announced ${Math.round(v4.at - started)} ms after start, with no action`);
  t.same(v4.communities, ['65001:100', '65001:53'], 'global then app community');
  t.notOk(d.lines.some(isRoute('announce', '198.18.100.10/32')), 'web is DOWN: nothing listens on its port');

  let from = d.lines.length;
  writeFileSync(flag, '');
  await d.waitLine(isRoute('withdraw', '198.18.100.53/32'), 5000, 'dns withdrawn after the flag file appears', from);
  await d.waitLine(isRoute('withdraw', '2001:db8:100::53/128'), 1000, 'dns IPv6 VIP withdrawn', from);
  from = d.lines.length;
  rmSync(flag);
  await d.waitLine(isRoute('announce', '198.18.100.53/32'), 5000, 'dns back once the flag file is gone', from);

  from = d.lines.length;
  const server = await serve(t, webPort);
  await d.waitLine(isRoute('announce', '198.18.100.10/32'), 5000, 'web announced once its port listens', from);
  await closeServer(server);
  await d.waitLine(isRoute('withdraw', '198.18.100.10/32'), 5000, 'web withdrawn once its port closes', from);
  const status = JSON.parse(await (await fetch(`http://127.0.0.1:${apiPort}/status`)).text()) as { routing: string; apps: Array<{ name: string; state: string }> };
  t.equal(status.routing, 'dry-run');
  t.same(status.apps.map((a) => [a.name, a.state]).sort(), [['dns', 'up'], ['web', 'down']]);
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
  t.same(d.repeatedKeys, [], 'no log line names a key twice (the dry-run router bound component twice)');
});

t.test('repeatedTopLevelKey finds a key named twice at the top level only', async (t) => {
  t.equal(repeatedTopLevelKey('{"a":1,"b":{"a":2},"c":"a:"}'), undefined);
  t.equal(repeatedTopLevelKey('{"component":"router","x":[{"component":1}],"component":"router"}'), 'component');
  t.equal(repeatedTopLevelKey('{"msg":"say \\"msg\\": twice","msg":"x"}'), 'msg');
});

t.test('a port-checked app is announced when its listener opens, withdrawn when it closes, and SIGTERM withdraws all', async (t) => {
  const dir = t.testdir();
  const port = await freePort();
  const file = config(dir, `
agent:
  listen_addr: ""
  monitor_interval: 200ms
  cleanup_timer: 1m
routing:
  plugin: dry-run
bgp:
  local_as: 65001
  local_ip: 198.18.0.2
  communities: ["65001:100"]
  peers:
    - peer_ip: 198.18.0.1
      peer_as: 65000
apps:
  - name: web
    vip: 198.18.100.10/32
    vip_config:
      bgp_communities: ["65001:200", "65001:1:2"]
    monitors: ["port:tcp:${port}"]
  - name: always
    vip: 2001:db8:100::1/128
`);
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  // An app with no monitors is up at once (and warned about).
  const always = await d.waitLine(isRoute('announce', '2001:db8:100::1/128'), 20_000, 'announce of the app without monitors');
  t.equal(always.next_hop, '::', 'IPv6 route next hop: the session address');
  t.ok(d.lines.some((l) => l.app === 'always' && /no monitors/.test(l.msg)), 'warned that it has no monitors');
  // The pool is warm once web's first check has come back (down: nothing listens yet).
  await d.waitLine((l) => l.app === 'web' && l.state === 'down', 20_000, 'web checked once');
  t.notOk(d.lines.some(isRoute('announce', '198.18.100.10/32')), 'web is not announced while nothing listens');

  const server = await serve(t, port);
  const opened = performance.now();
  const ann = await d.waitLine(isRoute('announce', '198.18.100.10/32'), 3000, 'announce of web');
  t.ok(ann.at - opened < 1000, `announced ${Math.round(ann.at - opened)} ms after the listener opened (interval 200 ms x rise 1; within a second)`);
  t.same(
    { prefix: ann.prefix, next_hop: ann.next_hop, origin: ann.origin, communities: ann.communities, large_communities: ann.large_communities, app: ann.app },
    { prefix: '198.18.100.10/32', next_hop: '198.18.0.2', origin: 'igp', communities: ['65001:100', '65001:200'], large_communities: ['65001:1:2'], app: 'web' },
  );
  const addIdx = d.lines.findIndex((l) => l.event === 'host' && l.action === 'add-vip' && l.prefix === '198.18.100.10/32');
  t.ok(addIdx >= 0 && addIdx < d.lines.indexOf(ann), 'the address was added before the announce');

  await closeServer(server);
  const closed = performance.now();
  const wd = await d.waitLine(isRoute('withdraw', '198.18.100.10/32'), 3000, 'withdraw of web');
  t.ok(wd.at - closed < 1000, `withdrawn ${Math.round(wd.at - closed)} ms after the listener closed (within a second)`);
  t.match(wd.reason, /port:tcp:\d+/, 'the withdraw says why');

  await serve(t, port);
  const from = d.lines.length;
  await d.waitLine(isRoute('announce', '198.18.100.10/32'), 3000, 're-announce', from);
  const beforeTerm = d.lines.length;
  d.kill('SIGTERM');
  const { code } = await d.exited;
  t.equal(code, 0, 'exit 0 after SIGTERM');
  const after = d.lines.slice(beforeTerm);
  t.ok(after.some(isRoute('withdraw', '198.18.100.10/32')), 'web withdrawn at shutdown');
  t.ok(after.some(isRoute('withdraw', '2001:db8:100::1/128')), 'always withdrawn at shutdown');
  const lastWithdraw = Math.max(...after.map((l, i) => (l.event === 'route' && l.action === 'withdraw' ? i : -1)));
  const firstRemove = after.findIndex((l) => l.event === 'host' && l.action === 'remove-vip');
  t.ok(firstRemove > lastWithdraw, 'addresses are removed only after every withdraw');
});

t.test('agent.shutdown_drain: SIGTERM re-announces every route with 65535:0, withdraws after the drain, exits 0', async (t) => {
  const dir = t.testdir();
  const file = config(dir, `
agent: { listen_addr: "", monitor_interval: 200ms, shutdown_drain: 800ms }
routing: { plugin: dry-run }
bgp: { local_as: 65001, local_ip: 198.18.0.2, communities: ["65001:100"], peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
apps:
  - { name: a, vip: [198.18.100.90/32, 2001:db8:100::90/128] }
`);
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine(isRoute('announce', '2001:db8:100::90/128'), 20_000, 'announce');
  await d.waitLine(isRoute('announce', '198.18.100.90/32'), 1000, 'announce');
  const from = d.lines.length;
  d.kill('SIGTERM');
  await d.waitLine((l) => l.event === 'drain', 3000, 'drain started', from);
  d.kill('SIGHUP');
  const { code } = await d.exited;
  t.equal(code, 0);
  const after = d.lines.slice(from);
  t.ok(after.some((l) => l.component === 'reload' && l.msg === 'reload refused: the daemon is stopping'), 'a SIGHUP during the drain is refused, and says so');
  t.notOk(after.some((l) => l.component === 'reload' && /^reload: /.test(l.msg)), 'no reload ran');
  const routes = after.filter((l) => l.event === 'route');
  t.same(routes.map((l) => `${l.action} ${l.prefix}`).sort(), [
    'announce 198.18.100.90/32', 'announce 2001:db8:100::90/128', 'withdraw 198.18.100.90/32', 'withdraw 2001:db8:100::90/128',
  ]);
  const drained = routes.filter((l) => l.action === 'announce');
  t.ok(drained.every((l) => JSON.stringify(l.communities) === '["65001:100","65535:0"]'), 'the drain re-announce adds 65535:0 to the route\'s own communities');
  t.ok(drained.every((l) => /shutdown drain/.test(String(l.reason))), 'its reason says why');
  const lastAnnounce = Math.max(...drained.map((l) => l.time));
  const firstWithdraw = Math.min(...routes.filter((l) => l.action === 'withdraw').map((l) => l.time));
  t.same(routes.map((l) => l.action), ['announce', 'announce', 'withdraw', 'withdraw'], 'every re-announce before any withdraw');
  t.ok(firstWithdraw - lastAnnounce >= 790, `withdrawn ${firstWithdraw - lastAnnounce} ms after the re-announce (drain 800 ms)`);
  t.ok(after.some((l) => l.event === 'drain' && l.routes === 2 && l.drain_ms === 800), 'a drain line says how many routes and how long');
});

t.test('gocast -config flag runs the same daemon; a second SIGTERM is not needed', async (t) => {
  const dir = t.testdir();
  const file = config(dir, `
agent:
  listen_addr: ""
  monitor_interval: 100ms
routing:
  plugin: dry-run
bgp:
  local_as: 65001
  remote_as: 65000
  peer_ip: 198.18.0.1
apps:
  - name: bare
    vip: 198.18.100.20/32
`);
  const d = new DaemonProcess(['-config', file]);
  t.teardown(() => d.stop());
  await d.waitLine(isRoute('announce', '198.18.100.20/32'), 20_000, 'announce');
  const started = performance.now();
  d.kill('SIGINT');
  const { code } = await d.exited;
  t.equal(code, 0);
  t.ok(performance.now() - started < 10_000, 'exits within 10 s');
});

t.test('a slow exec check never delays the withdrawal of another app (50 hung apps)', async (t) => {
  const dir = t.testdir();
  const port = await freePort();
  const hung = Array.from({ length: 50 }, (_, i) => `
  - name: hung${i}
    vip: 198.18.101.${i + 1}/32
    monitor_interval: 2s
    check_timeout: 1500ms
    monitors: ["exec:sleep 60"]`).join('');
  const file = config(dir, `
agent:
  listen_addr: ""
  monitor_interval: 200ms
routing:
  plugin: dry-run
bgp:
  local_as: 65001
  peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }]
apps:
  - name: fast
    vip: 198.18.100.30/32
    monitors: ["port:tcp:${port}"]${hung}
`);
  const server = await serve(t, port);
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine(isRoute('announce', '198.18.100.30/32'), 20_000, 'announce of fast');
  // Let the hung checks pile up in the pool before the flip.
  await new Promise((r) => setTimeout(r, 1000));
  await closeServer(server);
  const closed = Date.now();
  const wd = await d.waitLine(isRoute('withdraw', '198.18.100.30/32'), 3000, 'withdraw of fast');
  // The daemon's own timestamp of the withdraw: the pipe to this process and its parsing are not part of the delay.
  const latency = wd.time - closed;
  t.ok(latency < 200 + 200 + 150, `withdrawn ${latency} ms after the close (interval 200 ms; allowed one interval of delay + slack; a hung check would cost its 1.5 s timeout)`);
  t.notOk(d.lines.some((l) => l.event === 'route' && l.action === 'announce' && String(l.prefix).startsWith('198.18.101.')), 'no hung app was ever announced');
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
});

t.test('vipcast validate: exit 0 with a summary, exit 2 listing every error with its key path', async (t) => {
  const dir = t.testdir();
  const good = config(dir, `
routing: { plugin: dry-run }
bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
apps:
  - { name: a, vip: 198.18.100.40/32, monitors: ["port:tcp:80"] }
`);
  const ok = await pexec(process.execPath, [BIN, 'validate', '-c', good]);
  t.match(ok.stdout, /OK: 1 apps, 1 VIPs, 1 peers/);
  const badFile = join(dir, 'bad.yaml');
  writeFileSync(badFile, `
routing: { plugin: dry-run }
bgp: { local_as: 65001 }
apps:
  - { name: a, vip: 198.18.100.40/33, monitor: ["port:tcp:80"] }
`);
  const bad = await pexec(process.execPath, [BIN, 'validate', '-c', badFile]).then(() => undefined, (e: { code: number; stderr: string }) => e);
  t.equal(bad?.code, 2);
  t.match(bad?.stderr, /apps\[0\]\.vip/);
  t.match(bad?.stderr, /apps\[0\]\.monitor\b.*monitors/);
  const run = await pexec(process.execPath, [BIN, 'run', '-c', badFile]).then(() => undefined, (e: { code: number; stderr: string }) => e);
  t.equal(run?.code, 2, 'run refuses an invalid config with exit 2');
  const usage = await pexec(process.execPath, [BIN, 'run']).then(() => undefined, (e: { code: number; stderr: string }) => e);
  t.equal(usage?.code, 2);
  t.match(usage?.stderr, /needs a config file/);
  const help = await pexec(process.execPath, [BIN, '--help']);
  t.match(help.stdout, /vipcast run -c FILE/);
});

t.test('cleanup_timer: an app DOWN that long loses its address; it is still checked and comes back by itself when healthy', async (t) => {
  const dir = t.testdir();
  const port = await freePort();
  const file = config(dir, `
agent:
  listen_addr: ""
  monitor_interval: 100ms
  cleanup_timer: 400ms
routing: { plugin: dry-run }
bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
apps:
  - { name: web, vip: 198.18.100.90/32, monitors: ["port:tcp:${port}"] }
`);
  const server = await serve(t, port);
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine(isRoute('announce', '198.18.100.90/32'), 20_000, 'announce');
  await closeServer(server);
  const wd = await d.waitLine(isRoute('withdraw', '198.18.100.90/32'), 3000, 'withdraw');
  const removed = await d.waitLine((l) => l.event === 'host' && l.action === 'remove-vip' && l.prefix === '198.18.100.90/32', 3000, 'address removed at cleanup');
  t.ok(removed.at - wd.at >= 350, `address removed ${Math.round(removed.at - wd.at)} ms after the withdraw (cleanup_timer 400 ms)`);
  t.ok(d.lines.some((l) => l.app === 'web' && /still checked/.test(l.msg)), 'the cleanup says the app is still checked');
  const from = d.lines.length;
  await serve(t, port);
  const back = await d.waitLine(isRoute('announce', '198.18.100.90/32'), 3000, 're-announced once healthy, with no reload', from);
  const added = d.lines.slice(from).findIndex((l) => l.event === 'host' && l.action === 'add-vip' && l.prefix === '198.18.100.90/32');
  t.ok(added >= 0 && added < d.lines.slice(from).indexOf(back), 'its address is added again before the announce');
  t.notOk(d.lines.slice(from).some((l) => l.component === 'reload'), 'no reload was needed');
});

t.test('vipcast reload -c FILE signals the daemon through agent.pid_file; without a pid file it says so', async (t) => {
  const dir = t.testdir();
  const file = config(dir, `
agent:
  listen_addr: ""
  pid_file: vipcast.pid
routing: { plugin: dry-run }
bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
apps:
  - { name: a, vip: 198.18.100.95/32 }
`);
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine(isRoute('announce', '198.18.100.95/32'), 20_000, 'announce');
  const from = d.lines.length;
  const out = await pexec(process.execPath, [BIN, 'reload', '-c', file]);
  t.match(out.stdout, new RegExp(`sent SIGHUP to vipcast \\(pid ${d.child.pid}\\)`));
  const line = await d.waitLine((l) => l.component === 'reload', 5000, 'reload line', from);
  t.equal(line.msg, 'reload: nothing changed');
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
  t.notOk(existsSync(join(dir, 'vipcast.pid')), 'pid file removed at exit');
  const none = await pexec(process.execPath, [BIN, 'reload', '--pid-file', join(dir, 'vipcast.pid')]).then(() => undefined, (e: { code: number; stderr: string }) => e);
  t.equal(none?.code, 1, 'no running daemon: exit 1');
  t.match(none?.stderr, /vipcast reload: .*vipcast\.pid/);
});
