/**
 * The built-in `gobgp` router as a plugin descriptor (routing.plugin: gobgp). Cheap to import: the router and its
 * gRPC client load when `create` runs. Its settings are gocast's `routing.gobgp` block (never `routing.settings`).
 * The managed gobgpd (managed.ts) is not created here: it is a daemon-level component started before the first
 * generation and kept across reloads (createManagedSpeaker in ../index.ts); the router only needs its address.
 */
import { PLUGIN_API_VERSION, type RouterContext, type RouterPlugin, type SettingsContext } from '../../../plugin-api.js';
import type { RoutingConfig } from '../../../core/config-types.js';
import type { Logger } from '../../../core/logger.js';
import { boolean, describe, DEFAULT_GOBGPD_SOCKET_DIR, gobgpAddress, MANAGED_SOCKET_NAME, program, socketDir } from '../../../core/config-schema.js';
import { valueError } from '../../../core/errors.js';

export type GobgpSettings = RoutingConfig['gobgp'];

const KEYS = ['address', 'managed', 'binary', 'socket_dir'] as const;
const DEFAULT_ADDRESS = '127.0.0.1:50051';

/**
 * `routing.gobgp` (raw YAML mapping) into the gobgp settings, with the config's rules: address (or
 * $VIPCAST_GOBGP_ADDRESS) turns managed off; managed: true with an address is an error naming both. Errors start with
 * `ctx.path` and the key (`routing.gobgp.address: ...`). config.ts's schema parses the same block for the daemon (it
 * also carries the keys' docs, defaults and warnings); test/router-plugins.test.ts checks the two agree.
 */
export function parseGobgpSettings(raw: unknown, ctx: SettingsContext): GobgpSettings {
  const at = (k: string) => `${ctx.path}.${k}`;
  if (raw === undefined || raw === null) raw = {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw valueError(ctx.path, `${describe(raw)} is not a mapping`);
  const m = raw as Record<string, unknown>;
  for (const k of Object.keys(m)) if (!(KEYS as readonly string[]).includes(k)) throw valueError(at(k), `unknown key (known: ${KEYS.join(', ')})`);
  const given = (k: string) => m[k] !== undefined && m[k] !== null;
  const envAddress = ctx.env.VIPCAST_GOBGP_ADDRESS;
  const address = given('address') ? gobgpAddress(m.address, at('address')) : envAddress ? gobgpAddress(envAddress, at('address')) : DEFAULT_ADDRESS;
  const addressGiven = given('address') || Boolean(envAddress);
  const explicit = given('managed') ? boolean(m.managed, at('managed')) : undefined;
  if (explicit === true && addressGiven) {
    throw valueError(at('managed'), `true together with ${given('address') ? at('address') : `${at('address')} (from $VIPCAST_GOBGP_ADDRESS)`}: a managed gobgpd serves its API on its own socket in ${at('socket_dir')}; remove one of them`);
  }
  const managed = explicit ?? !addressGiven;
  const dir = given('socket_dir') ? socketDir(m.socket_dir, at('socket_dir')) : DEFAULT_GOBGPD_SOCKET_DIR;
  const binary = given('binary') ? program(m.binary, at('binary')) : 'gobgpd';
  return Object.freeze({ address: managed ? `unix://${dir}/${MANAGED_SOCKET_NAME}` : address, managed, binary, socketDir: dir });
}

const gobgp: RouterPlugin<GobgpSettings> = {
  kind: 'router',
  name: 'gobgp',
  version: PLUGIN_API_VERSION,
  apiVersion: `^${PLUGIN_API_VERSION}`,
  parseSettings: parseGobgpSettings,
  /** The router talks to `address` only; managed/binary/socket_dir are the managed speaker's (never restarted by a reload). */
  sameSettings: (a, b) => a.address === b.address,
  async create(ctx: RouterContext<GobgpSettings>) {
    const { GobgpRouter } = await import('./router.js');
    // The daemon's PluginLogger is a pino Logger; the router names its own component ('gobgp').
    return new GobgpRouter({ bgp: { ...ctx.bgp, nextHop: ctx.bgp.nextHop ?? 'local_ip' }, gobgp: { address: ctx.settings.address }, log: ctx.log as Logger });
  },
};

export default gobgp;
