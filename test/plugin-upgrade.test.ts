/**
 * A plugin package upgraded on disk while vipcast runs (issue 11, item 5). Node keeps the module it imported first,
 * so the running version goes on; a reload applies everything else and says the package needs a restart, naming both
 * versions. Decided: "restart needed", not a fresh load (a fresh ESM import of the same file is the cached module).
 */
import t from 'tap';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/core/config.js';
import { Daemon } from '../src/core/daemon.js';
import { silentLogger } from '../src/core/logger.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/plugins/', import.meta.url));
const PKG = 'vipcast-monitor-file';

function install(dir: string): string {
  const dest = join(dir, 'node_modules', PKG);
  mkdirSync(dest, { recursive: true });
  cpSync(join(FIXTURES, 'cjs-ok'), dest, { recursive: true });
  return dest;
}

function bump(dest: string, version: string): void {
  const file = join(dest, 'package.json');
  writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')), version }));
}

t.test('loadConfig: a package whose installed version changed since this process imported it is listed as stale', async (t) => {
  const dir = t.testdir({});
  const dest = install(dir);
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `plugins: [${PKG}]\nrouting: { plugin: dry-run }\napps:\n  - { name: a, vip: 198.18.240.1/32, monitors: ["file:${join(dir, 'ready')}"] }\n`);
  const first = await loadConfig(file, { env: {}, routingPlugin: 'dry-run' });
  t.same(first.registry.stale(), [], 'nothing stale at first');
  t.same((await loadConfig(file, { env: {}, routingPlugin: 'dry-run' })).registry.stale(), [], 'the same version again: nothing stale');
  bump(dest, '1.3.0');
  t.same((await loadConfig(file, { env: {}, routingPlugin: 'dry-run' })).registry.stale(), [{ path: 'plugins[0]', pkg: PKG, running: '1.2.0', installed: '1.3.0' }]);
});

t.test('reload after an npm upgrade of a plugin: the other changes apply, the package is reported as needing a restart, its checks go on', async (t) => {
  const dir = t.testdir({});
  const dest = install(dir);
  const ready = join(dir, 'ready');
  writeFileSync(ready, '');
  const file = join(dir, 'vipcast.yaml');
  const yaml = (apps: string) => `plugins: [${PKG}]\nagent: { listen_addr: "", monitor_interval: 100ms }\nrouting: { plugin: dry-run }\nbgp: { local_as: 65001, peers: [] }\napps:\n${apps}`;
  writeFileSync(file, yaml(`  - { name: a, vip: 198.18.240.2/32, monitors: ["file:${ready}"] }\n`));
  const d = new Daemon({ configFile: file, dryRun: true, log: silentLogger(), env: {} });
  t.teardown(() => d.stop('test'));
  await d.start();
  const first = await d.requestReload('test');
  t.equal(first.ok, true, first.errors.join('; '));
  t.same(first.restartNeeded, [], 'nothing to restart for before the upgrade');
  bump(dest, '1.3.0');
  writeFileSync(file, yaml(`  - { name: a, vip: 198.18.240.2/32, monitors: ["file:${ready}"] }\n  - { name: b, vip: 198.18.240.3/32, monitors: ["file:${ready}"] }\n`));
  const second = await d.requestReload('test');
  t.equal(second.ok, true, second.errors.join('; '));
  t.same(second.restartNeeded, [`plugins[0] (${PKG} 1.2.0 runs; 1.3.0 is installed)`]);
  t.ok(second.changes.some((c) => /b/.test(c)), `the new app is applied: ${second.changes.join('; ')}`);
  // A package's checks run on a worker of their own, started at its first check: under tap's --import hooks (which
  // every worker thread loads too) on the loaded 2-core box that boot takes seconds.
  const since = performance.now();
  for (let i = 0; i < 600 && d.health.get('b')?.state !== 'up'; i++) await new Promise((r) => setTimeout(r, 50));
  t.equal(d.health.get('b')?.state, 'up', `its checks (the running version) go on for the new app (up ${Math.round(performance.now() - since)} ms after the reload)`);
});
