/**
 * A discovery plugin package against real components (issue 11, tests: "a discovery plugin package ... used by the
 * real daemon"). The fixture test/fixtures/plugins/vipcast-discovery-jsonfile is packed with `npm pack` and installed
 * next to the config with `npm install <tarball> --offline`; the real `vipcast run` in the lab's node namespace, with
 * the built-in gobgp router and gobgpd, peers with a real BIRD: the discovered app is checked (down while its port is
 * closed, nothing announced), its route appears at BIRD once the check passes, and removing it from the JSON file
 * withdraws it at BIRD and takes its address off lo, while the source's other app stays.
 */
import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { labSkip, waitFor } from './lab/netns.js';
import { NODE_AS, nsFetch, stackFor } from './lab/stack.js';
import { hasVip, startServer } from './lab/traffic.js';
import { installPackedFixture } from './helpers/packages.js';

const skip = labSkip(['gobgpd', 'bird', 'birdc', 'iptables']);
const FOUND = '198.18.247.1/32';
const OTHER = '198.18.247.2/32';
const PORT = 18247;
const API = 'http://127.0.0.1:9247';

t.test('a packed discovery plugin with the gobgp router and a real BIRD: the discovered app is checked, announced at BIRD, withdrawn when removed from its file', { skip, timeout: 120_000 }, async (t) => {
  const s = await stackFor(t);
  await installPackedFixture(s.dir, 'vipcast-discovery-jsonfile');
  t.ok(existsSync(join(s.dir, 'node_modules', 'vipcast-discovery-jsonfile', 'index.js')), 'installed from the tarball');
  const appsFile = join(s.dir, 'apps.json');
  const writeApps = (list: unknown[]): void => writeFileSync(appsFile, JSON.stringify(list));
  writeApps([{ name: 'found', vip: FOUND, monitor: `port:tcp:${PORT}` }, { name: 'other', vip: OTHER }]);
  const file = s.writeConfig(`plugins: [vipcast-discovery-jsonfile]\n${s.baseConfig('', { listenAddr: API.slice('http://'.length) })}discovery:\n  - plugin: jsonfile\n    file: ${appsFile}\n    poll_ms: 100\n`);
  let server: ChildProcess | undefined;
  t.teardown(() => { server?.kill('SIGKILL'); });
  const d = s.startVipcast(file);

  await waitFor(async () => (await s.routes(OTHER)).length === 1, 30_000, 'other (no monitor) announced at BIRD');
  await d.waitLine((l) => l.app === 'found' && l.state === 'down', 10_000, 'found checked: down while nothing listens on its port');
  t.same(await s.routes(FOUND), [], 'found is not at BIRD while its check fails');

  server = await startServer(s.node, s.lab.ipA, PORT);
  const route = await waitFor(async () => (await s.routes(FOUND))[0], 20_000, 'found announced at BIRD once its port listens');
  t.equal(route!.nextHop, s.lab.ipA, 'next hop: bgp.local_ip');
  t.same(route!.asPath, [NODE_AS], 'AS path: vipcast\'s AS');
  t.ok(await hasVip(s.node, FOUND.split('/')[0]!), 'the VIP is on lo of the node namespace');
  const status = JSON.parse((await nsFetch(s.node, `${API}/status`)).body) as { apps: Array<{ name: string; source: string; state: string }> };
  t.same(status.apps.map((a) => [a.name, a.source, a.state]).sort(), [['found', 'jsonfile', 'up'], ['other', 'jsonfile', 'up']], '/status: both apps from the jsonfile source, up');

  // Removed from the file: the plugin's next poll delivers the rest, and the route goes at BIRD.
  const removed = performance.now();
  writeApps([{ name: 'other', vip: OTHER }]);
  await waitFor(async () => (await s.routes(FOUND)).length === 0, 20_000, 'found withdrawn at BIRD once gone from the file');
  t.comment(`file change -> route gone at BIRD: ${Math.round(performance.now() - removed)} ms (poll 100 ms)`);
  await waitFor(async () => !(await hasVip(s.node, FOUND.split('/')[0]!)), 10_000, 'its address removed from lo');
  t.equal((await s.routes(OTHER)).length, 1, 'other stays at BIRD');

  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0, 'exit 0');
  await waitFor(async () => (await s.routes(OTHER)).length === 0, 10_000, 'other withdrawn at shutdown');
});
