/**
 * Reconciler: the level-triggered control loop (invariants 1-3).
 *
 * Desired state is computed from the registry and health: the VIPs of UP apps are announced; an app that went DOWN
 * keeps its address and NAT rules until its cleanup timer fires (gocast semantics), or loses them right after the
 * withdraw with `remove_vip_on_withdraw`. Actual state is the router's own RIB and the host's addresses and rules.
 * A pass issues only the difference, in the safe order:
 *   withdraw -> add addresses -> NAT rules -> remove addresses -> announce
 * so a route is never announced for an address that is not on the host, and a withdraw always precedes the removal.
 *
 * Passes run one at a time on the action queue; events during a pass coalesce into one more pass. A pass triggered
 * by an event uses the model of actual state kept from the last full read plus vipcast's own successful actions; a
 * full pass (timer, router reconnect, start) reads the world again, so a gobgpd restart, a lost address or a rule
 * deleted by hand heals by itself.
 */
import type { AppSpec, Community, HostNetwork, NatBinding, Route, Router, VipBinding } from '../plugin-api.js';
import type { BgpConfig } from './config-types.js';
import type { AppRegistry } from './registry.js';
import type { HealthTracker } from './health.js';
import type { Logger } from './logger.js';
import { routeKey } from '../plugins/routing/route-attributes.js';
import { SerialQueue } from './serial-queue.js';
import { parseCommunity } from './values.js';

/** RFC 8326 GRACEFUL_SHUTDOWN, 65535:0. */
const GRACEFUL_SHUTDOWN: Community = parseCommunity('graceful-shutdown', 'graceful-shutdown');

export interface ReconcilerOptions {
  bgp: Pick<BgpConfig, 'communities' | 'origin'>;
  cleanupTimerMs: number;
  removeVipOnWithdraw: boolean;
  /** Full resync period. */
  resyncMs?: number;
  /** Retry delay after a failed action. */
  retryMs?: number;
}

/**
 * Why a healthy app must not be announced now (maintenance, flap damping). Its address and NAT rules stay (the service
 * is still there); only its routes go.
 */
export interface Hold {
  /** For /status and the withdraw's log line ("maintenance (API)", "flap damping: penalty 3100 > 2000"). */
  readonly reason: string;
  /**
   * Until then (Date.now() ms) the app's routes stay announced with GRACEFUL_SHUTDOWN (65535:0) added, so routers that
   * honour RFC 8326 move traffic away first; withdrawn after it. Absent or past: withdrawn at once.
   */
  readonly drainUntil?: number;
}

/** Asked at every pass for every UP app: a hold, or undefined (announce). Call `Reconciler.trigger()` when it changes. */
export type HoldSource = (app: AppSpec) => Hold | undefined;

export interface AppStatus {
  readonly app: string;
  readonly source: string;
  /** Routes in the speaker's RIB for this app. */
  readonly announced: string[];
  /** Address and NAT held on the host. */
  readonly hostHeld: boolean;
  /** When a DOWN app's cleanup timer fires (ms since epoch), if running. */
  readonly cleanupAt?: number;
  /** The last effect that failed for this app, if it has not succeeded since. */
  readonly error?: string;
  /** Why the app is not announced although its checks pass (maintenance, flap damping), and whether it is draining. */
  readonly held?: { readonly reason: string; readonly drainingUntil?: number };
}

export interface ReconcilerStats {
  passes: number;
  fullPasses: number;
  announces: number;
  withdraws: number;
  errors: number;
}

interface AppState {
  hostHeld: boolean;
  cleanupTimer?: NodeJS.Timeout;
  cleanupAt?: number;
  error?: string;
}

interface Model {
  routes: Map<string, Route>;
  vips: Map<string, VipBinding>;
  nat: NatBinding[];
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
  /**
   * The last NAT request that some apps' rules couldn't be made for (no local address of the family, a bad target):
   * the same request, with the chain still as written then, fails the same apps for the same reasons, so it is not
   * written again on every pass (nor retried every second); a change of the rules, of the chain or of the host
   * network (reload) tries again.
   */
  private natTried: { want: string; applied: string; failures: ReadonlyMap<string, Error> } | undefined;

  constructor(
    private readonly registry: AppRegistry,
    private readonly health: HealthTracker,
    private router: Router,
    private host: HostNetwork,
    private opts: ReconcilerOptions,
    private readonly log: Logger,
  ) {}

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
    if (parts.router) this.router = parts.router;
    if (parts.host) this.host = parts.host;
    this.model = undefined;
    this.natTried = undefined;
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
   * queue after whatever is in flight (waiting for it at most `waitInFlightMs`); no pass touches anything after it. With `drainMs` > 0 every route is first re-announced
   * with the graceful-shutdown community (RFC 8326) and withdrawn that much later.
   */
  async shutdown(reason = 'shutdown', drainMs = 0, waitInFlightMs = SHUTDOWN_WAIT_IN_FLIGHT_MS): Promise<void> {
    this.close();
    // Passes stop at their next step once `stopped` is set, so the queue is usually idle within one effect. An effect
    // that hangs (an iptables call waiting for the xtables lock, a reload swapping speakers) must not hold the
    // withdraw back: after a bounded wait the shutdown runs beside it, and cleans the host again once it ends.
    if (this.queue.pending > 0) {
      const inFlight = this.queue.settled();
      let timer: NodeJS.Timeout | undefined;
      const finished = await Promise.race([
        inFlight.then(() => true),
        new Promise<false>((resolve) => { timer = setTimeout(resolve, waitInFlightMs, false); }),
      ]);
      clearTimeout(timer);
      if (!finished) {
        this.log.warn({ waited_ms: waitInFlightMs }, 'an action is still in flight at shutdown: withdrawing without waiting for it');
        const speakerAnswered = await this.withdrawAndClean(reason, drainMs);
        // Whatever the late action announced or added goes too, if it ends soon; a speaker that did not answer is
        // not asked again.
        const late = await within(inFlight, SHUTDOWN_LATE_ACTION_MS);
        if (!late.ok) this.log.error({ waited_ms: SHUTDOWN_LATE_ACTION_MS }, 'an action still in flight after the shutdown cleanup: whatever it adds when it ends stays (a hung ip, iptables or speaker call)');
        else await this.withdrawAndClean(reason, 0, speakerAnswered);
        return;
      }
    }
    await this.queue.run(() => this.withdrawAndClean(reason, drainMs));
  }

  /**
   * Withdraw (after a drain), then remove rules and addresses. The speaker is asked first what it holds, within
   * SHUTDOWN_LIST_MS: one that does not answer (frozen, gone) is not waited for, nor drained through; the withdraw gets
   * SHUTDOWN_WITHDRAW_MS after the drain. Whatever the speaker did, the host is cleaned, and the log names the routes
   * that may still be announced. Returns whether the speaker answered.
   */
  private async withdrawAndClean(reason: string, drainMs: number, askSpeaker = true): Promise<boolean> {
    const model = this.model ?? { routes: new Map<string, Route>(), vips: new Map<string, VipBinding>(), nat: [] };
    const listed = askSpeaker ? await within(this.router.listRoutes(), SHUTDOWN_LIST_MS) : undefined;
    if (listed?.ok) {
      const routes = listed.value;
      const logFailure = (app: string, what: string, err: unknown) => {
        this.stats.errors++;
        this.log.error({ err, app }, `${what} failed at shutdown`);
      };
      const pending = new Map(routes.map((r) => [r.prefix.text, r]));
      const withdrawn = await within((async () => {
        let rest = drainMs > 0 && routes.length > 0 ? await this.drain(model, routes, drainMs, logFailure) : routes;
        if (rest.length >= BULK_MIN && this.router.withdrawMany) {
          try {
            await this.router.withdrawMany(rest, reason);
            for (const r of rest) {
              this.recordWithdraw(model, r);
              pending.delete(r.prefix.text);
            }
            rest = [];
          } catch (err) {
            this.log.warn({ err, routes: rest.length }, 'bulk withdraw failed; withdrawing one by one');
          }
        }
        for (const r of rest) {
          await this.withdrawStep(model, r, reason, logFailure);
          if (!model.routes.has(r.prefix.text)) pending.delete(r.prefix.text);
        }
      })(), drainMs + SHUTDOWN_WITHDRAW_MS);
      if (!withdrawn.ok || pending.size > 0) {
        this.log.error({ routes: [...pending.keys()], ...(withdrawn.ok ? {} : { waited_ms: drainMs + SHUTDOWN_WITHDRAW_MS }) }, `could not withdraw ${pending.size} route(s) at shutdown: the speaker may still announce them`);
      }
    } else if (listed) {
      const routes = [...model.routes.keys()];
      this.stats.errors++;
      this.log.error({ routes, ...(listed.err !== undefined ? { err: listed.err } : { waited_ms: SHUTDOWN_LIST_MS }) }, `could not withdraw at shutdown: the speaker ${listed.err !== undefined ? 'refused' : 'did not answer'}; it may still announce ${routes.length} route(s) of vipcast's (no drain); removing addresses and NAT rules anyway`);
    }
    // Then rules, then addresses: cleanup() removes the NAT chain (and its jumps) before the addresses.
    await this.host.cleanup().catch((err) => this.log.error({ err }, 'could not remove every address and rule at shutdown'));
    if (this.model) {
      this.model.vips.clear();
      this.model.nat = [];
    }
    return listed?.ok ?? false;
  }

  /**
   * Graceful shutdown drain: every route again with GRACEFUL_SHUTDOWN added (an implicit replace, no withdraw), so
   * routers that honour RFC 8326 lower its preference and move traffic to other hosts; then wait. Returns the routes
   * as now announced, for the withdraw. A route whose re-announce fails is still withdrawn after the wait.
   */
  private async drain(model: Model, routes: readonly Route[], ms: number, fail: (app: string, what: string, err: unknown) => void): Promise<Route[]> {
    const has = (r: Route) => r.communities.some((c) => c.text === GRACEFUL_SHUTDOWN.text);
    const marked = routes.map((r) => (has(r) ? r : { ...r, communities: [...r.communities, GRACEFUL_SHUTDOWN] }));
    // A route that already carries it (an app configured with graceful-shutdown) is not sent again.
    const changed = marked.filter((r, i) => r !== routes[i]);
    await this.announceStep(model, changed.map((route) => ({ route, replaces: true })), fail, 'shutdown drain (graceful-shutdown)');
    this.log.info({ event: 'drain', routes: marked.length, drain_ms: ms }, `graceful shutdown: ${marked.length} routes carry 65535:0; withdrawing them in ${ms} ms`);
    await new Promise((r) => setTimeout(r, ms));
    return marked;
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

  /**
   * An UP app's routes: one per VIP, global communities then the app's own, de-duplicated, shared by all its VIPs;
   * `draining` adds GRACEFUL_SHUTDOWN.
   */
  private desiredRoutes(app: AppSpec, draining = false): Route[] {
    const seen = new Set<string>();
    const communities: Community[] = [];
    for (const c of [...this.opts.bgp.communities, ...app.communities, ...(draining ? [GRACEFUL_SHUTDOWN] : [])]) {
      if (!seen.has(c.text)) {
        seen.add(c.text);
        communities.push(c);
      }
    }
    return app.vips.map((prefix) => ({ prefix, app: app.name, origin: this.opts.bgp.origin, communities }));
  }

  private async readModel(): Promise<Model> {
    const [routes, vips, nat] = await Promise.all([this.router.listRoutes(), this.host.listVips(), this.host.listNat()]);
    return {
      routes: new Map(routes.map((r) => [r.prefix.text, r])),
      vips: new Map(vips.map((v) => [v.prefix.text, v])),
      nat,
    };
  }

  private async pass(full: boolean): Promise<void> {
    this.stats.passes++;
    if (full || !this.model) {
      this.stats.fullPasses++;
      this.model = await this.readModel();
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

    // Desired state, one look at each app. Apps not checked yet (state unknown) keep whatever an earlier run left
    // for their VIPs until their first verdict (`undecided`): a restart must not withdraw and re-announce healthy routes.
    const wantRoutes = new Map<string, Route>();
    const wantVips = new Map<string, VipBinding>();
    const wantNat: NatBinding[] = [];
    const undecided = new Set<string>();
    const upApps = new Set<string>();
    const now = Date.now();
    let drainEnds = Infinity;
    for (const app of apps) {
      const st = this.state.get(app.name);
      if (st) st.error = undefined; // this pass reports afresh
      const state = this.health.get(app.name)?.state ?? 'unknown';
      const up = state === 'up';
      if (state === 'unknown') for (const v of app.vips) undecided.add(v.text);
      if ((st?.hostHeld ?? false) || up) {
        for (const vip of app.vips) {
          wantVips.set(vip.text, { app: app.name, prefix: vip });
          // gocast's NAT target is IPv4 local_ip; the host network decides per family.
          for (const rule of app.nats) wantNat.push({ app: app.name, vip, rule });
        }
      }
      // Held (maintenance, flap damping): announced with 65535:0 while its drain lasts, then withdrawn in step 1.
      const hold = up ? this.holdOf(app) : undefined;
      const draining = hold?.drainUntil !== undefined && hold.drainUntil > now;
      if (draining) drainEnds = Math.min(drainEnds, hold.drainUntil!);
      if (up && (!hold || draining)) {
        upApps.add(app.name);
        for (const r of this.desiredRoutes(app, draining)) wantRoutes.set(r.prefix.text, r);
      }
    }
    this.wakeAt(drainEnds);

    if (this.pendingSources.size > 0) {
      const known = new Set(apps.flatMap((a) => a.vips.map((v) => v.text)));
      for (const key of [...model.routes.keys(), ...model.vips.keys(), ...model.nat.map((n) => n.vip.text)]) {
        if (!known.has(key)) undecided.add(key);
      }
    }

    // 1. Withdraw the routes of apps that are not UP any more (or gone, or whose VIP moved to another app). Routes
    //    of UP apps that merely lost a VIP (a VIP change) go in step 4, after the new VIP is announced.
    for (const [key, route] of [...model.routes]) {
      const want = wantRoutes.get(key);
      if (want && (want.app === route.app || route.app === '')) continue; // '' = our path from an earlier run: replaced below
      if (!want && (upApps.has(route.app) || undecided.has(key))) continue;
      if (stopped()) return;
      await this.withdrawStep(model, route, want ? 'owner changed' : this.whyNot(route.app), fail);
    }

    // 2. Addresses before rules before routes. Rules of a VIP that is still announced stay until its withdraw.
    const missing = [...wantVips.values()].filter((v) => model.vips.get(v.prefix.text)?.app !== v.app);
    if (stopped()) return;
    if (missing.length >= BULK_MIN && this.host.addVips) {
      try {
        const failures = await this.host.addVips(missing);
        for (const v of missing) {
          const err = failures.get(v.prefix.text);
          if (err) fail(v.app, `add address ${v.prefix.text}`, err);
          else model.vips.set(v.prefix.text, v);
        }
      } catch (err) {
        for (const v of missing) fail(v.app, `add address ${v.prefix.text}`, err);
      }
    } else {
      for (const vip of missing) {
        if (stopped()) return;
        try {
          await this.host.addVip(vip);
          model.vips.set(vip.prefix.text, vip);
        } catch (err) {
          fail(vip.app, `add address ${vip.prefix.text}`, err);
        }
      }
    }
    const natBlocked = new Set<string>();
    // Rules only where the address is on the host; steps 3 and 4 touch routes only, so this holds for step 5 too.
    const wantNatHere = wantNat.filter((n) => model.vips.has(n.vip.text));
    const keep = (n: NatBinding) => (model.routes.get(n.vip.text)?.app === n.app || undecided.has(n.vip.text)) && !wantVips.has(n.vip.text);
    if (stopped()) return;
    const natFailed = await this.natStep(model, [...wantNatHere, ...model.nat.filter(keep)], natBlocked, fail);
    // An app whose NAT rules can't be made is not announced (traffic to its VIP would not reach the service): one
    // announced before (its NAT target went away with a reload) is withdrawn now.
    for (const [, route] of [...model.routes]) {
      if (!natFailed.has(route.app)) continue;
      if (stopped()) return;
      await this.withdrawStep(model, route, 'its NAT rules can\'t be made', fail);
    }

    // 3. Announce what is missing or changed, only where the address is on the host.
    const toAnnounce: Array<{ route: Route; replaces: boolean }> = [];
    for (const [key, route] of wantRoutes) {
      const have = model.routes.get(key);
      if (have && (have.app === route.app || have.app === '') && routeKey(have) === routeKey(route)) {
        // A path an earlier run left with exactly these attributes: adopt it, no UPDATE (a restart doesn't flap).
        if (have.app === '' && model.vips.get(key)?.app === route.app) model.routes.set(key, route);
        if (have.app === route.app || model.vips.get(key)?.app === route.app) continue;
      }
      if (model.vips.get(key)?.app !== route.app) {
        if (!this.state.get(route.app)?.error) fail(route.app, `announce ${key}`, new Error('address is not on the host'));
        continue;
      }
      if (natBlocked.has(route.app)) continue;
      toAnnounce.push({ route, replaces: have !== undefined });
    }
    await this.announceStep(model, toAnnounce, fail, undefined, stopped);

    // 4. Make-before-break: the routes an UP app no longer wants go now that its new VIPs are out.
    for (const [key, route] of [...model.routes]) {
      if (stopped()) return;
      if (!wantRoutes.has(key) && !undecided.has(key)) await this.withdrawStep(model, route, 'VIP removed from the app', fail);
    }

    // 5. Tear-down: rules, then addresses, of everything no longer held.
    if (stopped()) return;
    await this.natStep(model, [...wantNatHere, ...model.nat.filter((n) => undecided.has(n.vip.text) && !wantVips.has(n.vip.text))], natBlocked, fail);
    for (const [key, vip] of [...model.vips]) {
      if (wantVips.get(key)?.app === vip.app || undecided.has(key)) continue;
      if (model.routes.has(key)) continue; // still announced (its withdraw failed): keep the address under it
      if (model.nat.some((n) => n.vip.text === key)) continue; // its rules failed to go: keep the address they use
      if (stopped()) return;
      try {
        await this.host.removeVip(vip);
        model.vips.delete(key);
      } catch (err) {
        fail(vip.app, `remove address ${key}`, err);
      }
    }
    if (failed) this.retrySoon();
  }

  private async withdrawStep(model: Model, route: Route, reason: string, fail: (app: string, what: string, err: unknown) => void): Promise<void> {
    try {
      await this.router.withdraw(route, reason);
      this.recordWithdraw(model, route);
    } catch (err) {
      fail(route.app, `withdraw ${route.prefix.text}`, err);
    }
  }

  private recordWithdraw(model: Model, route: Route): void {
    model.routes.delete(route.prefix.text);
    this.stats.withdraws++;
    this.emit({ action: 'withdraw', route });
  }

  /** Many routes at once (a resync after a speaker restart) go in bulk when the router can; else one by one. */
  private async announceStep(model: Model, list: Array<{ route: Route; replaces: boolean }>, fail: (app: string, what: string, err: unknown) => void, reason?: string, halted: () => boolean = () => false): Promise<void> {
    let pending = list;
    if (halted()) return;
    if (pending.length >= BULK_MIN && this.router.announceMany) {
      try {
        await this.router.announceMany(pending.map((x) => x.route), reason ?? 'app is up (bulk)');
        for (const { route } of pending) this.recordAnnounce(model, route);
        pending = [];
      } catch (err) {
        this.log.warn({ err, routes: pending.length }, 'bulk announce failed; announcing one by one');
      }
    }
    for (const { route, replaces } of pending) {
      if (halted()) return;
      try {
        await this.router.announce(route, reason ?? (replaces ? 'attributes changed' : 'app is up'));
        this.recordAnnounce(model, route);
      } catch (err) {
        fail(route.app, `announce ${route.prefix.text}`, err);
      }
    }
  }

  private recordAnnounce(model: Model, route: Route): void {
    model.routes.set(route.prefix.text, route);
    this.stats.announces++;
    this.emit({ action: 'announce', route });
  }

  /**
   * Write the NAT rules. Apps whose rules the host can't make fail alone (returned, and added to `blocked`: not
   * announced); the others' rules are written. A write the host refused blocks every app with rules, as nothing is
   * known to have changed.
   */
  private async natStep(model: Model, rules: NatBinding[], blocked: Set<string>, fail: (app: string, what: string, err: unknown) => void): Promise<Set<string>> {
    const want = natKey(rules);
    if (want === natKey(model.nat)) return new Set();
    const tried = this.natTried;
    if (tried && tried.want === want && tried.applied === natKey(model.nat)) {
      // Nothing changed since the last try: the same apps fail for the same reasons. Reported (/status), not logged
      // or retried again.
      for (const [app, err] of tried.failures) {
        blocked.add(app);
        this.appState(app).error = `NAT rules: ${err.message}`;
      }
      return new Set(tried.failures.keys());
    }
    try {
      const failures = (await this.host.setNat(rules)) ?? new Map<string, Error>();
      const applied = failures.size > 0 ? rules.filter((n) => !failures.has(n.app)) : rules;
      model.nat = applied;
      this.natTried = failures.size > 0 ? { want, applied: natKey(applied), failures } : undefined;
      for (const [app, err] of failures) {
        blocked.add(app);
        fail(app, 'NAT rules', err);
      }
      return new Set(failures.keys());
    } catch (err) {
      for (const n of rules) blocked.add(n.app);
      for (const app of blocked) fail(app, 'NAT rules', err);
      return new Set();
    }
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

export interface RouteEvent {
  readonly action: 'announce' | 'withdraw';
  readonly route: Route;
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

/** How long shutdown waits for the action in flight before it withdraws anyway. */
export const SHUTDOWN_WAIT_IN_FLIGHT_MS = 2000;
/** How long shutdown waits for the speaker to list its routes: longer, and it is frozen or gone. */
export const SHUTDOWN_LIST_MS = 1500;
/** How long the withdraw may take after the drain. */
export const SHUTDOWN_WITHDRAW_MS = 2000;
/** After the cleanup, how long shutdown waits for an action that was in flight, to clean up after it. */
export const SHUTDOWN_LATE_ACTION_MS = 1500;

/** `p`'s outcome, or `{ ok: false }` without `err` if it has not settled within `ms`. Never rejects. */
async function within<T>(p: Promise<T>, ms: number): Promise<{ ok: true; value: T } | { ok: false; err?: unknown }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<{ ok: false }>((resolve) => { timer = setTimeout(() => resolve({ ok: false }), ms); });
  try {
    return await Promise.race([p.then((value) => ({ ok: true as const, value }), (err: unknown) => ({ ok: false as const, err })), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** From this many announces in one pass on, a router with announceMany gets them in one call. */
const BULK_MIN = 16;

function natKey(rules: readonly NatBinding[]): string {
  return rules.map((n) => `${n.app}|${n.vip.text}|${n.rule.text}`).sort().join('\n');
}
