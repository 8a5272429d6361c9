/**
 * Consul discovery and the consul monitor against the Consul HTTP API test server (real JSON shapes, blocking
 * queries, ACL answers). The monitor runs through a real CheckPool (piscina worker threads).
 */
import t from 'tap';
import { Writable } from 'node:stream';
import { parseConfigText, consulSettings } from '../src/core/config.js';
import { createLogger } from '../src/core/logger.js';
import { CheckPool } from '../src/core/check-pool.js';
import { ConsulDiscovery, requestTimeoutMs, CONFIRM_DELAY_MS, READ_BURST, READ_EVERY_MS } from '../src/plugins/discovery/consul/index.js';
import type { AppSpec, ConsulSettings } from '../src/plugin-api.js';
import { VipcastError } from '../src/core/errors.js';
import { ConsulTestServer, READ_ALL } from './helpers/consul-server.js';

const NODE = 'node1';

function capture(): { log: ReturnType<typeof createLogger>; lines: Array<Record<string, unknown>>; text: () => string } {
  const lines: Array<Record<string, unknown>> = [];
  let raw = '';
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      raw += chunk.toString();
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: createLogger({ destination, pretty: false, level: 'debug' }), lines, text: () => raw };
}

function config(addr: string, extra = '', env: NodeJS.ProcessEnv = {}) {
  return parseConfigText(`
agent:
  listen_addr: ""
  consul_addr: ${addr}
  consul_query_interval: 5s
${extra}
routing: { plugin: dry-run }
bgp: { local_as: 65001, local_ip: 198.18.0.2, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
`, 'test.yaml', { env });
}

/** A discovery with a change queue: `next()` resolves with the next emitted app set. */
function discovery(server: ConsulTestServer, opts: { token?: string; stale?: boolean; node?: string; minBackoffMs?: number; interval?: string; hooks?: Record<string, number> } = {}) {
  const cfg = opts.interval ? parseConfigText(`
agent: { listen_addr: "", consul_addr: ${server.addr}, consul_query_interval: ${opts.interval} }
routing: { plugin: dry-run }
bgp: { local_as: 65001, local_ip: 198.18.0.2, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
`, 'test.yaml', { env: {} }) : config(server.addr);
  const cap = capture();
  const consul: ConsulSettings = { addr: server.addr, token: opts.token ?? '', node: opts.node ?? NODE, stale: opts.stale ?? false };
  // Hooks spread in (not listed), so this file also compiles against older versions of the options.
  const d = new ConsulDiscovery({ agent: cfg.agent, monitors: cfg.monitors, consul, log: cap.log, minBackoffMs: opts.minBackoffMs ?? 100, ...opts.hooks });
  const changes: Array<{ apps: readonly AppSpec[]; at: number }> = [];
  const waiters: Array<() => void> = [];
  const start = () => d.start((apps) => {
    changes.push({ apps, at: performance.now() });
    for (const w of waiters.splice(0)) w();
  });
  let seen = 0;
  const next = async (timeoutMs = 3000): Promise<{ apps: readonly AppSpec[]; at: number }> => {
    const deadline = performance.now() + timeoutMs;
    while (changes.length <= seen) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no discovery change within ${timeoutMs} ms; log: ${cap.text().slice(-1500)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
    return changes[seen++]!;
  };
  return { d, start, next, changes, cap };
}

const names = (apps: readonly AppSpec[]): string[] => apps.map((a) => a.name).sort();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The first log line from index `from` on whose msg matches `re`. */
async function waitLog(cap: ReturnType<typeof capture>, re: RegExp, from: number, ms = 3000): Promise<Record<string, unknown>> {
  const deadline = performance.now() + ms;
  for (;;) {
    const line = cap.lines.slice(from).find((l) => re.test(String(l.msg)));
    if (line) return line;
    if (performance.now() > deadline) throw new Error(`no log ${re} within ${ms} ms; log: ${cap.text().slice(-1500)}`);
    await sleep(10);
  }
}

t.test('tagged services become apps; untagged ignored; a malformed tag skips only its service; removal', async (t) => {
  const server = new ConsulTestServer();
  await server.start();
  t.teardown(() => server.close());
  server.setServices(NODE, [
    { Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.10.1/32', 'gocast_vip_communities=65001:10,65001:11', 'gocast_monitor=port:tcp:80', 'gocast_nat=tcp:80:8080'], Port: 8080 },
    { Service: 'dns', Tags: ['enable_gocast', 'gocast_vip=198.18.10.9/32', 'gocast_vip=198.18.10.2/32'] },
    { Service: 'plain', Tags: ['gocast_vip=198.18.10.3/32'] },
    { Service: 'nodisc', Tags: ['enable_gocast'] },
    { Service: 'bad', Tags: ['enable_gocast', 'gocast_vip=198.18.10.4/32', 'gocast_nat=tcp:99999:80'] },
    { Service: 'evil', Tags: ['enable_gocast', 'gocast_vip=198.18.10.5/32', 'gocast_monitor=exec:rm -rf /'] },
  ]);
  server.setServices('node2', [{ Service: 'other', Tags: ['enable_gocast', 'gocast_vip=198.18.10.6/32'] }]);
  const { d, start, next, cap } = discovery(server);
  t.teardown(() => d.close());
  await start();
  const first = await next();
  t.same(names(first.apps), ['dns', 'web'], 'tagged services of this node only; untagged, vip-less and malformed skipped');
  const web = first.apps.find((a) => a.name === 'web')!;
  t.equal(web.source, 'consul');
  t.same(web.vips.map((v) => v.text), ['198.18.10.1/32']);
  t.same(web.communities.map((c) => c.text), ['65001:10', '65001:11']);
  t.same(web.monitors.map((m) => m.text), ['port:tcp:80']);
  t.same(web.nats.map((n) => n.text), ['tcp:80:8080']);
  t.same(first.apps.find((a) => a.name === 'dns')!.vips.map((v) => v.text), ['198.18.10.2/32'], 'gocast_vip: the last tag wins (gocast)');
  const bad = cap.lines.find((l) => l.service === 'bad');
  t.ok(bad, 'the malformed service is logged');
  t.match(String(bad!.msg), /Consul service "bad" skipped: tag "gocast_nat=tcp:99999:80"/, 'the log names the service and the tag');
  t.match(String(cap.lines.find((l) => l.service === 'evil')?.msg), /"gocast_monitor=exec:rm -rf \/".*only accepted from the config file/, 'exec monitors from Consul tags are refused');
  t.match(String(cap.lines.find((l) => l.service === 'nodisc')?.msg), /gocast_vip= is missing/);
  t.notOk(cap.lines.some((l) => l.service === 'plain'), 'a service without enable_gocast is silently ignored');

  // The same catalog read again (wait expiry) does not log the skipped services again.
  const logged = cap.lines.length;
  server.setServices('node2', []); // bumps the index; node1 unchanged
  await sleep(200);
  t.equal(cap.lines.filter((l, i) => i >= logged && l.service !== undefined).length, 0, 'no repeated skip logs for an unchanged catalog');

  // Several VIPs for one service: comma-separated in the one gocast_vip tag.
  server.setServices(NODE, [
    { Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.10.1/32,2001:db8:10::1/128'] },
  ]);
  const second = await next();
  t.same(names(second.apps), ['web'], 'dns removed from the catalog -> removed');
  t.same(second.apps[0]!.vips.map((v) => v.text), ['198.18.10.1/32', '2001:db8:10::1/128'], 'comma-separated VIPs in one tag');
  server.setServices(NODE, [{ Service: 'web', Tags: ['gocast_vip=198.18.10.1/32'] }]);
  t.same(names((await next()).apps), [], 'enable_gocast tag removed -> app removed');
  server.removeNode(NODE);
  await sleep(200);
  t.same(d.apps(), [], 'unknown node (null) -> no apps');
});

t.test('a blocking query returns promptly on change; one request per interval while idle', async (t) => {
  const server = new ConsulTestServer();
  await server.start();
  t.teardown(() => server.close());
  server.setServices(NODE, [{ Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.11.1/32'] }]);
  const { d, start, next } = discovery(server);
  t.teardown(() => d.close());
  await start();
  await next();
  await sleep(300);
  const before = server.count('/v1/catalog/node/');
  t.ok(before <= 3, `idle: ${before} catalog requests in 300 ms (blocking, not polling)`);
  const held = server.requests.filter((r) => r.path.startsWith('/v1/catalog/node/') && r.query.get('index'));
  t.ok(held.length >= 1 && held.every((r) => r.query.get('wait') === '5s'), 'blocking query with index and wait = consul_query_interval');
  const latencies: number[] = [];
  for (let i = 0; i < 5; i++) {
    const changed = performance.now();
    server.setServices(NODE, [{ Service: 'web', Tags: ['enable_gocast', `gocast_vip=198.18.11.${i + 2}/32`] }]);
    const ch = await next();
    latencies.push(ch.at - changed);
    t.same(ch.apps[0]!.vips.map((v) => v.text), [`198.18.11.${i + 2}/32`]);
    await sleep(100);
  }
  const max = Math.max(...latencies);
  t.comment(`catalog change -> onChange: ${latencies.map((l) => l.toFixed(1)).join(', ')} ms (max ${max.toFixed(1)})`);
  t.ok(max < 1000, `every change seen within 1 s, not at the end of the 5 s wait (max ${max.toFixed(1)} ms)`);
});

t.test('403 for an unknown token, a null filtered by ACLs without a token: clear errors, token never logged; apps kept; 5xx retried with backoff', async (t) => {
  const server = new ConsulTestServer();
  await server.start();
  t.teardown(() => server.close());
  const secret = 's3cr3t-token-0123456789';
  server.setToken(secret);
  server.setServices(NODE, [{ Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.12.1/32'] }]);
  const wrong = discovery(server, { token: 'wrong-token-abcdef' });
  t.teardown(() => wrong.d.close());
  await wrong.start();
  await sleep(400);
  t.equal(wrong.changes.length, 0, 'no apps without read permission');
  const err = wrong.cap.lines.find((l) => /Consul catalog read failed/.test(String(l.msg)));
  t.ok(err, 'the failure is logged');
  t.match(String(err!.msg), /403 ACL not found: the Consul ACL token \(agent.consul_token \/ CONSUL_TOKEN, set\) may not read node "node1"; it needs node "node1" \{ policy = "read" \} and service_prefix "" \{ policy = "read" \}/);
  t.notMatch(wrong.cap.text(), /wrong-token-abcdef/, 'the token is never in the log');
  t.ok(wrong.cap.lines.filter((l) => /Consul catalog read failed/.test(String(l.msg))).length >= 2, 'retried');
  t.equal(server.requests.filter((r) => r.token === 'wrong-token-abcdef').length >= 2, true, 'X-Consul-Token header sent');

  const none = discovery(server);
  t.teardown(() => none.d.close());
  await none.start();
  await sleep(150);
  // Consul with ACLs on: no token = the anonymous token, which may not read the node: 200 null, filtered.
  t.match(String(none.cap.lines.find((l) => /failed/.test(String(l.msg)))?.msg), /token \(agent.consul_token \/ CONSUL_TOKEN, not set\) may not read node "node1" \(Consul answered null, filtered by ACLs\)/, 'no token: the anonymous token\'s filtered null is an error');
  t.equal(none.changes.length, 0, 'no apps reported from a filtered answer');

  const right = discovery(server, { token: secret });
  t.teardown(() => right.d.close());
  await right.start();
  t.same(names((await right.next()).apps), ['web'], 'the right token reads the catalog');
  t.notMatch(right.cap.text(), new RegExp(secret), 'the token is never in the log');

  // 5xx: retried with backoff, apps kept, then recovered.
  server.failWith = 500;
  server.setServices(NODE, [{ Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.12.1/32'] }, { Service: 'api', Tags: ['enable_gocast', 'gocast_vip=198.18.12.2/32'] }]);
  await sleep(700);
  const fails = right.cap.lines.filter((l) => /HTTP 500/.test(String(l.msg)));
  t.ok(fails.length >= 2 && fails.length <= 4, `500s retried with backoff (${fails.length} tries in 700 ms at 100, 200, 400 ms)`);
  t.same(fails.map((f) => f.retry_in_ms).slice(0, 3), [100, 200, 400].slice(0, Math.min(3, fails.length)), 'backoff doubles');
  t.same(names(right.d.apps()), ['web'], 'apps kept during the 5xx');
  server.failWith = undefined;
  t.same(names((await right.next(2000)).apps), ['api', 'web'], 'recovered after Consul came back');
});

t.test('Consul down keeps the last apps; back up resumes', async (t) => {
  const server = new ConsulTestServer();
  await server.start();
  const port = server.port;
  t.teardown(() => server.close().catch(() => undefined));
  server.setServices(NODE, [{ Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.13.1/32'] }]);
  const { d, start, next, changes, cap } = discovery(server);
  t.teardown(() => d.close());
  await start();
  t.same(names((await next()).apps), ['web']);
  await server.stop();
  await sleep(600);
  t.equal(changes.length, 1, 'no change emitted while Consul is down');
  t.same(names(d.apps()), ['web'], 'the last known apps are kept');
  t.ok(cap.lines.some((l) => /ECONNREFUSED.*keeping the last known apps/.test(String(l.msg)) && l.apps_kept === 1), 'logged: unreachable, apps kept');
  server.setServices(NODE, [{ Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.13.1/32'] }, { Service: 'db', Tags: ['enable_gocast', 'gocast_vip=198.18.13.2/32'] }]);
  await server.start(port);
  t.same(names((await next(3000)).apps), ['db', 'web'], 'picked up again when Consul is back');
});

t.test('CONSUL_STALE adds ?stale; close() aborts the in-flight blocking query', async (t) => {
  const server = new ConsulTestServer();
  await server.start();
  t.teardown(() => server.close());
  server.setServices(NODE, [{ Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.14.1/32'] }]);
  const { d, start, next } = discovery(server, { stale: true });
  await start();
  await next();
  await sleep(100);
  const reqs = server.requests.filter((r) => r.path === `/v1/catalog/node/${NODE}`);
  t.ok(reqs.length >= 2 && reqs.every((r) => r.query.has('stale')), 'every catalog read has ?stale');
  const closing = performance.now();
  await d.close();
  const took = performance.now() - closing;
  t.ok(took < 1000, `close() aborted the blocking query in flight instead of waiting out its 5 s (${took.toFixed(1)} ms)`);
  const n = server.requests.length;
  await sleep(200);
  t.equal(server.requests.length, n, 'no request after close');
  t.same(consulSettings({ consulAddr: 'x', consulToken: '' }, { CONSUL_STALE: 'true', CONSUL_NODE: 'n' }), { addr: 'x', token: '', node: 'n', stale: true });
  t.equal(consulSettings({ consulAddr: 'x', consulToken: '' }, {}).stale, false);
  t.match(ConsulDiscovery.disabledReason({ addr: 'x', token: '', node: '', stale: false }), /CONSUL_NODE/);
  t.match(ConsulDiscovery.disabledReason({ addr: '', token: '', node: 'n', stale: false }), /consul_addr/);
});

t.test('consul monitor through a real CheckPool: agent path (local addr) and health path (remote addr)', async (t) => {
  const server = new ConsulTestServer(NODE);
  await server.start();
  t.teardown(() => server.close());
  const token = 'mon-token-42';
  server.setToken(token);
  const pool = new CheckPool({ workers: 1 });
  t.teardown(() => pool.close());

  // Local agent path: 127.0.0.1 address.
  const local = config(server.addr, '  consul_token: ' + token + '\n', { CONSUL_NODE: NODE });
  const spec = local.monitors.parse('consul', { path: 'apps[0].monitors[0]', baseDir: '.', trusted: true, app: 'web', consul: consulSettings(local.agent, { CONSUL_NODE: NODE }) });
  t.equal(spec.text, 'consul');
  t.match(spec.params, { local: true, service: 'web' });
  const run = () => pool.run(spec, 2000);
  let r = await run();
  t.equal(r.ok, false);
  t.match(r.reason, /no Consul check for service "web" on the local agent/);
  const base = { Node: NODE, CheckID: 'service:web', Name: 'web http', ServiceID: 'web', ServiceName: 'web', ServiceTags: ['enable_gocast'] };
  server.setCheck({ ...base, Status: 'passing' });
  server.setCheck({ Node: NODE, CheckID: 'service:other', Name: 'other', Status: 'critical', ServiceID: 'other', ServiceName: 'other', ServiceTags: ['enable_gocast'] });
  server.setCheck({ Node: NODE, CheckID: 'service:web-untagged', Name: 'untagged', Status: 'critical', ServiceID: 'web2', ServiceName: 'web', ServiceTags: [] });
  r = await run();
  t.equal(r.ok, true, `passing is up (${r.reason})`);
  t.match(r.reason, /"web http" of service "web" passing/);
  server.setCheck({ ...base, Status: 'warning' });
  r = await run();
  t.equal(r.ok, false, 'warning is down');
  t.match(r.reason, /Consul check "web http" of service "web" is warning/);
  server.setCheck({ ...base, Status: 'critical' });
  t.match((await run()).reason, /is critical/);
  const agentReqs = server.requests.filter((q) => q.path === '/v1/agent/checks');
  t.ok(agentReqs.length >= 4 && agentReqs.every((q) => q.query.get('filter') === 'enable_gocast in ServiceTags or CheckID == "_node_maintenance"' && q.token === token), 'agent path with the filter (tagged services and node maintenance) and the token');
  t.equal(server.count('/v1/health/checks'), 0, 'local address: never the catalog');

  // Remote path: the same server under another host name (localhost.localdomain style: not localhost/127.0.0.1).
  const remoteAddr = `http://127.0.0.1.nip.invalid:${server.port}/v1`;
  t.throws(() => local.monitors.parse('consul', { path: 'p', baseDir: '.', trusted: true, app: 'web', consul: { addr: remoteAddr, token, node: '', stale: false } }), /CONSUL_NODE/, 'remote consul monitor needs CONSUL_NODE');
  // 127.0.0.2 reaches the loopback too but is not "local" by gocast's rule, so the health path is used.
  await server.listenAlso('127.0.0.2');
  const remote = `http://127.0.0.2:${server.port}/v1`;
  const rspec = local.monitors.parse('consul', { path: 'p', baseDir: '.', trusted: true, app: 'web', consul: { addr: remote, token, node: NODE, stale: true } });
  t.match(rspec.params, { local: false });
  // The catalog path has no tag filter: every check of the service on this node counts (the untagged instance too).
  server.setCheck({ Node: NODE, CheckID: 'service:web-untagged', Name: 'untagged', Status: 'passing', ServiceID: 'web2', ServiceName: 'web', ServiceTags: [] });
  server.setCheck({ ...base, Node: 'node0', CheckID: 'service:web', Status: 'critical' });
  server.setCheck({ ...base, Status: 'passing' });
  r = await pool.run(rspec, 2000);
  t.equal(r.ok, true, `health path: the entry of CONSUL_NODE decides, another node's critical check doesn't (${r.reason})`);
  server.setCheck({ ...base, Status: 'critical' });
  r = await pool.run(rspec, 2000);
  t.equal(r.ok, false);
  t.match(r.reason, /is critical/);
  const h = server.requests.filter((q) => q.path === '/v1/health/checks/web');
  t.ok(h.length === 2 && h.every((q) => q.query.has('stale') && q.token === token), 'health path with ?stale and the token');

  // Wrong token: down, with Consul's answer and no token in the reason.
  const wrong = local.monitors.parse('consul', { path: 'p', baseDir: '.', trusted: true, app: 'web', consul: { addr: server.addr, token: 'nope-token', node: NODE, stale: false } });
  r = await pool.run(wrong, 2000);
  t.equal(r.ok, false);
  t.match(r.reason, /answered 403: ACL not found/);
  t.notMatch(r.reason, /nope-token/);
});

t.test('a consul monitor without agent.consul_addr is a config error with its key path', async (t) => {
  const text = `
agent: { listen_addr: "" }
routing: { plugin: dry-run }
bgp: { local_as: 65001, local_ip: 198.18.0.2, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
apps:
  - name: web
    vip: 198.18.15.1/32
    monitors: ["consul"]
`;
  try {
    parseConfigText(text, 'test.yaml', { env: { CONSUL_NODE: NODE } });
    t.fail('accepted');
  } catch (err) {
    t.type(err, VipcastError);
    t.match((err as VipcastError).details.join('\n'), /apps\[0\]\.monitors\[0\].*needs agent\.consul_addr/);
  }
  const ok = parseConfigText(text.replace('listen_addr: ""', 'listen_addr: "", consul_addr: "http://127.0.0.1:8500/v1"'), 'test.yaml', { env: {} });
  t.match(ok.apps[0]!.monitors[0], { text: 'consul', params: { service: 'web', local: true, addr: 'http://127.0.0.1:8500/v1' } }, 'local Consul: CONSUL_NODE not needed');
  try {
    parseConfigText(text.replace('monitors: ["consul"]', 'monitors: ["consul:x"]').replace('listen_addr: ""', 'listen_addr: "", consul_addr: "http://127.0.0.1:8500/v1"'), 'test.yaml');
    t.fail('consul:x accepted');
  } catch (err) {
    t.match((err as VipcastError).details.join('\n'), /apps\[0\]\.monitors\[0\].*takes no argument/);
  }
});

t.test('test server: ACL answers and key order as Consul (200 null filtered for the node, services left out, 403 only for an unknown token)', async (t) => {
  const server = new ConsulTestServer();
  await server.start();
  t.teardown(() => server.close());
  server.setServices(NODE, [
    { ID: 'web-2', Service: 'web', Tags: [] }, { ID: '10', Service: 'api', Tags: [] }, { ID: 'dns', Service: 'dns', Tags: [] }, { ID: '9', Service: 'api', Tags: [] },
  ]);
  server.setToken('all');
  server.setToken('no-node', { servicePrefix: [''] });
  server.setToken('web-only', { node: [NODE], service: ['web'] });
  const get = async (token?: string) => {
    const res = await fetch(`${server.addr}/catalog/node/${NODE}`, { headers: token ? { 'X-Consul-Token': token } : {} });
    return { status: res.status, filtered: res.headers.get('x-consul-results-filtered-by-acls'), text: await res.text() };
  };
  const all = await get('all');
  t.equal(all.filtered, null, 'a full answer has no filter header');
  t.same([...all.text.matchAll(/"ID":"([^"]+)","Service"/g)].map((m) => m[1]), ['10', '9', 'dns', 'web-2'], 'Services keys in Go\'s sorted order (integer-like keys too)');
  t.same(await get('no-node'), { status: 200, filtered: 'true', text: 'null' }, 'a token that may not read the node: 200 null, filtered');
  t.same(await get(), { status: 200, filtered: 'true', text: 'null' }, 'no token (anonymous, default deny): 200 null, filtered');
  const some = await get('web-only');
  t.equal(some.filtered, 'true');
  t.same(Object.keys((JSON.parse(some.text) as { Services: object }).Services), ['web-2'], 'services the token may not read are left out');
  t.same(await get('gone'), { status: 403, filtered: null, text: 'ACL not found' }, 'an unknown token: 403 ACL not found');
});

t.test('ACL policy change: a filtered null (node unreadable) or services left out withdraw nothing; the error names the minimum policy', async (t) => {
  const server = new ConsulTestServer();
  await server.start();
  t.teardown(() => server.close());
  const secret = 'acl-change-token-31337';
  server.setToken(secret);
  server.setServices(NODE, [{ Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.16.1/32'] }, { Service: 'api', Tags: ['enable_gocast', 'gocast_vip=198.18.16.2/32'] }]);
  const { d, start, next, changes, cap } = discovery(server, { token: secret });
  t.teardown(() => d.close());
  await start();
  t.same(names((await next()).apps), ['api', 'web']);

  // The policy loses node read (Consul: 200 null + X-Consul-Results-Filtered-By-ACLs: true); the bump wakes the read.
  server.setToken(secret, { servicePrefix: [''] });
  server.setServices(NODE, [{ Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.16.1/32'] }, { Service: 'api', Tags: ['enable_gocast', 'gocast_vip=198.18.16.2/32'] }]);
  await sleep(CONFIRM_DELAY_MS + 500);
  t.equal(changes.length, 1, 'no change reported: the filtered null is not "no services"');
  t.same(names(d.apps()), ['api', 'web'], 'the last known apps are kept');
  const err = cap.lines.find((l) => /filtered by ACLs/.test(String(l.msg)));
  t.ok(err, 'logged as a failed read');
  t.match(String(err?.msg), /token \(agent.consul_token \/ CONSUL_TOKEN, set\) may not read node "node1" \(Consul answered null, filtered by ACLs\); it needs node "node1" \{ policy = "read" \} and service_prefix "" \{ policy = "read" \}; keeping the last known apps/);
  t.equal(err?.apps_kept, 2);

  // Node readable again, but only the web service: api left out (filtered) is not a removal of api. The next read
  // comes after the backoff (at most 5 s here: consul_query_interval).
  server.setToken(secret, { node: [NODE], service: ['web'] });
  const from = cap.lines.length;
  await waitLog(cap, /Consul left out services of node "node1" that the Consul ACL token .* may not read \(filtered by ACLs\); it needs node "node1"/, from, 8000);
  await sleep(CONFIRM_DELAY_MS + 500);
  t.equal(changes.length, 1, 'no change reported for an answer with services left out');
  t.same(names(d.apps()), ['api', 'web'], 'api kept');

  // The full policy back: reads resume, and a real removal still goes through.
  server.setToken(secret, READ_ALL);
  server.setServices(NODE, [{ Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.16.1/32'] }]);
  t.same(names((await next(8000)).apps), ['web'], 'a real removal (api unregistered) after the policy is fixed');
  t.notMatch(cap.text(), new RegExp(secret), 'the token is never in the log');
});

t.test('a single transient empty answer withdraws nothing; an empty answer confirmed by a second read removes the apps', async (t) => {
  const server = new ConsulTestServer();
  await server.start();
  t.teardown(() => server.close());
  const services = [{ Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.17.1/32'] }, { Service: 'dns', Tags: ['enable_gocast', 'gocast_vip=198.18.17.2/32'] }];
  server.setServices(NODE, services);
  const { d, start, next, changes, cap } = discovery(server);
  t.teardown(() => d.close());
  await start();
  t.same(names((await next()).apps), ['dns', 'web']);

  // The node disappears (e.g. the agent re-registers it) and is back before the confirming read.
  let from = cap.lines.length;
  server.removeNode(NODE);
  const warn = await waitLog(cap, /reading again in \d+ ms before withdrawing/, from);
  t.match(String(warn.msg), /Consul answered no such node \(null\) for node "node1"/);
  server.setServices(NODE, services);
  await waitLog(cap, /was not confirmed by a second read; nothing withdrawn/, from);
  await sleep(200);
  t.equal(changes.length, 1, 'no change reported for the transient empty answer');
  t.same(names(d.apps()), ['dns', 'web'], 'apps kept');

  // Every service untagged, and it stays so: removed after the second read agrees.
  from = cap.lines.length;
  const removed = performance.now();
  server.setServices(NODE, services.map((s) => ({ ...s, Tags: s.Tags.filter((x) => x !== 'enable_gocast') })));
  const gone = await next(CONFIRM_DELAY_MS + 3000);
  t.same(gone.apps, [], 'two empty answers in a row remove the apps');
  t.ok(gone.at - removed >= CONFIRM_DELAY_MS - 50, `not before the confirming read (${(gone.at - removed).toFixed(0)} ms)`);
  t.ok(cap.lines.slice(from).some((l) => /Consul confirmed no apps for node "node1"/.test(String(l.msg))), 'the confirmed removal is logged');
  const reqs = server.requests.filter((r) => r.path === `/v1/catalog/node/${NODE}`);
  t.notOk(reqs[reqs.length - 1]!.query.has('index'), 'the confirming read does not block');
});

t.test('a 5 min wait answered at 5 min + jitter is no error: the read deadline is wait + wait/16 + margin, and fetch\'s 300 s limits are not in the way', async (t) => {
  // Unit: Consul answers a blocking read at up to wait + wait/16 (5 min -> 318.75 s); 310 s is the case.
  const five = 5 * 60_000;
  t.ok(requestTimeoutMs(five, true) > five + five / 16, `deadline for a 5 min wait: ${requestTimeoutMs(five, true)} ms > 318750 ms`);
  t.ok(requestTimeoutMs(five, true) - (five + five / 16) >= 5000, 'with a margin of seconds for the network');
  t.ok(requestTimeoutMs(1000, false) >= 5000, 'a non-blocking read gets the margin');

  // End to end, scaled down: the limit that broke the old client is fetch's (undici) headersTimeout, 300 s = the
  // longest wait. Here fetch's limits are cut to 1 s (undici's timer is coarse: it fires 1-2 s after) and the wait is
  // 2 s, answered at wait + wait/16 = 2.125 s, Consul's latest.
  const sym = Symbol.for('undici.globalDispatcher.1');
  const g = globalThis as unknown as Record<symbol, { constructor: new (o: object) => { close(): Promise<void> } } | undefined>;
  await fetch('http://127.0.0.1:1/').catch(() => undefined); // loads fetch, which installs its global dispatcher
  const original = g[sym];
  t.ok(original, 'fetch\'s global dispatcher is where Node 20 keeps it');
  const short = new original!.constructor({ headersTimeout: 1000, bodyTimeout: 1000 });
  g[sym] = short as never;
  t.teardown(async () => {
    g[sym] = original;
    await short.close();
  });
  const server = new ConsulTestServer();
  await server.start();
  t.teardown(() => server.close());
  server.holdExtraMs = 125;
  server.setServices(NODE, [{ Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.18.1/32'] }]);
  const { d, start, next, cap } = discovery(server, { interval: '2s', hooks: { httpMarginMs: 1000 } });
  t.teardown(() => d.close());
  await start();
  t.same(names((await next()).apps), ['web']);
  await sleep(2 * (2000 + 125) + 400);
  const errors = cap.lines.filter((l) => /failed/.test(String(l.msg)));
  t.same(errors.map((l) => l.msg), [], 'no read failed');
  const held = server.requests.filter((r) => r.path === `/v1/catalog/node/${NODE}` && r.query.get('wait') === '2s');
  t.ok(held.length >= 2, `the blocking reads go on (${held.length})`);
  t.ok(held.slice(0, 2).every((r) => r.status === 200 && r.heldMs >= 2100), 'each answered after wait + jitter');
  t.ok(server.requests.slice(1).every((r) => r.query.get('index') === '11'), 'the index is never reset (every read after the first blocks on it)');
  t.same(names(d.apps()), ['web']);
});

t.test('our own deadline: a blocking read that gets no answer by wait + wait/16 + margin fails and is retried', async (t) => {
  const server = new ConsulTestServer();
  await server.start();
  t.teardown(() => server.close());
  server.holdExtraMs = 60_000; // never within the deadline
  server.setServices(NODE, [{ Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.18.2/32'] }]);
  const { d, start, next, cap } = discovery(server, { interval: '1s', hooks: { httpMarginMs: 300 } });
  t.teardown(() => d.close());
  await start();
  await next();
  const began = performance.now();
  const deadline = requestTimeoutMs(1000, true, 300);
  for (;;) {
    if (cap.lines.some((l) => /no answer within/.test(String(l.msg)))) break;
    if (performance.now() - began > deadline + 5000) break;
    await sleep(20);
  }
  const line = cap.lines.find((l) => /no answer within/.test(String(l.msg)));
  t.match(String(line?.msg), new RegExp(`no answer within ${deadline} ms; keeping the last known apps`), `the read gave up at its deadline (${deadline} ms = 1 s + 63 ms + 300 ms)`);
  t.same(names(d.apps()), ['web'], 'apps kept');
});

t.test('blocking-query client rules: index backwards resets to a non-blocking read; index 0 is never a blocking index; a churning index is rate limited', async (t) => {
  const server = new ConsulTestServer();
  await server.start();
  t.teardown(() => server.close());
  server.setServices(NODE, [{ Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.19.1/32'] }]);
  const { d, start, next, changes } = discovery(server);
  t.teardown(() => d.close());
  await start();
  await next();
  await sleep(100);
  const catalog = () => server.requests.filter((r) => r.path === `/v1/catalog/node/${NODE}`);

  // A snapshot restore: the index goes back from 11 to 5.
  let n = catalog().length;
  server.setIndex(5);
  await sleep(300);
  let after = catalog().slice(n);
  t.ok(after.length >= 2, 'read again');
  t.notOk(after[0]!.query.has('index'), 'after an index that went backwards: a non-blocking read');
  t.equal(after[1]!.query.get('index'), '5', 'then blocking on the new index');

  // A buggy X-Consul-Index: 0 is never used as a blocking index.
  server.indexHeader = '0';
  server.setIndex(6);
  await sleep(300);
  server.indexHeader = undefined;
  after = catalog().slice(n);
  t.ok(after.every((r) => r.query.get('index') !== '0'), 'never index=0');
  t.ok(after.some((r) => r.query.get('index') === '1'), 'index 1 instead (Consul: "reset to 1")');

  // Churn: the index moves every 5 ms without a change to this node (another node's writes). The bound below holds
  // whatever is left in the bucket.
  await sleep(200);
  let i = 0;
  const churn = setInterval(() => server.setServices('node2', [{ Service: `s${i++}` }]), 5);
  t.teardown(() => clearInterval(churn));
  n = catalog().length;
  const window = 3000;
  await sleep(window);
  const reads = catalog().length - n;
  t.comment(`${reads} catalog reads in ${window} ms of index churn`);
  t.ok(reads <= READ_BURST + Math.ceil(window / READ_EVERY_MS) + 1, `rate limited: ${reads} reads <= ${READ_BURST} burst + 1 per ${READ_EVERY_MS} ms (20 reads/s before)`);
  n = catalog().length;
  await sleep(2000);
  const steady = catalog().length - n;
  t.ok(steady >= 1 && steady <= 3, `steady churn: ${steady} reads in 2 s (one per second)`);
  // A real change during the churn is still seen within a read period.
  const changed = performance.now();
  server.setServices(NODE, [{ Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.19.2/32'] }]);
  const ch = await next(READ_EVERY_MS + 2000);
  t.same(ch.apps[0]!.vips.map((v) => v.text), ['198.18.19.2/32']);
  t.ok(ch.at - changed <= READ_EVERY_MS + 1000, `seen within ${(ch.at - changed).toFixed(0)} ms during the churn`);
  clearInterval(churn);
  t.equal(changes.length, 2, 'the churn itself reported nothing');
});
