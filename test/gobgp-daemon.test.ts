/**
 * vipcast itself (the CLI, `run -c FILE`, routing.plugin gobgp) as a child process inside namespace "node", with a
 * real gobgpd beside it and a real BIRD in "tor": health -> route at BIRD, SIGTERM -> routes gone and exit 0,
 * SIGKILL then restart with one app removed -> the stale route is gone, the other app's route never flaps.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createLab, labSkip, nsRun, nsSpawn, waitFor } from './lab/netns.js';
import { birdConfig, startBird } from './lab/bird.js';
import { startGobgpd } from './lab/gobgpd.js';
import { DaemonProcess } from './helpers/daemon.js';

const skip = labSkip(['gobgpd', 'bird', 'birdc']);

/** A TCP listener inside the namespace (the "app"); killing the process closes it. */
async function appListener(ns: string, port: number): Promise<ChildProcess> {
  const child = nsSpawn(ns, process.execPath, ['-e', `require('net').createServer((c) => c.destroy()).listen(${port}, '127.0.0.1', () => console.log('listening'))`]);
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`listener exited ${code}`)));
  });
  return child;
}

async function stopListener(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

t.test('vipcast with routing gobgp: health drives routes at a real BIRD; SIGTERM withdraws; a stale route after SIGKILL is cleared on restart', { skip, timeout: 170_000 }, async (t) => {
  const lab = await createLab({ prefix: 'gd' });
  const S = Number(lab.ipA.split('.')[2]);
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  t.teardown(async () => {
    for (const fn of cleanups.reverse()) await Promise.resolve().then(fn).catch(() => undefined);
    await lab.destroy();
  });
  const node = lab.a;
  const bird = await startBird({
    ns: lab.b,
    config: () => birdConfig({ routerId: lab.ipB, protocols: [{ name: 'a', family: 'ipv4', local: lab.ipB, localAs: 65001, neighbor: lab.ipA, neighborAs: 65000 }] }),
  });
  cleanups.push(() => bird.stop());
  const gobgpd = await startGobgpd({ ns: node });
  cleanups.push(() => gobgpd.stop());

  const dir = t.testdir();
  const WEB = `198.19.${S}.10/32`;
  const ALWAYS = `198.19.${S}.11/32`;
  const PORT = 18080;
  const config = (withAlways: boolean) => {
    const file = join(dir, withAlways ? 'vipcast.yaml' : 'vipcast-web-only.yaml');
    writeFileSync(file, `
agent:
  listen_addr: ""
  monitor_interval: 200ms
  cleanup_timer: 1m
  state_file: ${join(dir, 'host-state.json')}
routing:
  plugin: gobgp
  gobgp:
    address: ${gobgpd.address}
bgp:
  local_as: 65000
  local_ip: ${lab.ipA}
  communities: ["65000:100"]
  peers:
    - peer_ip: ${lab.ipB}
      peer_as: 65001
      communities: ["65000:901"]
apps:
  - name: web
    vip: ${WEB}
    vip_config:
      bgp_communities: ["65000:200"]
    monitors: ["port:tcp:${PORT}"]
${withAlways ? `  - name: always\n    vip: ${ALWAYS}\n` : ''}`);
    return file;
  };
  const at = async (prefix: string) => (await bird.routes('a', prefix))[0];
  const daemons: DaemonProcess[] = [];
  cleanups.push(async () => {
    for (const d of daemons) await d.stop();
  });
  const startVipcast = (file: string) => {
    const d = new DaemonProcess(['run', '-c', file, '--log-level', 'info'], { netns: node });
    daemons.push(d);
    return d;
  };

  const d1 = startVipcast(config(true));
  const t0 = Date.now();
  const always = await waitFor(() => at(ALWAYS), 15_000, `${ALWAYS} at BIRD`);
  t.comment(`MEASURED vipcast start -> first route at BIRD: ${Date.now() - t0} ms`);
  t.equal(always.nextHop, lab.ipA);
  t.same([...always.communities].sort(), ['65000:100', '65000:901']);
  t.notOk(await at(WEB), 'web not announced while nothing listens');
  const lo = await nsRun(node, 'ip', ['-j', 'addr', 'show', 'dev', 'lo']);
  t.match(lo, `198.19.${S}.11`, 'the VIP is on lo in the node namespace');

  let app = await appListener(node, PORT);
  cleanups.push(() => stopListener(app));
  const opened = Date.now();
  const web = await waitFor(() => at(WEB), 5000, `${WEB} at BIRD`);
  t.comment(`MEASURED listener opened -> route at BIRD: ${Date.now() - opened} ms (monitor_interval 200 ms)`);
  t.same([...web.communities].sort(), ['65000:100', '65000:200', '65000:901'], 'global + app + per-peer communities');
  t.equal(web.origin, 'IGP');

  await stopListener(app);
  const closed = Date.now();
  await waitFor(async () => !(await at(WEB)), 5000, `${WEB} withdrawn at BIRD`);
  t.comment(`MEASURED listener closed -> route gone at BIRD: ${Date.now() - closed} ms`);
  t.ok(await at(ALWAYS), 'the other app keeps its route');

  app = await appListener(node, PORT);
  await waitFor(() => at(WEB), 5000, `${WEB} back at BIRD`);
  d1.kill('SIGTERM');
  const exit = await d1.exited;
  t.same(exit, { code: 0, signal: null }, 'SIGTERM: exit 0');
  t.notOk(await at(WEB), 'SIGTERM: web withdrawn');
  t.notOk(await at(ALWAYS), 'SIGTERM: always withdrawn');
  t.equal((await bird.protocol('a')).bgpState, 'Established', 'the session itself stays (gobgpd runs on; systemd stops it with vipcast)');

  const d2 = startVipcast(config(true));
  await waitFor(async () => (await at(WEB)) && (await at(ALWAYS)), 15_000, 'both routes at BIRD again');
  d2.kill('SIGKILL');
  await d2.exited;
  await new Promise((r) => setTimeout(r, 500));
  t.ok(await at(ALWAYS), 'after SIGKILL the route is still there (gobgpd outlived vipcast: what the systemd unit pair prevents)');

  const d3 = startVipcast(config(false));
  const restarted = Date.now();
  let webMissing = 0;
  await waitFor(async () => {
    const [a, w] = [await at(ALWAYS), await at(WEB)];
    if (!w) webMissing++;
    return !a && w;
  }, 15_000, `stale ${ALWAYS} removed and ${WEB} present at BIRD`, 50);
  t.comment(`MEASURED restart without app "always" -> its stale route gone at BIRD: ${Date.now() - restarted} ms`);
  t.equal(webMissing, 0, 'web (still healthy) never left BIRD during the restart (no flap)');
  t.ok(await at(WEB), 'web has its route');
  d3.kill('SIGTERM');
  t.same(await d3.exited, { code: 0, signal: null });
  t.notOk(await at(WEB), 'withdrawn at exit');
});
