/**
 * `vipcast check -c FILE [APP] [--json]` (issue 12, item 3): the real CLI in a child process runs every monitor of the
 * config once in worker threads and prints each result and duration; exit 0 all up, 1 any down, 2 for an invalid
 * config or an unknown app. It needs no daemon and touches no route, address or NAT rule: the VIPs are not put on the
 * host, and neither the router (gRPC), the API (fastify) nor the DI container is even loaded.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { BIN, freePort, serve } from './helpers/daemon.js';

const pexec = promisify(execFile);
/** node, without tap's preload (tap adds it to every child's NODE_OPTIONS: it would load in every check worker too). */
const NODE = ['/usr/bin/env', '-u', 'NODE_OPTIONS', process.execPath];

interface Run { code: number; stdout: string; stderr: string }

async function vipcast(args: string[], preload?: string, env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  const argv = [...NODE.slice(1), ...(preload ? ['--import', preload] : []), BIN, ...args];
  try {
    const { stdout, stderr } = await pexec(NODE[0]!, argv, { env, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number | string; stdout: string; stderr: string };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const HEAD = 'bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }\n';

/** A config with a listening port (up, both port forms), a closed one (down), exec checks (up and down). */
async function setup(t: { teardown(fn: () => unknown): void; testdir(): string }): Promise<{ file: string; open: number; closed: number }> {
  const open = await freePort();
  await serve(t, open);
  const closed = await freePort();
  const file = join(t.testdir(), 'vipcast.yaml');
  writeFileSync(file, `${HEAD}apps:
  - name: web
    vip: 198.18.124.10/32
    monitors: ["port:tcp:${open}", { type: port, host: 127.0.0.1, port: ${open} }, "exec:/bin/sh -c 'echo ready; exit 0'"]
  - name: db
    vip: 198.18.124.11/32
    monitors: ["port:tcp:${closed}", "exec:/bin/sh -c 'echo no replica >&2; exit 3'"]
`);
  return { file, open, closed };
}

t.test('vipcast check runs every monitor once: a table of app, monitor, up/down, ms and reason; exit 1 when one is down', async (t) => {
  const { file, open, closed } = await setup(t);
  const r = await vipcast(['check', '-c', file]);
  t.equal(r.code, 1, `exit 1: db is down (stderr: ${r.stderr})`);
  const lines = r.stdout.trimEnd().split('\n');
  t.match(lines[0], /^APP\s+MONITOR\s+RESULT\s+MS\s+REASON$/, 'header');
  const row = (app: string, monitor: string): string[] | undefined => lines.find((l) => l.startsWith(`${app} `) && l.includes(` ${monitor} `))?.split(/\s{2,}/);
  const cases: Array<[string, string, 'up' | 'down', RegExp]> = [
    ['web', `port:tcp:${open}`, 'up', new RegExp(`tcp port ${open}`)],
    ['web', `port:connect:127.0.0.1:${open}`, 'up', /127\.0\.0\.1/],
    ['web', "exec:/bin/sh -c 'echo ready; exit 0'", 'up', /ready/],
    ['db', `port:tcp:${closed}`, 'down', new RegExp(`no socket listens on tcp port ${closed}`)],
    ['db', "exec:/bin/sh -c 'echo no replica >&2; exit 3'", 'down', /exit 3.*no replica/],
  ];
  for (const [app, monitor, result, reason] of cases) {
    const cells = row(app, monitor);
    t.ok(cells, `a row for ${app} ${monitor}`);
    if (!cells) continue;
    t.equal(cells[2], result, `${monitor}: ${result}`);
    t.ok(Number(cells[3]) > 0 && Number(cells[3]) < 60_000, `${monitor}: a duration in ms (${cells[3]})`);
    t.match(cells[4], reason, `${monitor}: its reason`);
  }
  t.match(lines[lines.length - 1], /^5 checks: 3 up, 2 down \(\d+ ms\)$/, 'summary');
});

t.test('vipcast check APP runs that app only (exit 0: all up); --json gives the results', async (t) => {
  const { file, open } = await setup(t);
  const r = await vipcast(['check', '-c', file, 'web', '--json']);
  t.equal(r.code, 0, `exit 0: web is up (stderr: ${r.stderr})`);
  const report = JSON.parse(r.stdout) as { file: string; up: number; down: number; results: Array<{ app: string; monitor: string; ok: boolean; result: string; reason: string; durationMs: number }> };
  t.equal(report.file, file);
  t.same(report.results.map((x) => [x.app, x.monitor, x.result, x.ok]), [
    ['web', `port:tcp:${open}`, 'up', true],
    ['web', `port:connect:127.0.0.1:${open}`, 'up', true],
    ['web', "exec:/bin/sh -c 'echo ready; exit 0'", 'up', true],
  ], 'web\'s monitors only, in config order');
  t.ok(report.results.every((x) => typeof x.durationMs === 'number' && x.durationMs > 0 && typeof x.reason === 'string'), 'each with its duration and reason');
  t.equal(report.up, 3);
  t.equal(report.down, 0);

  const db = await vipcast(['check', '-c', file, 'db']);
  t.equal(db.code, 1, 'db alone: exit 1');
  t.notMatch(db.stdout, /^web /m, 'no web row');
});

t.test('vipcast check: an invalid config, an unknown app or a usage error is exit 2 with the problem', async (t) => {
  const dir = t.testdir();
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, `${HEAD}apps:\n  - { name: web, vip: 198.18.124.20/32, monitors: ["port:tcp:99999"] }\n`);
  const r = await vipcast(['check', '-c', bad]);
  t.equal(r.code, 2);
  t.match(r.stderr, /apps\[0\]\.monitors\[0\]/, 'names the key path');
  t.equal(r.stdout, '', 'no table');
  const { file } = await setup(t);
  const unknown = await vipcast(['check', '-c', file, 'nope']);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /has no app "nope" \(apps: web, db\)/);
  const usage = await vipcast(['check', '-c', file, 'web', 'db']);
  t.equal(usage.code, 2);
  t.match(usage.stderr, /at most one app name/);
  const noFile = await vipcast(['check']);
  t.equal(noFile.code, 2);
  t.match(noFile.stderr, /check needs a config file: -c FILE/);
  const help = await vipcast(['--help']);
  t.match(help.stdout, /vipcast check -c FILE \[APP\] \[--json\]/, '--help lists check');
  t.match(help.stdout, /"plugins:" key lists npm packages/, '--help says what plugins: is');
});

t.test('vipcast check needs no daemon and touches nothing: no VIP on the host, no router, API or DI container loaded', async (t) => {
  const { file } = await setup(t);
  const dir = dirname(file);
  const preload = join(dir, 'record.mjs');
  const out = join(dir, 'modules.json');
  // Packages from node_modules loaded by the time the process exits (CommonJS cache: all of these are CommonJS).
  writeFileSync(preload, `
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
const cache = createRequire(import.meta.url).cache;
process.on('exit', () => writeFileSync(process.env.RECORD_OUT, JSON.stringify([...new Set(Object.keys(cache).map((k) => (/node_modules\\/((@[^/]+\\/)?[^/]+)/.exec(k) || [])[1]).filter(Boolean))])));
`);
  const r = await vipcast(['check', '-c', file], preload, { ...process.env, RECORD_OUT: out });
  t.equal(r.code, 1, `ran (db down; stderr: ${r.stderr})`);
  const loaded = JSON.parse(readFileSync(out, 'utf8')) as string[];
  t.ok(loaded.includes('piscina') && loaded.includes('yaml'), 'the recorder works: the config parser and the check pool loaded');
  for (const pkg of ['fastify', '@grpc/grpc-js', 'tsyringe', 'prom-client']) t.notOk(loaded.includes(pkg), `${pkg} not loaded`);
  const addrs = (await pexec('ip', ['-o', 'addr', 'show'])).stdout;
  t.notMatch(addrs, /198\.18\.124\.1[01]\//, 'the VIPs were not put on the host');
});

t.test('vipcast check runs a third-party plugin\'s checks on a worker of their own: a check that spins its thread does not hold up a built-in check', async (t) => {
  const open = await freePort();
  await serve(t, open);
  const dir = t.testdir();
  const pkg = join(dir, 'node_modules', 'vipcast-monitor-spin');
  mkdirSync(pkg, { recursive: true });
  writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: 'vipcast-monitor-spin', version: '1.0.0', main: 'index.js' }));
  writeFileSync(join(pkg, 'index.js'), `module.exports = { kind: 'monitor', name: 'spin', version: '1.0.0', apiVersion: '^1.0.0', workerModule: './check.js',
  parse: () => ({ params: {}, text: '' }) };\n`);
  writeFileSync(join(pkg, 'check.js'), 'exports.check = async () => { for (;;) {} };\n');
  const file = join(dir, 'vipcast.yaml');
  // One worker for the built-in checks: were the spinning check on it, the port check would wait for the watchdog.
  writeFileSync(file, `${HEAD}agent: { check_workers: 1 }
plugins: [vipcast-monitor-spin]
apps:
  - { name: spin, vip: 198.18.124.30/32, check_timeout: 1s, monitors: ["spin"] }
  - { name: web, vip: 198.18.124.31/32, check_timeout: 1s, monitors: ["port:tcp:${open}"] }
`);
  const r = await vipcast(['check', '-c', file, '--json']);
  t.equal(r.code, 1, `exit 1: spin is down (stderr: ${r.stderr})`);
  const report = JSON.parse(r.stdout) as { results: Array<{ app: string; ok: boolean; reason: string; durationMs: number }> };
  const spin = report.results.find((x) => x.app === 'spin')!;
  const web = report.results.find((x) => x.app === 'web')!;
  t.equal(spin.ok, false);
  t.match(spin.reason, /blocked its worker|timed out/, `spin: ${spin.reason}`);
  t.equal(web.ok, true, `web: ${web.reason}`);
  t.ok(web.durationMs + 1000 < spin.durationMs, `the port check answered on its own (${web.durationMs} ms) while the spinning one waited for the watchdog (${spin.durationMs} ms)`);
});
