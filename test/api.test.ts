/** The HTTP API end to end: vipcast (dry-run) as a child process, real HTTP requests. */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DaemonProcess, freePort, type LogLine } from './helpers/daemon.js';

const isRoute = (action: string, prefix: string) => (l: LogLine) => l.event === 'route' && l.action === action && l.prefix === prefix;

t.test('HTTP API: gocast paths, validation with parameter names, status, metrics, no secrets', async (t) => {
  const dir = t.testdir();
  const apiPort = await freePort();
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `
agent:
  listen_addr: 127.0.0.1:${apiPort}
  monitor_interval: 100ms
routing: { plugin: dry-run }
bgp:
  local_as: 65001
  peers:
    - { peer_ip: 198.18.0.1, peer_as: 65000, md5_password: "s3cret-pw-123" }
apps:
  - { name: cfg, vip: 198.18.100.60/32 }
`);
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine((l) => l.msg === 'HTTP API listening', 30_000, 'API up');
  const base = `http://127.0.0.1:${apiPort}`;
  const get = async (path: string, method = 'GET') => {
    const res = await fetch(base + path, { method });
    return { status: res.status, body: await res.text() };
  };

  let r = await get('/register?name=reg1&vip=198.18.100.61/32&vip_communities=65001:5,65001:6&nat=tcp:53:8053');
  t.equal(r.status, 200);
  t.equal(r.body, '', 'gocast answers 200 with an empty body');
  const ann = await d.waitLine(isRoute('announce', '198.18.100.61/32'), 3000, 'registered app announced');
  t.same(ann.communities, ['65001:5', '65001:6']);

  r = await get('/register?vip=198.18.100.62/32');
  t.equal(r.status, 400);
  t.match(r.body, /^Invalid request: name: missing/);
  r = await get('/register?name=reg2&vip=198.18.100.62/33');
  t.equal(r.status, 400);
  t.match(r.body, /vip: "198\.18\.100\.62\/33" is not a prefix/);
  r = await get('/register?name=reg2&vip=198.18.100.62/32&vip_communities=65536:1');
  t.match(r.body, /vip_communities\[0\]: "65536:1"/);
  r = await get('/register?name=reg2&vip=198.18.100.62/32&monitor=exec:touch%20/tmp/pwned');
  t.equal(r.status, 400);
  t.match(r.body, /monitor\[0\]: "exec" monitors run commands and are only accepted from the config file/);
  r = await get('/register?name=bad%20name;rm&vip=198.18.100.62/32');
  t.equal(r.status, 400);
  t.match(r.body, /name: .* is not a valid app name/);
  r = await get('/register?name=reg2&vip=198.18.100.62/32&nat=sctp:1');
  t.match(r.body, /nat\[0\]: "sctp:1" is not a NAT spec/);
  r = await get('/register?name=reg3&vip=198.18.100.60/32');
  t.equal(r.status, 409, 'a VIP that belongs to another app is refused');
  t.match(r.body, /VIP 198\.18\.100\.60\/32 already belongs to app "cfg"/);
  r = await get('/register?name=cfg&vip=198.18.100.63/32');
  t.equal(r.status, 409, 'the name of a config app cannot be taken over');

  r = await get('/unregister');
  t.equal(r.status, 400);
  t.equal(r.body.trim(), 'Invalid request, need app name specified');
  r = await get('/unregister?name=cfg');
  t.equal(r.status, 409, 'config apps cannot be unregistered over HTTP');
  const from = d.lines.length;
  r = await get('/unregister?name=reg1', 'POST');
  t.equal(r.status, 200, 'any method, as gocast');
  await d.waitLine(isRoute('withdraw', '198.18.100.61/32'), 3000, 'unregistered app withdrawn', from);
  r = await get('/unregister?name=never-registered');
  t.equal(r.status, 200, 'unknown app: 200 as gocast');

  r = await get('/info');
  t.equal(r.status, 200);
  const info = JSON.parse(r.body) as Array<{ address: string; asn: number }>;
  t.same(info.map((p) => [p.address, p.asn]), [['198.18.0.1', 65000]]);

  r = await get('/status');
  const status = JSON.parse(r.body) as { apps: Array<{ name: string; state: string; announced: string[] }> };
  const cfg = status.apps.find((a) => a.name === 'cfg');
  t.equal(cfg?.state, 'up');
  t.same(cfg?.announced, ['198.18.100.60/32']);

  r = await get('/metrics');
  t.match(r.body, /vipcast_route_updates_total\{action="announce"\} [1-9]/);
  t.match(r.body, /vipcast_decision_latency_seconds_bucket/);
  t.match(r.body, /\nvipcast_routes_announced 1\n/, 'one route in the speaker (cfg; reg1 was unregistered)');
  t.match(r.body, /\nvipcast_apps\{state="up"\} 1\n/, 'one app up');
  t.match(r.body, /\nvipcast_reconcile_errors_total 0\n/, 'no failed effect');

  for (const path of ['/info', '/status']) {
    t.notMatch((await get(path)).body, /s3cret-pw-123/, `${path} never shows the MD5 password`);
  }
  t.notOk(d.lines.some((l) => JSON.stringify(l).includes('s3cret-pw-123')), 'no log line shows the MD5 password');
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
});

t.test('POST /reload x20 at once: at most two runs, every request answered with the result of the run it joined', async (t) => {
  const dir = t.testdir();
  const apiPort = await freePort();
  const file = join(dir, 'vipcast.yaml');
  const body = (apps: string) => `
agent: { listen_addr: 127.0.0.1:${apiPort}, monitor_interval: 100ms }
routing: { plugin: dry-run }
bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
apps:
${apps}`;
  writeFileSync(file, body('  - { name: a, vip: 198.18.100.70/32 }\n'));
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine((l) => l.msg === 'HTTP API listening', 30_000, 'API up');
  await d.waitLine(isRoute('announce', '198.18.100.70/32'), 3000, 'a announced');
  writeFileSync(file, body('  - { name: a, vip: 198.18.100.70/32 }\n  - { name: b, vip: 198.18.100.71/32 }\n'));
  const from = d.lines.length;
  const results = await Promise.all(Array.from({ length: 20 }, async () => {
    const res = await fetch(`http://127.0.0.1:${apiPort}/reload`, { method: 'POST' });
    return { status: res.status, body: JSON.parse(await res.text()) as { ok: boolean; at: string; changes: string[] } };
  }));
  t.ok(results.every((r) => r.status === 200 && r.body.ok), 'all 20 answered 200 ok');
  const outcomes = d.lines.slice(from).filter((l) => l.component === 'reload' && /^reload: (done|nothing changed)$/.test(l.msg));
  t.equal(outcomes.reduce((n, l) => n + Number(l.requests), 0), 20, 'the runs answered 20 requests between them');
  t.equal(new Set(results.map((r) => r.body.at)).size, outcomes.length, 'one result per run, shared by its requests');
  t.ok(outcomes.length >= 1 && outcomes.length <= 2, `${outcomes.length} runs for 20 requests (the 100 ms settle window takes a burst)`);
  t.equal(outcomes.filter((l) => l.msg === 'reload: done').length, 1, 'exactly one run applied the change; the rest found nothing to do');
  await d.waitLine(isRoute('announce', '198.18.100.71/32'), 3000, 'b announced', from);
  await new Promise((r) => setTimeout(r, 300));
  t.equal(d.lines.slice(from).filter(isRoute('announce', '198.18.100.71/32')).length, 1, 'b announced once');
  t.equal(d.lines.slice(from).filter(isRoute('announce', '198.18.100.70/32')).length, 0, 'a not re-sent');
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
});
