/**
 * Load-time checks of monitor plugins (issue 12, item 4): a `workerModule` that does not exist, exports no check
 * function or throws when imported fails the plugin's load with a coded error naming plugins[i] and the module (in
 * `vipcast validate` and at start), not at its first check; the module is imported in a worker thread, never on the
 * main thread; params that can't be structured-cloned are refused at parse time with the app's key path; the coded
 * plugin error is what the user sees, once; a name clash with a built-in says so plainly.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { loadPlugin, probeWorkerModule } from '../src/core/plugin-loader.js';
import { MonitorRegistry, builtinMonitors } from '../src/core/monitor-registry.js';
import { VipcastError } from '../src/core/errors.js';
import { loadConfig } from '../src/core/config.js';
import type { MonitorPlugin } from '../src/plugin-api.js';
import { BIN } from './helpers/daemon.js';
import { installFixtureCopy, settledCode } from './helpers/packages.js';


/** Run the vipcast CLI to its exit (bounded: 60 s, far above the second a refused config takes). */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }));
  });
}

t.test('a workerModule that is missing, exports no check or throws on import fails the load with a coded error naming plugins[i] and the module', async (t) => {
  const dir = t.testdir({});
  const missing = installFixtureCopy(dir, 'load-missing-worker-module', 'vipcast-monitor-missing-worker');
  const noCheck = installFixtureCopy(dir, 'load-no-check-export', 'vipcast-monitor-no-check');
  const throws = installFixtureCopy(dir, 'load-worker-throws', 'vipcast-monitor-worker-throws');
  t.equal(await settledCode(loadPlugin('vipcast-monitor-missing-worker', dir, { path: 'plugins[0]' })),
    `VIPCAST_ERR_PLUGIN_SHAPE: plugins[0]: plugin "vipcast-monitor-missing-worker": its workerModule "./dist/check.js" (${join(missing, 'dist/check.js')}) does not exist`);
  t.equal(await settledCode(loadPlugin('vipcast-monitor-no-check', dir, { path: 'plugins[1]' })),
    `VIPCAST_ERR_PLUGIN_SHAPE: plugins[1]: plugin "vipcast-monitor-no-check": its workerModule "./worker.js" (${join(noCheck, 'worker.js')}) exports no check function ` +
    '(want `export async function check`, `exports.check`, or a default export that is the function or has a check function; it exports chek)');
  t.equal(await settledCode(loadPlugin('vipcast-monitor-worker-throws', dir, { path: 'plugins[2]' })),
    `VIPCAST_ERR_PLUGIN_LOAD: plugins[2]: plugin "vipcast-monitor-worker-throws": its workerModule "./check.js" (${join(throws, 'check.js')}) failed to load in a worker thread: fixture: the worker module cannot initialise`);
  // The load error carries what the descriptor said it is: the config leaves its monitor type out of "unknown type".
  const err = await loadPlugin('vipcast-monitor-no-check', dir).catch((e: unknown) => e) as { kind?: string; pluginName?: string };
  t.same({ kind: err.kind, name: err.pluginName }, { kind: 'monitor', name: 'nocheck' });
});

t.test('the worker module is imported in a worker thread, never on the main thread; valid CommonJS, ESM and URL workerModules pass', async (t) => {
  const dir = t.testdir({});
  installFixtureCopy(dir, 'load-worker-isolated', 'vipcast-monitor-isolated');
  installFixtureCopy(dir, 'cjs-ok', 'vipcast-monitor-file');
  installFixtureCopy(dir, 'esm-ok', '@acme/vipcast-monitor-env');
  const marker = (): unknown => (globalThis as Record<string, unknown>).vipcastFixtureWorkerImports;
  const isolated = await loadPlugin('vipcast-monitor-isolated', dir) as MonitorPlugin;
  t.equal(isolated.name, 'isolated');
  t.equal(marker(), undefined, 'check.js was not imported on the main thread');
  t.equal((await loadPlugin('vipcast-monitor-file', dir)).name, 'file', 'CommonJS exports.check');
  t.equal((await loadPlugin('@acme/vipcast-monitor-env', dir)).name, 'envflag', 'ESM: the entry file is its own worker module (import.meta.url)');
  const probe = await probeWorkerModule(isolated.workerModule);
  t.same(probe, { loaded: true, check: true, exports: [] }, 'a default-exported check function is found');
});

t.test('a worker module that passed is probed again once its file changes: a check export removed by an upgrade fails the next load', async (t) => {
  const dir = t.testdir({});
  const dest = installFixtureCopy(dir, 'load-uncloneable-params', 'vipcast-monitor-changes');
  t.equal((await loadPlugin('vipcast-monitor-changes', dir)).name, 'uncloneable');
  t.equal((await loadPlugin('vipcast-monitor-changes', dir)).name, 'uncloneable', 'unchanged: loads again');
  writeFileSync(join(dest, 'check.js'), 'exports.checks = async () => ({ ok: true, reason: "renamed" });\n');
  t.match(await settledCode(loadPlugin('vipcast-monitor-changes', dir, { path: 'plugins[0]' })), /^VIPCAST_ERR_PLUGIN_SHAPE: plugins\[0\]: .*exports no check function .*it exports checks\)$/);
  writeFileSync(join(dest, 'check.js'), 'exports.check = async () => ({ ok: true, reason: "fixed" });\n');
  t.equal((await loadPlugin('vipcast-monitor-changes', dir)).name, 'uncloneable', 'fixed: loads again');
});

t.test('the probe thread contains a worker module that hangs, never settles or exhausts its heap at import: a coded answer, the process goes on', async (t) => {
  const spin = await probeWorkerModule('data:text/javascript,for(;;){}', 1500);
  t.same(spin, { loaded: false, error: 'its import did not finish within 1.5 s' }, 'a busy loop at import: the probe gives up at its time limit');
  const never = await probeWorkerModule('data:text/javascript,await new Promise(() => {});', 10_000);
  t.equal(never.loaded, false);
  t.match(never, { error: /never finished/ }, 'a top-level await that never settles: the thread exits without an answer');
  const leak = await probeWorkerModule('data:text/javascript,const a = []; for (;;) a.push(new Array(1e5).fill(Math.random()));', 60_000);
  t.equal(leak.loaded, false);
  t.match(leak, { code: 'ERR_WORKER_OUT_OF_MEMORY' }, 'an allocation loop at import ends the probe thread, not this process');
});

t.test('params that can\'t be structured-cloned are refused at parse time with the key path, not every interval as "check worker died"', async (t) => {
  const dir = t.testdir({});
  installFixtureCopy(dir, 'load-uncloneable-params', 'vipcast-monitor-uncloneable');
  const plugin = await loadPlugin('vipcast-monitor-uncloneable', dir) as MonitorPlugin;
  const registry = new MonitorRegistry([...builtinMonitors(), plugin]);
  t.throws(() => registry.parse('uncloneable:x', { path: 'apps[2].monitors[0]', baseDir: dir, trusted: true }),
    { code: 'VIPCAST_ERR_VALUE', message: 'apps[2].monitors[0]: params can\'t be passed to a worker: () => true could not be cloned (a monitor\'s parse must return plain data)' });
  // An HTTP registration or Consul tag goes through the same parse: refused there too.
  t.throws(() => registry.parse('uncloneable:y', { path: 'monitor', baseDir: dir, trusted: false }), /^monitor: params can't be passed to a worker/);
  t.equal(registry.parse('port:tcp:80', { path: 'm', baseDir: dir, trusted: true }).text, 'port:tcp:80', 'built-in params pass');

  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `
plugins: [vipcast-monitor-uncloneable]
routing: { plugin: dry-run }
apps:
  - { name: a, vip: 198.18.100.70/32, monitors: ["port:tcp:80"] }
  - { name: c, vip: 198.18.100.72/32, monitors: ["port:tcp:81", "uncloneable:x"] }
`);
  const err = await loadConfig(file, { env: {} }).catch((e: unknown) => e) as VipcastError;
  t.same(err.details, ['apps[1].monitors[1]: params can\'t be passed to a worker: () => true could not be cloned (a monitor\'s parse must return plain data)']);
});

t.test('a package that clashes with a built-in says so plainly; a package listed twice is named once', async (t) => {
  const dir = t.testdir({});
  installFixtureCopy(dir, 'load-builtin-clash', 'vipcast-monitor-port');
  installFixtureCopy(dir, 'cjs-ok', 'vipcast-monitor-file');
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `
plugins: [vipcast-monitor-port, vipcast-monitor-file, vipcast-monitor-file]
routing: { plugin: dry-run }
apps:
  - { name: a, vip: 198.18.100.70/32, monitors: ["port:tcp:80", "file:/run/a.ready"] }
`);
  const err = await loadConfig(file, { env: {} }).catch((e: unknown) => e) as VipcastError;
  t.equal(err.code, 'VIPCAST_ERR_CONFIG');
  t.same(err.details, [
    'plugins[0]: VIPCAST_ERR_PLUGIN_NAME: plugin "vipcast-monitor-port": monitor name "port" is a built-in; a package can\'t replace a built-in monitor: give it another name',
    'plugins[2]: "vipcast-monitor-file" is listed twice (first at plugins[1])',
  ]);
});

t.test('vipcast validate and vipcast run: the coded plugin errors, once each, no "unknown monitor type", exit 2', async (t) => {
  const dir = t.testdir({});
  const missing = installFixtureCopy(dir, 'load-missing-worker-module', 'vipcast-monitor-missing-worker');
  const noCheck = installFixtureCopy(dir, 'load-no-check-export', 'vipcast-monitor-no-check');
  installFixtureCopy(dir, 'load-uncloneable-params', 'vipcast-monitor-uncloneable');
  installFixtureCopy(dir, 'load-builtin-clash', 'vipcast-monitor-port');
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `
plugins: [vipcast-monitor-missing-worker, vipcast-monitor-no-check, vipcast-monitor-uncloneable, vipcast-monitor-port]
agent: { listen_addr: "" }
routing: { plugin: dry-run }
apps:
  - { name: a, vip: 198.18.100.70/32, monitors: ["ghost:x"] }
  - { name: b, vip: 198.18.100.71/32, monitors: ["nocheck:x"] }
  - { name: c, vip: 198.18.100.72/32, monitors: ["uncloneable:x"] }
`);
  const want = `${file}: 4 problems:\n` +
    `  plugins[0]: VIPCAST_ERR_PLUGIN_SHAPE: plugin "vipcast-monitor-missing-worker": its workerModule "./dist/check.js" (${join(missing, 'dist/check.js')}) does not exist\n` +
    `  plugins[1]: VIPCAST_ERR_PLUGIN_SHAPE: plugin "vipcast-monitor-no-check": its workerModule "./worker.js" (${join(noCheck, 'worker.js')}) exports no check function ` +
    '(want `export async function check`, `exports.check`, or a default export that is the function or has a check function; it exports chek)\n' +
    '  plugins[3]: VIPCAST_ERR_PLUGIN_NAME: plugin "vipcast-monitor-port": monitor name "port" is a built-in; a package can\'t replace a built-in monitor: give it another name\n' +
    '  apps[2].monitors[0]: params can\'t be passed to a worker: () => true could not be cloned (a monitor\'s parse must return plain data)\n';
  const validate = await cli(['validate', '-c', file]);
  t.equal(validate.code, 2, 'validate exits 2');
  t.equal(validate.stderr, want, 'validate prints each plugin error with its code, and nothing about unknown monitor types');
  t.equal(validate.stdout, '');

  const run = await cli(['run', '-c', file, '--dry-run']);
  t.equal(run.code, 2, 'the start is refused (exit 2), before any check runs');
  t.equal(run.stderr, want, 'the start prints the same problems');
  t.notMatch(run.stdout, /unknown monitor type|check worker died|app is down/);
});
