/**
 * A discovery source added by a reload gets the first-delivery hold a source gets at start (issue 11, item 4 for
 * discovery): until it has delivered its first apps (or 30 s passed), paths, addresses and rules of no known app are
 * left alone, since they may be its apps. Before, only start-time sources were held: an app moved in one reload from
 * the config file to a new discovery source was withdrawn (and its address removed) the moment the config's apps were
 * replaced, and announced again once the new source delivered it: a flap of a healthy service.
 *
 * The real `vipcast run --dry-run` (a child process; routes from its JSON log lines) with the jsonfile fixture package
 * packed and installed next to the config, whose file is missing at the reload and written 2 s later (a slow first
 * delivery).
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DaemonProcess, freePort, type LogLine, DRY_RUN_BGP } from './helpers/daemon.js';
import { installPackedFixture } from './helpers/packages.js';

const isRoute = (action: string, prefix: string) => (l: LogLine) => l.event === 'route' && l.action === action && l.prefix === prefix;
const isReloadOutcome = (l: LogLine) => l.component === 'reload' && /^reload(: (done|nothing changed)| refused| failed)/.test(l.msg);

t.test('a reload that moves an app from the config file to a new discovery source withdraws nothing while the source has not delivered; then strays go', async (t) => {
  const dir = t.testdir();
  await installPackedFixture(dir, 'vipcast-discovery-jsonfile');
  const apiPort = await freePort();
  const appsFile = join(dir, 'apps.json');
  const file = join(dir, 'vipcast.yaml');
  const head = `
agent:
  listen_addr: 127.0.0.1:${apiPort}
  monitor_interval: 200ms
  remove_vip_on_withdraw: true
${DRY_RUN_BGP}plugins: [vipcast-discovery-jsonfile]
`;
  // 'moving' goes from the file to the jsonfile source; 'gone' leaves the file (a stray once the source delivered).
  writeFileSync(file, `${head}apps:\n  - name: moving\n    vip: 198.18.100.80/32\n  - name: gone\n    vip: 198.18.100.81/32\n`);
  const d = new DaemonProcess(['run', '-c', file], { plain: true });
  t.teardown(() => d.stop());
  await d.waitLine(isRoute('announce', '198.18.100.80/32'), 30_000, 'moving announced (config file)');
  await d.waitLine(isRoute('announce', '198.18.100.81/32'), 30_000, 'gone announced (config file)');

  let from = d.lines.length;
  writeFileSync(file, `${head}discovery:\n  - plugin: jsonfile\n    file: ${appsFile}\n    poll_ms: 100\n`);
  d.kill('SIGHUP');
  const done = await d.waitLine(isReloadOutcome, 30_000, 'reload outcome', from);
  t.equal(done.msg, 'reload: done');
  // The source's first delivery comes 2 s after the reload: its file appears only then.
  await new Promise((r) => setTimeout(r, 2000));
  const between = d.lines.slice(from);
  t.notOk(between.some((l) => l.event === 'route' && l.action === 'withdraw'), 'no route withdrawn while the new source has not delivered');
  t.notOk(between.some((l) => l.event === 'host' && l.action === 'remove-vip'), 'no address removed meanwhile');

  from = d.lines.length;
  writeFileSync(appsFile, JSON.stringify([{ name: 'moving', vip: '198.18.100.80/32' }]));
  const delivered = await d.waitLine((l) => l.discovery === 'jsonfile' && l.msg === 'discovery jsonfile: apps updated', 10_000, 'the first delivery', from);
  t.same(delivered.apps, ['moving']);
  // The hold ends with the delivery: 'gone' is a stray now and goes; 'moving' is the source's and stays.
  await d.waitLine(isRoute('withdraw', '198.18.100.81/32'), 10_000, 'gone withdrawn once the source delivered', from);
  await new Promise((r) => setTimeout(r, 1000));
  t.notOk(d.lines.some((l) => isRoute('withdraw', '198.18.100.80/32')(l)), 'moving was never withdrawn');
  const status = JSON.parse(await (await fetch(`http://127.0.0.1:${apiPort}/status`)).text()) as { apps: Array<{ name: string; source: string; state: string }> };
  t.same(status.apps.map((a) => [a.name, a.source, a.state]), [['moving', 'jsonfile', 'up']], '/status: moving, from jsonfile, up');
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0, 'exit 0');
});
