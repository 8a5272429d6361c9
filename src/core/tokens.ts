/**
 * tsyringe injection tokens of a config generation's container (src/core/container.ts). The long-lived parts (check
 * pools, registry, health tracker, reconciler) outlive generations and are owned by the Daemon itself.
 */
export const TOKENS = {
  /** The generation's config (VipcastConfig). */
  Config: Symbol('vipcast.Config'),
  /** The daemon's logger (pino Logger). */
  Log: Symbol('vipcast.Log'),
  /** The chosen router plugin's descriptor (RouterPlugin), looked up in the config's PluginRegistry by routing.plugin. */
  RouterPlugin: Symbol('vipcast.RouterPlugin'),
  /** What the router factory gets (RouterContext): child logger, parsed routing settings, the bgp section. */
  RouterContext: Symbol('vipcast.RouterContext'),
  /** The factory's result (Promise<Router>), created once per container: plugin factories may be async. */
  RouterCreation: Symbol('vipcast.RouterCreation'),
  /** The router, once RouterCreation has settled. */
  Router: Symbol('vipcast.Router'),
  /** The host network (HostNetwork), built by createHostNetwork from the config. */
  HostNetwork: Symbol('vipcast.HostNetwork'),
} as const;
