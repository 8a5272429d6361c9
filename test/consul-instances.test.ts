/**
 * Several instances of one service name on a node, and Consul Enterprise's `ns` / `partition`.
 * - The discovery uses the instance with the lowest Service ID (byte order) among those tagged enable_gocast, whatever
 *   the order of the catalog's keys (unit: every order of the same instances; and through the test server), and logs
 *   the others once as ignored, naming the chosen ID.
 * - `ns` and `partition` are sent on every request (catalog, /agent/checks, /health/...) when set, from the config or
 *   CONSUL_NAMESPACE / CONSUL_PARTITION, and absent when not.
 */
import t from 'tap';
import { Writable } from 'node:stream';
import { parseConfigText, consulSettings } from '../src/core/config.js';
import { createLogger } from '../src/core/logger.js';
import { CheckPool } from '../src/core/check-pool.js';
import { VipcastError } from '../src/core/errors.js';
import { ConsulDiscovery, chooseInstances, type ConsulService } from '../src/plugins/discovery/consul/index.js';
import type { AppSpec, ConsulSettings } from '../src/plugin-api.js';
import { ConsulTestServer } from './helpers/consul-server.js';

const NODE = 'node1';

const config = (extra = '', env: NodeJS.ProcessEnv = {}, addr = '"http://127.0.0.1:8500/v1"') => parseConfigText(`
agent:
  listen_addr: ""
  consul_addr: ${addr}
${extra}
routing: { plugin: dry-run }
bgp: { local_as: 65001, local_ip: 198.18.0.2, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
`, 'test.yaml', { env });

function permutations<T>(xs: T[]): T[][] {
  if (xs.length <= 1) return [xs];
  return xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p]));
}

const tagged = (id: string, vip: string): { ID: string; Service: string; Tags: string[] } => ({ ID: id, Service: 'web', Tags: ['enable_gocast', `gocast_vip=${vip}`] });

t.test('chooseInstances: the lowest tagged ID in byte order, whatever the order of the answer', async (t) => {
  const instances: ConsulService[] = [
    tagged('web-b', '198.18.32.2/32'),
    tagged('web-a', '198.18.32.1/32'),
    { ID: 'web-0', Service: 'web', Tags: ['gocast_vip=198.18.32.9/32'] }, // lowest ID, but not tagged enable_gocast
    tagged('web-\u00e9', '198.18.32.3/32'), // UTF-8 c3 a9: after "web-b"
    { ID: 'api', Service: 'api', Tags: ['enable_gocast', 'gocast_vip=198.18.32.10/32'] },
  ];
  const seen = new Set<string>();
  for (const order of permutations(instances)) {
    const chosen = chooseInstances(order);
    seen.add(JSON.stringify(chosen.map((c) => [c.name, c.svc.ID, c.input?.vip, c.others])));
  }
  t.equal(seen.size, 1, 'all 120 orders give one result');
  t.same(JSON.parse([...seen][0]!), [['api', 'api', '198.18.32.10/32', []], ['web', 'web-a', '198.18.32.1/32', ['web-b', 'web-\u00e9']]]);
  // Byte order, not UTF-16 order: U+FF21 (ef bc a1) sorts before U+1F600 (f0 9f 98 80) in bytes, after it in UTF-16.
  const astral = [tagged('x-\u{1F600}', '198.18.32.4/32'), tagged('x-\uFF21', '198.18.32.5/32')];
  t.equal(chooseInstances(astral)[0]!.svc.ID, 'x-\uFF21');
  t.equal(chooseInstances([...astral].reverse())[0]!.svc.ID, 'x-\uFF21');
});

t.test('discovery through the test server: one app per name from the lowest tagged ID; the others logged once', async (t) => {
  const server = new ConsulTestServer(NODE);
  await server.start();
  t.teardown(() => server.close());
  server.setServices(NODE, [tagged('web-b', '198.18.32.2/32'), tagged('web-a', '198.18.32.1/32')]);
  let raw = '';
  const log = createLogger({ destination: new Writable({ write(c: Buffer, _e, cb) { raw += c.toString(); cb(); } }), pretty: false, level: 'debug' });
  const cfg = config();
  const changes: Array<readonly AppSpec[]> = [];
  const d = new ConsulDiscovery({ agent: cfg.agent, monitors: cfg.monitors, consul: { addr: server.addr, token: '', node: NODE, stale: false }, log, minBackoffMs: 100 });
  t.teardown(() => d.close());
  await d.start((apps) => changes.push(apps));
  const until = async (fn: () => boolean) => {
    const deadline = performance.now() + 5000;
    while (!fn()) {
      if (performance.now() > deadline) throw new Error(`timeout; log ${raw.slice(-1000)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  await until(() => changes.length > 0);
  t.same(changes.at(-1)!.map((a) => [a.name, a.vips.map((v) => v.text)]), [['web', ['198.18.32.1/32']]], 'web-a\'s VIP');
  const lines = () => raw.split('\n').filter((l) => l.includes('tagged instances'));
  t.equal(lines().length, 1);
  t.match(JSON.parse(lines()[0]!), { level: 40, service: 'web', service_id: 'web-a', ignored: ['web-b'], msg: 'Consul service "web" has 2 tagged instances on this node: using ID "web-a" (the lowest ID), ignoring "web-b"' });
  // Re-read (index moves): not logged again. Registered in the other order: the same app.
  const polls = d.stats.polls;
  server.setServices(NODE, [tagged('web-a', '198.18.32.1/32'), tagged('web-b', '198.18.32.2/32')]);
  await until(() => d.stats.polls > polls);
  t.equal(lines().length, 1, 'logged once');
  t.same(d.apps().map((a) => a.vips[0]!.text), ['198.18.32.1/32']);
  // web-a loses its tag: web-b is used.
  server.setServices(NODE, [{ ID: 'web-a', Service: 'web', Tags: [] }, tagged('web-b', '198.18.32.2/32')]);
  await until(() => d.apps()[0]?.vips[0]?.text === '198.18.32.2/32');
  t.pass('web-b used once web-a is untagged');
});

t.test('ns and partition: on every request when set (config or CONSUL_NAMESPACE / CONSUL_PARTITION), absent when not', async (t) => {
  const server = new ConsulTestServer(NODE);
  await server.start();
  await server.listenAlso('127.0.0.2');
  t.teardown(() => server.close());
  const tags = ['enable_gocast', 'gocast_vip=198.18.33.1/32'];
  server.setServices(NODE, [{ ID: 'web', Service: 'web', Tags: tags }]);
  server.setCheck({ Node: NODE, CheckID: 'service:web', Name: 'web', Status: 'passing', ServiceID: 'web', ServiceName: 'web', ServiceTags: tags });
  const pool = new CheckPool({ workers: 1 });
  t.teardown(() => pool.close());

  const exercise = async (consul: ConsulSettings): Promise<void> => {
    const before = server.requests.length;
    const cfg = config();
    const d = new ConsulDiscovery({ agent: cfg.agent, monitors: cfg.monitors, consul, log: createLogger({ destination: new Writable({ write(_c, _e, cb) { cb(); } }), pretty: false }), minBackoffMs: 100 });
    let got = false;
    await d.start(() => { got = true; });
    const deadline = performance.now() + 5000;
    while (!got && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await d.close();
    for (const addr of [server.addr, `http://127.0.0.2:${server.port}/v1`]) {
      const r = await pool.run(cfg.monitors.parse('consul', { path: 'p', baseDir: '.', trusted: true, app: 'web', consul: { ...consul, addr } }), 3000);
      t.equal(r.ok, true, r.reason);
    }
    const paths = new Set(server.requests.slice(before).map((q) => q.path));
    t.same([...paths].sort(), ['/v1/agent/checks', '/v1/catalog/node/node1', '/v1/health/checks/web', '/v1/health/node/node1'], 'catalog, agent and health reads');
  };

  const withNs = config('  consul_namespace: team-a\n  consul_partition: part-1\n', { CONSUL_NODE: NODE }, server.addr);
  let before = server.requests.length;
  await exercise(consulSettings(withNs.agent, { CONSUL_NODE: NODE }));
  t.ok(server.requests.slice(before).every((q) => q.ns === 'team-a' && q.partition === 'part-1'), 'ns and partition on every request');

  const env = { CONSUL_NODE: NODE, CONSUL_NAMESPACE: 'team-env', CONSUL_PARTITION: 'part-env' };
  const fromEnv = config('  consul_namespace: team-a\n', env, server.addr);
  before = server.requests.length;
  await exercise(consulSettings(fromEnv.agent, env));
  t.ok(server.requests.slice(before).every((q) => q.ns === 'team-env' && q.partition === 'part-env'), 'the variables win');

  before = server.requests.length;
  await exercise(consulSettings(config('', {}, server.addr).agent, { CONSUL_NODE: NODE }));
  t.ok(server.requests.slice(before).every((q) => q.ns === null && q.partition === null && !q.query.has('ns') && !q.query.has('partition')), 'absent when unset');

  t.notOk(ConsulDiscovery.sameSettings(consulSettings(withNs.agent, {}), consulSettings(fromEnv.agent, {})), 'a namespace change restarts the discovery');
  try {
    config('  consul_namespace: "team a"\n');
    t.fail('accepted');
  } catch (err) {
    t.match((err as VipcastError).details.join('\n'), /agent\.consul_namespace: "team a" is not a Consul namespace or partition name/);
  }
  try {
    config('', { CONSUL_PARTITION: 'bad/part' });
    t.fail('accepted');
  } catch (err) {
    t.match((err as VipcastError).details.join('\n'), /agent\.consul_partition \(from \$CONSUL_PARTITION\): "bad\/part" is not/);
  }
});
