/** The value checks of the scalar config keys (durations, integers, addresses, lists, paths) and their limits. */
import { valueError } from '../errors.js';
import { parseAddress, parseCommunity, parseDuration, parsePort } from '../values.js';
import { ProblemList, Problems } from './problems.js';
import { suggest } from './suggest.js';

/** Longest duration a Node timer can hold (~24.8 days); a longer one would fire at once. */
export const MAX_DURATION_MS = 2_147_483_647;
/** Linux TCP_MD5SIG_MAXKEYLEN. */
export const MAX_MD5_LENGTH = 80;
/** Default check timeout cap when agent.check_timeout is unset: min(monitor_interval, this). */
export const DEFAULT_TIMEOUT_CAP_MS = 5000;
/** local_as used with routing.plugin dry-run when the file sets none (first private-use ASN). */
export const DRY_RUN_LOCAL_AS = 64512;

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
