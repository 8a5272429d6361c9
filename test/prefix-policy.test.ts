/** The prefix policy as a table: every fixed rule in both families, the minimum lengths, the allowlists, peers and own addresses. */
import t from 'tap';
import {
  DEFAULT_POLICY, appPolicyProblems, checkCommunity, checkVip, parseCommunityPattern, type HostAddresses, type PrefixPolicy,
} from '../src/core/prefix-policy.js';
import { defaultGateways, interfaceAddresses, recordedVips } from '../src/core/host-addresses.js';
import { parseCommunity, parsePrefix } from '../src/core/values.js';
import type { AppSpec } from '../src/plugin-api.js';

const HOST: HostAddresses = { interfaces: [{ name: 'eth0', address: '198.18.9.2' }, { name: 'eth0', address: '2001:db8:9::2' }], gateways: ['198.18.9.1'] };
const POLICY: PrefixPolicy = {
  ...DEFAULT_POLICY,
  peers: ['198.18.0.1', '2001:db8::1'],
  localIp: '198.18.0.2',
};
const ALLOW: PrefixPolicy = {
  ...POLICY,
  allowedPrefixes: [parsePrefix('198.18.0.0/15', 'p'), parsePrefix('2001:db8::/32', 'p'), parsePrefix('198.18.64.0/20', 'p')],
  registrationAllowedPrefixes: [parsePrefix('198.18.100.0/24', 'p'), parsePrefix('2001:db8:100::/48', 'p')],
};

type Row = [vip: string, policy: PrefixPolicy, source: string, reason: RegExp | undefined];
const ROWS: Row[] = [
  // default routes
  ['0.0.0.0/0', POLICY, 'config', /^a default route is never announced$/],
  ['::/0', POLICY, 'http', /^a default route is never announced$/],
  // special ranges, inside
  ['0.0.0.0/32', POLICY, 'http', /unspecified \("this network"\) addresses \(0\.0\.0\.0\/8\) are never announced/],
  ['0.1.2.0/24', POLICY, 'http', /0\.0\.0\.0\/8/],
  ['127.0.0.1/32', POLICY, 'http', /^loopback addresses \(127\.0\.0\.0\/8\) are never announced$/],
  ['169.254.1.0/24', POLICY, 'consul', /^link-local addresses \(169\.254\.0\.0\/16\)/],
  ['224.0.0.1/32', POLICY, 'http', /^multicast addresses \(224\.0\.0\.0\/4\)/],
  ['239.255.255.250/32', POLICY, 'http', /^multicast/],
  ['255.255.255.255/32', POLICY, 'http', /^the broadcast address \(255\.255\.255\.255\/32\) is never announced$/],
  ['240.0.0.0/24', POLICY, 'http', /^reserved \(class E\)/],
  ['::/128', POLICY, 'http', /^the unspecified address \(::\/128\) is never announced$/],
  ['::1/128', POLICY, 'http', /^the loopback address \(::1\/128\)/],
  ['fe80::1/128', POLICY, 'http', /^link-local addresses \(fe80::\/10\)/],
  ['ff02::1/128', POLICY, 'http', /^multicast addresses \(ff00::\/8\)/],
  // minimum lengths
  ['0.0.0.0/1', POLICY, 'http', /^it is shorter than \/24 \(agent\.min_prefix_length_v4\)/],
  ['128.0.0.0/1', POLICY, 'http', /^it is shorter than \/24/],
  ['198.18.0.0/23', POLICY, 'config', /^it is shorter than \/24/],
  ['198.18.0.0/24', { ...POLICY, peers: [], localIp: undefined }, 'config', undefined],
  ['2001:db8::/47', POLICY, 'http', /^it is shorter than \/48 \(agent\.min_prefix_length_v6\)/],
  ['2001:db8:5::/48', POLICY, 'http', undefined],
  ['198.18.64.0/20', ALLOW, 'config', undefined],
  ['198.18.80.0/20', ALLOW, 'config', /^it is shorter than \/24/],
  ['198.19.0.0/16', { ...POLICY, minLengthV4: 16 }, 'config', undefined],
  // covering a special range (a lowered minimum or an exact allowance)
  ['224.0.0.0/3', { ...POLICY, minLengthV4: 1 }, 'config', /^it covers 224\.0\.0\.0\/4 \(multicast addresses\), which is never announced$/],
  ['0.0.0.0/1', { ...POLICY, allowedPrefixes: [parsePrefix('0.0.0.0/1', 'p')] }, 'config', /^it covers 0\.0\.0\.0\/8/],
  // allowlists
  ['203.0.113.0/24', ALLOW, 'http', /^it is not inside agent\.allowed_prefixes \(198\.18\.0\.0\/15, 2001:db8::\/32, 198\.18\.64\.0\/20\)$/],
  ['203.0.113.0/24', ALLOW, 'config', /^it is not inside agent\.allowed_prefixes/],
  ['203.0.113.0/24', POLICY, 'http', undefined],
  ['198.18.50.1/32', ALLOW, 'config', undefined],
  ['198.18.50.1/32', ALLOW, 'http', /^it is not inside agent\.registration_allowed_prefixes \(198\.18\.100\.0\/24, 2001:db8:100::\/48\), the ranges apps from http may use$/],
  ['198.18.50.1/32', ALLOW, 'consul', /the ranges apps from consul may use/],
  ['198.18.100.7/32', ALLOW, 'http', undefined],
  ['2001:db8:100::7/128', ALLOW, 'consul', undefined],
  // peers, next hop, default gateway, own addresses
  ['198.18.0.1/32', POLICY, 'http', /^it is the address of BGP peer 198\.18\.0\.1$/],
  ['198.18.0.0/24', POLICY, 'config', /^it contains the address of BGP peer 198\.18\.0\.1$/],
  ['2001:db8::/64', POLICY, 'http', /^it contains the address of BGP peer 2001:db8::1$/],
  ['198.18.0.2/32', POLICY, 'http', /^it is bgp\.local_ip 198\.18\.0\.2 \(the router id and next hop of every route\)$/],
  ['198.18.9.1/32', POLICY, 'http', undefined],
  ['198.18.9.1/32', { ...POLICY, defaultGatewayPeer: true }, 'http', /^it is 198\.18\.9\.1, the default gateway, which is a BGP peer/],
  ['198.18.9.2/32', POLICY, 'http', /^it is 198\.18\.9\.2, an address of this host \(interface eth0\)$/],
  ['2001:db8:9::/64', POLICY, 'config', /^it contains 2001:db8:9::2, an address of this host \(interface eth0\)$/],
  ['198.18.9.3/32', POLICY, 'http', undefined],
];

t.test(`${ROWS.length} VIPs against the policy`, async (t) => {
  for (const [vip, policy, source, reason] of ROWS) {
    const got = checkVip(parsePrefix(vip, 'vip'), policy, { source, host: HOST });
    if (reason === undefined) t.equal(got, undefined, `${vip} from ${source} passes`);
    else t.match(got, reason, `${vip} from ${source}: ${String(reason)}`);
  }
});

t.test('communities from HTTP, Consul and plugins', async (t) => {
  const c = (text: string) => parseCommunity(text, 'c');
  for (const ok of ['65001:300', '64512:1', '65001:1:2']) t.equal(checkCommunity(c(ok), DEFAULT_POLICY), undefined, `${ok} passes by default`);
  t.match(checkCommunity(c('blackhole'), DEFAULT_POLICY), /^blackhole \(65535:666\) is a well-known or reserved community \(0:\*, 65535:\*\): list it in agent\.allowed_communities/);
  for (const bad of ['no-export', 'no-advertise', 'graceful-shutdown', '65535:1234', '0:5']) t.ok(checkCommunity(c(bad), DEFAULT_POLICY), `${bad} refused by default`);
  const listed: PrefixPolicy = { ...DEFAULT_POLICY, allowedCommunities: ['65001:*', 'no-export', '65001:2:*'].map((p) => parseCommunityPattern(p, 'p')) };
  for (const ok of ['65001:300', 'no-export', '65001:2:9']) t.equal(checkCommunity(c(ok), listed), undefined, `${ok} matches a pattern`);
  t.equal(checkCommunity(c('65002:1'), listed), '65002:1 is not in agent.allowed_communities (65001:*, no-export, 65001:2:*)');
  t.match(checkCommunity(c('blackhole'), listed), /^blackhole \(65535:666\) is not in agent\.allowed_communities/);
  t.match(checkCommunity(c('65001:3:1'), listed), /not in agent\.allowed_communities/);
  t.match(checkCommunity(c('65001:1'), { ...DEFAULT_POLICY, allowedCommunities: [] }), /empty: no community is allowed/);
  t.throws(() => parseCommunityPattern('65001:x', 'agent.allowed_communities[0]'), /^agent\.allowed_communities\[0\]: "65001:x" is not a community pattern/);
  t.throws(() => parseCommunityPattern('constructor', 'p'), /is not a community pattern/);
  t.throws(() => parseCommunity('constructor', 'vip_communities[0]'), /is not a community/, 'a name from Object.prototype is not a well-known community');
});

t.test('appPolicyProblems: VIPs for every source, communities only for sources other than the config file', async (t) => {
  const app = (source: string): AppSpec => ({
    name: 'x', source, vips: [parsePrefix('198.18.5.5/32', 'v'), parsePrefix('127.0.0.1/32', 'v')], communities: [parseCommunity('blackhole', 'c')],
    monitors: [], nats: [], rise: 1, fall: 1, intervalMs: 1000, timeoutMs: 500,
  });
  t.same(appPolicyProblems(app('config'), DEFAULT_POLICY, HOST), ['vip: 127.0.0.1/32 is refused: loopback addresses (127.0.0.0/8) are never announced']);
  t.equal(appPolicyProblems(app('my-plugin'), DEFAULT_POLICY, HOST).length, 2);
  t.match(appPolicyProblems(app('my-plugin'), DEFAULT_POLICY, HOST)[1], /^vip_communities: blackhole \(65535:666\)/);
});

// An anycast host: its router id on lo (unlabelled and labelled), beside eth0; vipcast's own VIPs are not listed here
// (interfaceAddresses leaves out what the state file records).
const HOST_LO: HostAddresses = {
  interfaces: [
    { name: 'eth0', address: '198.18.9.2' },
    { name: 'lo', address: '198.18.9.9', loopback: true },
    { name: 'lo:rid', address: '198.18.9.10', loopback: true },
    { name: 'lo', address: '2001:db8:9::9', loopback: true },
  ],
  gateways: [],
};
const LO_ROWS: Row[] = [
  ['198.18.9.9/32', POLICY, 'http', /^it is 198\.18\.9\.9, an address of this host on loopback interface lo that vipcast did not put there \(only an app of the config file may adopt an address already on lo\)$/],
  ['198.18.9.10/32', POLICY, 'consul', /^it is 198\.18\.9\.10, an address of this host on loopback interface lo:rid /],
  ['2001:db8:9::9/128', POLICY, 'my-plugin', /^it is 2001:db8:9::9, an address of this host on loopback interface lo /],
  ['198.18.9.8/30', POLICY, 'http', /^it contains 198\.18\.9\.9, an address of this host on loopback interface lo /],
  ['198.18.9.9/32', POLICY, 'config', undefined],
  ['2001:db8:9::9/128', POLICY, 'config', undefined],
  ['198.18.9.0/24', POLICY, 'config', /^it contains 198\.18\.9\.2, an address of this host \(interface eth0\)$/],
  ['198.18.9.11/32', POLICY, 'http', undefined],
];

t.test(`addresses on lo: ${LO_ROWS.length} VIPs`, async (t) => {
  for (const [vip, policy, source, reason] of LO_ROWS) {
    const got = checkVip(parsePrefix(vip, 'vip'), policy, { source, host: HOST_LO });
    if (reason === undefined) t.equal(got, undefined, `${vip} from ${source} passes`);
    else t.match(got, reason, `${vip} from ${source}: ${String(reason)}`);
  }
});

t.test('the host addresses: lo counts except 127/8, ::1 and the VIPs the host state file records (owned or adopted)', async (t) => {
  const state = JSON.stringify({ version: 1, vips: [
    { app: 'web', prefix: '198.18.9.20/32', label: 'lo:web', owned: true },
    { app: 'adopted', prefix: '198.18.9.21/32', owned: false },
    { app: 'v6', prefix: '2001:0db8:0009::20/128', owned: true },
    { app: 'net', prefix: '198.18.10.0/24', owned: true },
    { app: 'bad', prefix: 'not a prefix', owned: true },
    { app: 'bad2', owned: true },
    null,
  ] });
  const recorded = recordedVips(state);
  t.same(recorded, ['198.18.9.20/32', '198.18.9.21/32', '2001:db8:9::20/128', '198.18.10.0/24'], 'every well-formed record, in one spelling');
  t.same(recordedVips(''), [], 'no file');
  t.same(recordedVips('{"vips": 3}'), []);
  t.same(recordedVips('garbage'), []);
  const v4 = (address: string, len: number, internal = true) => ({ address, netmask: '', family: 'IPv4' as const, mac: '00:00:00:00:00:00', internal, cidr: `${address}/${len}` });
  const v6 = (address: string, len: number, internal = true) => ({ address, netmask: '', family: 'IPv6' as const, mac: '00:00:00:00:00:00', internal, cidr: `${address}/${len}`, scopeid: 0 });
  const got = interfaceAddresses({
    lo: [v4('127.0.0.1', 8), v4('127.0.1.1', 32), v4('198.18.9.9', 32), v4('198.18.9.21', 32), v6('::1', 128), v6('2001:db8:9::9', 128), v6('2001:db8:9::20', 128), v4('198.18.10.0', 24), v4('198.18.10.0', 32)],
    'lo:web': [v4('198.18.9.20', 32)],
    'lo:rid': [v4('198.18.9.10', 32)],
    eth0: [v4('198.18.9.2', 24, false), v6('fe80::1', 64, false)],
  }, new Set(recorded));
  t.same(got, [
    { name: 'lo', address: '198.18.9.9', loopback: true },
    { name: 'lo', address: '2001:db8:9::9', loopback: true },
    { name: 'lo', address: '198.18.10.0', loopback: true },
    { name: 'lo:rid', address: '198.18.9.10', loopback: true },
    { name: 'eth0', address: '198.18.9.2' },
    { name: 'eth0', address: 'fe80::1' },
  ], 'lo: the router ids (labelled or not) and a /32 that is not the recorded /24; not 127/8, ::1, nor what vipcast put there or adopted');
  t.same(interfaceAddresses({ lo: [v4('198.18.9.20', 32)] }), [{ name: 'lo', address: '198.18.9.20', loopback: true }], 'no state file: an address on lo is the host\'s');
});

t.test('default gateways from the kernel tables', async (t) => {
  const v4 = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n' +
    'eth0\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n' +
    'eth0\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n';
  const v6 = '00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n' +
    '20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n';
  t.same(defaultGateways(v4, v6), ['198.18.0.1', '2001:db8::1']);
  t.same(defaultGateways('', ''), []);
});
