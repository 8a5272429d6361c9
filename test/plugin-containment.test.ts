/**
 * Misbehaving monitor plugins are contained (issue 12, item 2), in the real daemon (dry-run router): beside a plugin
 * whose check spins, one that leaks memory and one that ignores its abort signal (one socket leaked per round), a
 * control app with a built-in port check at a 200 ms interval follows its real TCP listener within a second, every
 * time; the daemon stays up with a bounded RSS; each bad plugin gets the user-visible message that names it. Before
 * the plugins had workers of their own, the spinning check blocked a worker of the pool the control app's checks ran
 * on and the leak grew the daemon's heap until it died.
 */
import t from 'tap';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DaemonProcess, closeServer, freePort, DRY_RUN_BGP } from './helpers/daemon.js';
import { timeFlips } from './helpers/flips.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/plugins/', import.meta.url));
const PACKAGES = {
  spin: 'vipcast-monitor-containment-spin',
  leak: 'vipcast-monitor-containment-leak',
  neverSettles: 'vipcast-monitor-containment-never-settles',
} as const;
const FLIPS = 5;
const RSS_BOUND_MB = 400;
const CONTROL = '198.18.100.10/32';

/** The daemon's resident set, MB (from /proc; 0 once it is gone). */
function rssMb(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? 0 : Number(m[1]) / 1024;
  } catch {
    return 0;
  }
}

t.test('a spinning, a leaking and a never-settling plugin cost a 200 ms port-checked app nothing: each flip within a second, the daemon up and bounded', { timeout: 180_000 }, async (t) => {
  const dir = t.testdir();
  for (const [fixture, pkg] of [['containment-spin', PACKAGES.spin], ['containment-leak', PACKAGES.leak], ['containment-never-settles', PACKAGES.neverSettles]]) {
    mkdirSync(join(dir, 'node_modules', pkg!), { recursive: true });
    cpSync(join(FIXTURES, fixture!), join(dir, 'node_modules', pkg!), { recursive: true });
  }
  // The never-settling plugin's target: counts the connections its checks open and leave open.
  const open = new Set<Socket>();
  let maxOpen = 0;
  let closedByPeer = 0;
  const target = createServer((s) => {
    open.add(s);
    maxOpen = Math.max(maxOpen, open.size);
    s.on('error', () => {});
    s.on('close', () => {
      open.delete(s);
      closedByPeer++;
    });
  });
  await new Promise<void>((r) => target.listen(0, '127.0.0.1', () => r()));
  t.teardown(async () => {
    for (const s of open) s.destroy();
    await closeServer(target);
  });
  const targetPort = (target.address() as { port: number }).port;
  const port = await freePort();
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `
agent:
  listen_addr: ""
  monitor_interval: 200ms
  cleanup_timer: 1m
${DRY_RUN_BGP}plugins: [${PACKAGES.spin}, ${PACKAGES.leak}, ${PACKAGES.neverSettles}]
apps:
  - name: control
    vip: ${CONTROL}
    monitors: ["port:tcp:${port}"]
  - name: spinner
    vip: 198.18.101.1/32
    monitor_interval: 1s
    check_timeout: 500ms
    monitors: ["spin"]
  - name: leaker
    vip: 198.18.101.2/32
    monitors: ["leak:8"]
  - name: hanger
    vip: 198.18.101.3/32
    monitors: ["never-settles:${targetPort}"]
`);
  // plain: without tap's loaders, which every worker thread would load too (RSS as in production).
  const d = new DaemonProcess(['run', '-c', file], { plain: true });
  t.teardown(() => d.stop());
  const pid = d.child.pid!;
  let maxRss = 0;
  const sampler = setInterval(() => (maxRss = Math.max(maxRss, rssMb(pid))), 100);
  t.teardown(() => clearInterval(sampler));

  await d.waitLine((l) => l.app === 'control' && l.state === 'down', 30_000, 'control checked once (down: nothing listens yet; start and worker boot on a loaded machine)');
  // The flips are timed once the plugins misbehave: the spinning check has blocked its worker once (about 3 s in).
  await d.waitLine((l) => l.msg === 'a check blocked its worker; terminating the worker' && Array.isArray(l.monitors) && l.monitors.includes('spin'), 30_000, 'the spinning check blocked its worker');

  const { withdrawMs, announceMs } = await timeFlips(t, d, port, CONTROL, FLIPS);
  t.comment(`control app (interval 200 ms): withdrawn ${withdrawMs.join(', ')} ms after its listener closed; announced ${announceMs.join(', ')} ms after it opened`);
  t.comment(`daemon RSS at most ${maxRss.toFixed(0)} MB; never-settling plugin: at most ${maxOpen} sockets open at once, ${closedByPeer} closed with its worker`);
  for (const [i, ms] of withdrawMs.entries()) t.ok(ms < 1000, `flip ${i + 1}: withdrawn within a second (${ms} ms; interval 200 ms + 50 ms + load margin)`);
  for (const [i, ms] of announceMs.entries()) t.ok(ms < 1000, `flip ${i + 1}: announced within a second (${ms} ms)`);

  // Each bad plugin was told so, by name.
  const oom = await d.waitLine((l) => l.plugin === PACKAGES.leak && /^check worker ran out of memory \(plugin vipcast-monitor-containment-leak\)/.test(l.msg), 30_000, 'the leaking plugin\'s worker ran out of memory');
  t.equal(oom.level, 50, 'out of memory: logged as an error');
  const blocked = await d.waitLine((l) => l.plugin === PACKAGES.spin && l.msg === 'a check blocked its worker; terminating the worker', 30_000, 'the spinning plugin\'s worker terminated');
  t.same(blocked.monitors, ['spin'], 'blocked: the blocking check is named');
  const stuck = await d.waitLine((l) => l.plugin === PACKAGES.neverSettles && /^checks of plugin vipcast-monitor-containment-never-settles ignore their abort signal \(\d+ still running past their timeout\): recycling their worker$/.test(l.msg), 30_000, 'the never-settling plugin\'s worker recycled');
  t.equal(stuck.level, 40, 'ignoring abort: logged as a warning');

  // The leaking plugin's worker is replaced: its checks pass again after an out-of-memory end, and its checks answer
  // the reason that names it.
  const oomIdx = d.lines.indexOf(oom);
  t.ok(d.lines.some((l) => l.app === 'leaker' && l.state === 'down' && /check worker ran out of memory/.test(String(l.reason))), 'the leaking app is down with "check worker ran out of memory"');
  t.ok(d.lines.slice(oomIdx + 1).some((l) => l.app === 'leaker' && l.state === 'up'), 'its checks pass again on a fresh worker');
  t.ok(d.lines.filter((l) => l.plugin === PACKAGES.leak && /^check worker ran out of memory/.test(l.msg)).length >= 1, 'out of memory logged');
  t.ok(closedByPeer >= 1, `the sockets the never-settling checks leaked went with their worker (${closedByPeer} closed)`);
  t.ok(maxOpen <= 16, `sockets held open by the never-settling plugin stay bounded (${maxOpen} at most)`);
  // No built-in check was hurt: the control app only ever changed state with its listener.
  t.notOk(d.lines.some((l) => l.app === 'control' && typeof l.reason === 'string' && /worker|blocked|memory/.test(l.reason)), 'no control check failed for a worker reason');
  t.ok(maxRss > 0 && maxRss < RSS_BOUND_MB, `daemon RSS stayed bounded (${maxRss.toFixed(0)} MB at most, bound ${RSS_BOUND_MB} MB)`);
  t.equal(d.child.exitCode, null, 'the daemon is still up');
  t.notOk(d.stderr.join('').includes('FATAL ERROR'), 'no fatal error on stderr');

  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0, 'exit 0 after SIGTERM (the plugin pools closed too)');
});
