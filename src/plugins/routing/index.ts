/** Router plugin selection: `dry-run` (or --dry-run) or `gobgp`. The gobgp module (gRPC) loads only when used. */
import type { Router } from '../../plugin-api.js';
import type { VipcastConfig } from '../../core/config-types.js';
import type { Logger } from '../../core/logger.js';
import { DryRunRouter } from './dry-run/index.js';

export async function createRouter(config: VipcastConfig, dryRun: boolean, log: Logger): Promise<Router> {
  // Each router names its own component in the logs ('router' for dry-run, 'gobgp').
  if (dryRun) return new DryRunRouter(config.bgp, log.child({ component: 'router' }));
  const { GobgpRouter } = await import('./gobgp/index.js');
  return new GobgpRouter({ bgp: config.bgp, gobgp: config.routing.gobgp, log });
}
