/**
 * Shutdown with the speaker frozen (gobgpd SIGSTOPped: its socket accepts, nothing answers): vipcast must still remove
 * its addresses and NAT rules and exit 0 within its 10 s bound, saying in the log which routes it could not withdraw.
 * With agent.shutdown_drain set the drain is skipped (nothing can be drained through a speaker that does not answer).
 */
import t from 'tap';
import { labSkip, waitFor } from './lab/netns.js';
import { stackFor } from './lab/stack.js';
import { hasVip, vipRules } from './lab/traffic.js';

const skip = labSkip(['gobgpd', 'bird', 'birdc', 'iptables']);

for (const drain of ['', '5s']) {
  t.test(`SIGTERM with gobgpd frozen${drain ? ` and shutdown_drain ${drain}` : ''}: exit 0 within 10 s, nothing left on lo or in the NAT chain, the log names the routes not withdrawn`, { skip, timeout: 90_000 }, async (t) => {
    const s = await stackFor(t);
    const file = s.writeConfig(`${s.baseConfig(drain ? `  shutdown_drain: ${drain}\n` : '')}apps:
  - { name: a, vip: 198.18.232.1/32, nats: ["tcp:80:8080"] }
  - { name: b, vip: 198.18.232.2/32, nats: ["udp:53:8053"] }
`);
    const d = s.startVipcast(file);
    t.teardown(() => { try { process.kill(s.gobgpd.pid, 'SIGCONT'); } catch { /* gone */ } });
    await waitFor(async () => (await s.routes()).length === 2, 20_000, 'both announced at BIRD');
    t.ok(await hasVip(s.node, '198.18.232.1'), 'a VIP on lo');
    t.ok((await vipRules(s.node)).length > 0, 'NAT rules in place');

    process.kill(s.gobgpd.pid, 'SIGSTOP');
    await new Promise((r) => setTimeout(r, 200));
    const term = performance.now();
    d.kill('SIGTERM');
    const { code } = await d.exited;
    const exited = performance.now() - term;
    t.equal(code, 0, 'exit 0');
    t.ok(exited < 10_000, `exited ${Math.round(exited)} ms after SIGTERM`);
    t.notOk(await hasVip(s.node, '198.18.232.1'), 'a VIP gone from lo');
    t.notOk(await hasVip(s.node, '198.18.232.2'), 'b VIP gone from lo');
    t.same(await vipRules(s.node), [], 'no VIPCAST rule or jump left');
    const said = d.lines.find((l) => /could not withdraw/.test(l.msg));
    t.ok(said, 'the log says what could not be withdrawn');
    t.same([...((said?.routes as string[] | undefined) ?? [])].sort(), ['198.18.232.1/32', '198.18.232.2/32'], 'naming both routes');
    t.notOk(d.lines.some((l) => /took over 10 s/.test(l.msg)), 'no forced exit');
    if (drain) t.notOk(d.lines.some((l) => l.event === 'drain'), 'no drain through a speaker that does not answer');
  });
}
