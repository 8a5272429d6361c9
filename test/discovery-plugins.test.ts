/**
 * The discovery family as plugins (issue 11, items 2-5 for discovery): the fixture package
 * test/fixtures/plugins/vipcast-discovery-jsonfile is packed with `npm pack` and installed next to a config (no
 * dependency on vipcast), then named by `plugins:` and `discovery:`. Config rows check `discovery:` errors name their
 * key path; the real `vipcast run --dry-run` (a child process; routes read from its JSON log lines and /status) checks,
 * announces and withdraws the apps the plugin reads from its JSON file, and a reload that changes the plugin's
 * settings starts the new instance before the old one closes, withdrawing nothing.
 */
import t from 'tap';
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/core/config.js';
import { errorDetails } from '../src/core/errors.js';
import { BIN, DaemonProcess, closeServer, freePort, serve, type LogLine, DRY_RUN_BGP } from './helpers/daemon.js';
import { installPackedFixture } from './helpers/packages.js';

const pexec = promisify(execFile);
const isRoute = (action: string, prefix: string) => (l: LogLine) => l.event === 'route' && l.action === action && l.prefix === prefix;

const HEAD = `
agent:
  listen_addr: ""
${DRY_RUN_BGP}plugins: [vipcast-discovery-jsonfile]
`;

t.test('discovery: entries are parsed by their plugin; every error names its key path', async (t) => {
  const dir = t.testdir();
  await installPackedFixture(dir, 'vipcast-discovery-jsonfile');
  const apps = join(dir, 'apps.json');
  const load = async (body: string): Promise<string[]> => {
    const file = join(dir, 'vipcast.yaml');
    writeFileSync(file, HEAD + body);
    try {
      const c = await loadConfig(file, { env: {} });
      return [`ok ${JSON.stringify((c.discovery ?? []).map((d) => [d.name, d.plugin, d.settings, d.path]))}`];
    } catch (err) {
      return [...errorDetails(err)];
    }
  };
  t.same(await load(`discovery:\n  - plugin: jsonfile\n    file: ${apps}\n`), [`ok ${JSON.stringify([['jsonfile', 'jsonfile', { file: apps, pollMs: 250 }, 'discovery[0]']])}`], 'one entry: source named after the plugin, settings parsed by it');
  t.same(await load(`discovery:\n  - plugin: jsonfile\n    file: ${apps}\n  - plugin: jsonfile\n    name: more\n    file: ${apps}\n    poll_ms: 100\n`),
    [`ok ${JSON.stringify([['jsonfile', 'jsonfile', { file: apps, pollMs: 250 }, 'discovery[0]'], ['more', 'jsonfile', { file: apps, pollMs: 100 }, 'discovery[1]']])}`], 'the same plugin twice under distinct names');
  t.match(await load(`discovery:\n  - plugin: jsonfile\n    file: ${apps}\n  - plugin: jsonfile\n    file: ${apps}\n`), [/^discovery\[1\]: discovery\[0\] already is the source named "jsonfile"/], 'the same source name twice');
  t.match(await load('discovery:\n  - plugin: jsonfile\n    file: apps.json\n'), [/^discovery\[0\]\.file: "apps\.json" is not an absolute path/], 'the plugin\'s own settings error, with the key path');
  t.match(await load(`discovery:\n  - plugin: jsonfile\n    file: ${apps}\n    pol_ms: 5\n`), [/^discovery\[0\]\.pol_ms: unknown key/], 'an unknown settings key');
  t.match(await load(`discovery:\n  - plugin: jsonfiles\n    file: ${apps}\n`), [/^discovery\[0\]\.plugin: unknown discovery plugin "jsonfiles" \(known: jsonfile\)/], 'an unknown plugin names the known ones');
  t.match(await load('discovery:\n  - file: x\n'), [/^discovery\[0\]\.plugin: missing/], 'no plugin');
  t.match(await load('discovery:\n  - plugin: consul\n'), [/^discovery\[0\]\.plugin: "consul" is built in and configured by agent\.consul_addr/], 'consul is configured by the agent keys');
  t.match(await load(`discovery:\n  - plugin: jsonfile\n    name: http\n    file: ${apps}\n`), [/^discovery\[0\]\.name: "http" is the name of a built-in source/], 'a reserved source name');
  t.match(await load(`discovery:\n  - plugin: jsonfile\n    name: Bad\n    file: ${apps}\n`), [/^discovery\[0\]\.name: "Bad" is not a source name/], 'a bad source name');
  t.match(await load('discovery: {}\n'), [/^discovery: a mapping is not a list/], 'not a list');
  t.match(await load('discovery: [x]\n'), [/^discovery\[0\]: "x" is not a mapping/], 'an entry that is not a mapping');
  t.match(await load('discoveries: []\n'), [/^discoveries: unknown key/], 'a misspelt top-level key is still an error');
  // vipcast validate checks them too.
  writeFileSync(join(dir, 'vipcast.yaml'), `${HEAD}discovery:\n  - plugin: jsonfile\n    file: apps.json\n`);
  const bad = await pexec(process.execPath, [BIN, 'validate', '-c', join(dir, 'vipcast.yaml')], { env: { ...process.env, NODE_OPTIONS: '' } }).then(() => undefined, (e: { code: number; stdout: string; stderr: string }) => e);
  t.ok(bad && bad.code !== 0, 'vipcast validate fails');
  t.match(`${bad?.stdout ?? ''}${bad?.stderr ?? ''}`, /discovery\[0\]\.file: "apps\.json" is not an absolute path/, 'and names the key path');
});

t.test('vipcast run: a packed discovery plugin\'s apps are checked, announced, withdrawn when removed; a settings change swaps the instance without a withdraw', async (t) => {
  const dir = t.testdir();
  await installPackedFixture(dir, 'vipcast-discovery-jsonfile');
  const [port, apiPort] = [await freePort(), await freePort()];
  const appsFile = join(dir, 'apps.json');
  const writeApps = (list: unknown[]): void => writeFileSync(appsFile, JSON.stringify(list));
  writeApps([{ name: 'filed', vip: '198.18.100.70/32', monitor: `port:tcp:${port}` }, { name: 'steady', vip: '198.18.100.71/32' }]);
  const file = join(dir, 'vipcast.yaml');
  const body = (pollMs: number): string => HEAD.replace('listen_addr: ""', `listen_addr: 127.0.0.1:${apiPort}\n  monitor_interval: 200ms`) +
    `discovery:\n  - plugin: jsonfile\n    file: ${appsFile}\n    poll_ms: ${pollMs}\n`;
  writeFileSync(file, body(250));
  const d = new DaemonProcess(['run', '-c', file], { plain: true });
  t.teardown(() => d.stop());

  await d.waitLine(isRoute('announce', '198.18.100.71/32'), 30_000, 'steady (no monitor) announced');
  await d.waitLine((l) => l.app === 'filed' && l.state === 'down', 10_000, 'filed checked once (down: nothing listens)');
  t.notOk(d.lines.some(isRoute('announce', '198.18.100.70/32')), 'filed is not announced while its port is closed');
  const server = await serve(t, port);
  await d.waitLine(isRoute('announce', '198.18.100.70/32'), 10_000, 'filed announced once its port listens');
  const status = JSON.parse(await (await fetch(`http://127.0.0.1:${apiPort}/status`)).text()) as { apps: Array<{ name: string; source: string; state: string }> };
  t.same(status.apps.filter((a) => a.source === 'jsonfile').map((a) => [a.name, a.state]).sort(), [['filed', 'up'], ['steady', 'up']], '/status: both apps, source jsonfile, up');
  t.ok(d.lines.some((l) => l.component === 'discovery' && l.discovery === 'jsonfile' && l.msg === 'jsonfile discovery started'), 'the plugin logs through its child logger (component discovery, discovery jsonfile)');

  // Removed from the file: withdrawn (the plugin polls every 250 ms).
  let from = d.lines.length;
  writeApps([{ name: 'steady', vip: '198.18.100.71/32' }]);
  const removed = performance.now();
  const w = await d.waitLine(isRoute('withdraw', '198.18.100.70/32'), 10_000, 'filed withdrawn once gone from the file', from);
  t.comment(`file change -> withdraw: ${Math.round(w.at - removed)} ms (poll 250 ms)`);
  t.notOk(d.lines.slice(from).some(isRoute('withdraw', '198.18.100.71/32')), 'steady stays announced');

  // A reload that changes the plugin's settings: the new instance starts before the old one closes; nothing withdrawn.
  from = d.lines.length;
  writeFileSync(file, body(300));
  d.kill('SIGHUP');
  const done = await d.waitLine((l) => l.component === 'reload' && /^reload(: (done|nothing changed)| refused| failed)/.test(l.msg), 30_000, 'reload outcome', from);
  t.equal(done.msg, 'reload: done');
  t.ok((done.changes as string[]).includes('discovery jsonfile: changed'), 'the reload lists the changed source');
  const after = d.lines.slice(from);
  const started = after.findIndex((l) => l.discovery === 'jsonfile' && l.msg === 'jsonfile discovery started' && l.poll_ms === 300);
  const closed = after.findIndex((l) => l.discovery === 'jsonfile' && l.msg === 'jsonfile discovery closed');
  t.ok(started >= 0 && closed > started, `the new instance (poll 300 ms) started (line ${started}) before the old one closed (line ${closed})`);
  await new Promise((r) => setTimeout(r, 1500));
  t.notOk(d.lines.slice(from).some((l) => l.event === 'route' && l.action === 'withdraw'), 'no route withdrawn by the swap');

  // A reload that changes only agent keys keeps the running instance (sameSettings): refreshed, not restarted.
  from = d.lines.length;
  writeFileSync(file, body(300).replace('monitor_interval: 200ms', 'monitor_interval: 300ms'));
  d.kill('SIGHUP');
  const kept = await d.waitLine((l) => l.component === 'reload' && /^reload(: (done|nothing changed)| refused| failed)/.test(l.msg), 30_000, 'reload outcome', from);
  t.equal(kept.msg, 'reload: done');
  t.notOk((kept.changes as string[]).some((c) => c.startsWith('discovery ')), 'no discovery change listed');
  t.same(d.lines.slice(from).filter((l) => l.discovery === 'jsonfile' && /discovery (started|closed)/.test(l.msg)).map((l) => JSON.stringify(l)), [], 'the jsonfile instance was neither started nor closed');
  await d.waitLine((l) => l.discovery === 'jsonfile' && l.msg === 'discovery jsonfile: apps updated', 5000, 'refresh(): the kept instance delivers its apps again, rebuilt under the new agent defaults', from);

  // The new instance keeps watching: an app added to the file is announced.
  from = d.lines.length;
  writeApps([{ name: 'steady', vip: '198.18.100.71/32' }, { name: 'late', vip: '198.18.100.72/32' }]);
  await d.waitLine(isRoute('announce', '198.18.100.72/32'), 10_000, 'an app added after the swap announced', from);

  // A reload whose discovery entry is broken is refused with the key path; the running source stays.
  from = d.lines.length;
  writeFileSync(file, body(5));
  d.kill('SIGHUP');
  const refused = await d.waitLine((l) => l.component === 'reload' && /^reload(: (done|nothing changed)| refused| failed)/.test(l.msg), 30_000, 'reload outcome', from);
  t.match(refused.msg, /^reload refused/);
  t.ok(d.lines.slice(from).some((l) => /discovery\[0\]\.poll_ms/.test(l.msg)), 'the error names discovery[0].poll_ms');
  from = d.lines.length;
  writeApps([{ name: 'steady', vip: '198.18.100.71/32' }]);
  await d.waitLine(isRoute('withdraw', '198.18.100.72/32'), 10_000, 'the source in force still watches the file', from);

  // A reload adding a source whose factory throws fails; the config in force stays (the jsonfile source keeps running).
  mkdirSync(join(dir, 'node_modules', 'vipcast-discovery-factory-throws'), { recursive: true });
  cpSync(fileURLToPath(new URL('../../test/fixtures/plugins/discovery-factory-throws', import.meta.url)), join(dir, 'node_modules', 'vipcast-discovery-factory-throws'), { recursive: true });
  from = d.lines.length;
  writeFileSync(file, body(300).replace('plugins: [vipcast-discovery-jsonfile]', 'plugins: [vipcast-discovery-jsonfile, vipcast-discovery-factory-throws]') + '  - plugin: broken\n');
  d.kill('SIGHUP');
  const failed = await d.waitLine((l) => l.component === 'reload' && /^reload(: (done|nothing changed)| refused| failed)/.test(l.msg), 30_000, 'reload outcome', from);
  t.match(failed.msg, /^reload failed/, 'the reload fails');
  t.ok(d.lines.slice(from).some((l) => /discovery\[1\]: discovery \\?"broken\\?" \(plugin broken\) could not start: fixture: the broken discovery cannot reach its source/.test(JSON.stringify(l))), 'the error names discovery[1] and says why');
  t.notOk(d.lines.slice(from).some((l) => l.event === 'route' && l.action === 'withdraw'), 'nothing withdrawn by the failed reload');
  from = d.lines.length;
  writeApps([{ name: 'steady', vip: '198.18.100.71/32' }, { name: 'again', vip: '198.18.100.73/32' }]);
  await d.waitLine(isRoute('announce', '198.18.100.73/32'), 10_000, 'the source in force still watches the file after the failed reload', from);

  // The entry removed by a reload: its source closes and its apps are withdrawn.
  from = d.lines.length;
  writeFileSync(file, HEAD.replace('listen_addr: ""', `listen_addr: 127.0.0.1:${apiPort}\n  monitor_interval: 200ms`));
  d.kill('SIGHUP');
  await d.waitLine(isRoute('withdraw', '198.18.100.71/32'), 30_000, 'steady withdrawn once its source is removed', from);
  t.ok(d.lines.slice(from).some((l) => l.discovery === 'jsonfile' && l.msg === 'jsonfile discovery closed'), 'the removed source closed');
  await closeServer(server);
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0, 'exit 0');
});

t.test('the built-in discoveries are descriptors in every config\'s registry: config and consul', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, HEAD.replace('plugins: [vipcast-discovery-jsonfile]\n', '') + 'apps:\n  - name: web\n    vip: 198.18.100.80/32\n');
  const c = await loadConfig(file, { env: {} });
  t.same(c.registry.names('discovery'), ['config', 'consul'], 'both registered by name');
  t.equal(c.registry.origin('discovery', 'consul'), 'built-in');
  const consul = c.registry.discovery('consul')!;
  const ctx = { path: 'agent.consul_addr', baseDir: dir, env: {} };
  const s = consul.parseSettings({ addr: 'http://127.0.0.1:8500/v1', token: 't', node: 'n1', stale: false, queryIntervalMs: 60_000 }, ctx);
  t.ok(consul.sameSettings(s, consul.parseSettings({ addr: 'http://127.0.0.1:8500/v1', token: 't', node: 'n1', stale: false, queryIntervalMs: 60_000 }, ctx)), 'same settings: the running instance stays');
  t.notOk(consul.sameSettings(s, consul.parseSettings({ addr: 'http://127.0.0.1:8500/v1', token: 't', node: 'n1', stale: false, queryIntervalMs: 30_000 }, ctx)), 'another query interval: a new instance');
  t.throws(() => consul.parseSettings({ addr: 'http://127.0.0.1:8500/v1', token: '', node: '', stale: false, queryIntervalMs: 1000 }, ctx), /agent\.consul_addr: Consul discovery is off: the CONSUL_NODE environment variable is not set/);
  const config = c.registry.discovery('config')!;
  const apps = config.parseSettings({ apps: c.apps }, { path: 'apps', baseDir: dir, env: {} });
  const inst = await config.create({ log: undefined as never, settings: apps, services: { appFrom: () => { throw new Error('unused'); } } });
  const seen: string[][] = [];
  await inst.start((list) => seen.push(list.map((a) => `${a.name}:${a.source}`)));
  t.same(seen, [['web:config']], 'the config source delivers the file\'s apps when started');
  await inst.close();
});
