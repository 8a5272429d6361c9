/**
 * HealthTracker: runs each app's monitors on the app's own interval through the check pool and turns results into
 * UP/DOWN with rise/fall hysteresis. The main thread only schedules and records; checks run in worker threads.
 *
 * - All monitors of one app run in parallel; a round passes when every monitor passes.
 * - Rounds keep a fixed schedule (a Go ticker's): round n is due at the app's first round + n * intervalMs, whatever
 *   the lateness of earlier timers. Scheduling from each round's actual start would add every timer's lateness to the
 *   app's phase for good: over hours the apps that started together (and shared one /proc read, one reconciler pass)
 *   spread over the whole interval, and the same checks cost more and more CPU.
 * - A round never overlaps the app's previous round: one that took longer than the interval is followed by the next
 *   round at once, which takes the last slot due; the rounds after it are back on the schedule.
 * - Phases are spread over the interval: an app's first round runs at once (a new app's first verdict is not delayed),
 *   the rounds after it in the app's own phase slot (phaseOf: a hash of its name picks one of the interval's
 *   PHASE_SLOT_MS-wide slots). A thousand apps with the same interval then check ~100 at a time, ten times a second,
 *   instead of all in one tick: a check queued behind 999 others took up to 470 ms to decide (issue 14). Apps of one
 *   slot still check together (one /proc read per worker, one reconciler pass).
 * - An app with no monitors is UP at once (gocast behaviour).
 */
import type { AppSpec, CheckResult, MonitorSpec } from '../plugin-api.js';
import type { Logger } from './logger.js';

/**
 * Width of a phase slot: the apps of a slot check in the same tick, and port checks share one read of /proc (each read
 * costs ~5 ms of kernel time with a thousand sockets, port/check.ts): 100 ms slots mean ten reads a second per worker
 * (with 50 ms slots a 1,000-app daemon went from 25 to 40 % of a core before the reads were made cheaper),
 * and 100 checks at once still decide in a few ms.
 */
export const PHASE_SLOT_MS = 100;

/**
 * An app's phase within its interval (ms, whole): the start of one of the interval's PHASE_SLOT_MS-wide slots, picked by
 * a hash of the name (FNV-1a), so it is the same at every start and for every app of that name.
 */
export function phaseOf(name: string, intervalMs: number): number {
  const slots = Math.max(1, Math.floor(intervalMs / PHASE_SLOT_MS));
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return Math.floor(((h % slots) * intervalMs) / slots);
}

/** The first time at or after `t` (performance.now() ms) that is `phase` plus a whole number of intervals. */
export function alignToPhase(t: number, phase: number, intervalMs: number): number {
  return phase + Math.ceil((t - phase) / intervalMs) * intervalMs;
}

export type HealthState = 'unknown' | 'up' | 'down';

/** What runs one check; the CheckPool in production. Never rejects. */
export interface CheckRunner {
  run(spec: MonitorSpec, timeoutMs: number): Promise<CheckResult & { durationMs: number }>;
}

export interface AppHealth {
  readonly app: string;
  readonly state: HealthState;
  /** Consecutive passing / failing rounds. */
  readonly passes: number;
  readonly failures: number;
  /** Reason of the last round (first failing monitor's reason, or "all N monitors passed"). */
  readonly reason: string;
  /** Per monitor: last result. */
  readonly monitors: ReadonlyArray<{ readonly monitor: string; readonly ok: boolean; readonly reason: string; readonly durationMs: number }>;
  /** When the state last changed (ms since epoch). */
  readonly since: number;
  readonly rounds: number;
}

export interface HealthChange {
  readonly app: string;
  readonly state: HealthState;
  readonly previous: HealthState;
  readonly reason: string;
  /** When the deciding round's checks started (performance.now()). */
  readonly roundStartedAt: number;
}

interface Entry {
  spec: AppSpec;
  health: AppHealth;
  timer: NodeJS.Timeout | undefined;
  running: boolean;
  stopped: boolean;
  /** Bumped whenever the spec changes, so a round started under an old spec doesn't count. */
  generation: number;
  /** The slot (performance.now() time) of the round scheduled or running; the next one is due one interval later. */
  due: number;
  /** The round in `due` ran at once (new app, changed spec), off the app's phase: the next one joins the phase. */
  offPhase: boolean;
}

export class HealthTracker {
  private readonly apps = new Map<string, Entry>();
  private readonly listeners: Array<(change: HealthChange) => void> = [];
  private closed = false;

  constructor(private readonly runner: CheckRunner, private readonly log: Logger) {}

  onChange(listener: (change: HealthChange) => void): void {
    this.listeners.push(listener);
  }

  /** Start tracking an app, or update its spec. `keepState` keeps counters and state (for an unchanged-monitors update). */
  track(spec: AppSpec, opts: { keepState?: boolean } = {}): void {
    if (this.closed) return;
    const existing = this.apps.get(spec.name);
    if (existing) {
      existing.spec = spec;
      existing.generation++;
      if (!opts.keepState) this.reset(existing);
      if (existing.timer) clearTimeout(existing.timer);
      existing.timer = undefined;
      if (!existing.running) this.scheduleNow(existing);
      return;
    }
    const entry: Entry = {
      spec,
      health: emptyHealth(spec.name),
      timer: undefined,
      running: false,
      stopped: false,
      generation: 0,
      due: 0,
      offPhase: true,
    };
    this.apps.set(spec.name, entry);
    if (spec.monitors.length === 0) {
      this.log.warn({ app: spec.name }, 'app has no monitors: it is always healthy');
    }
    this.scheduleNow(entry);
  }

  untrack(name: string): void {
    const entry = this.apps.get(name);
    if (!entry) return;
    entry.stopped = true;
    if (entry.timer) clearTimeout(entry.timer);
    this.apps.delete(name);
  }

  get(name: string): AppHealth | undefined {
    return this.apps.get(name)?.health;
  }

  all(): AppHealth[] {
    return [...this.apps.values()].map((e) => e.health);
  }

  close(): void {
    this.closed = true;
    for (const name of [...this.apps.keys()]) this.untrack(name);
  }

  private reset(entry: Entry): void {
    entry.health = emptyHealth(entry.spec.name);
  }

  /** A round at once, and the schedule restarts from it (new app, changed spec). */
  private scheduleNow(entry: Entry): void {
    entry.due = performance.now();
    entry.offPhase = true;
    this.schedule(entry, 0);
  }

  /**
   * The round after the one in slot `entry.due`: one interval later, or at once in the last slot already due. After a
   * round run at once, the first slot of the app's phase at least half an interval later (so the next round comes
   * 0.5-1.5 intervals after it, never right on its heels).
   */
  private scheduleNext(entry: Entry): void {
    const interval = entry.spec.intervalMs;
    const now = performance.now();
    const next = entry.offPhase ? alignToPhase(entry.due + interval / 2, phaseOf(entry.spec.name, interval), interval) : entry.due + interval;
    entry.offPhase = false;
    entry.due = next <= now ? next + Math.floor((now - next) / interval) * interval : next;
    // Whole milliseconds: timers with equal delays share one timer list in Node (fractions would make a list each).
    this.schedule(entry, Math.max(0, Math.ceil(entry.due - now)));
  }

  private schedule(entry: Entry, delayMs: number): void {
    if (entry.stopped || this.closed) return;
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      void this.round(entry);
    }, delayMs);
  }

  private async round(entry: Entry): Promise<void> {
    if (entry.stopped || entry.running) return;
    entry.running = true;
    const startedAt = performance.now();
    const generation = entry.generation;
    const spec = entry.spec;
    let results: Array<CheckResult & { durationMs: number }>;
    try {
      results = await Promise.all(spec.monitors.map((m) => this.runner.run(m, spec.timeoutMs)));
    } catch (err) {
      // The runner never rejects by contract; if it does, count the round as failed rather than crash.
      results = spec.monitors.map(() => ({ ok: false, reason: `check runner failed: ${String(err)}`, durationMs: 0 }));
    }
    entry.running = false;
    if (entry.stopped) return;
    if (generation === entry.generation) this.record(entry, spec, results, startedAt);
    // A spec change during the round asks for a fresh round at once.
    if (generation === entry.generation) this.scheduleNext(entry);
    else this.scheduleNow(entry);
  }

  private record(entry: Entry, spec: AppSpec, results: Array<CheckResult & { durationMs: number }>, startedAt: number): void {
    const ok = results.every((r) => r.ok);
    const failed = spec.monitors.findIndex((_, i) => !results[i]!.ok);
    const reason = ok
      ? spec.monitors.length === 0 ? 'no monitors' : `all ${spec.monitors.length} monitors passed`
      : `${spec.monitors[failed]!.text}: ${results[failed]!.reason}`;
    const prev = entry.health;
    const passes = ok ? prev.passes + 1 : 0;
    const failures = ok ? 0 : prev.failures + 1;
    let state = prev.state;
    if (ok && passes >= spec.rise) state = 'up';
    else if (!ok && failures >= spec.fall) state = 'down';
    const now = Date.now();
    entry.health = {
      app: spec.name,
      state,
      passes,
      failures,
      reason,
      monitors: spec.monitors.map((m, i) => ({ monitor: m.text, ok: results[i]!.ok, reason: results[i]!.reason, durationMs: results[i]!.durationMs })),
      since: state === prev.state ? prev.since : now,
      rounds: prev.rounds + 1,
    };
    if (state !== prev.state) {
      const change: HealthChange = { app: spec.name, state, previous: prev.state, reason, roundStartedAt: startedAt };
      this.log.info({ app: spec.name, state, previous: prev.state, reason }, `app is ${state}`);
      for (const l of this.listeners) {
        try {
          l(change);
        } catch (err) {
          this.log.error({ err, app: spec.name }, 'health listener failed');
        }
      }
    }
  }
}

function emptyHealth(app: string): AppHealth {
  return { app, state: 'unknown', passes: 0, failures: 0, reason: 'not checked yet', monitors: [], since: Date.now(), rounds: 0 };
}
