/**
 * The check queue under overload (issue 8, item 8): 2,000 exec apps on one worker for 60 s, each asking again as
 * the health tracker does (one interval after its previous round started, at once if that round took longer). A
 * real CheckPool, real commands; each command writes its own start time, so "started after its deadline" is judged
 * by the command, not by the pool.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pino } from 'pino';
import { CheckPool } from '../src/core/check-pool.js';
import { Metrics } from '../src/core/metrics.js';
import { MonitorRegistry } from '../src/core/monitor-registry.js';
import type { MonitorSpec } from '../src/plugin-api.js';
import { processesWith } from './helpers/procs.js';

const registry = new MonitorRegistry();
const spec = (input: unknown): MonitorSpec => registry.parse(input, { path: 'test', baseDir: process.cwd(), trusted: true });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const APPS = 2000;
const RUN_MS = 60_000;
const TIMEOUT_MS = 3000;
const INTERVAL_MS = 1000;
/** One worker with the default 128 concurrent checks; the queue bound is the default, 4 x the slots. */
const SLOTS = 128;
const MAX_QUEUE = 4 * SLOTS;
/**
 * A command reads the clock itself, after the worker released it: one exec of bash later, which on a loaded 2-core
 * host takes up to a few hundred ms. The defect this guards against starts commands many seconds late (a check left
 * in the queue starts whenever a slot frees, up to the 15 s start timeout and beyond).
 */
const START_SLACK_MS = 1000;
/**
 * Memory may grow while the queue fills (at most MAX_QUEUE + SLOTS checks held, reached in the first seconds); from
 * then on it must not. RSS follows the allocator more than what is live (this process answers some 1,200 checks a
 * second): 128 MB only catches a gross leak.
 */
const RSS_GROWTH_MB = 128;
/**
 * The main thread's heap after a full GC, where the queue lives, is the close measure. The bounded queue holds at
 * most MAX_QUEUE + SLOTS checks (~1.3 MB at ~2 KB each); measured growth from 10 s to 60 s is 3-5 MB with it (GC
 * timing, V8's own caches) and 12 MB with the unbounded queue of before (~5,600 checks left in it, still growing).
 */
const HEAP_GROWTH_MB = 10;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
/** Heap in use after a full collection: what is still referenced. */
function liveHeap(): number {
  gc();
  return process.memoryUsage().heapUsed;
}


t.test(`${APPS} exec apps on one worker for ${RUN_MS / 1000} s: the queue stays bounded, memory too, no command starts after its deadline, overload is counted and logged once`, { timeout: 300_000 }, async (t) => {
  const dir = t.testdir();
  const startsFile = join(dir, 'starts');
  const marker = `vipcast-overload-${randomUUID()}`;
  const lines: Array<{ level: number; msg: string; [k: string]: unknown }> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line) as (typeof lines)[number]);
      done();
    },
  });
  const metrics = new Metrics();
  const pool = new CheckPool({ workers: 1, concurrentTasksPerWorker: SLOTS, maxQueue: MAX_QUEUE, log: pino({ level: 'warn' }, sink), metrics: metrics.checkPool('commands') });
  t.teardown(async () => {
    await pool.close();
    for (const pid of processesWith(marker)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  });
  const rssBefore = process.memoryUsage().rss;
  // A daemon's workers are up before its checks pile up: warm the worker first.
  const warm = await pool.run(spec('exec:true'), 30_000);
  t.equal(warm.ok, true, warm.reason);

  // Deadline of each check, by id, allocated up front so that the bookkeeping does not grow the RSS measured.
  const deadlines = new Float64Array(400_000);
  let nextId = 0;
  let stop = false;
  let maxQueued = 0;
  let answers = 0;
  let downWithoutRunning = 0;
  const sample = (): void => {
    maxQueued = Math.max(maxQueued, pool.stats.queued);
  };
  const sampler = setInterval(sample, 20);
  t.teardown(() => clearInterval(sampler));

  const app = async (): Promise<void> => {
    await sleep(Math.random() * INTERVAL_MS);
    while (!stop && nextId < deadlines.length - 1) {
      const id = ++nextId;
      const monitor = spec(`exec:printf '%s %s\\n' ${id} "$EPOCHREALTIME" >> ${startsFile}; VIPCAST_MARK=${marker} exec sleep 30`);
      const asked = performance.now();
      const answer = pool.run(monitor, TIMEOUT_MS);
      // run() fixed its deadline synchronously, a moment earlier: this one is never before it.
      deadlines[id] = Date.now() + TIMEOUT_MS;
      sample();
      const r = await answer;
      answers++;
      if (/overloaded/.test(r.reason)) downWithoutRunning++;
      await sleep(Math.max(0, INTERVAL_MS - (performance.now() - asked)));
    }
  };

  const begun = performance.now();
  const apps = Array.from({ length: APPS }, app);
  await sleep(10_000);
  const rssSettled = process.memoryUsage().rss;
  const heapSettled = liveHeap();
  await sleep(RUN_MS - (performance.now() - begun));
  const rssEnd = process.memoryUsage().rss;
  const heapEnd = liveHeap();
  stop = true;
  await Promise.all(apps);
  const growthMb = (rssEnd - rssSettled) / 2 ** 20;
  const heapGrowthMb = (heapEnd - heapSettled) / 2 ** 20;

  const starts = readFileSync(startsFile, 'utf8').trim().split('\n').map((l) => l.split(' ').map(Number) as [number, number]);
  const late = starts.map(([id, at]) => ({ id, lateMs: at * 1000 - deadlines[id]! })).sort((a, b) => b.lateMs - a.lateMs);
  t.comment(`${nextId} checks asked for, ${answers} answered, ${starts.length} commands started, ${downWithoutRunning} answered down without running; ` +
    `stats ${JSON.stringify(pool.stats)}; most checks queued ${maxQueued}; RSS ${Math.round(rssBefore / 2 ** 20)} MB before, ${Math.round(rssSettled / 2 ** 20)} MB at 10 s, ${Math.round(rssEnd / 2 ** 20)} MB at the end; live heap ${(heapSettled / 2 ** 20).toFixed(1)} -> ${(heapEnd / 2 ** 20).toFixed(1)} MB; ` +
    `latest starts ${late.slice(0, 5).map((s) => Math.round(s.lateMs)).join(', ')} ms from their deadline; ${late.filter((s) => s.lateMs > 0).length} after it`);

  t.ok(maxQueued <= MAX_QUEUE, `checks waiting never exceeded the bound (${maxQueued} at most, bound ${MAX_QUEUE})`);
  t.ok(growthMb < RSS_GROWTH_MB, `RSS grew ${growthMb.toFixed(1)} MB from 10 s to ${RUN_MS / 1000} s (bound ${RSS_GROWTH_MB} MB)`);
  t.ok(heapGrowthMb < HEAP_GROWTH_MB, `the live heap grew ${heapGrowthMb.toFixed(1)} MB from 10 s to ${RUN_MS / 1000} s (bound ${HEAP_GROWTH_MB} MB)`);
  t.ok(starts.length >= 2 * SLOTS, `commands kept running through the overload (${starts.length} started)`);
  t.same(late.filter((s) => s.lateMs > START_SLACK_MS).slice(0, 5), [], `no command started after its deadline (latest ${Math.round(late[0]?.lateMs ?? 0)} ms from it, slack ${START_SLACK_MS} ms)`);

  // Overload is visible: counted by reason, one warning when it began and one when it ended.
  const { expired, rejected } = pool.stats;
  t.ok(expired + rejected > 0 && downWithoutRunning === expired + rejected, `checks answered down without running were counted (${expired} past their deadline, ${rejected} with the queue full)`);
  const counter = (await metrics.registry.getSingleMetricAsString('vipcast_check_overload_total')).split('\n');
  const value = (reason: string): number => Number(counter.find((l) => l.includes(`reason="${reason}"`))?.split(' ').pop());
  t.same({ deadline: value('deadline'), queue_full: value('queue_full') }, { deadline: expired, queue_full: rejected }, 'vipcast_check_overload_total counts them by reason');
  const gauge = await metrics.registry.getSingleMetricAsString('vipcast_check_queue_length');
  t.match(gauge, /vipcast_check_queue_length\{pool="commands"\} 0/, 'the queue-length gauge reads the pool (empty now)');
  const until = performance.now() + 15_000;
  while (!lines.some((l) => /no longer overloaded/.test(l.msg)) && performance.now() < until) await sleep(100);
  const began = lines.filter((l) => /overloaded: checks are answered down/.test(l.msg));
  const ended = lines.filter((l) => /no longer overloaded/.test(l.msg));
  t.equal(began.length, 1, 'one warning when overload began');
  t.equal(ended.length, 1, 'one line when it ended');
  t.same({ deadline: ended[0]?.droppedDeadline, queueFull: ended[0]?.droppedQueueFull }, { deadline: expired, queueFull: rejected }, 'the end line has the counts');
  t.equal(lines.filter((l) => /overload/.test(l.msg)).length, 2, 'no other overload line: not one per check');

  await pool.close();
  const until2 = performance.now() + 2000;
  while (processesWith(marker).length > 0 && performance.now() < until2) await sleep(50);
  t.same(processesWith(marker), [], 'no command is left after close()');
});
