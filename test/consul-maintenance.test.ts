/**
 * The consul monitor and Consul maintenance, through a real CheckPool against the Consul test server (maintenance
 * checks as Consul registers them: `_node_maintenance` / `_service_maintenance:<ID>`, critical, Type maintenance,
 * Notes = reason): node and service maintenance make it down with the reason, in both modes (local agent and
 * catalog); off again, up. The catalog mode asks Consul to filter by node (`filter=Node == "<node>"`, seen by the
 * server) and reads the node's maintenance check from /health/node/{node}. The test server's filter refuses what it
 * can't evaluate (400), as Consul.
 */
import t, { type Test } from 'tap';
import { parseConfigText, consulSettings } from '../src/core/config.js';
import { CheckPool } from '../src/core/check-pool.js';
import { bexprString } from '../src/plugins/consul-http.js';
import type { ConsulSettings } from '../src/plugin-api.js';
import { ConsulTestServer, NODE_MAINTENANCE_DEFAULT, parseFilter, type TestCheck } from './helpers/consul-server.js';

const NODE = 'node1';
const TAGS = ['enable_gocast', 'gocast_vip=198.18.31.1/32', 'gocast_monitor=consul'];

const cfg = parseConfigText(`
agent: { listen_addr: "", consul_addr: "http://127.0.0.1:8500/v1" }
routing: { plugin: dry-run }
bgp: { local_as: 65001, local_ip: 198.18.0.2, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
`, 'test.yaml', { env: {} });

async function setup(t: Test) {
  const server = new ConsulTestServer(NODE);
  await server.start();
  await server.listenAlso('127.0.0.2');
  t.teardown(() => server.close());
  server.setServices(NODE, [{ ID: 'web-1', Service: 'web', Tags: TAGS }]);
  server.setServices('node2', [{ ID: 'web-1', Service: 'web', Tags: TAGS }]);
  const pass: TestCheck = { Node: NODE, CheckID: 'service:web-1', Name: 'web http', Status: 'passing', ServiceID: 'web-1', ServiceName: 'web', ServiceTags: TAGS };
  server.setCheck(pass);
  // Another node's checks: critical, and in maintenance; never this host's business.
  server.setCheck({ ...pass, Node: 'node2', Status: 'critical' });
  server.setNodeMaintenance('node2', 'node2 is being rebooted');
  const pool = new CheckPool({ workers: 1 });
  t.teardown(() => pool.close());
  const monitor = (consul: ConsulSettings) => cfg.monitors.parse('consul', { path: 'p', baseDir: '.', trusted: true, app: 'web', consul });
  return { server, pool, monitor };
}

for (const mode of ['local agent', 'catalog'] as const) {
  t.test(`${mode}: node maintenance and service maintenance make the monitor down with the reason; off, up`, async (t) => {
    const { server, pool, monitor } = await setup(t);
    const addr = mode === 'local agent' ? server.addr : `http://127.0.0.2:${server.port}/v1`;
    const spec = monitor({ addr, token: '', node: NODE, stale: false });
    t.equal((spec.params as { local: boolean }).local, mode === 'local agent');
    const run = () => pool.run(spec, 3000);
    let r = await run();
    t.equal(r.ok, true, `passing, another node in maintenance: up (${r.reason})`);

    server.setNodeMaintenance(NODE, 'kernel upgrade, ticket 42');
    r = await run();
    t.equal(r.ok, false, 'node maintenance: down');
    t.equal(r.reason, 'Consul node "node1" is in maintenance mode: kernel upgrade, ticket 42');
    server.setNodeMaintenance(NODE, '');
    r = await run();
    t.equal(r.reason, `Consul node "node1" is in maintenance mode: ${NODE_MAINTENANCE_DEFAULT}`, 'no reason given: Consul\'s default text');
    server.setNodeMaintenance(NODE, false);
    r = await run();
    t.equal(r.ok, true, `node maintenance off: up (${r.reason})`);

    server.setServiceMaintenance(NODE, 'web-1', 'draining for deploy');
    r = await run();
    t.equal(r.ok, false, 'service maintenance: down');
    t.equal(r.reason, 'Consul service "web" (ID "web-1") is in maintenance mode: draining for deploy');
    server.setServiceMaintenance(NODE, 'web-1', false);
    r = await run();
    t.equal(r.ok, true, `service maintenance off: up (${r.reason})`);

    if (mode === 'catalog') {
      const svc = server.requests.filter((q) => q.path === '/v1/health/checks/web');
      t.ok(svc.length >= 6 && svc.every((q) => q.filter === 'Node == "node1"'), 'every /health/checks/web read asks Consul to filter by node');
      const node = server.requests.filter((q) => q.path === '/v1/health/node/node1');
      t.ok(node.length === svc.length && node.every((q) => q.filter === 'CheckID == "_node_maintenance"'), 'and reads the node\'s maintenance check beside it');
      t.ok(server.requests.every((q) => q.status === 200), 'the server could evaluate every filter');
    } else {
      const agent = server.requests.filter((q) => q.path === '/v1/agent/checks');
      t.ok(agent.length >= 6 && agent.every((q) => q.filter === 'enable_gocast in ServiceTags or CheckID == "_node_maintenance"'));
      t.equal(server.count('/v1/health'), 0, 'local: never the catalog');
    }
  });
}

t.test('catalog: an old Consul that ignores filter still only counts this node\'s checks', async (t) => {
  const { server, pool, monitor } = await setup(t);
  server.ignoreFilter = true;
  const spec = monitor({ addr: `http://127.0.0.2:${server.port}/v1`, token: '', node: NODE, stale: false });
  const r = await pool.run(spec, 3000);
  t.equal(r.ok, true, `node2's critical check and node2's maintenance, answered unfiltered, are not this host's: ${r.reason}`);
  t.ok(server.requests.some((q) => q.path === '/v1/health/node/node1' && q.filter !== null), 'the filter was sent (and ignored)');
  server.setCheck({ Node: NODE, CheckID: 'serfHealth', Name: 'Serf Health Status', Status: 'critical', ServiceID: '', ServiceName: '', Type: '' });
  const r2 = await pool.run(spec, 3000);
  t.equal(r2.ok, true, `unfiltered /health/node lists node checks: only _node_maintenance counts (${r2.reason})`);
});

t.test('several instances of the service on the node: every check of every instance must pass', async (t) => {
  const { server, pool, monitor } = await setup(t);
  server.setServices(NODE, [{ ID: 'web-1', Service: 'web', Tags: TAGS }, { ID: 'web-2', Service: 'web', Tags: TAGS }]);
  server.setCheck({ Node: NODE, CheckID: 'service:web-2', Name: 'web-2 tcp', Status: 'critical', ServiceID: 'web-2', ServiceName: 'web', ServiceTags: TAGS, Type: 'tcp' });
  for (const addr of [server.addr, `http://127.0.0.2:${server.port}/v1`]) {
    const spec = monitor({ addr, token: '', node: NODE, stale: false });
    let r = await pool.run(spec, 3000);
    t.equal(r.ok, false, `${addr}: one instance critical: down`);
    t.equal(r.reason, 'Consul check "web-2 tcp" of service "web" is critical');
    server.setCheck({ Node: NODE, CheckID: 'service:web-2', Name: 'web-2 tcp', Status: 'passing', ServiceID: 'web-2', ServiceName: 'web', ServiceTags: TAGS, Type: 'tcp' });
    r = await pool.run(spec, 3000);
    t.equal(r.ok, true);
    t.equal(r.reason, 'Consul checks "web http", "web-2 tcp" of service "web" passing');
    server.setCheck({ Node: NODE, CheckID: 'service:web-2', Name: 'web-2 tcp', Status: 'critical', ServiceID: 'web-2', ServiceName: 'web', ServiceTags: TAGS, Type: 'tcp' });
  }
});

t.test('filter quoting and the test server\'s filter: Consul\'s string escapes; what it can\'t evaluate is 400', async (t) => {
  t.equal(bexprString('node1'), '"node1"');
  t.equal(bexprString('a"b\\c'), '"a\\"b\\\\c"');
  const m = parseFilter(`Node == ${bexprString('a"b\\c')}`);
  t.type(m, 'function');
  const check = { Node: 'a"b\\c', CheckID: 'x', Name: 'x', Status: 'passing', ServiceID: '', ServiceName: '' } as const;
  t.equal((m as (c: TestCheck) => boolean)(check), true, 'an escaped name round-trips');
  t.equal((m as (c: TestCheck) => boolean)({ ...check, Node: 'ab' }), false);
  const server = new ConsulTestServer(NODE);
  await server.start();
  t.teardown(() => server.close());
  for (const bad of ['Node = "x"', 'Node == "x" and CheckID == "y"', 'Bogus == "x"', 'Node ==']) {
    const res = await fetch(`${server.url}/v1/health/checks/web?filter=${encodeURIComponent(bad)}`);
    t.equal(res.status, 400, `400 for ${bad}`);
    t.match(await res.text(), /Failed to create boolean expression evaluator/);
  }
  server.setNodeMaintenance(NODE, 'x');
  const res = await fetch(`${server.url}/v1/health/node/${NODE}?filter=${encodeURIComponent('CheckID == "_node_maintenance"')}`);
  t.match(await res.json(), [{ CheckID: '_node_maintenance', Name: 'Node Maintenance Mode', Status: 'critical', Type: 'maintenance', Notes: 'x', ServiceID: '', ServiceName: '' }],
    'node maintenance as Consul reports it');
});

t.test('config-level: consulSettings carry no namespace or partition when unset', async (t) => {
  t.same(consulSettings(cfg.agent, { CONSUL_NODE: NODE }), { addr: 'http://127.0.0.1:8500/v1', token: '', node: NODE, stale: false });
});
