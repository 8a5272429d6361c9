/**
 * What the HTTP API (api.ts) and reload (reload.ts) need from the daemon. They depend on these interfaces, not on the
 * Daemon class, so imports go one way only: daemon.ts -> api.ts, reload.ts -> daemon-api.ts, never back to daemon.ts
 * (issue 11, item 6: the api.ts -> daemon.ts -> reload.ts -> daemon.ts cycle). `Daemon` implements both; a member
 * the API or reload starts to use is added here first.
 */
import type { AppSpec, Router } from '../plugin-api.js';
import type { AgentConfig, DiscoveryEntry, VipcastConfig } from './config-types.js';
import type { AppRegistry } from './registry.js';
import type { Metrics } from './metrics.js';
import type { Maintenance } from './maintenance.js';
import type { Reconciler, ReconcilerOptions } from './reconciler.js';
import type { FlapDamping } from './flap-damping.js';
import type { PidFile } from './pid-file.js';
import type { Generation } from './container.js';

/** The outcome of one reload (SIGHUP, `vipcast reload`, POST /reload), as /status and POST /reload show it. */
export interface ReloadResult {
  readonly ok: boolean;
  readonly trigger: string;
  readonly at: string;
  readonly durationMs: number;
  /** Every problem (with its key path) when the new file was refused or failed to apply. */
  readonly errors: readonly string[];
  /** What changed, one line each ("app web: changed", "peer 198.18.0.1: added"). */
  readonly changes: readonly string[];
  /** sha256 of the config in force after this reload (the old one when it failed). */
  readonly configInForce: string;
  /**
   * Settings that changed in the file but are not in force: they take effect at the next start ("agent.stateFile").
   * The config in force keeps their old value, so every later reload reports them again until a restart.
   */
  readonly restartNeeded: readonly string[];
}

/** What the HTTP API reads and calls: the config in force, the apps, status, metrics, maintenance, reload. */
export interface DaemonForApi {
  /** The config in force. */
  readonly config: VipcastConfig;
  /** The environment the config reads (CONSUL_TOKEN, CONSUL_NODE...). */
  readonly env: NodeJS.ProcessEnv;
  /** Every app, by name: /register and /unregister change the HTTP ones. */
  readonly registry: AppRegistry;
  /** The generation in force: /peers asks its router. */
  readonly generation: { readonly router: Router };
  readonly metrics: Metrics;
  readonly maintenance: Maintenance;
  /** The /status document. */
  status(): Promise<Record<string, unknown>>;
  /** Run a reload (coalesced with others in flight) and answer its outcome. */
  requestReload(trigger: string): Promise<ReloadResult>;
}

/** What a reload reads and changes: the config and generation in force, and each piece of daemon state it applies. */
export interface DaemonForReload {
  /** The config in force (the generation's). */
  readonly config: VipcastConfig;
  /** The generation in force; a reload that keeps the speaker replaces it with one carrying the new config. */
  generation: Generation;
  readonly reconciler: Reconciler;
  readonly registry: AppRegistry;
  readonly damping: FlapDamping;
  readonly pidFile: PidFile;
  /** The listen address the API runs on now ('' = none). */
  readonly apiAddress: string;
  /** agent.check_workers of the pool that runs checks now. */
  readonly checkWorkers: number;
  /** Read and validate the config file; throws VIPCAST_ERR_CONFIG with every problem. */
  loadConfig(): Promise<VipcastConfig>;
  /** Move the HTTP API to `listenAddr` (new one first). */
  listen(listenAddr: string): Promise<void>;
  /** Apply new agent defaults (and the prefix policy) to the HTTP-registered apps. */
  refreshRegisteredApps(agent: AgentConfig): void;
  /** The discovery sources a config names (config, consul when on, `discovery:`), for the reload's list of changes. */
  discoverySources(config: VipcastConfig): readonly DiscoveryEntry[];
  /**
   * Start, keep, replace or close the discovery sources of `config` (config apps, Consul, `discovery:`); the apps the
   * registry refused, by source.
   */
  configureDiscovery(config: VipcastConfig): Promise<Map<string, string[]>>;
  /** Move checks to a pool of `workers` threads. */
  resizeCheckPool(workers: number): void;
  /** Put `gen` in force; returns the old generation for the caller to close. */
  swapGeneration(gen: Generation): Generation;
}

/** The reconciler's options from a config (start and reload). */
export function reconcilerOptions(config: VipcastConfig): ReconcilerOptions {
  return {
    bgp: config.bgp,
    cleanupTimerMs: config.agent.cleanupTimerMs,
    removeVipOnWithdraw: config.agent.removeVipOnWithdraw,
  };
}
