/**
 * The daemon's event wiring, made once at start between its long-lived parts: health verdicts into flap damping, the
 * metrics and the reconciler; the reconciler's route events into the metrics (decision latency); registry changes into
 * health tracking and the reconciler; the gauges the metrics read at scrape time. Works on the parts themselves (no
 * import of daemon.ts: no cycle).
 */
import { sameChecks, type AppRegistry } from './registry.js';
import type { HealthTracker } from './health.js';
import type { Reconciler } from './reconciler.js';
import type { Metrics } from './metrics.js';
import type { Maintenance } from './maintenance.js';
import type { FlapDamping } from './flap-damping.js';

/** The daemon's parts the wiring connects, each created once at start and kept for the daemon's life. */
export interface DaemonParts {
  readonly registry: AppRegistry;
  readonly health: HealthTracker;
  readonly reconciler: Reconciler;
  readonly damping: FlapDamping;
  readonly maintenance: Maintenance;
  readonly metrics: Metrics;
}

/** Connect the parts' events (before the first app is tracked: every app's events then reach them all). */
export function wireDaemonEvents(p: DaemonParts): void {
  const { registry, health, reconciler, damping, maintenance, metrics } = p;
  metrics.observeMaintenance(() => ({ apps: registry.all().filter((a) => maintenance.entryOf(a.name)).length, host: maintenance.host !== undefined }));
  metrics.observe({
    appStates: () => health.all().map((h) => h.state),
    routeCount: () => reconciler.routeCount(),
    reconcileErrors: () => reconciler.stats.errors,
    appsDamped: () => damping.suppressedApps().length,
  });
  // When each app's current check round started: a route event's decision latency is measured from it.
  const roundStart = new Map<string, number>();
  health.onChange((c) => {
    damping.transition(c.app, c.previous, c.state);
    roundStart.set(c.app, c.roundStartedAt);
    metrics.transitions.inc({ state: c.state });
    reconciler.healthChanged(c.app, c.state);
  });
  reconciler.onRoute((ev) => {
    metrics.routeUpdates.inc({ action: ev.action });
    const started = roundStart.get(ev.route.app);
    if (started !== undefined) metrics.decisionLatency.observe({ action: ev.action }, (performance.now() - started) / 1000);
  });
  registry.onChange((ev) => {
    if (ev.type === 'added') health.track(ev.app);
    else if (ev.type === 'changed') health.track(ev.app, { keepState: sameChecks(ev.previous, ev.app) });
    else {
      health.untrack(ev.app.name);
      reconciler.appRemoved(ev.app.name);
      damping.forget(ev.app.name);
    }
    if (ev.type === 'changed') void reconciler.trigger();
  });
}
