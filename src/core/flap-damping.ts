/**
 * Flap damping (RFC 2439-like) for health-checked apps: an app that keeps going down and coming back is held down
 * (its routes withdrawn although its checks pass) until it has been quiet for a while.
 *
 * Every app has a figure-of-merit penalty that decays exponentially: penalty(t) = penalty(t0) * 2^(-(t - t0) / half_life).
 * Each flap (the app going from up to down) adds `penalty`. When the penalty exceeds `suppress_threshold` the app is
 * suppressed, and stays so until the penalty has decayed below `reuse_threshold`. The penalty is capped at
 * reuse_threshold * 2^(max_suppress / half_life) (RFC 2439's ceiling), so a suppression ends at most `max_suppress`
 * after the last flap, however long the app flapped before.
 *
 * Only up -> down counts: one down-and-up cycle is one flap (as a router charges a withdrawal, not the re-advertisement
 * that follows it), so `penalty` is "per flap" as operators count them, and the transition that brings an app back is
 * never what suppresses it. The first verdict after a start or a change of checks (unknown -> up or down) is not a flap.
 *
 * Decisions are pure functions of the recorded flaps and the clock, which is injected (tests run on a fake one). One
 * timer, for the earliest end of a suppression, tells the owner (`onRelease`) to run a pass then.
 */
import type { FlapDampingConfig } from './config-types.js';
import type { Hold } from './reconciler.js';
import type { Logger } from './logger.js';

/** The settings' defaults (agent.flap_damping): off; when on, three flaps in about two minutes hold an app down. */
export const FLAP_DAMPING_DEFAULTS: FlapDampingConfig = Object.freeze({
  enabled: false,
  penalty: 1000,
  suppressThreshold: 2000,
  reuseThreshold: 750,
  halfLifeMs: 120_000,
  maxSuppressMs: 600_000,
});

/** What the damping needs of time: the wall clock (ms) and a one-shot timer. Tests pass a fake one. */
export interface DampingClock {
  now(): number;
  setTimer(fn: () => void, ms: number): { cancel(): void };
}

export const systemClock: DampingClock = {
  now: () => Date.now(),
  setTimer(fn, ms) {
    const timer = setTimeout(fn, ms);
    timer.unref?.();
    return { cancel: () => clearTimeout(timer) };
  },
};

/** One app's damping state, for /status. */
export interface DampingInfo {
  /** The penalty now (rounded). */
  readonly penalty: number;
  readonly suppressed: boolean;
  /** When the suppression ends (ms since epoch), while suppressed. */
  readonly reuseAt?: number;
  /** Flaps counted since the app's history was last forgotten. */
  readonly flaps: number;
}

export interface FlapDampingOptions {
  readonly clock?: DampingClock;
  readonly log?: Logger;
  /** An app was suppressed (its route must go: the owner runs a pass). */
  readonly onSuppress?: (app: string, info: DampingInfo) => void;
  /** One or more suppressions ended (or were lifted by configure): the owner runs a pass to announce them again. */
  readonly onRelease?: (apps: readonly string[]) => void;
}

interface Entry {
  /** Penalty at `at` (ms since epoch). */
  penalty: number;
  at: number;
  flaps: number;
  firstFlapAt: number;
  lastFlapAt: number;
  suppressed: boolean;
}

/** Timers longer than this are split (a Node timer overflows beyond ~24.8 days). */
const MAX_TIMER_MS = 2_147_483_647;

export class FlapDamping {
  private settings: FlapDampingConfig;
  private readonly entries = new Map<string, Entry>();
  private readonly clock: DampingClock;
  private timer: { cancel(): void } | undefined;
  private timerAt = Infinity;
  private closed = false;

  constructor(settings: FlapDampingConfig, private readonly opts: FlapDampingOptions = {}) {
    this.settings = settings;
    this.clock = opts.clock ?? systemClock;
  }

  /** The penalty cap: reuse * 2^(max_suppress / half_life). */
  static ceiling(s: FlapDampingConfig): number {
    return s.reuseThreshold * 2 ** (s.maxSuppressMs / s.halfLifeMs);
  }

  get enabled(): boolean {
    return this.settings.enabled;
  }

  /**
   * New settings (reload). Penalties are kept: each is decayed to now under the old half-life, then capped by the new
   * ceiling, so a shorter max_suppress or a higher reuse threshold applies at once. Disabling forgets every penalty
   * and releases every held app.
   */
  configure(settings: FlapDampingConfig): void {
    if (JSON.stringify(settings) === JSON.stringify(this.settings)) return;
    const now = this.clock.now();
    const wasHeld = [...this.entries].filter(([, e]) => this.isSuppressed(e, now)).map(([app]) => app);
    for (const e of this.entries.values()) {
      e.penalty = this.penaltyAt(e, now);
      e.at = now;
    }
    this.settings = settings;
    if (!settings.enabled) {
      this.entries.clear();
    } else {
      const cap = FlapDamping.ceiling(settings);
      for (const e of this.entries.values()) e.penalty = Math.min(e.penalty, cap);
    }
    const released = wasHeld.filter((app) => {
      const e = this.entries.get(app);
      return !e || !this.isSuppressed(e, now);
    });
    for (const app of released) {
      const e = this.entries.get(app);
      if (e) e.suppressed = false;
    }
    this.prune(now);
    this.schedule();
    if (released.length > 0) {
      this.opts.log?.info({ apps: released }, settings.enabled ? 'flap damping: new settings release held apps' : 'flap damping turned off: held apps released');
      this.opts.onRelease?.(released);
    }
  }

  /** A health transition of `app`. Up -> down is a flap; nothing else is. */
  transition(app: string, previous: string, state: string): void {
    if (!this.settings.enabled || this.closed || previous !== 'up' || state !== 'down') return;
    const now = this.clock.now();
    const s = this.settings;
    this.prune(now);
    let e = this.entries.get(app);
    if (!e) {
      e = { penalty: 0, at: now, flaps: 0, firstFlapAt: now, lastFlapAt: now, suppressed: false };
      this.entries.set(app, e);
    }
    // A suppression whose time has come ends here, before the flap is counted (then the flap may suppress anew).
    if (e.suppressed && !this.isSuppressed(e, now)) e.suppressed = false;
    e.penalty = Math.min(this.penaltyAt(e, now) + s.penalty, FlapDamping.ceiling(s));
    e.at = now;
    e.lastFlapAt = now;
    e.flaps++;
    if (!e.suppressed && e.penalty > s.suppressThreshold) {
      e.suppressed = true;
      const info = this.info(app)!;
      this.opts.log?.warn({ app, penalty: info.penalty, flaps: e.flaps, reuse_at: new Date(info.reuseAt!).toISOString() }, `app held down by flap damping: ${this.detail(e, now)}`);
      this.opts.onSuppress?.(app, info);
    }
    this.schedule();
  }

  /** The hold on `app` now (a hold source for the reconciler), or undefined. */
  hold(app: string): Hold | undefined {
    if (!this.settings.enabled) return undefined;
    const e = this.entries.get(app);
    const now = this.clock.now();
    if (!e || !this.isSuppressed(e, now)) return undefined;
    return { reason: `flap damping: ${this.detail(e, now)}` };
  }

  /** `app`'s damping state for /status; undefined when off or when the app has no penalty (left to remember). */
  info(app: string): DampingInfo | undefined {
    if (!this.settings.enabled) return undefined;
    const e = this.entries.get(app);
    if (!e) return undefined;
    const now = this.clock.now();
    const suppressed = this.isSuppressed(e, now);
    if (!suppressed && this.forgettable(e, now)) return undefined;
    return {
      penalty: Math.round(this.penaltyAt(e, now)),
      suppressed,
      ...(suppressed ? { reuseAt: Math.ceil(this.reuseAt(e)) } : {}),
      flaps: e.flaps,
    };
  }

  /** Apps held down now. */
  suppressedApps(): string[] {
    const now = this.clock.now();
    return [...this.entries].filter(([, e]) => this.isSuppressed(e, now)).map(([app]) => app);
  }

  /** The app left the registry: its history goes with it. */
  forget(app: string): void {
    if (this.entries.delete(app)) this.schedule();
  }

  close(): void {
    this.closed = true;
    this.timer?.cancel();
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  private penaltyAt(e: Entry, now: number): number {
    return e.penalty * 2 ** (-(Math.max(0, now - e.at)) / this.settings.halfLifeMs);
  }

  /** When the penalty decays to the reuse threshold. */
  private reuseAt(e: Entry): number {
    const s = this.settings;
    return e.penalty <= s.reuseThreshold ? e.at : e.at + s.halfLifeMs * Math.log2(e.penalty / s.reuseThreshold);
  }

  private isSuppressed(e: Entry, now: number): boolean {
    return e.suppressed && now < this.reuseAt(e);
  }

  /** RFC 2439: history below half the reuse threshold is forgotten. */
  private forgettable(e: Entry, now: number): boolean {
    return this.penaltyAt(e, now) < this.settings.reuseThreshold / 2;
  }

  private prune(now: number): void {
    for (const [app, e] of this.entries) if (!this.isSuppressed(e, now) && this.forgettable(e, now)) this.entries.delete(app);
  }

  /** "penalty 2450 (suppress above 2000) after 4 flaps in 3m; announced again once below 750, in ~2m10s". */
  private detail(e: Entry, now: number): string {
    const s = this.settings;
    const flaps = `${e.flaps} flap${e.flaps === 1 ? '' : 's'}${e.flaps > 1 ? ` in ${formatSpan(e.lastFlapAt - e.firstFlapAt)}` : ''}`;
    return `penalty ${Math.round(this.penaltyAt(e, now))} (suppress above ${s.suppressThreshold}) after ${flaps}; `
      + `announced again once below ${s.reuseThreshold}, in ~${formatSpan(this.reuseAt(e) - now)}`;
  }

  /** One timer, for the earliest end of a suppression. */
  private schedule(): void {
    if (this.closed) return;
    let earliest = Infinity;
    for (const e of this.entries.values()) if (e.suppressed) earliest = Math.min(earliest, this.reuseAt(e));
    if (earliest === this.timerAt && this.timer) return;
    this.timer?.cancel();
    this.timer = undefined;
    this.timerAt = earliest;
    if (earliest === Infinity) return;
    // A few ms late, so that at the pass it asks for the penalty is below the threshold already.
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, Math.ceil(earliest - this.clock.now())) + 5);
    this.timer = this.clock.setTimer(() => this.wake(), delay);
  }

  private wake(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    if (this.closed) return;
    const now = this.clock.now();
    const released: string[] = [];
    for (const [app, e] of this.entries) {
      if (e.suppressed && !this.isSuppressed(e, now)) {
        e.suppressed = false;
        released.push(app);
      }
    }
    this.prune(now);
    this.schedule();
    if (released.length > 0) {
      this.opts.log?.info({ apps: released }, `flap damping: penalty decayed below ${this.settings.reuseThreshold}: ${released.join(', ')} may be announced again`);
      this.opts.onRelease?.(released);
    }
  }
}

/** A span for people: "45s", "2m10s", "1h5m"; under a second "<1s". */
export function formatSpan(ms: number): string {
  if (ms < 1000) return ms <= 0 ? '0s' : '<1s';
  const total = Math.round(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  if (h > 0) return `${h}h${m > 0 ? `${m}m` : ''}`;
  if (m > 0) return `${m}m${sec > 0 ? `${sec}s` : ''}`;
  return `${sec}s`;
}
