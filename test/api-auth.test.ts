/**
 * Issue 9's attacks, run for real: vipcast (the CLI, gobgp routing) in the lab's node namespace with its API on every
 * address (gocast's ":PORT"), gobgpd and BIRD as in production. An unprivileged user in the node namespace and root on
 * the "tor" host try to register a default route and a NAT interception, unregister a config app and reload; each is
 * refused with 401/403 saying why, and nothing reaches BIRD, lo or the NAT chain. Root on the node (gocast's
 * registration scripts) and a caller with the token get in.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { labSkip, waitFor } from './lab/netns.js';
import { createStack } from './lab/stack.js';
import { loAddrs, natRules } from './lab/traffic.js';
import { freePort } from './helpers/daemon.js';
import { requestAs, type HttpResult } from './helpers/http-as.js';

const TOKEN = 'lab-api-token-0123456789abcdef';

t.test('as nobody on the node and as root on another host, every attack on the API is refused and changes nothing; root on the node and the token get in', { skip: labSkip(['gobgpd', 'bird', 'birdc', 'iptables', 'setpriv']) }, async (t) => {
  const s = await createStack();
  t.teardown(() => s.destroy());
  const port = await freePort();
  writeFileSync(join(s.dir, 'api-token'), `${TOKEN}\n`, { mode: 0o600 });
  const file = s.writeConfig(`${s.baseConfig(`  api_token_file: api-token\n`, { listenAddr: `:${port}` })}apps:\n  - { name: cfg, vip: 198.18.230.1/32, nats: ["tcp:80:8080"] }\n`);
  const d = s.startVipcast(file);
  await d.waitLine((l) => l.msg === 'HTTP API listening', 30_000, 'API up');
  await waitFor(async () => (await s.routes('198.18.230.1/32')).length === 1, 15_000, 'config app at BIRD');
  const natBefore = await natRules(s.node);
  const loBefore = (await loAddrs(s.node)).map((a) => a.local).sort();

  const v4 = `http://127.0.0.1:${port}`;
  const v6 = `http://[::1]:${port}`;
  const fromTor = `http://${s.lab.ipA}:${port}`;
  const attacks: Array<{ what: string; url: string; method?: string; ns: string; user?: 'root'; token?: string; status: number; body: RegExp }> = [
    { what: 'nobody registers a default route', url: `${v4}/register?name=x&vip=0.0.0.0/0`, ns: s.node, status: 403, body: /^VIPCAST_ERR_API_AUTH: uid 65534 may not call \/register: only root/ },
    { what: 'nobody intercepts traffic with nat=', url: `${v4}/register?name=y&vip=198.18.230.66/32&nat=tcp:22:2222`, ns: s.node, status: 403, body: /uid 65534 may not call \/register/ },
    { what: 'nobody over IPv6 loopback', url: `${v6}/register?name=z&vip=198.18.230.67/32`, ns: s.node, status: 403, body: /uid 65534 may not call \/register/ },
    { what: 'nobody takes a route down', url: `${v4}/unregister?name=cfg`, ns: s.node, status: 403, body: /uid 65534 may not call \/unregister/ },
    { what: 'nobody reloads', url: `${v4}/reload`, method: 'POST', ns: s.node, status: 403, body: /uid 65534 may not call \/reload/ },
    { what: 'nobody with a wrong token', url: `${v4}/register?name=w&vip=198.18.230.68/32`, ns: s.node, token: 'not-the-token-0123456789', status: 401, body: /the bearer token is wrong/ },
    { what: 'root on another host registers', url: `${fromTor}/register?name=r&vip=198.18.230.69/32`, ns: s.tor, user: 'root', status: 401, body: /^VIPCAST_ERR_API_AUTH: \/register from 198\.\S+ needs a bearer token \(the caller is not a local user of this host\)/ },
    { what: 'root on another host reloads', url: `${fromTor}/reload`, method: 'POST', ns: s.tor, user: 'root', status: 401, body: /needs a bearer token/ },
  ];
  for (const a of attacks) {
    const r: HttpResult = await requestAs(a.url, { ns: a.ns, ...(a.method ? { method: a.method } : {}), ...(a.user ? { user: a.user } : {}), ...(a.token ? { token: a.token } : {}) });
    t.equal(r.status, a.status, `${a.what}: ${a.status}`);
    t.match(r.body, a.body, `${a.what}: says why`);
    if (r.status === 401) t.match(r.headers['www-authenticate'], /^Bearer realm="vipcast"/);
  }
  // Give a wrongly accepted registration time to show up (interval 200 ms, rise 1).
  await new Promise((r) => setTimeout(r, 1500));
  t.same((await s.routes()).map((r) => r.prefix), ['198.18.230.1/32'], 'BIRD has only the config app: nothing announced, nothing withdrawn');
  t.same((await loAddrs(s.node)).map((a) => a.local).sort(), loBefore, 'no address added to or removed from lo');
  t.same(await natRules(s.node), natBefore, 'the NAT chain is unchanged');
  t.notOk(d.lines.some((l) => /reload/.test(l.msg) && l.trigger === 'api'), 'no reload ran');
  t.notMatch(JSON.stringify(d.lines) + d.stderr.join(''), TOKEN, 'the token is never logged');

  // The ways in.
  let r = await requestAs(`${v4}/register?name=rootreg&vip=198.18.230.70/32`, { ns: s.node, user: 'root' });
  t.equal(r.status, 200, 'root on the node, no token (gocast registration scripts)');
  r = await requestAs(`${v4}/register?name=tokreg&vip=198.18.230.71/32`, { ns: s.node, token: TOKEN });
  t.equal(r.status, 200, 'nobody with the token');
  r = await requestAs(`${fromTor}/register?name=remote&vip=198.18.230.72/32`, { ns: s.tor, user: 'root', token: TOKEN });
  t.equal(r.status, 200, 'another host with the token');
  await waitFor(async () => (await s.routes()).length === 4, 10_000, 'the three registrations at BIRD');
  t.same((await s.routes()).map((x) => x.prefix).sort(), ['198.18.230.1/32', '198.18.230.70/32', '198.18.230.71/32', '198.18.230.72/32']);
  r = await requestAs(`${v4}/unregister?name=tokreg`, { ns: s.node, token: TOKEN });
  t.equal(r.status, 200, 'unregister with the token');
  await waitFor(async () => (await s.routes('198.18.230.71/32')).length === 0, 10_000, 'withdrawn at BIRD');
});
