/**
 * CheckPool's containment options (issue 12, item 2), with real piscina threads and the containment fixture plugins:
 * a worker over its memory limits (`resourceLimits`) ends alone and is replaced, its checks answer "check worker ran
 * out of memory" and the event is logged once, naming the plugin; a worker whose checks keep ignoring their abort signal
 * is recycled (`maxStuckChecks`) with a warning naming the plugin, and the sockets they leaked close with it. The
 * daemon's pools route a package's checks to a pool of its own, closed once no app uses the package.
 */
import t from 'tap';
import { createServer, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { CheckPool, OUT_OF_MEMORY_REASON } from '../src/core/check-pool.js';
import { createLogger } from '../src/core/logger.js';
import type { AppSpec, MonitorSpec } from '../src/plugin-api.js';
import { DaemonCheckPools } from '../src/core/daemon-check-pools.js';
import { Metrics } from '../src/core/metrics.js';

const plugin = (fixture: string, name: string, params: unknown): MonitorSpec => ({
  type: name,
  text: name,
  params,
  workerModule: new URL(`../../test/fixtures/plugins/${fixture}/index.js`, import.meta.url).href,
  runsCommands: false,
  plugin: `vipcast-monitor-${fixture}`,
});
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A logger whose JSON lines land in `lines`. */
function capture(): { log: ReturnType<typeof createLogger>; lines: Array<{ level: number; msg: string; [k: string]: unknown }> } {
  const lines: Array<{ level: number; msg: string }> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as { level: number; msg: string });
      done();
    },
  });
  return { log: createLogger({ level: 'info', pretty: false, destination: stream }), lines };
}

t.test('a check that fills its worker\'s heap ends that worker only: "check worker ran out of memory", logged once per event, a fresh worker takes over', async (t) => {
  const { log, lines } = capture();
  const pool = new CheckPool({ workers: 1, plugin: 'vipcast-monitor-containment-leak', resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16 }, log });
  t.teardown(() => pool.close());
  const leak = plugin('containment-leak', 'leak', { mb: 8 });
  const reasons: string[] = [];
  for (let i = 0; i < 40 && !reasons.includes(OUT_OF_MEMORY_REASON); i++) reasons.push((await pool.run(leak, 10_000)).reason);
  t.ok(reasons.includes(OUT_OF_MEMORY_REASON), `a check answered "${OUT_OF_MEMORY_REASON}" (${reasons.length} checks: ${[...new Set(reasons)].join(' | ')})`);
  t.equal(pool.stats.outOfMemory, 1, 'one out-of-memory end counted');
  const logged = lines.filter((l) => l.msg.startsWith(OUT_OF_MEMORY_REASON));
  t.equal(logged.length, 1, 'logged once');
  t.match(logged[0]?.msg, /\(plugin vipcast-monitor-containment-leak\)/, 'the message names the plugin');
  t.equal(logged[0]?.plugin, 'vipcast-monitor-containment-leak');
  const after = await pool.run(leak, 10_000);
  t.same({ ok: after.ok, reason: after.reason }, { ok: true, reason: '1 chunks kept' }, 'a fresh worker (an empty heap) runs the next check');
  t.equal(pool.stats.workers, 1);
});

t.test('checks that ignore their abort signal get their worker recycled once maxStuckChecks are stuck; what they held closes with it', async (t) => {
  const open = new Set<Socket>();
  let closed = 0;
  const server = createServer((s) => {
    open.add(s);
    s.on('error', () => {});
    s.on('close', () => {
      open.delete(s);
      closed++;
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => {
    for (const s of open) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  const { log, lines } = capture();
  const pool = new CheckPool({ workers: 1, plugin: 'vipcast-monitor-containment-never-settles', maxStuckChecks: 3, log });
  t.teardown(() => pool.close());
  const hang = plugin('containment-never-settles', 'never-settles', { port: (server.address() as { port: number }).port });
  for (let i = 0; i < 3; i++) {
    const r = await pool.run(hang, 100);
    t.same({ ok: r.ok, reason: r.reason }, { ok: false, reason: 'timed out after 100 ms' }, `check ${i + 1} is answered at its timeout`);
  }
  t.equal(pool.stats.recycledWorkers, 0, 'not recycled before the checks are stuck for a while');
  const until = Date.now() + 10_000;
  while (pool.stats.recycledWorkers === 0 && Date.now() < until) await sleep(50);
  t.equal(pool.stats.recycledWorkers, 1, 'the worker was recycled');
  const warned = lines.filter((l) => / ignore their abort signal/.test(l.msg));
  t.equal(warned.length, 1, 'one warning');
  t.equal(warned[0]?.msg, 'checks of plugin vipcast-monitor-containment-never-settles ignore their abort signal (3 still running past their timeout): recycling their worker');
  t.equal(warned[0]?.level, 40);
  while (closed < 3 && Date.now() < until) await sleep(50);
  t.equal(closed, 3, 'the three sockets the stuck checks held were closed with their worker');
  const next = await pool.run(hang, 100);
  t.equal(next.reason, 'timed out after 100 ms', 'a fresh worker runs the next check');
});

t.test('the daemon\'s pools: a package\'s checks get a pool of their own, made at first use and closed once no app uses the package', async (t) => {
  const { log, lines } = capture();
  let apps: AppSpec[] = [];
  const pools = new DaemonCheckPools(1, log, new Metrics(), () => apps);
  t.teardown(() => Promise.all(pools.closes()));
  const leak = plugin('containment-leak', 'leak', { mb: 1 });
  const port: MonitorSpec = { type: 'port', text: 'port:tcp:1', params: {}, workerModule: 'file:///x.js', runsCommands: false };
  t.equal(pools.pluginPools.size, 0, 'no plugin pool before a plugin check');
  t.equal(pools.poolFor(port), pools.pool, 'a built-in check runs on the general pool');
  const own = pools.poolFor(leak);
  t.not(own, pools.pool, 'a package\'s check does not');
  t.not(own, pools.commandPool);
  t.equal(pools.poolFor(plugin('containment-spin', 'spin', {})) === own, false, 'another package gets another pool');
  t.same([...pools.pluginPools.keys()].sort(), ['vipcast-monitor-containment-leak', 'vipcast-monitor-containment-spin']);
  apps = [{ monitors: [leak] } as unknown as AppSpec];
  t.equal((await own.run(leak, 10_000)).ok, true, 'the check runs there');
  await sleep(6000);
  t.same([...pools.pluginPools.keys()], ['vipcast-monitor-containment-leak'], 'a sweep closed the pool of the package no app uses');
  apps = [];
  const until = Date.now() + 15_000;
  while (pools.pluginPools.size > 0 && Date.now() < until) await sleep(100);
  t.equal(pools.pluginPools.size, 0, 'the last one too, once its app is gone (a reload removed it)');
  t.ok(lines.some((l) => l.msg === 'no app uses plugin vipcast-monitor-containment-leak any more: closing its check worker'), 'logged');
  const closed = await own.run(leak, 1000);
  t.equal(closed.reason, 'the check pool is closed', 'its pool is closed');
});
