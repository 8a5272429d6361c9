/** tsyringe injection tokens: one symbol per component. Container calls stay inside src/core. */
export const TOKENS = {
  Config: Symbol('vipcast.Config'),
  Logger: Symbol('vipcast.Logger'),
  Router: Symbol('vipcast.Router'),
  HostNetwork: Symbol('vipcast.HostNetwork'),
  CheckPool: Symbol('vipcast.CheckPool'),
  MonitorRegistry: Symbol('vipcast.MonitorRegistry'),
  AppRegistry: Symbol('vipcast.AppRegistry'),
  HealthTracker: Symbol('vipcast.HealthTracker'),
  Reconciler: Symbol('vipcast.Reconciler'),
  DryRun: Symbol('vipcast.DryRun'),
} as const;
