/**
 * Monitor plugins whose checks throw or answer garbage (issue 12, Tests), in the real daemon (dry-run router): a check
 * that throws (synchronously, as a rejected promise, with something that is no Error and can't be printed, or from a
 * timer callback, which ends its worker) and one that resolves to something other than `{ ok: boolean, reason:
 * string }` (undefined, a number, `{ ok: 'yes' }`, a reason that is not a string or can't even be turned into one, a
 * 2 MB one). Each faulty app is down, in the log and in /status, with a reason that says what was wrong, never
 * megabytes long; a correct result with a 2 MB reason is up with the reason clipped; the plugin's passing check on the
 * worker the timer throw ends is never counted down; a control app with a built-in port check at a 200 ms interval
 * follows its real TCP listener within a second, every time; the daemon stays up and exits 0 on SIGTERM. Before the
 * result validation, `{ ok: true, reason: 42 }` counted as up and a reason (or a rejection) that String() can't print
 * failed as "check worker died" and was run again, every round.
 */
import t from 'tap';
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DaemonProcess, freePort, DRY_RUN_BGP } from './helpers/daemon.js';
import { timeFlips } from './helpers/flips.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/plugins/', import.meta.url));
const THROWS = 'vipcast-monitor-containment-throws';
const BAD = 'vipcast-monitor-containment-bad-return';
const FLIPS = 5;
const CONTROL = '198.18.100.20/32';
/** The worker clips every reason to this many characters. */
const MAX_REASON = 4096;
const WANT = 'want \\{ ok: boolean, reason: string \\}';

/** Each faulty app's monitor and the reason it must be down with (app-level: the monitor text, then its reason). */
const FAULTY: ReadonlyArray<readonly [monitor: string, reason: RegExp]> = [
  ['throws:sync', /^throws:sync: check failed: sync boom from the check$/],
  ['throws:async', /^throws:async: check failed: async boom from the check$/],
  ['throws:nonerror', /^throws:nonerror: check failed: an object that cannot be printed$/],
  ['throws:timer', /^throws:timer: check crashed its worker: timer boom from a callback$/],
  ['badreturn:undefined', new RegExp(`^badreturn:undefined: check returned undefined, ${WANT}$`)],
  ['badreturn:null', new RegExp(`^badreturn:null: check returned null, ${WANT}$`)],
  ['badreturn:number', new RegExp(`^badreturn:number: check returned a number, ${WANT}$`)],
  ['badreturn:string', new RegExp(`^badreturn:string: check returned a string, ${WANT}$`)],
  ['badreturn:ok-string', new RegExp(`^badreturn:ok-string: check returned ok of type string, ${WANT}$`)],
  ['badreturn:no-ok', new RegExp(`^badreturn:no-ok: check returned ok of type undefined, ${WANT}$`)],
  ['badreturn:reason-number', new RegExp(`^badreturn:reason-number: check returned reason of type number, ${WANT}$`)],
  ['badreturn:reason-missing', new RegExp(`^badreturn:reason-missing: check returned reason of type undefined, ${WANT}$`)],
  ['badreturn:reason-object', new RegExp(`^badreturn:reason-object: check returned reason of type object, ${WANT}$`)],
  ['badreturn:reason-bare', new RegExp(`^badreturn:reason-bare: check returned reason of type object, ${WANT}$`)],
  ['badreturn:reason-trap', new RegExp(`^badreturn:reason-trap: check returned reason of type object, ${WANT}$`)],
  ['badreturn:huge', new RegExp(`^badreturn:huge: x{${MAX_REASON - 3}}\\.\\.\\.$`)],
];

const appName = (monitor: string): string => monitor.replace(':', '-');

interface AppStatus {
  name: string;
  state: string;
  reason: string;
  monitors: Array<{ monitor: string; ok: boolean; reason: string }>;
}

t.test('plugins whose checks throw or return garbage: each app down with a bounded reason that says why, a 200 ms port-checked app unhurt, the daemon up', { timeout: 180_000 }, async (t) => {
  const dir = t.testdir();
  for (const [fixture, pkg] of [['containment-throws', THROWS], ['containment-bad-return', BAD]] as const) {
    mkdirSync(join(dir, 'node_modules', pkg), { recursive: true });
    cpSync(join(FIXTURES, fixture), join(dir, 'node_modules', pkg), { recursive: true });
  }
  const [port, apiPort] = [await freePort(), await freePort()];
  const file = join(dir, 'vipcast.yaml');
  const faulty = FAULTY.map(([monitor], i) => `
  - name: ${appName(monitor)}
    vip: 198.18.102.${i + 1}/32
    monitor_interval: 500ms
    monitors: ["${monitor}"]`).join('');
  writeFileSync(file, `
agent:
  listen_addr: "127.0.0.1:${apiPort}"
  monitor_interval: 200ms
  cleanup_timer: 1m
${DRY_RUN_BGP}plugins: [${THROWS}, ${BAD}]
apps:
  - name: control
    vip: ${CONTROL}
    monitors: ["port:tcp:${port}"]
  - name: innocent
    vip: 198.18.103.1/32
    monitor_interval: 500ms
    check_timeout: 450ms
    monitors: ["throws:none"]
  - name: verbose
    vip: 198.18.103.2/32
    monitor_interval: 500ms
    monitors: ["badreturn:huge-ok"]${faulty}
`);
  // plain: without tap's loaders, which every worker thread would load too (as in production).
  const d = new DaemonProcess(['run', '-c', file], { plain: true });
  t.teardown(() => d.stop());

  await d.waitLine((l) => l.app === 'control' && l.state === 'down', 30_000, 'control checked once (down: nothing listens yet)');
  // The flips are timed once the timer throw has ended the plugin's worker at least once.
  await d.waitLine((l) => l.msg === 'a check crashed its worker' && l.monitor === 'throws:timer', 30_000, 'the timer throw ended its worker');

  const { withdrawMs, announceMs } = await timeFlips(t, d, port, CONTROL, FLIPS);
  t.comment(`control app (interval 200 ms): withdrawn ${withdrawMs.join(', ')} ms after its listener closed; announced ${announceMs.join(', ')} ms after it opened`);
  for (const [i, ms] of withdrawMs.entries()) t.ok(ms < 1000, `flip ${i + 1}: withdrawn within a second (${ms} ms)`);
  for (const [i, ms] of announceMs.entries()) t.ok(ms < 1000, `flip ${i + 1}: announced within a second (${ms} ms)`);

  // (a) Each faulty app is down with the reason that names what was wrong, in its log line and in /status; never up.
  const body = await (await fetch(`http://127.0.0.1:${apiPort}/status`)).text();
  const apps = new Map((JSON.parse(body) as { apps: AppStatus[] }).apps.map((a) => [a.name, a]));
  const shown: string[] = [];
  for (const [monitor, want] of FAULTY) {
    const app = appName(monitor);
    const logged = d.lines.find((l) => l.app === app && l.state === 'down');
    const reason = String(logged?.reason);
    shown.push(`${app}: ${reason.length > 200 ? `${reason.slice(0, 40)}... (${reason.length} chars)` : reason}`);
    t.match(reason, want, `${app}: logged down, the reason says what was wrong`);
    t.ok(reason.length <= monitor.length + 2 + MAX_REASON, `${app}: logged reason bounded (${reason.length} chars)`);
    const status = apps.get(app);
    t.equal(status?.state, 'down', `${app}: down in /status`);
    t.match(status?.reason, want, `${app}: /status gives the same reason`);
    t.notOk(d.lines.some((l) => l.app === app && l.state === 'up'), `${app}: never up`);
  }
  t.comment(`reasons shown:\n${shown.join('\n')}`);
  // A correct result with a 2 MB reason: up, the reason clipped.
  const verbose = apps.get('verbose');
  t.equal(verbose?.state, 'up', 'a 2 MB reason with ok: true: up');
  t.match(verbose?.monitors[0]?.reason, new RegExp(`^y{${MAX_REASON - 3}}\\.\\.\\.$`), `its reason in /status clipped to ${MAX_REASON} characters`);
  t.ok(body.length < 100_000, `/status is ${body.length} characters (the 2 MB reasons are not stored in full)`);
  const longest = Math.max(...d.lines.map((l) => JSON.stringify(l).length));
  t.ok(longest < 3 * MAX_REASON, `longest log line ${longest} characters (the 2 MB reasons are not logged in full)`);

  // The timer throw ends the plugin's worker every round. Its passing check on that worker is never blamed for it: it
  // is run again on a fresh worker (check-pool.ts, up to 3 runs in all), and the check that crashed the worker runs on
  // a quarantine worker of the package from then on (daemon-check-pools.ts), so the next throw no longer ends the
  // worker its siblings are on. Another package or a built-in check is never hurt (the control app above).
  const crashes = d.lines.filter((l) => l.msg === 'a check crashed its worker' && l.monitor === 'throws:timer').length;
  const rerun = d.lines.filter((l) => l.msg === 'check worker died during a check; running the check again' && l.monitor === 'throws:none').length;
  const innocentDown = d.lines.filter((l) => l.app === 'innocent' && l.state === 'down').map((l) => String(l.reason));
  t.comment(`the timer throw ended the plugin's worker ${crashes} times; its passing sibling was on it and run again ${rerun} times; sibling down ${innocentDown.length} times${innocentDown.length > 0 ? ` (${innocentDown[0]})` : ''}`);
  t.ok(crashes >= 2, 'the timer throw ended the plugin\'s worker, round after round');
  t.notOk(d.lines.some((l) => l.msg === 'a check crashed its worker' && l.monitor !== 'throws:timer'), 'only the throwing check is named as the one that crashed its worker');
  t.notOk(innocentDown.some((r) => /crashed its worker/.test(r)), 'the passing sibling is never blamed for the crash');
  t.same(innocentDown, [], 'the passing sibling on the same plugin worker is never counted down');
  t.ok(d.lines.some((l) => l.app === 'innocent' && l.state === 'up'), 'the passing sibling is up');
  t.ok(d.lines.some((l) => l.plugin === THROWS && l.monitor === 'throws:timer' && /crashed the worker of plugin .*: it runs on a worker of its own from now on/.test(String(l.msg))), 'the check that crashed its worker is quarantined, with a warning naming it and the plugin');
  t.notOk(d.lines.some((l) => l.app === 'control' && typeof l.reason === 'string' && /worker|crash|returned/.test(l.reason)), 'no control check failed for a plugin reason');
  // Only the timer throw ends a worker: a bad result or an unprintable rejection is an answer, not a worker death.
  const died = d.lines.filter((l) => l.msg === 'check worker died during a check; running the check again' && typeof l.monitor === 'string' && !l.monitor.startsWith('throws:'));
  t.same(died.map((l) => l.monitor), [], 'no bad result is taken for a dead worker');

  // (c) The daemon is up, and exits 0 on SIGTERM.
  t.equal(d.child.exitCode, null, 'the daemon is still up');
  t.notOk(d.stderr.join('').includes('FATAL ERROR'), 'no fatal error on stderr');
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0, 'exit 0 after SIGTERM');
});
