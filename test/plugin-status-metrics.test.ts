/**
 * Plugins are visible (issue 12, item 5): /status lists the loaded plugins of every family (name, kind, version,
 * package, built-in or package) and /metrics has `vipcast_plugin_info`, both following a reload; checks that time out
 * are counted as `result="timeout"` in `vipcast_checks_total`, apart from plain failures. The real CLI in dry-run.
 */
import t from 'tap';
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DaemonProcess, freePort } from './helpers/daemon.js';
import { checkOutcome, Metrics } from '../src/core/metrics.js';
import { pluginList } from '../src/core/daemon-status.js';
import { PluginRegistry } from '../src/core/plugin-registry.js';
import { builtinPlugins } from '../src/plugins/builtins.js';
import { loadPlugin } from '../src/core/plugin-loader.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/plugins/', import.meta.url));

function install(dir: string, fixture: string, pkgName: string): void {
  const dest = join(dir, 'node_modules', pkgName);
  mkdirSync(dest, { recursive: true });
  cpSync(join(FIXTURES, fixture), dest, { recursive: true });
}

/** The counter lines of one metric family, as { 'labels': value }. */
function samples(text: string, name: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}\\{(.*)\\} (\\S+)$`).exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

t.test('checkOutcome: pass; a failure answered before its budget is spent is fail; one answered at or past it (or flagged) is timeout', async (t) => {
  const rows: ReadonlyArray<readonly [{ ok: boolean; durationMs: number; timedOut?: boolean }, number, string]> = [
    [{ ok: true, durationMs: 5000 }, 1000, 'pass'],
    [{ ok: false, durationMs: 3.2 }, 1000, 'fail'],
    [{ ok: false, durationMs: 990 }, 1000, 'fail'],
    [{ ok: false, durationMs: 998.5 }, 1000, 'timeout'],
    [{ ok: false, durationMs: 1000.4 }, 1000, 'timeout'],
    [{ ok: false, durationMs: 3050 }, 1000, 'timeout'],
    [{ ok: false, durationMs: 10, timedOut: true }, 1000, 'timeout'],
    [{ ok: false, durationMs: 9.5 }, 10, 'timeout'],
    [{ ok: false, durationMs: 8.5 }, 10, 'fail'],
  ];
  for (const [r, timeoutMs, want] of rows) t.equal(checkOutcome(r, timeoutMs), want, `${JSON.stringify(r)} of ${timeoutMs} ms`);
  const m = new Metrics();
  m.countCheck('port', { ok: false, durationMs: 1001 }, 1000);
  m.countCheck('port', { ok: false, durationMs: 1 }, 1000);
  t.same(samples(await m.registry.metrics(), 'vipcast_checks_total'), { 'type="port",result="timeout"': 1, 'type="port",result="fail"': 1 });
});

t.test('pluginList: built-ins with package null, packages with their name, a package upgraded on disk with the installed version', async (t) => {
  const dir = t.testdir({});
  install(dir, 'cjs-ok', 'vipcast-monitor-file');
  install(dir, 'router-cjs', 'vipcast-router-memory');
  const registry = new PluginRegistry({ builtins: builtinPlugins() });
  registry.add(await loadPlugin('vipcast-monitor-file', dir), 'vipcast-monitor-file', 'plugins[0]');
  registry.add(await loadPlugin('vipcast-router-memory', dir), 'vipcast-router-memory', 'plugins[1]');
  registry.addStale({ path: 'plugins[1]', pkg: 'vipcast-router-memory', running: '0.1.0', installed: '0.2.0' });
  const list = pluginList(registry);
  t.same(list.map((p) => `${p.kind}:${p.name}`), ['monitor:consul', 'monitor:exec', 'monitor:file', 'monitor:http', 'monitor:port',
    'discovery:config', 'discovery:consul', 'router:dry-run', 'router:gobgp', 'router:memory'], 'by kind, then name');
  t.same(list.find((p) => p.name === 'file'), { kind: 'monitor', name: 'file', version: '1.2.0', package: 'vipcast-monitor-file', source: 'package' });
  t.match(list.find((p) => p.name === 'memory'), { kind: 'router', package: 'vipcast-router-memory', source: 'package', installed: '0.2.0' });
  t.match(list.find((p) => p.name === 'port'), { kind: 'monitor', package: null, source: 'built-in', version: /^\d+\.\d+\.\d+/ });
  t.notOk('installed' in list.find((p) => p.name === 'file')!, 'no installed version while the running one is the one on disk');
});

t.test('through the daemon: /status and /metrics list the plugins (and follow a reload); a timed-out check counts as timeout, a failed one as fail', async (t) => {
  const dir = t.testdir({ ready: '' });
  install(dir, 'cjs-ok', 'vipcast-monitor-file');
  const port = await freePort();
  const file = join(dir, 'vipcast.yaml');
  const body = (plugins: string, apps: string): string => `${plugins}
agent: { listen_addr: "127.0.0.1:${port}", monitor_interval: 10s, check_timeout: 10s }
routing: { plugin: dry-run }
apps:
  - { name: slow, vip: 198.18.100.70/32, monitors: ["exec:sleep 30"], monitor_interval: 3s, check_timeout: 1s }
${apps}`;
  writeFileSync(file, body('plugins: [vipcast-monitor-file]', `  - { name: up, vip: 198.18.100.71/32, monitors: ["file:${join(dir, 'ready')}"] }
  - { name: missing, vip: 198.18.100.72/32, monitors: ["file:${join(dir, 'absent')}"] }
`));
  const d = new DaemonProcess(['run', '-c', file, '--dry-run']);
  t.teardown(() => d.stop());
  await d.waitLine((l) => l.msg === 'app is down' && l.app === 'slow', 30_000, 'the slow app down (its first check timed out after 1 s)');
  await d.waitLine((l) => l.event === 'route' && l.action === 'announce' && l.prefix === '198.18.100.71/32', 30_000, 'up announced');
  await d.waitLine((l) => l.msg === 'app is down' && l.app === 'missing', 30_000, 'missing down');
  const base = `http://127.0.0.1:${port}`;

  const status = await (await fetch(`${base}/status`)).json() as { plugins: Array<Record<string, unknown>> };
  t.same(status.plugins.find((p) => p.name === 'file'), { kind: 'monitor', name: 'file', version: '1.2.0', package: 'vipcast-monitor-file', source: 'package' });
  t.same(status.plugins.find((p) => p.name === 'port'), { kind: 'monitor', name: 'port', version: '1.0.0', package: null, source: 'built-in' });
  t.same(status.plugins.filter((p) => p.kind === 'router').map((p) => p.name), ['dry-run', 'gobgp']);

  const metrics = await (await fetch(`${base}/metrics`)).text();
  const info = samples(metrics, 'vipcast_plugin_info');
  t.equal(info['kind="monitor",name="file",version="1.2.0",package="vipcast-monitor-file",source="package"'], 1);
  t.equal(info['kind="monitor",name="exec",version="1.0.0",package="",source="built-in"'], 1);
  t.equal(Object.keys(info).length, status.plugins.length, 'one info series per plugin /status lists');
  const checks = samples(metrics, 'vipcast_checks_total');
  t.ok(checks['type="exec",result="timeout"']! >= 1, `sleep 30 with a 1 s timeout counts as timeout (${JSON.stringify(checks)})`);
  t.equal(checks['type="exec",result="fail"'], undefined, 'and not as a plain failure');
  t.ok(checks['type="file",result="fail"']! >= 1, 'a missing file is a plain failure');
  t.ok(checks['type="file",result="pass"']! >= 1);
  t.equal(checks['type="file",result="timeout"'], undefined);

  // A reload without the package: it leaves both lists.
  writeFileSync(file, body('', ''));
  const reload = await fetch(`${base}/reload`, { method: 'POST' });
  t.equal(reload.status, 200, `reload accepted (${await reload.clone().text()})`);
  const after = await (await fetch(`${base}/status`)).json() as { plugins: Array<Record<string, unknown>> };
  t.equal(after.plugins.find((p) => p.name === 'file'), undefined, '/status: the package is gone');
  t.notMatch(await (await fetch(`${base}/metrics`)).text(), /vipcast_plugin_info\{[^}]*name="file"/, '/metrics: its series is gone');
});
