/**
 * Exec checks cannot escape (issue 9, item 5): a command that detaches with `setsid` leaves its process group, so a
 * process-group kill missed it (one orphan per interval, surviving vipcast's exit). Each check now runs in a cgroup of
 * its own that is killed as a whole. Checked from outside (/proc, by a marker in the escapee's environment): at the
 * timeout, after the check ends, at stopCommands()/close(), at SIGTERM of the real daemon, and at the start after a
 * daemon that was SIGKILLed. Plus the fallback (process groups only), which logs the choice and, as it warns, lets
 * the escapee live: proof that the marker search sees one.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { CheckPool } from '../src/core/check-pool.js';
import { createLogger } from '../src/core/logger.js';
import { MonitorRegistry } from '../src/core/monitor-registry.js';
import type { MonitorSpec } from '../src/plugin-api.js';
import { DaemonProcess, type LogLine } from './helpers/daemon.js';
import { processesWith } from './helpers/procs.js';

const registry = new MonitorRegistry();
const spec = (input: unknown): MonitorSpec => registry.parse(input, { path: 'test', baseDir: process.cwd(), trusted: true });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const CI = process.env.CI === 'true';

/** Processes whose ENVIRONMENT carries `VIPCAST_ESCAPE=<marker>`: only the setsid'd one (the gate has it in argv). */
function escapees(marker: string): number[] {
  return processesWith(marker).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/environ`, 'utf8').includes(`VIPCAST_ESCAPE=${marker}`);
    } catch {
      return false;
    }
  });
}

/** A command that leaves a daemon behind in a session (and process group) of its own, then does `rest`. */
const detaching = (marker: string, rest: string): string => `exec:VIPCAST_ESCAPE=${marker} setsid sleep 300 & ${rest}`;

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) return false;
    await sleep(20);
  }
  return true;
}

/** What is left carrying `marker` after a grace for exits to finish (a SIGKILL is delivered at once, the exit not). */
async function leftovers(marker: string, graceMs = 2000): Promise<number[]> {
  await waitFor(() => processesWith(marker).length === 0, graceMs);
  return processesWith(marker);
}

/** Collects a pino logger's JSON lines. */
function capture(): { log: ReturnType<typeof createLogger>; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line !== '') lines.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  return { log: createLogger({ level: 'info', pretty: false, destination }), lines };
}

const pgCgroups = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir).filter((n) => n.startsWith('pg-')) : []);

// The cgroup mode needs root and a writable cgroup2. Under CI (root on this machine) its absence is a failure.
const probe = capture();
const probePool = new CheckPool({ workers: 1, log: probe.log });
t.teardown(() => probePool.close());
const contained = probePool.containment.mode === 'cgroup';
const skip = contained ? false : CI ? false : `no writable cgroup2 here (${(probePool.containment as { reason: string }).reason})`;

t.test('the pool says at start which way exec checks are held; root with a writable cgroup2 gets cgroups', async (t) => {
  const c = probePool.containment;
  const line = probe.lines.find((l) => /exec checks are contained|cgroups not writable/.test(l.msg));
  t.ok(line, `the choice is logged: ${JSON.stringify(line)}`);
  if (CI || process.getuid?.() === 0) {
    t.equal(c.mode, 'cgroup', `cgroup mode (${JSON.stringify(c)})`);
  }
  if (c.mode === 'cgroup') {
    t.match(line?.msg, /exec checks are contained/);
    t.equal(line?.cgroup, c.dir, 'the log line names the cgroup');
    t.ok(existsSync(join(c.dir, 'cgroup.kill')), `${c.dir} is a cgroup with cgroup.kill`);
    t.match(c.dir, new RegExp(`/vipcast-checks-${process.pid}/pool-\\d+$`), 'below vipcast\'s own cgroup, per pid, per pool');
  }
});

t.test('the systemd unit delegates its cgroup subtree to vipcast (Delegate=yes)', async (t) => {
  const unit = readFileSync(new URL('../../packaging/systemd/vipcast.service', import.meta.url), 'utf8');
  t.match(unit, /^Delegate=yes$/m);
});

t.test('at the timeout, a process the check detached with setsid is killed, and the check\'s cgroup removed', { skip }, async (t) => {
  const pool = new CheckPool({ workers: 1 });
  const marker = randomUUID();
  t.teardown(async () => {
    await pool.close();
    killAll(processesWith(marker));
  });
  t.equal((await pool.run(spec('exec:true'), 30_000)).ok, true, 'the worker is up');
  // Long enough for bash and setsid to start on a loaded machine: the escapee must exist before the timeout.
  const running = pool.run(spec(detaching(marker, 'sleep 300')), 5000);
  t.ok(await waitFor(() => escapees(marker).length >= 1, 10_000), 'the detached daemon runs during the check');
  const r = await running;
  t.equal(r.ok, false);
  t.match(r.reason, /timed out after 5000 ms/);
  t.same(await leftovers(marker), [], 'nothing of the check is left after its timeout (the setsid one included)');
  const dir = (pool.containment as { dir: string }).dir;
  t.ok(await waitFor(() => pgCgroups(dir).length === 0, 5000), `the check's cgroup is removed (${pgCgroups(dir).join(', ')})`);
});

t.test('after a check that passed, a process it detached with setsid is killed', { skip }, async (t) => {
  const pool = new CheckPool({ workers: 1 });
  const marker = randomUUID();
  t.teardown(async () => {
    await pool.close();
    killAll(processesWith(marker));
  });
  for (let i = 0; i < 3; i++) {
    // The sleep lets setsid detach before bash exits (else the group kill alone would have caught it).
    const r = await pool.run(spec(detaching(marker, 'sleep 0.3; echo up')), 5000);
    t.equal(r.ok, true, `check ${i + 1} is up (${r.reason})`);
  }
  t.same(await leftovers(marker), [], 'none of the three detached daemons is left');
});

t.test('stopCommands() kills what running checks detached with setsid, at once; close() removes the pool\'s cgroup', { skip }, async (t) => {
  const pool = new CheckPool({ workers: 1 });
  const marker = randomUUID();
  t.teardown(async () => {
    await pool.close();
    killAll(processesWith(marker));
  });
  const runs = Array.from({ length: 5 }, () => pool.run(spec(detaching(marker, 'sleep 300')), 60_000));
  t.ok(await waitFor(() => escapees(marker).length === 5, 15_000), `five detached daemons run (${escapees(marker).length})`);
  pool.stopCommands();
  t.same(await leftovers(marker), [], 'none is left after stopCommands()');
  await pool.close();
  await Promise.all(runs);
  const dir = (pool.containment as { dir: string }).dir;
  t.notOk(existsSync(dir), `the pool's cgroup ${dir} is gone after close()`);
});

t.test('fallback (cgroups off): logged at start; a setsid escapee outlives the check, as the warning says', async (t) => {
  const { log, lines } = capture();
  const pool = new CheckPool({ workers: 1, log, cgroups: false });
  const marker = randomUUID();
  t.teardown(async () => {
    await pool.close();
    killAll(processesWith(marker));
  });
  t.equal(pool.containment.mode, 'process-group');
  const warning = lines.find((l) => l.msg.includes('cgroups not writable'));
  t.ok(warning, 'the choice is logged');
  t.match(warning?.msg, /killed by process group; a check that calls setsid can escape/);
  t.equal(warning?.level, 40, 'as a warning');
  t.equal((await pool.run(spec('exec:true'), 30_000)).ok, true, 'the worker is up');
  const r = await pool.run(spec(detaching(marker, 'sleep 300')), 5000);
  t.match(r.reason, /timed out after 5000 ms/);
  await sleep(300);
  t.equal(escapees(marker).length, 1, 'the detached daemon survived the timeout (only a cgroup holds it)');
  t.same(processesWith(marker).filter((p) => !escapees(marker).includes(p)), [], 'the rest of the check (its process group) is gone');
});

function daemonConfig(dir: string, command: string): string {
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `
agent:
  listen_addr: ""
routing:
  plugin: dry-run
bgp:
  local_as: 65001
  peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }]
apps:
  - name: detacher
    vip: 198.18.103.1/32
    monitor_interval: 1s
    check_timeout: 1s
    monitors: [${JSON.stringify(command)}]
`);
  return file;
}

t.test('the real daemon: a check that detaches every interval leaves nothing after SIGTERM (nor along the way)', { skip, timeout: 90_000 }, async (t) => {
  const marker = randomUUID();
  const file = daemonConfig(t.testdir(), detaching(marker, 'sleep 300'));
  const daemon = new DaemonProcess(['run', '-c', file, '--log-level', 'info'], { plain: true });
  t.teardown(async () => {
    await daemon.stop();
    killAll(processesWith(marker));
  });
  await daemon.waitLine((l) => l.msg === 'vipcast running', 30_000, 'vipcast running');
  const mode = daemon.lines.find((l) => /exec checks are contained|cgroups not writable/.test(l.msg));
  t.match(mode?.msg, /exec checks are contained/, `logged at start: cgroup mode (${JSON.stringify(mode)})`);
  t.ok(await waitFor(() => escapees(marker).length >= 1, 30_000), 'a detached daemon runs');
  // Four more intervals: each check's daemon dies at its timeout, they don't pile up (the old code: one per interval).
  await sleep(4000);
  t.ok(escapees(marker).length <= 1, `at most the current check's daemon is running (${escapees(marker).length})`);
  daemon.kill('SIGTERM');
  const { code } = await daemon.exited;
  t.equal(code, 0, 'vipcast exited 0');
  t.same(await leftovers(marker), [], 'nothing the checks started is left after vipcast exited');
});

t.test('the real daemon: a start kills and removes the check cgroups a SIGKILLed vipcast left behind', { skip, timeout: 90_000 }, async (t) => {
  const marker = randomUUID();
  const dir = t.testdir();
  const file = daemonConfig(dir, detaching(marker, 'sleep 300'));
  const first = new DaemonProcess(['run', '-c', file, '--log-level', 'info'], { plain: true });
  t.teardown(async () => {
    await first.stop();
    killAll(processesWith(marker));
  });
  const mode = await first.waitLine((l) => /exec checks are contained/.test(l.msg), 30_000, 'cgroup mode');
  const firstBase = String(mode.cgroup).replace(/\/pool-\d+$/, '');
  t.ok(await waitFor(() => escapees(marker).length >= 1, 30_000), 'a detached daemon runs');
  first.kill('SIGKILL');
  await first.exited;
  await sleep(300);
  const orphans = escapees(marker);
  t.ok(orphans.length >= 1, `SIGKILL leaves the detached daemon (${orphans.length}), nobody could kill it`);
  t.ok(existsSync(firstBase), `and its cgroup ${firstBase}`);
  // A second vipcast with no exec check at all (its pools clean up at start all the same).
  const file2 = join(dir, 'second.yaml');
  writeFileSync(file2, readFileSync(file, 'utf8').replace(/monitors: \[.*\]/, 'monitors: ["port:tcp:1"]'));
  const second = new DaemonProcess(['run', '-c', file2, '--log-level', 'info'], { plain: true });
  t.teardown(() => second.stop());
  await second.waitLine((l) => /exec checks are contained/.test(l.msg), 30_000, 'second start');
  t.same(await leftovers(marker, 5000), [], 'the orphans of the SIGKILLed vipcast are gone once the next one started');
  t.notOk(existsSync(firstBase), `its cgroup ${firstBase} is removed`);
  second.kill('SIGTERM');
  await second.exited;
});
