/**
 * The reconciler's effects on the world: the router and the host network, each call recorded in the model of actual
 * state on success (and counted, and told to listeners), or reported through `fail` on error. No decisions here: what
 * to do comes from plan.ts.
 */
import type { HostNetwork, NatBinding, Route, Router } from '../plugin-api.js';
import type { Logger } from './logger.js';
import { natKey, type Model } from './plan.js';

/** Reports a failed effect for an app (its status shows it; the pass is retried). */
export type Fail = (app: string, what: string, err: unknown) => void;

export interface RouteEvent {
  readonly action: 'announce' | 'withdraw';
  readonly route: Route;
}

/** From this many routes or addresses in one pass on, a router or host with a bulk call gets them in one call. */
export const BULK_MIN = 16;

export class Effects {
  /**
   * The last NAT request that some apps' rules couldn't be made for (no local address of the family, a bad target):
   * the same request, with the chain still as written then, fails the same apps for the same reasons, so it is not
   * written again on every pass (nor retried every second); a change of the rules, of the chain or of the host
   * network (reload) tries again.
   */
  private natTried: { want: string; applied: string; failures: ReadonlyMap<string, Error> } | undefined;

  constructor(
    public router: Router,
    public host: HostNetwork,
    private readonly counts: { announces: number; withdraws: number },
    private readonly log: Logger,
    private readonly emit: (event: RouteEvent) => void,
    /** Sets an app's error in its status without logging (a known failure repeated). */
    private readonly setError: (app: string, error: string) => void,
  ) {}

  /** Swap the router or host implementation (reload). */
  swap(parts: { router?: Router; host?: HostNetwork }): void {
    if (parts.router) this.router = parts.router;
    if (parts.host) this.host = parts.host;
    this.natTried = undefined;
  }

  /** Read the world: the speaker's RIB, the host's addresses and rules. */
  async readModel(): Promise<Model> {
    const [routes, vips, nat] = await Promise.all([this.router.listRoutes(), this.host.listVips(), this.host.listNat()]);
    return {
      routes: new Map(routes.map((r) => [r.prefix.text, r])),
      vips: new Map(vips.map((v) => [v.prefix.text, v])),
      nat,
    };
  }

  async withdraw(model: Model, route: Route, reason: string, fail: Fail): Promise<void> {
    try {
      await this.router.withdraw(route, reason);
      this.recordWithdraw(model, route);
    } catch (err) {
      fail(route.app, `withdraw ${route.prefix.text}`, err);
    }
  }

  recordWithdraw(model: Model, route: Route): void {
    model.routes.delete(route.prefix.text);
    this.counts.withdraws++;
    this.emit({ action: 'withdraw', route });
  }

  /** Many routes at once (a resync after a speaker restart) go in bulk when the router can; else one by one. */
  async announce(model: Model, list: Array<{ route: Route; replaces: boolean }>, fail: Fail, reason?: string, halted: () => boolean = () => false): Promise<void> {
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
    this.counts.announces++;
    this.emit({ action: 'announce', route });
  }

  /**
   * Write the NAT rules. Apps whose rules the host can't make fail alone (returned, and added to `blocked`: not
   * announced); the others' rules are written. A write the host refused blocks every app with rules, as nothing is
   * known to have changed.
   */
  async nat(model: Model, rules: NatBinding[], blocked: Set<string>, fail: Fail): Promise<Set<string>> {
    const want = natKey(rules);
    if (want === natKey(model.nat)) return new Set();
    const tried = this.natTried;
    if (tried && tried.want === want && tried.applied === natKey(model.nat)) {
      // Nothing changed since the last try: the same apps fail for the same reasons. Reported (/status), not logged
      // or retried again.
      for (const [app, err] of tried.failures) {
        blocked.add(app);
        this.setError(app, `NAT rules: ${err.message}`);
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
}
