/**
 * The plugin authoring kit (issue 12, item 3): `defineMonitor`/`defineCheck` (vipcast/plugin-api) return what they are
 * given, typed; `runMonitorOnce` (vipcast/testing) parses a spec with a plugin and runs its check once in a real worker
 * thread, throwing the coded errors vipcast gives (package, spec, uncloneable params). And the contract's two rules the
 * issue found documented two ways: `parse().text` is the part after `NAME:` and vipcast always adds the prefix (the
 * contract said "canonical form `port:tcp:53`", so plugins returned the full form and logs showed
 * `tcp-banner:tcp-banner:...`), and a structured spec reaches `parse` without `type`.
 */
import t from 'tap';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { defineCheck, defineMonitor, type CheckFunction, type MonitorPlugin } from '../src/plugin-api.js';
import { runMonitorOnce } from '../src/testing.js';
import { MonitorRegistry } from '../src/core/monitor-registry.js';
import { VipcastError } from '../src/core/errors.js';

const ctx = { path: 'apps[0].monitors[0]', baseDir: '/', trusted: true };

/** A monitor whose parse records what it got and returns `text` as told. */
function recorder(name: string, text: (input: unknown) => string): { plugin: MonitorPlugin; seen: unknown[] } {
  const seen: unknown[] = [];
  const plugin: MonitorPlugin = {
    kind: 'monitor', name, version: '1.0.0', apiVersion: '^1.0.0', workerModule: 'file:///nonexistent/check.js',
    parse(input) {
      seen.push(input);
      return { params: {}, text: text(input) };
    },
  };
  return { plugin, seen };
}

t.test('parse().text is the part after NAME: vipcast always adds the prefix, as the contract now says', async (t) => {
  const plain = recorder('banner', (input) => `tcp:${String(input)}`);
  const empty = recorder('always', () => '');
  const registry = new MonitorRegistry([plain.plugin, empty.plugin]);
  t.equal(registry.parse('banner:2222', ctx).text, 'banner:tcp:2222', 'prefixed by vipcast');
  t.equal(registry.parse('always', ctx).text, 'always', 'an empty text is the bare name');
  t.equal(new MonitorRegistry().parse('port:tcp:53', ctx).text, 'port:tcp:53', 'the built-ins unchanged');
  // A text that itself starts with NAME: is prefixed too: that is why a plugin can't return the full form.
  t.equal(new MonitorRegistry().parse('http:http://127.0.0.1:8080/health', ctx).text, 'http:http://127.0.0.1:8080/health');
});

t.test('a structured spec reaches parse without its type key (type picked the plugin)', async (t) => {
  const r = recorder('banner', () => 'x');
  new MonitorRegistry([r.plugin]).parse({ type: 'banner', host: '198.18.0.1', port: 22 }, ctx);
  t.same(r.seen, [{ host: '198.18.0.1', port: 22 }]);
  t.notOk(Object.hasOwn(r.seen[0] as object, 'type'), 'no "type" key');
  t.equal(new MonitorRegistry().parse({ type: 'port', host: '127.0.0.1', port: 53 }, ctx).text, 'port:connect:127.0.0.1:53', 'built-in structured form unchanged');
});

interface AgeParams { readonly path: string; readonly maxAgeMs: number }

t.test('defineMonitor and defineCheck return the very object they are given, typed with Params', async (t) => {
  const descriptor = {
    kind: 'monitor' as const, name: 'age', version: '1.0.0', apiVersion: '^1.0.0', workerModule: './check.js',
    parse: (input: string | Record<string, unknown>) => ({ params: { path: String(input), maxAgeMs: 5 }, text: String(input) }),
  };
  const typed: MonitorPlugin<AgeParams> = defineMonitor<AgeParams>(descriptor);
  t.equal(typed, descriptor, 'same object');
  t.same(Object.keys(typed), Object.keys(descriptor), 'nothing added');
  const fn = async (params: AgeParams) => ({ ok: params.maxAgeMs > 0, reason: params.path });
  const check: CheckFunction<AgeParams> = defineCheck<AgeParams>(fn);
  t.equal(check, fn, 'same function');
  // Compile-time: Params flows into parse's return and the check's argument.
  // @ts-expect-error parse must return AgeParams
  defineMonitor<AgeParams>({ ...descriptor, parse: () => ({ params: { path: 1 }, text: '' }) });
  // @ts-expect-error params is AgeParams, not a string
  defineCheck<AgeParams>(async (params) => ({ ok: params.length > 0, reason: '' }));
  const untyped: MonitorPlugin = typed;
  t.equal(untyped.name, 'age', 'a typed descriptor is a MonitorPlugin (what the registry holds)');
});

/** A monitor package in `dir`: ESM, `workerModule` relative to its entry file. */
function writePackage(dir: string, opts: { parse?: string; check?: string } = {}): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'vipcast-monitor-kit', version: '1.2.3', type: 'module', main: 'index.js' }));
  writeFileSync(join(dir, 'index.js'), `export default {
  kind: 'monitor', name: 'kit', version: '1.2.3', apiVersion: '^1.0.0', workerModule: './check.js',
  parse(input, ctx) {
    ${opts.parse ?? `if (typeof input !== 'string' || input === '') throw new Error(ctx.path + ': want kit:up or kit:down');
    return { params: { want: input }, text: input };`}
  },
};
`);
  writeFileSync(join(dir, 'check.js'), `import { isMainThread, threadId } from 'node:worker_threads';
export async function check(params, ctx) {
  ${opts.check ?? `return { ok: params.want === 'up', reason: 'main=' + isMainThread + ' thread=' + threadId + ' timeout=' + ctx.timeoutMs };`}
}
`);
  return dir;
}

t.test('runMonitorOnce runs a package\'s parse and check once, in a worker thread, and gives the result and its duration', async (t) => {
  const dir = writePackage(join(t.testdir(), 'kit'));
  const up = await runMonitorOnce(dir, 'kit:up', { timeoutMs: 2000 });
  t.equal(up.ok, true);
  t.match(up.reason, /^main=false thread=[1-9]\d* timeout=2000$/, 'ran in a worker thread, with the timeout given');
  t.equal(up.monitor.text, 'kit:up');
  t.equal(up.monitor.type, 'kit');
  t.equal(up.monitor.workerModule, pathToFileURL(join(dir, 'check.js')).href, 'workerModule resolved from the entry file, as the loader does');
  t.ok(up.durationMs > 0 && up.durationMs < 30_000, `durationMs ${up.durationMs}`);
  const down = await runMonitorOnce('./kit', 'kit:down', { baseDir: join(dir, '..') });
  t.equal(down.ok, false, 'a relative path from baseDir; down is a result, not an error');
  t.match(down.reason, /timeout=5000$/, 'default timeout 5000 ms');
});

t.test('runMonitorOnce takes a descriptor object with an absolute workerModule; a relative one is refused with the way out', async (t) => {
  const dir = writePackage(join(t.testdir(), 'kit'));
  const desc = (await import(pathToFileURL(join(dir, 'index.js')).href) as { default: MonitorPlugin }).default;
  const res = await runMonitorOnce({ ...desc, workerModule: pathToFileURL(join(dir, 'check.js')).href }, { type: 'kit' }, { timeoutMs: 2000 }).catch((e: unknown) => e);
  t.type(res, VipcastError, 'parse threw: a plain Error from the plugin becomes a coded error');
  t.equal((res as VipcastError).code, 'VIPCAST_ERR_VALUE');
  t.equal((res as VipcastError).message, 'monitor: want kit:up or kit:down', 'with the key path, as vipcast validate prints it');
  const ok = await runMonitorOnce({ ...desc, workerModule: join(dir, 'check.js') }, 'kit:up');
  t.equal(ok.ok, true, 'an absolute file path works');
  await t.rejects(runMonitorOnce(desc, 'kit:up'), { code: 'VIPCAST_ERR_PLUGIN_SHAPE', message: /workerModule "\.\/check\.js" is relative.*pass the package folder instead/ });
  await t.rejects(runMonitorOnce({ ...desc, apiVersion: '^2.0.0' }, 'kit:up'), { code: 'VIPCAST_ERR_PLUGIN_VERSION', message: /needs plugin API \^2\.0\.0; this vipcast provides 1\.0\.0/ });
});

t.test('runMonitorOnce: params that structured clone refuses are a coded error naming the key, before any worker runs', async (t) => {
  const dir = writePackage(join(t.testdir(), 'kit'), { parse: `return { params: { want: input, opts: { retry: [1, () => 2] } }, text: input };` });
  await t.rejects(runMonitorOnce(dir, 'kit:up', { path: 'apps[0].monitors[1]' }), {
    code: 'VIPCAST_ERR_VALUE',
    // The config's own check (monitor-registry) or the kit's, which names the key inside params.
    message: /^apps\[0\]\.monitors\[1\]: [^]*could not be cloned/,
  });
});

t.test('runMonitorOnce: a package that is missing, not a monitor, or without its workerModule gives vipcast\'s coded plugin errors', async (t) => {
  const dir = t.testdir();
  await t.rejects(runMonitorOnce('vipcast-monitor-nope', 'nope:x', { baseDir: dir }), { code: 'VIPCAST_ERR_PLUGIN_NOT_FOUND', message: /^runMonitorOnce: plugin "vipcast-monitor-nope" is not installed/ });
  const other = join(dir, 'router');
  mkdirSync(other);
  writeFileSync(join(other, 'package.json'), JSON.stringify({ name: 'vipcast-router-x', version: '1.0.0', main: 'index.js' }));
  writeFileSync(join(other, 'index.js'), `module.exports = { kind: 'router', name: 'x', version: '1.0.0', apiVersion: '^1.0.0', parseSettings: () => ({}), sameSettings: () => true, create() {} };\n`);
  await t.rejects(runMonitorOnce(other, 'x:y'), { code: 'VIPCAST_ERR_PLUGIN_SHAPE', message: /is a router plugin \("x"\), not a monitor/ });
  // The loader's own load-time checks apply: a workerModule that is not there fails at load, not at the first check.
  const noWorker = writePackage(join(dir, 'no-worker'));
  rmSync(join(noWorker, 'check.js'));
  await t.rejects(runMonitorOnce(noWorker, 'kit:up'), { code: 'VIPCAST_ERR_PLUGIN_SHAPE', message: /workerModule.*does not exist/ });
});

t.test('runMonitorOnce: a check that never settles is answered down at its timeout, and the pool is closed', async (t) => {
  const dir = writePackage(join(t.testdir(), 'kit'), { check: `return new Promise(() => {});` });
  const started = performance.now();
  const res = await runMonitorOnce(dir, 'kit:up', { timeoutMs: 300 });
  t.equal(res.ok, false);
  t.equal(res.reason, 'timed out after 300 ms');
  t.ok(performance.now() - started < 20_000, 'returned (the worker did not hold it)');
  t.ok(res.durationMs >= 300, `durationMs ${res.durationMs} counts the timeout`);
});

t.test('runMonitorOnce runs the check under the memory limits the daemon gives a plugin\'s worker: a leak is a down result, not a dead test process', async (t) => {
  const dir = writePackage(join(t.testdir(), 'kit'), {
    check: `const kept = [];
  for (;;) {
    const chunk = [];
    for (let i = 0; i < 100_000; i++) chunk.push({ i, s: 'leak-' + i });
    kept.push(chunk);
    await new Promise((r) => setImmediate(r));
  }`,
  });
  const r = await runMonitorOnce(dir, 'kit:up', { timeoutMs: 20_000 });
  t.equal(r.ok, false);
  t.equal(r.reason, 'check worker ran out of memory');
  t.ok(process.memoryUsage().rss < 1024 * 1024 * 1024, `this process stayed small (rss ${Math.round(process.memoryUsage().rss / 1048576)} MB)`);
});
