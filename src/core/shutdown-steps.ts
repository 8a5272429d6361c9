/**
 * The reconciler's shutdown: withdraw every route (after a drain with 65535:0 when configured), then remove every NAT
 * rule and address vipcast owns, in that order, each part within a bound so a frozen speaker or a hung iptables call
 * never keeps the host from being cleaned (invariant 2, issue 10). Every wait of a stop is also clipped to one
 * deadline, SHUTDOWN_DEADLINE_MS after the signal, so waits that each stay within their own bound cannot add up past
 * the forced exit (10 s) before the host is clean.
 */
import type { Route, VipBinding } from '../plugin-api.js';
import type { Logger } from './logger.js';
import type { Model } from './plan.js';
import type { SerialQueue } from './serial-queue.js';
import { BULK_MIN, type Effects, type Fail } from './effects.js';
import { GRACEFUL_SHUTDOWN } from './desired-state.js';

/** From the signal, by when a stop is over: the CLI's forced exit (10 s after the signal) leaves 2 s for a loaded host. */
export const SHUTDOWN_DEADLINE_MS = 8000;
/**
 * The end of the stop, kept for the managed speaker's stop (SIGTERM, SIGKILL after 1 s: it may run on past the
 * deadline, see daemon-stop.ts; gobgpd dies with vipcast anyway, through its parent-death signal).
 */
export const SHUTDOWN_SPEAKER_RESERVE_MS = 1000;
/**
 * Kept before that for the host cleanup (rules, then addresses) and the closes: the route steps (in-flight wait, list,
 * drain, withdraw) end SHUTDOWN_HOST_RESERVE_MS + SHUTDOWN_SPEAKER_RESERVE_MS before the deadline, 6 s after the
 * signal, so a 5 s drain that starts at once keeps about 1 s for its withdraw.
 */
export const SHUTDOWN_HOST_RESERVE_MS = 1000;
/** The least a withdraw gets after a drain that the deadline cut short. */
export const SHUTDOWN_WITHDRAW_MIN_MS = 500;

/** One stop's deadline (a performance.now() time) and what is left of it for each step. */
export class ShutdownDeadline {
  constructor(readonly at: number) {}

  /** The deadline of a stop whose signal came at `signalAt` (performance.now()). */
  static after(signalAt = performance.now()): ShutdownDeadline {
    return new ShutdownDeadline(signalAt + SHUTDOWN_DEADLINE_MS);
  }

  /** Milliseconds left before the deadline less `reserve`, at most `max`; never negative. */
  left(reserve = 0, max = Infinity): number {
    return Math.max(0, Math.min(max, Math.floor(this.at - reserve - performance.now())));
  }

  /** What the route steps (in-flight wait, list, drain, withdraw) may still take: the host cleanup and speaker stop follow. */
  forRoutes(max = Infinity): number {
    return this.left(SHUTDOWN_HOST_RESERVE_MS + SHUTDOWN_SPEAKER_RESERVE_MS, max);
  }
}

/** How long shutdown waits for the action in flight before it withdraws anyway. */
export const SHUTDOWN_WAIT_IN_FLIGHT_MS = 2000;
/** How long shutdown waits for the speaker to list its routes: longer, and it is frozen or gone. */
export const SHUTDOWN_LIST_MS = 1500;
/** How long the withdraw may take after the drain. */
export const SHUTDOWN_WITHDRAW_MS = 2000;
/** After the cleanup, how long shutdown waits for an action that was in flight, to clean up after it. */
export const SHUTDOWN_LATE_ACTION_MS = 1500;

/**
 * The reconciler's shutdown after `queue`'s action in flight: waited for at most `waitInFlightMs` (less when the
 * deadline is near), then `clean` runs beside it, and again once it ends, if it ends within SHUTDOWN_LATE_ACTION_MS
 * and the deadline: whatever it announced or added goes too. Passes stop at their next step once the reconciler is
 * closed, so the queue is usually idle within one effect; an effect that hangs (an iptables call waiting for the
 * xtables lock, a reload swapping speakers) must not hold the withdraw back.
 */
export async function shutdownAfterInFlight(queue: SerialQueue, clean: (drainMs: number, askSpeaker: boolean) => Promise<boolean>, opts: { drainMs: number; waitInFlightMs: number; deadline: ShutdownDeadline; log: Logger }): Promise<void> {
  const { drainMs, deadline, log } = opts;
  if (queue.pending > 0) {
    const inFlight = queue.settled();
    // The list and a withdraw must still fit after this wait.
    const waitMs = Math.min(opts.waitInFlightMs, Math.max(0, deadline.forRoutes() - SHUTDOWN_LIST_MS - SHUTDOWN_WITHDRAW_MIN_MS));
    if (!(await within(inFlight, waitMs)).ok) {
      log.warn({ waited_ms: waitMs }, 'an action is still in flight at shutdown: withdrawing without waiting for it');
      const speakerAnswered = await clean(drainMs, true);
      // A speaker that did not answer is not asked again.
      const lateMs = deadline.forRoutes(SHUTDOWN_LATE_ACTION_MS);
      const late = await within(inFlight, lateMs);
      if (!late.ok) log.error({ waited_ms: lateMs }, 'an action still in flight after the shutdown cleanup: whatever it adds when it ends stays (a hung ip, iptables or speaker call)');
      else await clean(0, speakerAnswered);
      return;
    }
  }
  await queue.run(() => clean(drainMs, true));
}

/**
 * Withdraw (after a drain), then remove rules and addresses. The speaker is asked first what it holds, within
 * SHUTDOWN_LIST_MS: one that does not answer (frozen, gone) is not waited for, nor drained through; the withdraw gets
 * SHUTDOWN_WITHDRAW_MS after the drain. Each of these is cut to what the deadline leaves the route steps, the drain so
 * that the withdraw keeps SHUTDOWN_WITHDRAW_MIN_MS. Whatever the speaker did, the host is cleaned, and the log names
 * the routes that may still be announced. Returns whether the speaker answered.
 */
export async function withdrawAndClean(fx: Effects, known: Model | undefined, opts: { reason: string; drainMs: number; askSpeaker: boolean; deadline: ShutdownDeadline; log: Logger; countError: () => void }): Promise<boolean> {
  const { reason, drainMs, deadline, log } = opts;
  const model = known ?? { routes: new Map<string, Route>(), vips: new Map<string, VipBinding>(), nat: [] };
  const listMs = deadline.forRoutes(SHUTDOWN_LIST_MS);
  type Listed = { ok: true; value: Route[] } | { ok: false; err?: unknown; late?: true };
  const listed: Listed | undefined = !opts.askSpeaker ? undefined : listMs > 0 ? await within(fx.router.listRoutes(), listMs) : { ok: false, late: true };
  if (listed?.ok) {
    const routes = listed.value;
    const logFailure: Fail = (app, what, err) => {
      opts.countError();
      log.error({ err, app }, `${what} failed at shutdown`);
    };
    const pending = new Map(routes.map((r) => [r.prefix.text, r]));
    const boundMs = deadline.forRoutes(drainMs + SHUTDOWN_WITHDRAW_MS);
    const withdrawn = await within((async () => {
      let rest = drainMs > 0 && routes.length > 0 ? await drain(fx, model, routes, drainMs, deadline, logFailure, log) : routes;
      if (rest.length >= BULK_MIN && fx.router.withdrawMany) {
        try {
          await fx.router.withdrawMany(rest, reason);
          for (const r of rest) {
            fx.recordWithdraw(model, r);
            pending.delete(r.prefix.text);
          }
          rest = [];
        } catch (err) {
          log.warn({ err, routes: rest.length }, 'bulk withdraw failed; withdrawing one by one');
        }
      }
      for (const r of rest) {
        await fx.withdraw(model, r, reason, logFailure);
        if (!model.routes.has(r.prefix.text)) pending.delete(r.prefix.text);
      }
    })(), boundMs);
    if (!withdrawn.ok || pending.size > 0) {
      log.error({ routes: [...pending.keys()], ...(withdrawn.ok ? {} : { waited_ms: boundMs }) }, `could not withdraw ${pending.size} route(s) at shutdown: the speaker may still announce them`);
    }
  } else if (listed) {
    const routes = [...model.routes.keys()];
    opts.countError();
    const why = listed.late ? 'was not asked (no time left before the shutdown deadline)' : listed.err !== undefined ? 'refused' : 'did not answer';
    log.error({ routes, ...(listed.err !== undefined ? { err: listed.err } : { waited_ms: listMs }) }, `could not withdraw at shutdown: the speaker ${why}; it may still announce ${routes.length} route(s) of vipcast's (no drain); removing addresses and NAT rules anyway`);
  }
  // Then rules, then addresses: cleanup() removes the NAT chain (and its jumps) before the addresses. Not cut to the
  // deadline: the host's cleanup bounds its NAT part itself (3 s), and the addresses go after it whatever happened.
  await fx.host.cleanup().catch((err) => log.error({ err }, 'could not remove every address and rule at shutdown'));
  if (known) {
    known.vips.clear();
    known.nat = [];
  }
  return listed?.ok ?? false;
}

/**
 * Graceful shutdown drain: every route again with GRACEFUL_SHUTDOWN added (an implicit replace, no withdraw), so
 * routers that honour RFC 8326 lower its preference and move traffic to other hosts; then wait. Returns the routes
 * as now announced, for the withdraw. A route whose re-announce fails is still withdrawn after the wait.
 */
async function drain(fx: Effects, model: Model, routes: readonly Route[], drainMs: number, deadline: ShutdownDeadline, fail: Fail, log: Logger): Promise<Route[]> {
  const has = (r: Route) => r.communities.some((c) => c.text === GRACEFUL_SHUTDOWN.text);
  const marked = routes.map((r) => (has(r) ? r : { ...r, communities: [...r.communities, GRACEFUL_SHUTDOWN] }));
  // A route that already carries it (an app configured with graceful-shutdown) is not sent again.
  const changed = marked.filter((r, i) => r !== routes[i]);
  await fx.announce(model, changed.map((route) => ({ route, replaces: true })), fail, 'shutdown drain (graceful-shutdown)');
  const ms = Math.min(drainMs, Math.max(0, deadline.forRoutes() - SHUTDOWN_WITHDRAW_MIN_MS));
  const cut = ms < drainMs ? { shutdown_drain_ms: drainMs } : {};
  log.info({ event: 'drain', routes: marked.length, drain_ms: ms, ...cut }, `graceful shutdown: ${marked.length} routes carry 65535:0; withdrawing them in ${ms} ms${ms < drainMs ? ` (agent.shutdown_drain cut to what the shutdown deadline leaves)` : ''}`);
  await new Promise((r) => setTimeout(r, ms));
  return marked;
}

/** `p`'s outcome, or `{ ok: false }` without `err` if it has not settled within `ms`. Never rejects. */
export async function within<T>(p: Promise<T>, ms: number): Promise<{ ok: true; value: T } | { ok: false; err?: unknown }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<{ ok: false }>((resolve) => { timer = setTimeout(() => resolve({ ok: false }), ms); });
  try {
    return await Promise.race([p.then((value) => ({ ok: true as const, value }), (err: unknown) => ({ ok: false as const, err })), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
