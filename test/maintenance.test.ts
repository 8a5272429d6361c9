/**
 * The maintenance state (issue 10, item 4) on its own: on/off per app and host-wide, the hold it gives the reconciler
 * (drained only when the app was announced), the files polled with real temp files, the state file's round trip
 * (atomic, 0600) and a corrupt file kept aside.
 */
import t, { type Test } from 'tap';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ALL_APPS, Maintenance, type MaintenanceOptions } from '../src/core/maintenance.js';
import { makeApp } from './helpers/apps.js';
import { captureLog } from './helpers/log.js';

const capture = captureLog;

interface Setup { m: Maintenance; changes: () => number; lines: Array<Record<string, unknown>>; announced: Set<string> }

function setup(t: Test, opts: Partial<MaintenanceOptions> & { drain?: number } = {}): Setup {
  const { log, lines } = capture();
  let changes = 0;
  const announced = new Set<string>();
  const m = new Maintenance({
    stateFile: () => '', hostFile: () => '', dir: () => '', drainMs: () => opts.drain ?? 0, announced: () => announced,
    onChange: () => void changes++, log, pollMs: 50, ...opts,
  });
  t.teardown(() => m.close());
  return { m, changes: () => changes, lines, announced };
}

async function until(fn: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const web = makeApp('web', { vips: ['198.18.40.1/32'] });
const db = makeApp('db', { vips: ['198.18.40.2/32'] });

t.test('on/off per app: held with the reason naming who and since; off lifts it; each change asks for a pass', async (t) => {
  const s = setup(t);
  t.equal(s.m.hold(web), undefined, 'nothing held at first');
  await s.m.set('web', true, 'cli', 'uid 0');
  const h = s.m.hold(web)!;
  t.match(h.reason, /^maintenance \(cli, uid 0, since \d{4}-\d\d-\d\dT.*Z\)$/);
  t.equal(h.drainUntil, undefined, 'no drain configured: withdrawn at once');
  t.equal(s.m.hold(db), undefined, 'another app is not held');
  t.equal(s.changes(), 1);
  t.match(s.m.view('web'), { by: 'cli', caller: 'uid 0' });
  const since = s.m.view('web')!.since;
  await s.m.set('web', true, 'api');
  t.equal(s.m.view('web')!.since, since, 'a second on keeps the first one\'s time and author');
  t.equal(s.changes(), 1, 'and changes nothing');
  await s.m.set('web', false, 'api');
  t.equal(s.m.hold(web), undefined, 'off lifts it');
  t.equal(s.changes(), 2);
  t.ok(s.lines.some((l) => l.msg === 'maintenance on: web by cli (uid 0)'), 'logged');
});

t.test('host-wide: every app (those added later too) until off; an app\'s own maintenance outlives it', async (t) => {
  const s = setup(t);
  await s.m.set('db', true, 'api');
  await s.m.set(ALL_APPS, true, 'api', 'the unix socket');
  t.match(s.m.hold(web)!.reason, /^maintenance \(host-wide, api, the unix socket, since /);
  t.match(s.m.hold(makeApp('later'))!.reason, /host-wide/, 'an app it never saw is held too');
  t.match(s.m.view('web'), { host_wide: true, by: 'api' });
  t.match(s.m.hold(db)!.reason, /^maintenance \(api, since/, 'db shows its own maintenance first');
  t.match(s.m.host, { by: 'api', caller: 'the unix socket' });
  await s.m.set(ALL_APPS, false, 'cli');
  t.equal(s.m.hold(web), undefined, 'host-wide off: released');
  t.ok(s.m.hold(db), 'db keeps its own');
  t.equal(s.m.host, undefined);
});

t.test('a drain only for apps announced when they enter maintenance; it ends when they leave it', async (t) => {
  const s = setup(t, { drain: 3000 });
  s.announced.add('web');
  const before = Date.now();
  await s.m.set(ALL_APPS, true, 'api');
  const w = s.m.hold(web)!;
  t.ok(w.drainUntil !== undefined && w.drainUntil >= before + 3000 && w.drainUntil <= Date.now() + 3000, 'announced web: drained for shutdown_drain');
  t.equal(s.m.hold(db)!.drainUntil, undefined, 'db was not announced: never announced, not even drained');
  // web's drain is its first one: a later change does not restart it.
  await new Promise((r) => setTimeout(r, 20));
  await s.m.set('web', true, 'api');
  t.equal(s.m.hold(web)!.drainUntil, w.drainUntil, 'the drain is not restarted while web stays in maintenance');
  await s.m.set('web', false, 'api');
  await s.m.set(ALL_APPS, false, 'api');
  await s.m.set('web', true, 'api');
  t.not(s.m.hold(web)!.drainUntil, w.drainUntil, 'a new maintenance drains afresh');
});

t.test('files: the host-wide file and a file per app in the folder put apps in maintenance within ~1 s and take them out when removed (folder created later)', async (t) => {
  const dir = t.testdir();
  const hostFile = join(dir, 'etc', 'maintenance');
  const appDir = join(dir, 'etc', 'maintenance.d');
  const s = setup(t, { hostFile: () => hostFile, dir: () => appDir, pollMs: 1000 });
  await s.m.start();
  t.equal(s.m.hold(web), undefined);
  mkdirSync(appDir, { recursive: true }); // neither folder existed when polling began
  writeFileSync(join(appDir, 'web'), '');
  writeFileSync(join(appDir, '.web.swp'), '');
  let at = Date.now();
  await until(() => s.m.hold(web) !== undefined, 3000, 'web in maintenance by file');
  const onMs = Date.now() - at;
  t.ok(onMs < 2500, `web in maintenance ${onMs} ms after its file appeared`);
  t.match(s.m.hold(web)!.reason, `maintenance (file ${join(appDir, 'web')}, since `);
  t.equal(s.m.hold(db), undefined, 'db has no file');
  t.same(s.m.names(), ['web'], 'hidden files are not app names');
  t.match(s.m.list().apps.web, { file: { by: 'file', file: join(appDir, 'web') } });
  writeFileSync(hostFile, '');
  await until(() => s.m.hold(db) !== undefined, 3000, 'host-wide by file');
  t.match(s.m.hold(db)!.reason, `maintenance (host-wide, file ${hostFile}, since `);
  t.match(s.m.host, { by: 'file', file: hostFile });
  rmSync(hostFile);
  rmSync(join(appDir, 'web'));
  at = Date.now();
  await until(() => s.m.hold(web) === undefined && s.m.hold(db) === undefined, 3000, 'both files gone: released');
  t.ok(Date.now() - at < 2500, `released ${Date.now() - at} ms after the files were removed`);
  t.ok(s.lines.some((l) => l.msg === `maintenance on: web: ${join(appDir, 'web')} exists`));
  t.ok(s.lines.some((l) => l.msg === `maintenance off: every app (host-wide): ${hostFile} is gone`));
});

t.test('a file present at start holds its app before the first pass (start() has looked)', async (t) => {
  const dir = t.testdir({ 'web': '' });
  const s = setup(t, { dir: () => dir, pollMs: 60_000 });
  await s.m.start();
  t.ok(s.m.hold(web), 'held as soon as start() resolves');
});

t.test('an off by the API leaves a file\'s maintenance in force', async (t) => {
  const dir = t.testdir({ 'web': '' });
  const s = setup(t, { dir: () => dir });
  await s.m.start();
  await s.m.set('web', true, 'api');
  await s.m.set('web', false, 'api');
  t.match(s.m.hold(web)!.reason, /file/, 'still held by its file');
});

t.test('the state file: API/CLI state saved atomically (0600, no temp file left), restored by a new instance; files are not saved', async (t) => {
  const dir = t.testdir({ 'maint.d': { 'db': '' } });
  const file = join(dir, 'lib', 'vipcast', 'maintenance.json');
  const a = setup(t, { stateFile: () => file, dir: () => join(dir, 'maint.d') });
  await a.m.start();
  await a.m.set('web', true, 'cli', 'uid 1000');
  await a.m.set(ALL_APPS, true, 'api');
  t.equal(statSync(file).mode & 0o777, 0o600, 'mode 0600');
  t.same(readdirSync(join(dir, 'lib', 'vipcast')), ['maintenance.json'], 'no temp file left beside it');
  const saved = JSON.parse(readFileSync(file, 'utf8')) as { version: number; host: { by: string }; apps: Record<string, { by: string; caller: string }> };
  t.equal(saved.version, 1);
  t.same(Object.keys(saved.apps), ['web'], 'db (by file) is not saved');
  t.match(saved.apps.web, { by: 'cli', caller: 'uid 1000' });
  t.match(saved.host, { by: 'api' });
  const since = a.m.view('web')!.since;
  a.m.close();

  const b = setup(t, { stateFile: () => file });
  await b.m.start();
  t.match(b.m.view('web'), { by: 'cli', caller: 'uid 1000', since }, 'web restored with its author and time');
  t.match(b.m.host, { by: 'api' }, 'host-wide restored');
  t.equal(b.m.hold(db)!.drainUntil, undefined, 'a restored maintenance is never drained (nothing is announced at start)');
  t.ok(b.lines.some((l) => l.msg === 'maintenance restored from the state file'));
  await b.m.set('web', false, 'api');
  await b.m.set(ALL_APPS, false, 'api');
  t.same(JSON.parse(readFileSync(file, 'utf8')), { version: 1, saved_at: JSON.parse(readFileSync(file, 'utf8')).saved_at, host: null, apps: {} }, 'off is saved too');
});

t.test('a corrupt state file is kept aside as <file>.corrupt-<time> and logged; the start goes on with nothing in maintenance', async (t) => {
  const bad = ['{"version":1,"host":null,"apps":{"web":{"since":"x","by":"api"}}}', 'not json {', '{"version":2,"host":null,"apps":{}}', '{"version":1,"host":null,"apps":{"../etc":{"since":"2026-01-01T00:00:00Z","by":"api"}}}'];
  for (const text of bad) {
    const dir = t.testdir({ 'maintenance.json': text });
    const file = join(dir, 'maintenance.json');
    const s = setup(t, { stateFile: () => file });
    await s.m.start();
    t.equal(s.m.hold(web), undefined, `${text}: nothing in maintenance`);
    t.notOk(existsSync(file), 'the corrupt file is not where it was');
    const kept = readdirSync(dir).filter((n) => n.startsWith('maintenance.json.corrupt-'));
    t.equal(kept.length, 1, 'kept aside');
    t.equal(readFileSync(join(dir, kept[0]!), 'utf8'), text, 'unchanged');
    t.ok(s.lines.some((l) => l.level === 50 && /maintenance state file is corrupt .*: kept as .*corrupt-/.test(String(l.msg))), 'logged as an error naming where it went');
    await s.m.set('web', true, 'api');
    t.ok(existsSync(file), 'the next change writes a good file');
  }
});

t.test('a state file that cannot be written: the change is in force, set() rejects naming the key', async (t) => {
  const dir = t.testdir({ 'afile': '' });
  const s = setup(t, { stateFile: () => join(dir, 'afile', 'maintenance.json') });
  await t.rejects(s.m.set('web', true, 'api'), /agent\.maintenance_state_file: .*afile\/maintenance\.json could not be written/);
  t.ok(s.m.hold(web), 'web is in maintenance anyway');
});
