/**
 * tsyringe injection tokens of a config generation's container (src/core/container.ts). The long-lived parts (check
 * pools, registry, health tracker, reconciler) outlive generations and are owned by the Daemon itself.
 */
export const TOKENS = {
  Config: Symbol('vipcast.Config'),
  Logger: Symbol('vipcast.Logger'),
  Router: Symbol('vipcast.Router'),
  HostNetwork: Symbol('vipcast.HostNetwork'),
  DryRun: Symbol('vipcast.DryRun'),
} as const;
