/**
 * The built-in `gobgp` router as a plugin descriptor (routing.plugin: gobgp). Cheap to import: the router and its
 * gRPC client load when `create` runs. Its settings are gocast's `routing.gobgp` block (never `routing.settings`),
 * parsed by settings.ts, which the config layer calls too.
 * The managed gobgpd (managed.ts) is not created here: it is a daemon-level component started before the first
 * generation and kept across reloads (createManagedSpeaker in ../index.ts); the router only needs its address.
 */
import { PLUGIN_API_VERSION, type RouterContext, type RouterPlugin } from '../../../plugin-api.js';
import type { Logger } from '../../../core/logger.js';
import { parseGobgpSettings, type GobgpSettings } from './settings.js';

export { parseGobgpSettings, type GobgpSettings } from './settings.js';

const gobgp: RouterPlugin<GobgpSettings> = {
  kind: 'router',
  name: 'gobgp',
  version: PLUGIN_API_VERSION,
  apiVersion: `^${PLUGIN_API_VERSION}`,
  parseSettings: (raw, ctx) => parseGobgpSettings(raw, ctx),
  /** The router talks to `address` only; managed/binary/socket_dir are the managed speaker's (never restarted by a reload). */
  sameSettings: (a, b) => a.address === b.address,
  async create(ctx: RouterContext<GobgpSettings>) {
    const { GobgpRouter } = await import('./router.js');
    // The daemon's PluginLogger is a pino Logger; the router names its own component ('gobgp').
    return new GobgpRouter({ bgp: { ...ctx.bgp, nextHop: ctx.bgp.nextHop ?? 'local_ip' }, gobgp: { address: ctx.settings.address }, log: ctx.log as Logger });
  },
};

export default gobgp;
