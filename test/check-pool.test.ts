/**
 * CheckPool and its worker entry, with real piscina threads and tiny fixture check modules (test/fixtures/monitors/):
 * what a check that breaks the contract turns into, the backstop, worker deaths, and close().
 */
import t from 'tap';
import { pidRunning } from './lab/netns.js';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { CheckPool } from '../src/core/check-pool.js';
import { MonitorRegistry } from '../src/core/monitor-registry.js';
import type { MonitorSpec } from '../src/plugin-api.js';

const fixture = (name: string, params: unknown): MonitorSpec => ({
  type: 'fixture',
  text: `fixture:${name}`,
  params,
  workerModule: new URL(`../../test/fixtures/monitors/${name}`, import.meta.url).href,
  runsCommands: false,
});
const registry = new MonitorRegistry();
const spec = (input: unknown): MonitorSpec => registry.parse(input, { path: 'test', baseDir: process.cwd(), trusted: true });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const running = pidRunning;

async function waitFor(cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await cond()) return true;
    await sleep(20);
  }
  return cond();
}

async function pidsIn(file: string): Promise<number[]> {
  try {
    return (await readFile(file, 'utf8')).trim().split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

t.test('checks that break the contract become ok:false results, never rejections', async (t) => {
  const pool = new CheckPool({ workers: 1 });
  t.teardown(() => pool.close());
  const echo = await pool.run(fixture('misbehaving.mjs', { how: 'echo', n: 1 }), 1000);
  t.same({ ok: echo.ok, reason: echo.reason }, { ok: true, reason: 'params {"how":"echo","n":1}' }, 'params reach the check');
  t.type(echo.durationMs, 'number');
  const threw = await pool.run(fixture('misbehaving.mjs', { how: 'throw' }), 1000);
  t.same({ ok: threw.ok, reason: threw.reason }, { ok: false, reason: 'check failed: check exploded' });
  const threwSync = await pool.run(fixture('misbehaving.mjs', { how: 'throw-sync' }), 1000);
  t.same({ ok: threwSync.ok, reason: threwSync.reason }, { ok: false, reason: 'check failed: sync boom' });
  const bad = await pool.run(fixture('misbehaving.mjs', { how: 'bad-result' }), 1000);
  t.same({ ok: bad.ok, reason: bad.reason }, { ok: false, reason: 'check returned a string, want { ok: boolean, reason: string }' });
  const noExport = await pool.run(fixture('no-export.mjs', {}), 1000);
  t.equal(noExport.ok, false);
  t.match(noExport.reason, /no-export\.mjs exports no check function/);
  const missing = await pool.run(fixture('does-not-exist.mjs', {}), 1000);
  t.equal(missing.ok, false);
  t.match(missing.reason, /^check failed: .*(ERR_MODULE_NOT_FOUND|Cannot find module)/);
  const badTimeout = await pool.run(fixture('misbehaving.mjs', {}), Number.NaN);
  t.same({ ok: badTimeout.ok, reason: badTimeout.reason }, { ok: false, reason: 'invalid check timeout NaN' });
  t.equal(pool.stats.retried, 0, 'no worker died over any of it');
});

t.test('a check that ignores its signal is reported down at its timeout, not when it answers', async (t) => {
  const pool = new CheckPool({ workers: 1 });
  t.teardown(() => pool.close());
  await pool.run(fixture('misbehaving.mjs', {}), 1000); // warm the worker
  const t0 = performance.now();
  const r = await pool.run(fixture('ignores-signal.mjs', { ms: 3000 }), 250);
  const elapsed = performance.now() - t0;
  t.same({ ok: r.ok, reason: r.reason }, { ok: false, reason: 'timed out after 250 ms' });
  t.ok(elapsed >= 240 && elapsed < 800, `answered at the timeout (${Math.round(elapsed)} ms), not after 3 s`);
});

t.test('a promise a check rejects after answering does not take the worker down', async (t) => {
  const pool = new CheckPool({ workers: 1 });
  t.teardown(() => pool.close());
  const inFlight = pool.run(fixture('ignores-signal.mjs', { ms: 300 }), 2000);
  const r = await pool.run(fixture('misbehaving.mjs', { how: 'late-rejection' }), 1000);
  t.equal(r.ok, true);
  const other = await inFlight;
  t.same({ ok: other.ok, reason: other.reason }, { ok: true, reason: 'answered late' }, 'the check sharing the worker finished');
  t.equal(pool.stats.retried, 0, 'no check had to be re-run (the worker lived)');
});

t.test('backstop: a blocked worker is terminated; a check queued behind it on that worker is re-run, not failed', async (t) => {
  const pool = new CheckPool({ workers: 1, backstopMs: 300 });
  t.teardown(() => pool.close());
  await pool.run(fixture('misbehaving.mjs', {}), 1000);
  const blocked = pool.run(fixture('blocking.mjs', { ms: 60_000 }), 100);
  await sleep(50);
  const bystander = await pool.run(fixture('misbehaving.mjs', { how: 'echo' }), 1000);
  const culprit = await blocked;
  t.same({ ok: culprit.ok, reason: culprit.reason }, { ok: false, reason: 'check blocked its worker; worker restarted' });
  t.ok(culprit.durationMs >= 390 && culprit.durationMs < 1500, `backstop at timeout + backstopMs (${culprit.durationMs} ms)`);
  t.same({ ok: bystander.ok, reason: bystander.reason }, { ok: true, reason: 'params {"how":"echo"}' }, 'the bystander was re-run on the new worker');
  t.equal(pool.stats.blockedWorkers, 1);
  t.equal(pool.stats.retried, 1);
});

t.test('backstop blames the check whose code blocked the worker; an overdue neighbour is re-run, not blamed', async (t) => {
  const pool = new CheckPool({ workers: 1, backstopMs: 300 });
  t.teardown(() => pool.close());
  await pool.run(fixture('misbehaving.mjs', {}), 1000);
  // Started first, its 50 ms timeout falls inside the block: it is overdue too when the worker is found silent.
  const neighbour = pool.run(fixture('ignores-signal.mjs', { ms: 10_000 }), 50);
  await sleep(10);
  const culprit = await pool.run(fixture('blocking.mjs', { ms: 60_000 }), 100);
  t.equal(culprit.reason, 'check blocked its worker; worker restarted');
  const n = await neighbour;
  t.same({ ok: n.ok, reason: n.reason }, { ok: false, reason: 'timed out after 50 ms' }, 'the neighbour was re-run and timed out on its own');
  t.equal(pool.stats.blockedWorkers, 1);
  t.equal(pool.stats.retried, 1);
});

t.test('a worker that is busy but still beating is not terminated, even with an overdue check on it', async (t) => {
  const pool = new CheckPool({ workers: 1, backstopMs: 300 });
  t.teardown(() => pool.close());
  await pool.run(fixture('misbehaving.mjs', {}), 1000);
  // 300 ms chunks: the neighbour's answer (timeout 50 ms + grace) lands well after its backstop (50 + 300 ms), but the
  // heartbeat gets through between chunks, so the worker never looks silent (500 ms).
  const busy = pool.run(fixture('busy.mjs', { chunkMs: 300, totalMs: 2000 }), 5000);
  await sleep(20);
  const neighbour = await pool.run(fixture('ignores-signal.mjs', { ms: 10_000 }), 50);
  t.same({ ok: neighbour.ok, reason: neighbour.reason }, { ok: false, reason: 'timed out after 50 ms' });
  t.ok(neighbour.durationMs > 350, `the answer came after its backstop was due (${neighbour.durationMs} ms)`);
  const b = await busy;
  t.same({ ok: b.ok, reason: b.reason }, { ok: true, reason: 'busy but alive' });
  t.equal(pool.stats.blockedWorkers, 0, 'no worker was terminated');
  t.equal(pool.stats.retried, 0);
});

t.test('a worker blocked after its check answered is terminated once silent for 5 x backstopMs; queued checks are re-run', async (t) => {
  const pool = new CheckPool({ workers: 1, backstopMs: 300 });
  t.teardown(() => pool.close());
  await pool.run(fixture('misbehaving.mjs', {}), 1000);
  const first = await pool.run(fixture('blocks-later.mjs', { ms: 60_000, after: 20 }), 1000);
  t.equal(first.ok, true);
  await sleep(100);
  const queued = await pool.run(fixture('misbehaving.mjs', { how: 'echo' }), 1000);
  t.same({ ok: queued.ok, reason: queued.reason }, { ok: true, reason: 'params {"how":"echo"}' });
  t.ok(queued.durationMs >= 1000 && queued.durationMs < 20_000, `answered (not lost) after the silent worker was replaced; a replacement worker boots in seconds on a loaded machine (${queued.durationMs} ms)`);
  t.equal(pool.stats.blockedWorkers, 1);
  t.equal(pool.stats.retried, 1);
});

t.test('an exec check on a worker terminated by the backstop leaves no process behind', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vipcast-pool-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const pidFile = join(dir, 'pids');
  const pool = new CheckPool({ workers: 1, backstopMs: 300 });
  t.teardown(() => pool.close());
  const exec = pool.run(spec(`exec:echo $$ >> ${pidFile}; sleep 60 & echo $! >> ${pidFile}; wait`), 1500);
  t.ok(await waitFor(async () => (await pidsIn(pidFile)).length >= 2), 'the exec check started bash and sleep');
  const firstRun = (await pidsIn(pidFile)).slice(0, 2);
  // Block the worker before the exec check's own timeout: its abort handler can no longer run there.
  const blocked = await pool.run(fixture('blocking.mjs', { ms: 60_000 }), 100);
  t.equal(blocked.reason, 'check blocked its worker; worker restarted');
  t.ok(await waitFor(() => !firstRun.some(running), 1000), `the pool killed the process group of the dead worker's check (${firstRun.join(', ')})`);
  t.ok(pool.stats.reapedProcessGroups >= 1);
  const result = await exec;
  t.equal(result.ok, false);
  t.match(result.reason, /^timed out after 1500 ms/, 'the re-run exec check timed out on the new worker');
  const all = await pidsIn(pidFile);
  t.equal(all.length, 4, 'the exec check ran twice');
  t.ok(await waitFor(() => !all.some(running), 1000), 'no process of either run is left');
});

t.test('a check that crashes its worker is reported down as the culprit (no re-run); its neighbour is re-run and passes', async (t) => {
  const pool = new CheckPool({ workers: 1 });
  t.teardown(() => pool.close());
  await pool.run(fixture('misbehaving.mjs', {}), 1000);
  const neighbour = pool.run(fixture('ignores-signal.mjs', { ms: 200 }), 2000);
  const crash = await pool.run(fixture('crashes-worker.mjs', { after: 50 }), 2000);
  t.equal(crash.ok, false);
  t.equal(crash.reason, 'check crashed its worker: worker crash');
  const n = await neighbour;
  t.same({ ok: n.ok, reason: n.reason }, { ok: true, reason: 'answered late' });
  t.equal(pool.stats.retried, 1, 'only the neighbour was re-run');
  const after = await pool.run(fixture('misbehaving.mjs', { how: 'echo' }), 1000);
  t.equal(after.ok, true, 'the pool still serves');
});

t.test('close() is idempotent, answers in-flight checks and kills their processes', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vipcast-pool-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const pidFile = join(dir, 'pids');
  const pool = new CheckPool({ workers: 2 });
  // close() is what this test exercises; the teardown only stops the pool if an await before it failed (idempotent).
  t.teardown(() => pool.close());
  const exec = pool.run(spec(`exec:echo $$ >> ${pidFile}; sleep 60 & echo $! >> ${pidFile}; wait; echo ${randomUUID()}`), 10_000);
  t.ok(await waitFor(async () => (await pidsIn(pidFile)).length >= 2), 'the exec check started bash and sleep');
  const pids = await pidsIn(pidFile);
  await Promise.all([pool.close(), pool.close()]);
  await pool.close();
  const r = await exec;
  t.same({ ok: r.ok, reason: r.reason }, { ok: false, reason: 'the check pool is closed' });
  t.ok(await waitFor(() => !pids.some(running), 1000), 'the in-flight exec check was killed');
  const late = await pool.run(fixture('misbehaving.mjs', {}), 1000);
  t.same({ ok: late.ok, reason: late.reason }, { ok: false, reason: 'the check pool is closed' });
  t.equal(pool.stats.workers, 0);
});
