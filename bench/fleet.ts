/**
 * `npm run fleet [-- --hosts N] [-- --outage S]` (root, gobgpd, BIRD): a simulated fleet (test/lab/fleet.ts) of N
 * hosts (default 20), each with its own vipcast and managed gobgpd, peering with BIRD in "tor" (ECMP), one Consul
 * test server as the catalog. Runs every scenario (test/lab/fleet-scenarios.ts) and prints a table of scenario ->
 * convergence time / result; destroys everything at the end. Also `npm run bench -- fleet`. Nothing is asserted
 * here: test/fleet.test.ts asserts the same scenarios on 5 hosts.
 */
import { fileURLToPath } from 'node:url';
import { createFleet } from '../test/lab/fleet.js';
import { labMissing } from '../test/lab/netns.js';
import {
  scenarioAclNull, scenarioConsulOutage, scenarioDrain, scenarioKill, scenarioRollingReload, scenarioServiceFails,
  scenarioStart, scenarioTagChange, spuriousFailures,
} from '../test/lab/fleet-scenarios.js';

function option(name: string, fallback: number): number {
  const args = process.argv.slice(2);
  const at = args.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  if (at === -1) return fallback;
  const raw = args[at]!.includes('=') ? args[at]!.split('=')[1] : args[at + 1];
  const v = Number(raw);
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name}: "${raw}" is not a positive integer`);
  return v;
}

const ms = (v: number | undefined): string => (v === undefined ? '-' : `${v.toFixed(0)} ms`);
const hostsOf = (r: Record<string, number>): string => `${Object.keys(r).length} hosts (${Object.entries(r).map(([h, c]) => `${h}:${c}`).join(' ')})`;

export async function benchFleet(): Promise<void> {
  const hosts = option('hosts', 20);
  const outage = option('outage', 30);
  console.log(`\n## fleet: ${hosts} hosts (vipcast + managed gobgpd each) -> BIRD in tor (ECMP), one Consul test server`);
  const missing = labMissing(['gobgpd', 'bird', 'birdc', 'setpriv']);
  if (missing) {
    console.log(`skipped: ${missing}`);
    return;
  }
  const rows: Array<[string, string, string]> = [];
  const row = (scenario: string, time: string, result: string): void => {
    rows.push([scenario, time, result]);
    console.log(`${scenario}: ${time}; ${result}`);
  };
  const t0 = performance.now();
  const logDir = process.env.FLEET_LOG_DIR || undefined;
  const fleet = await createFleet({ hosts, log: (l) => console.log(l), ...(logDir ? { logDir } : {}) });
  console.log(`namespaces, veth pairs, BIRD and the Consul server: ${ms(performance.now() - t0)}`);
  console.log('each host: monitor_interval 1s (check timeout 1s), rise 1, fall 2, shutdown_drain 2s, consul_query_interval 10s; port check of the responder');
  try {
    const k = Math.max(1, Math.floor(hosts / 5));
    const s = await scenarioStart(fleet);
    row('start', ms(s.ms), `${s.paths} paths at BIRD (${s.kernelNextHops} next hops in tor's kernel route); all up ${ms(s.afterLastMs)} after the last agent's Consul discovery started; ${s.errors.length} failed of ${Object.values(s.answers).reduce((a, b) => a + b, 0) + s.errors.length} flows, answered by ${hostsOf(s.answers)}`);
    const f = await scenarioServiceFails(fleet, k);
    row(`service fails on ${k} hosts`, ms(f.withdrawMs), `paths left ${f.protocolsAfter.length} (${f.failed.join(', ')} gone), healthy paths changed: ${f.healthyChanged.length}; flows answered by ${hostsOf(f.answers)}, ${f.errors.length} failed; back in ${ms(f.restoreMs)}`);
    const kill = await scenarioKill(fleet, hosts - 1);
    row('agent SIGKILLed (managed gobgpd)', ms(kill.goneMs), `${kill.host}'s path gone, its gobgpd ${kill.gobgpdGone ? 'gone' : 'STILL RUNNING'}, other paths changed: ${kill.othersChanged.length}; restarted -> path back in ${ms(kill.restartMs)}`);
    const o = await scenarioConsulOutage(fleet, outage);
    row(`Consul unreachable ${o.seconds} s`, `${ms(o.readingMs)} (back -> all reading)`, `${o.changed.length} paths changed of ${o.pathsAfter} (${o.hostsNoticed} hosts logged failed reads)`);
    const a = await scenarioAclNull(fleet, 0);
    row('Consul ACL-filtered null for one host', `${ms(a.readingMs)} (token fixed -> reading)`, `${a.changed.length} paths changed of ${a.pathsAfter}; ${a.host} logged: ${a.logged.slice(0, 90)}...`);
    const tag = await scenarioTagChange(fleet);
    row('tag change (second VIP)', ms(tag.ms), `${tag.paths} paths for the second VIP; first VIP's paths changed: ${tag.vip1Changed.length}`);
    const r = await scenarioRollingReload(fleet);
    const kinds = [...new Set(r.outcomes)].map((m) => `${r.outcomes.filter((x) => x === m).length}x "${m}"`).join(', ');
    row('rolling reload (SIGHUP one by one)', ms(r.ms), `${kinds}; paths changed: ${r.changed.length}`);
    const d = await scenarioDrain(fleet, 0);
    row('planned drain (shutdown_drain 2s, SIGTERM)', ms(d.goneMs), `65535:0 at BIRD after ${ms(d.gshutMs)}, path gone after ${ms(d.goneMs)}, exit ${d.exitCode}; ${d.answersAfter} flows to it after, ${d.errors.length} failed`);
    const spurious = spuriousFailures(fleet);
    row('healthy apps counted down (checks slowed by load)', '-', Object.keys(spurious).length ? Object.entries(spurious).map(([r, c]) => `${c}x ${r}`).join('; ') : 'none');
  } finally {
    const t1 = performance.now();
    await fleet.destroy();
    console.log(`destroyed in ${ms(performance.now() - t1)}`);
  }
  console.log('\n| scenario | convergence | result |\n| --- | --- | --- |');
  for (const [a, b, c] of rows) console.log(`| ${a} | ${b} | ${c} |`);
}

// `node dist/bench/fleet.js` (npm run fleet) runs it; bench/run.ts imports it.
if (process.argv[1] === fileURLToPath(import.meta.url)) await benchFleet();
