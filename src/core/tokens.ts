/**
 * tsyringe injection tokens of a config generation's container (src/core/container.ts). The long-lived parts (check
 * pools, registry, health tracker, reconciler) outlive generations and are owned by the Daemon itself.
 */
export const TOKENS = {
  Router: Symbol('vipcast.Router'),
  HostNetwork: Symbol('vipcast.HostNetwork'),
} as const;
