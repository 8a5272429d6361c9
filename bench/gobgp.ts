/**
 * Benchmark: 10,000 VIPs (BENCH_VIPS) in a real gobgpd, received by a real BIRD; then gobgpd is killed and restarted
 * and the routes are re-injected the way the reconciler does it (onReconnect -> listRoutes -> announce each missing
 * route, one at a time). Prints: initial injection time, and gobgpd answering -> BIRD has them all. Needs root,
 * gobgpd and BIRD (lab namespaces). Run: `npm run bench gobgp` (once registered in bench/run.ts) or
 * `node dist/bench/gobgp.js`.
 */
import { pathToFileURL } from 'node:url';
import { createLab, labMissing, nsRun, waitFor } from '../test/lab/netns.js';
import { birdConfig, startBird, type Bird } from '../test/lab/bird.js';
import { startGobgpd } from '../test/lab/gobgpd.js';
import { GobgpRouter } from '../src/plugins/routing/gobgp/index.js';
import { parseCommunity, parsePrefix } from '../src/core/values.js';
import { silentLogger } from '../src/core/logger.js';
import type { Route } from '../src/plugin-api.js';

async function birdCount(bird: Bird, table: string): Promise<number> {
  const out = await bird.birdc(['show', 'route', 'count', 'table', table]);
  return Number(/(\d+) of \d+ routes/.exec(out)?.[1] ?? 0);
}

export async function benchGobgp(): Promise<void> {
  const missing = labMissing(['gobgpd', 'bird', 'birdc']);
  if (missing) {
    console.log(`gobgp: skipped (${missing})`);
    return;
  }
  const n = Number(process.env.BENCH_VIPS ?? 10_000);
  const lab = await createLab({ prefix: 'gk' });
  const inNode = (args: string[]) => nsRun(lab.a, 'ip', args);
  const bird = await startBird({
    ns: lab.b,
    config: () => birdConfig({ routerId: lab.ipB, protocols: [{ name: 'a', family: 'ipv4', local: lab.ipB, localAs: 65001, neighbor: lab.ipA, neighborAs: 65000, disabled: true }] }),
  });
  const gobgpd = await startGobgpd({ ns: lab.a, logLevel: 'warn' });
  const router = new GobgpRouter({
    bgp: { localAs: 65000, localIp: lab.ipA, communities: [], origin: 'igp', listenPort: 179, nextHop: 'local_ip', peers: [{ address: lab.ipB, asn: 65001, communities: [] }] },
    gobgp: { address: gobgpd.address },
    log: silentLogger(),
    runIp: inNode,
  });
  try {
    await router.start();
    await bird.enable('a');
    await bird.waitEstablished('a', 15_000);
    const comm = [parseCommunity('65000:100', 'bench')];
    const routes: Route[] = [];
    for (let i = 0; i < n; i++) {
      routes.push({ prefix: parsePrefix(`198.19.${Math.floor(i / 250)}.${(i % 250) + 1}/32`, 'bench'), app: `app${i}`, origin: 'igp', communities: comm });
    }

    const t = performance.now();
    for (const r of routes) await router.announce(r, 'bench');
    const injected = performance.now() - t;
    await waitFor(async () => (await birdCount(bird, 't_a')) === n, 120_000, `${n} routes at BIRD`, 100);
    const initial = performance.now() - t;
    console.log(`gobgp: ${n} VIPs: AddPath x${n} took ${Math.round(injected)} ms (${Math.round((n / injected) * 1000)}/s); all at BIRD after ${Math.round(initial)} ms`);

    // The reconciler's reaction to a reconnect, in miniature: one full pass, announcing what is missing one by one.
    let resynced = 0;
    let pipelined = false;
    router.onReconnect(() => {
      if (pipelined) return;
      void (async () => {
        const have = new Set((await router.listRoutes()).map((r) => r.prefix.text));
        for (const r of routes) if (!have.has(r.prefix.text)) await router.announce(r, 'resync');
        resynced = performance.now();
      })();
    });
    const restart = async (label: string) => {
      await gobgpd.kill('SIGKILL');
      await waitFor(() => !router.connected, 5000, 'router to notice');
      await waitFor(async () => (await birdCount(bird, 't_a')) === 0, 10_000, 'BIRD to drop the routes');
      await gobgpd.restart();
      await gobgpd.waitAnswering();
      const t0 = performance.now();
      await waitFor(async () => (await birdCount(bird, 't_a')) === n, 120_000, `${n} routes back at BIRD`, 50);
      const back = performance.now() - t0;
      console.log(`gobgp: gobgpd restart, ${label}: ${n} VIPs back at BIRD ${Math.round(back)} ms after gobgpd answered (re-injected by ${Math.round(resynced - t0)} ms)`);
    };
    await restart('one AddPath per route (a router without announceMany)');

    // For comparison: the same re-injection with up to 64 AddPath calls in flight (gobgpd serializes them anyway).
    const inflight = 64;
    router.onReconnect(() => undefined);
    const unsubscribe = router.onReconnect(() => {
      void (async () => {
        const have = new Set((await router.listRoutes()).map((r) => r.prefix.text));
        const todo = routes.filter((r) => !have.has(r.prefix.text));
        await Promise.all(Array.from({ length: inflight }, async () => {
          for (let r = todo.pop(); r; r = todo.pop()) await router.announce(r, 'resync');
        }));
        resynced = performance.now();
      })();
    });
    pipelined = true;
    await restart(`${inflight} AddPath calls in flight`);
    unsubscribe();

    // And with the batch call the router offers for full resyncs: AddPathStream, 500 paths per message.
    const unsubscribe2 = router.onReconnect(() => {
      void (async () => {
        const have = new Set((await router.listRoutes()).map((r) => r.prefix.text));
        await router.announceMany(routes.filter((r) => !have.has(r.prefix.text)), 'resync');
        resynced = performance.now();
      })();
    });
    await restart('announceMany (AddPathStream, what the reconciler uses for a full pass)');
    unsubscribe2();
  } finally {
    await router.close();
    await gobgpd.stop();
    await bird.stop();
    await lab.destroy();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await benchGobgp();
