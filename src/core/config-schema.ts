/**
 * The config schema and its building blocks: the problem list every check reports into, the value checks of the
 * scalar keys, the convict schema of the scalar sections, the known keys of every section with suggestions for
 * unknown ones, and the convict load of the scalars. `config.ts` builds the typed config from these.
 */
import convict from 'convict';
import { VipcastError, valueError } from './errors.js';
import { parseAddress, parseAsn, parseCommunity, parseDuration, parseOrigin, parsePort } from './values.js';
import { DEFAULT_MIN_PREFIX_LENGTH_V4, DEFAULT_MIN_PREFIX_LENGTH_V6, parseAllowedPrefix, parseCommunityPattern } from './prefix-policy.js';
import { FLAP_DAMPING_DEFAULTS } from './flap-damping.js';

/** Longest duration a Node timer can hold (~24.8 days); a longer one would fire at once. */
export const MAX_DURATION_MS = 2_147_483_647;
/** Linux TCP_MD5SIG_MAXKEYLEN. */
export const MAX_MD5_LENGTH = 80;
/** Default check timeout cap when agent.check_timeout is unset: min(monitor_interval, this). */
export const DEFAULT_TIMEOUT_CAP_MS = 5000;
/** local_as used with routing.plugin dry-run when the file sets none (first private-use ASN). */
export const DRY_RUN_LOCAL_AS = 64512;

// ---------------------------------------------------------------------------------------------------------------------
// Problems

/** Several problems at once (a list with more than one bad item). */
export class ProblemList extends Error {
  constructor(readonly list: string[]) {
    super(list.join('\n'));
  }
}

export function messagesOf(err: unknown, fallbackPath: string): string[] {
  if (err instanceof ProblemList) return err.list;
  if (err instanceof VipcastError) return [err.message];
  // A third-party monitor plugin may throw a plain error without the key path.
  const text = err instanceof Error ? err.message : String(err);
  return [text.startsWith(fallbackPath) ? text : `${fallbackPath}: ${text}`];
}

export class Problems {
  readonly list: string[] = [];
  readonly warnings: string[] = [];

  add(path: string, message: string): void {
    this.list.push(`${path}: ${message}`);
  }

  /** Run a parser; on failure record its message(s) and return undefined. */
  try<T>(path: string, fn: () => T): T | undefined {
    try {
      return fn();
    } catch (err) {
      this.list.push(...messagesOf(err, path));
      return undefined;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Value checks used by the schema

export type Parse = (value: unknown, path: string) => unknown;

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return JSON.stringify(value);
}

export function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** A Go duration string with a lower bound. Bare numbers are refused: gocast read them as nanoseconds. */
export function duration(minMs: number, hint = ''): (value: unknown, path: string) => number {
  return (value, path) => {
    if (typeof value === 'number') throw valueError(path, `${value} has no unit (write "${value}s" or "${value}ms")`);
    const ms = parseDuration(value, path);
    if (ms < minMs) {
      throw valueError(path, `"${String(value)}" is too short (${minMs <= 1 ? 'must be more than 0' : `minimum ${formatMs(minMs)}`})${hint}`);
    }
    if (ms > MAX_DURATION_MS) throw valueError(path, `"${String(value)}" is too long (maximum 24d, about 596h)`);
    return Math.round(ms);
  };
}

/** agent.state_file's default: /run is a tmpfs, emptied by a reboot together with the addresses it records. */
export const DEFAULT_STATE_FILE = '/run/vipcast/host-state.json';

/**
 * agent.registrations_file's default: /var/lib survives a reboot, and so should registrations (a rebooted host's
 * services come back and are expected to be announced again; their registrants may not re-register).
 */
export const DEFAULT_REGISTRATIONS_FILE = '/var/lib/vipcast/registrations.json';

/** agent.maintenance_state_file's default: maintenance set through the API or the CLI outlives a reboot too. */
export const DEFAULT_MAINTENANCE_STATE_FILE = '/var/lib/vipcast/maintenance.json';

/** The most a shutdown drain may last: vipcast exits within 10 s of a signal, and the withdraw needs the rest. */
export const MAX_SHUTDOWN_DRAIN_MS = 5000;

export function shutdownDrain(value: unknown, path: string): number {
  const ms = duration(0)(value, path);
  if (ms > MAX_SHUTDOWN_DRAIN_MS) {
    throw valueError(path, `"${String(value)}" is too long (at most ${formatMs(MAX_SHUTDOWN_DRAIN_MS)}: vipcast exits within 10 s of a signal and the withdraw needs the rest)`);
  }
  return ms;
}

export function integer(min: number, max: number): (value: unknown, path: string) => number {
  return (value, path) => {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw valueError(path, `${describe(value)} is not an integer in ${min}..${max}`);
    }
    return value;
  };
}

export function boolean(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') throw valueError(path, `${describe(value)} is not true or false`);
  return value;
}

export function oneOf<T extends string>(values: readonly T[]): (value: unknown, path: string) => T {
  return (value, path) => {
    if (typeof value === 'string' && (values as readonly string[]).includes(value)) return value as T;
    const close = typeof value === 'string' ? suggest(value, values) : [];
    throw valueError(path, `${describe(value)} is not one of ${values.join(', ')}${close.length ? ` (did you mean "${close[0]}"?)` : ''}`);
  };
}

export function address(value: unknown, path: string): string {
  return parseAddress(value, path).address;
}

/** A list whose items are parsed one by one; every bad item is reported. */
export function listOf<T>(item: (value: unknown, path: string) => T, example: string): (value: unknown, path: string) => T[] {
  return (value, path) => {
    if (!Array.isArray(value)) throw valueError(path, `${describe(value)} is not a list (write ${example})`);
    const problems = new Problems();
    const out = value.map((v, i) => problems.try(`${path}[${i}]`, () => item(v, `${path}[${i}]`)));
    if (problems.list.length) throw new ProblemList(problems.list);
    return out as T[];
  };
}

export const communities = listOf(parseCommunity, '["65000:100"]');

export const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** `host:port`, `[v6]:port` or (when `emptyHost`) `:port`; host is an IP address or a DNS name. */
export function hostPort(text: string, path: string, emptyHost: boolean): void {
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):([^:]*)$/.exec(text);
  if (!m) throw valueError(path, `"${text}" is not host:port (IPv6 as [addr]:port)`);
  const host = m[1] ?? m[2] ?? '';
  if (m[1] !== undefined) {
    if (parseAddress(host, path).family !== 'ipv6') throw valueError(path, `"${text}": brackets are for IPv6 addresses only`);
  } else if (host === '') {
    if (!emptyHost) throw valueError(path, `"${text}" has no host`);
  } else if (!/^[\d.]+$/.test(host) ? !HOSTNAME.test(host) : !isAddress(host)) {
    throw valueError(path, `"${text}": "${host}" is not an IP address or host name`);
  }
  const port = m[3] ?? '';
  if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
    throw valueError(path, `"${text}": "${port}" is not a port (1..65535)`);
  }
}

export function isAddress(text: string): boolean {
  try {
    parseAddress(text, '');
    return true;
  } catch {
    return false;
  }
}

export function listenAddr(value: unknown, path: string): string {
  if (typeof value !== 'string') throw valueError(path, `${describe(value)} is not a listen address (write ":8080", "127.0.0.1:8080" or "unix:/run/vipcast/api.sock")`);
  const text = value.trim();
  if (text.startsWith('unix:')) {
    unixSocketPath(text, path);
    return text;
  }
  if (text !== '') hostPort(text, path, true);
  return text;
}

/** The file of a `unix:/path` or `unix:///path` address. */
export function unixSocketPath(text: string, path: string): string {
  const file = text.startsWith('unix://') ? text.slice('unix://'.length) : text.slice('unix:'.length);
  // sun_path holds 108 bytes with its terminating NUL.
  if (!file.startsWith('/') || file.length < 2 || file.endsWith('/') || file.includes('\0') || Buffer.byteLength(file) > 107) {
    throw valueError(path, `"${text}" is not a unix socket address (write "unix:/absolute/path", at most 107 bytes)`);
  }
  return file;
}

// API access (agent.api_*): who may call the mutating endpoints. See api-auth.ts.

/** A user or group: a name as in /etc/passwd or /etc/group, or a number; kept as text. */
export function accountName(value: unknown, path: string): string {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < 2 ** 32) return String(value);
  if (typeof value === 'string' && /^(\d{1,10}|[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?)$/.test(value.trim())) return value.trim();
  throw valueError(path, `${describe(value)} is not a user or group name or number`);
}

export function accountNames(value: unknown, path: string): string[] {
  return listOf(accountName, '["deploy", 1001]')(value, path);
}

/** An environment variable name, or '' for none. */
export function envName(value: unknown, path: string): string {
  if (value === '') return '';
  if (typeof value !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(value)) throw valueError(path, `${describe(value)} is not an environment variable name`);
  return value;
}

/** A file mode as a quoted octal string ("0660"). A bare number is refused: YAML 1.2 reads 0660 as decimal 660, 0440 as 440. */
export function socketMode(value: unknown, path: string): number {
  if (typeof value === 'string' && /^0?[0-7]{3}$/.test(value.trim())) return parseInt(value.trim(), 8);
  throw valueError(path, `${describe(value)} is not a file mode (write it quoted, in octal: "0660")`);
}

export function gobgpAddress(value: unknown, path: string): string {
  if (typeof value !== 'string' || value.trim() === '') {
    throw valueError(path, `${describe(value)} is not a gRPC address (write "127.0.0.1:50051" or "unix:///run/gobgpd.sock")`);
  }
  const text = value.trim();
  if (text.startsWith('unix:')) {
    const file = text.startsWith('unix://') ? text.slice('unix://'.length) : text.slice('unix:'.length);
    if (!file.startsWith('/') || file.length < 2 || file.includes('\0')) {
      throw valueError(path, `"${text}" is not a unix socket address (write "unix:///absolute/path")`);
    }
    return text;
  }
  hostPort(text, path, false);
  return text;
}

/** routing.gobgp.socket_dir's default: beside agent.state_file's default, on the /run tmpfs. */
export const DEFAULT_GOBGPD_SOCKET_DIR = '/run/vipcast/gobgpd';
/** The managed gobgpd's API socket inside routing.gobgp.socket_dir. */
export const MANAGED_SOCKET_NAME = 'gobgpd.sock';

/** An absolute directory whose `gobgpd.sock` fits a unix socket address (at most 107 bytes). */
export function socketDir(value: unknown, path: string): string {
  if (typeof value !== 'string' || !value.trim().startsWith('/') || value.includes('\0')) {
    throw valueError(path, `${describe(value)} is not an absolute directory path (write "/run/vipcast/gobgpd")`);
  }
  const dir = value.trim().replace(/\/+$/, '') || '/';
  if (Buffer.byteLength(`${dir}/${MANAGED_SOCKET_NAME}`) > 107) throw valueError(path, `"${dir}" is too long for a unix socket path (${dir}/${MANAGED_SOCKET_NAME} must fit in 107 bytes)`);
  return dir;
}

/** routing.plugin: a plugin name ([a-z][a-z0-9_-]{0,31}); whether such a router exists is checked against the registry. */
export function routerName(value: unknown, path: string): string {
  if (typeof value === 'string' && /^[a-z][a-z0-9_-]{0,31}$/.test(value)) return value;
  throw valueError(path, `${describe(value)} is not a router plugin name (write gobgp, dry-run, or the name of a router of plugins:)`);
}

/** A program: a command name looked up in PATH, or an absolute path (a relative path would depend on the cwd). */
export function program(value: unknown, path: string): string {
  if (typeof value !== 'string' || value.trim() === '' || value.includes('\0')) throw valueError(path, `${describe(value)} is not a program (write "gobgpd" or "/usr/bin/gobgpd")`);
  const text = value.trim();
  if (text.includes('/') && !text.startsWith('/')) throw valueError(path, `"${text}" is a relative path (write a command name looked up in PATH, or an absolute path)`);
  return text;
}

/** gocast appended `/catalog/...` to consul_addr, so it had to end in /v1; a missing /v1 is added with a warning. */
export function consulAddr(value: unknown, path: string): string {
  if (typeof value !== 'string') throw valueError(path, `${describe(value)} is not a URL (write "http://127.0.0.1:8500/v1")`);
  const text = value.trim();
  if (text === '') return '';
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw valueError(path, `"${text}" is not a URL (write "http://127.0.0.1:8500/v1")`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw valueError(path, `"${text}" must be an http:// or https:// URL`);
  if (url.username || url.password) throw valueError(path, 'must not carry credentials (use agent.consul_token)');
  if (url.search || url.hash) throw valueError(path, `"${text}" must not have a query or fragment`);
  return text.replace(/\/+$/, '');
}

export function secret(value: unknown, path: string): string {
  // Never echo the value: it is a secret even when malformed.
  if (typeof value !== 'string') throw valueError(path, `is not a string (quote it)`);
  if (/[\u0000-\u001f\u007f]/.test(value)) throw valueError(path, 'contains control characters');
  return value;
}

export function pidFile(value: unknown, path: string): string {
  if (typeof value !== 'string' || value.includes('\0') || value.endsWith('/')) {
    throw valueError(path, `${describe(value)} is not a file path`);
  }
  return value.trim();
}

/** A folder ('' = none); a trailing slash is fine. */
export function folderPath(value: unknown, path: string): string {
  if (typeof value !== 'string' || value.includes('\0') || (value.trim() !== '' && value.trim().replace(/\/+$/, '') === '')) {
    throw valueError(path, `${describe(value)} is not a folder path (write "/etc/vipcast/maintenance.d")`);
  }
  return value.trim().replace(/\/+$/, '');
}

export function listenPort(value: unknown, path: string): number {
  if (value === -1) return -1;
  try {
    return parsePort(value, path);
  } catch {
    throw valueError(path, `${describe(value)} is not a port (1..65535, or -1 to only connect out)`);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Schema of the scalar sections (convict)

export interface Leaf {
  readonly doc: string;
  /** Default in config-file form; undefined = unset. */
  readonly default: unknown;
  readonly parse: Parse;
  readonly env?: string;
  readonly sensitive?: boolean;
}
export interface Tree {
  readonly [key: string]: Leaf | Tree;
}

export const isLeaf = (node: Leaf | Tree): node is Leaf => typeof (node as Leaf).parse === 'function';

export const SCHEMA: Tree = {
  agent: {
    listen_addr: { doc: 'HTTP API listen address [host]:port; "" disables the API', default: '127.0.0.1:8080', parse: listenAddr },
    monitor_interval: { doc: 'time between two checks of an app', default: '10s', parse: duration(50) },
    cleanup_timer: {
      doc: 'time an unhealthy app keeps its address and NAT rules after its withdraw',
      default: '15m',
      parse: duration(1, ' (to remove at once, set agent.remove_vip_on_withdraw: true)'),
    },
    consul_addr: { doc: 'Consul HTTP API base URL including /v1; "" turns Consul off', default: '', parse: consulAddr },
    consul_query_interval: { doc: 'time between two Consul catalog queries', default: '30s', parse: duration(1000) },
    consul_token: { doc: 'Consul ACL token (CONSUL_TOKEN wins)', default: '', parse: secret, env: 'CONSUL_TOKEN', sensitive: true },
    rise: { doc: 'consecutive passing checks before an app is UP', default: 1, parse: integer(1, 100) },
    fall: { doc: 'consecutive failing checks before an app is DOWN', default: 1, parse: integer(1, 100) },
    check_timeout: { doc: 'time budget of one check; default min(monitor_interval, 5s)', default: undefined, parse: duration(10) },
    iptables_binary: {
      doc: 'iptables flavour for NAT rules',
      default: 'iptables',
      parse: oneOf(['iptables', 'iptables-nft', 'iptables-legacy'] as const),
    },
    remove_vip_on_withdraw: { doc: 'remove address and NAT rules right after the withdraw', default: false, parse: boolean },
    check_workers: { doc: 'worker threads running checks', default: 2, parse: integer(1, 64) },
    // The prefix policy (prefix-policy.ts): what any source may announce.
    allowed_prefixes: { doc: 'VIPs of every source must lie inside one of these prefixes; [] = no allowlist', default: [], parse: listOf(parseAllowedPrefix, '["198.18.0.0/15"]') },
    registration_allowed_prefixes: {
      doc: 'VIPs from HTTP, Consul and plugins must also lie inside one of these; [] = no extra limit',
      default: [],
      parse: listOf(parseAllowedPrefix, '["198.18.100.0/24"]'),
    },
    min_prefix_length_v4: { doc: 'shortest IPv4 VIP announced unless agent.allowed_prefixes lists it exactly', default: DEFAULT_MIN_PREFIX_LENGTH_V4, parse: integer(1, 32) },
    min_prefix_length_v6: { doc: 'shortest IPv6 VIP announced unless agent.allowed_prefixes lists it exactly', default: DEFAULT_MIN_PREFIX_LENGTH_V6, parse: integer(1, 128) },
    allowed_communities: {
      doc: 'communities HTTP, Consul and plugins may set ("65001:*"); unset = any but the well-known and reserved ones',
      default: undefined,
      parse: listOf(parseCommunityPattern, '["65001:*"]'),
    },
    pid_file: { doc: 'file `vipcast run` writes its pid to; "" = none', default: '', parse: pidFile },
    state_file: { doc: 'where vipcast records the loopback addresses it added (crash recovery)', default: DEFAULT_STATE_FILE, parse: pidFile },
    registrations_file: {
      doc: `where HTTP registrations are kept across restarts; "" = not kept; unset = ${DEFAULT_REGISTRATIONS_FILE} (with dry-run: not kept)`,
      default: undefined,
      parse: pidFile,
    },
    maintenance_state_file: {
      doc: `where maintenance set through the API or \`vipcast maintenance\` is kept across restarts; "" = not kept; unset = ${DEFAULT_MAINTENANCE_STATE_FILE} (with dry-run: not kept)`,
      default: undefined,
      parse: pidFile,
    },
    maintenance_file: { doc: 'while this file exists, every app is in maintenance (host-wide, as ExaBGP\'s --disable); "" = none', default: '', parse: pidFile },
    maintenance_dir: { doc: 'while a file named after an app exists in this folder, that app is in maintenance; "" = none', default: '', parse: folderPath },
    shutdown_drain: {
      doc: 'on SIGTERM/SIGINT, re-announce every route with the graceful-shutdown community and wait this long before withdrawing; "0s" = off',
      default: '0s',
      parse: shutdownDrain,
    },
    api_token_file: { doc: 'file holding the bearer token of the API\'s mutating endpoints (not readable by others)', default: '', parse: pidFile },
    api_token_env: { doc: 'environment variable holding that token instead', default: '', parse: envName },
    api_allowed_users: { doc: 'local users who may register over loopback TCP without a token (root always may)', default: [], parse: accountNames },
    api_allowed_groups: { doc: 'local groups whose members may, as api_allowed_users', default: [], parse: accountNames },
    api_socket_mode: { doc: 'file mode of the unix socket API (listen_addr unix:/path)', default: '0660', parse: socketMode },
    api_socket_group: { doc: 'group of the unix socket API; "" = vipcast\'s own', default: '', parse: (v: unknown, p: string) => (v === '' ? '' : accountName(v, p)) },
    api_insecure_open: { doc: 'anyone who reaches the API may register without a token (gocast); explicit opt-in', default: false, parse: boolean },
    // Flap damping (flap-damping.ts): RFC 2439-like penalties; cross-key checks in config.ts.
    flap_damping: {
      enabled: { doc: 'hold down apps that flap (off by default)', default: FLAP_DAMPING_DEFAULTS.enabled, parse: boolean },
      penalty: { doc: 'added to an app\'s penalty each time it goes from up to down', default: FLAP_DAMPING_DEFAULTS.penalty, parse: integer(1, 1_000_000) },
      suppress_threshold: { doc: 'above this penalty the app is held down', default: FLAP_DAMPING_DEFAULTS.suppressThreshold, parse: integer(1, 1_000_000) },
      reuse_threshold: { doc: 'a held app is announced again once its penalty is below this', default: FLAP_DAMPING_DEFAULTS.reuseThreshold, parse: integer(1, 1_000_000) },
      half_life: { doc: 'the penalty halves in this time', default: formatMs(FLAP_DAMPING_DEFAULTS.halfLifeMs), parse: duration(1000) },
      max_suppress: { doc: 'a hold ends at most this long after the last flap', default: formatMs(FLAP_DAMPING_DEFAULTS.maxSuppressMs), parse: duration(1000) },
    },
  },
  bgp: {
    local_as: { doc: 'our AS number (required with routing.plugin gobgp)', default: undefined, parse: parseAsn },
    peer_as: { doc: 'legacy single peer: its AS', default: undefined, parse: parseAsn },
    remote_as: { doc: 'alias of bgp.peer_as', default: undefined, parse: parseAsn },
    local_ip: { doc: 'router id and next hop; unset = address facing the peer', default: undefined, parse: address },
    peer_ip: { doc: 'legacy single peer: its address; unset = default gateway', default: undefined, parse: address },
    communities: { doc: 'communities on every route', default: [], parse: communities },
    origin: { doc: 'ORIGIN attribute: igp, egp or incomplete (gocast: unknown)', default: 'igp', parse: parseOrigin },
    listen_port: { doc: 'port gobgpd listens on; -1 = outbound only', default: 179, parse: listenPort },
    next_hop: { doc: 'local_ip or self (the session address)', default: 'local_ip', parse: oneOf(['local_ip', 'self'] as const) },
  },
  routing: {
    plugin: { doc: 'routing backend: a router plugin, the built-in gobgp or dry-run or one of plugins:', default: 'gobgp', parse: routerName },
    gobgp: {
      address: { doc: "a gobgpd you run yourself: its gRPC API, host:port or unix:///path (setting it turns routing.gobgp.managed off)", default: '127.0.0.1:50051', parse: gobgpAddress, env: 'VIPCAST_GOBGP_ADDRESS' },
      managed: {
        doc: 'vipcast starts gobgpd itself, bound to its life, API on a private unix socket; unset = true unless routing.gobgp.address (or $VIPCAST_GOBGP_ADDRESS) is set',
        default: undefined,
        parse: boolean,
      },
      binary: { doc: 'the gobgpd a managed speaker runs: a command in PATH or an absolute path', default: 'gobgpd', parse: program },
      socket_dir: { doc: `private directory (mode 0700) of the managed gobgpd's API socket (${MANAGED_SOCKET_NAME})`, default: DEFAULT_GOBGPD_SOCKET_DIR, parse: socketDir },
    },
  },
};

/** Keys of the lists, checked by hand (docs in docs/CONFIG.md). */
export const PEER_KEYS = ['peer_ip', 'peer_as', 'remote_as', 'multi_hop', 'md5_password', 'md5_env_var', 'communities'];
export const APP_KEYS = ['name', 'vip', 'vip_config', 'monitors', 'nats', 'rise', 'fall', 'check_timeout', 'monitor_interval'];
export const VIP_CONFIG_KEYS = ['bgp_communities'];

/** Known keys of every mapping, by section (`apps[]` = each item of apps). */
export const SECTIONS: Record<string, readonly string[]> = {
  '': ['agent', 'bgp', 'apps', 'routing', 'plugins', 'discovery'],
  agent: Object.keys(SCHEMA.agent!),
  bgp: [...Object.keys(SCHEMA.bgp!), 'peers'],
  'bgp.peers[]': PEER_KEYS,
  'apps[]': APP_KEYS,
  'apps[].vip_config': VIP_CONFIG_KEYS,
  routing: [...Object.keys(SCHEMA.routing!), 'settings'],
  'routing.gobgp': Object.keys((SCHEMA.routing as Tree).gobgp!),
  'agent.flap_damping': Object.keys((SCHEMA.agent as Tree).flap_damping!),
};

/** Names people reach for that no edit distance finds. */
export const HINTS: Record<string, Record<string, string>> = {
  agent: { interval: 'monitor_interval', timeout: 'check_timeout', listen: 'listen_addr', iptables: 'iptables_binary', workers: 'check_workers', damping: 'flap_damping', dampening: 'flap_damping' },
  'agent.flap_damping': { suppress: 'suppress_threshold', reuse: 'reuse_threshold', half_life_time: 'half_life', max_suppress_time: 'max_suppress', enable: 'enabled' },
  bgp: { neighbors: 'peers', neighbours: 'peers', asn: 'local_as', as: 'local_as', router_id: 'local_ip', community: 'communities' },
  'bgp.peers[]': {
    address: 'peer_ip', ip: 'peer_ip', neighbor_address: 'peer_ip', asn: 'peer_as', as: 'peer_as', password: 'md5_password',
    md5: 'md5_password', auth_password: 'md5_password', multihop: 'multi_hop', ebgp_multihop: 'multi_hop',
  },
  'apps[]': {
    communities: 'vip_config.bgp_communities', bgp_communities: 'vip_config.bgp_communities', vips: 'vip', prefix: 'vip',
    checks: 'monitors', healthchecks: 'monitors', interval: 'monitor_interval', timeout: 'check_timeout',
  },
  routing: { address: 'gobgp.address', router: 'plugin' },
};

/** Every documented key path, for docs and tests. */
export function configKeys(): string[] {
  const out: string[] = [];
  const walk = (tree: Tree, prefix: string): void => {
    for (const [k, node] of Object.entries(tree)) {
      if (isLeaf(node)) out.push(prefix + k);
      else walk(node, `${prefix}${k}.`);
    }
  };
  walk(SCHEMA, '');
  out.push('bgp.peers', ...PEER_KEYS.map((k) => `bgp.peers[].${k}`));
  out.push('apps', ...APP_KEYS.map((k) => `apps[].${k}`), ...VIP_CONFIG_KEYS.map((k) => `apps[].vip_config.${k}`));
  out.push('discovery', 'discovery[].plugin', 'discovery[].name');
  return out;
}

// ---------------------------------------------------------------------------------------------------------------------
// Unknown keys and suggestions

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
export function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

export const squash = (s: string): string => s.toLowerCase().replace(/[-_\s]/g, '');

/** Known names close to `word`, best first (at most 3). */
export function suggest(word: string, known: readonly string[]): string[] {
  const w = word.toLowerCase();
  const scored: Array<[string, number]> = [];
  for (const k of known) {
    if (squash(k) === squash(word)) scored.push([k, 0]);
    else {
      const dist = distance(w, k);
      const limit = Math.max(1, Math.min(3, Math.floor(w.length / 3)));
      if (dist <= limit) scored.push([k, dist]);
      else if (w.length >= 4 && (k.includes(w) || w.includes(k))) scored.push([k, 4]);
    }
  }
  return scored.sort((x, y) => x[1] - y[1]).slice(0, 3).map(([k]) => k);
}

export function unknownKeyMessage(key: string, section: string): string {
  const hint = HINTS[section]?.[key.toLowerCase()];
  const close = suggest(key, SECTIONS[section] ?? []);
  if (hint && !close.includes(hint)) close.unshift(hint);
  if (close.length) return `unknown key (did you mean ${close.map((k) => `"${k}"`).join(' or ')}?)`;
  for (const [other, keys] of Object.entries(SECTIONS)) {
    if (other !== section && other !== '' && keys.includes(key)) return `unknown key ("${key}" belongs in ${other}: ${other}.${key})`;
  }
  return `unknown key (known: ${(SECTIONS[section] ?? []).join(', ')})`;
}

/**
 * Check that `value` is a mapping with known keys only. Returns it with null values dropped (an empty value means
 * "the default", as in gocast), or undefined when it is not a mapping. null itself is an empty mapping.
 */
export function mapping(value: unknown, path: string, section: string, problems: Problems): Record<string, unknown> | undefined {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    problems.add(path || '(top level)', `${describe(value)} is not a mapping (write "key: value" lines)`);
    return undefined;
  }
  const known = SECTIONS[section] ?? [];
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if (!known.includes(key)) problems.add(path ? `${path}.${key}` : key, unknownKeyMessage(key, section));
    else if (v !== null) out[key] = v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------------
// The scalar sections through convict

export const LEAF_FORMAT = 'vipcast-config-leaf';
// A named format (no coercion: convict would parseFloat a string for a key with a number default, and read "yes" as
// true); each leaf carries its own check.
convict.addFormat({ name: LEAF_FORMAT, validate: (value: unknown, schema: convict.SchemaObj) => schema.check(value) });

export interface Scalars {
  /** Parsed values by key path ('agent.rise'); absent = unset with no default. */
  readonly values: Map<string, unknown>;
}

export function loadScalars(sections: Record<string, Record<string, unknown>>, env: NodeJS.ProcessEnv, problems: Problems): Scalars {
  const values = new Map<string, unknown>();
  const recorded = problems.list.length;
  // Only non-empty variables count: an empty CONSUL_TOKEN must not wipe the file's token.
  const setEnv: Record<string, string> = {};
  const build = (tree: Tree, prefix: string): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (const [key, node] of Object.entries(tree)) {
      const keyPath = prefix + key;
      if (!isLeaf(node)) {
        out[key] = build(node, `${keyPath}.`);
        continue;
      }
      if (node.env && env[node.env]) setEnv[node.env] = env[node.env]!;
      const shown = node.env && setEnv[node.env] !== undefined ? `${keyPath} (from $${node.env})` : keyPath;
      out[key] = {
        doc: node.doc,
        default: node.default,
        format: LEAF_FORMAT,
        ...(node.env ? { env: node.env } : {}),
        ...(node.sensitive ? { sensitive: true } : {}),
        check: (value: unknown) => {
          try {
            values.set(keyPath, node.parse(value, shown));
          } catch (err) {
            problems.list.push(...messagesOf(err, shown));
            throw err;
          }
        },
      };
    }
    return out;
  };
  const schema = build(SCHEMA, '');

  // Mappings where a scalar belongs would make convict recurse into a leaf: report and drop them here.
  const input: Record<string, unknown> = {};
  const strip = (tree: Tree, from: Record<string, unknown>, prefix: string): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(from)) {
      const node = tree[key];
      if (!node) continue;
      if (isLeaf(node)) {
        if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
          problems.add(prefix + key, key === 'communities' ? 'is a mapping, not a list (write ["65000:100"])' : 'is a mapping, not a single value');
        } else out[key] = value;
      } else {
        const sub = mapping(value, prefix + key, prefix + key, problems);
        if (sub) out[key] = strip(node, sub, `${prefix}${key}.`);
      }
    }
    return out;
  };
  for (const [name, section] of Object.entries(sections)) input[name] = strip(SCHEMA[name] as Tree, section, `${name}.`);

  const conf = convict<Record<string, unknown>>(schema as convict.Schema<Record<string, unknown>>, { env: setEnv, args: [] });
  conf.load(input);
  try {
    conf.validate({ allowed: 'strict', output: () => undefined });
  } catch (err) {
    // Our checks already recorded their own messages; anything else from convict is re-worded with its key path.
    if (problems.list.length === recorded) {
      for (const line of String((err as Error).message).split('\n')) {
        const m = /configuration param '([^']+)' (not declared|missing)/.exec(line);
        if (m) problems.add(m[1]!, m[2] === 'missing' ? 'missing' : 'unknown key');
        else problems.list.push(line.replace(/: value was .*$/, ''));
      }
    }
  }
  return { values };
}

