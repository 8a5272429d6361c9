/**
 * vipcast plugin API: the contracts between the core and its plugins (monitors, discovery sources, routers, host
 * networking). Exported to plugin authors as `vipcast/plugin-api`. Everything here is types, constants and the identity
 * helpers `defineMonitor`/`defineCheck` only, so a plugin package can depend on it without pulling in the daemon.
 */
import type { Community, NatBinding, NatRule, Origin, PeerSpec, PeerState, Prefix, Route, VipBinding } from './plugin-api-values.js';

// The values the contracts talk about, for plugin authors too.
export type { Community, Family, NatBinding, NatRule, Origin, PeerSpec, PeerState, Prefix, Route, VipBinding } from './plugin-api-values.js';

/** The plugin API version this vipcast provides. Plugins declare the semver range they need in `apiVersion`. */
export const PLUGIN_API_VERSION = '1.0.0';

/** The result of one health check. */
export interface CheckResult {
  readonly ok: boolean;
  /** Why the check passed or failed, for logs and /status (an exec check's last output lines, a socket error...). */
  readonly reason: string;
}

/** What a check function gets besides its own parameters. */
export interface CheckContext {
  /** Aborted when the check's timeout expires or vipcast shuts down. A check must stop promptly when it fires. */
  readonly signal: AbortSignal;
  /** The check's time budget in milliseconds (the signal fires when it is spent). */
  readonly timeoutMs: number;
}

/**
 * A monitor's check function: what its `workerModule` exports. It runs inside a worker thread of vipcast's check pool,
 * never on the main thread, so it may wait on sockets or child processes; it must honour `ctx.signal` (a check that
 * blocks its thread synchronously gets its worker terminated). `params` is a structured clone of what the plugin's
 * `parse` returned: type it with `Params` (`CheckFunction<MyParams>`, or `defineCheck<MyParams>(...)`) so the check
 * and `parse` agree. Resolve to `{ ok, reason }`; a rejection counts as down, with the error's message as the reason.
 *
 * @typeParam Params - the params `parse` returns (default `unknown`).
 */
export type CheckFunction<Params = unknown> = (params: Params, ctx: CheckContext) => Promise<CheckResult>;

/** A validated monitor specification, ready to be sent to the check pool. */
export interface MonitorSpec {
  /** Monitor type, the plugin's `name` (`port`, `exec`, `http`, `consul`, or a third-party name). */
  readonly type: string;
  /**
   * Canonical human-readable form `TYPE:TEXT` (`port:tcp:53`), used in logs, status and diffs: the plugin's `parse`
   * gives the part after `TYPE:` and vipcast adds the prefix (see MonitorPlugin.parse).
   */
  readonly text: string;
  /** Plugin-specific parameters; must survive structured clone. */
  readonly params: unknown;
  /** Absolute file URL of the module that exports `check` (a `CheckFunction`), loaded inside the worker. */
  readonly workerModule: string;
  /** True when the monitor runs user-supplied commands; only trusted sources may use such monitors. */
  readonly runsCommands: boolean;
  /** The package the monitor came from (`plugins:`); absent for a built-in. Its checks run in a worker of their own. */
  readonly plugin?: string;
}

/** Where a monitor spec came from: config files are trusted; HTTP and Consul only when allowlisted. */
export interface MonitorParseContext {
  /** Key path or parameter name for error messages (`apps[2].monitors[0]`). */
  readonly path: string;
  /** Folder of the config file (relative paths in params resolve against it). */
  readonly baseDir: string;
  /** Name of the app the monitor belongs to, when known (the `consul` monitor checks the Consul service of that name). */
  readonly app?: string;
  /** The agent's Consul settings; undefined or an empty `addr` when Consul is off (the `consul` monitor needs them). */
  readonly consul?: ConsulSettings;
}

/** Where and as whom vipcast talks to Consul. `token` is a secret: never logged, never in a reason or an error. */
export interface ConsulSettings {
  /** HTTP API base including /v1 (`http://127.0.0.1:8500/v1`); '' = Consul off. */
  readonly addr: string;
  readonly token: string;
  /** This host's Consul node name (env CONSUL_NODE); '' when unset. */
  readonly node: string;
  /** Read with `?stale` (env CONSUL_STALE=true). */
  readonly stale: boolean;
  /** Consul Enterprise namespace, sent as `ns` on every request (agent.consul_namespace / CONSUL_NAMESPACE); ''/absent = none. */
  readonly namespace?: string;
  /** Consul Enterprise admin partition, sent as `partition` (agent.consul_partition / CONSUL_PARTITION); ''/absent = none. */
  readonly partition?: string;
  /** TLS to an https consul_addr (agent.consul_tls / CONSUL_CACERT...); absent = the system CAs, no client certificate. */
  readonly tls?: ConsulTlsSettings;
}

/** Consul TLS: absolute file paths ('' = unset), checked at load; `fingerprint` = sha256 of settings + contents. No PEM texts. */
export interface ConsulTlsSettings {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** The name the server's certificate must carry (and SNI); '' = the host of consul_addr. */
  readonly serverName: string;
  readonly fingerprint: string;
}

/** The three plugin families. A package's default export is one descriptor; its `kind` says which family. */
export type PluginKind = 'monitor' | 'discovery' | 'router';

/** Base of every plugin descriptor. */
export interface PluginDescriptorBase {
  /** The family: decides which registry the descriptor joins and which other members it must have. */
  readonly kind: PluginKind;
  /** Unique within its family; what the config names (`port`, `consul`, `gobgp`...). [a-z][a-z0-9_-]{0,31} in every family. */
  readonly name: string;
  /** The plugin's own version (its package's), shown in /status and the logs. */
  readonly version: string;
  /** semver range of PLUGIN_API_VERSION this plugin works with, e.g. `^1.0.0`. */
  readonly apiVersion: string;
}

/** A structured logger (pino-compatible subset): an object of fields first, then the message. */
export interface PluginLogger {
  debug(fields: Record<string, unknown>, msg: string): void;
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
  /** A logger whose every line carries `bindings` too. */
  child(bindings: Record<string, unknown>): PluginLogger;
}

/** What a settings parser gets besides the raw settings. */
export interface SettingsContext {
  /**
   * Key path of the settings in the config (`routing.settings`, `discovery[1]`): every error message starts with it
   * and the key below it, e.g. `discovery[1].file: "x" is not an absolute path`.
   */
  readonly path: string;
  /** Folder of the config file: relative paths in settings resolve against it. */
  readonly baseDir: string;
  /** The environment the config reads (secrets by env var name, as `md5_env_var`). */
  readonly env: Readonly<Record<string, string | undefined>>;
}

/**
 * The part shared by discovery and router descriptors: their settings. `parseSettings` runs when the config is loaded
 * (start, reload, `vipcast validate`), before anything is created; `sameSettings` tells a reload whether the running
 * instance can stay.
 */
export interface SettingsDescriptor<S> {
  /**
   * Validate the raw settings (the YAML value, `{}` when the config gives none) into the plugin's own settings, or throw
   * an Error naming the key path (see SettingsContext.path). Must not touch the network or the host.
   */
  parseSettings(raw: unknown, ctx: SettingsContext): S;
  /** True when `a` and `b` configure the same thing: a reload keeps the running instance (no restart, no flap). */
  sameSettings(a: S, b: S): boolean;
}

/**
 * Services of the daemon a discovery source may use. They read the config in force at each call, so after a reload
 * they apply its agent defaults and prefix policy.
 */
export interface DiscoveryServices {
  /**
   * Build a validated app from gocast's registration parameters (as `/register` and Consul tags take them), with
   * `source` set to the discovery's name and the agent's rise/fall/interval/timeout. Monitors that run commands are
   * refused (discovered apps are untrusted input) and the prefix policy applies. Throws an Error naming `path`.
   */
  appFrom(params: { name: unknown; vip: unknown; monitor?: unknown; nat?: unknown; vip_communities?: unknown }, path: string): AppSpec;
}

/** What a discovery factory gets. */
export interface DiscoveryContext<S> {
  /** A child logger naming the plugin (`component: discovery, discovery: NAME`). */
  readonly log: PluginLogger;
  /** The parsed settings. */
  readonly settings: S;
  readonly services: DiscoveryServices;
}

/**
 * A discovery plugin: a source of apps (a CMDB, etcd, Kubernetes endpoints...). The config names it under
 * `discovery: [{ plugin: NAME, ...settings }]`; the built-ins are `config` (the config file's `apps`) and `consul`.
 */
export interface DiscoveryPlugin<S = unknown> extends PluginDescriptorBase, SettingsDescriptor<S> {
  readonly kind: 'discovery';
  /** Build the source (not started). May be async. */
  create(ctx: DiscoveryContext<S>): Discovery | Promise<Discovery>;
}

/** What a router factory gets. */
export interface RouterContext<S> {
  /** A child logger naming the plugin (`component: router, router: NAME`). */
  readonly log: PluginLogger;
  /** The parsed `routing.settings` (for the built-in `gobgp`: `routing.gobgp`). */
  readonly settings: S;
  /** The config's `bgp` section: local AS, router id, listen port, next hop, global communities, peers. */
  readonly bgp: RouterBgp;
}

/** The `bgp` section as a router sees it. Peers come again through `Router.applyPeers`. */
export interface RouterBgp {
  readonly localAs: number;
  /** Router id and source address; undefined = chosen by the router (e.g. from the route to the first peer). */
  readonly localIp?: string;
  /** -1 = outbound sessions only. */
  readonly listenPort: number;
  /** 'local_ip' (bgp.local_ip, or the address facing the peer) or 'self' (the session's own address); the daemon always sets it (default local_ip). */
  readonly nextHop?: 'local_ip' | 'self';
  readonly origin: Origin;
  readonly communities: readonly Community[];
  readonly peers: readonly PeerSpec[];
}

/**
 * A router plugin: a routing backend (GoBGP over gRPC, BIRD, FRR, ExaBGP...). `routing.plugin: NAME` picks it; its
 * settings are under `routing.settings`. A reload that changes the plugin or its settings builds a new instance
 * (make-before-break) and closes the old one.
 */
export interface RouterPlugin<S = unknown> extends PluginDescriptorBase, SettingsDescriptor<S> {
  readonly kind: 'router';
  /** Build the router (not started). May be async (load .proto files, open a socket). */
  create(ctx: RouterContext<S>): Router | Promise<Router>;
}

/**
 * A monitor plugin (default export of a `vipcast-monitor-*` package). `parse` runs on the main thread when a spec
 * enters vipcast (config, HTTP, Consul tag) and throws a clear error for bad input; the check itself runs in a worker
 * thread of the check pool, loaded from `workerModule`. Write it with `defineMonitor<Params>({...})` (or
 * `{...} satisfies MonitorPlugin<Params>`) so `parse` and the worker's `CheckFunction<Params>` share one params type.
 *
 * @typeParam Params - what `parse` returns as `params` and the check function receives (default `unknown`).
 */
export interface MonitorPlugin<Params = unknown> extends PluginDescriptorBase {
  readonly kind: 'monitor';
  /** True when the monitor runs user-supplied commands (exec-like): refused from untrusted sources. */
  readonly runsCommands?: boolean;
  /**
   * The module the check pool's workers import to run this monitor's checks. One of:
   * - a path relative to the file the package's entry point resolves to (`'./check.js'`: next to `index.js`);
   * - an absolute file path;
   * - a URL (`new URL('./check.js', import.meta.url).href`, as the built-ins do).
   *
   * The loader turns it into an absolute `file:` URL when the plugin loads. The module (ESM or CommonJS) exports its
   * `CheckFunction` as `check`; a default export that is the function, or an object with a `check` function, is
   * accepted too.
   */
  readonly workerModule: string;
  /**
   * Validate a monitor spec into structured-clone-safe `params` (plain data: no functions, class instances or symbols;
   * they are copied to the worker for every check) and the canonical `text`. Throws an Error whose message starts
   * with `ctx.path` for bad input.
   *
   * `input` is either:
   * - the string after `NAME:` of the string form (`tcp:53` for `port:tcp:53`; `''` for a bare `NAME`), or
   * - the structured form's object without its `type` key (`{ host: '127.0.0.1', port: 53 }` for
   *   `{ type: port, host: 127.0.0.1, port: 53 }`): `type` is what picked this plugin and is removed first.
   *
   * `text` is the canonical form of the spec WITHOUT the `NAME:` prefix (`tcp:53`; `''` when there is nothing after
   * the name): vipcast adds `NAME:` itself and shows `NAME:text` in logs, /status and reload diffs; two specs of the
   * same app with the same text are the same monitor. Always: a text that itself starts with `NAME:` (the `http`
   * monitor's `http://...`) is prefixed too, so a plugin that returns the full form shows `NAME:NAME:...`.
   */
  parse(input: string | Record<string, unknown>, ctx: MonitorParseContext): { params: Params; text: string };
}

/**
 * Type a monitor plugin's descriptor: returns `descriptor` itself (same object, nothing added or checked at run time),
 * typed so that `parse` must return `{ params: Params, text }`. Pair it with `defineCheck<Params>()` in the worker
 * module.
 *
 * ```ts
 * interface Params { path: string; maxAgeMs: number }
 * export default defineMonitor<Params>({ kind: 'monitor', name: 'file-age', version: '1.0.0', apiVersion: '^1.0.0',
 *   workerModule: './check.js', parse: (input, ctx) => ({ params: { path: String(input), maxAgeMs: 60_000 }, text: String(input) }) });
 * ```
 *
 * Importing it makes `vipcast` a run-time dependency of the plugin: it must then be resolvable from the plugin's
 * folder. A plugin that must load without that (vipcast installed globally, the plugin next to the config) writes
 * `{ ... } satisfies MonitorPlugin<Params>` with `import type` instead: the same checking, nothing imported.
 *
 * @typeParam Params - the params `parse` returns and the check receives.
 * @param descriptor - the plugin's descriptor.
 * @returns `descriptor`, unchanged.
 */
export function defineMonitor<Params>(descriptor: MonitorPlugin<Params>): MonitorPlugin<Params> {
  return descriptor;
}

/**
 * Type a monitor's check function (the worker module's `check` export): returns `check` itself, typed so that it
 * receives `Params`, the type its plugin's `parse` returns (see `defineMonitor`).
 *
 * ```ts
 * export const check = defineCheck<Params>(async (params, ctx) => ({ ok: true, reason: params.path }));
 * ```
 *
 * @typeParam Params - the params its plugin's `parse` returns.
 * @param check - the check function.
 * @returns `check`, unchanged.
 */
export function defineCheck<Params>(check: CheckFunction<Params>): CheckFunction<Params> {
  return check;
}

/** How an app entered vipcast. */
export type AppSource = 'config' | 'http' | 'consul' | (string & {});

/** A validated app: one service, its VIPs, how to check it and what to do while it is healthy. */
export interface AppSpec {
  /** Unique, 1..64 chars of [A-Za-z0-9_.-]; the loopback label is `lo:` + the first 12 chars. */
  readonly name: string;
  readonly source: AppSource;
  readonly vips: readonly Prefix[];
  /** Per-VIP communities (gocast `vip_config.bgp_communities`). */
  readonly communities: readonly Community[];
  readonly monitors: readonly MonitorSpec[];
  readonly nats: readonly NatRule[];
  /** Consecutive passes needed to go UP. */
  readonly rise: number;
  /** Consecutive failures needed to go DOWN. */
  readonly fall: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
}

/**
 * A routing backend. Every method is called from the reconciler's single action queue only, never concurrently.
 * Implementations: `gobgp` (gRPC to gobgpd) and `dry-run` (logs and an in-memory RIB).
 */
export interface Router {
  readonly name: string;
  /** Connect and set up global config; may resolve before the speaker answers (the reconciler retries). */
  start(): Promise<void>;
  /** Announce (or replace the attributes of) one route. */
  announce(route: Route, reason: string): Promise<void>;
  /** Withdraw one route by prefix. */
  withdraw(route: Route, reason: string): Promise<void>;
  /**
   * Optional bulk forms (a full resync after a speaker restart, shutdown): all or nothing is not required; a
   * rejection means some routes may not have been sent, and the caller falls back to one by one.
   */
  announceMany?(routes: readonly Route[], reason: string): Promise<void>;
  withdrawMany?(routes: readonly Route[], reason: string): Promise<void>;
  /** The routes vipcast owns in the speaker right now (the speaker's own RIB, not a cache). */
  listRoutes(): Promise<Route[]>;
  /** Make the speaker's peers match `peers`: add, update and delete one by one; unchanged peers keep their session. */
  applyPeers(peers: readonly PeerSpec[]): Promise<void>;
  peerStates(): Promise<PeerState[]>;
  /** Drop the speaker's global config (and with it every peer and path), so it can start again with another AS. */
  stopSpeaker?(): Promise<void>;
  /** Called each time the speaker becomes usable again (reconnected, restarted): the caller resyncs. */
  onReconnect?(cb: () => void): () => void;
  /** Withdraw nothing by itself; releases connections. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * The host side: loopback addresses and NAT rules. Implementations: real (`ip`, `iptables-restore`, no shell) and
 * logging (dry-run). Called from the reconciler's action queue only.
 */
export interface HostNetwork {
  readonly name: string;
  start(): Promise<void>;
  /** The vipcast-owned addresses present on the host now. */
  listVips(): Promise<VipBinding[]>;
  /** Add the address (idempotent: present is fine). */
  addVip(binding: VipBinding): Promise<void>;
  /** Optional bulk form of addVip: returns the failures by prefix text; the others are on the host. */
  addVips?(bindings: readonly VipBinding[]): Promise<Map<string, Error>>;
  /** Remove the address (idempotent: absent is fine). */
  removeVip(binding: VipBinding): Promise<void>;
  /** The NAT rules in vipcast's own chain now. */
  listNat(): Promise<NatBinding[]>;
  /**
   * Replace vipcast's NAT rules with exactly `rules`, atomically. Rules are judged per app first, without touching the
   * host: an app with a rule that can't be made here (no local address of its VIP's family to DNAT to, a bad target)
   * fails alone, none of its rules are written, and it is returned with the reason (by app name); every other app's
   * rules are written. Resolving to nothing (or an empty map) means every rule is in place. Rejects when the write
   * itself fails (the kernel refused it): then nothing is known to have changed.
   */
  setNat(rules: readonly NatBinding[]): Promise<Map<string, Error> | void>;
  /** Shutdown: remove everything vipcast owns on the host (addresses, rules, its chain and jumps), nothing else. */
  cleanup(): Promise<void>;
  /** Release resources; changes nothing on the host. Safe to call twice. */
  close(): Promise<void>;
}

/** A discovery source: owns a set of apps and says when it changes. */
export interface Discovery {
  readonly name: string;
  /**
   * Start delivering: `onChange` gets the source's whole set of apps each time it changes (the first call says the
   * source has answered; until then an earlier run's paths of unknown apps are held). May resolve before the first call.
   */
  start(onChange: (apps: readonly AppSpec[]) => void): Promise<void>;
  /** The source's current apps. */
  apps(): readonly AppSpec[];
  /** The config in force changed but the settings did not (a reload): rebuild the apps with the new agent defaults. */
  refresh?(): void;
  /** Stop delivering and release resources; changes nothing announced. Safe to call twice. */
  close(): Promise<void>;
}

/** Any plugin descriptor: what a plugin package's default export is. */
export type VipcastPlugin = MonitorPlugin | DiscoveryPlugin | RouterPlugin;
