/**
 * A fleet, not a host (issue 13): 5 host namespaces, each with the real vipcast CLI and its managed gobgpd, announcing
 * one anycast VIP learned from one Consul test server (tags per node), to BIRD in "tor", which installs the paths as
 * one ECMP route. Every scenario of test/lab/fleet-scenarios.ts (the 20-host run is `npm run fleet`): start (5 paths,
 * flows spread over the hosts), the service failing on 2 hosts, an agent SIGKILLed, Consul away for 30 s and
 * ACL-filtered for one host, a tag change adding a second VIP, a rolling reload, a planned drain. Time bounds are
 * "it happens" guards for a loaded 2-core box; the figures are printed as comments.
 */
import t from 'tap';
import { labSkip } from './lab/netns.js';
import { createFleet, VIP2 } from './lab/fleet.js';
import {
  scenarioAclNull, scenarioConsulOutage, scenarioDrain, scenarioKill, scenarioRollingReload, scenarioServiceFails,
  scenarioStart, scenarioTagChange, spuriousFailures,
} from './lab/fleet-scenarios.js';

const skip = labSkip(['gobgpd', 'bird', 'birdc', 'setpriv']);
const HOSTS = 5;
const OUTAGE_S = 30;
// The whole file: ~1 min idle (30 s of it the Consul outage), several times that on a loaded CI box.
t.setTimeout(600_000);

t.test(`a fleet of ${HOSTS} hosts with one anycast VIP from Consul: every scenario converges with the right paths at BIRD`, { skip, timeout: 570_000 }, async (t) => {
  const fleet = await createFleet({ hosts: HOSTS });
  t.teardown(() => fleet.destroy());
  const all = fleet.hosts.map((h) => h.protocol);
  const names = fleet.hosts.map((h) => h.name);

  await t.test('start: the VIP at BIRD with one path per host, one ECMP kernel route, flows land on at least 3 hosts', async (t) => {
    const s = await scenarioStart(fleet);
    t.comment(`start: ${s.ms.toFixed(0)} ms to ${s.paths} paths (${s.afterLastMs.toFixed(0)} ms after the last agent's discovery started); answers ${JSON.stringify(s.answers)}`);
    t.same([...s.protocols].sort(), [...all].sort(), 'a path from every host\'s session');
    t.equal(s.kernelNextHops, HOSTS, 'tor\'s kernel route has a next hop per host (merge paths)');
    t.same(s.errors, [], 'every flow answered');
    t.ok(Object.keys(s.answers).every((h) => names.includes(h)), 'answers come from the fleet\'s hosts');
    t.ok(Object.keys(s.answers).length >= 3, `flows spread over ${Object.keys(s.answers).length} hosts (at least 3)`);
  });

  await t.test('the service fails on 2 hosts: exactly their paths go, the others are untouched, clients are answered by healthy hosts only', async (t) => {
    const f = await scenarioServiceFails(fleet, 2);
    t.comment(`withdraw: ${f.withdrawMs.toFixed(0)} ms; back: ${f.restoreMs.toFixed(0)} ms; answers ${JSON.stringify(f.answers)}`);
    t.same(f.failed, ['host1', 'host2']);
    t.same(f.protocolsAfter, ['h0', 'h3', 'h4'], 'the paths of the hosts whose service failed are gone, only theirs');
    t.same(f.healthyChanged, [], 'no UPDATE for a healthy host\'s path (since unchanged)');
    t.same(f.errors, [], 'every flow answered');
    t.same(Object.keys(f.answers).filter((h) => f.failed.includes(h)), [], 'no flow reached a failed host');
    t.ok(Object.keys(f.answers).length >= 2, 'flows still spread');
    t.ok(f.withdrawMs < 15_000, 'withdrawn (monitor_interval 1 s, fall 2; bound 15 s)');
  });

  await t.test('an agent SIGKILLed: its managed gobgpd dies with it and its path goes at once (the session drops, no hold timer)', async (t) => {
    const k = await scenarioKill(fleet, HOSTS - 1);
    t.comment(`SIGKILL -> path gone at BIRD: ${k.goneMs.toFixed(0)} ms; restart -> back: ${k.restartMs.toFixed(0)} ms`);
    t.ok(k.gobgpdGone, 'its gobgpd no longer runs');
    // The hold timer (BIRD's default 240 s, gobgpd's 90 s) would take far longer: 5 s means the session dropped.
    t.ok(k.goneMs < 5000, `path gone in ${k.goneMs.toFixed(0)} ms (bound 5 s, against a 90 s hold time)`);
    t.same(k.othersChanged, [], 'the other paths untouched');
  });

  await t.test(`Consul unreachable for ${OUTAGE_S} s: every host notices, no path withdrawn or re-sent`, async (t) => {
    const o = await scenarioConsulOutage(fleet, OUTAGE_S);
    t.comment(`Consul back -> every host reading again: ${o.readingMs.toFixed(0)} ms`);
    t.equal(o.hostsNoticed, HOSTS, 'every host logged failed Consul reads (the outage was real)');
    t.equal(o.pathsAfter, HOSTS);
    t.same(o.changed, [], 'every path\'s since unchanged');
  });

  await t.test('Consul answers ACL-filtered null for one host: it logs the filtered read, keeps its apps, no path changes', async (t) => {
    const a = await scenarioAclNull(fleet, 0);
    t.comment(`token whole again -> ${a.host} reading again: ${a.readingMs.toFixed(0)} ms`);
    t.match(a.logged, /ACL/);
    t.equal(a.pathsAfter, HOSTS);
    t.same(a.changed, [], 'every path\'s since unchanged');
  });

  await t.test('a tag change (a second VIP for the service on every node) reaches every host; the first VIP untouched', async (t) => {
    const g = await scenarioTagChange(fleet);
    t.comment(`tag change -> ${g.paths} paths for ${VIP2}: ${g.ms.toFixed(0)} ms`);
    t.equal(g.paths, HOSTS);
    t.same(g.vip1Changed, [], 'the first VIP\'s paths untouched');
    t.ok(g.ms < 30_000, 'within 30 s');
  });

  await t.test('a rolling reload (changed consul_query_interval, SIGHUP host by host): every reload done, no path changes', async (t) => {
    const r = await scenarioRollingReload(fleet);
    t.comment(`rolling reload of ${HOSTS} hosts: ${r.ms.toFixed(0)} ms`);
    t.same(r.outcomes, names.map(() => 'reload: done'));
    t.same(r.changed, [], 'every path of both VIPs: since unchanged');
  });

  await t.test('a planned drain (shutdown_drain 2s, SIGTERM): BIRD sees 65535:0 on that path before it goes; no flow goes to it after', async (t) => {
    const d = await scenarioDrain(fleet, 0);
    t.comment(`drain: 65535:0 after ${d.gshutMs?.toFixed(0)} ms, gone after ${d.goneMs.toFixed(0)} ms`);
    t.ok(d.gshutMs !== undefined, 'the graceful-shutdown community was seen at BIRD');
    t.ok((d.gshutMs ?? Infinity) < d.goneMs, 'before the path went');
    t.ok(d.goneMs >= 1500, 'the path stayed for the drain (2 s)');
    t.equal(d.exitCode, 0);
    t.equal(d.answersAfter, 0, 'no flow reached the drained host after');
    t.same(d.errors, []);
    t.comment(`healthy apps counted down by slow checks (load), over the whole run: ${JSON.stringify(spuriousFailures(fleet))}`);
  });
});
