/** Prometheus metrics (prom-client): one registry per daemon, served at GET /metrics. */
import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();
  readonly checks = new Counter({ name: 'vipcast_checks_total', help: 'Health checks run, by monitor type and result', labelNames: ['type', 'result'] as const, registers: [this.registry] });
  readonly checkDuration = new Histogram({ name: 'vipcast_check_duration_seconds', help: 'Duration of one health check', labelNames: ['type'] as const, buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5, 10], registers: [this.registry] });
  readonly transitions = new Counter({ name: 'vipcast_app_transitions_total', help: 'App health state changes', labelNames: ['state'] as const, registers: [this.registry] });
  readonly routeUpdates = new Counter({ name: 'vipcast_route_updates_total', help: 'Announces and withdraws sent to the router', labelNames: ['action'] as const, registers: [this.registry] });
  readonly decisionLatency = new Histogram({ name: 'vipcast_decision_latency_seconds', help: 'From the start of the deciding check round to the route change at the router', labelNames: ['action'] as const, buckets: [0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5], registers: [this.registry] });
  readonly appsUp = new Gauge({ name: 'vipcast_apps', help: 'Apps by health state', labelNames: ['state'] as const, registers: [this.registry] });
  readonly routesAnnounced = new Gauge({ name: 'vipcast_routes_announced', help: 'Routes vipcast has in the speaker', registers: [this.registry] });
  readonly reconcileErrors = new Counter({ name: 'vipcast_reconcile_errors_total', help: 'Failed effects (announce, withdraw, address, NAT)', registers: [this.registry] });
  readonly reloads = new Counter({ name: 'vipcast_reloads_total', help: 'Config reloads, by result', labelNames: ['result'] as const, registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'vipcast_process_' });
  }
}
