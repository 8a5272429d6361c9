/**
 * Flap damping (issue 10, item 5) through a real `vipcast run` child with the dry-run router: the hold in /status,
 * `vipcast status` and /metrics; a reload keeps the penalties; a reload that turns damping off releases the app.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Server } from 'node:net';
import { BIN, DaemonProcess, closeServer, freePort, listen, type LogLine } from './helpers/daemon.js';

const pexec = promisify(execFile);
const VIP = '198.18.233.1/32';

interface AppStatus { name: string; state: string; announced: string[]; held?: { reason: string }; damping?: { penalty: number; flaps: number; suppressed: boolean; reuse_at?: string } }

t.test('held after three flaps: /status, vipcast status and /metrics say so; a reload keeps the penalty; turning damping off releases it', { timeout: 120_000 }, async (t) => {
  const dir = t.testdir();
  const [apiPort, webPort] = [await freePort(), await freePort()];
  const file = join(dir, 'vipcast.yaml');
  const write = (damping: string) => writeFileSync(file, `
agent: { listen_addr: "127.0.0.1:${apiPort}", monitor_interval: 200ms, fall: 3, flap_damping: { ${damping} } }
routing: { plugin: dry-run }
bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
apps:
  - { name: web, vip: ${VIP}, monitors: ["port:tcp:${webPort}"] }
`);
  // fall 3: checks slowed past their timeout by a busy machine are not a flap (a closed port fails every round).
  // Defaults but a 30 s half-life: held for about a minute after the third flap, long enough for two reloads.
  write('enabled: true, half_life: 30s');
  let server: Server | undefined = await listen(webPort);
  t.teardown(() => (server ? closeServer(server) : undefined));
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  const api = `http://127.0.0.1:${apiPort}`;
  const web = async (): Promise<AppStatus> => ((await (await fetch(`${api}/status`)).json()) as { apps: AppStatus[] }).apps.find((a) => a.name === 'web')!;
  const metric = async (name: string): Promise<number> => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(await (await fetch(`${api}/metrics`)).text())?.[1]);
  const announced = (from: number) => d.waitLine((l: LogLine) => l.event === 'route' && l.action === 'announce' && l.prefix === VIP, 10_000, 'announce', from);

  await announced(0);
  let from = 0;
  for (let n = 1; n <= 3; n++) {
    from = d.lines.length;
    await closeServer(server!);
    server = undefined;
    await d.waitLine((l) => l.app === 'web' && l.state === 'down', 10_000, `down ${n}`, from);
    server = await listen(webPort);
    await d.waitLine((l) => l.app === 'web' && l.state === 'up', 10_000, `up ${n}`, from);
    if (n < 3) await announced(from);
  }
  const st = await web();
  t.equal(st.state, 'up', 'the checks say up');
  t.match(st.held?.reason, /^flap damping: penalty \d+ \(suppress above 2000\) after 3 flaps in (<1s|\d+s); announced again once below 750, in ~(\d+[hms])+$/);
  t.match(st.damping, { flaps: 3, suppressed: true });
  const flaps = st.damping!.flaps;
  t.ok(Date.parse(st.damping!.reuse_at!) > Date.now() + 20_000, 'reuse_at about a minute ahead');
  await new Promise((r) => setTimeout(r, 500));
  t.notOk(d.lines.slice(from).some((l) => l.event === 'route' && l.action === 'announce'), 'not announced after the third flap');
  t.same((await web()).announced, []);
  t.ok(d.lines.some((l) => l.component === 'flap-damping' && l.app === 'web' && /^app held down by flap damping: penalty/.test(l.msg)), 'a log line says held down, and why');

  const out = await pexec(process.execPath, [BIN, 'status', '--api', `127.0.0.1:${apiPort}`]);
  t.match(out.stdout.split('\n').find((l) => l.startsWith('web ')), /^web\s+config\s+up\s+-\s+held down: flap damping: penalty \d+ \(suppress above 2000\) after \d+ flaps/, 'vipcast status shows the reason');
  t.equal(await metric('vipcast_apps_damped'), 1);
  t.equal(await metric('vipcast_flap_damping_suppressions_total'), 1);

  // A reload with another half-life keeps the penalty (decayed, not reset) and the hold.
  const before = (await web()).damping!.penalty;
  write('enabled: true, half_life: 40s');
  const r1 = (await (await fetch(`${api}/reload`, { method: 'POST' })).json()) as { ok: boolean; changes: string[] };
  t.ok(r1.ok);
  t.same(r1.changes, ['agent.flapDamping: changed']);
  const kept = await web();
  t.ok(kept.held, 'still held after the reload');
  t.match(kept.damping, { suppressed: true });
  t.ok(kept.damping!.flaps >= flaps, 'the flaps are still counted');
  t.ok(kept.damping!.penalty > before - 200, `penalty kept: ${before} -> ${kept.damping!.penalty} (decayed a little, not reset)`);

  // Turning it off releases the app at once.
  from = d.lines.length;
  write('enabled: false');
  const off = performance.now();
  const r2 = (await (await fetch(`${api}/reload`, { method: 'POST' })).json()) as { ok: boolean };
  t.ok(r2.ok);
  await announced(from);
  t.comment(`announced ${Math.round(performance.now() - off)} ms after the reload was asked for`);
  const released = await web();
  t.equal(released.held, undefined);
  t.equal(released.damping, undefined, 'off: no damping in /status');
  t.same(released.announced, [VIP]);
  t.equal(await metric('vipcast_apps_damped'), 0);
});
