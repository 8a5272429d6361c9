/**
 * The example plugin package examples/vipcast-monitor-file-age (issue 12, item 3), as its author and its user handle it:
 * a copy is built with the repo's tsc against vipcast's published types (`vipcast/plugin-api`, `vipcast/testing`,
 * resolved through node_modules/vipcast -> this checkout), its own tests pass under `node --test`, `npm pack` ships the
 * build and no tests, the tarball installs offline next to a config (its optional peer dependency asks no registry),
 * and the real `vipcast check` runs its monitor: a fresh file up, a stale one and a missing one down.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { BIN } from './helpers/daemon.js';

const pexec = promisify(execFile);
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const EXAMPLE = join(REPO, 'examples', 'vipcast-monitor-file-age');
/** Children run without tap's preload (tap puts it in NODE_OPTIONS; it would also load in every worker thread). */
const env = (): NodeJS.ProcessEnv => {
  const e = { ...process.env };
  delete e.NODE_OPTIONS;
  return e;
};

interface Run { code: number; stdout: string; stderr: string }
async function run(cmd: string, args: string[], cwd: string): Promise<Run> {
  try {
    const { stdout, stderr } = await pexec(cmd, args, { cwd, env: env(), timeout: 120_000, maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number | string; stdout: string; stderr: string };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** node_modules/vipcast in `dir` -> this checkout (built: the test runs from its dist/), as a host's link to the installed vipcast. */
function linkVipcast(dir: string): void {
  mkdirSync(join(dir, 'node_modules'), { recursive: true });
  symlinkSync(REPO, join(dir, 'node_modules', 'vipcast'), 'dir');
}

t.test('the example plugin builds, passes its own node --test tests, packs, installs, and vipcast check runs its monitor', async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'vipcast-example-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));

  // The author's side: a copy of the sources (no dist/ or node_modules/ from the checkout), vipcast and @types/node
  // resolvable as a devDependency would make them.
  const pkg = join(work, 'pkg');
  cpSync(EXAMPLE, pkg, { recursive: true, filter: (src) => !/[/\\](dist|node_modules)$/.test(src) });
  linkVipcast(pkg);
  mkdirSync(join(pkg, 'node_modules', '@types'));
  symlinkSync(join(REPO, 'node_modules', '@types', 'node'), join(pkg, 'node_modules', '@types', 'node'), 'dir');
  const tsc = await run(process.execPath, [join(REPO, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], pkg);
  t.equal(tsc.code, 0, `tsc builds it against vipcast's types: ${tsc.stdout}${tsc.stderr}`);
  t.same(readdirSync(join(pkg, 'dist', 'src')).filter((f) => f.endsWith('.js')).sort(), ['check.js', 'index.js', 'params.js']);

  const own = await run(process.execPath, ['--test', join('dist', 'test')], pkg);
  t.equal(own.code, 0, `its own tests pass (node --test):\n${own.code === 0 ? '' : own.stdout}`);
  t.match(own.stdout, /^# pass ([1-9]\d*)$/m, 'they ran');
  t.match(own.stdout, /^# fail 0$/m);

  const packDir = join(work, 'pack');
  mkdirSync(packDir);
  // Built above with the repo's tsc: the prepack script's `tsc` is not on this temp dir's PATH.
  const pack = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', packDir], pkg);
  t.equal(pack.code, 0, `npm pack: ${pack.stderr}`);
  const [packed] = JSON.parse(pack.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  const files = packed!.files.map((f) => f.path).sort();
  t.same(files, ['README.md', 'dist/src/check.d.ts', 'dist/src/check.js', 'dist/src/index.d.ts', 'dist/src/index.js', 'dist/src/params.d.ts', 'dist/src/params.js', 'package.json'], 'the build, its types and the README; no sources or tests');

  // The user's side: the tarball installed offline next to the config (the optional peer asks no registry), and the
  // folder's link to the installed vipcast, made after npm (which would prune a link it did not record).
  const site = join(work, 'etc-vipcast');
  mkdirSync(site);
  writeFileSync(join(site, 'package.json'), '{ "name": "vipcast-site", "private": true }\n');
  const install = await run('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', '--offline', join(packDir, packed!.filename)], site);
  t.equal(install.code, 0, `npm install of the tarball: ${install.stderr}`);
  linkVipcast(site);

  writeFileSync(join(site, 'fresh'), 'ok\n');
  writeFileSync(join(site, 'stale'), 'ok\n');
  const old = new Date(Date.now() - 600_000);
  utimesSync(join(site, 'stale'), old, old);
  const file = join(site, 'vipcast.yaml');
  writeFileSync(file, `bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
plugins: [vipcast-monitor-file-age]
apps:
  - { name: fresh, vip: 198.18.125.1/32, monitors: ["file-age:1m:fresh"] }
  - { name: stale, vip: 198.18.125.2/32, monitors: [{ type: file-age, path: stale, max_age: 1m }] }
  - { name: gone, vip: 198.18.125.3/32, monitors: ["file-age:30s:${join(site, 'gone')}"] }
`);
  const validate = await run(process.execPath, [BIN, 'validate', '-c', file], site);
  t.equal(validate.code, 0, `vipcast validate: ${validate.stdout}${validate.stderr}`);
  t.match(validate.stdout, /plugins vipcast-monitor-file-age/);

  const check = await run(process.execPath, [BIN, 'check', '-c', file, '--json'], site);
  t.equal(check.code, 1, `vipcast check: exit 1, two apps down (${check.stderr})`);
  const report = JSON.parse(check.stdout) as { results: Array<{ app: string; monitor: string; ok: boolean; reason: string }> };
  t.same(report.results.map((r) => [r.app, r.monitor, r.ok]), [
    ['fresh', `file-age:1m:${join(site, 'fresh')}`, true],
    ['stale', `file-age:1m:${join(site, 'stale')}`, false],
    ['gone', `file-age:30s:${join(site, 'gone')}`, false],
  ], 'relative paths from the config\'s folder, the canonical text prefixed once');
  t.match(report.results[0]!.reason, /modified \d+ m?s ago \(max 1m\)$/);
  t.match(report.results[1]!.reason, /modified 6\d\d s ago \(max 1m\)$/);
  t.equal(report.results[2]!.reason, `${join(site, 'gone')}: missing`);

  const fresh = await run(process.execPath, [BIN, 'check', '-c', file, 'fresh'], site);
  t.equal(fresh.code, 0, 'vipcast check fresh: exit 0');
  t.match(fresh.stdout, /^fresh\s+file-age:1m:\S+\s+up\s+[\d.]+\s+\S+ modified \d+ m?s ago \(max 1m\)$/m, 'the table row');
});
