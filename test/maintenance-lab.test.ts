/**
 * Maintenance (issue 10, item 4) end to end: a real `vipcast run` in a namespace with a real gobgpd, BIRD as the peer
 * router. On and off through the API, the CLI (`vipcast maintenance`) and files; host-wide; drained with 65535:0 first
 * when agent.shutdown_drain is set; kept across a SIGHUP reload (also one that removes the app and adds it back) and
 * across a restart, during which the app is never announced. The API is on a unix socket in the test's folder, so the
 * CLI and the test reach it from outside the namespace.
 */
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { labSkip, waitFor } from './lab/netns.js';
import { stackFor, type Stack } from './lab/stack.js';
import { hasVip } from './lab/traffic.js';
import { BIN, type DaemonProcess } from './helpers/daemon.js';
import { apiRequest } from '../src/status-command.js';

const skip = labSkip(['gobgpd', 'bird', 'birdc']);
const pexec = promisify(execFile);
type Failed = { code: number; stdout: string; stderr: string };
const vipcast = (args: string[]) => pexec(process.execPath, [BIN, ...args]).then((r) => ({ code: 0, ...r }), (e: Failed) => e);

const WEB = '198.18.232.1/32';
const DB = '198.18.232.2/32';

interface Lab { s: Stack; api: string; file: string; maintDir: string; hostFile: string; stateFile: string; yaml: (apps: string, extra?: string) => string }

async function lab(t: Test): Promise<Lab> {
  const s = await stackFor(t);
  const api = `unix:${join(s.dir, 'api.sock')}`;
  const maintDir = join(s.dir, 'maint.d'); // created by the test later: polling must find files in a folder made afterwards
  const hostFile = join(s.dir, 'maintenance');
  const stateFile = join(s.dir, 'state', 'maintenance.json');
  const yaml = (apps: string, extra = '') => `${s.baseConfig(`  maintenance_state_file: ${stateFile}\n  maintenance_dir: ${maintDir}\n  maintenance_file: ${hostFile}\n${extra}`, { listenAddr: api })}apps:\n${apps}`;
  const both = '  - { name: web, vip: 198.18.232.1/32 }\n  - { name: db, vip: 198.18.232.2/32 }\n';
  const file = s.writeConfig(yaml(both));
  return { s, api, file, maintDir, hostFile, stateFile, yaml };
}

const atBird = async (s: Stack, prefix: string): Promise<boolean> => (await s.routes(prefix)).length > 0;

async function status(api: string): Promise<{ maintenance: { host: { by: string } | null }; apps: Array<{ name: string; state: string; announced: string[]; held?: { reason: string; draining_until?: string }; maintenance?: { by: string; since: string; file?: string; caller?: string; host_wide?: boolean } }> }> {
  const r = await apiRequest(api, 'GET', '/status');
  return JSON.parse(r.body) as never;
}
const appStatus = async (api: string, name: string) => (await status(api)).apps.find((a) => a.name === name)!;
async function metric(api: string, name: string): Promise<number> {
  const r = await apiRequest(api, 'GET', '/metrics');
  const line = r.body.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? NaN : Number(line.split(' ')[1]);
}

async function started(l: Lab, d: DaemonProcess): Promise<void> {
  await waitFor(async () => (await atBird(l.s, WEB)) && (await atBird(l.s, DB)), 20_000, 'web and db at BIRD');
  await d.waitLine((x) => x.msg === 'HTTP API listening', 10_000, 'the API');
}

t.test('maintenance by API, CLI and file, per app and host-wide: the route leaves BIRD (address kept), /status and /metrics say so, off brings it back', { skip, timeout: 180_000 }, async (t) => {
  const l = await lab(t);
  const d = l.s.startVipcast(l.file);
  await started(l, d);
  t.equal(await metric(l.api, 'vipcast_apps_in_maintenance'), 0);

  // API
  const on = await apiRequest(l.api, 'POST', '/maintenance?app=web&state=on');
  t.equal(on.code, 200, on.body);
  t.match(JSON.parse(on.body), { app: 'web', state: 'on', maintenance: { by: 'api', caller: 'the unix socket' } });
  await waitFor(async () => !(await atBird(l.s, WEB)), 10_000, 'web withdrawn at BIRD');
  t.ok(await atBird(l.s, DB), 'db stays announced');
  t.ok(await hasVip(l.s.node, '198.18.232.1'), 'web\'s address stays on lo (the service is still there)');
  const web = await appStatus(l.api, 'web');
  t.equal(web.state, 'up', '/status: the checks still say up');
  t.match(web.held?.reason, /^maintenance \(api, the unix socket, since /, '/status: held, with the reason');
  t.match(web.maintenance, { by: 'api', caller: 'the unix socket' }, '/status: maintenance by api');
  t.same(web.announced, []);
  t.equal(await metric(l.api, 'vipcast_apps_in_maintenance'), 1, '/metrics: one app in maintenance');
  t.ok(d.lines.some((x) => x.event === 'route' && x.action === 'withdraw' && x.prefix === WEB && /^held down: maintenance/.test(String(x.reason))), 'the withdraw is logged with its reason');
  t.equal((await apiRequest(l.api, 'POST', '/maintenance?app=web&state=off')).code, 200);
  await waitFor(() => atBird(l.s, WEB), 10_000, 'web back at BIRD after off by API');
  t.equal((await appStatus(l.api, 'web')).maintenance, undefined, '/status: no maintenance');

  // Bad requests name the parameter; an unknown app is a 404; both change nothing.
  for (const [query, code, re] of [
    ['app=web&state=maybe', 400, /^state: "maybe": must be "on" or "off"/], ['state=on', 400, /^app: missing/],
    ['app=a%20b&state=on', 400, /^app: "a b" is not an app name/], ['app=web&state=on&by=me', 400, /^by: /],
    ['app=nope&state=on', 404, /^app: no app "nope" is registered/],
  ] as const) {
    const r = await apiRequest(l.api, 'POST', `/maintenance?${query}`);
    t.equal(r.code, code, query);
    t.match((JSON.parse(r.body) as { error: string }).error, re, `${query}: ${r.body}`);
  }
  t.ok(await atBird(l.s, WEB), 'web still announced after the refused requests');

  // CLI
  const cliOn = await vipcast(['maintenance', 'web', 'on', '--api', l.api]);
  t.equal(cliOn.code, 0, cliOn.stderr);
  t.match(cliOn.stdout, /^web: maintenance on \(cli, the unix socket, since /);
  await waitFor(async () => !(await atBird(l.s, WEB)), 10_000, 'web withdrawn after the CLI');
  const list = await vipcast(['maintenance', '--api', l.api]);
  t.match(list.stdout, /^web\s+cli\s+\S+Z\s+the unix socket$/m, 'the list shows web by cli');
  t.match(list.stdout, /apps in maintenance now: web$/m);
  const st = await vipcast(['status', '--api', l.api]);
  t.match(st.stdout, /^web\s+config\s+up\s+-\s+held down: maintenance \(cli, /m, 'vipcast status: held down by maintenance');
  const cliOff = await vipcast(['maintenance', 'web', 'off', '--api', l.api]);
  t.equal(cliOff.code, 0, cliOff.stderr);
  await waitFor(() => atBird(l.s, WEB), 10_000, 'web back after the CLI off');

  // A file per app, in a folder that did not exist when vipcast started.
  mkdirSync(l.maintDir);
  writeFileSync(join(l.maintDir, 'web'), '');
  let at = Date.now();
  await waitFor(async () => !(await atBird(l.s, WEB)), 10_000, 'web withdrawn after its file appeared', 20);
  const fileOnMs = Date.now() - at;
  t.ok(fileOnMs < 5000, `withdrawn at BIRD ${fileOnMs} ms after the file appeared (polled once a second)`);
  t.match((await appStatus(l.api, 'web')).maintenance, { by: 'file', file: join(l.maintDir, 'web') });
  // An off by the API leaves the file's maintenance in force, and says so.
  const off = JSON.parse((await apiRequest(l.api, 'POST', '/maintenance?app=web&state=off')).body) as { note?: string };
  t.match(off.note, `still in maintenance: ${join(l.maintDir, 'web')} exists`);
  rmSync(join(l.maintDir, 'web'));
  at = Date.now();
  await waitFor(() => atBird(l.s, WEB), 10_000, 'web back after its file was removed', 20);
  t.comment(`file: withdrawn at BIRD ${fileOnMs} ms after it appeared, back ${Date.now() - at} ms after it went`);

  // Host-wide: the CLI, then the file.
  const all = await vipcast(['maintenance', '--all', 'on', '--api', l.api]);
  t.equal(all.code, 0, all.stderr);
  t.match(all.stdout, /^host-wide \(every app\): maintenance on/);
  await waitFor(async () => (await l.s.routes()).length === 0, 10_000, 'every app withdrawn (host-wide)');
  const s1 = await status(l.api);
  t.match(s1.maintenance.host, { by: 'cli' }, '/status: host-wide by cli');
  t.ok(s1.apps.every((a) => a.maintenance?.host_wide === true && a.state === 'up'), 'every app: up, held by the host-wide maintenance');
  t.equal(await metric(l.api, 'vipcast_host_maintenance'), 1);
  t.equal(await metric(l.api, 'vipcast_apps_in_maintenance'), 2);
  t.match((await vipcast(['status', '--api', l.api])).stdout, /^host-wide maintenance: ON \(cli, /m, 'vipcast status says the host is in maintenance');
  t.equal((await vipcast(['maintenance', '--all', 'off', '--api', l.api])).code, 0);
  await waitFor(async () => (await atBird(l.s, WEB)) && (await atBird(l.s, DB)), 10_000, 'both back after host-wide off');
  writeFileSync(l.hostFile, '');
  await waitFor(async () => (await l.s.routes()).length === 0, 10_000, 'every app withdrawn: the host-wide file exists');
  t.match((await status(l.api)).maintenance.host, { by: 'file' });
  rmSync(l.hostFile);
  await waitFor(async () => (await atBird(l.s, WEB)) && (await atBird(l.s, DB)), 10_000, 'both back: the host-wide file is gone');
  t.equal(await metric(l.api, 'vipcast_host_maintenance'), 0);
});

t.test('with agent.shutdown_drain the route is first re-announced with 65535:0 (seen at BIRD), withdrawn when the drain ends', { skip, timeout: 120_000 }, async (t) => {
  const l = await lab(t);
  const file = l.s.writeConfig(l.yaml('  - { name: web, vip: 198.18.232.1/32 }\n', '  shutdown_drain: 3s\n'), 'drain.yaml');
  const d = l.s.startVipcast(file);
  await waitFor(() => atBird(l.s, WEB), 20_000, 'web at BIRD');
  await d.waitLine((x) => x.msg === 'HTTP API listening', 10_000, 'the API');
  t.same((await l.s.routes(WEB))[0]!.communities, [], 'no community before');
  const on = performance.now();
  t.equal((await apiRequest(l.api, 'POST', '/maintenance?app=web&state=on')).code, 200);
  const drained = await waitFor(async () => (await l.s.routes(WEB))[0]?.communities.includes('65535:0'), 5000, 'web with 65535:0 at BIRD', 20);
  t.ok(drained, 'BIRD sees the route with GRACEFUL_SHUTDOWN 65535:0 first');
  t.match((await appStatus(l.api, 'web')).held, { reason: /^maintenance \(api/, draining_until: /Z$/ }, '/status: held, draining until');
  await waitFor(async () => !(await atBird(l.s, WEB)), 10_000, 'web withdrawn after the drain', 20);
  const gone = performance.now() - on;
  t.ok(gone >= 2500, `withdrawn ${Math.round(gone)} ms after maintenance on (the 3 s drain first)`);
  t.notOk(d.lines.some((x) => x.event === 'route' && x.action === 'withdraw' && x.prefix === WEB && (x.at - on) < 2500), 'no withdraw during the drain');
  t.equal((await apiRequest(l.api, 'POST', '/maintenance?app=web&state=off')).code, 200);
  await waitFor(async () => (await l.s.routes(WEB))[0]?.communities.length === 0, 10_000, 'web back without 65535:0');
});

t.test('kept across a SIGHUP reload (also one that removes the app and adds it back) and across a restart, which never announces it', { skip, timeout: 180_000 }, async (t) => {
  const l = await lab(t);
  const d = l.s.startVipcast(l.file);
  await started(l, d);
  t.equal((await vipcast(['maintenance', 'web', 'on', '--api', l.api])).code, 0);
  await waitFor(async () => !(await atBird(l.s, WEB)), 10_000, 'web withdrawn');

  // A reload that changes the apps (a third one) keeps web in maintenance.
  let from = d.lines.length;
  writeFileSync(l.file, l.yaml('  - { name: web, vip: 198.18.232.1/32 }\n  - { name: db, vip: 198.18.232.2/32 }\n  - { name: extra, vip: 198.18.232.3/32 }\n'));
  d.kill('SIGHUP');
  await d.waitLine((x) => x.msg === 'reload: done', 15_000, 'reload', from);
  await waitFor(() => atBird(l.s, '198.18.232.3/32'), 10_000, 'the new app announced');
  // A reload that removes web, then one that adds it back: still in maintenance (by name, daemon state).
  for (const apps of ['  - { name: db, vip: 198.18.232.2/32 }\n', '  - { name: web, vip: 198.18.232.1/32 }\n  - { name: db, vip: 198.18.232.2/32 }\n']) {
    from = d.lines.length;
    writeFileSync(l.file, l.yaml(apps));
    d.kill('SIGHUP');
    await d.waitLine((x) => x.msg === 'reload: done', 15_000, 'reload', from);
  }
  await d.waitLine((x) => x.app === 'web' && x.state === 'up', 10_000, 'web added back and checked up', from);
  await new Promise((r) => setTimeout(r, 1500));
  t.notOk(await atBird(l.s, WEB), 'web not announced after the reloads');
  t.match((await appStatus(l.api, 'web')).maintenance, { by: 'cli' }, 'still in maintenance by cli after the reloads');
  const since = d.lines.findIndex((x) => x.msg.startsWith('maintenance on: web'));
  t.ok(since > 0);
  t.notOk(d.lines.slice(since).some((x) => x.event === 'route' && x.action === 'announce' && x.prefix === WEB), 'no announce of web since maintenance on');

  // Restart: SIGTERM, then a new vipcast; BIRD watched from before the start: web never appears.
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
  await waitFor(async () => (await l.s.routes()).length === 0, 10_000, 'everything withdrawn at the stop');
  let webSeen = false;
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      if (await atBird(l.s, WEB)) webSeen = true;
      await new Promise((r) => setTimeout(r, 25));
    }
  })();
  t.teardown(() => { watching = false; });
  const d2 = l.s.startVipcast(l.file);
  await waitFor(() => atBird(l.s, DB), 20_000, 'db announced after the restart');
  await d2.waitLine((x) => x.app === 'web' && x.state === 'up', 10_000, 'web checked up after the restart');
  await new Promise((r) => setTimeout(r, 3000));
  watching = false;
  await watcher;
  t.notOk(webSeen, 'web never at BIRD after the restart (watched from before the start, every 25 ms)');
  t.notOk(d2.lines.some((x) => x.event === 'route' && x.action === 'announce' && x.prefix === WEB), 'no announce of web in the new run\'s log');
  t.ok(d2.lines.some((x) => x.msg === 'maintenance restored from the state file'), 'restored from the state file');
  t.match((await appStatus(l.api, 'web')).maintenance, { by: 'cli' }, '/status after the restart: web in maintenance by cli');
  // The restored maintenance is the only thing keeping it out: off brings it back.
  t.equal((await vipcast(['maintenance', 'web', 'off', '--api', l.api])).code, 0);
  await waitFor(() => atBird(l.s, WEB), 10_000, 'web back after off');
});
