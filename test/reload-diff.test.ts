/** The reload diff: what counts as a change, per piece (the gocast fork's bgpConfigChanged cases and more). */
import t from 'tap';
import { parseConfigText } from '../src/core/config.js';
import { AGENT_RELOAD, diffConfig, describeDiff, peerFingerprint } from '../src/core/reload.js';

const BASE = {
  routing: { plugin: 'dry-run' },
  agent: { monitor_interval: '1s' },
  bgp: {
    local_as: 65001, local_ip: '198.18.0.2', origin: 'igp', communities: ['65001:1'],
    peers: [
      { peer_ip: '198.18.0.1', peer_as: 65000, communities: ['65000:10'] },
      { peer_ip: '198.18.1.1', peer_as: 65000 },
    ],
  },
  apps: [
    { name: 'web', vip: '198.18.100.1/32', monitors: ['port:tcp:80'], nats: ['tcp:80:8080'], vip_config: { bgp_communities: ['65001:100'] } },
    { name: 'dns', vip: '198.18.100.53/32', monitors: ['port:udp:53'] },
  ],
};

type Base = typeof BASE;
function cfg(mutate: (c: Base) => void = () => undefined, env: NodeJS.ProcessEnv = {}) {
  const c = structuredClone(BASE) as Base;
  mutate(c);
  return parseConfigText(JSON.stringify(c), '/etc/vipcast/vipcast.yaml', { env });
}
const base = cfg();


t.test('an identical file is no change at all', async (t) => {
  t.same(describeDiff(diffConfig(base, cfg())), []);
});

t.test('local AS and router id are speaker changes (the one disruptive change)', async (t) => {
  t.same(diffConfig(base, cfg((c) => { c.bgp.local_as = 65002; })).speaker, ['bgp.local_as']);
  t.same(diffConfig(base, cfg((c) => { c.bgp.local_ip = '198.18.0.3'; })).speaker, ['bgp.local_ip']);
});

t.test('peers: added, removed, reordered, AS changed', async (t) => {
  let d = diffConfig(base, cfg((c) => { c.bgp.peers.push({ peer_ip: '198.18.2.1', peer_as: 65000 }); }));
  t.same(d.peers, { added: ['198.18.2.1'], removed: [], changed: [] });
  t.same(d.speaker, [], 'adding a peer does not restart the speaker');
  d = diffConfig(base, cfg((c) => { c.bgp.peers.pop(); }));
  t.same(d.peers, { added: [], removed: ['198.18.1.1'], changed: [] });
  d = diffConfig(base, cfg((c) => { c.bgp.peers.reverse(); }));
  t.same(describeDiff(d), [], 'reordering peers is not a change (the fork restarted BGP for it)');
  d = diffConfig(base, cfg((c) => { c.bgp.peers[1]!.peer_as = 65009; }));
  t.same(d.peers.changed, ['198.18.1.1']);
});

t.test('MD5: password, env var name and env var value', async (t) => {
  const withPw = cfg((c) => { (c.bgp.peers[0] as Record<string, unknown>).md5_password = 'one'; });
  t.same(diffConfig(base, withPw).peers.changed, ['198.18.0.1'], 'password added');
  t.same(diffConfig(withPw, cfg((c) => { (c.bgp.peers[0] as Record<string, unknown>).md5_password = 'two'; })).peers.changed, ['198.18.0.1'], 'password changed');
  const envA = cfg((c) => { (c.bgp.peers[0] as Record<string, unknown>).md5_env_var = 'PEER_PW'; }, { PEER_PW: 'alpha' });
  const envA2 = cfg((c) => { (c.bgp.peers[0] as Record<string, unknown>).md5_env_var = 'PEER_PW'; }, { PEER_PW: 'alpha' });
  const envB = cfg((c) => { (c.bgp.peers[0] as Record<string, unknown>).md5_env_var = 'PEER_PW'; }, { PEER_PW: 'beta' });
  const envOther = cfg((c) => { (c.bgp.peers[0] as Record<string, unknown>).md5_env_var = 'OTHER_PW'; }, { OTHER_PW: 'alpha' });
  t.same(diffConfig(envA, envA2).peers.changed, [], 'same variable, same value: unchanged');
  t.same(diffConfig(envA, envB).peers.changed, ['198.18.0.1'], 'same variable, rotated value: changed (the fork missed this)');
  t.same(diffConfig(envA, envOther).peers.changed, ['198.18.0.1'], 'other variable name: changed');
  t.notMatch(peerFingerprint(envB.bgp.peers[0]!), /beta/, 'the fingerprint never holds the secret');
});

t.test('multi_hop: unset, false and true are three different settings', async (t) => {
  const unset = base;
  const f = cfg((c) => { (c.bgp.peers[0] as Record<string, unknown>).multi_hop = false; });
  const tr = cfg((c) => { (c.bgp.peers[0] as Record<string, unknown>).multi_hop = true; });
  t.same(diffConfig(unset, f).peers.changed, ['198.18.0.1']);
  t.same(diffConfig(f, tr).peers.changed, ['198.18.0.1']);
  t.same(diffConfig(unset, tr).peers.changed, ['198.18.0.1']);
  t.same(diffConfig(f, cfg((c) => { (c.bgp.peers[0] as Record<string, unknown>).multi_hop = false; })).peers.changed, []);
});

t.test('communities and origin', async (t) => {
  t.same(diffConfig(base, cfg((c) => { c.bgp.peers[0]!.communities = ['65000:11']; })).peers.changed, ['198.18.0.1'], 'per-peer communities');
  let d = diffConfig(base, cfg((c) => { c.bgp.communities = ['65001:2']; }));
  t.equal(d.routeAttributes, true, 'global communities change route attributes');
  t.same(d.speaker, [], '... without a speaker restart');
  d = diffConfig(base, cfg((c) => { c.bgp.origin = 'egp'; }));
  t.equal(d.routeAttributes, true, 'origin too');
});

t.test('apps: added, removed, changed by VIP, monitors, NAT, communities, rise; unchanged ones are not listed', async (t) => {
  t.same(diffConfig(base, cfg((c) => { c.apps.push({ name: 'new', vip: '198.18.100.2/32', monitors: [] } as never); })).apps, { added: ['new'], removed: [], changed: [] });
  t.same(diffConfig(base, cfg((c) => { c.apps.pop(); })).apps, { added: [], removed: ['dns'], changed: [] });
  for (const [what, mutate] of [
    ['vip', (c: Base) => { c.apps[0]!.vip = '198.18.100.9/32'; }],
    ['monitors', (c: Base) => { c.apps[0]!.monitors = ['port:tcp:81']; }],
    ['nats', (c: Base) => { c.apps[0]!.nats = ['tcp:80:8081']; }],
    ['communities', (c: Base) => { c.apps[0]!.vip_config!.bgp_communities = ['65001:101']; }],
    ['rise', (c: Base) => { (c.apps[0] as Record<string, unknown>).rise = 3; }],
  ] as const) {
    t.same(diffConfig(base, cfg(mutate)).apps, { added: [], removed: [], changed: ['web'] }, what);
  }
  t.same(diffConfig(base, cfg((c) => { c.apps.reverse(); })).apps, { added: [], removed: [], changed: [] }, 'reordering apps is no change');
});

t.test('agent settings are listed by key', async (t) => {
  const d = diffConfig(base, cfg((c) => { c.agent.monitor_interval = '2s'; }));
  t.ok(d.agent.includes('monitorIntervalMs'));
  t.same(d.apps.changed.sort(), ['dns', 'web'], 'apps that take the default interval change with it');
});

t.test('every agent setting is placed: applied by a reload or reported as needing a restart', async (t) => {
  // Absent from the agent config when unset (config/agent.ts), so a config without them reads as before.
  const optional = ['consulNamespace', 'consulPartition', 'consulTls'];
  t.notOk(optional.some((k) => k in base.agent), 'the optional keys are absent when unset');
  t.same([...Object.keys(base.agent), ...optional].sort(), Object.keys(AGENT_RELOAD).sort());
  t.ok(diffConfig(base, cfg((c) => { Object.assign(c.agent, { consul_namespace: 'team-a' }); })).agent.includes('consulNamespace'), 'an optional key set by a reload is a change');
  t.same(Object.entries(AGENT_RELOAD).filter(([, how]) => how === 'restart').map(([k]) => k).sort(), ['apiSocketGroup', 'apiSocketMode', 'stateFile']);
  const d = diffConfig(base, cfg((c) => { Object.assign(c.agent, { state_file: '/tmp/x.json', check_workers: 4 }); }));
  t.same(describeDiff(d, new Map([['stateFile', 'needs a restart']])).sort(), ['agent.checkWorkers: changed', 'agent.stateFile: changed in the file, not applied: needs a restart']);
});
