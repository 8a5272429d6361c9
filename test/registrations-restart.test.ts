/**
 * HTTP registrations survive a restart (issue 10, item 3), at a real BIRD: vipcast (the real CLI) with a gobgpd it does
 * not manage in the node namespace, BIRD in the tor namespace. Apps registered over HTTP are back after a SIGKILL of
 * vipcast (gobgpd kept running and kept the routes): same source, announced, and BIRD got no UPDATE for them (their
 * `since` is unchanged, the restarted vipcast sent no announce or withdraw for them). One the new config's
 * agent.allowed_prefixes refuses is not restored, and the log says why. After a SIGTERM (everything withdrawn) they
 * come back at the next start too, and an /unregister'ed app does not.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { labSkip, waitFor } from './lab/netns.js';
import { sameInstant } from './lab/bird.js';
import { nsFetch, stackFor } from './lab/stack.js';
import type { DaemonProcess, LogLine } from './helpers/daemon.js';

const skip = labSkip(['gobgpd', 'bird', 'birdc', 'iptables']);
const API = 'http://127.0.0.1:18083';
const ALPHA = '198.18.231.1/32';
const BETA = '198.18.231.2/32';
const GAMMA = '198.18.232.3/32';

interface StatusApp { name: string; source: string; state: string; announced: string[]; restored?: boolean }
interface Status { apps: StatusApp[]; registrations?: { file: string; restored: number; pending: boolean; error?: string } }

const routeLines = (d: DaemonProcess) => d.lines.filter((l) => l.event === 'route').map((l: LogLine) => `${String(l.action)} ${String(l.prefix ?? (l.prefixes as string[] | undefined)?.join(','))}`);

t.test('HTTP registrations are restored after a restart: no UPDATE for unchanged ones; one the new policy refuses is dropped, with the reason', { skip, timeout: 180_000 }, async (t) => {
  const s = await stackFor(t);
  const regFile = join(s.dir, 'registrations.json');
  const config = (allowed: string) => s.writeConfig(`${s.baseConfig(`  allowed_prefixes: [${allowed}]\n`, { listenAddr: '127.0.0.1:18083' })}apps:
  - { name: cfg, vip: 198.18.231.10/32 }
`);
  const status = async (): Promise<Status> => JSON.parse((await nsFetch(s.node, `${API}/status`)).body) as Status;
  const app = (st: Status, name: string) => st.apps.find((a) => a.name === name);
  const savedNames = () => {
    try {
      return (JSON.parse(readFileSync(regFile, 'utf8')) as { registrations: Array<{ name: string }> }).registrations.map((r) => r.name);
    } catch (err) {
      return String(err);
    }
  };

  // Run 1: three apps registered over HTTP.
  const file = config('198.18.0.0/15');
  const first = s.startVipcast(file);
  await first.waitLine((l) => l.msg === 'HTTP API listening', 30_000, 'API up');
  for (const q of [`name=alpha&vip=${ALPHA}`, `name=beta&vip=${BETA}&vip_communities=65001:7&nat=tcp:80:8080`, `name=gamma&vip=${GAMMA}`]) {
    const r = await nsFetch(s.node, `${API}/register?${q}`);
    t.equal(r.status, 200, `register ${q}: 200 ${r.body}`);
  }
  await waitFor(async () => (await s.routes()).length === 4, 20_000, 'the config app and the three HTTP apps at BIRD');
  await waitFor(async () => (await status()).registrations?.pending === false, 10_000, 'the registrations written').catch(() => undefined);
  t.same(savedNames(), ['alpha', 'beta', 'gamma'], 'the file lists the three HTTP apps (not the config app)');
  t.equal((await status()).registrations?.file, regFile, '/status names the file');
  const before = new Map((await s.routes()).map((r) => [r.prefix, r.since]));

  // SIGKILL: gobgpd keeps the routes; the next vipcast runs under a narrower policy that refuses gamma.
  first.kill('SIGKILL');
  await first.exited;
  t.equal((await s.routes()).length, 4, 'the routes outlive a SIGKILLed vipcast (gobgpd keeps them)');
  config('198.18.231.0/24');
  const second = s.startVipcast(file);
  await second.waitLine((l) => l.app === 'cfg' && l.state === 'up', 20_000, 'the config app checked');
  const back = await waitFor(async () => {
    const st = await status();
    return ['alpha', 'beta'].every((n) => app(st, n)?.state === 'up');
  }, 15_000, 'alpha and beta back and up').then(() => true, () => false);
  t.ok(back, 'alpha and beta are registered again after the restart, and up');
  await waitFor(async () => (await s.routes(GAMMA)).length === 0, 15_000, 'gamma (no longer any app\'s) withdrawn as a stray');
  // Passes run on every change; give them time to do anything they would do.
  await new Promise((r) => setTimeout(r, 1500));
  const after = new Map((await s.routes()).map((r) => [r.prefix, r.since]));
  for (const p of [ALPHA, BETA]) {
    t.ok(after.has(p) && sameInstant(after.get(p)!, before.get(p)!), `${p}: still at BIRD, since unchanged (${before.get(p)} -> ${after.get(p)}): no UPDATE`);
  }
  t.same(routeLines(second), [`withdraw ${GAMMA}`], 'the restarted vipcast sent one UPDATE: the withdraw of the refused app');
  const st = await status();
  for (const name of ['alpha', 'beta']) {
    t.match(app(st, name), { source: 'http', state: 'up', restored: true }, `${name}: in /status, source http, up, restored`);
  }
  t.same(app(st, 'beta')?.announced, [BETA]);
  const refused = second.lines.find((l) => l.app === 'gamma' && /HTTP registration not restored/.test(l.msg));
  t.match(refused?.msg, /vip: 198\.18\.232\.3\/32 is refused.*agent\.allowed_prefixes/, `the log says why gamma was not restored: ${refused?.msg}`);
  t.equal(refused?.level, 50, 'as an error');
  t.equal(app(st, 'gamma'), undefined, 'gamma is not registered');
  t.equal(app(st, 'cfg')?.restored, undefined, 'a config app is not marked restored');
  t.match(st.registrations, { restored: 2 });
  await waitFor(async () => (await status()).registrations?.pending === false, 10_000, 'the file rewritten').catch(() => undefined);
  t.same(savedNames(), ['alpha', 'beta'], 'the file drops gamma');

  // Unregister one, then SIGTERM (a `systemctl restart`): everything is withdrawn, the file still holds alpha.
  t.equal((await nsFetch(s.node, `${API}/unregister?name=beta`)).status, 200);
  await waitFor(async () => (await s.routes(BETA)).length === 0, 10_000, 'beta withdrawn');
  second.kill('SIGTERM');
  t.equal((await second.exited).code, 0, 'SIGTERM: exit 0');
  await waitFor(async () => (await s.routes()).length === 0, 5000, 'SIGTERM withdraws every route');
  const third = s.startVipcast(file);
  await waitFor(async () => (await s.routes('198.18.231.10/32')).length === 1, 20_000, 'the config app at BIRD after the SIGTERM restart');
  t.ok(await waitFor(async () => (await s.routes(ALPHA)).length === 1, 10_000, 'alpha at BIRD').then(() => true, () => false), 'alpha back at BIRD after the SIGTERM restart');
  const st3 = await status();
  t.match(app(st3, 'alpha'), { source: 'http', restored: true, announced: [ALPHA] });
  t.equal(app(st3, 'beta'), undefined, 'the unregistered app stays gone');
  t.same((await s.routes()).map((r) => r.prefix).sort(), ['198.18.231.1/32', '198.18.231.10/32']);
  third.kill('SIGTERM');
  t.equal((await third.exited).code, 0);
});
