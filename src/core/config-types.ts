/** The validated, typed configuration: what `loadConfig` returns after every check passed. */
import type { AppSpec, Community, ConsulTlsSettings, Origin, PeerSpec } from '../plugin-api.js';
import type { MonitorRegistry } from './monitor-registry.js';
import type { PluginRegistry } from './plugin-registry.js';
import type { PrefixPolicy } from './prefix-policy.js';

export interface AgentConfig {
  /** HTTP API listen address, gocast form `[host]:port` (":8080"). Empty string disables the API. */
  readonly listenAddr: string;
  readonly monitorIntervalMs: number;
  readonly cleanupTimerMs: number;
  /** Consul HTTP API base including /v1 (gocast), or '' when Consul is off. */
  readonly consulAddr: string;
  readonly consulQueryIntervalMs: number;
  /** Consul ACL token; secret. */
  readonly consulToken: string;
  /** Consul Enterprise namespace / admin partition ('' = none; an agent built in code may leave them out). */
  readonly consulNamespace?: string;
  readonly consulPartition?: string;
  /** TLS files for an https consul_addr, checked at load (config/consul.ts); absent = none set. */
  readonly consulTls?: ConsulTlsSettings;
  /** Default consecutive passes to go UP / failures to go DOWN for every app. */
  readonly rise: number;
  readonly fall: number;
  /** Default check timeout for every app. */
  readonly checkTimeoutMs: number;
  /** iptables, iptables-nft or iptables-legacy (ip6tables counterpart derived). */
  readonly iptablesBinary: string;
  /** Remove a VIP's NAT rules and address right after its withdraw instead of after cleanup_timer. */
  readonly removeVipOnWithdraw: boolean;
  /** Size of the check worker pool. */
  readonly checkWorkers: number;
  /**
   * What may be announced (agent.allowed_prefixes, registration_allowed_prefixes, min_prefix_length_v4/v6,
   * allowed_communities, plus the BGP peers' addresses and bgp.local_ip): see prefix-policy.ts. Unset (an agent built
   * in code) = DEFAULT_POLICY, the fixed rules only.
   */
  readonly prefixPolicy?: PrefixPolicy;
  /** Where `vipcast run` writes its pid ('' = none); `vipcast reload` signals it. */
  readonly pidFile: string;
  /** Where the host network records the addresses vipcast added, so a restart after a crash knows them. */
  readonly stateFile: string;
  /**
   * Where the HTTP registrations are kept so a restart (and a reboot) registers them again ('' = not kept; unset in
   * the file: DEFAULT_REGISTRATIONS_FILE, or '' with routing.plugin dry-run). See registration-store.ts.
   */
  readonly registrationsFile: string;
  /**
   * Where maintenance set through the API or the CLI is kept so a restart (and a reboot) keeps it ('' = not kept; unset
   * in the file: DEFAULT_MAINTENANCE_STATE_FILE, or '' with routing.plugin dry-run). See maintenance.ts.
   */
  readonly maintenanceStateFile: string;
  /** While this file exists every app is in maintenance ('' = none). */
  readonly maintenanceFile: string;
  /** While `<maintenanceDir>/<APP>` exists, APP is in maintenance ('' = none). */
  readonly maintenanceDir: string;
  /**
   * Graceful shutdown (RFC 8326): on SIGTERM/SIGINT every route is re-announced with GRACEFUL_SHUTDOWN (65535:0) and
   * withdrawn this many ms later, so routers that honour it move traffic away first. 0 = withdraw at once.
   */
  readonly shutdownDrainMs: number;
  /**
   * Bearer token for the API's mutating endpoints (read from agent.api_token_file or the variable named by
   * agent.api_token_env); '' = none. Secret: never logged, never in /status.
   */
  readonly apiToken: string;
  /** Local users (names or uids) who may call mutating endpoints over loopback TCP without a token (root always may). */
  readonly apiAllowedUsers: readonly string[];
  /** Local groups (names or gids): their members may, like apiAllowedUsers. */
  readonly apiAllowedGroups: readonly string[];
  /** File mode of the API's unix socket (`listen_addr: unix:/path`). */
  readonly apiSocketMode: number;
  /** Group of the API's unix socket ('' = vipcast's own group). */
  readonly apiSocketGroup: string;
  /** Anyone who reaches the API may call mutating endpoints without a token (gocast's behaviour; explicit opt-in). */
  readonly apiInsecureOpen: boolean;
  /** agent.flap_damping: hold down apps that flap (flap-damping.ts). */
  readonly flapDamping: FlapDampingConfig;
}

/** agent.flap_damping (RFC 2439-like penalties; see flap-damping.ts). */
export interface FlapDampingConfig {
  readonly enabled: boolean;
  /** Added to an app's penalty each time it goes from up to down. */
  readonly penalty: number;
  /** Above this the app is held down... */
  readonly suppressThreshold: number;
  /** ...until its penalty has decayed below this. */
  readonly reuseThreshold: number;
  /** The penalty halves in this time. */
  readonly halfLifeMs: number;
  /** A suppression ends at most this long after the last flap (the penalty is capped accordingly). */
  readonly maxSuppressMs: number;
}

export interface BgpConfig {
  readonly localAs: number;
  /** Router id and next hop; undefined = the address facing the peer (discovered by the router). */
  readonly localIp?: string;
  readonly communities: readonly Community[];
  readonly origin: Origin;
  /** Port gobgpd listens on for the router to connect; -1 = outbound only (gocast). */
  readonly listenPort: number;
  /** 'local_ip' (default) or 'self' (0.0.0.0 / ::, the session's own address). */
  readonly nextHop: 'local_ip' | 'self';
  /** Legacy single peer first (if set), then bgp.peers[] in order. */
  readonly peers: readonly PeerSpec[];
}

export interface RoutingConfig {
  /** A router plugin of the config's PluginRegistry: built-in `gobgp` (default) or `dry-run`, or one from `plugins:`. */
  readonly plugin: string;
  /**
   * The router's settings, parsed by its descriptor's parseSettings: `routing.settings` for every router but the
   * built-in gobgp, whose settings are the `routing.gobgp` block below (the same object). `{}` for dry-run.
   */
  readonly settings: unknown;
  readonly gobgp: {
    /** `host:port` or `unix:///path`: the gobgpd the router talks to (managed: `unix://<socketDir>/gobgpd.sock`). */
    readonly address: string;
    /**
     * vipcast runs gobgpd itself (src/plugins/routing/gobgp/managed.ts), a daemon-level child bound to its life.
     * Always false with routing.plugin dry-run.
     */
    readonly managed: boolean;
    /** The managed gobgpd's program: a command in PATH or an absolute path. */
    readonly binary: string;
    /** The managed gobgpd's private socket directory (mode 0700). */
    readonly socketDir: string;
  };
}

/** A discovery source of the config: `discovery[i]` (or a built-in: `config`, `consul`). */
export interface DiscoveryEntry {
  /** The source's name: its apps' `source`; unique among the sources. */
  readonly name: string;
  /** The discovery plugin's name in the PluginRegistry. */
  readonly plugin: string;
  /** The settings as the plugin's parseSettings returned them. */
  readonly settings: unknown;
  /** Key path of the entry in the config (`discovery[1]`), for errors. */
  readonly path: string;
}

export interface VipcastConfig {
  /** Absolute path of the file this came from ('' when built in code). */
  readonly file: string;
  readonly agent: AgentConfig;
  readonly bgp: BgpConfig;
  readonly routing: RoutingConfig;
  /** Plugin packages (of any family) named in `plugins:`. */
  readonly plugins: readonly string[];
  /**
   * Every plugin this config may name, by family: the built-ins and the packages of `plugins:`, loaded afresh at each
   * load (start, reload, `vipcast validate`). Routers and discovery sources are looked up here by name.
   */
  readonly registry: PluginRegistry;
  /** The monitor types this config may use (built-ins + its plugins; `registry.monitors`); HTTP and Consul registrations use it too. */
  readonly monitors: MonitorRegistry;
  /** Apps from the config file (source 'config'). */
  readonly apps: readonly AppSpec[];
  /**
   * The `discovery:` entries (sources beside the config file's apps and Consul), settings parsed by their plugin.
   * Optional so configs built in code need not set it.
   */
  readonly discovery?: readonly DiscoveryEntry[];
  /**
   * Things the file got away with, each starting with its key path (e.g. consul_addr without /v1, completed);
   * the daemon logs them. Optional so configs built in code need not set it.
   */
  readonly warnings?: readonly string[];
}
