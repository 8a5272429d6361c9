/**
 * Config loading: every key to its typed value, defaults, gocast-shaped files, env overrides and MD5 secrets from the
 * environment, and malformed files, each answered with the key path and a readable message (all problems at once).
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { configKeys, loadConfig, parseConfigText, suggest, type ConfigOptions } from '../src/core/config.js';
import { VipcastError } from '../src/core/errors.js';
import { parsePrefix } from '../src/core/values.js';
import type { VipcastConfig } from '../src/core/config-types.js';

// Compiled to dist/test/: fixtures, example and docs stay in the source tree.
const root = fileURLToPath(new URL('../../', import.meta.url));
const fixture = (name: string): string => path.join(root, 'test/fixtures/configs', name);

/** Parse with an empty environment (never the developer's), dry-run unless the case says otherwise. */
function parse(yaml: string, opts: ConfigOptions = {}): VipcastConfig {
  return parseConfigText(yaml, 'test.yaml', { env: {}, routingPlugin: 'dry-run', ...opts });
}

/** The coded error a parse throws (fails the test when it does not throw). */
function failure(yaml: string, opts: ConfigOptions = {}): VipcastError {
  try {
    parse(yaml, opts);
  } catch (err) {
    if (err instanceof VipcastError) return err;
    throw err;
  }
  throw new Error(`expected the config to be refused:\n${yaml}`);
}

/** The coded error a load rejects with (fails the test when it resolves). */
async function loadFailure(file: string, opts: ConfigOptions = { env: {} }): Promise<VipcastError> {
  const result = await loadConfig(file, opts).then(
    () => new Error(`expected ${file} to be refused`),
    (err: unknown) => err,
  );
  if (result instanceof VipcastError) return result;
  throw result;
}

t.test('full.yaml: every key is parsed to its typed value', async (t) => {
  const config = await loadConfig(fixture('full.yaml'), { env: { FULL_MD5: 'from-env', FULL_API_TOKEN: 'full-api-token-0123456789' } });
  t.equal(config.file, fixture('full.yaml'));
  t.same(config.agent, {
    listenAddr: '[::1]:9180',
    monitorIntervalMs: 2000,
    cleanupTimerMs: 90_000,
    consulAddr: 'https://consul.example:8501/v1',
    consulQueryIntervalMs: 45_000,
    consulToken: 'file-token',
    rise: 3,
    fall: 2,
    checkTimeoutMs: 1500,
    iptablesBinary: 'iptables-nft',
    removeVipOnWithdraw: true,
    checkWorkers: 4,
    prefixPolicy: {
      allowedPrefixes: ['198.18.100.0/24', '198.18.101.0/24', '2001:db8:100::/48'].map((p) => parsePrefix(p, 'p')),
      registrationAllowedPrefixes: [parsePrefix('198.18.100.0/25', 'p')],
      minLengthV4: 28,
      minLengthV6: 64,
      allowedCommunities: [
        { type: 'standard', parts: [65001, undefined], text: '65001:*' },
        { type: 'standard', parts: [65535, 65281], text: 'no-export' },
        { type: 'large', parts: [65001, 2, undefined], text: '65001:2:*' },
      ],
      peers: ['198.18.0.1', '198.18.1.1', '2001:db8::1'],
      defaultGatewayPeer: false,
      localIp: '198.18.0.2',
    },
    pidFile: path.join(root, 'test/fixtures/configs/run/vipcast.pid'),
    stateFile: path.join(root, 'test/fixtures/configs/run/host-state.json'),
    registrationsFile: path.join(root, 'test/fixtures/configs/run/registrations.json'),
    maintenanceStateFile: path.join(root, 'test/fixtures/configs/run/maintenance.json'),
    maintenanceFile: path.join(root, 'test/fixtures/configs/run/maintenance'),
    maintenanceDir: path.join(root, 'test/fixtures/configs/run/maintenance.d'),
    shutdownDrainMs: 2500,
    apiToken: 'full-api-token-0123456789',
    apiAllowedUsers: ['deploy', '1001'],
    apiAllowedGroups: ['vipcast'],
    apiSocketMode: 0o640,
    apiSocketGroup: 'vipcast',
    apiInsecureOpen: true,
    flapDamping: { enabled: true, penalty: 500, suppressThreshold: 3000, reuseThreshold: 1000, halfLifeMs: 300_000, maxSuppressMs: 1_800_000 },
  });
  t.equal(config.bgp.localAs, 4200000001);
  t.equal(config.bgp.localIp, '198.18.0.2');
  t.same(config.bgp.communities.map((c) => c.text), ['65001:1', '65535:65281', '65001:2:3']);
  t.same(config.bgp.communities[0], { type: 'standard', value: 65001 * 65536 + 1, text: '65001:1' });
  t.same(config.bgp.communities[2], { type: 'large', global: 65001, local1: 2, local2: 3, text: '65001:2:3' });
  t.equal(config.bgp.origin, 'egp');
  t.equal(config.bgp.listenPort, -1);
  t.equal(config.bgp.nextHop, 'self');
  t.same(config.bgp.peers, [
    { address: '198.18.0.1', asn: 65000, communities: [] },
    { address: '2001:db8::1', asn: 65010, multiHop: false, md5Password: 's3cret-inline', communities: [{ type: 'standard', value: 65010 * 65536 + 7, text: '65010:7' }] },
    { address: '198.18.1.1', asn: 65020, multiHop: true, md5Password: 'from-env', md5EnvVar: 'FULL_MD5', communities: [] },
  ]);
  t.notOk('multiHop' in config.bgp.peers[0]!, 'unset multi_hop stays undefined (auto), not false');
  t.same(config.routing, { plugin: 'dry-run', settings: {}, gobgp: { address: 'unix:///run/gobgpd/api.sock', managed: false, binary: 'gobgpd', socketDir: '/run/vipcast/gobgpd' } });

  t.equal(config.apps.length, 2);
  const [web, batch] = config.apps;
  t.equal(web!.name, 'web');
  t.equal(web!.source, 'config');
  t.same(web!.vips, [
    { address: '198.18.100.10', length: 32, family: 'ipv4', text: '198.18.100.10/32' },
    { address: '2001:db8:100::10', length: 128, family: 'ipv6', text: '2001:db8:100::10/128' },
  ]);
  t.same(web!.communities.map((c) => c.text), ['65001:80']);
  t.same(web!.monitors.map((m) => m.text), ['port:tcp:8080', 'port:connect:127.0.0.1:8081', 'http:http://127.0.0.1:8080/health']);
  t.same(web!.monitors[0]!.params, { mode: 'listen', protocol: 'tcp', port: 8080 });
  t.same(web!.nats, [
    { protocol: 'tcp', listenPort: 80, targetPort: 8080, text: 'tcp:80:8080' },
    { protocol: 'tcp', listenPort: 443, targetPort: 443, text: 'tcp:443:443' },
  ]);
  t.same([web!.rise, web!.fall, web!.intervalMs, web!.timeoutMs], [5, 4, 500, 400]);
  t.equal(batch!.name, 'batch.jobs_1');
  t.same(batch!.vips.map((v) => v.text), ['198.18.101.0/24']);
  t.same(batch!.monitors, [], 'an app without monitors is kept (gocast: always healthy)');
  t.same([batch!.rise, batch!.fall, batch!.intervalMs, batch!.timeoutMs], [3, 2, 2000, 1500], 'agent defaults inherited');
  t.same(config.warnings, []);
  t.ok(Object.isFrozen(config) && Object.isFrozen(config.apps) && Object.isFrozen(config.bgp.peers), 'the result is frozen');
});

t.test('an empty file in dry-run gets every default', async (t) => {
  const config = parse('');
  t.same(config.agent, {
    listenAddr: '127.0.0.1:8080',
    monitorIntervalMs: 10_000,
    cleanupTimerMs: 900_000,
    consulAddr: '',
    consulQueryIntervalMs: 30_000,
    consulToken: '',
    rise: 1,
    fall: 1,
    checkTimeoutMs: 5000,
    iptablesBinary: 'iptables',
    removeVipOnWithdraw: false,
    checkWorkers: 2,
    prefixPolicy: { allowedPrefixes: [], registrationAllowedPrefixes: [], minLengthV4: 24, minLengthV6: 48, peers: [], defaultGatewayPeer: false },
    pidFile: '',
    stateFile: '/run/vipcast/host-state.json',
    registrationsFile: '',
    maintenanceStateFile: '',
    maintenanceFile: '',
    maintenanceDir: '',
    shutdownDrainMs: 0,
    apiToken: '',
    apiAllowedUsers: [],
    apiAllowedGroups: [],
    apiSocketMode: 0o660,
    apiSocketGroup: '',
    apiInsecureOpen: false,
    flapDamping: { enabled: false, penalty: 1000, suppressThreshold: 2000, reuseThreshold: 750, halfLifeMs: 120_000, maxSuppressMs: 600_000 },
  });
  t.same(config.bgp, { localAs: 64512, communities: [], origin: 'igp', listenPort: 179, nextHop: 'local_ip', peers: [] });
  t.same(config.routing, { plugin: 'dry-run', settings: {}, gobgp: { address: '127.0.0.1:50051', managed: false, binary: 'gobgpd', socketDir: '/run/vipcast/gobgpd' } }, 'a dry run never manages gobgpd');
  t.same(config.apps, []);
  t.equal(parseConfigText('# nothing\n', '', { env: {}, routingPlugin: 'dry-run' }).file, '', 'no file name: file is ""');
});

t.test('check_timeout defaults to min(monitor_interval, 5s) and shrinks to a shorter per-app interval', async (t) => {
  const fast = parse('agent: { monitor_interval: 1s }\napps: [{ name: a, vip: 198.18.0.1/32, monitor_interval: 200ms }]');
  t.equal(fast.agent.checkTimeoutMs, 1000);
  t.equal(fast.apps[0]!.timeoutMs, 200);
  const slow = parse('agent: { monitor_interval: 1m, check_timeout: 20s }\napps: [{ name: a, vip: 198.18.0.1/32, monitor_interval: 30s }]');
  t.equal(slow.agent.checkTimeoutMs, 20_000);
  t.equal(slow.apps[0]!.timeoutMs, 20_000);
});

t.test('a gocast-shaped config loads unchanged', async (t) => {
  const config = await loadConfig(fixture('gocast.yaml'), { env: {} });
  t.equal(config.routing.plugin, 'gobgp', 'gobgp by default');
  t.equal(config.agent.listenAddr, ':8080');
  t.equal(config.agent.monitorIntervalMs, 10_000);
  t.equal(config.agent.cleanupTimerMs, 15 * 60_000);
  t.equal(config.agent.consulAddr, 'http://127.0.0.1:8500/v1');
  t.equal(config.agent.consulQueryIntervalMs, 5 * 60_000);
  t.equal(config.agent.consulToken, '11111111-2222-3333-4444-555555555555');
  t.equal(config.bgp.localAs, 64600);
  t.same(config.bgp.peers, [{ address: '198.18.0.1', asn: 64700, communities: [] }], 'remote_as + peer_ip become the first peer');
  t.same(config.bgp.communities.map((c) => c.text), ['64600:100', '64600:200']);
  t.equal(config.bgp.origin, 'incomplete', 'gocast origin "unknown" is incomplete');
  t.same(config.apps.map((a) => a.name), ['app1', 'app2', 'always-up']);
  t.same(config.apps[0]!.vips.map((v) => v.text), ['198.18.10.1/32']);
  t.same(config.apps[0]!.communities.map((c) => c.text), ['64600:300']);
  t.same(config.apps[0]!.monitors.map((m) => m.text), ['port:tcp:5000']);
  t.same(config.apps[1]!.monitors.map((m) => m.text), ['port:udp:5353', 'exec:/usr/local/bin/check-app2 --quick']);
  t.same(config.apps[1]!.nats.map((n) => n.text), ['tcp:80:8080', 'udp:53:53']);
  t.same(config.apps[2]!.monitors, []);
  t.same([config.apps[0]!.rise, config.apps[0]!.fall], [1, 1], 'gocast semantics: rise 1, fall 1');
  t.same(config.warnings, []);
});

t.test("gocast's shipped shape: consul_addr without /v1 gets it, with a warning", async (t) => {
  const config = parse('agent: { consul_addr: "https://consul/" }');
  t.equal(config.agent.consulAddr, 'https://consul/v1');
  t.match(config.warnings, [/^agent\.consul_addr: "https:\/\/consul" has no \/v1/]);
});

t.test('only peer_as (no peer_ip) is a peer at the default gateway', async (t) => {
  const config = parse('bgp: { local_as: 65001, peer_as: 65000 }', { routingPlugin: 'gobgp' });
  t.same(config.bgp.peers, [{ asn: 65000, communities: [] }]);
  t.equal(config.bgp.peers[0]!.address, undefined);
  t.same(parse('bgp: { peer_as: 65000, remote_as: 65000 }').bgp.peers[0]!.asn, 65000, 'peer_as and remote_as may agree');
});

t.test('a bare VIP address is a host route', async (t) => {
  const config = parse('apps: [{ name: a, vip: 198.18.0.1 }, { name: b, vip: "2001:DB8::1" }]');
  t.same(config.apps.map((a) => a.vips[0]!.text), ['198.18.0.1/32', '2001:db8::1/128']);
});

t.test('an empty value means the default, as in gocast', async (t) => {
  const config = parse('agent:\n  consul_token:\n  monitor_interval:\nbgp:\napps:\n');
  t.equal(config.agent.consulToken, '');
  t.equal(config.agent.monitorIntervalMs, 10_000);
  t.same(config.apps, []);
});

t.test('YAML merge keys and anchors work', async (t) => {
  const config = parse([
    'apps:',
    '  - &web { name: web, vip: 198.18.0.1/32, monitors: ["port:tcp:80"], rise: 2 }',
    '  - <<: *web',
    '    name: web2',
    '    vip: 198.18.0.2/32',
  ].join('\n'));
  t.same(config.apps.map((a) => [a.name, a.rise, a.monitors[0]!.text]), [['web', 2, 'port:tcp:80'], ['web2', 2, 'port:tcp:80']]);
});

t.test('routingPlugin option and gobgp requirements', async (t) => {
  t.equal(parse('routing: { plugin: gobgp }').routing.plugin, 'dry-run', 'the option wins over the file');
  const err = failure('', { routingPlugin: undefined });
  t.same(err.details, [
    'bgp.local_as: missing (required with routing.plugin gobgp)',
    'bgp: no BGP peer: set bgp.peer_as (the peer is the default gateway), bgp.peer_ip with bgp.peer_as, or bgp.peers[] (only routing.plugin dry-run runs without peers)',
  ]);
});

t.test('environment: CONSUL_TOKEN wins over the file (an empty one does not), VIPCAST_GOBGP_ADDRESS', async (t) => {
  const yaml = 'agent: { consul_token: from-file }';
  t.equal(parse(yaml, { env: { CONSUL_TOKEN: 'from-env' } }).agent.consulToken, 'from-env');
  t.equal(parse(yaml, { env: { CONSUL_TOKEN: '' } }).agent.consulToken, 'from-file');
  t.equal(parse('', { env: { VIPCAST_GOBGP_ADDRESS: '[::1]:50051' } }).routing.gobgp.address, '[::1]:50051');
});

t.test('maintenance keys: relative paths from the config folder; the state file defaults under /var/lib/vipcast, not in a dry run', async (t) => {
  const config = parseConfigText('agent: { maintenance_file: maint, maintenance_dir: maint.d/, maintenance_state_file: m.json }', '/etc/vipcast/vipcast.yaml', { env: {}, routingPlugin: 'dry-run' });
  t.equal(config.agent.maintenanceFile, '/etc/vipcast/maint');
  t.equal(config.agent.maintenanceDir, '/etc/vipcast/maint.d');
  t.equal(config.agent.maintenanceStateFile, '/etc/vipcast/m.json');
  const real = parseConfigText('bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }\nrouting: { gobgp: { address: "127.0.0.1:50051" } }', '/etc/vipcast/vipcast.yaml', { env: {} });
  t.equal(real.agent.maintenanceStateFile, '/var/lib/vipcast/maintenance.json', 'kept across reboots by default');
  t.equal(real.agent.maintenanceFile, '', 'no file by default');
  t.equal(real.agent.maintenanceDir, '', 'no folder by default');
  t.equal(parse('agent: { maintenance_state_file: "" }').agent.maintenanceStateFile, '', '"" = not kept');
});

t.test('pid_file: relative paths resolve against the config folder', async (t) => {
  const config = parseConfigText('agent: { pid_file: vipcast.pid }', '/etc/vipcast/vipcast.yaml', { env: {}, routingPlugin: 'dry-run' });
  t.equal(config.agent.pidFile, '/etc/vipcast/vipcast.pid');
  t.equal(parse('agent: { pid_file: /run/vipcast.pid }').agent.pidFile, '/run/vipcast.pid');
});

// ---------------------------------------------------------------------------------------------------------------------
// Malformed configs: each must be refused with a detail that starts with the key path and carries the message.

interface Bad {
  readonly yaml: string;
  readonly path: string;
  readonly message: string | RegExp;
  readonly opts?: ConfigOptions;
}

const APP = 'name: a, vip: 198.18.0.1/32';
const BAD: Bad[] = [
  // unknown keys, with suggestions
  { yaml: 'app: []', path: 'app', message: 'unknown key (did you mean "apps"?)' },
  { yaml: 'agent: { monitor: 1s }', path: 'agent.monitor', message: 'did you mean "monitor_interval"' },
  { yaml: `apps: [{ ${APP}, monitor: ["port:tcp:80"] }]`, path: 'apps[0].monitor', message: 'unknown key (did you mean "monitors"' },
  { yaml: 'bgp: { peer_asn: 65000 }', path: 'bgp.peer_asn', message: 'unknown key (did you mean "peer_as"?)' },
  { yaml: 'bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 1, md5password: x }] }', path: 'bgp.peers[0].md5password', message: 'did you mean "md5_password"?' },
  { yaml: 'bgp: { peers: [{ peer_ip: 198.18.0.1, peerAs: 1 }] }', path: 'bgp.peers[0].peerAs', message: 'did you mean "peer_as"' },
  { yaml: 'bgp: { neighbors: [] }', path: 'bgp.neighbors', message: 'did you mean "peers"?' },
  { yaml: 'agent: { local_as: 65001 }', path: 'agent.local_as', message: '"local_as" belongs in bgp: bgp.local_as' },
  { yaml: `apps: [{ ${APP}, communities: ["1:2"] }]`, path: 'apps[0].communities', message: 'did you mean "vip_config.bgp_communities"' },
  { yaml: `apps: [{ ${APP}, vip_config: { communities: ["1:2"] } }]`, path: 'apps[0].vip_config.communities', message: 'did you mean "bgp_communities"' },
  { yaml: 'routing: { gobgp: { adress: "127.0.0.1:50051" } }', path: 'routing.gobgp.adress', message: 'did you mean "address"' },
  { yaml: 'agent: { zzz: 1 }', path: 'agent.zzz', message: 'unknown key (known: listen_addr, monitor_interval' },
  // shapes
  { yaml: '- agent', path: '(top level)', message: 'a list is not a mapping' },
  { yaml: 'agent: [listen_addr]', path: 'agent', message: 'a list is not a mapping' },
  { yaml: 'agent: { rise: { a: 1 } }', path: 'agent.rise', message: 'is a mapping, not a single value' },
  { yaml: 'apps: { name: a }', path: 'apps', message: 'is not a list of apps' },
  { yaml: 'apps: [web]', path: 'apps[0]', message: '"web" is not an app' },
  { yaml: `apps: [{ ${APP}, vip_config: ["1:2"] }]`, path: 'apps[0].vip_config', message: 'a list is not a mapping' },
  // agent
  { yaml: 'agent: { listen_addr: "8080" }', path: 'agent.listen_addr', message: '"8080" is not host:port' },
  { yaml: 'agent: { listen_addr: ":99999" }', path: 'agent.listen_addr', message: '"99999" is not a port (1..65535)' },
  { yaml: 'agent: { listen_addr: "::1:80" }', path: 'agent.listen_addr', message: 'IPv6 as [addr]:port' },
  { yaml: 'agent: { listen_addr: "300.1.1.1:80" }', path: 'agent.listen_addr', message: '"300.1.1.1" is not an IP address or host name' },
  { yaml: 'agent: { monitor_interval: 10 }', path: 'agent.monitor_interval', message: '10 has no unit (write "10s" or "10ms")' },
  { yaml: 'agent: { monitor_interval: 10ms }', path: 'agent.monitor_interval', message: '"10ms" is too short (minimum 50ms)' },
  { yaml: 'agent: { monitor_interval: ten seconds }', path: 'agent.monitor_interval', message: '"ten seconds" is not a duration' },
  { yaml: 'agent: { monitor_interval: "-5s" }', path: 'agent.monitor_interval', message: 'is not a duration' },
  { yaml: 'agent: { cleanup_timer: 0s }', path: 'agent.cleanup_timer', message: 'must be more than 0) (to remove at once, set agent.remove_vip_on_withdraw: true)' },
  { yaml: 'agent: { cleanup_timer: 1000h }', path: 'agent.cleanup_timer', message: 'is too long' },
  { yaml: 'agent: { shutdown_drain: 6s }', path: 'agent.shutdown_drain', message: '"6s" is too long (at most 5s: vipcast exits within 10 s of a signal and the withdraw needs the rest)' },
  { yaml: 'agent: { shutdown_drain: 3 }', path: 'agent.shutdown_drain', message: '3 has no unit (write "3s" or "3ms")' },
  { yaml: 'agent: { consul_query_interval: 100ms }', path: 'agent.consul_query_interval', message: 'minimum 1s' },
  { yaml: 'agent: { check_timeout: 20s }', path: 'agent.check_timeout', message: '20s is longer than agent.monitor_interval 10s' },
  { yaml: 'agent: { check_timeout: 0s }', path: 'agent.check_timeout', message: 'is too short (minimum 10ms)' },
  { yaml: 'agent: { consul_addr: "consul:8500" }', path: 'agent.consul_addr', message: 'must be an http:// or https:// URL' },
  { yaml: 'agent: { consul_addr: "not a url" }', path: 'agent.consul_addr', message: 'is not a URL' },
  { yaml: 'agent: { consul_token: 12345 }', path: 'agent.consul_token', message: 'is not a string (quote it)' },
  { yaml: 'agent: { rise: 0 }', path: 'agent.rise', message: '0 is not an integer in 1..100' },
  { yaml: 'agent: { fall: "2" }', path: 'agent.fall', message: '"2" is not an integer in 1..100' },
  { yaml: 'agent: { check_workers: 100 }', path: 'agent.check_workers', message: '100 is not an integer in 1..64' },
  { yaml: 'agent: { remove_vip_on_withdraw: yes }', path: 'agent.remove_vip_on_withdraw', message: '"yes" is not true or false' },
  { yaml: 'agent: { iptables_binary: nft }', path: 'agent.iptables_binary', message: '"nft" is not one of iptables, iptables-nft, iptables-legacy' },
  { yaml: 'agent: { pid_file: /run/ }', path: 'agent.pid_file', message: 'is not a file path' },
  { yaml: 'agent: { maintenance_state_file: /var/lib/ }', path: 'agent.maintenance_state_file', message: 'is not a file path' },
  { yaml: 'agent: { maintenance_file: 7 }', path: 'agent.maintenance_file', message: 'is not a file path' },
  { yaml: 'agent: { maintenance_dir: "/" }', path: 'agent.maintenance_dir', message: 'is not a folder path' },
  // bgp scalars
  { yaml: 'bgp: { local_as: 0 }', path: 'bgp.local_as', message: '0 is not an AS number (1..4294967295)' },
  { yaml: 'bgp: { local_as: 4294967296 }', path: 'bgp.local_as', message: 'is not an AS number' },
  { yaml: 'bgp: { local_ip: 300.1.1.1 }', path: 'bgp.local_ip', message: '"300.1.1.1" is not an IP address' },
  { yaml: 'bgp: { communities: [asn:nnnn] }', path: 'bgp.communities[0]', message: '"asn:nnnn" is not a community' },
  { yaml: 'bgp: { communities: ["1:2", 65536:1] }', path: 'bgp.communities[1]', message: 'must be 0..65535' },
  { yaml: 'bgp: { communities: "65000:1" }', path: 'bgp.communities', message: 'is not a list (write ["65000:100"])' },
  { yaml: 'bgp: { communities: { a: 1 } }', path: 'bgp.communities', message: 'is a mapping, not a list' },
  { yaml: 'bgp: { origin: bgp }', path: 'bgp.origin', message: '"bgp" is not a BGP origin (igp, egp or incomplete)' },
  { yaml: 'bgp: { listen_port: 0 }', path: 'bgp.listen_port', message: 'is not a port (1..65535, or -1 to only connect out)' },
  { yaml: 'bgp: { listen_port: "179abc" }', path: 'bgp.listen_port', message: '"179abc" is not a port' },
  { yaml: 'bgp: { next_hop: peer }', path: 'bgp.next_hop', message: '"peer" is not one of local_ip, self' },
  // legacy peer
  { yaml: 'bgp: { peer_as: 65000, remote_as: 65002 }', path: 'bgp.remote_as', message: '65002 differs from bgp.peer_as 65000 (remote_as is an alias of peer_as' },
  { yaml: 'bgp: { peer_ip: 198.18.0.1 }', path: 'bgp.peer_as', message: 'missing (bgp.peer_ip is set' },
  { yaml: 'bgp: { peer_ip: 198.18.0.999, peer_as: 1 }', path: 'bgp.peer_ip', message: 'is not an IP address' },
  // peers[]
  { yaml: 'bgp: { peers: { peer_ip: 198.18.0.1 } }', path: 'bgp.peers', message: 'is not a list of peers' },
  { yaml: 'bgp: { peers: [198.18.0.1] }', path: 'bgp.peers[0]', message: 'is not a peer' },
  { yaml: 'bgp: { peers: [{ peer_ip: 198.18.0.1 }] }', path: 'bgp.peers[0]', message: 'missing peer_as' },
  { yaml: 'bgp: { peers: [{ peer_ip: 198.18.0.1, remote_as: 0 }] }', path: 'bgp.peers[0].remote_as', message: 'is not an AS number' },
  { yaml: 'bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 1, multi_hop: "yes" }] }', path: 'bgp.peers[0].multi_hop', message: 'is not true or false' },
  { yaml: 'bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 1, md5_password: a, md5_env_var: B }] }', path: 'bgp.peers[0]', message: 'set md5_password or md5_env_var, not both' },
  { yaml: 'bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 1, md5_env_var: BGP_MD5 }] }', path: 'bgp.peers[0].md5_env_var', message: 'environment variable BGP_MD5 is not set' },
  { yaml: 'bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 1, md5_env_var: BGP_MD5 }] }', path: 'bgp.peers[0].md5_env_var', message: 'environment variable BGP_MD5 is empty', opts: { env: { BGP_MD5: '' } } },
  { yaml: 'bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 1, md5_env_var: 1BAD }] }', path: 'bgp.peers[0].md5_env_var', message: '"1BAD" is not an environment variable name' },
  { yaml: `bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 1, md5_password: ${'x'.repeat(81)} }] }`, path: 'bgp.peers[0].md5_password', message: 'is longer than 80 characters' },
  { yaml: 'bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 1, communities: [x] }] }', path: 'bgp.peers[0].communities[0]', message: '"x" is not a community' },
  { yaml: 'bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 1 }, { peer_ip: 198.18.0.1, peer_as: 2 }] }', path: 'bgp.peers[1].peer_ip', message: '198.18.0.1 is already configured at bgp.peers[0].peer_ip' },
  { yaml: 'bgp: { peer_ip: 198.18.0.1, peer_as: 1, peers: [{ peer_ip: 198.18.0.1, peer_as: 2 }] }', path: 'bgp.peers[0].peer_ip', message: 'is already configured at bgp.peer_ip' },
  { yaml: 'bgp: { peers: [{ peer_as: 1 }, { peer_as: 2 }] }', path: 'bgp.peers[1]', message: 'a second default-gateway peer (peer_ip unset) is already configured at bgp.peers[0]' },
  // routing
  { yaml: 'routing: { plugin: dryrun }', path: 'routing.plugin', message: 'unknown router "dryrun" (known: dry-run, gobgp; did you mean "dry-run"?)', opts: { routingPlugin: undefined } },
  { yaml: 'routing: { plugin: Bird }', path: 'routing.plugin', message: '"Bird" is not a router plugin name', opts: { routingPlugin: undefined } },
  { yaml: 'routing: { plugin: dry-run, settings: { file: /tmp/x } }', path: 'routing.settings.file', message: 'unknown key: routing.plugin dry-run takes no settings', opts: { routingPlugin: undefined } },
  { yaml: 'routing: { plugin: dry-run, settings: [1] }', path: 'routing.settings', message: 'is not a mapping (routing.plugin dry-run takes no settings)', opts: { routingPlugin: undefined } },
  { yaml: 'bgp: { local_as: 65001, peer_as: 2 }\nrouting: { plugin: gobgp, settings: { address: "127.0.0.1:50051" } }', path: 'routing.settings', message: 'not used by routing.plugin gobgp: its settings are the routing.gobgp block', opts: { routingPlugin: undefined } },
  { yaml: 'routing: { gobgp: { address: "::1:50051" } }', path: 'routing.gobgp.address', message: 'is not host:port' },
  { yaml: 'routing: { gobgp: { address: "unix:run/gobgp.sock" } }', path: 'routing.gobgp.address', message: 'write "unix:///absolute/path"' },
  { yaml: 'routing: { gobgp: { address: "127.0.0.1" } }', path: 'routing.gobgp.address', message: 'is not host:port' },
  { yaml: 'bgp: { local_as: 1, peer_as: 2 }', path: 'routing.gobgp.address (from $VIPCAST_GOBGP_ADDRESS)', message: 'is not host:port', opts: { env: { VIPCAST_GOBGP_ADDRESS: 'nope' } } },
  { yaml: 'bgp: { peer_as: 2 }', path: 'bgp.local_as', message: 'missing (required with routing.plugin gobgp)', opts: { routingPlugin: undefined } },
  { yaml: 'bgp: { local_as: 1 }', path: 'bgp', message: 'no BGP peer', opts: { routingPlugin: undefined } },
  { yaml: 'bgp: { local_as: 1, peers: [] }', path: 'bgp', message: 'no BGP peer', opts: { routingPlugin: undefined } },
  // apps
  { yaml: 'apps: [{ vip: 198.18.0.1/32 }]', path: 'apps[0]', message: 'missing name' },
  { yaml: 'apps: [{ name: a }]', path: 'apps[0]', message: 'missing vip' },
  { yaml: 'apps: [{ name: "web app", vip: 198.18.0.1/32 }]', path: 'apps[0].name', message: '"web app" is not a valid app name' },
  { yaml: 'apps: [{ name: a, vip: 10.0.0.1/33 }]', path: 'apps[0].vip', message: '"10.0.0.1/33" is not a prefix (length must be 0..32)' },
  { yaml: 'apps: [{ name: a, vip: 10.0.0.1/24 }]', path: 'apps[0].vip', message: 'has host bits set (did you mean 10.0.0.0/24?)' },
  { yaml: 'apps: [{ name: a, vip: "2001:db8::1/64" }]', path: 'apps[0].vip', message: 'has host bits set (did you mean 2001:db8::/64?)' },
  { yaml: 'apps: [{ name: a, vip: [] }]', path: 'apps[0].vip', message: 'is an empty list' },
  { yaml: 'apps: [{ name: a, vip: [198.18.0.1/32, 198.18.0.2/32, 198.18.0.1/32] }]', path: 'apps[0].vip[2]', message: '198.18.0.1/32 is listed twice' },
  { yaml: 'apps: [{ name: a, vip: 0.0.0.0/0 }]', path: 'apps[0].vip', message: '0.0.0.0/0 is refused: a default route is never announced' },
  { yaml: 'apps: [{ name: a, vip: 198.18.0.1/32 }, { name: a, vip: 198.18.0.2/32 }]', path: 'apps[1].name', message: '"a" is already the name of apps[0]' },
  { yaml: 'apps: [{ name: a, vip: 198.18.0.1/32 }, { name: b, vip: [198.18.0.2/32, 198.18.0.1/32] }]', path: 'apps[1].vip[1]', message: '198.18.0.1/32 is already the VIP of app "a" (apps[0].vip)' },
  { yaml: `apps: [{ ${APP}, monitors: "port:tcp:80" }]`, path: 'apps[0].monitors', message: 'is not a list' },
  { yaml: `apps: [{ ${APP}, monitors: ["tcp:80"] }]`, path: 'apps[0].monitors[0]', message: 'unknown monitor type "tcp"' },
  { yaml: `apps: [{ ${APP}, monitors: ["port:tcp:80", "port:tcp:70000"] }]`, path: 'apps[0].monitors[1]', message: '"70000" is not a port' },
  { yaml: `apps: [{ ${APP}, monitors: ["port:tcp:80", "port:tcp:80"] }]`, path: 'apps[0].monitors[1]', message: '"port:tcp:80" is listed twice' },
  { yaml: `apps: [{ ${APP}, monitors: [{ type: port, hots: 127.0.0.1, port: 80 }] }]`, path: 'apps[0].monitors[0].hots', message: 'unknown key for a port monitor' },
  { yaml: `apps: [{ ${APP}, monitors: [{ type: http, uri: "http://127.0.0.1/" }] }]`, path: 'apps[0].monitors[0].uri', message: 'unknown key for an http monitor (known: url, expect_status)' },
  { yaml: `apps: [{ ${APP}, monitors: [{ type: exec, cmd: "true" }] }]`, path: 'apps[0].monitors[0].cmd', message: 'unknown key for an exec monitor (known: command)' },
  { yaml: `apps: [{ ${APP}, nats: ["sctp:1"] }]`, path: 'apps[0].nats[0]', message: '"sctp:1" is not a NAT spec' },
  { yaml: `apps: [{ ${APP}, nats: ["tcp:80:8080", "tcp:80:8081"] }]`, path: 'apps[0].nats[1]', message: 'tcp port 80 is already forwarded by "tcp:80:8080"' },
  { yaml: `apps: [{ ${APP}, nats: "tcp:80" }]`, path: 'apps[0].nats', message: 'is not a list' },
  { yaml: `apps: [{ ${APP}, vip_config: { bgp_communities: ["1:2", "1:2:3:4"] } }]`, path: 'apps[0].vip_config.bgp_communities[1]', message: '"1:2:3:4" is not a community' },
  { yaml: `apps: [{ ${APP}, rise: 0 }]`, path: 'apps[0].rise', message: 'is not an integer in 1..100' },
  { yaml: `apps: [{ ${APP}, fall: 1.5 }]`, path: 'apps[0].fall', message: '1.5 is not an integer in 1..100' },
  { yaml: `apps: [{ ${APP}, monitor_interval: 1ms }]`, path: 'apps[0].monitor_interval', message: 'is too short (minimum 50ms)' },
  { yaml: `apps: [{ ${APP}, monitor_interval: 1s, check_timeout: 2s }]`, path: 'apps[0].check_timeout', message: "2s is longer than the app's monitor_interval 1s" },
  // the prefix policy (invariant 9)
  { yaml: 'apps: [{ name: a, vip: "::/0" }]', path: 'apps[0].vip', message: '::/0 is refused: a default route is never announced' },
  { yaml: 'apps: [{ name: a, vip: 127.0.0.1/32 }]', path: 'apps[0].vip', message: '127.0.0.1/32 is refused: loopback addresses (127.0.0.0/8) are never announced' },
  { yaml: 'apps: [{ name: a, vip: [198.18.0.10/32, 0.0.0.0/1] }]', path: 'apps[0].vip[1]', message: '0.0.0.0/1 is refused: it is shorter than /24 (agent.min_prefix_length_v4)' },
  { yaml: 'bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }\napps: [{ name: a, vip: 198.18.0.1/32 }]', path: 'apps[0].vip', message: '198.18.0.1/32 is refused: it is the address of BGP peer 198.18.0.1' },
  { yaml: 'bgp: { peer_ip: 198.18.0.1, peer_as: 65000 }\napps: [{ name: a, vip: 198.18.0.0/24 }]', path: 'apps[0].vip', message: '198.18.0.0/24 is refused: it contains the address of BGP peer 198.18.0.1' },
  { yaml: 'bgp: { local_ip: 198.18.0.9 }\napps: [{ name: a, vip: 198.18.0.9/32 }]', path: 'apps[0].vip', message: 'it is bgp.local_ip 198.18.0.9 (the router id and next hop of every route)' },
  { yaml: 'agent: { allowed_prefixes: [198.18.0.0/15] }\napps: [{ name: a, vip: 198.18.0.10/32 }, { name: b, vip: 203.0.113.0/24 }]', path: 'apps[1].vip', message: '203.0.113.0/24 is refused: it is not inside agent.allowed_prefixes (198.18.0.0/15)' },
  { yaml: 'apps: [{ name: a, vip: 198.18.7.7/32 }]', path: 'apps[0].vip', message: 'it is 198.18.7.7, an address of this host (interface eth9)', opts: { routingPlugin: 'dry-run', hostAddresses: { interfaces: [{ name: 'eth9', address: '198.18.7.7' }], gateways: [] } } },
  { yaml: 'bgp: { peer_as: 65000 }\napps: [{ name: a, vip: 198.18.6.1/32 }]', path: 'apps[0].vip', message: 'it is 198.18.6.1, the default gateway, which is a BGP peer', opts: { routingPlugin: 'dry-run', hostAddresses: { interfaces: [], gateways: ['198.18.6.1'] } } },
  { yaml: 'agent: { allowed_prefixes: [10.0.0.1/8] }', path: 'agent.allowed_prefixes[0]', message: 'has host bits set (did you mean 10.0.0.0/8?)' },
  { yaml: 'agent: { allowed_prefixes: 198.18.0.0/15 }', path: 'agent.allowed_prefixes', message: 'is not a list' },
  { yaml: 'agent: { registration_allowed_prefixes: ["2001:db8::/129"] }', path: 'agent.registration_allowed_prefixes[0]', message: 'is not a prefix' },
  { yaml: 'agent: { min_prefix_length_v4: 33 }', path: 'agent.min_prefix_length_v4', message: 'is not an integer in 1..32' },
  { yaml: 'agent: { min_prefix_length_v6: 0 }', path: 'agent.min_prefix_length_v6', message: 'is not an integer in 1..128' },
  { yaml: 'agent: { allowed_communities: ["65001:x"] }', path: 'agent.allowed_communities[0]', message: 'is not a community pattern' },
];

t.test(`${BAD.length} malformed configs, each refused with its key path and message`, async (t) => {
  t.ok(BAD.length >= 40);
  for (const bad of BAD) {
    const err = failure(bad.yaml, bad.opts);
    t.equal(err.code, 'VIPCAST_ERR_CONFIG', bad.yaml);
    const hit = err.details.find((d) => d.startsWith(`${bad.path}: `) && (typeof bad.message === 'string' ? d.includes(bad.message) : bad.message.test(d)));
    t.ok(hit, `${bad.path}: ${String(bad.message)}`, { details: err.details, yaml: bad.yaml });
    t.match(err.message, /^\d+ problems? in test\.yaml$/);
  }
});

t.test('prefix policy: a prefix shorter than the minimum passes only when agent.allowed_prefixes lists it exactly; the file\'s communities are trusted', async (t) => {
  const yaml = (vip: string): string => `agent: { allowed_prefixes: [198.18.0.0/15, 198.18.64.0/20] }\napps: [{ name: a, vip: ${vip}, vip_config: { bgp_communities: [blackhole, no-export] } }]`;
  const config = parse(yaml('198.18.64.0/20'));
  t.same(config.apps[0]!.vips.map((v) => v.text), ['198.18.64.0/20']);
  t.same(config.apps[0]!.communities.map((c) => c.text), ['65535:666', '65535:65281'], 'well-known communities from the config file are the operator\'s');
  t.match(failure(yaml('198.18.80.0/20')).details, ['apps[0].vip: 198.18.80.0/20 is refused: it is shorter than /24 (agent.min_prefix_length_v4); to announce it, list exactly this prefix in agent.allowed_prefixes']);
  t.same(parse('agent: { min_prefix_length_v4: 16 }\napps: [{ name: a, vip: 198.18.0.0/16 }]').apps[0]!.vips.map((v) => v.text), ['198.18.0.0/16'], 'a lowered minimum');
});

t.test('a config with several problems lists them all, in order', async (t) => {
  const file = fixture('many-problems.yaml');
  const err = await loadFailure(file);
  t.equal(err.code, 'VIPCAST_ERR_CONFIG');
  t.equal(err.message, `6 problems in ${file}`);
  t.same(err.details, [
    'agent.monitor_interval: "10ms" is too short (minimum 50ms)',
    'bgp.local_as: 0 is not an AS number (1..4294967295)',
    'bgp.communities[0]: "asn:nnnn" is not a community (each part of "a:b" must be 0..65535)',
    'apps[0].vip: "198.18.0.1/33" is not a prefix (length must be 0..32)',
    'apps[1].monitor: unknown key (did you mean "monitors" or "monitor_interval"?)',
    'apps[1].name: "web" is already the name of apps[0]',
  ]);
});

t.test('unknown-key suggestions by edit distance', async (t) => {
  t.same(suggest('monitor', ['name', 'vip', 'monitors', 'nats']), ['monitors']);
  t.same(suggest('peer_asn', ['peer_ip', 'peer_as', 'remote_as']), ['peer_as']);
  t.same(suggest('md5password', ['md5_password', 'md5_env_var']), ['md5_password']);
  t.same(suggest('MonitorInterval', ['monitor_interval', 'cleanup_timer']), ['monitor_interval'], 'camelCase');
  t.same(suggest('remtoe_as', ['peer_as', 'remote_as']), ['remote_as'], 'transposition');
  t.same(suggest('xyz', ['monitors', 'nats']), [], 'nothing close: no suggestion');
});

t.test('YAML syntax errors: VIPCAST_ERR_CONFIG_READ with line and column', async (t) => {
  const err = await loadFailure(fixture('bad-indent.yaml'));
  t.equal(err.code, 'VIPCAST_ERR_CONFIG_READ');
  t.match(err.message, /bad-indent\.yaml is not valid YAML: line 3, column \d+: /);
  const dup = failure('agent: {}\nagent: {}\n');
  t.equal(dup.code, 'VIPCAST_ERR_CONFIG_READ');
  t.match(dup.details, [/^line 2, column 1: Map keys must be unique/]);
  const tag = failure('agent: !secret foo\n');
  t.equal(tag.code, 'VIPCAST_ERR_CONFIG_READ', 'unknown tags are refused too');
});

t.test('an unreadable file: VIPCAST_ERR_CONFIG_READ naming the path', async (t) => {
  const missing = fixture('does-not-exist.yaml');
  const err = await loadFailure(missing);
  t.equal(err.code, 'VIPCAST_ERR_CONFIG_READ');
  t.match(err.message, `cannot read config file ${missing} (ENOENT)`);
  t.ok(err.cause, 'keeps the cause');
  const dir = await loadFailure(fixture(''));
  t.equal(dir.code, 'VIPCAST_ERR_CONFIG_READ', 'a folder');
});

t.test('MD5 from md5_env_var is resolved, and secrets never appear in any error', async (t) => {
  const SECRET = 'Tr0ub4dor-and-3';
  const ok = await loadConfig(fixture('md5-env.yaml'), { env: { VIPCAST_TEST_MD5: SECRET } });
  t.equal(ok.bgp.peers[0]!.md5Password, SECRET);
  t.equal(ok.bgp.peers[0]!.md5EnvVar, 'VIPCAST_TEST_MD5');

  const leaks = (err: VipcastError): boolean =>
    [err.message, ...err.details, JSON.stringify(err), String(err.stack)].some((s) => s.includes(SECRET) || s.includes('x'.repeat(20)));
  const cases: Array<[string, NodeJS.ProcessEnv]> = [
    // Everything else wrong next to a good secret from the env.
    ['bgp: { local_as: 0, peers: [{ peer_ip: 198.18.0.1, peer_as: 0, md5_env_var: M, communities: [bad] }] }\napps: [{ name: "x y" }]', { M: SECRET }],
    // A bad secret from the env (too long, control characters), inline too.
    ['bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 1, md5_env_var: M }] }', { M: SECRET + 'x'.repeat(80) }],
    ['bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 1, md5_env_var: M }] }', { M: `${SECRET}\n` }],
    [`bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 1, md5_password: "${SECRET}${'x'.repeat(80)}" }] }`, {}],
    [`bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 1, md5_password: "${SECRET}", md5_env_var: M }] }`, { M: SECRET }],
    [`bgp: { peers: [{ peer_ip: 198.18.0.1, peer_as: 1, md5_pasword: "${SECRET}" }] }`, {}],
    [`agent: { consul_token: "${SECRET}\\u0001" }`, {}],
    ['agent: { consul_addr: nope }', { CONSUL_TOKEN: `${SECRET}\u0007` }],
    // A YAML syntax error on the secret's own line.
    [`bgp:\n  peers:\n    - md5_password: "${SECRET}\n`, {}],
  ];
  for (const [yaml, env] of cases) {
    const err = failure(yaml, { env });
    t.ok(err.details.length > 0, 'refused');
    t.notOk(leaks(err), `no secret in: ${err.details.join(' | ')}`);
  }
  const tokenErr = failure('agent: {}', { env: { CONSUL_TOKEN: `${SECRET}\u0007` } });
  t.same(tokenErr.details, ['agent.consul_token (from $CONSUL_TOKEN): contains control characters']);
});

t.test('examples/vipcast.yaml loads as the bundled dry-run demo', async (t) => {
  const config = await loadConfig(path.join(root, 'examples/vipcast.yaml'), { env: {} });
  t.equal(config.routing.plugin, 'dry-run');
  t.equal(config.agent.monitorIntervalMs, 1000);
  t.not(config.agent.listenAddr.endsWith(':8080'), true, 'the API does not take the example service port');
  t.equal(config.bgp.localAs, 65001);
  t.same(config.bgp.peers.map((p) => [p.address, p.asn]), [['198.18.0.1', 65000]]);
  t.equal(config.bgp.origin, 'igp');
  t.ok(config.bgp.communities.length > 0);
  const web = config.apps.find((a) => a.name === 'web');
  const dns = config.apps.find((a) => a.name === 'dns');
  t.same(web?.vips.map((v) => v.text), ['198.18.100.10/32']);
  t.same(web?.monitors.map((m) => m.text), ['port:tcp:8080']);
  t.same(dns?.vips.map((v) => v.text), ['198.18.100.53/32', '2001:db8:100::53/128']);
  t.ok(dns?.communities.length);
  t.ok(dns?.monitors.some((m) => m.type === 'exec'));
  t.same(dns?.nats.map((n) => n.text), ['udp:53:8053']);
  t.same(config.warnings, []);
});

t.test('docs/CONFIG.md documents every key', async (t) => {
  const doc = readFileSync(path.join(root, 'docs/CONFIG.md'), 'utf8');
  for (const key of configKeys()) t.ok(doc.includes(`\`${key}\``), `${key} is documented`);
});

/**
 * `plugins:` rows: [fixture under test/fixtures/plugins (installed as `pkg`), pkg, the app's monitor, the one problem
 * the load reports]. A package that never got as far as its descriptor may provide any monitor type, so an app's type
 * unknown without it is not reported too; a router or discovery package can't provide one.
 */
const PLUGIN_ROWS: ReadonlyArray<readonly [string | undefined, string, string, RegExp]> = [
  [undefined, 'vipcast-monitor-absent', 'fromplugin:x', /^plugins\[0\]: VIPCAST_ERR_PLUGIN_NOT_FOUND: plugin "vipcast-monitor-absent" is not installed \(looked from .*\); install it there: cd .* && npm install vipcast-monitor-absent$/],
  ['throws-on-load', 'vipcast-monitor-throws', 'fromplugin:x', /^plugins\[0\]: VIPCAST_ERR_PLUGIN_LOAD: plugin "vipcast-monitor-throws" is installed but failed to load: boom: plugin initialisation failed$/],
  ['router-wrong-kind', 'vipcast-router-wrong-kind', 'port:tcp:80', /^plugins\[0\]: VIPCAST_ERR_PLUGIN_SHAPE: plugin "vipcast-router-wrong-kind" does not export a vipcast plugin: kind is "routerx", want "monitor", "discovery", "router"$/],
  ['discovery-bad-shape', 'vipcast-discovery-bad-shape', 'port:tcp:80', /^plugins\[0\]: VIPCAST_ERR_PLUGIN_SHAPE: plugin "vipcast-discovery-bad-shape" does not export a vipcast discovery plugin: "parseSettings" must be a function; "sameSettings" must be a function; "create" must be a function$/],
  ['router-version-mismatch', 'vipcast-router-future', 'port:tcp:80', /^plugins\[0\]: VIPCAST_ERR_PLUGIN_VERSION: plugin "vipcast-router-future" 3\.0\.0 needs plugin API \^2\.0\.0; this vipcast provides 1\.0\.0$/],
  ['discovery-version-mismatch', 'vipcast-discovery-future', 'port:tcp:80', /^plugins\[0\]: VIPCAST_ERR_PLUGIN_VERSION: plugin "vipcast-discovery-future" 2\.0\.0 needs plugin API \^2\.0\.0; this vipcast provides 1\.0\.0$/],
];

t.test(`${PLUGIN_ROWS.length} broken plugin packages, each refused with plugins[i] and the package as the config's only problem`, async (t) => {
  const { cpSync, mkdirSync, writeFileSync } = await import('node:fs');
  for (const [fixture, pkg, monitor, want] of PLUGIN_ROWS) {
    const dir = t.testdir({});
    if (fixture) {
      mkdirSync(path.join(dir, 'node_modules', pkg), { recursive: true });
      cpSync(path.join(root, 'test/fixtures/plugins', fixture), path.join(dir, 'node_modules', pkg), { recursive: true });
    }
    const file = path.join(dir, 'vipcast.yaml');
    writeFileSync(file, `plugins: [${pkg}]\nrouting: { plugin: dry-run }\napps:\n  - { name: a, vip: 198.18.100.70/32, monitors: ["${monitor}"] }\n`);
    const err = await loadFailure(file);
    t.equal(err.code, 'VIPCAST_ERR_CONFIG', pkg);
    t.equal(err.details.length, 1, `${pkg}: one problem (${err.details.join(' | ')})`);
    t.match(err.details[0], want, pkg);
  }
});
