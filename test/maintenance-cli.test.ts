/**
 * `vipcast maintenance` against a dry-run daemon (no root): on, list, off; --all; the exit codes (2 usage, 1 no daemon
 * or a refused change) and --help. The lab test (maintenance-lab) proves the routes at a real BIRD.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BIN, DaemonProcess, freePort, type LogLine } from './helpers/daemon.js';

const pexec = promisify(execFile);
type Failed = { code: number; stdout: string; stderr: string };
const vipcast = (args: string[]) => pexec(process.execPath, [BIN, ...args]).then((r) => ({ code: 0, ...r }), (e: Failed) => e);

t.test('vipcast maintenance on/list/off and --all against a dry-run daemon: the route is withdrawn and announced again; a refused change exits 1', async (t) => {
  const dir = t.testdir();
  const port = await freePort();
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `
agent: { listen_addr: "127.0.0.1:${port}", monitor_interval: 200ms, maintenance_state_file: ${join(dir, 'maintenance.json')} }
routing: { plugin: dry-run }
bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
apps:
  - { name: web, vip: 198.18.104.1/32 }
  - { name: db, vip: 198.18.104.2/32 }
`);
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  const route = (action: string, prefix: string, from = 0) => d.waitLine((l: LogLine) => l.event === 'route' && l.action === action && l.prefix === prefix, 10_000, `${action} ${prefix}`, from);
  await route('announce', '198.18.104.1/32');
  await d.waitLine((l) => l.msg === 'HTTP API listening', 10_000, 'the API');

  let from = d.lines.length;
  const on = await vipcast(['maintenance', 'web', 'on', '-c', file]);
  t.equal(on.code, 0, on.stderr);
  t.match(on.stdout, /^web: maintenance on \(cli, uid \d+, since \S+Z\)$/m);
  t.match((await route('withdraw', '198.18.104.1/32', from)).reason, /^held down: maintenance \(cli, /);
  const list = await vipcast(['maintenance', '-c', file]);
  t.equal(list.code, 0);
  t.match(list.stdout, /^host-wide maintenance: off$/m);
  t.match(list.stdout, /^web\s+cli\s+\S+Z\s+uid \d+/m);
  t.match(list.stdout, /^apps in maintenance now: web$/m);
  const json = JSON.parse((await vipcast(['maintenance', '-c', file, '--json'])).stdout) as { in_maintenance: string[]; apps: Record<string, { api?: { by: string }; registered: boolean }> };
  t.same(json.in_maintenance, ['web']);
  t.match(json.apps.web, { api: { by: 'cli' }, registered: true });

  from = d.lines.length;
  t.equal((await vipcast(['maintenance', '--all', 'on', '-c', file])).code, 0);
  await route('withdraw', '198.18.104.2/32', from);
  from = d.lines.length;
  const off = await vipcast(['maintenance', 'web', 'off', '-c', file]);
  t.equal(off.code, 0);
  t.match(off.stdout, /^web: maintenance off; still in maintenance: host-wide maintenance set by cli$/m, 'off says what still holds web');
  t.equal((await vipcast(['maintenance', '--all', 'off', '-c', file])).code, 0);
  await route('announce', '198.18.104.1/32', from);
  await route('announce', '198.18.104.2/32', from);

  const unknown = await vipcast(['maintenance', 'nope', 'on', '-c', file]);
  t.equal(unknown.code, 1, 'an unknown app: exit 1');
  t.match(unknown.stderr, /the daemon answered 404: app: no app "nope" is registered/);
});

t.test('vipcast maintenance: usage errors exit 2, no daemon exits 1 naming the address, --help documents it', async (t) => {
  for (const args of [['maintenance', 'web'], ['maintenance', 'web', 'maybe'], ['maintenance', '--all'], ['maintenance', '--all', 'web', 'on'], ['maintenance', 'a', 'b', 'on']]) {
    const r = await vipcast([...args, '--api', '127.0.0.1:1']);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, /usage: vipcast maintenance APP on\|off/);
  }
  const noAddr = await vipcast(['maintenance', 'web', 'on']);
  t.equal(noAddr.code, 2);
  t.match(noAddr.stderr, /vipcast maintenance: pass --api ADDR or -c FILE/);
  const port = await freePort();
  const none = await vipcast(['maintenance', 'web', 'on', '--api', `127.0.0.1:${port}`]);
  t.equal(none.code, 1);
  t.match(none.stderr, new RegExp(`cannot reach the vipcast API at 127\\.0\\.0\\.1:${port}`));
  const help = await vipcast(['--help']);
  t.match(help.stdout, /vipcast maintenance APP on\|off/);
  t.match(help.stdout, /vipcast maintenance --all on\|off/);
});
