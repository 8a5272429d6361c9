/**
 * Reconciler: the level-triggered control loop (invariants 1-3).
 *
 * Desired state is computed from the registry and health: the VIPs of UP apps are announced; an app that went DOWN
 * keeps its address and NAT rules until its cleanup timer fires (gocast semantics), or loses them right after the
 * withdraw with `remove_vip_on_withdraw`. Actual state is the router's own RIB and the host's addresses and rules.
 * A pass issues only the difference, in the safe order of plan.ts (withdraw -> addresses -> NAT -> announce ->
 * make-before-break withdraws -> NAT and addresses no longer held), so a route is never announced for an address that
 * is not on the host, and a withdraw always precedes the removal. The desired state is desired-state.ts, the effects
 * effects.ts, the shutdown shutdown-steps.ts; this file owns the timers, the per-app state and the passes.
 *
 * Passes run one at a time on the action queue; events during a pass coalesce into one more pass. A pass triggered
 * by an event uses the model of actual state kept from the last full read plus vipcast's own successful actions; a
 * full pass (timer, router reconnect, start) reads the world again, so a gobgpd restart, a lost address or a rule
 * deleted by hand heals by itself.
 */
import type { AppSpec, HostNetwork, Router } from '../plugin-api.js';
import type { AppRegistry } from './registry.js';
import type { HealthTracker } from './health.js';
import type { Logger } from './logger.js';
import { SerialQueue } from './serial-queue.js';
import { desiredState, holdUnknown, type AppView, type Hold } from './desired-state.js';
import type { Model } from './plan.js';
import { Effects, type RouteEvent } from './effects.js';
import { applyPlan } from './apply-plan.js';
import { SHUTDOWN_WAIT_IN_FLIGHT_MS, ShutdownDeadline, shutdownAfterInFlight, withdrawAndClean } from './shutdown-steps.js';

export type { RouteEvent } from './effects.js';
export { SHUTDOWN_WAIT_IN_FLIGHT_MS } from './shutdown-steps.js';

export type { Hold } from './desired-state.js';
export type { AppStatus, HoldSource, ReconcilerOptions, ReconcilerStats } from './reconciler-types.js';
import type { AppStatus, HoldSource, ReconcilerOptions, ReconcilerStats } from './reconciler-types.js';

interface AppState {
  hostHeld: boolean;
  cleanupTimer?: NodeJS.Timeout;
  cleanupAt?: number;
  error?: string;
}

export class Reconciler {
  readonly queue = new SerialQueue();
  readonly stats: ReconcilerStats = { passes: 0, fullPasses: 0, announces: 0, withdraws: 0, errors: 0 };
  private readonly state = new Map<string, AppState>();
  private model: Model | undefined;
  private passQueued: Promise<void> | undefined;
  private wantFull = false;
  private resyncTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Discovery sources that have not delivered their first apps yet, with the timer that stops waiting for them. */
  private readonly pendingSources = new Map<string, NodeJS.Timeout>();
  private readonly listeners: Array<(event: RouteEvent) => void> = [];
  private readonly holdSources: HoldSource[] = [];
  /** Wakes the reconciler when the earliest drain of a held app ends (its routes go then). */
  private drainTimer: NodeJS.Timeout | undefined;
  private drainTimerAt = 0;
  private readonly fx: Effects;

  constructor(
    private readonly registry: AppRegistry,
    private readonly health: HealthTracker,
    router: Router,
    host: HostNetwork,
    private opts: ReconcilerOptions,
    private readonly log: Logger,
  ) {
    this.fx = new Effects(router, host, this.stats, log, (ev) => this.emit(ev), (app, error) => void (this.appState(app).error = error));
  }

  /** Subscribe to effects (announce/withdraw done), for metrics and tests. */
  onRoute(listener: (event: RouteEvent) => void): void {
    this.listeners.push(listener);
  }

  start(): void {
    this.scheduleResync();
  }

  /** Add a source of holds (maintenance, flap damping); the first that holds an app wins. */
  addHoldSource(source: HoldSource): void {
    this.holdSources.push(source);
  }

  /** The hold on `app` now, if any. */
  holdOf(app: AppSpec): Hold | undefined {
    for (const source of this.holdSources) {
      const hold = source(app);
      if (hold) return hold;
    }
    return undefined;
  }

  /** Replace options (reload): takes effect at the next pass. */
  configure(opts: ReconcilerOptions): void {
    this.opts = opts;
    this.scheduleResync();
  }

  /** Swap the router or host implementation (reload); the next pass is full. */
  swap(parts: { router?: Router; host?: HostNetwork }): void {
    this.fx.swap(parts);
    this.model = undefined;
  }

  /** Ask for a pass; returns when a pass that started after this call has finished. */
  trigger(full = false): Promise<void> {
    if (full) this.wantFull = true;
    if (this.stopped) return Promise.resolve();
    if (this.passQueued) return this.passQueued;
    // The pass starts on the next macrotask: every event of this turn of the event loop (a thousand apps decided by
    // one batch of timers) lands in one pass instead of one pass each.
    const p = new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.queue.run(async () => {
      this.passQueued = undefined;
      // Shutdown may have begun since this pass was asked for: it then owns the speaker and the host alone.
      if (this.stopped) return;
      const doFull = this.wantFull || this.model === undefined;
      this.wantFull = false;
      await this.pass(doFull);
    }));
    // Every caller shares the handled promise: a failed pass is logged and retried once, never an unhandled rejection.
    const handled = p.catch((err: unknown) => {
      this.stats.errors++;
      this.log.error({ err }, 'reconcile pass failed');
      this.retrySoon();
    });
    this.passQueued = handled;
    return handled;
  }

  /**
   * A discovery source is starting and has not delivered its apps yet (Consul before its first catalog read). Until it
   * has, or `maxWaitMs` passed, paths, addresses and rules that belong to no known app may be its apps' from an earlier
   * run: they are left alone instead of being withdrawn as strays, so a restart doesn't flap them.
   */
  holdForSource(source: string, maxWaitMs: number): void {
    if (this.stopped || this.pendingSources.has(source)) return;
    const timer = setTimeout(() => {
      this.pendingSources.delete(source);
      this.log.warn({ source, waited_ms: maxWaitMs }, `discovery source ${source} has delivered no apps yet: paths of unknown apps are no longer held`);
      void this.trigger(true);
    }, maxWaitMs);
    timer.unref?.();
    this.pendingSources.set(source, timer);
  }

  /** The source delivered its apps (they are in the registry now): unknown paths are strays again. */
  sourceDelivered(source: string): void {
    const timer = this.pendingSources.get(source);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.pendingSources.delete(source);
    void this.trigger(true);
  }

  /** Called by the health tracker on every state change. */
  healthChanged(app: string, state: 'unknown' | 'up' | 'down'): void {
    const st = this.appState(app);
    if (state === 'up') {
      st.hostHeld = true;
      this.cancelCleanup(st);
    } else if (state === 'down' && st.hostHeld) {
      if (this.opts.removeVipOnWithdraw) st.hostHeld = false;
      else this.startCleanup(app, st);
    }
    void this.trigger();
  }

  /** Called when an app leaves the registry: its routes, rules and address go (in order) at the next pass. */
  appRemoved(app: string): void {
    const st = this.state.get(app);
    if (st) this.cancelCleanup(st);
    this.state.delete(app);
    void this.trigger();
  }

  status(): AppStatus[] {
    const announced = new Map<string, string[]>();
    for (const r of this.model?.routes.values() ?? []) {
      const list = announced.get(r.app);
      if (list) list.push(r.prefix.text);
      else announced.set(r.app, [r.prefix.text]);
    }
    const now = Date.now();
    return this.registry.all().map((app) => {
      const st = this.state.get(app.name);
      const hold = this.holdOf(app);
      return {
        app: app.name,
        source: app.source,
        announced: announced.get(app.name) ?? [],
        hostHeld: st?.hostHeld ?? false,
        ...(st?.cleanupAt !== undefined ? { cleanupAt: st.cleanupAt } : {}),
        ...(st?.error !== undefined ? { error: st.error } : {}),
        ...(hold ? { held: { reason: hold.reason, ...(hold.drainUntil !== undefined && hold.drainUntil > now ? { drainingUntil: hold.drainUntil } : {}) } } : {}),
      };
    });
  }

  /** Routes vipcast has in the speaker (from the last read plus its own actions). */
  routeCount(): number {
    return this.model?.routes.size ?? 0;
  }

  /**
   * Shutdown: withdraw every route, then remove every NAT rule and address vipcast owns, in that order. Runs on the
   * queue after whatever is in flight (waiting for it at most `waitInFlightMs`); no pass touches anything after it.
   * With `drainMs` > 0 every route is first re-announced with the graceful-shutdown community (RFC 8326) and withdrawn
   * that much later. Every wait is cut to what `deadline` leaves (shutdown-steps.ts).
   */
  async shutdown(reason = 'shutdown', drainMs = 0, waitInFlightMs = SHUTDOWN_WAIT_IN_FLIGHT_MS, deadline = ShutdownDeadline.after()): Promise<void> {
    this.close();
    const clean = (drain: number, askSpeaker: boolean) => withdrawAndClean(this.fx, this.model, { reason, drainMs: drain, askSpeaker, deadline, log: this.log, countError: () => void this.stats.errors++ });
    await shutdownAfterInFlight(this.queue, clean, { drainMs, waitInFlightMs, deadline, log: this.log });
  }

  /** Stop timers without touching the world (used when a reload replaces this reconciler's options). */
  close(): void {
    this.stopped = true;
    clearTimeout(this.resyncTimer);
    clearTimeout(this.retryTimer);
    clearTimeout(this.drainTimer);
    for (const st of this.state.values()) this.cancelCleanup(st);
    for (const timer of this.pendingSources.values()) clearTimeout(timer);
    this.pendingSources.clear();
  }

  // ---------------------------------------------------------------------------------------------------------------

  private appState(app: string): AppState {
    let st = this.state.get(app);
    if (!st) {
      st = { hostHeld: false };
      this.state.set(app, st);
    }
    return st;
  }

  private startCleanup(app: string, st: AppState): void {
    if (st.cleanupTimer) return;
    st.cleanupAt = Date.now() + this.opts.cleanupTimerMs;
    st.cleanupTimer = setTimeout(() => {
      st.cleanupTimer = undefined;
      st.cleanupAt = undefined;
      st.hostHeld = false;
      const spec = this.registry.get(app);
      if (spec && dropsAtCleanup(spec)) {
        this.log.info({ app, source: spec.source, cleanup_timer_ms: this.opts.cleanupTimerMs }, 'app down for cleanup_timer: removing its address and NAT rules, and the registration');
        this.registry.remove(app);
      } else {
        this.log.info({ app, source: spec?.source, cleanup_timer_ms: this.opts.cleanupTimerMs }, 'app down for cleanup_timer: removing its address and NAT rules; still checked, brought back up when healthy');
      }
      void this.trigger();
    }, this.opts.cleanupTimerMs);
    st.cleanupTimer.unref?.();
  }

  private cancelCleanup(st: AppState): void {
    if (st.cleanupTimer) clearTimeout(st.cleanupTimer);
    st.cleanupTimer = undefined;
    st.cleanupAt = undefined;
  }

  private scheduleResync(): void {
    clearTimeout(this.resyncTimer);
    if (this.stopped) return;
    const ms = this.opts.resyncMs ?? 10_000;
    this.resyncTimer = setTimeout(() => {
      void this.trigger(true).finally(() => this.scheduleResync());
    }, ms);
    this.resyncTimer.unref?.();
  }

  private retrySoon(): void {
    if (this.retryTimer || this.stopped) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.trigger(true);
    }, this.opts.retryMs ?? 1000);
    this.retryTimer.unref?.();
  }

  private async pass(full: boolean): Promise<void> {
    this.stats.passes++;
    if (full || !this.model) {
      this.stats.fullPasses++;
      this.model = await this.fx.readModel();
    }
    const model = this.model;
    // Shutdown can begin while a pass runs (it waits for the effect in flight, not for the whole pass): every step
    // below checks first, so nothing is re-added after shutdown withdrew and cleaned up.
    const stopped = () => this.stopped;
    const apps = this.registry.all();
    let failed = false;
    const fail = (app: string, what: string, err: unknown) => {
      failed = true;
      this.stats.errors++;
      const st = this.appState(app);
      st.error = `${what}: ${err instanceof Error ? err.message : String(err)}`;
      this.log.error({ err, app }, `${what} failed`);
    };

    // Desired state, one look at each app (desired-state.ts); then the stages of plan.ts, each on the model as the
    // effects before it left it.
    const views: AppView[] = apps.map((app) => {
      const st = this.state.get(app.name);
      if (st) st.error = undefined; // this pass reports afresh
      const state = this.health.get(app.name)?.state ?? 'unknown';
      const hold = state === 'up' ? this.holdOf(app) : undefined;
      return { spec: app, state, hostHeld: st?.hostHeld ?? false, ...(hold ? { hold } : {}) };
    });
    let desired = desiredState(views, this.opts.bgp, Date.now());
    this.wakeAt(desired.drainEnds);
    if (this.pendingSources.size > 0) {
      desired = holdUnknown(desired, apps, [...model.routes.keys(), ...model.vips.keys(), ...model.nat.map((n) => n.vip.text)]);
    }

    await applyPlan(this.fx, model, desired, {
      fail, stopped,
      whyNot: (app) => this.whyNot(app),
      hasError: (app) => this.state.get(app)?.error !== undefined,
    });
    if (failed) this.retrySoon();
  }

  private whyNot(app: string): string {
    if (app === '') return 'stale path from an earlier run';
    const spec = this.registry.get(app);
    if (!spec) return 'app removed';
    const h = this.health.get(app);
    const hold = h?.state === 'up' ? this.holdOf(spec) : undefined;
    if (hold) return `held down: ${hold.reason}`;
    return h ? `app is ${h.state}: ${h.reason}` : 'app is not tracked';
  }

  /** A pass at `at` (Date.now() ms), when a drain ends; Infinity = none. */
  private wakeAt(at: number): void {
    if (at === this.drainTimerAt && this.drainTimer) return;
    clearTimeout(this.drainTimer);
    this.drainTimer = undefined;
    this.drainTimerAt = at;
    if (at === Infinity || this.stopped) return;
    this.drainTimer = setTimeout(() => {
      this.drainTimer = undefined;
      void this.trigger();
    }, Math.max(0, at - Date.now()) + 5);
    this.drainTimer.unref?.();
  }

  private emit(event: RouteEvent): void {
    for (const l of this.listeners) l(event);
  }
}


/**
 * What cleanup_timer does with an app once its address and rules are gone. An HTTP registration is dropped (gocast):
 * nothing else would ever remove an app whose registrant died, and a live registrant registers again. An app its
 * source keeps declaring (the config file, the Consul catalog, a discovery plugin) stays registered and checked: the
 * source would not deliver it again while nothing changes there, so dropping it would leave it unannounced for good
 * after it recovers.
 */
export function dropsAtCleanup(app: AppSpec): boolean {
  return app.source === 'http';
}
