/**
 * Start-up benchmark (issue 14): median / p90 over BENCH_STARTUP_RUNS runs (default 15) of
 * - `node -e 0` (node's own boot: the floor of the next two on this machine at this moment);
 * - `vipcast --version` (spawn -> exit);
 * - `vipcast validate -c examples/vipcast.yaml` (spawn -> exit);
 * - `vipcast run --dry-run`, 1 app without monitors (spawn -> first `route announce` log line);
 * and, in the lab (root, gobgpd, BIRD; BENCH_STARTUP_LAB_RUNS runs, default 5, each on fresh namespaces): spawn of
 * `vipcast run` -> first route at BIRD, with a gobgpd already running (the stack's) and with the managed gobgpd.
 * The three CLI measurements are interleaved (version, validate, dry-run, version, ...) so load from other work on the
 * machine spreads over all of them. Targets (printed, never asserted): 150 ms, 150 ms, 500 ms at BIRD.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN, DaemonProcess } from '../test/helpers/daemon.js';
import { createLab, labMissing, pidRunning, waitFor } from '../test/lab/netns.js';
import { birdConfig, startBird } from '../test/lab/bird.js';
import { createStack, NODE_AS, TOR_AS } from '../test/lab/stack.js';
import { percentile } from './stats.js';

const EXAMPLE = fileURLToPath(new URL('../../examples/vipcast.yaml', import.meta.url));

/** Spawn `node bin/vipcast.js ...args` (no inherited NODE_OPTIONS) and resolve with the ms until it exited. */
function timeExit(args: string[], script: string = BIN): Promise<number> {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const t0 = performance.now();
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env });
  let err = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (c: string) => (err += c));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => {
      const ms = performance.now() - t0;
      if (code === 0) resolve(ms);
      else reject(new Error(`vipcast ${args.join(' ')} exited ${String(code)}: ${err.slice(-500)}`));
    });
  });
}

function summary(label: string, values: number[], target?: number): string {
  const fmt = (v: number) => v.toFixed(0);
  const t = target === undefined ? '' : `; target <= ${target} ms: ${percentile(values, 50) <= target ? 'met' : 'NOT met'} (median)`;
  return `${label}: median ${fmt(percentile(values, 50))} ms, p90 ${fmt(percentile(values, 90))} ms, min ${fmt(Math.min(...values))}, max ${fmt(Math.max(...values))} (n=${values.length})${t}`;
}

/** Dry-run start with 1 app: spawn -> first announce line; also "config loaded" from the daemon's own log times. */
async function dryRunOnce(dir: string): Promise<{ announce: number; configLoaded: number }> {
  const file = join(dir, 'one.yaml');
  writeFileSync(file, `agent:\n  listen_addr: ""\n  monitor_interval: 1s\n  state_file: ${join(dir, 'state.json')}\n  registrations_file: ${join(dir, 'reg.json')}\n  maintenance_state_file: ${join(dir, 'maint.json')}\nrouting: { plugin: dry-run }\nbgp: { local_as: 65001, local_ip: 198.18.0.2, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }\napps:\n  - { name: one, vip: 198.18.77.1/32 }\n`);
  const wall0 = Date.now();
  const t0 = performance.now();
  const d = new DaemonProcess(['run', '-c', file, '--dry-run'], { plain: true });
  try {
    const line = await d.waitLine((l) => l.event === 'route' && l.action === 'announce', 30_000, 'first announce');
    const loaded = d.lines.find((l) => l.msg === 'config loaded');
    return { announce: line.at - t0, configLoaded: loaded ? loaded.time - wall0 : NaN };
  } finally {
    d.kill('SIGTERM');
    await Promise.race([d.exited, new Promise((r) => setTimeout(r, 5000))]);
    await d.stop();
  }
}

/** Lab: spawn of vipcast -> first route at BIRD, using the stack's running gobgpd. */
async function labExternalOnce(): Promise<{ route: number; configLoaded: number; announce: number }> {
  const s = await createStack();
  try {
    const file = s.writeConfig(`${s.baseConfig()}apps:\n  - { name: one, vip: 198.18.250.1/32 }\n`);
    const wall0 = Date.now();
    const t0 = performance.now();
    const d = s.startVipcast(file, [], { NODE_OPTIONS: '' });
    return await firstRoute(d, async () => (await s.routes()).length > 0, t0, wall0);
  } finally {
    await s.destroy();
  }
}

/** Wait for the first route at BIRD, then read the daemon's own times for 'config loaded' and the announce; stop it. */
async function firstRoute(d: DaemonProcess, atBird: () => Promise<boolean>, t0: number, wall0: number): Promise<{ route: number; configLoaded: number; announce: number }> {
  await waitFor(atBird, 60_000, 'first route', 10);
  const route = performance.now() - t0;
  const loaded = d.lines.find((l) => l.msg === 'config loaded');
  // The route can reach BIRD before this process has read the log line that says so.
  const ann = await d.waitLine((l) => l.event === 'route' && l.action === 'announce', 5000, 'announce line').catch(() => undefined);
  d.kill('SIGTERM');
  await Promise.race([d.exited, new Promise((r) => setTimeout(r, 10_000))]);
  return { route, configLoaded: loaded ? loaded.time - wall0 : NaN, announce: ann ? ann.time - wall0 : NaN };
}

/** Lab: spawn of vipcast -> first route at BIRD, vipcast starting gobgpd itself (routing.gobgp.managed). */
async function labManagedOnce(): Promise<{ route: number; configLoaded: number; announce: number }> {
  const lab = await createLab({ prefix: 'bs' });
  const dir = mkdtempSync(join(tmpdir(), 'vc-bs-'));
  const socketDir = join(dir, 'gobgpd');
  let d: DaemonProcess | undefined;
  const bird = await startBird({
    ns: lab.b,
    config: () => birdConfig({ routerId: lab.ipB, protocols: [{ name: 'uplink', family: 'ipv4', local: lab.ipB, localAs: TOR_AS, neighbor: lab.ipA, neighborAs: NODE_AS }] }),
  }).catch(async (err: unknown) => {
    await lab.destroy();
    throw err;
  });
  try {
    const file = join(dir, 'vipcast.yaml');
    writeFileSync(file, `agent:
  listen_addr: ""
  monitor_interval: 200ms
  state_file: ${join(dir, 'host-state.json')}
  registrations_file: ${join(dir, 'registrations.json')}
  maintenance_state_file: ${join(dir, 'maintenance.json')}
routing:
  gobgp: { socket_dir: ${socketDir} }
bgp:
  local_as: ${NODE_AS}
  local_ip: ${lab.ipA}
  peers:
    - { peer_ip: ${lab.ipB}, peer_as: ${TOR_AS} }
apps:
  - { name: one, vip: 198.18.250.1/32 }
`);
    const wall0 = Date.now();
    const t0 = performance.now();
    d = new DaemonProcess(['run', '-c', file], { netns: lab.a, env: { VIPCAST_GOBGP_ADDRESS: '', NODE_OPTIONS: '' } });
    return await firstRoute(d, async () => (await bird.routes('uplink')).length > 0, t0, wall0);
  } finally {
    await d?.stop();
    // A gobgpd left behind (it should have died with vipcast): never leave it running.
    try {
      const pid = Number(readFileSync(join(socketDir, 'gobgpd.pid'), 'utf8').trim());
      if (Number.isInteger(pid) && pid > 1 && pidRunning(pid)) process.kill(pid, 'SIGKILL');
    } catch {
      // no pid file: no gobgpd
    }
    await bird.stop().catch(() => undefined);
    await lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function benchStartup(): Promise<void> {
  const runs = Number(process.env.BENCH_STARTUP_RUNS ?? 15);
  console.log('\n## startup: spawn of the CLI -> exit / first announce / first route at BIRD');
  const dir = mkdtempSync(join(tmpdir(), 'vipcast-bench-startup-'));
  try {
    const bare: number[] = [];
    const version: number[] = [];
    const validate: number[] = [];
    const dry: number[] = [];
    const dryLoaded: number[] = [];
    // One warm-up of each (file cache), then interleaved runs.
    await timeExit(['--version']);
    await timeExit(['validate', '-c', EXAMPLE]);
    await dryRunOnce(dir);
    for (let i = 0; i < runs; i++) {
      bare.push(await timeExit(['0'], '-e'));
      version.push(await timeExit(['--version']));
      validate.push(await timeExit(['validate', '-c', EXAMPLE]));
      const r = await dryRunOnce(dir);
      dry.push(r.announce);
      dryLoaded.push(r.configLoaded);
    }
    console.log(summary('node -e 0 (node\'s own boot on this machine now: the floor of the two below)', bare));
    console.log(summary('vipcast --version', version, 150));
    console.log(summary('vipcast validate -c examples/vipcast.yaml', validate, 150));
    console.log(summary('vipcast run --dry-run, 1 app: spawn -> first announce line', dry));
    console.log(summary('  of which spawn -> "config loaded" (log time)', dryLoaded.filter((v) => !Number.isNaN(v))));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const missing = labMissing(['gobgpd', 'bird', 'birdc', 'setpriv']);
  if (missing !== undefined) {
    console.log(`lab start -> first route at BIRD: not run (${missing})`);
    return;
  }
  const labRuns = Number(process.env.BENCH_STARTUP_LAB_RUNS ?? 5);
  const ext = { route: [] as number[], loaded: [] as number[], announce: [] as number[] };
  const man = { route: [] as number[], loaded: [] as number[], announce: [] as number[] };
  for (let i = 0; i < labRuns; i++) {
    const e = await labExternalOnce();
    ext.route.push(e.route); ext.loaded.push(e.configLoaded); ext.announce.push(e.announce);
    const m = await labManagedOnce();
    man.route.push(m.route); man.loaded.push(m.configLoaded); man.announce.push(m.announce);
  }
  const clean = (v: number[]) => v.filter((x) => !Number.isNaN(x));
  console.log(summary('lab, gobgpd already running: spawn -> first route at BIRD', ext.route, 500));
  console.log(summary('  spawn -> "config loaded" (log time)', clean(ext.loaded)));
  console.log(summary('  spawn -> "route announce" log line (log time)', clean(ext.announce)));
  console.log(summary('lab, managed gobgpd: spawn -> first route at BIRD', man.route, 500));
  console.log(summary('  spawn -> "config loaded" (log time)', clean(man.loaded)));
  console.log(summary('  spawn -> "route announce" log line (log time)', clean(man.announce)));
}

// `node dist/bench/startup.js` runs it alone.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await benchStartup();
