/**
 * The config file: read it, parse the YAML, validate every key and return the typed `VipcastConfig`, or throw one
 * `VIPCAST_ERR_CONFIG` error that lists every problem, each starting with its key path (invariant 4; reload relies on
 * it to keep the old config on any error, invariant 7). Reference: docs/CONFIG.md.
 *
 * convict holds the schema of the scalar sections (agent, bgp scalars, routing): defaults, docs, env overrides and the
 * per-key checks. The lists (apps, bgp.peers) are checked by hand with the value parsers: convict handles arrays of
 * objects poorly. Unknown keys are found by hand everywhere, before convict sees anything, so each gets a suggestion.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import convict from 'convict';
import YAML from 'yaml';
import type { AppSpec, Community, ConsulSettings, MonitorSpec, NatRule, PeerSpec, Prefix } from '../plugin-api.js';
import type { AgentConfig, BgpConfig, RoutingConfig, VipcastConfig } from './config-types.js';
import { VipcastError, valueError } from './errors.js';
import { MonitorRegistry } from './monitor-registry.js';
import { loadMonitorPlugin } from './plugin-loader.js';
import { parseAddress, parseAppName, parseAsn, parseCommunity, parseDuration, parseNat, parseOrigin, parsePort, parsePrefix } from './values.js';

export interface ConfigOptions {
  /** Monitor plugins that `apps[].monitors` may name (default: the built-in ones). */
  readonly monitors?: MonitorRegistry;
  /** Environment for CONSUL_TOKEN, VIPCAST_GOBGP_ADDRESS and `md5_env_var` (default: process.env). */
  readonly env?: NodeJS.ProcessEnv;
  /** Force `routing.plugin` (the CLI's --dry-run) before the checks that depend on it run. */
  readonly routingPlugin?: RoutingConfig['plugin'];
}

/** Longest duration a Node timer can hold (~24.8 days); a longer one would fire at once. */
const MAX_DURATION_MS = 2_147_483_647;
/** Linux TCP_MD5SIG_MAXKEYLEN. */
const MAX_MD5_LENGTH = 80;
/** Default check timeout cap when agent.check_timeout is unset: min(monitor_interval, this). */
const DEFAULT_TIMEOUT_CAP_MS = 5000;
/** local_as used with routing.plugin dry-run when the file sets none (first private-use ASN). */
const DRY_RUN_LOCAL_AS = 64512;

// ---------------------------------------------------------------------------------------------------------------------
// Problems

/** Several problems at once (a list with more than one bad item). */
class ProblemList extends Error {
  constructor(readonly list: string[]) {
    super(list.join('\n'));
  }
}

function messagesOf(err: unknown, fallbackPath: string): string[] {
  if (err instanceof ProblemList) return err.list;
  if (err instanceof VipcastError) return [err.message];
  // A third-party monitor plugin may throw a plain error without the key path.
  const text = err instanceof Error ? err.message : String(err);
  return [text.startsWith(fallbackPath) ? text : `${fallbackPath}: ${text}`];
}

class Problems {
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

type Parse = (value: unknown, path: string) => unknown;

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return JSON.stringify(value);
}

function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** A Go duration string with a lower bound. Bare numbers are refused: gocast read them as nanoseconds. */
function duration(minMs: number, hint = ''): (value: unknown, path: string) => number {
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

function integer(min: number, max: number): (value: unknown, path: string) => number {
  return (value, path) => {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw valueError(path, `${describe(value)} is not an integer in ${min}..${max}`);
    }
    return value;
  };
}

function boolean(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') throw valueError(path, `${describe(value)} is not true or false`);
  return value;
}

function oneOf<T extends string>(values: readonly T[]): (value: unknown, path: string) => T {
  return (value, path) => {
    if (typeof value === 'string' && (values as readonly string[]).includes(value)) return value as T;
    const close = typeof value === 'string' ? suggest(value, values) : [];
    throw valueError(path, `${describe(value)} is not one of ${values.join(', ')}${close.length ? ` (did you mean "${close[0]}"?)` : ''}`);
  };
}

function address(value: unknown, path: string): string {
  return parseAddress(value, path).address;
}

/** A list whose items are parsed one by one; every bad item is reported. */
function listOf<T>(item: (value: unknown, path: string) => T, example: string): (value: unknown, path: string) => T[] {
  return (value, path) => {
    if (!Array.isArray(value)) throw valueError(path, `${describe(value)} is not a list (write ${example})`);
    const problems = new Problems();
    const out = value.map((v, i) => problems.try(`${path}[${i}]`, () => item(v, `${path}[${i}]`)));
    if (problems.list.length) throw new ProblemList(problems.list);
    return out as T[];
  };
}

const communities = listOf(parseCommunity, '["65000:100"]');

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** `host:port`, `[v6]:port` or (when `emptyHost`) `:port`; host is an IP address or a DNS name. */
function hostPort(text: string, path: string, emptyHost: boolean): void {
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

function isAddress(text: string): boolean {
  try {
    parseAddress(text, '');
    return true;
  } catch {
    return false;
  }
}

function listenAddr(value: unknown, path: string): string {
  if (typeof value !== 'string') throw valueError(path, `${describe(value)} is not a listen address (write ":8080" or "127.0.0.1:8080")`);
  const text = value.trim();
  if (text !== '') hostPort(text, path, true);
  return text;
}

function gobgpAddress(value: unknown, path: string): string {
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

/** gocast appended `/catalog/...` to consul_addr, so it had to end in /v1; a missing /v1 is added with a warning. */
function consulAddr(value: unknown, path: string): string {
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

function secret(value: unknown, path: string): string {
  // Never echo the value: it is a secret even when malformed.
  if (typeof value !== 'string') throw valueError(path, `is not a string (quote it)`);
  if (/[\u0000-\u001f\u007f]/.test(value)) throw valueError(path, 'contains control characters');
  return value;
}

function pidFile(value: unknown, path: string): string {
  if (typeof value !== 'string' || value.includes('\0') || value.endsWith('/')) {
    throw valueError(path, `${describe(value)} is not a file path`);
  }
  return value.trim();
}

function listenPort(value: unknown, path: string): number {
  if (value === -1) return -1;
  try {
    return parsePort(value, path);
  } catch {
    throw valueError(path, `${describe(value)} is not a port (1..65535, or -1 to only connect out)`);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Schema of the scalar sections (convict)

interface Leaf {
  readonly doc: string;
  /** Default in config-file form; undefined = unset. */
  readonly default: unknown;
  readonly parse: Parse;
  readonly env?: string;
  readonly sensitive?: boolean;
}
interface Tree {
  readonly [key: string]: Leaf | Tree;
}

const isLeaf = (node: Leaf | Tree): node is Leaf => typeof (node as Leaf).parse === 'function';

const SCHEMA: Tree = {
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
    pid_file: { doc: 'file `vipcast run` writes its pid to; "" = none', default: '', parse: pidFile },
    state_file: { doc: 'where vipcast records the loopback addresses it added (crash recovery)', default: '/run/vipcast/host-state.json', parse: pidFile },
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
    plugin: { doc: 'routing backend', default: 'gobgp', parse: oneOf(['gobgp', 'dry-run'] as const) },
    gobgp: {
      address: { doc: "gobgpd's gRPC API: host:port or unix:///path", default: '127.0.0.1:50051', parse: gobgpAddress, env: 'VIPCAST_GOBGP_ADDRESS' },
    },
  },
};

/** Keys of the lists, checked by hand (docs in docs/CONFIG.md). */
const PEER_KEYS = ['peer_ip', 'peer_as', 'remote_as', 'multi_hop', 'md5_password', 'md5_env_var', 'communities'];
const APP_KEYS = ['name', 'vip', 'vip_config', 'monitors', 'nats', 'rise', 'fall', 'check_timeout', 'monitor_interval'];
const VIP_CONFIG_KEYS = ['bgp_communities'];

/** Known keys of every mapping, by section (`apps[]` = each item of apps). */
const SECTIONS: Record<string, readonly string[]> = {
  '': ['agent', 'bgp', 'apps', 'routing', 'plugins'],
  agent: Object.keys(SCHEMA.agent!),
  bgp: [...Object.keys(SCHEMA.bgp!), 'peers'],
  'bgp.peers[]': PEER_KEYS,
  'apps[]': APP_KEYS,
  'apps[].vip_config': VIP_CONFIG_KEYS,
  routing: Object.keys(SCHEMA.routing!),
  'routing.gobgp': Object.keys((SCHEMA.routing as Tree).gobgp!),
};

/** Names people reach for that no edit distance finds. */
const HINTS: Record<string, Record<string, string>> = {
  agent: { interval: 'monitor_interval', timeout: 'check_timeout', listen: 'listen_addr', iptables: 'iptables_binary', workers: 'check_workers' },
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
  return out;
}

// ---------------------------------------------------------------------------------------------------------------------
// Unknown keys and suggestions

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
function distance(a: string, b: string): number {
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

const squash = (s: string): string => s.toLowerCase().replace(/[-_\s]/g, '');

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

function unknownKeyMessage(key: string, section: string): string {
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
function mapping(value: unknown, path: string, section: string, problems: Problems): Record<string, unknown> | undefined {
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

const LEAF_FORMAT = 'vipcast-config-leaf';
// A named format (no coercion: convict would parseFloat a string for a key with a number default, and read "yes" as
// true); each leaf carries its own check.
convict.addFormat({ name: LEAF_FORMAT, validate: (value: unknown, schema: convict.SchemaObj) => schema.check(value) });

interface Scalars {
  /** Parsed values by key path ('agent.rise'); absent = unset with no default. */
  readonly values: Map<string, unknown>;
}

function loadScalars(sections: Record<string, Record<string, unknown>>, env: NodeJS.ProcessEnv, problems: Problems): Scalars {
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

// ---------------------------------------------------------------------------------------------------------------------
// Lists checked by hand

interface Parsed<T> {
  readonly value: T;
  readonly path: string;
}

/** Parse one peer; its address is returned even when other keys are bad, so duplicates are still found. */
function parsePeer(raw: Record<string, unknown>, path: string, env: NodeJS.ProcessEnv, problems: Problems): { peer?: PeerSpec; address?: string } {
  const start = problems.list.length;
  const addr = raw.peer_ip === undefined ? undefined : problems.try(`${path}.peer_ip`, () => address(raw.peer_ip, `${path}.peer_ip`));
  const asn = peerAsn(raw, path, problems, `${path}: missing peer_as (every peer needs its AS; gocast also wrote remote_as)`);
  const multiHop = raw.multi_hop === undefined ? undefined : problems.try(`${path}.multi_hop`, () => boolean(raw.multi_hop, `${path}.multi_hop`));
  const comms = raw.communities === undefined ? [] : problems.try(`${path}.communities`, () => communities(raw.communities, `${path}.communities`));
  let md5Password: string | undefined;
  let md5EnvVar: string | undefined;
  if (raw.md5_password !== undefined && raw.md5_env_var !== undefined) {
    problems.add(path, 'set md5_password or md5_env_var, not both');
  } else if (raw.md5_password !== undefined) {
    md5Password = problems.try(`${path}.md5_password`, () => md5(raw.md5_password, `${path}.md5_password`, ''));
  } else if (raw.md5_env_var !== undefined) {
    const name = raw.md5_env_var;
    if (typeof name !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      problems.add(`${path}.md5_env_var`, `${describe(name)} is not an environment variable name`);
    } else if (env[name] === undefined || env[name] === '') {
      problems.add(`${path}.md5_env_var`, `environment variable ${name} is ${env[name] === undefined ? 'not set' : 'empty'}`);
    } else {
      md5EnvVar = name;
      md5Password = problems.try(`${path}.md5_env_var`, () => md5(env[name], `${path}.md5_env_var`, ` (the value of ${name})`));
    }
  }
  if (problems.list.length > start || asn === undefined) return { address: addr };
  const peer: PeerSpec = Object.freeze({
    ...(addr === undefined ? {} : { address: addr }),
    asn,
    ...(multiHop === undefined ? {} : { multiHop }),
    ...(md5Password === undefined ? {} : { md5Password }),
    ...(md5EnvVar === undefined ? {} : { md5EnvVar }),
    communities: Object.freeze(comms ?? []),
  });
  return { peer, address: addr };
}

function md5(value: unknown, path: string, what: string): string {
  // The value is a secret: no message below may include it.
  if (typeof value !== 'string') throw valueError(path, `is not a string${what} (quote it)`);
  if (value === '') throw valueError(path, `is empty${what}`);
  if (value.length > MAX_MD5_LENGTH) throw valueError(path, `is longer than ${MAX_MD5_LENGTH} characters${what} (the kernel's TCP MD5 limit)`);
  if (/[\u0000-\u001f\u007f]/.test(value)) throw valueError(path, `contains control characters${what}`);
  return value;
}

/** peer_as, or gocast's alias remote_as; both set and different is an error. */
function peerAsn(raw: Record<string, unknown>, path: string, problems: Problems, missing: string | undefined): number | undefined {
  const a = raw.peer_as === undefined ? undefined : problems.try(`${path}.peer_as`, () => parseAsn(raw.peer_as, `${path}.peer_as`));
  const b = raw.remote_as === undefined ? undefined : problems.try(`${path}.remote_as`, () => parseAsn(raw.remote_as, `${path}.remote_as`));
  if (a !== undefined && b !== undefined && a !== b) {
    problems.add(`${path}.remote_as`, `${b} differs from ${path}.peer_as ${a} (remote_as is an alias of peer_as: set one)`);
    return undefined;
  }
  if (a === undefined && b === undefined && raw.peer_as === undefined && raw.remote_as === undefined && missing) problems.list.push(missing);
  return a ?? b;
}

interface AppDefaults {
  readonly rise: number;
  readonly fall: number;
  readonly intervalMs: number;
  readonly timeoutMs: number;
}

interface AppContext {
  readonly defaults: AppDefaults;
  readonly monitors: MonitorRegistry;
  readonly baseDir: string;
  readonly problems: Problems;
  /** For the `consul` monitor. */
  readonly consul: ConsulSettings;
}

/** Parse one app. `vips` is returned even when other keys are bad, so VIP clashes between apps are still found. */
function parseApp(raw: Record<string, unknown>, path: string, ctx: AppContext): { app?: AppSpec; vips: Parsed<Prefix>[] } {
  const { problems, defaults } = ctx;
  const start = problems.list.length;
  let name: string | undefined;
  if (raw.name === undefined) problems.add(path, 'missing name');
  else name = problems.try(`${path}.name`, () => parseAppName(raw.name, `${path}.name`));

  const vips: Parsed<Prefix>[] = [];
  if (raw.vip === undefined) problems.add(path, 'missing vip (a prefix such as 198.18.0.10/32, or a list of them)');
  else if (Array.isArray(raw.vip) && raw.vip.length === 0) problems.add(`${path}.vip`, 'is an empty list');
  else {
    const items = Array.isArray(raw.vip) ? raw.vip.map((v, i) => [v, `${path}.vip[${i}]`] as const) : [[raw.vip, `${path}.vip`] as const];
    for (const [v, p] of items) {
      const prefix = problems.try(p, () => parsePrefix(v, p));
      if (!prefix) continue;
      if (prefix.length === 0) problems.add(p, `"${prefix.text}" would announce a default route`);
      else if (vips.some((x) => x.value.text === prefix.text)) problems.add(p, `${prefix.text} is listed twice`);
      else vips.push({ value: prefix, path: p });
    }
  }

  let comms: Community[] | undefined = [];
  const vipConfig = mapping(raw.vip_config, `${path}.vip_config`, 'apps[].vip_config', problems);
  if (vipConfig?.bgp_communities !== undefined) {
    const p = `${path}.vip_config.bgp_communities`;
    comms = problems.try(p, () => communities(vipConfig.bgp_communities, p));
  }

  const monitors: MonitorSpec[] = [];
  if (raw.monitors !== undefined) {
    if (!Array.isArray(raw.monitors)) problems.add(`${path}.monitors`, `${describe(raw.monitors)} is not a list (write ["port:tcp:8080"])`);
    else {
      raw.monitors.forEach((m, j) => {
        const p = `${path}.monitors[${j}]`;
        const spec = problems.try(p, () => ctx.monitors.parse(m, { path: p, baseDir: ctx.baseDir, trusted: true, ...(name !== undefined ? { app: name } : {}), consul: ctx.consul }));
        if (spec && monitors.some((x) => x.text === spec.text)) problems.add(p, `"${spec.text}" is listed twice`);
        else if (spec) monitors.push(spec);
      });
    }
  }

  const nats: NatRule[] = [];
  if (raw.nats !== undefined) {
    if (!Array.isArray(raw.nats)) problems.add(`${path}.nats`, `${describe(raw.nats)} is not a list (write ["tcp:80:8080"])`);
    else {
      raw.nats.forEach((n, j) => {
        const p = `${path}.nats[${j}]`;
        const rule = problems.try(p, () => parseNat(n, p));
        const clash = rule && nats.find((x) => x.protocol === rule.protocol && x.listenPort === rule.listenPort);
        if (clash) problems.add(p, `${rule.protocol} port ${rule.listenPort} is already forwarded by "${clash.text}"`);
        else if (rule) nats.push(rule);
      });
    }
  }

  const rise = raw.rise === undefined ? defaults.rise : problems.try(`${path}.rise`, () => integer(1, 100)(raw.rise, `${path}.rise`));
  const fall = raw.fall === undefined ? defaults.fall : problems.try(`${path}.fall`, () => integer(1, 100)(raw.fall, `${path}.fall`));
  const intervalMs =
    raw.monitor_interval === undefined ? defaults.intervalMs : problems.try(`${path}.monitor_interval`, () => duration(50)(raw.monitor_interval, `${path}.monitor_interval`));
  let timeoutMs: number | undefined;
  if (raw.check_timeout !== undefined) {
    timeoutMs = problems.try(`${path}.check_timeout`, () => duration(10)(raw.check_timeout, `${path}.check_timeout`));
    if (timeoutMs !== undefined && intervalMs !== undefined && timeoutMs > intervalMs) {
      problems.add(`${path}.check_timeout`, `${formatMs(timeoutMs)} is longer than the app's monitor_interval ${formatMs(intervalMs)}`);
    }
  } else if (intervalMs !== undefined) {
    // Inherited timeouts shrink to a shorter per-app interval rather than fail.
    timeoutMs = Math.min(defaults.timeoutMs, intervalMs);
  }

  if (problems.list.length > start) return { vips };
  const app: AppSpec = Object.freeze({
    name: name!,
    source: 'config',
    vips: Object.freeze(vips.map((v) => v.value)),
    communities: Object.freeze(comms!),
    monitors: Object.freeze(monitors),
    nats: Object.freeze(nats),
    rise: rise!,
    fall: fall!,
    intervalMs: intervalMs!,
    timeoutMs: timeoutMs!,
  });
  return { app, vips };
}

// ---------------------------------------------------------------------------------------------------------------------
// Entry points

/** Read and validate a config file. Throws VIPCAST_ERR_CONFIG_READ (unreadable, bad YAML) or VIPCAST_ERR_CONFIG. */
export async function loadConfig(file: string, opts: ConfigOptions = {}): Promise<VipcastConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new VipcastError('VIPCAST_ERR_CONFIG_READ', `cannot read config file ${file}${code ? ` (${code})` : ''}: ${(err as Error).message}`, { cause: err });
  }
  const root = parseYaml(text, file);
  // Third-party monitor plugins load before the apps are checked, so their monitor types are known. A fresh
  // registry per load: a reload sees plugins added to or removed from the file.
  const names = pluginNames(root);
  if (names.length === 0) return buildConfig(root, file, opts);
  const baseDir = file ? path.dirname(path.resolve(file)) : process.cwd();
  const registry = new MonitorRegistry();
  const details: string[] = [];
  for (const [i, name] of names.entries()) {
    try {
      registry.add(await loadMonitorPlugin(name, baseDir));
    } catch (err) {
      details.push(`plugins[${i}]: ${(err as Error).message}`);
    }
  }
  let config: VipcastConfig | undefined;
  try {
    config = buildConfig(root, file, { ...opts, monitors: registry });
  } catch (err) {
    if (!(err instanceof VipcastError && err.code === 'VIPCAST_ERR_CONFIG')) throw err;
    details.push(...err.details);
  }
  if (details.length > 0 || !config) {
    throw new VipcastError('VIPCAST_ERR_CONFIG', `${details.length} problem${details.length === 1 ? '' : 's'} in ${file || '(config)'}`, { details });
  }
  return config;
}

/** The `plugins:` list (package names); shape errors are reported by buildConfig. */
function pluginNames(root: unknown): string[] {
  if (!root || typeof root !== 'object') return [];
  const list = (root as Record<string, unknown>).plugins;
  return Array.isArray(list) ? list.filter((n): n is string => typeof n === 'string' && PLUGIN_NAME.test(n)) : [];
}

/** npm package names, scoped or not. */
const PLUGIN_NAME = /^(@[a-z0-9][a-z0-9._-]*\/)?[a-z0-9][a-z0-9._-]*$/;

/** Validate config text; `file` names it in messages and anchors relative paths ('' = the current folder). */
export function parseConfigText(text: string, file: string, opts: ConfigOptions = {}): VipcastConfig {
  const root = parseYaml(text, file);
  return buildConfig(root, file, opts);
}

function parseYaml(text: string, file: string): unknown {
  const lineCounter = new YAML.LineCounter();
  // prettyErrors off: its snippet of the offending line could show a secret.
  const doc = YAML.parseDocument(text, { lineCounter, prettyErrors: false, merge: true, uniqueKeys: true, strict: true });
  const bad = [...doc.errors, ...doc.warnings];
  if (bad.length) {
    const details = bad.map((e) => {
      const at = lineCounter.linePos(e.pos[0]);
      return `line ${at.line}, column ${at.col}: ${e.message}`;
    });
    const more = details.length > 1 ? ` (and ${details.length - 1} more)` : '';
    throw new VipcastError('VIPCAST_ERR_CONFIG_READ', `${file || '(config)'} is not valid YAML: ${details[0]}${more}`, { details });
  }
  try {
    return doc.toJS({ maxAliasCount: 1000 });
  } catch (err) {
    throw new VipcastError('VIPCAST_ERR_CONFIG_READ', `${file || '(config)'} is not valid YAML: ${(err as Error).message}`, { cause: err });
  }
}

type Get = <T>(key: string) => T;

/** The agent's Consul settings: consul_addr / consul_token (CONSUL_TOKEN already applied) and CONSUL_NODE / CONSUL_STALE. */
export function consulSettings(agent: Pick<AgentConfig, 'consulAddr' | 'consulToken'>, env: NodeJS.ProcessEnv): ConsulSettings {
  return Object.freeze({
    addr: agent.consulAddr ?? '',
    token: agent.consulToken ?? '',
    node: env.CONSUL_NODE ?? '',
    stale: (env.CONSUL_STALE ?? '').toLowerCase() === 'true',
  });
}

function buildConfig(root: unknown, file: string, opts: ConfigOptions): VipcastConfig {
  const problems = new Problems();
  const env = opts.env ?? process.env;
  const absFile = file ? path.resolve(file) : '';
  const baseDir = absFile ? path.dirname(absFile) : process.cwd();

  const top = mapping(root, '', '', problems) ?? {};
  const sections: Record<string, Record<string, unknown>> = {};
  for (const name of ['agent', 'bgp', 'routing']) sections[name] = mapping(top[name], name, name, problems) ?? {};
  if (opts.routingPlugin) sections.routing = { ...sections.routing, plugin: opts.routingPlugin };
  const { values } = loadScalars(sections, env, problems);
  const get: Get = <T>(key: string) => values.get(key) as T;

  const agent = buildAgent(get, baseDir, problems);
  const routing: RoutingConfig = Object.freeze({ plugin: get<RoutingConfig['plugin']>('routing.plugin'), gobgp: Object.freeze({ address: get<string>('routing.gobgp.address') }) });
  const bgp = buildBgp(get, sections.bgp!, routing.plugin, env, problems);
  const monitors = opts.monitors ?? new MonitorRegistry();
  const plugins = buildPlugins(top.plugins, problems);
  const apps = buildApps(top.apps, agent, { monitors, baseDir, problems, consul: consulSettings(agent, env) });

  if (problems.list.length) {
    const n = problems.list.length;
    throw new VipcastError('VIPCAST_ERR_CONFIG', `${n} problem${n === 1 ? '' : 's'} in ${file || '(config)'}`, { details: problems.list });
  }
  return Object.freeze({ file: absFile, agent, bgp, routing, apps, plugins, monitors, warnings: Object.freeze(problems.warnings) });
}

function buildPlugins(value: unknown, problems: Problems): readonly string[] {
  if (value === undefined || value === null) return Object.freeze([]);
  if (!Array.isArray(value)) {
    problems.add('plugins', `${describe(value)} is not a list of npm package names`);
    return Object.freeze([]);
  }
  value.forEach((v, i) => {
    if (typeof v !== 'string' || !PLUGIN_NAME.test(v)) problems.add(`plugins[${i}]`, `${describe(v)} is not an npm package name (e.g. vipcast-monitor-redis or @acme/vipcast-monitor-x)`);
  });
  return Object.freeze(value.filter((v): v is string => typeof v === 'string'));
}

function buildAgent(get: Get, baseDir: string, problems: Problems): AgentConfig {
  const monitorIntervalMs = get<number>('agent.monitor_interval');
  const explicitTimeout = get<number | undefined>('agent.check_timeout');
  if (explicitTimeout !== undefined && monitorIntervalMs !== undefined && explicitTimeout > monitorIntervalMs) {
    problems.add('agent.check_timeout', `${formatMs(explicitTimeout)} is longer than agent.monitor_interval ${formatMs(monitorIntervalMs)}`);
  }
  const consulAddrText = get<string | undefined>('agent.consul_addr') ?? '';
  let consulAddr = consulAddrText;
  if (consulAddr && !consulAddr.endsWith('/v1')) {
    consulAddr += '/v1';
    problems.warnings.push(`agent.consul_addr: "${consulAddrText}" has no /v1; using "${consulAddr}"`);
  }
  const pid = get<string | undefined>('agent.pid_file') ?? '';
  const state = get<string | undefined>('agent.state_file') ?? '';
  return Object.freeze({
    listenAddr: get<string>('agent.listen_addr'),
    monitorIntervalMs,
    cleanupTimerMs: get<number>('agent.cleanup_timer'),
    consulAddr,
    consulQueryIntervalMs: get<number>('agent.consul_query_interval'),
    consulToken: get<string>('agent.consul_token'),
    rise: get<number>('agent.rise'),
    fall: get<number>('agent.fall'),
    checkTimeoutMs: explicitTimeout ?? Math.min(monitorIntervalMs ?? DEFAULT_TIMEOUT_CAP_MS, DEFAULT_TIMEOUT_CAP_MS),
    iptablesBinary: get<string>('agent.iptables_binary'),
    removeVipOnWithdraw: get<boolean>('agent.remove_vip_on_withdraw'),
    checkWorkers: get<number>('agent.check_workers'),
    pidFile: pid === '' ? '' : path.resolve(baseDir, pid),
    stateFile: state === '' ? '/run/vipcast/host-state.json' : path.resolve(baseDir, state),
  });
}

/** bgp: scalars from convict, then the legacy single peer (first) and peers[] by hand. */
function buildBgp(get: Get, raw: Record<string, unknown>, plugin: RoutingConfig['plugin'], env: NodeJS.ProcessEnv, problems: Problems): BgpConfig {
  const peers: PeerSpec[] = [];
  // Where each peer address ('' = default gateway) was first seen, to report duplicates.
  const seen = new Map<string, string>();
  const note = (addr: string | undefined, p: string): void => {
    const first = seen.get(addr ?? '');
    if (first) problems.add(p, `${addr ?? 'a second default-gateway peer (peer_ip unset)'} is already configured at ${first}`);
    else seen.set(addr ?? '', p);
  };
  const legacy = raw.peer_ip !== undefined || raw.peer_as !== undefined || raw.remote_as !== undefined;
  if (legacy) {
    const asn = peerAsn(raw, 'bgp', problems, 'bgp.peer_as: missing (bgp.peer_ip is set, so its peer needs an AS; gocast also wrote remote_as)');
    const addr = get<string | undefined>('bgp.peer_ip');
    if (raw.peer_ip === undefined || addr !== undefined) note(addr, addr === undefined ? 'bgp.peer_as' : 'bgp.peer_ip');
    if (asn !== undefined && (raw.peer_ip === undefined || addr !== undefined)) {
      peers.push(Object.freeze({ ...(addr === undefined ? {} : { address: addr }), asn, communities: Object.freeze([]) }));
    }
  }
  if (raw.peers !== undefined && !Array.isArray(raw.peers)) problems.add('bgp.peers', `${describe(raw.peers)} is not a list of peers`);
  const listed: unknown[] = Array.isArray(raw.peers) ? raw.peers : [];
  listed.forEach((item, i) => {
    const p = `bgp.peers[${i}]`;
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
      problems.add(p, `${describe(item)} is not a peer (write "- peer_ip: 198.18.0.1" and "  peer_as: 65000")`);
      return;
    }
    const fields = mapping(item, p, 'bgp.peers[]', problems) ?? {};
    const { peer, address: addr } = parsePeer(fields, p, env, problems);
    if (addr !== undefined || fields.peer_ip === undefined) note(addr, fields.peer_ip === undefined ? p : `${p}.peer_ip`);
    if (peer) peers.push(peer);
  });

  let localAs = get<number | undefined>('bgp.local_as');
  if (plugin === 'gobgp') {
    if (raw.local_as === undefined) problems.add('bgp.local_as', 'missing (required with routing.plugin gobgp)');
    if (!legacy && listed.length === 0) {
      problems.add('bgp', 'no BGP peer: set bgp.peer_as (the peer is the default gateway), bgp.peer_ip with bgp.peer_as, or bgp.peers[] (only routing.plugin dry-run runs without peers)');
    }
  } else if (raw.local_as === undefined) {
    localAs = DRY_RUN_LOCAL_AS;
  }
  const localIp = get<string | undefined>('bgp.local_ip');
  return Object.freeze({
    localAs: localAs!,
    ...(localIp === undefined ? {} : { localIp }),
    communities: Object.freeze(get<Community[] | undefined>('bgp.communities') ?? []),
    origin: get<BgpConfig['origin']>('bgp.origin'),
    listenPort: get<number>('bgp.listen_port'),
    nextHop: get<BgpConfig['nextHop']>('bgp.next_hop'),
    peers: Object.freeze(peers),
  });
}

function buildApps(value: unknown, agent: AgentConfig, ctx: Omit<AppContext, 'defaults'>): readonly AppSpec[] {
  const { problems } = ctx;
  const apps: AppSpec[] = [];
  if (value === undefined) return Object.freeze(apps);
  if (!Array.isArray(value)) {
    problems.add('apps', `${describe(value)} is not a list of apps (write "- name: web")`);
    return Object.freeze(apps);
  }
  // With a bad agent value the file fails anyway; the fallbacks only let the apps be checked too.
  const defaults: AppDefaults = {
    rise: agent.rise ?? 1,
    fall: agent.fall ?? 1,
    intervalMs: agent.monitorIntervalMs ?? 10_000,
    timeoutMs: agent.checkTimeoutMs,
  };
  const names = new Map<string, number>();
  const vipOwners = new Map<string, { app: string; path: string }>();
  value.forEach((item, i) => {
    const p = `apps[${i}]`;
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
      problems.add(p, `${describe(item)} is not an app (write "- name: web" and "  vip: 198.18.0.10/32")`);
      return;
    }
    const raw = mapping(item, p, 'apps[]', problems) ?? {};
    const parsed = parseApp(raw, p, { ...ctx, defaults });
    // Clashes between apps are checked even when an app has other problems, so one run shows them all.
    if (typeof raw.name === 'string') {
      const first = names.get(raw.name);
      if (first !== undefined) problems.add(`${p}.name`, `"${raw.name}" is already the name of apps[${first}]`);
      else names.set(raw.name, i);
    }
    for (const { value: vip, path: vipPath } of parsed.vips) {
      const owner = vipOwners.get(vip.text);
      if (owner) problems.add(vipPath, `${vip.text} is already the VIP of ${owner.app} (${owner.path})`);
      else vipOwners.set(vip.text, { app: typeof raw.name === 'string' ? `app "${raw.name}"` : p, path: vipPath });
    }
    if (parsed.app) apps.push(parsed.app);
  });
  return Object.freeze(apps);
}
