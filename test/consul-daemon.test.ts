/**
 * vipcast dry-run as a child process against the Consul HTTP API test server (env CONSUL_NODE / CONSUL_TOKEN):
 * Consul-tagged services are announced and withdrawn, the consul monitor decides health, reloads keep Consul apps.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DaemonProcess, type LogLine, DRY_RUN_BGP } from './helpers/daemon.js';
import { ConsulTestServer, type TestCheck } from './helpers/consul-server.js';

const isRoute = (action: string, prefix: string) => (l: LogLine) => l.event === 'route' && l.action === action && l.prefix === prefix;
const NODE = 'node1';
const TOKEN = 'daemon-secret-token-77';

function config(file: string, addr: string, interval = '5s', cleanup = '1m'): void {
  writeFileSync(file, `
agent:
  listen_addr: ""
  monitor_interval: 200ms
  cleanup_timer: ${cleanup}
  consul_addr: ${addr}
  consul_query_interval: ${interval}
  consul_token: not-the-real-one
${DRY_RUN_BGP}apps:
  - name: static
    vip: 198.18.20.1/32
`);
}

t.test('Consul apps: announce, withdraw on tag removal and on a critical consul check, kept across SIGHUP', async (t) => {
  const server = new ConsulTestServer(NODE);
  await server.start();
  t.teardown(() => server.close());
  server.setToken(TOKEN);
  const webCheck: TestCheck = { Node: NODE, CheckID: 'service:web', Name: 'web health', Status: 'passing', ServiceID: 'web', ServiceName: 'web', ServiceTags: ['enable_gocast'] };
  server.setCheck(webCheck);
  const services = (apiTags: string[]) => [
    { Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.20.10/32', 'gocast_monitor=consul', 'gocast_vip_communities=65001:300'] },
    { Service: 'api', Tags: apiTags },
  ];
  server.setServices(NODE, services(['enable_gocast', 'gocast_vip=198.18.20.11/32']));

  const dir = t.testdir();
  const file = join(dir, 'vipcast.yaml');
  config(file, server.addr);
  // CONSUL_TOKEN (env) wins over the file's consul_token.
  const d = new DaemonProcess(['run', '-c', file], { env: { CONSUL_NODE: NODE, CONSUL_TOKEN: TOKEN, CONSUL_STALE: '' } });
  t.teardown(() => d.stop());

  const t0 = performance.now();
  const web = await d.waitLine(isRoute('announce', '198.18.20.10/32'), 20_000, 'announce of the Consul app web');
  await d.waitLine(isRoute('announce', '198.18.20.11/32'), 8000, 'announce of the Consul app api');
  t.comment(`start -> Consul app announced: ${(web.at - t0).toFixed(0)} ms (process start included)`);
  t.match(web, { app: 'web' });
  t.match(JSON.stringify(web), /65001:300/, 'communities from gocast_vip_communities');
  t.notOk(d.lines.some((l) => /Consul discovery is off|not implemented/.test(l.msg)), 'no "off" / "not implemented" warning');
  t.ok(server.requests.every((r) => r.token === TOKEN), 'every request carries the CONSUL_TOKEN token (env wins over the file)');
  t.ok(server.count('/v1/agent/checks') >= 1, 'the consul monitor asked the local agent');

  // Tag removed -> withdrawn.
  let from = d.lines.length;
  let changed = performance.now();
  server.setServices(NODE, services(['gocast_vip=198.18.20.11/32']));
  const wApi = await d.waitLine(isRoute('withdraw', '198.18.20.11/32'), 5000, 'withdraw of api after its enable_gocast tag went', from);
  t.comment(`enable_gocast removed -> withdraw: ${(wApi.at - changed).toFixed(0)} ms`);
  t.ok(wApi.at - changed < 1500, 'withdrawn promptly (blocking query, not the 5 s interval)');

  // consul check critical -> withdrawn (fall 1, monitor_interval 200ms).
  from = d.lines.length;
  changed = performance.now();
  server.setCheck({ ...webCheck, Status: 'critical' });
  const wWeb = await d.waitLine(isRoute('withdraw', '198.18.20.10/32'), 5000, 'withdraw of web after its consul check went critical', from);
  t.comment(`consul check critical -> withdraw: ${(wWeb.at - changed).toFixed(0)} ms`);
  from = d.lines.length;
  server.setCheck({ ...webCheck, Status: 'passing' });
  await d.waitLine(isRoute('announce', '198.18.20.10/32'), 5000, 'announce of web after its check passes again', from);

  // SIGHUP with an unchanged file: nothing changes, the Consul app stays announced.
  from = d.lines.length;
  d.kill('SIGHUP');
  const outcome = await d.waitLine((l) => l.component === 'reload' && /^reload(: (done|nothing changed)| refused| failed)/.test(l.msg), 10_000, 'reload outcome', from);
  t.equal(outcome.msg, 'reload: nothing changed');
  await new Promise((r) => setTimeout(r, 600));
  t.notOk(d.lines.slice(from).some((l) => l.event === 'route' && l.action === 'withdraw'), 'no withdraw after the SIGHUP');

  // A reload that changes consul_query_interval builds a new discovery: the Consul apps survive it, no withdraw.
  from = d.lines.length;
  config(file, server.addr, '4s');
  d.kill('SIGHUP');
  const outcome2 = await d.waitLine((l) => l.component === 'reload' && /^reload(: (done|nothing changed)| refused| failed)/.test(l.msg), 10_000, 'reload outcome', from);
  t.equal(outcome2.msg, 'reload: done');
  await d.waitLine((l) => l.component === 'discovery' && l.discovery === 'consul' && l.msg === 'Consul discovery started', 3000, 'a new Consul discovery', from);
  await new Promise((r) => setTimeout(r, 600));
  t.notOk(d.lines.slice(from).some((l) => l.event === 'route' && l.action === 'withdraw'), 'no withdraw across the consul_query_interval change');
  const held = server.requests.filter((r) => r.path === `/v1/catalog/node/${NODE}` && r.query.get('wait') === '4s');
  t.ok(held.length >= 1, 'the new discovery waits the new interval');
  // After the swap the Consul catalog still drives the apps.
  from = d.lines.length;
  server.setServices(NODE, services(['enable_gocast', 'gocast_vip=198.18.20.11/32']));
  await d.waitLine(isRoute('announce', '198.18.20.11/32'), 5000, 'api back after the reload', from);

  t.notMatch(d.lines.map((l) => JSON.stringify(l)).join('\n') + d.stderr.join(''), new RegExp(TOKEN), 'the token is never logged');
  t.notMatch(d.lines.map((l) => JSON.stringify(l)).join('\n'), /not-the-real-one/, 'nor the file token');

  from = d.lines.length;
  d.kill('SIGTERM');
  await d.exited;
  t.ok(d.lines.slice(from).some(isRoute('withdraw', '198.18.20.10/32')), 'SIGTERM withdraws the Consul app');
  t.same(d.repeatedKeys, [], 'no log line names a key twice (Consul discovery bound component twice)');
});

t.test('cleanup_timer then recovery of a Consul app: announced again within one interval, with no catalog change', async (t) => {
  const server = new ConsulTestServer(NODE);
  await server.start();
  t.teardown(() => server.close());
  const check: TestCheck = { Node: NODE, CheckID: 'service:dns', Name: 'dns health', Status: 'passing', ServiceID: 'dns', ServiceName: 'dns', ServiceTags: ['enable_gocast'] };
  server.setCheck(check);
  server.setServices(NODE, [{ Service: 'dns', Tags: ['enable_gocast', 'gocast_vip=198.18.20.53/32', 'gocast_monitor=consul'] }]);
  const dir = t.testdir();
  const file = join(dir, 'vipcast.yaml');
  // A long query interval: the blocking catalog read does not come back by itself during the test.
  config(file, server.addr, '60s', '500ms');
  const d = new DaemonProcess(['run', '-c', file], { env: { CONSUL_NODE: NODE, CONSUL_TOKEN: '', CONSUL_STALE: '' } });
  t.teardown(() => d.stop());
  await d.waitLine(isRoute('announce', '198.18.20.53/32'), 20_000, 'announce of the Consul app');
  server.setCheck({ ...check, Status: 'critical' });
  await d.waitLine(isRoute('withdraw', '198.18.20.53/32'), 5000, 'withdraw on the critical check');
  await d.waitLine((l) => l.event === 'host' && l.action === 'remove-vip' && l.prefix === '198.18.20.53/32', 5000, 'address removed by cleanup_timer');
  const deliveries = d.lines.filter((l) => l.msg === 'Consul apps updated').length;
  const from = d.lines.length;
  const recovered = performance.now();
  server.setCheck({ ...check, Status: 'passing' });
  const back = await d.waitLine(isRoute('announce', '198.18.20.53/32'), 5000, 'announced again after recovery', from);
  t.ok(back.at - recovered < 200 + 500, `announced ${Math.round(back.at - recovered)} ms after the check passed (one 200 ms interval + slack)`);
  t.equal(d.lines.filter((l) => l.msg === 'Consul apps updated').length, deliveries, 'Consul delivered nothing new: the app came back on its own checks');
  t.ok(d.lines.slice(from).some((l) => l.event === 'host' && l.action === 'add-vip' && l.prefix === '198.18.20.53/32'), 'its address is back on lo');
});

t.test('consul_addr without CONSUL_NODE: discovery off, and the daemon says why', async (t) => {
  const server = new ConsulTestServer(NODE);
  await server.start();
  t.teardown(() => server.close());
  const dir = t.testdir();
  const file = join(dir, 'vipcast.yaml');
  config(file, server.addr);
  // undefined: not inherited from the test runner's environment either (spawn skips undefined values).
  const d = new DaemonProcess(['run', '-c', file], { env: { CONSUL_NODE: undefined } });
  t.teardown(() => d.stop());
  const line = await d.waitLine((l) => /Consul discovery is off/.test(l.msg), 20_000, 'the "off" line');
  t.match(line.msg, /CONSUL_NODE/);
  await d.waitLine(isRoute('announce', '198.18.20.1/32'), 5000, 'the config app still runs');
  t.equal(server.count('/v1/catalog'), 0, 'Consul never asked');
});
