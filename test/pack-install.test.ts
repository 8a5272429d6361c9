/**
 * vipcast as an npm package (issue 12, item 1). A copy of the working tree without dist/ is packed with the real
 * `npm pack` (its prepack script builds), the tarball's file list is checked (the build, proto files, the example
 * config and the systemd units; no tests, fixtures, test or bench builds, sources or source maps), and it is installed
 * with `npm install -g --prefix TMP` as on a host: `TMP/bin/vipcast` answers `--version` and validates the bundled
 * example. A plugin package (test/fixtures/plugins/install-monitor-flag: ESM, an optional peer dependency on vipcast,
 * `vipcast/plugin-api` imported at run time in the main thread and in its worker) is packed and installed next to a
 * config: its install never needs vipcast from a registry, it loads once the config folder links the installed vipcast
 * (`npm install "$(npm root -g)/vipcast"`, README "Install on a host"), the link survives a reinstall, and the
 * installed `vipcast run --dry-run` checks, announces and withdraws with the plugin's monitor, then exits 0 at
 * SIGTERM. The package's types (`vipcast`, `vipcast/plugin-api`) compile in a TypeScript consumer, and the daemon's
 * internals are not importable. Needs npm and its cache from `npm ci` (the global install may ask the registry for
 * package metadata: --prefer-offline).
 */
import t from 'tap';
import { cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const pexec = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FIXTURE = join(ROOT, 'test/fixtures/plugins/install-monitor-flag');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; bin: Record<string, string> };

/**
 * The environment of a shell on a host: no tap preload in NODE_OPTIONS, nothing of an `npm test` run's script
 * environment that would point npm at this project (its prefixes, lifecycle and package variables).
 */
const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_OPTIONS' &&
  !/^npm_(lifecycle_|package_|command$|config_(local_prefix|prefix|global_prefix)$)/i.test(k)));

interface Run { code: number; stdout: string; stderr: string }
/** Run a command (argument array, no shell); its exit code and output, never a throw for a non-zero exit. */
async function run(cmd: string, args: string[], opts: { cwd?: string; timeout?: number } = {}): Promise<Run> {
  try {
    const r = await pexec(cmd, args, { cwd: opts.cwd, env, timeout: opts.timeout ?? 60_000, maxBuffer: 16 << 20 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: unknown; stdout?: string; stderr?: string; message: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: `${e.stderr ?? ''}${typeof e.code === 'number' ? '' : e.message}` };
  }
}
const npm = (args: string[], cwd: string, timeout?: number) => run('npm', ['--no-audit', '--no-fund', '--no-update-notifier', ...args], { cwd, timeout });
const show = (r: Run) => `exit ${r.code}\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`;

const work = mkdtempSync(join(tmpdir(), 'vipcast-pack-install-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const packDir = join(work, 'pack');
const prefix = join(work, 'prefix');
const site = join(work, 'site');
const installed = join(prefix, 'lib/node_modules/vipcast');
const vipcast = join(prefix, 'bin/vipcast');
let tarball = '';

t.test('npm pack of a checkout without dist/: prepack builds, and the tarball holds what runs and nothing of the tests', async (t) => {
  // The working tree as a fresh checkout would be: everything but node_modules (linked), dist/, .git and tap's cache.
  // Packing this copy, not the repo, leaves the shared dist/ of a concurrently running suite alone.
  const src = join(work, 'src');
  mkdirSync(src);
  for (const entry of readdirSync(ROOT)) {
    if (['node_modules', 'dist', '.git', '.tap', 'tmp'].includes(entry)) continue;
    cpSync(join(ROOT, entry), join(src, entry), { recursive: true, verbatimSymlinks: true, filter: (from) => !/(^|\/)(node_modules|\.tap)(\/|$)/.test(relative(ROOT, from)) });
  }
  symlinkSync(join(ROOT, 'node_modules'), join(src, 'node_modules'));
  // Build output a developer's checkout has besides the package's own: a stale module of a removed source, tests and
  // benchmarks. None of it may be shipped.
  for (const [file, text] of [['dist/src/removed-long-ago.js', 'throw new Error("stale");\n'], ['dist/test/x.test.js', ''], ['dist/bench/run.js', '']]) {
    mkdirSync(join(src, file, '..'), { recursive: true });
    writeFileSync(join(src, file), text);
  }
  mkdirSync(packDir);
  const packed = await npm(['pack', '--pack-destination', packDir], src, 240_000);
  t.equal(packed.code, 0, `npm pack: ${show(packed)}`);
  tarball = join(packDir, readdirSync(packDir).find((f) => f.endsWith('.tgz')) ?? 'none.tgz');
  t.equal(basename(tarball), `vipcast-${pkg.version}.tgz`);

  const list = (await run('tar', ['-tzf', tarball])).stdout.split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''));
  for (const f of ['package.json', 'README.md', 'bin/vipcast.js', 'dist/src/cli.js', 'dist/src/early-signals.js', 'dist/src/index.js', 'dist/src/index.d.ts',
    'dist/src/plugin-api.js', 'dist/src/plugin-api.d.ts', 'dist/src/testing.js', 'dist/src/testing.d.ts', 'dist/src/core/check-worker.js', 'proto/gobgp.proto', 'proto/attribute.proto',
    'examples/vipcast.yaml', 'packaging/systemd/vipcast.service', 'packaging/systemd/gobgpd-vipcast.service', 'packaging/README.md', 'docs/CONFIG.md']) {
    t.ok(list.includes(f), `the tarball has ${f}`);
  }
  const unwanted = list.filter((f) => /^(src|test|bench|scripts)\/|^dist\/(test|bench)\/|fixtures|\.test\.|\.map$|^tsconfig|removed-long-ago|node_modules/.test(f));
  t.same(unwanted, [], 'no sources, tests, fixtures, test or bench builds, source maps, tsconfig, stale build output or node_modules');
  t.ok(list.filter((f) => f.startsWith('dist/src/')).length > 50, `the whole build (${list.length} files in all)`);
});

t.test('npm install -g of the tarball: vipcast --version, validate of the bundled example', async (t) => {
  t.ok(existsSync(tarball), 'packed');
  const got = await npm(['install', '-g', '--prefix', prefix, '--prefer-offline', tarball], work, 240_000);
  t.equal(got.code, 0, `npm install -g: ${show(got)}`);
  t.ok(existsSync(vipcast), `${vipcast}: the command npm links from package.json "bin"`);

  const version = await run(vipcast, ['--version']);
  t.equal(version.code, 0, show(version));
  t.equal(version.stdout.trim(), pkg.version, '--version: the package\'s version');
  const validate = await run(vipcast, ['validate', '-c', join(installed, 'examples/vipcast.yaml')]);
  t.equal(validate.code, 0, show(validate));
  t.match(validate.stdout, /OK: 2 apps, 3 VIPs, 1 peers, routing dry-run/, 'the bundled example validates');

  // The unit runs the command npm installed: a bare `vipcast`, which systemd looks up in its fixed search path
  // (/usr/local/bin, /usr/bin), where `npm install -g` puts it with npm's usual global prefixes.
  const unit = readFileSync(join(installed, 'packaging/systemd/vipcast.service'), 'utf8');
  const exec = (key: string) => /^(\S+)/.exec(new RegExp(`^${key}=(.*)$`, 'm').exec(unit)?.[1] ?? '')?.[1];
  t.same([exec('ExecStart'), exec('ExecReload')], [Object.keys(pkg.bin)[0], Object.keys(pkg.bin)[0]], 'ExecStart and ExecReload run the package\'s bin by name');
  const globalBin = join((await run('npm', ['prefix', '-g'])).stdout.trim(), 'bin');
  t.ok(['/usr/local/bin', '/usr/bin'].includes(globalBin), `npm's global bin dir here (${globalBin}) is in systemd's search path`);
});

t.test('a plugin package with an optional peer dependency on vipcast, installed next to the config: runs under the installed vipcast', async (t) => {
  t.ok(existsSync(vipcast), 'installed');
  mkdirSync(site);
  writeFileSync(join(site, 'package.json'), '{ "name": "vipcast-site", "private": true }\n');
  const pluginTgz = await npm(['pack', '--silent', '--pack-destination', packDir], FIXTURE);
  t.equal(pluginTgz.code, 0, show(pluginTgz));
  const plugin = join(packDir, pluginTgz.stdout.trim().split('\n').pop()!);

  // The peer dependency is optional: npm neither fetches vipcast nor fails (--offline: nothing may come from a registry).
  const alone = await npm(['install', '--offline', plugin], site);
  t.equal(alone.code, 0, `the plugin installs without vipcast: ${show(alone)}`);
  t.notOk(existsSync(join(site, 'node_modules/vipcast')), 'and npm put no vipcast next to it');

  const flag = join(site, 'up');
  const config = join(site, 'vipcast.yaml');
  writeFileSync(config, `agent:\n  listen_addr: ""\n  monitor_interval: 200ms\nrouting:\n  plugin: dry-run\nbgp:\n  local_as: 65001\n  peers:\n    - peer_ip: 198.18.0.1\n      peer_as: 65000\n` +
    `plugins: [vipcast-monitor-flag]\napps:\n  - name: flagged\n    vip: 198.18.100.80/32\n    monitors: ["flag:${flag}"]\n`);
  // It imports vipcast/plugin-api at run time: without vipcast resolvable from its folder it can't load, and says why.
  const unlinked = await run(vipcast, ['validate', '-c', config]);
  t.equal(unlinked.code, 2, `validate without the link: ${show(unlinked)}`);
  t.match(`${unlinked.stdout}${unlinked.stderr}`, /plugins\[0\][^\n]*VIPCAST_ERR_PLUGIN_LOAD[^\n]*vipcast-monitor-flag[^\n]*'vipcast'/, 'plugins[0] names the package and the missing vipcast');
  const hint = /link this vipcast there: cd (\S+) && npm install (\S+)/.exec(`${unlinked.stdout}${unlinked.stderr}`);
  t.same(hint?.slice(1), [site, realpathSync(installed)], 'and the command that links the installed vipcast into the config folder');

  // The documented step, as the message says it: link the installed vipcast into the config folder (a file:
  // dependency, saved in package.json).
  const depsBefore = readdirSync(join(installed, 'node_modules')).length;
  const linked = await npm(['install', '--offline', hint?.[2] ?? installed], hint?.[1] ?? site);
  t.equal(linked.code, 0, `npm install of the installed vipcast's folder: ${show(linked)}`);
  t.ok(lstatSync(join(site, 'node_modules/vipcast')).isSymbolicLink(), 'node_modules/vipcast is a link');
  t.equal(realpathSync(join(site, 'node_modules/vipcast')), realpathSync(installed), 'to the installed vipcast');
  t.match((JSON.parse(readFileSync(join(site, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies, { vipcast: /^file:/, 'vipcast-monitor-flag': /^file:/ },
    'recorded in the config folder\'s package.json');
  t.equal(readdirSync(join(installed, 'node_modules')).length, depsBefore, 'the installed vipcast\'s own node_modules untouched');
  // Later installs keep it: it is a dependency, not a stray link that npm would prune. Another plugin package added...
  const otherTgz = await npm(['pack', '--silent', '--pack-destination', packDir], join(ROOT, 'test/fixtures/plugins/vipcast-router-jsonl'));
  t.equal(otherTgz.code, 0, show(otherTgz));
  const other = await npm(['install', '--offline', join(packDir, otherTgz.stdout.trim().split('\n').pop()!)], site);
  t.equal(other.code, 0, show(other));
  t.ok(lstatSync(join(site, 'node_modules/vipcast')).isSymbolicLink(), 'installing another plugin keeps the link');
  // ... and node_modules made again from the lock file (a config-management run, a restore).
  const again = await npm(['ci', '--offline'], site);
  t.equal(again.code, 0, show(again));
  t.ok(lstatSync(join(site, 'node_modules/vipcast')).isSymbolicLink(), 'npm ci keeps the link');
  const ls = await run('npm', ['ls', 'vipcast', '--offline'], { cwd: site });
  t.equal(ls.code, 0, show(ls));
  t.match(ls.stdout, /vipcast-monitor-flag@1\.0\.0\n.*vipcast@[\d.]+ deduped -> /, 'npm ls: the plugin\'s peer dependency is met by the link');

  const valid = await run(vipcast, ['validate', '-c', config]);
  t.equal(valid.code, 0, show(valid));
  t.match(valid.stdout, /OK: 1 apps, 1 VIPs, 1 peers, routing dry-run, plugins vipcast-monitor-flag/, 'validate loads the plugin');

  // The installed vipcast runs the plugin's monitor: its parse in the main thread, its check in a worker.
  writeFileSync(flag, '');
  const d = spawn(vipcast, ['run', '--dry-run', '-c', config], { cwd: site, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => d.on('exit', (code) => resolve(code)));
  t.teardown(async () => {
    if (d.exitCode === null && d.signalCode === null) { d.kill('SIGKILL'); await exited; }
  });
  const lines: Array<Record<string, unknown>> = [];
  let stderr = '';
  let buf = '';
  d.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
  d.stdout.setEncoding('utf8').on('data', (c: string) => {
    buf += c;
    for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
      try { lines.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>); } catch { stderr += `stdout: ${buf.slice(0, nl)}\n`; }
      buf = buf.slice(nl + 1);
    }
  });
  const waitFor = async (what: string, pred: (l: Record<string, unknown>) => boolean, ms: number): Promise<Record<string, unknown>> => {
    for (const deadline = Date.now() + ms; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
      const hit = lines.find(pred);
      if (hit) return hit;
    }
    throw new Error(`timed out waiting for ${what}; last lines:\n${lines.slice(-8).map((l) => JSON.stringify(l)).join('\n')}\nstderr: ${stderr.slice(-2000)}`);
  };
  const route = (action: string) => (l: Record<string, unknown>) => l.event === 'route' && l.action === action && l.prefix === '198.18.100.80/32';
  t.ok(await waitFor('the announce while the flag file exists', route('announce'), 30_000), 'announced while the flag file exists');
  rmSync(flag);
  await waitFor('the withdraw once the flag file is gone', route('withdraw'), 15_000);
  const down = await waitFor('the down reason', (l) => l.app === 'flagged' && l.state === 'down', 5000);
  t.match(down.reason, new RegExp(`flag:${flag}: missing`), 'withdrawn once the flag file is gone, with the plugin check\'s reason');
  d.kill('SIGTERM');
  t.equal(await Promise.race([exited, new Promise((r) => setTimeout(() => r('no exit in 15 s'), 15_000))]), 0, 'SIGTERM: exit 0');
});

t.test('the package\'s exports: vipcast, vipcast/plugin-api and vipcast/testing with types, the daemon\'s internals not importable', async (t) => {
  t.ok(existsSync(join(site, 'node_modules/vipcast')), 'the config folder links vipcast');
  const probe = `import * as main from 'vipcast'; import * as api from 'vipcast/plugin-api'; import { createRequire } from 'node:module';
    const pkg = createRequire(import.meta.url)('vipcast/package.json');
    let internal; try { await import('vipcast/dist/src/cli.js'); internal = 'importable'; } catch (e) { internal = e.code; }
    console.log(JSON.stringify({ main: main.PLUGIN_API_VERSION, api: api.PLUGIN_API_VERSION, same: main.defineMonitor === api.defineMonitor, version: pkg.version, internal }));`;
  const r = await run(process.execPath, ['--input-type=module', '-e', probe], { cwd: site });
  t.equal(r.code, 0, show(r));
  t.same(JSON.parse(r.stdout || '{}'), { main: '1.0.0', api: '1.0.0', same: true, version: pkg.version, internal: 'ERR_PACKAGE_PATH_NOT_EXPORTED' },
    '"." and "./plugin-api" are the same plugin API module, "./package.json" is readable, dist/ is not exported');

  // A plugin written in TypeScript: the declarations resolve through "exports" (NodeNext: "types" conditions, and
  // testing.d.ts beside testing.js) and type-check (no skipLibCheck).
  writeFileSync(join(site, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', strict: true, noEmit: true, skipLibCheck: false,
      typeRoots: [join(ROOT, 'node_modules/@types')], types: ['node'] },
    files: ['plugin.mts'],
  }));
  writeFileSync(join(site, 'plugin.mts'), `import { defineCheck, defineMonitor, type MonitorPlugin } from 'vipcast/plugin-api';
import { PLUGIN_API_VERSION } from 'vipcast';
import type { runMonitorOnce } from 'vipcast/testing';
interface Params { path: string }
export const version: string = PLUGIN_API_VERSION;
export const monitor = defineMonitor<Params>({ kind: 'monitor', name: 'typed', version: '1.0.0', apiVersion: '^1.0.0', workerModule: './check.js',
  parse: (input) => ({ params: { path: String(input) }, text: String(input) }) });
export const check = defineCheck<Params>(async (params, ctx) => ({ ok: params.path.length > 0 && !ctx.signal.aborted, reason: 'typed' }));
export type Tester = typeof runMonitorOnce;
// @ts-expect-error parse must return the monitor's Params: the types are real, not any
defineMonitor<Params>({ ...monitor, parse: () => ({ params: { file: 'x' }, text: 'x' }) });
// @ts-expect-error a MonitorPlugin's kind is 'monitor'
export const wrong: MonitorPlugin['kind'] = 'router';
// @ts-expect-error the daemon's internals are not exported
export const internal = await import('vipcast/dist/src/cli.js');
`);
  const tsc = await run(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(site, 'tsconfig.json')], { cwd: site, timeout: 120_000 });
  t.equal(tsc.code, 0, `tsc on a TypeScript plugin importing vipcast's types: ${show(tsc)}`);
});
