/**
 * The built-in gobgp router's settings: gocast's `routing.gobgp` block. Its keys, defaults and rules live here only:
 * the plugin's parseSettings is parseGobgpSettings, and the config layer (src/core/config/routing.ts) calls it for the
 * block of every config and takes the keys from GOBGP_KEYS (unknown keys, documented keys). Imports value checks from
 * core/config/ directly, not the config-schema barrel, which lists these keys (no import cycle).
 */
import type { SettingsContext } from '../../../plugin-api.js';
import type { RoutingConfig } from '../../../core/config-types.js';
import { valueError } from '../../../core/errors.js';
import { ProblemList } from '../../../core/config/problems.js';
import { suggest } from '../../../core/config/suggest.js';
import { boolean, describe, hostPort, program } from '../../../core/config/value-checks.js';

export type GobgpSettings = RoutingConfig['gobgp'];

/** routing.gobgp.socket_dir's default: beside agent.state_file's default, on the /run tmpfs. */
export const DEFAULT_GOBGPD_SOCKET_DIR = '/run/vipcast/gobgpd';
/** The managed gobgpd's API socket inside routing.gobgp.socket_dir. */
export const MANAGED_SOCKET_NAME = 'gobgpd.sock';
/** routing.gobgp.address's default: gobgpd's own default API address. */
export const DEFAULT_GOBGP_ADDRESS = '127.0.0.1:50051';
/** The environment variable that overrides routing.gobgp.address (an empty one is unset). */
export const GOBGP_ADDRESS_ENV = 'VIPCAST_GOBGP_ADDRESS';

/** The keys of `routing.gobgp`, each with what it means (docs/CONFIG.md documents each). */
export const GOBGP_KEYS: Readonly<Record<'address' | 'managed' | 'binary' | 'socket_dir', string>> = Object.freeze({
  address: `a gobgpd you run yourself: its gRPC API, host:port or unix:///path (setting it, or $${GOBGP_ADDRESS_ENV} which wins, turns managed off); default ${DEFAULT_GOBGP_ADDRESS}`,
  managed: `vipcast starts gobgpd itself, bound to its life, API on a private unix socket; unset = true unless address (or $${GOBGP_ADDRESS_ENV}) is set`,
  binary: 'the gobgpd a managed speaker runs: a command in PATH or an absolute path; default gobgpd',
  socket_dir: `private directory (mode 0700) of the managed gobgpd's API socket (${MANAGED_SOCKET_NAME}); default ${DEFAULT_GOBGPD_SOCKET_DIR}`,
});

/** A gRPC target: `host:port`, `[v6]:port` or `unix:///absolute/path`. */
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

/** An absolute directory whose `gobgpd.sock` fits a unix socket address (at most 107 bytes). */
export function socketDir(value: unknown, path: string): string {
  if (typeof value !== 'string' || !value.trim().startsWith('/') || value.includes('\0')) {
    throw valueError(path, `${describe(value)} is not an absolute directory path (write "/run/vipcast/gobgpd")`);
  }
  const dir = value.trim().replace(/\/+$/, '') || '/';
  if (Buffer.byteLength(`${dir}/${MANAGED_SOCKET_NAME}`) > 107) throw valueError(path, `"${dir}" is too long for a unix socket path (${dir}/${MANAGED_SOCKET_NAME} must fit in 107 bytes)`);
  return dir;
}

const given = (m: Record<string, unknown>, k: string): boolean => m[k] !== undefined && m[k] !== null;

/**
 * `routing.gobgp` (the raw YAML mapping; absent = `{}`) into the gobgp settings. A managed gobgpd (vipcast starts it)
 * unless a gobgpd of the operator's is named by `address` or $VIPCAST_GOBGP_ADDRESS (which wins over the file, as
 * every environment override of the config); managed uses its own socket, so `managed: true` with an address is an
 * error naming both. `unmanaged` (the config's router is not gobgp: dry-run never starts gobgpd): managed is false and
 * address the one given or the default. Every problem is reported, each starting with `ctx.path` and its key
 * (`routing.gobgp.address: ...`): one as it is, several as one error listing them.
 */
export function parseGobgpSettings(raw: unknown, ctx: SettingsContext, opts: { unmanaged?: boolean } = {}): GobgpSettings {
  const at = (k: string) => `${ctx.path}.${k}`;
  if (raw === undefined || raw === null) raw = {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw valueError(ctx.path, `${describe(raw)} is not a mapping`);
  const m = raw as Record<string, unknown>;
  const errors: Error[] = [];
  const check = <T>(fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (err) {
      errors.push(err instanceof Error ? err : new Error(String(err)));
      return undefined;
    }
  };
  const known = Object.keys(GOBGP_KEYS);
  for (const k of Object.keys(m)) {
    if (known.includes(k)) continue;
    const close = suggest(k, known);
    errors.push(valueError(at(k), close.length ? `unknown key (did you mean ${close.map((c) => `"${c}"`).join(' or ')}?)` : `unknown key (known: ${known.join(', ')})`));
  }
  const envAddress = ctx.env[GOBGP_ADDRESS_ENV] || undefined;
  const address = envAddress !== undefined
    ? check(() => gobgpAddress(envAddress, `${at('address')} (from $${GOBGP_ADDRESS_ENV})`))
    : given(m, 'address') ? check(() => gobgpAddress(m.address, at('address'))) : DEFAULT_GOBGP_ADDRESS;
  const addressGiven = given(m, 'address') || envAddress !== undefined;
  const explicit = given(m, 'managed') ? check(() => boolean(m.managed, at('managed'))) : undefined;
  if (explicit === true && addressGiven) {
    const where = given(m, 'address') ? at('address') : `${at('address')} (from $${GOBGP_ADDRESS_ENV})`;
    errors.push(valueError(at('managed'), `true together with ${where}: a managed gobgpd serves its API on its own socket in ${at('socket_dir')}; remove one of them`));
  }
  const binary = given(m, 'binary') ? check(() => program(m.binary, at('binary'))) : 'gobgpd';
  const dir = given(m, 'socket_dir') ? check(() => socketDir(m.socket_dir, at('socket_dir'))) : DEFAULT_GOBGPD_SOCKET_DIR;
  if (errors.length === 1) throw errors[0]!;
  if (errors.length > 1) throw new ProblemList(errors.map((e) => e.message));
  const managed = !opts.unmanaged && (explicit ?? !addressGiven);
  return Object.freeze({ address: managed ? `unix://${dir!}/${MANAGED_SOCKET_NAME}` : address!, managed, binary: binary!, socketDir: dir! });
}

/**
 * Warnings for `raw` (the block `settings` were parsed from, with routing.plugin gobgp): keys only a managed gobgpd
 * uses, given while vipcast does not manage gobgpd, are ignored. Each names its key under `path`.
 */
export function gobgpSettingsWarnings(raw: Record<string, unknown>, settings: GobgpSettings, path: string): string[] {
  if (settings.managed) return [];
  const why = given(raw, 'managed') && raw.managed === false ? `${path}.managed: false` : `${path}.address is set`;
  return ['binary', 'socket_dir'].filter((k) => given(raw, k)).map((k) => `${path}.${k}: ignored: vipcast does not manage gobgpd (${why})`);
}
