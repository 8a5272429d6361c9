/**
 * The reconciler's shutdown: withdraw every route (after a drain with 65535:0 when configured), then remove every NAT
 * rule and address vipcast owns, in that order, each part within a bound so a frozen speaker or a hung iptables call
 * never keeps the host from being cleaned (invariant 2, issue 10).
 */
import type { Route, VipBinding } from '../plugin-api.js';
import type { Logger } from './logger.js';
import type { Model } from './plan.js';
import { BULK_MIN, type Effects, type Fail } from './effects.js';
import { GRACEFUL_SHUTDOWN } from './desired-state.js';

/** How long shutdown waits for the action in flight before it withdraws anyway. */
export const SHUTDOWN_WAIT_IN_FLIGHT_MS = 2000;
/** How long shutdown waits for the speaker to list its routes: longer, and it is frozen or gone. */
export const SHUTDOWN_LIST_MS = 1500;
/** How long the withdraw may take after the drain. */
export const SHUTDOWN_WITHDRAW_MS = 2000;
/** After the cleanup, how long shutdown waits for an action that was in flight, to clean up after it. */
export const SHUTDOWN_LATE_ACTION_MS = 1500;

/**
 * Withdraw (after a drain), then remove rules and addresses. The speaker is asked first what it holds, within
 * SHUTDOWN_LIST_MS: one that does not answer (frozen, gone) is not waited for, nor drained through; the withdraw gets
 * SHUTDOWN_WITHDRAW_MS after the drain. Whatever the speaker did, the host is cleaned, and the log names the routes
 * that may still be announced. Returns whether the speaker answered.
 */
export async function withdrawAndClean(fx: Effects, known: Model | undefined, opts: { reason: string; drainMs: number; askSpeaker: boolean; log: Logger; countError: () => void }): Promise<boolean> {
  const { reason, drainMs, log } = opts;
  const model = known ?? { routes: new Map<string, Route>(), vips: new Map<string, VipBinding>(), nat: [] };
  const listed = opts.askSpeaker ? await within(fx.router.listRoutes(), SHUTDOWN_LIST_MS) : undefined;
  if (listed?.ok) {
    const routes = listed.value;
    const logFailure: Fail = (app, what, err) => {
      opts.countError();
      log.error({ err, app }, `${what} failed at shutdown`);
    };
    const pending = new Map(routes.map((r) => [r.prefix.text, r]));
    const withdrawn = await within((async () => {
      let rest = drainMs > 0 && routes.length > 0 ? await drain(fx, model, routes, drainMs, logFailure, log) : routes;
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
    })(), drainMs + SHUTDOWN_WITHDRAW_MS);
    if (!withdrawn.ok || pending.size > 0) {
      log.error({ routes: [...pending.keys()], ...(withdrawn.ok ? {} : { waited_ms: drainMs + SHUTDOWN_WITHDRAW_MS }) }, `could not withdraw ${pending.size} route(s) at shutdown: the speaker may still announce them`);
    }
  } else if (listed) {
    const routes = [...model.routes.keys()];
    opts.countError();
    log.error({ routes, ...(listed.err !== undefined ? { err: listed.err } : { waited_ms: SHUTDOWN_LIST_MS }) }, `could not withdraw at shutdown: the speaker ${listed.err !== undefined ? 'refused' : 'did not answer'}; it may still announce ${routes.length} route(s) of vipcast's (no drain); removing addresses and NAT rules anyway`);
  }
  // Then rules, then addresses: cleanup() removes the NAT chain (and its jumps) before the addresses.
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
async function drain(fx: Effects, model: Model, routes: readonly Route[], ms: number, fail: Fail, log: Logger): Promise<Route[]> {
  const has = (r: Route) => r.communities.some((c) => c.text === GRACEFUL_SHUTDOWN.text);
  const marked = routes.map((r) => (has(r) ? r : { ...r, communities: [...r.communities, GRACEFUL_SHUTDOWN] }));
  // A route that already carries it (an app configured with graceful-shutdown) is not sent again.
  const changed = marked.filter((r, i) => r !== routes[i]);
  await fx.announce(model, changed.map((route) => ({ route, replaces: true })), fail, 'shutdown drain (graceful-shutdown)');
  log.info({ event: 'drain', routes: marked.length, drain_ms: ms }, `graceful shutdown: ${marked.length} routes carry 65535:0; withdrawing them in ${ms} ms`);
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
