/**
 * The prefix policy at every source: HTTP /register on the real CLI (dry-run), Consul tags against the Consul test
 * server, the config file through `vipcast validate`, and the registry's door for any other source.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { BIN, DaemonProcess, freePort } from './helpers/daemon.js';
import { ConsulTestServer } from './helpers/consul-server.js';
import { ConsulDiscovery } from '../src/plugins/discovery/consul/index.js';
import { consulSettings, parseConfigText } from '../src/core/config.js';
import { createLogger } from '../src/core/logger.js';
import { AppRegistry } from '../src/core/registry.js';
import { parsePrefix } from '../src/core/values.js';
import type { AppSpec } from '../src/plugin-api.js';
import { ATTACKS } from './helpers/attacks.js';

const pexec = promisify(execFile);


t.test('HTTP /register: every attack of issue 9 is a 400 naming the rule; the registry and routes are unchanged', async (t) => {
  const dir = t.testdir();
  const port = await freePort();
  const file = join(dir, 'vipcast.yaml');
  const write = (allowed: string) => writeFileSync(file, `
agent:
  listen_addr: 127.0.0.1:${port}
  monitor_interval: 100ms
  allowed_prefixes: [${allowed}]
routing: { plugin: dry-run }
bgp:
  local_as: 65001
  local_ip: 198.18.0.2
  peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }, { peer_ip: "2001:db8::1", peer_as: 65000 }]
apps:
  - { name: cfg, vip: 198.18.100.60/32 }
`);
  write('198.18.0.0/15, "2001:db8::/32"');
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine((l) => l.msg === 'HTTP API listening', 30_000, 'API up');
  const get = async (path: string) => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: res.status, body: await res.text() };
  };
  const attacks: Array<[string, RegExp]> = [
    ...ATTACKS,
    ['vip=198.18.0.1/32', /vip: 198\.18\.0\.1\/32 is refused: it is the address of BGP peer 198\.18\.0\.1/],
    ['vip=198.18.0.0/24', /it contains the address of BGP peer 198\.18\.0\.1/],
    ['vip=2001:db8::1/128', /it is the address of BGP peer 2001:db8::1/],
    ['vip=198.18.0.2/32', /it is bgp\.local_ip 198\.18\.0\.2/],
  ];
  for (const [i, [query, reason]] of attacks.entries()) {
    const r = await get(`/register?name=x${i}&${query}`);
    t.equal(r.status, 400, `${query}: 400`);
    t.match(r.body, reason, `${query}: the reason names the rule`);
  }
  const status = JSON.parse((await get('/status')).body) as { apps: Array<{ name: string }> };
  t.same(status.apps.map((a) => a.name), ['cfg'], 'no refused app is in the registry');
  t.notOk(d.lines.some((l) => l.event === 'route' && l.prefix !== '198.18.100.60/32'), 'no route but the config app\'s was ever announced');

  // A good registration still works; a reload that narrows agent.allowed_prefixes removes it.
  t.equal((await get('/register?name=ok&vip=198.18.200.10/32&vip_communities=65001:300')).status, 200);
  await d.waitLine((l) => l.event === 'route' && l.action === 'announce' && l.prefix === '198.18.200.10/32', 3000, 'good app announced');
  write('198.18.100.0/24, "2001:db8::/32"');
  const from = d.lines.length;
  const reload = await fetch(`http://127.0.0.1:${port}/reload`, { method: 'POST' });
  t.equal(reload.status, 200);
  await d.waitLine((l) => l.event === 'route' && l.action === 'withdraw' && l.prefix === '198.18.200.10/32', 3000, 'narrowed policy: withdrawn', from);
  t.ok(d.lines.slice(from).some((l) => /HTTP app removed: the prefix policy now refuses it: vip: 198\.18\.200\.10\/32 is refused: it is not inside agent\.allowed_prefixes \(198\.18\.100\.0\/24, 2001:db8::\/32\)/.test(l.msg)), 'logged with the rule');
  const after = JSON.parse((await get('/status')).body) as { apps: Array<{ name: string }> };
  t.same(after.apps.map((a) => a.name), ['cfg']);
});

t.test('Consul: a service whose tag the policy refuses is skipped with the tag and the rule; the others apply', async (t) => {
  const server = new ConsulTestServer();
  await server.start();
  t.teardown(() => server.close());
  server.setServices('node1', [
    { Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.10.1/32', 'gocast_vip_communities=65001:10'] },
    { Service: 'deflt', Tags: ['enable_gocast', 'gocast_vip=0.0.0.0/0'] },
    { Service: 'peer', Tags: ['enable_gocast', 'gocast_vip=198.18.10.7/32,198.18.0.1/32'] },
    { Service: 'hole', Tags: ['enable_gocast', 'gocast_vip=198.18.10.2/32', 'gocast_vip_communities=65001:1,blackhole'] },
    { Service: 'outside', Tags: ['enable_gocast', 'gocast_vip=198.18.20.2/32'] },
  ]);
  const config = parseConfigText(`
agent: { listen_addr: "", consul_addr: ${server.url}/v1, registration_allowed_prefixes: [198.18.10.0/24, 198.18.0.0/24] }
routing: { plugin: dry-run }
bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
`, 'test.yaml', { env: {} });
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const d = new ConsulDiscovery({ agent: config.agent, monitors: config.monitors, consul: { ...consulSettings(config.agent, {}), node: 'node1' }, log: createLogger({ destination, pretty: false, level: 'debug' }) });
  t.teardown(() => d.close());
  const delivered = new Promise<readonly AppSpec[]>((resolve) => void d.start(resolve));
  const apps = await delivered;
  t.same(apps.map((a) => a.name), ['web'], 'only the allowed service');
  const msg = (service: string) => lines.filter((l) => l.service === service).map((l) => String(l.msg)).join('\n');
  t.match(msg('deflt'), /Consul service "deflt" skipped: tag "gocast_vip=0\.0\.0\.0\/0": 0\.0\.0\.0\/0 is refused: a default route is never announced/);
  t.match(msg('peer'), /skipped: tag "gocast_vip=198\.18\.10\.7\/32,198\.18\.0\.1\/32": 198\.18\.0\.1\/32 is refused: it is the address of BGP peer 198\.18\.0\.1/);
  t.match(msg('hole'), /skipped: tag "gocast_vip_communities=65001:1,blackhole": blackhole \(65535:666\) is a well-known or reserved community/);
  t.match(msg('outside'), /198\.18\.20\.2\/32 is refused: it is not inside agent\.registration_allowed_prefixes \(198\.18\.10\.0\/24, 198\.18\.0\.0\/24\), the ranges apps from consul may use/);
});

t.test('vipcast validate: a /0 and a peer\'s address are refused with their key paths, exit 2', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, `
routing: { plugin: dry-run }
bgp:
  local_as: 65001
  peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }]
apps:
  - { name: ok, vip: 198.18.100.1/32 }
  - { name: web, vip: 198.18.100.2/32 }
  - { name: everything, vip: 0.0.0.0/0 }
  - { name: router, vip: [198.18.100.3/32, 198.18.0.1/32] }
`);
  const bad = await pexec(process.execPath, [BIN, 'validate', '-c', file]).then(() => undefined, (e: { code: number; stdout: string; stderr: string }) => e);
  t.ok(bad, 'validate fails');
  t.equal(bad!.code, 2);
  const out = bad!.stdout + bad!.stderr;
  t.match(out, /apps\[2\]\.vip: 0\.0\.0\.0\/0 is refused: a default route is never announced/);
  t.match(out, /apps\[3\]\.vip\[1\]: 198\.18\.0\.1\/32 is refused: it is the address of BGP peer 198\.18\.0\.1/);
  t.notMatch(out, /apps\[[01]\]/, 'the good apps are not named');
});

t.test('the registry is the one door: an app from any source (a plugin) is refused by the policy in force', async (t) => {
  const policy = parseConfigText('agent: { allowed_prefixes: [198.18.0.0/15] }\nbgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }', 'x.yaml', { env: {}, routingPlugin: 'dry-run' }).agent.prefixPolicy;
  const registry = new AppRegistry({ policy: () => policy, hostAddresses: () => ({ interfaces: [], gateways: [] }) });
  const app = (name: string, source: string, vip: string): AppSpec => ({
    name, source, vips: [parsePrefix(vip, 'v')], communities: [], monitors: [], nats: [], rise: 1, fall: 1, intervalMs: 1000, timeoutMs: 500,
  });
  t.throws(() => registry.upsert(app('a', 'my-plugin', '0.0.0.0/0')), { code: 'VIPCAST_ERR_PREFIX_POLICY', message: /app "a": vip: 0\.0\.0\.0\/0 is refused: a default route/ });
  t.throws(() => registry.upsert(app('b', 'http', '198.18.0.1/32')), { code: 'VIPCAST_ERR_PREFIX_POLICY', message: /the address of BGP peer 198\.18\.0\.1/ });
  t.same(registry.replaceSource('my-plugin', [app('c', 'my-plugin', '203.0.113.7/32'), app('d', 'my-plugin', '198.18.5.5/32')]),
    ['c: vip: 203.0.113.7/32 is refused: it is not inside agent.allowed_prefixes (198.18.0.0/15)']);
  t.same(registry.all().map((a) => a.name), ['d'], 'only the allowed app got in');
});
