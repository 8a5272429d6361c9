/**
 * Signals while vipcast starts, and bugs that reach the top of the daemon (issue 8, item 1). The real CLI as a child
 * process in dry-run; what it did is read from its JSON log lines and from /proc.
 *
 * Node itself needs a while after exec before any JavaScript runs (tens of ms idle, a few hundred on a loaded host);
 * until then the kernel applies SIGHUP's default action whatever the program does. So "d ms after spawn" below means
 * d ms after spawn but not before the process catches SIGHUP (/proc/PID/status SigCgt). That vipcast catches it from
 * its first statement, before any dependency has loaded, is the module-order test's to prove.
 *
 * The children run without tap's preload (coverage bookkeeping, added to every child's NODE_OPTIONS): it installs
 * signal-exit, which catches SIGHUP before vipcast does and re-raises it while it is the only listener.
 */
import t from 'tap';
import { execFile, spawn } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { BIN, DaemonProcess, freePort, type LogLine } from './helpers/daemon.js';

const pexec = promisify(execFile);
const FIXTURES = fileURLToPath(new URL('../../test/fixtures/plugins/', import.meta.url));

const isRoute = (action: string, prefix: string) => (l: LogLine) => l.event === 'route' && l.action === action && l.prefix === prefix;
const isOutcome = (l: LogLine) => l.component === 'reload' && /^reload(: (done|nothing changed)| refused: the config in force| failed)/.test(l.msg);
const internal = (l: LogLine) => l.code === 'VIPCAST_ERR_INTERNAL';
const vipcast = (args: string[]) => new DaemonProcess(args, { plain: true });
/** node, without tap's preload (tap adds it to every child's NODE_OPTIONS, even when the test clears it). */
const NODE = ['/usr/bin/env', '-u', 'NODE_OPTIONS', process.execPath];

function config(dir: string, body: string): string {
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, body);
  return file;
}

const base = (apps: string, agent = '  listen_addr: ""\n') => `
agent:
${agent}routing: { plugin: dry-run }
bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
apps:
${apps}`;

/** Whether `pid` has a handler for SIGHUP now (bit 0 of SigCgt); undefined once it is gone. */
function catchesSighup(pid: number): boolean | undefined {
  try {
    const m = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? (BigInt(`0x${m[1]}`) & 1n) === 1n : undefined;
  } catch {
    return undefined;
  }
}

/** Resolves `ms` after spawn, but not before the child catches SIGHUP; returns when that was (ms after spawn). */
async function sighupTime(d: DaemonProcess, ms: number): Promise<{ caughtAt: number; sentAt: number }> {
  await new Promise<void>((resolve) => d.child.once('spawn', () => resolve()));
  const t0 = performance.now();
  let caughtAt = -1;
  for (;;) {
    const c = catchesSighup(d.child.pid!);
    if (c === undefined) throw new Error(`vipcast exited before it caught SIGHUP: ${d.stderr.join('')}`);
    if (c && caughtAt < 0) caughtAt = performance.now() - t0;
    if (c && performance.now() - t0 >= ms) return { caughtAt, sentAt: performance.now() - t0 };
    await new Promise((r) => setTimeout(r, 1));
  }
}

t.test('SIGHUP 0, 20, 50, 100, 200 ... 1,000 ms after spawn: the daemon survives every one, answers it with one reload once it runs, and stops cleanly', async (t) => {
  const dir = t.testdir();
  // 300 apps: a start long enough (config, first pass) that early signals land inside it, not only in the imports.
  const many = Array.from({ length: 299 }, (_, i) => `  - { name: m${i}, vip: 198.18.${130 + (i >> 8)}.${i & 255}/32 }\n`).join('');
  const file = config(dir, base(`  - { name: a, vip: 198.18.120.1/32 }\n${many}`));
  for (const delay of [0, 20, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]) {
    const d = vipcast(['run', '-c', file]);
    t.teardown(() => d.stop());
    const { caughtAt, sentAt } = await sighupTime(d, delay);
    d.kill('SIGHUP');
    const outcome = await d.waitLine(isOutcome, 15_000, `the reload answering the SIGHUP sent at ${Math.round(sentAt)} ms`);
    t.equal(outcome.msg, 'reload: nothing changed', `SIGHUP at ${Math.round(sentAt)} ms (caught from ${Math.round(caughtAt)} ms): answered by a reload of the unchanged file`);
    await d.waitLine(isRoute('announce', '198.18.120.1/32'), 15_000, 'announce');
    t.equal(d.child.exitCode ?? d.child.signalCode, null, 'still running');
    t.notOk(d.lines.some(internal), 'no internal error logged');
    t.equal(d.lines.filter(isOutcome).length, 1, 'one reload');
    const queued = d.lines.some((l) => /while vipcast (was loading|is starting)/.test(l.msg));
    t.comment(`SIGHUP at ${Math.round(sentAt)} ms: ${queued ? 'queued until the daemon ran' : 'the daemon was running'}`);
    d.kill('SIGTERM');
    const exit = await d.exited;
    t.same(exit, { code: 0, signal: null }, 'SIGTERM: exit 0');
  }
});

t.test('SIGTERM at any point of the start: nothing stays announced and the exit is clean', async (t) => {
  const dir = t.testdir();
  const file = config(dir, base('  - { name: a, vip: 198.18.121.1/32 }\n'));
  // 'loaded': the moment the daemon logs "config loaded", i.e. in the middle of start().
  for (const delay of [0, 100, 200, 300, 500, 700, 1000, 'loaded'] as const) {
    const d = vipcast(['run', '-c', file]);
    t.teardown(() => d.stop());
    if (delay === 'loaded') await d.waitLine((l) => l.msg === 'config loaded', 15_000, 'config loaded');
    else await sighupTime(d, delay);
    const sent = performance.now();
    d.kill('SIGTERM');
    const exit = await d.exited;
    const took = performance.now() - sent;
    const announced = d.lines.filter((l) => l.event === 'route' && l.action === 'announce').length;
    const withdrawn = d.lines.filter((l) => l.event === 'route' && l.action === 'withdraw').length;
    const started = d.lines.some((l) => l.msg === 'config loaded');
    t.comment(`SIGTERM at ${delay}: ${JSON.stringify(exit)} after ${Math.round(took)} ms; announced ${announced}, withdrawn ${withdrawn}`);
    if (exit.signal === 'SIGTERM') {
      t.notOk(started, `killed by the default action (at ${delay}) only before vipcast did anything`);
    } else {
      t.equal(exit.code, 0, `exit 0 (SIGTERM at ${delay})`);
      t.ok(d.lines.some((l) => l.msg === 'stopped'), 'stopped through the daemon\'s stop');
    }
    if (delay === 'loaded') t.equal(exit.code, 0, 'a SIGTERM during start() is handled: exit 0');
    t.equal(withdrawn, announced, 'every route announced was withdrawn');
    t.ok(took < 10_500, `ended within the 10 s shutdown bound (${Math.round(took)} ms)`);
    t.notOk(d.lines.some(internal), 'no internal error logged');
  }
});

/** A node preload that records which packages from node_modules are loaded when the first SIGHUP listener is added and at exit. */
function modulePreload(dir: string): { preload: string; read: (out: string) => { atSighup: string[] | null; atExit: string[] } } {
  const preload = join(dir, 'record-modules.mjs');
  writeFileSync(preload, `
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
const cache = createRequire(import.meta.url).cache;
const packages = () => [...new Set(Object.keys(cache).map((k) => (/node_modules\\/((@[^/]+\\/)?[^/]+)/.exec(k) || [])[1]).filter(Boolean))].sort();
let atSighup = null;
const on = process.on;
process.on = process.addListener = function (event, fn) {
  if (event === 'SIGHUP' && atSighup === null) atSighup = packages();
  return on.call(this, event, fn);
};
process.on('exit', () => writeFileSync(process.env.RECORD_MODULES_OUT, JSON.stringify({ atSighup, atExit: packages() })));
`);
  return { preload, read: (out) => JSON.parse(readFileSync(out, 'utf8')) as { atSighup: string[] | null; atExit: string[] } };
}

t.test('module order: vipcast run catches SIGHUP before any dependency loads; --version and --help load none; validate loads no fastify, gRPC, piscina, pino or semver; run without an API no fastify', async (t) => {
  const dir = t.testdir();
  const { preload, read } = modulePreload(dir);
  const file = config(dir, base('  - { name: a, vip: 198.18.122.1/32, monitors: ["port:tcp:1"] }\n'));
  const out = join(dir, 'modules.json');
  const env = { ...process.env, RECORD_MODULES_OUT: out };

  const child = spawn(NODE[0]!, [...NODE.slice(1), '--import', preload, BIN, 'run', '-c', file], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const deadline = performance.now() + 15_000;
  while (!stdout.includes('vipcast running') && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.match(stdout, /vipcast running/, 'the daemon ran');
  child.kill('SIGTERM');
  t.equal(await exited, 0);
  const run = read(out);
  t.same(run.atSighup, [], 'run: SIGHUP caught before any package was loaded');
  t.ok(run.atExit.includes('pino') && run.atExit.includes('piscina'), 'run: the daemon\'s dependencies did load afterwards (the recorder works)');
  t.notOk(run.atExit.includes('fastify'), 'run without an API (listen_addr ""): fastify is never loaded (the API module loads in listen())');

  for (const args of [['--version'], ['--help']]) {
    await pexec(NODE[0]!, [...NODE.slice(1), '--import', preload, BIN, ...args], { env });
    t.same(read(out).atExit, [], `${args[0]}: no package loaded`);
  }
  const v = await pexec(NODE[0]!, [...NODE.slice(1), '--import', preload, BIN, 'validate', '-c', file], { env });
  t.match(v.stdout, /OK: 1 apps/);
  const loaded = read(out).atExit;
  t.ok(loaded.includes('yaml'), 'validate: the config parser loaded');
  for (const heavy of ['fastify', '@grpc/grpc-js', '@grpc/proto-loader', 'piscina', 'pino', 'tsyringe', 'prom-client', 'semver']) {
    t.notOk(loaded.includes(heavy), `validate: ${heavy} not loaded`);
  }
});

function installFaults(dir: string): void {
  const dest = join(dir, 'node_modules', 'vipcast-monitor-faults');
  mkdirSync(dest, { recursive: true });
  cpSync(join(FIXTURES, 'main-thread-faults'), dest, { recursive: true });
}

t.test('a promise rejection nobody handles (a bug) is logged with VIPCAST_ERR_INTERNAL and the daemon goes on', async (t) => {
  const dir = t.testdir();
  installFaults(dir);
  const port = await freePort();
  const agent = `  listen_addr: "127.0.0.1:${port}"\n`;
  const plugins = 'plugins: [vipcast-monitor-faults]\n';
  const file = config(dir, plugins + base('  - { name: a, vip: 198.18.123.1/32 }\n', agent));
  const d = vipcast(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine(isRoute('announce', '198.18.123.1/32'), 15_000, 'a announced');
  // The reload parses b's monitor: the plugin leaves a rejected promise behind on the main thread.
  config(dir, plugins + base('  - { name: a, vip: 198.18.123.1/32 }\n  - { name: b, vip: 198.18.123.2/32, monitors: ["faults:reject"] }\n', agent));
  d.kill('SIGHUP');
  const logged = await d.waitLine(internal, 10_000, 'the unhandled rejection logged');
  t.match(logged.err, { message: 'fixture: a rejection nobody handles' }, 'with the error');
  t.equal(logged.level, 50, 'at error level');
  await d.waitLine(isRoute('announce', '198.18.123.2/32'), 15_000, 'b announced: the reload went through');
  const status = (await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as { apps: Array<{ name: string; state: string }> };
  t.same(status.apps.map((a) => [a.name, a.state]).sort(), [['a', 'up'], ['b', 'up']], 'the daemon still answers, both apps up');
  t.notOk(d.lines.some(isRoute('withdraw', '198.18.123.1/32')), 'a was never withdrawn');
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
});

t.test('an exception thrown out of a callback (a bug): logged with VIPCAST_ERR_INTERNAL, every route withdrawn, exit 1', async (t) => {
  const dir = t.testdir();
  installFaults(dir);
  const plugins = 'plugins: [vipcast-monitor-faults]\n';
  const file = config(dir, plugins + base('  - { name: a, vip: 198.18.124.1/32 }\n'));
  const d = vipcast(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine(isRoute('announce', '198.18.124.1/32'), 15_000, 'a announced');
  config(dir, plugins + base('  - { name: a, vip: 198.18.124.1/32 }\n  - { name: b, vip: 198.18.124.2/32, monitors: ["faults:throw:0"] }\n'));
  d.kill('SIGHUP');
  const exit = await d.exited;
  t.equal(exit.code, 1, 'exit 1 (systemd restarts it)');
  const logged = d.lines.find(internal);
  t.match(logged?.err, { message: 'fixture: an exception thrown from a timer' }, 'logged with the error');
  t.ok(d.lines.some(isRoute('withdraw', '198.18.124.1/32')), 'a was withdrawn before the exit');
  t.ok(d.lines.some((l) => l.msg === 'stopped'), 'through the daemon\'s stop');
});

t.test('vipcast reload refuses a stale pid file whose pid is now another program: that process gets no SIGHUP', async (t) => {
  const dir = t.testdir();
  const pidFile = join(dir, 'stale.pid');
  const other = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.teardown(() => other.kill('SIGKILL'));
  await new Promise<void>((resolve) => other.once('spawn', () => resolve()));
  writeFileSync(pidFile, `${other.pid}\n`);
  const res = await pexec(process.execPath, [BIN, 'reload', '--pid-file', pidFile]).then(() => undefined, (e: { code: number; stderr: string }) => e);
  t.equal(res?.code, 1, 'exit 1');
  t.match(res?.stderr, /is not vipcast \(a stale pid file\?\)/);
  await new Promise((r) => setTimeout(r, 200));
  t.equal(other.exitCode ?? other.signalCode, null, 'the other process got no SIGHUP (it would have ended)');
});
