/**
 * `vipcast status`: the running daemon's /status as a table (and raw with --json), through the real CLI against a
 * dry-run daemon; clear errors when there is no daemon or no address.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BIN, DaemonProcess, freePort, serve, type LogLine } from './helpers/daemon.js';
import { formatStatus } from '../src/status-command.js';

const pexec = promisify(execFile);
type Failed = { code: number; stdout: string; stderr: string };
const vipcast = (args: string[]) => pexec(process.execPath, [BIN, ...args]).then((r) => ({ code: 0, ...r }), (e: Failed) => e);

t.test('vipcast status shows apps, states, routes, peers and the last reload of the running daemon; --json is /status', async (t) => {
  const dir = t.testdir();
  const [apiPort, webPort] = [await freePort(), await freePort()];
  await serve(t, webPort);
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `
agent: { listen_addr: "127.0.0.1:${apiPort}", monitor_interval: 200ms }
routing: { plugin: dry-run }
bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
apps:
  - { name: web, vip: 198.18.103.1/32, monitors: ["port:tcp:${webPort}"] }
  - { name: closed, vip: 198.18.103.2/32, monitors: ["port:tcp:1"] }
`);
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine((l: LogLine) => l.event === 'route' && l.action === 'announce' && l.prefix === '198.18.103.1/32', 10_000, 'web announced');
  await d.waitLine((l: LogLine) => l.app === 'closed' && l.state === 'down', 10_000, 'closed checked');
  d.kill('SIGHUP');
  await d.waitLine((l: LogLine) => l.component === 'reload' && /^reload: /.test(l.msg), 10_000, 'reload');

  const out = await vipcast(['status', '-c', file]);
  t.equal(out.code, 0, out.stderr);
  const lines = out.stdout.split('\n');
  t.match(lines[0], /^routing dry-run, config .*vipcast\.yaml, running since /);
  t.match(lines.find((l) => l.startsWith('web ')), /^web\s+config\s+up\s+198\.18\.103\.1\/32\s+all 1 monitors passed$/, 'web: up, its route');
  t.match(lines.find((l) => l.startsWith('closed ')), /^closed\s+config\s+down\s+-\s+port:tcp:1: /, 'closed: down, no route, the reason');
  t.match(lines.find((l) => l.startsWith('198.18.0.1 ')), /^198\.18\.0\.1\s+65000\s+dry-run\s/, 'the peer');
  t.match(out.stdout, /last reload: ok at .* \(SIGHUP\)/, 'the last reload');

  const json = await vipcast(['status', '--api', `127.0.0.1:${apiPort}`, '--json']);
  t.equal(json.code, 0, json.stderr);
  const direct = JSON.parse(await (await fetch(`http://127.0.0.1:${apiPort}/status`)).text()) as { apps: Array<{ name: string; state: string }> };
  const viaCli = JSON.parse(json.stdout) as typeof direct;
  t.same(viaCli.apps.map((a) => [a.name, a.state]).sort(), direct.apps.map((a) => [a.name, a.state]).sort(), '--json is the /status document');
});

t.test('vipcast status without a daemon exits 1 naming the address; without an address exits 2', async (t) => {
  const port = await freePort();
  const none = await vipcast(['status', '--api', `127.0.0.1:${port}`]);
  t.equal(none.code, 1);
  t.match(none.stderr, new RegExp(`cannot reach the vipcast API at 127\\.0\\.0\\.1:${port}`));
  const usage = await vipcast(['status']);
  t.equal(usage.code, 2);
  t.match(usage.stderr, /--api ADDR or -c FILE/);
  const dir = t.testdir();
  const file = join(dir, 'noapi.yaml');
  writeFileSync(file, 'agent: { listen_addr: "" }\nrouting: { plugin: dry-run }\nbgp: { local_as: 65001 }\napps: []\n');
  const noApi = await vipcast(['status', '-c', file]);
  t.equal(noApi.code, 2);
  t.match(noApi.stderr, /agent\.listen_addr is empty/);
});

t.test('formatStatus: a failed reload, a peer error and an app error are shown, not hidden', async (t) => {
  const text = formatStatus({
    started_at: 'S', config_file: 'F', routing: 'gobgp',
    apps: [{ name: 'a', source: 'http', state: 'down', reason: 'r', announced: [], error: 'NAT rules: no local ipv6 address' }],
    peers: { error: 'gobgpd unreachable' },
    last_reload: { ok: false, trigger: 'api', at: 'T', errors: ['apps[0].vip: bad'], changes: [] },
  });
  t.match(text, /^a\s+http\s+down\s+-\s+r \(error: NAT rules: no local ipv6 address\)$/m);
  t.match(text, /^peers: gobgpd unreachable$/m);
  t.match(text, /^last reload: FAILED at T \(api\); errors: apps\[0\]\.vip: bad$/m);
});
