/**
 * The convict schema of the scalar sections, the known keys of every section (with hints and suggestions for unknown
 * ones) and the mapping check that reports unknown keys.
 */
import { parseAsn, parseOrigin } from '../values.js';
import { DEFAULT_MIN_PREFIX_LENGTH_V4, DEFAULT_MIN_PREFIX_LENGTH_V6, parseAllowedPrefix, parseCommunityPattern } from '../prefix-policy.js';
import { FLAP_DAMPING_DEFAULTS } from '../flap-damping.js';
import { Problems } from './problems.js';
import { suggest } from './suggest.js';
import {
  DEFAULT_MAINTENANCE_STATE_FILE, DEFAULT_REGISTRATIONS_FILE, DEFAULT_STATE_FILE, accountName, accountNames, address, boolean, communities,
  consulAddr, describe, duration, envName, folderPath, formatMs, integer, listOf, listenAddr, listenPort, oneOf, pidFile, routerName, secret,
  shutdownDrain, socketMode, type Parse,
} from './value-checks.js';
import { GOBGP_KEYS } from '../../plugins/routing/gobgp/settings.js';
import { consulName, serverName } from './consul.js';

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
    consul_namespace: { doc: 'Consul Enterprise namespace, sent as ns on every request (CONSUL_NAMESPACE wins); "" = none', default: '', parse: consulName, env: 'CONSUL_NAMESPACE' },
    consul_partition: { doc: 'Consul Enterprise admin partition, sent as partition (CONSUL_PARTITION wins); "" = none', default: '', parse: consulName, env: 'CONSUL_PARTITION' },
    // TLS to an https consul_addr (config/consul.ts): files read and checked at load; Consul's own variables win.
    consul_tls: {
      ca_file: { doc: 'PEM CA certificate(s) the Consul server\'s certificate must chain to (CONSUL_CACERT wins); "" = the system CAs', default: '', parse: pidFile, env: 'CONSUL_CACERT' },
      cert_file: { doc: 'PEM client certificate presented to Consul (CONSUL_CLIENT_CERT wins); needs key_file', default: '', parse: pidFile, env: 'CONSUL_CLIENT_CERT' },
      key_file: { doc: 'PEM key of cert_file (CONSUL_CLIENT_KEY wins)', default: '', parse: pidFile, env: 'CONSUL_CLIENT_KEY' },
      server_name: { doc: 'name the server certificate must carry, and SNI (CONSUL_TLS_SERVER_NAME wins); "" = the host of consul_addr', default: '', parse: serverName, env: 'CONSUL_TLS_SERVER_NAME' },
    },
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
    // Flap damping (flap-damping.ts): RFC 2439-like penalties; cross-key checks in config/agent.ts.
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
  // routing.gobgp is the gobgp plugin's block: its keys and rules are in src/plugins/routing/gobgp/settings.ts.
  routing: [...Object.keys(SCHEMA.routing!), 'gobgp', 'settings'],
  'routing.gobgp': Object.keys(GOBGP_KEYS),
  'agent.flap_damping': Object.keys((SCHEMA.agent as Tree).flap_damping!),
  'agent.consul_tls': Object.keys((SCHEMA.agent as Tree).consul_tls!),
};

/** Names people reach for that no edit distance finds. */
export const HINTS: Record<string, Record<string, string>> = {
  agent: { interval: 'monitor_interval', timeout: 'check_timeout', listen: 'listen_addr', iptables: 'iptables_binary', workers: 'check_workers', damping: 'flap_damping', dampening: 'flap_damping' },
  'agent.consul_tls': { ca: 'ca_file', cacert: 'ca_file', ca_cert: 'ca_file', cert: 'cert_file', client_cert: 'cert_file', key: 'key_file', client_key: 'key_file', tls_server_name: 'server_name', servername: 'server_name' },
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
  out.push(...Object.keys(GOBGP_KEYS).map((k) => `routing.gobgp.${k}`));
  out.push('bgp.peers', ...PEER_KEYS.map((k) => `bgp.peers[].${k}`));
  out.push('apps', ...APP_KEYS.map((k) => `apps[].${k}`), ...VIP_CONFIG_KEYS.map((k) => `apps[].vip_config.${k}`));
  out.push('discovery', 'discovery[].plugin', 'discovery[].name');
  return out;
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
