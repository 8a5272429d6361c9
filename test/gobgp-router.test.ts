/**
 * The gobgp router end to end: a REAL gobgpd in namespace "node" driven over its gRPC API, a REAL BIRD 2 in
 * namespace "tor" as the top-of-rack router, asserted with `birdc show route all` / `show protocols all`.
 *
 * Address plan (S = the lab's subnet):
 *   veth        node 198.18.S.1/24  2001:db8:S::1/64   tor 198.18.S.2/24  2001:db8:S::2/64    BIRD a, a6
 *   veth, 2nd   node 198.19.S.1/28                     tor 198.19.S.2/28                      BIRD b
 *   veth, 3rd   node 198.19.S.17/28                    tor 198.19.S.18/28                     BIRD pw (MD5)
 *   loopbacks   node 198.19.S.33/32                    tor 198.19.S.34/32                     BIRD mh (multihop)
 * VIPs: 198.19.S.101.. /32 and 2001:db8:ff:S::1/128 (never on an interface: BIRD only has to receive them).
 */
import t, { type Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLab, labSkip, nsRun, run, waitFor, type Lab } from './lab/netns.js';
import { birdConfig, startBird, type Bird, type BirdBgp } from './lab/bird.js';
import { startGobgpd, type Gobgpd } from './lab/gobgpd.js';
import { GobgpRouter, localIpFor, resolveDefaultGateway, type IpRunner } from '../src/plugins/routing/gobgp/index.js';
import { parseCommunity, parsePrefix } from '../src/core/values.js';
import { createLogger, silentLogger } from '../src/core/logger.js';
import type { BgpConfig } from '../src/core/config-types.js';
import type { Community, Origin, PeerSpec, Prefix, Route } from '../src/plugin-api.js';

const skip = labSkip(['gobgpd', 'bird', 'birdc']);
const log = process.env.VIPCAST_TEST_LOG ? createLogger({ level: 'debug', pretty: false }) : silentLogger();

const NODE_AS = 65000;
const TOR_AS = 65001;

const comms = (...texts: string[]): Community[] => texts.map((c) => parseCommunity(c, 'test'));
const route = (prefix: string, app: string, origin: Origin, ...communities: string[]): Route => ({ prefix: parsePrefix(prefix, 'test'), app, origin, communities: comms(...communities) });
const sorted = (a: string[]) => [...a].sort();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function bgp(over: Partial<BgpConfig>): BgpConfig {
  return { localAs: NODE_AS, communities: [], origin: 'igp', listenPort: 179, nextHop: 'local_ip', peers: [], ...over };
}

t.test('gobgp router against a real gobgpd (node) and a real BIRD (tor)', { skip, timeout: 170_000 }, async (t) => {
  const lab: Lab = await createLab({ prefix: 'gb' });
  const S = Number(lab.ipA.split('.')[2]);
  const node = lab.a;
  const tor = lab.b;
  const A = { node: lab.ipA, tor: lab.ipB, node6: lab.ip6A, tor6: lab.ip6B };
  const B = { node: `198.19.${S}.1`, tor: `198.19.${S}.2` };
  const C = { node: `198.19.${S}.17`, tor: `198.19.${S}.18` };
  const LO = { node: `198.19.${S}.33`, tor: `198.19.${S}.34` };
  const VIP = (n: number) => `198.19.${S}.${100 + n}/32`;
  const VIP6 = `2001:db8:ff:${S.toString(16)}::1/128`;
  const inNode: IpRunner = (args) => nsRun(node, 'ip', args);
  /** Assert a BIRD session was not reset since `since`; on failure, show BIRD's own account of it. */
  // BIRD prints `since` as wall time computed from its monotonic clock at display time: the same instant can read
  // 1 ms apart on two calls. A reset moves it by a second or more (reconnect delays), so 50 ms of slack is safe.
  const sameSession = async (t: Test, proto: string, since: string, msg: string) => {
    const now = await bird.protocol(proto);
    const drift = Math.abs(Date.parse(now.since.replace(' ', 'T')) - Date.parse(since.replace(' ', 'T')));
    t.ok(now.bgpState === 'Established' && drift <= 50, `${msg} (since ${since}, now ${now.since})`,
      drift <= 50 ? {} : { bird_state: now.bgpState, last_error: now.lastError, bird_log: birdLog(proto) });
  };
  /** BIRD's log lines about a protocol, for the message of a failed "session not reset" assertion. */
  const birdLog = (proto: string) => {
    try {
      return readFileSync(join(bird.dir, 'bird.log'), 'utf8').split('\n').filter((l) => l.includes(`${proto}:`)).slice(-12).join('\n');
    } catch {
      return '';
    }
  };

  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  t.teardown(async () => {
    for (const fn of cleanups.reverse()) await Promise.resolve().then(fn).catch(() => undefined);
    await lab.destroy();
  });

  await nsRun(node, 'ip', ['addr', 'add', `${B.node}/28`, 'dev', lab.ifA]);
  await nsRun(tor, 'ip', ['addr', 'add', `${B.tor}/28`, 'dev', lab.ifB]);
  await nsRun(node, 'ip', ['addr', 'add', `${C.node}/28`, 'dev', lab.ifA]);
  await nsRun(tor, 'ip', ['addr', 'add', `${C.tor}/28`, 'dev', lab.ifB]);
  await nsRun(node, 'ip', ['addr', 'add', `${LO.node}/32`, 'dev', 'lo']);
  await nsRun(tor, 'ip', ['addr', 'add', `${LO.tor}/32`, 'dev', 'lo']);
  // The node reaches the ToR's loopback with its own loopback as source: that is what `ip route get` discovers.
  await nsRun(node, 'ip', ['route', 'add', `${LO.tor}/32`, 'via', A.tor, 'src', LO.node]);
  await nsRun(tor, 'ip', ['route', 'add', `${LO.node}/32`, 'via', A.node]);
  await nsRun(node, 'ip', ['route', 'add', 'default', 'via', A.tor]);

  const proto = (name: string, family: 'ipv4' | 'ipv6', local: string, neighbor: string, extra: Partial<BirdBgp> = {}): BirdBgp =>
    ({ name, family, local, localAs: TOR_AS, neighbor, neighborAs: NODE_AS, disabled: true, ...extra });
  const bird: Bird = await startBird({
    ns: tor,
    config: (dir) => birdConfig({
      routerId: A.tor,
      logFile: `${dir}/bird.log`,
      protocols: [
        proto('a', 'ipv4', A.tor, A.node),
        proto('a6', 'ipv6', A.tor6, A.node6),
        proto('b', 'ipv4', B.tor, B.node),
        proto('pw', 'ipv4', C.tor, C.node, { password: 'right-secret' }),
        proto('mh', 'ipv4', LO.tor, LO.node, { multihop: true }),
      ],
      // Multihop next hops resolve recursively through master4.
      extra: `protocol static { ipv4; route ${LO.node}/32 via ${A.node}; }`,
    }),
  });
  cleanups.push(() => bird.stop());

  t.test('peer discovery: default gateway and the local address facing a peer (ip -j route, no shell)', async (t) => {
    t.equal(await resolveDefaultGateway('ipv4', inNode), A.tor, 'default gateway');
    t.equal(await localIpFor(A.tor, inNode), A.node, 'address facing a directly connected peer');
    t.equal(await localIpFor(LO.tor, inNode), LO.node, 'address facing a multihop peer (route src)');
    await t.rejects(resolveDefaultGateway('ipv6', inNode), { code: 'VIPCAST_ERR_ROUTER' }, 'no IPv6 default route: a clear error');
    await t.rejects(localIpFor('not-an-ip', inNode), { code: 'VIPCAST_ERR_VALUE' }, 'garbage never reaches ip');
  });

  // ---- phase 1: local_ip set, one peer -----------------------------------------------------------------------
  let g1!: Gobgpd;
  let r1!: GobgpRouter;
  const peerA: PeerSpec = { address: A.tor, asn: TOR_AS, communities: comms('65000:901') };
  const cfg1 = bgp({ localIp: A.node, peers: [peerA] });

  t.test('start: a fresh gobgpd gets StartBgp and the peer, BIRD opens the session', async (t) => {
    g1 = await startGobgpd({ ns: node });
    cleanups.push(() => g1.stop());
    r1 = new GobgpRouter({ bgp: cfg1, gobgp: { address: g1.address }, log, runIp: inNode });
    cleanups.push(() => r1.close());
    let reconnects = 0;
    r1.onReconnect(() => reconnects++);
    const t0 = Date.now();
    await r1.start();
    t.ok(r1.connected, 'connected after start');
    t.equal(reconnects, 1, 'onReconnect fired for the first connection');
    await bird.enable('a');
    const p = await bird.waitEstablished('a', 10_000);
    t.comment(`session up ${Date.now() - t0} ms after start (gobgpd listens on ${A.node}:179, BIRD connects)`);
    t.equal(p.state, 'up');
    const states = await r1.peerStates();
    t.equal(states.length, 1);
    t.match(states[0], { address: A.tor, asn: TOR_AS, state: 'established' });
  });

  t.test('a healthy app\'s /32 reaches BIRD with origin, next hop and communities exactly as configured', async (t) => {
    const r = route(VIP(1), 'web', 'egp', '65000:100', '65000:7', '65000:1:2', 'no-export');
    await r1.announce(r, 'app is up');
    const seen = await waitFor(async () => (await bird.routes('a', VIP(1)))[0], 5000, `${VIP(1)} at BIRD`);
    t.equal(seen!.prefix, VIP(1));
    t.equal(seen!.origin, 'EGP');
    t.equal(seen!.nextHop, A.node, 'next hop = local_ip');
    t.same(seen!.asPath, [NODE_AS]);
    t.same(sorted(seen!.communities), sorted(['65000:100', '65000:7', '65535:65281', '65000:901']), 'route communities + the peer\'s own (65000:901)');
    t.same(seen!.largeCommunities, ['65000:1:2'], 'large community');
    const listed = await r1.listRoutes();
    t.same(listed.map((x) => ({ prefix: x.prefix.text, app: x.app, origin: x.origin, communities: x.communities.map((c) => c.text) })),
      [{ prefix: VIP(1), app: 'web', origin: 'egp', communities: r.communities.map((c) => c.text) }], 'listRoutes reads it back from ListPath, in the caller\'s community order');
  });

  t.test('a route without communities carries no COMMUNITIES attribute of its own', async (t) => {
    await r1.announce(route(VIP(2), 'bare', 'incomplete'), 'app is up');
    const seen = await waitFor(async () => (await bird.routes('a', VIP(2)))[0], 5000, `${VIP(2)} at BIRD`);
    t.equal(seen!.origin, 'Incomplete');
    t.same(seen!.communities, ['65000:901'], 'only the per-peer community added by the export policy');
    t.same(seen!.largeCommunities, []);
    const listed = (await r1.listRoutes()).find((x) => x.prefix.text === VIP(2));
    t.same(listed?.communities, [], 'gobgpd holds no communities for it');
  });

  t.test('a withdrawn route is gone at BIRD and from listRoutes', async (t) => {
    await r1.withdraw(route(VIP(2), 'bare', 'incomplete'), 'app is down');
    await waitFor(async () => (await bird.routes('a', VIP(2))).length === 0, 5000, `${VIP(2)} withdrawn at BIRD`);
    t.notOk((await r1.listRoutes()).some((x) => x.prefix.text === VIP(2)), 'not in ListPath');
    t.equal((await bird.routes('a', VIP(1))).length, 1, 'the other route stays');
    await t.resolves(r1.withdraw(route(VIP(2), 'bare', 'incomplete'), 'again'), 'withdrawing an absent route is not an error');
  });

  t.test('an invalid prefix is refused before AddPath and BIRD\'s session stays up', async (t) => {
    const before = await bird.protocol('a');
    const forged = (p: Partial<Prefix> & Record<string, unknown>): Route => ({ prefix: p as unknown as Prefix, app: 'evil', origin: 'igp', communities: [] });
    const bad: Array<[string, Route]> = [
      ['length 33', forged({ address: `198.19.${S}.77`, length: 33, family: 'ipv4', text: `198.19.${S}.77/33` })],
      ['IPv6 length 129', forged({ address: '2001:db8::77', length: 129, family: 'ipv6', text: '2001:db8::77/129' })],
      ['not an address', forged({ address: 'x', length: 32, family: 'ipv4', text: 'x/32' })],
      ['empty address', forged({ address: '', length: 0, family: 'ipv4', text: '' })],
      ['host bits set', forged({ address: `198.19.${S}.77`, length: 24, family: 'ipv4', text: `198.19.${S}.77/24` })],
      ['text disagrees', forged({ address: `198.19.${S}.77`, length: 32, family: 'ipv4', text: `198.19.${S}.78/32` })],
      ['family disagrees', forged({ address: `198.19.${S}.77`, length: 32, family: 'ipv6', text: `198.19.${S}.77/32` })],
      ['fractional length', forged({ address: `198.19.${S}.77`, length: 31.5, family: 'ipv4', text: `198.19.${S}.77/31.5` })],
      ['community out of range', { ...route(VIP(9), 'evil', 'igp'), communities: [{ type: 'standard', value: 2 ** 32, text: '65536:0' }] }],
    ];
    for (const [why, r] of bad) {
      await t.rejects(r1.announce(r, 'test'), { code: 'VIPCAST_ERR_VALUE', message: /refusing to send/ }, `refused: ${why}`);
    }
    const listed = (await r1.listRoutes()).map((x) => x.prefix.text);
    t.same(listed, [VIP(1)], 'nothing reached gobgpd (no 0.0.0.0/x, no default route)');
    // Prove the session still works and was never reset: a valid route goes through on the same session.
    await r1.announce(route(VIP(3), 'ok', 'igp'), 'app is up');
    await waitFor(async () => (await bird.routes('a', VIP(3))).length === 1, 5000, `${VIP(3)} at BIRD`);
    await sameSession(t, 'a', before.since, 'BIRD session \'a\' not reset');
    await r1.withdraw(route(VIP(3), 'ok', 'igp'), 'done');
  });

  t.test('announceMany/withdrawMany: 1,000 routes in one AddPathStream call, invalid ones refused, the rest delivered', async (t) => {
    const before = await bird.protocol('a');
    const base = await bird.count('a');
    const many: Route[] = [];
    for (let i = 0; i < 1000; i++) many.push(route(`198.19.${251 + Math.floor(i / 250)}.${(i % 250) + 1}/32`, `bulk${i}`, 'igp', '65000:100', '65000:5:5'));
    const evil: Route = { prefix: { address: '198.19.255.1', length: 33, family: 'ipv4', text: '198.19.255.1/33' } as Prefix, app: 'evil', origin: 'igp', communities: [] };
    const t0 = Date.now();
    await t.rejects(r1.announceMany([...many.slice(0, 500), evil, ...many.slice(500)], 'bulk'), { code: 'VIPCAST_ERR_VALUE', message: /1 of 1001 routes refused/ });
    await waitFor(async () => (await bird.count('a')) === base + 1000, 10_000, '1,000 routes at BIRD');
    t.comment(`MEASURED announceMany: 1,000 routes at BIRD ${Date.now() - t0} ms after the call`);
    const listed = await r1.listRoutes();
    t.equal(listed.filter((r) => r.app.startsWith('bulk')).length, 1000, 'all 1,000 listed with their app names');
    t.notOk(listed.some((r) => r.prefix.text.endsWith('/33') || r.prefix.length === 0), 'the invalid one never reached gobgpd');
    const one = (await bird.routes('a', many[777]!.prefix.text))[0];
    t.same(sorted(one?.communities ?? []), ['65000:100', '65000:901']);
    t.same(one?.largeCommunities, ['65000:5:5']);
    await r1.withdrawMany(many, 'bulk done');
    await waitFor(async () => (await bird.count('a')) === base, 10_000, 'bulk routes withdrawn at BIRD');
    t.equal((await r1.listRoutes()).filter((r) => r.app.startsWith('bulk')).length, 0, 'gone from ListPath');
    await sameSession(t, 'a', before.since, 'session not reset');
  });

  t.test('applyPeers with an unchanged peer set touches nothing (BIRD session since unchanged)', async (t) => {
    const before = await bird.protocol('a');
    await r1.applyPeers([{ ...peerA, communities: comms('65000:901') }]);
    await sleep(1500);
    await sameSession(t, 'a', before.since, 'session not reset');
  });

  t.test('gobgpd already running with another AS is VIPCAST_ERR_ROUTER_CONFLICT', async (t) => {
    const other = new GobgpRouter({ bgp: bgp({ localAs: 65099, localIp: A.node }), gobgp: { address: g1.address }, log, runIp: inNode });
    cleanups.push(() => other.close());
    await t.rejects(other.start(), { code: 'VIPCAST_ERR_ROUTER_CONFLICT', message: /already runs with AS 65000/ });
    await other.close();
    await t.resolves(other.close(), 'close is safe twice');
  });

  t.test('a BGP port already taken is a clear VIPCAST_ERR_ROUTER_CONFLICT', async (t) => {
    const g2 = await startGobgpd({ ns: node });
    cleanups.push(() => g2.stop());
    const r2 = new GobgpRouter({ bgp: bgp({ localIp: A.node }), gobgp: { address: g2.address }, log, runIp: inNode });
    cleanups.push(() => r2.close());
    await t.rejects(r2.start(), { code: 'VIPCAST_ERR_ROUTER_CONFLICT', message: /cannot listen for BGP on .*port 179.*address already in use.*listen_port: -1/s });
    await r2.close();
    await g2.stop();
  });

  t.test('methods reject at once with VIPCAST_ERR_ROUTER while gobgpd is down; after a restart routes are back within 2 s of gobgpd answering', async (t) => {
    // The reconciler's part, in miniature: on reconnect, re-announce what is desired.
    const desired = [route(VIP(1), 'web', 'egp', '65000:100', '65000:7', '65000:1:2', 'no-export'), route(VIP(4), 'api', 'igp', '65000:100')];
    await r1.announce(desired[1]!, 'app is up');
    let reannounced = 0;
    r1.onReconnect(() => {
      void (async () => {
        const have = new Set((await r1.listRoutes()).map((r) => r.prefix.text));
        for (const r of desired) if (!have.has(r.prefix.text)) await r1.announce(r, 'resync');
        reannounced = Date.now();
      })().catch((err) => t.fail(`resync failed: ${String(err)}`));
    });
    let downs = 0;
    r1.onDisconnect(() => downs++);
    await g1.kill('SIGKILL');
    await waitFor(() => !r1.connected, 3000, 'router to notice gobgpd is gone');
    t.equal(downs, 1, 'onDisconnect fired once');
    const t0 = Date.now();
    await t.rejects(r1.announce(desired[0]!, 'x'), { code: 'VIPCAST_ERR_ROUTER', message: /not answering/ });
    await t.rejects(r1.listRoutes(), { code: 'VIPCAST_ERR_ROUTER' });
    t.ok(Date.now() - t0 < 1000, `rejected at once, not after a call deadline (${Date.now() - t0} ms)`);
    await sleep(300);
    await g1.restart();
    const answering = await g1.waitAnswering(5000);
    await waitFor(async () => (await bird.routes('a', VIP(1))).length === 1 && (await bird.routes('a', VIP(4))).length === 1, 8000, 'both routes back at BIRD');
    const back = Date.now() - answering;
    t.comment(`MEASURED gobgpd restart: routes back at BIRD ${back} ms after gobgpd first answered (router resynced ${reannounced - answering} ms after)`);
    t.ok(back < 2000, `routes back within 2 s of gobgpd answering (${back} ms)`);
    t.ok(r1.connected);
    const [seen] = await bird.routes('a', VIP(1));
    t.same(sorted(seen!.communities), sorted(['65000:100', '65000:7', '65535:65281', '65000:901']), 'per-peer policy restored too');
  });

  t.test('phase 1 done', async (t) => {
    await t.resolves(bird.disable('a'), 'BIRD session a disabled for phase 2');
    await t.resolves(r1.close(), 'router closed');
    await t.resolves(g1.stop(), 'gobgpd stopped');
  });

  // ---- phase 2: no local_ip (discovered), several peers -------------------------------------------------------
  let g3!: Gobgpd;
  let r3!: GobgpRouter;
  // peer_ip unset: the default gateway (A.tor).
  let pA: PeerSpec = { asn: TOR_AS, communities: comms('65000:1') };
  const pA6: PeerSpec = { address: A.tor6, asn: TOR_AS, communities: [] };
  const pB: PeerSpec = { address: B.tor, asn: TOR_AS, communities: comms('65000:2', '65000:2:2') };

  t.test('vipcast started before gobgpd: start resolves, peers wait, all is configured once gobgpd answers', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'vc-gobgpd-late-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    r3 = new GobgpRouter({ bgp: bgp({ peers: [], communities: comms('65000:100') }), gobgp: { address: `unix://${join(dir, 'gobgp.sock')}` }, log, runIp: inNode });
    cleanups.push(() => r3.close());
    let reconnected = 0;
    r3.onReconnect(() => (reconnected = Date.now()));
    await r3.start();
    t.notOk(r3.connected, 'not connected: nothing listens yet');
    await t.resolves(r3.applyPeers([pA, pA6]), 'applyPeers resolves while gobgpd is down (recorded, applied on reconnection)');
    await t.rejects(r3.announce(route(VIP(5), 'x', 'igp'), 'x'), { code: 'VIPCAST_ERR_ROUTER' }, 'routes are refused at once meanwhile');
    await sleep(500);
    g3 = await startGobgpd({ ns: node, dir });
    cleanups.push(() => g3.stop());
    const answering = await g3.waitAnswering();
    await waitFor(() => r3.connected, 3000, 'router to connect');
    t.comment(`MEASURED late gobgpd: router configured it ${reconnected - answering} ms after it first answered`);
    t.ok(reconnected > 0, 'onReconnect fired');
    t.same(sorted((await r3.peerStates()).map((p) => p.address)), sorted([A.tor, A.tor6]), 'the recorded peers are in gobgpd');
  });

  t.test('IPv6 /128 announced (MP_REACH) and withdrawn; default-gateway peer', async (t) => {
    await bird.enable('a');
    await bird.enable('a6');
    await bird.waitEstablished('a');
    await bird.waitEstablished('a6');
    const states = await r3.peerStates();
    t.same(sorted(states.map((s) => s.address)), sorted([A.tor, A.tor6]), 'unset peer_ip resolved to the default gateway');
    const r6 = route(VIP6, 'v6app', 'igp', '65000:100', '65000:6');
    await r3.announce(r6, 'app is up');
    const seen = await waitFor(async () => (await bird.routes('a6', VIP6))[0], 5000, `${VIP6} at BIRD`);
    t.equal(seen!.prefix, VIP6);
    t.equal(seen!.origin, 'IGP');
    t.equal(seen!.nextHop, A.node6, 'next hop = the session\'s own IPv6 address (local_ip unset)');
    t.same(sorted(seen!.communities), ['65000:100', '65000:6']);
    t.same((await r3.listRoutes()).map((x) => x.prefix.text), [VIP6]);
    const bare6 = route(VIP6.replace('::1/', '::2/'), 'bare6', 'incomplete');
    await r3.announce(bare6, 'app is up');
    const seenBare = await waitFor(async () => (await bird.routes('a6', bare6.prefix.text))[0], 5000, `${bare6.prefix.text} at BIRD`);
    t.notOk(seenBare.attributes.includes('community'), `no COMMUNITIES attribute at all, not even an empty one (attributes: ${seenBare.attributes.join(' ')})`);
    t.notOk(seenBare.attributes.includes('large_community'), 'no LARGE_COMMUNITIES attribute');
    await r3.withdraw(bare6, 'app is down');
    await r3.withdraw(r6, 'app is down');
    await waitFor(async () => (await bird.routes('a6', VIP6)).length === 0, 5000, `${VIP6} withdrawn at BIRD`);
    t.same(await r3.listRoutes(), []);
  });

  t.test('two peers with distinct per-peer communities: each session sees its own; adding a peer does not reset the other', async (t) => {
    const sinceA = (await bird.protocol('a')).since;
    await r3.applyPeers([pA, pA6, pB]);
    await bird.enable('b');
    await bird.waitEstablished('b');
    await r3.announce(route(VIP(5), 'multi', 'igp', '65000:100'), 'app is up');
    const at = async (p: string) => waitFor(async () => (await bird.routes(p, VIP(5)))[0], 5000, `${VIP(5)} at ${p}`);
    const [ra, rb] = [await at('a'), await at('b')];
    t.same(sorted(ra.communities), ['65000:1', '65000:100'], 'session a: its own 65000:1 only');
    t.same(ra.largeCommunities, []);
    t.same(sorted(rb.communities), ['65000:100', '65000:2'], 'session b: its own 65000:2 only');
    t.same(rb.largeCommunities, ['65000:2:2']);
    t.equal(rb.nextHop, B.node, 'next hop = session b\'s own address');
    await sameSession(t, 'a', sinceA, 'session a not reset by adding b');
  });

  t.test('changing one peer\'s communities replaces its policy without resetting its session', async (t) => {
    const sinceA = (await bird.protocol('a')).since;
    const sinceB = (await bird.protocol('b')).since;
    pA = { ...pA, communities: comms('65000:11', '65000:11:11') };
    await r3.applyPeers([pA, pA6, pB]);
    const ra = (await waitFor(async () => {
      const r = (await bird.routes('a', VIP(5)))[0];
      return r && r.communities.includes('65000:11') ? r : undefined;
    }, 5000, 'new communities at a'))!;
    t.same(sorted(ra.communities), ['65000:100', '65000:11']);
    t.same(ra.largeCommunities, ['65000:11:11']);
    await sameSession(t, 'a', sinceA, 'session a kept (soft reset out)');
    await sameSession(t, 'b', sinceB, 'session b untouched');
  });

  t.test('MD5: wrong password, no session; right password, route present', async (t) => {
    const wrong: PeerSpec = { address: C.tor, asn: TOR_AS, md5Password: 'wrong-secret', communities: [] };
    await r3.applyPeers([pA, pA6, pB, wrong]);
    await bird.enable('pw');
    const states = new Set<string>();
    for (const end = Date.now() + 3000; Date.now() < end; await sleep(200)) states.add((await bird.protocol('pw')).bgpState);
    t.notOk(states.has('Established'), `no session with the wrong password in 3 s (BIRD states seen: ${[...states].join(', ')})`);
    t.equal((await bird.routes('pw', VIP(5))).length, 0, 'no route with the wrong password');
    const sinceB = (await bird.protocol('b')).since;
    await r3.applyPeers([pA, pA6, pB, { ...wrong, md5Password: 'right-secret' }]);
    await bird.waitEstablished('pw', 15_000);
    await waitFor(async () => (await bird.routes('pw', VIP(5))).length === 1, 5000, 'route over the MD5 session');
    t.equal((await bird.protocol('pw')).bgpState, 'Established', 'session with the right password');
    t.equal((await bird.routes('pw', VIP(5))).length, 1, 'route over it');
    await sameSession(t, 'b', sinceB, 'updating the md5 peer did not reset b');
    const json = JSON.stringify(await r3.peerStates());
    t.notMatch(json, /secret/, 'peer states never carry the password');
  });

  t.test('multihop peer via loopback addresses', async (t) => {
    const pMH: PeerSpec = { address: LO.tor, asn: TOR_AS, communities: [] };
    await r3.applyPeers([pA, pA6, pB, { address: C.tor, asn: TOR_AS, md5Password: 'right-secret', communities: [] }, pMH]);
    await bird.enable('mh');
    await bird.waitEstablished('mh', 15_000);
    const r = await waitFor(async () => (await bird.routes('mh', VIP(5)))[0], 5000, `${VIP(5)} over the multihop session`);
    t.equal(r.nextHop, LO.node, 'next hop = the node\'s loopback (the session address)');
    const st = (await r3.peerStates()).find((p) => p.address === LO.tor);
    t.match(st, { state: 'established', asn: TOR_AS });
    t.ok(st!.prefixesSent >= 1, `prefixes sent: ${st!.prefixesSent}`);
  });

  t.test('removing a peer deletes only that session', async (t) => {
    const sinceA = (await bird.protocol('a')).since;
    await r3.applyPeers([pA, pA6, { address: C.tor, asn: TOR_AS, md5Password: 'right-secret', communities: [] }, { address: LO.tor, asn: TOR_AS, communities: [] }]);
    await waitFor(async () => (await bird.protocol('b')).bgpState !== 'Established', 5000, 'session b down');
    t.equal((await bird.routes('b', VIP(5))).length, 0, 'b lost the route');
    await sameSession(t, 'a', sinceA, 'a untouched');
    t.notOk((await r3.peerStates()).some((p) => p.address === B.tor), 'gone from gobgpd');
  });

  t.test('multi_hop: false on an eBGP peer: gobgpd gets no ebgp-multihop (checked with the gobgp CLI); the changed peer is re-added, the others untouched', async (t) => {
    const sinceA = (await bird.protocol('a')).since;
    const sinceA6 = (await bird.protocol('a6')).since;
    const cli = async (addr: string) => JSON.parse(await run('gobgp', ['--target', g3.address, 'neighbor', addr, '-j'])) as { conf?: object; ebgp_multihop?: { enabled?: boolean; multihop_ttl?: number } };
    const before = await cli(A.tor6);
    t.ok(before.conf, 'the CLI sees the peer');
    t.match(before.ebgp_multihop, { enabled: true, multihop_ttl: 255 }, 'default for different AS: multihop TTL 255 (gocast)');
    await r3.applyPeers([pA, { ...pA6, multiHop: false }, { address: C.tor, asn: TOR_AS, md5Password: 'right-secret', communities: [] }, { address: LO.tor, asn: TOR_AS, communities: [] }]);
    const after = await cli(A.tor6);
    t.ok(after.conf, 'the CLI sees the re-added peer');
    t.notOk(after.ebgp_multihop?.enabled, 'multihop off in gobgpd');
    await bird.waitEstablished('a6', 15_000);
    const a6 = await bird.protocol('a6');
    t.ok(Date.parse(a6.since.replace(' ', 'T')) - Date.parse(sinceA6.replace(' ', 'T')) > 50, `the changed peer's session did reset (since ${sinceA6} -> ${a6.since}): the check above can fail`);
    await sameSession(t, 'a', sinceA, 'a untouched');
    t.equal(a6.bgpState, 'Established', 'a directly connected session comes up without multihop');
  });

  t.test('a restarted vipcast (new router, same gobgpd) keeps unchanged sessions and reports earlier paths with app \'\'', async (t) => {
    const sinceA = (await bird.protocol('a')).since;
    const peers: PeerSpec[] = [pA, { ...pA6, multiHop: false }, { address: C.tor, asn: TOR_AS, md5Password: 'right-secret', communities: [] }, { address: LO.tor, asn: TOR_AS, communities: [] }];
    await r3.close();
    const r4 = new GobgpRouter({ bgp: bgp({ peers, communities: comms('65000:100') }), gobgp: { address: g3.address }, log, runIp: inNode });
    cleanups.push(() => r4.close());
    await r4.start();
    await r4.applyPeers(peers);
    const listed = await r4.listRoutes();
    t.same(listed.map((r) => [r.prefix.text, r.app]), [[VIP(5), '']], 'the earlier run\'s path, app unknown: the reconciler deletes it as a stray');
    await r4.withdraw(listed[0]!, 'stray from an earlier run');
    await waitFor(async () => (await bird.routes('a', VIP(5))).length === 0, 5000, 'stray withdrawn at BIRD');
    await sleep(500);
    await sameSession(t, 'a', sinceA, 'session a survived the vipcast restart untouched');

    await r4.stopSpeaker();
    await waitFor(async () => (await bird.protocol('a')).bgpState !== 'Established', 5000, 'sessions dropped by StopBgp');
    const r5 = new GobgpRouter({ bgp: bgp({ localAs: 65010, peers: [] }), gobgp: { address: g3.address }, log, runIp: inNode });
    cleanups.push(() => r5.close());
    await r5.start();
    t.ok(r5.connected, 'after stopSpeaker gobgpd starts again with another AS (a reload that changes the speaker)');
    await r5.close();
    await r4.close();
  });
});
