/**
 * The HTTP registrations file (issue 10, item 3) on real temp files: atomic writes (0600, no temp file left, a reader
 * of the old file never sees half of the new), coalesced writes whose last one equals the registry, a corrupt or
 * unreadable file kept aside, entries the config in force refuses dropped with their reason, failed writes retried,
 * no secret in the file.
 */
import t from 'tap';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, openSync, readSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfigText } from '../src/core/config.js';
import { AppRegistry } from '../src/core/registry.js';
import { appFromRegistration } from '../src/core/registration.js';
import { consulSettings } from '../src/core/config.js';
import { RegistrationStore, registrationParams, type RegistrationParams, type RegistrationsFile } from '../src/core/registration-store.js';
import type { VipcastConfig } from '../src/core/config-types.js';
import { makeApp } from './helpers/apps.js';
import { captureLog } from './helpers/log.js';

const TOKEN = 'consul-secret-token-0123456789';

const capture = captureLog;

function config(dir: string, agent = ''): VipcastConfig {
  return parseConfigText(`
agent:
  consul_addr: http://127.0.0.1:8500/v1
  consul_token: ${TOKEN}
  allowed_prefixes: [198.18.0.0/15]
${agent}
routing: { plugin: dry-run }
apps:
  - { name: cfg, vip: 198.18.50.1/32 }
`, join(dir, 'vipcast.yaml'), { env: {} });
}

/** A registry with the config's apps, a store on `file`, and the builder /register uses. */
function setup(dir: string, file: string, opts: { agent?: string; retryMs?: number } = {}) {
  const cfg = config(dir, opts.agent);
  const registry = new AppRegistry({ policy: () => cfg.agent.prefixPolicy });
  registry.replaceSource('config', cfg.apps);
  const { log, lines } = capture();
  const store = new RegistrationStore({ file: () => file, log, ...(opts.retryMs ? { retryMs: opts.retryMs } : {}) });
  const build = (p: RegistrationParams | Record<string, unknown>) => appFromRegistration(p, 'http', cfg.agent, cfg.monitors, consulSettings(cfg.agent, {}));
  return { cfg, registry, store, build, lines };
}

function readJson(file: string): RegistrationsFile {
  return JSON.parse(readFileSync(file, 'utf8')) as RegistrationsFile;
}

const names = (f: RegistrationsFile) => f.registrations.map((r) => r.name);

t.test('what is stored registers the same app again (every monitor form HTTP takes); never a monitor\'s params (the Consul token)', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'state', 'registrations.json');
  const { registry, store, build } = setup(dir, file);
  await store.restore(registry, build);
  const inputs = [
    { name: 'dns', vip: ['198.18.60.53/32', '198.18.60.54/32'], monitor: ['port:tcp:53', 'port:udp:53'], nat: ['udp:53:8053'], vip_communities: '65001:53,65001:1:2' },
    { name: 'web', vip: '198.18.60.80/32', monitor: 'http:http://127.0.0.1:8080/health' },
    { name: 'svc', vip: '198.18.60.90/32', monitor: 'consul' },
  ];
  for (const q of inputs) registry.upsert(build(q));
  await store.flush();
  const text = readFileSync(file, 'utf8');
  t.notMatch(text, TOKEN, 'the consul monitor\'s token is not in the file');
  const saved = JSON.parse(text) as RegistrationsFile;
  t.equal(saved.version, 1);
  t.same(names(saved), ['dns', 'svc', 'web'], 'HTTP apps only (not the config app), sorted by name');
  t.same(saved.registrations[0], { name: 'dns', vip: ['198.18.60.53/32', '198.18.60.54/32'], monitor: ['port:tcp:53', 'port:udp:53'], nat: ['udp:53:8053'], vip_communities: ['65001:53', '65001:1:2'] });
  for (const p of saved.registrations) {
    const again = build(p);
    t.same(registrationParams(again), p, `${p.name}: registering the stored parameters again gives the same app`);
    const now = registry.get(p.name)!;
    t.same([again.vips, again.monitors.map((m) => [m.text, m.params]), again.nats, again.communities], [now.vips, now.monitors.map((m) => [m.text, m.params]), now.nats, now.communities], `${p.name}: same VIPs, monitors (params included), NAT, communities`);
  }
});

t.test('atomic write: file 0600, folder made 0700, no temp file left; a reader of the old file still reads it whole', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'new-dir', 'registrations.json');
  const { registry, store, build } = setup(dir, file);
  await store.restore(registry, build);
  registry.upsert(build({ name: 'a', vip: '198.18.61.1/32' }));
  await store.flush();
  t.equal(statSync(file).mode & 0o777, 0o600, 'file mode 0600');
  t.equal(statSync(join(dir, 'new-dir')).mode & 0o777, 0o700, 'the folder vipcast created is 0700');
  const oldText = readFileSync(file, 'utf8');
  const fd = openSync(file, 'r');
  t.teardown(() => closeSync(fd));
  const inode = statSync(file).ino;
  for (let i = 0; i < 50; i++) registry.upsert(build({ name: `b${i}`, vip: `198.18.62.${i}/32` }));
  await store.flush();
  t.not(statSync(file).ino, inode, 'the new content is a new file renamed over the old one (never rewritten in place)');
  const buf = Buffer.alloc(64 * 1024);
  const n = readSync(fd, buf, 0, buf.length, 0);
  t.equal(buf.subarray(0, n).toString(), oldText, 'the old file, still open, is whole and unchanged');
  t.equal(readJson(file).registrations.length, 51);
  t.same(readdirSync(join(dir, 'new-dir')), ['registrations.json'], 'no temp file left');
});

t.test('coalesced: 1,000 registrations in a burst and 1,000 one per turn take a few writes; the last file equals the registry', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'registrations.json');
  const { registry, store, build } = setup(dir, file);
  await store.restore(registry, build);
  // In one turn (as a reload's refresh does).
  for (let i = 0; i < 1000; i++) registry.upsert(build({ name: `s${i}`, vip: `198.18.${70 + (i >> 8)}.${i & 255}/32` }));
  await store.flush();
  t.equal(store.writes, 1, 'one turn of 1,000 changes: one write');
  t.equal(readJson(file).registrations.length, 1000);
  // One per turn of the event loop (as HTTP requests arrive), with changes and removals mixed in.
  const before = store.writes;
  const started = performance.now();
  for (let i = 0; i < 1000; i++) {
    if (i % 3 === 0) registry.remove(`s${i}`);
    else if (i % 3 === 1) registry.upsert(build({ name: `s${i}`, vip: `198.18.${70 + (i >> 8)}.${i & 255}/32`, nat: 'tcp:80:8080' }));
    else registry.upsert(build({ name: `t${i}`, vip: `198.18.${80 + (i >> 8)}.${i & 255}/32` }));
    await new Promise((r) => setImmediate(r));
  }
  const burstMs = performance.now() - started;
  await store.flush();
  const writes = store.writes - before;
  t.ok(writes >= 1 && writes < 1000, `1,000 changes one per turn took ${writes} writes in ${Math.round(burstMs)} ms, not 1,000`);
  t.comment(`1,000 changes one per turn: ${writes} writes, ${Math.round(burstMs)} ms`);
  const want = registry.all().filter((a) => a.source === 'http').map(registrationParams).sort((a, b) => (a.name < b.name ? -1 : 1));
  t.same(readJson(file).registrations, want, 'the file equals the HTTP apps in memory');
  t.equal(want.length, 1000 - 334 + 333);
  t.notOk(store.status().pending, 'nothing pending');
});

t.test('only HTTP apps count: changes of config, Consul or plugin apps write nothing', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'registrations.json');
  const { registry, store, build } = setup(dir, file);
  await store.restore(registry, build);
  registry.upsert(makeApp('c1', { vips: ['198.18.63.1/32'], source: 'consul' }));
  registry.replaceSource('config', []);
  await store.flush();
  t.equal(store.writes, 0);
  t.notOk(existsSync(file));
});

t.test('restore: entries the config in force refuses are logged with the app and the reason and dropped from the file; config apps win', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'registrations.json');
  const entries = [
    { name: 'ok', vip: ['198.18.64.1/32'], monitor: ['port:tcp:53'], nat: ['tcp:80:8080'], vip_communities: ['65001:7'] },
    { name: 'outside', vip: ['203.0.113.0/24'], monitor: [], nat: [], vip_communities: [] },
    { name: 'cfg', vip: ['198.18.64.2/32'], monitor: [], nat: [], vip_communities: [] },
    { name: 'takes-cfg-vip', vip: ['198.18.50.1/32'], monitor: [], nat: [], vip_communities: [] },
    { name: 'runs', vip: ['198.18.64.3/32'], monitor: ['exec:/bin/true'], nat: [], vip_communities: [] },
    { name: 'ok', vip: ['198.18.64.9/32'], monitor: [], nat: [], vip_communities: [] },
  ];
  writeFileSync(file, JSON.stringify({ version: 1, saved_at: new Date().toISOString(), registrations: entries }));
  const { registry, store, build, lines } = setup(dir, file);
  const r = await store.restore(registry, build);
  t.same(r.restored, ['ok']);
  const reasons = Object.fromEntries(r.dropped.map((d) => [d.name, d.reason]));
  t.match(reasons.outside, /vip: 203\.0\.113\.0\/24 is refused.*agent\.allowed_prefixes/, 'outside the allowlist: the policy rule');
  t.match(reasons.cfg, /comes from config/, 'a config app of that name wins');
  t.match(reasons['takes-cfg-vip'], /VIP 198\.18\.50\.1\/32 already belongs to app "cfg"/);
  t.match(reasons.runs, /monitor\[0\].*run commands/);
  t.match(reasons.ok, /twice/);
  for (const name of ['outside', 'cfg', 'takes-cfg-vip', 'runs']) {
    const line = lines.find((l) => l.app === name && l.level === 50);
    t.ok(line, `${name}: an error line names the app`);
    t.match(String(line?.msg), /HTTP registration not restored: /);
    t.same((line?.registration as RegistrationParams | undefined)?.name, name, `${name}: the line carries its parameters (to register it again by hand)`);
  }
  t.equal(registry.get('ok')?.source, 'http');
  t.equal(registry.get('cfg')?.source, 'config');
  t.equal(registry.get('outside'), undefined);
  t.ok(store.isRestored('ok'));
  await store.flush();
  t.same(names(readJson(file)), ['ok'], 'the file drops what was not restored');
  t.same(readJson(file).registrations[0], entries[0]);
});

t.test('restore: a missing file is normal (nothing logged as an error, nothing written)', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'registrations.json');
  const { registry, store, build, lines } = setup(dir, file);
  const r = await store.restore(registry, build);
  t.same(r, { restored: [], dropped: [] });
  await store.flush();
  t.notOk(existsSync(file));
  t.notOk(lines.some((l) => (l.level as number) >= 40));
});

t.test('restore: a corrupt file (not JSON, not ours, another version) is kept aside; vipcast starts with none and writes a fresh one', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['not JSON', '{"version":1,"registrations":[{"name":"a"', /not JSON/],
    ['not ours', '{"vips":[]}', /not a vipcast registrations file/],
    ['another version', '{"version":2,"registrations":[]}', /version 2 is not 1/],
    ['empty', '', /not JSON/],
  ];
  for (const [what, text, reason] of cases) {
    const dir = t.testdir();
    const file = join(dir, 'registrations.json');
    writeFileSync(file, text);
    const { registry, store, build, lines } = setup(dir, file);
    const r = await store.restore(registry, build);
    t.same(r.restored, [], `${what}: nothing restored`);
    t.ok(r.keptAs && r.keptAs.startsWith(`${file}.corrupt-`), `${what}: kept aside as ${r.keptAs}`);
    t.equal(readFileSync(r.keptAs!, 'utf8'), text, `${what}: the kept file is the corrupt one, unchanged`);
    const line = lines.find((l) => l.level === 50 && /kept aside/.test(String(l.msg)));
    t.match(String(line?.msg), reason, `${what}: the log says why`);
    registry.upsert(build({ name: 'a', vip: '198.18.65.1/32' }));
    await store.flush();
    t.same(names(readJson(file)), ['a'], `${what}: a fresh file follows the registry`);
  }
});

t.test('restore: an unreadable file (a directory in its place) is kept aside, never a crash', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'registrations.json');
  mkdirSync(file);
  const { registry, store, build } = setup(dir, file);
  const r = await store.restore(registry, build);
  t.same(r.restored, []);
  t.ok(r.keptAs && statSync(r.keptAs).isDirectory(), 'the directory was moved aside');
  registry.upsert(build({ name: 'a', vip: '198.18.65.2/32' }));
  await store.flush();
  t.same(names(readJson(file)), ['a']);
});

t.test('restore: malformed entries are dropped with their index, the others restored, and a copy of the file kept', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'registrations.json');
  const text = JSON.stringify({ version: 1, registrations: [{ name: 'good', vip: ['198.18.66.1/32'] }, { name: 'bad', vip: '198.18.66.2/32' }, 7, { vip: ['198.18.66.3/32'] }] });
  writeFileSync(file, text);
  const { registry, store, build } = setup(dir, file);
  const r = await store.restore(registry, build);
  t.same(r.restored, ['good']);
  t.same(r.dropped.map((d) => d.reason), ['registrations[1]: vip: not a list of strings', 'registrations[2]: not an object', 'registrations[3]: no name']);
  t.equal(readFileSync(r.keptAs!, 'utf8'), text, 'a copy of the file as it was');
  await store.flush();
  t.same(names(readJson(file)), ['good']);
});

t.test('a failed write is logged once, shown in status, retried, and the file catches up with the registry', async (t) => {
  const dir = t.testdir();
  const blocker = join(dir, 'blocker');
  writeFileSync(blocker, 'a file where the folder should be');
  const file = join(blocker, 'registrations.json');
  const { registry, store, build, lines } = setup(dir, file, { retryMs: 50 });
  await store.restore(registry, build);
  registry.upsert(build({ name: 'a', vip: '198.18.67.1/32' }));
  await store.flush();
  t.ok(store.status().error, `status says the write failed: ${store.status().error}`);
  t.ok(store.status().pending, 'and that a change is pending');
  registry.upsert(build({ name: 'b', vip: '198.18.67.2/32' }));
  await new Promise((r) => setTimeout(r, 300));
  t.equal(lines.filter((l) => /could not write the registrations file/.test(String(l.msg))).length, 1, 'logged once, not at every retry');
  rmSync(blocker);
  const deadline = Date.now() + 10_000;
  while (!existsSync(file) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  await store.flush();
  t.same(names(readJson(file)), ['a', 'b'], 'a retry wrote the registry as it is now');
  t.equal(store.status().error, undefined);
  t.ok(lines.some((l) => /registrations file written again/.test(String(l.msg))));
  await store.close();
});

t.test('agent.registrations_file moved by a reload: the set is written to the new file at once; "" stops writing', async (t) => {
  const dir = t.testdir();
  let file = join(dir, 'one.json');
  const cfg = config(dir);
  const registry = new AppRegistry({ policy: () => cfg.agent.prefixPolicy });
  const { log } = capture();
  const store = new RegistrationStore({ file: () => file, log });
  await store.restore(registry, (p) => appFromRegistration(p, 'http', cfg.agent, cfg.monitors));
  registry.upsert(appFromRegistration({ name: 'a', vip: '198.18.68.1/32' }, 'http', cfg.agent, cfg.monitors));
  await store.flush();
  file = join(dir, 'two.json');
  store.configChanged();
  await store.flush();
  t.same(names(readJson(file)), ['a'], 'the new file holds the set');
  t.same(names(readJson(join(dir, 'one.json'))), ['a'], 'the old file is left as it was');
  file = '';
  store.configChanged();
  registry.remove('a');
  await store.flush();
  t.same(names(readJson(join(dir, 'two.json'))), ['a'], 'with "" nothing is written');
  await store.close();
  registry.upsert(appFromRegistration({ name: 'b', vip: '198.18.68.2/32' }, 'http', cfg.agent, cfg.monitors));
  t.notOk(store.status().pending, 'after close() nothing is scheduled');
});

t.test('agent.registrations_file: default under /var/lib, none in a dry run unless set, relative to the config file', async (t) => {
  const dir = t.testdir();
  const parse = (agent: string, plugin = 'dry-run') => parseConfigText(`agent:\n${agent}\nrouting: { plugin: ${plugin} }\nbgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }\n`, join(dir, 'v.yaml'), { env: {} }).agent.registrationsFile;
  t.equal(parse('  rise: 1', 'gobgp'), '/var/lib/vipcast/registrations.json');
  t.equal(parse('  rise: 1'), '', 'dry-run: not kept unless set');
  t.equal(parse('  registrations_file: r/regs.json'), join(dir, 'r/regs.json'));
  t.equal(parse('  registrations_file: ""', 'gobgp'), '');
  t.throws(() => parse('  registrations_file: 5'), /agent\.registrations_file/);
});
