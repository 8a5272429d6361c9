/**
 * Reload as a transaction (invariant 7). The new file is read and validated whole before anything changes; then
 * the diff is applied piece by piece on the reconciler's action queue (one writer): peers one by one through the
 * router, config apps by name (unchanged apps untouched, their health kept), agent settings into the reconciler.
 * A change of routing backend, local AS, router id, listen port or next-hop mode needs a new speaker generation:
 * the one disruptive change, documented. If applying fails, the previous config is applied back.
 *
 * Every agent setting is either applied live or reported as needing a restart (`AGENT_RELOAD`): a reload never says
 * "changed" about a setting it leaves as it was.
 */
import { createHash } from 'node:crypto';
import type { PeerSpec } from '../plugin-api.js';
import type { AgentConfig, VipcastConfig } from './config-types.js';
import type { Logger } from './logger.js';
import { reconcilerOptions, type DaemonForReload, type ReloadResult } from './daemon-api.js';
import { errorDetails, VipcastError } from './errors.js';
import { appKey } from './registry.js';
import { buildGeneration, closeGeneration, startGeneration, withdrawAll } from './container.js';
import { discoveryChanges } from '../plugins/discovery/index.js';

export type { ReloadResult } from './daemon-api.js';

/**
 * How a reload applies each agent setting; typed over every key, so a new setting does not compile until it is
 * placed here. `live`: the reload applies it. `restart`: only a start does; a reload reports it in `restartNeeded`.
 */
export const AGENT_RELOAD: { readonly [K in keyof AgentConfig]-?: 'live' | 'restart' } = {
  listenAddr: 'live', // the API moves (new one first)
  monitorIntervalMs: 'live', // config apps change with it; HTTP and Consul apps are rebuilt with it
  rise: 'live',
  fall: 'live',
  checkTimeoutMs: 'live',
  cleanupTimerMs: 'live', // reconciler options
  removeVipOnWithdraw: 'live',
  consulAddr: 'live', // a new Consul discovery
  consulQueryIntervalMs: 'live',
  consulToken: 'live',
  consulNamespace: 'live', // part of the Consul settings: a new Consul discovery, new consul monitor params
  consulPartition: 'live',
  consulTls: 'live', // files re-read by the reload; a changed fingerprint restarts the discovery
  iptablesBinary: 'live', // a new host-network generation
  checkWorkers: 'live', // a new check pool; the old one closes once its checks have answered
  pidFile: 'live', // the file moves (unless --pid-file named it)
  shutdownDrainMs: 'live', // read at shutdown from the config in force
  prefixPolicy: 'live', // read at every registration; HTTP and Consul apps that no longer pass are removed
  // Read by the API on every request from the config in force (a rotated token file is re-read by the reload).
  apiToken: 'live',
  apiAllowedUsers: 'live',
  apiAllowedGroups: 'live',
  apiInsecureOpen: 'live',
  // Set when the socket is created (a start, or a reload that moves agent.listen_addr).
  apiSocketMode: 'restart',
  apiSocketGroup: 'restart',
  // The host network holds the addresses it added in memory and writes them to this file; a second file beside the
  // first would split that record (a crash would then leave addresses nobody cleans up).
  stateFile: 'restart',
  // Penalties are daemon state and carry over (decayed under the old half-life); turning it off releases held apps.
  flapDamping: 'live',
  // The next write goes to the new file (at once: Daemon.refreshRegisteredApps); the old one is left as it was.
  registrationsFile: 'live',
  // Maintenance (maintenance.ts) reads them from the config in force: the next write goes to the new state file (the
  // state in memory is kept: it is by app name, daemon-level), the next poll looks at the new files.
  maintenanceStateFile: 'live',
  maintenanceFile: 'live',
  maintenanceDir: 'live',
};

export interface ConfigDiff {
  /** Needs a new speaker generation (disruptive). */
  readonly speaker: string[];
  readonly peers: { added: string[]; removed: string[]; changed: string[] };
  readonly apps: { added: string[]; removed: string[]; changed: string[] };
  readonly agent: Array<keyof AgentConfig>;
  readonly routeAttributes: boolean;
  readonly host: boolean;
}

function peerKey(p: PeerSpec): string {
  return p.address ?? 'default-gateway';
}

/** Everything of a peer that gobgpd's stored config depends on; the MD5 value counts, not only the env var's name. */
export function peerFingerprint(p: PeerSpec): string {
  const md5 = p.md5Password === undefined ? '' : createHash('sha256').update(p.md5Password).digest('hex');
  return JSON.stringify([p.asn, p.multiHop ?? null, md5, p.md5EnvVar ?? null, p.communities.map((c) => c.text)]);
}

export function diffConfig(a: VipcastConfig, b: VipcastConfig): ConfigDiff {
  const speaker: string[] = [];
  if (a.routing.plugin !== b.routing.plugin) speaker.push('routing.plugin');
  else if (!sameRouterSettings(a, b)) speaker.push(b.routing.plugin === 'gobgp' ? 'routing.gobgp.address' : 'routing.settings');
  if (a.bgp.localAs !== b.bgp.localAs) speaker.push('bgp.local_as');
  if (a.bgp.localIp !== b.bgp.localIp) speaker.push('bgp.local_ip');
  if (a.bgp.listenPort !== b.bgp.listenPort) speaker.push('bgp.listen_port');
  if (a.bgp.nextHop !== b.bgp.nextHop) speaker.push('bgp.next_hop');

  const pa = new Map(a.bgp.peers.map((p) => [peerKey(p), p]));
  const pb = new Map(b.bgp.peers.map((p) => [peerKey(p), p]));
  const peers = {
    added: [...pb.keys()].filter((k) => !pa.has(k)),
    removed: [...pa.keys()].filter((k) => !pb.has(k)),
    changed: [...pb.keys()].filter((k) => pa.has(k) && peerFingerprint(pa.get(k)!) !== peerFingerprint(pb.get(k)!)),
  };

  const aa = new Map(a.apps.map((x) => [x.name, x]));
  const ab = new Map(b.apps.map((x) => [x.name, x]));
  const apps = {
    added: [...ab.keys()].filter((k) => !aa.has(k)),
    removed: [...aa.keys()].filter((k) => !ab.has(k)),
    changed: [...ab.keys()].filter((k) => aa.has(k) && appKey(aa.get(k)!) !== appKey(ab.get(k)!)),
  };

  const agent: Array<keyof AgentConfig> = [];
  for (const key of Object.keys(b.agent) as Array<keyof AgentConfig>) {
    // Lists and the prefix policy are fresh objects on every load: compare them by value.
    if (a.agent[key] !== b.agent[key] && JSON.stringify(agentValue(a.agent, key)) !== JSON.stringify(agentValue(b.agent, key))) agent.push(key);
  }
  const routeAttributes = a.bgp.origin !== b.bgp.origin || a.bgp.communities.map((c) => c.text).join() !== b.bgp.communities.map((c) => c.text).join();
  const host = a.agent.iptablesBinary !== b.agent.iptablesBinary;
  return { speaker, peers, apps, agent, routeAttributes, host };
}

/**
 * Same router plugin and the plugin's sameSettings says the running router can stay (gobgp: the same address; dry-run:
 * always). The new config's descriptor decides (a reload loads packages afresh).
 */
export function sameRouterSettings(a: VipcastConfig, b: VipcastConfig): boolean {
  if (a.routing.plugin !== b.routing.plugin) return false;
  const plugin = b.registry.router(b.routing.plugin);
  return plugin !== undefined && plugin.sameSettings(a.routing.settings, b.routing.settings);
}

/**
 * Settings of the managed gobgpd (routing.gobgp.managed, binary, socket_dir; and plugin/address when they turn it on
 * or off) that differ: a reload never restarts gobgpd, so these are reported as needing a restart.
 */
export function managedSpeakerChanges(a: VipcastConfig, b: VipcastConfig): string[] {
  const ga = a.routing.gobgp;
  const gb = b.routing.gobgp;
  if (!ga.managed && !gb.managed) return [];
  const out: string[] = [];
  if (ga.managed !== gb.managed) {
    if (a.routing.plugin !== b.routing.plugin) out.push('routing.plugin');
    out.push('routing.gobgp.managed');
    if (ga.address !== gb.address) out.push('routing.gobgp.address');
  }
  if (ga.binary !== gb.binary) out.push('routing.gobgp.binary');
  if (ga.socketDir !== gb.socketDir) out.push('routing.gobgp.socket_dir');
  return out;
}

/** An agent setting as the diff compares it: the prefix policy without what it copies from bgp (a peer or speaker change). */
function agentValue(agent: AgentConfig, key: keyof AgentConfig): unknown {
  if (key !== 'prefixPolicy' || !agent.prefixPolicy) return agent[key];
  const { peers: _peers, localIp: _localIp, defaultGatewayPeer: _gw, ...own } = agent.prefixPolicy;
  return own;
}

/** `notApplied`: agent keys the reload leaves as they are, with why ("needs a restart"). */
export function describeDiff(d: ConfigDiff, notApplied: ReadonlyMap<string, string> = new Map()): string[] {
  return [
    ...d.speaker.map((k) => `${k}: changed (speaker restart)`),
    ...d.peers.added.map((p) => `peer ${p}: added`), ...d.peers.removed.map((p) => `peer ${p}: removed`), ...d.peers.changed.map((p) => `peer ${p}: changed`),
    ...d.apps.added.map((x) => `app ${x}: added`), ...d.apps.removed.map((x) => `app ${x}: removed`), ...d.apps.changed.map((x) => `app ${x}: changed`),
    ...d.agent.map((k) => (notApplied.has(k) ? `agent.${k}: changed in the file, not applied: ${notApplied.get(k)}` : `agent.${k}: changed`)),
    ...(d.routeAttributes ? ['bgp origin/communities: changed'] : []),
  ];
}

export function configHash(c: VipcastConfig): string {
  return createHash('sha256').update(JSON.stringify(c, (k, v) => (k === 'md5Password' || k === 'consulToken' ? (v ? createHash('sha256').update(String(v)).digest('hex') : v) : v))).digest('hex').slice(0, 16);
}

export async function reloadConfig(d: DaemonForReload, trigger: string, log: Logger): Promise<ReloadResult> {
  const started = performance.now();
  const prev = d.config;
  let restartNeeded: string[] = [];
  const result = (ok: boolean, errors: string[], changes: string[], inForce: VipcastConfig): ReloadResult => ({
    ok, trigger, at: new Date().toISOString(), durationMs: Math.round(performance.now() - started), errors, changes, configInForce: configHash(inForce), restartNeeded,
  });
  let next: VipcastConfig;
  try {
    next = await d.loadConfig();
  } catch (err) {
    const errors = [...errorDetails(err)];
    for (const e of errors) log.error({ trigger }, `reload refused: ${e}`);
    log.error({ trigger, problems: errors.length }, 'reload refused: the config in force is unchanged');
    return result(false, errors, [], prev);
  }
  // The managed gobgpd is the daemon's, not a generation's: a change of its settings takes a restart; until then the
  // routing section in force stays, and the routers keep talking to the gobgpd that runs.
  const speakerKeys = managedSpeakerChanges(prev, next);
  if (speakerKeys.length > 0) next = { ...next, routing: prev.routing };
  const diff = diffConfig(prev, next);
  // Settings this reload cannot apply keep their old value in the config in force (so /status and the hash say what
  // is in force, and the next reload reports them again).
  const notApplied = new Map<string, string>();
  for (const key of diff.agent) {
    if (AGENT_RELOAD[key] === 'restart') notApplied.set(key, 'needs a restart');
    else if (key === 'pidFile' && d.pidFile.pinned) notApplied.set(key, `${d.pidFile.pinned} on the command line names the pid file`);
  }
  if (notApplied.size > 0) {
    const kept = Object.fromEntries([...notApplied.keys()].map((k) => [k, prev.agent[k as keyof AgentConfig]]));
    next = { ...next, agent: { ...next.agent, ...kept } };
    restartNeeded = [...notApplied].filter(([, why]) => why === 'needs a restart').map(([k]) => `agent.${k}`);
  }
  // A plugin package upgraded on disk since the start: Node keeps the version it imported first, which goes on running
  // (with the reload's other changes applied) until a restart loads the new one.
  const stalePlugins = next.registry.stale().map((p) => `${p.path} (${p.pkg} ${p.running} runs; ${p.installed} is installed)`);
  restartNeeded = [...speakerKeys, ...restartNeeded, ...stalePlugins];
  // A config app that is not registered (refused at start: its VIP was an HTTP app's then) is tried again on any
  // reload, even of an unchanged file. (cleanup_timer no longer drops config apps: they stay registered and checked.)
  const back = next.apps.filter((a) => !d.registry.get(a.name) && !diff.apps.added.includes(a.name)).map((a) => a.name);
  const changes = [...discoveryChanges(d.discoverySources(prev), d.discoverySources(next), next), ...speakerKeys.map((k) => `${k}: changed in the file, not applied: needs a restart (the managed gobgpd keeps running)`), ...describeDiff(diff, notApplied), ...back.map((name) => `app ${name}: registered again (it was not registered)`)];
  if (changes.length === 0) {
    log.info({ trigger, duration_ms: Math.round(performance.now() - started) }, 'reload: nothing changed');
    return result(true, [], [], prev);
  }
  log.info({ trigger, changes }, 'reload: applying');
  const progress: Progress = { generation: false, peers: false, config: false };
  try {
    await apply(d, next, diff, notApplied, log, progress);
  } catch (err) {
    log.error({ err, trigger }, 'reload failed while applying: restoring the previous config');
    try {
      await undo(d, prev, next, progress, log);
    } catch (err2) {
      log.error({ err: err2 }, 'restoring the previous config failed too; the reconciler keeps retrying');
    }
    return result(false, [`apply: ${(err as Error).message}`], changes, prev);
  }
  progress.pidFile?.commit();
  log.info({ trigger, changes, duration_ms: Math.round(performance.now() - started), ...(restartNeeded.length ? { restart_needed: restartNeeded } : {}) }, 'reload: done');
  if (restartNeeded.length > 0) log.warn({ trigger, restart_needed: restartNeeded }, 'reload: some changed settings take effect only at the next start');
  return result(true, [], changes, next);
}

/** What an apply step changed, so a failure undoes exactly that. */
interface Progress {
  api?: boolean;
  generation: boolean;
  peers: boolean;
  config: boolean;
  consul?: boolean;
  /** The check pool's size before this reload replaced the pool. */
  checkWorkers?: number;
  /** The pid file moved: commit removes the old file, undo the new one. */
  pidFile?: { commit(): void; undo(): void };
}

async function apply(d: DaemonForReload, next: VipcastConfig, diff: ConfigDiff, notApplied: ReadonlyMap<string, string>, log: Logger, progress: Progress): Promise<void> {
  const rec = d.reconciler;
  const prev = d.config;
  // First, before any effect: a pid file that can't be written fails the reload with nothing else changed.
  if (diff.agent.includes('pidFile') && !notApplied.has('pidFile') && d.pidFile.active) progress.pidFile = d.pidFile.prepareMove(next.agent.pidFile);
  if (diff.speaker.length > 0 || diff.host) {
    await swapGeneration(d, prev, next, diff, log);
    progress.generation = true;
  } else if (diff.peers.added.length + diff.peers.removed.length + diff.peers.changed.length > 0) {
    // One writer: peer changes go through the action queue like every other effect.
    progress.peers = true;
    await rec.queue.run(() => d.generation.router.applyPeers(next.bgp.peers));
  }
  if (next.agent.listenAddr !== d.apiAddress) {
    await d.listen(next.agent.listenAddr);
    progress.api = true;
  }
  progress.config = true;
  rec.configure(reconcilerOptions(next));
  d.generation = { ...d.generation, config: next };
  d.damping.configure(next.agent.flapDamping);
  d.refreshRegisteredApps(next.agent);
  // Every discovery source (config apps, Consul, `discovery:`): same settings keep the running instance (its apps are
  // rebuilt with the new agent defaults); changed settings start a new instance before the old one closes; removed
  // ones close and their apps go. A source that can't start fails the reload (undo restores the previous sources).
  progress.consul = true;
  const refused = (await d.configureDiscovery(next)).get('config') ?? [];
  if (refused.length > 0) throw new VipcastError('VIPCAST_ERR_RELOAD', `apps refused: ${refused.join('; ')}`);
  if (next.agent.checkWorkers !== d.checkWorkers) {
    progress.checkWorkers = d.checkWorkers;
    d.resizeCheckPool(next.agent.checkWorkers);
  }
  await rec.trigger(diff.speaker.length > 0);
}

async function undo(d: DaemonForReload, prev: VipcastConfig, next: VipcastConfig, progress: Progress, log: Logger): Promise<void> {
  const rec = d.reconciler;
  progress.pidFile?.undo();
  if (progress.checkWorkers !== undefined) d.resizeCheckPool(progress.checkWorkers);
  if (progress.config) {
    rec.configure(reconcilerOptions(prev));
    d.generation = { ...d.generation, config: prev };
    d.damping.configure(prev.agent.flapDamping);
    d.refreshRegisteredApps(prev.agent);
  }
  if (progress.consul) await d.configureDiscovery(prev);
  if (progress.api) await d.listen(prev.agent.listenAddr);
  if (progress.peers) await rec.queue.run(() => d.generation.router.applyPeers(prev.bgp.peers));
  if (progress.generation) await swapGeneration(d, next, prev, diffConfig(next, prev), log);
  await rec.trigger(true);
}

/**
 * A new generation (router and host network) built in a child container and started before the swap. Against the
 * same gobgpd, a new local AS, router id or listen port needs StopBgp first: every route is withdrawn and comes back
 * once the sessions re-form (the one disruptive change). Against another speaker (address or plugin changed) the old
 * one keeps announcing until the new one is up; if the new one fails, the old generation stays in force.
 */
async function swapGeneration(d: DaemonForReload, prev: VipcastConfig, next: VipcastConfig, diff: ConfigDiff, log: Logger): Promise<void> {
  const gen = await buildGeneration(next, { log });
  await d.reconciler.queue.run(async () => {
    const old = d.generation;
    const sameSpeaker = sameRouterSettings(prev, next) && !old.dryRun;
    const restart = diff.speaker.length > 0 && sameSpeaker;
    if (restart) {
      log.warn({ changed: diff.speaker }, 'reload changes the BGP speaker itself: every route is withdrawn and re-announced');
      await withdrawAll(old.router, 'speaker restart (reload)');
      await old.router.stopSpeaker?.();
    }
    try {
      await startGeneration(gen);
    } catch (err) {
      await closeGeneration(gen);
      if (restart) {
        // The old speaker was stopped: start it again with the previous config.
        await closeGeneration(old);
        const back = await buildGeneration(prev, { log });
        await startGeneration(back);
        d.swapGeneration(back);
      }
      throw err;
    }
    // Another speaker takes over: what the old one announced must not linger there.
    if (!sameSpeaker) await withdrawAll(old.router, 'speaker replaced (reload)');
    // Another iptables flavour: the old flavour's chain goes; the new host network writes its own at the next pass.
    if (diff.host) await old.host.setNat([]).catch((err: unknown) => log.error({ err }, 'could not remove the NAT rules of the previous iptables flavour'));
    await closeGeneration(old);
    d.swapGeneration(gen);
  });
}
