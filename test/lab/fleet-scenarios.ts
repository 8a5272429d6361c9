/**
 * The fleet's scenarios (issue 13, item 2). Each is a function of the harness (fleet.ts) that acts and returns what
 * it measured; it asserts nothing: test/fleet.test.ts asserts the figures, bench/fleet.ts prints them. Times are
 * milliseconds from the action to what BIRD (in tor) shows, polled with birdc.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pidRunning, waitFor } from './netns.js';
import { sameInstant } from './bird.js';
import { VIP, VIP2, tokenOf, type Fleet } from './fleet.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const GSHUT = '65535:0';

/** How many answers each host gave, and the failed connections. */
export function tally(answers: string[]): { byHost: Record<string, number>; errors: string[] } {
  const byHost: Record<string, number> = {};
  const errors: string[] = [];
  for (const a of answers) {
    if (a.startsWith('ERR') || a === '') errors.push(a || 'ERR empty answer');
    else byHost[a] = (byHost[a] ?? 0) + 1;
  }
  return { byHost, errors };
}

/** protocol -> since of every path BIRD holds for the prefix. */
async function sinces(fleet: Fleet, prefix = VIP): Promise<Map<string, string>> {
  return new Map((await fleet.routes(prefix)).map((r) => [r.protocol, r.since]));
}

/** The protocols whose path is gone or whose `since` moved (an UPDATE or a withdraw reached BIRD). */
async function changedSince(fleet: Fleet, before: Map<string, string>, prefix = VIP): Promise<string[]> {
  const now = await sinces(fleet, prefix);
  return [...before].filter(([p, s]) => !now.has(p) || !sameInstant(now.get(p)!, s)).map(([p]) => p);
}

const allProtocols = (fleet: Fleet): string[] => fleet.hosts.map((h) => h.protocol);

/** Wait until exactly these protocols have a path for the prefix; returns the time it took from `t0`. */
async function waitPaths(fleet: Fleet, want: string[], t0: number, timeoutMs: number, what: string, prefix = VIP, intervalMs = 20): Promise<number> {
  const key = [...want].sort().join(',');
  await waitFor(async () => [...(await fleet.pathProtocols(prefix))].sort().join(',') === key, timeoutMs, what, intervalMs);
  return performance.now() - t0;
}

export interface StartFigures {
  hosts: number;
  /** First agent spawned -> N paths at BIRD. */
  ms: number;
  /** Last agent's Consul discovery started -> N paths at BIRD. */
  afterLastMs: number;
  paths: number;
  protocols: string[];
  kernelNextHops: number;
  answers: Record<string, number>;
  errors: string[];
}

/**
 * Start: the service on every node in Consul, every responder up, the agents started `concurrency` at a time (each
 * waits for its Consul discovery to start: 20 fit on 2 cores). Then clients in tor: `connections` TCP flows.
 */
export async function scenarioStart(fleet: Fleet, opts: { concurrency?: number; connections?: number } = {}): Promise<StartFigures> {
  const n = fleet.hosts.length;
  await fleet.setVips([VIP]);
  for (const h of fleet.hosts) fleet.writeConfig(h.index);
  await Promise.all(fleet.hosts.map((h) => fleet.startResponder(h.index)));
  const t0 = performance.now();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) await fleet.startAgent(next++);
  };
  await Promise.all(Array.from({ length: opts.concurrency ?? 2 }, worker));
  const last = performance.now();
  const ms = await waitPaths(fleet, allProtocols(fleet), t0, 60_000 + 3000 * n, `${n} paths for ${VIP} at BIRD`);
  const routes = await fleet.routes();
  const kernel = await fleet.kernelNextHops();
  const { byHost, errors } = tally(await fleet.clients(opts.connections ?? 12 * n));
  return { hosts: n, ms, afterLastMs: ms - (last - t0), paths: routes.length, protocols: routes.map((r) => r.protocol), kernelNextHops: kernel.length, answers: byHost, errors };
}

export interface FailFigures {
  failed: string[];
  /** Responders stopped -> exactly the failed hosts' paths gone. */
  withdrawMs: number;
  protocolsAfter: string[];
  /** Paths of the healthy hosts that changed meanwhile (expected none). */
  healthyChanged: string[];
  answers: Record<string, number>;
  errors: string[];
  /** Responders back -> N paths. */
  restoreMs: number;
}

/** The service fails on k hosts (their responders stopped), then comes back. */
export async function scenarioServiceFails(fleet: Fleet, k: number): Promise<FailFigures> {
  const failing = fleet.hosts.slice(1, 1 + k);
  const healthy = allProtocols(fleet).filter((p) => !failing.some((h) => h.protocol === p));
  const before = await sinces(fleet);
  const t0 = performance.now();
  await Promise.all(failing.map((h) => fleet.stopResponder(h.index)));
  const withdrawMs = await waitPaths(fleet, healthy, t0, 20_000, `the ${k} failed hosts' paths to go`);
  const protocolsAfter = await fleet.pathProtocols();
  const healthyBefore = new Map([...before].filter(([p]) => healthy.includes(p)));
  const healthyChanged = await changedSince(fleet, healthyBefore);
  const { byHost, errors } = tally(await fleet.clients(8 * fleet.hosts.length));
  const t1 = performance.now();
  await Promise.all(failing.map((h) => fleet.startResponder(h.index)));
  const restoreMs = await waitPaths(fleet, allProtocols(fleet), t1, 20_000, 'the failed hosts\' paths back');
  return { failed: failing.map((h) => h.name), withdrawMs, protocolsAfter, healthyChanged, answers: byHost, errors, restoreMs };
}

export interface KillFigures {
  host: string;
  /** SIGKILL -> the host's path gone at BIRD. */
  goneMs: number;
  /** Its managed gobgpd no longer runs once the path is gone. */
  gobgpdGone: boolean;
  othersChanged: string[];
  /** The agent started again -> its path back. */
  restartMs: number;
}

function gobgpdPid(fleet: Fleet, i: number): number | undefined {
  try {
    const pid = Number(readFileSync(join(fleet.hosts[i]!.dir, 'gobgpd', 'gobgpd.pid'), 'utf8').trim());
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** One agent SIGKILLed: its managed gobgpd dies with it, the session drops, the path goes. Then it is started again. */
export async function scenarioKill(fleet: Fleet, i: number): Promise<KillFigures> {
  const h = fleet.hosts[i]!;
  const pid = gobgpdPid(fleet, i);
  const before = await sinces(fleet);
  const others = allProtocols(fleet).filter((p) => p !== h.protocol);
  const t0 = performance.now();
  h.agent!.kill('SIGKILL');
  const goneMs = await waitPaths(fleet, others, t0, 30_000, `${h.name}'s path to go after SIGKILL`, VIP, 5);
  await h.agent!.exited;
  const gobgpdGone = pid !== undefined && !pidRunning(pid);
  const othersChanged = await changedSince(fleet, new Map([...before].filter(([p]) => p !== h.protocol)));
  const t1 = performance.now();
  await fleet.startAgent(i);
  const restartMs = await waitPaths(fleet, allProtocols(fleet), t1, 60_000, `${h.name}'s path back after the restart`);
  return { host: h.name, goneMs, gobgpdGone, othersChanged, restartMs };
}

export interface OutageFigures {
  seconds: number;
  /** Hosts that logged a failed Consul read during the outage (they noticed). */
  hostsNoticed: number;
  /** Consul back -> every host has read its catalog again (their retry backoff: 1 s doubling, at most the interval). */
  readingMs: number;
  pathsAfter: number;
  /** Paths withdrawn or re-sent (since moved): expected none. */
  changed: string[];
}

const readFailed = (l: { msg: string }): boolean => l.msg.startsWith('Consul catalog read failed');

/** Successful catalog reads (answered 200) Consul has seen with host i's token. */
async function goodReads(fleet: Fleet, i: number): Promise<number> {
  const h = fleet.hosts[i]!;
  const r = await fleet.consul.send('requests', { path: `/v1/catalog/node/${h.name}`, token: tokenOf(h), status: 200 }) as { count: number };
  return r.count;
}

/** Wait until every host in `which` has read its catalog successfully again since `counts`; returns when (from t0). */
async function waitReading(fleet: Fleet, which: number[], counts: number[], t0: number, what: string): Promise<number> {
  await waitFor(async () => {
    for (const i of which) if ((await goodReads(fleet, i)) <= counts[i]!) return false;
    return true;
  }, 60_000, what, 50);
  return performance.now() - t0;
}

/** Consul unreachable (the server stops listening; held reads are cut) for `seconds`, then back. */
export async function scenarioConsulOutage(fleet: Fleet, seconds: number): Promise<OutageFigures> {
  const before = await sinces(fleet);
  const from = fleet.hosts.map((h) => h.agent!.lines.length);
  await fleet.consul.send('stop');
  await sleep(seconds * 1000);
  const counts = await Promise.all(fleet.hosts.map((h) => goodReads(fleet, h.index)));
  const t0 = performance.now();
  await fleet.consul.send('start');
  const hostsNoticed = fleet.hosts.filter((h, i) => h.agent!.lines.slice(from[i]).some(readFailed)).length;
  const readingMs = await waitReading(fleet, fleet.hosts.map((h) => h.index), counts, t0, 'every host reading Consul again');
  await sleep(1000);
  return { seconds, hostsNoticed, readingMs, pathsAfter: (await fleet.routes()).length, changed: await changedSince(fleet, before) };
}

export interface AclFigures {
  host: string;
  /** What the host logged about the filtered answer. */
  logged: string;
  pathsAfter: number;
  /** Token whole again -> the host reads its catalog again (its retry backoff). */
  readingMs: number;
  changed: string[];
}

/** Consul answers `null` filtered by ACLs for one host (its token loses node read), then the token is whole again. */
export async function scenarioAclNull(fleet: Fleet, i: number): Promise<AclFigures> {
  const h = fleet.hosts[i]!;
  const before = await sinces(fleet);
  const from = h.agent!.lines.length;
  await fleet.consul.send('setToken', { token: tokenOf(h), policy: { servicePrefix: [''] } });
  // Wake the held blocking reads (a catalog write), so the host reads now, not at the end of its wait.
  await fleet.setVips([VIP]);
  const line = await h.agent!.waitLine((l) => readFailed(l) && /ACL/i.test(l.msg), 30_000, `${h.name}: the filtered answer logged`, from);
  await sleep(2000);
  const pathsAfter = (await fleet.routes()).length;
  const changed = await changedSince(fleet, before);
  const counts = await Promise.all(fleet.hosts.map((x) => goodReads(fleet, x.index)));
  const t0 = performance.now();
  await fleet.consul.send('setToken', { token: tokenOf(h) });
  const readingMs = await waitReading(fleet, [i], counts, t0, `${h.name} reading Consul again`);
  return { host: h.name, logged: line.msg, pathsAfter, changed, readingMs };
}

export interface TagFigures {
  /** Tag change in Consul -> N paths for the second VIP. */
  ms: number;
  paths: number;
  /** The first VIP's paths that changed meanwhile (expected none). */
  vip1Changed: string[];
}

/** The service's gocast_vip tag gets a second VIP on every node. */
export async function scenarioTagChange(fleet: Fleet): Promise<TagFigures> {
  const before = await sinces(fleet);
  const t0 = performance.now();
  await fleet.setVips([VIP, VIP2]);
  const ms = await waitPaths(fleet, allProtocols(fleet), t0, 60_000, `${fleet.hosts.length} paths for ${VIP2}`, VIP2);
  await sleep(1000);
  return { ms, paths: (await fleet.routes(VIP2)).length, vip1Changed: await changedSince(fleet, before) };
}

export interface ReloadFigures {
  /** First SIGHUP -> last host's reload done. */
  ms: number;
  /** Each host's reload outcome line. */
  outcomes: string[];
  /** Paths of either VIP that changed (expected none). */
  changed: string[];
}

/** A rolling reload: host by host, a changed consul_query_interval (a new Consul discovery), SIGHUP, its outcome. */
export async function scenarioRollingReload(fleet: Fleet): Promise<ReloadFigures> {
  const before1 = await sinces(fleet, VIP);
  const before2 = await sinces(fleet, VIP2);
  const outcomes: string[] = [];
  const t0 = performance.now();
  for (const h of fleet.hosts) {
    fleet.writeConfig(h.index, { consulQueryInterval: '9s' });
    const from = h.agent!.lines.length;
    h.agent!.kill('SIGHUP');
    const l = await h.agent!.waitLine((x) => x.component === 'reload' && /^reload(: (done|nothing changed)| refused| failed)/.test(x.msg), 30_000, `${h.name}: reload outcome`, from);
    outcomes.push(l.msg);
  }
  const ms = performance.now() - t0;
  await sleep(1500);
  const changed = [...(await changedSince(fleet, before1, VIP)).map((p) => `${p} ${VIP}`), ...(await changedSince(fleet, before2, VIP2)).map((p) => `${p} ${VIP2}`)];
  return { ms, outcomes, changed };
}

export interface DrainFigures {
  host: string;
  /** SIGTERM -> 65535:0 on the host's path at BIRD (undefined: never seen). */
  gshutMs: number | undefined;
  /** SIGTERM -> the path gone. */
  goneMs: number;
  exitCode: number | null;
  /** Answers the drained host gave to clients after its path was gone. */
  answersAfter: number;
  errors: string[];
}

/** A planned drain: SIGTERM with agent.shutdown_drain: BIRD sees 65535:0 on the host's path, then the path goes. */
export async function scenarioDrain(fleet: Fleet, i: number): Promise<DrainFigures> {
  const h = fleet.hosts[i]!;
  const t0 = performance.now();
  h.agent!.kill('SIGTERM');
  let gshutMs: number | undefined;
  const goneMs = Number(await waitFor<number | false>(async () => {
    const mine = (await fleet.routes()).find((r) => r.protocol === h.protocol);
    if (mine && gshutMs === undefined && mine.communities.includes(GSHUT)) gshutMs = performance.now() - t0;
    return mine ? false : performance.now() - t0;
  }, 30_000, `${h.name}'s path to go after SIGTERM`, 20));
  const { code } = await h.agent!.exited;
  const { byHost, errors } = tally(await fleet.clients(6 * fleet.hosts.length));
  return { host: h.name, gshutMs, goneMs, exitCode: code, answersAfter: byHost[h.name] ?? 0, errors };
}

/**
 * Health checks that failed while the service was listening (a check slowed past its timeout by the load), per
 * reason, over every agent's log so far: what can make a healthy path flap on an overloaded machine.
 */
export function spuriousFailures(fleet: Fleet): Record<string, number> {
  const out: Record<string, number> = {};
  for (const h of fleet.hosts) {
    for (const d of h.agents) {
      for (const l of d.lines) {
        if (l.component !== 'health' || l.state !== 'down' || l.previous !== 'up') continue;
        const reason = String(l.reason ?? '');
        if (/no socket listens/.test(reason)) continue;
        out[reason] = (out[reason] ?? 0) + 1;
      }
    }
  }
  return out;
}
