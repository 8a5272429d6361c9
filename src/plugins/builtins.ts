/**
 * The built-in discovery and router plugins: each config load registers these in its fresh PluginRegistry before the
 * packages of `plugins:`, with origin 'built-in' (a package of the same family and name is refused). The built-in
 * monitors are MonitorRegistry's (src/core/monitor-registry.ts).
 *
 * To add a built-in: import its descriptor from its folder (src/plugins/routing/NAME, src/plugins/discovery/NAME) and
 * append it to the list. Keep descriptors cheap to import: a factory loads its heavy modules (gRPC, .proto files)
 * itself, when `create` runs.
 */
import type { DiscoveryPlugin, RouterPlugin } from '../plugin-api.js';
import gobgp from './routing/gobgp/plugin.js';
import dryRun from './routing/dry-run/index.js';
import { builtinDiscoveries } from './discovery/index.js';

export function builtinPlugins(): ReadonlyArray<RouterPlugin | DiscoveryPlugin> {
  return [
    // routers
    gobgp as RouterPlugin,
    dryRun as RouterPlugin,
    ...builtinDiscoveries(),
  ];
}
