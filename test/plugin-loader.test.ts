/** Third-party monitor plugins: packages installed in a temp dir, loaded, version-checked, run in the real pool. */
import t from 'tap';
import { cpSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadMonitorPlugin } from '../src/core/plugin-loader.js';
import { MonitorRegistry, builtinMonitors } from '../src/core/monitor-registry.js';
import { CheckPool } from '../src/core/check-pool.js';
import { VipcastError } from '../src/core/errors.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/plugins/', import.meta.url));

function install(dir: string, fixture: string, pkgName: string): void {
  const dest = join(dir, 'node_modules', pkgName);
  mkdirSync(dest, { recursive: true });
  cpSync(join(FIXTURES, fixture), dest, { recursive: true });
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (err) {
    return err instanceof VipcastError ? `${err.code}: ${err.message}` : `not coded: ${String(err)}`;
  }
}

t.test('CommonJS and ESM-only plugins load, parse specs, and their checks run in the real pool', async (t) => {
  const dir = t.testdir({});
  install(dir, 'cjs-ok', 'vipcast-monitor-file');
  install(dir, 'esm-ok', '@acme/vipcast-monitor-env');
  const file = await loadMonitorPlugin('vipcast-monitor-file', dir);
  const env = await loadMonitorPlugin('@acme/vipcast-monitor-env', dir);
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

t.test('failure modes get coded, explicit errors', async (t) => {
  const dir = t.testdir({});
  install(dir, 'wrong-export', 'vipcast-monitor-wrong');
  install(dir, 'throws-on-load', 'vipcast-monitor-throws');
  install(dir, 'missing-dep', 'vipcast-monitor-missing-dep');
  install(dir, 'version-mismatch', 'vipcast-monitor-future');
  t.match(await code(loadMonitorPlugin('vipcast-monitor-nope', dir)), /^VIPCAST_ERR_PLUGIN_NOT_FOUND: .*not installed.*npm install vipcast-monitor-nope/);
  const wrong = await code(loadMonitorPlugin('vipcast-monitor-wrong', dir));
  t.match(wrong, /^VIPCAST_ERR_PLUGIN_LOAD: .*kind is "router".*"version" must be a non-empty string.*"parse" must be a function/);
  t.match(await code(loadMonitorPlugin('vipcast-monitor-throws', dir)), /^VIPCAST_ERR_PLUGIN_LOAD: .*failed to load: boom: plugin initialisation failed/);
  t.match(await code(loadMonitorPlugin('vipcast-monitor-missing-dep', dir)), /^VIPCAST_ERR_PLUGIN_LOAD: .*vipcast-no-such-dependency/);
  t.match(await code(loadMonitorPlugin('vipcast-monitor-future', dir)), /^VIPCAST_ERR_PLUGIN_VERSION: .*needs plugin API \^2\.0\.0; this vipcast provides 1\.0\.0/);
});

t.test('the cause of a load failure is kept', async (t) => {
  const dir = t.testdir({});
  install(dir, 'throws-on-load', 'vipcast-monitor-throws');
  const err = await loadMonitorPlugin('vipcast-monitor-throws', dir).catch((e: unknown) => e);
  t.type(err, VipcastError);
  t.match(String((err as Error).cause), /boom/);
});

t.test('a plugin name that clashes with a built-in monitor is refused', async (t) => {
  const dir = t.testdir({});
  install(dir, 'cjs-ok', 'vipcast-monitor-file');
  const file = await loadMonitorPlugin('vipcast-monitor-file', dir);
  const registry = new MonitorRegistry();
  t.throws(() => registry.add({ ...file, name: 'port' }), /two monitor plugins are named "port"/);
});

t.test('plugins: named in the config load from the config folder and their monitor types validate apps', async (t) => {
  const { loadConfig } = await import('../src/core/config.js');
  const dir = t.testdir({});
  install(dir, 'cjs-ok', 'vipcast-monitor-file');
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `
plugins: [vipcast-monitor-file]
routing: { plugin: dry-run }
apps:
  - { name: a, vip: 198.18.100.70/32, monitors: ["file:/run/a.ready", "port:tcp:80"] }
`);
  const config = await loadConfig(file, { env: {} });
  t.same(config.plugins, ['vipcast-monitor-file']);
  t.same(config.apps[0]!.monitors.map((m) => m.text), ['file:/run/a.ready', 'port:tcp:80']);
  t.same(config.monitors.names(), ['consul', 'exec', 'file', 'http', 'port']);

  writeFileSync(file, `
plugins: [vipcast-monitor-absent, "Not A Name"]
routing: { plugin: dry-run }
apps:
  - { name: a, vip: 198.18.100.70/32, monitors: ["file:/run/a.ready"] }
`);
  const err = await loadConfig(file, { env: {} }).catch((e: VipcastError) => e);
  t.type(err, VipcastError);
  const details = (err as VipcastError).details.join('\n');
  t.match(details, /plugins\[0\]: plugin "vipcast-monitor-absent" is not installed/);
  t.match(details, /plugins\[1\]: "Not A Name" is not an npm package name/);
  t.match(details, /apps\[0\]\.monitors\[0\]: unknown monitor type "file"/);
});
