/**
 * The systemd units in packaging/systemd, as far as they run without systemd as PID 1: vipcast.service alone runs
 * vipcast with its managed gobgpd (managed-gobgpd.test runs that mode in the lab); the unit pair (gobgpd-vipcast.service
 * plus the drop-in vipcast.service.d/gobgpd-vipcast.conf) agree with each other and with vipcast (socket path, exit
 * code, signals), and the exact gobgpd command line of gobgpd-vipcast.service, driven by vipcast through the
 * drop-in's Environment=, gets a route to a real BIRD.
 * (BindsTo=/PartOf= themselves are systemd's to enforce; gobgp-daemon.test shows why they are needed.)
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLab, labSkip, waitFor } from './lab/netns.js';
import { startGobgpd } from './lab/gobgpd.js';
import { createStack } from './lab/stack.js';
import { BIN, DaemonProcess } from './helpers/daemon.js';
import { loadConfig } from '../src/core/config.js';

const run = async (cmd: string, args: string[]) => (await promisify(execFile)(cmd, args, { timeout: 10_000 })).stdout;

const UNITS = fileURLToPath(new URL('../../packaging/systemd/', import.meta.url));

/** A unit file as key -> every value it is given (comments and blank lines dropped; sections ignored). */
function readUnit(name: string): Map<string, string[]> {
  const unit = new Map<string, string[]>();
  for (const raw of readFileSync(join(UNITS, name), 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith('[')) continue;
    const eq = line.indexOf('=');
    const key = line.slice(0, eq);
    unit.set(key, [...(unit.get(key) ?? []), line.slice(eq + 1)]);
  }
  return unit;
}
const one = (unit: Map<string, string[]>, key: string): string => {
  const v = unit.get(key);
  if (v?.length !== 1) throw new Error(`${key}: want exactly one value, found ${JSON.stringify(v)}`);
  return v[0]!;
};
const words = (unit: Map<string, string[]>, key: string): string[] => (unit.get(key) ?? []).flatMap((v) => v.split(/\s+/));

const vipcastUnit = readUnit('vipcast.service');
/** vipcast.service with the pair's drop-in, as systemd merges them (these keys add up). */
const pairDropIn = readUnit('vipcast.service.d/gobgpd-vipcast.conf');
const vipcastPairUnit = new Map([...vipcastUnit].map(([k, v]) => [k, [...v]]));
for (const [k, v] of pairDropIn) vipcastPairUnit.set(k, [...(vipcastPairUnit.get(k) ?? []), ...v]);
const gobgpdUnit = readUnit('gobgpd-vipcast.service');
const gobgpdArgv = one(gobgpdUnit, 'ExecStart').split(/\s+/);
const apiHosts = gobgpdArgv[gobgpdArgv.indexOf('--api-hosts') + 1]!;
const envAddress = (vipcastPairUnit.get('Environment') ?? []).map((e) => /^VIPCAST_GOBGP_ADDRESS=(.*)$/.exec(e)?.[1]).find(Boolean);

t.test('vipcast.service alone runs the managed gobgpd: no gobgpd address in its environment, no gobgpd unit pulled in, the socket directory inside its RuntimeDirectory', async (t) => {
  t.notOk((vipcastUnit.get('Environment') ?? []).some((e) => e.startsWith('VIPCAST_GOBGP_ADDRESS=')), 'no VIPCAST_GOBGP_ADDRESS: a config without routing.gobgp.address is managed');
  t.notOk([...words(vipcastUnit, 'Wants'), ...words(vipcastUnit, 'Requires'), ...words(vipcastUnit, 'After')].includes('gobgpd-vipcast.service'), 'no gobgpd unit needed');
  t.ok(words(vipcastUnit, 'Conflicts').includes('gobgpd.service'), 'Debian\'s gobgpd.service (port 179) never runs beside it');
  const file = join(t.testdir(), 'vipcast.yaml');
  writeFileSync(file, 'bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }\n');
  const env = Object.fromEntries((vipcastUnit.get('Environment') ?? []).map((e) => e.split('=', 2) as [string, string]));
  const routing = (await loadConfig(file, { env })).routing;
  t.equal(routing.gobgp.managed, true, 'the unit\'s environment leaves the config managed');
  t.equal(dirname(routing.gobgp.socketDir), `/run/${one(vipcastUnit, 'RuntimeDirectory')}`, 'the default socket dir is inside the unit\'s RuntimeDirectory (kept across a crash, with the state file)');
  t.equal(one(vipcastUnit, 'KillMode'), 'mixed', 'stop: SIGTERM to vipcast alone (it stops gobgpd last), SIGKILL to what is left');
});

t.test('the two units of the pair (with the drop-in) agree with each other and with vipcast', async (t) => {
  t.match(apiHosts, /^unix:\/\/\//, 'gobgpd serves its API on a unix socket');
  t.equal(envAddress, apiHosts, 'vipcast.service points VIPCAST_GOBGP_ADDRESS at the socket gobgpd-vipcast.service serves');
  t.equal(dirname(apiHosts.slice('unix://'.length)), `/run/${one(gobgpdUnit, 'RuntimeDirectory')}`, 'the socket is in the unit\'s RuntimeDirectory');
  t.ok(existsSync(gobgpdArgv[0]!), `${gobgpdArgv[0]} exists (where Debian's gobgpd package puts it)`);
  for (const key of ['BindsTo', 'PartOf', 'Before']) t.ok(words(gobgpdUnit, key).includes('vipcast.service'), `gobgpd-vipcast.service ${key}=vipcast.service`);
  for (const key of ['Wants', 'After']) t.ok(words(vipcastPairUnit, key).includes('gobgpd-vipcast.service'), `vipcast.service (drop-in) ${key}=gobgpd-vipcast.service`);
  t.equal(one(gobgpdUnit, 'Type'), 'notify');
  t.ok(gobgpdArgv.includes('--sdnotify'), 'Type=notify goes with gobgpd --sdnotify');
  t.equal(one(vipcastUnit, 'KillSignal'), 'SIGTERM', 'stop = SIGTERM, which withdraws everything');
  const start = one(vipcastUnit, 'ExecStart').split(/\s+/);
  const reload = one(vipcastUnit, 'ExecReload').split(/\s+/);
  const pidFile = start[start.indexOf('--pid-file') + 1]!;
  t.same(reload, [start[0], 'reload', '--pid-file', pidFile], 'reload = `vipcast reload --pid-file` with the pid file ExecStart names (SIGHUP only to a daemon that runs)');
  t.equal(dirname(pidFile), `/run/${one(vipcastUnit, 'RuntimeDirectory')}`, 'the pid file is in the unit\'s RuntimeDirectory');
  t.equal(one(vipcastUnit, 'RuntimeDirectoryPreserve'), 'yes', 'kept after a crash: it holds agent.state_file too');
  t.same(one(vipcastUnit, 'ExecStart').split(/\s+/).slice(1, 3), ['run', '-c'], 'ExecStart runs `vipcast run -c FILE`');
});

t.test('ExecStart and ExecReload as the unit runs them (pid file moved to a temp dir): no reload before the daemon runs, one reload once it does, none after it stopped', async (t) => {
  const dir = t.testdir();
  const unitPid = one(vipcastUnit, 'ExecStart').split(/\s+/).find((_, i, a) => a[i - 1] === '--pid-file')!;
  const pidFile = join(dir, 'vipcast.pid');
  const argv = (line: string) => line.split(/\s+/).slice(1).map((a) => (a === unitPid ? pidFile : a));
  // agent.pid_file names another file: the command line wins.
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, 'agent: { listen_addr: "", pid_file: other.pid }\nrouting: { plugin: dry-run }\nbgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }\napps:\n  - { name: a, vip: 198.18.126.1/32 }\n');
  const execReload = () => promisify(execFile)(process.execPath, [BIN, ...argv(one(vipcastUnit, 'ExecReload'))]).then((r) => ({ code: 0, ...r }), (e: { code: number; stdout: string; stderr: string }) => e);
  const before = await execReload();
  t.equal(before.code, 1, 'no daemon yet: ExecReload fails (systemctl reload reports it) and signals nobody');
  const d = new DaemonProcess(argv(one(vipcastUnit, 'ExecStart')).map((a) => (a === '/etc/vipcast/vipcast.yaml' ? file : a)).concat(['--dry-run']));
  t.teardown(() => d.stop());
  await d.waitLine((l) => l.msg === 'vipcast running', 15_000, 'running');
  t.equal(readFileSync(pidFile, 'utf8'), `${d.child.pid}\n`, 'the pid file of --pid-file holds the pid');
  t.notOk(existsSync(join(dir, 'other.pid')), 'agent.pid_file is overridden');
  const from = d.lines.length;
  const ok = await execReload();
  t.equal(ok.code, 0);
  t.equal((await d.waitLine((l) => l.component === 'reload' && /^reload/.test(l.msg), 5000, 'reload', from)).msg, 'reload: nothing changed');
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
  t.notOk(existsSync(pidFile), 'removed at exit');
  t.equal((await execReload()).code, 1, 'stopped: ExecReload fails again');
});

t.test('RestartPreventExitStatus matches the exit code of vipcast run with an invalid config', async (t) => {
  const file = join(t.testdir(), 'bad.yaml');
  writeFileSync(file, 'bgp: { local_as: 0 }\n');
  const d = new DaemonProcess(['run', '-c', file]);
  const { code } = await d.exited;
  t.equal(String(code), one(vipcastUnit, 'RestartPreventExitStatus'), 'systemd does not restart a daemon whose config is invalid');
});

t.test('gobgpd with the unit\'s exact command line, vipcast with the unit\'s Environment=: the route reaches BIRD', { skip: labSkip(['gobgpd', 'gobgp', 'bird', 'birdc']) }, async (t) => {
  const UNIT_SOCK = apiHosts.slice('unix://'.length);
  // Only the socket moves (to the lab's temp dir): /run/gobgpd-vipcast is systemd's to create.
  const s = await createStack({ gobgpdArgs: (sock) => gobgpdArgv.slice(1).map((a) => a.replace(UNIT_SOCK, sock)) });
  t.teardown(() => s.destroy());
  // routing.gobgp.address in the file points nowhere: the unit's environment variable must win.
  const yaml = `${s.baseConfig()}apps:\n  - { name: a, vip: 198.18.217.1/32 }\n`.replace(s.gobgpd.address, 'unix:///nonexistent/gobgp.sock');
  t.notOk(yaml.includes(s.gobgpd.address), 'the file does not name the real socket');
  const d = s.startVipcast(s.writeConfig(yaml), [], { VIPCAST_GOBGP_ADDRESS: envAddress!.replace(UNIT_SOCK, s.gobgpd.sock) });
  await waitFor(async () => (await s.routes()).length === 1, 15_000, 'route at BIRD');
  t.same((await s.routes()).map((r) => r.prefix), ['198.18.217.1/32']);
  t.match(s.gobgpd.output(), /level=info/, 'plain logs (--log-plain)');
  // packaging/README.md's inspection command, against the moved socket.
  const rib = await run('gobgp', ['--target', `unix://${s.gobgpd.sock}`, 'global', 'rib']);
  t.match(rib, /198\.18\.217\.1\/32/, '`gobgp --target unix://... global rib` shows the route');
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
  t.same(await s.routes(), [], 'SIGTERM withdrew the route');
});

t.test('gobgpd\'s API socket is root-only: in a directory made as the unit makes it, a non-root user (even in group root) cannot connect, root can', { skip: labSkip(['gobgpd', 'setpriv']) }, async (t) => {
  t.equal(one(gobgpdUnit, 'RuntimeDirectoryMode'), '0700', 'the runtime directory is root\'s alone');
  t.equal(one(gobgpdUnit, 'UMask'), '0077', 'and the socket gobgpd creates in it is 0700 (gobgpd sets no mode of its own)');
  const lab = await createLab({ prefix: 'pk' });
  t.teardown(() => lab.destroy());
  const top = mkdtempSync(join(tmpdir(), 'vc-pkg-'));
  t.teardown(() => rmSync(top, { recursive: true, force: true }));
  chmodSync(top, 0o755);
  const dir = join(top, 'gobgpd-vipcast');
  mkdirSync(dir, { mode: Number.parseInt(one(gobgpdUnit, 'RuntimeDirectoryMode'), 8) });
  const UNIT_SOCK = apiHosts.slice('unix://'.length);
  const g = await startGobgpd({ ns: lab.a, dir, args: (sock) => gobgpdArgv.slice(1).map((a) => a.replace(UNIT_SOCK, sock)) });
  t.teardown(() => g.stop());
  // The worst case for the socket itself (gobgpd started with umask 0): only the directory guards it then.
  chmodSync(g.sock, 0o777);
  const probe = `require('node:net').connect({ path: process.argv[1] }).on('connect', function () { process.stdout.write('connected'); this.destroy(); }).on('error', (e) => process.stdout.write(e.code))`;
  const as = (ids: string[]) => run('setpriv', [...ids, '--clear-groups', process.execPath, '-e', probe, g.sock]);
  t.equal(await as(['--reuid', '65534', '--regid', '65534']), 'EACCES', 'nobody cannot connect to gobgpd');
  t.equal(await as(['--reuid', '65534', '--regid', '0']), 'EACCES', 'nor can a non-root user whose group is root (the directory was 0750 before)');
  t.equal(await run(process.execPath, ['-e', probe, g.sock]), 'connected', 'root can');
});
