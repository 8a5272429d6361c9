/**
 * Routers as plugins against real components (issue 11, items 4 and 5 for routers). The fixture package
 * test/fixtures/plugins/vipcast-router-jsonl is packed with `npm pack` and installed next to the config with
 * `npm install <tarball> --offline` (it depends on nothing); the real `vipcast run` (a child in the lab's node
 * namespace, real Linux host network) routes through it. And a SIGHUP reload swaps the router between dry-run and the
 * built-in gobgp at a real BIRD; a broken router plugin added by reload leaves the running config in force.
 */
import t from 'tap';
import { cpSync, existsSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { labSkip, nsRun, waitFor } from './lab/netns.js';
import { stackFor, type Stack } from './lab/stack.js';
import type { DaemonProcess } from './helpers/daemon.js';
import { installPackedFixture } from './helpers/packages.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/plugins/', import.meta.url));
const skip = labSkip(['gobgpd', 'bird', 'birdc', 'iptables']);

/** The lab's config with its routing section replaced. */
function withRouting(s: Stack, routing: string, extra = ''): string {
  const base = s.baseConfig();
  const start = base.indexOf('routing:\n');
  const end = base.indexOf('bgp:\n', start);
  return `${extra}${base.slice(0, start)}${routing}${base.slice(end)}`;
}

function jsonl(file: string): Array<{ event: string; prefix?: string; reason?: string; [k: string]: unknown }> {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

async function hup(d: DaemonProcess): Promise<{ msg: string; [k: string]: unknown }> {
  const from = d.lines.length;
  d.kill('SIGHUP');
  return d.waitLine((l) => l.component === 'reload' && /^reload(: (done|nothing changed)| refused: the config in force| failed)/.test(l.msg), 30_000, 'reload outcome', from);
}

t.test('a packed third-party router package is used by the real vipcast run: announce, withdraw on a failing check and at shutdown', { skip }, async (t) => {
  const s = await stackFor(t);
  await installPackedFixture(s.dir, 'vipcast-router-jsonl');
  t.ok(existsSync(join(s.dir, 'node_modules', 'vipcast-router-jsonl', 'index.js')), 'installed from the tarball');
  const rib = join(s.dir, 'rib.jsonl');
  const flag = join(s.dir, 'down.flag');
  const file = s.writeConfig(withRouting(s, `routing:\n  plugin: jsonl\n  settings: { file: ${rib} }\n`, 'plugins: [vipcast-router-jsonl]\n') +
    `apps:\n  - { name: web, vip: 198.18.245.1/32, monitors: ["exec:test ! -e ${flag}"] }\n`);
  const d = s.startVipcast(file);
  await waitFor(() => jsonl(rib).some((e) => e.event === 'announce' && e.prefix === '198.18.245.1/32'), 30_000, 'announce in the JSONL file');
  const loaded = await d.waitLine((l) => l.msg === 'config loaded', 30_000, 'config loaded');
  t.equal(loaded.routing, 'jsonl', 'the daemon runs the router routing.plugin names');
  t.ok(jsonl(rib).some((e) => e.event === 'start' && e.local_as === 65001), 'the factory got the bgp section (local AS)');
  t.match(await nsRun(s.node, 'ip', ['-4', 'addr', 'show', 'dev', 'lo']), /198\.18\.245\.1\/32/, 'the real host network put the VIP on lo');
  t.same(await s.routes(), [], 'nothing at BIRD: gobgp is not the router');

  writeFileSync(flag, '');
  await waitFor(() => jsonl(rib).some((e) => e.event === 'withdraw' && e.prefix === '198.18.245.1/32'), 30_000, 'withdraw in the JSONL file when the check fails');
  unlinkSync(flag);
  await waitFor(() => jsonl(rib).filter((e) => e.event === 'announce' && e.prefix === '198.18.245.1/32').length === 2, 30_000, 'announced again when the check passes');

  d.kill('SIGTERM');
  const exit = await d.exited;
  t.equal(exit.code, 0, 'exit 0');
  const events = jsonl(rib).map((e) => e.event);
  t.equal(events.filter((e) => e === 'withdraw').length, 2, 'withdrawn at shutdown too');
  t.equal(events.at(-1), 'close', 'the router is closed last');
  t.equal(jsonl(rib).at(-1)!.routes, 0, 'nothing left in its RIB when closed');
});

t.test('SIGHUP swaps the router dry-run -> gobgp -> dry-run at a real BIRD; a broken router plugin leaves the config in force', { skip }, async (t) => {
  const s = await stackFor(t);
  // The fixture packages of the loader's tests: a factory that throws; a router whose settings are checked.
  for (const [fixture, pkg] of [['router-factory-throws', 'vipcast-router-factory-throws'], ['router-bad-settings', 'vipcast-router-jsonfile']]) {
    mkdirSync(join(s.dir, 'node_modules', pkg), { recursive: true });
    cpSync(join(FIXTURES, fixture), join(s.dir, 'node_modules', pkg), { recursive: true });
  }
  const flag = join(s.dir, 'a-down.flag');
  const apps = `apps:\n  - { name: a, vip: 198.18.246.1/32, monitors: ["exec:test ! -e ${flag}"] }\n  - { name: b, vip: 198.18.246.2/32 }\n`;
  const gobgp = s.baseConfig() + apps;
  const dry = withRouting(s, 'routing:\n  plugin: dry-run\n') + apps;
  const file = s.writeConfig(dry);
  const d = s.startVipcast(file);
  await d.waitLine((l) => l.event === 'route' && l.action === 'announce' && l.prefix === '198.18.246.2/32', 30_000, 'dry-run announce');
  t.same(await s.routes(), [], 'dry-run: nothing at BIRD');

  s.writeConfig(gobgp);
  let sent = performance.now();
  let outcome = await hup(d);
  t.equal(outcome.msg, 'reload: done');
  t.match(outcome.changes, ['routing.plugin: changed (speaker restart)']);
  await waitFor(async () => (await s.routes()).length === 2, 30_000, 'both routes at BIRD after the swap to gobgp');
  t.comment(`dry-run -> gobgp: reload ${String(outcome.duration_ms)} ms, SIGHUP to both routes at BIRD ${Math.round(performance.now() - sent)} ms`);

  // Broken router plugins by reload: the running gobgp generation stays, routes stay at BIRD.
  s.writeConfig(withRouting(s, 'routing:\n  plugin: broken\n', 'plugins: [vipcast-router-factory-throws]\n') + apps);
  outcome = await hup(d);
  t.equal(outcome.msg, 'reload failed while applying: restoring the previous config');
  const failed = d.lines.filter((l) => l.msg === 'reload failed while applying: restoring the previous config').at(-1)!;
  t.match(JSON.stringify(failed.err), /routing\.plugin: router \\"broken\\" \(plugin \\"vipcast-router-factory-throws\\"\) could not be created: fixture: the broken router cannot reach its backend/, 'the error names routing.plugin and the package');
  s.writeConfig(withRouting(s, 'routing:\n  plugin: jsonfile\n  settings: { file: rib.jsonl }\n', 'plugins: [vipcast-router-jsonfile]\n') + apps);
  const from = d.lines.length;
  outcome = await hup(d);
  t.equal(outcome.msg, 'reload refused: the config in force is unchanged');
  t.ok(d.lines.slice(from).some((l) => l.msg === 'reload refused: routing.settings.file: "rib.jsonl" is not an absolute path'), 'bad settings refused with their key path');
  await new Promise((r) => setTimeout(r, 1000));
  t.equal((await s.routes()).length, 2, 'the routes stay at BIRD through both refused reloads');

  // Back to dry-run: gobgp's routes go (the old speaker withdraws before it closes); the apps keep being checked.
  s.writeConfig(dry);
  const after = d.lines.length;
  sent = performance.now();
  outcome = await hup(d);
  t.equal(outcome.msg, 'reload: done');
  await waitFor(async () => (await s.routes()).length === 0, 30_000, 'routes gone from BIRD after the swap to dry-run');
  t.comment(`gobgp -> dry-run: reload ${String(outcome.duration_ms)} ms, SIGHUP to no route at BIRD ${Math.round(performance.now() - sent)} ms`);
  const byDryRun = (action: string) => (l: { event?: string; action?: string; prefix?: string; [k: string]: unknown }) => l.router === 'dry-run' && l.event === 'route' && l.action === action && l.prefix === '198.18.246.1/32';
  await d.waitLine(byDryRun('announce'), 30_000, 'the new dry-run router is given the routes', after);
  writeFileSync(flag, '');
  await d.waitLine(byDryRun('withdraw'), 30_000, 'app a is still checked: its failing check withdraws it', after);
  t.equal(d.child.exitCode, null, 'still running');
});
