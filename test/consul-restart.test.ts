/**
 * A vipcast restart with Consul apps, at a real BIRD: after a SIGKILL the next vipcast finds the Consul apps' paths in
 * gobgpd before its first catalog read. They must not look stale: the restart sends no UPDATE for an unchanged healthy
 * app (BIRD's route `since` unchanged). (That a path of no app at all still goes once the source has delivered is
 * proven in reconciler.test.)
 */
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { labSkip, nsSpawn, waitFor } from './lab/netns.js';
import { sameInstant } from './lab/bird.js';
import { createStack } from './lab/stack.js';

const skip = labSkip(['gobgpd', 'bird', 'birdc']);
const RUNNER = fileURLToPath(new URL('./helpers/consul-server-main.js', import.meta.url));
const NODE = 'node1';

t.test('a vipcast restart with Consul apps: no UPDATE for the healthy Consul app (BIRD since unchanged)', { skip, timeout: 120_000 }, async (t) => {
  const s = await createStack();
  t.teardown(() => s.destroy());
  const services = [
    { Service: 'dns', Tags: ['enable_gocast', 'gocast_vip=198.18.230.53/32', 'gocast_vip_communities=65001:53'] },
    { Service: 'syslog', Tags: ['enable_gocast', 'gocast_vip=198.18.230.54/32'] },
  ];
  // The Consul test server runs inside the node namespace, where vipcast can reach it on 127.0.0.1.
  const consul = nsSpawn(s.node, process.execPath, [RUNNER, NODE, JSON.stringify(services)]);
  t.teardown(() => { consul.kill('SIGKILL'); });
  const addr = await new Promise<string>((resolve, reject) => {
    consul.stdout!.once('data', (d: Buffer) => resolve((JSON.parse(d.toString()) as { addr: string }).addr));
    consul.once('exit', (code) => reject(new Error(`consul test server exited ${code}`)));
  });
  const file = s.writeConfig(`${s.baseConfig(`  consul_addr: ${addr}\n  consul_query_interval: 30s\n`)}apps: []\n`);
  const env = { CONSUL_NODE: NODE };

  const first = s.startVipcast(file, [], env);
  await waitFor(async () => (await s.routes()).length === 2, 20_000, 'both Consul routes at BIRD');
  const before = new Map((await s.routes()).map((r) => [r.prefix, r.since]));
  first.kill('SIGKILL');
  await first.exited;
  t.equal((await s.routes()).length, 2, 'the routes outlive a SIGKILLed vipcast (gobgpd keeps them)');

  const second = s.startVipcast(file, [], env);
  await second.waitLine((l) => l.msg === 'Consul apps updated', 15_000, 'first catalog read after the restart');
  await second.waitLine((l) => l.app === 'dns' && l.state === 'up', 10_000, 'dns checked');
  await second.waitLine((l) => l.app === 'syslog' && l.state === 'up', 10_000, 'syslog checked');
  // Two full passes later (resync runs on every change; give it a second) nothing may have moved.
  await new Promise((r) => setTimeout(r, 1500));
  const after = await s.routes();
  t.equal(after.length, 2, 'both routes still at BIRD');
  for (const r of after) t.ok(sameInstant(r.since, before.get(r.prefix)!), `${r.prefix}: since unchanged (${before.get(r.prefix)} -> ${r.since}): no UPDATE`);
  const updates = second.lines.filter((l) => l.event === 'route');
  t.same(updates.map((l) => `${String(l.action)} ${String(l.prefix ?? (l.prefixes as string[] | undefined)?.join(','))}`), [], 'the restarted vipcast sent no UPDATE');
  second.kill('SIGTERM');
  t.equal((await second.exited).code, 0);
  await waitFor(async () => (await s.routes()).length === 0, 5000, 'SIGTERM withdraws them');
});
