/**
 * Third-party plugins of every family (monitor, discovery, router): packages installed in a temp dir, loaded,
 * shape- and version-checked by their `kind`, every failure mode a coded error naming `plugins[i]` and the package;
 * monitors run in the real pool, routers and discovery sources are created and used; the config carries them in its
 * PluginRegistry, and a package that failed is the one error the user sees for it (`vipcast validate` too).
 */
import t from 'tap';
import { writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { loadPlugin } from '../src/core/plugin-loader.js';
import { MonitorRegistry, builtinMonitors } from '../src/core/monitor-registry.js';
import { CheckPool } from '../src/core/check-pool.js';
import { VipcastError } from '../src/core/errors.js';
import { silentLogger } from '../src/core/logger.js';
import { parsePrefix } from '../src/core/values.js';
import { appFromRegistration } from '../src/core/registration.js';
import { consulSettings, loadConfig, parseConfigText } from '../src/core/config.js';
import type { AppSpec, Discovery, DiscoveryPlugin, MonitorPlugin, Route, RouterPlugin } from '../src/plugin-api.js';
import { BIN } from './helpers/daemon.js';
import { installFixtureCopy, settledCode } from './helpers/packages.js';


/** Plugins get a real pino logger (silent: the test reads their results, not their lines). */
const quietLog = silentLogger();

t.test('CommonJS and ESM-only monitor plugins load, parse specs, and their checks run in the real pool', async (t) => {
  const dir = t.testdir({});
  installFixtureCopy(dir, 'cjs-ok', 'vipcast-monitor-file');
  installFixtureCopy(dir, 'esm-ok', '@acme/vipcast-monitor-env');
  const file = await loadPlugin('vipcast-monitor-file', dir) as MonitorPlugin;
  const env = await loadPlugin('@acme/vipcast-monitor-env', dir) as MonitorPlugin;
  t.equal(file.kind, 'monitor');
  t.equal(file.name, 'file');
  t.equal(env.name, 'envflag');
  const registry = new MonitorRegistry([...builtinMonitors(), file, env]);
  const flag = join(dir, 'ready');
  const spec = registry.parse(`file:${flag}`, { path: 'apps[0].monitors[0]', baseDir: dir, trusted: true });
  t.equal(spec.text, `file:${flag}`);
  t.throws(() => registry.parse('file:relative/path', { path: 'apps[0].monitors[1]', baseDir: dir, trusted: true }), /apps\[0\]\.monitors\[1\]: want an absolute path/);
  const pool = new CheckPool({ workers: 1 });
  t.teardown(() => pool.close());
  t.equal((await pool.run(spec, 1000)).ok, false, 'down while the file is missing');
  writeFileSync(flag, '');
  const up = await pool.run(spec, 1000);
  t.equal(up.ok, true, 'up once it exists');
  t.match(up.reason, /exists/);
  rmSync(flag);
  const envSpec = registry.parse('envflag:VIPCAST_TEST_FLAG', { path: 'm', baseDir: dir, trusted: false });
  const r = await pool.run(envSpec, 1000);
  t.equal(r.ok, false);
  t.match(r.reason, /VIPCAST_TEST_FLAG is not 1/, 'the ESM plugin check ran in the worker');
});

t.test('monitor failure modes get coded, explicit errors naming plugins[i] and the package', async (t) => {
  const dir = t.testdir({});
  installFixtureCopy(dir, 'wrong-export', 'vipcast-monitor-wrong');
  installFixtureCopy(dir, 'throws-on-load', 'vipcast-monitor-throws');
  installFixtureCopy(dir, 'missing-dep', 'vipcast-monitor-missing-dep');
  installFixtureCopy(dir, 'version-mismatch', 'vipcast-monitor-future');
  t.match(await settledCode(loadPlugin('vipcast-monitor-nope', dir, { path: 'plugins[0]' })),
    /^VIPCAST_ERR_PLUGIN_NOT_FOUND: plugins\[0\]: plugin "vipcast-monitor-nope" is not installed.*npm install vipcast-monitor-nope/);
  t.match(await settledCode(loadPlugin('vipcast-monitor-wrong', dir, { path: 'plugins[1]' })),
    /^VIPCAST_ERR_PLUGIN_SHAPE: plugins\[1\]: plugin "vipcast-monitor-wrong" does not export a vipcast plugin: "version" must be a non-empty string; "apiVersion" must be a non-empty string; name "Wrong Name" must match/);
  t.match(await settledCode(loadPlugin('vipcast-monitor-throws', dir, { path: 'plugins[2]' })),
    /^VIPCAST_ERR_PLUGIN_LOAD: plugins\[2\]: plugin "vipcast-monitor-throws" is installed but failed to load: boom: plugin initialisation failed/);
  t.match(await settledCode(loadPlugin('vipcast-monitor-missing-dep', dir, { path: 'plugins[3]' })),
    /^VIPCAST_ERR_PLUGIN_LOAD: plugins\[3\]: plugin "vipcast-monitor-missing-dep" .*dependencies is missing.*vipcast-no-such-dependency/);
  t.match(await settledCode(loadPlugin('vipcast-monitor-future', dir, { path: 'plugins[4]' })),
    /^VIPCAST_ERR_PLUGIN_VERSION: plugins\[4\]: plugin "vipcast-monitor-future" 9\.0\.0 needs plugin API \^2\.0\.0; this vipcast provides 1\.0\.0/);
  t.match(await settledCode(loadPlugin('vipcast-monitor-nope', dir)), /^VIPCAST_ERR_PLUGIN_NOT_FOUND: plugins: /, 'the path defaults to "plugins"');
});

/** Every router and discovery fixture: [fixture, package name, the outcome of loadPlugin at plugins[i]]. */
const FAMILY_FIXTURES: ReadonlyArray<readonly [string, string, { kind: string; name: string } | RegExp]> = [
  ['router-cjs', 'vipcast-router-memory', { kind: 'router', name: 'memory' }],
  ['router-esm', '@acme/vipcast-router-log', { kind: 'router', name: 'eventlog' }],
  ['router-factory-throws', 'vipcast-router-factory-throws', { kind: 'router', name: 'broken' }],
  ['router-bad-settings', 'vipcast-router-jsonfile', { kind: 'router', name: 'jsonfile' }],
  ['router-wrong-kind', 'vipcast-router-wrong-kind',
    /^VIPCAST_ERR_PLUGIN_SHAPE: plugins\[4\]: plugin "vipcast-router-wrong-kind" does not export a vipcast plugin: kind is "routerx", want "monitor", "discovery", "router"$/],
  ['router-bad-shape', 'vipcast-router-bad-shape',
    /^VIPCAST_ERR_PLUGIN_SHAPE: plugins\[5\]: plugin "vipcast-router-bad-shape" does not export a vipcast router plugin: "parseSettings" must be a function; "create" must be a function$/],
  ['router-version-mismatch', 'vipcast-router-future',
    /^VIPCAST_ERR_PLUGIN_VERSION: plugins\[6\]: plugin "vipcast-router-future" 3\.0\.0 needs plugin API \^2\.0\.0; this vipcast provides 1\.0\.0$/],
  ['discovery-cjs', 'vipcast-discovery-static', { kind: 'discovery', name: 'static' }],
  ['discovery-esm', '@acme/vipcast-discovery-jsonfile', { kind: 'discovery', name: 'jsonapps' }],
  ['discovery-factory-throws', 'vipcast-discovery-factory-throws', { kind: 'discovery', name: 'broken' }],
  ['discovery-bad-settings', 'vipcast-discovery-cmdb', { kind: 'discovery', name: 'cmdb' }],
  ['discovery-wrong-kind', 'vipcast-discovery-wrong-kind',
    /^VIPCAST_ERR_PLUGIN_SHAPE: plugins\[11\]: plugin "vipcast-discovery-wrong-kind" does not export a vipcast plugin: kind is "source", want "monitor", "discovery", "router"$/],
  ['discovery-bad-shape', 'vipcast-discovery-bad-shape',
    /^VIPCAST_ERR_PLUGIN_SHAPE: plugins\[12\]: plugin "vipcast-discovery-bad-shape" does not export a vipcast discovery plugin: "parseSettings" must be a function; "sameSettings" must be a function; "create" must be a function$/],
  ['discovery-version-mismatch', 'vipcast-discovery-future',
    /^VIPCAST_ERR_PLUGIN_VERSION: plugins\[13\]: plugin "vipcast-discovery-future" 2\.0\.0 needs plugin API \^2\.0\.0; this vipcast provides 1\.0\.0$/],
];

t.test(`${FAMILY_FIXTURES.length} router and discovery fixture packages: each loads into its family, or gives its coded error naming plugins[i]`, async (t) => {
  const dir = t.testdir({});
  for (const [fixture, pkg] of FAMILY_FIXTURES) installFixtureCopy(dir, fixture, pkg);
  for (const [i, [fixture, pkg, want]] of FAMILY_FIXTURES.entries()) {
    if (want instanceof RegExp) {
      t.match(await settledCode(loadPlugin(pkg, dir, { path: `plugins[${i}]` })), want, fixture);
      continue;
    }
    const plugin = await loadPlugin(pkg, dir, { path: `plugins[${i}]` });
    t.same({ kind: plugin.kind, name: plugin.name }, want, `${fixture} loads as a ${want.kind} plugin`);
    t.ok(Object.isFrozen(plugin), `${fixture}: the descriptor is a frozen copy`);
    for (const member of ['parseSettings', 'sameSettings', 'create'] as const) t.type((plugin as RouterPlugin)[member], 'function', `${fixture}.${member}`);
  }
});

const settingsCtx = (path: string, baseDir: string) => ({ path, baseDir, env: {} });

function route(prefix: string, app: string): Route {
  return { prefix: parsePrefix(prefix, 'test'), app, origin: 'igp', communities: [] };
}

t.test('a CommonJS router (create returns the router) and an ESM-only one (async create) are built from their settings and route', async (t) => {
  const dir = t.testdir({});
  installFixtureCopy(dir, 'router-cjs', 'vipcast-router-memory');
  installFixtureCopy(dir, 'router-esm', '@acme/vipcast-router-log');
  const bgp = { localAs: 65001, listenPort: -1, origin: 'igp' as const, communities: [], peers: [{ address: '198.18.0.1', asn: 65000, communities: [] }] };
  for (const pkg of ['vipcast-router-memory', '@acme/vipcast-router-log']) {
    const plugin = await loadPlugin(pkg, dir) as RouterPlugin;
    const settings = plugin.parseSettings({}, settingsCtx('routing.settings', dir));
    t.ok(plugin.sameSettings(settings, plugin.parseSettings({}, settingsCtx('routing.settings', dir))), `${pkg}: same settings are the same`);
    const router = await plugin.create({ log: quietLog.child({ component: 'router', router: plugin.name }), settings, bgp });
    t.teardown(() => router.close());
    t.equal(router.name, plugin.name);
    await router.start();
    await router.applyPeers(bgp.peers);
    await router.announce(route('198.18.100.1/32', 'web'), 'up');
    await router.announce(route('2001:db8::1/128', 'web'), 'up');
    await router.withdraw(route('198.18.100.1/32', 'web'), 'down');
    t.same((await router.listRoutes()).map((r) => r.prefix.text), ['2001:db8::1/128'], `${pkg}: the router's RIB`);
  }
  const memory = await loadPlugin('vipcast-router-memory', dir) as RouterPlugin;
  t.throws(() => memory.parseSettings({ lable: 'x' }, settingsCtx('routing.settings', dir)), /^routing\.settings\.lable: unknown key \(known: label\)$/);
  t.notOk(memory.sameSettings(memory.parseSettings({ label: 'a' }, settingsCtx('routing.settings', dir)), memory.parseSettings({ label: 'b' }, settingsCtx('routing.settings', dir))));
});

t.test('CommonJS and ESM-only discovery sources build their apps through the daemon services (the real registration parser)', async (t) => {
  const dir = t.testdir({ 'apps.json': JSON.stringify([{ name: 'dns', vip: '198.18.100.53/32', monitor: 'port:udp:53' }]) });
  installFixtureCopy(dir, 'discovery-cjs', 'vipcast-discovery-static');
  installFixtureCopy(dir, 'discovery-esm', '@acme/vipcast-discovery-jsonfile');
  const config = parseConfigText('routing: { plugin: dry-run }\n', join(dir, 'vipcast.yaml'), { env: {} });
  const services = {
    appFrom: (p: Parameters<typeof appFromRegistration>[0], _path: string): AppSpec => ({ ...appFromRegistration(p, 'plugin', config.agent, config.monitors, consulSettings(config.agent, {})) }),
  };
  const cases: ReadonlyArray<readonly [string, unknown, string[]]> = [
    ['vipcast-discovery-static', { apps: [{ name: 'web', vip: '198.18.100.80/32', monitor: 'port:tcp:80' }] }, ['web 198.18.100.80/32 port:tcp:80']],
    ['@acme/vipcast-discovery-jsonfile', { file: join(dir, 'apps.json') }, ['dns 198.18.100.53/32 port:udp:53']],
  ];
  for (const [pkg, raw, want] of cases) {
    const plugin = await loadPlugin(pkg, dir) as DiscoveryPlugin;
    const settings = plugin.parseSettings(raw, settingsCtx('discovery[1]', dir));
    const source: Discovery = await plugin.create({ log: quietLog.child({ component: 'discovery', discovery: plugin.name }), settings, services });
    t.teardown(() => source.close());
    const seen: string[][] = [];
    await source.start((apps) => seen.push(apps.map((a) => `${a.name} ${a.vips.map((v) => v.text).join(',')} ${a.monitors.map((m) => m.text).join(',')}`)));
    t.same(seen, [want], `${pkg}: start delivers the source's apps`);
    t.same(source.apps().map((a) => a.name), want.map((w) => w.split(' ')[0]));
  }
});

t.test('bad settings are refused by parseSettings with the key path; a factory that throws rejects with its own reason', async (t) => {
  const dir = t.testdir({});
  installFixtureCopy(dir, 'router-bad-settings', 'vipcast-router-jsonfile');
  installFixtureCopy(dir, 'discovery-bad-settings', 'vipcast-discovery-cmdb');
  installFixtureCopy(dir, 'router-factory-throws', 'vipcast-router-factory-throws');
  installFixtureCopy(dir, 'discovery-factory-throws', 'vipcast-discovery-factory-throws');
  const jsonfile = await loadPlugin('vipcast-router-jsonfile', dir) as RouterPlugin;
  t.throws(() => jsonfile.parseSettings({ file: 'rib.jsonl' }, settingsCtx('routing.settings', dir)), /^routing\.settings\.file: "rib\.jsonl" is not an absolute path$/);
  t.throws(() => jsonfile.parseSettings({}, settingsCtx('routing.settings', dir)), /^routing\.settings\.file: missing/);
  t.same(jsonfile.parseSettings({ file: '/run/rib.jsonl' }, settingsCtx('routing.settings', dir)), { file: '/run/rib.jsonl' });
  const cmdb = await loadPlugin('vipcast-discovery-cmdb', dir) as DiscoveryPlugin;
  t.throws(() => cmdb.parseSettings({ url: 'ftp://cmdb' }, settingsCtx('discovery[1]', dir)), /^discovery\[1\]\.url: "ftp:\/\/cmdb" is not an http\(s\) URL$/);

  const bgp = { localAs: 65001, listenPort: -1, origin: 'igp' as const, communities: [], peers: [] };
  const broken = await loadPlugin('vipcast-router-factory-throws', dir) as RouterPlugin;
  await t.rejects(async () => broken.create({ log: quietLog, settings: broken.parseSettings({}, settingsCtx('routing.settings', dir)), bgp }), /the broken router cannot reach its backend/);
  const brokenSource = await loadPlugin('vipcast-discovery-factory-throws', dir) as DiscoveryPlugin;
  await t.rejects(async () => brokenSource.create({ log: quietLog, settings: {}, services: { appFrom: () => { throw new Error('unused'); } } }), /the broken discovery cannot reach its source/);
});

t.test('a descriptor whose methods use `this` keeps working: the frozen copy binds them to the package object', async (t) => {
  const dir = t.testdir({
    node_modules: {
      'vipcast-router-class': {
        'package.json': JSON.stringify({ name: 'vipcast-router-class', version: '1.0.0', main: 'index.js' }),
        'index.js': `
class Descriptor {
  constructor() { Object.assign(this, { kind: 'router', name: 'classy', version: '1.0.0', apiVersion: '^1.0.0' }); this.defaults = { x: 1 }; }
  parseSettings(raw) { return { ...this.defaults, ...raw }; }
  sameSettings(a, b) { return a.x === b.x; }
  create() { throw new Error('not used'); }
}
module.exports = new Descriptor();
`,
      },
    },
  });
  const plugin = await loadPlugin('vipcast-router-class', dir) as RouterPlugin;
  t.same(plugin.parseSettings({}, settingsCtx('routing.settings', dir)), { x: 1 }, 'prototype methods found and bound');
});

t.test('plugins: of every family load at config load into the config\'s PluginRegistry, with the package as origin', async (t) => {
  const dir = t.testdir({});
  installFixtureCopy(dir, 'cjs-ok', 'vipcast-monitor-file');
  installFixtureCopy(dir, 'router-cjs', 'vipcast-router-memory');
  installFixtureCopy(dir, 'discovery-esm', '@acme/vipcast-discovery-jsonfile');
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `
plugins: [vipcast-monitor-file, vipcast-router-memory, "@acme/vipcast-discovery-jsonfile"]
routing: { plugin: dry-run }
apps:
  - { name: a, vip: 198.18.100.70/32, monitors: ["file:/run/a.ready", "port:tcp:80"] }
`);
  const config = await loadConfig(file, { env: {} });
  t.same(config.plugins, ['vipcast-monitor-file', 'vipcast-router-memory', '@acme/vipcast-discovery-jsonfile']);
  t.same(config.apps[0]!.monitors.map((m) => m.text), ['file:/run/a.ready', 'port:tcp:80']);
  t.same(config.monitors.names(), ['consul', 'exec', 'file', 'http', 'port']);
  t.equal(config.registry.monitors, config.monitors, 'config.monitors is the registry\'s');
  t.equal(config.registry.router('memory')?.name, 'memory');
  t.equal(config.registry.discovery('jsonapps')?.name, 'jsonapps');
  t.equal(config.registry.origin('router', 'memory'), 'vipcast-router-memory');
  t.equal(config.registry.origin('discovery', 'jsonapps'), '@acme/vipcast-discovery-jsonfile');
  t.equal(config.registry.origin('monitor', 'file'), 'vipcast-monitor-file');
  t.equal(config.registry.origin('monitor', 'port'), 'built-in');
  t.ok(config.registry.names('router').includes('memory'));
  t.same(config.registry.failures(), []);

  // A fresh registry per load: a second load (a reload) does not see a clash with the first one's packages.
  const again = await loadConfig(file, { env: {} });
  t.not(again.registry, config.registry);
  t.equal(again.registry.router('memory')?.name, 'memory');
});

t.test('a package that failed is the one error for it: no "unknown monitor type" for the apps that use it; a name clash says so', async (t) => {
  const dir = t.testdir({});
  installFixtureCopy(dir, 'cjs-ok', 'vipcast-monitor-file');
  installFixtureCopy(dir, 'version-mismatch', 'vipcast-monitor-future');
  installFixtureCopy(dir, 'router-wrong-kind', 'vipcast-router-wrong-kind');
  installFixtureCopy(dir, 'load-builtin-clash', 'vipcast-monitor-port');
  installFixtureCopy(dir, 'cjs-ok', 'vipcast-monitor-file-copy');
  const file = join(dir, 'vipcast.yaml');
  const details = async (yaml: string): Promise<string[]> => {
    writeFileSync(file, yaml);
    const err = await loadConfig(file, { env: {} }).catch((e: unknown) => e);
    t.type(err, VipcastError);
    t.equal((err as VipcastError).code, 'VIPCAST_ERR_CONFIG');
    return [...(err as VipcastError).details];
  };

  // Not installed: nothing is known of what it provides, so no unknown monitor type is reported while it fails.
  t.same(await details(`
plugins: [vipcast-monitor-absent, "Not A Name"]
routing: { plugin: dry-run }
apps:
  - { name: a, vip: 198.18.100.70/32, monitors: ["file:/run/a.ready"] }
  - { name: b, vip: 198.18.100.71/32, monitors: [{ type: file, path: /run/b.ready }] }
`), [
    `plugins[0]: VIPCAST_ERR_PLUGIN_NOT_FOUND: plugin "vipcast-monitor-absent" is not installed (looked from ${dir}); install it there: cd ${dir} && npm install vipcast-monitor-absent`,
    'plugins[1]: "Not A Name" is not an npm package name (e.g. vipcast-monitor-redis or @acme/vipcast-monitor-x)',
  ]);

  // A version mismatch names what it is (a monitor named "future"): its type is left out, another unknown type is not.
  t.same(await details(`
plugins: [vipcast-monitor-future]
routing: { plugin: dry-run }
apps:
  - { name: a, vip: 198.18.100.70/32, monitors: ["future:x", "fiel:/run/a.ready"] }
`), [
    'plugins[0]: VIPCAST_ERR_PLUGIN_VERSION: plugin "vipcast-monitor-future" 9.0.0 needs plugin API ^2.0.0; this vipcast provides 1.0.0',
    'apps[0].monitors[1]: unknown monitor type "fiel" (known: consul, exec, http, port)',
  ]);

  // A clash with a built-in, and between two packages; a package listed twice; a wrong kind.
  const clash = await details(`
plugins: [vipcast-monitor-port, vipcast-monitor-file, vipcast-monitor-file-copy, vipcast-monitor-file, vipcast-router-wrong-kind]
routing: { plugin: dry-run }
apps:
  - { name: a, vip: 198.18.100.70/32, monitors: ["file:/run/a.ready"] }
`);
  t.same(clash, [
    'plugins[0]: VIPCAST_ERR_PLUGIN_NAME: plugin "vipcast-monitor-port": monitor name "port" is a built-in; a package can\'t replace a built-in monitor: give it another name',
    'plugins[2]: VIPCAST_ERR_PLUGIN_NAME: plugin "vipcast-monitor-file-copy": monitor name "file" is taken by plugin "vipcast-monitor-file"',
    'plugins[3]: "vipcast-monitor-file" is listed twice (first at plugins[1])',
    'plugins[4]: VIPCAST_ERR_PLUGIN_SHAPE: plugin "vipcast-router-wrong-kind" does not export a vipcast plugin: kind is "routerx", want "monitor", "discovery", "router"',
  ]);
});

t.test('vipcast validate reports a plugin error with plugins[i], once, and exits 2', async (t) => {
  const dir = t.testdir({});
  installFixtureCopy(dir, 'router-bad-shape', 'vipcast-router-bad-shape');
  installFixtureCopy(dir, 'router-cjs', 'vipcast-router-memory');
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `
plugins: [vipcast-router-memory, vipcast-router-bad-shape]
routing: { plugin: dry-run }
apps:
  - { name: a, vip: 198.18.100.70/32, monitors: ["port:tcp:80"] }
`);
  const res = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [BIN, 'validate', '-c', file], (err, stdout, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }));
  });
  t.equal(res.code, 2);
  t.match(res.stderr, /plugins\[1\]: VIPCAST_ERR_PLUGIN_SHAPE: plugin "vipcast-router-bad-shape" does not export a vipcast router plugin: "parseSettings" must be a function; "create" must be a function/);
  t.equal(res.stderr.split('plugins[').length - 1, 1, 'one error, naming plugins[1] only');

  writeFileSync(file, `
plugins: [vipcast-router-memory]
routing: { plugin: dry-run }
apps:
  - { name: a, vip: 198.18.100.70/32, monitors: ["port:tcp:80"] }
`);
  const ok = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
    execFile(process.execPath, [BIN, 'validate', '-c', file], (err, stdout) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout }));
  });
  t.equal(ok.code, 0, 'a router package loads in validate');
});

/** Run the vipcast CLI to its exit (bounded: 60 s, far above the few hundred ms a refused config or start takes). */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }));
  });
}

t.test('through vipcast: bad router and discovery settings are refused by validate with their key paths; a discovery factory that throws fails the start naming discovery[i]', async (t) => {
  const dir = t.testdir({});
  installFixtureCopy(dir, 'router-bad-settings', 'vipcast-router-jsonfile');
  installFixtureCopy(dir, 'discovery-bad-settings', 'vipcast-discovery-cmdb');
  installFixtureCopy(dir, 'discovery-factory-throws', 'vipcast-discovery-factory-throws');
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `
plugins: [vipcast-router-jsonfile, vipcast-discovery-cmdb]
routing: { plugin: jsonfile, settings: { file: rib.jsonl } }
discovery:
  - { plugin: cmdb, url: "ftp://cmdb" }
apps:
  - { name: a, vip: 198.18.100.70/32, monitors: ["port:tcp:80"] }
`);
  const bad = await cli(['validate', '-c', file]);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /2 problems:\n {2}routing\.settings\.file: "rib\.jsonl" is not an absolute path\n {2}discovery\[0\]\.url: "ftp:\/\/cmdb" is not an http\(s\) URL\n/);

  writeFileSync(file, `
plugins: [vipcast-router-jsonfile, vipcast-discovery-cmdb]
routing: { plugin: jsonfile, settings: { file: ${join(dir, 'rib.jsonl')} } }
discovery:
  - { plugin: cmdb, url: "https://cmdb.example" }
`);
  const ok = await cli(['validate', '-c', file]);
  t.equal(ok.code, 0, `valid settings pass (${ok.stderr})`);
  t.match(ok.stdout, /routing jsonfile/);

  // The factory runs at start (never in validate): a dry-run start with a source whose factory throws is refused.
  writeFileSync(file, `
plugins: [vipcast-discovery-factory-throws]
agent: { listen_addr: "" }
routing: { plugin: dry-run }
discovery:
  - { plugin: broken }
apps:
  - { name: a, vip: 198.18.100.70/32, monitors: ["port:tcp:80"] }
`);
  t.equal((await cli(['validate', '-c', file])).code, 0, 'validate does not create sources');
  const run = await cli(['run', '-c', file, '--dry-run']);
  t.not(run.code, 0, 'the start fails');
  t.match(run.stderr + run.stdout, /discovery\[0\]: discovery "broken" \(plugin broken\) could not start: fixture: the broken discovery cannot reach its source/);
});
